//! Shell completion scripts and man pages, generated from the clap definitions of `troupe`
//! and `troupe-agent` (`troupe completions SHELL`, the hidden `troupe man DIR` the package
//! build runs), so they never drift from the flags.
//!
//! The Circus commands (`troupe status`, `troupe stop web`, ...) are one external
//! subcommand to clap, parsed by [`crate::circus_args`]; they are added here as subcommands
//! taking the broadcast flags, so that shells complete them and each has a man page.
//! Completion is static: command names and flags. Node and watcher names live on the
//! network; `troupe shell` completes them.

use crate::circus_args::COMMANDS;
use crate::command::BroadcastFlags;
use clap::CommandFactory;
use std::path::Path;

/// `troupe`'s command as shells and man pages should see it: `cli` plus a subcommand per
/// Circus command it does not define itself.
pub fn with_circus_commands(cli: clap::Command) -> clap::Command {
    let defined: Vec<String> = cli
        .get_subcommands()
        .map(|sub| sub.get_name().to_string())
        .collect();
    let mut cli = cli;
    for command in COMMANDS {
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
/// on a failed write, and `troupe completions bash | head` closes the pipe early.
pub fn completions(shell: clap_complete::Shell, mut command: clap::Command) -> Vec<u8> {
    let name = command.get_name().to_string();
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut command, name, &mut script);
    script
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
