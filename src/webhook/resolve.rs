//! Turns the AppArtifact names a pod lists into injections: a signed URL, digest, size and file
//! name each, or the denial that explains why the pod cannot have them.

use std::{sync::Arc, time::Duration};

use jiff::Timestamp;

use super::{ARTIFACTS_ANNOTATION, Denial};
use crate::{
    conditions::{self, READY},
    crd::{AppArtifact, TENANT_LABEL},
    gateway::signing::{self, KeyRing, UrlTarget},
};

/// Prefix of the environment variables of a pod's only artifact.
pub const ENV_PREFIX: &str = "ARTIFACT_";

/// Maximum number of characters of an AppArtifact's Ready message quoted in a denial.
const MAX_QUOTED_MESSAGE: usize = 300;

/// One artifact to hand to the pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Injection {
    /// Name of the AppArtifact.
    pub artifact: String,
    /// Prefix of the variables, such as `ARTIFACT_` or `ARTIFACT_BILLING_`.
    pub env_prefix: String,
    /// Pre-signed gateway URL.
    pub url: String,
    /// `sha256:` and 64 hex digits.
    pub digest: String,
    pub size: i64,
    pub file_name: String,
}

/// Signs URLs for injections.
#[derive(Debug, Clone, Copy)]
pub struct Signer<'a> {
    pub ring: &'a KeyRing,
    /// Base URL of the gateway as pods reach it.
    pub base_url: &'a str,
    pub ttl: Duration,
    pub now: Timestamp,
}

impl Signer<'_> {
    fn url(&self, target: &UrlTarget<'_>) -> String {
        let signature = signing::sign(self.ring, target, self.ttl, self.now);
        signing::signed_url(self.base_url, target, &signature)
    }
}

/// Resolves every name of a pod in `namespace`, whose tenant label is `tenant`.
///
/// `lookup` returns the cached AppArtifact of that name in `namespace`.
///
/// # Errors
///
/// The [`Denial`] of the first name that is missing, belongs to another tenant or is not Ready.
pub fn resolve(
    namespace: &str,
    tenant: Option<&str>,
    names: &[String],
    lookup: impl Fn(&str) -> Option<Arc<AppArtifact>>,
    signer: &Signer<'_>,
) -> Result<Vec<Injection>, Denial> {
    let prefixes = env_prefixes(names)?;
    names
        .iter()
        .zip(prefixes)
        .map(|(name, env_prefix)| {
            let artifact = lookup(name).ok_or_else(|| not_found(namespace, name))?;
            check_tenant(namespace, tenant, &artifact)?;
            injection(namespace, &artifact, env_prefix, signer)
        })
        .collect()
}

/// Returns the variable prefix of each name: [`ENV_PREFIX`] for a single artifact, and
/// `ARTIFACT_{NAME}_` (upper case, `-` and `.` as `_`) when there are several.
///
/// # Errors
///
/// A [`Denial`] when two names map to the same prefix, such as `a-b` and `a.b`.
pub fn env_prefixes(names: &[String]) -> Result<Vec<String>, Denial> {
    if let [_] = names {
        return Ok(vec![ENV_PREFIX.to_owned()]);
    }
    let prefixes: Vec<String> = names
        .iter()
        .map(|name| {
            let upper: String = name
                .chars()
                .map(|c| match c {
                    '-' | '.' => '_',
                    c => c.to_ascii_uppercase(),
                })
                .collect();
            format!("{ENV_PREFIX}{upper}_")
        })
        .collect();
    for (index, prefix) in prefixes.iter().enumerate() {
        if let Some(other) = prefixes[..index].iter().position(|seen| seen == prefix) {
            return Err(Denial::new(
                "variable_collision",
                format!(
                    "AppArtifacts {} and {} would both use variables {prefix}*; list only one of \
                     them in annotation {ARTIFACTS_ANNOTATION}, or rename one",
                    names[other], names[index]
                ),
            ));
        }
    }
    Ok(prefixes)
}

fn not_found(namespace: &str, name: &str) -> Denial {
    Denial::new(
        "artifact_not_found",
        format!(
            "AppArtifact {namespace}/{name} does not exist; create it, or remove {name} from \
             annotation {ARTIFACTS_ANNOTATION}"
        ),
    )
}

fn check_tenant(
    namespace: &str,
    tenant: Option<&str>,
    artifact: &AppArtifact,
) -> Result<(), Denial> {
    let name = artifact.metadata.name.as_deref().unwrap_or_default();
    let owner = &artifact.spec.tenant_id;
    match tenant {
        Some(tenant) if tenant == owner => Ok(()),
        Some(tenant) => Err(Denial::new(
            "other_tenant",
            format!(
                "AppArtifact {namespace}/{name} belongs to tenant {owner}, but namespace \
                 {namespace} belongs to tenant {tenant} (label {TENANT_LABEL}); a pod may only \
                 use its own tenant's artifacts"
            ),
        )),
        None => Err(Denial::new(
            "other_tenant",
            format!(
                "namespace {namespace} has no label {TENANT_LABEL}, so its pods may not use \
                 AppArtifact {namespace}/{name} of tenant {owner}; label the namespace with \
                 {TENANT_LABEL}={owner} if it belongs to that tenant"
            ),
        )),
    }
}

fn injection(
    namespace: &str,
    artifact: &AppArtifact,
    env_prefix: String,
    signer: &Signer<'_>,
) -> Result<Injection, Denial> {
    let name = artifact.metadata.name.clone().unwrap_or_default();
    let status = artifact.status.as_ref();
    let conditions = status
        .map(|status| status.conditions.as_slice())
        .unwrap_or_default();
    let stored = status.and_then(|status| status.artifact.as_ref());
    let Some(stored) = stored.filter(|_| conditions::is_true(conditions, READY)) else {
        return Err(not_ready(namespace, &name, conditions));
    };

    let target = UrlTarget {
        namespace,
        name: &name,
        digest: &stored.digest,
    };
    Ok(Injection {
        url: signer.url(&target),
        digest: stored.digest.clone(),
        size: stored.size,
        file_name: artifact.spec.jar_file_name(),
        artifact: name,
        env_prefix,
    })
}

fn not_ready(
    namespace: &str,
    name: &str,
    conditions: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition],
) -> Denial {
    let detail = match conditions::find(conditions, READY) {
        Some(ready) => {
            let message: String = ready.message.chars().take(MAX_QUOTED_MESSAGE).collect();
            format!("{}: {message}", ready.reason)
        }
        None => "the operator has not processed it yet".to_owned(),
    };
    Denial::new(
        "artifact_not_ready",
        format!(
            "AppArtifact {namespace}/{name} is not Ready ({detail}); the pod can be created once \
             it is Ready (kubectl describe appartifact -n {namespace} {name})"
        ),
    )
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const DIGEST: &str = "sha256:2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae";

    fn artifact(name: &str, tenant: &str, ready: &str) -> Arc<AppArtifact> {
        Arc::new(
            serde_json::from_value(json!({
                "apiVersion": "artifacts.cameleer.io/v1alpha1",
                "kind": "AppArtifact",
                "metadata": { "name": name, "namespace": "shop" },
                "spec": {
                    "registryRef": { "name": "main" },
                    "tenantId": tenant, "appId": "billing", "version": "1.0",
                    "source": { "upload": {} },
                },
                "status": {
                    "conditions": [{
                        "type": "Ready", "status": ready, "reason": "SourceNotFound",
                        "message": "GET returned 404", "lastTransitionTime": "2026-12-01T00:00:00Z",
                    }],
                    "artifact": {
                        "ociRef": "registry/acme/billing:v1.0", "digest": DIGEST,
                        "manifestDigest": DIGEST, "size": 1234,
                        "mediaType": "application/java-archive",
                        "lastUpdateTime": "2026-12-01T00:00:00Z",
                    },
                },
            }))
            .unwrap(),
        )
    }

    fn run(
        tenant: Option<&str>,
        names: &[&str],
        cache: &[Arc<AppArtifact>],
    ) -> Result<Vec<Injection>, Denial> {
        let now = Timestamp::from_second(1_800_000_000).unwrap();
        let ring = KeyRing::generate(&mut rand::rng(), now);
        let signer = Signer {
            ring: &ring,
            base_url: "http://gateway:8080",
            ttl: Duration::from_secs(3600),
            now,
        };
        let names: Vec<String> = names.iter().map(|name| (*name).to_owned()).collect();
        let lookup = |name: &str| {
            cache
                .iter()
                .find(|artifact| artifact.metadata.name.as_deref() == Some(name))
                .cloned()
        };
        resolve("shop", tenant, &names, lookup, &signer)
    }

    #[test]
    fn ready_artifact_becomes_an_injection() {
        let injections = run(
            Some("acme"),
            &["billing"],
            &[artifact("billing", "acme", "True")],
        );
        let [injection] = injections.unwrap().try_into().unwrap();
        assert_eq!(injection.artifact, "billing");
        assert_eq!(injection.env_prefix, "ARTIFACT_");
        assert_eq!(injection.digest, DIGEST);
        assert_eq!(injection.size, 1234);
        assert_eq!(injection.file_name, "billing-1.0.jar");
        let path = format!("http://gateway:8080/v1/artifacts/shop/billing/{DIGEST}?kid=");
        assert!(injection.url.starts_with(&path), "{}", injection.url);
        assert!(
            injection.url.contains("&exp=1800003600&sig="),
            "{}",
            injection.url
        );
    }

    #[test]
    fn several_artifacts_get_their_own_prefix() {
        let cache = [
            artifact("billing", "acme", "True"),
            artifact("ledger.v2", "acme", "True"),
        ];
        let injections = run(Some("acme"), &["billing", "ledger.v2"], &cache).unwrap();
        let prefixes: Vec<&str> = injections.iter().map(|i| i.env_prefix.as_str()).collect();
        assert_eq!(prefixes, ["ARTIFACT_BILLING_", "ARTIFACT_LEDGER_V2_"]);
    }

    #[test]
    fn denial_table() {
        let cache = [
            artifact("billing", "acme", "True"),
            artifact("pending", "acme", "False"),
            artifact("foreign", "globex", "True"),
            artifact("a-b", "acme", "True"),
            artifact("a.b", "acme", "True"),
        ];
        for (tenant, names, reason, needle) in [
            (
                Some("acme"),
                &["missing"][..],
                "artifact_not_found",
                "shop/missing does not exist",
            ),
            (
                Some("acme"),
                &["pending"][..],
                "artifact_not_ready",
                "not Ready (SourceNotFound: GET returned 404)",
            ),
            (
                Some("acme"),
                &["foreign"][..],
                "other_tenant",
                "belongs to tenant globex",
            ),
            (
                None,
                &["billing"][..],
                "other_tenant",
                "has no label artifacts.cameleer.io/tenant",
            ),
            (
                Some("acme"),
                &["billing", "missing"][..],
                "artifact_not_found",
                "shop/missing",
            ),
            (
                Some("acme"),
                &["a-b", "a.b"][..],
                "variable_collision",
                "ARTIFACT_A_B_*",
            ),
        ] {
            let denial = run(tenant, names, &cache).unwrap_err();
            assert_eq!(denial.reason, reason, "{names:?}");
            assert!(
                denial.message.contains(needle),
                "{names:?}: {}",
                denial.message
            );
        }
    }

    #[test]
    fn ready_condition_without_stored_artifact_is_not_ready() {
        let mut pending = (*artifact("billing", "acme", "True")).clone();
        pending.status.as_mut().unwrap().artifact = None;
        let denial = run(Some("acme"), &["billing"], &[Arc::new(pending)]).unwrap_err();
        assert_eq!(denial.reason, "artifact_not_ready");
    }
}
