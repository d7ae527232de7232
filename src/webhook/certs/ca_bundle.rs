//! Publishing the CA bundle into the `caBundle` of every webhook of a
//! `MutatingWebhookConfiguration`.
//!
//! The update is a strategic merge patch that lists each webhook whose `caBundle` differs, by
//! its `name` (the list's `patchMergeKey` in k8s.io/api `admissionregistration/v1`), with only
//! `clientConfig.caBundle`, and that carries the
//! configuration's `metadata.resourceVersion`. The API server merges the entries by name, so
//! every other field of the webhooks, including ones newer than our API types, is left
//! as it is. The resourceVersion makes the API server reject the patch with 409 Conflict when
//! the configuration changed after we read it, so a webhook that was renamed or removed in the
//! meantime is never re-created as a partial entry. We use this patch rather than:
//! - a JSON patch, which addresses webhooks by list index where we compare them by name, and
//!   needs a `test` operation on the resourceVersion to be as safe;
//! - server-side apply, which creates the configuration when it is absent, and which conflicts
//!   with any other field manager that sets `caBundle` unless forced.

use std::collections::BTreeSet;

use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use kube::{
    Api, Client,
    api::{Patch, PatchParams},
};
use serde_json::{Value, json};
use tracing::{debug, info};

use super::CertError;

/// How many times a patch is retried after a conflict before the next check tries again.
const MAX_CONFLICT_RETRIES: usize = 3;

/// The result of one attempt to publish the CA bundle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Publication {
    /// The configuration does not exist yet; the next check tries again.
    ConfigurationAbsent,
    /// Every webhook already has the bundle.
    Unchanged,
    /// These webhooks were patched.
    Patched { webhooks: Vec<String> },
}

/// Makes the `caBundle` of every webhook in the configuration `name` equal to `bundle_pem`.
pub async fn publish(
    client: &Client,
    name: &str,
    bundle_pem: &str,
) -> Result<Publication, CertError> {
    let api: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    let kube_error = |action: &'static str| {
        move |source| CertError::Configuration {
            action,
            name: name.to_owned(),
            source: Box::new(source),
        }
    };

    let mut attempt = 0;
    loop {
        attempt += 1;
        let Some(configuration) = api.get_opt(name).await.map_err(kube_error("read"))? else {
            debug!(configuration = %name, "Webhook configuration not found; will publish the CA bundle when it exists");
            return Ok(Publication::ConfigurationAbsent);
        };
        let Some((patch, webhooks)) = ca_bundle_patch(&configuration, bundle_pem.as_bytes()) else {
            return Ok(Publication::Unchanged);
        };

        match api
            .patch(name, &PatchParams::default(), &Patch::Strategic(&patch))
            .await
        {
            Ok(_) => {
                info!(configuration = %name, webhooks = ?webhooks, "Published the webhook CA bundle");
                return Ok(Publication::Patched { webhooks });
            }
            Err(kube::Error::Api(status))
                if status.code == 409 && attempt <= MAX_CONFLICT_RETRIES =>
            {
                debug!(configuration = %name, attempt, "Webhook configuration changed while patching; reading it again");
            }
            Err(error) => return Err(kube_error("patch")(error)),
        }
    }
}

/// Builds the strategic merge patch that sets `caBundle` on every webhook whose value differs
/// from `bundle`, guarded by the configuration's resourceVersion. Returns `None` when every
/// webhook already has it, and the names of the patched webhooks otherwise.
pub fn ca_bundle_patch(
    configuration: &MutatingWebhookConfiguration,
    bundle: &[u8],
) -> Option<(Value, Vec<String>)> {
    let mut seen = BTreeSet::new();
    let stale: Vec<String> = configuration
        .webhooks
        .iter()
        .flatten()
        .filter(|webhook| {
            webhook
                .client_config
                .ca_bundle
                .as_ref()
                .map(|bytes| bytes.0.as_slice())
                != Some(bundle)
        })
        .map(|webhook| webhook.name.clone())
        .filter(|name| seen.insert(name.clone()))
        .collect();
    if stale.is_empty() {
        return None;
    }

    let encoded = {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(bundle)
    };
    let entries: Vec<Value> = stale
        .iter()
        .map(|name| json!({ "name": name, "clientConfig": { "caBundle": encoded } }))
        .collect();
    let patch = json!({
        "metadata": { "resourceVersion": configuration.metadata.resource_version },
        "webhooks": entries,
    });
    Some((patch, stale))
}
