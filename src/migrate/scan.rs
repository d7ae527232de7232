//! Walks a filesystem store and sorts its entries into versions and rejected paths, following
//! the rules of [`super::layout`].
//!
//! The walk never goes deeper than [`VERSION_DEPTH`], so a symbolic link cycle cannot make it
//! loop. A symbolic link is followed only when its target, with every link resolved, is inside
//! the root. A version behind such a link is read from the resolved target path.

use std::{
    collections::BTreeSet,
    ffi::{OsStr, OsString},
    fs, io,
    path::{Path, PathBuf},
};

use super::{
    MigrateError,
    layout::{DepthRule, EntryKind, Rejection, VERSION_DEPTH, VersionFile, classify_version_file},
};
use crate::{
    artifact::{checks::ZIP_SIGNATURE, error::ContentError},
    oci::ArtifactCoordinates,
};

/// A version found in the source store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceArtifact {
    pub coordinates: ArtifactCoordinates,
    /// Path of the file as found under the root, for messages.
    pub path: PathBuf,
    /// Path the content is read from: `path`, or the target of a symbolic link.
    pub read_path: PathBuf,
    /// Size in bytes when scanned.
    pub size: u64,
}

/// A path of the source store that is not migrated, with the reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RejectedPath {
    pub path: PathBuf,
    pub rejection: Rejection,
}

/// Result of a scan, each list sorted.
#[derive(Debug, Default)]
pub struct Scan {
    /// Versions in coordinate order.
    pub artifacts: Vec<SourceArtifact>,
    /// Rejected paths in path order.
    pub rejected: Vec<RejectedPath>,
}

impl Scan {
    /// Total size in bytes of every version found.
    pub fn total_bytes(&self) -> u64 {
        self.artifacts.iter().map(|artifact| artifact.size).sum()
    }
}

/// Scans the store under `root`. Problems with single entries become [`RejectedPath`]s, so only
/// an unusable root fails the scan.
///
/// # Errors
///
/// [`MigrateError::SourceRoot`] when `root` cannot be resolved or is not a directory.
pub fn scan(root: &Path) -> Result<Scan, MigrateError> {
    let source_root_error = |source| MigrateError::SourceRoot {
        path: root.to_path_buf(),
        source,
    };
    let canonical_root = fs::canonicalize(root).map_err(source_root_error)?;
    if !canonical_root.is_dir() {
        return Err(source_root_error(io::Error::new(
            io::ErrorKind::NotADirectory,
            "not a directory",
        )));
    }

    let mut walker = Walker {
        canonical_root,
        scan: Scan::default(),
    };
    walker.walk_directory(root, &[])?;
    let mut scan = walker.scan;
    scan.artifacts
        .sort_by(|left, right| left.coordinates.cmp(&right.coordinates));
    scan.rejected
        .sort_by(|left, right| left.path.cmp(&right.path));
    Ok(scan)
}

struct Walker {
    canonical_root: PathBuf,
    scan: Scan,
}

/// An entry of a directory listing, with symbolic links resolved.
struct Entry {
    name: OsString,
    path: PathBuf,
    read_path: PathBuf,
    kind: EntryKind,
    size: u64,
}

impl Walker {
    /// Classifies the entries of `dir`, whose names below the root are `parents`.
    fn walk_directory(&mut self, dir: &Path, parents: &[OsString]) -> Result<(), MigrateError> {
        let listing = match fs::read_dir(dir) {
            Ok(listing) => listing,
            Err(source) if parents.is_empty() => {
                return Err(MigrateError::SourceRoot {
                    path: dir.to_path_buf(),
                    source,
                });
            }
            Err(error) => {
                self.reject(dir.to_path_buf(), unreadable(&error));
                return Ok(());
            }
        };

        let mut entries = Vec::new();
        for item in listing {
            match item {
                Ok(item) => match self.resolve(item.path(), item.file_name()) {
                    Ok(entry) => entries.push(entry),
                    Err(rejected) => self.scan.rejected.push(rejected),
                },
                Err(error) => self.reject(dir.to_path_buf(), unreadable(&error)),
            }
        }
        let files: BTreeSet<&OsStr> = entries
            .iter()
            .filter(|entry| entry.kind == EntryKind::File)
            .map(|entry| entry.name.as_os_str())
            .collect();

        let depth = parents.len() + 1;
        let mut subdirectories = Vec::new();
        for entry in &entries {
            match super::layout::depth_rule(depth, entry.kind) {
                DepthRule::Descend => subdirectories.push(entry),
                DepthRule::Reject(rejection) => self.reject(entry.path.clone(), rejection),
                DepthRule::VersionFile => {
                    debug_assert_eq!(depth, VERSION_DEPTH);
                    let classified =
                        classify_version_file(&parents[0], &parents[1], &entry.name, &files);
                    self.add_version_file(entry, classified);
                }
            }
        }
        for subdirectory in subdirectories {
            let mut names = parents.to_vec();
            names.push(subdirectory.name.clone());
            self.walk_directory(&subdirectory.path, &names)?;
        }
        Ok(())
    }

    fn add_version_file(&mut self, entry: &Entry, classified: VersionFile) {
        match classified {
            VersionFile::Version(coordinates) => match zip_signature_check(&entry.read_path) {
                Ok(()) => self.scan.artifacts.push(SourceArtifact {
                    coordinates,
                    path: entry.path.clone(),
                    read_path: entry.read_path.clone(),
                    size: entry.size,
                }),
                Err(rejection) => self.reject(entry.path.clone(), rejection),
            },
            VersionFile::Checksum => {}
            VersionFile::Rejected(rejection) => self.reject(entry.path.clone(), rejection),
        }
    }

    /// Reads an entry's metadata, following a symbolic link only when it stays inside the root.
    fn resolve(&self, path: PathBuf, name: OsString) -> Result<Entry, RejectedPath> {
        let rejected = |rejection| RejectedPath {
            path: path.clone(),
            rejection,
        };
        let link = fs::symlink_metadata(&path).map_err(|error| rejected(unreadable(&error)))?;
        let (read_path, metadata) = if link.file_type().is_symlink() {
            let target = fs::canonicalize(&path).map_err(|error| rejected(unreadable(&error)))?;
            if !target.starts_with(&self.canonical_root) {
                return Err(rejected(Rejection::SymlinkOutsideRoot { target }));
            }
            let metadata = fs::metadata(&target).map_err(|error| rejected(unreadable(&error)))?;
            (target, metadata)
        } else {
            (path.clone(), link)
        };

        let kind = if metadata.is_file() {
            EntryKind::File
        } else if metadata.is_dir() {
            EntryKind::Directory
        } else {
            EntryKind::Special
        };
        Ok(Entry {
            name,
            path,
            read_path,
            kind,
            size: metadata.len(),
        })
    }

    fn reject(&mut self, path: PathBuf, rejection: Rejection) {
        self.scan.rejected.push(RejectedPath { path, rejection });
    }
}

/// Reads the first bytes of a version file and rejects it unless they are the ZIP signature
/// that starts every JAR, so that an HTML error page or an empty file saved as `{version}.jar`
/// is reported instead of pushed.
fn zip_signature_check(path: &Path) -> Result<(), Rejection> {
    use std::io::Read as _;

    let mut prefix = Vec::with_capacity(ZIP_SIGNATURE.len());
    fs::File::open(path)
        .and_then(|file| {
            file.take(ZIP_SIGNATURE.len() as u64)
                .read_to_end(&mut prefix)
        })
        .map_err(|error| unreadable(&error))?;
    if prefix == ZIP_SIGNATURE {
        Ok(())
    } else {
        Err(Rejection::NotZip(ContentError::NotZip { actual: prefix }))
    }
}

fn unreadable(error: &io::Error) -> Rejection {
    Rejection::Unreadable {
        reason: error.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use super::*;

    fn write(root: &Path, relative: &str, content: &[u8]) {
        let path = root.join(relative);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, content).unwrap();
    }

    fn rejection_of<'a>(scan: &'a Scan, root: &Path, relative: &str) -> &'a Rejection {
        let path = root.join(relative);
        &scan
            .rejected
            .iter()
            .find(|rejected| rejected.path == path)
            .unwrap_or_else(|| panic!("{relative} not rejected: {:?}", scan.rejected))
            .rejection
    }

    #[test]
    fn versions_found_in_coordinate_order() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        write(root, "beta/app/2.0.jar", b"PK\x03\x04b");
        write(root, "acme/billing/1.0.jar", b"PK\x03\x04a");
        write(root, "acme/billing/1.0.jar.sha256", b"sha256:x 5\n");

        let scan = scan(root).unwrap();
        let references: Vec<String> = scan
            .artifacts
            .iter()
            .map(|artifact| artifact.coordinates.to_string())
            .collect();
        assert_eq!(references, ["acme/billing:v1.0", "beta/app:v2.0"]);
        assert!(scan.rejected.is_empty(), "{:?}", scan.rejected);
        assert_eq!(scan.artifacts[0].size, 5);
        assert_eq!(scan.total_bytes(), 10);
    }

    #[test]
    fn odd_entries_rejected_by_path() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        write(root, "README.md", b"");
        write(root, "acme/notes.txt", b"");
        write(root, "acme/billing/deeper/1.0.jar", b"");
        write(root, "acme/billing/1..2.jar", b"");

        let scan = scan(root).unwrap();
        assert!(scan.artifacts.is_empty());
        assert_eq!(
            rejection_of(&scan, root, "README.md"),
            &Rejection::FileAboveVersionDepth
        );
        assert_eq!(
            rejection_of(&scan, root, "acme/notes.txt"),
            &Rejection::FileAboveVersionDepth
        );
        assert_eq!(
            rejection_of(&scan, root, "acme/billing/deeper"),
            &Rejection::DirectoryAtVersionDepth
        );
        assert_eq!(
            rejection_of(&scan, root, "acme/billing/1..2.jar").label(),
            "invalid_coordinates"
        );
        assert_eq!(scan.rejected.len(), 4);
    }

    #[test]
    fn version_files_without_zip_signature_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        write(root, "acme/billing/1.0.jar", b"<html>login</html>");
        write(root, "acme/billing/2.0.jar", b"");
        write(root, "acme/billing/3.0.jar", b"PK\x03\x04");

        let scan = scan(root).unwrap();
        assert_eq!(scan.artifacts.len(), 1);
        let html = rejection_of(&scan, root, "acme/billing/1.0.jar");
        assert_eq!(html.label(), "not_zip");
        assert!(html.is_failure());
        assert!(html.to_string().contains("found 3c 68 74 6d"), "{html}");
        let empty = rejection_of(&scan, root, "acme/billing/2.0.jar");
        assert!(empty.to_string().contains("empty content"), "{empty}");
    }

    #[test]
    fn symlink_inside_root_followed() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        write(root, "acme/billing/1.0.jar", b"PK\x03\x04");
        fs::create_dir_all(root.join("acme/copy")).unwrap();
        symlink("../billing/1.0.jar", root.join("acme/copy/1.0.jar")).unwrap();

        let scan = scan(root).unwrap();
        assert_eq!(scan.artifacts.len(), 2);
        let linked = &scan.artifacts[1];
        assert_eq!(linked.coordinates.to_string(), "acme/copy:v1.0");
        assert_eq!(linked.path, root.join("acme/copy/1.0.jar"));
        assert_eq!(
            linked.read_path,
            fs::canonicalize(root.join("acme/billing/1.0.jar")).unwrap()
        );
    }

    #[test]
    fn symlink_leaving_root_rejected() {
        let outside = tempfile::tempdir().unwrap();
        fs::write(outside.path().join("secret.jar"), b"x").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::create_dir_all(root.join("acme/billing")).unwrap();
        symlink(
            outside.path().join("secret.jar"),
            root.join("acme/billing/1.0.jar"),
        )
        .unwrap();
        symlink(outside.path(), root.join("acme/elsewhere")).unwrap();

        let scan = scan(root).unwrap();
        assert!(scan.artifacts.is_empty());
        assert_eq!(
            rejection_of(&scan, root, "acme/billing/1.0.jar").label(),
            "symlink_outside_root"
        );
        assert_eq!(
            rejection_of(&scan, root, "acme/elsewhere").label(),
            "symlink_outside_root"
        );
    }

    #[test]
    fn broken_and_looping_symlinks_unreadable() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::create_dir_all(root.join("acme/billing")).unwrap();
        symlink("missing.jar", root.join("acme/billing/1.0.jar")).unwrap();
        symlink("2.0.jar", root.join("acme/billing/2.0.jar")).unwrap();

        let scan = scan(root).unwrap();
        for relative in ["acme/billing/1.0.jar", "acme/billing/2.0.jar"] {
            let rejection = rejection_of(&scan, root, relative);
            assert!(rejection.is_failure(), "{relative}: {rejection}");
        }
    }

    #[test]
    fn missing_root_fails() {
        let dir = tempfile::tempdir().unwrap();
        let error = scan(&dir.path().join("missing")).unwrap_err();
        assert!(matches!(error, MigrateError::SourceRoot { .. }), "{error}");
    }

    #[test]
    fn file_as_root_fails() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("store.jar");
        fs::write(&file, b"").unwrap();
        let error = scan(&file).unwrap_err();
        assert!(error.to_string().contains("not a directory"), "{error}");
    }
}
