//! The body of the `env_file` fuzz target (fuzz/), shared with its corpus regression test.

use crate::watcher::env_file;

/// An env file's text: every assignment read, written back double-quoted (escaping what
/// systemd's double quotes escape), reads back the same, and its line is within the file.
pub fn env_file(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let assignments = env_file::parse(text);
    let lines = text.split(['\n', '\r']).count();
    let mut written = String::new();
    for (line, key, value) in &assignments {
        assert!(
            (1..=lines).contains(line),
            "line {line} of a {lines}-line text"
        );
        let quoted: String = value
            .chars()
            .flat_map(|c| match c {
                '"' | '\\' | '`' | '$' => vec!['\\', c],
                c => vec![c],
            })
            .collect();
        written.push_str(&format!("{key}=\"{quoted}\"\n"));
    }
    let pairs = |list: &[(usize, String, String)]| -> Vec<(String, String)> {
        list.iter()
            .map(|(_, k, v)| (k.clone(), v.clone()))
            .collect()
    };
    assert_eq!(
        pairs(&env_file::parse(&written)),
        pairs(&assignments),
        "{text:?} written back as {written:?}"
    );
}

#[cfg(test)]
mod tests {
    #[test]
    fn env_file_corpus() {
        troupe::fuzz_targets::replay("env_file", super::env_file);
    }
}
