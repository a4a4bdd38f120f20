//! Every ZeroMQ socket troupe opens is made here, so transport options (linger, size caps, and
//! later CURVE keys) are set in one place for both binaries.

use crate::bounds::MAX_SUBSCRIPTION_BYTES;
use std::time::Duration;

/// How much larger than the decoded-message cap a frame may be before ZeroMQ itself drops the
/// connection. Frames between the cap and this bound get an error reply that names the cap;
/// frames beyond it never reach memory.
pub const HARD_LIMIT_FACTOR: u64 = 4;

pub use zmq::Context;

/// The agent's control socket: a ROUTER, as circusd binds.
pub fn bind_control(
    context: &Context,
    endpoint: &str,
    max_message_size: u64,
) -> tmq::Result<tmq::router::Router> {
    let hard_limit = max_message_size.saturating_mul(HARD_LIMIT_FACTOR);
    tmq::router(context)
        .set_linger(0)
        .set_maxmsgsize(i64::try_from(hard_limit).unwrap_or(i64::MAX))
        .bind(endpoint)
}

/// A PUB socket (serve's events and re-published stats). A subscription longer than
/// [`MAX_SUBSCRIPTION_BYTES`] drops the subscriber's connection.
pub fn bind_publisher(context: &Context, endpoint: &str) -> tmq::Result<tmq::publish::Publish> {
    tmq::publish(context)
        .set_linger(0)
        .set_maxmsgsize(MAX_SUBSCRIPTION_BYTES as i64)
        .bind(endpoint)
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

/// An XPUB and a monitor of its connections, for [`crate::subscribers::GuardedPublisher`].
pub struct SubscribedPublisher {
    /// Publishes as a PUB does, and hears every subscription (`[1, topic..]`, verbose, with the
    /// peer's `Peer-Address`) and the last unsubscription from a topic (`[0, topic..]`, also
    /// sent when the last subscriber to it goes away). A subscription longer than
    /// [`MAX_SUBSCRIPTION_BYTES`] drops that subscriber's connection. tmq has no XPUB type:
    /// its PAIR wrapper is the generic two-way socket.
    pub socket: tmq::pair::Pair,
    /// ZeroMQ's monitor events for the XPUB's accepted and ended connections.
    pub monitor: tmq::pair::Pair,
    /// The TCP port the XPUB is bound to.
    pub port: u16,
}

/// Binds an XPUB (the agent's stats and events) with a monitor started before the bind, so
/// every connection is seen.
pub fn bind_subscribed_publisher(
    context: &Context,
    endpoint: &str,
) -> tmq::Result<SubscribedPublisher> {
    static MONITORS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let socket = context.socket(zmq::XPUB)?;
    socket.set_linger(0)?;
    socket.set_maxmsgsize(MAX_SUBSCRIPTION_BYTES as i64)?;
    socket.set_xpub_verbose(true)?;
    let n = MONITORS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let monitor_endpoint = format!("inproc://troupe-xpub-monitor-{n}");
    let events = zmq::SocketEvent::ACCEPTED as i32 | zmq::SocketEvent::DISCONNECTED as i32;
    socket.monitor(&monitor_endpoint, events)?;
    let monitor = context.socket(zmq::PAIR)?;
    monitor.set_linger(0)?;
    monitor.connect(&monitor_endpoint)?;
    socket.bind(endpoint)?;
    let port = socket
        .get_last_endpoint()?
        .ok()
        .and_then(|bound| bound.rsplit(':').next()?.parse().ok())
        .unwrap_or(0);
    let wrap = <tmq::pair::Pair as tmq::FromZmqSocket<_>>::from_zmq_socket;
    Ok(SubscribedPublisher {
        socket: wrap(socket)?,
        monitor: wrap(monitor)?,
        port,
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
