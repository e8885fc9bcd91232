//! The lines a write-policy plugin reads and writes, as strfry defines them, so that strfry
//! plugins run unchanged.
//!
//! The relay writes one JSON object a line on the plugin's standard input:
//! `{"type":"new","event":{…},"receivedAt":<unix seconds>,"sourceType":"IP4"|"IP6"|"Import"|
//! "Sync","sourceInfo":"<address>","authed":"<hex pubkey>"}` (`authed` only when the
//! connection authenticated). The plugin answers one line per event on its standard output:
//! `{"id":"<event id>","action":"accept"|"reject"|"shadowReject","msg":"<text>"}`.

use serde::{Deserialize, Serialize};

use crate::nostr::{Prefix, Reason};

/// Where an event came from, as the plugin is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum SourceType {
    /// A client connected over IPv4.
    IP4,
    /// A client connected over IPv6.
    IP6,
    /// `starling import`.
    Import,
    /// `starling sync`.
    Sync,
}

/// One event for the plugin to judge.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Request<'a> {
    /// Always `new`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// The event, as the relay stores it.
    pub event: &'a serde_json::value::RawValue,
    /// When the relay received it, in Unix seconds.
    pub received_at: u64,
    /// Where it came from.
    pub source_type: SourceType,
    /// The client's address (or the file imported from).
    pub source_info: &'a str,
    /// The authenticated pubkey of the connection, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub authed: Option<String>,
}

/// What the plugin decided for one event.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Answer {
    /// The event's id, in hex.
    pub id: String,
    /// Its verdict.
    pub action: Action,
    /// The message for `OK false`.
    #[serde(default)]
    pub msg: String,
}

/// A plugin's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Action {
    /// Store and deliver the event.
    Accept,
    /// Refuse it with the plugin's message.
    Reject,
    /// Answer `OK true` but neither store nor deliver it.
    ShadowReject,
}

impl Answer {
    /// Reads one line of the plugin's output; `None` for anything that is not an answer.
    pub fn parse(line: &str) -> Option<Self> {
        serde_json::from_str(line.trim()).ok()
    }

    /// The `OK false` reason of a rejection: the plugin's message, given the `blocked:`
    /// prefix when it carries no NIP-01 prefix of its own.
    pub fn reason(&self) -> Reason {
        let known = [
            Prefix::Blocked,
            Prefix::Invalid,
            Prefix::Restricted,
            Prefix::RateLimited,
            Prefix::Pow,
            Prefix::AuthRequired,
            Prefix::Error,
        ];
        for prefix in known {
            if let Some(rest) = self.msg.strip_prefix(&format!("{}: ", prefix.as_str())) {
                return Reason::new(prefix, rest);
            }
        }
        let msg = if self.msg.is_empty() {
            "refused by the relay's policy"
        } else {
            &self.msg
        };
        Reason::new(Prefix::Blocked, msg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_written_as_strfry_writes_them() {
        let event = serde_json::value::RawValue::from_string(r#"{"id":"ab"}"#.into()).unwrap();
        let request = Request {
            kind: "new",
            event: &event,
            received_at: 1_700_000_000,
            source_type: SourceType::IP4,
            source_info: "203.0.113.7",
            authed: None,
        };
        assert_eq!(
            serde_json::to_string(&request).unwrap(),
            r#"{"type":"new","event":{"id":"ab"},"receivedAt":1700000000,"sourceType":"IP4","sourceInfo":"203.0.113.7"}"#
        );
    }

    #[test]
    fn answers_are_read_and_garbage_is_not() {
        let answer = Answer::parse(r#"{"id":"ab","action":"shadowReject","msg":""}"#).unwrap();
        assert_eq!(answer.action, Action::ShadowReject);
        let rejected =
            Answer::parse(r#"{"id":"ab","action":"reject","msg":"restricted: members only"}"#)
                .unwrap();
        assert_eq!(
            rejected.reason(),
            Reason::new(Prefix::Restricted, "members only")
        );
        let plain = Answer::parse(r#"{"id":"ab","action":"reject","msg":"no spam"}"#).unwrap();
        assert_eq!(plain.reason().to_string(), "blocked: no spam");
        for garbage in ["", "hello", r#"{"id":"ab","action":"maybe"}"#, "[1,2]"] {
            assert_eq!(Answer::parse(garbage), None, "{garbage}");
        }
    }
}
