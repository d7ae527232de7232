//! The JAR on disk: the check of an existing file, the temporary file that a download streams
//! into, and the rename that puts it in place.
//!
//! A download never writes to the final path. It writes `.{name}.{random}.part` in the same
//! directory, and only a verified file is renamed over the final path, after `fsync` of the
//! file. The directory is synced after the rename so that the new entry survives a crash.

use std::{
    io::{self, SeekFrom},
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
};

use tempfile::TempPath;
use tokio::{
    fs::{self, File},
    io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt},
};

use super::{
    failure::LoaderError,
    settings::{Output, ends_with_separator, target_path},
};
use crate::oci::{Digest, digest::ContentHasher};

/// Mode of the JAR: readable by everyone, because the app containers may run as another user
/// than the loader. The JAR is no secret to the pod's own containers.
const JAR_MODE: u32 = 0o644;

/// Suffix of temporary files.
const PART_SUFFIX: &str = ".part";

/// Size of the buffer used to hash an existing file.
const READ_BUFFER: usize = 64 * 1024;

/// Final path of the JAR and the directory that contains it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub path: PathBuf,
    pub directory: PathBuf,
    pub file_name: String,
}

impl Target {
    /// Decides the final path from the output setting and whether it names a directory.
    pub async fn locate(output: &Output) -> Result<Self, LoaderError> {
        let is_dir = ends_with_separator(&output.path)
            || fs::metadata(&output.path)
                .await
                .is_ok_and(|metadata| metadata.is_dir());
        let path = target_path(output, is_dir)?;
        Self::from_path(path)
    }

    fn from_path(path: PathBuf) -> Result<Self, LoaderError> {
        let file_name = path
            .file_name()
            .and_then(|name| name.to_str())
            .map(str::to_owned)
            .ok_or_else(|| LoaderError::InvalidOutput { path: path.clone() })?;
        let directory = match path.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
            _ => PathBuf::from("."),
        };
        Ok(Self {
            path,
            directory,
            file_name,
        })
    }

    /// Prefix of this target's temporary files.
    fn part_prefix(&self) -> String {
        format!(".{}.", self.file_name)
    }

    /// Returns whether the final path already contains content with `digest`. A missing file
    /// returns `false`.
    pub async fn has_digest(&self, digest: &Digest) -> Result<bool, LoaderError> {
        let mut file = match File::open(&self.path).await {
            Ok(file) => file,
            Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(error) => return Err(LoaderError::local("open", &self.path, error)),
        };
        let mut hasher = ContentHasher::new();
        let mut buffer = vec![0; READ_BUFFER];
        loop {
            let read = file
                .read(&mut buffer)
                .await
                .map_err(|error| LoaderError::local("read", &self.path, error))?;
            if read == 0 {
                break;
            }
            hasher.update(&buffer[..read]);
        }
        Ok(hasher.finish().digest == *digest)
    }

    /// Removes temporary files that an earlier run left behind when it was killed. On an
    /// emptyDir with a size limit they would otherwise use up the space that this download
    /// needs. Returns the removed paths.
    ///
    /// This assumes that no other loader writes the same target at the same time, which holds
    /// for init containers because they run one after another.
    pub async fn remove_stale_parts(&self) -> Result<Vec<PathBuf>, LoaderError> {
        let prefix = self.part_prefix();
        let read_error = |error| LoaderError::local("list", &self.directory, error);
        let mut entries = fs::read_dir(&self.directory).await.map_err(read_error)?;
        let mut removed = Vec::new();
        while let Some(entry) = entries.next_entry().await.map_err(read_error)? {
            let name = entry.file_name();
            let is_part = name
                .to_str()
                .is_some_and(|name| name.starts_with(&prefix) && name.ends_with(PART_SUFFIX));
            if !is_part {
                continue;
            }
            let path = entry.path();
            fs::remove_file(&path)
                .await
                .map_err(|error| LoaderError::local("remove", &path, error))?;
            removed.push(path);
        }
        Ok(removed)
    }
}

/// A temporary file in the target's directory. Dropping it removes the file, so an error at
/// any step leaves nothing behind.
#[derive(Debug)]
pub struct PartFile {
    file: File,
    path: TempPath,
}

impl PartFile {
    pub fn create(target: &Target) -> Result<Self, LoaderError> {
        let named = tempfile::Builder::new()
            .prefix(&target.part_prefix())
            .suffix(PART_SUFFIX)
            .tempfile_in(&target.directory)
            .map_err(|error| {
                LoaderError::local("create a temporary file in", &target.directory, error)
            })?;
        let (file, path) = named.into_parts();
        Ok(Self {
            file: File::from_std(file),
            path,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub async fn write(&mut self, chunk: &[u8]) -> Result<(), LoaderError> {
        self.file
            .write_all(chunk)
            .await
            .map_err(|error| LoaderError::local("write", self.path(), error))
    }

    /// Empties the file for a new attempt.
    pub async fn truncate(&mut self) -> Result<(), LoaderError> {
        let result = async {
            self.file.flush().await?;
            self.file.set_len(0).await?;
            self.file.seek(SeekFrom::Start(0)).await.map(drop)
        }
        .await;
        result.map_err(|error| LoaderError::local("truncate", self.path(), error))
    }

    /// Syncs the file, renames it to the target's path (replacing any file there) and syncs
    /// the directory.
    pub async fn persist(mut self, target: &Target) -> Result<(), LoaderError> {
        let part = self.path.to_path_buf();
        let sync_error = |error| LoaderError::local("sync", &part, error);
        self.file.flush().await.map_err(sync_error)?;
        self.file.sync_all().await.map_err(sync_error)?;
        self.file
            .set_permissions(std::fs::Permissions::from_mode(JAR_MODE))
            .await
            .map_err(|error| LoaderError::local("set the mode of", &part, error))?;
        drop(self.file);

        self.path
            .persist(&target.path)
            .map_err(|error| LoaderError::local("rename", &part, error.error))?;
        let directory = File::open(&target.directory)
            .await
            .map_err(|error| LoaderError::local("open", &target.directory, error))?;
        directory
            .sync_all()
            .await
            .map_err(|error| LoaderError::local("sync", &target.directory, error))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn output(path: &Path, filename: Option<&str>) -> Output {
        Output {
            path: path.to_path_buf(),
            filename: filename.map(str::to_owned),
            filename_env: "ARTIFACT_FILENAME".to_owned(),
        }
    }

    #[tokio::test]
    async fn locate_joins_filename_to_existing_directory() {
        let dir = tempfile::tempdir().unwrap();
        let target = Target::locate(&output(dir.path(), Some("app.jar")))
            .await
            .unwrap();
        assert_eq!(target.path, dir.path().join("app.jar"));
        assert_eq!(target.directory, dir.path());
        assert_eq!(target.file_name, "app.jar");
    }

    #[tokio::test]
    async fn locate_uses_file_path_as_is() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("named.jar");
        let target = Target::locate(&output(&path, Some("ignored.jar")))
            .await
            .unwrap();
        assert_eq!(target.path, path);
        assert_eq!(target.file_name, "named.jar");
    }

    #[test]
    fn relative_file_lives_in_current_directory() {
        let target = Target::from_path(PathBuf::from("app.jar")).unwrap();
        assert_eq!(target.directory, PathBuf::from("."));
    }

    #[tokio::test]
    async fn persist_renames_with_readable_mode() {
        let dir = tempfile::tempdir().unwrap();
        let target = Target::from_path(dir.path().join("app.jar")).unwrap();
        let mut part = PartFile::create(&target).unwrap();
        part.write(b"first attempt").await.unwrap();
        part.truncate().await.unwrap();
        part.write(b"content").await.unwrap();
        part.persist(&target).await.unwrap();

        assert_eq!(std::fs::read(&target.path).unwrap(), b"content");
        let mode = std::fs::metadata(&target.path)
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, JAR_MODE);
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1);
    }

    #[tokio::test]
    async fn dropped_part_file_is_removed() {
        let dir = tempfile::tempdir().unwrap();
        let target = Target::from_path(dir.path().join("app.jar")).unwrap();
        let part = PartFile::create(&target).unwrap();
        let path = part.path().to_path_buf();
        assert!(path.exists());
        drop(part);
        assert!(!path.exists());
    }

    #[tokio::test]
    async fn remove_stale_parts_spares_other_files() {
        let dir = tempfile::tempdir().unwrap();
        let target = Target::from_path(dir.path().join("app.jar")).unwrap();
        let stale = dir.path().join(".app.jar.x1y2z3.part");
        let kept = [
            dir.path().join(".other.jar.x1y2z3.part"),
            dir.path().join("app.jar"),
            dir.path().join(".app.jar.notes"),
        ];
        for path in kept.iter().chain([&stale]) {
            std::fs::write(path, b"x").unwrap();
        }

        let removed = target.remove_stale_parts().await.unwrap();

        assert_eq!(removed, vec![stale.clone()]);
        assert!(!stale.exists());
        for path in &kept {
            assert!(path.exists(), "{}", path.display());
        }
    }

    #[tokio::test]
    async fn has_digest_compares_existing_content() {
        let dir = tempfile::tempdir().unwrap();
        let target = Target::from_path(dir.path().join("app.jar")).unwrap();
        let digest = Digest::of(b"content");
        assert!(!target.has_digest(&digest).await.unwrap());
        std::fs::write(&target.path, b"content").unwrap();
        assert!(target.has_digest(&digest).await.unwrap());
        assert!(!target.has_digest(&Digest::of(b"other")).await.unwrap());
    }
}
