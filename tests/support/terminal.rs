//! A terminal for tests of what troupe draws: a tmux server of the test's own, read with
//! capture-pane.

use super::bin;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// A tmux server of our own with one 160x50 session running a command; killed on drop.
pub struct Tmux {
    socket: String,
}

impl Tmux {
    pub fn start(command: &str) -> Tmux {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let socket = format!(
            "troupe-test-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let tmux = Tmux { socket };
        let status = tmux
            .command()
            .args(["new-session", "-d", "-x", "160", "-y", "50", command])
            .env("LANG", "C.UTF-8")
            .status()
            .expect("run tmux");
        assert!(status.success(), "tmux new-session failed for {command}");
        tmux
    }

    fn command(&self) -> Command {
        let mut command = Command::new("tmux");
        command.args(["-L", &self.socket]);
        command
    }

    /// The screen as text.
    pub fn screen(&self) -> String {
        let output = self
            .command()
            .args(["capture-pane", "-p"])
            .output()
            .expect("tmux capture-pane");
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    pub fn keys(&self, keys: &str) {
        let status = self
            .command()
            .args(["send-keys", keys])
            .status()
            .expect("tmux send-keys");
        assert!(status.success());
    }

    /// Waits until every one of `needles` is on the screen; panics with the screen if not.
    #[track_caller]
    pub fn wait_for_all(&self, what: &str, needles: &[&str], timeout: Duration) -> String {
        self.wait_until(what, timeout, |screen| {
            needles.iter().all(|n| screen.contains(n))
        })
    }

    /// Waits until `condition` holds for the screen; panics with the screen if it does not.
    #[track_caller]
    pub fn wait_until(
        &self,
        what: &str,
        timeout: Duration,
        condition: impl Fn(&str) -> bool,
    ) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let screen = self.screen();
            if condition(&screen) {
                return screen;
            }
            if Instant::now() > deadline {
                panic!("timed out after {timeout:?} waiting for {what}\n--- screen ---\n{screen}");
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.command().arg("kill-server").status();
        // kill-server leaves the socket file behind.
        let dir = std::env::var("TMUX_TMPDIR").unwrap_or_else(|_| "/tmp".into());
        let uid = nix::unistd::getuid();
        let _ = std::fs::remove_file(format!("{dir}/tmux-{uid}/{}", self.socket));
    }
}

/// A shell command line that runs `troupe ARGS...` in `dir`, isolated like
/// [`super::troupe`], then prints its exit code and stays, so the screen shows what the
/// terminal looked like after. Its stderr goes to `dir/troupe.err` unless `stderr_on_screen`
/// (progress lines are drawn on stderr, and only when it is a terminal).
pub fn troupe_in_terminal(dir: &Path, args: &[&str], stderr_on_screen: bool) -> String {
    let mut words = vec![
        "env".to_string(),
        "-u".into(),
        "TROUPE_CONTROLLER".into(),
        "-u".into(),
        "TROUPE_PROBE".into(),
        "-u".into(),
        "TROUPE_CONFIG".into(),
        format!("HOME={}", dir.display()),
        format!("XDG_CONFIG_HOME={}", dir.display()),
        bin("troupe").display().to_string(),
    ];
    words.extend(args.iter().map(|a| a.to_string()));
    let stderr = if stderr_on_screen {
        String::new()
    } else {
        format!(
            " 2>{}",
            shell_words::quote(&dir.join("troupe.err").display().to_string())
        )
    };
    format!(
        "cd {} && {}{stderr}; echo TROUPE-EXIT=$?; sleep 600",
        shell_words::quote(&dir.display().to_string()),
        shell_words::join(&words),
    )
}
