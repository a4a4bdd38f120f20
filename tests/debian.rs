//! The Debian package `scripts/deb` builds (scripts/test builds it as root before the
//! suite): its contents, then a real `dpkg -i`, the installed agent run with the installed
//! default config, and `dpkg -r` / `dpkg --purge` leaving nothing behind but what policy
//! keeps (the conffile after a remove).
//!
//! dpkg runs on this machine's own system, seen through overlays: every command of the test
//! runs in a mount namespace where /etc, /usr and /var/lib are overlayfs mounts whose
//! writable layers are the test's temp dir. The package, dpkg's database and the agent's
//! state land there, so the machine is left as it was even if the test fails half-way, an
//! apt-get elsewhere does not contend for dpkg's lock, and a /var/lib/troupe that other
//! tests' root controllers keep is neither overwritten nor purged.

use crate::support::{repo_root, run_command, wait_for, Daemon};
use serde_json::Map;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;
use troupe::protocol::Request;

/// What the package installs or creates: none may exist before `dpkg -i` (in the overlay),
/// all but the conffile must be gone after `dpkg -r`, and all after `--purge`.
const BINARIES: [&str; 2] = ["/usr/bin/troupe", "/usr/bin/troupe-agent"];
const CONFFILE: &str = "/etc/troupe/troupe-agent.toml";
const STATE_DIR: &str = "/var/lib/troupe";
const OVERLAID: [&str; 3] = ["/etc", "/usr", "/var/lib"];

/// The machine's /etc, /usr and /var/lib with the writes going to `dir`.
struct Overlay {
    dir: tempfile::TempDir,
}

impl Overlay {
    fn new() -> Overlay {
        let dir = tempfile::tempdir().expect("tempdir");
        for lower in OVERLAID {
            let layer = dir
                .path()
                .join(lower.trim_start_matches('/').replace('/', "-"));
            std::fs::create_dir_all(layer.join("upper")).expect("upper dir");
            std::fs::create_dir_all(layer.join("work")).expect("work dir");
        }
        Overlay { dir }
    }

    /// `program args` in a mount namespace of its own with the overlays mounted (`unshare`
    /// and `sh` exec, so the child's pid is the program's).
    fn command(&self, program: &str, args: &[&str]) -> Command {
        let mut mounts = String::new();
        for lower in OVERLAID {
            let layer = self
                .dir
                .path()
                .join(lower.trim_start_matches('/').replace('/', "-"));
            mounts.push_str(&format!(
                "mount -t overlay overlay -o lowerdir={lower},upperdir={upper},workdir={work} {lower} && ",
                upper = layer.join("upper").display(),
                work = layer.join("work").display(),
            ));
        }
        let mut command = Command::new("unshare");
        command
            .args(["--mount", "--propagation", "private", "--", "sh", "-c"])
            .arg(format!("{mounts}exec \"$0\" \"$@\""))
            .arg(program)
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive");
        command
    }

    fn run(&self, program: &str, args: &[&str]) -> crate::support::Run {
        run_command(self.command(program, args), Duration::from_secs(120))
    }

    #[track_caller]
    fn run_ok(&self, program: &str, args: &[&str]) -> String {
        let out = self.run(program, args);
        assert_eq!(
            out.code,
            Some(0),
            "{program} {args:?}: {}\n{}",
            out.stdout,
            out.stderr
        );
        out.stdout
    }

    /// Whether `path` exists in the overlaid view (a dangling symlink counts).
    fn exists(&self, path: &str) -> bool {
        self.run("stat", &[path]).code == Some(0)
    }

    fn installed(&self) -> bool {
        self.run("dpkg-query", &["-W", "-f=${Status}", "troupe"])
            .stdout
            .contains("installed")
    }

    /// Entries (files, dirs, symlinks: a unit masked on remove is a symlink to /dev/null)
    /// whose name starts with "troupe" under `dirs`.
    fn named_troupe(&self, dirs: &[&str]) -> Vec<String> {
        let mut args: Vec<&str> = dirs.to_vec();
        args.extend(["-name", "troupe*"]);
        let out = self.run("find", &args);
        out.stdout.lines().map(str::to_string).collect()
    }
}

/// The .deb of this version that scripts/deb built.
fn package() -> PathBuf {
    let dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target"))
        .join("debian");
    let prefix = format!("troupe_{}-", env!("CARGO_PKG_VERSION"));
    std::fs::read_dir(&dir)
        .ok()
        .into_iter()
        .flatten()
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .find(|path| {
            let name = path.file_name().unwrap_or_default().to_string_lossy();
            name.starts_with(&prefix) && name.ends_with(".deb")
        })
        .unwrap_or_else(|| {
            panic!(
                "no {prefix}*.deb in {}: build it with scripts/deb (scripts/test does, as root)",
                dir.display()
            )
        })
}

#[test]
#[ignore = "needs root"]
fn the_deb_installs_runs_the_agent_and_purges_cleanly() {
    let deb = package();
    let deb = deb.to_str().expect("utf-8 path");
    let system = Overlay::new();
    // Other tests' root controllers keep their state in /var/lib/troupe: hide it (in the
    // overlay only), so that the package's own is seen.
    system.run_ok("rm", &["-rf", STATE_DIR, "/etc/troupe"]);
    assert!(!system.installed(), "troupe is installed already");
    for path in BINARIES.iter().chain([&CONFFILE, &STATE_DIR]) {
        assert!(!system.exists(path), "{path} exists before the install");
    }

    let info = system.run_ok("dpkg-deb", &["-I", deb]);
    for field in ["Package: troupe", "Section: admin", "Depends:", "libc6"] {
        assert!(
            info.contains(field),
            "{field} missing from the control file:\n{info}"
        );
    }
    let conffiles = system.run_ok("dpkg-deb", &["-I", deb, "conffiles"]);
    assert_eq!(conffiles.trim(), CONFFILE, "conffiles");
    let contents = system.run_ok("dpkg-deb", &["-c", deb]);
    let files: Vec<&str> = contents
        .lines()
        .filter_map(|line| line.split_whitespace().nth(5))
        .collect();
    for expected in [
        "./usr/bin/troupe",
        "./usr/bin/troupe-agent",
        "./etc/troupe/troupe-agent.toml",
        "./usr/lib/systemd/system/troupe-agent.service",
        "./usr/lib/systemd/system/troupe-serve.service",
        "./usr/share/man/man1/troupe.1.gz",
        "./usr/share/man/man1/troupe-agent.1.gz",
        "./usr/share/man/man1/troupe-serve.1.gz",
        "./usr/share/bash-completion/completions/troupe",
        "./usr/share/bash-completion/completions/troupe-agent",
        "./usr/share/zsh/vendor-completions/_troupe",
        "./usr/share/fish/vendor_completions.d/troupe.fish",
    ] {
        assert!(
            files.contains(&expected),
            "{expected} missing from the package:\n{contents}"
        );
    }

    system.run_ok("dpkg", &["-i", deb]);
    let mode = system.run_ok("stat", &["-c", "%a %U", STATE_DIR]);
    assert_eq!(mode.trim(), "700 root", "{STATE_DIR} after the install");
    let check = system.run_ok("/usr/bin/troupe-agent", &["--check", CONFFILE]);
    assert!(check.contains("ok"), "{check}");
    let page = system.run_ok("man", &["-P", "cat", "troupe-agent"]);
    assert!(page.contains("--config"), "man troupe-agent:\n{page}");

    // The installed agent with the installed config, as the unit runs it (without systemd:
    // CI has no systemd as PID 1). The default config binds loopback with mDNS off.
    let command = system.command("/usr/bin/troupe-agent", &["--config", CONFFILE]);
    let mut agent = Daemon::spawn(
        "installed troupe-agent",
        command,
        &system.dir.path().join("agent.log"),
    );
    let mut reply = None;
    wait_for(
        "the installed agent to answer",
        Duration::from_secs(20),
        || {
            reply = troupe::client::call(
                "tcp://127.0.0.1:5555",
                Request::new("numwatchers", Map::new()),
                Duration::from_millis(500),
            )
            .ok();
            reply.is_some()
        },
    );
    let reply = reply.expect("reply");
    assert_eq!(reply["status"], "ok", "{reply}");
    assert_eq!(reply["numwatchers"], 0, "{reply}");
    assert!(
        system.exists(&format!("{STATE_DIR}/control.sock")),
        "the agent's owner socket is not in {STATE_DIR}"
    );
    agent.terminate();

    system.run_ok("dpkg", &["-r", "troupe"]);
    for path in BINARIES {
        assert!(!system.exists(path), "{path} left after dpkg -r");
    }
    assert!(!system.exists("/usr/lib/systemd/system/troupe-agent.service"));
    // Policy: a remove keeps conffiles (and the state); only a purge removes them.
    assert!(system.exists(CONFFILE), "dpkg -r removed the conffile");
    system.run_ok("dpkg", &["--purge", "troupe"]);
    for path in [CONFFILE, "/etc/troupe", STATE_DIR] {
        assert!(!system.exists(path), "{path} left after dpkg --purge");
    }
    assert!(
        !system.installed(),
        "dpkg still lists troupe after the purge"
    );
    let leftovers = system.named_troupe(&[
        "/etc",
        "/usr/bin",
        "/usr/lib/systemd",
        "/usr/share/man",
        "/usr/share/bash-completion",
        "/var/lib",
    ]);
    assert!(leftovers.is_empty(), "left after the purge: {leftovers:?}");
    drop(agent);
}
