//! The PROXY protocol header (versions 1 and 2) that load balancers such as HAProxy and
//! AWS NLB put before a connection's first byte to say where it came from.
//!
//! Version 1 is one line of text (`PROXY TCP4 203.0.113.7 10.0.0.1 51234 443\r\n`, at most
//! 107 bytes); version 2 is a 16-byte binary head (a fixed signature, the command, the
//! address family and the length of what follows), the addresses, then optional TLVs, which
//! are skipped. A `LOCAL` (v2) or `UNKNOWN` (v1) header, which a balancer sends for its own
//! health checks, names no client: the connection is the balancer's own.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// Longest header accepted, TLVs included; a longer one closes the connection.
pub const MAX_HEADER_BYTES: usize = 1024;

const V1_PREFIX: &[u8] = b"PROXY ";
const V1_MAX: usize = 107;
const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
const V2_HEAD: usize = 16;

/// What the first bytes of a connection say.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed {
    /// More bytes are needed.
    Incomplete,
    /// A whole header of `len` bytes, and the client it names (none for a balancer's own).
    Header {
        /// Bytes the header takes; the connection's own bytes follow.
        len: usize,
        /// The client's address and port.
        source: Option<SocketAddr>,
    },
}

/// Bytes that are not a PROXY header.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum InvalidHeader {
    /// The connection does not start with either version's signature.
    #[error("the connection does not start with a PROXY protocol header")]
    Missing,
    /// The header is longer than [`MAX_HEADER_BYTES`] (or 107 bytes for version 1).
    #[error("the PROXY protocol header is too long")]
    TooLong,
    /// The header breaks the protocol.
    #[error("malformed PROXY protocol header: {0}")]
    Malformed(&'static str),
}

/// Reads the header at the start of `bytes`.
pub fn parse(bytes: &[u8]) -> Result<Parsed, InvalidHeader> {
    if bytes.starts_with(V2_SIGNATURE) {
        return parse_v2(bytes);
    }
    if bytes.starts_with(V1_PREFIX) {
        return parse_v1(bytes);
    }
    if V2_SIGNATURE.starts_with(bytes) || V1_PREFIX.starts_with(bytes) {
        return Ok(Parsed::Incomplete);
    }
    Err(InvalidHeader::Missing)
}

fn parse_v1(bytes: &[u8]) -> Result<Parsed, InvalidHeader> {
    let window = &bytes[..bytes.len().min(V1_MAX)];
    let Some(end) = window.windows(2).position(|w| w == b"\r\n") else {
        return if bytes.len() >= V1_MAX {
            Err(InvalidHeader::TooLong)
        } else {
            Ok(Parsed::Incomplete)
        };
    };
    let line = std::str::from_utf8(&bytes[V1_PREFIX.len()..end])
        .map_err(|_| InvalidHeader::Malformed("not text"))?;
    let mut fields = line.split(' ');
    let family = fields.next().unwrap_or_default();
    let len = end + 2;
    if family == "UNKNOWN" {
        return Ok(Parsed::Header { len, source: None });
    }
    let (Some(source), Some(destination), Some(port), Some(_), None) = (
        fields.next(),
        fields.next(),
        fields.next(),
        fields.next(),
        fields.next(),
    ) else {
        return Err(InvalidHeader::Malformed("a version 1 line has six fields"));
    };
    let source: IpAddr = match family {
        "TCP4" => source.parse::<Ipv4Addr>().map(IpAddr::V4),
        "TCP6" => source.parse::<Ipv6Addr>().map(IpAddr::V6),
        _ => return Err(InvalidHeader::Malformed("unknown version 1 family")),
    }
    .map_err(|_| InvalidHeader::Malformed("bad source address"))?;
    if destination.parse::<IpAddr>().is_err() {
        return Err(InvalidHeader::Malformed("bad destination address"));
    }
    let port = port
        .parse::<u16>()
        .map_err(|_| InvalidHeader::Malformed("bad source port"))?;
    Ok(Parsed::Header {
        len,
        source: Some(SocketAddr::new(source, port)),
    })
}

fn parse_v2(bytes: &[u8]) -> Result<Parsed, InvalidHeader> {
    if bytes.len() < V2_HEAD {
        return Ok(Parsed::Incomplete);
    }
    let version_command = bytes[12];
    let family = bytes[13];
    let body = usize::from(u16::from_be_bytes([bytes[14], bytes[15]]));
    let len = V2_HEAD + body;
    if version_command >> 4 != 2 {
        return Err(InvalidHeader::Malformed(
            "version 2 header with another version",
        ));
    }
    if len > MAX_HEADER_BYTES {
        return Err(InvalidHeader::TooLong);
    }
    if bytes.len() < len {
        return Ok(Parsed::Incomplete);
    }
    let addresses = &bytes[V2_HEAD..len];
    let source = match (version_command & 0x0f, family >> 4) {
        // LOCAL: the balancer's own connection.
        (0, _) => None,
        (1, 1) => {
            let a = addresses
                .get(..12)
                .ok_or(InvalidHeader::Malformed("short IPv4 addresses"))?;
            let ip = Ipv4Addr::new(a[0], a[1], a[2], a[3]);
            Some(SocketAddr::new(ip.into(), u16::from_be_bytes([a[8], a[9]])))
        }
        (1, 2) => {
            let a = addresses
                .get(..36)
                .ok_or(InvalidHeader::Malformed("short IPv6 addresses"))?;
            let mut octets = [0u8; 16];
            octets.copy_from_slice(&a[..16]);
            let ip = Ipv6Addr::from(octets);
            Some(SocketAddr::new(
                ip.into(),
                u16::from_be_bytes([a[32], a[33]]),
            ))
        }
        // UNSPEC or UNIX sockets: no IP address to count.
        (1, _) => None,
        _ => return Err(InvalidHeader::Malformed("unknown version 2 command")),
    };
    Ok(Parsed::Header { len, source })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v2(command: u8, family: u8, addresses: &[u8]) -> Vec<u8> {
        let mut bytes = V2_SIGNATURE.to_vec();
        bytes.push(0x20 | command);
        bytes.push(family);
        bytes.extend_from_slice(&(addresses.len() as u16).to_be_bytes());
        bytes.extend_from_slice(addresses);
        bytes
    }

    #[test]
    fn version_1_lines_name_the_client() {
        let header = b"PROXY TCP4 203.0.113.7 10.0.0.1 51234 443\r\nGET / HTTP/1.1\r\n";
        assert_eq!(
            parse(header),
            Ok(Parsed::Header {
                len: 43,
                source: Some("203.0.113.7:51234".parse().unwrap())
            })
        );
        let six = b"PROXY TCP6 2001:db8::7 2001:db8::1 4000 443\r\n";
        let Ok(Parsed::Header { source, .. }) = parse(six) else {
            panic!("not parsed");
        };
        assert_eq!(source, Some("[2001:db8::7]:4000".parse().unwrap()));
        assert_eq!(
            parse(b"PROXY UNKNOWN\r\n"),
            Ok(Parsed::Header {
                len: 15,
                source: None
            })
        );
    }

    #[test]
    fn version_2_heads_name_the_client() {
        let mut four = vec![203, 0, 113, 7, 10, 0, 0, 1];
        four.extend_from_slice(&51234u16.to_be_bytes());
        four.extend_from_slice(&443u16.to_be_bytes());
        // A TLV after the addresses is skipped.
        four.extend_from_slice(&[0x04, 0x00, 0x01, 0xff]);
        let mut bytes = v2(1, 0x11, &four);
        let len = bytes.len();
        bytes.extend_from_slice(b"GET /");
        assert_eq!(
            parse(&bytes),
            Ok(Parsed::Header {
                len,
                source: Some("203.0.113.7:51234".parse().unwrap())
            })
        );
        let mut six = [0u8; 36];
        six[..16].copy_from_slice(&"2001:db8::7".parse::<Ipv6Addr>().unwrap().octets());
        six[32..34].copy_from_slice(&4000u16.to_be_bytes());
        let Ok(Parsed::Header { source, .. }) = parse(&v2(1, 0x21, &six)) else {
            panic!("not parsed");
        };
        assert_eq!(source, Some("[2001:db8::7]:4000".parse().unwrap()));
        let local = v2(0, 0x00, &[]);
        assert_eq!(
            parse(&local),
            Ok(Parsed::Header {
                len: 16,
                source: None
            })
        );
    }

    #[test]
    fn partial_headers_ask_for_more() {
        let full = b"PROXY TCP4 203.0.113.7 10.0.0.1 51234 443\r\n";
        for cut in 0..full.len() - 1 {
            assert_eq!(parse(&full[..cut]), Ok(Parsed::Incomplete), "{cut}");
        }
        let full = v2(1, 0x11, &[0; 12]);
        for cut in 0..full.len() {
            assert_eq!(parse(&full[..cut]), Ok(Parsed::Incomplete), "{cut}");
        }
    }

    #[test]
    fn anything_else_is_refused() {
        assert_eq!(parse(b"GET / HTTP/1.1\r\n"), Err(InvalidHeader::Missing));
        assert_eq!(parse(&[b'P'; 200]), Err(InvalidHeader::Missing));
        let endless = [b"PROXY TCP4 ".as_slice(), &[b'1'; 200]].concat();
        assert_eq!(parse(&endless), Err(InvalidHeader::TooLong));
        for bad in [
            b"PROXY TCP4 1.2.3.4 5.6.7.8 99999 1\r\n".as_slice(),
            b"PROXY TCP4 ::1 5.6.7.8 1 1\r\n",
            b"PROXY TCP9 1.2.3.4 5.6.7.8 1 1\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n",
        ] {
            assert!(
                matches!(parse(bad), Err(InvalidHeader::Malformed(_))),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        let mut huge = V2_SIGNATURE.to_vec();
        huge.extend_from_slice(&[0x21, 0x11, 0xff, 0xff]);
        assert_eq!(parse(&huge), Err(InvalidHeader::TooLong));
        assert!(matches!(
            parse(&v2(1, 0x11, &[0; 4])),
            Err(InvalidHeader::Malformed(_))
        ));
        let mut wrong_version = v2(1, 0x11, &[0; 12]);
        wrong_version[12] = 0x11;
        assert!(matches!(
            parse(&wrong_version),
            Err(InvalidHeader::Malformed(_))
        ));
    }
}
