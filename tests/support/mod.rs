//! What every end-to-end test needs: a real `starling` process on a free port with its own
//! data directory, and a WebSocket client that speaks Nostr with deadlines.

#![allow(dead_code)]

pub mod client;
pub mod http;
pub mod postgres;
pub mod redis;
pub mod relay;

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
