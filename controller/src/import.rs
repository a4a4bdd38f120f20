//! `troupe import circus.ini`: a Circus ini as the equivalent `troupe-agent.toml`, on stdout.

use crate::exit_code::Exit;
use std::path::Path;
use std::process::ExitCode;
use troupe::config::{render, AgentConfig};

/// Reads `file` as the agent would (a Circus ini, or a troupe-agent.toml) and prints it as
/// TOML, what troupe ignores in it listed first as comments. Exit 2 if the agent would refuse it.
pub fn run(file: &Path) -> ExitCode {
    let config = match AgentConfig::load(file) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("{e}");
            eprintln!("troupe import: nothing written; fix the lines above and run it again");
            return Exit::Usage.into();
        }
    };
    println!(
        "# troupe-agent.toml from {} (troupe import)",
        file.display()
    );
    println!(
        "# $(circus.env.X) and $VAR were filled in from this shell's environment, as circusd \
         would have"
    );
    for ignored in &config.ignored {
        println!("# {}: {}: {}", file.display(), ignored.key, ignored.message);
    }
    print!("{}", render::to_toml(&config));
    Exit::Ok.into()
}
