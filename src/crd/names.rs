//! The grammar of Kubernetes names (RFC 1123), shared by every check of a name or host.

/// Maximum length of a DNS label: a namespace, container or label-like name.
pub const MAX_LABEL_LEN: usize = 63;
/// Maximum length of an object name (a DNS subdomain).
pub const MAX_SUBDOMAIN_LEN: usize = 253;

fn is_alphanumeric(byte: u8) -> bool {
    byte.is_ascii_lowercase() || byte.is_ascii_digit()
}

/// Returns whether `part` is non-empty, made of `[a-z0-9-]`, and starts and ends with a letter
/// or digit.
fn is_label_shaped(part: &str) -> bool {
    let bytes = part.as_bytes();
    bytes.first().is_some_and(|&b| is_alphanumeric(b))
        && bytes.last().is_some_and(|&b| is_alphanumeric(b))
        && bytes.iter().all(|&b| is_alphanumeric(b) || b == b'-')
}

/// Matches an RFC 1123 label as Kubernetes checks namespace and container names: at most 63
/// characters of `[a-z0-9-]`, starting and ending with a letter or digit.
pub fn is_dns_label(value: &str) -> bool {
    value.len() <= MAX_LABEL_LEN && is_label_shaped(value)
}

/// Matches an RFC 1123 subdomain as Kubernetes checks object names: at most 253 characters of
/// labels separated by dots. Unlike in a host name, each label may be longer than 63.
pub fn is_dns_subdomain(value: &str) -> bool {
    value.len() <= MAX_SUBDOMAIN_LEN && value.split('.').all(is_label_shaped)
}

/// Matches a host name: a subdomain whose every label is at most 63 characters.
pub fn is_host_name(value: &str) -> bool {
    value.len() <= MAX_SUBDOMAIN_LEN && value.split('.').all(is_dns_label)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_table() {
        for (value, expected) in [
            ("a", true),
            ("loader-1", true),
            ("", false),
            ("-a", false),
            ("a-", false),
            ("A", false),
            ("a.b", false),
            ("a_b", false),
            (&"a".repeat(63), true),
            (&"a".repeat(64), false),
        ] {
            assert_eq!(is_dns_label(value), expected, "{value:?}");
        }
    }

    #[test]
    fn subdomain_table() {
        let long_label = "a".repeat(64);
        for (value, expected) in [
            ("billing", true),
            ("billing.v2", true),
            (long_label.as_str(), true),
            ("billing..v2", false),
            (".billing", false),
            ("billing/v2", false),
            ("Billing", false),
            ("bil\u{e9}ng", false),
            ("../etc", false),
            (&"a".repeat(253), true),
            (&"a".repeat(254), false),
        ] {
            assert_eq!(is_dns_subdomain(value), expected, "{value:?}");
        }
    }

    #[test]
    fn host_name_limits_each_label() {
        assert!(is_host_name("registry.example.com"));
        assert!(!is_host_name(&format!("{}.example.com", "a".repeat(64))));
        assert!(!is_host_name("registry..example.com"));
    }
}
