//! Every ZeroMQ socket troupe opens is made here, so transport options (linger, size caps, the
//! ZAP domain, and later CURVE keys) are set in one place for both binaries.
//!
//! A daemon's listening sockets are made from a [`ServerContext`], whose ZAP handler is bound
//! before any of them (see [`crate::zap`] for why every listening socket has a ZAP domain).

use crate::bounds::{
    MAX_CONTROL_CONNECTIONS_PER_PEER, MAX_SUBSCRIBERS_PER_PEER, MAX_SUBSCRIPTION_BYTES,
};
use crate::connections::{ConnectionGuard, PerPeer};
use crate::zap;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::Path;
use std::time::Duration;

/// How much larger than the decoded-message cap a frame may be before ZeroMQ itself drops the
/// connection. Frames between the cap and this bound get an error reply that names the cap;
/// frames beyond it never reach memory.
pub const HARD_LIMIT_FACTOR: u64 = 4;

pub use zmq::Context;

/// The ZeroMQ context of a daemon that listens. Its ZAP handler is bound when it is made, and
/// every `bind_*` below takes one, so no listening socket exists without the handler.
pub struct ServerContext {
    context: Context,
    _zap: zap::Handler,
}

impl ServerContext {
    /// A new context with its ZAP handler answering by `policy`. Needs a Tokio runtime: the
    /// handler is a task.
    pub fn new(policy: zap::Policy) -> tmq::Result<ServerContext> {
        let context = Context::new();
        let handler = zap::start(&context, policy)?;
        Ok(ServerContext {
            context,
            _zap: handler,
        })
    }

    /// The context itself, for the daemon's outgoing sockets (they share its I/O thread).
    pub fn context(&self) -> &Context {
        &self.context
    }
}

/// A control socket: a ROUTER, as circusd binds, and over TCP the guard of its connections,
/// both for the one loop that serves it. Fields drop in order: the socket first, which stops
/// its monitor before the guard lets go of the other end.
pub struct ControlSocket {
    pub router: tmq::router::Router,
    /// Holds TCP connections to [`MAX_CONTROL_CONNECTIONS_PER_PEER`] per address; None for
    /// the owner's Unix socket, which its file mode guards.
    pub connections: Option<ConnectionGuard>,
}

/// A control socket over TCP, its connections guarded.
pub fn bind_control(
    server: &ServerContext,
    endpoint: &str,
    max_message_size: u64,
) -> tmq::Result<ControlSocket> {
    let socket = control_router(server, max_message_size)?;
    let bound = PerPeer {
        name: "MAX_CONTROL_CONNECTIONS_PER_PEER",
        limit: MAX_CONTROL_CONNECTIONS_PER_PEER,
    };
    let (socket, guard) = bind_guarded(server, socket, endpoint, "control", bound)?;
    Ok(ControlSocket {
        router: wrap(socket)?,
        connections: Some(guard),
    })
}

fn control_router(server: &ServerContext, max_message_size: u64) -> zmq::Result<zmq::Socket> {
    let hard_limit = max_message_size.saturating_mul(HARD_LIMIT_FACTOR);
    let socket = server.context.socket(zmq::ROUTER)?;
    socket.set_linger(0)?;
    socket.set_zap_domain(zap::DOMAIN)?;
    socket.set_maxmsgsize(i64::try_from(hard_limit).unwrap_or(i64::MAX))?;
    Ok(socket)
}

/// Binds `socket` with a monitor started before the bind, so that the guard sees every
/// connection.
fn bind_guarded(
    server: &ServerContext,
    socket: zmq::Socket,
    endpoint: &str,
    name: &'static str,
    bound: PerPeer,
) -> tmq::Result<(zmq::Socket, ConnectionGuard)> {
    static MONITORS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = MONITORS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let monitor_endpoint = format!("inproc://troupe-connections-{n}");
    let events = zmq::SocketEvent::ACCEPTED as i32 | zmq::SocketEvent::DISCONNECTED as i32;
    socket.monitor(&monitor_endpoint, events)?;
    let monitor = server.context.socket(zmq::PAIR)?;
    monitor.set_linger(0)?;
    monitor.connect(&monitor_endpoint)?;
    socket.bind(endpoint)?;
    let port = socket
        .get_last_endpoint()?
        .ok()
        .and_then(|bound| bound.rsplit(':').next()?.parse().ok())
        .unwrap_or(0);
    let guard = ConnectionGuard::new(wrap(monitor)?, port, name, bound);
    Ok((socket, guard))
}

/// A tmq socket around a configured ZeroMQ one.
fn wrap<T: tmq::FromZmqSocket<T>>(socket: zmq::Socket) -> tmq::Result<T> {
    T::from_zmq_socket(socket)
}

/// The agent's owner-only control socket at `path` (`ipc://<path>`): a Unix socket file of
/// mode 0600, so only the agent's user and root may connect. It is bound in a new 0700
/// directory beside `path`, made 0600 there and renamed into place, so nobody else can reach
/// it even for an instant; a stale socket left at `path` is replaced. (libzmq's own ipc bind
/// would create the file with the process umask, and libzmq 4.3.4 as built here has no
/// `SO_PEERCRED` filters.)
pub fn bind_owner_control(
    server: &ServerContext,
    path: &Path,
    max_message_size: u64,
) -> std::io::Result<ControlSocket> {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return Err(std::io::Error::other(format!(
            "{} is not a file path",
            path.display()
        )));
    };
    let staging = dir.join(format!(".control-{}", std::process::id()));
    // Left behind by an earlier agent that had this pid and crashed while binding.
    let _ = std::fs::remove_dir_all(&staging);
    std::fs::DirBuilder::new().mode(0o700).create(&staging)?;
    let staged = staging.join(name);
    let bound = (|| {
        let staged_path = staged
            .to_str()
            .ok_or_else(|| std::io::Error::other(format!("{} is not UTF-8", staged.display())))?;
        let bind = || -> tmq::Result<tmq::router::Router> {
            let socket = control_router(server, max_message_size)?;
            socket.bind(&format!("ipc://{staged_path}"))?;
            wrap(socket)
        };
        let router = bind()
            .map_err(|e| std::io::Error::other(format!("binding ipc://{staged_path}: {e}")))?;
        std::fs::set_permissions(&staged, std::fs::Permissions::from_mode(0o600))?;
        std::fs::rename(&staged, path)?;
        Ok(ControlSocket {
            router,
            connections: None,
        })
    })();
    let _ = std::fs::remove_dir_all(&staging);
    bound
}

/// Publishes one `[topic, payload]` message on a PUB or XPUB socket straight through ZeroMQ.
/// Those never block (a subscriber at its high-water mark misses messages), and tmq's Sink asks
/// for the socket's events, a system call, before each message: a stats stream of 1000
/// messages a second paid for it, and its I/O thread sent them one TCP segment each.
pub fn publish_now(socket: &impl tmq::AsZmqSocket, topic: String, payload: Vec<u8>) {
    if let Err(e) = socket
        .get_socket()
        .send_multipart([topic.into_bytes(), payload], zmq::DONTWAIT)
    {
        tracing::debug!("not published: {e}");
    }
}

/// An XPUB and the guard of its connections, for [`crate::subscribers::GuardedPublisher`].
pub struct SubscribedPublisher {
    /// Publishes as a PUB does, and hears every subscription (`[1, topic..]`, verbose, with the
    /// peer's `Peer-Address`) and the last unsubscription from a topic (`[0, topic..]`, also
    /// sent when the last subscriber to it goes away). A subscription longer than
    /// [`MAX_SUBSCRIPTION_BYTES`] drops that subscriber's connection. tmq has no XPUB type:
    /// its PAIR wrapper is the generic two-way socket.
    pub socket: tmq::pair::Pair,
    /// Holds the XPUB's connections to [`MAX_SUBSCRIBERS_PER_PEER`] per address.
    pub connections: ConnectionGuard,
}

/// Binds an XPUB (the stats and events sockets of both daemons), named `name` in logs.
pub fn bind_subscribed_publisher(
    server: &ServerContext,
    endpoint: &str,
    name: &'static str,
) -> tmq::Result<SubscribedPublisher> {
    let socket = server.context.socket(zmq::XPUB)?;
    socket.set_linger(0)?;
    socket.set_zap_domain(zap::DOMAIN)?;
    socket.set_maxmsgsize(MAX_SUBSCRIPTION_BYTES as i64)?;
    socket.set_xpub_verbose(true)?;
    let bound = PerPeer {
        name: "MAX_SUBSCRIBERS_PER_PEER",
        limit: MAX_SUBSCRIBERS_PER_PEER,
    };
    let (socket, connections) = bind_guarded(server, socket, endpoint, name, bound)?;
    Ok(SubscribedPublisher {
        socket: wrap(socket)?,
        connections,
    })
}

/// An async SUB connected to a PUB endpoint (a node's stats or events), subscribed to
/// `prefix`. `max_message_size` bounds one frame, so a hostile publisher cannot make us
/// allocate more; ZeroMQ reconnects by itself when the publisher restarts.
pub fn connect_subscriber(
    context: &Context,
    endpoint: &str,
    prefix: &[u8],
    max_message_size: u64,
) -> tmq::Result<tmq::subscribe::Subscribe> {
    tmq::subscribe(context)
        .set_linger(0)
        .set_maxmsgsize(i64::try_from(max_message_size).unwrap_or(i64::MAX))
        .connect(endpoint)?
        .subscribe(prefix)
}

/// A blocking DEALER connected to a control endpoint, as circusctl uses.
pub fn connect_control(context: &Context, endpoint: &str) -> zmq::Result<zmq::Socket> {
    let socket = context.socket(zmq::DEALER)?;
    socket.set_linger(0)?;
    socket.connect(endpoint)?;
    Ok(socket)
}

/// An async DEALER connected to a control endpoint (probes, heartbeats, forwarding).
pub fn connect_control_async(
    context: &Context,
    endpoint: &str,
) -> tmq::Result<tmq::dealer::Dealer> {
    tmq::dealer(context).set_linger(0).connect(endpoint)
}

/// Milliseconds for ZeroMQ's poll, saturating.
pub fn poll_timeout_ms(timeout: Duration) -> i64 {
    i64::try_from(timeout.as_millis()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    /// The cluster key needs CURVE; the released zmq-sys builds libzmq without it.
    #[test]
    fn libzmq_has_curve() {
        assert_eq!(zmq::has("curve"), Some(true));
    }
}
