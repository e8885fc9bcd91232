//! The path of an `EVENT` once its shape and the relay's rules are checked: signature,
//! rate limits, then the store (or, for ephemeral kinds, live subscribers only), and the
//! `OK` answer that tells the client what happened.

use std::sync::Arc;

use tracing::Instrument;

use crate::{
    node::{Node, WriteResult},
    nostr::{Event, Prefix, Reason},
    policy::EventRates,
    store::WriteOutcome,
};

/// What the client is told of its event, and the refusal to count (none for a new event).
#[derive(Debug, PartialEq, Eq)]
pub struct Verdict {
    /// `OK true` or `OK false`.
    pub accepted: bool,
    /// The `OK` message: empty, or a NIP-01 prefix and a reason.
    pub message: String,
    /// Why the event was refused or not stored again, for the metrics.
    pub refused: Option<Prefix>,
}

impl Verdict {
    fn refused(reason: Reason) -> Self {
        Self {
            accepted: false,
            refused: Some(reason.prefix),
            message: reason.to_string(),
        }
    }
}

/// Verifies `event`, counts it against `rates`, and stores or delivers it. `ingest` is the
/// request's span: `validate`, `store` and (after commit) `publish` are its children.
pub async fn accept(
    node: Arc<Node>,
    event: Event,
    rates: EventRates,
    ingest: tracing::Span,
) -> Verdict {
    let validate = tracing::debug_span!(parent: &ingest, "validate");
    let verified = match node.verify(event).instrument(validate).await {
        Ok(verified) => Arc::new(verified),
        Err(error) => return Verdict::refused(Reason::from(error)),
    };
    if !rates.allow(&**node.limiter(), node.config()).await {
        node.metrics()
            .rate_limited
            .add(1, &[opentelemetry::KeyValue::new("limit", "events")]);
        return Verdict::refused(Reason::new(
            Prefix::RateLimited,
            "too many events; slow down",
        ));
    }
    let store = tracing::debug_span!(parent: &ingest, "store");
    let outcome = async { node.ingest(verified).await }
        .instrument(store)
        .await;
    verdict(outcome)
}

/// The answer for what the store (or the fan-out) did with an event.
fn verdict(result: WriteResult) -> Verdict {
    let (accepted, message, refused) = match result {
        Ok(WriteOutcome::Stored) => (true, String::new(), None),
        Ok(WriteOutcome::Duplicate) => (
            true,
            "duplicate: already have this event".into(),
            Some(Prefix::Duplicate),
        ),
        Ok(WriteOutcome::Superseded) => (
            false,
            "duplicate: a newer version of this event is already stored".into(),
            Some(Prefix::Duplicate),
        ),
        Ok(WriteOutcome::Deleted) => (
            false,
            "blocked: this event was deleted by its author".into(),
            Some(Prefix::Blocked),
        ),
        Err(e) => (
            false,
            Reason::error(format!("could not store the event: {e}")).to_string(),
            Some(Prefix::Error),
        ),
    };
    Verdict {
        accepted,
        message,
        refused,
    }
}
