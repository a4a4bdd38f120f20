//! Registration with a controller (`master = "tcp://HOST:PORT"`): `register_node` every
//! [`REGISTER_INTERVAL`], so a restarted controller learns the agent again at once, and
//! `unregister_node` on a clean shutdown.

use super::interfaces::{tcp_endpoint, Bind};
use serde_json::{Map, Value};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use troupe::config::AgentSettings;
use troupe::protocol::{Registration, Request};

/// How often the agent registers, and so how long a restarted controller waits to see it.
pub const REGISTER_INTERVAL: Duration = Duration::from_secs(2);
/// A registration without a reply by then counts as failed; the socket is then replaced so
/// requests queued for a dead controller are not all delivered when it comes back.
const REPLY_TIMEOUT: Duration = Duration::from_millis(1500);

/// The running registration loop.
pub struct Registrar {
    /// Sending asks for an `unregister_node` within the given bound; dropping just stops.
    stop: oneshot::Sender<Duration>,
    task: JoinHandle<()>,
}

impl Registrar {
    pub fn start(settings: &AgentSettings, node_id: &str, bind: Bind) -> anyhow::Result<Self> {
        let master = settings.master.clone().unwrap_or_default();
        let (host, port) = split_endpoint(&master)?;
        let link = MasterLink {
            zmq: troupe::sockets::Context::new(),
            master,
            host,
            port,
            socket: None,
            state: LinkState::Unknown,
        };
        let identity = Identity {
            id: node_id.to_string(),
            name: settings.name.clone(),
            cluster: settings.cluster.clone(),
            bind,
            ports: [
                settings.control_port,
                settings.pubsub_port,
                settings.stats_port,
            ],
        };
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(run(link, identity, stopped));
        Ok(Self { stop, task })
    }

    /// Sends `unregister_node` (waiting at most `bound` for the reply) and ends the loop.
    pub async fn stop(self, bound: Duration) {
        let _ = self.stop.send(bound);
        let abort = self.task.abort_handle();
        if tokio::time::timeout(bound + Duration::from_millis(200), self.task)
            .await
            .is_err()
        {
            abort.abort();
        }
    }
}

/// What the agent tells the controller about itself.
struct Identity {
    id: String,
    name: String,
    cluster: String,
    bind: Bind,
    /// control, pubsub, stats.
    ports: [u16; 3],
}

impl Identity {
    fn registration(&self, master: IpAddr) -> std::io::Result<Registration> {
        let ip = self.bind.advertised_towards(master)?;
        Ok(Registration {
            id: self.id.clone(),
            name: self.name.clone(),
            cluster: self.cluster.clone(),
            endpoint: tcp_endpoint(ip, self.ports[0]),
            pubsub_endpoint: tcp_endpoint(ip, self.ports[1]),
            stats_endpoint: tcp_endpoint(ip, self.ports[2]),
        })
    }
}

/// Where the last attempt left us; only a change is logged, so a controller that stays
/// down costs one line, not one every two seconds.
#[derive(Debug, Clone, PartialEq, Eq)]
enum LinkState {
    Unknown,
    Registered,
    Refused(String),
    Unreachable(String),
}

struct MasterLink {
    zmq: troupe::sockets::Context,
    master: String,
    host: String,
    port: u16,
    socket: Option<troupe::client::Connection>,
    state: LinkState,
}

async fn run(mut link: MasterLink, identity: Identity, mut stopped: oneshot::Receiver<Duration>) {
    let mut ticks = tokio::time::interval(REGISTER_INTERVAL);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let bound = loop {
        tokio::select! {
            _ = ticks.tick() => {}
            stop = &mut stopped => break stop.ok(),
        }
        tokio::select! {
            state = link.register(&identity) => link.observe(state),
            stop = &mut stopped => break stop.ok(),
        }
    };
    if let Some(bound) = bound {
        link.unregister(&identity.id, bound).await;
    }
}

impl MasterLink {
    async fn register(&mut self, identity: &Identity) -> LinkState {
        let master_ip = match resolve(self.host.clone(), self.port).await {
            Ok(ip) => ip,
            Err(e) => return LinkState::Unreachable(e),
        };
        let registration = match identity.registration(master_ip) {
            Ok(registration) => registration,
            Err(e) => return LinkState::Unreachable(format!("no route to {master_ip}: {e}")),
        };
        let properties = match serde_json::to_value(&registration) {
            Ok(Value::Object(properties)) => properties,
            _ => Map::new(),
        };
        match self.call("register_node", properties, REPLY_TIMEOUT).await {
            Ok(reply) if reply["status"] == "ok" => {
                tracing::debug!(master = %self.master, endpoint = %registration.endpoint, "registered");
                LinkState::Registered
            }
            Ok(reply) => LinkState::Refused(
                reply["reason"]
                    .as_str()
                    .map_or_else(|| reply.to_string(), str::to_string),
            ),
            Err(e) => LinkState::Unreachable(e),
        }
    }

    fn observe(&mut self, state: LinkState) {
        if state == self.state {
            tracing::debug!(master = %self.master, "register_node attempt: as the last one ({state:?})");
            return;
        }
        match &state {
            LinkState::Registered => {
                tracing::info!(master = %self.master, "registered with the controller")
            }
            LinkState::Refused(reason) => {
                tracing::warn!(master = %self.master, "the controller refused register_node: {reason}")
            }
            LinkState::Unreachable(why) => tracing::warn!(
                master = %self.master,
                "cannot register with the controller ({why}); retrying every {}s",
                REGISTER_INTERVAL.as_secs()
            ),
            LinkState::Unknown => {}
        }
        self.state = state;
    }

    async fn unregister(&mut self, id: &str, bound: Duration) {
        let mut properties = Map::new();
        properties.insert("id".into(), id.into());
        match self.call("unregister_node", properties, bound).await {
            Ok(reply) => {
                tracing::debug!(master = %self.master, "unregister_node: {}", reply["status"])
            }
            Err(e) => tracing::warn!(master = %self.master, "unregister_node: {e}"),
        }
    }

    /// One request and its reply within `timeout`; a timeout drops the socket.
    async fn call(
        &mut self,
        command: &str,
        properties: Map<String, Value>,
        timeout: Duration,
    ) -> Result<Value, String> {
        let mut request = Request::new(command, properties);
        request.id = Value::String(uuid::Uuid::new_v4().simple().to_string());
        if self.socket.is_none() {
            let socket = troupe::sockets::connect_control_async(&self.zmq, &self.master)
                .await
                .map_err(|e| format!("cannot connect: {e}"))?;
            self.socket = Some(socket);
        }
        let socket = self.socket.as_mut().expect("socket just made");
        match troupe::client::exchange(socket, request, timeout).await {
            Ok(reply) => Ok(reply),
            Err(e) => {
                // It may still hold the request or owe its reply.
                self.socket = None;
                Err(e.to_string())
            }
        }
    }
}

/// The controller's address, resolved afresh each time (it may move). Owned arguments: the
/// link holds ZeroMQ sockets, which are not `Sync`, so it must not be borrowed across this.
async fn resolve(host: String, port: u16) -> Result<IpAddr, String> {
    let mut addresses = tokio::net::lookup_host((host.as_str(), port))
        .await
        .map_err(|e| format!("cannot resolve {host}: {e}"))?;
    addresses
        .next()
        .map(|a: SocketAddr| a.ip())
        .ok_or_else(|| format!("{host} resolves to no address"))
}

/// `tcp://HOST:PORT` -> (HOST, PORT), brackets stripped from an IPv6 host.
fn split_endpoint(endpoint: &str) -> anyhow::Result<(String, u16)> {
    let parsed = troupe::endpoint::Endpoint::parse(endpoint)
        .map_err(|e| anyhow::anyhow!("master {endpoint:?}: expected tcp://HOST:PORT: {e}"))?;
    Ok((parsed.host().to_string(), parsed.port()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn master_endpoints() {
        assert_eq!(
            split_endpoint("tcp://10.0.0.1:5558").unwrap(),
            ("10.0.0.1".into(), 5558)
        );
        assert_eq!(
            split_endpoint("tcp://[::1]:5558").unwrap(),
            ("::1".into(), 5558)
        );
        assert_eq!(
            split_endpoint("tcp://ctl.lan:1").unwrap(),
            ("ctl.lan".into(), 1)
        );
        for bad in ["tcp://host", "ipc:///x", "tcp://:5558", "tcp://h:port"] {
            assert!(split_endpoint(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_registration_advertises_the_route_to_the_master() {
        let identity = Identity {
            id: "id-1".into(),
            name: "n".into(),
            cluster: "c".into(),
            bind: Bind::Any,
            ports: [1, 2, 3],
        };
        let r = identity.registration("127.0.0.1".parse().unwrap()).unwrap();
        assert_eq!(r.endpoint, "tcp://127.0.0.1:1");
        assert_eq!(r.pubsub_endpoint, "tcp://127.0.0.1:2");
        assert_eq!(r.stats_endpoint, "tcp://127.0.0.1:3");
    }
}
