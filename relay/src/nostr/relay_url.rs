//! Relay URLs as NIP-42 compares them: scheme and host case-insensitively, the default
//! port of the scheme when none is given, and an empty path as `/`.

/// A relay URL, normalized for comparison.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayUrl {
    secure: bool,
    host: String,
    port: u16,
    path: String,
}

/// Text that is not a `ws://` or `wss://` URL.
#[derive(Debug, thiserror::Error)]
#[error("`{0}` is not a ws:// or wss:// URL")]
pub struct InvalidRelayUrl(String);

impl RelayUrl {
    /// Reads `ws://host[:port][/path]` or `wss://…`.
    pub fn parse(text: &str) -> Result<Self, InvalidRelayUrl> {
        let invalid = || InvalidRelayUrl(text.to_string());
        let (scheme, rest) = text.trim().split_once("://").ok_or_else(invalid)?;
        let secure = match scheme.to_ascii_lowercase().as_str() {
            "wss" => true,
            "ws" => false,
            _ => return Err(invalid()),
        };
        let (authority, path) = match rest.find(['/', '?', '#']) {
            Some(at) => (&rest[..at], &rest[at..]),
            None => (rest, ""),
        };
        let (host, port) = split_host(authority).ok_or_else(invalid)?;
        let port = port.unwrap_or(if secure { 443 } else { 80 });
        let path = path.split(['?', '#']).next().unwrap_or_default();
        Ok(Self {
            secure,
            host,
            port,
            path: normalized_path(path),
        })
    }

    /// The URLs a client that reached the relay at `host` (an HTTP `Host` header, with or
    /// without a port) may name: the root over `ws` and over `wss`.
    pub fn from_host(host: &str) -> Vec<Self> {
        let Some((name, port)) = split_host(host) else {
            return Vec::new();
        };
        [false, true]
            .into_iter()
            .map(|secure| Self {
                secure,
                host: name.clone(),
                port: port.unwrap_or(if secure { 443 } else { 80 }),
                path: "/".into(),
            })
            .collect()
    }
}

/// `host[:port]` (or `[v6]:port`), the host lowercased.
fn split_host(authority: &str) -> Option<(String, Option<u16>)> {
    let authority = authority.rsplit_once('@').map_or(authority, |(_, a)| a);
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        let (v6, after) = rest.split_once(']')?;
        let port = after.strip_prefix(':');
        (format!("[{v6}]"), port)
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) => (host.to_string(), Some(port)),
            None => (authority.to_string(), None),
        }
    };
    if host.is_empty() {
        return None;
    }
    let port = match port {
        Some(p) => Some(p.parse::<u16>().ok()?),
        None => None,
    };
    Some((host.to_ascii_lowercase(), port))
}

fn normalized_path(path: &str) -> String {
    let trimmed = path.trim_end_matches('/');
    if trimmed.is_empty() {
        "/".into()
    } else {
        trimmed.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_compare_as_nip_42_allows() {
        let ours = [RelayUrl::parse("wss://Relay.Example.com").unwrap()];
        for same in [
            "wss://relay.example.com/",
            "WSS://relay.example.com:443",
            "wss://relay.example.com",
        ] {
            assert!(ours.contains(&RelayUrl::parse(same).unwrap()), "{same}");
        }
        for other in [
            "ws://relay.example.com/",
            "wss://relay.example.com:8443/",
            "wss://other.example.com/",
            "wss://relay.example.com/inbox",
        ] {
            assert!(!ours.contains(&RelayUrl::parse(other).unwrap()), "{other}");
        }
        assert!(RelayUrl::parse("https://relay.example.com").is_err());
        assert!(RelayUrl::parse("wss://:443").is_err());
        let reached = RelayUrl::from_host("127.0.0.1:7777");
        assert!(reached.contains(&RelayUrl::parse("ws://127.0.0.1:7777/").unwrap()));
        assert!(!reached.contains(&RelayUrl::parse("ws://127.0.0.1:7778/").unwrap()));
    }
}
