//! Circus's ini dialect, read as circusd 0.19 reads it (`circus.util.StrictConfigParser`).
//!
//! Not Python's stock `configparser`, so no ini crate reads it the same: option names keep
//! their case (`optionxform = str`), the first of two equal options in a section wins and
//! later sections of one name extend the first, `;` starts a comment only after whitespace
//! and only at the first `;` of a value, `#` only at the start of a line, a line whose first
//! word is `rem` is a comment, `""` is the empty string, `[DEFAULT]` options appear in every
//! section, and no `%(x)s` interpolation. Each value remembers its file and line.

use std::path::{Path, PathBuf};

/// Where a section or an option was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// The file as it is shown in errors.
    pub file: String,
    pub line: usize,
}

/// One option: its value (continuation lines joined with `\n`) and where it was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub key: String,
    pub value: String,
    pub origin: Origin,
}

/// One section, options in the order first written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Section {
    pub name: String,
    pub origin: Origin,
    pub entries: Vec<Entry>,
}

impl Section {
    pub fn get(&self, key: &str) -> Option<&Entry> {
        self.entries.iter().find(|e| e.key == key)
    }
}

/// A file's sections (and its includes', once read), in the order first written.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Ini {
    pub sections: Vec<Section>,
    /// `[DEFAULT]`: seen by every section that does not set the option itself.
    pub defaults: Vec<Entry>,
}

/// A line the dialect cannot read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntaxError {
    pub origin: Origin,
    pub message: String,
}

impl Ini {
    /// Reads `text` (from `file`) into the sections already read: what is set already stays.
    pub fn read(&mut self, text: &str, file: &str) -> Result<(), Vec<SyntaxError>> {
        let mut errors = Vec::new();
        // (section index or None for DEFAULT, option index) the next continuation joins.
        let mut current: Option<Option<usize>> = None;
        let mut option: Option<usize> = None;
        for (index, line) in split_lines(text).enumerate() {
            let origin = Origin {
                file: file.to_string(),
                line: index + 1,
            };
            let first = line.chars().next();
            if line.trim().is_empty() || matches!(first, Some('#' | ';')) {
                continue;
            }
            let first_word = line.split_whitespace().next().unwrap_or_default();
            if first_word.eq_ignore_ascii_case("rem") && matches!(first, Some('r' | 'R')) {
                continue;
            }
            if first.is_some_and(char::is_whitespace) && current.is_some() {
                if let Some(option) = option {
                    let value = line.trim();
                    if !value.is_empty() {
                        let entry = self.entry_mut(current.flatten(), option);
                        entry.value.push('\n');
                        entry.value.push_str(value);
                    }
                    continue;
                }
            }
            if let Some(header) = section_header(line) {
                match header {
                    Ok("DEFAULT") => current = Some(None),
                    Ok(name) => {
                        let found = self.sections.iter().position(|s| s.name == name);
                        let index = found.unwrap_or_else(|| {
                            self.sections.push(Section {
                                name: name.to_string(),
                                origin: origin.clone(),
                                entries: Vec::new(),
                            });
                            self.sections.len() - 1
                        });
                        current = Some(Some(index));
                    }
                    Err(message) => errors.push(SyntaxError {
                        origin: origin.clone(),
                        message,
                    }),
                }
                option = None;
                continue;
            }
            let Some(section) = current else {
                errors.push(SyntaxError {
                    origin,
                    message: "an option before any [section] header: put it under [circus] or \
                              a [watcher:NAME]"
                        .into(),
                });
                return Err(errors);
            };
            let Some((key, value)) = option_line(line) else {
                errors.push(SyntaxError {
                    origin,
                    message: format!(
                        "cannot read {:?}: expected `key = value`, `key: value` or a [section]",
                        line.trim_end()
                    ),
                });
                continue;
            };
            let entries = match section {
                Some(index) => &mut self.sections[index].entries,
                None => &mut self.defaults,
            };
            // As circusd: an option already set keeps its value (and its continuation lines
            // go on joining it).
            option = Some(
                entries
                    .iter()
                    .position(|e| e.key == key)
                    .unwrap_or_else(|| {
                        entries.push(Entry {
                            key: key.to_string(),
                            value,
                            origin,
                        });
                        entries.len() - 1
                    }),
            );
            if key.is_empty() {
                option = None;
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }

    fn entry_mut(&mut self, section: Option<usize>, option: usize) -> &mut Entry {
        match section {
            Some(index) => &mut self.sections[index].entries[option],
            None => &mut self.defaults[option],
        }
    }

    /// The sections as circusd's `items()` sees them: each with the `[DEFAULT]` options it
    /// does not set itself.
    pub fn with_defaults(mut self) -> Vec<Section> {
        for section in &mut self.sections {
            for default in &self.defaults {
                if section.get(&default.key).is_none() {
                    section.entries.push(default.clone());
                }
            }
        }
        self.sections
    }
}

/// Lines as Python's text mode reads them: `\n`, `\r\n` and a lone `\r` all end one.
fn split_lines(text: &str) -> impl Iterator<Item = &str> {
    let mut rest = text;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let end = rest.find(['\n', '\r']).unwrap_or(rest.len());
        let line = &rest[..end];
        let skip = if rest[end..].starts_with("\r\n") {
            2
        } else {
            usize::from(end < rest.len())
        };
        rest = &rest[end + skip..];
        Some(line)
    })
}

/// `[name]`: the name runs to the last `]` of the line, as circusd's pattern does; what
/// follows it may only be a comment.
fn section_header(line: &str) -> Option<Result<&str, String>> {
    let inner = line.strip_prefix('[')?;
    let close = inner.rfind(']')?;
    let name = &inner[..close];
    if name.is_empty() {
        return None;
    }
    let after = inner[close + 1..].trim_start();
    if !(after.is_empty() || after.starts_with([';', '#'])) {
        return Some(Err(format!(
            "text after the section header [{name}]: {after:?} (a comment starts with ; or #)"
        )));
    }
    Some(Ok(name))
}

/// `key = value` or `key: value`, split at the first `=` or `:`; a `;` after whitespace
/// starts a comment (only the value's first `;` is looked at, as circusd does).
fn option_line(line: &str) -> Option<(&str, String)> {
    let split = line.find(['=', ':'])?;
    let key = line[..split].trim_end();
    let mut value = line[split + 1..].trim_start();
    if let Some(pos) = value.find(';') {
        // circusd looks at value[pos - 1], which for pos 0 is the value's last character.
        let before = if pos == 0 {
            value.chars().last()
        } else {
            value[..pos].chars().last()
        };
        if before.is_some_and(char::is_whitespace) {
            value = &value[..pos];
        }
    }
    let value = value.trim();
    let value = if value == "\"\"" { "" } else { value };
    Some((key, value.to_string()))
}

/// The files `include` and `include_dir` of `[circus]` name, as circusd finds them: each
/// pattern (space-separated) relative to the main file's directory; `include_dir` reads
/// `*.ini` in each directory. Patterns that match nothing are returned apart, for a warning.
pub fn includes(main: &Path, include: &str, include_dir: &str) -> (Vec<PathBuf>, Vec<String>) {
    let base = main.parent().unwrap_or(Path::new("."));
    let patterns = include.split_whitespace().map(PathBuf::from).chain(
        include_dir
            .split_whitespace()
            .map(|dir| Path::new(dir).join("*.ini")),
    );
    let options = glob::MatchOptions {
        // Python's glob skips hidden files for `*`.
        require_literal_leading_dot: true,
        ..Default::default()
    };
    let (mut found, mut missing) = (Vec::new(), Vec::new());
    for pattern in patterns {
        let pattern = base.join(pattern);
        let text = pattern.to_string_lossy().into_owned();
        let matches: Vec<PathBuf> = glob::glob_with(&text, options)
            .map(|paths| paths.filter_map(Result::ok).collect())
            .unwrap_or_default();
        if matches.is_empty() {
            missing.push(text);
        }
        found.extend(matches);
    }
    (found, missing)
}
