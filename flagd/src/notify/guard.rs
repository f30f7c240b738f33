//! Outgoing requests go to public addresses only (unless allowed): a channel's URL is
//! chosen by an admin, and flagd must not become a way to reach what sits beside it
//! (a metadata service, a database, an internal admin page). Checked when connecting,
//! on the addresses the name resolves to then, so that a name that resolves to a
//! public address when checked and to a private one when used (DNS rebinding) is
//! refused too; IP-literal URLs, which are never resolved, are checked before sending.

use std::net::{IpAddr, SocketAddr};

/// Whether flagd refuses to send to this address: loopback, private, link-local,
/// unique-local, shared (CGNAT), unspecified, broadcast or multicast.
pub fn forbidden(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                // 100.64.0.0/10, carrier-grade NAT: private in practice.
                || (a == 100 && (64..128).contains(&b))
                // 0.0.0.0/8: "this network".
                || a == 0
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return forbidden(IpAddr::V4(v4));
            }
            let first = v6.segments()[0];
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                // fc00::/7 unique local, fe80::/10 link-local.
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80
        }
    }
}

/// The refusal, as the delivery history shows it.
pub(super) fn refusal(host: &str, ip: IpAddr) -> String {
    format!(
        "refused: {host} is {ip}, a loopback, private or link-local address (allowed only with --notify-allow-private-addresses)"
    )
}

/// A URL's host when it is an IP address.
pub(super) fn literal_ip(url: &reqwest::Url) -> Option<IpAddr> {
    let host = url.host_str()?;
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .ok()
}

/// The resolver of the notification client: the system's, less forbidden addresses.
#[derive(Clone, Debug)]
pub(super) struct Guard {
    /// Private addresses are allowed (`--notify-allow-private-addresses`).
    pub(super) allow_private: bool,
}

impl reqwest::dns::Resolve for Guard {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let allow = self.allow_private;
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let all: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let allowed: Vec<SocketAddr> = all
                .iter()
                .copied()
                .filter(|a| allow || !forbidden(a.ip()))
                .collect();
            match (allowed.is_empty(), all.first()) {
                (true, Some(first)) => Err(refusal(&host, first.ip()).into()),
                (true, None) => Err(format!("{host} resolves to no address").into()),
                (false, _) => Ok(Box::new(allowed.into_iter()) as reqwest::dns::Addrs),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::forbidden;

    #[test]
    fn private_and_local_addresses_are_forbidden() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "::1",
            "::",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
        ] {
            assert!(forbidden(ip.parse().expect("an address")), "{ip}");
        }
        for ip in ["1.1.1.1", "8.8.8.8", "2606:4700::1111"] {
            assert!(!forbidden(ip.parse().expect("an address")), "{ip}");
        }
    }
}
