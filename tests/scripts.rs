//! The repository's own scripts: CI (`.ci/run`) and the test runner (`scripts/test`) run the
//! tests marked "needs root" too, so as another user they refuse rather than pass on less.

use crate::support::{repo_root, run_command};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::time::Duration;

/// `nobody` on Debian.
const NOBODY: u32 = 65534;

#[test]
#[ignore = "needs root"]
fn ci_and_the_test_runner_refuse_to_run_as_another_user() {
    // Copies, in a directory `nobody` may enter: each script looks no further than its check.
    let work = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(work.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    for (script, refusal) in [
        (".ci/run", ".ci/run: must run as root"),
        ("scripts/test", "scripts/test: must run as root"),
    ] {
        let copy = work.path().join(script);
        let dir = copy.parent().unwrap();
        std::fs::create_dir_all(dir).unwrap();
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::copy(repo_root().join(script), &copy).unwrap();
        let mut command = Command::new("bash");
        command
            .arg(&copy)
            .current_dir(work.path())
            .uid(NOBODY)
            .gid(NOBODY);
        let run = run_command(command, Duration::from_secs(30));
        assert_eq!(run.code, Some(1), "{script} as nobody: {run:#?}");
        assert!(run.stderr.contains(refusal), "{script}: {run:#?}");
    }
}
