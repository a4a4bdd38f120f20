//! `troupe serve --http ADDR:PORT`: the web dashboard, served by serve itself from serve's
//! actors (membership's view and events, the stats history, the [`crate::activity`] feed,
//! the kept connections of [`crate::links`]); it holds no state of its own.
//!
//! - The page (`assets/`: plain HTML, CSS and JavaScript, compiled into the binary) loads
//!   once, reads the current state from the JSON API, then follows one Server-Sent Events
//!   stream ([`live`]): it never polls.
//! - `/metrics` ([`metrics`]): the cluster for a Prometheus server, under the same access
//!   rules as `/api`; `troupe serve --metrics ADDR:PORT` serves it alone on its own port
//!   ([`Serves::MetricsOnly`]), for a serve without the dashboard.
//! - `/api/...` ([`api`]) is what the page uses and what scripts may use: members with the
//!   node x watcher matrix, stats history for the charts, the live stream, actions
//!   ([`actions`]), a watcher's output ([`logs`]).
//! - Access ([`access`]): without a cluster key the dashboard listens on loopback only and
//!   answers only requests naming a loopback host (no DNS rebinding); with one, every `/api`
//!   request carries the token derived from the key ([`troupe::cluster_key::ClusterKey::dashboard_token`]).
//! - What a client can make it hold is bounded ([`troupe::bounds`]: `DASHBOARD_*`): requests
//!   in flight, live streams, body size.
//!
//! axum serves it: the tokio HTTP server the ecosystem keeps (hyper underneath), with the
//! routing, extractors, SSE and body limits this needs; hand-written HTTP parsing is what a
//! hostile client would aim at.

pub mod access;
mod actions;
mod api;
mod live;
mod logs;
pub mod metrics;

use crate::activity::ActivityHandle;
use crate::links::Links;
use crate::membership::MembershipHandle;
use crate::stats::StatsHandle;
use anyhow::Context;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use axum::Router;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use troupe::bounds::{DASHBOARD_BODY_BYTES, DASHBOARD_EVENT_STREAMS, DASHBOARD_REQUESTS_IN_FLIGHT};

/// What the dashboard reads and acts through: serve's handles.
#[derive(Clone)]
pub struct DashboardContext {
    pub membership: MembershipHandle,
    pub stats: StatsHandle,
    pub activity: ActivityHandle,
    pub links: Links,
    pub cluster: String,
    /// Per-node timeout of an action.
    pub timeout: Duration,
}

/// Shared by every request: the context and the two bounds.
struct App {
    context: DashboardContext,
    access: access::Access,
    requests: Arc<Semaphore>,
    streams: Arc<Semaphore>,
}

/// A running dashboard: where it listens and its server task.
pub struct Dashboard {
    pub address: SocketAddr,
    pub task: JoinHandle<()>,
}

/// What a listener serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Serves {
    /// The page, `/api` and `/metrics` (`--http`).
    Dashboard,
    /// `/metrics` only (`--metrics`).
    MetricsOnly,
}

impl Serves {
    fn option(self) -> &'static str {
        match self {
            Serves::Dashboard => "--http",
            Serves::MetricsOnly => "--metrics",
        }
    }
}

/// Binds `address` and serves the dashboard, or its `/metrics` alone. Refuses a non-loopback
/// address when the process has no cluster key (see [`access::check_address`]).
pub fn start(
    address: SocketAddr,
    context: DashboardContext,
    serves: Serves,
) -> anyhow::Result<Dashboard> {
    let keyed = troupe::sockets::client_keys().is_some();
    access::check_address(address, keyed, serves)?;
    let listener = std::net::TcpListener::bind(address).with_context(|| {
        format!(
            "binding the dashboard on {address} ({}): is another program (or another troupe \
             serve) using that port? Choose another with {} ADDR:PORT",
            serves.option(),
            serves.option()
        )
    })?;
    listener.set_nonblocking(true)?;
    let address = listener.local_addr()?;
    let listener = tokio::net::TcpListener::from_std(listener)?;
    let app = Arc::new(App {
        context,
        access: access::Access::new(address),
        requests: Arc::new(Semaphore::new(DASHBOARD_REQUESTS_IN_FLIGHT)),
        streams: Arc::new(Semaphore::new(DASHBOARD_EVENT_STREAMS)),
    });
    let router = match serves {
        Serves::Dashboard => router(app),
        Serves::MetricsOnly => metrics_router(app),
    };
    let task = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, router).await {
            tracing::error!("the dashboard stopped: {e}");
        }
    });
    tracing::info!(%address, keyed, ?serves, "dashboard ready");
    Ok(Dashboard { address, task })
}

fn router(app: Arc<App>) -> Router {
    let api = Router::new()
        .route("/members", get(api::members))
        .route("/stats", get(api::stats))
        .route("/plan", post(actions::plan))
        .route("/action", post(actions::act))
        .route("/login", post(api::login))
        .route("/logs", get(logs::tail))
        .layer(axum::middleware::from_fn_with_state(
            app.clone(),
            api::in_flight,
        ))
        // The live stream has its own bound (it lasts as long as the page).
        .route("/events", get(live::events))
        .route("/logs/follow", get(logs::follow))
        .layer(axum::middleware::from_fn_with_state(
            app.clone(),
            access::check,
        ))
        .layer(DefaultBodyLimit::max(DASHBOARD_BODY_BYTES))
        .fallback(api::not_found);
    Router::new()
        .route("/", get(api::page))
        .route("/app.js", get(api::script))
        .route("/app.css", get(api::style))
        .nest("/api", api)
        .merge(metrics_route(app.clone()))
        .with_state(app)
}

/// `/metrics`, behind the same checks as `/api`.
fn metrics_route(app: Arc<App>) -> Router<Arc<App>> {
    Router::new()
        .route("/metrics", get(metrics::metrics))
        .layer(axum::middleware::from_fn_with_state(
            app.clone(),
            api::in_flight,
        ))
        .layer(axum::middleware::from_fn_with_state(app, access::check))
}

fn metrics_router(app: Arc<App>) -> Router {
    metrics_route(app.clone())
        .fallback(api::not_found)
        .with_state(app)
}
