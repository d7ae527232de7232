//! `artifact-operator loader`: downloads one JAR through a pre-signed URL, as a pod's init
//! container does.
//!
//! The loader sends a GET to the URL and streams the body into a temporary file next to the
//! target, computing the sha256 and enforcing the size limit on the way. Only when the digest
//! (and the size, when given) match is the file renamed into place. A body cut short is
//! resumed with a `Range` request when the response had a strong `ETag`. A re-run that finds
//! the target with the expected digest exits 0 without a request. The URL's query carries the
//! signature, so logs, errors and the termination message show the URL without it.
//!
//! # Inputs
//!
//! A flag wins over its environment variable. `{prefix}` is `ARTIFACT_` unless `--env-prefix`
//! sets another one, such as `ARTIFACT_1_` for the first of several injected artifacts. Empty
//! variables count as unset.
//!
//! | flag | variable | value |
//! | --- | --- | --- |
//! | `--url` | `{prefix}URL` | pre-signed http or https URL (required) |
//! | `--digest` | `{prefix}DIGEST` | `sha256:` and 64 lowercase hex characters (required) |
//! | `--size` | `{prefix}SIZE` | expected size in bytes (optional, checked when set) |
//! | `--filename` | `{prefix}FILENAME` | file name when the output is a directory |
//! | `--output` | `{prefix}OUTPUT`, then `ARTIFACT_OUTPUT` | directory or file path (required) |
//! | `--max-size` | `ARTIFACT_MAX_SIZE` | size limit in bytes, default 512 MiB |
//!
//! An output path that is an existing directory or ends with `/` is a directory, and the JAR
//! goes to `{output}/{filename}`. Any other output path is the JAR's own path.
//!
//! # Exit codes
//!
//! Each run prints one line to standard error and writes the same line to `--termination-log`
//! (default `/dev/termination-log`) when that file exists and is writable. The line starts
//! with the label below, or with `downloaded:` or `present:` on success.
//!
//! | code | label | cause |
//! | --- | --- | --- |
//! | 0 | | downloaded and verified, or already present with the expected digest |
//! | 2 | `invalid_input` | missing or invalid flag or variable |
//! | 3 | `local_file` | reading or writing the output directory failed |
//! | 10 | `digest_mismatch` | the content's sha256 differs from the digest, or it is not a JAR |
//! | 11 | `size_mismatch` | `Content-Length` or the body's length differs from the expected size |
//! | 12 | `too_large` | the expected size, `Content-Length` or the body exceeds `--max-size` |
//! | 20 | `expired` | 410, or 403 with reason `expired` |
//! | 21 | `forbidden` | 403 with another reason or none |
//! | 22 | `not_found` | 404 |
//! | 23 | `http_status` | any other status that is not retried, such as 400 or 501 |
//! | 30 | `network` | every attempt failed in transport, or a TLS error or redirect loop |
//! | 31 | `server_error` | the last of all attempts got 408, 429 or a retried 5xx |
//!
//! Invalid flags that clap rejects, such as a malformed duration, also exit with 2, but
//! without a termination message. Transport failures are connection errors, timeouts and
//! bodies cut short.
//!
//! The reason of a 403 or other error is the string field `reason` of a JSON body, or the
//! first word of a plain-text body.

mod body;
mod download;
mod failure;
mod file;
mod response;
mod settings;

use std::{io::Write as _, path::Path, process::ExitCode};

pub use failure::{FailureKind, LoaderError, Success, exit_code, termination_message};
pub use settings::{EnvNames, LoaderArgs, Settings, SignedUrl};

use file::{PartFile, Target};

/// Runs the loader with the process environment, reports the result and returns the exit
/// code.
pub async fn run(args: LoaderArgs) -> ExitCode {
    let result = load(&args, |name| std::env::var(name).ok()).await;
    report(&result, &args.termination_log);
    ExitCode::from(exit_code(&result))
}

/// Resolves the settings from `args` and `lookup`, then downloads the JAR unless the target
/// already has the expected digest.
pub async fn load(
    args: &LoaderArgs,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<Success, LoaderError> {
    let settings = settings::resolve(args, lookup)?;
    let target = Target::locate(&settings.output).await?;
    for path in target.remove_stale_parts().await? {
        tracing::info!(path = %path.display(), "Removed a temporary file of an earlier run");
    }

    if target.has_digest(&settings.digest).await? {
        tracing::info!(
            path = %target.path.display(),
            digest = %settings.digest,
            "Artifact already present"
        );
        return Ok(Success::AlreadyPresent {
            path: target.path,
            digest: settings.digest,
        });
    }

    tracing::info!(
        url = %settings.url,
        digest = %settings.digest,
        path = %target.path.display(),
        "Downloading artifact"
    );
    let client = download::client(&settings)?;
    let mut part = PartFile::create(&target)?;
    let downloaded = download::download(&client, &settings, &target, &mut part).await?;
    part.persist(&target).await?;

    tracing::info!(
        path = %target.path.display(),
        digest = %downloaded.summary.digest,
        size = downloaded.summary.size,
        attempts = downloaded.attempts,
        "Artifact downloaded"
    );
    Ok(Success::Downloaded {
        path: target.path,
        digest: downloaded.summary.digest,
        size: downloaded.summary.size,
        attempts: downloaded.attempts,
    })
}

/// Prints the termination message to standard error and writes it to the termination log.
fn report(result: &Result<Success, LoaderError>, termination_log: &Path) {
    let message = termination_message(result);
    eprintln!("{message}");
    if let Err(error) = write_termination_log(termination_log, &message) {
        tracing::debug!(
            path = %termination_log.display(),
            %error,
            "Termination log not written"
        );
    }
}

/// Replaces the content of the termination log with `message`. The file is never created,
/// because outside Kubernetes the default `/dev/termination-log` does not exist and must not
/// appear in `/dev`.
fn write_termination_log(path: &Path, message: &str) -> std::io::Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(path)?;
    file.write_all(message.as_bytes())
}
