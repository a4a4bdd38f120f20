//! `troupe`: the controller CLI. Parses the command line ([`troupe_controller::cli`]) and
//! hands each command to the module that runs it; nothing else happens here.

use clap::Parser;
use std::process::ExitCode;
use troupe_controller::cli::{documented_command, run_async, Cli, Command};
use troupe_controller::{
    cluster, command, ctl, dashboard, demo, docs, import, keygen, logs, nodes, reconfigure, serve,
    shell, stats_command, top,
};

fn main() -> ExitCode {
    // `troupe agent ...` runs a troupe-agent from this binary (what `troupe demo` starts),
    // with the agent's own arguments and logging.
    let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if argv.get(1).is_some_and(|a| a == "agent") {
        let mut agent_argv = vec![std::ffi::OsString::from("troupe agent")];
        agent_argv.extend(argv.into_iter().skip(2));
        return troupe_agent::cli::main_with_args(agent_argv);
    }
    let cli = Cli::parse();
    troupe::logging::init(cli.log_level);
    if let Some(path) = &cli.key_file {
        if let Err(e) = troupe_controller::settings::use_key_file(path) {
            eprintln!("troupe: {}", troupe::logging::error_chain(e.as_ref()));
            return ExitCode::from(troupe_controller::exit_code::EXIT_USAGE);
        }
    }
    match cli.command {
        // Any Circus command: `troupe incr web 2`, `troupe status --node a`.
        Command::Circus(words) => run_async(command::run_words(words)),
        Command::Configure {
            restart,
            dry_run,
            broadcast,
        } => run_async(reconfigure::run_configure(restart, dry_run, broadcast)),
        Command::Reset { watcher, broadcast } => run_async(command::run_reset(watcher, broadcast)),
        Command::Reconfigure { reset, broadcast } => run_async(reconfigure::run(reset, broadcast)),
        Command::Nodes {
            forget: Some(name),
            flags,
            ..
        } => nodes::forget(&flags, &name),
        Command::Nodes {
            wait,
            json,
            flags,
            forget: None,
        } => run_async(nodes::run(wait, json, flags)),
        Command::Cluster {
            range,
            count,
            flags,
        } => run_async(async move {
            cluster::run(&range, count, &flags, None).await?;
            Ok(ExitCode::SUCCESS)
        }),
        Command::Serve(args) => run_async(async move {
            serve::run(args.settings()?).await?;
            Ok(ExitCode::SUCCESS)
        }),
        Command::DashboardUrl { http, flags } => dashboard::access::print_url(http, &flags),
        Command::Stats(args) => run_async(stats_command::run(args)),
        Command::Logs(args) => run_async(logs::run(args)),
        Command::Top { flags } => run_async(top::run(flags)),
        Command::Shell { flags } => shell::main(flags),
        Command::Demo {
            agents,
            first_address,
        } => run_async(async move {
            demo::run(agents, first_address).await?;
            Ok(ExitCode::SUCCESS)
        }),
        Command::Keygen { out } => keygen::run(out.as_deref()),
        Command::Import { file } => import::run(&file),
        Command::Ctl {
            endpoint,
            command,
            properties,
            timeout,
        } => ctl::run(&endpoint, &command, properties.as_deref(), timeout),
        Command::Completions { shell, agent } => docs::print_completions(
            shell,
            match agent {
                true => troupe_agent::cli::command(),
                false => documented_command(),
            },
        ),
        Command::CompleteNames { kind, flags } => {
            run_async(docs::print_names(kind, flags.controller_endpoint()))
        }
        Command::Man { dir } => docs::print_man_pages(
            vec![documented_command(), troupe_agent::cli::command()],
            &dir,
        ),
    }
}
