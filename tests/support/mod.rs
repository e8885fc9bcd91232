//! What every end-to-end test needs: a real `starling` process on a free port with its own
//! data directory, and a WebSocket client that speaks Nostr with deadlines.

pub mod client;
pub mod http;
pub mod netns;
pub mod nostr_tools;
pub mod npm;
pub mod pgbouncer;
pub mod postgres;
pub mod proxies;
pub mod python;
pub mod raw_ws;
pub mod redis;
pub mod relay;
pub mod table_lock;
pub mod tls;
pub mod ws_clients;

pub use client::Client;
pub use relay::{BACKEND, Backend, Relay, TempDir};

/// Defines a test that runs twice: on the embedded store and on PostgreSQL.
macro_rules! on_every_store {
    ($(async fn $name:ident() $body:block)*) => {$(
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            #[tokio::test]
            async fn sqlite() {
                crate::support::BACKEND.scope(crate::support::Backend::Sqlite, async $body).await
            }

            #[tokio::test]
            async fn postgres() {
                crate::support::BACKEND.scope(crate::support::Backend::Postgres, async $body).await
            }
        }
    )*};
}

use starling::nostr::{Event, Keys};

/// Longest any single wait in a test may take before the test fails.
pub const DEADLINE: std::time::Duration = std::time::Duration::from_secs(15);

/// Deterministic keys for test author number `n`.
pub fn keys(n: u8) -> Keys {
    Keys::from_secret([n.max(1); 32]).expect("valid secret")
}

/// A file of this repository, by its path from the repository's top.
pub fn repository_file(path: &str) -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(path)
}

/// Unix time now, in seconds.
pub fn now() -> u64 {
    starling::policy::now()
}

/// Builds a `["x", "y", ...]` tag list from string slices.
pub fn tags(list: &[&[&str]]) -> Vec<Vec<String>> {
    list.iter()
        .map(|t| t.iter().map(|s| s.to_string()).collect())
        .collect()
}

/// Signs a kind-1 note by author `n`.
pub fn note(n: u8, content: &str) -> Event {
    keys(n).sign(now(), 1, vec![], content)
}

/// Installs a Debian package with apt-get when running as root (one install at a time in
/// this process); returns whether it tried.
pub fn install_debian_package(package: &str) -> bool {
    static APT: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let root = unsafe { libc::getuid() } == 0;
    if !root || !std::path::Path::new("/usr/bin/apt-get").exists() {
        return false;
    }
    let _one_at_a_time = APT.lock().unwrap_or_else(|p| p.into_inner());
    eprintln!("{package} is not installed; installing the Debian package {package}");
    for args in [
        &["update", "-qq"][..],
        &["install", "-y", "-qq", package][..],
    ] {
        let status = std::process::Command::new("apt-get")
            .args(["-o", "DPkg::Lock::Timeout=600"])
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .expect("run apt-get");
        assert!(status.success(), "apt-get {args:?} failed");
    }
    true
}

/// The program `name` from Debian's package `package`, installing the package when it is
/// missing (as root); otherwise the test fails naming the package.
pub fn debian_binary(name: &str, package: &str) -> std::path::PathBuf {
    let find = || {
        ["/usr/sbin", "/usr/bin", "/usr/local/sbin", "/usr/local/bin"]
            .iter()
            .map(|dir| std::path::Path::new(dir).join(name))
            .find(|p| p.exists())
    };
    if let Some(path) = find() {
        return path;
    }
    install_debian_package(package);
    find().unwrap_or_else(|| {
        panic!(
            "{name} not found: install the Debian package `{package}` (apt-get install {package})"
        )
    })
}

/// Polls `check` until it returns `Some`, failing the test after [`DEADLINE`].
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = std::time::Instant::now();
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}
