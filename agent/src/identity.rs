//! The node's identity: a UUID kept in the state dir, so a restarted agent is the same node.

use anyhow::Context;
use std::path::Path;

const ID_FILE: &str = "node-id";

/// Reads the node id from `state_dir`, creating the dir and a fresh id on first boot; a state
/// dir others may write is refused ([`crate::state_dir`]).
pub fn load_or_create(state_dir: &Path) -> anyhow::Result<String> {
    crate::state_dir::prepare(state_dir)?;
    let path = state_dir.join(ID_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let id = text.trim();
            troupe::config::names::check_node_id(id)
                .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
            Ok(id.to_string())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let id = uuid::Uuid::new_v4().to_string();
            let tmp = state_dir.join(format!("{ID_FILE}.tmp"));
            std::fs::write(&tmp, format!("{id}\n"))
                .with_context(|| format!("writing {}", tmp.display()))?;
            std::fs::rename(&tmp, &path).with_context(|| format!("writing {}", path.display()))?;
            Ok(id)
        }
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let first = load_or_create(&state).unwrap();
        assert!(uuid::Uuid::parse_str(&first).is_ok());
        assert_eq!(load_or_create(&state).unwrap(), first);
    }

    #[test]
    fn a_corrupt_id_file_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(ID_FILE), "garbage").unwrap();
        let err = load_or_create(dir.path()).unwrap_err().to_string();
        assert!(err.contains("node-id"), "{err}");
    }
}
