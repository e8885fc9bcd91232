//! Starting and stopping real `starling` processes.

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

/// A `starling` process serving on a free loopback port.
pub struct Relay {
    child: Child,
    /// `host:port` it listens on.
    pub addr: String,
    /// Its data directory.
    pub data: TempDir,
    log: PathBuf,
}

impl Relay {
    /// Starts a relay with a fresh data directory and extra command-line arguments.
    pub fn start(args: &[&str]) -> Self {
        Self::start_in(TempDir::new("relay"), args, &[])
    }

    /// Starts a relay on `data` with arguments (a subcommand may come first) and environment
    /// variables; `--bind` and `--data-dir` are added after them.
    pub fn start_in(data: TempDir, args: &[&str], env: &[(&str, &str)]) -> Self {
        let log = data.path().join("relay.log");
        let stderr = std::fs::File::create(&log).expect("create log file");
        let mut command = Command::new(env!("CARGO_BIN_EXE_starling"));
        command
            .args(args)
            .args(["--bind", "127.0.0.1:0", "--data-dir"])
            .arg(data.path().join("store"))
            .env_remove("STARLING_CONFIG")
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr);
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
            data,
            log,
        }
    }

    /// The WebSocket URL.
    pub fn url(&self) -> String {
        format!("ws://{}/", self.addr)
    }

    /// The HTTP base URL.
    pub fn http(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops the process at once (SIGKILL) and returns its data directory.
    pub fn kill(mut self) -> TempDir {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let data = std::mem::replace(&mut self.data, TempDir(PathBuf::new()));
        std::mem::forget(self);
        data
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
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
