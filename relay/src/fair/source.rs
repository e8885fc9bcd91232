//! Who asked: a client address, and one connection from it.

use std::{
    fmt,
    net::{IpAddr, Ipv6Addr},
};

/// A client's address as the relay's limits and shares count it: an IPv4 address, or the
/// /64 network of an IPv6 address (one subscriber usually holds a whole /64, so counting
/// single IPv6 addresses would give each of them 2^64 shares).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClientAddress(IpAddr);

impl ClientAddress {
    /// The address limits count `ip` under.
    pub fn of(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(v4) => Self(IpAddr::V4(v4)),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Self(IpAddr::V4(v4)),
                None => {
                    let network = u128::from(v6) & !((1u128 << 64) - 1);
                    Self(IpAddr::V6(Ipv6Addr::from(network)))
                }
            },
        }
    }

    /// The address of work that no client sent (imports, the relay itself).
    pub fn local() -> Self {
        Self(IpAddr::V6(Ipv6Addr::UNSPECIFIED))
    }

    /// The address as counted (an IPv6 address as its /64 network).
    pub fn ip(&self) -> IpAddr {
        self.0
    }
}

impl fmt::Display for ClientAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            IpAddr::V4(v4) => write!(f, "{v4}"),
            IpAddr::V6(v6) => write!(f, "{v6}/64"),
        }
    }
}

/// One connection of one client address: the key that shares are counted by.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Source {
    /// The client address.
    pub address: ClientAddress,
    /// The connection's number on this node.
    pub connection: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_counts_by_network_and_mapped_ipv4_as_ipv4() {
        let a = ClientAddress::of("2001:db8:1:2:aaaa::1".parse().unwrap());
        let b = ClientAddress::of("2001:db8:1:2:bbbb::9".parse().unwrap());
        let c = ClientAddress::of("2001:db8:1:3::1".parse().unwrap());
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(a.to_string(), "2001:db8:1:2::/64");
        let mapped = ClientAddress::of("::ffff:192.0.2.7".parse().unwrap());
        assert_eq!(mapped, ClientAddress::of("192.0.2.7".parse().unwrap()));
        assert_eq!(mapped.to_string(), "192.0.2.7");
    }
}
