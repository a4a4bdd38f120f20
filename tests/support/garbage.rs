//! A TCP server that is no Circus node: accepts, writes garbage, hangs up. What a probe
//! sweep meets on ports that some other program holds.

use std::io::Write;
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Stops on drop.
pub struct GarbageServer {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl GarbageServer {
    /// Listens on `address` in the test's own namespace.
    pub fn start(address: &str) -> GarbageServer {
        let listener = TcpListener::bind(address).unwrap_or_else(|e| {
            panic!("{address} is busy ({e}): the test's non-Circus listener needs it")
        });
        GarbageServer::on(listener)
    }

    /// Serves garbage on `listener` (bound in any namespace: see `Netns::run`).
    pub fn on(listener: TcpListener) -> GarbageServer {
        listener.set_nonblocking(true).expect("nonblocking");
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((mut stream, _)) => {
                        let _ = stream.write_all(
                            b"HTTP/1.0 400 Bad Request\r\n\r\n\xff\xfe garbage \x00\x01\x02\r\n",
                        );
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        GarbageServer {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for GarbageServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
