//! Compressed event bodies shared between subscribers. An event delivered to many
//! subscriptions is the same JSON after a different `["EVENT","<subid>",` each time, so the
//! body is compressed once per thread and kept for a while, and only the prefix is
//! compressed per message; the two parts are joined as [`deflate::compress_part`] allows.
//! Any split of a message would inflate to the same text: where it is cut only decides how
//! often a body is found again.

use std::{cell::RefCell, collections::VecDeque, rc::Rc};

use super::deflate;

/// Bodies kept per thread: an event reaches its subscribers on a thread in one burst.
const KEPT: usize = 32;

/// A body, and it compressed on its own.
struct Body {
    text: Rc<str>,
    compressed: Rc<[u8]>,
}

thread_local! {
    static BODIES: RefCell<VecDeque<Body>> = const { RefCell::new(VecDeque::new()) };
}

/// Where a relay `EVENT` message's event JSON starts, after its subscription id (an
/// unescaped `",{"id":"` cannot occur inside a JSON string).
fn body_start(text: &str) -> Option<usize> {
    let rest = text.strip_prefix(r#"["EVENT",""#)?;
    let end = rest.find(r#"",{"id":""#)?;
    Some(r#"["EVENT",""#.len() + end + 2)
}

/// `text` compressed as one permessage-deflate message, reusing the compressed body of an
/// `EVENT` message sent on this thread before.
pub fn compress_message(text: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len() / 2 + 64);
    let Some(at) = body_start(text) else {
        deflate::compress(text.as_bytes(), &mut out);
        return out;
    };
    let (prefix, body) = text.split_at(at);
    deflate::compress_part(prefix.as_bytes(), &mut out);
    out.extend_from_slice(&compressed_body(body));
    out
}

/// The compressed `body`, from the thread's bodies or compressed now and kept.
fn compressed_body(body: &str) -> Rc<[u8]> {
    BODIES.with_borrow_mut(|bodies| {
        if let Some(found) = bodies.iter().find(|b| *b.text == *body) {
            return Rc::clone(&found.compressed);
        }
        let mut compressed = Vec::with_capacity(body.len() / 2 + 64);
        deflate::compress(body.as_bytes(), &mut compressed);
        let compressed: Rc<[u8]> = compressed.into();
        if bodies.len() == KEPT {
            bodies.pop_front();
        }
        bodies.push_back(Body {
            text: body.into(),
            compressed: Rc::clone(&compressed),
        });
        compressed
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_to_many_subscribers_is_compressed_once_and_inflates_whole() {
        let event = r#"{"id":"ab","pubkey":"cd","content":"hello hello hello hello"}"#;
        let first = format!(r#"["EVENT","one",{event}]"#);
        let second = format!(r#"["EVENT","sub \",{{\"id\":\"",{event}]"#);
        for text in [&first, &second] {
            assert_eq!(
                body_start(text).map(|at| &text[at..]),
                Some(&*format!("{event}]"))
            );
            let compressed = compress_message(text);
            assert_eq!(deflate::inflate(compressed, 1000).unwrap(), text.as_bytes());
        }
        assert_eq!(BODIES.with_borrow(VecDeque::len), 1);
        let other = r#"["OK","ab",true,""]"#;
        assert_eq!(body_start(other), None);
        assert_eq!(
            deflate::inflate(compress_message(other), 100).unwrap(),
            other.as_bytes()
        );
    }
}
