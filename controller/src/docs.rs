//! Shell completion scripts and man pages, generated from the clap definitions of `troupe`
//! and `troupe-agent` (`troupe completions SHELL`, the hidden `troupe man DIR` the package
//! build runs), so they never drift from the flags.
//!
//! The Circus commands (`troupe status`, `troupe stop web`, ...) are one external
//! subcommand to clap, parsed by [`crate::circus_args`]; they are added here as subcommands
//! taking the broadcast flags, so that shells complete them and each has a man page.
//! Command names and flags are static; node names (after `--node`) and watcher names (a
//! Circus command's first word) live on the network: the bash, fish and zsh scripts ask
//! `troupe complete-names`, which asks a running `troupe serve` ([`names`]); `troupe shell`
//! completes them too.

use crate::command::BroadcastFlags;
use crate::exit_code::Exit;
use clap::CommandFactory;
use std::path::Path;
use std::process::ExitCode;
use troupe::protocol::NODE_COMMANDS;

/// `troupe`'s command as shells and man pages should see it: `cli` plus a subcommand per
/// Circus command it does not define itself.
pub fn with_circus_commands(cli: clap::Command) -> clap::Command {
    let defined: Vec<String> = cli
        .get_subcommands()
        .map(|sub| sub.get_name().to_string())
        .collect();
    let mut cli = cli;
    for command in NODE_COMMANDS {
        if defined.iter().any(|name| name == command) {
            continue;
        }
        let sub = BroadcastFlags::command()
            .name(command)
            .about(format!(
                "The Circus command `{command}`, on every node (or those --node names); its \
                 own arguments as circusctl takes them"
            ))
            .arg(
                clap::Arg::new("ARGS")
                    .help("The command's arguments (watcher name, count, --waiting, ...)")
                    .num_args(0..)
                    .trailing_var_arg(true)
                    .allow_hyphen_values(true),
            );
        cli = cli.subcommand(sub);
    }
    cli
}

/// The completion script of `command` for `shell`. Built in memory: clap_complete panics
/// on a failed write, and `troupe completions bash | head` closes the pipe early. troupe's
/// bash script also completes node and watcher names ([`BASH_NAMES`]).
pub fn completions(shell: clap_complete::Shell, mut command: clap::Command) -> Vec<u8> {
    let name = command.get_name().to_string();
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut command, name.clone(), &mut script);
    if name != "troupe" {
        return script;
    }
    match shell {
        clap_complete::Shell::Bash => {
            script.extend_from_slice(with_watcher_commands(BASH_NAMES, "|").as_bytes())
        }
        clap_complete::Shell::Fish => {
            script.extend_from_slice(with_watcher_commands(FISH_NAMES, " ").as_bytes())
        }
        clap_complete::Shell::Zsh => {
            // clap's script ends by registering `_troupe`: register the wrapper instead.
            let text = String::from_utf8_lossy(&script).into_owned();
            if let Some(at) = text.rfind(ZSH_CLAP_TAIL) {
                let mut text = text;
                text.replace_range(at.., &with_watcher_commands(ZSH_NAMES, "|"));
                script = text.into_bytes();
            }
        }
        _ => {}
    }
    script
}

/// The commands whose first word is a watcher name, written into the shells' scripts where
/// they say `WATCHER_COMMANDS` (separated by `|` in bash's and zsh's patterns).
const WATCHER_COMMANDS: [&str; 17] = [
    "start",
    "stop",
    "restart",
    "reload",
    "incr",
    "decr",
    "numprocesses",
    "signal",
    "kill",
    "get",
    "set",
    "options",
    "rm",
    "status",
    "stats",
    "reset",
    "logs",
];

/// `snippet` with its `WATCHER_COMMANDS` written out, joined by `separator`.
fn with_watcher_commands(snippet: &str, separator: &str) -> String {
    snippet.replace("WATCHER_COMMANDS", &WATCHER_COMMANDS.join(separator))
}

/// Wraps clap's bash completion of `troupe`: the word after `--node` is a node name, a Circus
/// command's first word a watcher name, both from `troupe complete-names` (the same binary).
const BASH_NAMES: &str = r#"
# Node and watcher names, from a running troupe serve (troupe complete-names).
_troupe_with_names() {
    local cur="${COMP_WORDS[COMP_CWORD]}" prev=""
    [[ $COMP_CWORD -gt 0 ]] && prev="${COMP_WORDS[COMP_CWORD-1]}"
    if [[ "$prev" == "--node" ]]; then
        COMPREPLY=($(compgen -W "$("${COMP_WORDS[0]}" complete-names nodes 2>/dev/null)" -- "$cur"))
        return 0
    fi
    if [[ $COMP_CWORD -eq 2 && "$cur" != -* ]]; then
        case "${COMP_WORDS[1]}" in
            WATCHER_COMMANDS)
                COMPREPLY=($(compgen -W "$("${COMP_WORDS[0]}" complete-names watchers 2>/dev/null)" -- "$cur"))
                return 0
                ;;
        esac
    fi
    _troupe "$@"
}
complete -F _troupe_with_names -o bashdefault -o default troupe
"#;

/// fish: the same names, added to clap's completions of `--node` and of a Circus command's
/// first word.
const FISH_NAMES: &str = r#"
# Node and watcher names, from a running troupe serve (troupe complete-names).
complete -c troupe -l node -x -a '(troupe complete-names nodes 2>/dev/null)'
complete -c troupe -n '__fish_seen_subcommand_from WATCHER_COMMANDS; and test (count (commandline -opc)) -eq 2' -f -a '(troupe complete-names watchers 2>/dev/null)'
"#;

/// The end of clap's zsh script, replaced by [`ZSH_NAMES`].
const ZSH_CLAP_TAIL: &str = "if [ \"$funcstack[1]\" = \"_troupe\" ]; then";

/// zsh: a wrapper around clap's `_troupe` for the same names, registered in its place (also
/// when the script is autoloaded from $fpath as `_troupe`).
const ZSH_NAMES: &str = r#"# Node and watcher names, from a running troupe serve (troupe complete-names).
_troupe_with_names() {
    local -a names
    if [[ ${words[CURRENT-1]} == --node ]]; then
        names=(${(f)"$(${words[1]} complete-names nodes 2>/dev/null)"})
        compadd -a names
        return
    fi
    if (( CURRENT == 3 )) && [[ ${words[CURRENT]} != -* ]]; then
        case ${words[2]} in
            WATCHER_COMMANDS)
                names=(${(f)"$(${words[1]} complete-names watchers 2>/dev/null)"})
                compadd -a names
                return
                ;;
        esac
    fi
    _troupe "$@"
}

if [ "$funcstack[1]" = "_troupe" ]; then
    compdef _troupe_with_names troupe
    _troupe_with_names "$@"
else
    compdef _troupe_with_names troupe
fi
"#;

/// What `troupe complete-names` lists.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum NameKind {
    Nodes,
    Watchers,
}

/// The node or watcher names of the cluster a running `troupe serve` at `endpoint` sees, for a
/// shell's completion: sorted, unique, and only plain names (letters, digits, `-`, `_`), since
/// they came from the network and go into the shell's word list. Nothing without a serve:
/// completion must not wait for a discovery.
pub async fn names(kind: NameKind, endpoint: &str) -> Vec<String> {
    const TIMEOUT: std::time::Duration = std::time::Duration::from_millis(700);
    if !crate::cluster_link::controller_answers(endpoint).await {
        return Vec::new();
    }
    let command = match kind {
        NameKind::Nodes => "nodelist",
        NameKind::Watchers => "list",
    };
    let zmq = zmq::Context::new();
    let request = troupe::protocol::Request::new(command, Default::default());
    let Ok(reply) = troupe::client::call_async(&zmq, endpoint, request, TIMEOUT).await else {
        return Vec::new();
    };
    let listed: Vec<String> = match kind {
        NameKind::Nodes => reply["nodes"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|node| node["name"].as_str().map(str::to_string))
            .collect(),
        // Serve lists `node:watcher`.
        NameKind::Watchers => reply["watchers"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|w| w.as_str()?.rsplit_once(':').map(|(_, w)| w.to_string()))
            .collect(),
    };
    plain_names(listed)
}

/// `names` sorted, without duplicates and without any that is not plain.
fn plain_names(names: Vec<String>) -> Vec<String> {
    let plain = |name: &String| {
        !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    };
    let set: std::collections::BTreeSet<String> = names.into_iter().filter(plain).collect();
    set.into_iter().collect()
}

/// Writes a man page per command and visible subcommand into `dir` (created if missing):
/// troupe.1, troupe-serve.1, ..., troupe-agent.1. Returns the files written.
pub fn write_man_pages(
    commands: Vec<clap::Command>,
    dir: &Path,
) -> std::io::Result<Vec<std::path::PathBuf>> {
    std::fs::create_dir_all(dir)?;
    for command in commands {
        clap_mangen::generate_to(command, dir)?;
    }
    let mut written: Vec<_> = std::fs::read_dir(dir)?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.extension().is_some_and(|ext| ext == "1"))
        .collect();
    written.sort();
    Ok(written)
}

/// `troupe completions SHELL [--agent]`: prints the script of `command`.
pub fn print_completions(shell: clap_complete::Shell, command: clap::Command) -> ExitCode {
    let script = completions(shell, command);
    match std::io::Write::write_all(&mut std::io::stdout(), &script) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("troupe completions: writing the script: {e}");
            Exit::Usage.into()
        }
    }
}

/// `troupe man DIR`: writes the man pages of `commands` and says how many.
pub fn print_man_pages(commands: Vec<clap::Command>, dir: &Path) -> ExitCode {
    match write_man_pages(commands, dir) {
        Ok(pages) => {
            println!("{} man pages written to {}", pages.len(), dir.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!(
                "troupe man: writing the man pages into {}: {e}",
                dir.display()
            );
            Exit::Usage.into()
        }
    }
}

/// `troupe complete-names KIND`: prints [`names`], one a line.
pub async fn print_names(kind: NameKind, endpoint: String) -> anyhow::Result<ExitCode> {
    for name in names(kind, &endpoint).await {
        println!("{name}");
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::plain_names;

    #[test]
    fn only_plain_names_reach_the_shell() {
        let names = [
            "web",
            "db-1",
            "web",
            "$(rm -rf x)",
            "a b",
            "",
            "x;y",
            "ok_2",
        ];
        let names = names.iter().map(|n| n.to_string()).collect();
        assert_eq!(plain_names(names), ["db-1", "ok_2", "web"]);
    }
}
