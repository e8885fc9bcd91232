//! The management API over HTTP: a `POST` to the relay's URL with `Content-Type:
//! application/nostr+json+rpc`, a JSON body `{"method": …, "params": […]}` and NIP-98
//! authorization by one of `--admin-pubkeys`.
//!
//! Answers: 200 `{"result": …}`; 400 `{"error": …}` for an unknown method or wrong
//! parameters; 401 for a missing, invalid or non-admin authorization, or one replayed for a
//! change; 413 for a body over [`MAX_BODY_BYTES`] (declared or sent: answered at once, with
//! `Connection: close`, what is left unread); 415 for another content type; 500 when the
//! store failed (its text stays in the logs).

use std::{collections::HashMap, sync::Mutex};

use actix_web::{HttpRequest, HttpResponse, http::header, web};
use futures_util::StreamExt;
use opentelemetry::KeyValue;
use serde_json::{Value, json};

use super::{
    methods::{self, CallError},
    nip98,
};
use crate::{node::Node, nostr::hex, policy};

/// The content type of a management call.
pub const CONTENT_TYPE: &str = "application/nostr+json+rpc";

/// Largest request body, in bytes.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// Signatures of the authorizations of changes this node has accepted within their window:
/// each authorizes one change, so a captured header cannot be played again (to undo a later
/// ban, say). Keyed by signature, not id: the same call signed twice in one second has one
/// id, and a signer's fresh nonce makes its signatures differ. Reads may be repeated.
#[derive(Default)]
pub struct Replays(Mutex<HashMap<[u8; 64], u64>>);

impl Replays {
    /// Most authorizations remembered at once; past it, changes wait for old ones to expire.
    const MAX: usize = 10_000;

    /// Records `sig` (seen at `now`) unless it was seen; whether it is new.
    fn first_use(&self, id: [u8; 64], now: u64) -> bool {
        let mut seen = self.0.lock().unwrap_or_else(|p| p.into_inner());
        seen.retain(|_, at| at.abs_diff(now) <= 2 * nip98::WINDOW_SECONDS);
        if seen.len() >= Self::MAX {
            return false;
        }
        seen.insert(id, now).is_none()
    }
}

#[derive(serde::Deserialize)]
struct Call {
    method: String,
    #[serde(default)]
    params: Vec<Value>,
}

/// Whether `req` is a management call (by its content type).
pub fn is_management_call(req: &HttpRequest) -> bool {
    req.headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(';').next().unwrap_or_default().trim() == CONTENT_TYPE)
}

/// Why a call's body was not read.
enum Unread {
    /// It is longer than [`MAX_BODY_BYTES`].
    TooLarge,
    /// The client stopped sending it, or sent it broken.
    Broken,
}

/// The body of `req`, at most [`MAX_BODY_BYTES`]: one declared longer is refused before any
/// of it is read, one sent longer as soon as it passes the bound.
async fn read_body(req: &HttpRequest, mut payload: web::Payload) -> Result<web::Bytes, Unread> {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY_BYTES as u64) {
        return Err(Unread::TooLarge);
    }
    let mut body = web::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|_| Unread::Broken)?;
        if body.len() + chunk.len() > MAX_BODY_BYTES {
            return Err(Unread::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

/// Answers one management call.
pub async fn handle(
    req: HttpRequest,
    payload: web::Payload,
    node: web::Data<Node>,
    replays: web::Data<Replays>,
) -> HttpResponse {
    let node = node.into_inner();
    let count = |method: &str, outcome: &'static str| {
        let method = methods::METHODS
            .iter()
            .find(|m| **m == method)
            .copied()
            .unwrap_or("unknown");
        let labels = [
            KeyValue::new("method", method),
            KeyValue::new("outcome", outcome),
        ];
        node.metrics().management_calls.add(1, &labels);
    };
    if !is_management_call(&req) {
        count("", "invalid");
        return answer(
            HttpResponse::UnsupportedMediaType(),
            json!({ "error": format!("management calls are {CONTENT_TYPE}") }),
        );
    }
    let body = match read_body(&req, payload).await {
        Ok(body) => body,
        Err(Unread::TooLarge) => {
            count("", "too-large");
            // The rest of the body is not read: the connection closes after the answer.
            let mut status = HttpResponse::PayloadTooLarge();
            status.force_close();
            let why = format!("the body must be at most {MAX_BODY_BYTES} bytes");
            return answer(status, json!({ "error": why }));
        }
        Err(Unread::Broken) => {
            count("", "invalid");
            let why = "the body could not be read";
            return answer(HttpResponse::BadRequest(), json!({ "error": why }));
        }
    };
    let (admin, signature) = match authorize(&req, &body, &node) {
        Ok(authorized) => authorized,
        Err(why) => {
            count("", "unauthorized");
            return answer(HttpResponse::Unauthorized(), json!({ "error": why }));
        }
    };
    let call: Call = match serde_json::from_slice(&body) {
        Ok(call) => call,
        Err(_) => {
            count("", "invalid");
            return answer(
                HttpResponse::BadRequest(),
                json!({ "error": "the body must be {\"method\": <name>, \"params\": [...]}" }),
            );
        }
    };
    if methods::changes(&call.method) && !replays.first_use(signature, policy::now()) {
        count(&call.method, "unauthorized");
        let why = "this authorization was used already; sign a new one";
        return answer(HttpResponse::Unauthorized(), json!({ "error": why }));
    }
    match methods::call(&node, &admin, &call.method, &call.params).await {
        Ok(result) => {
            count(&call.method, "ok");
            if methods::changes(&call.method) {
                let params = Value::Array(call.params).to_string();
                tracing::info!(admin, method = call.method, params, "management call");
            }
            answer(HttpResponse::Ok(), json!({ "result": result }))
        }
        Err(CallError::Invalid(why)) => {
            count(&call.method, "invalid");
            answer(
                HttpResponse::BadRequest(),
                json!({ "result": null, "error": why }),
            )
        }
        Err(CallError::Store(error)) => {
            count(&call.method, "error");
            tracing::error!(%error, method = call.method, "a management call failed in the store");
            answer(
                HttpResponse::InternalServerError(),
                json!({ "result": null, "error": "error: the store failed; try again" }),
            )
        }
    }
}

/// The admin's hex pubkey and the authorization's signature, if the request's NIP-98
/// authorization is valid, fresh and an admin's; otherwise why not.
fn authorize(req: &HttpRequest, body: &[u8], node: &Node) -> Result<(String, [u8; 64]), String> {
    let header = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok());
    let urls = policy::auth::relay_urls(node.config(), host);
    let event = nip98::check(header, req.method().as_str(), body, &urls, policy::now())
        .map_err(|e| e.to_string())?;
    let admin = hex::encode(&event.pubkey);
    if !node.config().admin_pubkeys.contains(&admin) {
        return Err("this pubkey may not manage this relay".into());
    }
    event
        .verify()
        .map_err(|_| "the authorization event's id or signature is wrong".to_string())?;
    Ok((admin, event.sig))
}

fn answer(mut status: actix_web::HttpResponseBuilder, body: Value) -> HttpResponse {
    status
        .content_type("application/json")
        .body(body.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_authorization_is_used_once() {
        let replays = Replays::default();
        assert!(replays.first_use([1; 64], 1000));
        assert!(!replays.first_use([1; 64], 1010));
        assert!(replays.first_use([2; 64], 1010));
        // Long past its window, it is forgotten (and refused by the window check).
        assert!(replays.first_use([1; 64], 1000 + 3 * nip98::WINDOW_SECONDS));
    }
}
