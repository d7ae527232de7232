//! Artifact coordinates (tenant, application, version) and the one mapping from them to an OCI
//! repository and tag.
//!
//! The convention is repository `{tenantId}/{appId}` and tag `v{version}`. Only
//! [`ArtifactCoordinates::reference`] builds it and only [`version_from_tag`] reverses it, so
//! every backend stores a version under the same name.

use std::fmt;

/// Maximum length of a tenant id or an application id, in bytes.
///
/// 63 is the length limit of a Kubernetes DNS label, so each id can also name a namespace or
/// label value. Together with the separator the repository name stays at 127 bytes.
pub const MAX_ID_LEN: usize = 63;

/// Maximum length of a version, in bytes: the OCI tag limit of 128 minus the `v` prefix.
pub const MAX_VERSION_LEN: usize = 127;

/// Maximum length of an OCI tag, in bytes, from the distribution specification.
const MAX_TAG_LEN: usize = 128;

const TAG_PREFIX: char = 'v';

const PATH_COMPONENT_RULE: &str = "must match the OCI repository path component grammar \
     [a-z0-9]+((\\.|_|__|-+)[a-z0-9]+)*, i.e. lowercase ASCII letters and digits separated by \
     '.', '_', '__' or dashes";

const VERSION_RULE: &str = "must start with an ASCII letter or digit, contain only ASCII \
     letters, digits, '.', '_' and '-', and contain no '..', so that `v{version}` is a valid OCI \
     tag and a safe file name";

/// A coordinate value that cannot be used as an OCI name or a file name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {field} {value:?}: {rule}")]
pub struct InvalidCoordinates {
    /// Name of the invalid coordinate: "tenant id", "application id" or "version".
    pub field: &'static str,
    /// The rejected value, printed with escapes so control characters stay visible.
    pub value: String,
    /// The rule the value broke.
    pub rule: String,
}

impl InvalidCoordinates {
    fn new(field: &'static str, value: &str, rule: impl Into<String>) -> Self {
        Self {
            field,
            value: value.to_owned(),
            rule: rule.into(),
        }
    }
}

/// A tenant's application: the OCI repository that contains all its versions.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ApplicationRef {
    tenant_id: String,
    app_id: String,
}

impl ApplicationRef {
    /// Validates both ids.
    ///
    /// # Errors
    ///
    /// [`InvalidCoordinates`] naming the id and the rule it broke when an id is empty, longer
    /// than [`MAX_ID_LEN`], or not a lowercase OCI repository path component. The grammar
    /// excludes slashes, `..`, uppercase, control characters and non-ASCII characters.
    pub fn new(
        tenant_id: impl Into<String>,
        app_id: impl Into<String>,
    ) -> Result<Self, InvalidCoordinates> {
        let tenant_id = tenant_id.into();
        let app_id = app_id.into();
        validate_id("tenant id", &tenant_id)?;
        validate_id("application id", &app_id)?;
        Ok(Self { tenant_id, app_id })
    }

    pub fn tenant_id(&self) -> &str {
        &self.tenant_id
    }

    pub fn app_id(&self) -> &str {
        &self.app_id
    }

    /// Returns the OCI repository name, `{tenantId}/{appId}`.
    pub fn repository(&self) -> String {
        format!("{}/{}", self.tenant_id, self.app_id)
    }
}

impl fmt::Display for ApplicationRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.tenant_id, self.app_id)
    }
}

/// One version of a tenant's application, validated so it is safe as an OCI name and as a path.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ArtifactCoordinates {
    application: ApplicationRef,
    version: String,
}

impl ArtifactCoordinates {
    /// Validates the three coordinates.
    ///
    /// # Errors
    ///
    /// [`InvalidCoordinates`] as for [`ApplicationRef::new`], or when the version is empty,
    /// longer than [`MAX_VERSION_LEN`] or breaks the version rule (see [`validate_version`]).
    pub fn new(
        tenant_id: impl Into<String>,
        app_id: impl Into<String>,
        version: impl Into<String>,
    ) -> Result<Self, InvalidCoordinates> {
        Self::for_application(ApplicationRef::new(tenant_id, app_id)?, version)
    }

    /// Validates the version of an already validated application.
    ///
    /// # Errors
    ///
    /// [`InvalidCoordinates`] when the version breaks the rule of [`validate_version`].
    pub fn for_application(
        application: ApplicationRef,
        version: impl Into<String>,
    ) -> Result<Self, InvalidCoordinates> {
        let version = version.into();
        validate_version(&version)?;
        Ok(Self {
            application,
            version,
        })
    }

    pub fn application(&self) -> &ApplicationRef {
        &self.application
    }

    pub fn tenant_id(&self) -> &str {
        self.application.tenant_id()
    }

    pub fn app_id(&self) -> &str {
        self.application.app_id()
    }

    pub fn version(&self) -> &str {
        &self.version
    }

    /// The OCI repository and tag of this version: `{tenantId}/{appId}` and `v{version}`.
    pub fn reference(&self) -> OciReference {
        OciReference {
            repository: self.application.repository(),
            tag: format!("{TAG_PREFIX}{}", self.version),
        }
    }
}

impl fmt::Display for ArtifactCoordinates {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.reference())
    }
}

/// An OCI repository name with a tag.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct OciReference {
    pub repository: String,
    pub tag: String,
}

impl fmt::Display for OciReference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.repository, self.tag)
    }
}

/// Returns the version stored under `tag`, or `None` for tags that do not follow the `v{version}`
/// convention (for example `latest`).
pub fn version_from_tag(tag: &str) -> Option<&str> {
    let version = tag.strip_prefix(TAG_PREFIX)?;
    validate_version(version).ok().map(|()| version)
}

/// Checks a version against the rule that keeps `v{version}` a valid OCI tag and `{version}.jar`
/// a plain file name.
///
/// # Errors
///
/// [`InvalidCoordinates`] naming the version and the broken rule.
pub fn validate_version(version: &str) -> Result<(), InvalidCoordinates> {
    const FIELD: &str = "version";
    if version.is_empty() {
        return Err(InvalidCoordinates::new(FIELD, version, "must not be empty"));
    }
    if version.len() > MAX_VERSION_LEN {
        return Err(InvalidCoordinates::new(
            FIELD,
            version,
            format!(
                "must be at most {MAX_VERSION_LEN} bytes, because the tag `v{{version}}` is \
                 limited to {MAX_TAG_LEN} (it has {})",
                version.len()
            ),
        ));
    }
    // A leading '.' would make a hidden file, and a leading '-' reads as a command-line option.
    let starts_alphanumeric = version.as_bytes()[0].is_ascii_alphanumeric();
    let allowed = version
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if !starts_alphanumeric || !allowed || version.contains("..") {
        return Err(InvalidCoordinates::new(FIELD, version, VERSION_RULE));
    }
    debug_assert!(is_tag(&format!("{TAG_PREFIX}{version}")));
    Ok(())
}

fn validate_id(field: &'static str, id: &str) -> Result<(), InvalidCoordinates> {
    if id.is_empty() {
        return Err(InvalidCoordinates::new(field, id, "must not be empty"));
    }
    if id.len() > MAX_ID_LEN {
        return Err(InvalidCoordinates::new(
            field,
            id,
            format!("must be at most {MAX_ID_LEN} bytes (it has {})", id.len()),
        ));
    }
    if !is_path_component(id) {
        return Err(InvalidCoordinates::new(field, id, PATH_COMPONENT_RULE));
    }
    Ok(())
}

/// Matches `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`, the OCI distribution specification's grammar for
/// one component of a repository name.
pub fn is_path_component(value: &str) -> bool {
    let bytes = value.as_bytes();
    let is_alphanumeric = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let mut i = 0;
    loop {
        let run_start = i;
        while i < bytes.len() && is_alphanumeric(bytes[i]) {
            i += 1;
        }
        if i == run_start {
            return false;
        }
        if i == bytes.len() {
            return true;
        }
        match bytes[i] {
            b'.' => i += 1,
            b'_' if bytes.get(i + 1) == Some(&b'_') => i += 2,
            b'_' => i += 1,
            b'-' => {
                while bytes.get(i) == Some(&b'-') {
                    i += 1;
                }
            }
            _ => return false,
        }
    }
}

/// Returns whether `name` is a repository name: path components separated by `/`.
pub fn is_repository(name: &str) -> bool {
    name.split('/').all(is_path_component)
}

/// Matches `[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}`, the OCI distribution specification's tag grammar.
pub fn is_tag(value: &str) -> bool {
    let bytes = value.as_bytes();
    let Some((&first, rest)) = bytes.split_first() else {
        return false;
    };
    bytes.len() <= MAX_TAG_LEN
        && (first.is_ascii_alphanumeric() || first == b'_')
        && rest
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_component_grammar_table() {
        let cases = [
            ("a", true),
            ("tenant-1", true),
            ("a.b", true),
            ("a_b", true),
            ("a__b", true),
            ("a---b", true),
            ("0", true),
            ("", false),
            ("A", false),
            ("a___b", false),
            ("a..b", false),
            ("a._b", false),
            ("-a", false),
            ("a-", false),
            ("a.", false),
            (".a", false),
            ("_a", false),
            ("a/b", false),
            ("..", false),
            ("a b", false),
            ("a\nb", false),
            ("é", false),
        ];
        for (value, expected) in cases {
            assert_eq!(is_path_component(value), expected, "{value:?}");
        }
    }

    #[test]
    fn repository_names() {
        assert!(is_repository("acme/billing"));
        assert!(is_repository("a/b/c"));
        assert!(!is_repository("acme/../x"));
        assert!(!is_repository("/acme"));
        assert!(!is_repository("acme//x"));
        assert!(!is_repository(""));
    }

    #[test]
    fn tag_grammar_table() {
        let max = format!("v{}", "1".repeat(127));
        let too_long = format!("v{}", "1".repeat(128));
        let cases = [
            ("v1", true),
            ("_x", true),
            ("V1.0-rc_1", true),
            (max.as_str(), true),
            ("", false),
            (".v", false),
            ("-v", false),
            ("v/1", false),
            ("v+1", false),
            (too_long.as_str(), false),
        ];
        for (value, expected) in cases {
            assert_eq!(is_tag(value), expected, "{value:?}");
        }
    }

    #[test]
    fn coordinates_validation_table() {
        let long_id = "a".repeat(MAX_ID_LEN + 1);
        let max_version = "1".repeat(MAX_VERSION_LEN);
        let long_version = "1".repeat(MAX_VERSION_LEN + 1);
        // (tenant, app, version, rejected field or None when valid)
        let cases: [(&str, &str, &str, Option<&str>); 19] = [
            ("acme", "billing", "1.0.0", None),
            ("acme-corp", "billing.api", "2024.01_rc-1", None),
            ("acme", "billing", max_version.as_str(), None),
            ("", "billing", "1", Some("tenant id")),
            ("acme", "", "1", Some("application id")),
            ("acme", "billing", "", Some("version")),
            ("Acme", "billing", "1", Some("tenant id")),
            ("acme", "Billing", "1", Some("application id")),
            ("..", "billing", "1", Some("tenant id")),
            ("acme", "..", "1", Some("application id")),
            ("acme", "billing", "..", Some("version")),
            ("acme", "billing", "1..2", Some("version")),
            ("acme/x", "billing", "1", Some("tenant id")),
            ("acme", "billing/x", "1", Some("application id")),
            ("acme", "billing", "1/2", Some("version")),
            ("acme", "billing", "1\n", Some("version")),
            ("acme", "billing", "1.0é", Some("version")),
            (long_id.as_str(), "billing", "1", Some("tenant id")),
            ("acme", "billing", long_version.as_str(), Some("version")),
        ];
        for (tenant, app, version, rejected) in cases {
            let result = ArtifactCoordinates::new(tenant, app, version);
            match rejected {
                None => assert!(result.is_ok(), "{tenant:?}/{app:?}/{version:?}: {result:?}"),
                Some(field) => {
                    let error = result.expect_err(&format!("{tenant:?}/{app:?}/{version:?}"));
                    assert_eq!(error.field, field, "{tenant:?}/{app:?}/{version:?}");
                }
            }
        }
    }

    #[test]
    fn version_rejects_leading_dot_and_dash() {
        for version in [".1", "-1", "_1"] {
            assert!(validate_version(version).is_err(), "{version:?}");
        }
    }

    #[test]
    fn reference_follows_convention() {
        let coordinates = ArtifactCoordinates::new("acme", "billing", "1.2.3").unwrap();
        let reference = coordinates.reference();
        assert_eq!(reference.repository, "acme/billing");
        assert_eq!(reference.tag, "v1.2.3");
        assert_eq!(reference.to_string(), "acme/billing:v1.2.3");
    }

    #[test]
    fn version_from_tag_reverses_reference() {
        assert_eq!(version_from_tag("v1.2.3"), Some("1.2.3"));
        assert_eq!(version_from_tag("latest"), None);
        assert_eq!(version_from_tag("v"), None);
        assert_eq!(version_from_tag("v..1"), None);
    }

    #[test]
    fn error_names_value_and_rule() {
        let error = ArtifactCoordinates::new("Acme", "billing", "1").unwrap_err();
        let message = error.to_string();
        assert!(
            message.starts_with("invalid tenant id \"Acme\": "),
            "{message}"
        );
        assert!(message.contains("[a-z0-9]+"), "{message}");
    }

    #[test]
    fn error_escapes_control_characters() {
        let error = ArtifactCoordinates::new("acme", "billing", "1\u{7}").unwrap_err();
        assert!(error.to_string().contains(r#""1\u{7}""#), "{error}");
    }
}
