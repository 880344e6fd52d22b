//! Answering only the names authrun is reached by (DNS rebinding).
//!
//! A page on another site can point its own name at authrun's address: the browser then sends that name
//! as `Host`, and takes authrun's answers for the other site's, readable by its scripts. So authrun answers
//! only a `Host` that is an IP address (no page can rebind an address), `localhost`, or the host of
//! `[server] public_url`; any other gets 421 Misdirected Request. The port is not compared: containers and
//! proxies map ports, and a rebinding page is told apart by its name alone. With `public_url`, addresses
//! stay allowed, so health checks and proxies that send the upstream address keep working. A request
//! without `Host` (HTTP/1.0, or in-process) is answered: every browser sends one.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use axum::http::{HeaderMap, Uri, header};

use crate::config::PublicUrl;

/// The host names a request may name besides addresses and `localhost`.
#[derive(Debug, Clone, Default)]
pub struct AllowedHosts {
    /// The host of `public_url`, lowercase, without port.
    public: Option<Arc<str>>,
}

impl AllowedHosts {
    pub fn new(public_url: Option<&PublicUrl>) -> Self {
        let public = public_url
            .and_then(|url| url.origin.split_once("://"))
            .and_then(|(_, authority)| name_of(authority))
            .map(|name| Arc::from(name.to_ascii_lowercase()));
        Self { public }
    }

    /// Whether the request's `Host` (and the authority of an absolute request URI) may be answered.
    pub fn allow(&self, headers: &HeaderMap, uri: &Uri) -> bool {
        let mut hosts = headers.get_all(header::HOST).iter();
        let host_ok = match (hosts.next(), hosts.next()) {
            (None, _) => true,
            (Some(host), None) => host.to_str().is_ok_and(|host| self.allows(host)),
            (Some(_), Some(_)) => false,
        };
        host_ok
            && uri
                .authority()
                .is_none_or(|authority| self.allows(authority.as_str()))
    }

    /// Whether `authority` (`host[:port]`) names authrun.
    fn allows(&self, authority: &str) -> bool {
        name_of(authority).is_some_and(|name| {
            name.eq_ignore_ascii_case("localhost")
                || is_address(name)
                || self
                    .public
                    .as_deref()
                    .is_some_and(|public| public.eq_ignore_ascii_case(name))
        })
    }
}

/// The host of `host[:port]`, without a final dot, or `None` when it is not well formed. An IPv6 address
/// keeps its brackets.
fn name_of(authority: &str) -> Option<&str> {
    let (name, port) = if authority.starts_with('[') {
        let end = authority.find(']')?;
        let (name, rest) = authority.split_at(end + 1);
        (name, rest.strip_prefix(':').or(rest.is_empty().then_some(""))?)
    } else {
        authority.split_once(':').unwrap_or((authority, ""))
    };
    let name = name.strip_suffix('.').unwrap_or(name);
    let well_formed = !name.is_empty()
        && port.bytes().all(|b| b.is_ascii_digit())
        && (name.starts_with('[')
            || name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.'));
    well_formed.then_some(name)
}

fn is_address(name: &str) -> bool {
    match name.strip_prefix('[').and_then(|name| name.strip_suffix(']')) {
        Some(v6) => v6.parse::<Ipv6Addr>().is_ok(),
        None => name.parse::<Ipv4Addr>().is_ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn public(url: &str) -> AllowedHosts {
        AllowedHosts::new(Some(&PublicUrl {
            origin: url.into(),
            https: url.starts_with("https"),
        }))
    }

    #[test]
    fn addresses_and_localhost_are_allowed_with_any_port() {
        let hosts = AllowedHosts::new(None);
        for host in [
            "127.0.0.1",
            "127.0.0.1:5000",
            "192.0.2.7:8080",
            "[::1]",
            "[::1]:5000",
            "[2001:db8::1]:443",
            "localhost",
            "LOCALHOST:5000",
            "localhost.:5000",
            "localhost:",
        ] {
            assert!(hosts.allows(host), "{host}");
        }
    }

    #[test]
    fn other_names_and_malformed_hosts_are_refused() {
        let hosts = AllowedHosts::new(None);
        for host in [
            "",
            ":5000",
            "deploy.example.com",
            "localhost.example.com",
            "127.0.0.1.example.com",
            "127.1",
            "::1",
            "[::1",
            "[::1]x",
            "[example.com]",
            "127.0.0.1:http",
            "127.0.0.1:5000:5000",
            "user@127.0.0.1",
            "local host",
        ] {
            assert!(!hosts.allows(host), "{host:?}");
        }
    }

    #[test]
    fn the_public_urls_host_is_allowed_besides_addresses() {
        let hosts = public("https://deploy.example.com");
        for host in [
            "deploy.example.com",
            "DEPLOY.example.com.:443",
            "127.0.0.1:5000",
            "localhost",
        ] {
            assert!(hosts.allows(host), "{host}");
        }
        for host in ["example.com", "deploy.example.com.evil.example", "evil.example"] {
            assert!(!hosts.allows(host), "{host}");
        }
        assert!(public("http://deploy.example.com:8080").allows("deploy.example.com:8080"));
    }

    #[test]
    fn a_request_is_judged_by_every_host_it_names() {
        let hosts = AllowedHosts::new(None);
        let mut headers = HeaderMap::new();
        let path = Uri::from_static("/");
        assert!(hosts.allow(&headers, &path), "no Host at all");
        headers.append(header::HOST, "127.0.0.1:5000".parse().unwrap());
        assert!(hosts.allow(&headers, &path));
        let absolute = Uri::from_static("http://evil.example/");
        assert!(
            !hosts.allow(&headers, &absolute),
            "the absolute URI names another host"
        );
        headers.append(header::HOST, "localhost".parse().unwrap());
        assert!(!hosts.allow(&headers, &path), "two Host headers");
    }
}
