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
    /// The port of the master this server replicates.
    replica_of: Option<u16>,
    /// The login it requires, and gives its master (`masterauth`).
    password: Option<Login<'static>>,
}

/// A login a test server requires: a password (`requirepass`: the `default` user's), or
/// an ACL user of its own with its password (the `default` user then off).
#[derive(Clone, Copy)]
pub struct Login<'a> {
    /// The ACL user; `None` for `requirepass`.
    pub user: Option<&'a str>,
    /// The password.
    pub password: &'a str,
}

impl Login<'_> {
    /// The inline `AUTH` command for it.
    fn auth(&self) -> String {
        match self.user {
            Some(user) => format!("AUTH {user} {}\r\n", self.password),
            None => format!("AUTH {}\r\n", self.password),
        }
    }

    /// The configuration lines that require it (in sentinel.conf, or as arguments).
    fn config(&self) -> Vec<String> {
        match self.user {
            Some(user) => vec![
                format!("user {user} on >{} ~* &* +@all", self.password),
                "user default off".to_string(),
            ],
            None => vec![format!("requirepass {}", self.password)],
        }
    }

    /// The same, kept for the rest of the test process.
    fn owned(&self) -> Login<'static> {
        Login {
            user: self
                .user
                .map(|u| &*Box::leak(u.to_string().into_boxed_str())),
            password: Box::leak(self.password.to_string().into_boxed_str()),
        }
    }
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
            replica_of: None,
            password: None,
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
        Self::throwaway_with_login(None)
    }

    /// Starts a private throwaway server that requires `login`.
    fn throwaway_with_login(login: Option<Login>) -> Self {
        let port = free_port();
        let mut server = RedisServer {
            port,
            url: format!("redis://127.0.0.1:{port}/"),
            process: None,
            tls: None,
            replica_of: None,
            password: login.map(|l| l.owned()),
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
            replica_of: None,
            password: None,
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
        if let Some(master) = self.replica_of {
            command.args(["--replicaof", "127.0.0.1", &master.to_string()]);
        }
        if let Some(login) = &self.password {
            for line in login.config() {
                let mut words = line.split(' ');
                command.arg(format!("--{}", words.next().unwrap_or_default()));
                command.args(words);
            }
            command.args(["--masterauth", login.password]);
            if let Some(user) = login.user {
                command.args(["--masteruser", user]);
            }
        }
        command
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            // A replica writes the master's snapshot to its directory.
            .arg("--dbfilename")
            .arg(format!("starling-test-redis-{port}.rdb"))
            .current_dir(std::env::temp_dir())
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
        let (auth, expected) = match &self.password {
            Some(login) => (login.auth(), "+OK\r\n+PONG\r\n"),
            None => (String::new(), "+PONG\r\n"),
        };
        let mut reply = vec![0u8; expected.len()];
        stream
            .write_all(format!("{auth}PING\r\n").as_bytes())
            .is_ok()
            && stream.read_exact(&mut reply).is_ok()
            && reply == expected.as_bytes()
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

/// A Redis master, a replica of it, and one `redis-sentinel` watching them (quorum 1,
/// a master counted down after 1 s), each a throwaway process.
pub struct SentinelGroup {
    /// The first master; kill it to make Sentinel promote the replica.
    pub master: RedisServer,
    /// The replica Sentinel promotes.
    pub replica: RedisServer,
    sentinel: Child,
    sentinel_port: u16,
    /// The sentinel's own login.
    sentinel_login: Option<Login<'static>>,
    _dir: super::TempDir,
}

/// Logins a [`SentinelGroup`] requires.
#[derive(Default)]
pub struct SentinelLogins<'a> {
    /// The master's and the replica's (Sentinel's `auth-user` and `auth-pass`).
    pub redis: Option<Login<'a>>,
    /// The sentinel's own (in sentinel.conf).
    pub sentinel: Option<Login<'a>>,
}

/// The master's name in Sentinel.
pub const SENTINEL_MASTER: &str = "starling";

impl SentinelGroup {
    /// Starts the three and waits until Sentinel knows the replica.
    pub fn start() -> Self {
        Self::start_with(SentinelLogins::default())
    }

    /// Starts the three, each requiring the logins given, and waits until Sentinel knows
    /// the replica.
    pub fn start_with(logins: SentinelLogins) -> Self {
        let master = RedisServer::throwaway_with_login(logins.redis);
        let mut replica = RedisServer {
            port: free_port(),
            url: String::new(),
            process: None,
            tls: None,
            replica_of: None,
            password: logins.redis.map(|l| l.owned()),
        };
        replica.url = format!("redis://127.0.0.1:{}/", replica.port);
        replica.replica_of = Some(master.port);
        replica.start();
        let dir = super::TempDir::new("sentinel");
        let sentinel_port = free_port();
        let config = dir.path().join("sentinel.conf");
        let mut lines = format!(
            "port {sentinel_port}\nbind 127.0.0.1\n\
             sentinel monitor {SENTINEL_MASTER} 127.0.0.1 {} 1\n\
             sentinel down-after-milliseconds {SENTINEL_MASTER} 1000\n\
             sentinel failover-timeout {SENTINEL_MASTER} 5000\n",
            master.port
        );
        if let Some(login) = logins.redis {
            lines.push_str(&format!(
                "sentinel auth-pass {SENTINEL_MASTER} {}\n",
                login.password
            ));
            if let Some(user) = login.user {
                lines.push_str(&format!("sentinel auth-user {SENTINEL_MASTER} {user}\n"));
            }
        }
        for line in logins.sentinel.iter().flat_map(Login::config) {
            lines.push_str(&line);
            lines.push('\n');
        }
        std::fs::write(&config, lines).expect("write sentinel.conf");
        let log = dir.path().join("sentinel.log");
        let mut command = Command::new(super::debian_binary("redis-sentinel", "redis-sentinel"));
        command
            .arg(&config)
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log).expect("sentinel log"))
            .stderr(Stdio::null());
        let sentinel = spawn_tied_to_this_process(command);
        let mut group = Self {
            master,
            replica,
            sentinel,
            sentinel_port,
            sentinel_login: logins.sentinel.map(|l| l.owned()),
            _dir: dir,
        };
        let started = Instant::now();
        while !group.sentinel_knows_a_replica() {
            if let Ok(Some(status)) = group.sentinel.try_wait() {
                panic!("redis-sentinel exited: {status}");
            }
            assert!(
                started.elapsed() < DEADLINE,
                "Sentinel did not find the replica"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        group
    }

    /// `redis+sentinel://127.0.0.1:port/starling`, without credentials.
    pub fn url(&self) -> String {
        format!(
            "redis+sentinel://127.0.0.1:{}/{SENTINEL_MASTER}",
            self.sentinel_port
        )
    }

    /// The port of the master Sentinel names now.
    pub fn master_port(&self) -> Option<u16> {
        let reply = self.sentinel_command(&format!(
            "SENTINEL get-master-addr-by-name {SENTINEL_MASTER}"
        ))?;
        reply
            .lines()
            .filter(|l| !l.starts_with(['*', '$']))
            .nth(1)?
            .parse()
            .ok()
    }

    fn sentinel_knows_a_replica(&self) -> bool {
        self.sentinel_command(&format!("SENTINEL replicas {SENTINEL_MASTER}"))
            .is_some_and(|reply| reply.contains(&self.replica.port.to_string()))
    }

    /// Sends one inline command to the sentinel; its raw reply.
    fn sentinel_command(&self, command: &str) -> Option<String> {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", self.sentinel_port)).ok()?;
        stream
            .set_read_timeout(Some(Duration::from_millis(500)))
            .ok()?;
        let mut reply = vec![0u8; 16 * 1024];
        if let Some(login) = &self.sentinel_login {
            stream.write_all(login.auth().as_bytes()).ok()?;
            let mut ok = [0u8; 5];
            stream.read_exact(&mut ok).ok()?;
            if &ok != b"+OK\r\n" {
                return None;
            }
        }
        stream.write_all(format!("{command}\r\n").as_bytes()).ok()?;
        let n = stream.read(&mut reply).ok()?;
        Some(String::from_utf8_lossy(&reply[..n]).into_owned())
    }
}

impl Drop for SentinelGroup {
    fn drop(&mut self) {
        let _ = self.sentinel.kill();
        let _ = self.sentinel.wait();
    }
}
