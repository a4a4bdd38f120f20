//! Issue 11, hole 6: `reset` checked a data dir, stopped the watcher (up to its
//! `graceful_timeout`), then listed and deleted whatever the path led to by then. A service user
//! owning the data dir's parent swaps in a symlink meanwhile, and the root agent empties the
//! link's target. A scratch dir with a canary file stands in for `/etc`. Now the dir opened
//! before the stop is the one emptied, and a reset that finds its path replaced stops there:
//! an error saying so, no reset_hook, the watcher left stopped.

use super::{HostAgent, Lab};
use serde_json::{json, Map, Value};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;
use troupe::protocol::Request;

/// `nobody` on Debian: the service user who owns the data dir and its parent.
const SERVICE_UID: u32 = 65534;

/// The scene: `<work>/svc` (the service user's) holding the data dir `svc/data` with 15 bytes
/// in two files, `<work>/victim/canary` standing in for what root must never lose, and a
/// marker the supervised process touches when it gets SIGTERM.
struct Scene {
    work: tempfile::TempDir,
}

impl Scene {
    fn new() -> Scene {
        let work = tempfile::tempdir().unwrap();
        // Root's and not writable by others, but the service user may pass through it.
        set_mode(work.path(), 0o755);
        let scene = Scene { work };
        std::fs::create_dir_all(scene.data().join("sub")).unwrap();
        std::fs::write(scene.data().join("a.db"), "0123456789").unwrap();
        std::fs::write(scene.data().join("sub/b.log"), "abcde").unwrap();
        for path in [
            scene.service_dir(),
            scene.data(),
            scene.data().join("sub"),
            scene.data().join("a.db"),
            scene.data().join("sub/b.log"),
        ] {
            std::os::unix::fs::chown(&path, Some(SERVICE_UID), Some(SERVICE_UID)).unwrap();
        }
        std::fs::create_dir_all(scene.victim()).unwrap();
        std::fs::write(scene.victim().join("canary"), "root's").unwrap();
        scene
    }

    fn service_dir(&self) -> PathBuf {
        self.work.path().join("svc")
    }

    fn data(&self) -> PathBuf {
        self.service_dir().join("data")
    }

    fn victim(&self) -> PathBuf {
        self.work.path().join("victim")
    }

    fn got_term(&self) -> PathBuf {
        self.work.path().join("got-term")
    }

    /// A watcher on the data dir whose process ignores SIGTERM (noting it got one), so a
    /// stop takes the whole `graceful_timeout`.
    fn watcher(&self) -> String {
        format!(
            "[watcher.db]\ncmd = \"/bin/sh\"\nargs = [\"-c\", \"trap 'touch {marker}' TERM; while true; do sleep 0.1; done\"]\ngraceful_timeout = 3\ndata_dir = \"{data}\"\n",
            marker = self.got_term().display(),
            data = self.data().display(),
        )
    }

    /// What the service user does: moves the data dir aside and puts a symlink to the
    /// victim at its path, as itself (it owns the parent, so it may).
    fn swap_in_symlink(&self) {
        let moved = self.service_dir().join("data.moved");
        as_service_user(Command::new("mv").arg(self.data()).arg(&moved));
        as_service_user(
            Command::new("ln")
                .arg("-s")
                .arg(self.victim())
                .arg(self.data()),
        );
    }

    fn canary(&self) -> Option<String> {
        std::fs::read_to_string(self.victim().join("canary")).ok()
    }
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn as_service_user(command: &mut Command) {
    let status = command
        .uid(SERVICE_UID)
        .gid(SERVICE_UID)
        .status()
        .expect("run as the service user");
    assert!(
        status.success(),
        "{command:?} as uid {SERVICE_UID}: {status}"
    );
}

fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn watcher_runs(lab: &Lab, agent: &HostAgent) -> bool {
    matches!(
        lab.attack(&agent.endpoint, "list", json!({"name": "db"})),
        Ok(reply) if reply["pids"].as_array().is_some_and(|pids| !pids.is_empty())
    )
}

#[test]
#[ignore = "needs root"]
fn a_symlink_swapped_in_during_a_slow_stop_is_not_followed_and_the_reset_stops() {
    let lab = Lab::new("rrace");
    let scene = Scene::new();
    let agent = HostAgent::start(lab.victim(), "", &scene.watcher());
    wait_for_watcher(&lab, &agent);

    let reply = std::thread::scope(|scope| {
        let reset = scope.spawn(|| reset_from_attacker(&lab, &agent));
        // The agent now waits out the graceful_timeout: the window the service user uses.
        crate::support::wait_for("SIGTERM to the db process", Duration::from_secs(10), || {
            scene.got_term().exists()
        });
        scene.swap_in_symlink();
        reset.join().expect("the reset thread")
    });

    assert_eq!(
        scene.canary().as_deref(),
        Some("root's"),
        "the symlink's target was emptied: {reply:?}"
    );
    let reply = reply.expect("reset answers");
    assert_eq!(
        entries(&scene.service_dir().join("data.moved")),
        Vec::<String>::new(),
        "the directory that was checked is the one emptied: {reply}"
    );
    assert_eq!(
        std::fs::read_link(scene.data()).unwrap(),
        scene.victim(),
        "what is at the path now is left alone"
    );
    // The operator hears what happened, and the service does not start on the symlink.
    assert_eq!(reply["status"], "error", "{reply}");
    let reason = reply["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("changed while the watcher stopped")
            && reason.contains("(15 bytes)")
            && reason.contains("left stopped"),
        "{reply}"
    );
    assert!(!watcher_runs(&lab, &agent), "the watcher is left stopped");
}

#[test]
#[ignore = "needs root"]
fn reset_refuses_a_data_dir_the_service_user_replaced_by_a_symlink_beforehand() {
    let lab = Lab::new("rlink");
    let scene = Scene::new();
    let agent = HostAgent::start(lab.victim(), "", &scene.watcher());
    wait_for_watcher(&lab, &agent);
    scene.swap_in_symlink();

    let reply = reset_from_attacker(&lab, &agent);

    assert_eq!(scene.canary().as_deref(), Some("root's"), "{reply:?}");
    let reply = reply.expect("reset answers");
    assert_eq!(reply["status"], "error", "{reply}");
    let reason = reply["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("no-foreign-symlink") && reason.contains(&*scene.data().to_string_lossy()),
        "the refusal names the rule and the dir: {reply}"
    );
    assert!(!scene.got_term().exists(), "the watcher was never stopped");
    assert!(watcher_runs(&lab, &agent));
}

/// `reset db` from the attacker's host, waiting long enough for a graceful stop.
fn reset_from_attacker(lab: &Lab, agent: &HostAgent) -> Result<Value, String> {
    let endpoint = agent.endpoint.clone();
    lab.attacker().ns.run(move || {
        let mut properties = Map::new();
        properties.insert("name".into(), json!("db"));
        troupe::client::call(
            &endpoint,
            Request::new("reset", properties),
            Duration::from_secs(30),
        )
        .map_err(|e| e.to_string())
    })
}

fn wait_for_watcher(lab: &Lab, agent: &HostAgent) {
    crate::support::wait_for("the db watcher running", Duration::from_secs(10), || {
        watcher_runs(lab, agent)
    });
}
