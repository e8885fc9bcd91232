//! Any bytes as a PROXY protocol header, and any forwarding header values, are read without
//! panicking; a header never claims more bytes than it was given, and an untrusted peer's
//! headers never change its address.
#![no_main]

use std::net::IpAddr;

use actix_http::header::{HeaderMap, HeaderName, HeaderValue};
use libfuzzer_sys::fuzz_target;
use starling::proxy::{
    ProxyHeader, TrustedProxies, client_ip,
    protocol::{MAX_HEADER_BYTES, Parsed, parse},
};

fuzz_target!(|data: &[u8]| {
    if let Ok(Parsed::Header { len, .. }) = parse(data) {
        assert!(len <= data.len() && len <= MAX_HEADER_BYTES);
    }
    let trusted = TrustedProxies::new(vec!["127.0.0.0/8".parse().unwrap(), "fd00::/8".parse().unwrap()]);
    let mut headers = HeaderMap::new();
    for line in data.split(|b| *b == b'\n') {
        let Ok(value) = HeaderValue::from_bytes(line) else {
            continue;
        };
        for name in ["x-forwarded-for", "x-real-ip", "forwarded"] {
            headers.append(HeaderName::from_static(name), value.clone());
        }
    }
    let proxy: IpAddr = "127.0.0.1".parse().unwrap();
    let stranger: IpAddr = "203.0.113.9".parse().unwrap();
    for header in [ProxyHeader::XForwardedFor, ProxyHeader::XRealIp, ProxyHeader::Forwarded] {
        let _ = client_ip(proxy, &headers, header, &trusted);
        assert_eq!(client_ip(stranger, &headers, header, &trusted), stranger);
    }
});
