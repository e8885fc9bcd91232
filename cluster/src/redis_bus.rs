//! The bus over Redis pub/sub, with node membership kept in Redis.
//!
//! Three background tasks share a [`RedisBus`]:
//! - the publisher sends queued envelopes with `PUBLISH` on one multiplexed connection;
//! - the subscriber holds a dedicated pub/sub connection and hands received envelopes to
//!   local subscribers; it reconnects with backoff when Redis goes away;
//! - the heartbeat records this node in a sorted set every few seconds and counts the nodes
//!   seen recently.
//!
//! An envelope whose `PUBLISH` failed is sent again once Redis is back (up to a minute
//! late); what the queue cannot hold while Redis is unreachable is dropped. A node catches
//! up on stored events from the database when its subscriber reconnects (see
//! [`ClusterView::connected`]), and delivers each event once whichever way it came.

use std::{
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use bytes::Bytes;
use futures_util::{StreamExt, stream::BoxStream};
use redis::aio::MultiplexedConnection;
use tokio::sync::{broadcast, mpsc, watch};

use crate::{Bus, ClusterView, Envelope, RedisEndpoint};

/// Envelopes waiting to be published before new ones are dropped.
const QUEUE: usize = 65_536;
/// How often a node announces itself, and how long an announcement counts.
const HEARTBEAT: Duration = Duration::from_secs(2);
const NODE_TTL: Duration = Duration::from_secs(10);
/// Longest pause between reconnection attempts (short, so that a node finds the new master
/// soon after a failover).
const MAX_BACKOFF: Duration = Duration::from_secs(1);
/// Oldest envelope the publisher still sends after a failure.
const MAX_RETRY_AGE: Duration = Duration::from_secs(60);

/// A [`Bus`] over Redis pub/sub.
pub struct RedisBus {
    outgoing: mpsc::Sender<Envelope>,
    incoming: broadcast::Sender<Envelope>,
    view: watch::Receiver<ClusterView>,
}

impl RedisBus {
    /// Starts the bus for node `node_id` of cluster `cluster` on the Redis `endpoint` names:
    /// the cluster's nodes publish on the channel `{cluster}:events` and announce themselves
    /// in the sorted set `{cluster}:nodes`, so several clusters can share one Redis. Returns
    /// at once; the tasks connect (and reconnect, to the master of the moment behind
    /// Sentinel) in the background. Call it inside a tokio runtime.
    pub fn start(endpoint: RedisEndpoint, cluster: &str, node_id: Arc<str>) -> Self {
        let client = endpoint;
        let channel: Arc<str> = format!("{cluster}:events").into();
        let nodes: Arc<str> = format!("{cluster}:nodes").into();
        let (outgoing, queue) = mpsc::channel(QUEUE);
        let (incoming, _) = broadcast::channel(QUEUE);
        let (view_sender, view) = watch::channel(ClusterView {
            connected: false,
            nodes: 0,
            reconnects: 0,
        });
        tokio::spawn(publish(client.clone(), Arc::clone(&channel), queue));
        tokio::spawn(subscribe(
            client.clone(),
            channel,
            incoming.clone(),
            view_sender.clone(),
        ));
        tokio::spawn(heartbeat(client, nodes, node_id, view_sender));
        Self {
            outgoing,
            incoming,
            view,
        }
    }
}

impl Bus for RedisBus {
    fn publish(&self, envelope: Envelope) {
        // A full queue means Redis is unreachable or far behind; the event is stored, and
        // other nodes catch up on it from the database.
        let _ = self.outgoing.try_send(envelope);
    }

    fn subscribe(&self) -> BoxStream<'static, Envelope> {
        crate::broadcast_stream(self.incoming.subscribe())
    }

    fn view(&self) -> watch::Receiver<ClusterView> {
        self.view.clone()
    }
}

/// `origin\nsent_at_micros\njson`.
fn encode(envelope: &Envelope) -> Vec<u8> {
    let head = format!("{}\n{}\n", envelope.origin, envelope.sent_at_micros);
    let mut bytes = Vec::with_capacity(head.len() + envelope.payload.len());
    bytes.extend_from_slice(head.as_bytes());
    bytes.extend_from_slice(&envelope.payload);
    bytes
}

fn decode(bytes: &[u8]) -> Option<Envelope> {
    let first = bytes.iter().position(|b| *b == b'\n')?;
    let second = first + 1 + bytes[first + 1..].iter().position(|b| *b == b'\n')?;
    let origin = std::str::from_utf8(&bytes[..first]).ok()?;
    let sent_at_micros = std::str::from_utf8(&bytes[first + 1..second])
        .ok()?
        .parse()
        .ok()?;
    Some(Envelope {
        origin: Arc::from(origin),
        payload: Bytes::copy_from_slice(&bytes[second + 1..]),
        sent_at_micros,
    })
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

/// Sends queued envelopes in order. One that could not be sent is tried again once the
/// connection is back (to the new master, after a failover), unless it has waited longer
/// than [`MAX_RETRY_AGE`]: a node that missed it for that long was disconnected too, and
/// catches up from the store.
async fn publish(client: RedisEndpoint, channel: Arc<str>, mut queue: mpsc::Receiver<Envelope>) {
    let mut connection: Option<MultiplexedConnection> = None;
    let mut backoff = Backoff::new();
    let mut unsent: Option<Envelope> = None;
    loop {
        let envelope = match unsent.take() {
            Some(envelope) => envelope,
            None => match queue.recv().await {
                Some(envelope) => envelope,
                None => return,
            },
        };
        let age = crate::now_micros().saturating_sub(envelope.sent_at_micros);
        if age > MAX_RETRY_AGE.as_micros() as u64 {
            continue;
        }
        if connection.is_none() {
            match client.connect().await {
                Ok(c) => {
                    connection = Some(c);
                    backoff = Backoff::new();
                }
                Err(_) => {
                    unsent = Some(envelope);
                    backoff.wait().await;
                    continue;
                }
            }
        }
        let Some(conn) = connection.as_mut() else {
            continue;
        };
        let sent: redis::RedisResult<i64> = redis::cmd("PUBLISH")
            .arg(&*channel)
            .arg(encode(&envelope))
            .query_async(conn)
            .await;
        if sent.is_err() {
            connection = None;
            unsent = Some(envelope);
        }
    }
}

async fn subscribe(
    client: RedisEndpoint,
    channel: Arc<str>,
    incoming: broadcast::Sender<Envelope>,
    view: watch::Sender<ClusterView>,
) {
    let mut backoff = Backoff::new();
    loop {
        let subscribed = async {
            let mut pubsub = client.pubsub().await?;
            pubsub.subscribe(&*channel).await?;
            Ok::<_, redis::RedisError>(pubsub)
        }
        .await;
        let Ok(pubsub) = subscribed else {
            backoff.wait().await;
            continue;
        };
        backoff = Backoff::new();
        view.send_modify(|v| {
            v.connected = true;
        });
        let mut messages = pubsub.into_on_message();
        while let Some(message) = messages.next().await {
            if let Some(envelope) = decode(message.get_payload_bytes()) {
                let _ = incoming.send(envelope);
            }
        }
        view.send_modify(|v| {
            v.connected = false;
            v.reconnects += 1;
        });
    }
}

async fn heartbeat(
    client: RedisEndpoint,
    nodes: Arc<str>,
    node_id: Arc<str>,
    view: watch::Sender<ClusterView>,
) {
    let mut connection: Option<MultiplexedConnection> = None;
    let mut ticks = tokio::time::interval(HEARTBEAT);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelopes_round_trip() {
        let envelope = Envelope {
            origin: Arc::from("node-a:7777"),
            payload: Bytes::from_static(b"{\"a\":\"\\n\"}\n"),
            sent_at_micros: 1_700_000_000_000_000,
        };
        assert_eq!(decode(&encode(&envelope)), Some(envelope));
        assert_eq!(decode(b"no separator"), None);
    }
}
