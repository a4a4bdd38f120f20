//! "Did you mean": the known key nearest to a mistyped one, for config files and `set`.

/// How alike two keys must be (Jaro-Winkler, 0 to 1) for one to be offered for the other:
/// `numproceses` -> `numprocesses` is 0.98, `colour` -> `cluster` 0.73.
const LIKENESS: f64 = 0.8;

/// The key of `known` most like `key`, if any is alike enough to be what was meant.
pub fn nearest<'a>(key: &str, known: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    known
        .into_iter()
        .map(|candidate| (strsim::jaro_winkler(key, candidate), candidate))
        .filter(|(likeness, _)| *likeness >= LIKENESS)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, candidate)| candidate)
}

/// "unknown key `key`", with "; did you mean `x`?" when one of `known` is near.
pub fn unknown_key<'a>(key: &str, known: impl IntoIterator<Item = &'a str>) -> String {
    match nearest(key, known) {
        Some(near) => format!("unknown key `{key}`; did you mean `{near}`?"),
        None => format!("unknown key `{key}`"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_typo_gets_the_nearest_key_and_a_stranger_gets_none() {
        let known = ["numprocesses", "numwatchers", "cmd", "cluster"];
        assert_eq!(nearest("numproceses", known), Some("numprocesses"));
        assert_eq!(nearest("numprocess", known), Some("numprocesses"));
        assert_eq!(nearest("clustr", known), Some("cluster"));
        assert_eq!(nearest("colour", known), None);
        assert_eq!(nearest("bogus", known), None);
        assert_eq!(
            unknown_key("numproceses", known),
            "unknown key `numproceses`; did you mean `numprocesses`?"
        );
        assert_eq!(unknown_key("bogus", known), "unknown key `bogus`");
    }
}
