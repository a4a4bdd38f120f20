//! Typed readers for option values, shared by config files (TOML) and `set`/`add` (JSON).
//!
//! TOML is converted to JSON before reading, so both paths validate with the same code and
//! report the same "expected X, got Y" messages.

use crate::protocol::request::kind_of;
use serde_json::Value;
use std::time::Duration;

/// A value of the wrong type or range: what was expected and what came.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("expected {expected}, got {got}")]
pub struct ValueError {
    pub expected: String,
    pub got: String,
}

impl ValueError {
    pub fn new(expected: impl Into<String>, value: &Value) -> Self {
        Self {
            expected: expected.into(),
            got: describe(value),
        }
    }
}

/// How a value is shown in an error: strings quoted, other scalars as written.
pub fn describe(value: &Value) -> String {
    match value {
        Value::String(_) | Value::Number(_) | Value::Bool(_) | Value::Null => value.to_string(),
        other => kind_of(other).to_string(),
    }
}

pub fn read_bool(value: &Value) -> Result<bool, ValueError> {
    match value {
        Value::Bool(b) => Ok(*b),
        // Circus ini booleans, which circusctl forwards as strings.
        Value::String(s) => match s.to_ascii_lowercase().as_str() {
            "true" | "yes" | "on" | "1" => Ok(true),
            "false" | "no" | "off" | "0" => Ok(false),
            _ => Err(ValueError::new("a boolean", value)),
        },
        _ => Err(ValueError::new("a boolean", value)),
    }
}

/// An integer in `[min, max]`; numeric strings are accepted because circusctl sends some.
pub fn read_int(value: &Value, min: i64, max: i64) -> Result<i64, ValueError> {
    let expected = || {
        if max == i64::MAX {
            format!("an integer >= {min}")
        } else {
            format!("an integer from {min} to {max}")
        }
    };
    let n = match value {
        Value::Number(n) => n
            .as_i64()
            .or_else(|| n.as_f64().filter(|f| f.fract() == 0.0).map(|f| f as i64)),
        Value::String(s) => s.trim().parse::<i64>().ok(),
        _ => None,
    };
    match n {
        Some(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(ValueError::new(expected(), value)),
    }
}

pub fn read_string(value: &Value) -> Result<String, ValueError> {
    match value {
        Value::String(s) => Ok(s.clone()),
        _ => Err(ValueError::new("a string", value)),
    }
}

/// Seconds as a number (Circus style, `2.5`) or a string with a unit (`"30s"`, `"500ms"`).
pub fn read_duration(value: &Value) -> Result<Duration, ValueError> {
    const EXPECTED: &str = "a duration (seconds as a number, or a string such as \"30s\")";
    match value {
        Value::Number(n) => n
            .as_f64()
            .filter(|f| f.is_finite() && *f >= 0.0)
            .and_then(|f| Duration::try_from_secs_f64(f).ok())
            .ok_or_else(|| ValueError::new(EXPECTED, value)),
        Value::String(s) => {
            let s = s.trim();
            if let Ok(secs) = s.parse::<f64>() {
                return read_duration(&serde_json::json!(secs))
                    .map_err(|_| ValueError::new(EXPECTED, value));
            }
            humantime::parse_duration(s).map_err(|_| ValueError::new(EXPECTED, value))
        }
        _ => Err(ValueError::new(EXPECTED, value)),
    }
}

/// Bytes as a number or a string with a unit (`"50MB"`, `"1MiB"`).
pub fn read_size(value: &Value) -> Result<u64, ValueError> {
    const EXPECTED: &str = "a size (bytes as a number, or a string such as \"50MB\")";
    match value {
        Value::Number(n) => n.as_u64().ok_or_else(|| ValueError::new(EXPECTED, value)),
        Value::String(s) => s
            .trim()
            .parse::<bytesize::ByteSize>()
            .map(|b| b.as_u64())
            .map_err(|_| ValueError::new(EXPECTED, value)),
        _ => Err(ValueError::new(EXPECTED, value)),
    }
}

/// A signal by number (`15`) or name (`"TERM"`, `"SIGTERM"`, `"term"`).
pub fn read_signal(value: &Value) -> Result<i32, ValueError> {
    const EXPECTED: &str = "a signal name or number";
    let signal = match value {
        Value::Number(_) => read_int(value, 1, 64)
            .ok()
            .and_then(|n| nix::sys::signal::Signal::try_from(n as i32).ok()),
        Value::String(s) => {
            let s = s.trim();
            if let Ok(n) = s.parse::<i32>() {
                nix::sys::signal::Signal::try_from(n).ok()
            } else {
                let upper = s.to_ascii_uppercase();
                let name = if upper.starts_with("SIG") {
                    upper
                } else {
                    format!("SIG{upper}")
                };
                name.parse::<nix::sys::signal::Signal>().ok()
            }
        }
        _ => None,
    };
    signal
        .map(|s| s as i32)
        .ok_or_else(|| ValueError::new(EXPECTED, value))
}

/// Arguments as a list of strings, or one string split like a shell would.
pub fn read_args(value: &Value) -> Result<Vec<String>, ValueError> {
    const EXPECTED: &str = "a list of strings or a string";
    match value {
        Value::String(s) => shell_words::split(s).map_err(|e| ValueError {
            expected: format!("{EXPECTED} with balanced quotes ({e})"),
            got: describe(value),
        }),
        Value::Array(items) => items
            .iter()
            .map(|item| match item {
                Value::String(s) => Ok(s.clone()),
                Value::Number(n) => Ok(n.to_string()),
                _ => Err(ValueError::new(EXPECTED, value)),
            })
            .collect(),
        _ => Err(ValueError::new(EXPECTED, value)),
    }
}

/// Converts a parsed TOML value into JSON, the one format the readers take.
pub fn toml_to_json(value: &toml::Value) -> Value {
    match value {
        toml::Value::String(s) => Value::String(s.clone()),
        toml::Value::Integer(i) => Value::from(*i),
        toml::Value::Float(f) => serde_json::Number::from_f64(*f)
            .map(Value::Number)
            .unwrap_or(Value::Null),
        toml::Value::Boolean(b) => Value::Bool(*b),
        toml::Value::Datetime(d) => Value::String(d.to_string()),
        toml::Value::Array(items) => Value::Array(items.iter().map(toml_to_json).collect()),
        toml::Value::Table(table) => Value::Object(
            table
                .iter()
                .map(|(k, v)| (k.clone(), toml_to_json(v)))
                .collect(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn durations_take_seconds_or_units() {
        assert_eq!(read_duration(&json!(2)), Ok(Duration::from_secs(2)));
        assert_eq!(read_duration(&json!(0.5)), Ok(Duration::from_millis(500)));
        assert_eq!(read_duration(&json!("30s")), Ok(Duration::from_secs(30)));
        assert_eq!(
            read_duration(&json!("250ms")),
            Ok(Duration::from_millis(250))
        );
        assert_eq!(read_duration(&json!("2")), Ok(Duration::from_secs(2)));
        assert!(read_duration(&json!(-1)).is_err());
        assert!(read_duration(&json!("soon")).is_err());
        assert!(read_duration(&json!(true)).is_err());
    }

    #[test]
    fn sizes_take_bytes_or_units() {
        assert_eq!(read_size(&json!(1024)), Ok(1024));
        assert_eq!(read_size(&json!("50MB")), Ok(50_000_000));
        assert_eq!(read_size(&json!("1MiB")), Ok(1 << 20));
        assert!(read_size(&json!(-5)).is_err());
        assert!(read_size(&json!("lots")).is_err());
    }

    #[test]
    fn signals_by_name_or_number() {
        assert_eq!(read_signal(&json!(15)), Ok(15));
        assert_eq!(read_signal(&json!("TERM")), Ok(15));
        assert_eq!(read_signal(&json!("sigint")), Ok(2));
        assert_eq!(read_signal(&json!("9")), Ok(9));
        assert!(read_signal(&json!("NOPE")).is_err());
        assert!(read_signal(&json!(0)).is_err());
        assert!(read_signal(&json!(99)).is_err());
    }

    #[test]
    fn ints_accept_numeric_strings_and_name_the_range() {
        assert_eq!(read_int(&json!("3"), 0, i64::MAX), Ok(3));
        assert_eq!(read_int(&json!(3.0), 0, i64::MAX), Ok(3));
        let err = read_int(&json!("two"), 0, i64::MAX).unwrap_err();
        assert_eq!(err.to_string(), "expected an integer >= 0, got \"two\"");
        assert!(read_int(&json!(3.5), 0, 10).is_err());
        assert!(read_int(&json!(11), 0, 10).is_err());
    }

    #[test]
    fn args_split_like_a_shell() {
        assert_eq!(
            read_args(&json!("-c 'echo hi'")),
            Ok(vec!["-c".to_string(), "echo hi".to_string()])
        );
        assert_eq!(
            read_args(&json!(["a", 1])),
            Ok(vec!["a".to_string(), "1".to_string()])
        );
        assert!(read_args(&json!("'unbalanced")).is_err());
        assert!(read_args(&json!({"a": 1})).is_err());
    }
}
