//! The verifier pool: event ids, BIP-340 signatures and canonical serialization are checked on
//! threads of their own, one per core, so that the I/O threads serving sockets never spend
//! their time on secp256k1 and a burst of EVENTs from one connection uses every core.
//!
//! A [`Verifier`] is shared by every connection of a node. Its queue is a [`FairQueue`]: the
//! threads take the next job of the next client address and connection in turn, so an honest
//! event waits behind at most one job of each other sender, however many forged events one
//! of them sends. Each connection's [`Gate`](crate::actors::gate) bounds how many jobs it has
//! queued.

use std::{
    sync::{Arc, Condvar, Mutex, MutexGuard},
    thread,
};

use tokio::sync::oneshot;

use crate::{
    fair::{FairQueue, Source},
    nostr::{Event, EventError, VerifiedEvent},
};

/// An event to check and where its verdict goes.
type Job = (Event, oneshot::Sender<Result<VerifiedEvent, EventError>>);

/// The queue the threads share, and whether the pool is closing.
#[derive(Default)]
struct Jobs {
    queue: FairQueue<Job>,
    closing: bool,
}

#[derive(Default)]
struct Shared {
    jobs: Mutex<Jobs>,
    ready: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Jobs> {
        self.jobs.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A pool of verification threads.
pub struct Verifier {
    shared: Arc<Shared>,
    threads: usize,
}

impl Verifier {
    /// Starts `threads` verification threads (at least one). They end when the pool is
    /// dropped.
    pub fn start(threads: usize) -> Arc<Self> {
        let shared = Arc::new(Shared::default());
        let mut started = 0;
        for n in 0..threads.max(1) {
            let shared = Arc::clone(&shared);
            let spawned = thread::Builder::new()
                .name(format!("starling-verify-{n}"))
                .spawn(move || work(&shared));
            match spawned {
                Ok(_) => started += 1,
                Err(error) => tracing::error!(%error, "could not start a verification thread"),
            }
        }
        Arc::new(Self {
            shared,
            threads: started,
        })
    }

    /// A pool with one thread per core.
    pub fn per_core() -> Arc<Self> {
        Self::start(thread::available_parallelism().map_or(1, usize::from))
    }

    /// Verifies `event` from `source` on the pool, in its turn. Should the pool have no
    /// thread, the caller's thread does the work, so an event is never lost to the pool.
    pub async fn verify(&self, source: Source, event: Event) -> Result<VerifiedEvent, EventError> {
        if self.threads == 0 {
            return VerifiedEvent::verify(event);
        }
        let (reply, verdict) = oneshot::channel();
        self.shared.lock().queue.push(source, (event, reply));
        self.shared.ready.notify_one();
        verdict
            .await
            .unwrap_or(Err(EventError::Shape("the verifier stopped".to_string())))
    }
}

impl Drop for Verifier {
    fn drop(&mut self) {
        self.shared.lock().closing = true;
        self.shared.ready.notify_all();
    }
}

/// A verification thread: takes jobs in turn until the pool is dropped.
fn work(shared: &Shared) {
    loop {
        let job = {
            let mut jobs = shared.lock();
            loop {
                if jobs.closing {
                    return;
                }
                if let Some(job) = jobs.queue.pop() {
                    break job;
                }
                jobs = shared.ready.wait(jobs).unwrap_or_else(|p| p.into_inner());
            }
        };
        let (event, reply) = job;
        // A sender that went away (its connection closed) needs no verdict; skip the work.
        if !reply.is_closed() {
            let _ = reply.send(VerifiedEvent::verify(event));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fair::ClientAddress;

    fn signed() -> Event {
        let keys = crate::nostr::Keys::from_secret([7; 32]).expect("a valid secret");
        keys.sign(1_700_000_000, 1, vec![], "hello")
    }

    #[tokio::test]
    async fn verifies_on_the_pool_and_refuses_forgeries() {
        let pool = Verifier::start(2);
        let source = Source {
            address: ClientAddress::local(),
            connection: 1,
        };
        let good = signed();
        let verified = pool
            .verify(source, good.clone())
            .await
            .expect("valid event");
        assert_eq!(verified.event.id, good.id);
        let mut forged = signed();
        forged.content = "changed".to_string();
        assert!(matches!(
            pool.verify(source, forged).await,
            Err(EventError::IdMismatch)
        ));
    }
}
