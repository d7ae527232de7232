//! Decisions that compare a source JAR with what the registry has, kept free of I/O.

use std::collections::BTreeSet;

use crate::oci::ContentSummary;

/// The migration's decision for one version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// The registry has no such tag: upload, tag and read back.
    Copy,
    /// The registry has the tag with the same digest and size: nothing to write.
    AlreadyPresent,
    /// The registry has the tag with other content. Versions are immutable, so both sides stay
    /// as they are.
    Conflict { registry: ContentSummary },
}

/// Decides what to do with a version whose source content is `source`, given the content the
/// registry's tag points to, if any.
pub fn decide(source: ContentSummary, registry: Option<ContentSummary>) -> Decision {
    match registry {
        None => Decision::Copy,
        Some(registry) if registry == source => Decision::AlreadyPresent,
        Some(registry) => Decision::Conflict { registry },
    }
}

/// Returns the versions the registry has for an application that the store does not, sorted.
pub fn versions_only_in_registry(
    store_versions: &BTreeSet<&str>,
    registry_versions: &[String],
) -> Vec<String> {
    let mut only: Vec<String> = registry_versions
        .iter()
        .filter(|version| !store_versions.contains(version.as_str()))
        .cloned()
        .collect();
    only.sort();
    only.dedup();
    only
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oci::Digest;

    fn content(bytes: &[u8]) -> ContentSummary {
        ContentSummary {
            digest: Digest::of(bytes),
            size: bytes.len() as u64,
        }
    }

    #[test]
    fn missing_tag_is_copied() {
        assert_eq!(decide(content(b"jar"), None), Decision::Copy);
    }

    #[test]
    fn same_content_is_skipped() {
        assert_eq!(
            decide(content(b"jar"), Some(content(b"jar"))),
            Decision::AlreadyPresent
        );
    }

    #[test]
    fn other_digest_is_conflict() {
        let registry = content(b"other");
        assert_eq!(
            decide(content(b"jar"), Some(registry)),
            Decision::Conflict { registry }
        );
    }

    #[test]
    fn same_digest_other_size_is_conflict() {
        // A manifest that records the right digest with a wrong size describes other bytes.
        let registry = ContentSummary {
            size: 99,
            ..content(b"jar")
        };
        assert_eq!(
            decide(content(b"jar"), Some(registry)),
            Decision::Conflict { registry }
        );
    }

    #[test]
    fn registry_only_versions_listed_once() {
        let store = BTreeSet::from(["1.0", "2.0"]);
        let registry = ["3.0", "1.0", "2.5", "3.0"].map(str::to_owned);
        assert_eq!(versions_only_in_registry(&store, &registry), ["2.5", "3.0"]);
    }

    #[test]
    fn registry_without_extra_versions_lists_none() {
        let store = BTreeSet::from(["1.0"]);
        let registry = ["1.0".to_owned()];
        assert!(versions_only_in_registry(&store, &registry).is_empty());
    }
}
