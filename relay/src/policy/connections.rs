//! Connections per client address, across the cluster: each connection holds a lease on one
//! of its address's places from the WebSocket upgrade to its end.
//!
//! Leases are kept by the cluster's [`Limiter`] and must be refreshed: the connection
//! refreshes its lease at every ping, and a lease not refreshed for
//! [`LEASE_LIFETIME_IN_PINGS`] ping intervals lapses, so the places of a node that died free
//! themselves. A lease is given back when it is dropped, however its connection ended (or
//! failed to start).

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use futures_util::future::BoxFuture;
use starling_cluster::Limiter;

use crate::{config::Config, fair::ClientAddress};

/// How long a lease lasts unless refreshed, in ping intervals.
pub const LEASE_LIFETIME_IN_PINGS: u32 = 3;

/// One of the places a client address may hold at once.
pub struct AddressLease {
    limiter: Arc<dyn Limiter>,
    key: String,
    holder: String,
    limit: u64,
    ttl: Duration,
}

impl AddressLease {
    /// Takes a lease for a connection of node `node_id` from `address`: `Ok(None)` when
    /// connections per address are not limited, `Err(limit)` when the address holds every
    /// place it may.
    pub async fn take(
        limiter: &Arc<dyn Limiter>,
        config: &Config,
        node_id: &str,
        address: &ClientAddress,
    ) -> Result<Option<Self>, u64> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let limit = config.max_connections_per_ip;
        if limit == 0 {
            return Ok(None);
        }
        let lease = Self {
            limiter: Arc::clone(limiter),
            key: format!("connections:{address}"),
            holder: format!("{node_id}#{}", NEXT.fetch_add(1, Ordering::Relaxed)),
            limit,
            ttl: Duration::from_secs(config.ping_interval_seconds.max(1)) * LEASE_LIFETIME_IN_PINGS,
        };
        if lease.refresh().await {
            Ok(Some(lease))
        } else {
            Err(limit)
        }
    }

    /// Renews the lease for another lifetime; resolves to whether it is still held.
    pub fn refresh(&self) -> BoxFuture<'static, bool> {
        self.limiter
            .acquire(&self.key, &self.holder, self.limit, self.ttl)
    }
}

impl Drop for AddressLease {
    /// Gives the lease back.
    fn drop(&mut self) {
        self.limiter.release(&self.key, &self.holder);
    }
}
