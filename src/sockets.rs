//! Every ZeroMQ socket troupe opens is made here, so transport options (linger, size caps, and
//! later CURVE keys) are set in one place for both binaries.

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

/// A PUB socket (events; serve's re-published stats).
pub fn bind_publisher(context: &Context, endpoint: &str) -> tmq::Result<tmq::publish::Publish> {
    tmq::publish(context).set_linger(0).bind(endpoint)
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

/// The longest subscription message an XPUB accepts (one byte of kind, then the topic prefix);
/// a longer one drops that subscriber's connection.
const MAX_SUBSCRIPTION: i64 = 4096;

/// An XPUB (stats): publishes as a PUB does, and hears the first subscription to a topic
/// (`[1, topic..]`) and the last unsubscription from it (`[0, topic..]`, also sent when the last
/// subscriber to it goes away), so the publisher can tell whether anyone listens. tmq has no
/// XPUB type: its PAIR wrapper is the generic two-way socket.
pub fn bind_subscribed_publisher(
    context: &Context,
    endpoint: &str,
) -> tmq::Result<tmq::pair::Pair> {
    let socket = context.socket(zmq::XPUB)?;
    socket.set_linger(0)?;
    socket.set_maxmsgsize(MAX_SUBSCRIPTION)?;
    socket.bind(endpoint)?;
    <tmq::pair::Pair as tmq::FromZmqSocket<_>>::from_zmq_socket(socket)
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
