//! Coordinates and names: the hand-written checks accept exactly what the grammars they cite
//! accept, valid coordinates round-trip through their OCI reference, and every rejection names
//! the field and the value.
//!
//! The oracles are the grammars as regular expressions: the OCI distribution specification's
//! repository name and tag, Kubernetes' RFC 1123 label and subdomain and its label value.

use std::sync::LazyLock;

use artifact_operator::{
    crd::names,
    oci::coordinates::{self, ArtifactCoordinates, MAX_ID_LEN, MAX_VERSION_LEN},
};
use proptest::prelude::*;
use regex::Regex;
use serde::{Deserialize, Serialize};

use super::corpus;

const TARGET: &str = "coordinates";

/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`, one component of an OCI repository name.
const PATH_COMPONENT: &str = r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*";

static COMPONENT: LazyLock<Regex> = LazyLock::new(|| anchored(PATH_COMPONENT));
static REPOSITORY: LazyLock<Regex> =
    LazyLock::new(|| anchored(&format!("{PATH_COMPONENT}(?:/{PATH_COMPONENT})*")));
static TAG: LazyLock<Regex> = LazyLock::new(|| anchored("[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}"));
static DNS_LABEL: LazyLock<Regex> = LazyLock::new(|| anchored("[a-z0-9](?:[-a-z0-9]*[a-z0-9])?"));
static DNS_SUBDOMAIN: LazyLock<Regex> = LazyLock::new(|| {
    anchored(r"[a-z0-9](?:[-a-z0-9]*[a-z0-9])?(?:\.[a-z0-9](?:[-a-z0-9]*[a-z0-9])?)*")
});
static LABEL_VALUE: LazyLock<Regex> =
    LazyLock::new(|| anchored("(?:(?:[A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?"));
/// The version rule of `validate_version`, as documented there.
static VERSION: LazyLock<Regex> = LazyLock::new(|| anchored("[A-Za-z0-9][A-Za-z0-9._-]*"));

fn anchored(pattern: &str) -> Regex {
    Regex::new(&format!("^(?:{pattern})$")).expect("the oracle patterns are valid")
}

/// Tenant id, application id and version, each valid or not.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CoordinatesCase {
    tenant: String,
    app: String,
    version: String,
}

proptest! {
    #![proptest_config(corpus::config(TARGET))]

    #[test]
    fn coordinates_follow_the_grammars(case in coordinates_case()) {
        check(&case)?;
    }
}

#[test]
fn seeds_hold_the_properties() {
    for (file, case) in corpus::seeds::<CoordinatesCase>(TARGET) {
        check(&case).unwrap_or_else(|error| panic!("seed {file}: {error}"));
    }
}

// === Cases ===

/// Coordinates that are all valid in half of the cases, so that the round trip is exercised
/// as often as the rejections.
fn coordinates_case() -> impl Strategy<Value = CoordinatesCase> {
    let valid = (valid_id(), valid_id(), valid_version());
    let mixed = (id(), id(), version());
    prop_oneof![valid, mixed].prop_map(|(tenant, app, version)| CoordinatesCase {
        tenant,
        app,
        version,
    })
}

fn valid_id() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z0-9]{1,8}((\\.|_|__|-{1,3})[a-z0-9]{1,8}){0,4}",
        "[a-z0-9]{63}",
    ]
}

fn valid_version() -> impl Strategy<Value = String> {
    prop_oneof![
        "[0-9]{1,3}(\\.[0-9]{1,3}){0,3}(-[a-zA-Z0-9_]{1,10})?",
        "[A-Za-z0-9]{127}",
    ]
}

/// Valid ids, near misses from the grammar's own characters and arbitrary text.
fn id() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => valid_id(),
        2 => "[a-z0-9]{60,66}",
        3 => "[a-z0-9._A/ -]{0,12}",
        1 => "\\PC{0,12}",
        1 => any::<String>(),
    ]
}

fn version() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => "[0-9]{1,3}(\\.[0-9]{1,3}){0,3}(-[a-zA-Z0-9_.]{1,10})?",
        2 => "[A-Za-z0-9]{120,130}",
        3 => "[a-zA-Z0-9._/+ -]{0,12}",
        1 => "\\PC{0,12}",
        1 => any::<String>(),
    ]
}

// === Properties ===

fn check(case: &CoordinatesCase) -> Result<(), TestCaseError> {
    for value in [&case.tenant, &case.app, &case.version] {
        check_names(value)?;
    }
    match ArtifactCoordinates::new(&case.tenant, &case.app, &case.version) {
        Ok(coordinates) => check_accepted(case, &coordinates),
        Err(error) => {
            let (field, value) = first_invalid(case).ok_or_else(|| {
                TestCaseError::fail(format!("{case:?} matches every grammar but got {error}"))
            })?;
            prop_assert_eq!(error.field, field);
            prop_assert_eq!(&error.value, value);
            let message = error.to_string();
            let quoted = format!("invalid {field} {value:?}");
            prop_assert!(message.starts_with(&quoted), "{} lacks {}", message, quoted);
            Ok(())
        }
    }
}

/// Checks that the grammar checks of single values agree with the oracles.
fn check_names(value: &str) -> Result<(), TestCaseError> {
    prop_assert_eq!(
        coordinates::is_path_component(value),
        COMPONENT.is_match(value)
    );
    prop_assert_eq!(
        coordinates::is_repository(value),
        REPOSITORY.is_match(value)
    );
    prop_assert_eq!(coordinates::is_tag(value), TAG.is_match(value));

    let label = value.len() <= names::MAX_LABEL_LEN && DNS_LABEL.is_match(value);
    prop_assert_eq!(names::is_dns_label(value), label);
    let subdomain = value.len() <= names::MAX_SUBDOMAIN_LEN && DNS_SUBDOMAIN.is_match(value);
    prop_assert_eq!(names::is_dns_subdomain(value), subdomain);
    let host = subdomain
        && value
            .split('.')
            .all(|part| part.len() <= names::MAX_LABEL_LEN);
    prop_assert_eq!(names::is_host_name(value), host);
    Ok(())
}

/// Checks that valid coordinates name a valid OCI repository and tag, each id is a valid value
/// of the tenant label, the version is a plain file name, and the reference parses back.
fn check_accepted(
    case: &CoordinatesCase,
    coordinates: &ArtifactCoordinates,
) -> Result<(), TestCaseError> {
    prop_assert!(first_invalid(case).is_none(), "accepted {:?}", case);
    let reference = coordinates.reference();
    prop_assert!(REPOSITORY.is_match(&reference.repository), "{}", reference);
    prop_assert!(TAG.is_match(&reference.tag), "{}", reference);
    for id in [coordinates.tenant_id(), coordinates.app_id()] {
        prop_assert!(id.len() <= MAX_ID_LEN && LABEL_VALUE.is_match(id), "{}", id);
    }
    let file_name = format!("{}.jar", coordinates.version());
    prop_assert!(
        !file_name.contains('/') && !file_name.starts_with('.'),
        "{}",
        file_name
    );

    prop_assert_eq!(
        coordinates.to_string(),
        format!("{}/{}:v{}", case.tenant, case.app, case.version)
    );
    let (tenant, app) = reference
        .repository
        .split_once('/')
        .expect("a repository has two components");
    let version = coordinates::version_from_tag(&reference.tag);
    prop_assert_eq!(version, Some(case.version.as_str()));
    let parsed = ArtifactCoordinates::new(tenant, app, version.unwrap_or_default());
    prop_assert_eq!(parsed.as_ref(), Ok(coordinates));
    Ok(())
}

/// Returns the first coordinate that breaks its grammar, with the name errors use for it.
fn first_invalid(case: &CoordinatesCase) -> Option<(&'static str, &str)> {
    let id_valid = |id: &str| id.len() <= MAX_ID_LEN && COMPONENT.is_match(id);
    let version_valid = |version: &str| {
        version.len() <= MAX_VERSION_LEN && VERSION.is_match(version) && !version.contains("..")
    };
    [
        ("tenant id", case.tenant.as_str(), id_valid(&case.tenant)),
        ("application id", case.app.as_str(), id_valid(&case.app)),
        (
            "version",
            case.version.as_str(),
            version_valid(&case.version),
        ),
    ]
    .into_iter()
    .find(|(_, _, valid)| !valid)
    .map(|(field, value, _)| (field, value))
}
