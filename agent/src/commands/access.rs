//! What a request may do, by the socket it came on: the one check between a control socket
//! and the handlers.

use troupe::protocol::{CommandError, Request, CIRCUS_READ_COMMANDS};

/// Which control socket a request came on; that alone decides what it may do (SECURITY.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Caller {
    /// The owner-only Unix socket: the agent's user or root, on the node.
    Owner,
    /// The cluster's TCP socket, from any address: with a cluster key, only its holders get
    /// here. Loopback proves nothing: other local users, containers on the host network and
    /// the supervised services themselves connect from 127.0.0.1 too.
    Network,
    /// A keyed agent's plaintext `circus_bind`, for stock Circus clients that cannot speak
    /// CURVE: anyone who reaches it, so it only reads ([`CIRCUS_READ_COMMANDS`]) unless
    /// `allow_remote_exec`.
    Plaintext,
}

/// What the node's settings say about who may do what.
#[derive(Debug, Clone, Copy)]
pub struct Access<'a> {
    pub allow_remote_exec: bool,
    /// `ipc://<state_dir>/control.sock`, named in refusals.
    pub owner_endpoint: &'a str,
}

/// Refuses a request that brings code ([`Request::brings_code`]) over TCP unless
/// `allow_remote_exec`, and one that is not read-only on the plaintext `circus_bind` unless
/// `allow_remote_exec`, telling the user what to do instead.
pub fn admit(request: &Request, caller: Caller, access: Access) -> Result<(), CommandError> {
    let Access {
        allow_remote_exec,
        owner_endpoint,
    } = access;
    if caller == Caller::Owner || allow_remote_exec {
        return Ok(());
    }
    if caller == Caller::Plaintext && !CIRCUS_READ_COMMANDS.contains(&request.command.as_str()) {
        return Err(CommandError::command(format!(
            "{} on the plaintext circus_bind socket is refused: it is read-only. On the node, \
             send it to the owner-only socket (circusctl --endpoint {owner_endpoint} ...); \
             elsewhere, through the cluster's port with the cluster key (troupe ... with \
             key_file or TROUPE_KEY_FILE); or set allow_remote_exec = true in [agent]",
            request.command
        )));
    }
    let Some(what) = request.brings_code() else {
        return Ok(());
    };
    Err(CommandError::command(format!(
        "{what} over TCP is refused: it brings code into the node. On the node, send it to \
         the owner-only socket (circusctl --endpoint {owner_endpoint} ...), or set \
         allow_remote_exec = true in [agent] to accept it over TCP"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn request(command: &str, properties: serde_json::Value) -> Request {
        let serde_json::Value::Object(properties) = properties else {
            unreachable!()
        };
        Request::new(command, properties)
    }

    #[test]
    fn code_over_tcp_needs_allow_remote_exec_and_the_owner_socket_needs_nothing() {
        let add = request("add", json!({"name": "x", "cmd": "touch /tmp/p"}));
        let set_cmd = request("set", json!({"name": "w", "options": {"cmd": "sh"}}));
        let set_size = request("set", json!({"name": "w", "options": {"numprocesses": 2}}));
        let stop = request("stop", json!({"name": "w"}));
        let ipc = "ipc:///var/lib/troupe/control.sock";
        let admit = |request: &Request, caller, allow_remote_exec| {
            admit(
                request,
                caller,
                Access {
                    allow_remote_exec,
                    owner_endpoint: ipc,
                },
            )
        };
        for code in [&add, &set_cmd] {
            let refused = admit(code, Caller::Network, false).unwrap_err();
            assert!(refused.reason.contains(ipc), "{refused}");
            assert!(refused.reason.contains("allow_remote_exec"), "{refused}");
            assert_eq!(admit(code, Caller::Network, true), Ok(()));
            assert_eq!(admit(code, Caller::Owner, false), Ok(()));
        }
        for harmless in [&set_size, &stop] {
            assert_eq!(admit(harmless, Caller::Network, false), Ok(()));
        }
        let refused = admit(&set_cmd, Caller::Network, false).unwrap_err();
        assert!(refused.reason.starts_with("set cmd over TCP"), "{refused}");
    }

    #[test]
    fn the_plaintext_circus_bind_only_reads_unless_allow_remote_exec() {
        let ipc = "ipc:///var/lib/troupe/control.sock";
        let admit = |request: &Request, allow_remote_exec| {
            admit(
                request,
                Caller::Plaintext,
                Access {
                    allow_remote_exec,
                    owner_endpoint: ipc,
                },
            )
        };
        for command in CIRCUS_READ_COMMANDS {
            assert_eq!(
                admit(&request(command, json!({"name": "w"})), false),
                Ok(())
            );
        }
        let changes = [
            request("stop", json!({"name": "w"})),
            request("signal", json!({"name": "w", "signum": 9})),
            request("set", json!({"name": "w", "options": {"numprocesses": 2}})),
            request("add", json!({"name": "x", "cmd": "sh"})),
            request("configure", json!({"cluster": "lab", "peers": []})),
            request("nodeinfo", json!({})),
            // They change nothing, but expose what processes printed: key holders only.
            request("logs", json!({"name": "w"})),
            request("log_file", json!({"name": "w", "stream": "stdout"})),
            request("quit", json!({})),
            request("no-such-command", json!({})),
        ];
        for change in &changes {
            let refused = admit(change, false).unwrap_err();
            let reason = &refused.reason;
            assert!(reason.starts_with(&format!("{} on the plaintext", change.command)));
            assert!(reason.contains(ipc), "{reason}");
            assert!(reason.contains("cluster key"), "{reason}");
            assert_eq!(admit(change, true), Ok(()), "{}", change.command);
        }
    }
}
