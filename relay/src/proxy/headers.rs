//! The client address a trusted proxy reports in an HTTP header.
//!
//! A proxy appends the address it received a request from to the header it is set up to
//! write, so a header holds a chain of hops, the client's first and the nearest proxy's
//! last. Anyone can write the left part of the chain; only the hops appended by proxies the
//! relay trusts can be believed. So the chain is read from the right: every hop that is
//! itself a trusted proxy is stepped over, and the first one that is not is the client.

use std::net::{IpAddr, SocketAddr};

use actix_web::http::header::HeaderMap;
use serde::{Deserialize, Serialize};

use super::{TrustedProxies, cidr::canonical};

/// The header trusted proxies report the client's address in.
#[derive(clap::ValueEnum, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum ProxyHeader {
    /// `X-Forwarded-For: client, proxy1, proxy2` (nginx, ingress-nginx, cloud load balancers).
    XForwardedFor,
    /// `X-Real-IP: client`, one address set by the nearest proxy.
    XRealIp,
    /// RFC 7239 `Forwarded: for=client, for=proxy1`.
    Forwarded,
}

impl ProxyHeader {
    fn name(self) -> &'static str {
        match self {
            Self::XForwardedFor => "x-forwarded-for",
            Self::XRealIp => "x-real-ip",
            Self::Forwarded => "forwarded",
        }
    }
}

/// The client's address for a request that came from `peer` with `headers`: `peer` itself
/// unless it is a trusted proxy, else the right-most hop of `header` that is not a trusted
/// proxy. A hop that cannot be read (`unknown`, an obfuscated name, garbage) ends the walk
/// at the trusted proxy that wrote it.
pub fn client_ip(
    peer: IpAddr,
    headers: &HeaderMap,
    header: ProxyHeader,
    trusted: &TrustedProxies,
) -> IpAddr {
    let mut nearest = canonical(peer);
    if !trusted.trusts(nearest) {
        return nearest;
    }
    let values = headers.get_all(header.name()).collect::<Vec<_>>();
    for value in values.into_iter().rev() {
        let Ok(value) = value.to_str() else {
            return nearest;
        };
        for hop in value.rsplit(',') {
            let hop = match header {
                ProxyHeader::Forwarded => forwarded_for(hop),
                ProxyHeader::XForwardedFor | ProxyHeader::XRealIp => node(hop),
            };
            match hop {
                Some(ip) if trusted.trusts(ip) => nearest = ip,
                Some(ip) => return ip,
                None => return nearest,
            }
        }
    }
    nearest
}

/// The `for=` address of one element of a `Forwarded` header (`for=1.2.3.4;proto=https`).
fn forwarded_for(element: &str) -> Option<IpAddr> {
    element.split(';').find_map(|pair| {
        let (key, value) = pair.split_once('=')?;
        key.trim()
            .eq_ignore_ascii_case("for")
            .then(|| node(value))?
    })
}

/// An address as proxies write it: `1.2.3.4`, `1.2.3.4:80`, `2001:db8::1`, `[2001:db8::1]`
/// or `[2001:db8::1]:80`, possibly quoted.
fn node(text: &str) -> Option<IpAddr> {
    let text = text.trim().trim_matches('"');
    if let Some(rest) = text.strip_prefix('[') {
        let (v6, _) = rest.split_once(']')?;
        return v6.parse().ok().map(canonical);
    }
    text.parse::<IpAddr>()
        .or_else(|_| text.parse::<SocketAddr>().map(|s| s.ip()))
        .ok()
        .map(canonical)
}

#[cfg(test)]
mod tests {
    use actix_web::http::header::{HeaderName, HeaderValue};

    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                HeaderName::from_static(name),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        map
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn trusted(ranges: &[&str]) -> TrustedProxies {
        TrustedProxies::new(ranges.iter().map(|r| r.parse().unwrap()).collect())
    }

    #[test]
    fn headers_from_untrusted_peers_are_ignored() {
        let map = headers(&[("x-forwarded-for", "203.0.113.7")]);
        let proxies = trusted(&["10.0.0.0/8"]);
        let direct = ip("198.51.100.1");
        assert_eq!(
            client_ip(direct, &map, ProxyHeader::XForwardedFor, &proxies),
            direct
        );
        assert_eq!(
            client_ip(
                direct,
                &map,
                ProxyHeader::XForwardedFor,
                &TrustedProxies::default()
            ),
            direct
        );
    }

    #[test]
    fn the_right_most_untrusted_hop_is_the_client() {
        let proxies = trusted(&["10.0.0.0/8"]);
        // The client forged the first entry; the proxy appended the real one.
        let map = headers(&[("x-forwarded-for", "1.1.1.1, 203.0.113.7, 10.0.0.2")]);
        let got = client_ip(ip("10.0.0.1"), &map, ProxyHeader::XForwardedFor, &proxies);
        assert_eq!(got, ip("203.0.113.7"));
        // Several header lines are one list, in order.
        let map = headers(&[
            ("x-forwarded-for", "1.1.1.1"),
            ("x-forwarded-for", "[2001:db8::7]:443, 10.0.0.3:8080"),
        ]);
        let got = client_ip(ip("10.0.0.1"), &map, ProxyHeader::XForwardedFor, &proxies);
        assert_eq!(got, ip("2001:db8::7"));
    }

    #[test]
    fn a_chain_of_trusted_hops_ends_at_its_left_most() {
        let proxies = trusted(&["10.0.0.0/8"]);
        let map = headers(&[("x-forwarded-for", "10.0.0.9, 10.0.0.8")]);
        let got = client_ip(ip("10.0.0.1"), &map, ProxyHeader::XForwardedFor, &proxies);
        assert_eq!(got, ip("10.0.0.9"));
        let none = headers(&[]);
        let got = client_ip(ip("10.0.0.1"), &none, ProxyHeader::XForwardedFor, &proxies);
        assert_eq!(got, ip("10.0.0.1"));
    }

    #[test]
    fn an_unreadable_hop_stops_at_the_proxy_that_wrote_it() {
        let proxies = trusted(&["10.0.0.0/8"]);
        for (value, nearest) in [
            ("203.0.113.7, garbage", "10.0.0.1"),
            ("203.0.113.7, unknown, 10.0.0.5", "10.0.0.5"),
        ] {
            let map = headers(&[("x-forwarded-for", value)]);
            let got = client_ip(ip("10.0.0.1"), &map, ProxyHeader::XForwardedFor, &proxies);
            assert_eq!(got, ip(nearest), "{value}");
        }
    }

    #[test]
    fn only_the_chosen_header_counts() {
        let proxies = trusted(&["127.0.0.1"]);
        let map = headers(&[
            ("x-forwarded-for", "203.0.113.7"),
            ("x-real-ip", "198.51.100.2"),
            ("forwarded", "for=192.0.2.60;proto=https"),
        ]);
        let peer = ip("127.0.0.1");
        assert_eq!(
            client_ip(peer, &map, ProxyHeader::XForwardedFor, &proxies),
            ip("203.0.113.7")
        );
        assert_eq!(
            client_ip(peer, &map, ProxyHeader::XRealIp, &proxies),
            ip("198.51.100.2")
        );
        assert_eq!(
            client_ip(peer, &map, ProxyHeader::Forwarded, &proxies),
            ip("192.0.2.60")
        );
    }

    #[test]
    fn forwarded_elements_are_read_as_rfc_7239_writes_them() {
        let proxies = trusted(&["10.0.0.0/8"]);
        let map = headers(&[(
            "forwarded",
            "for=1.1.1.1, For=\"[2001:db8:cafe::17]:4711\";proto=https;by=10.0.0.1",
        )]);
        let got = client_ip(ip("10.0.0.1"), &map, ProxyHeader::Forwarded, &proxies);
        assert_eq!(got, ip("2001:db8:cafe::17"));
        let hidden = headers(&[("forwarded", "for=_hidden, for=10.0.0.4")]);
        let got = client_ip(ip("10.0.0.1"), &hidden, ProxyHeader::Forwarded, &proxies);
        assert_eq!(got, ip("10.0.0.4"));
    }
}
