//! The Writer: batches events from every connection into store transactions.
//!
//! Up to [`BATCHES_IN_FLIGHT`] batches are committed at once; while they are, new events
//! queue, and when one commits, the queue gives the next batch (up to the batch size). The
//! queue is a [`FairQueue`]: a batch takes the waiting events of every address and
//! connection in turn, so one connection never fills a batch while others wait. An idle
//! relay commits each event at once; a busy one commits many per transaction, on several
//! database connections (the store keeps concurrent batches consistent: see
//! `store::postgres`).
//!
//! One event never fails another: a batch the store refuses for what it holds
//! ([`StoreError::Refused`]) is written again one event at a time, so only the event that
//! caused it fails. Only after commit are stored events published to live subscribers and
//! other nodes, and only then is each sender told the outcome.

use std::sync::Arc;

use actix::{Actor, ActorFutureExt, AsyncContext, Context, Handler, Message, WrapFuture};
use tokio::sync::oneshot;

use crate::{
    fair::{FairQueue, Source},
    live::Fanout,
    metrics::Metrics,
    nostr::VerifiedEvent,
    store::{EventStore, StoreError, WriteOutcome},
};

/// What the sender of a [`Write`] learns.
pub type WriteResult = Result<WriteOutcome, StoreError>;

/// Store this event; the outcome arrives on `reply` after commit.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Write {
    /// Who sent it, for the batch's fair share.
    pub source: Source,
    /// A verified, non-ephemeral event.
    pub event: Arc<VerifiedEvent>,
    /// Where the outcome goes.
    pub reply: oneshot::Sender<WriteResult>,
    /// The span of the request, parent of the `publish` span after commit.
    pub span: tracing::Span,
}

/// Answers once every event sent to the writer before it is committed (or failed).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Flush(pub oneshot::Sender<()>);

/// How many batches may be committing at once.
pub const BATCHES_IN_FLIGHT: usize = 4;

/// The batching writer actor.
pub struct Writer {
    store: Arc<dyn EventStore>,
    fanout: Arc<Fanout>,
    metrics: Arc<Metrics>,
    queue: FairQueue<Write>,
    in_flight: usize,
    max_batch: usize,
    flushed: Vec<oneshot::Sender<()>>,
}

impl Writer {
    /// A writer committing at most `max_batch` events per transaction.
    pub fn new(
        store: Arc<dyn EventStore>,
        fanout: Arc<Fanout>,
        metrics: Arc<Metrics>,
        max_batch: usize,
    ) -> Self {
        Self {
            store,
            fanout,
            metrics,
            queue: FairQueue::default(),
            in_flight: 0,
            max_batch,
            flushed: Vec::new(),
        }
    }

    fn commit_next(&mut self, ctx: &mut Context<Self>) {
        if self.in_flight >= BATCHES_IN_FLIGHT {
            return;
        }
        if self.queue.is_empty() {
            if self.in_flight > 0 {
                return;
            }
            self.flushed.drain(..).for_each(|done| {
                let _ = done.send(());
            });
            return;
        }
        self.in_flight += 1;
        let take = self.queue.len().min(self.max_batch);
        let batch: Vec<Write> = (0..take).filter_map(|_| self.queue.pop()).collect();
        let events = batch.iter().map(|w| Arc::clone(&w.event)).collect();
        let commit = commit(Arc::clone(&self.store), Arc::clone(&self.metrics), events);
        ctx.spawn(commit.into_actor(self).map(move |outcomes, writer, ctx| {
            for (write, outcome) in batch.into_iter().zip(outcomes) {
                if matches!(outcome, Ok(WriteOutcome::Stored)) {
                    let _publish = tracing::debug_span!(parent: &write.span, "publish").entered();
                    writer.fanout.publish(Arc::clone(&write.event));
                }
                let _ = write.reply.send(outcome);
            }
            writer.in_flight -= 1;
            writer.commit_next(ctx);
        }));
    }
}

/// Writes `events` in one transaction; if the store refuses the batch for what it holds,
/// writes them again one at a time. One result per event, in order.
async fn commit(
    store: Arc<dyn EventStore>,
    metrics: Arc<Metrics>,
    events: Vec<Arc<VerifiedEvent>>,
) -> Vec<WriteResult> {
    let count = events.len();
    match store.write(events.clone()).await {
        Ok(outcomes) => outcomes.into_iter().map(Ok).collect(),
        Err(StoreError::Refused(reason)) if count > 1 => {
            metrics.batches_split.add(1, &[]);
            tracing::warn!(%reason, events = count, "a batch was refused; writing its events one by one");
            let mut results = Vec::with_capacity(count);
            for event in events {
                let result = store.write(vec![event]).await;
                results.push(result.and_then(|mut one| one.pop().ok_or(StoreError::Closed)));
            }
            results
        }
        Err(error) => {
            tracing::error!(%error, events = count, "store write failed");
            vec![Err(error); count]
        }
    }
}

impl Actor for Writer {
    type Context = Context<Self>;
}

impl Handler<Flush> for Writer {
    type Result = ();

    fn handle(&mut self, msg: Flush, ctx: &mut Context<Self>) {
        self.flushed.push(msg.0);
        self.commit_next(ctx);
    }
}

impl Handler<Write> for Writer {
    type Result = ();

    fn handle(&mut self, msg: Write, ctx: &mut Context<Self>) {
        self.queue.push(msg.source, msg);
        self.commit_next(ctx);
    }
}
