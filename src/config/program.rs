//! Where a watcher's program is found: the lookup the agent's spawn does (as `execvp`), and
//! the check `troupe-agent --check` makes with it, so the two cannot disagree.

use super::WatcherConfig;
use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// The `PATH` a program is looked up in when neither the watcher nor the agent has one.
pub const DEFAULT_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// The paths to try, in order: `program` itself if it has a slash, else `program` in each
/// entry of `path` (an empty entry is the working dir, as for `execvp`).
pub fn program_candidates(program: &OsStr, path: Option<&OsStr>) -> Vec<PathBuf> {
    if program.as_bytes().contains(&b'/') {
        return vec![PathBuf::from(program)];
    }
    let path = path.unwrap_or_else(|| OsStr::new(DEFAULT_PATH));
    path.as_bytes()
        .split(|&b| b == b':')
        .map(|dir| {
            let dir: &[u8] = if dir.is_empty() { b"." } else { dir };
            Path::new(OsStr::from_bytes(dir)).join(program)
        })
        .collect()
}

impl WatcherConfig {
    /// The `PATH` the watcher's program is looked up in: its `env`'s, else the agent's
    /// (`agent_path`, which the agent always passes on). An env file may set another one when
    /// the watcher starts; that one cannot be known before.
    pub fn lookup_path(&self, agent_path: Option<&OsStr>) -> OsString {
        self.env
            .get("PATH")
            .map(OsString::from)
            .or_else(|| agent_path.map(OsStr::to_os_string))
            .unwrap_or_else(|| DEFAULT_PATH.into())
    }

    /// Why the watcher's program cannot be run, as the agent would look it up with
    /// `agent_path` as its own `PATH`; None when it can, or when a shell runs the command.
    pub fn program_problem(&self, agent_path: Option<&OsStr>) -> Option<String> {
        if self.shell {
            return None;
        }
        let argv = self.argv();
        let program = argv.first()?;
        let path = self.lookup_path(agent_path);
        let found = program_candidates(OsStr::new(program), Some(&path))
            .into_iter()
            .map(
                |candidate| match (&self.working_dir, candidate.is_relative()) {
                    (Some(dir), true) => dir.join(candidate),
                    _ => candidate,
                },
            )
            .find(|candidate| candidate.is_file());
        match found {
            Some(file) if is_executable(&file) => None,
            Some(file) => Some(format!(
                "cmd: {} is not executable: make it so (chmod +x) or name another program",
                file.display()
            )),
            None if program.contains('/') => Some(format!(
                "cmd: no program {program} (relative to {}): install it or give its full path",
                self.working_dir
                    .as_deref()
                    .map_or("the agent's working dir".into(), |d| d
                        .display()
                        .to_string()),
            )),
            None => Some(format!(
                "cmd: no program `{program}` on the watcher's PATH ({}): install it, give its \
                 full path, or set PATH in the watcher's env",
                path.to_string_lossy()
            )),
        }
    }
}

fn is_executable(file: &Path) -> bool {
    file.metadata()
        .is_ok_and(|m| m.permissions().mode() & 0o111 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_is_looked_up_in_every_path_entry_and_a_path_is_used_as_is() {
        let found = program_candidates(OsStr::new("sleep"), Some(OsStr::new("/a:/b/c::")));
        assert_eq!(
            found,
            ["/a/sleep", "/b/c/sleep", "./sleep", "./sleep"].map(PathBuf::from)
        );
        let found = program_candidates(OsStr::new("./bin/x"), Some(OsStr::new("/a")));
        assert_eq!(found, [PathBuf::from("./bin/x")]);
    }

    #[test]
    fn a_missing_program_is_a_problem_on_the_path_the_agent_would_use() {
        let dir = tempfile::tempdir().unwrap();
        let agent_path = Some(OsStr::new("/usr/bin:/bin"));
        let sh = WatcherConfig::new("w", "sh -c true");
        assert_eq!(sh.program_problem(agent_path), None);
        let missing = WatcherConfig::new("w", "no-such-program-x --flag");
        let problem = missing.program_problem(agent_path).unwrap();
        assert!(
            problem
                .contains("no program `no-such-program-x` on the watcher's PATH (/usr/bin:/bin)"),
            "{problem}"
        );
        // The watcher's env PATH is the one the agent uses for it.
        std::fs::write(dir.path().join("tool"), "#!/bin/sh\n").unwrap();
        let mut own = WatcherConfig::new("w", "tool");
        assert!(own.program_problem(agent_path).is_some());
        own.env
            .insert("PATH".into(), dir.path().display().to_string());
        let problem = own.program_problem(agent_path).unwrap();
        assert!(problem.contains("is not executable"), "{problem}");
        let tool = dir.path().join("tool");
        std::fs::set_permissions(&tool, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(own.program_problem(agent_path), None);
        // A relative path is taken from the working dir; a shell resolves its own command.
        let mut relative = WatcherConfig::new("w", "./tool");
        relative.working_dir = Some(dir.path().to_path_buf());
        assert_eq!(relative.program_problem(agent_path), None);
        let mut shell = WatcherConfig::new("w", "no-such-program-x");
        shell.shell = true;
        assert_eq!(shell.program_problem(agent_path), None);
    }
}
