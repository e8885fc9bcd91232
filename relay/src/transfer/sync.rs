//! `starling sync URL`: reconciles this relay's store with another relay over NIP-77.
//!
//! Negentropy (the `negentropy` crate, as the client) finds the ids the other relay has
//! and this store lacks ("need") and the reverse ("have"), over the filter given; then the
//! needed events are fetched with `REQ {"ids": …}` and stored after the checks of
//! [`Intake`] (the plugin told the source type `Sync`), and the others are sent with
//! `EVENT`, each `OK` counted. A relay that does not speak NIP-77 (it answers `NEG-OPEN`
//! with `NOTICE` or `NEG-ERR`, or not at all) is reported, or with `--fallback req`
//! paged through with `until` (and, upwards, sent everything). Running it again after an
//! interruption finds only what is still missing.

use std::{
    collections::{HashMap, HashSet},
    io::Write,
    sync::Arc,
    time::Duration,
};

use anyhow::{Context, bail};
use futures_util::{SinkExt, StreamExt};
use negentropy::{Id, Negentropy, NegentropyStorageVector};
use serde_json::{Value, json};
use tokio_tungstenite::{WebSocketStream, tungstenite::Message};

use super::{ImportReport, Intake, progress::Progress, store_batch};
use crate::{
    dial::{Io, Target},
    nostr::{Filter, VerifiedEvent, hex},
    plugin::SourceType,
    store::{Cancel, Cursor, EventStore},
};

/// Which way events go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Direction {
    /// Fetch what the other relay has and this store lacks.
    Down,
    /// Send what this store has and the other relay lacks.
    Up,
    /// Both.
    Both,
}

/// What to do with a relay that does not speak NIP-77.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Fallback {
    /// Say so and stop.
    None,
    /// Page through its events with `REQ` and `until` (upwards: send every event).
    Req,
}

/// What a sync did.
#[derive(Debug, Default)]
pub struct SyncReport {
    /// `negentropy`, or `req` for the fallback.
    pub method: &'static str,
    /// Events here that the other relay lacked.
    pub have: u64,
    /// Events there that this store lacked.
    pub need: u64,
    /// Events fetched, and what the store did with them.
    pub fetched: u64,
    /// Stored, duplicates and refused among the fetched.
    pub stored: ImportReport,
    /// Events sent.
    pub sent: u64,
    /// Sent events the other relay answered `OK true`.
    pub accepted: u64,
    /// Sent events it refused (or did not answer).
    pub rejected: u64,
}

/// Ids fetched or sent per message.
const CHUNK: usize = 100;
/// Rows read from the store per page.
const PAGE: usize = 1000;
/// Longest wait for any answer of the other relay.
const ANSWER: Duration = Duration::from_secs(30);
/// Events per page of the `REQ` fallback.
const FALLBACK_PAGE: u64 = 500;
/// Frame size of this side's negentropy messages (as strfry's default).
const FRAME: u64 = 60_000;

/// The other relay.
struct Remote {
    ws: WebSocketStream<Box<dyn Io>>,
    url: String,
}

impl Remote {
    async fn connect(url: &str) -> anyhow::Result<Self> {
        if !(url.starts_with("ws://") || url.starts_with("wss://")) {
            bail!("`{url}` is not a ws:// or wss:// URL");
        }
        let stream = Target::parse(url)?.connect().await?;
        let (ws, _) = tokio_tungstenite::client_async(url, stream)
            .await
            .with_context(|| format!("opening a WebSocket to {url}"))?;
        Ok(Self {
            ws,
            url: url.to_string(),
        })
    }

    async fn send(&mut self, message: Value) -> anyhow::Result<()> {
        self.ws.send(Message::text(message.to_string())).await?;
        Ok(())
    }

    /// The next JSON message (pings and the NIP-42 challenge skipped); `None` after
    /// [`ANSWER`] without one.
    async fn recv(&mut self) -> anyhow::Result<Option<Value>> {
        loop {
            let next = match tokio::time::timeout(ANSWER, self.ws.next()).await {
                Err(_) => return Ok(None),
                Ok(None) => bail!("{} closed the connection", self.url),
                Ok(Some(message)) => message?,
            };
            if let Message::Text(text) = next {
                let value: Value = serde_json::from_str(&text)
                    .with_context(|| format!("{} sent something that is not JSON", self.url))?;
                if value[0] != "AUTH" {
                    return Ok(Some(value));
                }
            }
        }
    }
}

/// The ids and times of the stored events `filter` matches.
async fn local_records(
    store: &dyn EventStore,
    filter: &Filter,
) -> anyhow::Result<Vec<(u64, [u8; 32])>> {
    let (cancel, now) = (Cancel::default(), crate::policy::now());
    let mut records = Vec::new();
    let mut after = None;
    loop {
        let rows = store.page(filter, after, PAGE, now, &cancel).await?;
        records.extend(rows.iter().map(|r| (r.created_at.max(0) as u64, r.id)));
        match rows.last() {
            Some(row) if rows.len() == PAGE => {
                after = Some(Cursor {
                    created_at: row.created_at,
                    id: row.id,
                })
            }
            _ => return Ok(records),
        }
    }
}

/// Why reconciliation did not happen: the other relay's words.
struct NoNegentropy(String);

/// Reconciles `records` with the other relay over `filter`: (have, need).
async fn reconcile(
    remote: &mut Remote,
    filter: &Value,
    records: Vec<(u64, [u8; 32])>,
) -> anyhow::Result<Result<(Vec<[u8; 32]>, Vec<[u8; 32]>), NoNegentropy>> {
    let mut storage = NegentropyStorageVector::with_capacity(records.len());
    for (at, id) in records {
        storage.insert(at, Id::from_byte_array(id))?;
    }
    storage.seal()?;
    let mut negentropy = Negentropy::owned(storage, FRAME)?;
    let first = negentropy.initiate()?;
    let sub = "starling-sync";
    remote
        .send(json!(["NEG-OPEN", sub, filter, hex::encode(&first)]))
        .await?;
    let (mut have, mut need) = (Vec::new(), Vec::new());
    loop {
        let Some(message) = remote.recv().await? else {
            return Ok(Err(NoNegentropy("no answer to NEG-OPEN".into())));
        };
        match (message[0].as_str(), message[1].as_str()) {
            (Some("NEG-MSG"), Some(s)) if s == sub => {
                let bytes = message[2]
                    .as_str()
                    .and_then(hex::decode_vec)
                    .context("a NEG-MSG that is not hex")?;
                let (mut has, mut needs) = (Vec::new(), Vec::new());
                let next = negentropy.reconcile_with_ids(&bytes, &mut has, &mut needs)?;
                have.extend(has.iter().map(|id| id.to_bytes()));
                need.extend(needs.iter().map(|id| id.to_bytes()));
                match next {
                    Some(next) => {
                        remote
                            .send(json!(["NEG-MSG", sub, hex::encode(&next)]))
                            .await?
                    }
                    None => break,
                }
            }
            (Some("NEG-ERR"), Some(s)) if s == sub => {
                return Ok(Err(NoNegentropy(message[2].as_str().unwrap_or("").into())));
            }
            (Some("NOTICE"), _) => {
                return Ok(Err(NoNegentropy(message[1].as_str().unwrap_or("").into())));
            }
            _ => {}
        }
    }
    remote.send(json!(["NEG-CLOSE", sub])).await?;
    Ok(Ok((have, need)))
}

/// Reads `REQ` answers for `sub` until `EOSE` (or `CLOSED`); the events' JSON.
async fn stored_events(remote: &mut Remote, sub: &str) -> anyhow::Result<Vec<String>> {
    let mut events = Vec::new();
    loop {
        let Some(message) = remote.recv().await? else {
            bail!("{} did not finish answering a REQ", remote.url);
        };
        match (message[0].as_str(), message[1].as_str()) {
            (Some("EVENT"), Some(s)) if s == sub => events.push(message[2].to_string()),
            (Some("EOSE"), Some(s)) if s == sub => return Ok(events),
            (Some("CLOSED"), Some(s)) if s == sub => {
                bail!("{} refused a REQ: {}", remote.url, message[2]);
            }
            _ => {}
        }
    }
}

/// Checks and stores fetched events.
async fn take_in(
    store: &Arc<dyn EventStore>,
    intake: &Intake,
    source: &str,
    events: Vec<String>,
    report: &mut SyncReport,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let mut batch: Vec<(u64, Arc<VerifiedEvent>)> = Vec::new();
    for text in events {
        report.fetched += 1;
        match intake.judge(&text, SourceType::Sync, source).await {
            Ok(event) => batch.push((report.fetched, Arc::new(event))),
            Err(reason) => super::refuse(&mut report.stored, out, report.fetched, &reason)?,
        }
    }
    store_batch(store, &mut batch, &mut report.stored, out).await
}

/// Sends `events` (JSON) and counts the other relay's `OK`s; prints its first refusals.
async fn send_all(
    remote: &mut Remote,
    events: Vec<String>,
    report: &mut SyncReport,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let mut waiting: HashSet<String> = HashSet::new();
    for text in &events {
        let event: Value = serde_json::from_str(text)?;
        waiting.insert(event["id"].as_str().unwrap_or_default().to_string());
        remote.send(json!(["EVENT", event])).await?;
        report.sent += 1;
    }
    while !waiting.is_empty() {
        let Some(message) = remote.recv().await? else {
            report.rejected += waiting.len() as u64;
            writeln!(out, "{} events were not answered", waiting.len())?;
            return Ok(());
        };
        if message[0] != "OK" {
            continue;
        }
        let id = message[1].as_str().unwrap_or_default();
        if !waiting.remove(id) {
            continue;
        }
        if message[2] == true {
            report.accepted += 1;
        } else {
            report.rejected += 1;
            if report.rejected <= super::REFUSALS_SHOWN {
                writeln!(out, "sent {id}: refused: {}", message[3])?;
            }
        }
    }
    Ok(())
}

/// The stored events with these ids, as JSON.
async fn local_events(store: &dyn EventStore, ids: &[[u8; 32]]) -> anyhow::Result<Vec<String>> {
    let hex_ids: Vec<String> = ids.iter().map(|id| hex::encode(id)).collect();
    let filter = Filter::parse(&json!({"ids": hex_ids, "limit": ids.len()}).to_string())
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(store
        .query(Arc::from([filter]), crate::policy::now())
        .await?)
}

/// Reconciles `store` with the relay at `url` over `filter` (JSON), as `direction` says;
/// refusals and progress go to `out`.
pub async fn sync(
    store: Arc<dyn EventStore>,
    intake: &Intake,
    (url, filter): (&str, &str),
    (direction, fallback): (Direction, Fallback),
    out: &mut dyn Write,
) -> anyhow::Result<SyncReport> {
    let filter_json: Value = serde_json::from_str(filter).context("--filter is not JSON")?;
    let mut local_filter = Filter::parse(filter).map_err(|e| anyhow::anyhow!("--filter: {e}"))?;
    local_filter.limit = None;
    let mut remote = Remote::connect(url).await?;
    let records = local_records(&*store, &local_filter).await?;
    let mut report = SyncReport {
        method: "negentropy",
        ..Default::default()
    };
    let (have, need) = match reconcile(&mut remote, &filter_json, records).await? {
        Ok(found) => found,
        Err(NoNegentropy(why)) if fallback == Fallback::Req => {
            writeln!(out, "{url} does not reconcile ({why}); paging with REQ")?;
            report.method = "req";
            return page_through(
                store,
                intake,
                &mut remote,
                &filter_json,
                direction,
                report,
                out,
            )
            .await;
        }
        Err(NoNegentropy(why)) => {
            bail!("{url} does not reconcile with NIP-77 ({why}); --fallback req pages instead")
        }
    };
    report.have = have.len() as u64;
    report.need = need.len() as u64;
    let mut progress = Progress::new("synced", None);
    if direction != Direction::Up {
        for (n, chunk) in need.chunks(CHUNK).enumerate() {
            let sub = format!("fetch-{n}");
            let ids: Vec<String> = chunk.iter().map(|id| hex::encode(id)).collect();
            remote
                .send(json!(["REQ", sub, {"ids": ids, "limit": ids.len()}]))
                .await?;
            let events = stored_events(&mut remote, &sub).await?;
            remote.send(json!(["CLOSE", sub])).await?;
            take_in(&store, intake, url, events, &mut report, out).await?;
            progress.update(report.fetched + report.sent, None);
        }
    }
    if direction != Direction::Down {
        for chunk in have.chunks(CHUNK) {
            let events = local_events(&*store, chunk).await?;
            send_all(&mut remote, events, &mut report, out).await?;
            progress.update(report.fetched + report.sent, None);
        }
    }
    progress.finish(report.fetched + report.sent);
    if report.stored.stored > 0 {
        store.refresh_statistics().await?;
    }
    Ok(report)
}

/// The fallback: every event of the filter, newest first, page by page with `until`.
async fn page_through(
    store: Arc<dyn EventStore>,
    intake: &Intake,
    remote: &mut Remote,
    filter: &Value,
    direction: Direction,
    mut report: SyncReport,
    out: &mut dyn Write,
) -> anyhow::Result<SyncReport> {
    if direction != Direction::Up {
        let mut seen: HashSet<String> = HashSet::new();
        let mut until: Option<u64> = None;
        for n in 0.. {
            let mut page = filter.clone();
            page["limit"] = json!(FALLBACK_PAGE);
            if let Some(until) = until {
                page["until"] = json!(until);
            }
            let sub = format!("page-{n}");
            remote.send(json!(["REQ", sub, page])).await?;
            let events = stored_events(remote, &sub).await?;
            remote.send(json!(["CLOSE", sub])).await?;
            let times: HashMap<String, u64> = events
                .iter()
                .filter_map(|e| serde_json::from_str::<Value>(e).ok())
                .filter_map(|e| Some((e["id"].as_str()?.to_string(), e["created_at"].as_u64()?)))
                .collect();
            let fresh: Vec<String> = events
                .into_iter()
                .filter(|e| {
                    serde_json::from_str::<Value>(e).is_ok_and(|v| {
                        v["id"]
                            .as_str()
                            .is_some_and(|id| seen.insert(id.to_string()))
                    })
                })
                .collect();
            if fresh.is_empty() {
                break;
            }
            let oldest = times.values().copied().min().unwrap_or(0);
            // A full page of one second: step past it.
            until = Some(if Some(oldest) == until {
                oldest.saturating_sub(1)
            } else {
                oldest
            });
            report.need += fresh.len() as u64;
            take_in(&store, intake, &remote.url.clone(), fresh, &mut report, out).await?;
        }
    }
    if direction != Direction::Down {
        let mut local = Filter::parse(&filter.to_string()).map_err(|e| anyhow::anyhow!("{e}"))?;
        local.limit = None;
        let records = local_records(&*store, &local).await?;
        let ids: Vec<[u8; 32]> = records.into_iter().map(|(_, id)| id).collect();
        report.have = ids.len() as u64;
        for chunk in ids.chunks(CHUNK) {
            let events = local_events(&*store, chunk).await?;
            send_all(remote, events, &mut report, out).await?;
        }
    }
    Ok(report)
}
