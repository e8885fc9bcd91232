//! `starling admin`: calls the management API of a relay from a shell, signing each call
//! with NIP-98, and prints the answer for a person to read.
//!
//! The key is a 64-hex secret read from `--key-file` or `STARLING_ADMIN_KEY`. Parameters
//! are given as words; a word that is a number is sent as a number (`allowkind 30023`).
//! One plain HTTP/1.1 request per call (`Connection: close`), over TLS for `https://` and
//! `wss://` relays.

use std::path::Path;

use anyhow::Context;
use base64::Engine;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::endpoint::CONTENT_TYPE;
use crate::{
    dial::{Io, Target},
    nostr::{Keys, hex},
};

/// The admin's secret key from `key_file`, or else from `STARLING_ADMIN_KEY`.
pub fn admin_keys(key_file: Option<&Path>) -> anyhow::Result<Keys> {
    let secret = match key_file {
        Some(path) => std::fs::read_to_string(path)
            .with_context(|| format!("reading the key file {}", path.display()))?,
        None => std::env::var("STARLING_ADMIN_KEY")
            .context("give the admin's secret key with --key-file or STARLING_ADMIN_KEY")?,
    };
    hex::decode::<32>(secret.trim())
        .and_then(Keys::from_secret)
        .context("the admin key must be a secret key of 64 lowercase hex characters")
}

/// The parameters as JSON: numbers as numbers, anything else as strings.
pub fn params(words: &[String]) -> Vec<Value> {
    words
        .iter()
        .map(|w| match w.parse::<i64>() {
            Ok(n) => json!(n),
            Err(_) => json!(w),
        })
        .collect()
}

/// Calls `method` with `params` on the relay at `relay`, signed by `keys`: the HTTP status
/// and the JSON answer.
pub async fn call(
    relay: &str,
    keys: &Keys,
    method: &str,
    params: Vec<Value>,
) -> anyhow::Result<(u16, Value)> {
    let target = Target::parse(relay)?;
    let body = json!({ "method": method, "params": params }).to_string();
    let digest = hex::encode(&<[u8; 32]>::from(Sha256::digest(body.as_bytes())));
    let tags = vec![
        vec!["u".to_string(), target.http_url()],
        vec!["method".to_string(), "POST".to_string()],
        vec!["payload".to_string(), digest],
    ];
    let auth = keys.sign(crate::policy::now(), super::nip98::HTTP_AUTH_KIND, tags, "");
    let auth = base64::engine::general_purpose::STANDARD.encode(auth.to_json());
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: {CONTENT_TYPE}\r\n\
         Authorization: Nostr {auth}\r\nContent-Length: {length}\r\nConnection: close\r\n\r\n{body}",
        path = target.path,
        host = target.authority,
        length = body.len(),
    );
    let response = exchange(target.connect().await?, &request).await?;
    parse_response(&response)
}

async fn exchange(mut stream: Box<dyn Io>, request: &str) -> anyhow::Result<Vec<u8>> {
    stream.write_all(request.as_bytes()).await?;
    stream.flush().await?;
    let mut response = Vec::new();
    stream
        .take(16 << 20)
        .read_to_end(&mut response)
        .await
        .context("reading the answer")?;
    Ok(response)
}

fn parse_response(response: &[u8]) -> anyhow::Result<(u16, Value)> {
    let text = String::from_utf8_lossy(response);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .context("the relay's answer is not HTTP")?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .context("the relay's answer has no status")?;
    let chunked = head
        .lines()
        .any(|l| l.to_ascii_lowercase().starts_with("transfer-encoding:") && l.contains("chunked"));
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_string()
    };
    let value = serde_json::from_str(body.trim()).unwrap_or(Value::String(body));
    Ok((status, value))
}

fn dechunk(body: &str) -> String {
    let mut out = String::new();
    let mut rest = body;
    while let Some((size, after)) = rest.split_once("\r\n") {
        let Ok(size) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if size == 0 || after.len() < size {
            break;
        }
        out.push_str(&after[..size]);
        rest = after[size..].trim_start_matches("\r\n");
    }
    out
}

/// The answer as a person reads it: lists one entry a line, `true` as "done".
pub fn describe(status: u16, answer: &Value) -> Result<String, String> {
    if let Some(error) = answer.get("error").and_then(Value::as_str) {
        return Err(format!("{error} (HTTP {status})"));
    }
    let Some(result) = answer.get("result") else {
        return Err(format!("unexpected answer (HTTP {status}): {answer}"));
    };
    Ok(match result {
        Value::Bool(true) => "done".to_string(),
        Value::Array(items) if items.is_empty() => "(none)".to_string(),
        Value::Array(items) => items
            .iter()
            .map(|item| match item {
                Value::Object(fields) => fields
                    .iter()
                    .map(|(k, v)| match v {
                        Value::String(s) => format!("{k}={s}"),
                        other => format!("{k}={other}"),
                    })
                    .collect::<Vec<_>>()
                    .join("  "),
                Value::String(s) => s.clone(),
                other => other.to_string(),
            })
            .collect::<Vec<_>>()
            .join("\n"),
        other => other.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_and_answers() {
        assert_eq!(
            params(&["1".into(), "spam".into()]),
            vec![json!(1), json!("spam")]
        );
        let (status, body) = parse_response(
            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\r\n{\"result\":true}",
        )
        .unwrap();
        assert_eq!(describe(status, &body), Ok("done".into()));
        let list = json!({"result": [{"pubkey": "ab", "reason": "spam"}]});
        assert_eq!(describe(200, &list), Ok("pubkey=ab  reason=spam".into()));
        assert!(describe(401, &json!({"error": "no"})).is_err());
        assert_eq!(dechunk("5\r\nhello\r\n0\r\n\r\n"), "hello");
    }
}
