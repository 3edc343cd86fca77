//! Which addresses a target may point at.
//!
//! A target URL is chosen by a tenant, and the dispatcher calls it from inside the operator's
//! network: without a policy, a target could reach the cloud metadata service, a database
//! port on localhost or anything else on the private network (server-side request forgery).
//! Only public unicast addresses are allowed unless the operator allows private targets
//! (`AUTODEPLOY_TARGETS_ALLOW_PRIVATE=true`, for on-premises engines and tests).
//!
//! The check runs twice: on the URL when a target is written ([`check_target_url`]: literal
//! addresses and names that can only be local), and on every address a host name resolves to
//! when an attempt connects (the sender's resolver calls [`address_allowed`]), since a name
//! may resolve differently later.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use url::{Host, Url};

/// Longest accepted target URL (bytes).
pub const MAX_TARGET_URL: usize = 2048;

/// Whether the dispatcher may connect to `ip`. With `allow_private`, every address is allowed
/// (the operator trusts its tenants with its network).
pub fn address_allowed(ip: IpAddr, allow_private: bool) -> bool {
    allow_private || is_public(ip)
}

/// Whether `ip` is a public unicast address: not loopback, private, shared (CGNAT),
/// link-local, unspecified, broadcast, multicast, documentation, benchmarking or otherwise
/// reserved. IPv6 addresses that embed an IPv4 address (mapped, compatible, NAT64, 6to4) are
/// judged by that IPv4 address, since that is where a connection to them may end up.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => is_public_v6(v6),
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    let not_public = a == 0 // "this network", including the unspecified address
        || a == 10 // RFC 1918
        || (a == 100 && (64..128).contains(&b)) // shared address space (CGNAT), RFC 6598
        || a == 127 // loopback
        || (a == 169 && b == 254) // link-local, including the cloud metadata service
        || (a == 172 && (16..32).contains(&b)) // RFC 1918
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments
        || (a == 192 && b == 0 && c == 2) // documentation (TEST-NET-1)
        || (a == 192 && b == 88 && c == 99) // 6to4 relay anycast (deprecated)
        || (a == 192 && b == 168) // RFC 1918
        || (a == 198 && (b == 18 || b == 19)) // benchmarking
        || (a == 198 && b == 51 && c == 100) // documentation (TEST-NET-2)
        || (a == 203 && b == 0 && c == 113) // documentation (TEST-NET-3)
        || a >= 224; // multicast, reserved and the broadcast address
    !not_public
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    if let Some(v4) = embedded_v4(ip) {
        return is_public_v4(v4);
    }
    let s = ip.segments();
    let not_public = ip.is_unspecified()
        || ip.is_loopback()
        || s[0] & 0xfe00 == 0xfc00 // unique local, fc00::/7
        || s[0] & 0xffc0 == 0xfe80 // link-local, fe80::/10
        || s[0] & 0xffc0 == 0xfec0 // site-local (deprecated), fec0::/10
        || s[0] & 0xff00 == 0xff00 // multicast
        || (s[0] == 0x0100 && s[1] == 0 && s[2] == 0 && s[3] == 0) // discard-only, 100::/64
        || (s[0] == 0x0064 && s[1] == 0xff9b && s[2] == 1) // local-use NAT64, 64:ff9b:1::/48
        || (s[0] == 0x2001 && s[1] == 0x0db8) // documentation, 2001:db8::/32
        || (s[0] == 0x2001 && s[1] < 0x0200 && !globally_reachable_protocol_assignment(ip)) // 2001::/23: Teredo, benchmarking, …
        || s[0] & 0xfff0 == 0x3ff0 // documentation, 3fff::/20
        || s[0] == 0; // the rest of ::/16: IPv4-compatible and reserved
    !not_public
}

/// The few addresses of the IETF protocol assignments (`2001::/23`) that IANA's registry of
/// special-purpose addresses marks globally reachable: anycast services (PCP, TURN, DNS-SD),
/// AMT, AS112, ORCHIDv2 and drone remote ID. The rest of that block, Teredo (`2001::/32`,
/// tunnelled to an IPv4 address it obfuscates) and benchmarking among them, is not public.
fn globally_reachable_protocol_assignment(ip: Ipv6Addr) -> bool {
    let s = ip.segments();
    matches!(
        u128::from(ip),
        0x2001_0001_0000_0000_0000_0000_0000_0001..=0x2001_0001_0000_0000_0000_0000_0000_0003
    ) || s[1] == 0x0003
        || (s[1] == 0x0004 && s[2] == 0x0112)
        || (0x0020..0x0040).contains(&s[1])
}

/// The IPv4 address an IPv6 address stands for, when it embeds one: IPv4-mapped
/// (`::ffff:a.b.c.d`), IPv4-compatible (`::a.b.c.d`, deprecated), NAT64 (`64:ff9b::a.b.c.d`)
/// and 6to4 (`2002:aabb:ccdd::/48`).
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = ip.segments();
    let o = ip.octets();
    let tail = Ipv4Addr::new(o[12], o[13], o[14], o[15]);
    match s {
        [0, 0, 0, 0, 0, 0xffff, _, _] => Some(tail),
        // `::` and `::1` are themselves, not 0.0.0.0 and 0.0.0.1.
        [0, 0, 0, 0, 0, 0, hi, _] if hi != 0 => Some(tail),
        [0x0064, 0xff9b, 0, 0, 0, 0, _, _] => Some(tail),
        [0x2002, _, _, _, _, _, _, _] => Some(Ipv4Addr::new(o[2], o[3], o[4], o[5])),
        _ => None,
    }
}

/// Why a target URL is refused when it is written. The message never repeats the URL (it may
/// carry a token in its query).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlProblem {
    #[error("must be at most {MAX_TARGET_URL} characters long")]
    TooLong,
    #[error("must be an absolute URL such as https://deploy.example.com/hooks")]
    Unparsable,
    #[error("must not contain white space or control characters (percent-encode them in a path or query)")]
    Invisible,
    #[error("must use https")]
    NotHttps,
    #[error("must use https (or http when private targets are allowed)")]
    UnsupportedScheme,
    #[error("must not contain a user name or password: send credentials in the target's token or secret")]
    Credentials,
    #[error("must not contain a fragment")]
    Fragment,
    #[error("must not name port 0, which nothing listens on")]
    PortZero,
    #[error("must not point to a loopback, private, link-local or otherwise non-public address")]
    NotPublic,
}

/// Check a target URL as it is written: an absolute `https` URL (`http` too when
/// `allow_private`), without credentials or fragment, at most [`MAX_TARGET_URL`] bytes, whose
/// host is not a literal non-public address nor a name that can only be local. Returns the
/// parsed URL (normalized: numeric IPv4 forms such as `2130706433` become `127.0.0.1`,
/// international names become punycode).
pub fn check_target_url(raw: &str, allow_private: bool) -> Result<Url, UrlProblem> {
    if raw.len() > MAX_TARGET_URL {
        return Err(UrlProblem::TooLong);
    }
    // The parser drops white space and control characters silently (at the ends, and tabs and
    // line breaks anywhere): a URL is stored as given or refused.
    if raw.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(UrlProblem::Invisible);
    }
    let url = Url::parse(raw).map_err(|_| UrlProblem::Unparsable)?;
    match url.scheme() {
        "https" => {}
        "http" if allow_private => {}
        "http" => return Err(UrlProblem::NotHttps),
        _ => return Err(UrlProblem::UnsupportedScheme),
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(UrlProblem::Credentials);
    }
    if url.fragment().is_some() {
        return Err(UrlProblem::Fragment);
    }
    if url.port() == Some(0) {
        return Err(UrlProblem::PortZero);
    }
    // What is sent must be what was checked: the sender takes an `http::Uri`.
    if url.as_str().len() > MAX_TARGET_URL || url.as_str().parse::<http::Uri>().is_err() {
        return Err(UrlProblem::Unparsable);
    }
    if !allow_private && !host_may_be_public(&url) {
        return Err(UrlProblem::NotPublic);
    }
    Ok(url)
}

/// Whether the URL's host may be a public one: a public literal address, or a name that is not
/// local by definition (`localhost` and its subdomains, `*.local` for mDNS, `*.internal` as
/// cloud providers use for metadata and private names, `*.home.arpa`, `*.localdomain`, and
/// single-label names that only a local search domain can resolve). What a name really
/// resolves to is checked when an attempt connects.
fn host_may_be_public(url: &Url) -> bool {
    match url.host() {
        Some(Host::Ipv4(ip)) => is_public_v4(ip),
        Some(Host::Ipv6(ip)) => is_public_v6(ip),
        Some(Host::Domain(name)) => name_may_be_public(name),
        None => false,
    }
}

fn name_may_be_public(name: &str) -> bool {
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    const LOCAL_NAMES: [&str; 3] = ["localhost", "ip6-localhost", "ip6-loopback"];
    const LOCAL_SUFFIXES: [&str; 5] = [".localhost", ".local", ".internal", ".home.arpa", ".localdomain"];
    name.contains('.')
        && !LOCAL_NAMES.contains(&name.as_str())
        && !LOCAL_SUFFIXES.iter().any(|suffix| name.ends_with(suffix))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allowed(s: &str) -> bool {
        address_allowed(s.parse().unwrap(), false)
    }

    #[test]
    fn public_addresses_are_allowed() {
        for ip in [
            "1.1.1.1",
            "8.8.8.8",
            "140.82.112.3",
            "100.63.255.255",
            "100.128.0.1",
            "172.15.255.255",
            "172.32.0.1",
            "192.0.1.1",
            "192.169.0.1",
            "198.17.0.1",
            "223.255.255.254",
            "2606:4700:4700::1111",
            "2a00:1450:4007:80e::200e",
            "2001:4860:4860::8888",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
            "2002:808:808::1",
            // globally reachable protocol assignments: TURN anycast, AMT, AS112, ORCHIDv2
            "2001:1::2",
            "2001:3::1",
            "2001:4:112::1",
            "2001:20::1",
            "2001:3f::1",
            // the first address after 2001::/23
            "2001:200::1",
        ] {
            assert!(allowed(ip), "{ip}");
        }
    }

    #[test]
    fn non_public_addresses_are_refused() {
        for ip in [
            // loopback, unspecified, "this network"
            "127.0.0.1",
            "127.255.255.254",
            "0.0.0.0",
            "0.1.2.3",
            "::1",
            "::",
            // RFC 1918, unique local
            "10.0.0.1",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "fc00::1",
            "fd12:3456:789a::1",
            // link-local, the metadata service (IPv4 and AWS's IPv6 one)
            "169.254.169.254",
            "169.254.0.1",
            "fe80::1",
            "febf::1",
            "fd00:ec2::254",
            // CGNAT, broadcast, multicast, reserved
            "100.64.0.1",
            "100.127.255.255",
            "255.255.255.255",
            "224.0.0.1",
            "239.255.255.250",
            "240.0.0.1",
            "ff02::1",
            // documentation, benchmarking, protocol assignments
            "192.0.2.1",
            "198.51.100.7",
            "203.0.113.9",
            "198.18.0.1",
            "198.19.255.255",
            "192.0.0.8",
            "2001:db8::1",
            "3fff::1",
            "2001:2::1",
            "100::1",
            // the rest of 2001::/23: Teredo (this one stands for 192.0.2.45), unassigned
            "2001:0:4136:e378:8000:63bf:3fff:fdd2",
            "2001::1",
            "2001:1::4",
            "2001:5::1",
            "2001:1ff::1",
            "fec0::1",
            // IPv4 in IPv6: mapped, compatible, NAT64, 6to4
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "::ffff:10.0.0.1",
            "::127.0.0.1",
            "64:ff9b::7f00:1",
            "64:ff9b:1::8.8.8.8",
            "2002:7f00:1::1",
            "2002:a9fe:a9fe::1",
        ] {
            assert!(!allowed(ip), "{ip}");
        }
    }

    #[test]
    fn allowing_private_targets_allows_every_address() {
        for ip in ["127.0.0.1", "::1", "10.0.0.1", "169.254.169.254", "8.8.8.8"] {
            assert!(address_allowed(ip.parse().unwrap(), true), "{ip}");
        }
    }

    #[test]
    fn target_urls_are_checked_when_written() {
        let ok = |s: &str| check_target_url(s, false).map(|u| u.to_string());
        assert_eq!(
            ok("https://deploy.example.com/hooks?x=1").unwrap(),
            "https://deploy.example.com/hooks?x=1"
        );
        assert_eq!(ok("https://API.Example.com").unwrap(), "https://api.example.com/");
        assert_eq!(ok("https://8.8.8.8:8443/x").unwrap(), "https://8.8.8.8:8443/x");
        assert_eq!(ok("https://[2606:4700::1]/").unwrap(), "https://[2606:4700::1]/");

        let problem = |s: &str| check_target_url(s, false).unwrap_err();
        assert_eq!(problem("http://deploy.example.com/"), UrlProblem::NotHttps);
        assert_eq!(problem("ftp://deploy.example.com/"), UrlProblem::UnsupportedScheme);
        assert_eq!(problem("https://deploy.example.com:0/hook"), UrlProblem::PortZero);
        assert_eq!(problem("https://deploy.example.com:00/hook"), UrlProblem::PortZero);
        assert_eq!(problem("deploy.example.com/hooks"), UrlProblem::Unparsable);
        assert_eq!(problem("https://"), UrlProblem::Unparsable);
        for odd in [
            "https://deploy.example.com/\u{0}",
            " https://deploy.example.com/",
            "https://deploy.example.com/ ",
            "https://deploy.exa\tmple.com/",
            "https://deploy.example.com/a\nb",
        ] {
            assert_eq!(problem(odd), UrlProblem::Invisible, "{odd:?}");
        }
        assert_eq!(problem("https://user:pw@deploy.example.com/"), UrlProblem::Credentials);
        assert_eq!(problem("https://token@deploy.example.com/"), UrlProblem::Credentials);
        assert_eq!(problem("https://deploy.example.com/#x"), UrlProblem::Fragment);
        let long = format!("https://deploy.example.com/{}", "a".repeat(MAX_TARGET_URL));
        assert_eq!(problem(&long), UrlProblem::TooLong);
        for local in [
            "https://localhost/",
            "https://LOCALHOST:8443/",
            "https://localhost./",
            "https://api.localhost/",
            "https://printer.local/",
            "https://metadata.google.internal/",
            "https://router.home.arpa/",
            "https://jenkins/",
            "https://127.0.0.1/",
            "https://127.1/",
            "https://2130706433/",
            "https://0x7f.0.0.1/",
            "https://[::1]/",
            "https://[::ffff:127.0.0.1]/",
            "https://169.254.169.254/latest/meta-data/",
            "https://10.1.2.3/",
            "https://[fe80::1]/",
            "https://0.0.0.0/",
        ] {
            assert_eq!(problem(local), UrlProblem::NotPublic, "{local}");
        }
    }

    #[test]
    fn allowing_private_targets_allows_http_and_local_hosts() {
        for url in [
            "http://127.0.0.1:8080/hook",
            "https://localhost/",
            "http://jenkins/",
            "http://[::1]:9/",
        ] {
            assert!(check_target_url(url, true).is_ok(), "{url}");
        }
        // Still no other scheme, credentials or fragment.
        assert_eq!(
            check_target_url("ftp://localhost/", true).unwrap_err(),
            UrlProblem::UnsupportedScheme
        );
        assert_eq!(
            check_target_url("http://a:b@localhost/", true).unwrap_err(),
            UrlProblem::Credentials
        );
    }

    #[test]
    fn messages_never_repeat_the_url() {
        for url in [
            "https://user:s3cr3t@x.example.com/",
            "http://x.example.com/?token=s3cr3t",
        ] {
            let message = check_target_url(url, false).unwrap_err().to_string();
            assert!(!message.contains("s3cr3t"), "{message}");
            assert!(message.chars().next().unwrap().is_lowercase() && !message.ends_with('.'));
        }
    }
}
