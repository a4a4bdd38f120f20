//! Who may bring code into the node: the one check between a control socket and the handlers.

use troupe::protocol::{CommandError, Request};

/// Which control socket a request came on; that alone decides what it may do (SECURITY.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Caller {
    /// The owner-only Unix socket: the agent's user or root, on the node.
    Owner,
    /// TCP, from any address. Loopback proves nothing: other local users, containers on the
    /// host network and the supervised services themselves connect from 127.0.0.1 too.
    Network,
}

/// Refuses a request that brings code ([`Request::brings_code`]) over TCP unless
/// `allow_remote_exec`, telling the user what to do instead.
pub fn admit(
    request: &Request,
    caller: Caller,
    allow_remote_exec: bool,
    owner_endpoint: &str,
) -> Result<(), CommandError> {
    let Some(what) = request.brings_code() else {
        return Ok(());
    };
    if caller == Caller::Owner || allow_remote_exec {
        return Ok(());
    }
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
        for code in [&add, &set_cmd] {
            let refused = admit(code, Caller::Network, false, ipc).unwrap_err();
            assert!(refused.reason.contains(ipc), "{refused}");
            assert!(refused.reason.contains("allow_remote_exec"), "{refused}");
            assert_eq!(admit(code, Caller::Network, true, ipc), Ok(()));
            assert_eq!(admit(code, Caller::Owner, false, ipc), Ok(()));
        }
        for harmless in [&set_size, &stop] {
            assert_eq!(admit(harmless, Caller::Network, false, ipc), Ok(()));
        }
        let refused = admit(&set_cmd, Caller::Network, false, ipc).unwrap_err();
        assert!(refused.reason.starts_with("set cmd over TCP"), "{refused}");
    }
}
