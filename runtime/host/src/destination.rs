//! Where outbound HTTP may go: the app's allowlist of hosts, and (unless the
//! app allows it) no loopback, private, link-local or cloud-metadata
//! addresses, checked on the addresses a name resolves to so that a DNS name
//! pointing inside cannot get around it.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use wasmtime_wasi_http::Error as HttpError;

/// One allowlist entry: `*`, `host`, `*.domain`, each optionally with a
/// scheme (`https://host`) and a port (`host:8443`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostRule {
    scheme: Option<String>,
    host: String,
    port: Option<u16>,
}

impl HostRule {
    pub fn parse(entry: &str) -> Result<HostRule, String> {
        let bad = || {
            format!(
                "{entry:?} is not a host pattern (`*`, `host`, `*.domain`, optionally `scheme://` and `:port`)"
            )
        };
        let (scheme, rest) = match entry.split_once("://") {
            Some((scheme, rest)) if scheme == "http" || scheme == "https" => {
                (Some(scheme.to_owned()), rest)
            }
            Some(_) => return Err(bad()),
            None => (None, entry),
        };
        let (host, port) = match rest.rsplit_once(':') {
            Some((host, port)) => (host, Some(port.parse().map_err(|_| bad())?)),
            None => (rest, None),
        };
        let name = host.strip_prefix("*.").unwrap_or(host);
        let valid = host == "*"
            || (!name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.'));
        if !valid {
            return Err(bad());
        }
        Ok(HostRule {
            scheme,
            host: host.to_ascii_lowercase(),
            port,
        })
    }

    fn allows(&self, scheme: &str, host: &str, port: u16) -> bool {
        let host_matches = match self.host.strip_prefix("*.") {
            _ if self.host == "*" => true,
            Some(domain) => host
                .strip_suffix(domain)
                .is_some_and(|sub| sub.ends_with('.') && sub.len() > 1),
            None => self.host == host,
        };
        host_matches
            && self.scheme.as_deref().is_none_or(|s| s == scheme)
            && self.port.is_none_or(|p| p == port)
    }
}

/// Whether the allowlist lets a request to `scheme://host:port` through.
pub fn allowed(rules: &[HostRule], scheme: &str, host: &str, port: u16) -> bool {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    rules.iter().any(|rule| rule.allows(scheme, &host, port))
}

/// Resolves `host:port` and checks every address; with `allow_private`
/// off, any internal address refuses the whole request (a name that
/// resolves to a mix is not trusted).
pub async fn resolve_public(
    host: &str,
    port: u16,
    allow_private: bool,
) -> Result<Vec<SocketAddr>, (HttpError, String)> {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let addresses: Vec<SocketAddr> = match host.parse::<IpAddr>() {
        Ok(ip) => vec![SocketAddr::new(ip, port)],
        Err(_) => tokio::net::lookup_host((host, port))
            .await
            .map_err(|e| (HttpError::DestinationNotFound, format!("{host}: {e}")))?
            .collect(),
    };
    if addresses.is_empty() {
        return Err((
            HttpError::DestinationNotFound,
            format!("{host} has no address"),
        ));
    }
    if !allow_private && let Some(inside) = addresses.iter().find(|a| is_internal(a.ip())) {
        return Err((
            HttpError::DestinationIpProhibited,
            format!("{host} is {}, an internal address", inside.ip()),
        ));
    }
    Ok(addresses)
}

/// Loopback, private, link-local (which holds the cloud metadata address
/// 169.254.169.254), carrier-grade NAT, unspecified, broadcast, multicast,
/// and IPv6's equivalents, including IPv4 addresses mapped into IPv6.
pub fn is_internal(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_internal_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_internal_v4(v4);
            }
            let [first, second, ..] = v6.segments();
            // 64:ff9b::/96 carries IPv4 addresses through NAT64.
            if first == 0x64 && second == 0xff9b {
                let [.., hi, lo] = v6.segments();
                return is_internal_v4(Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo)));
            }
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00 // unique local
                || (first & 0xffc0) == 0xfe80 // link-local
        }
    }
}

fn is_internal_v4(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || a == 0
        || (a == 100 && (64..128).contains(&b)) // carrier-grade NAT
        || (a == 192 && b == 0 && ip.octets()[2] == 0) // IETF protocol assignments
        || (a == 198 && (b == 18 || b == 19)) // benchmarking
        || a >= 240 // reserved
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(entries: &[&str]) -> Vec<HostRule> {
        entries
            .iter()
            .map(|e| HostRule::parse(e).unwrap())
            .collect()
    }

    #[test]
    fn host_patterns_match_as_documented() {
        let r = rules(&[
            "api.example.com",
            "*.hooks.example.com",
            "https://pay.example.com:8443",
        ]);
        assert!(allowed(&r, "https", "api.example.com", 443));
        assert!(allowed(&r, "http", "API.Example.com.", 80));
        assert!(!allowed(&r, "https", "evil-api.example.com", 443));
        assert!(allowed(&r, "https", "a.hooks.example.com", 443));
        assert!(
            !allowed(&r, "https", "hooks.example.com", 443),
            "*. is subdomains only"
        );
        assert!(!allowed(&r, "https", "a.hooks.example.com.evil.com", 443));
        assert!(allowed(&r, "https", "pay.example.com", 8443));
        assert!(!allowed(&r, "http", "pay.example.com", 8443));
        assert!(!allowed(&r, "https", "pay.example.com", 443));
        assert!(allowed(&rules(&["*"]), "http", "anything.test", 1));
        assert!(!allowed(&[], "http", "anything.test", 80));
        for bad in ["ftp://x.com", "x.com:port", "", "a b.com", "*.", "http://"] {
            assert!(HostRule::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn internal_addresses_are_recognised_in_every_spelling() {
        for internal in [
            "127.0.0.1",
            "127.8.9.10",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "255.255.255.255",
            "224.0.0.1",
            "::1",
            "::",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "64:ff9b::a9fe:a9fe",
            "ff02::1",
        ] {
            assert!(is_internal(internal.parse().unwrap()), "{internal}");
        }
        for public in [
            "1.1.1.1",
            "93.184.216.34",
            "172.32.0.1",
            "2606:4700::1111",
            "::ffff:8.8.8.8",
        ] {
            assert!(!is_internal(public.parse().unwrap()), "{public}");
        }
    }

    #[tokio::test]
    async fn names_are_checked_on_what_they_resolve_to() {
        let refused = resolve_public("localhost", 80, false).await.unwrap_err();
        assert!(
            matches!(refused.0, HttpError::DestinationIpProhibited),
            "{}",
            refused.1
        );
        assert!(resolve_public("localhost", 80, true).await.is_ok());
        let metadata = resolve_public("169.254.169.254", 80, false)
            .await
            .unwrap_err();
        assert!(metadata.1.contains("internal address"));
    }
}
