//! Moving events in and out of a store: `starling export` and `starling import` (events as
//! JSON lines, one event a line, read and written as a stream so that any number of events
//! fits in constant memory) and `starling sync` (with another relay, over NIP-77).
//!
//! - [`intake`]: the checks an event from outside passes before it is stored;
//! - [`sync`]: reconciliation with another relay;
//! - [`progress`]: the progress line on a terminal.

pub mod intake;
pub mod progress;
pub mod sync;

use std::{
    io::{self, BufRead, Write},
    sync::Arc,
};

use crate::{
    config::Config,
    nostr::{Reason, VerifiedEvent},
    plugin::SourceType,
    store::{EventStore, WriteOutcome},
};

pub use intake::Intake;
use progress::Progress;

/// Events read from the store, or written to it, per round trip.
const BATCH: usize = 1000;

/// Refusals printed one by one before only the totals are.
const REFUSALS_SHOWN: u64 = 100;

/// Writes every stored event to `out` in insertion order; returns how many.
pub async fn export(store: Arc<dyn EventStore>, out: &mut dyn Write) -> anyhow::Result<u64> {
    let mut progress = Progress::new("exported", None);
    let mut after = 0;
    let mut written = 0;
    loop {
        let events = store.events_after(after, BATCH).await?;
        let Some((last, _)) = events.last() else {
            break;
        };
        after = *last;
        for (_, json) in &events {
            out.write_all(json.as_bytes())?;
            out.write_all(b"\n")?;
        }
        written += events.len() as u64;
        progress.update(written, None);
    }
    out.flush()?;
    progress.finish(written);
    Ok(written)
}

/// What an import did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ImportReport {
    /// Events stored.
    pub stored: u64,
    /// Events the store already had.
    pub duplicates: u64,
    /// Lines refused, with the reason printed for each.
    pub refused: u64,
}

/// Reads events from `input` (of `size` bytes, if known, named `source` for the
/// write-policy plugin), checks each as the relay checks events from clients (the plugin
/// included, told the source type `Import`), and stores the accepted ones in batches. Each
/// refused line is reported on `report` with its line number and reason.
pub async fn import(
    store: Arc<dyn EventStore>,
    config: &Config,
    (input, source): (&mut dyn BufRead, &str),
    size: Option<u64>,
    report: &mut dyn Write,
) -> anyhow::Result<ImportReport> {
    let intake = Intake::new(config, &*store).await?;
    let mut progress = Progress::new("imported", size);
    let mut totals = ImportReport::default();
    let mut batch: Vec<(u64, Arc<VerifiedEvent>)> = Vec::with_capacity(BATCH);
    let mut line = String::new();
    let (mut number, mut bytes) = (0u64, 0u64);
    loop {
        line.clear();
        let read = input.read_line(&mut line)?;
        if read == 0 {
            break;
        }
        number += 1;
        bytes += read as u64;
        let text = line.trim();
        if text.is_empty() {
            continue;
        }
        let checked = intake.judge(text, SourceType::Import, source).await;
        match checked {
            Ok(event) => batch.push((number, Arc::new(event))),
            Err(reason) => refuse(&mut totals, report, number, &reason)?,
        }
        if batch.len() >= BATCH {
            store_batch(&store, &mut batch, &mut totals, report).await?;
            progress.update(
                totals.stored + totals.duplicates + totals.refused,
                Some(bytes),
            );
        }
    }
    store_batch(&store, &mut batch, &mut totals, report).await?;
    progress.finish(totals.stored);
    if totals.stored > 0 {
        store.refresh_statistics().await?;
    }
    Ok(totals)
}

fn refuse(
    totals: &mut ImportReport,
    report: &mut dyn Write,
    line: u64,
    reason: &Reason,
) -> io::Result<()> {
    totals.refused += 1;
    if totals.refused <= REFUSALS_SHOWN {
        writeln!(report, "line {line}: {reason}")?;
    } else if totals.refused == REFUSALS_SHOWN + 1 {
        writeln!(report, "(further refusals are counted, not shown)")?;
    }
    Ok(())
}

async fn store_batch(
    store: &Arc<dyn EventStore>,
    batch: &mut Vec<(u64, Arc<VerifiedEvent>)>,
    totals: &mut ImportReport,
    report: &mut dyn Write,
) -> anyhow::Result<()> {
    if batch.is_empty() {
        return Ok(());
    }
    let events = batch.iter().map(|(_, e)| Arc::clone(e)).collect();
    let outcomes = store.write(events).await?;
    for ((line, _), outcome) in batch.drain(..).zip(outcomes) {
        match outcome {
            WriteOutcome::Stored => totals.stored += 1,
            WriteOutcome::Duplicate => totals.duplicates += 1,
            WriteOutcome::Superseded => {
                let reason = Reason::new(
                    crate::nostr::Prefix::Duplicate,
                    "a newer version is already stored",
                );
                refuse(totals, report, line, &reason)?
            }
            WriteOutcome::Deleted => {
                let reason = Reason::new(crate::nostr::Prefix::Blocked, "deleted by its author");
                refuse(totals, report, line, &reason)?
            }
            WriteOutcome::Vanished => {
                let reason = Reason::new(crate::nostr::Prefix::Blocked, "its author vanished");
                refuse(totals, report, line, &reason)?
            }
        }
    }
    Ok(())
}
