//! The layout of a filesystem store, `{root}/{tenantId}/{appId}/{version}.jar`, as rules on
//! single entries. The rules take names and file kinds and touch no file, so [`super::scan`]
//! does the I/O and the tests here cover every case.

use std::{collections::BTreeSet, ffi::OsStr, path::PathBuf};

use crate::{
    artifact::error::ContentError,
    oci::{ArtifactCoordinates, InvalidCoordinates},
};

/// Depth of version files below the root: tenant directories are at depth 1, application
/// directories at depth 2.
pub const VERSION_DEPTH: usize = 3;

const JAR_EXTENSION: &str = ".jar";
/// Suffix of the checksum files that [`crate::store::FilesystemArtifactStore`] writes beside
/// each JAR.
const CHECKSUM_EXTENSION: &str = ".jar.sha256";

/// Kind of a directory entry, after following a symbolic link that stays inside the root.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    File,
    Directory,
    /// A FIFO, socket or device.
    Special,
}

/// The reason a path of the source store is not migrated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    #[error(
        "file outside an application directory; versions belong at \
         {{tenantId}}/{{appId}}/{{version}}.jar"
    )]
    FileAboveVersionDepth,

    #[error(
        "directory where a version file belongs; the layout has no directories below \
         {{tenantId}}/{{appId}}"
    )]
    DirectoryAtVersionDepth,

    #[error("not a .jar file")]
    NotJar,

    #[error("checksum file without its JAR {jar}")]
    OrphanChecksum { jar: String },

    #[error("name is not valid UTF-8")]
    NonUtf8Name,

    #[error("{0}")]
    InvalidCoordinates(InvalidCoordinates),

    #[error("symbolic link to {}, which is outside the store root", target.display())]
    SymlinkOutsideRoot { target: PathBuf },

    #[error("not a regular file or directory (a FIFO, socket or device)")]
    Special,

    /// A version file whose content does not start like a JAR. The artifact controller and the
    /// upload API reject such content, so the migration must not store it as a JAR either.
    #[error("{0}; replace the file with the application's JAR or move it out of the store")]
    NotZip(ContentError),

    #[error("unreadable: {reason}")]
    Unreadable { reason: String },
}

impl Rejection {
    /// Returns whether the rejected path counts as a failed artifact, because it may contain
    /// a version that was not migrated (unreadable) or is one (not a ZIP). Other rejected paths are reported and do not fail the
    /// run, because stores often contain unrelated files.
    pub fn is_failure(&self) -> bool {
        matches!(self, Rejection::Unreadable { .. } | Rejection::NotZip(_))
    }

    /// Short, stable label for the kind of rejection, used in reports.
    pub fn label(&self) -> &'static str {
        match self {
            Rejection::FileAboveVersionDepth => "file_above_version_depth",
            Rejection::DirectoryAtVersionDepth => "directory_at_version_depth",
            Rejection::NotJar => "not_jar",
            Rejection::OrphanChecksum { .. } => "orphan_checksum",
            Rejection::NonUtf8Name => "non_utf8_name",
            Rejection::InvalidCoordinates(_) => "invalid_coordinates",
            Rejection::SymlinkOutsideRoot { .. } => "symlink_outside_root",
            Rejection::Special => "special_file",
            Rejection::NotZip(_) => "not_zip",
            Rejection::Unreadable { .. } => "unreadable",
        }
    }
}

/// The scan's handling of an entry at a given depth.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DepthRule {
    /// List the directory's entries.
    Descend,
    /// Classify the file with [`classify_version_file`].
    VersionFile,
    Reject(Rejection),
}

/// Applies the layout's depth rules to an entry `depth` levels below the root.
pub fn depth_rule(depth: usize, kind: EntryKind) -> DepthRule {
    match kind {
        EntryKind::Special => DepthRule::Reject(Rejection::Special),
        EntryKind::Directory if depth < VERSION_DEPTH => DepthRule::Descend,
        EntryKind::Directory => DepthRule::Reject(Rejection::DirectoryAtVersionDepth),
        EntryKind::File if depth < VERSION_DEPTH => {
            DepthRule::Reject(Rejection::FileAboveVersionDepth)
        }
        EntryKind::File => DepthRule::VersionFile,
    }
}

/// A file at version depth, classified by its name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VersionFile {
    Version(ArtifactCoordinates),
    /// The checksum file of a JAR in the same directory, which the migration does not need
    /// because it hashes every JAR itself.
    Checksum,
    Rejected(Rejection),
}

/// Classifies the file `name` in the directory `{tenant}/{app}`, whose regular file names are
/// `files` (used to pair a checksum file with its JAR).
pub fn classify_version_file(
    tenant: &OsStr,
    app: &OsStr,
    name: &OsStr,
    files: &BTreeSet<&OsStr>,
) -> VersionFile {
    let (Some(tenant), Some(app), Some(name)) = (tenant.to_str(), app.to_str(), name.to_str())
    else {
        return VersionFile::Rejected(Rejection::NonUtf8Name);
    };

    if let Some(version) = name.strip_suffix(CHECKSUM_EXTENSION) {
        let jar = format!("{version}{JAR_EXTENSION}");
        return if files.contains(OsStr::new(&jar)) {
            VersionFile::Checksum
        } else {
            VersionFile::Rejected(Rejection::OrphanChecksum { jar })
        };
    }

    let Some(version) = name.strip_suffix(JAR_EXTENSION) else {
        return VersionFile::Rejected(Rejection::NotJar);
    };
    match ArtifactCoordinates::new(tenant, app, version) {
        Ok(coordinates) => VersionFile::Version(coordinates),
        Err(invalid) => VersionFile::Rejected(Rejection::InvalidCoordinates(invalid)),
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::ffi::OsStrExt as _;

    use super::*;

    fn classify(tenant: &str, app: &str, name: &str, files: &[&str]) -> VersionFile {
        let files = files.iter().map(OsStr::new).collect();
        classify_version_file(
            OsStr::new(tenant),
            OsStr::new(app),
            OsStr::new(name),
            &files,
        )
    }

    fn rejected_field(result: VersionFile) -> &'static str {
        match result {
            VersionFile::Rejected(Rejection::InvalidCoordinates(invalid)) => invalid.field,
            other => panic!("expected invalid coordinates, got {other:?}"),
        }
    }

    #[test]
    fn depth_rule_table() {
        let cases = [
            (1, EntryKind::Directory, DepthRule::Descend),
            (2, EntryKind::Directory, DepthRule::Descend),
            (
                3,
                EntryKind::Directory,
                DepthRule::Reject(Rejection::DirectoryAtVersionDepth),
            ),
            (
                1,
                EntryKind::File,
                DepthRule::Reject(Rejection::FileAboveVersionDepth),
            ),
            (
                2,
                EntryKind::File,
                DepthRule::Reject(Rejection::FileAboveVersionDepth),
            ),
            (3, EntryKind::File, DepthRule::VersionFile),
            (3, EntryKind::Special, DepthRule::Reject(Rejection::Special)),
            (1, EntryKind::Special, DepthRule::Reject(Rejection::Special)),
        ];
        for (depth, kind, expected) in cases {
            assert_eq!(depth_rule(depth, kind), expected, "{depth} {kind:?}");
        }
    }

    #[test]
    fn jar_becomes_coordinates() {
        let expected = ArtifactCoordinates::new("acme", "billing", "1.2.3").unwrap();
        assert_eq!(
            classify("acme", "billing", "1.2.3.jar", &["1.2.3.jar"]),
            VersionFile::Version(expected)
        );
    }

    #[test]
    fn checksum_beside_jar_is_part_of_layout() {
        let files = ["1.0.jar", "1.0.jar.sha256"];
        assert_eq!(
            classify("acme", "billing", "1.0.jar.sha256", &files),
            VersionFile::Checksum
        );
    }

    #[test]
    fn checksum_without_jar_rejected() {
        assert_eq!(
            classify("acme", "billing", "1.0.jar.sha256", &["1.0.jar.sha256"]),
            VersionFile::Rejected(Rejection::OrphanChecksum {
                jar: "1.0.jar".to_owned()
            })
        );
    }

    #[test]
    fn other_extensions_rejected() {
        for name in ["notes.txt", "1.0.JAR", "1.0.jar.bak", "1.0", ".1.0.jar.tmp"] {
            assert_eq!(
                classify("acme", "billing", name, &[name]),
                VersionFile::Rejected(Rejection::NotJar),
                "{name}"
            );
        }
    }

    #[test]
    fn invalid_coordinates_name_the_field() {
        assert_eq!(
            rejected_field(classify("Acme", "billing", "1.0.jar", &[])),
            "tenant id"
        );
        assert_eq!(
            rejected_field(classify("acme", "bill ing", "1.0.jar", &[])),
            "application id"
        );
        assert_eq!(
            rejected_field(classify("acme", "billing", "1..2.jar", &[])),
            "version"
        );
        assert_eq!(
            rejected_field(classify("acme", "billing", ".jar", &[])),
            "version"
        );
        assert_eq!(
            rejected_field(classify("acme", "billing", ".hidden.jar", &[])),
            "version"
        );
    }

    #[test]
    fn non_utf8_name_rejected() {
        let name = OsStr::from_bytes(b"1.0\xff.jar");
        let result = classify_version_file(
            OsStr::new("acme"),
            OsStr::new("billing"),
            name,
            &BTreeSet::new(),
        );
        assert_eq!(result, VersionFile::Rejected(Rejection::NonUtf8Name));
    }

    #[test]
    fn only_unreadable_counts_as_failure() {
        let unreadable = Rejection::Unreadable {
            reason: "permission denied".to_owned(),
        };
        assert!(unreadable.is_failure());
        assert!(!Rejection::NotJar.is_failure());
        assert!(!Rejection::Special.is_failure());
        assert!(
            !Rejection::SymlinkOutsideRoot {
                target: PathBuf::from("/etc/passwd")
            }
            .is_failure()
        );
    }

    #[test]
    fn rejection_messages_name_the_layout() {
        assert_eq!(
            Rejection::FileAboveVersionDepth.to_string(),
            "file outside an application directory; versions belong at \
             {tenantId}/{appId}/{version}.jar"
        );
        let message = Rejection::SymlinkOutsideRoot {
            target: PathBuf::from("/etc/passwd"),
        }
        .to_string();
        assert_eq!(
            message,
            "symbolic link to /etc/passwd, which is outside the store root"
        );
    }
}
