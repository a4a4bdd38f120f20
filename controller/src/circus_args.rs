//! Circus commands as typed on the command line (`troupe incr web 2 --waiting`), turned into
//! requests the way circusctl builds them.

use serde_json::{json, Map, Value};
use troupe::protocol::{Request, NODE_COMMANDS};

/// A usage error naming what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

fn usage(text: impl Into<String>) -> UsageError {
    UsageError(text.into())
}

/// Builds the request for `command` with its positional `args` and `--flags`.
pub fn build_request(command: &str, args: &[String]) -> Result<Request, UsageError> {
    let command = command.to_ascii_lowercase();
    if !NODE_COMMANDS.contains(&command.as_str()) {
        return Err(usage(format!(
            "unknown command '{command}' (known: {})",
            NODE_COMMANDS.join(", ")
        )));
    }
    let mut flags: Vec<&str> = Vec::new();
    let mut options: Map<String, Value> = Map::new();
    let mut positional: Vec<&str> = Vec::new();
    let mut iter = args.iter().map(String::as_str).peekable();
    while let Some(arg) = iter.next() {
        match arg {
            "--signum" | "--graceful-timeout" | "--graceful_timeout" | "--match" => {
                let value = iter
                    .next()
                    .ok_or_else(|| usage(format!("{arg} needs a value")))?;
                options.insert(arg.trim_start_matches("--").replace('-', "_"), json!(value));
            }
            flag if flag.starts_with("--") => flags.push(flag),
            _ => positional.push(arg),
        }
    }
    let mut props = Map::new();
    let has = |f: &str| flags.contains(&f);
    let take_flag = |name: &str, props: &mut Map<String, Value>| {
        if has(&format!("--{name}")) {
            props.insert(name.to_string(), json!(true));
        }
    };
    let mut rest = positional.into_iter();
    let mut name = |props: &mut Map<String, Value>, required: bool| -> Result<(), UsageError> {
        match rest.next() {
            Some(n) => {
                props.insert("name".into(), json!(n));
                Ok(())
            }
            None if required => Err(usage(format!("{command} needs a watcher name"))),
            None => Ok(()),
        }
    };
    match command.as_str() {
        "status" | "numprocesses" | "list" | "options" => name(&mut props, command == "options")?,
        "start" | "stop" | "restart" => {
            name(&mut props, false)?;
            props.insert("waiting".into(), json!(has("--waiting")));
            props.insert(
                "match".into(),
                options.remove("match").unwrap_or_else(|| json!("glob")),
            );
        }
        "reload" => {
            name(&mut props, false)?;
            props.insert("graceful".into(), json!(!has("--terminate")));
            props.insert("sequential".into(), json!(has("--sequential")));
            props.insert("waiting".into(), json!(has("--waiting")));
        }
        "incr" | "decr" => {
            name(&mut props, true)?;
            if let Some(nb) = rest.next() {
                let nb: u32 = nb
                    .parse()
                    .map_err(|_| usage(format!("{command}: nb must be a number, got {nb:?}")))?;
                props.insert("nb".into(), json!(nb));
            }
            props.insert("waiting".into(), json!(has("--waiting")));
        }
        "stats" => {
            name(&mut props, false)?;
            if let Some(pid) = rest.next() {
                props.insert("process".into(), json!(pid));
            }
            take_flag("extended", &mut props);
        }
        "signal" => {
            name(&mut props, true)?;
            let values: Vec<&str> = rest.by_ref().collect();
            match values.as_slice() {
                [signum] => {
                    props.insert("signum".into(), json!(signum));
                }
                [pid, signum] => {
                    props.insert("pid".into(), json!(pid));
                    props.insert("signum".into(), json!(signum));
                }
                _ => return Err(usage("signal needs: NAME [PID] SIGNUM")),
            }
            take_flag("children", &mut props);
            take_flag("recursive", &mut props);
        }
        "kill" => {
            name(&mut props, true)?;
            if let Some(pid) = rest.next() {
                props.insert("pid".into(), json!(pid));
            }
            props.extend(options.clone());
            props.insert("waiting".into(), json!(has("--waiting")));
        }
        "get" => {
            name(&mut props, true)?;
            let keys: Vec<&str> = rest.by_ref().collect();
            if keys.is_empty() {
                return Err(usage("get needs: NAME KEY [KEY...]"));
            }
            props.insert("keys".into(), json!(keys));
        }
        "set" => {
            name(&mut props, true)?;
            let pairs: Vec<&str> = rest.by_ref().collect();
            if pairs.is_empty() || !pairs.len().is_multiple_of(2) {
                return Err(usage("set needs: NAME KEY VALUE [KEY VALUE...]"));
            }
            let mut set = Map::new();
            for pair in pairs.chunks(2) {
                // Numbers and booleans go as JSON, the rest as strings.
                let value = serde_json::from_str::<Value>(pair[1])
                    .ok()
                    .filter(|v| v.is_number() || v.is_boolean())
                    .unwrap_or_else(|| json!(pair[1]));
                set.insert(pair[0].to_string(), value);
            }
            props.insert("options".into(), Value::Object(set));
            props.insert("waiting".into(), json!(has("--waiting")));
        }
        "add" => {
            name(&mut props, true)?;
            let cmd: Vec<&str> = rest.by_ref().collect();
            if cmd.is_empty() {
                return Err(usage("add needs: NAME CMD [ARGS...]"));
            }
            props.insert("cmd".into(), json!(shell_join(&cmd)));
            take_flag("start", &mut props);
            props.insert("waiting".into(), json!(has("--waiting")));
        }
        "rm" => {
            name(&mut props, true)?;
            take_flag("nostop", &mut props);
            props.insert("waiting".into(), json!(has("--waiting")));
        }
        "quit" | "reloadconfig" => {
            props.insert("waiting".into(), json!(has("--waiting")));
        }
        "globaloptions" => {
            if let Some(option) = rest.next() {
                props.insert("option".into(), json!(option));
            }
        }
        _ => {}
    }
    if let Some(extra) = rest.next() {
        return Err(usage(format!("{command}: unexpected argument {extra:?}")));
    }
    Ok(Request::new(&command, props))
}

fn shell_join(words: &[&str]) -> String {
    words
        .iter()
        .map(|w| {
            if w.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_./=:,".contains(c))
            {
                w.to_string()
            } else {
                format!("'{}'", w.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(line: &str) -> Result<Value, UsageError> {
        let mut words = line.split_whitespace().map(String::from);
        let command = words.next().unwrap();
        let args: Vec<String> = words.collect();
        build_request(&command, &args).map(|r| Value::Object(r.properties))
    }

    #[test]
    fn builds_what_circusctl_sends() {
        assert_eq!(req("status").unwrap(), json!({}));
        assert_eq!(req("status web").unwrap(), json!({"name": "web"}));
        assert_eq!(
            req("stop web --waiting").unwrap(),
            json!({"name": "web", "waiting": true, "match": "glob"})
        );
        assert_eq!(
            req("restart web --match regex").unwrap(),
            json!({"name": "web", "waiting": false, "match": "regex"})
        );
        assert_eq!(
            req("reload web --sequential").unwrap(),
            json!({"name": "web", "graceful": true, "sequential": true, "waiting": false})
        );
        assert_eq!(
            req("incr web 3").unwrap(),
            json!({"name": "web", "nb": 3, "waiting": false})
        );
        assert_eq!(
            req("get web numprocesses env").unwrap(),
            json!({"name": "web", "keys": ["numprocesses", "env"]})
        );
        assert_eq!(
            req("set web numprocesses 3 stop_signal INT").unwrap(),
            json!({"name": "web", "options": {"numprocesses": 3, "stop_signal": "INT"}, "waiting": false})
        );
        assert_eq!(
            req("signal web 123 HUP --children").unwrap(),
            json!({"name": "web", "pid": "123", "signum": "HUP", "children": true})
        );
        assert_eq!(
            req("kill web --signum INT --graceful-timeout 2").unwrap(),
            json!({"name": "web", "signum": "INT", "graceful_timeout": "2", "waiting": false})
        );
        assert_eq!(
            req("add x sleep 10 --start").unwrap(),
            json!({"name": "x", "cmd": "sleep 10", "start": true, "waiting": false})
        );
    }

    #[test]
    fn usage_errors_name_the_problem() {
        assert!(req("bogus")
            .unwrap_err()
            .0
            .contains("unknown command 'bogus'"));
        assert!(req("incr").unwrap_err().0.contains("needs a watcher name"));
        assert!(req("incr web two")
            .unwrap_err()
            .0
            .contains("nb must be a number"));
        assert!(req("set web numprocesses")
            .unwrap_err()
            .0
            .contains("KEY VALUE"));
        assert!(req("status web extra")
            .unwrap_err()
            .0
            .contains("unexpected argument"));
        assert!(req("kill web --signum")
            .unwrap_err()
            .0
            .contains("needs a value"));
    }
}
