//! A ZeroMQ ROUTER standing in for an agent in unit tests: requests are read and answered by
//! hand, so a test decides what is late, lost or answered on which connection.

use futures::{SinkExt, StreamExt};
use serde_json::Value;
use std::time::Duration;
use tmq::AsZmqSocket;

/// A context for fake agents to listen in, with its ZAP handler, as the agent's.
pub fn context() -> troupe::sockets::ServerContext {
    troupe::sockets::ServerContext::new(None).expect("a ZAP handler")
}

/// Binds a ROUTER at `endpoint` (`tcp://127.0.0.1:*` for a free port) and returns it with the
/// endpoint it got; a port just closed may take a moment to be free again.
pub async fn bind(
    zmq: &troupe::sockets::ServerContext,
    endpoint: &str,
) -> (tmq::router::Router, String) {
    for _ in 0..50 {
        if let Ok(control) = troupe::sockets::bind_control(zmq, endpoint, 1 << 20) {
            let bound = control
                .router
                .get_socket()
                .get_last_endpoint()
                .unwrap()
                .unwrap();
            // The guard must be read while its socket lives (ConnectionGuard): a task does.
            let mut connections = control.connections;
            tokio::spawn(async move {
                loop {
                    troupe::connections::watch(&mut connections).await;
                }
            });
            return (control.router, bound);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("cannot bind {endpoint}");
}

/// The next request: (connection identity, request id, command).
pub async fn next_request(router: &mut tmq::router::Router) -> (Vec<u8>, Value, String) {
    let message = tokio::time::timeout(Duration::from_secs(5), router.next())
        .await
        .expect("a request within 5 s")
        .expect("the socket is open")
        .expect("a message");
    let frames: Vec<Vec<u8>> = message.iter().map(|f| f.to_vec()).collect();
    let body: Value = serde_json::from_slice(frames.last().unwrap()).unwrap();
    (
        frames[0].clone(),
        body["id"].clone(),
        body["command"].as_str().unwrap().to_string(),
    )
}

/// Sends `reply` on the connection `identity`.
pub async fn reply(router: &mut tmq::router::Router, identity: &[u8], reply: &Value) {
    let frames = vec![identity.to_vec(), reply.to_string().into_bytes()];
    router.send(tmq::Multipart::from(frames)).await.unwrap();
}
