//! The registry client of a migration, built from the command-line options.

use std::{
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
};

use tracing::warn;

use super::MigrateError;
use crate::oci::{Credentials, RegistryClient, RegistryConfig, TlsRoots};

/// How to reach the target registry.
#[derive(Debug, Clone)]
pub struct RegistryOptions {
    /// `https://host[:port]`, or `http://` for a registry without TLS.
    pub url: String,
    /// File with one line `USERNAME:PASSWORD`. Anonymous access without it.
    pub credentials_file: Option<PathBuf>,
    /// PEM bundle of the CAs to trust instead of the system's.
    pub ca_file: Option<PathBuf>,
}

/// Builds the client and checks that the registry accepts the credentials, so a wrong URL or
/// password fails once instead of once per artifact.
///
/// # Errors
///
/// [`MigrateError::Credentials`] or [`MigrateError::InvalidCredentials`] for the credentials
/// file, [`MigrateError::RegistrySetup`] for an invalid URL or CA file, and
/// [`MigrateError::RegistryCheck`] when `GET /v2/` fails.
pub async fn connect(options: &RegistryOptions) -> Result<RegistryClient, MigrateError> {
    let setup_error = |error| MigrateError::RegistrySetup(Box::new(error));
    let mut config = RegistryConfig::new(&options.url).map_err(setup_error)?;
    if let Some(path) = &options.credentials_file {
        config = config.with_credentials(read_credentials(path)?);
    }
    if let Some(path) = &options.ca_file {
        let roots = TlsRoots::only_from_pem_file(path).map_err(setup_error)?;
        config = config.with_tls_roots(roots);
    }
    let registry = config.registry_name();
    let client = RegistryClient::new(config).map_err(setup_error)?;
    client
        .check_api()
        .await
        .map_err(|source| MigrateError::RegistryCheck {
            registry,
            source: Box::new(source),
        })?;
    Ok(client)
}

/// Reads a credentials file, warning when other users may read it.
fn read_credentials(path: &Path) -> Result<Credentials, MigrateError> {
    let read_error = |source| MigrateError::Credentials {
        path: path.to_path_buf(),
        source,
    };
    let metadata = std::fs::metadata(path).map_err(read_error)?;
    if metadata.permissions().mode() & 0o077 != 0 {
        warn!(
            path = %path.display(),
            mode = format!("{:o}", metadata.permissions().mode() & 0o777),
            "The credentials file is readable by other users; restrict it with chmod 600",
        );
    }
    let text = std::fs::read_to_string(path).map_err(read_error)?;
    parse_credentials(&text).map_err(|reason| MigrateError::InvalidCredentials {
        path: path.to_path_buf(),
        reason,
    })
}

/// Parses `USERNAME:PASSWORD` on one line, split at the first colon because HTTP basic
/// authentication forbids a colon in the user name. A final line break is allowed.
///
/// # Errors
///
/// The rule that the text breaks. The message never contains the text, because it is a
/// password.
pub fn parse_credentials(text: &str) -> Result<Credentials, &'static str> {
    let line = text
        .strip_suffix('\n')
        .map(|line| line.strip_suffix('\r').unwrap_or(line))
        .unwrap_or(text);
    if line.contains(['\n', '\r']) {
        return Err("the file must contain exactly one line");
    }
    let Some((username, password)) = line.split_once(':') else {
        return Err("the line has no ':' between user name and password");
    };
    if username.is_empty() {
        return Err("the user name before ':' is empty");
    }
    if password.is_empty() {
        return Err("the password after ':' is empty");
    }
    Ok(Credentials::Basic {
        username: username.to_owned(),
        password: password.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn basic(username: &str, password: &str) -> Credentials {
        Credentials::Basic {
            username: username.to_owned(),
            password: password.to_owned(),
        }
    }

    #[test]
    fn credentials_line_parsed() {
        assert_eq!(
            parse_credentials("user:secret\n"),
            Ok(basic("user", "secret"))
        );
        assert_eq!(
            parse_credentials("user:secret"),
            Ok(basic("user", "secret"))
        );
        assert_eq!(
            parse_credentials("user:secret\r\n"),
            Ok(basic("user", "secret"))
        );
    }

    #[test]
    fn password_keeps_colons_and_spaces() {
        assert_eq!(
            parse_credentials("user:a:b c\n"),
            Ok(basic("user", "a:b c"))
        );
    }

    #[test]
    fn malformed_credentials_rejected() {
        let cases = [
            ("", "the line has no ':' between user name and password"),
            (
                "user\n",
                "the line has no ':' between user name and password",
            ),
            (":secret\n", "the user name before ':' is empty"),
            ("user:\n", "the password after ':' is empty"),
            (
                "user:secret\nother:line\n",
                "the file must contain exactly one line",
            ),
            ("user:secret\n\n", "the file must contain exactly one line"),
        ];
        for (text, expected) in cases {
            assert_eq!(parse_credentials(text), Err(expected), "{text:?}");
        }
    }

    #[test]
    fn error_message_hides_password() {
        let error = MigrateError::InvalidCredentials {
            path: PathBuf::from("/etc/registry.cred"),
            reason: parse_credentials("user:hunter2\nx").unwrap_err(),
        };
        assert!(!error.to_string().contains("hunter2"), "{error}");
    }
}
