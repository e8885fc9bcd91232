//! Starling's WebSocket transport (RFC 6455) with permessage-deflate (RFC 7692).
//!
//! actix-web still does the HTTP part: the upgrade request is checked and answered with
//! actix-http's handshake (`Sec-WebSocket-Accept` from `Sec-WebSocket-Key`), the `101`
//! response's body streams what a [`Session`] sends, and the client's frames are read from
//! the request's payload as a [`MessageStream`]. This module is the only code that sees
//! frames: actix-http's own WebSocket codec cannot tell a compressed frame (RSV1) from a
//! plain one, so it could not do permessage-deflate.
//!
//! - [`extension`]: the `Sec-WebSocket-Extensions` negotiation;
//! - [`frame`]: frame headers, read and written;
//! - [`read`]: whole messages from frames (joined, inflated, checked, bounded);
//! - [`write`]: frames from messages (text compressed), into the response body;
//! - [`deflate`]: the per-thread compressor and decompressor;
//! - `shared`: an event's compressed JSON, kept per thread for all its subscribers.

pub mod deflate;
mod extension;
pub mod frame;
mod read;
mod shared;
mod write;

use std::sync::Arc;

use actix_http::body::{BodyStream, MessageBody};
use actix_web::{HttpRequest, HttpResponse, http::header, web};

pub use actix_http::ws::{CloseCode, CloseReason};
pub use read::{Assembler, Message, MessageStream, ReadError};
pub use write::{Closed, Session};

use crate::metrics::Metrics;

/// How a connection's transport behaves.
#[derive(Clone)]
pub struct Settings {
    /// Largest message accepted (after inflating), in bytes.
    pub max_message_bytes: usize,
    /// Whether permessage-deflate is negotiated when the client offers it.
    pub compression: bool,
    /// Text shorter than this is sent uncompressed.
    pub compression_min_bytes: usize,
}

/// Answers a WebSocket upgrade: the `101` response, the session to send with and the stream
/// of the client's messages; an error response when the handshake is not valid.
pub fn handle(
    req: &HttpRequest,
    body: web::Payload,
    settings: &Settings,
    metrics: &Arc<Metrics>,
) -> Result<(HttpResponse, Session, MessageStream), actix_web::Error> {
    let mut response = actix_http::ws::handshake(req.head())?;
    let accepted = settings
        .compression
        .then(|| {
            let offers = req.headers().get_all(header::SEC_WEBSOCKET_EXTENSIONS);
            extension::negotiate(offers.filter_map(|v| v.to_str().ok()))
        })
        .flatten();
    let compression = accepted.as_ref().map(|_| write::Compression {
        min_bytes: settings.compression_min_bytes,
        metrics: Arc::clone(metrics),
    });
    if let Some(extension::Accepted(answer)) = &accepted {
        response.insert_header((header::SEC_WEBSOCKET_EXTENSIONS, answer.as_str()));
    }
    let (session, mut out) = Session::new(compression);
    let gone = out.gone_signal();
    let stream = MessageStream::new(
        body.into_inner(),
        gone,
        settings.max_message_bytes,
        accepted.is_some(),
    );
    let response = response.message_body(BodyStream::new(out).boxed())?;
    Ok((response.into(), session, stream))
}
