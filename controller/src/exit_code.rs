//! The exit codes of `troupe`: one table, for every command and for `troupe shell` (whose exit
//! code is its last command's).

use std::process::ExitCode;
use troupe::client::ClientError;

/// How a `troupe` command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Exit {
    /// 0: every node concerned answered ok (an empty list is an answer too).
    Ok = 0,
    /// 1: the command went out, and some node (or the controller it went through) failed,
    /// refused it or did not answer in time; the output names which.
    NodeFailed = 1,
    /// 2: the command could not run here: a usage or config error, a local file that could not
    /// be read or written, or a question not answered yes. Nothing was sent.
    Usage = 2,
    /// 3: no node was reached (none found, `--node` matched none, or only agents of another
    /// cluster answered); the message says which.
    NothingReached = 3,
}

impl Exit {
    pub const fn code(self) -> u8 {
        self as u8
    }

    /// The exit of a command that stopped on `error`: a network failure (a node or controller
    /// that did not answer, refused our key, answered garbage) is [`Exit::NodeFailed`]; an
    /// endpoint that cannot even be connected to (malformed) and anything else is
    /// [`Exit::Usage`].
    pub fn of_error(error: &anyhow::Error) -> Exit {
        let network = error.chain().any(|cause| {
            cause
                .downcast_ref::<ClientError>()
                .is_some_and(|e| !matches!(e, ClientError::Connect { .. }))
        });
        if network {
            Exit::NodeFailed
        } else {
            Exit::Usage
        }
    }
}

/// The codes of [`Exit`] as numbers, for what returns one (the shell's commands).
pub const EXIT_OK: u8 = Exit::Ok.code();
pub const EXIT_NODE_FAILED: u8 = Exit::NodeFailed.code();
pub const EXIT_USAGE: u8 = Exit::Usage.code();
pub const EXIT_NOTHING_MATCHED: u8 = Exit::NothingReached.code();

impl From<Exit> for ExitCode {
    fn from(exit: Exit) -> ExitCode {
        ExitCode::from(exit.code())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_network_failure_is_a_node_failure_and_anything_else_is_usage() {
        let timeout = ClientError::Timeout {
            endpoint: "tcp://127.0.0.1:5555".into(),
            timeout: Duration::from_secs(1),
            keyless: false,
        };
        let wrapped = anyhow::Error::new(timeout).context("status");
        assert_eq!(Exit::of_error(&wrapped), Exit::NodeFailed);
        let refused = ClientError::Refused {
            endpoint: "tcp://127.0.0.1:5555".into(),
        };
        assert_eq!(Exit::of_error(&refused.into()), Exit::NodeFailed);
        let malformed = ClientError::Connect {
            endpoint: "tcp://nowhere".into(),
            source: zmq::Error::EINVAL,
        };
        assert_eq!(Exit::of_error(&malformed.into()), Exit::Usage);
        assert_eq!(
            Exit::of_error(&anyhow::anyhow!("troupe.toml: line 3: bad")),
            Exit::Usage
        );
    }
}
