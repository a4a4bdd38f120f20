//! Test-only: `java.util.Properties.load` modelled in Rust (LineReader + loadConvert, as Java
//! 8 to 21 implement them), so the Java formats' escaping is checked against their reader
//! without a JDK.

use std::collections::BTreeMap;

/// `java.util.Properties.load` as Java 8-21 implement it (LineReader + loadConvert): the
/// reference the properties escaping is checked against.
pub fn java_properties_load(text: &str) -> BTreeMap<String, String> {
    let is_ws = |c: char| c == ' ' || c == '\t' || c == '\x0c';
    let mut logical: Vec<String> = Vec::new();
    let mut chars = text.chars().peekable();
    let mut current: Option<String> = None;
    let mut skipping_ws = true;
    let mut comment = false;
    loop {
        let c = chars.next();
        let at_end = c.is_none();
        let c = c.unwrap_or('\n');
        if c == '\n' || c == '\r' {
            if c == '\r' && chars.peek() == Some(&'\n') {
                chars.next();
            }
            if let Some(mut line) = current.take() {
                let trailing = line.chars().rev().take_while(|&c| c == '\\').count();
                if trailing % 2 == 1 && !comment && !at_end {
                    line.pop();
                    current = Some(line);
                    skipping_ws = true;
                    continue;
                }
                if !comment {
                    logical.push(line);
                }
            }
            comment = false;
            skipping_ws = true;
            if at_end {
                break;
            }
            continue;
        }
        if skipping_ws && is_ws(c) {
            continue;
        }
        if skipping_ws && current.is_none() && (c == '#' || c == '!') {
            comment = true;
        }
        skipping_ws = false;
        current.get_or_insert_with(String::new).push(c);
    }
    let unescape = |s: &[char]| {
        let mut out = String::new();
        let mut units: Vec<u16> = Vec::new();
        let mut i = 0;
        let flush = |units: &mut Vec<u16>, out: &mut String| {
            out.push_str(&String::from_utf16(units).expect("valid UTF-16"));
            units.clear();
        };
        while i < s.len() {
            if s[i] == '\\' && i + 1 < s.len() {
                let n = s[i + 1];
                if n == 'u' {
                    let hex: String = s[i + 2..i + 6].iter().collect();
                    units.push(u16::from_str_radix(&hex, 16).unwrap());
                    i += 6;
                    continue;
                }
                flush(&mut units, &mut out);
                out.push(match n {
                    't' => '\t',
                    'n' => '\n',
                    'r' => '\r',
                    'f' => '\x0c',
                    other => other,
                });
                i += 2;
            } else {
                flush(&mut units, &mut out);
                out.push(s[i]);
                i += 1;
            }
        }
        flush(&mut units, &mut out);
        out
    };
    let mut map = BTreeMap::new();
    for line in logical {
        let chars: Vec<char> = line.chars().collect();
        let mut key_len = 0;
        let mut value_start = chars.len();
        let mut has_sep = false;
        let mut preceding_backslash = false;
        while key_len < chars.len() {
            let c = chars[key_len];
            if (c == '=' || c == ':') && !preceding_backslash {
                value_start = key_len + 1;
                has_sep = true;
                break;
            } else if is_ws(c) && !preceding_backslash {
                value_start = key_len + 1;
                break;
            }
            preceding_backslash = c == '\\' && !preceding_backslash;
            key_len += 1;
        }
        while value_start < chars.len() {
            let c = chars[value_start];
            if !is_ws(c) {
                if !has_sep && (c == '=' || c == ':') {
                    has_sep = true;
                } else {
                    break;
                }
            }
            value_start += 1;
        }
        let value_start = value_start.min(chars.len());
        map.insert(unescape(&chars[..key_len]), unescape(&chars[value_start..]));
    }
    map
}
