//! `troupe completions` and `troupe man`: the scripts load in the real shells and complete,
//! the man pages render with man(1).

use crate::support::{bin, run_command};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

fn troupe_output(args: &[&str]) -> String {
    let mut command = Command::new(bin("troupe"));
    command.args(args);
    let run = run_command(command, Duration::from_secs(30));
    assert_eq!(run.code, Some(0), "troupe {args:?}: {}", run.stderr);
    run.stdout
}

/// Runs `script` in a non-interactive bash, returning stdout.
fn bash(script: &str) -> String {
    let mut command = Command::new("bash");
    command.arg("--norc").arg("-c").arg(script);
    let run = run_command(command, Duration::from_secs(30));
    assert_eq!(run.code, Some(0), "bash: {}\n{script}", run.stderr);
    run.stdout
}

/// What the bash completion of `troupe` offers for the words `line` (the last one being
/// completed), as bash's programmable completion would call it.
fn complete_in_bash(script: &Path, program: &str, line: &[&str]) -> Vec<String> {
    complete_in_bash_with(script, program, line, "")
}

/// [`complete_in_bash`] after the shell commands `setup` (e.g. exports).
fn complete_in_bash_with(script: &Path, program: &str, line: &[&str], setup: &str) -> Vec<String> {
    let words = line
        .iter()
        .map(|w| format!("'{w}'"))
        .collect::<Vec<_>>()
        .join(" ");
    let output = bash(&format!(
        "{setup}\nsource '{script}'\n\
         complete -p {program} >/dev/null || exit 3\n\
         function=$(complete -p {program} | sed -E 's/.* -F ([^ ]+) .*/\\1/')\n\
         COMP_WORDS=({words}); COMP_CWORD={cword}; COMP_LINE=\"${{COMP_WORDS[*]}}\"; \
         COMP_POINT=${{#COMP_LINE}}\n\
         \"$function\" {program} \"${{COMP_WORDS[COMP_CWORD]}}\" \"${{COMP_WORDS[COMP_CWORD-1]}}\"\n\
         printf '%s\\n' \"${{COMPREPLY[@]}}\"",
        script = script.display(),
        cword = line.len() - 1,
    ));
    output.lines().map(str::to_string).collect()
}

#[test]
fn bash_completes_subcommands_circus_commands_and_flags() {
    let dir = tempfile::tempdir().expect("tempdir");
    let script = dir.path().join("troupe.bash");
    std::fs::write(&script, troupe_output(&["completions", "bash"])).expect("write script");
    let registered = bash(&format!(
        "source '{}'; complete -p troupe",
        script.display()
    ));
    assert!(registered.contains("-F _troupe"), "{registered}");
    // troupe's own subcommands and the Circus commands (an external subcommand to clap).
    let words = complete_in_bash(&script, "troupe", &["troupe", "st"]);
    for expected in ["start", "stats", "status", "stop"] {
        assert!(
            words.iter().any(|w| w == expected),
            "{expected} in {words:?}"
        );
    }
    let words = complete_in_bash(&script, "troupe", &["troupe", "se"]);
    assert!(words.iter().any(|w| w == "serve"), "{words:?}");
    assert!(words.iter().any(|w| w == "set"), "{words:?}");
    // A subcommand's flags, and a Circus command's broadcast flags.
    let words = complete_in_bash(&script, "troupe", &["troupe", "serve", "--au"]);
    assert_eq!(words, ["--auto-configure"]);
    let words = complete_in_bash(&script, "troupe", &["troupe", "restart", "--no"]);
    assert!(words.iter().any(|w| w == "--node"), "{words:?}");
    assert!(words.iter().any(|w| w == "--no-mdns"), "{words:?}");
    // The agent's script.
    let agent = dir.path().join("troupe-agent.bash");
    std::fs::write(&agent, troupe_output(&["completions", "bash", "--agent"]))
        .expect("write script");
    let words = complete_in_bash(&agent, "troupe-agent", &["troupe-agent", "--con"]);
    assert_eq!(words, ["--config"]);
}

#[test]
fn zsh_and_fish_scripts_name_the_commands() {
    let zsh = troupe_output(&["completions", "zsh"]);
    assert!(zsh.starts_with("#compdef troupe"), "{}", &zsh[..80]);
    assert!(zsh.contains("'serve:") && zsh.contains("'status:"));
    let fish = troupe_output(&["completions", "fish"]);
    assert!(fish.contains("complete -c troupe") && fish.contains("-a \"status\""));
    // Each shell (scripts/test installs them) must parse its script.
    for shell in ["zsh", "fish"] {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(format!("troupe.{shell}"));
        std::fs::write(&path, if shell == "zsh" { &zsh } else { &fish }).expect("write");
        let mut command = Command::new(shell);
        command.arg("-n").arg(&path);
        let run = run_command(command, Duration::from_secs(30));
        assert_eq!(run.code, Some(0), "{shell} -n: {}", run.stderr);
    }
}

#[test]
fn man_pages_render() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = troupe_output(&["man", &dir.path().display().to_string()]);
    assert!(out.contains("man pages written"), "{out}");
    for page in [
        "troupe.1",
        "troupe-serve.1",
        "troupe-status.1",
        "troupe-agent.1",
    ] {
        assert!(dir.path().join(page).exists(), "{page} missing: {out}");
    }
    assert!(
        !dir.path().join("troupe-man.1").exists(),
        "the hidden man subcommand got a page"
    );
    assert!(
        Command::new("man").arg("--version").output().is_ok(),
        "man is not installed, so the pages cannot be rendered: install man-db (scripts/test \
         does as root)"
    );
    let mut command = Command::new("man");
    command
        .arg("-l")
        .arg(dir.path().join("troupe-agent.1"))
        .env("MANPAGER", "cat")
        .env("MANWIDTH", "100");
    let run = run_command(command, Duration::from_secs(30));
    assert_eq!(run.code, Some(0), "man -l: {}", run.stderr);
    assert!(run.stdout.contains("NAME"), "{}", run.stdout);
    assert!(run.stdout.contains("--config"), "{}", run.stdout);
    assert!(
        !run.stderr.contains("warning"),
        "groff warnings: {}",
        run.stderr
    );
}

#[test]
fn bash_fish_and_zsh_complete_node_and_watcher_names_from_a_running_serve() {
    use crate::support::{unique_loopback, wait_for, Agent, Daemon};
    let watchers = "[watcher.web]\ncmd = \"sleep 1000\"\ngraceful_timeout = 1\n\
                    [watcher.db]\ncmd = \"sleep 1000\"\ngraceful_timeout = 1\n";
    let agent = Agent::start_named("names-node", &unique_loopback(), watchers, "");
    let dir = tempfile::tempdir().expect("tempdir");
    let address = unique_loopback();
    let mut command = crate::support::isolated(Command::new(bin("troupe")), dir.path());
    command
        .args([
            "serve",
            "--bind",
            &address,
            "--no-mdns",
            "--probe",
            &agent.address,
        ])
        .arg("--state-dir")
        .arg(dir.path().join("state"));
    let _serve = Daemon::spawn("troupe serve", command, &dir.path().join("serve.log"));
    let controller = format!("tcp://{address}:5558");
    wait_for("serve to list the node", Duration::from_secs(20), || {
        troupe_output(&["complete-names", "nodes", "--controller", &controller]) == "names-node\n"
    });
    assert_eq!(
        troupe_output(&["complete-names", "watchers", "--controller", &controller]),
        "db\nweb\n"
    );
    // Nothing, and at once, without a serve.
    assert_eq!(
        troupe_output(&[
            "complete-names",
            "nodes",
            "--controller",
            "tcp://127.0.0.1:1"
        ]),
        ""
    );

    let script = dir.path().join("troupe.bash");
    std::fs::write(&script, troupe_output(&["completions", "bash"])).expect("write script");
    let bin_dir = bin("troupe").parent().unwrap().display().to_string();
    let setup = format!("export PATH='{bin_dir}':\"$PATH\" TROUPE_CONTROLLER='{controller}'");
    let words = complete_in_bash_with(
        &script,
        "troupe",
        &["troupe", "stop", "--node", "na"],
        &setup,
    );
    assert_eq!(words, ["names-node"]);
    let words = complete_in_bash_with(&script, "troupe", &["troupe", "stop", ""], &setup);
    assert_eq!(words, ["db", "web"]);
    // Flags are still clap's.
    let words = complete_in_bash_with(&script, "troupe", &["troupe", "stop", "--no"], &setup);
    assert!(words.iter().any(|w| w == "--node"), "{words:?}");

    // fish: its own completion engine, on the same command lines.
    let fish_script = dir.path().join("troupe.fish");
    std::fs::write(&fish_script, troupe_output(&["completions", "fish"])).expect("write");
    let fish = |line: &str| -> Vec<String> {
        let mut command = Command::new("fish");
        command
            .arg("--no-config")
            .arg("-c")
            .arg(format!(
                "source '{}'; complete -C \"{line}\"",
                fish_script.display()
            ))
            .env(
                "PATH",
                format!("{bin_dir}:{}", std::env::var("PATH").unwrap()),
            )
            .env("TROUPE_CONTROLLER", &controller);
        let run = run_command(command, Duration::from_secs(30));
        assert_eq!(run.code, Some(0), "fish: {}", run.stderr);
        run.stdout
            .lines()
            .map(|l| l.split('\t').next().unwrap_or("").to_string())
            .collect()
    };
    assert_eq!(fish("troupe stop --node na"), ["names-node"]);
    assert_eq!(fish("troupe stop "), ["db", "web"]);

    // zsh: the wrapper clap's `_troupe` is registered behind, called as zsh's completion
    // system would, with `compadd` recording what it is offered.
    let zsh_script = dir.path().join("_troupe");
    std::fs::write(&zsh_script, troupe_output(&["completions", "zsh"])).expect("write");
    let zsh = |words: &str, current: usize| -> Vec<String> {
        let mut command = Command::new("zsh");
        command
            .arg("-f")
            .arg("-c")
            .arg(format!(
                "compdef() {{ print -r -- \"compdef $*\" >&2 }}\n\
                 source '{}'\n\
                 compadd() {{ [[ $1 == -a ]] && print -rl -- \"${{(@P)2}}\" }}\n\
                 words=({words}); CURRENT={current}\n\
                 _troupe_with_names",
                zsh_script.display()
            ))
            .env(
                "PATH",
                format!("{bin_dir}:{}", std::env::var("PATH").unwrap()),
            )
            .env("TROUPE_CONTROLLER", &controller);
        let run = run_command(command, Duration::from_secs(30));
        assert_eq!(run.code, Some(0), "zsh: {}", run.stderr);
        assert!(
            run.stderr.contains("compdef _troupe_with_names troupe"),
            "the wrapper is registered: {}",
            run.stderr
        );
        run.stdout.lines().map(str::to_string).collect()
    };
    assert_eq!(zsh("troupe stop --node na", 4), ["names-node"]);
    assert_eq!(zsh("troupe stop ''", 3), ["db", "web"]);
}
