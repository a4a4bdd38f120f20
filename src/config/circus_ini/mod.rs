//! Circus's `circus.ini`, read into the same [`AgentConfig`] as `troupe-agent.toml`: a second
//! front end, not a second model. Options go through [`WatcherConfig::apply`] and the
//! `[agent]` readers under their Circus names, so both files validate with one code.
//!
//! What troupe cannot do is refused with the section and key named (sockets, plugins, uid,
//! Python hooks, rlimits...), never dropped: a process must not run other than the file says.
//! What only concerns circusd itself (`pidfile`, `httpd`, `check_delay`...) is reported once,
//! by name, as ignored.

mod circus;
pub mod parse;
pub mod substitute;
mod watcher;

use super::{AgentConfig, ConfigError, Problem};
use parse::{Ini, Origin, Section};
use std::path::Path;
use substitute::Environ;

/// Whether `path` is a Circus ini rather than a `troupe-agent.toml`: an `.ini` name, or a
/// first section header that only Circus writes (`[circus]`, `[watcher:x]`, `[env]`...):
/// none of them is valid in a troupe-agent.toml.
pub fn is_circus_ini(path: &Path, text: &str) -> bool {
    if path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("ini"))
    {
        return true;
    }
    text.lines()
        .map(str::trim_end)
        .find(|line| line.starts_with('['))
        .is_some_and(|header| {
            ["[circus]", "[env]", "[DEFAULT]"].contains(&header)
                || ["[watcher:", "[env:", "[socket:", "[plugin:"]
                    .iter()
                    .any(|p| header.starts_with(p))
        })
}

/// Reads a Circus ini (and its includes) with `environ` as circusd's environment: the one
/// `$(circus.env.X)` and `$VAR` are taken from.
pub fn load(path: &Path, text: &str, environ: Environ) -> Result<AgentConfig, ConfigError> {
    let main = path.display().to_string();
    let mut report = Report {
        main: main.clone(),
        problems: Vec::new(),
        ignored: Vec::new(),
    };
    let mut ini = Ini::default();
    if let Err(errors) = ini.read(text, &main) {
        report.syntax(errors);
        return Err(report.into_error());
    }
    read_includes(path, &mut ini, &environ, &mut report);
    if !report.problems.is_empty() {
        return Err(report.into_error());
    }
    let sections = ini.with_defaults();
    let mut config = AgentConfig::default();
    // [env] is read with circusd's environment, and then joins it for everything else.
    let local_env: Vec<(String, String)> = section(&sections, "env")
        .map(|s| {
            s.entries
                .iter()
                .map(|e| (e.key.clone(), substitute::circus_vars(&e.value, &environ)))
                .collect()
        })
        .unwrap_or_default();
    let mut global_env = environ.clone();
    global_env.update(local_env.clone());
    circus::read(
        section(&sections, "circus"),
        &global_env,
        &mut config.agent,
        &mut report,
    );
    for s in &sections {
        match classify(&s.name) {
            Kind::Circus | Kind::Env => {}
            Kind::EnvFor(patterns) => {
                let matches_one = sections.iter().any(|w| {
                    w.name.strip_prefix("watcher:").is_some_and(|name| {
                        patterns
                            .split(',')
                            .any(|p| substitute::fnmatch(name, p.trim()))
                    })
                });
                if !matches_one {
                    let key = report.at(&s.origin, &s.name, None);
                    report.ignored.push(Problem {
                        key,
                        message: "matches no [watcher:NAME]: nothing uses it".into(),
                    });
                }
            }
            Kind::Watcher(name) => {
                let env = watcher::env_for(name, &local_env, &sections, &environ);
                if let Some(w) = watcher::read(s, name, &env, &global_env, &mut report) {
                    config.watchers.push(w);
                }
            }
            Kind::Socket => report.refuse_section(
                s,
                "troupe does not open sockets for its watchers (Circus's [socket:NAME] and \
                 use_sockets): remove the section and let the program bind its own address",
            ),
            Kind::Plugin => report.refuse_section(
                s,
                "troupe runs no Circus plugins: remove the section (max_retry and the respawn \
                 backoff do the flapping plugin's job; `troupe stats` and `troupe serve`'s \
                 /metrics give what statsd and the stats plugins gave)",
            ),
            Kind::Unknown => report.refuse_section(
                s,
                "unknown section: Circus reads [circus], [env], [env:WATCHERS], \
                 [watcher:NAME], [socket:NAME] and [plugin:NAME]",
            ),
        }
    }
    // circusd sorts its watchers by name (then starts them by priority).
    config.watchers.sort_by(|a, b| a.name.cmp(&b.name));
    report.problems.extend(super::whole_file_problems(&config));
    if !report.problems.is_empty() {
        return Err(report.into_error());
    }
    config.ignored = report.ignored;
    config.source = Some(path.to_path_buf());
    Ok(config)
}

/// Reads the files `include` and `include_dir` name into `ini`. As in circusd, what the main
/// file set stays, and an included file's own includes are not followed.
fn read_includes(path: &Path, ini: &mut Ini, environ: &Environ, report: &mut Report) {
    let Some(circus) = ini.sections.iter().find(|s| s.name == "circus") else {
        return;
    };
    let with_defaults = |key: &str| {
        circus
            .get(key)
            .or_else(|| ini.defaults.iter().find(|e| e.key == key))
            .map(|e| substitute::circus_vars(&e.value, environ))
            .unwrap_or_default()
    };
    let (files, missing) = parse::includes(
        path,
        &with_defaults("include"),
        &with_defaults("include_dir"),
    );
    for pattern in missing {
        report.ignored.push(Problem {
            key: "[circus] include".into(),
            message: format!(
                "{pattern} matches no file (as for circusd, include paths are relative to the \
                 main config file)"
            ),
        });
    }
    for file in files {
        let shown = file.display().to_string();
        match std::fs::read_to_string(&file) {
            Ok(text) => {
                if let Err(errors) = ini.read(&text, &shown) {
                    report.syntax(errors);
                }
            }
            Err(e) => report.problems.push(Problem {
                key: "[circus] include".into(),
                message: format!("cannot read {shown}: {e}"),
            }),
        }
    }
}

fn section<'a>(sections: &'a [Section], name: &str) -> Option<&'a Section> {
    sections.iter().find(|s| s.name == name)
}

/// What a section is, by circusd's (case-sensitive) rules.
enum Kind<'a> {
    Circus,
    Env,
    EnvFor(&'a str),
    Watcher(&'a str),
    Socket,
    Plugin,
    Unknown,
}

fn classify(name: &str) -> Kind<'_> {
    if name == "circus" {
        Kind::Circus
    } else if name == "env" {
        Kind::Env
    } else if let Some(patterns) = name.strip_prefix("env:") {
        Kind::EnvFor(patterns)
    } else if let Some(watcher) = name.strip_prefix("watcher:") {
        Kind::Watcher(watcher)
    } else if name.starts_with("socket:") {
        Kind::Socket
    } else if name.starts_with("plugin:") {
        Kind::Plugin
    } else {
        Kind::Unknown
    }
}

/// Problems and ignored options of one ini, each located by file, line, section and key.
struct Report {
    main: String,
    problems: Vec<Problem>,
    ignored: Vec<Problem>,
}

impl Report {
    /// `line 12: [watcher:web] numprocesses` (with the file when it is an included one).
    fn at(&self, origin: &Origin, section: &str, key: Option<&str>) -> String {
        let place = if origin.file == self.main {
            format!("line {}", origin.line)
        } else {
            format!("{} line {}", origin.file, origin.line)
        };
        match key {
            Some(key) => format!("{place}: [{section}] {key}"),
            None => format!("{place}: [{section}]"),
        }
    }

    fn problem(&mut self, origin: &Origin, section: &str, key: Option<&str>, message: String) {
        let key = self.at(origin, section, key);
        self.problems.push(Problem { key, message });
    }

    fn refuse_section(&mut self, section: &Section, message: &str) {
        self.problem(&section.origin, &section.name, None, message.to_string());
    }

    fn syntax(&mut self, errors: Vec<parse::SyntaxError>) {
        for e in errors {
            let place = if e.origin.file == self.main {
                format!("line {}", e.origin.line)
            } else {
                format!("{} line {}", e.origin.file, e.origin.line)
            };
            self.problems.push(Problem {
                key: place,
                message: e.message,
            });
        }
    }

    fn into_error(self) -> ConfigError {
        ConfigError {
            file: self.main,
            problems: self.problems,
        }
    }
}

#[cfg(test)]
mod tests;
