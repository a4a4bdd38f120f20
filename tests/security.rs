//! Attacks on the agent and on `troupe serve` from a second host, as SECURITY.md's "How it is
//! tested" says: a [`Lab`] is a segment with the victim on host 1 and the attacker on host 2,
//! each a network namespace joined by a bridge. Every submodule is one class of hole, and each
//! of its tests failed on the code before that hole was closed.

mod bounds;
mod configure_injection;
mod control_access;
mod reset_race;
mod serve_deputy;
mod signal_scope;

use crate::support::netns::{Host, Segment};
use crate::support::{bin, wait_for, Daemon};
use serde_json::{Map, Value};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;
use troupe::protocol::Request;

/// A victim host and an attacker host on one segment.
pub struct Lab {
    pub segment: Segment,
}

impl Lab {
    pub fn new(tag: &str) -> Lab {
        Lab {
            segment: Segment::new(tag, 2),
        }
    }

    pub fn victim(&self) -> &Host {
        self.segment.host(1)
    }

    pub fn attacker(&self) -> &Host {
        self.segment.host(2)
    }

    /// Sends one request from the attacker's host and returns the reply, or the client's
    /// error text (a timeout when the daemon said nothing).
    pub fn attack(
        &self,
        endpoint: &str,
        command: &str,
        properties: Value,
    ) -> Result<Value, String> {
        let properties: Map<String, Value> = match properties {
            Value::Object(map) => map,
            other => panic!("properties must be an object, got {other}"),
        };
        let endpoint = endpoint.to_string();
        let command = command.to_string();
        self.attacker().ns.run(move || {
            troupe::client::call(
                &endpoint,
                Request::new(&command, properties),
                Duration::from_secs(3),
            )
            .map_err(|e| e.to_string())
        })
    }
}

/// A `troupe-agent` running on a lab host with mDNS off, its state and log in a scratch dir.
pub struct HostAgent {
    pub daemon: Daemon,
    pub dir: tempfile::TempDir,
    /// `tcp://<host address>:5555`.
    pub endpoint: String,
}

impl HostAgent {
    /// Starts an agent bound to 0.0.0.0 on `host` with `agent_extra` lines in `[agent]` and
    /// `watchers` (TOML `[watcher.X]` sections), and waits until it answers from the host.
    pub fn start(host: &Host, agent_extra: &str, watchers: &str) -> HostAgent {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = dir.path().join("troupe-agent.toml");
        std::fs::write(
            &config,
            format!(
                "[agent]\nname = \"victim\"\nbind = \"0.0.0.0\"\nmdns = false\nstate_dir = \"{state}\"\n{agent_extra}\n\n{watchers}\n",
                state = dir.path().join("state").display()
            ),
        )
        .expect("write config");
        let mut command: Command = host.command(bin("troupe-agent"));
        command
            .arg("--config")
            .arg(&config)
            .args(["--log-level", "debug"]);
        let daemon = Daemon::spawn("troupe-agent", command, &dir.path().join("agent.log"));
        let endpoint = format!("tcp://{}:5555", host.address);
        let probe = endpoint.clone();
        wait_for("the agent on its host", Duration::from_secs(10), || {
            host.ns.run(|| {
                troupe::client::call(
                    &probe,
                    Request::new("numwatchers", Map::new()),
                    Duration::from_millis(300),
                )
                .is_ok()
            })
        });
        HostAgent {
            daemon,
            dir,
            endpoint,
        }
    }

    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }
}

/// Whether a reply is Circus's `{"status": "ok", ...}`.
pub fn is_ok(reply: &Result<Value, String>) -> bool {
    matches!(reply, Ok(v) if v["status"] == "ok")
}

impl HostAgent {
    /// `ipc://<state_dir>/control.sock`: the agent's owner-only socket, reachable from any
    /// namespace (a Unix socket lives in the file system).
    pub fn owner_endpoint(&self) -> String {
        format!("ipc://{}", self.state_dir().join("control.sock").display())
    }
}
