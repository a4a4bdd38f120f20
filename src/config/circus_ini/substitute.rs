//! The substitutions circusd makes while reading its ini: `$(circus.env.X)` (or
//! `((circus.env.X))`, any case) from the environment and `[env]`, `$VAR` in watcher env
//! values from circusd's own environment, and `[env:PATTERN]`'s fnmatch patterns.

use regex::Regex;
use std::collections::BTreeMap;
use std::sync::LazyLock;

/// circusd's `_CIRCUS_VAR`: `$(circus.NAME)` or `((circus.NAME))`, case-insensitive.
static CIRCUS_VAR: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)\$\(circus\.([\w.\-]+)\)|\(\(circus\.([\w.\-]+)\)\)").expect("valid regex")
});

/// circusd's `parse_env_dict`: `$NAME` where NAME is upper case.
static DOLLAR_VAR: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\$([A-Z]+[A-Z0-9_]*)").expect("valid regex"));

/// An environment in Python's dict order: a key set again keeps its first place.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Environ(Vec<(String, String)>);

impl Environ {
    pub fn new(vars: impl IntoIterator<Item = (String, String)>) -> Self {
        let mut env = Environ::default();
        env.update(vars);
        env
    }

    pub fn update(&mut self, vars: impl IntoIterator<Item = (String, String)>) {
        for (key, value) in vars {
            match self.0.iter_mut().find(|(k, _)| *k == key) {
                Some(slot) => slot.1 = value,
                None => self.0.push((key, value)),
            }
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = &(String, String)> {
        self.0.iter()
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The names `$(circus.env.x)` looks up: lower-cased, the last of a case-blind pair winning.
    pub fn lookup_table(&self) -> BTreeMap<String, &str> {
        self.0
            .iter()
            .map(|(k, v)| (format!("circus.env.{}", k.to_lowercase()), v.as_str()))
            .collect()
    }
}

/// `text` with every `$(circus.env.X)` whose X is in `env` replaced; others stay as written.
pub fn circus_vars(text: &str, env: &Environ) -> String {
    if !CIRCUS_VAR.is_match(text) {
        return text.to_string();
    }
    let table = env.lookup_table();
    CIRCUS_VAR
        .replace_all(text, |caps: &regex::Captures| {
            let name = caps
                .get(1)
                .or_else(|| caps.get(2))
                .map(|m| m.as_str().to_lowercase())
                .unwrap_or_default();
            let name = if name.starts_with("circus") {
                name
            } else {
                format!("circus.{name}")
            };
            table
                .get(&name)
                .map(|v| v.to_string())
                .unwrap_or_else(|| caps[0].to_string())
        })
        .into_owned()
}

/// The first `$(circus.X)` left in `text` other than `$(circus.wid)` (which the agent fills
/// in at each spawn), for the error that says troupe does not make it.
pub fn leftover_circus_var(text: &str) -> Option<&str> {
    CIRCUS_VAR
        .find_iter(text)
        .map(|m| m.as_str())
        .find(|var| !var.to_lowercase().contains("(circus.wid)"))
}

/// A watcher env value as circusd passes it on: `$NAME` replaced from `process_env` (empty
/// when unset), then trimmed.
pub fn dollar_vars(value: &str, process_env: &Environ) -> String {
    DOLLAR_VAR
        .replace_all(value, |caps: &regex::Captures| {
            process_env.get(&caps[1]).unwrap_or_default().to_string()
        })
        .trim()
        .to_string()
}

/// Python's `fnmatch.fnmatchcase` (circusd's, on Linux): `*`, `?`, `[seq]`, `[!seq]`.
pub fn fnmatch(name: &str, pattern: &str) -> bool {
    let mut regex = String::from("(?s)^");
    let chars: Vec<char> = pattern.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        match chars[i] {
            '*' => regex.push_str(".*"),
            '?' => regex.push('.'),
            '[' => {
                let mut j = i + 1;
                if j < chars.len() && chars[j] == '!' {
                    j += 1;
                }
                if j < chars.len() && chars[j] == ']' {
                    j += 1;
                }
                while j < chars.len() && chars[j] != ']' {
                    j += 1;
                }
                if j >= chars.len() {
                    regex.push_str(r"\[");
                } else {
                    let inner: String = chars[i + 1..j].iter().collect();
                    let (negate, inner) = match inner.strip_prefix('!') {
                        Some(rest) => (true, rest.to_string()),
                        None => (false, inner),
                    };
                    let inner = inner.replace('\\', r"\\").replace('[', r"\[");
                    regex.push('[');
                    if negate {
                        regex.push('^');
                    }
                    regex.push_str(&inner);
                    regex.push(']');
                    i = j;
                }
            }
            c => regex.push_str(&regex::escape(&c.to_string())),
        }
        i += 1;
    }
    regex.push('$');
    Regex::new(&regex).is_ok_and(|r| r.is_match(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn circus_env_vars_are_found_in_any_case_and_unknown_ones_stay() {
        let env = Environ::new([
            ("HOME".into(), "/root".into()),
            ("port".into(), "80".into()),
        ]);
        assert_eq!(
            circus_vars(
                "$(circus.env.HOME) $(CIRCUS.ENV.home) ((circus.env.PORT))",
                &env
            ),
            "/root /root 80"
        );
        assert_eq!(
            circus_vars("$(circus.env.NOPE) $(circus.wid)", &env),
            "$(circus.env.NOPE) $(circus.wid)"
        );
        assert_eq!(
            leftover_circus_var("a $(circus.wid) ((CIRCUS.WID)) b"),
            None
        );
        assert_eq!(
            leftover_circus_var("$(circus.wid) $(circus.sockets.web)"),
            Some("$(circus.sockets.web)")
        );
    }

    #[test]
    fn dollar_vars_are_upper_case_names_and_empty_when_unset() {
        let env = Environ::new([("HOME".into(), "/root".into())]);
        assert_eq!(dollar_vars(" $HOME/x:$NOPE:$home ", &env), "/root/x::$home");
    }

    #[test]
    fn fnmatch_is_pythons() {
        assert!(fnmatch("web1", "web*"));
        assert!(fnmatch("web1", "web?"));
        assert!(!fnmatch("Web1", "web*"));
        assert!(fnmatch("web1", "web[0-9]"));
        assert!(!fnmatch("web1", "web[!0-9]"));
        assert!(fnmatch("a.b", "a.b"));
        assert!(!fnmatch("axb", "a.b"));
        assert!(fnmatch("web[", "web["));
    }
}
