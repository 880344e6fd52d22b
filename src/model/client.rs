//! Who is asking, as regulation counts it.

use std::fmt;
use std::net::{IpAddr, Ipv6Addr};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

/// An IPv4 address, or the /64 network of an IPv6 one (a single host usually holds a whole /64).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ClientKey(String);

impl ClientKey {
    pub fn of(addr: IpAddr) -> Self {
        match addr {
            IpAddr::V4(v4) => Self(v4.to_string()),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Self(v4.to_string()),
                None => {
                    let [a, b, c, d, ..] = v6.segments();
                    Self(format!("{}/64", Ipv6Addr::new(a, b, c, d, 0, 0, 0, 0)))
                }
            },
        }
    }
}

impl ClientKey {
    /// The addresses the key stands for: the IPv4 address as a /32, or the IPv6 /64.
    pub fn network(&self) -> Option<IpNet> {
        self.0
            .parse::<IpNet>()
            .ok()
            .or_else(|| self.0.parse::<IpAddr>().ok().map(IpNet::from))
    }
}

impl fmt::Display for ClientKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_clients_are_counted_by_their_64_network() {
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(ClientKey::of(a), ClientKey::of(b));
        assert_ne!(ClientKey::of(a), ClientKey::of(c));
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        assert_eq!(ClientKey::of(mapped).to_string(), "192.0.2.7");
        let network = |key: ClientKey| key.network().map(|net| net.to_string());
        assert_eq!(network(ClientKey::of(a)).as_deref(), Some("2001:db8:1:2::/64"));
        assert_eq!(network(ClientKey::of(mapped)).as_deref(), Some("192.0.2.7/32"));
    }
}
