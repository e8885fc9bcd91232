//! The well-behaved client: publish a note, see it live, read it back, and time each step.

use std::{
    net::{Ipv4Addr, SocketAddr},
    time::{Duration, Instant},
};

use anyhow::{anyhow, bail};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use starling::nostr::{Keys, hex};
use tokio_tungstenite::tungstenite::Message;

use super::shared::{ANSWER_TIMEOUT, nanos, secret};
use crate::load::{Ws, connect_from};

/// What the good clients saw in one phase.
#[derive(Default)]
pub(super) struct Observed {
    pub(super) rounds: u64,
    pub(super) ok_ms: Vec<f64>,
    pub(super) req_ms: Vec<f64>,
    pub(super) live_ms: Vec<f64>,
    pub(super) refused: u64,
    pub(super) lost: u64,
}

impl Observed {
    pub(super) fn merge(&mut self, other: Observed) {
        self.rounds += other.rounds;
        self.ok_ms.extend(other.ok_ms);
        self.req_ms.extend(other.req_ms);
        self.live_ms.extend(other.live_ms);
        self.refused += other.refused;
        self.lost += other.lost;
    }
}

/// A good client's rounds until `deadline`: publish, see it live, read it back.
pub(super) async fn good_client(
    url: String,
    target: SocketAddr,
    source: Ipv4Addr,
    n: u64,
    interval: Duration,
    deadline: Instant,
) -> anyhow::Result<Observed> {
    let keys = Keys::from_secret(secret(1_000 + n)).ok_or_else(|| anyhow!("bad secret"))?;
    let mut ws = connect_from(&url, target, source).await?;
    let me = hex::encode(&keys.pubkey());
    let live = json!(["REQ", "live", {"authors": [me], "kinds": [1], "limit": 0}]);
    ws.send(Message::text(live.to_string())).await?;
    wait_for(&mut ws, |v| v[0] == "EOSE" && v[1] == "live").await?;
    let mut seen = Observed::default();
    let mut round = 0u64;
    while Instant::now() < deadline {
        let started = Instant::now();
        round += 1;
        let content = format!("good {n} {round} {}", nanos());
        let event = keys.sign(starling::policy::now(), 1, vec![], &content);
        let id = event.id_hex();
        ws.send(Message::text(format!("[\"EVENT\",{}]", event.to_json())))
            .await?;
        let (mut ok, mut delivered) = (None, None);
        while ok.is_none() || (delivered.is_none() && ok == Some(true)) {
            let Some(msg) = next_json(&mut ws).await? else {
                seen.lost += 1;
                break;
            };
            if msg[0] == "OK" && msg[1] == id.as_str() {
                let accepted = msg[2] == true;
                ok = Some(accepted);
                if accepted {
                    seen.ok_ms.push(ms(started));
                } else {
                    seen.refused += 1;
                    eprintln!("a good event was refused: {msg}");
                }
            } else if msg[0] == "EVENT" && msg[1] == "live" && msg[2]["id"] == id.as_str() {
                delivered = Some(ms(started));
            }
        }
        if let Some(at) = delivered {
            seen.live_ms.push(at);
        }
        if ok == Some(true) {
            let asked = Instant::now();
            let req = json!(["REQ", "read", {"ids": [id]}]);
            ws.send(Message::text(req.to_string())).await?;
            let mut found = false;
            loop {
                let Some(msg) = next_json(&mut ws).await? else {
                    seen.lost += 1;
                    break;
                };
                if msg[0] == "EVENT" && msg[1] == "read" {
                    found = true;
                } else if (msg[0] == "EOSE" || msg[0] == "CLOSED") && msg[1] == "read" {
                    if found {
                        seen.req_ms.push(ms(asked));
                    } else {
                        seen.lost += 1;
                    }
                    break;
                }
            }
            ws.send(Message::text(json!(["CLOSE", "read"]).to_string()))
                .await?;
        }
        seen.rounds += 1;
        if let Some(rest) = interval.checked_sub(started.elapsed()) {
            tokio::time::sleep(rest).await;
        }
    }
    Ok(seen)
}

/// The next JSON message, or `None` if none came within [`ANSWER_TIMEOUT`].
async fn next_json(ws: &mut Ws) -> anyhow::Result<Option<Value>> {
    loop {
        let msg = match tokio::time::timeout(ANSWER_TIMEOUT, ws.next()).await {
            Err(_) => return Ok(None),
            Ok(None) => bail!("the relay closed a good client's connection"),
            Ok(Some(msg)) => msg?,
        };
        if let Message::Text(text) = msg {
            return Ok(Some(serde_json::from_str(&text)?));
        }
    }
}

/// Reads messages until one is `wanted`; an error if none comes within [`ANSWER_TIMEOUT`].
async fn wait_for(ws: &mut Ws, wanted: impl Fn(&Value) -> bool) -> anyhow::Result<()> {
    loop {
        match next_json(ws).await? {
            Some(msg) if wanted(&msg) => return Ok(()),
            Some(_) => {}
            None => bail!("no answer within {ANSWER_TIMEOUT:?}"),
        }
    }
}

/// Milliseconds elapsed since `since`.
fn ms(since: Instant) -> f64 {
    since.elapsed().as_secs_f64() * 1000.0
}
