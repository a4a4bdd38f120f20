//! Text from the network on the user's terminal: nodes' process output, controllers' reasons
//! and warnings. Below every module that prints such text, so any of them may use it.

/// `text` with control characters (but tabs) replaced: what nodes send is their processes'
/// output, and what a controller sends is its own, whose escape sequences would otherwise
/// drive the reader's terminal.
pub fn printable(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_control() && c != '\t' {
                '\u{FFFD}'
            } else {
                c
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printable_defuses_terminal_escapes() {
        assert_eq!(printable("a\x1b[2Jb\tc\r"), "a\u{FFFD}[2Jb\tc\u{FFFD}");
    }
}
