//! Redis for tests. `REDIS_URL`, when set, names a server to use; otherwise the suite starts
//! a throwaway `redis-server` on a free port, once per test process. Clusters of different
//! tests stay apart by using cluster names of their own (`--cluster`).
//!
//! Where `redis-server` is missing, it is installed with apt-get when running as root;
//! otherwise the suite fails naming the package to install.

use std::{
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::{
        OnceLock,
        atomic::{AtomicU32, Ordering},
    },
    time::{Duration, Instant},
};

use super::{
    DEADLINE,
    postgres::{free_port, spawn_tied_to_this_process},
};

/// A Redis server for tests.
pub struct RedisServer {
    port: u16,
    url: String,
    process: Option<Child>,
    /// The certificates directory of a TLS-only server.
    tls: Option<PathBuf>,
}

/// The server shared by every test of this process.
pub fn shared() -> &'static RedisServer {
    static SHARED: OnceLock<RedisServer> = OnceLock::new();
    SHARED.get_or_init(|| match std::env::var("REDIS_URL") {
        Ok(url) if !url.is_empty() => RedisServer {
            port: 0,
            url,
            process: None,
            tls: None,
        },
        _ => RedisServer::throwaway(),
    })
}

/// A cluster name no other test uses.
pub fn unique_cluster() -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    format!(
        "test-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

impl RedisServer {
    /// Starts a private throwaway server, for tests that stop and start it.
    pub fn throwaway() -> Self {
        let port = free_port();
        let mut server = RedisServer {
            port,
            url: format!("redis://127.0.0.1:{port}/"),
            process: None,
            tls: None,
        };
        server.start();
        server
    }

    /// Starts a throwaway server that speaks TLS only, with `server.crt` and `server.key` of
    /// `certificates` (made for the name `localhost`), requiring a client certificate signed
    /// by its `ca.crt`. Its URL is `rediss://localhost:port/`.
    pub fn throwaway_tls(certificates: &std::path::Path) -> Self {
        let port = free_port();
        let mut server = RedisServer {
            port,
            url: format!("rediss://localhost:{port}/"),
            process: None,
            tls: Some(certificates.to_path_buf()),
        };
        server.start();
        server
    }

    /// Its port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The URL to give `starling`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Starts (or restarts) the throwaway server and waits until it answers.
    pub fn start(&mut self) {
        let mut command = Command::new(binary());
        let port = self.port.to_string();
        match &self.tls {
            None => command.args(["--port", &port]),
            Some(certificates) => command
                .args([
                    "--port",
                    "0",
                    "--tls-port",
                    &port,
                    "--tls-auth-clients",
                    "yes",
                ])
                .arg("--tls-cert-file")
                .arg(certificates.join("server.crt"))
                .arg("--tls-key-file")
                .arg(certificates.join("server.key"))
                .arg("--tls-ca-cert-file")
                .arg(certificates.join("ca.crt")),
        };
        command
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        self.process = Some(spawn_tied_to_this_process(command));
        let started = Instant::now();
        while !self.ping() {
            assert!(
                started.elapsed() < DEADLINE,
                "the throwaway redis-server did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops the throwaway server at once.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.process.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn ping(&self) -> bool {
        use std::io::{Read, Write};
        if self.tls.is_some() {
            return std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok();
        }
        let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let mut reply = [0u8; 7];
        stream.write_all(b"PING\r\n").is_ok()
            && stream.read_exact(&mut reply).is_ok()
            && &reply == b"+PONG\r\n"
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The `redis-server` binary, installing the Debian package if needed.
fn binary() -> PathBuf {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY
        .get_or_init(|| {
            let find = || {
                [
                    "/usr/bin/redis-server",
                    "/usr/local/bin/redis-server",
                    "/usr/sbin/redis-server",
                ]
                .iter()
                .map(PathBuf::from)
                .find(|p| p.exists())
            };
            if let Some(path) = find() {
                return path;
            }
            super::install_debian_package("redis-server");
            find().expect(
                "redis-server not found: install the Debian package `redis-server` \
                 (apt-get install redis-server) or set REDIS_URL to a server to use",
            )
        })
        .clone()
}
