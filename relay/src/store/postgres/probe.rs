//! The start-up check of `DATABASE_URL`: one connection is made, and a failure that a
//! setting causes (TLS the server does not pass or does not offer, a plain connection to a
//! server that takes TLS only, a login the server refuses, a database that does not exist,
//! a pooler that does not keep sessions) stops the start, naming the setting; a server
//! that is down or not answering does not, since the store connects whenever it is back.

use deadpool_postgres::{HookError, PoolError};

use super::tls::{self, SslMode};

/// What a failed first connection means.
#[derive(Debug)]
pub enum Failure {
    /// A setting to fix: the relay must not start.
    Refused(anyhow::Error),
    /// The server is down or not answering for now.
    Unreachable(String),
}

/// Judges the error of the first connection made with `sslmode = mode`.
pub fn judge(error: PoolError, mode: SslMode) -> Failure {
    let backend = match error {
        PoolError::Backend(error) | PoolError::PostCreateHook(HookError::Backend(error)) => error,
        other => return Failure::Unreachable(other.to_string()),
    };
    match refusal(&backend, mode) {
        Some(why) => Failure::Refused(anyhow::Error::new(backend).context(why)),
        None => Failure::Unreachable(backend.to_string()),
    }
}

/// Why the server's answer `error` is a setting to fix, or `None` when it may be a server
/// that is down.
fn refusal(error: &tokio_postgres::Error, mode: SslMode) -> Option<String> {
    let mode_name = mode.name();
    if tls::is_tls_failure(error) {
        return Some(format!(
            "DATABASE_URL: TLS to PostgreSQL failed (sslmode={mode_name}, sslrootcert, sslcert, sslkey)"
        ));
    }
    if tls::is_tls_unsupported(error) {
        return Some(format!(
            "DATABASE_URL: sslmode={mode_name} asks for TLS and the server does not support \
             TLS (turn ssl on in PostgreSQL, or set sslmode=disable or prefer)"
        ));
    }
    let code = error.code()?.code();
    if code.starts_with("28") {
        let hint = match mode {
            SslMode::Disable => {
                "; with sslmode=disable the connection is plain, and a server may accept TLS \
                 connections only (set sslmode=require or stronger)"
            }
            _ => "",
        };
        return Some(format!(
            "DATABASE_URL: PostgreSQL refused the login (check the user, password, client \
             certificate and sslmode={mode_name}){hint}"
        ));
    }
    if code == "3D000" {
        return Some(
            "DATABASE_URL: the database it names does not exist on the server".to_string(),
        );
    }
    None
}
