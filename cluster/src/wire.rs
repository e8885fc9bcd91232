//! How envelopes travel through Redis: `origin\nsent_at_micros\nepoch.seq\npayload`.
//!
//! `epoch` names one run of the origin node (its start time in microseconds) and `seq`
//! numbers what that run published, from 1. A heartbeat is an envelope with an empty
//! payload whose `seq` is the last number its node handed out, so that a receiver learns
//! of a lost last message within a heartbeat. Envelopes of nodes from before sequence
//! numbers (`origin\nsent_at_micros\npayload`) are read with `seq` 0: delivered, not
//! tracked.

use std::sync::Arc;

use bytes::Bytes;

use crate::Envelope;

/// What came off the channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Received {
    /// An event envelope.
    Event(Envelope),
    /// A node's heartbeat: it had handed out numbers up to `seq` in run `epoch`.
    Heartbeat {
        /// The node.
        origin: Arc<str>,
        /// Its run.
        epoch: u64,
        /// The last number it handed out.
        seq: u64,
    },
}

/// The bytes of an envelope.
pub fn encode(envelope: &Envelope) -> Vec<u8> {
    let head = format!(
        "{}\n{}\n{}.{}\n",
        envelope.origin, envelope.sent_at_micros, envelope.epoch, envelope.seq
    );
    let mut bytes = Vec::with_capacity(head.len() + envelope.payload.len());
    bytes.extend_from_slice(head.as_bytes());
    bytes.extend_from_slice(&envelope.payload);
    bytes
}

/// The bytes of a heartbeat.
pub fn heartbeat(origin: &str, epoch: u64, seq: u64) -> Vec<u8> {
    format!("{origin}\n{}\n{epoch}.{seq}\n", crate::now_micros()).into_bytes()
}

fn line(bytes: &[u8]) -> Option<(&str, &[u8])> {
    let end = bytes.iter().position(|b| *b == b'\n')?;
    Some((std::str::from_utf8(&bytes[..end]).ok()?, &bytes[end + 1..]))
}

fn numbers(text: &str) -> Option<(u64, u64)> {
    let (epoch, seq) = text.split_once('.')?;
    Some((epoch.parse().ok()?, seq.parse().ok()?))
}

/// Reads what [`encode`] or [`heartbeat`] wrote (or an older node's envelope).
pub fn decode(bytes: &[u8]) -> Option<Received> {
    let (origin, rest) = line(bytes)?;
    let (sent_at, rest) = line(rest)?;
    let sent_at_micros = sent_at.parse().ok()?;
    let origin: Arc<str> = Arc::from(origin);
    let sequenced = line(rest).and_then(|(third, payload)| Some((numbers(third)?, payload)));
    let ((epoch, seq), payload) = match sequenced {
        Some(found) => found,
        None => ((0, 0), rest),
    };
    if payload.is_empty() {
        return Some(Received::Heartbeat { origin, epoch, seq });
    }
    Some(Received::Event(Envelope {
        origin,
        payload: Bytes::copy_from_slice(payload),
        sent_at_micros,
        epoch,
        seq,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelopes_and_heartbeats_round_trip() {
        let envelope = Envelope {
            origin: Arc::from("node-a:7777"),
            payload: Bytes::from_static(b"{\"a\":\"\\n\"}\n"),
            sent_at_micros: 1_700_000_000_000_000,
            epoch: 17,
            seq: 42,
        };
        assert_eq!(decode(&encode(&envelope)), Some(Received::Event(envelope)));
        assert_eq!(
            decode(&heartbeat("b", 3, 9)),
            Some(Received::Heartbeat {
                origin: "b".into(),
                epoch: 3,
                seq: 9
            })
        );
        let old = decode(b"c\n5\n{\"id\":1}").unwrap();
        let Received::Event(old) = old else {
            panic!("an older node's event")
        };
        assert_eq!((old.seq, &old.payload[..]), (0, &b"{\"id\":1}"[..]));
        assert_eq!(decode(b"no separator"), None);
    }
}
