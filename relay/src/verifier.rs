//! The verifier pool: event ids, BIP-340 signatures and canonical serialization are checked on
//! threads of their own, one per core, so that the I/O threads serving sockets never spend
//! their time on secp256k1 and a burst of EVENTs from one connection uses every core.
//!
//! A [`Verifier`] is shared by every connection of a node. Jobs queue without bound: each
//! connection's [`Gate`](crate::actors::gate) already bounds how much it has in progress.

use std::{
    sync::{Arc, Mutex, mpsc},
    thread,
};

use tokio::sync::oneshot;

use crate::nostr::{Event, EventError, VerifiedEvent};

/// An event to check and where its verdict goes.
type Job = (Event, oneshot::Sender<Result<VerifiedEvent, EventError>>);

/// A pool of verification threads.
pub struct Verifier {
    jobs: mpsc::Sender<Job>,
}

impl Verifier {
    /// Starts `threads` verification threads (at least one). They end when the last handle
    /// to the pool is dropped.
    pub fn start(threads: usize) -> Arc<Self> {
        let (jobs, queue) = mpsc::channel::<Job>();
        let queue = Arc::new(Mutex::new(queue));
        for n in 0..threads.max(1) {
            let queue = Arc::clone(&queue);
            let spawned = thread::Builder::new()
                .name(format!("starling-verify-{n}"))
                .spawn(move || work(&queue));
            if let Err(error) = spawned {
                tracing::error!(%error, "could not start a verification thread");
            }
        }
        Arc::new(Self { jobs })
    }

    /// A pool with one thread per core.
    pub fn per_core() -> Arc<Self> {
        Self::start(thread::available_parallelism().map_or(1, usize::from))
    }

    /// Verifies `event` on the pool. Should the pool be unavailable, the caller's thread
    /// does the work, so an event is never lost to the pool.
    pub async fn verify(&self, event: Event) -> Result<VerifiedEvent, EventError> {
        let (reply, verdict) = oneshot::channel();
        if let Err(mpsc::SendError((event, _))) = self.jobs.send((event, reply)) {
            return VerifiedEvent::verify(event);
        }
        verdict
            .await
            .unwrap_or(Err(EventError::Shape("the verifier stopped".to_string())))
    }
}

/// A verification thread: takes jobs until the pool is dropped.
fn work(queue: &Mutex<mpsc::Receiver<Job>>) {
    loop {
        let job = match queue.lock() {
            Ok(receiver) => receiver.recv(),
            Err(_) => return,
        };
        let Ok((event, reply)) = job else { return };
        let _ = reply.send(VerifiedEvent::verify(event));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signed() -> Event {
        let keys = crate::nostr::Keys::from_secret([7; 32]).expect("a valid secret");
        keys.sign(1_700_000_000, 1, vec![], "hello")
    }

    #[tokio::test]
    async fn verifies_on_the_pool_and_refuses_forgeries() {
        let pool = Verifier::start(2);
        let good = signed();
        let verified = pool.verify(good.clone()).await.expect("valid event");
        assert_eq!(verified.event.id, good.id);
        let mut forged = signed();
        forged.content = "changed".to_string();
        assert!(matches!(
            pool.verify(forged).await,
            Err(EventError::IdMismatch)
        ));
    }
}
