//! Where a connection comes from when proxies stand between the relay and its clients.
//!
//! Behind a reverse proxy or a load balancer every connection arrives from the proxy's
//! address. The relay learns the client's address from what the proxies it trusts
//! (`--trusted-proxies`) say: a PROXY protocol header before the connection's first byte
//! (`--proxy-protocol`, see [`protocol`]), then an HTTP header (`--proxy-header`, see
//! [`headers`]). What peers outside the trusted ranges say is ignored.
//!
//! Architecture invariant: this module knows addresses and bytes, nothing of Nostr or of
//! the node; the HTTP layer asks it for the client's address and counts by the answer.

pub mod cidr;
pub mod headers;
pub mod protocol;
pub mod stream;

use std::net::IpAddr;

pub use cidr::{Cidr, CidrSet};
pub use headers::{ProxyHeader, client_ip};
pub use stream::{AcceptError, ClientStream, accept};

/// The address ranges of the proxies whose word on a client's address is taken.
#[derive(Clone, Debug, Default)]
pub struct TrustedProxies(CidrSet);

impl TrustedProxies {
    /// Trusts the peers in `ranges`.
    pub fn new(ranges: Vec<Cidr>) -> Self {
        Self(CidrSet::new(ranges))
    }

    /// Whether `ip` is a trusted proxy.
    pub fn trusts(&self, ip: IpAddr) -> bool {
        self.0.contains(ip)
    }
}
