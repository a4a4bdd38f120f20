//! One stats message's body, read once (pure): the figures serve computes with, the pids of
//! a watcher's aggregate, and the process info object as sent.
//!
//! Reading each body into a `serde_json::Value` was half of serve's stats work at 1000
//! members (every field a map entry, every string an allocation); the figures are read here
//! from the few fields they need, and the info object is kept as text, parsed again only for
//! a snapshot (`stats_snapshot`, `/metrics`), which is rare next to a message per process
//! per second.

use super::snapshot::{parse_mem, Figures};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value;

/// A body that is a JSON object.
#[derive(Debug, Clone, PartialEq)]
pub struct Payload {
    /// The object as sent.
    pub text: Box<str>,
    /// Its `cpu`, `mem`, `age` and `mem_info1` (a process's).
    pub figures: Figures,
    /// Its `pid` array (a watcher's aggregate); empty when `pid` is no array.
    pub pids: Vec<u32>,
}

/// The fields read; the others are skipped unread.
#[derive(Deserialize)]
struct Fields<'a> {
    #[serde(borrow, default)]
    cpu: Option<&'a RawValue>,
    #[serde(borrow, default)]
    mem: Option<&'a RawValue>,
    #[serde(borrow, default)]
    age: Option<&'a RawValue>,
    #[serde(borrow, default)]
    mem_info1: Option<&'a RawValue>,
    #[serde(borrow, default)]
    pid: Option<&'a RawValue>,
}

impl Payload {
    /// None for anything but a JSON object (a hostile stream's garbage included).
    pub fn decode(body: &[u8]) -> Option<Payload> {
        let text = std::str::from_utf8(body).ok()?;
        // serde reads a struct from an array too: only an object is a process info.
        if !text.trim_start().starts_with('{') {
            return None;
        }
        let fields: Fields = serde_json::from_str(text).ok()?;
        let number = |raw: Option<&RawValue>| raw.and_then(|raw| raw.get().parse::<f64>().ok());
        let figures = Figures {
            cpu: number(fields.cpu),
            mem: number(fields.mem),
            age: number(fields.age),
            rss: fields
                .mem_info1
                .and_then(|raw| serde_json::from_str::<String>(raw.get()).ok())
                .and_then(|text| parse_mem(&text)),
        };
        // A process's `pid` is a number: only an array is read as one (a refused parse makes
        // an error message, 1 % of serve's CPU at 2000 members).
        let pids = fields
            .pid
            .filter(|raw| raw.get().starts_with('['))
            .and_then(|raw| serde_json::from_str::<Vec<&RawValue>>(raw.get()).ok())
            .into_iter()
            .flatten()
            .filter_map(|pid| pid.get().parse::<u32>().ok())
            .collect();
        Some(Payload {
            text: text.into(),
            figures,
            pids,
        })
    }

    /// The same from a value already parsed (a `stats` reply, tests).
    pub fn of_value(info: &Value) -> Option<Payload> {
        Payload::decode(serde_json::to_string(info).ok()?.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_figures_are_those_a_value_gives() {
        let bodies = [
            json!({"pid": 42, "cpu": 12.5, "mem": 0.3, "age": 75.25, "mem_info1": "1.50M",
                   "cmdline": "sleep 100", "children": [{"pid": 43}]}),
            json!({"cpu": "N/A", "mem": null, "mem_info1": 7, "age": -1}),
            json!({"pid": [42, 43, -1, 1.5, "44", 4294967296u64], "cpu": 1e2}),
            json!({}),
        ];
        for body in bodies {
            let payload = Payload::of_value(&body).expect("an object");
            assert_eq!(payload.figures, Figures::of(&body), "{body}");
            let expected_pids: Vec<u32> = body["pid"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|p| p.as_u64().and_then(|p| u32::try_from(p).ok()))
                .collect();
            assert_eq!(payload.pids, expected_pids, "{body}");
            assert_eq!(serde_json::from_str::<Value>(&payload.text).unwrap(), body);
        }
    }

    #[test]
    fn anything_but_an_object_is_refused() {
        for body in [
            &b"[12.5, 0.3]"[..],
            b"42",
            b"\"text\"",
            b"{\"cpu\": 1",
            b"{\"cpu\": 1} trailing",
            b"\xff{}",
            b"",
            b"{\"cpu\": 1, \"cpu\": 2}",
        ] {
            assert_eq!(
                Payload::decode(body),
                None,
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }
}
