//! The path of an `EVENT` once its shape and the relay's rules are checked: signature,
//! rate limits, the write-policy plugin (when there is one), then the store (or, for
//! ephemeral kinds, live subscribers only), and the `OK` answer that tells the client what
//! happened.

use std::sync::Arc;

use tracing::Instrument;

use crate::{
    fair::Source,
    node::{Node, WriteResult},
    nostr::{Event, EventError, Prefix, Reason},
    plugin::{Decision, SourceType},
    policy::{EventRates, Strike},
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
    /// What the sender did wrong, if anything: it counts against its connection.
    pub strike: Option<Strike>,
}

impl Verdict {
    fn refused(reason: Reason, strike: Option<Strike>) -> Self {
        Self {
            accepted: false,
            refused: Some(reason.prefix),
            message: reason.to_string(),
            strike,
        }
    }
}

/// Verifies `event` from `source`, counts it against `rates`, and stores or delivers it.
/// `ingest` is the request's span: `validate`, `store` and (after commit) `publish` are its
/// children.
pub async fn accept(
    node: Arc<Node>,
    source: Source,
    event: Event,
    rates: EventRates,
    authed: Option<[u8; 32]>,
    ingest: tracing::Span,
) -> Verdict {
    let validate = tracing::debug_span!(parent: &ingest, "validate");
    let verified = match node.verify(source, event).instrument(validate).await {
        Ok(verified) => Arc::new(verified),
        Err(error) => {
            let strike = match error {
                EventError::IdMismatch | EventError::BadSignature => Strike::Forged,
                _ => Strike::Invalid,
            };
            return Verdict::refused(Reason::from(error), Some(strike));
        }
    };
    if !rates.allow(&**node.limiter(), node.config()).await {
        node.metrics()
            .rate_limited
            .add(1, &[opentelemetry::KeyValue::new("limit", "events")]);
        return Verdict::refused(
            Reason::new(Prefix::RateLimited, "too many events; slow down"),
            Some(Strike::RateLimited),
        );
    }
    if let Some(policy) = node.write_policy() {
        let ip = source.address.ip();
        let kind = if ip.is_ipv4() {
            SourceType::IP4
        } else {
            SourceType::IP6
        };
        let asked = tracing::debug_span!(parent: &ingest, "write_policy");
        let decision = policy
            .judge(&verified, kind, &ip.to_string(), authed)
            .instrument(asked)
            .await;
        match decision {
            Decision::Accept => {}
            Decision::Reject(reason) => {
                // A plugin that could not judge the event is not the client's fault.
                let strike = (reason.prefix != Prefix::Error).then_some(Strike::Refused);
                return Verdict::refused(reason, strike);
            }
            Decision::ShadowReject => {
                return Verdict {
                    accepted: true,
                    message: String::new(),
                    refused: None,
                    strike: None,
                };
            }
        }
    }
    // Checked again with the rules in force right before the writer takes the event (no
    // await in between): a ban applied while the event was being verified holds, and the
    // node's removal after a ban, which first waits for the writer, finds the rest.
    if let Err(reason) = node.rules().check_event(&verified.event) {
        return Verdict::refused(reason, Some(Strike::Refused));
    }
    let id = verified.event.id_hex();
    let store = tracing::debug_span!(parent: &ingest, "store");
    let outcome = async { node.ingest(source, verified).await }
        .instrument(store)
        .await;
    if let Err(error) = &outcome {
        // The store's own words stay in the log; the client gets a short, stable answer.
        tracing::warn!(event = %id, %error, "could not store an event");
    }
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
        Ok(WriteOutcome::Vanished) => (
            false,
            "blocked: this author asked this relay to vanish".into(),
            Some(Prefix::Blocked),
        ),
        Err(_) => (
            false,
            Reason::error("could not store the event").to_string(),
            Some(Prefix::Error),
        ),
    };
    Verdict {
        accepted,
        message,
        refused,
        strike: None,
    }
}
