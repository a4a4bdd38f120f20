//! Every ZeroMQ socket troupe opens is made here, so transport options (linger, size caps, the
//! ZAP domain, CURVE keys) are set in one place for both binaries.
//!
//! A daemon's listening sockets are made from a [`ServerContext`], whose ZAP handler is bound
//! before any of them (see [`crate::zap`] for why every listening socket has a ZAP domain).
//! With a cluster key ([`crate::cluster_key`]) every TCP listener is a CURVE server with the
//! first key's server pair; the owner's Unix socket stays NULL.
//!
//! Outgoing connections present the process's keyring ([`install_client_keyring`]), and
//! [`ClientKeys`] picks which key opens each endpoint: see there for key rotation.

use crate::bounds::{
    MAX_CONTROL_CONNECTIONS_PER_PEER, MAX_SUBSCRIBERS_PER_PEER, MAX_SUBSCRIPTION_BYTES,
};
use crate::cluster_key::{CurveKeys, CurvePair, Keyring};
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

/// Sockets a context that keeps one per member may hold: a connection and, with a keyring,
/// its handshake monitor per member, and as many again for the probes, retries and
/// broadcasts under way meanwhile. libzmq's default, 1023, ran out at a thousand members.
pub fn member_context_sockets() -> i32 {
    i32::try_from(4 * crate::bounds::max_members()).unwrap_or(i32::MAX)
}

/// A context for sockets that grow with the members (serve's heartbeats, kept connections,
/// stats and event subscriptions): [`member_context_sockets`], or libzmq's own limit if lower.
pub fn member_context() -> Context {
    let context = Context::new();
    let sockets = member_context_sockets();
    let wanted = match context.get_socket_limit() {
        Ok(limit) => sockets.min(limit),
        Err(_) => sockets,
    };
    if let Err(e) = context.set_max_sockets(wanted) {
        tracing::warn!("cannot let a ZeroMQ context hold {wanted} sockets (1023 then): {e}");
    }
    context
}

/// The ZeroMQ context of a daemon that listens. Its ZAP handler is bound when it is made, and
/// every `bind_*` below takes one, so no listening socket exists without the handler.
pub struct ServerContext {
    context: Context,
    _zap: zap::Handler,
    keys: ServerKeys,
}

impl ServerContext {
    /// A new context whose listeners admit holders of `keyring` (CURVE), or, without one,
    /// every NULL peer. Needs a Tokio runtime: the ZAP handler is a task.
    pub fn new(keyring: Option<&Keyring>) -> tmq::Result<ServerContext> {
        // Serve's kept control connections are made on it too.
        let context = member_context();
        let (keys, updates) = tokio::sync::watch::channel(keyring.cloned());
        let handler = zap::start(&context, updates)?;
        Ok(ServerContext {
            context,
            _zap: handler,
            keys: ServerKeys(std::sync::Arc::new(keys)),
        })
    }

    /// The context itself, for the daemon's outgoing sockets (they share its I/O thread).
    pub fn context(&self) -> &Context {
        &self.context
    }

    /// Whether the TCP listeners require the cluster key.
    pub fn is_keyed(&self) -> bool {
        self.keys.0.borrow().is_some()
    }

    /// A handle that replaces the keyring of this context's listeners (rotation).
    pub fn keys(&self) -> ServerKeys {
        self.keys.clone()
    }

    /// Gives a TCP listener its ZAP domain and, for the cluster's sockets of a keyed daemon,
    /// the CURVE server role; returns what follows the first key for the listener's owner
    /// (see [`ListenerKey`]). A plaintext listener has no key to follow.
    fn tcp_listener(
        &self,
        socket: &zmq::Socket,
        listener: Listener,
    ) -> zmq::Result<Option<ListenerKey>> {
        if listener == Listener::Plaintext {
            socket.set_zap_domain(zap::PLAINTEXT_DOMAIN)?;
            return Ok(None);
        }
        socket.set_zap_domain(zap::DOMAIN)?;
        let mut updates = self.keys.0.subscribe();
        let Some(pair) = updates
            .borrow_and_update()
            .as_ref()
            .map(|keys| keys.first().curve().server)
        else {
            return Ok(None);
        };
        socket.set_curve_server(true)?;
        socket.set_curve_secretkey(pair.secret())?;
        Ok(Some(ListenerKey {
            updates,
            serving: pair.public,
            bound: String::new(),
        }))
    }
}

/// Whom a TCP listener is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    /// The cluster: holders of its key when the daemon has one (CURVE), else everyone (NULL).
    Cluster,
    /// Stock Circus clients, which cannot speak CURVE: a keyed agent's `circus_bind` (NULL,
    /// in [`zap::PLAINTEXT_DOMAIN`]).
    Plaintext,
}

/// The keyring of a daemon's listeners and its outgoing connections, which a running daemon
/// replaces when its key file changes (SIGHUP): the ZAP handler admits the new keyring's
/// clients at once, every listener whose first key changed is bound again with the new
/// server pair by its owner ([`ListenerKey`]), and outgoing connections present the new
/// keyring ([`install_client_keyring`]).
#[derive(Clone)]
pub struct ServerKeys(std::sync::Arc<tokio::sync::watch::Sender<Option<Keyring>>>);

/// What [`ServerKeys::rotate`] did.
#[derive(Debug, PartialEq, Eq)]
pub enum Rotation {
    Unchanged,
    /// New keys accepted; the first key (and so the server key) is the same.
    Accepted,
    /// The first key changed: the listeners are bound again with its server pair.
    NewFirstKey,
}

impl ServerKeys {
    /// The keyring as it changes, for what announces its fingerprint.
    pub fn updates(&self) -> tokio::sync::watch::Receiver<Option<Keyring>> {
        self.0.subscribe()
    }

    /// Reads the key file at `path` again and makes it this daemon's keyring ([`Self::rotate`]),
    /// logging what changed; `daemon` names it in the error ("the agent", "troupe serve"). On
    /// an error the keyring in use stays.
    pub fn reload(&self, path: &Path, daemon: &str) -> Result<Rotation, String> {
        let keyring = Keyring::load(path).map_err(|e| e.to_string())?;
        let rotation = self
            .rotate(&keyring)
            .map_err(|e| format!("{}: {daemon} {e}", path.display()))?;
        if rotation != Rotation::Unchanged {
            tracing::info!(
                fingerprint = %keyring.fingerprint(),
                keys = keyring.keys().len(),
                file = %path.display(),
                ?rotation,
                "cluster key reloaded"
            );
        }
        Ok(rotation)
    }

    /// Makes `keyring` this daemon's keyring. A daemon started without a key stays keyless
    /// (its listeners are not CURVE servers; turning them into ones takes a restart).
    pub fn rotate(&self, keyring: &Keyring) -> Result<Rotation, String> {
        let current = self.0.borrow().clone();
        let Some(current) = current else {
            return Err("started without a cluster key: restart it to use one".into());
        };
        if &current == keyring {
            return Ok(Rotation::Unchanged);
        }
        install_client_keyring(keyring);
        let rotation = if current.first() == keyring.first() {
            Rotation::Accepted
        } else {
            Rotation::NewFirstKey
        };
        self.0.send_replace(Some(keyring.clone()));
        Ok(rotation)
    }
}

/// How a keyed TCP listener follows its daemon's first key: its owner (the one task that
/// uses the socket) waits on [`ListenerKey::changed`] and calls [`ListenerKey::rebind`].
/// libzmq copies a socket's options into a listener when it binds, so a new server key takes
/// a new bind; that ends the listener's connections, and clients connect again (with the
/// key the new one opens: see [`ClientKeys`]).
pub struct ListenerKey {
    updates: tokio::sync::watch::Receiver<Option<Keyring>>,
    /// The public key of the server pair the listener was bound with.
    serving: [u8; 32],
    /// The endpoint as bound (a port chosen by the system stays the same).
    bound: String,
}

impl ListenerKey {
    /// Waits until the daemon's first key is not the one the listener serves; returns its
    /// server pair. Cancel-safe.
    pub async fn changed(&mut self) -> CurvePair {
        loop {
            if self.updates.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
            let first = self
                .updates
                .borrow_and_update()
                .as_ref()
                .map(|keys| keys.first().curve().server);
            if let Some(pair) = first.filter(|pair| pair.public != self.serving) {
                return pair;
            }
        }
    }

    /// Binds `socket` again with `pair`. The old listener closes in libzmq's I/O thread, so
    /// the port may still be taken for a moment: the bind is retried for up to
    /// [`REBIND_WAIT`], blocking its owner's task that long at most.
    pub fn rebind(&mut self, socket: &zmq::Socket, pair: &CurvePair) {
        let result = (|| {
            socket.set_curve_secretkey(pair.secret())?;
            socket.unbind(&self.bound)?;
            let started = std::time::Instant::now();
            loop {
                match socket.bind(&self.bound) {
                    Err(zmq::Error::EADDRINUSE) if started.elapsed() < REBIND_WAIT => {
                        std::thread::sleep(Duration::from_millis(2));
                    }
                    other => return other,
                }
            }
        })();
        match result {
            Ok(()) => {
                self.serving = pair.public;
                tracing::info!(endpoint = %self.bound, "listening with the new first cluster key");
            }
            Err(e) => tracing::error!(
                endpoint = %self.bound,
                "cannot listen with the new first cluster key: {e}"
            ),
        }
    }
}

/// [`ListenerKey::changed`] for a listener that may have none (then it waits for ever).
pub async fn key_changed(key: &mut Option<ListenerKey>) -> CurvePair {
    match key {
        Some(key) => key.changed().await,
        None => std::future::pending().await,
    }
}

/// How long a listener bound again with a new key waits for its port to be free.
pub const REBIND_WAIT: Duration = Duration::from_secs(2);

/// A control socket: a ROUTER, as circusd binds, and over TCP the guard of its connections,
/// both for the one loop that serves it. Fields drop in order: the socket first, which stops
/// its monitor before the guard lets go of the other end.
pub struct ControlSocket {
    pub router: tmq::router::Router,
    /// Holds TCP connections to [`MAX_CONTROL_CONNECTIONS_PER_PEER`] per address; None for
    /// the owner's Unix socket, which its file mode guards.
    pub connections: Option<ConnectionGuard>,
    /// Follows the cluster key; None without one and for the owner's Unix socket.
    pub key: Option<ListenerKey>,
}

impl ControlSocket {
    /// Binds the socket again with the new first key's `pair` (from [`watch_control`]).
    pub fn rebind(&mut self, pair: &CurvePair) {
        use tmq::AsZmqSocket;
        if let Some(key) = &mut self.key {
            key.rebind(self.router.get_socket(), pair);
        }
    }
}

/// Waits for a connection event of a control socket (and applies it) or, when `idle`, for a
/// new first key, which it returns for [`ControlSocket::rebind`]. Its loop passes `idle` when
/// no request is running: binding again ends the connections, and a reply owed on one would
/// be lost. Takes the socket's parts, so the loop can wait on its router at the same time.
pub async fn watch_control(
    connections: &mut Option<ConnectionGuard>,
    key: &mut Option<ListenerKey>,
    idle: bool,
) -> Option<CurvePair> {
    tokio::select! {
        _ = crate::connections::watch(connections) => None,
        pair = key_changed(key), if idle => Some(pair),
    }
}

/// A control socket over TCP for the cluster, its connections guarded.
pub fn bind_control(
    server: &ServerContext,
    endpoint: &str,
    max_message_size: u64,
) -> tmq::Result<ControlSocket> {
    bind_tcp_control(server, endpoint, max_message_size, Listener::Cluster)
}

/// A control socket over TCP for `listener`, its connections guarded.
pub fn bind_tcp_control(
    server: &ServerContext,
    endpoint: &str,
    max_message_size: u64,
    listener: Listener,
) -> tmq::Result<ControlSocket> {
    let socket = control_router(server, max_message_size)?;
    let mut key = server.tcp_listener(&socket, listener)?;
    let bound = PerPeer {
        name: "MAX_CONTROL_CONNECTIONS_PER_PEER",
        limit: MAX_CONTROL_CONNECTIONS_PER_PEER,
    };
    let (socket, guard) = bind_guarded(server, socket, endpoint, "control", bound, &mut key)?;
    Ok(ControlSocket {
        router: wrap(socket)?,
        connections: Some(guard),
        key,
    })
}

fn control_router(server: &ServerContext, max_message_size: u64) -> zmq::Result<zmq::Socket> {
    let hard_limit = max_message_size.saturating_mul(HARD_LIMIT_FACTOR);
    let socket = server.context.socket(zmq::ROUTER)?;
    socket.set_linger(0)?;
    socket.set_maxmsgsize(i64::try_from(hard_limit).unwrap_or(i64::MAX))?;
    Ok(socket)
}

/// Binds `socket` with a monitor started before the bind, so that the guard sees every
/// connection; `key` learns the endpoint as bound.
fn bind_guarded(
    server: &ServerContext,
    socket: zmq::Socket,
    endpoint: &str,
    name: &'static str,
    bound: PerPeer,
    key: &mut Option<ListenerKey>,
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
    let last_endpoint = socket.get_last_endpoint()?.ok();
    let port = last_endpoint
        .as_deref()
        .and_then(|bound| bound.rsplit(':').next()?.parse().ok())
        .unwrap_or(0);
    if let Some(key) = key {
        key.bound = last_endpoint.unwrap_or_else(|| endpoint.to_string());
    }
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
            socket.set_zap_domain(zap::OWNER_DOMAIN)?;
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
            key: None,
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
    /// Follows the cluster key; None without one.
    pub key: Option<ListenerKey>,
}

/// Binds an XPUB (the stats and events sockets of both daemons) for `listener`, named `name`
/// in logs.
pub fn bind_subscribed_publisher(
    server: &ServerContext,
    endpoint: &str,
    name: &'static str,
    listener: Listener,
) -> tmq::Result<SubscribedPublisher> {
    let socket = server.context.socket(zmq::XPUB)?;
    socket.set_linger(0)?;
    let mut key = server.tcp_listener(&socket, listener)?;
    socket.set_maxmsgsize(MAX_SUBSCRIPTION_BYTES as i64)?;
    socket.set_xpub_verbose(true)?;
    let bound = PerPeer {
        name: "MAX_SUBSCRIBERS_PER_PEER",
        limit: MAX_SUBSCRIBERS_PER_PEER,
    };
    let (socket, connections) = bind_guarded(server, socket, endpoint, name, bound, &mut key)?;
    Ok(SubscribedPublisher {
        socket: wrap(socket)?,
        connections,
        key,
    })
}

/// A TCP listener of `kind` for the cluster (see [`Listener::Cluster`]): the daemon's ZAP
/// domain and, when keyed, its first key's CURVE server pair, and frames over
/// `max_message_size` dropped by ZeroMQ. Without a connection guard and without following key
/// rotations: for the swarm simulator (`troupe-swarm`), whose thousands of simulated agents
/// would each take two more sockets for a guard's monitor, and which nobody but the
/// controller under test reaches (it binds loopback addresses only).
pub fn bind_simulated_listener(
    server: &ServerContext,
    kind: zmq::SocketType,
    endpoint: &str,
    max_message_size: u64,
) -> zmq::Result<zmq::Socket> {
    let socket = server.context.socket(kind)?;
    socket.set_linger(0)?;
    socket.set_maxmsgsize(i64::try_from(max_message_size).unwrap_or(i64::MAX))?;
    server.tcp_listener(&socket, Listener::Cluster)?;
    socket.bind(endpoint)?;
    Ok(socket)
}

/// An async SUB connected to a PUB endpoint (a node's stats, a controller's), subscribed to
/// `prefix`, presenting this process's keyring. `max_message_size` bounds one frame, so a
/// hostile publisher cannot make us allocate more; ZeroMQ reconnects by itself when the
/// publisher restarts, and with a key the subscription follows its endpoint through a key
/// rotation ([`crate::client::Subscription`]).
pub async fn connect_subscriber(
    context: &Context,
    endpoint: &str,
    prefix: &[u8],
    max_message_size: u64,
) -> tmq::Result<crate::client::Subscription> {
    crate::client::Subscription::open(context, endpoint, prefix, max_message_size).await
}

/// The SUB of [`connect_subscriber`] and, with a key, the monitor of its handshakes.
pub(crate) async fn open_subscriber(
    context: &Context,
    endpoint: &str,
    prefix: &[u8],
    max_message_size: u64,
) -> tmq::Result<(tmq::subscribe::Subscribe, crate::client::Handshakes)> {
    let max = i64::try_from(max_message_size).unwrap_or(i64::MAX);
    let keys = client_keys();
    let opened = open_async(
        context,
        zmq::SUB,
        endpoint,
        keys.as_deref(),
        move |socket| socket.set_maxmsgsize(max),
    )
    .await?;
    let key = opened.presented(keys, endpoint);
    let wrap = <tmq::subscribe::SubscribeWithoutTopic as tmq::FromZmqSocket<_>>::from_zmq_socket;
    let subscriber = wrap(opened.socket)?.subscribe(prefix)?;
    Ok((
        subscriber,
        crate::client::Handshakes::new(opened.events, opened.up, key),
    ))
}

/// A blocking DEALER connected to a control endpoint, as circusctl uses, presenting this
/// process's keyring (tests talk to nodes with it as a stock client would).
pub fn connect_control(context: &Context, endpoint: &str) -> zmq::Result<zmq::Socket> {
    open_blocking(
        context,
        zmq::DEALER,
        endpoint,
        client_keys().as_deref(),
        |_| Ok(()),
    )
}

/// An async DEALER connected to a control endpoint (probes, heartbeats, forwarding),
/// presenting this process's keyring; with a key, its handshakes are watched for as long as
/// it lives, so that a kept connection follows its endpoint through a key rotation
/// ([`crate::client::Connection`]).
pub async fn connect_control_async(
    context: &Context,
    endpoint: &str,
) -> tmq::Result<crate::client::Connection> {
    let keys = client_keys();
    let opened = open_async(context, zmq::DEALER, endpoint, keys.as_deref(), |_| Ok(())).await?;
    let key = opened.presented(keys, endpoint);
    let dealer = <tmq::dealer::Dealer as tmq::FromZmqSocket<_>>::from_zmq_socket(opened.socket)?;
    Ok(crate::client::Connection::new(
        context,
        dealer,
        opened.events,
        opened.up,
        key,
        endpoint,
    ))
}

/// [`connect_control_async`] for a probe: without a key, the handshake is watched too, so
/// that a node holding a key (its greeting names another mechanism than NULL) is told from
/// a port that does not answer ([`crate::client::ClientError::Refused`]).
pub async fn connect_probe_async(
    context: &Context,
    endpoint: &str,
) -> tmq::Result<crate::client::Connection> {
    if client_keys().is_some() {
        return connect_control_async(context, endpoint).await;
    }
    let socket = new_client_socket(context, zmq::DEALER, None, &|_| Ok(()))?;
    let events = wrap(watch_handshake(context, &socket)?)?;
    socket.connect(endpoint)?;
    let dealer = <tmq::dealer::Dealer as tmq::FromZmqSocket<_>>::from_zmq_socket(socket)?;
    Ok(crate::client::Connection::new(
        context,
        dealer,
        Some(events),
        false,
        None,
        endpoint,
    ))
}

/// The keys of this process's outgoing connections: installed at start, replaced when a
/// daemon's key file changes (rotation). Connections made earlier keep their key until
/// their endpoint refuses it (see [`ClientKeys`]).
static CLIENT_KEYS: std::sync::RwLock<Option<std::sync::Arc<ClientKeys>>> =
    std::sync::RwLock::new(None);

/// Makes every outgoing connection of this process present `keyring` (CURVE), from now on.
pub fn install_client_keyring(keyring: &Keyring) {
    let keys = std::sync::Arc::new(ClientKeys::new(keyring));
    *CLIENT_KEYS
        .write()
        .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(keys);
}

/// The keys installed by [`install_client_keyring`], if any.
pub fn client_keys() -> Option<std::sync::Arc<ClientKeys>> {
    CLIENT_KEYS
        .read()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .clone()
}

/// How long a new connection waits for its CURVE handshake before it keeps the key it tried.
/// Only when the keyring holds several keys (a rotation): a server that refuses the key
/// within this time is tried with the next one; one that does not answer (down, or far) is
/// left to libzmq's reconnection with the key tried.
pub const HANDSHAKE_WAIT: Duration = Duration::from_secs(2);

/// The CURVE client side of a keyring, and which key opens each endpoint.
///
/// During a rotation, nodes' first keys differ: a server takes its first key's server pair,
/// and a client must name that server key to be heard at all (CURVE's HELLO is sealed for it).
/// So with several keys, a new connection watches its handshake (a socket monitor): on a
/// refusal (`ZMQ_EVENT_HANDSHAKE_FAILED_*`) it is closed and made again with the next key,
/// and a key other than the first that succeeded is remembered for that endpoint (at most
/// [`crate::bounds::REMEMBERED_KEY_CHOICES`]). With one key, connections are made at once.
/// Nothing is sent before the handshake, so a retried request never reaches a node twice.
pub struct ClientKeys {
    keyring: Keyring,
    keys: Vec<CurveKeys>,
    /// endpoint -> index of the key that last opened it, when not the first. A cache (a lost
    /// entry costs one handshake) shared by every connection of the process; its lock is never
    /// held across a wait.
    chosen: std::sync::Mutex<std::collections::HashMap<String, usize>>,
}

impl ClientKeys {
    pub fn new(keyring: &Keyring) -> ClientKeys {
        ClientKeys {
            keyring: keyring.clone(),
            keys: keyring.keys().iter().map(|key| key.curve()).collect(),
            chosen: Default::default(),
        }
    }

    /// The keyring these keys come from.
    pub fn keyring(&self) -> &Keyring {
        &self.keyring
    }

    /// Key indexes in the order to try for `endpoint`: the one remembered, then the keyring's.
    fn order(&self, endpoint: &str) -> Vec<usize> {
        let remembered = self.lock().get(endpoint).copied();
        remembered
            .into_iter()
            .chain((0..self.keys.len()).filter(|i| Some(*i) != remembered))
            .collect()
    }

    /// Notes that `endpoint` refused key `index`: when it was the key tried first, the next
    /// connection tries the key after it first. Noted at once, so a caller that gives up
    /// before the next key's handshake (a heartbeat's deadline) still makes progress; the
    /// refusal of a key no longer tried first (an older socket's) changes nothing.
    fn refused(&self, endpoint: &str, index: usize) {
        if self.order(endpoint).first() == Some(&index) {
            self.remember(endpoint, (index + 1) % self.keys.len());
        }
    }

    fn remember(&self, endpoint: &str, index: usize) {
        let mut chosen = self.lock();
        if index == 0 {
            chosen.remove(endpoint);
            return;
        }
        if chosen.len() >= crate::bounds::REMEMBERED_KEY_CHOICES {
            chosen.clear();
        }
        chosen.insert(endpoint.to_string(), index);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, usize>> {
        self.chosen
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Makes `socket` a CURVE client with key `index`.
    fn apply(&self, socket: &zmq::Socket, index: usize) -> zmq::Result<()> {
        let keys = &self.keys[index];
        socket.set_curve_serverkey(&keys.server.public)?;
        socket.set_curve_publickey(&keys.client.public)?;
        socket.set_curve_secretkey(keys.client.secret())
    }
}

/// The key a client socket presents, so that its endpoint's refusal of it, seen at any time
/// by the socket's monitor, is noted ([`ClientKeys::refused`]): the socket made in its place
/// then starts with the next key instead of the refused one.
pub(crate) struct PresentedKey {
    keys: std::sync::Arc<ClientKeys>,
    index: usize,
    endpoint: String,
}

impl PresentedKey {
    pub(crate) fn refused(&self) {
        self.keys.refused(&self.endpoint, self.index);
    }
}

/// What a connection's monitor said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Handshake {
    Succeeded,
    Refused,
    /// An established connection ended (libzmq connects again by itself).
    Disconnected,
    /// Nothing within [`HANDSHAKE_WAIT`]: the server is down, slow, or not there.
    Unknown,
}

/// The events a connection is watched for.
const HANDSHAKE_EVENTS: i32 = zmq::SocketEvent::HANDSHAKE_SUCCEEDED as i32
    | zmq::SocketEvent::HANDSHAKE_FAILED_NO_DETAIL as i32
    | zmq::SocketEvent::HANDSHAKE_FAILED_PROTOCOL as i32
    | zmq::SocketEvent::HANDSHAKE_FAILED_AUTH as i32
    | zmq::SocketEvent::DISCONNECTED as i32;

/// A new socket of `kind` with `configure`'s options and key `index` of `keys`.
fn new_client_socket(
    context: &Context,
    kind: zmq::SocketType,
    keys: Option<(&ClientKeys, usize)>,
    configure: &impl Fn(&zmq::Socket) -> zmq::Result<()>,
) -> zmq::Result<zmq::Socket> {
    // Its eventfd and TCP socket, and a monitor's two eventfds with a key.
    let files = if keys.is_some() { 4 } else { 2 };
    if !crate::limits::room_for(files) {
        out_of_sockets(&zmq::Error::EMFILE);
        return Err(zmq::Error::EMFILE);
    }
    let socket = context.socket(kind).inspect_err(out_of_sockets)?;
    socket.set_linger(0)?;
    configure(&socket)?;
    if let Some((keys, index)) = keys {
        keys.apply(&socket, index)?;
    }
    Ok(socket)
}

/// Says, at most once a minute, that this process could not open a socket: its peers are
/// not at fault (a member would otherwise stay `down` with nothing in the log but debug).
fn out_of_sockets(error: &zmq::Error) {
    static WARNING: crate::logging::OnceAMinute = crate::logging::OnceAMinute::new();
    if *error != zmq::Error::EMFILE {
        return;
    }
    let now = crate::protocol::now_epoch() as u64;
    OUT_OF_FILES_AT.store(now, std::sync::atomic::Ordering::Relaxed);
    if !WARNING.due() {
        return;
    }
    tracing::warn!(
        "cannot open a socket: {error} ({}, or a ZeroMQ context full): connections to nodes \
         fail until some close; raise `ulimit -n` or lower max_members (README, \"Scale\")",
        files_in_use()
    );
}

/// When (Unix seconds) this process last could not open a socket for lack of descriptors.
static OUT_OF_FILES_AT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// "N files open of M allowed", and the descriptors kept for clients.
fn files_in_use() -> String {
    let limit = crate::limits::open_files_limit().map_or("?".into(), |l| l.to_string());
    let open = crate::limits::open_files().map_or("?".into(), |n| n.to_string());
    match crate::limits::files_kept_free() {
        0 => format!("{open} files open of {limit} allowed"),
        kept => format!("{open} files open of {limit} allowed, the last {kept} kept for clients"),
    }
}

/// What to tell this process's clients when, in the last minute, it could not open a socket
/// for lack of descriptors (`troupe serve`'s `nodelist` carries it: members it cannot reach
/// show `down` although nothing is wrong with them).
pub fn short_of_files() -> Option<String> {
    let at = OUT_OF_FILES_AT.load(std::sync::atomic::Ordering::Relaxed);
    let now = crate::protocol::now_epoch() as u64;
    (at > 0 && now.saturating_sub(at) < 60).then(|| {
        format!(
            "out of file descriptors (or ZeroMQ sockets) in the last minute ({}): members it \
             could not connect to show down although they may be fine; raise its open-files \
             limit (LimitNOFILE= in its unit, ulimit -n) or lower max_members",
            files_in_use()
        )
    })
}

/// Starts a monitor of `socket`'s handshakes and returns its receiving end. libzmq's monitor
/// sends each event blocking, from the thread that saw it: a receiving end that is closed, or
/// full, while the monitor runs would stop that thread. So the receiving end has no
/// high-water mark (its owner drains it) and a monitor nobody reads any more is stopped
/// ([`stop_watching`]).
fn watch_handshake(context: &Context, socket: &zmq::Socket) -> zmq::Result<zmq::Socket> {
    static MONITORS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = MONITORS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let endpoint = format!("inproc://troupe-handshake-{n}");
    socket.monitor(&endpoint, HANDSHAKE_EVENTS)?;
    let monitor = context.socket(zmq::PAIR)?;
    monitor.set_linger(0)?;
    monitor.set_rcvhwm(0)?;
    monitor.connect(&endpoint)?;
    Ok(monitor)
}

/// Stops the monitor of `socket`, whose receiving end is about to close. Closing the socket
/// alone does not: libzmq stops a monitor when it destroys the socket, later, on its reaper
/// thread. A new monitor that reports no event replaces it instead (libzmq stops the old one at
/// once, under the socket's monitor lock; the inert one goes with the socket).
pub(crate) fn stop_watching(socket: &zmq::Socket) {
    static INERT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = INERT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    if let Err(e) = socket.monitor(&format!("inproc://troupe-unwatched-{n}"), 0) {
        // The old monitor was stopped before the new one failed to bind.
        tracing::debug!("no inert monitor in place of a stopped one: {e}");
    }
}

/// The verdict in one monitor message (`[event u16 LE, value u32 LE]`, endpoint) of a
/// socket with a key (`keyed`) or without one.
///
/// With a key, any failed handshake is a refusal: a server holding another key closes the
/// connection unread (`HANDSHAKE_FAILED_NO_DETAIL` here), one without a key answers with
/// another mechanism. Without a key, only that last one is: a server whose greeting names
/// another mechanism than NULL holds a key. Any other failure of a keyless socket is a port
/// that does not speak ZMTP (an HTTP server, garbage), which its silence reports.
pub(crate) fn handshake_event(frames: &[Vec<u8>], keyed: bool) -> Option<Handshake> {
    let first = frames.first()?;
    let event = u16::from_le_bytes([*first.first()?, *first.get(1)?]);
    let value = first
        .get(2..6)
        .map(|value| u32::from_le_bytes([value[0], value[1], value[2], value[3]]));
    Some(if event == zmq::SocketEvent::HANDSHAKE_SUCCEEDED as u16 {
        Handshake::Succeeded
    } else if event == zmq::SocketEvent::DISCONNECTED as u16 {
        Handshake::Disconnected
    } else if keyed
        || (event == zmq::SocketEvent::HANDSHAKE_FAILED_PROTOCOL as u16
            && value == Some(zmq_sys::ZMQ_PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH))
    {
        Handshake::Refused
    } else {
        return None;
    })
}

/// A client socket connected to `endpoint` with the key that opens it (see [`ClientKeys`]).
fn open_blocking(
    context: &Context,
    kind: zmq::SocketType,
    endpoint: &str,
    keys: Option<&ClientKeys>,
    configure: impl Fn(&zmq::Socket) -> zmq::Result<()>,
) -> zmq::Result<zmq::Socket> {
    let order = keys.map(|keys| keys.order(endpoint)).unwrap_or_default();
    let (Some(keys), true) = (keys, order.len() > 1) else {
        let socket = new_client_socket(context, kind, keys.map(|k| (k, 0)), &configure)?;
        socket.connect(endpoint)?;
        return Ok(socket);
    };
    for &index in &order {
        let socket = new_client_socket(context, kind, Some((keys, index)), &configure)?;
        let monitor = watch_handshake(context, &socket)?;
        socket.connect(endpoint)?;
        let verdict = if monitor.poll(zmq::POLLIN, poll_timeout_ms(HANDSHAKE_WAIT))? > 0 {
            handshake_event(&monitor.recv_multipart(0)?, true)
        } else {
            None
        };
        stop_watching(&socket);
        match verdict.unwrap_or(Handshake::Unknown) {
            Handshake::Refused => {
                keys.refused(endpoint, index);
                continue;
            }
            Handshake::Succeeded => keys.remember(endpoint, index),
            Handshake::Unknown | Handshake::Disconnected => {}
        }
        return Ok(socket);
    }
    refused_by_every_key(context, kind, endpoint, keys, order[0], &configure)
}

/// A socket [`open_async`] made: with a key, the monitor of its handshakes and whether one
/// succeeded yet.
struct Opened {
    socket: zmq::Socket,
    events: Option<tmq::pair::Pair>,
    up: bool,
    /// The index of the key it presents (0 without a key).
    index: usize,
}

impl Opened {
    /// The key it presents, of `keys` (those it was made with).
    fn presented(
        &self,
        keys: Option<std::sync::Arc<ClientKeys>>,
        endpoint: &str,
    ) -> Option<PresentedKey> {
        keys.map(|keys| PresentedKey {
            keys,
            index: self.index,
            endpoint: endpoint.to_string(),
        })
    }
}

/// The async twin of [`open_blocking`]; with a key, the monitor is kept for the caller.
async fn open_async(
    context: &Context,
    kind: zmq::SocketType,
    endpoint: &str,
    keys: Option<&ClientKeys>,
    configure: impl Fn(&zmq::Socket) -> zmq::Result<()>,
) -> tmq::Result<Opened> {
    let Some(keys) = keys else {
        let socket = new_client_socket(context, kind, None, &configure)?;
        socket.connect(endpoint)?;
        return Ok(Opened {
            socket,
            events: None,
            up: false,
            index: 0,
        });
    };
    let order = keys.order(endpoint);
    if order.len() == 1 {
        let socket = new_client_socket(context, kind, Some((keys, 0)), &configure)?;
        let events = watch_handshake(context, &socket)?;
        socket.connect(endpoint)?;
        return Ok(Opened {
            socket,
            events: Some(wrap(events)?),
            up: false,
            index: 0,
        });
    }
    for &index in &order {
        let socket = new_client_socket(context, kind, Some((keys, index)), &configure)?;
        let mut events: tmq::pair::Pair = wrap(watch_handshake(context, &socket)?)?;
        socket.connect(endpoint)?;
        // Declared after `events`, dropped before it: an attempt given up while it awaits its
        // verdict (refused, or its caller's deadline) stops its monitor first.
        let socket = Watched(Some(socket));
        let verdict = next_handshake(&mut events, HANDSHAKE_WAIT).await;
        if verdict == Handshake::Refused {
            keys.refused(endpoint, index);
            continue;
        }
        let up = verdict == Handshake::Succeeded;
        if up {
            keys.remember(endpoint, index);
        }
        return Ok(Opened {
            socket: socket.keep(),
            events: Some(events),
            up,
            index,
        });
    }
    // Still watched: a kept socket tries again when the endpoint or our keyring changes.
    tracing::debug!(endpoint, "refused with every key of the keyring");
    let socket = new_client_socket(context, kind, Some((keys, order[0])), &configure)?;
    let events = watch_handshake(context, &socket)?;
    socket.connect(endpoint)?;
    Ok(Opened {
        socket,
        events: Some(wrap(events)?),
        up: false,
        index: order[0],
    })
}

/// A socket whose monitor is stopped if it is dropped before it is kept ([`stop_watching`]):
/// libzmq sends monitor events blocking, from its I/O thread, and one sent to a reading end
/// already closed would stop that thread.
struct Watched(Option<zmq::Socket>);

impl Watched {
    /// The socket, still watched, for the caller to keep.
    fn keep(mut self) -> zmq::Socket {
        self.0.take().expect("a socket is kept once")
    }
}

impl Drop for Watched {
    fn drop(&mut self) {
        if let Some(socket) = &self.0 {
            stop_watching(socket);
        }
    }
}

/// The next handshake verdict from `events` within `wait` (disconnections skipped).
async fn next_handshake(events: &mut tmq::pair::Pair, wait: Duration) -> Handshake {
    use futures::StreamExt;
    let verdict = async {
        while let Some(Ok(message)) = events.next().await {
            let frames: Vec<Vec<u8>> = message.iter().map(|f| f.to_vec()).collect();
            match handshake_event(&frames, true) {
                Some(Handshake::Disconnected) | None => continue,
                Some(verdict) => return verdict,
            }
        }
        Handshake::Unknown
    };
    tokio::time::timeout(wait, verdict)
        .await
        .unwrap_or(Handshake::Unknown)
}

/// When every key was refused: a connection with the one tried first, which the caller's
/// timeout ends (the server is of another cluster, or holds none of our keys).
fn refused_by_every_key(
    context: &Context,
    kind: zmq::SocketType,
    endpoint: &str,
    keys: &ClientKeys,
    index: usize,
    configure: &impl Fn(&zmq::Socket) -> zmq::Result<()>,
) -> zmq::Result<zmq::Socket> {
    tracing::debug!(endpoint, "refused with every key of the keyring");
    let socket = new_client_socket(context, kind, Some((keys, index)), configure)?;
    socket.connect(endpoint)?;
    Ok(socket)
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

    /// A refusal is noted at once: the next connection starts with the key after the refused
    /// one, even if the connection that saw the refusal was given up before trying it.
    #[test]
    fn a_refused_key_makes_the_next_key_first() {
        use crate::cluster_key::{ClusterKey, Keyring};
        let keys: Vec<ClusterKey> = (0..3).map(|_| ClusterKey::generate().unwrap()).collect();
        let keys = super::ClientKeys::new(&Keyring::new(keys).unwrap());
        let endpoint = "tcp://10.0.0.1:5555";
        assert_eq!(keys.order(endpoint), [0, 1, 2]);
        keys.refused(endpoint, 0);
        assert_eq!(keys.order(endpoint), [1, 0, 2]);
        // An older socket's refusal of the key no longer tried first changes nothing.
        keys.refused(endpoint, 0);
        assert_eq!(keys.order(endpoint), [1, 0, 2]);
        keys.refused(endpoint, 1);
        assert_eq!(keys.order(endpoint), [2, 0, 1]);
        keys.refused(endpoint, 2);
        assert_eq!(keys.order(endpoint), [0, 1, 2]);
        assert_eq!(keys.order("tcp://10.0.0.2:5555"), [0, 1, 2]);
    }

    /// A stopped monitor reports nothing more: the connection made after it is stopped is not
    /// reported, where the same connection on a watched socket is.
    #[test]
    fn a_stopped_monitor_reports_nothing_more() {
        let context = zmq::Context::new();
        let server = context.socket(zmq::ROUTER).unwrap();
        server.bind("tcp://127.0.0.1:0").unwrap();
        let endpoint = server.get_last_endpoint().unwrap().unwrap();
        let events_of = |stop: bool| {
            let socket = context.socket(zmq::DEALER).unwrap();
            socket.set_linger(0).unwrap();
            let events = super::watch_handshake(&context, &socket).unwrap();
            if stop {
                super::stop_watching(&socket);
            }
            socket.connect(&endpoint).unwrap();
            let seen = events.poll(zmq::POLLIN, 500).unwrap();
            super::stop_watching(&socket);
            seen
        };
        assert_eq!(
            events_of(false),
            1,
            "a watched socket reports its handshake"
        );
        assert_eq!(events_of(true), 0, "a stopped monitor reported an event");
    }

    /// A monitor message's first frame: event (u16 LE), value (u32 LE).
    fn event(event: zmq::SocketEvent, value: u32) -> Vec<Vec<u8>> {
        let mut frame = (event as u16).to_le_bytes().to_vec();
        frame.extend(value.to_le_bytes());
        vec![frame, b"tcp://10.0.0.1:5555".to_vec()]
    }

    /// Without a key only a server asking for one refuses us; with one, any failure does.
    #[test]
    fn a_keyless_socket_is_refused_only_by_a_mechanism_mismatch() {
        use super::{handshake_event, Handshake};
        use zmq::SocketEvent::*;
        let mismatch = zmq_sys::ZMQ_PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH;
        let unexpected = zmq_sys::ZMQ_PROTOCOL_ERROR_ZMTP_UNEXPECTED_COMMAND;
        let cases = [
            (
                event(HANDSHAKE_FAILED_PROTOCOL, mismatch),
                Some(Handshake::Refused),
                Some(Handshake::Refused),
            ),
            (
                event(HANDSHAKE_FAILED_PROTOCOL, unexpected),
                None,
                Some(Handshake::Refused),
            ),
            (
                event(HANDSHAKE_FAILED_NO_DETAIL, 104),
                None,
                Some(Handshake::Refused),
            ),
            (
                event(HANDSHAKE_FAILED_AUTH, 400),
                None,
                Some(Handshake::Refused),
            ),
            (
                event(HANDSHAKE_SUCCEEDED, 0),
                Some(Handshake::Succeeded),
                Some(Handshake::Succeeded),
            ),
            (
                event(DISCONNECTED, 9),
                Some(Handshake::Disconnected),
                Some(Handshake::Disconnected),
            ),
            (vec![vec![7]], None, None),
        ];
        for (frames, keyless, keyed) in cases {
            assert_eq!(handshake_event(&frames, false), keyless, "{frames:?}");
            assert_eq!(handshake_event(&frames, true), keyed, "{frames:?}");
        }
    }
}
