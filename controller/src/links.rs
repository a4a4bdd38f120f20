//! Kept control connections from `troupe serve` to its members.
//!
//! A new DEALER per node per request costs a TCP connect and a ZeroMQ handshake with every
//! node on every broadcast: `status` to 128 agents on loopback took 35-55 ms that way, 9-13 ms
//! on warm connections. [`Links`] keeps them:
//!
//! - One actor task owns the idle connections, keyed by control endpoint; [`Links`] is its
//!   handle. A call checks a connection out (an idle one, or a new one), runs its one request
//!   on it ([`troupe::client::exchange`]), and checks it back in after the reply. A
//!   connection is owned by one party at a time, moved through the actor's channel.
//! - One request at a time per connection, not several multiplexed by id on one: an agent
//!   runs the requests of one client (one ZeroMQ identity) one after another, so a slow
//!   `stop --waiting` would hold up every command sent behind it on the same DEALER. Concurrent
//!   calls to one node take more connections; [`IDLE_PER_NODE`] of them are kept idle.
//! - A call that times out or fails closes its connection instead of returning it, so the late
//!   reply of a frozen node can never reach a later request, and a request still queued for an
//!   unreachable node is discarded rather than delivered when it comes back. Replies are also
//!   matched by id, as on any connection.
//! - Timeouts are per call, as with fresh sockets: a black-holed node costs its own timeout and
//!   no other node's reply waits for it.
//! - Idle connections are kept while their endpoint belongs to an alive or suspect member, and
//!   closed when the member goes down, leaves or moves. An agent that restarts on the same
//!   endpoint is reconnected to by ZeroMQ itself; one that takes a new cluster key is
//!   reconnected to with it ([`troupe::client::Connection`]), and idle connections its old
//!   key no longer opens are closed at the next recheck.
//! - Every connection uses the one ZeroMQ context of the serve process (at most 1023 sockets:
//!   one idle per member, and one more per node for each broadcast beyond the first running
//!   at the same time).

use crate::broadcast::{gather, Target};
use crate::membership::{MemberState, MembershipHandle};
use serde_json::Value;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::task::JoinHandle;
use troupe::client::{exchange, ClientError, Outgoing};
use troupe::protocol::Request;

/// Idle connections kept per node: one, as a broadcast takes one per node; concurrent calls
/// to a node open more, closed after use.
pub const IDLE_PER_NODE: usize = 1;
/// How often idle connections are checked against membership besides its events.
const RECHECK_EVERY: Duration = Duration::from_secs(10);

type Dealer = troupe::client::Connection;

/// A cheap, cloneable handle to the connection pool's actor.
#[derive(Clone)]
pub struct Links {
    tx: mpsc::UnboundedSender<Msg>,
}

enum Msg {
    /// An idle connection to the endpoint, or a new one.
    Checkout {
        endpoint: String,
        reply: oneshot::Sender<Result<Dealer, ClientError>>,
    },
    /// A connection whose last request got its reply.
    Checkin {
        endpoint: String,
        socket: Box<Dealer>,
    },
    /// How many connections are idle (tests).

    #[cfg(test)]
    Idle(oneshot::Sender<usize>),
}

impl Links {
    /// Starts the pool. With `membership`, idle connections are kept only for the endpoints
    /// of alive or suspect members; without, for every endpoint used.
    pub fn spawn(
        zmq: zmq::Context,
        membership: Option<MembershipHandle>,
    ) -> (Links, JoinHandle<()>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let pool = Pool {
            zmq,
            idle: HashMap::new(),
            members: None,
        };
        (Links { tx }, tokio::spawn(pool.run(rx, membership)))
    }

    /// Sends `request` to `endpoint` on a kept connection and waits up to `timeout` for the
    /// reply with its id.
    pub async fn call(
        &self,
        endpoint: &str,
        request: impl Into<Outgoing>,
        timeout: Duration,
    ) -> Result<Value, ClientError> {
        let mut socket = self.checkout(endpoint).await?;
        let reply = exchange(&mut socket, request, timeout).await;
        if reply.is_ok() {
            let _ = self.tx.send(Msg::Checkin {
                endpoint: endpoint.to_string(),
                socket: Box::new(socket),
            });
        }
        reply
    }

    /// [`crate::broadcast::fan_out`] on kept connections. The request is encoded once, with
    /// one id for every node: each node's reply is matched on its own connection.
    pub async fn fan_out(
        &self,
        targets: &[Target],
        request: &Request,
        timeout: Duration,
    ) -> BTreeMap<String, Value> {
        let outgoing = Outgoing::from(request.clone());
        gather(targets, false, targets.len(), |target| {
            self.call(&target.endpoint, outgoing.clone(), timeout)
        })
        .await
    }

    async fn checkout(&self, endpoint: &str) -> Result<Dealer, ClientError> {
        let (reply, socket) = oneshot::channel();
        let _ = self.tx.send(Msg::Checkout {
            endpoint: endpoint.to_string(),
            reply,
        });
        socket.await.unwrap_or_else(|_| {
            Err(ClientError::Connect {
                endpoint: endpoint.to_string(),
                source: zmq::Error::ETERM,
            })
        })
    }

    #[cfg(test)]
    async fn idle(&self) -> usize {
        let (tx, rx) = oneshot::channel();
        let _ = self.tx.send(Msg::Idle(tx));
        rx.await.unwrap_or(0)
    }
}

struct Pool {
    zmq: zmq::Context,
    idle: HashMap<String, Vec<Dealer>>,
    /// Control endpoints of alive and suspect members; None without membership (keep all).
    members: Option<HashSet<String>>,
}

impl Pool {
    async fn run(
        mut self,
        mut rx: mpsc::UnboundedReceiver<Msg>,
        membership: Option<MembershipHandle>,
    ) {
        let mut events = membership.as_ref().map(MembershipHandle::subscribe);
        let mut recheck =
            tokio::time::interval_at(tokio::time::Instant::now() + RECHECK_EVERY, RECHECK_EVERY);
        recheck.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        self.refresh(membership.as_ref());
        loop {
            tokio::select! {
                msg = rx.recv() => match msg {
                    Some(msg) => self.on_message(msg),
                    None => return,
                },
                closed = member_event(&mut events) => {
                    if closed {
                        events = None;
                    }
                    self.refresh(membership.as_ref());
                }
                _ = recheck.tick() => {
                    self.drop_refused();
                    self.refresh(membership.as_ref());
                }
            }
        }
    }

    fn on_message(&mut self, msg: Msg) {
        match msg {
            Msg::Checkout { endpoint, reply } => {
                // A caller gone meanwhile drops the connection with the reply.
                if let Some(socket) = self.idle.get_mut(&endpoint).and_then(Vec::pop) {
                    let _ = reply.send(Ok(socket));
                    return;
                }
                // A new connection may wait for its handshake (a keyring of several keys),
                // which the actor must not.
                let zmq = self.zmq.clone();
                tokio::spawn(async move {
                    let socket = troupe::sockets::connect_control_async(&zmq, &endpoint)
                        .await
                        .map_err(|e| ClientError::Connect {
                            endpoint: endpoint.clone(),
                            source: match e {
                                tmq::TmqError::Zmq(z) => z,
                                _ => zmq::Error::EINVAL,
                            },
                        });
                    let _ = reply.send(socket);
                });
            }
            Msg::Checkin { endpoint, socket } => {
                if self
                    .members
                    .as_ref()
                    .is_some_and(|m| !m.contains(&endpoint))
                {
                    return;
                }
                let idle = self.idle.entry(endpoint).or_default();
                if idle.len() < IDLE_PER_NODE {
                    idle.push(*socket);
                }
            }
            #[cfg(test)]
            Msg::Idle(reply) => {
                let _ = reply.send(self.idle.values().map(Vec::len).sum());
            }
        }
    }

    /// Reads what the idle connections' monitors said, and closes those whose endpoint
    /// refused their key (it took a new key: the next call opens one with it).
    fn drop_refused(&mut self) {
        for sockets in self.idle.values_mut() {
            sockets.retain_mut(|socket| !socket.drain());
        }
        self.idle.retain(|_, sockets| !sockets.is_empty());
    }

    /// Closes the idle connections of endpoints that are no longer alive or suspect members.
    fn refresh(&mut self, membership: Option<&MembershipHandle>) {
        let Some(membership) = membership else {
            return;
        };
        let members: HashSet<String> = membership
            .shared_members()
            .iter()
            .filter(|m| matches!(m.state, MemberState::Alive | MemberState::Suspect))
            .map(|m| m.endpoint.clone())
            .collect();
        self.idle
            .retain(|endpoint, sockets| members.contains(endpoint) && !sockets.is_empty());
        self.members = Some(members);
    }
}

/// Waits for membership events and takes every one already queued (one refresh for a
/// burst); true once the events have ended. Never resolves without membership.
async fn member_event(
    events: &mut Option<broadcast::Receiver<crate::membership::PublishedEvent>>,
) -> bool {
    let Some(events) = events else {
        return std::future::pending().await;
    };
    match events.recv().await {
        Err(broadcast::error::RecvError::Closed) => true,
        _ => {
            while !matches!(
                events.try_recv(),
                Err(broadcast::error::TryRecvError::Empty | broadcast::error::TryRecvError::Closed)
            ) {}
            false
        }
    }
}

/// How a fan-out reaches its nodes.
#[derive(Clone)]
pub enum Reach {
    /// A new connection per node, every one on this one ZeroMQ context (the one-shot CLI; see
    /// [`crate::broadcast::fan_out`] on why one context).
    Fresh(zmq::Context),
    /// `troupe serve`'s kept connections.
    Kept(Links),
}

impl Reach {
    /// New connections on a new context.
    pub fn fresh() -> Reach {
        Reach::Fresh(zmq::Context::new())
    }

    /// One request to `endpoint` and its reply, within `timeout`.
    pub async fn call(
        &self,
        endpoint: &str,
        request: impl Into<troupe::client::Outgoing>,
        timeout: Duration,
    ) -> Result<Value, ClientError> {
        match self {
            Reach::Fresh(zmq) => troupe::client::call_async(zmq, endpoint, request, timeout).await,
            Reach::Kept(links) => links.call(endpoint, request, timeout).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake_agent::{self, bind, next_request, reply};
    use serde_json::json;

    async fn answer(router: &mut tmq::router::Router, identity: &[u8], id: &Value, what: &str) {
        reply(
            router,
            identity,
            &json!({"status": "ok", "id": id, "answer": what}),
        )
        .await;
    }

    /// One `status` call through `links`, answered by the fake agent, which also answers
    /// the heartbeats of membership meanwhile as a stock circusd would.
    async fn call_once(links: &Links, endpoint: &str, agent: &mut tmq::router::Router) {
        let call = links.call(endpoint, request("status"), Duration::from_secs(5));
        let serve = async {
            loop {
                let (identity, id, command) = next_request(agent).await;
                let reply = match command.as_str() {
                    "status" => break answer(agent, &identity, &id, "status").await,
                    "list" => json!({"status": "ok", "id": id, "watchers": ["w"]}),
                    _ => json!({"status": "error", "id": id, "errno": 2, "reason": "unknown"}),
                };
                crate::fake_agent::reply(agent, &identity, &reply).await;
            }
        };
        let (reply, ()) = tokio::join!(call, serve);
        assert_eq!(reply.unwrap()["answer"], "status");
    }

    fn request(command: &str) -> Request {
        Request::new(command, Default::default())
    }

    #[tokio::test]
    async fn calls_one_after_another_reuse_one_connection() {
        let agents = fake_agent::context();
        let (mut agent, endpoint) = bind(&agents, "tcp://127.0.0.1:*").await;
        let zmq = zmq::Context::new();
        let (links, _task) = Links::spawn(zmq.clone(), None);
        let mut identities = Vec::new();
        for command in ["status", "list", "numwatchers"] {
            let call = links.call(&endpoint, request(command), Duration::from_secs(5));
            let serve = async {
                let (identity, id, got) = next_request(&mut agent).await;
                assert_eq!(got, command);
                answer(&mut agent, &identity, &id, command).await;
                identity
            };
            let (reply, identity) = tokio::join!(call, serve);
            assert_eq!(reply.unwrap()["answer"], command);
            identities.push(identity);
        }
        assert!(
            identities.iter().all(|i| *i == identities[0]),
            "three calls came from {} connections",
            identities.len()
        );
        assert_eq!(links.idle().await, 1);
    }

    /// The agent runs one client's requests one after another: concurrent calls must not
    /// share a connection, or a slow one would hold up the other.
    #[tokio::test]
    async fn concurrent_calls_to_one_node_take_separate_connections() {
        let agents = fake_agent::context();
        let (mut agent, endpoint) = bind(&agents, "tcp://127.0.0.1:*").await;
        let zmq = zmq::Context::new();
        let (links, _task) = Links::spawn(zmq.clone(), None);
        let slow = links.call(&endpoint, request("stop"), Duration::from_secs(5));
        let quick = links.call(&endpoint, request("status"), Duration::from_secs(5));
        let serve = async {
            let first = next_request(&mut agent).await;
            let second = next_request(&mut agent).await;
            assert_ne!(first.0, second.0, "both requests came on one connection");
            // Answer the status first, as an agent would while the stop is still running.
            let (status, stop) = if first.2 == "status" {
                (first, second)
            } else {
                (second, first)
            };
            answer(&mut agent, &status.0, &status.1, "status").await;
            answer(&mut agent, &stop.0, &stop.1, "stop").await;
        };
        let (slow, quick, ()) = tokio::join!(slow, quick, serve);
        assert_eq!(quick.unwrap()["answer"], "status");
        assert_eq!(slow.unwrap()["answer"], "stop");
        assert_eq!(links.idle().await, IDLE_PER_NODE);
    }

    /// A timed-out call closes its connection; a reply carrying another request's id is never
    /// taken for the answer.
    #[tokio::test]
    async fn a_late_reply_is_never_the_answer_to_a_later_request() {
        let agents = fake_agent::context();
        let (mut agent, endpoint) = bind(&agents, "tcp://127.0.0.1:*").await;
        let zmq = zmq::Context::new();
        let (links, _task) = Links::spawn(zmq.clone(), None);

        // The first call's connection is pooled; the second call (unanswered) takes it.
        let call = links.call(&endpoint, request("numwatchers"), Duration::from_secs(5));
        let serve = async {
            let (identity, id, _) = next_request(&mut agent).await;
            answer(&mut agent, &identity, &id, "numwatchers").await;
            identity
        };
        let (reply, warm) = tokio::join!(call, serve);
        assert_eq!(reply.unwrap()["answer"], "numwatchers");
        let started = std::time::Instant::now();
        let late = links.call(&endpoint, request("list"), Duration::from_millis(200));
        let (late, (identity, late_id, _)) = tokio::join!(late, next_request(&mut agent));
        assert_eq!(identity, warm, "the idle connection was not reused");
        assert!(matches!(late, Err(ClientError::Timeout { .. })), "{late:?}");
        assert!(started.elapsed() < Duration::from_secs(2));
        assert_eq!(
            links.idle().await,
            0,
            "the timed-out connection went back to the pool"
        );

        // The next call: a new connection. The late reply goes to the old one (closed), and a
        // stray reply with the late id on the new one is skipped.
        let next = links.call(&endpoint, request("status"), Duration::from_secs(5));
        let serve = async {
            let (identity, id, _) = next_request(&mut agent).await;
            assert_ne!(identity, warm, "the timed-out connection was reused");
            answer(&mut agent, &warm, &late_id, "list").await;
            answer(&mut agent, &identity, &late_id, "list").await;
            answer(&mut agent, &identity, &id, "status").await;
        };
        let (next, ()) = tokio::join!(next, serve);
        assert_eq!(next.unwrap()["answer"], "status");
    }

    /// Kept while the endpoint is a member's, closed when the member leaves; never kept for
    /// an endpoint that is not a member's.
    #[tokio::test]
    async fn idle_connections_are_kept_only_for_members() {
        use crate::membership::{MembershipMsg, NodeFacts, Source};
        let agents = fake_agent::context();
        let (mut agent, endpoint) = bind(&agents, "tcp://127.0.0.1:*").await;
        let zmq = zmq::Context::new();
        let membership =
            MembershipHandle::spawn("links-test", None, crate::admission::Admission::Open);
        let (links, _task) = Links::spawn(zmq.clone(), Some(membership.clone()));
        // Not a member (yet): used, then closed.
        call_once(&links, &endpoint, &mut agent).await;
        assert_eq!(links.idle().await, 0);

        // A member (a stock circusd as far as membership knows; the next heartbeat is a
        // second away): kept.
        membership
            .send(MembershipMsg::Answered {
                endpoint: endpoint.clone(),
                source: Source::Seed,
                facts: NodeFacts::Circus { watchers: 1 },
            })
            .await;
        membership.sync().await;
        // The pool hears of the member by an event of its own: a call made before that is
        // closed, so call until one is kept.
        let kept = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                call_once(&links, &endpoint, &mut agent).await;
                if links.idle().await == 1 {
                    break;
                }
            }
        });
        assert!(kept.await.is_ok(), "a member's connection was never kept");

        // It leaves: closed.
        membership
            .send(MembershipMsg::Goodbye {
                id_or_endpoint: endpoint.clone(),
            })
            .await;
        membership.sync().await;
        let closed = tokio::time::timeout(Duration::from_secs(10), async {
            while links.idle().await != 0 {
                tokio::task::yield_now().await;
            }
        });
        assert!(closed.await.is_ok(), "a gone member's connection was kept");
    }

    #[tokio::test]
    async fn an_unreachable_node_costs_its_timeout_and_nothing_is_kept() {
        let zmq = zmq::Context::new();
        let (links, _task) = Links::spawn(zmq, None);
        let targets = vec![Target {
            name: "gone".into(),
            endpoint: "tcp://127.0.0.1:9".into(),
        }];
        let started = std::time::Instant::now();
        let replies = links
            .fan_out(&targets, &request("status"), Duration::from_millis(200))
            .await;
        assert!(started.elapsed() < Duration::from_secs(2));
        assert_eq!(replies["gone"]["timeout"], true, "{:?}", replies);
        assert_eq!(links.idle().await, 0);
    }
}
