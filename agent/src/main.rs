//! `troupe-agent`: the per-node supervisor daemon.

fn main() -> std::process::ExitCode {
    troupe_agent::cli::main_with_args(std::env::args_os())
}
