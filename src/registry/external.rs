//! External mode: an existing OCI registry that the operator adopts. Nothing is deployed; the
//! registry is Ready when its `/v2/` endpoint accepts the configured credentials.

use k8s_openapi::{ByteString, api::core::v1::Secret};
use kube::{Api, ResourceExt};

use super::controller::{Context, Error, Observation};
use crate::{
    conditions::Outcome,
    crd::{ArtifactRegistry, ExternalRegistry},
    oci::{Credentials, OciError},
};

/// Keys of the credentials Secret of an external registry.
pub const USERNAME_KEY: &str = "username";
pub const PASSWORD_KEY: &str = "password";

/// Checks the external registry and reports whether it is usable.
pub async fn reconcile(
    registry: &ArtifactRegistry,
    context: &Context,
) -> Result<Observation, Error> {
    let external = registry
        .spec
        .external
        .as_ref()
        .expect("external mode requires spec.external");
    let namespace = registry.namespace().unwrap_or_default();

    let credentials = match &external.credentials_secret_ref {
        None => Credentials::Anonymous,
        Some(reference) => {
            let secrets: Api<Secret> = Api::namespaced(context.client.clone(), &namespace);
            let secret = secrets
                .get_opt(&reference.name)
                .await
                .map_err(|source| Error::Kube {
                    action: "read the credentials Secret",
                    registry: format!("{namespace}/{}", registry.name_any()),
                    source,
                })?;
            match credentials_from_secret(secret.as_ref(), &reference.name) {
                Ok(credentials) => credentials,
                Err(outcome) => return Ok(observation(external, outcome)),
            }
        }
    };

    let client = match super::access::external_client(external, credentials) {
        Ok(client) => client,
        Err(error) => {
            let outcome = stalled("InvalidRegistryConfig", error.to_string());
            return Ok(observation(external, outcome));
        }
    };
    Ok(observation(
        external,
        probe_outcome(client.check_api().await, &external.url),
    ))
}

fn observation(external: &ExternalRegistry, outcome: Outcome) -> Observation {
    let mut observation = Observation::outcome(outcome);
    observation.endpoint = Some(external.url.clone());
    observation
}

fn stalled(reason: &str, message: String) -> Outcome {
    Outcome::Stalled {
        reason: reason.to_owned(),
        message,
    }
}

/// Reads basic credentials from the Secret's `username` and `password` keys.
pub fn credentials_from_secret(
    secret: Option<&Secret>,
    name: &str,
) -> Result<Credentials, Outcome> {
    let Some(secret) = secret else {
        return Err(stalled(
            "CredentialsNotFound",
            format!(
                "Secret {name} not found; create it with the keys {USERNAME_KEY} and {PASSWORD_KEY}"
            ),
        ));
    };
    let data = secret.data.clone().unwrap_or_default();
    let read = |key: &str| -> Result<String, Outcome> {
        let ByteString(bytes) = data.get(key).ok_or_else(|| {
            stalled(
                "CredentialsInvalid",
                format!("Secret {name} has no key {key}; add it"),
            )
        })?;
        String::from_utf8(bytes.clone()).map_err(|_| {
            stalled(
                "CredentialsInvalid",
                format!("key {key} of Secret {name} is not valid UTF-8"),
            )
        })
    };
    Ok(Credentials::Basic {
        username: read(USERNAME_KEY)?,
        password: read(PASSWORD_KEY)?,
    })
}

/// Maps the result of the `/v2/` check to an outcome: transient failures keep the registry
/// progressing, rejected credentials and other permanent failures stall it.
pub fn probe_outcome(result: Result<(), OciError>, url: &str) -> Outcome {
    match result {
        Ok(()) => Outcome::Ready {
            reason: "RegistryReachable".to_owned(),
            message: format!("registry {url} accepted the configured credentials"),
        },
        Err(error @ OciError::Unauthorized { .. }) => stalled("Unauthorized", error.to_string()),
        Err(error) if error.is_transient() => Outcome::Progressing {
            reason: "RegistryUnreachable".to_owned(),
            message: error.to_string(),
        },
        Err(error) => stalled("RegistryError", error.to_string()),
    }
}
