//! permessage-deflate negotiation (RFC 7692 §5, §7.1): the client's offers in
//! `Sec-WebSocket-Extensions`, and the relay's answer to the first it can accept.
//!
//! The relay compresses every message on its own and asks the client to do the same
//! (`server_no_context_takeover; client_no_context_takeover`), so neither side keeps a
//! window per connection and one compressor per thread serves every connection.

/// The answer to an accepted offer, the value of the response's `Sec-WebSocket-Extensions`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted(pub String);

/// The first offer of permessage-deflate among `headers` (the values of every
/// `Sec-WebSocket-Extensions` line) that the relay accepts, answered.
pub fn negotiate<'a>(headers: impl IntoIterator<Item = &'a str>) -> Option<Accepted> {
    headers
        .into_iter()
        .flat_map(|line| line.split(','))
        .find_map(accept)
}

/// The answer to one offer (`permessage-deflate; client_max_window_bits`), or `None` when the
/// relay declines it: another extension, an unknown or repeated parameter, a bad value, or a
/// server window smaller than the relay's compressor uses.
fn accept(offer: &str) -> Option<Accepted> {
    let mut parts = offer.split(';').map(str::trim);
    if !parts.next()?.eq_ignore_ascii_case("permessage-deflate") {
        return None;
    }
    let mut seen = Vec::new();
    let mut server_window = false;
    for part in parts {
        let (name, value) = match part.split_once('=') {
            Some((name, value)) => (name.trim(), Some(value.trim().trim_matches('"'))),
            None => (part, None),
        };
        let name = name.to_ascii_lowercase();
        if seen.contains(&name) {
            return None;
        }
        match (name.as_str(), value) {
            ("server_no_context_takeover" | "client_no_context_takeover", None) => {}
            // The relay's compressor uses a 32 KiB window: it cannot honour a smaller one.
            ("server_max_window_bits", Some(bits)) => {
                if window_bits(bits)? != 15 {
                    return None;
                }
                server_window = true;
            }
            // Whatever window the client compresses with, the relay inflates with 32 KiB.
            ("client_max_window_bits", None) => {}
            ("client_max_window_bits", Some(bits)) => {
                window_bits(bits)?;
            }
            _ => return None,
        }
        seen.push(name);
    }
    let mut answer =
        "permessage-deflate; server_no_context_takeover; client_no_context_takeover".to_string();
    if server_window {
        answer.push_str("; server_max_window_bits=15");
    }
    Some(Accepted(answer))
}

/// A window size parameter's value: 8 to 15, digits only.
fn window_bits(value: &str) -> Option<u8> {
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    value.parse().ok().filter(|bits| (8..=15).contains(bits))
}

#[cfg(test)]
mod tests {
    use super::*;

    const PLAIN: &str =
        "permessage-deflate; server_no_context_takeover; client_no_context_takeover";

    fn answer(offers: &[&str]) -> Option<String> {
        negotiate(offers.iter().copied()).map(|a| a.0)
    }

    #[test]
    fn accepts_the_rfc_examples() {
        // RFC 7692 §7.1.3's and browsers' offers.
        for offer in [
            "permessage-deflate",
            "permessage-deflate; client_max_window_bits",
            "permessage-deflate; client_max_window_bits=10",
            "permessage-deflate; server_no_context_takeover",
            "permessage-deflate; client_no_context_takeover",
            "PerMessage-Deflate ;  client_max_window_bits = \"12\"",
        ] {
            assert_eq!(answer(&[offer]).as_deref(), Some(PLAIN), "{offer}");
        }
        assert_eq!(
            answer(&["permessage-deflate; server_max_window_bits=15"]),
            Some(format!("{PLAIN}; server_max_window_bits=15"))
        );
    }

    #[test]
    fn takes_the_first_acceptable_of_several_offers() {
        // RFC 7692 §7.1.3: a small server window declined, the fallback offer taken.
        let offers = "permessage-deflate; server_max_window_bits=10, permessage-deflate";
        assert_eq!(answer(&[offers]).as_deref(), Some(PLAIN));
        assert_eq!(
            answer(&["x-webkit-deflate-frame", "permessage-deflate"]).as_deref(),
            Some(PLAIN)
        );
    }

    #[test]
    fn declines_what_it_does_not_understand() {
        for offer in [
            "x-webkit-deflate-frame",
            "permessage-deflate; unknown_param",
            "permessage-deflate; server_max_window_bits",
            "permessage-deflate; server_max_window_bits=7",
            "permessage-deflate; server_max_window_bits=16",
            "permessage-deflate; client_max_window_bits=0x0f",
            "permessage-deflate; client_max_window_bits=99",
            "permessage-deflate; server_no_context_takeover=1",
            "permessage-deflate; client_no_context_takeover; client_no_context_takeover",
        ] {
            assert_eq!(answer(&[offer]), None, "{offer}");
        }
        assert_eq!(answer(&[]), None);
    }
}
