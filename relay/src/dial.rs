//! Connections this relay's tools make to a relay: `starling admin` (HTTP) and
//! `starling sync` (WebSocket). One URL reading (`ws`, `wss`, `http`, `https`) and one way
//! to connect, over TLS for the secure schemes with the relay's one TLS stack.

use std::sync::Arc;

use anyhow::{Context, bail};
use tokio::io::{AsyncRead, AsyncWrite};

/// Anything a connection runs over: TCP, or TLS over TCP.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// Where a relay is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// TLS (`wss`, `https`) or not.
    pub secure: bool,
    /// `host[:port]` as written, for the `Host` header.
    pub authority: String,
    /// The host, brackets kept around an IPv6 address.
    pub host: String,
    /// The port, the scheme's default when none is written.
    pub port: u16,
    /// The path, `/` when none is written.
    pub path: String,
}

impl Target {
    /// Reads `ws://`, `wss://`, `http://` or `https://` URLs.
    pub fn parse(url: &str) -> anyhow::Result<Self> {
        let (scheme, rest) = url
            .split_once("://")
            .with_context(|| format!("`{url}` is not a URL like wss://relay.example.com"))?;
        let secure = match scheme.to_ascii_lowercase().as_str() {
            "wss" | "https" => true,
            "ws" | "http" => false,
            other => bail!("unsupported scheme `{other}` (use ws, wss, http or https)"),
        };
        let (authority, path) = match rest.find('/') {
            Some(at) => (&rest[..at], &rest[at..]),
            None => (rest, "/"),
        };
        let (host, port) = match authority.rsplit_once(':') {
            Some((host, port)) if !host.ends_with(']') || authority.starts_with('[') => {
                (host.to_string(), port.parse().context("the port")?)
            }
            _ => (authority.to_string(), if secure { 443 } else { 80 }),
        };
        Ok(Self {
            secure,
            authority: authority.to_string(),
            host,
            port,
            path: path.to_string(),
        })
    }

    /// The same place as an `http://` or `https://` URL (NIP-98's `u` tag).
    pub fn http_url(&self) -> String {
        let scheme = if self.secure { "https" } else { "http" };
        format!("{scheme}://{}{}", self.authority, self.path)
    }

    /// A connection to the target: TCP with `TCP_NODELAY`, and TLS checking the name and
    /// the system's roots for a secure scheme.
    pub async fn connect(&self) -> anyhow::Result<Box<dyn Io>> {
        let tcp = tokio::net::TcpStream::connect((self.host.trim_matches(['[', ']']), self.port))
            .await
            .with_context(|| format!("connecting to {}", self.authority))?;
        tcp.set_nodelay(true)?;
        if !self.secure {
            return Ok(Box::new(tcp));
        }
        let config = crate::tls::client_config(crate::tls::Verify::Full, None, None)?;
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        let name = rustls::pki_types::ServerName::try_from(self.host.clone())
            .context("the relay's host name")?;
        Ok(Box::new(connector.connect(name, tcp).await?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_of_every_scheme() {
        let t = Target::parse("wss://relay.example.com").unwrap();
        assert_eq!((t.secure, t.port, t.path.as_str()), (true, 443, "/"));
        assert_eq!(t.http_url(), "https://relay.example.com/");
        let t = Target::parse("ws://127.0.0.1:7777/nostr").unwrap();
        assert_eq!(
            (t.host.as_str(), t.port, t.path.as_str()),
            ("127.0.0.1", 7777, "/nostr")
        );
        assert_eq!(t.http_url(), "http://127.0.0.1:7777/nostr");
        let t = Target::parse("http://[::1]:8080").unwrap();
        assert_eq!((t.host.as_str(), t.port), ("[::1]", 8080));
        assert!(Target::parse("ftp://x").is_err());
        assert!(Target::parse("relay.example.com").is_err());
    }
}
