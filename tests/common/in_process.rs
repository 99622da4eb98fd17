//! A server run inside the test process, for the client-library tests.

use std::net::SocketAddr;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bankcache::{Config, Server, ShutdownHandle};

/// A server on its own thread, stopped (gracefully) when dropped.
pub struct InProcess {
    /// The JSON port.
    pub addr: SocketAddr,
    /// The HTTP port, when asked for.
    pub http: Option<SocketAddr>,
    handle: ShutdownHandle,
    thread: Option<JoinHandle<()>>,
}

impl InProcess {
    /// A memory-only server on a free port, without an HTTP port.
    pub fn start() -> InProcess {
        InProcess::start_on("127.0.0.1:0", false)
    }

    /// A server listening on `listen` (a port another server had a moment ago is fine: binding is retried
    /// for a while), with an HTTP port on a free port if `http`.
    pub fn start_on(listen: &str, http: bool) -> InProcess {
        let http_listen = http.then(|| "127.0.0.1:0".to_string());
        InProcess::start_with(Config { listen: listen.into(), http_listen, ..Config::default() })
    }

    /// A server of `config` (memory-only unless it says otherwise: `Config::default()` has no data_dir).
    pub fn start_with(config: Config) -> InProcess {
        let listen = config.listen.clone();
        let deadline = Instant::now() + Duration::from_secs(10);
        let server = loop {
            match Server::bind(config.clone()) {
                Ok(server) => break server,
                Err(e) if Instant::now() < deadline => {
                    eprintln!("bind {listen}: {e}; retrying");
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(e) => panic!("bind {listen}: {e}"),
            }
        };
        let (addr, http) = (server.json_addr(), server.http_addr());
        let handle = server.shutdown_handle();
        let thread = std::thread::spawn(move || server.run().expect("server run"));
        InProcess { addr, http, handle, thread: Some(thread) }
    }
}

impl Drop for InProcess {
    fn drop(&mut self) {
        self.handle.shutdown();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
