//! Rate limits shared by every node of a cluster.
//!
//! Two kinds of limit, both decided atomically where the counts live (a Lua script in
//! Redis, or a lock in memory for a single node):
//! - fixed-window counters: at most `limit` hits of a key per window (events per minute per
//!   IP or per pubkey); a key's window opens with its first hit and lasts `window`, then the
//!   next hit opens a new one;
//! - slots: at most `limit` holders of a key at once (connections per IP). A holder must
//!   refresh its slot; a slot not refreshed within its time to live lapses, so the slots of
//!   a node that died free themselves.
//!
//! When Redis cannot be reached the limits let everything through: a relay without its
//! limiter keeps serving.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use futures_util::{FutureExt, future::BoxFuture};
use redis::{Script, aio::MultiplexedConnection};

use crate::RedisEndpoint;

/// Cluster-wide counters and slots.
pub trait Limiter: Send + Sync + 'static {
    /// Counts one hit on `key`; true while the window holds at most `limit` hits.
    fn hit(&self, key: &str, limit: u64, window: Duration) -> BoxFuture<'static, bool>;

    /// Takes (or refreshes) slot `holder` of `key` for `ttl`; false when `limit` other
    /// holders have live slots.
    fn acquire(
        &self,
        key: &str,
        holder: &str,
        limit: u64,
        ttl: Duration,
    ) -> BoxFuture<'static, bool>;

    /// Gives slot `holder` of `key` back.
    fn release(&self, key: &str, holder: &str);
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// One key's open window: when it ends (ms) and the hits counted in it.
type Window = (i64, u64);

/// Windows kept before the ended ones are swept out.
const SWEEP_AT: usize = 4096;

/// Limits for a node on its own, kept in memory.
pub struct LocalLimiter {
    /// The open window of each (window length in ms, key).
    counters: Mutex<Counters>,
    slots: Mutex<HashMap<String, HashMap<String, i64>>>,
    /// Milliseconds since the Unix epoch (a fixed clock in unit tests).
    clock: fn() -> i64,
}

/// The windows of the counters, and the count at which ended ones are next swept out.
struct Counters {
    windows: HashMap<(i64, String), Window>,
    sweep_at: usize,
}

impl Default for LocalLimiter {
    fn default() -> Self {
        Self::with_clock(now_ms)
    }
}

impl LocalLimiter {
    fn with_clock(clock: fn() -> i64) -> Self {
        Self {
            counters: Mutex::new(Counters {
                windows: HashMap::new(),
                sweep_at: SWEEP_AT,
            }),
            slots: Mutex::new(HashMap::new()),
            clock,
        }
    }
}

impl Limiter for LocalLimiter {
    fn hit(&self, key: &str, limit: u64, window: Duration) -> BoxFuture<'static, bool> {
        let window_ms = window.as_millis().max(1) as i64;
        let now = (self.clock)();
        let mut counters = self.counters.lock().unwrap_or_else(|p| p.into_inner());
        if counters.windows.len() >= counters.sweep_at {
            counters.windows.retain(|_, (ends, _)| *ends > now);
            counters.sweep_at = (counters.windows.len() * 2).max(SWEEP_AT);
        }
        let (ends, hits) = counters
            .windows
            .entry((window_ms, key.to_string()))
            .or_insert((now + window_ms, 0));
        if *ends <= now {
            *ends = now + window_ms;
            *hits = 0;
        }
        *hits += 1;
        let allowed = *hits <= limit;
        async move { allowed }.boxed()
    }

    fn acquire(
        &self,
        key: &str,
        holder: &str,
        limit: u64,
        ttl: Duration,
    ) -> BoxFuture<'static, bool> {
        let now = (self.clock)();
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        let holders = slots.entry(key.to_string()).or_default();
        holders.retain(|_, expires| *expires > now);
        let allowed = holders.contains_key(holder) || (holders.len() as u64) < limit;
        if allowed {
            holders.insert(holder.to_string(), now + ttl.as_millis() as i64);
        }
        async move { allowed }.boxed()
    }

    fn release(&self, key: &str, holder: &str) {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(holders) = slots.get_mut(key) {
            holders.remove(holder);
            if holders.is_empty() {
                slots.remove(key);
            }
        }
    }
}

/// INCR a key's counter, opening its window (the key's expiry) on the first hit; returns
/// the count.
const HIT: &str = r"
local count = redis.call('INCR', KEYS[1])
if count == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
return count
";

/// Drop lapsed holders, then add or refresh this one if there is room; 1 if it holds a slot.
const ACQUIRE: &str = r"
local now, ttl, limit = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZSCORE', KEYS[1], ARGV[4]) or redis.call('ZCARD', KEYS[1]) < limit then
  redis.call('ZADD', KEYS[1], now + ttl, ARGV[4])
  redis.call('PEXPIRE', KEYS[1], ttl)
  return 1
end
return 0
";

/// Limits kept in Redis under `{cluster}:limit:…`, shared by every node of the cluster.
pub struct RedisLimiter {
    prefix: Arc<str>,
    connection: Arc<SharedConnection>,
    hit: Arc<Script>,
    acquire: Arc<Script>,
}

/// How long after a failed attempt to connect the limits let everything through without
/// trying again.
const RETRY_AFTER: Duration = Duration::from_secs(5);

/// The limiter's one connection, made on first use and made again (to the master of the
/// moment, behind Sentinel) after a command on it failed. Its lock is held for a few
/// instructions, never while connecting: while one call connects (up to twice the Redis
/// timeout when Redis is down), the others let their traffic through at once, as they do
/// while Redis is unreachable.
struct SharedConnection {
    endpoint: RedisEndpoint,
    state: Mutex<ConnectionState>,
}

#[derive(Default)]
struct ConnectionState {
    connection: Option<MultiplexedConnection>,
    failed_at: Option<Instant>,
    /// A call is connecting now.
    connecting: bool,
}

/// Clears [`ConnectionState::connecting`] however the connecting call ends (dropped
/// futures included), so that a later call tries again.
struct Connecting<'a>(&'a Mutex<ConnectionState>);

impl Drop for Connecting<'_> {
    fn drop(&mut self) {
        lock(self.0).connecting = false;
    }
}

fn lock(state: &Mutex<ConnectionState>) -> std::sync::MutexGuard<'_, ConnectionState> {
    state.lock().unwrap_or_else(|p| p.into_inner())
}

impl SharedConnection {
    /// The connection, or `None` while Redis cannot be reached or another call is
    /// connecting.
    async fn get(&self) -> Option<MultiplexedConnection> {
        {
            let mut state = lock(&self.state);
            if let Some(connection) = &state.connection {
                return Some(connection.clone());
            }
            let failed_lately = state.failed_at.is_some_and(|at| at.elapsed() < RETRY_AFTER);
            if state.connecting || failed_lately {
                return None;
            }
            state.connecting = true;
        }
        let _connecting = Connecting(&self.state);
        let connected = self.endpoint.connect().await;
        let mut state = lock(&self.state);
        match connected {
            Ok(connection) => {
                state.connection = Some(connection.clone());
                state.failed_at = None;
                Some(connection)
            }
            Err(_) => {
                state.failed_at = Some(Instant::now());
                None
            }
        }
    }

    /// Drops the connection after a command on it failed.
    fn forget(&self) {
        lock(&self.state).connection = None;
    }
}

impl RedisLimiter {
    /// A limiter for cluster `cluster` on the Redis `endpoint` names; connects on first use.
    pub fn new(endpoint: RedisEndpoint, cluster: &str) -> Self {
        Self {
            prefix: format!("{cluster}:limit:").into(),
            connection: Arc::new(SharedConnection {
                endpoint,
                state: Default::default(),
            }),
            hit: Arc::new(Script::new(HIT)),
            acquire: Arc::new(Script::new(ACQUIRE)),
        }
    }
}

impl Limiter for RedisLimiter {
    fn hit(&self, key: &str, limit: u64, window: Duration) -> BoxFuture<'static, bool> {
        let window_ms = window.as_millis().max(1) as i64;
        let key = format!("{}hit:{window_ms}:{key}", self.prefix);
        let (script, shared) = (Arc::clone(&self.hit), Arc::clone(&self.connection));
        async move {
            let Some(mut conn) = shared.get().await else {
                return true;
            };
            let count: redis::RedisResult<u64> =
                script.key(key).arg(window_ms).invoke_async(&mut conn).await;
            match count {
                Ok(count) => count <= limit,
                Err(_) => {
                    shared.forget();
                    true
                }
            }
        }
        .boxed()
    }

    fn acquire(
        &self,
        key: &str,
        holder: &str,
        limit: u64,
        ttl: Duration,
    ) -> BoxFuture<'static, bool> {
        let key = format!("{}slots:{key}", self.prefix);
        let holder = holder.to_string();
        let (script, shared) = (Arc::clone(&self.acquire), Arc::clone(&self.connection));
        async move {
            let Some(mut conn) = shared.get().await else {
                return true;
            };
            let held: redis::RedisResult<i64> = script
                .key(key)
                .arg(now_ms())
                .arg(ttl.as_millis() as i64)
                .arg(limit)
                .arg(holder)
                .invoke_async(&mut conn)
                .await;
            match held {
                Ok(held) => held == 1,
                Err(_) => {
                    shared.forget();
                    true
                }
            }
        }
        .boxed()
    }

    fn release(&self, key: &str, holder: &str) {
        let key = format!("{}slots:{key}", self.prefix);
        let (holder, shared) = (holder.to_string(), Arc::clone(&self.connection));
        // Called from `Drop`s too: without a runtime the slot lapses by itself.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        runtime.spawn(async move {
            if let Some(mut conn) = shared.get().await {
                let _: redis::RedisResult<i64> = redis::cmd("ZREM")
                    .arg(key)
                    .arg(holder)
                    .query_async(&mut conn)
                    .await;
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicI64, Ordering};

    use super::*;

    /// The clocks of the unit tests (one each, as tests run at once), in milliseconds.
    static NOW: AtomicI64 = AtomicI64::new(1_000_000);
    static SWEEP_NOW: AtomicI64 = AtomicI64::new(1_000_000);

    fn test_clock() -> i64 {
        NOW.load(Ordering::Relaxed)
    }

    fn sweep_clock() -> i64 {
        SWEEP_NOW.load(Ordering::Relaxed)
    }

    #[tokio::test]
    async fn local_counters_and_slots_hold_their_limits() {
        let limiter = LocalLimiter::with_clock(test_clock);
        let minute = Duration::from_secs(60);
        assert!(limiter.hit("k", 2, minute).await);
        NOW.fetch_add(59_000, Ordering::Relaxed);
        assert!(limiter.hit("k", 2, minute).await);
        assert!(!limiter.hit("k", 2, minute).await);
        assert!(limiter.hit("other", 2, minute).await);
        NOW.fetch_add(1_000, Ordering::Relaxed);
        assert!(
            limiter.hit("k", 2, minute).await,
            "a window lasts a minute from its first hit"
        );
        assert!(limiter.acquire("ip", "a", 2, minute).await);
        assert!(limiter.acquire("ip", "b", 2, minute).await);
        assert!(!limiter.acquire("ip", "c", 2, minute).await);
        assert!(
            limiter.acquire("ip", "a", 2, minute).await,
            "a holder refreshes its slot"
        );
        limiter.release("ip", "a");
        assert!(limiter.acquire("ip", "c", 2, minute).await);
        assert!(
            limiter
                .acquire("lapsing", "x", 1, Duration::from_millis(1))
                .await
        );
        NOW.fetch_add(5, Ordering::Relaxed);
        assert!(
            limiter.acquire("lapsing", "y", 1, minute).await,
            "a lapsed slot is free"
        );
    }

    /// A Redis that takes its connection and never answers: while one call waits for it,
    /// the others are not held up (they let their traffic through).
    #[tokio::test]
    async fn a_connection_being_made_holds_up_no_other_call() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("redis://{}/", listener.local_addr().unwrap());
        let endpoint = RedisEndpoint::new(&crate::RedisSettings {
            url,
            ..Default::default()
        })
        .unwrap();
        let limiter = RedisLimiter::new(endpoint, "test");
        let minute = Duration::from_secs(60);
        let first = tokio::spawn(limiter.hit("k", 1, minute));
        let (_silent, _) = listener.accept().await.unwrap();
        assert!(
            limiter.hit("k", 1, minute).await,
            "let through while connecting"
        );
        assert!(!first.is_finished(), "the first call is still connecting");
        assert!(first.await.unwrap(), "let through once connecting failed");
    }

    #[tokio::test]
    async fn ended_windows_are_swept_out() {
        let limiter = LocalLimiter::with_clock(sweep_clock);
        let second = Duration::from_secs(1);
        for n in 0..SWEEP_AT * 3 {
            assert!(limiter.hit(&format!("k{n}"), 1, second).await);
            if n % 100 == 0 {
                SWEEP_NOW.fetch_add(2_000, Ordering::Relaxed);
            }
        }
        let kept = limiter.counters.lock().unwrap().windows.len();
        assert!(kept < SWEEP_AT * 2, "{kept} windows kept");
    }
}
