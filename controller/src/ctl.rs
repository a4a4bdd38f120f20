//! `troupe ctl ENDPOINT COMMAND [JSON]`: one raw request to one control endpoint.

use serde_json::{Map, Value};
use std::process::ExitCode;
use std::time::Duration;
use troupe::client::{call, ClientError};
use troupe::protocol::Request;

/// Sends the request, prints the JSON reply; exit 1 for an error reply or no reply.
pub fn run(endpoint: &str, command: &str, properties: Option<&str>, timeout: f64) -> ExitCode {
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
