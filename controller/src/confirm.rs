//! Asking before the commands that cannot be taken back: stopping agents (`quit`) or wiping
//! data (`reset`, `reconfigure --reset`) on more than one node, and a wipe that would break a
//! clustered service. One question, asked here and nowhere else: on a terminal it lists the
//! nodes and waits for `y`; `--yes` answers it for scripts; with neither, the command refuses
//! and names `--yes`, so a script never hangs on a prompt nobody sees.

use std::io::{BufRead, IsTerminal, Write};

/// What a command is about to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Question {
    /// What happens to the nodes, e.g. "stop the agents (and every watcher they run) on".
    pub action: String,
    pub nodes: Vec<String>,
    /// Why this is worse than it looks, said before the question.
    pub warning: Option<String>,
}

impl Question {
    /// Asked when `nodes` are more than one, or there is a warning; None otherwise.
    pub fn when_needed(action: &str, nodes: &[String], warning: Option<String>) -> Option<Self> {
        (nodes.len() > 1 || warning.is_some()).then(|| Question {
            action: action.to_string(),
            nodes: nodes.to_vec(),
            warning,
        })
    }

    fn statement(&self) -> String {
        let count = if self.nodes.len() == 1 {
            "1 node".to_string()
        } else {
            format!("{} nodes", self.nodes.len())
        };
        let warning = self
            .warning
            .as_deref()
            .map(|w| format!("{w}\n"))
            .unwrap_or_default();
        format!(
            "{warning}This will {} {count}: {}.",
            self.action,
            self.nodes.join(", ")
        )
    }
}

/// Whether to go ahead: `yes` (`--yes`), or the user's `y` on a terminal. Err is the refusal
/// to print, nothing having been done.
pub fn confirm(question: &Question, yes: bool) -> Result<(), String> {
    if yes {
        return Ok(());
    }
    let statement = question.statement();
    if !(std::io::stdin().is_terminal() && std::io::stderr().is_terminal()) {
        return Err(format!(
            "{statement}\nNo terminal to ask on, so nothing was done: add --yes to go ahead."
        ));
    }
    let mut stderr = std::io::stderr();
    let _ = write!(stderr, "{statement}\nContinue? [y/N] ");
    let _ = stderr.flush();
    let mut answer = String::new();
    let _ = std::io::stdin().lock().read_line(&mut answer);
    match answer.trim().to_ascii_lowercase().as_str() {
        "y" | "yes" => Ok(()),
        _ => Err("not confirmed: nothing was done (--yes skips the question)".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_node_without_a_warning_is_not_asked_and_the_statement_lists_the_nodes() {
        let one = ["a".to_string()];
        assert_eq!(Question::when_needed("wipe", &one, None), None);
        let two = ["a".to_string(), "b".to_string()];
        let question = Question::when_needed("wipe 'etcd' on", &two, None).unwrap();
        assert_eq!(
            question.statement(),
            "This will wipe 'etcd' on 2 nodes: a, b."
        );
        let warned = Question::when_needed("wipe 'etcd' on", &one, Some("careful".into()));
        assert_eq!(
            warned.unwrap().statement(),
            "careful\nThis will wipe 'etcd' on 1 node: a."
        );
        assert_eq!(confirm(&question, true), Ok(()));
    }
}
