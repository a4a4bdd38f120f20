//! Typed access to a request's `properties`, with Circus's error wording.

use serde_json::{Map, Value};
use troupe::config::value::{read_bool, read_duration, read_int, read_signal};
use troupe::protocol::CommandError;

#[derive(Clone, Copy)]
pub struct Props<'a>(pub &'a Map<String, Value>);

impl<'a> Props<'a> {
    pub fn has(&self, key: &str) -> bool {
        self.0.get(key).is_some_and(|v| !v.is_null())
    }

    pub fn get(&self, key: &str) -> Option<&'a Value> {
        self.0.get(key).filter(|v| !v.is_null())
    }

    pub fn required_str(&self, key: &str) -> Result<&'a str, CommandError> {
        match self.get(key) {
            Some(Value::String(s)) => Ok(s),
            Some(other) => Err(invalid(key, "a string", other)),
            None => Err(missing(key)),
        }
    }

    pub fn opt_str(&self, key: &str) -> Result<Option<&'a str>, CommandError> {
        match self.get(key) {
            Some(Value::String(s)) => Ok(Some(s)),
            Some(other) => Err(invalid(key, "a string", other)),
            None => Ok(None),
        }
    }

    pub fn bool_or(&self, key: &str, default: bool) -> Result<bool, CommandError> {
        self.get(key)
            .map(|v| read_bool(v).map_err(|_| invalid(key, "a boolean", v)))
            .unwrap_or(Ok(default))
    }

    pub fn opt_int(&self, key: &str, min: i64, max: i64) -> Result<Option<i64>, CommandError> {
        self.get(key)
            .map(|v| read_int(v, min, max).map_err(|_| invalid(key, "an integer", v)))
            .transpose()
    }

    pub fn opt_pid(&self, key: &str) -> Result<Option<u32>, CommandError> {
        Ok(self.opt_int(key, 1, i64::from(u32::MAX))?.map(|p| p as u32))
    }

    pub fn opt_signal(&self, key: &str) -> Result<Option<i32>, CommandError> {
        self.get(key)
            .map(|v| {
                read_signal(v).map_err(|_| {
                    CommandError::message(format!(
                        "signal {} invalid",
                        troupe::config::value::describe(v)
                    ))
                })
            })
            .transpose()
    }

    pub fn opt_duration(&self, key: &str) -> Result<Option<std::time::Duration>, CommandError> {
        self.get(key)
            .map(|v| read_duration(v).map_err(|_| invalid(key, "a number of seconds", v)))
            .transpose()
    }

    pub fn waiting(&self) -> Result<bool, CommandError> {
        self.bool_or("waiting", false)
    }
}

fn missing(key: &str) -> CommandError {
    CommandError::message(format!("message invalid '{key}' is missing"))
}

fn invalid(key: &str, expected: &str, got: &Value) -> CommandError {
    CommandError::message(format!(
        "'{key}' must be {expected}, got {}",
        troupe::config::value::describe(got)
    ))
}
