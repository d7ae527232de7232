//! A store in a local directory: `{root}/{tenantId}/{appId}/{version}.jar`.
//!
//! Each JAR has a sidecar `{version}.jar.sha256` containing `sha256:<hex> <size>`, so `stat`
//! needs no hashing. Writes are crash-safe:
//!
//! 1. The content goes to a temporary file in the target directory while it is hashed, and the
//!    file is synced.
//! 2. The file is renamed to `{version}.jar` without replacing an existing one (`renameat2` with
//!    `RENAME_NOREPLACE`, or a hard link, through `tempfile`). Of two concurrent puts of a
//!    version, exactly one wins. The other compares digests like any put of an existing
//!    version.
//! 3. The sidecar is written the same way and renamed over any stale one, then the directory is
//!    synced.
//!
//! A JAR without a matching sidecar (after a crash between steps 2 and 3, or a file copied in by
//! hand) is hashed on `stat`. A sidecar whose size differs from the JAR's is treated as missing.
//! Temporary files start with `.`, which no version does, so listings skip them.
//!
//! Paths are built only from [`ArtifactCoordinates`], whose validation rejects every value that
//! could leave the root (`..`, separators, empty or non-ASCII names), so no path is built from
//! an unchecked string.

use std::{
    io,
    path::{Path, PathBuf},
    sync::Arc,
};

use futures::TryStreamExt as _;
use tokio::{
    fs,
    io::{AsyncRead, AsyncReadExt as _, AsyncWriteExt as _},
};
use tokio_util::io::ReaderStream;
use tracing::{debug, instrument};

use super::{
    ArtifactStore, OpenedArtifact, StoreError, StoredArtifact,
    immutable::{check_expected, hash_reader, reuse_existing},
    locks::VersionLocks,
};
use crate::oci::{
    ApplicationRef, ArtifactCoordinates, ContentSummary, Digest, JarMetadata,
    coordinates::validate_version,
    digest::ContentHasher,
    streaming::{CHUNK_SIZE, VerifyingStream},
};

const JAR_EXTENSION: &str = ".jar";
const SIDECAR_EXTENSION: &str = ".jar.sha256";
const TEMPORARY_PREFIX: &str = ".";

/// Stores JARs as files under a root directory.
///
/// Puts and deletes of one version through the same store (or its clones) run one after the
/// other. Between processes, the no-replace rename still lets only one put of a version win.
///
/// The file name and source of [`JarMetadata`] are not stored, because the layout fixes the
/// file name.
#[derive(Debug, Clone)]
pub struct FilesystemArtifactStore {
    root: PathBuf,
    locks: Arc<VersionLocks>,
}

impl FilesystemArtifactStore {
    /// Uses `root` as the store's directory. It is created on the first put.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self {
            root: root.into(),
            locks: Arc::default(),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn application_dir(&self, application: &ApplicationRef) -> PathBuf {
        self.root
            .join(application.tenant_id())
            .join(application.app_id())
    }

    /// Path of a version's JAR: `{root}/{tenantId}/{appId}/{version}.jar`.
    pub fn jar_path(&self, coordinates: &ArtifactCoordinates) -> PathBuf {
        self.application_dir(coordinates.application())
            .join(format!("{}{JAR_EXTENSION}", coordinates.version()))
    }

    fn sidecar_path(&self, coordinates: &ArtifactCoordinates) -> PathBuf {
        self.application_dir(coordinates.application())
            .join(format!("{}{SIDECAR_EXTENSION}", coordinates.version()))
    }

    /// Writes the content to a new file and links it as the version, unless the version
    /// appeared meanwhile.
    async fn write_new(
        &self,
        coordinates: &ArtifactCoordinates,
        reader: impl AsyncRead + Unpin,
        expected: Option<&Digest>,
    ) -> Result<StoredArtifact, StoreError> {
        let dir = self.application_dir(coordinates.application());
        create_dir_synced(&self.root, &dir).await?;

        let (file, temporary) = create_temporary(&dir).await?;
        let content = write_hashed(coordinates, reader, file, &temporary).await?;
        check_expected(coordinates, expected, content)?;

        let jar_path = self.jar_path(coordinates);
        match persist_no_replace(temporary, &jar_path).await {
            Ok(()) => {}
            Err(error) if error.kind() == io::ErrorKind::AlreadyExists => {
                debug!(%coordinates, "a concurrent put stored the version first");
                let existing =
                    self.stat(coordinates)
                        .await?
                        .ok_or_else(|| StoreError::NotFound {
                            coordinates: Box::new(coordinates.clone()),
                        })?;
                return reuse_existing(existing, content);
            }
            Err(error) => return Err(StoreError::filesystem("rename to", &jar_path)(error)),
        }
        self.write_sidecar(coordinates, content).await?;
        sync_dir(&dir).await?;
        Ok(StoredArtifact {
            coordinates: coordinates.clone(),
            digest: content.digest,
            size: content.size,
        })
    }

    async fn write_sidecar(
        &self,
        coordinates: &ArtifactCoordinates,
        content: ContentSummary,
    ) -> Result<(), StoreError> {
        let path = self.sidecar_path(coordinates);
        let dir = path
            .parent()
            .expect("a sidecar is inside its application directory");
        let (mut file, temporary) = create_temporary(dir).await?;
        let line = format!("{} {}\n", content.digest, content.size);
        let write = async {
            file.write_all(line.as_bytes()).await?;
            file.sync_all().await
        };
        write
            .await
            .map_err(StoreError::filesystem("write", temporary.to_path_buf()))?;
        let path_for_error = path.clone();
        tokio::task::spawn_blocking(move || temporary.persist(&path))
            .await
            .expect("the rename task does not panic")
            .map_err(|error| StoreError::filesystem("rename to", path_for_error)(error.error))
    }

    /// Reads the sidecar, or returns `None` when it is missing or does not match the JAR's size.
    async fn read_sidecar(
        &self,
        coordinates: &ArtifactCoordinates,
        jar_size: u64,
    ) -> Result<Option<Digest>, StoreError> {
        let path = self.sidecar_path(coordinates);
        let text = match fs::read_to_string(&path).await {
            Ok(text) => text,
            Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(error) => return Err(StoreError::filesystem("read", path)(error)),
        };
        let recorded = text.split_once(' ').and_then(|(digest, size)| {
            let digest = digest.parse::<Digest>().ok()?;
            let size = size.trim().parse::<u64>().ok()?;
            Some((digest, size))
        });
        Ok(recorded
            .filter(|(_, size)| *size == jar_size)
            .map(|(digest, _)| digest))
    }
}

impl ArtifactStore for FilesystemArtifactStore {
    #[instrument(skip(self, reader, _metadata), fields(root = %self.root.display(), %coordinates))]
    async fn put<R>(
        &self,
        coordinates: &ArtifactCoordinates,
        reader: R,
        expected_sha256: Option<&Digest>,
        _metadata: &JarMetadata,
    ) -> Result<StoredArtifact, StoreError>
    where
        R: AsyncRead + Unpin + Send,
    {
        let _version_lock = self.locks.lock(coordinates).await;
        if let Some(existing) = self.stat(coordinates).await? {
            let content = hash_reader(coordinates, reader).await?;
            check_expected(coordinates, expected_sha256, content)?;
            return reuse_existing(existing, content);
        }
        self.write_new(coordinates, reader, expected_sha256).await
    }

    #[instrument(skip(self), fields(root = %self.root.display(), %coordinates))]
    async fn open(&self, coordinates: &ArtifactCoordinates) -> Result<OpenedArtifact, StoreError> {
        let not_found = || StoreError::NotFound {
            coordinates: Box::new(coordinates.clone()),
        };
        let artifact = self.stat(coordinates).await?.ok_or_else(not_found)?;
        let path = self.jar_path(coordinates);
        let file = match fs::File::open(&path).await {
            Ok(file) => file,
            Err(error) if error.kind() == io::ErrorKind::NotFound => return Err(not_found()),
            Err(error) => return Err(StoreError::filesystem("open", path)(error)),
        };
        let read_path = path.clone();
        let bytes = ReaderStream::with_capacity(file, CHUNK_SIZE)
            .map_err(move |source| StoreError::filesystem("read", read_path.clone())(source));
        let expected = ContentSummary {
            digest: artifact.digest,
            size: artifact.size,
        };
        let corrupted_coordinates = coordinates.clone();
        let verified = VerifyingStream::new(bytes, expected, move |actual: ContentSummary| {
            StoreError::Corrupted {
                coordinates: Box::new(corrupted_coordinates),
                expected: expected.digest,
                expected_size: expected.size,
                actual: actual.digest,
                actual_size: actual.size,
            }
        });
        Ok(OpenedArtifact {
            artifact,
            stream: Box::pin(verified),
        })
    }

    #[instrument(skip(self), fields(root = %self.root.display(), %coordinates))]
    async fn stat(
        &self,
        coordinates: &ArtifactCoordinates,
    ) -> Result<Option<StoredArtifact>, StoreError> {
        let path = self.jar_path(coordinates);
        let size = match fs::metadata(&path).await {
            Ok(metadata) => metadata.len(),
            Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(error) => return Err(StoreError::filesystem("read metadata of", path)(error)),
        };
        let digest = match self.read_sidecar(coordinates, size).await? {
            Some(digest) => digest,
            None => {
                debug!(path = %path.display(), "no matching sidecar, hashing the file");
                hash_file(&path).await?.digest
            }
        };
        Ok(Some(StoredArtifact {
            coordinates: coordinates.clone(),
            digest,
            size,
        }))
    }

    #[instrument(skip(self), fields(root = %self.root.display(), %coordinates))]
    async fn delete(&self, coordinates: &ArtifactCoordinates) -> Result<bool, StoreError> {
        let _version_lock = self.locks.lock(coordinates).await;
        // The sidecar goes first, so a crash in between leaves a JAR that stat hashes, never a
        // sidecar that a later put of other content could pair with the wrong JAR.
        remove_if_exists(&self.sidecar_path(coordinates)).await?;
        let existed = remove_if_exists(&self.jar_path(coordinates)).await?;
        if existed {
            sync_dir(&self.application_dir(coordinates.application())).await?;
        }
        Ok(existed)
    }

    #[instrument(skip(self), fields(root = %self.root.display(), %application))]
    async fn list_versions(&self, application: &ApplicationRef) -> Result<Vec<String>, StoreError> {
        let dir = self.application_dir(application);
        let mut entries = match fs::read_dir(&dir).await {
            Ok(entries) => entries,
            Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(error) => return Err(StoreError::filesystem("list", dir)(error)),
        };
        let mut versions = Vec::new();
        while let Some(entry) = entries
            .next_entry()
            .await
            .map_err(StoreError::filesystem("list", dir.clone()))?
        {
            let name = entry.file_name();
            let version = name
                .to_str()
                .filter(|name| !name.starts_with(TEMPORARY_PREFIX))
                .and_then(|name| name.strip_suffix(JAR_EXTENSION))
                .filter(|version| validate_version(version).is_ok());
            if let Some(version) = version {
                versions.push(version.to_owned());
            }
        }
        versions.sort();
        Ok(versions)
    }
}

/// Creates `dir` and its missing parents, then syncs the directories from its parent up to
/// `root`, so the new entries survive a crash.
async fn create_dir_synced(root: &Path, dir: &Path) -> Result<(), StoreError> {
    if fs::try_exists(dir)
        .await
        .map_err(StoreError::filesystem("check", dir))?
    {
        return Ok(());
    }
    fs::create_dir_all(dir)
        .await
        .map_err(StoreError::filesystem("create directory", dir))?;
    let mut parent = dir.parent();
    while let Some(current) = parent {
        sync_dir(current).await?;
        if current == root {
            break;
        }
        parent = current.parent();
    }
    Ok(())
}

async fn create_temporary(dir: &Path) -> Result<(fs::File, tempfile::TempPath), StoreError> {
    let dir_owned = dir.to_path_buf();
    let file = tokio::task::spawn_blocking(move || {
        tempfile::Builder::new()
            .prefix(TEMPORARY_PREFIX)
            .suffix(".tmp")
            .tempfile_in(dir_owned)
    })
    .await
    .expect("the temporary file task does not panic")
    .map_err(StoreError::filesystem("create a temporary file in", dir))?;
    let (file, path) = file.into_parts();
    Ok((fs::File::from_std(file), path))
}

/// Copies `reader` into `file` while hashing it, then syncs the file.
async fn write_hashed(
    coordinates: &ArtifactCoordinates,
    mut reader: impl AsyncRead + Unpin,
    mut file: fs::File,
    path: &Path,
) -> Result<ContentSummary, StoreError> {
    let mut hasher = ContentHasher::new();
    let mut buffer = vec![0; CHUNK_SIZE];
    loop {
        let read = reader
            .read(&mut buffer)
            .await
            .map_err(|source| StoreError::ReadInput {
                coordinates: Box::new(coordinates.clone()),
                source,
            })?;
        if read == 0 {
            break;
        }
        hasher.update(&buffer[..read]);
        file.write_all(&buffer[..read])
            .await
            .map_err(StoreError::filesystem("write", path))?;
    }
    file.flush()
        .await
        .map_err(StoreError::filesystem("write", path))?;
    file.sync_all()
        .await
        .map_err(StoreError::filesystem("sync", path))?;
    Ok(hasher.finish())
}

/// Renames `temporary` to `target` unless `target` exists. On failure the temporary file is
/// removed.
async fn persist_no_replace(temporary: tempfile::TempPath, target: &Path) -> io::Result<()> {
    let target = target.to_path_buf();
    tokio::task::spawn_blocking(move || temporary.persist_noclobber(target))
        .await
        .expect("the rename task does not panic")
        .map_err(|error| error.error)
}

async fn hash_file(path: &Path) -> Result<ContentSummary, StoreError> {
    let mut file = fs::File::open(path)
        .await
        .map_err(StoreError::filesystem("open", path))?;
    let mut hasher = ContentHasher::new();
    let mut buffer = vec![0; CHUNK_SIZE];
    loop {
        let read = file
            .read(&mut buffer)
            .await
            .map_err(StoreError::filesystem("read", path))?;
        if read == 0 {
            return Ok(hasher.finish());
        }
        hasher.update(&buffer[..read]);
    }
}

async fn remove_if_exists(path: &Path) -> Result<bool, StoreError> {
    match fs::remove_file(path).await {
        Ok(()) => Ok(true),
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(error) => Err(StoreError::filesystem("remove", path)(error)),
    }
}

/// Syncs a directory, which makes renames and new entries in it durable.
async fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    let owned = dir.to_path_buf();
    tokio::task::spawn_blocking(move || std::fs::File::open(&owned)?.sync_all())
        .await
        .expect("the sync task does not panic")
        .map_err(StoreError::filesystem("sync directory", dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn coordinates(version: &str) -> ArtifactCoordinates {
        ArtifactCoordinates::new("acme", "billing", version).unwrap()
    }

    fn metadata() -> JarMetadata {
        JarMetadata::new("billing.jar").unwrap()
    }

    #[tokio::test]
    async fn layout_and_sidecar() {
        let root = tempfile::tempdir().unwrap();
        let store = FilesystemArtifactStore::new(root.path());
        let stored = store
            .put(&coordinates("1.0"), &b"jar bytes"[..], None, &metadata())
            .await
            .unwrap();

        let jar = root.path().join("acme/billing/1.0.jar");
        assert_eq!(std::fs::read(&jar).unwrap(), b"jar bytes");
        let sidecar = std::fs::read_to_string(root.path().join("acme/billing/1.0.jar.sha256"));
        assert_eq!(
            sidecar.unwrap(),
            format!("{} 9\n", Digest::of(b"jar bytes"))
        );
        assert_eq!(stored.digest, Digest::of(b"jar bytes"));
        let names: Vec<_> = std::fs::read_dir(root.path().join("acme/billing"))
            .unwrap()
            .map(|entry| entry.unwrap().file_name().into_string().unwrap())
            .filter(|name| name.starts_with('.'))
            .collect();
        assert!(names.is_empty(), "temporary files left: {names:?}");
    }

    #[tokio::test]
    async fn stat_hashes_when_sidecar_is_missing_or_stale() {
        let root = tempfile::tempdir().unwrap();
        let store = FilesystemArtifactStore::new(root.path());
        let coordinates = coordinates("1.0");
        store
            .put(&coordinates, &b"abc"[..], None, &metadata())
            .await
            .unwrap();
        let sidecar = root.path().join("acme/billing/1.0.jar.sha256");

        std::fs::remove_file(&sidecar).unwrap();
        let stat = store.stat(&coordinates).await.unwrap().unwrap();
        assert_eq!(stat.digest, Digest::of(b"abc"));

        std::fs::write(&sidecar, format!("{} 99\n", Digest::of(b"other"))).unwrap();
        let stat = store.stat(&coordinates).await.unwrap().unwrap();
        assert_eq!(stat.digest, Digest::of(b"abc"));
    }

    #[tokio::test]
    async fn open_reports_corruption_at_end() {
        let root = tempfile::tempdir().unwrap();
        let store = FilesystemArtifactStore::new(root.path());
        let coordinates = coordinates("1.0");
        store
            .put(&coordinates, &b"abc"[..], None, &metadata())
            .await
            .unwrap();
        // Same size, other bytes: the sidecar still matches the size, so the digest is trusted.
        std::fs::write(root.path().join("acme/billing/1.0.jar"), b"xyz").unwrap();

        let opened = store.open(&coordinates).await.unwrap();
        let result: Result<Vec<_>, _> = opened.stream.try_collect().await;
        let error = result.unwrap_err();
        assert!(matches!(error, StoreError::Corrupted { .. }), "{error}");
    }

    #[tokio::test]
    async fn list_skips_temporary_and_foreign_files() {
        let root = tempfile::tempdir().unwrap();
        let store = FilesystemArtifactStore::new(root.path());
        for version in ["2.0", "1.0"] {
            store
                .put(&coordinates(version), &b"x"[..], None, &metadata())
                .await
                .unwrap();
        }
        let dir = root.path().join("acme/billing");
        std::fs::write(dir.join(".tmpXYZ.tmp"), b"").unwrap();
        std::fs::write(dir.join("notes.txt"), b"").unwrap();
        std::fs::write(dir.join("bad..name.jar"), b"").unwrap();

        let application = ApplicationRef::new("acme", "billing").unwrap();
        assert_eq!(
            store.list_versions(&application).await.unwrap(),
            ["1.0", "2.0"]
        );
    }
}
