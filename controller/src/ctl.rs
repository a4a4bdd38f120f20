//! `troupe ctl ENDPOINT COMMAND [JSON]`: one raw request to one control endpoint.

use crate::exit_code::Exit;
use serde_json::{Map, Value};
use std::process::ExitCode;
use std::time::Duration;
use troupe::client::call;
use troupe::protocol::Request;

/// Sends the request, prints the JSON reply; exit 1 for an error reply or no reply.
pub fn run(endpoint: &str, command: &str, properties: Option<&str>, timeout: f64) -> ExitCode {
    let properties = match parse_properties(properties) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("troupe ctl: {e}");
            return Exit::Usage.into();
        }
    };
    let Ok(timeout) = Duration::try_from_secs_f64(timeout) else {
        eprintln!("troupe ctl: --timeout must be a positive number of seconds");
        return Exit::Usage.into();
    };
    match call(endpoint, Request::new(command, properties), timeout) {
        Ok(reply) => {
            println!("{reply}");
            if reply.get("status") == Some(&Value::String("error".into())) {
                Exit::NodeFailed.into()
            } else {
                Exit::Ok.into()
            }
        }
        Err(e) => {
            eprintln!("troupe ctl: {e}");
            Exit::of_error(&e.into()).into()
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
