//! TLS to PostgreSQL, set in `DATABASE_URL` with libpq's parameters: `sslmode` (`disable`,
//! `prefer`, the default, `require`, `verify-ca`, `verify-full`), `sslrootcert` (a PEM file
//! of trusted roots; without one the system's roots are trusted), and `sslcert` with
//! `sslkey` (a client certificate). As in libpq, `require` with a root file checks the
//! chain as `verify-ca` does, and `prefer` falls back to a plain connection when the server
//! has no TLS.
//!
//! tokio-postgres knows only `disable`, `prefer` and `require`; this module takes the TLS
//! parameters out of the URL, tells tokio-postgres whether TLS is wanted, and checks the
//! server's certificate itself (rustls, see [`crate::tls`]).

use std::{
    future::Future,
    io,
    path::PathBuf,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use anyhow::{Context as _, bail};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_postgres::tls::{ChannelBinding, MakeTlsConnect, TlsConnect};
use tokio_rustls::{TlsConnector, client::TlsStream};

use crate::tls::{Verify, client_config};

/// The TLS parameters of a `DATABASE_URL`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgTlsSettings {
    /// `sslmode`.
    pub mode: SslMode,
    /// `sslrootcert`: trusted roots, PEM.
    pub root_cert: Option<PathBuf>,
    /// `sslcert`: the client's certificate chain, PEM.
    pub client_cert: Option<PathBuf>,
    /// `sslkey`: the client's private key, PEM.
    pub client_key: Option<PathBuf>,
}

/// libpq's `sslmode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    /// Never TLS.
    Disable,
    /// TLS when the server offers it, unchecked; plain otherwise.
    Prefer,
    /// TLS, the certificate unchecked (checked as `verify-ca` with a root file).
    Require,
    /// TLS, the certificate's chain checked.
    VerifyCa,
    /// TLS, the certificate's chain and name checked.
    VerifyFull,
}

impl SslMode {
    /// The mode as `DATABASE_URL` spells it.
    pub fn name(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }
}

const TLS_KEYS: [&str; 4] = ["sslmode", "sslrootcert", "sslcert", "sslkey"];

/// Splits `url` (a `postgres://` URL or `key=value` words) into what tokio-postgres parses
/// and the TLS settings.
pub fn split_url(url: &str) -> anyhow::Result<(String, PgTlsSettings)> {
    let mut found: Vec<(String, String)> = Vec::new();
    let rest = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let (base, query) = url.split_once('?').unwrap_or((url, ""));
        let kept: Vec<&str> = query
            .split('&')
            .filter(|pair| !pair.is_empty())
            .filter(|pair| {
                let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
                let ours = TLS_KEYS.contains(&key);
                if ours {
                    found.push((key.to_string(), percent_decoded(value)));
                }
                !ours
            })
            .collect();
        if kept.is_empty() {
            base.to_string()
        } else {
            format!("{base}?{}", kept.join("&"))
        }
    } else {
        let kept: Vec<&str> = url
            .split_whitespace()
            .filter(|word| {
                let (key, value) = word.split_once('=').unwrap_or((word, ""));
                let key = key.trim();
                let ours = TLS_KEYS.contains(&key);
                if ours {
                    found.push((key.to_string(), value.trim_matches('\'').to_string()));
                }
                !ours
            })
            .collect();
        kept.join(" ")
    };
    let mut settings = PgTlsSettings {
        mode: SslMode::Prefer,
        root_cert: None,
        client_cert: None,
        client_key: None,
    };
    for (key, value) in found {
        match key.as_str() {
            "sslmode" => {
                settings.mode = match value.as_str() {
                    "disable" => SslMode::Disable,
                    "allow" | "prefer" => SslMode::Prefer,
                    "require" => SslMode::Require,
                    "verify-ca" => SslMode::VerifyCa,
                    "verify-full" => SslMode::VerifyFull,
                    other => bail!(
                        "DATABASE_URL: sslmode={other} is not one of disable, prefer, require, verify-ca, verify-full"
                    ),
                }
            }
            "sslrootcert" => settings.root_cert = Some(value.into()),
            "sslcert" => settings.client_cert = Some(value.into()),
            _ => settings.client_key = Some(value.into()),
        }
    }
    if settings.client_cert.is_some() != settings.client_key.is_some() {
        bail!("DATABASE_URL: sslcert and sslkey go together");
    }
    Ok((rest, settings))
}

fn percent_decoded(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (
            bytes[i],
            bytes.get(i + 1).copied().and_then(hex),
            bytes.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(high), Some(low)) => {
                out.push((high * 16 + low) as u8);
                i += 3;
            }
            (byte, _, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl PgTlsSettings {
    /// What tokio-postgres is told: whether to ask the server for TLS.
    pub fn tokio_mode(&self) -> tokio_postgres::config::SslMode {
        use tokio_postgres::config::SslMode as Tokio;
        match self.mode {
            SslMode::Disable => Tokio::Disable,
            SslMode::Prefer => Tokio::Prefer,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => Tokio::Require,
        }
    }

    /// The connector that checks the server as the settings say; reads the PEM files now,
    /// so that a missing or bad one is reported at start-up.
    pub fn connector(&self) -> anyhow::Result<PgTls> {
        let verify = match (self.mode, &self.root_cert) {
            (SslMode::Disable | SslMode::Prefer, _) | (SslMode::Require, None) => Verify::Nothing,
            (SslMode::Require | SslMode::VerifyCa, _) => Verify::Chain,
            (SslMode::VerifyFull, _) => Verify::Full,
        };
        let identity = self.client_cert.as_deref().zip(self.client_key.as_deref());
        let config = client_config(verify, self.root_cert.as_deref(), identity)
            .context("DATABASE_URL's TLS settings")?;
        Ok(PgTls(TlsConnector::from(Arc::new(config))))
    }
}

/// Whether `error` (or one of its causes) is a failed TLS handshake or certificate check:
/// a setting to fix, not a database that is down.
pub fn is_tls_failure(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(error);
    while let Some(error) = next {
        if error.is::<rustls::Error>() {
            return true;
        }
        let inner = error.downcast_ref::<io::Error>().and_then(|e| e.get_ref());
        if inner.is_some_and(|inner| inner.is::<rustls::Error>()) {
            return true;
        }
        next = error.source();
    }
    false
}

/// Whether `error` says that the server answered the request for TLS with no: it has no
/// TLS. tokio-postgres reports it as a TLS error whose cause is this text alone (and no
/// other way: its error kinds are private); every other TLS error comes from the connector
/// here, and [`is_tls_failure`] knows those.
pub fn is_tls_unsupported(error: &tokio_postgres::Error) -> bool {
    use std::error::Error as _;
    error
        .source()
        .is_some_and(|cause| cause.to_string() == "server does not support TLS")
}

/// Makes TLS sessions to PostgreSQL for tokio-postgres.
#[derive(Clone)]
pub struct PgTls(TlsConnector);

impl<S> MakeTlsConnect<S> for PgTls
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = PgTlsStream<S>;
    type TlsConnect = PgTlsConnect;
    type Error = rustls::pki_types::InvalidDnsNameError;

    fn make_tls_connect(&mut self, domain: &str) -> Result<PgTlsConnect, Self::Error> {
        // A Unix socket has no host name (tokio-postgres asks with ""), and PostgreSQL
        // never speaks TLS on one.
        let name = match domain {
            "" => None,
            domain => Some(ServerName::try_from(domain.to_string())?),
        };
        Ok(PgTlsConnect(self.0.clone(), name))
    }
}

/// One TLS handshake with a server of a given name (none for a Unix socket, where
/// tokio-postgres does not start one).
pub struct PgTlsConnect(TlsConnector, Option<ServerName<'static>>);

impl<S> TlsConnect<S> for PgTlsConnect
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = PgTlsStream<S>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<PgTlsStream<S>>> + Send>>;

    fn connect(self, stream: S) -> Self::Future {
        let Self(connector, name) = self;
        Box::pin(async move {
            let name = name.ok_or_else(|| io::Error::other("TLS needs the server's host name"))?;
            connector.connect(name, stream).await.map(PgTlsStream)
        })
    }
}

/// A TLS session with PostgreSQL.
pub struct PgTlsStream<S>(TlsStream<S>);

impl<S: AsyncRead + AsyncWrite + Unpin> tokio_postgres::tls::TlsStream for PgTlsStream<S> {
    fn channel_binding(&self) -> ChannelBinding {
        ChannelBinding::none()
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for PgTlsStream<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_read(cx, buf)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for PgTlsStream<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().0).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_parameters_leave_the_url() {
        let (rest, tls) = split_url(
            "postgres://u:p@db:5432/relay?sslmode=verify-full&application_name=x&sslrootcert=%2Fetc%2Fca.pem",
        )
        .unwrap();
        assert_eq!(rest, "postgres://u:p@db:5432/relay?application_name=x");
        assert_eq!(tls.mode, SslMode::VerifyFull);
        assert_eq!(tls.root_cert, Some(PathBuf::from("/etc/ca.pem")));

        let (rest, tls) =
            split_url("host=db user=u sslmode=require sslcert=/c.pem sslkey=/k.pem").unwrap();
        assert_eq!(rest, "host=db user=u");
        assert_eq!(tls.mode, SslMode::Require);
        assert_eq!(tls.client_key, Some(PathBuf::from("/k.pem")));

        let (rest, tls) = split_url("postgres://db/relay").unwrap();
        assert_eq!(rest, "postgres://db/relay");
        assert_eq!(tls.mode, SslMode::Prefer);
    }

    #[test]
    fn bad_tls_parameters_are_refused_by_name() {
        let error = split_url("postgres://db/relay?sslmode=sometimes").unwrap_err();
        assert!(error.to_string().contains("sslmode=sometimes"), "{error}");
        let error = split_url("postgres://db/relay?sslcert=/c.pem").unwrap_err();
        assert!(error.to_string().contains("sslkey"), "{error}");
    }
}
