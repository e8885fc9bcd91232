//! Starting and stopping real `starling` processes.

use super::postgres::TestDatabase;
use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::atomic::{AtomicU32, Ordering},
};

/// A directory under the system temp dir, removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    /// A new empty directory named after `label`.
    pub fn new(label: &str) -> Self {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let path =
            std::env::temp_dir().join(format!("starling-test-{}-{n}-{label}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create temp dir");
        Self(path)
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Which store the relays a test starts use; set per test by `on_every_store!`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// The embedded SQLite store in the data directory.
    Sqlite,
    /// A PostgreSQL database of the test's own.
    Postgres,
}

tokio::task_local! {
    /// The backend of the running test (SQLite when unset).
    pub static BACKEND: Backend;
}

/// Where a relay keeps its events: its data directory and, on PostgreSQL, its database.
pub struct Storage {
    /// The data directory (logs, and the SQLite file).
    pub dir: TempDir,
    /// The test's own PostgreSQL database.
    pub database: Option<TestDatabase>,
}

impl Storage {
    /// Fresh storage for the running test's backend.
    pub fn new(dir: TempDir) -> Self {
        let database = match BACKEND.try_with(|b| *b).unwrap_or(Backend::Sqlite) {
            Backend::Sqlite => None,
            Backend::Postgres => Some(super::postgres::database()),
        };
        Self { dir, database }
    }

    /// How many stored rows have this event id, read directly from the database.
    pub fn rows_with_id(&self, id: &[u8; 32]) -> i64 {
        match &self.database {
            None => {
                let db = self.dir.path().join("store").join("starling.sqlite3");
                let conn = rusqlite::Connection::open_with_flags(
                    db,
                    rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
                )
                .expect("open the SQLite store");
                conn.query_row(
                    "SELECT COUNT(*) FROM events WHERE id = ?1",
                    [&id[..]],
                    |r| r.get(0),
                )
                .expect("count rows")
            }
            Some(database) => {
                database.query_count("SELECT count(*) FROM events WHERE id = $1", id.to_vec())
            }
        }
    }
}

/// A `starling` process serving on a free loopback port.
pub struct Relay {
    child: Child,
    /// `host:port` it listens on.
    pub addr: String,
    /// Its data directory and database.
    pub storage: Storage,
    log: PathBuf,
}

impl Relay {
    /// Starts a relay with a fresh data directory and extra command-line arguments.
    pub fn start(args: &[&str]) -> Self {
        Self::start_in(TempDir::new("relay"), args, &[])
    }

    /// Starts a relay with fresh storage in `dir`.
    pub fn start_in(dir: TempDir, args: &[&str], env: &[(&str, &str)]) -> Self {
        Self::start_on(Storage::new(dir), args, env)
    }

    /// Starts a relay on `data` with arguments (a subcommand may come first) and environment
    /// variables; `--bind` and `--data-dir` are added after them.
    pub fn start_on(storage: Storage, args: &[&str], env: &[(&str, &str)]) -> Self {
        Self::launch(storage, args, env, None, "127.0.0.1:0".into())
    }

    /// Starts a relay like [`Relay::start_on`], listening on loopback port `port` (to start
    /// it again where a balancer expects it).
    pub fn start_on_port(storage: Storage, args: &[&str], env: &[(&str, &str)], port: u16) -> Self {
        Self::launch(storage, args, env, None, format!("127.0.0.1:{port}"))
    }

    /// Starts a relay like [`Relay::start_on`], inside network namespace `namespace`,
    /// listening on its address `ip` there.
    pub fn start_in_namespace(
        storage: Storage,
        args: &[&str],
        env: &[(&str, &str)],
        namespace: &str,
        ip: std::net::Ipv4Addr,
    ) -> Self {
        Self::launch(storage, args, env, Some(namespace), format!("{ip}:0"))
    }

    fn launch(
        storage: Storage,
        args: &[&str],
        env: &[(&str, &str)],
        namespace: Option<&str>,
        bind: String,
    ) -> Self {
        let log = storage.dir.path().join("relay.log");
        let stderr = std::fs::File::create(&log).expect("create log file");
        let mut command = match namespace {
            None => Command::new(env!("CARGO_BIN_EXE_starling")),
            Some(name) => {
                let mut command = Command::new("ip");
                command
                    .args(["netns", "exec", name])
                    .arg(env!("CARGO_BIN_EXE_starling"));
                command
            }
        };
        command
            .args(args)
            .args(["--bind", &bind, "--data-dir"])
            .arg(storage.dir.path().join("store"))
            .env_remove("STARLING_CONFIG")
            .env("RUST_LOG", log_level())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr);
        command.env_remove("DATABASE_URL");
        if let Some(database) = &storage.database {
            command.env("DATABASE_URL", &database.url);
        }
        for (key, value) in env {
            command.env(key, value);
        }
        let mut child = command.spawn().expect("start starling");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read starling's first line");
        let addr = match line.trim().strip_prefix("listening on ws://") {
            Some(addr) => addr.to_string(),
            None => {
                let _ = child.kill();
                let log = std::fs::read_to_string(&log).unwrap_or_default();
                panic!("starling did not start: {line:?}\n{log}");
            }
        };
        Relay {
            child,
            addr,
            storage,
            log,
        }
    }

    /// Runs `starling` with `args` and expects it to refuse to start; returns what it said.
    pub fn refused_at_start(args: &[&str]) -> String {
        let dir = TempDir::new("refused");
        let mut child = Command::new(env!("CARGO_BIN_EXE_starling"))
            .args(args)
            .args(["--bind", "127.0.0.1:0", "--data-dir"])
            .arg(dir.path())
            .env_remove("DATABASE_URL")
            .env_remove("REDIS_URL")
            .env("RUST_LOG", log_level())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start starling");
        let started = std::time::Instant::now();
        let status = loop {
            if let Some(status) = child.try_wait().expect("wait for starling") {
                break status;
            }
            if started.elapsed() > super::DEADLINE {
                let _ = child.kill();
                panic!("starling {args:?} started instead of refusing");
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        };
        let output = child.wait_with_output().expect("starling's output");
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        assert!(!status.success(), "starling {args:?} exited well: {stderr}");
        stderr
    }

    /// The WebSocket URL.
    pub fn url(&self) -> String {
        format!("ws://{}/", self.addr)
    }

    /// Asks the process to stop gracefully (SIGTERM).
    pub fn terminate(&self) {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
    }

    /// Waits for the process to exit; returns how, and its storage, to start it again.
    pub fn wait_for_exit(mut self) -> (std::process::ExitStatus, Storage) {
        let started = std::time::Instant::now();
        let status = loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                break status;
            }
            assert!(started.elapsed() < super::DEADLINE, "starling did not exit");
            std::thread::sleep(std::time::Duration::from_millis(20));
        };
        let empty = Storage {
            dir: TempDir(PathBuf::new()),
            database: None,
        };
        let storage = std::mem::replace(&mut self.storage, empty);
        drop(self);
        (status, storage)
    }

    /// Stops the process at once (SIGKILL) and returns its storage, to start it again.
    pub fn kill(mut self) -> Storage {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let empty = Storage {
            dir: TempDir(PathBuf::new()),
            database: None,
        };
        let storage = std::mem::replace(&mut self.storage, empty);
        drop(self);
        storage
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            eprintln!("--- starling log ({}) ---\n{log}", self.addr);
        }
    }
}

/// The relays' log level: `warn`, or what `STARLING_TEST_LOG` says (to see more of a failing
/// test's relays, e.g. `STARLING_TEST_LOG=debug`).
fn log_level() -> String {
    std::env::var("STARLING_TEST_LOG").unwrap_or_else(|_| "warn".to_string())
}
