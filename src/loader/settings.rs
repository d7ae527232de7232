//! Options of `artifact-operator loader`: flags, their environment fallbacks and the checks
//! that turn them into [`Settings`].
//!
//! The per-artifact values (URL, digest, size, file name, output) come from flags or from
//! environment variables named `{prefix}URL` and so on, because the webhook injects one such
//! set per artifact. The prefix is dynamic, so these variables are read here instead of by
//! clap's `env` attribute.

use std::{
    fmt,
    path::{Path, PathBuf},
    str::FromStr,
    time::Duration,
};

use url::Url;

use super::failure::LoaderError;
use crate::{
    artifact::{checks::DEFAULT_MAX_SIZE, error::redact_url},
    cli::parse_duration,
    oci::{Digest, retry::RetryPolicy},
};

/// Environment prefix used when `--env-prefix` is not given.
pub const DEFAULT_ENV_PREFIX: &str = "ARTIFACT_";

/// Output variable read when the prefixed one is unset, so that one `ARTIFACT_OUTPUT` serves
/// every prefixed set.
const SHARED_OUTPUT_ENV: &str = "ARTIFACT_OUTPUT";

/// Options of `artifact-operator loader`.
#[derive(Debug, clap::Args)]
pub struct LoaderArgs {
    /// Pre-signed http or https URL of the JAR. Default: the variable {prefix}URL, for example
    /// ARTIFACT_URL. Its query is secret and never logged.
    #[arg(long, value_name = "URL")]
    pub url: Option<UrlArgument>,

    /// Expected digest of the JAR, `sha256:` followed by 64 lowercase hex characters. Default:
    /// {prefix}DIGEST.
    #[arg(long, value_name = "DIGEST")]
    pub digest: Option<String>,

    /// Expected size of the JAR in bytes, checked when set. Default: {prefix}SIZE.
    #[arg(long, value_name = "BYTES")]
    pub size: Option<String>,

    /// Directory to write the JAR into, or the path of the JAR itself. A path that is an
    /// existing directory or ends with `/` is a directory. Default: {prefix}OUTPUT, then
    /// ARTIFACT_OUTPUT.
    #[arg(long, value_name = "PATH")]
    pub output: Option<PathBuf>,

    /// File name of the JAR when --output is a directory. Default: {prefix}FILENAME.
    #[arg(long, value_name = "NAME")]
    pub filename: Option<String>,

    /// Prefix of the environment variables that hold the per-artifact values, for example
    /// ARTIFACT_1_ to read ARTIFACT_1_URL. A missing trailing `_` is added.
    #[arg(long, value_name = "PREFIX", default_value = DEFAULT_ENV_PREFIX)]
    pub env_prefix: String,

    /// Maximum size of the JAR in bytes. A larger response is rejected before or while it is
    /// read.
    #[arg(
        long,
        value_name = "BYTES",
        env = "ARTIFACT_MAX_SIZE",
        default_value_t = DEFAULT_MAX_SIZE
    )]
    pub max_size: u64,

    /// Maximum number of attempts, counting the first. 1 disables retries.
    #[arg(
        long,
        value_name = "COUNT",
        default_value_t = 5,
        value_parser = clap::value_parser!(u32).range(1..)
    )]
    pub max_attempts: u32,

    /// Delay before the second attempt, for example `1s`. Each further delay doubles, and a
    /// random part of up to half of it is subtracted so that pods do not retry in step.
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = parse_duration)]
    pub initial_backoff: Duration,

    /// Upper bound of one delay between attempts, also applied to a server's Retry-After.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_duration)]
    pub max_backoff: Duration,

    /// Maximum time to open a connection, including the TLS handshake.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    pub connect_timeout: Duration,

    /// Maximum time to wait for the response headers and for each read of the body. The whole
    /// transfer has no time limit.
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_duration)]
    pub read_timeout: Duration,

    /// File that receives the one-line result, which Kubernetes shows in the pod status. It is
    /// written only when it exists and is writable, as the kubelet's file is.
    #[arg(long, value_name = "PATH", default_value = "/dev/termination-log")]
    pub termination_log: PathBuf,
}

/// The text of `--url`. Its `Debug` output hides the query, which carries the signature.
#[derive(Clone, PartialEq, Eq)]
pub struct UrlArgument(String);

impl FromStr for UrlArgument {
    type Err = std::convert::Infallible;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Ok(Self(text.to_owned()))
    }
}

impl fmt::Debug for UrlArgument {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match Url::parse(&self.0) {
            Ok(url) => write!(f, "UrlArgument({:?})", redact_url(&url)),
            Err(_) => f.write_str("UrlArgument(<unparsable>)"),
        }
    }
}

/// A pre-signed URL. `Debug` and `Display` show it without user information, query and
/// fragment.
///
/// The URL is boxed because every [`LoaderError`] about the transfer contains one, and an
/// inline `Url` would make the error type several times larger than its other variants.
#[derive(Clone, PartialEq, Eq)]
pub struct SignedUrl(Box<Url>);

impl SignedUrl {
    /// Wraps a URL that is already checked to be http or https with a host.
    pub fn from_url(url: Url) -> Self {
        Self(Box::new(url))
    }

    /// Returns the full URL, signature included, for the request only.
    pub fn as_url(&self) -> &Url {
        &self.0
    }

    /// Returns the URL without user information, query and fragment.
    pub fn redacted(&self) -> String {
        redact_url(&self.0)
    }
}

impl fmt::Display for SignedUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl fmt::Debug for SignedUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SignedUrl({:?})", self.redacted())
    }
}

/// Output location of the JAR. Whether `path` is a directory is decided later, from the file
/// system.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    pub path: PathBuf,
    /// Value of --filename or {prefix}FILENAME, already checked to be one path component.
    pub filename: Option<String>,
    /// Name of the file name variable, for errors.
    pub filename_env: String,
}

/// Checked settings of one download.
#[derive(Debug, Clone)]
pub struct Settings {
    pub url: SignedUrl,
    pub digest: Digest,
    pub size: Option<u64>,
    pub output: Output,
    pub max_size: u64,
    pub retry: RetryPolicy,
    pub connect_timeout: Duration,
    pub read_timeout: Duration,
}

/// Names of the environment variables of one artifact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvNames {
    pub url: String,
    pub digest: String,
    pub size: String,
    pub filename: String,
    pub output: String,
}

impl EnvNames {
    /// Builds the names for `prefix`, adding a trailing `_` when it is missing.
    ///
    /// The prefix must be a valid shell variable name, so that a typo cannot silently read
    /// nothing.
    pub fn for_prefix(prefix: &str) -> Result<Self, LoaderError> {
        let valid = prefix
            .chars()
            .next()
            .is_some_and(|first| first.is_ascii_alphabetic() || first == '_')
            && prefix
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            return Err(LoaderError::InvalidEnvPrefix {
                prefix: prefix.to_owned(),
            });
        }
        let prefix = if prefix.ends_with('_') {
            prefix.to_owned()
        } else {
            format!("{prefix}_")
        };
        Ok(Self {
            url: format!("{prefix}URL"),
            digest: format!("{prefix}DIGEST"),
            size: format!("{prefix}SIZE"),
            filename: format!("{prefix}FILENAME"),
            output: format!("{prefix}OUTPUT"),
        })
    }
}

/// Merges the flags with the environment, read through `lookup`, and checks every value.
///
/// A flag wins over its variable. An empty variable counts as unset, so a webhook may inject
/// an empty `{prefix}SIZE` when the size is unknown.
pub fn resolve(
    args: &LoaderArgs,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<Settings, LoaderError> {
    let names = EnvNames::for_prefix(&args.env_prefix)?;
    let env = |name: &str| lookup(name).filter(|value| !value.is_empty());
    let read = |flag: &Option<String>, name: &str| flag.clone().or_else(|| env(name));

    let url_flag = args.url.as_ref().map(|url| url.0.clone());
    let url = parse_url(read(&url_flag, &names.url), &names.url)?;
    let digest = parse_digest(read(&args.digest, &names.digest), &names.digest)?;
    let size = parse_size(read(&args.size, &names.size), &names.size)?;
    let filename = read(&args.filename, &names.filename)
        .map(|name| check_filename(name, &names.filename))
        .transpose()?;
    let output = args
        .output
        .clone()
        .or_else(|| env(&names.output).map(PathBuf::from))
        .or_else(|| env(SHARED_OUTPUT_ENV).map(PathBuf::from))
        .ok_or_else(|| LoaderError::MissingValue {
            flag: "--output",
            env: names.output.clone(),
        })?;

    if let Some(size) = size
        && size > args.max_size
    {
        return Err(LoaderError::ExpectedTooLarge {
            expected: size,
            max_size: args.max_size,
        });
    }

    Ok(Settings {
        url,
        digest,
        size,
        output: Output {
            path: output,
            filename,
            filename_env: names.filename,
        },
        max_size: args.max_size,
        retry: RetryPolicy {
            max_attempts: args.max_attempts,
            initial_backoff: args.initial_backoff,
            max_backoff: args.max_backoff,
        },
        connect_timeout: args.connect_timeout,
        read_timeout: args.read_timeout,
    })
}

/// Parses the URL and requires http or https with a host. No error shows the URL's text,
/// because its query carries the signature.
fn parse_url(text: Option<String>, env: &str) -> Result<SignedUrl, LoaderError> {
    let text = text.ok_or_else(|| LoaderError::MissingValue {
        flag: "--url",
        env: env.to_owned(),
    })?;
    let url = Url::parse(&text).map_err(|error| LoaderError::InvalidUrl {
        env: env.to_owned(),
        reason: error.to_string(),
    })?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err(LoaderError::InvalidUrl {
            env: env.to_owned(),
            reason: format!(
                "{} is not an http or https URL with a host",
                redact_url(&url)
            ),
        });
    }
    Ok(SignedUrl::from_url(url))
}

fn parse_digest(text: Option<String>, env: &str) -> Result<Digest, LoaderError> {
    let text = text.ok_or_else(|| LoaderError::MissingValue {
        flag: "--digest",
        env: env.to_owned(),
    })?;
    text.parse().map_err(|source| LoaderError::InvalidDigest {
        env: env.to_owned(),
        source,
    })
}

fn parse_size(text: Option<String>, env: &str) -> Result<Option<u64>, LoaderError> {
    let Some(text) = text else {
        return Ok(None);
    };
    match text.trim().parse::<u64>() {
        Ok(size) if size > 0 => Ok(Some(size)),
        _ => Err(LoaderError::InvalidSize {
            env: env.to_owned(),
            value: text,
        }),
    }
}

/// Requires a single, normal path component, so that a file name cannot point outside the
/// output directory.
fn check_filename(name: String, env: &str) -> Result<String, LoaderError> {
    let single_component = !name.contains('/') && !name.contains('\0');
    if single_component && name != "." && name != ".." {
        Ok(name)
    } else {
        Err(LoaderError::InvalidFilename {
            env: env.to_owned(),
            value: name,
        })
    }
}

/// Returns the path of the JAR. `output_is_dir` is whether the output path is a directory (an
/// existing one, or one written with a trailing `/`).
///
/// When the output is a file path, the file name setting is ignored, because the path already
/// names the file.
pub fn target_path(output: &Output, output_is_dir: bool) -> Result<PathBuf, LoaderError> {
    if !output_is_dir {
        return Ok(output.path.clone());
    }
    match &output.filename {
        Some(name) => Ok(output.path.join(name)),
        None => Err(LoaderError::MissingFilename {
            directory: output.path.clone(),
            env: output.filename_env.clone(),
        }),
    }
}

/// Returns whether `path` is written as a directory, with a trailing `/`.
pub fn ends_with_separator(path: &Path) -> bool {
    path.as_os_str().as_encoded_bytes().ends_with(b"/")
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use clap::Parser;

    use super::*;

    const DIGEST: &str = "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a";
    const SIGNED_URL: &str =
        "http://gateway.example:8080/v1/artifacts/ns/app/sha256:44?kid=k1&exp=99&sig=SECRET";

    #[derive(Debug, Parser)]
    struct TestCli {
        #[command(flatten)]
        args: LoaderArgs,
    }

    fn args(flags: &[&str]) -> LoaderArgs {
        let argv = std::iter::once("loader").chain(flags.iter().copied());
        TestCli::try_parse_from(argv).unwrap().args
    }

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
            .collect();
        move |name| map.get(name).cloned()
    }

    #[test]
    fn resolve_reads_default_env_names() {
        let settings = resolve(
            &args(&[]),
            env(&[
                ("ARTIFACT_URL", SIGNED_URL),
                ("ARTIFACT_DIGEST", DIGEST),
                ("ARTIFACT_SIZE", "1234"),
                ("ARTIFACT_FILENAME", "app.jar"),
                ("ARTIFACT_OUTPUT", "/app"),
            ]),
        )
        .unwrap();
        assert_eq!(settings.url.as_url().as_str(), SIGNED_URL);
        assert_eq!(settings.digest.to_string(), DIGEST);
        assert_eq!(settings.size, Some(1234));
        assert_eq!(settings.output.path, PathBuf::from("/app"));
        assert_eq!(settings.output.filename.as_deref(), Some("app.jar"));
        assert_eq!(settings.max_size, DEFAULT_MAX_SIZE);
    }

    #[test]
    fn resolve_reads_prefixed_env_names() {
        let settings = resolve(
            &args(&["--env-prefix", "ARTIFACT_2"]),
            env(&[
                ("ARTIFACT_URL", "http://other.example/wrong.jar"),
                ("ARTIFACT_2_URL", SIGNED_URL),
                ("ARTIFACT_2_DIGEST", DIGEST),
                ("ARTIFACT_2_FILENAME", "second.jar"),
                ("ARTIFACT_OUTPUT", "/shared"),
            ]),
        )
        .unwrap();
        assert_eq!(settings.url.as_url().as_str(), SIGNED_URL);
        assert_eq!(settings.output.path, PathBuf::from("/shared"));
        assert_eq!(settings.output.filename.as_deref(), Some("second.jar"));
        assert_eq!(settings.size, None);
    }

    #[test]
    fn resolve_prefers_prefixed_output() {
        let settings = resolve(
            &args(&["--env-prefix", "ARTIFACT_2_"]),
            env(&[
                ("ARTIFACT_2_URL", SIGNED_URL),
                ("ARTIFACT_2_DIGEST", DIGEST),
                ("ARTIFACT_2_OUTPUT", "/second/app.jar"),
                ("ARTIFACT_OUTPUT", "/shared"),
            ]),
        )
        .unwrap();
        assert_eq!(settings.output.path, PathBuf::from("/second/app.jar"));
    }

    #[test]
    fn resolve_flags_win_over_env() {
        let settings = resolve(
            &args(&["--url", SIGNED_URL, "--output", "/flag", "--size", "7"]),
            env(&[
                ("ARTIFACT_URL", "http://other.example/wrong.jar"),
                ("ARTIFACT_DIGEST", DIGEST),
                ("ARTIFACT_SIZE", "9"),
                ("ARTIFACT_OUTPUT", "/env"),
            ]),
        )
        .unwrap();
        assert_eq!(settings.url.as_url().as_str(), SIGNED_URL);
        assert_eq!(settings.output.path, PathBuf::from("/flag"));
        assert_eq!(settings.size, Some(7));
    }

    #[test]
    fn resolve_treats_empty_env_as_unset() {
        let settings = resolve(
            &args(&[]),
            env(&[
                ("ARTIFACT_URL", SIGNED_URL),
                ("ARTIFACT_DIGEST", DIGEST),
                ("ARTIFACT_SIZE", ""),
                ("ARTIFACT_OUTPUT", "/app"),
            ]),
        )
        .unwrap();
        assert_eq!(settings.size, None);
    }

    #[test]
    fn resolve_names_missing_variable() {
        let error = resolve(
            &args(&["--env-prefix", "ARTIFACT_3_"]),
            env(&[("ARTIFACT_3_DIGEST", DIGEST)]),
        )
        .unwrap_err();
        let LoaderError::MissingValue { flag, env } = &error else {
            panic!("expected a missing value, got {error:?}");
        };
        assert_eq!(*flag, "--url");
        assert_eq!(env, "ARTIFACT_3_URL");
    }

    #[test]
    fn resolve_rejects_invalid_values() {
        let base = [
            ("ARTIFACT_URL", SIGNED_URL),
            ("ARTIFACT_DIGEST", DIGEST),
            ("ARTIFACT_OUTPUT", "/app"),
        ];
        let cases: [(&str, &str, &str); 6] = [
            (
                "ARTIFACT_URL",
                "ftp://host/app.jar?sig=SECRET",
                "invalid_input",
            ),
            ("ARTIFACT_URL", "not a url ?sig=SECRET", "invalid_input"),
            ("ARTIFACT_DIGEST", "sha256:abc", "invalid_input"),
            ("ARTIFACT_SIZE", "-1", "invalid_input"),
            ("ARTIFACT_FILENAME", "../escape.jar", "invalid_input"),
            ("ARTIFACT_SIZE", "999999999999", "too_large"),
        ];
        for (name, value, label) in cases {
            let mut pairs = base.to_vec();
            pairs.retain(|(key, _)| *key != name);
            pairs.push((name, value));
            let error = resolve(&args(&[]), env(&pairs)).unwrap_err();
            assert_eq!(error.kind().label(), label, "{name}={value}: {error}");
            assert!(!error.to_string().contains("SECRET"), "{error}");
        }
    }

    #[test]
    fn env_prefix_must_be_variable_name() {
        for prefix in ["", "1ARTIFACT", "ARTIFACT-1", "A B"] {
            assert!(EnvNames::for_prefix(prefix).is_err(), "{prefix:?}");
        }
        let names = EnvNames::for_prefix("_X").unwrap();
        assert_eq!(names.url, "_X_URL");
    }

    #[test]
    fn target_path_joins_filename_to_directory() {
        let output = Output {
            path: PathBuf::from("/app"),
            filename: Some("app.jar".to_owned()),
            filename_env: "ARTIFACT_FILENAME".to_owned(),
        };
        assert_eq!(
            target_path(&output, true).unwrap(),
            PathBuf::from("/app/app.jar")
        );
        assert_eq!(target_path(&output, false).unwrap(), PathBuf::from("/app"));
    }

    #[test]
    fn target_path_requires_filename_for_directory() {
        let output = Output {
            path: PathBuf::from("/app/"),
            filename: None,
            filename_env: "ARTIFACT_1_FILENAME".to_owned(),
        };
        let error = target_path(&output, true).unwrap_err();
        assert!(error.to_string().contains("ARTIFACT_1_FILENAME"), "{error}");
    }

    #[test]
    fn ends_with_separator_detects_directory_form() {
        assert!(ends_with_separator(Path::new("/app/")));
        assert!(!ends_with_separator(Path::new("/app/app.jar")));
    }

    #[test]
    fn url_argument_debug_hides_query() {
        let argument: UrlArgument = SIGNED_URL.parse().unwrap();
        let debug = format!("{argument:?}");
        assert!(!debug.contains("SECRET"), "{debug}");
        assert!(debug.contains("/v1/artifacts/ns/app/"), "{debug}");
    }
}
