//! `troupe`: the controller CLI. In this first step it sends one raw request to one endpoint.

use clap::{Parser, Subcommand};
use serde_json::{Map, Value};
use std::process::ExitCode;
use std::time::Duration;
use troupe::client::{call, ClientError};
use troupe::protocol::Request;

/// Drive troupe agents (and stock circusd nodes).
#[derive(Parser, Debug)]
#[command(name = "troupe", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Send one raw request to one control endpoint and print the JSON reply.
    Ctl {
        /// Control endpoint, e.g. tcp://127.0.0.1:5555.
        endpoint: String,
        /// Command name (status, list, start, nodeinfo, ...).
        command: String,
        /// Properties as a JSON object, e.g. '{"name": "web", "waiting": true}'.
        properties: Option<String>,
        /// Seconds to wait for the reply.
        #[arg(long, default_value_t = 5.0)]
        timeout: f64,
    },
}

/// Exit codes: 0 ok, 1 the node replied with an error or did not reply, 2 usage error.
fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Ctl {
            endpoint,
            command,
            properties,
            timeout,
        } => ctl(&endpoint, &command, properties.as_deref(), timeout),
    }
}

fn ctl(endpoint: &str, command: &str, properties: Option<&str>, timeout: f64) -> ExitCode {
    let properties = match parse_properties(properties) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("troupe ctl: {e}");
            return ExitCode::from(2);
        }
    };
    let Ok(timeout) = Duration::try_from_secs_f64(timeout) else {
        eprintln!("troupe ctl: --timeout must be a positive number of seconds");
        return ExitCode::from(2);
    };
    match call(endpoint, Request::new(command, properties), timeout) {
        Ok(reply) => {
            println!("{reply}");
            if reply.get("status") == Some(&Value::String("error".into())) {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(e @ ClientError::Connect { .. }) => {
            eprintln!("troupe ctl: {e}");
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("troupe ctl: {e}");
            ExitCode::FAILURE
        }
    }
}

fn parse_properties(text: Option<&str>) -> Result<Map<String, Value>, String> {
    let Some(text) = text else {
        return Ok(Map::new());
    };
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(other) => Err(format!("properties must be a JSON object, got {other}")),
        Err(e) => Err(format!("properties are not valid JSON: {e}")),
    }
}
