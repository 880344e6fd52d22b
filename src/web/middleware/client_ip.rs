//! Who sent a request: the peer address, or the address a trusted proxy forwarded for.
//!
//! `X-Forwarded-For` is believed only when the peer is one of the configured `trusted_proxies`, and then
//! only up to the first address that is not itself a trusted proxy, reading from the right: everything to
//! its left was written by the client and may be forged.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use axum::extract::ConnectInfo;
use axum::http::{HeaderMap, Request};
use ipnet::IpNet;

/// The client's address for `request`. Without connection info (an in-process call) it is 0.0.0.0.
pub fn client_ip<B>(request: &Request<B>, trusted_proxies: &[IpNet]) -> IpAddr {
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |info| info.0.ip());
    forwarded_client(peer, request.headers(), trusted_proxies)
}

fn forwarded_client(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    let peer = unmapped(peer);
    let is_trusted = |addr: &IpAddr| trusted.iter().any(|net| net.contains(addr));
    if !is_trusted(&peer) {
        return peer;
    }
    let hops: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(str::trim)
        .collect();
    let mut client = peer;
    for hop in hops.iter().rev() {
        let Some(addr) = parse_hop(hop) else {
            break;
        };
        client = addr;
        if !is_trusted(&addr) {
            break;
        }
    }
    client
}

/// An address as proxies write it: `192.0.2.1`, `2001:db8::1`, `[2001:db8::1]:443`, `192.0.2.1:80`.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    hop.parse::<IpAddr>()
        .ok()
        .or_else(|| hop.parse::<SocketAddr>().ok().map(|addr| addr.ip()))
        .map(unmapped)
}

/// An IPv4 peer of a dual-stack (`[::]`) listener arrives as `::ffff:a.b.c.d`; it is that IPv4 address.
pub(crate) fn unmapped(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(addr, IpAddr::V4),
        IpAddr::V4(_) => addr,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(forwarded: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in forwarded {
            headers.append("x-forwarded-for", HeaderValue::from_str(value).unwrap());
        }
        headers
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn forwarded_headers_are_ignored_without_trusted_proxies() {
        let got = forwarded_client(ip("198.51.100.7"), &headers(&["203.0.113.1"]), &[]);
        assert_eq!(got, ip("198.51.100.7"));
    }

    #[test]
    fn a_trusted_proxy_names_the_client() {
        let trusted = ["127.0.0.1/32".parse().unwrap()];
        let got = forwarded_client(ip("127.0.0.1"), &headers(&["203.0.113.1"]), &trusted);
        assert_eq!(got, ip("203.0.113.1"));
    }

    #[test]
    fn addresses_the_client_wrote_itself_are_not_believed() {
        let trusted = ["10.0.0.0/8".parse().unwrap()];
        // The client sent "X-Forwarded-For: 1.2.3.4"; the proxies appended the client and themselves.
        let chain = headers(&["1.2.3.4, 203.0.113.9", "10.0.0.2"]);
        assert_eq!(
            forwarded_client(ip("10.0.0.1"), &chain, &trusted),
            ip("203.0.113.9")
        );
    }

    #[test]
    fn ipv4_peers_of_a_dual_stack_listener_are_matched_as_ipv4() {
        let trusted = ["127.0.0.1/32".parse().unwrap()];
        let got = forwarded_client(
            ip("::ffff:127.0.0.1"),
            &headers(&["::ffff:203.0.113.1"]),
            &trusted,
        );
        assert_eq!(got, ip("203.0.113.1"));
    }

    #[test]
    fn garbage_stops_the_walk_at_the_last_good_hop() {
        let trusted = ["10.0.0.0/8".parse().unwrap()];
        let chain = headers(&["not-an-ip, 10.0.0.3"]);
        assert_eq!(forwarded_client(ip("10.0.0.1"), &chain, &trusted), ip("10.0.0.3"));
        assert_eq!(
            forwarded_client(ip("10.0.0.1"), &headers(&["[2001:db8::5]:443"]), &trusted),
            ip("2001:db8::5")
        );
    }
}
