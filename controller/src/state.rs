//! The controller's remembered state: probe ranges set by `troupe cluster RANGE [COUNT]`
//! (the seed console's `cluster <network> <numNodes>`), kept in `<state_dir>/controller.json`.

use anyhow::Context;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ControllerState {
    /// Probe ranges, as the operator wrote them.
    pub probe: Vec<String>,
    /// How many nodes the cluster should have; `troupe nodes` stops waiting once seen.
    pub expect: Option<usize>,
}

impl ControllerState {
    pub fn path(state_dir: &Path) -> PathBuf {
        state_dir.join("controller.json")
    }

    /// Reads the state; a missing file is an empty state.
    pub fn load(state_dir: &Path) -> anyhow::Result<Self> {
        let path = Self::path(state_dir);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .with_context(|| format!("{} is not valid controller state", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }

    /// Writes atomically (temp file + rename).
    pub fn save(&self, state_dir: &Path) -> anyhow::Result<()> {
        std::fs::create_dir_all(state_dir)
            .with_context(|| format!("creating {}", state_dir.display()))?;
        let path = Self::path(state_dir);
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(self)?)
            .with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, &path).with_context(|| format!("writing {}", path.display()))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_a_missing_file_is_empty() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            ControllerState::load(dir.path()).unwrap(),
            ControllerState::default()
        );
        let state = ControllerState {
            probe: vec!["10.0.0.1-32".into()],
            expect: Some(32),
        };
        state.save(&dir.path().join("sub")).unwrap();
        assert_eq!(
            ControllerState::load(&dir.path().join("sub")).unwrap(),
            state
        );
        std::fs::write(ControllerState::path(dir.path()), "{").unwrap();
        assert!(ControllerState::load(dir.path()).is_err());
    }
}
