//! `GET /api/events`: the live stream (Server-Sent Events) the page follows instead of polling.
//!
//! Events, each `data` one JSON object:
//! - `members`: as `GET /api/members`, at once and after every change of membership's view
//!   (a join, a state change, a heartbeat's new facts: the matrix), at most every 500 ms;
//! - `activity`: one line of the event list (see [`crate::activity::Activity`]): the last
//!   ones at once, then each as it happens;
//! - `stats`: the chart points of the last [`STATS_EVERY`] plus a second, every
//!   [`STATS_EVERY`] (as `GET /api/stats?since=...`);
//! - `missed`: the stream fell behind and dropped `count` activity lines (reload for all).
//!
//! Each stream is a task holding one of [`troupe::bounds::DASHBOARD_EVENT_STREAMS`] places,
//! given back when the page goes.

use super::api::{chart_series, error, members_json};
use super::App;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{broadcast, mpsc};
use troupe::bounds::DASHBOARD_EVENT_STREAMS;

/// How often chart points are pushed.
pub const STATS_EVERY: Duration = Duration::from_secs(2);
/// The least time between two `members` events.
const MEMBERS_AT_MOST_EVERY: Duration = Duration::from_millis(500);

pub async fn events(State(app): State<Arc<App>>) -> Response {
    let Ok(permit) = app.streams.clone().try_acquire_owned() else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "{DASHBOARD_EVENT_STREAMS} pages follow this dashboard already \
                 (troupe::bounds::DASHBOARD_EVENT_STREAMS): close one and reload"
            ),
        );
    };
    let (tx, rx) = mpsc::channel::<Event>(64);
    tokio::spawn(async move {
        let _permit = permit;
        follow(&app, tx).await;
    });
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|event| (Ok::<_, Infallible>(event), rx))
    });
    Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response()
}

/// Feeds one page until it goes (its channel closes).
async fn follow(app: &App, tx: mpsc::Sender<Event>) {
    let context = &app.context;
    let mut view = context.membership.view();
    let (recent, mut live) = context.activity.follow().await;
    let members = view.borrow_and_update().clone();
    if send(&tx, "members", members_json(&context.cluster, &members))
        .await
        .is_err()
    {
        return;
    }
    for activity in recent {
        if send(&tx, "activity", json!(activity)).await.is_err() {
            return;
        }
    }
    let mut stats = tokio::time::interval(STATS_EVERY);
    stats.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    stats.tick().await;
    loop {
        let sent = tokio::select! {
            changed = view.changed() => {
                if changed.is_err() {
                    return;
                }
                tokio::time::sleep(MEMBERS_AT_MOST_EVERY).await;
                let members = view.borrow_and_update().clone();
                send(&tx, "members", members_json(&context.cluster, &members)).await
            }
            activity = live.recv() => match activity {
                Ok(activity) => send(&tx, "activity", json!(activity)).await,
                Err(broadcast::error::RecvError::Lagged(count)) => {
                    send(&tx, "missed", json!({"count": count})).await
                }
                Err(broadcast::error::RecvError::Closed) => return,
            },
            _ = stats.tick() => match chart_series(app, STATS_EVERY + Duration::from_secs(1)).await {
                Some(series) => send(&tx, "stats", series).await,
                None => Ok(()),
            },
            _ = tx.closed() => return,
        };
        if sent.is_err() {
            return;
        }
    }
}

async fn send(
    tx: &mpsc::Sender<Event>,
    name: &str,
    data: serde_json::Value,
) -> Result<(), mpsc::error::SendError<Event>> {
    tx.send(Event::default().event(name).data(data.to_string()))
        .await
}
