//! Destination checks that stop a URL source from reaching internal addresses (server-side
//! request forgery).

use std::{
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

/// Ranges denied to every URL source, whatever the cluster: loopback, link-local (which
/// contains the cloud metadata address 169.254.169.254) and the unspecified addresses.
///
/// Private ranges such as 10.0.0.0/8 are not in this list, because artifact repositories often
/// live there. A caller that must keep them out passes them with the cluster ranges.
pub const DEFAULT_DENIED_RANGES: [IpNet; 6] = [
    IpNet::V4(Ipv4Net::new_assert(Ipv4Addr::new(127, 0, 0, 0), 8)),
    IpNet::V4(Ipv4Net::new_assert(Ipv4Addr::new(169, 254, 0, 0), 16)),
    IpNet::V4(Ipv4Net::new_assert(Ipv4Addr::UNSPECIFIED, 8)),
    IpNet::V6(Ipv6Net::new_assert(Ipv6Addr::LOCALHOST, 128)),
    IpNet::V6(Ipv6Net::new_assert(
        Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0),
        10,
    )),
    IpNet::V6(Ipv6Net::new_assert(Ipv6Addr::UNSPECIFIED, 128)),
];

/// Rules for the addresses a URL source may connect to.
///
/// Two lists decide, in this order:
/// - The allow list (host names and ranges), set per registry, restricts. When it is not empty,
///   a host must be one of the allowed names, or every address it resolves to must lie in an
///   allowed range. An empty allow list lets every host through to the next check.
/// - The deny list rejects addresses in denied ranges, unless the address also lies in an
///   exempt range. Exempt ranges are set by the operator's administrator, for example to let a
///   test reach its own server on `127.0.0.1/32` while the rest of `127.0.0.0/8` stays denied.
///
/// Allowed host names and ranges never pass the deny list, because the addresses behind a name
/// can change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddressPolicy {
    denied_ranges: Vec<IpNet>,
    exempt_ranges: Vec<IpNet>,
    allowed_ranges: Vec<IpNet>,
    allowed_hosts: Vec<String>,
}

/// Reason why [`AddressPolicy::check`] rejected a destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denial {
    /// The address lies in a denied range and in no exempt range.
    DeniedRange { address: IpAddr, range: IpNet },
    /// The allow list is set, and neither the host name nor the address is on it.
    NotAllowed { address: IpAddr },
}

impl fmt::Display for Denial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::DeniedRange { address, range } => write!(
                f,
                "{address}, which is in the denied range {range}. Use a host outside loopback, \
                 link-local and the cluster's address ranges"
            ),
            Self::NotAllowed { address } => write!(
                f,
                "{address}, and neither this address nor the host name is in the registry's \
                 spec.sources.allowedHosts. Add the host there or use an allowed host"
            ),
        }
    }
}

impl AddressPolicy {
    /// Creates a policy that denies [`DEFAULT_DENIED_RANGES`] and the cluster's own ranges
    /// (service and pod CIDRs), and allows everything else.
    pub fn new(cluster_ranges: impl IntoIterator<Item = IpNet>) -> Self {
        let mut denied_ranges = DEFAULT_DENIED_RANGES.to_vec();
        denied_ranges.extend(cluster_ranges);
        Self {
            denied_ranges,
            exempt_ranges: Vec::new(),
            allowed_ranges: Vec::new(),
            allowed_hosts: Vec::new(),
        }
    }

    /// Adds a range to the deny list.
    pub fn deny_range(mut self, range: IpNet) -> Self {
        self.denied_ranges.push(range);
        self
    }

    /// Adds an exempt range: its addresses pass the deny list.
    pub fn exempt_range(mut self, range: IpNet) -> Self {
        self.exempt_ranges.push(range);
        self
    }

    /// Adds a range to the allow list. Its addresses are still checked against the deny list.
    pub fn allow_range(mut self, range: IpNet) -> Self {
        self.allowed_ranges.push(range);
        self
    }

    /// Adds a host name to the allow list. The name's addresses are still checked against the
    /// deny list.
    pub fn allow_host(mut self, host: &str) -> Self {
        self.allowed_hosts.push(normalize_host(host));
        self
    }

    /// Adds an allow list entry that is either a CIDR range, an IP address or a host name.
    pub fn allow(self, entry: &str) -> Self {
        if let Ok(range) = entry.parse::<IpNet>() {
            self.allow_range(range)
        } else if let Ok(address) = entry.parse::<IpAddr>() {
            self.allow_range(IpNet::from(canonical(address)))
        } else {
            self.allow_host(entry)
        }
    }

    /// Checks one resolved address of `host`.
    pub fn check(&self, host: &str, address: IpAddr) -> Result<(), Denial> {
        let address = canonical(address);
        if !self.is_allowed(host, address) {
            return Err(Denial::NotAllowed { address });
        }
        if self.in_range(&self.exempt_ranges, address) {
            return Ok(());
        }
        match self.denied_range_of(address) {
            Some(range) => Err(Denial::DeniedRange { address, range }),
            None => Ok(()),
        }
    }

    /// Checks every resolved address of `host`, and returns the first denial. One denied
    /// address rejects the host, because a later connection could reach any of them.
    pub fn check_all(
        &self,
        host: &str,
        addresses: impl IntoIterator<Item = IpAddr>,
    ) -> Result<(), Denial> {
        addresses
            .into_iter()
            .try_for_each(|address| self.check(host, address))
    }

    fn is_allowed(&self, host: &str, address: IpAddr) -> bool {
        (self.allowed_ranges.is_empty() && self.allowed_hosts.is_empty())
            || self.allowed_hosts.contains(&normalize_host(host))
            || self.in_range(&self.allowed_ranges, address)
    }

    fn in_range(&self, ranges: &[IpNet], address: IpAddr) -> bool {
        ranges.iter().any(|range| range.contains(&address))
    }

    fn denied_range_of(&self, address: IpAddr) -> Option<IpNet> {
        self.denied_ranges
            .iter()
            .find(|range| range.contains(&address))
            .copied()
    }
}

impl Default for AddressPolicy {
    /// Denies [`DEFAULT_DENIED_RANGES`] only.
    fn default() -> Self {
        Self::new([])
    }
}

/// Maps an IPv4-mapped IPv6 address (`::ffff:a.b.c.d`) to its IPv4 address, so that
/// `::ffff:127.0.0.1` meets the IPv4 loopback range.
///
/// NOTE: other IPv6 forms that embed an IPv4 address, such as NAT64 (`64:ff9b::/96`) and
/// 6to4 (`2002::/16`), are not mapped. Deny those ranges when the network routes them.
fn canonical(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(address, IpAddr::V4),
        IpAddr::V4(_) => address,
    }
}

/// Lowercases a host name and drops a trailing dot, so `Example.COM.` matches `example.com`.
fn normalize_host(host: &str) -> String {
    host.trim_end_matches('.').to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn net(text: &str) -> IpNet {
        text.parse().unwrap()
    }

    #[test]
    fn default_denies_internal_addresses() {
        let policy = AddressPolicy::default();
        let denied = [
            ("127.0.0.1", "127.0.0.0/8"),
            ("127.255.0.9", "127.0.0.0/8"),
            ("169.254.169.254", "169.254.0.0/16"),
            ("0.0.0.0", "0.0.0.0/8"),
            ("::1", "::1/128"),
            ("fe80::1", "fe80::/10"),
            ("::", "::/128"),
        ];
        for (address, range) in denied {
            assert_eq!(
                policy.check("example.com", ip(address)),
                Err(Denial::DeniedRange {
                    address: ip(address),
                    range: net(range)
                }),
                "{address}"
            );
        }
    }

    #[test]
    fn default_allows_public_addresses() {
        let policy = AddressPolicy::default();
        for address in [
            "93.184.215.14",
            "2606:2800:21f:cb07:6820:80da:af6b:8b2c",
            "10.1.2.3",
        ] {
            assert_eq!(
                policy.check("example.com", ip(address)),
                Ok(()),
                "{address}"
            );
        }
    }

    #[test]
    fn ipv4_mapped_address_checked_as_ipv4() {
        let policy = AddressPolicy::default();
        assert_eq!(
            policy.check("example.com", ip("::ffff:169.254.169.254")),
            Err(Denial::DeniedRange {
                address: ip("169.254.169.254"),
                range: net("169.254.0.0/16")
            })
        );
        assert!(policy.check("example.com", ip("::ffff:127.0.0.1")).is_err());
    }

    #[test]
    fn cluster_ranges_denied() {
        let policy = AddressPolicy::new([net("10.96.0.0/12"), net("fd00:10::/56")]);
        assert!(policy.check("svc", ip("10.96.0.1")).is_err());
        assert!(policy.check("svc", ip("fd00:10::a")).is_err());
        assert_eq!(policy.check("svc", ip("10.244.0.5")), Ok(()));
    }

    #[test]
    fn exempt_range_punches_through_deny_list() {
        let policy = AddressPolicy::default()
            .exempt_range(net("127.0.0.1/32"))
            .deny_range(net("127.0.0.2/32"));
        assert_eq!(policy.check("localhost", ip("127.0.0.1")), Ok(()));
        assert!(policy.check("localhost", ip("127.0.0.2")).is_err());
        assert!(policy.check("localhost", ip("::ffff:127.0.0.3")).is_err());
    }

    #[test]
    fn allowed_host_does_not_override_deny_list() {
        let policy = AddressPolicy::default().allow_host("Metadata.Internal.");
        assert!(
            policy
                .check("metadata.internal", ip("169.254.169.254"))
                .is_err()
        );
        assert_eq!(policy.check("metadata.internal", ip("203.0.113.7")), Ok(()));
    }

    #[test]
    fn allow_list_rejects_other_hosts() {
        let policy = AddressPolicy::default().allow_host("repo.example.com");
        assert_eq!(
            policy.check("other.example.com", ip("203.0.113.7")),
            Err(Denial::NotAllowed {
                address: ip("203.0.113.7")
            })
        );
    }

    #[test]
    fn allowed_range_does_not_override_deny_list() {
        let policy = AddressPolicy::default().allow("127.0.0.0/8");
        assert!(policy.check("localhost", ip("127.0.0.1")).is_err());
    }

    #[test]
    fn allow_list_applies_before_exemption() {
        let policy = AddressPolicy::default()
            .exempt_range(net("127.0.0.1/32"))
            .allow("artifacts.internal");
        assert_eq!(
            policy.check("127.0.0.1", ip("127.0.0.1")),
            Err(Denial::NotAllowed {
                address: ip("127.0.0.1")
            })
        );
        assert_eq!(policy.check("artifacts.internal", ip("127.0.0.1")), Ok(()));
    }

    #[test]
    fn allow_entry_parses_address_range_or_host() {
        let policy = AddressPolicy::default()
            .allow("203.0.113.0/24")
            .allow("198.51.100.7")
            .allow("Repo.Example.com");
        assert_eq!(policy.check("a", ip("203.0.113.9")), Ok(()));
        assert_eq!(policy.check("b", ip("198.51.100.7")), Ok(()));
        assert_eq!(policy.check("repo.example.com", ip("192.0.2.1")), Ok(()));
        assert!(policy.check("c", ip("192.0.2.1")).is_err());
    }

    #[test]
    fn one_denied_address_rejects_host() {
        let policy = AddressPolicy::default();
        let addresses = [ip("203.0.113.7"), ip("127.0.0.1")];
        assert!(policy.check_all("mixed.example.com", addresses).is_err());
    }
}
