//! The bus over Redis pub/sub, with node membership kept in Redis.
//!
//! Three background tasks share a [`RedisBus`]:
//! - the publisher sends queued envelopes with `PUBLISH` on one multiplexed connection,
//!   numbered per run ([`wire`](crate::wire)), and a heartbeat when it has had nothing to
//!   send for [`HEARTBEAT`];
//! - the subscriber holds a dedicated pub/sub connection and hands received envelopes to
//!   local subscribers, checking each node's numbers ([`Sequences`]); every node's
//!   heartbeats (its own included) pass through it, so a link silent for the bus timeout
//!   is dead: the subscriber drops it, says so ([`ClusterView::connected`] false) and
//!   reconnects with backoff;
//! - the membership task records this node in a sorted set every few seconds and counts the
//!   nodes seen recently.
//!
//! An envelope whose `PUBLISH` failed or went unanswered is sent again once Redis is back
//! (up to a minute late; receivers drop a copy that had arrived); what the queue cannot
//! hold is dropped. Either way receivers see the gap in the numbers ([`ClusterView::gaps`])
//! and catch up on stored events from the database, as they do after reconnecting.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use futures_util::{StreamExt, stream::BoxStream};
use redis::aio::MultiplexedConnection;
use tokio::sync::{broadcast, mpsc, watch};

use crate::{
    Bus, ClusterView, Envelope, RedisEndpoint,
    sequence::{Seen, Sequences},
    wire::{self, Received},
};

/// Envelopes waiting to be published before new ones are dropped.
const QUEUE: usize = 65_536;
/// Most envelopes sent in one round trip.
const PIPELINE: usize = 256;
/// How long the publisher may have nothing to send before it sends a heartbeat.
pub const HEARTBEAT: Duration = Duration::from_secs(1);
/// How often a node announces its membership, and how long an announcement counts.
const MEMBERSHIP: Duration = Duration::from_secs(2);
const NODE_TTL: Duration = Duration::from_secs(10);
/// Longest pause between reconnection attempts (short, so that a node finds the new master
/// soon after a failover).
const MAX_BACKOFF: Duration = Duration::from_secs(1);
/// Oldest envelope the publisher still sends after a failure.
const MAX_RETRY_AGE: Duration = Duration::from_secs(60);

/// How the bus watches its links.
#[derive(Debug, Clone, Copy)]
pub struct BusSettings {
    /// How long the subscriber may hear nothing (not even heartbeats) before it drops its
    /// link as dead and reconnects.
    pub timeout: Duration,
}

impl Default for BusSettings {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(5),
        }
    }
}

/// The numbers this node hands out: `assigned` as it publishes, `dropped` the highest
/// lost before sending (a full queue or a stale retry), for heartbeats.
#[derive(Default)]
struct Numbers {
    assigned: AtomicU64,
    dropped: AtomicU64,
}

/// A [`Bus`] over Redis pub/sub.
pub struct RedisBus {
    outgoing: mpsc::Sender<Envelope>,
    incoming: broadcast::Sender<Envelope>,
    view: watch::Sender<ClusterView>,
    epoch: u64,
    numbers: Arc<Numbers>,
}

impl RedisBus {
    /// Starts the bus for node `node_id` of cluster `cluster` on the Redis `endpoint` names:
    /// the cluster's nodes publish on the channel `{cluster}:events` and announce themselves
    /// in the sorted set `{cluster}:nodes`, so several clusters can share one Redis. Returns
    /// at once; the tasks connect (and reconnect, to the master of the moment behind
    /// Sentinel) in the background. Call it inside a tokio runtime.
    pub fn start(
        endpoint: RedisEndpoint,
        cluster: &str,
        node_id: Arc<str>,
        settings: BusSettings,
    ) -> Self {
        let channel: Arc<str> = format!("{cluster}:events").into();
        let nodes: Arc<str> = format!("{cluster}:nodes").into();
        let (outgoing, queue) = mpsc::channel(QUEUE);
        let (incoming, _) = broadcast::channel(QUEUE);
        let view = watch::Sender::new(ClusterView {
            connected: false,
            nodes: 0,
            reconnects: 0,
            gaps: 0,
            link_timeouts: 0,
        });
        let epoch = crate::now_micros();
        let numbers = Arc::new(Numbers::default());
        let publisher = Publisher {
            client: endpoint.clone(),
            channel: Arc::clone(&channel),
            origin: Arc::clone(&node_id),
            epoch,
            numbers: Arc::clone(&numbers),
        };
        tokio::spawn(publisher.run(queue));
        let subscriber = Subscriber {
            client: endpoint.clone(),
            origin: Arc::clone(&node_id),
            channel,
            incoming: incoming.clone(),
            view: view.clone(),
            timeout: settings.timeout,
        };
        tokio::spawn(subscriber.run());
        tokio::spawn(membership(endpoint, nodes, node_id, view.clone()));
        Self {
            outgoing,
            incoming,
            view,
            epoch,
            numbers,
        }
    }
}

impl Bus for RedisBus {
    fn publish(&self, mut envelope: Envelope) {
        envelope.epoch = self.epoch;
        envelope.seq = self.numbers.assigned.fetch_add(1, Ordering::Relaxed) + 1;
        // A full queue means Redis is unreachable or far behind; the event is stored, and
        // the other nodes see the gap in the numbers and catch up from the database.
        if let Err(lost) = self.outgoing.try_send(envelope) {
            let seq = match lost {
                mpsc::error::TrySendError::Full(e) | mpsc::error::TrySendError::Closed(e) => e.seq,
            };
            self.numbers.dropped.fetch_max(seq, Ordering::Relaxed);
        }
    }

    fn subscribe(&self) -> BoxStream<'static, Envelope> {
        crate::broadcast_stream(self.incoming.subscribe(), self.view.clone())
    }

    fn view(&self) -> watch::Receiver<ClusterView> {
        self.view.subscribe()
    }
}

/// Doubling pauses between attempts, up to [`MAX_BACKOFF`].
struct Backoff(Duration);

impl Backoff {
    fn new() -> Self {
        Self(Duration::from_millis(100))
    }

    async fn wait(&mut self) {
        tokio::time::sleep(self.0).await;
        self.0 = (self.0 * 2).min(MAX_BACKOFF);
    }
}

/// The publishing task's parts.
struct Publisher {
    client: RedisEndpoint,
    channel: Arc<str>,
    origin: Arc<str>,
    epoch: u64,
    numbers: Arc<Numbers>,
}

impl Publisher {
    /// Sends queued envelopes in order, pipelined (everything queued, up to
    /// [`PIPELINE`] envelopes, goes in one round trip), and a heartbeat after [`HEARTBEAT`]
    /// with nothing to send. A batch that could not be sent (an error, or no answer within
    /// the endpoint's timeout) is tried again once the connection is back (to the new
    /// master, after a failover), unless its oldest envelope has waited longer than
    /// [`MAX_RETRY_AGE`]: then it is dropped, and the receivers see the gap.
    async fn run(self, mut queue: mpsc::Receiver<Envelope>) {
        let mut connection: Option<MultiplexedConnection> = None;
        let mut backoff = Backoff::new();
        let mut batch: Vec<Vec<u8>> = Vec::new();
        let mut oldest = 0;
        let mut handled = 0;
        loop {
            if batch.is_empty() {
                match tokio::time::timeout(HEARTBEAT, queue.recv()).await {
                    Ok(Some(envelope)) => {
                        oldest = envelope.sent_at_micros;
                        handled = envelope.seq;
                        batch.push(wire::encode(&envelope));
                        while batch.len() < PIPELINE {
                            let Ok(envelope) = queue.try_recv() else {
                                break;
                            };
                            handled = envelope.seq;
                            batch.push(wire::encode(&envelope));
                        }
                    }
                    Ok(None) => return,
                    Err(_) => {
                        // Nothing queued for a while: every number handed out was sent or
                        // dropped by now.
                        let last = handled.max(self.numbers.dropped.load(Ordering::Relaxed));
                        oldest = crate::now_micros();
                        batch.push(wire::heartbeat(&self.origin, self.epoch, last));
                    }
                }
            }
            let age = crate::now_micros().saturating_sub(oldest);
            if age > MAX_RETRY_AGE.as_micros() as u64 {
                batch.clear();
                continue;
            }
            if connection.is_none() {
                match self.client.connect().await {
                    Ok(c) => {
                        connection = Some(c);
                        backoff = Backoff::new();
                    }
                    Err(_) => {
                        backoff.wait().await;
                        continue;
                    }
                }
            }
            let Some(conn) = connection.as_mut() else {
                continue;
            };
            let mut pipe = redis::pipe();
            for bytes in &batch {
                pipe.cmd("PUBLISH").arg(&*self.channel).arg(bytes).ignore();
            }
            let sent: redis::RedisResult<()> = pipe.query_async(conn).await;
            match sent {
                Ok(()) => batch.clear(),
                Err(_) => connection = None,
            }
        }
    }
}

/// The subscribing task's parts.
struct Subscriber {
    client: RedisEndpoint,
    /// This node: its own numbers are not tracked (its heartbeats only prove the link).
    origin: Arc<str>,
    channel: Arc<str>,
    incoming: broadcast::Sender<Envelope>,
    view: watch::Sender<ClusterView>,
    timeout: Duration,
}

impl Subscriber {
    async fn run(self) {
        let mut backoff = Backoff::new();
        let mut sequences = Sequences::default();
        loop {
            let subscribed = async {
                let mut pubsub = self.client.pubsub().await?;
                tokio::time::timeout(self.timeout, pubsub.subscribe(&*self.channel))
                    .await
                    .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
                Ok::<_, redis::RedisError>(pubsub)
            }
            .await;
            let Ok(pubsub) = subscribed else {
                backoff.wait().await;
                continue;
            };
            backoff = Backoff::new();
            self.view.send_modify(|v| v.connected = true);
            let mut messages = pubsub.into_on_message();
            loop {
                match tokio::time::timeout(self.timeout, messages.next()).await {
                    Ok(Some(message)) => {
                        self.receive(&mut sequences, message.get_payload_bytes());
                    }
                    Ok(None) => break,
                    Err(_) => {
                        // Not even our own heartbeat came back: the link is dead, though
                        // nothing closed it.
                        self.view.send_modify(|v| v.link_timeouts += 1);
                        break;
                    }
                }
            }
            self.view.send_modify(|v| {
                v.connected = false;
                v.reconnects += 1;
            });
        }
    }

    fn receive(&self, sequences: &mut Sequences, bytes: &[u8]) {
        let (origin, epoch, seq, event) = match wire::decode(bytes) {
            Some(Received::Event(envelope)) => (
                Arc::clone(&envelope.origin),
                envelope.epoch,
                envelope.seq,
                Some(envelope),
            ),
            Some(Received::Heartbeat { origin, epoch, seq }) => (origin, epoch, seq, None),
            None => return,
        };
        if origin == self.origin {
            if let Some(envelope) = event {
                let _ = self.incoming.send(envelope);
            }
            return;
        }
        match sequences.observe(&origin, epoch, seq, event.is_none()) {
            Seen::Duplicate => return,
            Seen::Gap { .. } | Seen::Restarted => self.view.send_modify(|v| v.gaps += 1),
            Seen::InOrder => {}
        }
        if let Some(envelope) = event {
            let _ = self.incoming.send(envelope);
        }
    }
}

/// Records this node in the cluster's sorted set every [`MEMBERSHIP`] and counts the nodes
/// seen within [`NODE_TTL`].
async fn membership(
    client: RedisEndpoint,
    nodes: Arc<str>,
    node_id: Arc<str>,
    view: watch::Sender<ClusterView>,
) {
    let mut connection: Option<MultiplexedConnection> = None;
    let mut ticks = tokio::time::interval(MEMBERSHIP);
    loop {
        ticks.tick().await;
        if connection.is_none() {
            connection = client.connect().await.ok();
        }
        let Some(conn) = connection.as_mut() else {
            continue;
        };
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        let counted: redis::RedisResult<(i64, i64, i64)> = redis::pipe()
            .atomic()
            .zadd(&*nodes, &*node_id, now)
            .zrembyscore(&*nodes, "-inf", now - NODE_TTL.as_millis() as i64)
            .zcard(&*nodes)
            .query_async(conn)
            .await;
        match counted {
            Ok((_, _, nodes)) => view.send_modify(|v| v.nodes = nodes.max(1) as usize),
            Err(_) => connection = None,
        }
    }
}
