//! troupe's core library: everything the agent and the controller both speak.
//!
//! - [`protocol`]: the Circus wire format (requests, replies, errnos, events, process info).
//! - [`config`]: the agent's config model and its validation, shared with `add`/`set`.
//! - [`sockets`]: every ZeroMQ socket is created here, so transport options live in one place.
//! - [`zap`]: the handler that admits peers to every listening socket (Trust 2 checks keys there).
//! - [`connections`]: a listening socket's connections, held to a bound per peer address.
//! - [`subscribers`]: publishing sockets whose subscribers are held to [`bounds`].
//! - [`client`]: a blocking request/reply client, as `circusctl` is.
//! - [`endpoint`]: `tcp://HOST:PORT`, the one parser of endpoints (IPv6 in brackets).
//! - [`cluster_key`]: the cluster key, its fingerprint and the keyring of accepted keys.
//! - [`discovery`]: parsing the IP ranges the controller probes for agents (`--probe`).
//! - [`fuzz_targets`]: what each `cargo fuzz` target runs (fuzz/), replayed by `cargo test`.
//! - [`bounds`]: every limit on what a network peer can make a daemon hold (SECURITY.md).
//! - [`limits`], [`logging`]: process set-up both daemons do the same way.

pub mod bounds;
pub mod client;
pub mod cluster_key;
pub mod config;
pub mod connections;
pub mod discovery;
pub mod endpoint;
pub mod fuzz_targets;
pub mod limits;
pub mod logging;
pub mod protocol;
pub mod sockets;
pub mod subscribers;
pub mod zap;

/// troupe's version, reported by `nodeinfo` and `--version`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
