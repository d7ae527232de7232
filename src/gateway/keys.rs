//! The signing key ring, kept in a Secret the operator owns and shared by every replica.
//!
//! Each replica reads the Secret at start-up and then at every check interval. A check rotates
//! the active key when it is older than the rotation interval or when the Secret's
//! `artifacts.cameleer.io/rotate-requested` annotation has a value the ring has not handled
//! yet, and prunes retired keys whose URLs have all expired. Writes carry the Secret's
//! resourceVersion, so when several replicas rotate at once exactly one write wins and the
//! others adopt its ring at their next check.

use std::{
    collections::BTreeMap,
    sync::{Arc, RwLock},
    time::Duration,
};

use jiff::Timestamp;
use k8s_openapi::{ByteString, api::core::v1::Secret};
use kube::{
    Api, Client,
    api::{ObjectMeta, PostParams},
};
use tracing::{info, warn};

use super::signing::{InvalidKeyRing, KeyRing};

/// Name of the Secret with the key ring.
pub const DEFAULT_SECRET_NAME: &str = "artifact-operator-signing-keys";
/// Key of the Secret's data that contains the ring as JSON.
pub const RING_KEY: &str = "keyring.json";
/// Annotation whose new value requests a rotation, for example
/// `kubectl annotate secret artifact-operator-signing-keys artifacts.cameleer.io/rotate-requested="$(date +%s)" --overwrite`.
pub const ROTATE_ANNOTATION: &str = "artifacts.cameleer.io/rotate-requested";

/// Location of the ring and the interval of its rotation.
#[derive(Debug, Clone)]
pub struct KeySettings {
    pub namespace: String,
    pub secret_name: String,
    /// Age at which the active key is replaced.
    pub rotation_interval: Duration,
    /// Interval between reads of the Secret.
    pub check_interval: Duration,
}

impl KeySettings {
    /// Returns settings with a rotation every 30 days and a check every minute.
    pub fn new(namespace: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            secret_name: DEFAULT_SECRET_NAME.to_owned(),
            rotation_interval: Duration::from_secs(30 * 24 * 3600),
            check_interval: Duration::from_secs(60),
        }
    }
}

/// Failure to read or write the key ring.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("failed to {action} Secret {namespace}/{name}: {source}")]
    Kube {
        action: &'static str,
        namespace: String,
        name: String,
        #[source]
        source: Box<kube::Error>,
    },
    /// The Secret exists but its ring cannot be used. The operator never overwrites it, so that
    /// URLs signed with its keys stay valid; an administrator fixes or deletes it.
    #[error(
        "Secret {namespace}/{name} has an unusable key {RING_KEY}: {reason}. Fix it, or delete \
         the Secret so that a new ring is generated (URLs signed before become invalid)"
    )]
    Invalid {
        namespace: String,
        name: String,
        reason: String,
    },
}

/// The current key ring, shared by the gateway and the webhook.
#[derive(Debug, Clone)]
pub struct KeyRingHandle {
    current: Arc<RwLock<Arc<KeyRing>>>,
}

impl KeyRingHandle {
    pub fn new(ring: KeyRing) -> Self {
        Self {
            current: Arc::new(RwLock::new(Arc::new(ring))),
        }
    }

    /// Returns the ring as of the last check.
    pub fn get(&self) -> Arc<KeyRing> {
        self.current
            .read()
            .expect("the key ring lock is never poisoned")
            .clone()
    }

    fn set(&self, ring: KeyRing) {
        *self
            .current
            .write()
            .expect("the key ring lock is never poisoned") = Arc::new(ring);
    }
}

/// Reads the ring once, creating the Secret when it does not exist, and starts the periodic
/// check in the background. The check stops when `shutdown` completes.
pub async fn start(
    client: Client,
    settings: KeySettings,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<KeyRingHandle, KeyError> {
    let ring = check(&client, &settings, Timestamp::now()).await?;
    let handle = KeyRingHandle::new(ring);
    let background = handle.clone();
    tokio::spawn(async move {
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => return,
                () = tokio::time::sleep(settings.check_interval) => {}
            }
            match check(&client, &settings, Timestamp::now()).await {
                Ok(ring) => background.set(ring),
                Err(error) => warn!(%error, "Key ring check failed; the last ring stays in use"),
            }
        }
    });
    Ok(handle)
}

/// Reads the ring, applies due rotations and pruning, writes it back when it changed, and
/// returns it.
pub async fn check(
    client: &Client,
    settings: &KeySettings,
    now: Timestamp,
) -> Result<KeyRing, KeyError> {
    let api: Api<Secret> = Api::namespaced(client.clone(), &settings.namespace);
    let kube_error = |action: &'static str| {
        move |source| KeyError::Kube {
            action,
            namespace: settings.namespace.clone(),
            name: settings.secret_name.clone(),
            source: Box::new(source),
        }
    };

    let Some(mut secret) = api
        .get_opt(&settings.secret_name)
        .await
        .map_err(kube_error("read"))?
    else {
        return create(&api, settings, now).await;
    };
    let mut ring = read_ring(&secret, settings)?;
    let requested = secret
        .metadata
        .annotations
        .as_ref()
        .and_then(|annotations| annotations.get(ROTATE_ANNOTATION))
        .cloned();
    let changed = plan_changes(
        &mut ring,
        requested,
        settings.rotation_interval,
        settings.check_interval,
        now,
    );
    if !changed {
        return Ok(ring);
    }

    secret.data = Some(ring_data(&ring));
    match api
        .replace(&settings.secret_name, &PostParams::default(), &secret)
        .await
    {
        Ok(_) => {
            info!(active = %ring.active, keys = ring.keys.len(), "Key ring updated");
            Ok(ring)
        }
        // Another replica wrote first; its ring is read at the next check.
        Err(kube::Error::Api(status)) if status.code == 409 => {
            info!("Another replica updated the key ring first");
            read_ring(
                &api.get(&settings.secret_name)
                    .await
                    .map_err(kube_error("read"))?,
                settings,
            )
        }
        Err(error) => Err(kube_error("update")(error)),
    }
}

/// Applies an on-demand rotation, a rotation by age and pruning. Returns whether the ring
/// changed. `check_interval` is how long a replica may keep signing with a retired key before
/// it rereads the ring.
pub fn plan_changes(
    ring: &mut KeyRing,
    requested: Option<String>,
    rotation_interval: Duration,
    check_interval: Duration,
    now: Timestamp,
) -> bool {
    let mut changed = false;
    if requested.is_some() && requested != ring.handled_rotation_request {
        info!(request = ?requested, "Rotating the signing key on request");
        ring.rotate(&mut rand::rng(), now);
        ring.handled_rotation_request = requested;
        changed = true;
    } else if ring.rotation_due(rotation_interval, now) {
        info!("Rotating the signing key by age");
        ring.rotate(&mut rand::rng(), now);
        changed = true;
    }
    ring.prune(now, check_interval) || changed
}

async fn create(
    api: &Api<Secret>,
    settings: &KeySettings,
    now: Timestamp,
) -> Result<KeyRing, KeyError> {
    let ring = KeyRing::generate(&mut rand::rng(), now);
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(settings.secret_name.clone()),
            labels: Some(BTreeMap::from([(
                "app.kubernetes.io/managed-by".to_owned(),
                "artifact-operator".to_owned(),
            )])),
            ..ObjectMeta::default()
        },
        data: Some(ring_data(&ring)),
        ..Secret::default()
    };
    match api.create(&PostParams::default(), &secret).await {
        Ok(_) => {
            info!(secret = %settings.secret_name, "Created the signing key ring");
            Ok(ring)
        }
        Err(kube::Error::Api(status)) if status.code == 409 => {
            let existing =
                api.get(&settings.secret_name)
                    .await
                    .map_err(|source| KeyError::Kube {
                        action: "read",
                        namespace: settings.namespace.clone(),
                        name: settings.secret_name.clone(),
                        source: Box::new(source),
                    })?;
            read_ring(&existing, settings)
        }
        Err(source) => Err(KeyError::Kube {
            action: "create",
            namespace: settings.namespace.clone(),
            name: settings.secret_name.clone(),
            source: Box::new(source),
        }),
    }
}

fn ring_data(ring: &KeyRing) -> BTreeMap<String, ByteString> {
    let json = serde_json::to_vec(ring).expect("a key ring always serializes");
    BTreeMap::from([(RING_KEY.to_owned(), ByteString(json))])
}

fn read_ring(secret: &Secret, settings: &KeySettings) -> Result<KeyRing, KeyError> {
    let invalid = |reason: String| KeyError::Invalid {
        namespace: settings.namespace.clone(),
        name: settings.secret_name.clone(),
        reason,
    };
    let bytes = secret
        .data
        .as_ref()
        .and_then(|data| data.get(RING_KEY))
        .ok_or_else(|| invalid("the key is missing".to_owned()))?;
    let ring: KeyRing = serde_json::from_slice(&bytes.0)
        .map_err(|error| invalid(format!("invalid JSON ({error})")))?;
    ring.validate()
        .map_err(|error: InvalidKeyRing| invalid(error.to_string()))?;
    Ok(ring)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(seconds).unwrap()
    }

    const MONTH: Duration = Duration::from_secs(30 * 24 * 3600);
    const MINUTE: Duration = Duration::from_secs(60);

    #[test]
    fn request_rotates_once() {
        let mut ring = KeyRing::generate(&mut rand::rng(), at(1_800_000_000));
        let first = ring.active.clone();
        assert!(plan_changes(
            &mut ring,
            Some("1".into()),
            MONTH,
            MINUTE,
            at(1_800_000_100)
        ));
        assert_ne!(ring.active, first);
        assert!(!plan_changes(
            &mut ring,
            Some("1".into()),
            MONTH,
            MINUTE,
            at(1_800_000_200)
        ));
        assert!(plan_changes(
            &mut ring,
            Some("2".into()),
            MONTH,
            MINUTE,
            at(1_800_000_300)
        ));
        assert_eq!(ring.keys.len(), 3);
    }

    #[test]
    fn age_rotates_and_prune_drops_expired_keys() {
        let mut ring = KeyRing::generate(&mut rand::rng(), at(1_800_000_000));
        assert!(!plan_changes(
            &mut ring,
            None,
            MONTH,
            MINUTE,
            at(1_800_000_000 + 3600)
        ));
        let rotated_at = 1_800_000_000 + 30 * 24 * 3600;
        assert!(plan_changes(&mut ring, None, MONTH, MINUTE, at(rotated_at)));
        assert_eq!(ring.keys.len(), 2);
        assert!(plan_changes(
            &mut ring,
            None,
            MONTH,
            MINUTE,
            at(rotated_at + 8 * 24 * 3600)
        ));
        assert_eq!(ring.keys.len(), 1);
    }

    #[test]
    fn unusable_ring_named_with_fix() {
        let settings = KeySettings::new("operator");
        let secret = Secret {
            data: Some(BTreeMap::from([(
                RING_KEY.to_owned(),
                ByteString(b"{".to_vec()),
            )])),
            ..Secret::default()
        };
        let error = read_ring(&secret, &settings).unwrap_err().to_string();
        assert!(
            error.contains("operator/artifact-operator-signing-keys"),
            "{error}"
        );
        assert!(error.contains("delete the Secret"), "{error}");
    }
}
