//! Messages between clients and relays (NIP-01, NIP-45): parsing what clients send,
//! rendering what the relay answers, and the machine-readable refusal prefixes.

use std::{borrow::Cow, fmt};

use serde_json::value::RawValue;

use super::{
    describe_json_error,
    event::{Event, EventError},
    filter::{Filter, FilterError},
    hex,
};

/// Longest subscription id NIP-01 allows, in characters.
pub const MAX_SUBSCRIPTION_ID_CHARS: usize = 64;

/// A message from a client.
#[derive(Debug)]
pub enum ClientMessage {
    /// `["EVENT", event]`: publish an event (shape checked, signature not yet).
    Event(Box<Event>),
    /// `["REQ", id, filter...]`: query stored events and subscribe to new ones.
    Req {
        /// The client's name for the subscription.
        sub_id: String,
        /// OR'ed filters.
        filters: Vec<Filter>,
    },
    /// `["COUNT", id, filter...]` (NIP-45): count stored events.
    Count {
        /// The client's name for the query.
        sub_id: String,
        /// OR'ed filters.
        filters: Vec<Filter>,
    },
    /// `["CLOSE", id]`: end a subscription.
    Close {
        /// The subscription to end.
        sub_id: String,
    },
    /// `["AUTH", event]` (NIP-42): authenticate as the event's author (shape checked,
    /// signature not yet).
    Auth(Box<Event>),
    /// `["NEG-OPEN", id, filter, message]` (NIP-77): start reconciling the events `filter`
    /// matches.
    NegOpen {
        /// The client's name for the reconciliation.
        sub_id: String,
        /// Which events.
        filter: Box<Filter>,
        /// The first negentropy message, decoded from hex.
        message: Vec<u8>,
    },
    /// `["NEG-MSG", id, message]` (NIP-77): the next negentropy message.
    NegMsg {
        /// The reconciliation.
        sub_id: String,
        /// The message, decoded from hex.
        message: Vec<u8>,
    },
    /// `["NEG-CLOSE", id]` (NIP-77): end a reconciliation.
    NegClose {
        /// The reconciliation.
        sub_id: String,
    },
}

/// A message the relay cannot act on, with the answer NIP-01 prescribes for it.
#[derive(Debug, PartialEq, Eq)]
pub enum MessageError {
    /// Nothing identifies a request to answer: reply with `NOTICE`.
    Notice(String),
    /// An `EVENT` whose id could be read: reply `OK false`.
    Event {
        /// Lowercase hex id of the refused event.
        id: String,
        /// Why it was refused.
        reason: Reason,
    },
    /// A `REQ` or `COUNT` whose subscription id could be read: reply `CLOSED`.
    Closed {
        /// The subscription id as the client sent it.
        sub_id: String,
        /// Why it was refused.
        reason: Reason,
    },
    /// A `NEG-OPEN` or `NEG-MSG` whose subscription id could be read: reply `NEG-ERR`.
    NegErr {
        /// The subscription id as the client sent it.
        sub_id: String,
        /// Why it was refused.
        reason: Reason,
    },
}

impl ClientMessage {
    /// Parses one text frame.
    pub fn parse(text: &str) -> Result<Self, MessageError> {
        let parts: Vec<&RawValue> = serde_json::from_str(text).map_err(|e| {
            MessageError::Notice(format!(
                "invalid: message is not a JSON array: {}",
                describe_json_error(&e)
            ))
        })?;
        let verb: Cow<'_, str> = parts
            .first()
            .and_then(|v| serde_json::from_str(v.get()).ok())
            .ok_or_else(|| {
                MessageError::Notice("invalid: message must start with a verb string".into())
            })?;
        match verb.as_ref() {
            "EVENT" => parse_event("EVENT", &parts).map(ClientMessage::Event),
            "AUTH" => parse_event("AUTH", &parts).map(ClientMessage::Auth),
            "REQ" | "COUNT" => {
                let sub_id = sub_id(&verb, &parts)?;
                let filters = parse_filters(&verb, &sub_id, &parts[2..])?;
                Ok(if verb == "REQ" {
                    ClientMessage::Req { sub_id, filters }
                } else {
                    ClientMessage::Count { sub_id, filters }
                })
            }
            "CLOSE" => {
                if parts.len() != 2 {
                    return Err(MessageError::Notice(
                        "invalid: CLOSE takes exactly one subscription id".into(),
                    ));
                }
                Ok(ClientMessage::Close {
                    sub_id: sub_id(&verb, &parts)?,
                })
            }
            "NEG-OPEN" | "NEG-MSG" | "NEG-CLOSE" => parse_negentropy(&verb, &parts),
            other => Err(MessageError::Notice(format!(
                "unsupported: unknown message type {:?}",
                other.chars().take(32).collect::<String>()
            ))),
        }
    }
}

/// A NIP-77 message: `NEG-OPEN`, `NEG-MSG` or `NEG-CLOSE`.
fn parse_negentropy(verb: &str, parts: &[&RawValue]) -> Result<ClientMessage, MessageError> {
    let arity = match verb {
        "NEG-OPEN" => 4,
        "NEG-MSG" => 3,
        _ => 2,
    };
    let sub_id = sub_id(verb, parts).map_err(|e| match e {
        MessageError::Closed { sub_id, reason } => MessageError::NegErr { sub_id, reason },
        other => other,
    })?;
    let refuse = |why: String| MessageError::NegErr {
        sub_id: sub_id.clone(),
        reason: Reason::invalid(why),
    };
    if parts.len() != arity {
        return Err(refuse(format!("{verb} takes {} elements", arity)));
    }
    let message = |raw: &RawValue| -> Result<Vec<u8>, MessageError> {
        let text: Cow<'_, str> = serde_json::from_str(raw.get())
            .map_err(|_| refuse(format!("{verb} needs a hex message")))?;
        hex::decode_vec(&text).ok_or_else(|| refuse("the message is not lowercase hex".into()))
    };
    match verb {
        "NEG-OPEN" => {
            let filter = Filter::parse(parts[2].get()).map_err(|e| MessageError::NegErr {
                sub_id: sub_id.clone(),
                reason: match e {
                    FilterError::Invalid(m) => Reason::invalid(m),
                    FilterError::Unsupported(m) => Reason::new(Prefix::Unsupported, m),
                },
            })?;
            let message = message(parts[3])?;
            Ok(ClientMessage::NegOpen {
                sub_id,
                filter: Box::new(filter),
                message,
            })
        }
        "NEG-MSG" => {
            let message = message(parts[2])?;
            Ok(ClientMessage::NegMsg { sub_id, message })
        }
        _ => Ok(ClientMessage::NegClose { sub_id }),
    }
}

/// The one event of an `EVENT` or `AUTH` message.
fn parse_event(verb: &str, parts: &[&RawValue]) -> Result<Box<Event>, MessageError> {
    if parts.len() != 2 {
        return Err(MessageError::Notice(format!(
            "invalid: {verb} takes exactly one event"
        )));
    }
    let raw = parts[1].get();
    Event::parse(raw)
        .map(Box::new)
        .map_err(|err| match readable_id(raw) {
            Some(id) => MessageError::Event {
                id,
                reason: Reason::invalid(err.to_string()),
            },
            None => MessageError::Notice(format!("invalid: {err}")),
        })
}

/// The id of a malformed event, if it has a well-formed one to answer `OK` with.
fn readable_id(raw: &str) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct JustId<'a> {
        #[serde(borrow)]
        id: Cow<'a, str>,
    }
    let parsed: JustId<'_> = serde_json::from_str(raw).ok()?;
    hex::decode::<32>(&parsed.id).map(|id| hex::encode(&id))
}

fn sub_id(verb: &str, parts: &[&RawValue]) -> Result<String, MessageError> {
    let id: String = parts
        .get(1)
        .and_then(|v| serde_json::from_str(v.get()).ok())
        .ok_or_else(|| {
            MessageError::Notice(format!("invalid: {verb} needs a subscription id string"))
        })?;
    let chars = id.chars().count();
    if chars == 0 || chars > MAX_SUBSCRIPTION_ID_CHARS {
        if chars == 0 || verb == "CLOSE" {
            return Err(MessageError::Notice(format!(
                "invalid: subscription id must be 1 to {MAX_SUBSCRIPTION_ID_CHARS} characters"
            )));
        }
        return Err(MessageError::Closed {
            sub_id: id,
            reason: Reason::invalid(format!(
                "subscription id must be 1 to {MAX_SUBSCRIPTION_ID_CHARS} characters"
            )),
        });
    }
    Ok(id)
}

fn parse_filters(verb: &str, sub_id: &str, raw: &[&RawValue]) -> Result<Vec<Filter>, MessageError> {
    let closed = |reason| MessageError::Closed {
        sub_id: sub_id.to_string(),
        reason,
    };
    if raw.is_empty() {
        return Err(closed(Reason::invalid(format!(
            "{verb} needs at least one filter"
        ))));
    }
    raw.iter()
        .map(|f| {
            Filter::parse(f.get()).map_err(|e| {
                closed(match e {
                    FilterError::Invalid(m) => Reason::invalid(m),
                    FilterError::Unsupported(m) => Reason::new(Prefix::Unsupported, m),
                })
            })
        })
        .collect()
}

/// The machine-readable word before the colon in `OK` and `CLOSED` messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Prefix {
    /// Already have it (with `OK true`) or a newer version of it.
    Duplicate,
    /// Needs NIP-42 authentication first.
    AuthRequired,
    /// Not enough proof of work (NIP-13).
    Pow,
    /// Refused by policy (for example: the author deleted it).
    Blocked,
    /// Too much, too fast.
    RateLimited,
    /// Malformed or failing a check.
    Invalid,
    /// Not allowed for this client.
    Restricted,
    /// Accepted but nobody listened.
    Mute,
    /// A feature this relay does not have.
    Unsupported,
    /// A NIP-77 reconciliation is not open (or no longer).
    Closed,
    /// The relay failed.
    Error,
}

impl Prefix {
    /// The word as it appears on the wire and in metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Prefix::Duplicate => "duplicate",
            Prefix::AuthRequired => "auth-required",
            Prefix::Pow => "pow",
            Prefix::Blocked => "blocked",
            Prefix::RateLimited => "rate-limited",
            Prefix::Invalid => "invalid",
            Prefix::Restricted => "restricted",
            Prefix::Mute => "mute",
            Prefix::Unsupported => "unsupported",
            Prefix::Closed => "closed",
            Prefix::Error => "error",
        }
    }
}

/// A prefixed, human-readable reason: `invalid: signature verification failed`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reason {
    /// The machine-readable word.
    pub prefix: Prefix,
    /// The explanation for people.
    pub message: String,
}

impl Reason {
    /// A reason with any prefix.
    pub fn new(prefix: Prefix, message: impl Into<String>) -> Self {
        Self {
            prefix,
            message: message.into(),
        }
    }

    /// An `invalid:` reason.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(Prefix::Invalid, message)
    }

    /// An `error:` reason.
    pub fn error(message: impl Into<String>) -> Self {
        Self::new(Prefix::Error, message)
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.prefix.as_str(), self.message)
    }
}

impl From<EventError> for Reason {
    fn from(e: EventError) -> Self {
        Reason::invalid(e.to_string())
    }
}

/// Renders the messages a relay sends. Strings are escaped by serde_json; event JSON is
/// spliced in as is, so an event serialized once is sent to every subscriber unchanged.
pub mod relay {
    use super::Reason;

    fn quote(s: &str) -> String {
        serde_json::to_string(s).expect("strings always serialize")
    }

    /// `["EVENT", sub_id, event]`.
    pub fn event(sub_id: &str, event_json: &str) -> String {
        let sub = quote(sub_id);
        let mut out = String::with_capacity(12 + sub.len() + event_json.len());
        out.push_str("[\"EVENT\",");
        out.push_str(&sub);
        out.push(',');
        out.push_str(event_json);
        out.push(']');
        out
    }

    /// `["OK", id, accepted, message]`.
    pub fn ok(id_hex: &str, accepted: bool, message: &str) -> String {
        format!("[\"OK\",{},{accepted},{}]", quote(id_hex), quote(message))
    }

    /// `["AUTH", challenge]` (NIP-42).
    pub fn auth(challenge: &str) -> String {
        format!("[\"AUTH\",{}]", quote(challenge))
    }

    /// `["EOSE", sub_id]`.
    pub fn eose(sub_id: &str) -> String {
        format!("[\"EOSE\",{}]", quote(sub_id))
    }

    /// `["CLOSED", sub_id, reason]`.
    pub fn closed(sub_id: &str, reason: &Reason) -> String {
        format!(
            "[\"CLOSED\",{},{}]",
            quote(sub_id),
            quote(&reason.to_string())
        )
    }

    /// `["NEG-MSG", sub_id, hex]` (NIP-77).
    pub fn neg_msg(sub_id: &str, message: &[u8]) -> String {
        let hex = crate::nostr::hex::encode(message);
        format!("[\"NEG-MSG\",{},\"{hex}\"]", quote(sub_id))
    }

    /// `["NEG-ERR", sub_id, reason]` (NIP-77).
    pub fn neg_err(sub_id: &str, reason: &Reason) -> String {
        format!(
            "[\"NEG-ERR\",{},{}]",
            quote(sub_id),
            quote(&reason.to_string())
        )
    }

    /// `["NOTICE", message]`.
    pub fn notice(message: &str) -> String {
        format!("[\"NOTICE\",{}]", quote(message))
    }

    /// `["COUNT", sub_id, {"count": n}]` (NIP-45).
    pub fn count(sub_id: &str, count: u64) -> String {
        format!("[\"COUNT\",{},{{\"count\":{count}}}]", quote(sub_id))
    }

    /// `["COUNT", sub_id, {"count": n, "hll": hex}]` (NIP-45 with HyperLogLog).
    pub fn count_with_hll(sub_id: &str, count: u64, hll: &str) -> String {
        format!(
            "[\"COUNT\",{},{{\"count\":{count},\"hll\":\"{hll}\"}}]",
            quote(sub_id)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EVENT: &str = r#"{"id":"000006d8c378af1779d2feebc7603a125d99eca0ccf1085959b307f64e5dd358","pubkey":"a48380f4cfcc1ad5378294fcac36439770f9c878dd880ffa94bb74ea54a6f243","created_at":1651794653,"kind":1,"tags":[["nonce","776797","20"]],"content":"It's just me mining my own business","sig":"284622fc0a3f4f1303455d5175f7ba962a3300d136085b9566801bc2e0699de0c7e31e44c81fb40ad9049173742e904713c3594a1da0fc5d2382a25c11aba977"}"#;

    fn notice(text: &str) -> String {
        match ClientMessage::parse(text) {
            Err(MessageError::Notice(m)) => m,
            other => panic!("expected a notice for {text}, got {other:?}"),
        }
    }

    #[test]
    fn parses_each_verb() {
        assert!(matches!(
            ClientMessage::parse(&format!(r#"["EVENT",{EVENT}]"#)),
            Ok(ClientMessage::Event(_))
        ));
        match ClientMessage::parse(r#"["REQ","s",{"kinds":[1]},{"limit":2}]"#).unwrap() {
            ClientMessage::Req { sub_id, filters } => {
                assert_eq!(sub_id, "s");
                assert_eq!(filters.len(), 2);
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            ClientMessage::parse(r#"["COUNT","c",{}]"#),
            Ok(ClientMessage::Count { .. })
        ));
        assert!(matches!(
            ClientMessage::parse(r#"["CLOSE","s"]"#),
            Ok(ClientMessage::Close { .. })
        ));
        assert!(matches!(
            ClientMessage::parse("[\"CL\\u004fSE\",\"s\"]"),
            Ok(ClientMessage::Close { .. })
        ));
    }

    #[test]
    fn unreadable_messages_get_notices() {
        assert!(notice("hello").starts_with("invalid: "));
        assert!(notice("{}").starts_with("invalid: "));
        assert!(notice("[]").starts_with("invalid: "));
        assert!(notice("[1]").starts_with("invalid: "));
        assert!(notice(r#"["AUTHX","x"]"#).starts_with("unsupported: "));
        assert!(notice(r#"["EVENT"]"#).starts_with("invalid: "));
        assert!(notice(r#"["EVENT",{},{}]"#).starts_with("invalid: "));
        assert!(notice(r#"["EVENT",{"id":"zz"}]"#).starts_with("invalid: "));
        assert!(notice(r#"["REQ",5,{}]"#).starts_with("invalid: "));
        assert!(notice(r#"["REQ","",{}]"#).starts_with("invalid: "));
        assert!(notice(r#"["CLOSE","a","b"]"#).starts_with("invalid: "));
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        assert!(notice(&deep).starts_with("invalid: "));
        let deep_filter = format!(
            r#"["REQ","s",{{"a":{}{}}}]"#,
            "[".repeat(10_000),
            "]".repeat(10_000)
        );
        assert!(matches!(
            ClientMessage::parse(&deep_filter),
            Err(MessageError::Closed { .. })
        ));
    }

    #[test]
    fn malformed_event_with_readable_id_gets_ok_false() {
        let broken = EVENT.replace("\"kind\":1", "\"kind\":\"1\"");
        match ClientMessage::parse(&format!(r#"["EVENT",{broken}]"#)) {
            Err(MessageError::Event { id, reason }) => {
                assert_eq!(
                    id,
                    "000006d8c378af1779d2feebc7603a125d99eca0ccf1085959b307f64e5dd358"
                );
                assert_eq!(reason.prefix, Prefix::Invalid);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn bad_filters_get_closed() {
        let long = "x".repeat(65);
        for (text, prefix) in [
            (r#"["REQ","s"]"#.to_string(), Prefix::Invalid),
            (
                r#"["REQ","s",{"kinds":["a"]}]"#.to_string(),
                Prefix::Invalid,
            ),
            (
                r#"["REQ","s",{"sarch":"a"}]"#.to_string(),
                Prefix::Unsupported,
            ),
            (r#"["COUNT","s",[]]"#.to_string(), Prefix::Invalid),
            (format!(r#"["REQ","{long}",{{}}]"#), Prefix::Invalid),
        ] {
            match ClientMessage::parse(&text) {
                Err(MessageError::Closed { reason, .. }) => {
                    assert_eq!(reason.prefix, prefix, "{text}")
                }
                other => panic!("{text}: {other:?}"),
            }
        }
        let max = "é".repeat(64);
        assert!(ClientMessage::parse(&format!(r#"["REQ","{max}",{{}}]"#)).is_ok());
    }

    #[test]
    fn renders_relay_messages() {
        assert_eq!(relay::event("s\"1", "{}"), r#"["EVENT","s\"1",{}]"#);
        assert_eq!(relay::ok("ab", true, ""), r#"["OK","ab",true,""]"#);
        assert_eq!(relay::eose("s"), r#"["EOSE","s"]"#);
        assert_eq!(
            relay::closed("s", &Reason::invalid("bad")),
            r#"["CLOSED","s","invalid: bad"]"#
        );
        assert_eq!(relay::notice("n"), r#"["NOTICE","n"]"#);
        assert_eq!(relay::count("c", 7), r#"["COUNT","c",{"count":7}]"#);
    }
}
