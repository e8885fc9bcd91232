//! The rules a node applies now, kept current with the store.
//!
//! Every change made through the management API is stored with a new version and announced
//! on the bus; each node reloads when it hears of a version it does not have, when its bus
//! comes back (it may have missed announcements while away), and every
//! `policy_reload_seconds` in any case. A connection reads the current rules once per
//! decision, so a change applies to the next message of every connection.
//!
//! Every node, on applying a rule that bans a pubkey or an event, removes what it bans from
//! the store: the node where the ban was made at once, and each other node once it applies
//! it, so that what a node accepted before it knew of the ban is removed as well.

use std::{
    sync::{Arc, RwLock},
    time::Duration,
};

use actix::Addr;
use starling_cluster::ClusterView;
use tokio::sync::{Mutex, oneshot, watch};

use super::writer::{Flush, Writer};

use crate::{
    config::Config,
    policy::rules::Rules,
    store::{EventStore, StoreError},
};

/// Longest a removal after a ban waits for the writer to commit what it holds.
const FLUSH_WAIT: Duration = Duration::from_secs(10);

/// The node's current rules.
pub struct Rulebook {
    current: RwLock<Arc<Rules>>,
    /// Held by a reload from its reading of the version to the end of its removals, so
    /// that a reload finding the version already in force returns only once what that
    /// version bans is gone: a management call answers after its ban's removal, even when
    /// the periodic reload or an announcement applied the version first.
    reloading: Mutex<()>,
}

impl Rulebook {
    /// A rulebook holding `rules` until the first reload.
    pub fn new(rules: Rules) -> Self {
        Self {
            current: RwLock::new(Arc::new(rules)),
            reloading: Mutex::new(()),
        }
    }

    /// The rules in force.
    pub fn current(&self) -> Arc<Rules> {
        Arc::clone(&self.current.read().unwrap_or_else(|p| p.into_inner()))
    }

    /// Reads the stored rules again if their version is not the one in force; whether it
    /// did.
    pub async fn refresh(
        &self,
        config: &Config,
        store: &dyn EventStore,
        writer: &Addr<Writer>,
    ) -> Result<bool, StoreError> {
        let _one_at_a_time = self.reloading.lock().await;
        let version = store.policy_version().await?;
        let current = self.current();
        if current.is_loaded() && version == current.version() {
            return Ok(false);
        }
        let stored = store.load_policy().await?;
        let rules = Arc::new(Rules::new(config, &stored));
        let previous = std::mem::replace(
            &mut *self.current.write().unwrap_or_else(|p| p.into_inner()),
            Arc::clone(&rules),
        );
        tracing::info!(version = stored.version, "applied the stored rules");
        // After the swap: what this node accepted before it knew of a ban goes too, once
        // the writer has committed what it was given under the old rules.
        let removals = rules.removals_since(&previous);
        if !removals.is_empty() {
            let (done, flushed) = oneshot::channel();
            writer.do_send(Flush(done));
            if tokio::time::timeout(FLUSH_WAIT, flushed).await.is_err() {
                tracing::warn!("the writer is still busy; removing the banned events now");
            }
        }
        for removal in removals {
            let removed = store.remove_events(removal).await?;
            tracing::info!(?removal, removed, "removed the events of a ban");
        }
        Ok(true)
    }
}

/// Keeps `rulebook` current: on every announced version, whenever the bus reconnects, and
/// every `every`. Runs until the announcements end (the node is gone).
pub async fn keep_current(
    rulebook: Arc<Rulebook>,
    config: Config,
    store: Arc<dyn EventStore>,
    writer: Addr<Writer>,
    mut announced: watch::Receiver<u64>,
    mut cluster: watch::Receiver<ClusterView>,
    every: Duration,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut connected = cluster.borrow().connected;
    loop {
        tokio::select! {
            changed = announced.changed() => {
                if changed.is_err() {
                    return;
                }
            }
            Ok(()) = cluster.changed() => {
                let now = cluster.borrow_and_update().connected;
                let back = now && !connected;
                connected = now;
                if !back {
                    continue;
                }
            }
            _ = tick.tick() => {}
        }
        if let Err(error) = rulebook.refresh(&config, &*store, &writer).await {
            tracing::warn!(%error, "could not read the stored rules; keeping the current ones");
        }
    }
}
