//! Cancelling store work: a flag the requester raises (a `CLOSE`, a replacing `REQ`, the
//! connection's end) and the store watches, stopping the statement it runs.

use std::sync::{
    Arc,
    atomic::{AtomicBool, Ordering},
};

use tokio::sync::Notify;

/// A cancellation flag shared by the requester and the store. Clones share the flag.
#[derive(Clone, Default, Debug)]
pub struct Cancel(Arc<Flag>);

#[derive(Default, Debug)]
struct Flag {
    raised: AtomicBool,
    notify: Notify,
}

impl Cancel {
    /// Asks every holder to stop.
    pub fn cancel(&self) {
        self.0.raised.store(true, Ordering::Release);
        self.0.notify.notify_waiters();
    }

    /// Whether the work was cancelled.
    pub fn is_cancelled(&self) -> bool {
        self.0.raised.load(Ordering::Acquire)
    }

    /// Resolves once the work is cancelled.
    pub async fn cancelled(&self) {
        loop {
            let notified = self.0.notify.notified();
            if self.is_cancelled() {
                return;
            }
            notified.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn every_clone_sees_the_cancel() {
        let cancel = Cancel::default();
        let waiter = cancel.clone();
        let waiting = tokio::spawn(async move { waiter.cancelled().await });
        tokio::task::yield_now().await;
        assert!(!cancel.is_cancelled());
        cancel.cancel();
        waiting.await.unwrap();
        assert!(cancel.is_cancelled());
        cancel.cancelled().await;
    }
}
