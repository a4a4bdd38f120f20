//! The env file parser against systemd's documented rules, and the loader's errors.

use super::*;

fn vars(text: &str) -> Vec<(String, String)> {
    parse(text).into_iter().map(|(_, k, v)| (k, v)).collect()
}

fn pairs(expected: &[(&str, &str)]) -> Vec<(String, String)> {
    expected
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn comments_blank_lines_and_lines_without_equals_are_skipped() {
    let text = "# a comment\n; another\n   # indented comment\n\nJUST_A_WORD\nA=1\n  \t\nB=2";
    assert_eq!(vars(text), pairs(&[("A", "1"), ("B", "2")]));
}

#[test]
fn whitespace_around_key_and_unquoted_value_is_stripped() {
    assert_eq!(
        vars("  KEY  =   some value  \t\nE=\nF =\n"),
        pairs(&[("KEY", "some value"), ("E", ""), ("F", "")])
    );
}

#[test]
fn quotes_keep_whitespace_and_take_their_content() {
    let text = "A=\"  spaced  \"\nB='single $x `y` \\n'\nC=\"x\"y\nD=\"multi\nline\"\n";
    assert_eq!(
        vars(text),
        pairs(&[
            ("A", "  spaced  "),
            ("B", "single $x `y` \\n"),
            ("C", "xy"),
            ("D", "multi\nline"),
        ])
    );
}

#[test]
fn a_quote_inside_an_unquoted_value_is_literal() {
    assert_eq!(vars("A=it's \"ok\"\n"), pairs(&[("A", "it's \"ok\"")]));
}

#[test]
fn backslash_escapes_follow_systemd() {
    let text = concat!(
        "A=a\\ b\\;c\\$d\\\\e\n",
        "B=\"q\\\" bs\\\\ bt\\` dollar\\$ other\\x\"\n",
        "C=trailing\\ \n",
        "D=\\ lead\n",
    );
    assert_eq!(
        vars(text),
        pairs(&[
            ("A", "a b;c$d\\e"),
            ("B", "q\" bs\\ bt` dollar$ other\\x"),
            ("C", "trailing "),
            ("D", " lead"),
        ])
    );
}

#[test]
fn a_backslash_at_the_end_of_a_line_joins_the_next() {
    let text = "A=one \\\n  two\nB=\"x\\\ny\"\nC=c\n";
    assert_eq!(
        vars(text),
        pairs(&[("A", "one   two"), ("B", "xy"), ("C", "c")])
    );
}

#[test]
fn crlf_lines_and_a_missing_final_newline_are_read() {
    assert_eq!(
        vars("A=1\r\nB=2\r\nC=\"3\""),
        pairs(&[("A", "1"), ("B", "2"), ("C", "3")])
    );
}

#[test]
fn nothing_is_expanded() {
    assert_eq!(
        vars("A=$HOME ${PATH} $(id) `id`\n"),
        pairs(&[("A", "$HOME ${PATH} $(id) `id`")])
    );
}

fn write(dir: &Path, name: &str, text: &[u8]) -> EnvFileSpec {
    std::fs::write(dir.join(name), text).unwrap();
    EnvFileSpec::parse(name, Some(dir))
}

#[test]
fn files_load_in_order_and_bad_names_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let first = write(dir.path(), "a.env", b"A=1\nB=1\nexport C=1\n1X=1\n");
    let second = write(dir.path(), "b.env", b"B=2\n");
    let (vars, skipped) = load(&[first, second]).unwrap();
    assert_eq!(
        vars.into_iter().collect::<Vec<_>>(),
        pairs(&[("A", "1"), ("B", "2")])
    );
    assert_eq!(skipped.len(), 2, "{skipped:?}");
    assert!(skipped[0].contains("line 3: \"export C\""), "{skipped:?}");
    assert!(skipped[1].contains("\"1X\""), "{skipped:?}");
}

#[test]
fn a_missing_file_is_an_error_unless_it_has_a_dash() {
    let dir = tempfile::tempdir().unwrap();
    let missing = EnvFileSpec::parse("nope.env", Some(dir.path()));
    assert_eq!(missing.path, dir.path().join("nope.env"));
    let e = load(&[missing]).unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::NotFound);
    assert!(e.to_string().contains("nope.env"), "{e}");
    let optional = EnvFileSpec::parse("-nope.env", Some(dir.path()));
    assert!(optional.optional);
    assert_eq!(load(&[optional]).unwrap().0.len(), 0);
}

#[test]
fn binary_or_oversized_files_are_refused_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    for (name, bytes) in [
        ("nul.env", b"A=x\0y\n".to_vec()),
        ("latin1.env", b"A=\xe9\n".to_vec()),
        ("big.env", vec![b'#'; MAX_ENV_FILE_BYTES as usize + 1]),
    ] {
        let spec = write(dir.path(), name, &bytes);
        let e = load(&[spec]).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::InvalidData, "{name}");
        assert!(e.to_string().contains(name), "{e}");
    }
}

#[test]
fn an_absolute_path_ignores_the_working_dir() {
    let spec = EnvFileSpec::parse("/etc/x.env", Some(Path::new("/srv")));
    assert_eq!(spec.path, Path::new("/etc/x.env"));
    assert!(!spec.optional);
}
