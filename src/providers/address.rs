//! The IP addresses that providers whose URLs come from jobs (webhooks, Web Push) may
//! connect to. Every address is checked, whether a URL gives it literally or DNS returns it,
//! so a job cannot reach Herald's own network.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::LazyLock;

use ipnet::IpNet;

/// The reason an address is blocked. The policy decides which of these it may allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressClass {
    /// 127.0.0.0/8 and ::1. Allowed by `allow_loopback`.
    Loopback,
    /// RFC 1918, CGNAT (100.64.0.0/10), unique local (fc00::/7), deprecated site-local
    /// (fec0::/10) and link-local (169.254.0.0/16, fe80::/10). Allowed by
    /// `allow_private_networks`.
    Private,
    /// Cloud instance metadata services. Never allowed.
    Metadata,
    /// Unspecified, multicast, broadcast, documentation, benchmarking and reserved ranges,
    /// which no webhook receiver uses. Never allowed.
    Reserved,
}

impl AddressClass {
    pub fn as_str(self) -> &'static str {
        match self {
            AddressClass::Loopback => "loopback",
            AddressClass::Private => "private",
            AddressClass::Metadata => "cloud metadata",
            AddressClass::Reserved => "reserved",
        }
    }
}

/// The networks blocked by class. An address in none of them is public and allowed.
static RANGES: LazyLock<Vec<(IpNet, AddressClass)>> = LazyLock::new(|| {
    use AddressClass::{Loopback, Metadata, Private, Reserved};
    let table = [
        // Metadata first: these sit inside link-local and unique-local ranges.
        ("169.254.169.254/32", Metadata),
        ("169.254.170.2/32", Metadata),
        ("fd00:ec2::254/128", Metadata),
        ("127.0.0.0/8", Loopback),
        ("::1/128", Loopback),
        ("10.0.0.0/8", Private),
        ("172.16.0.0/12", Private),
        ("192.168.0.0/16", Private),
        ("100.64.0.0/10", Private),
        ("169.254.0.0/16", Private),
        ("fc00::/7", Private),
        ("fec0::/10", Private),
        ("fe80::/10", Private),
        ("0.0.0.0/8", Reserved),
        ("192.0.0.0/24", Reserved),
        ("192.0.2.0/24", Reserved),
        ("198.18.0.0/15", Reserved),
        ("198.51.100.0/24", Reserved),
        ("203.0.113.0/24", Reserved),
        ("224.0.0.0/4", Reserved),
        ("240.0.0.0/4", Reserved),
        ("::/128", Reserved),
        ("100::/64", Reserved),
        ("2001::/32", Reserved),
        ("2001:db8::/32", Reserved),
        ("3fff::/20", Reserved),
        ("ff00::/8", Reserved),
    ];
    table
        .into_iter()
        .map(|(net, class)| {
            (
                net.parse().expect("the table contains valid networks"),
                class,
            )
        })
        .collect()
});

/// The networks a provider may reach beyond the public internet. The default allows none.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AddressPolicy {
    pub allow_private_networks: bool,
    pub allow_loopback: bool,
}

impl AddressPolicy {
    /// Returns the class that blocks `address`, or `None` when it may be connected to.
    pub fn blocked_class(self, address: IpAddr) -> Option<AddressClass> {
        let class = classify(address)?;
        let allowed = match class {
            AddressClass::Loopback => self.allow_loopback,
            AddressClass::Private => self.allow_private_networks,
            AddressClass::Metadata | AddressClass::Reserved => false,
        };
        (!allowed).then_some(class)
    }
}

/// Returns the class of a non-public address, judging an IPv6 address that embeds an IPv4
/// one (IPv4-mapped, IPv4-compatible, NAT64 or 6to4) by the embedded address.
fn classify(address: IpAddr) -> Option<AddressClass> {
    if let IpAddr::V6(v6) = address
        && let Some(v4) = embedded_ipv4(v6)
    {
        return classify(IpAddr::V4(v4));
    }
    if address == IpAddr::V4(Ipv4Addr::BROADCAST) {
        return Some(AddressClass::Reserved);
    }
    RANGES
        .iter()
        .find(|(net, _)| net.contains(&address))
        .map(|(_, class)| *class)
}

/// Returns the IPv4 address inside `v6` when it uses a form that a network may route to
/// that IPv4 address: `::ffff:a.b.c.d`, `::a.b.c.d`, `64:ff9b::a.b.c.d` and `2002:aabb:ccdd::`.
fn embedded_ipv4(v6: Ipv6Addr) -> Option<Ipv4Addr> {
    if let Some(v4) = v6.to_ipv4_mapped() {
        return Some(v4);
    }
    let segments = v6.segments();
    let octets = v6.octets();
    let tail = Ipv4Addr::new(octets[12], octets[13], octets[14], octets[15]);
    match segments {
        // IPv4-compatible, except :: and ::1, which the table classifies.
        [0, 0, 0, 0, 0, 0, high, _] if high != 0 => Some(tail),
        [0x64, 0xff9b, 0, 0, 0, 0, _, _] => Some(tail),
        [0x2002, _, _, ..] => Some(Ipv4Addr::new(octets[2], octets[3], octets[4], octets[5])),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NONE: AddressPolicy = AddressPolicy {
        allow_private_networks: false,
        allow_loopback: false,
    };
    const LOOPBACK: AddressPolicy = AddressPolicy {
        allow_private_networks: false,
        allow_loopback: true,
    };
    const PRIVATE: AddressPolicy = AddressPolicy {
        allow_private_networks: true,
        allow_loopback: false,
    };

    /// Address, class under the default policy, whether `allow_loopback` admits it, and
    /// whether `allow_private_networks` admits it.
    const TABLE: &[(&str, Option<AddressClass>, bool, bool)] = &[
        ("93.184.215.14", None, true, true),
        ("8.8.8.8", None, true, true),
        ("2606:4700:4700::1111", None, true, true),
        ("127.0.0.1", Some(AddressClass::Loopback), true, false),
        ("127.255.255.254", Some(AddressClass::Loopback), true, false),
        ("::1", Some(AddressClass::Loopback), true, false),
        (
            "::ffff:127.0.0.1",
            Some(AddressClass::Loopback),
            true,
            false,
        ),
        ("10.0.0.1", Some(AddressClass::Private), false, true),
        ("172.16.0.1", Some(AddressClass::Private), false, true),
        ("172.31.255.255", Some(AddressClass::Private), false, true),
        ("172.32.0.1", None, true, true),
        ("192.168.1.1", Some(AddressClass::Private), false, true),
        ("100.64.0.1", Some(AddressClass::Private), false, true),
        ("100.127.255.255", Some(AddressClass::Private), false, true),
        ("169.254.1.1", Some(AddressClass::Private), false, true),
        ("fd12:3456::1", Some(AddressClass::Private), false, true),
        ("fe80::1", Some(AddressClass::Private), false, true),
        ("::ffff:10.0.0.1", Some(AddressClass::Private), false, true),
        (
            "::ffff:192.168.0.1",
            Some(AddressClass::Private),
            false,
            true,
        ),
        ("64:ff9b::a00:1", Some(AddressClass::Private), false, true),
        ("2002:c0a8:101::1", Some(AddressClass::Private), false, true),
        (
            "169.254.169.254",
            Some(AddressClass::Metadata),
            false,
            false,
        ),
        ("169.254.170.2", Some(AddressClass::Metadata), false, false),
        ("fd00:ec2::254", Some(AddressClass::Metadata), false, false),
        (
            "::ffff:169.254.169.254",
            Some(AddressClass::Metadata),
            false,
            false,
        ),
        ("0.0.0.0", Some(AddressClass::Reserved), false, false),
        ("::", Some(AddressClass::Reserved), false, false),
        ("::ffff:0.0.0.0", Some(AddressClass::Reserved), false, false),
        ("224.0.0.1", Some(AddressClass::Reserved), false, false),
        (
            "239.255.255.250",
            Some(AddressClass::Reserved),
            false,
            false,
        ),
        ("ff02::1", Some(AddressClass::Reserved), false, false),
        (
            "255.255.255.255",
            Some(AddressClass::Reserved),
            false,
            false,
        ),
        ("192.0.2.1", Some(AddressClass::Reserved), false, false),
        ("198.51.100.1", Some(AddressClass::Reserved), false, false),
        ("203.0.113.1", Some(AddressClass::Reserved), false, false),
        ("2001:db8::1", Some(AddressClass::Reserved), false, false),
        ("198.18.0.1", Some(AddressClass::Reserved), false, false),
        ("240.0.0.1", Some(AddressClass::Reserved), false, false),
    ];

    #[test]
    fn address_table() {
        for (text, class, loopback_allows, private_allows) in TABLE {
            let address: IpAddr = text.parse().unwrap();
            assert_eq!(NONE.blocked_class(address), *class, "{text} by default");
            assert_eq!(
                LOOPBACK.blocked_class(address).is_none(),
                *loopback_allows,
                "{text} with allow_loopback"
            );
            assert_eq!(
                PRIVATE.blocked_class(address).is_none(),
                *private_allows,
                "{text} with allow_private_networks"
            );
        }
    }

    #[test]
    fn metadata_stays_blocked_when_everything_is_allowed() {
        let all = AddressPolicy {
            allow_private_networks: true,
            allow_loopback: true,
        };
        for text in ["169.254.169.254", "fd00:ec2::254", "::ffff:169.254.169.254"] {
            let address: IpAddr = text.parse().unwrap();
            assert_eq!(
                all.blocked_class(address),
                Some(AddressClass::Metadata),
                "{text}"
            );
        }
    }
}
