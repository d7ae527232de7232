//! Lease-based leader election, so that one replica runs the controllers while every replica
//! serves the webhook and the gateway.
//!
//! A replica holds the Lease while it renews it within `lease_duration`. Another replica takes it
//! over only once the holder's last renewal is older than that. Every write carries the Lease's
//! `resourceVersion`, so of two replicas that try at once, one gets a conflict and waits. A
//! leader that has not renewed within `renew_deadline`, which is shorter than
//! `lease_duration`, stops leading before any other replica may take over: the process exits
//! and its restart campaigns again. The timings are those of kube-controller-manager's
//! `--leader-elect-*` defaults.
//!
//! NOTE: reconciles already running when the leader stops may finish within the operator's
//! shutdown grace period, so they can overlap a new leader's first reconciles by a few seconds.

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::{
    api::coordination::v1::{Lease, LeaseSpec},
    apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta},
};
use kube::{
    Api, Client,
    api::{PostParams, ResourceExt as _},
};
use tokio::time::Instant;
use tracing::{debug, info, instrument, warn};

/// Location of the Lease and the timing of its renewals.
#[derive(Debug, Clone)]
pub struct LeaseSettings {
    pub namespace: String,
    pub name: String,
    /// Identity written into `holderIdentity`: the pod name plus a random suffix.
    pub identity: String,
    /// Time after the last renewal at which other replicas may take over.
    pub lease_duration: Duration,
    /// Time after the start of the last successful renewal at which the leader stops leading.
    /// It must be shorter than `lease_duration`, so that the leader stops before another
    /// replica can take over.
    pub renew_deadline: Duration,
    /// Interval between renewals and between attempts to acquire.
    pub retry_period: Duration,
}

impl LeaseSettings {
    /// Settings with a 15 s lease, renewed every 2 s, that the leader gives up when it could
    /// not renew it for 10 s.
    pub fn new(namespace: impl Into<String>, name: impl Into<String>, identity: String) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
            identity,
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }
}

/// Returns an identity for this process: `base` (the pod name) and a random suffix, so that a
/// restarted pod with the same name never mistakes its predecessor's lease for its own.
pub fn identity(base: &str) -> String {
    let suffix: u32 = rand::random();
    format!("{base}-{suffix:08x}")
}

/// Action of a replica on the Lease as it finds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// No Lease exists: create it.
    Create,
    /// This replica is the holder: renew.
    Renew,
    /// The holder stopped renewing or released it: take it over.
    TakeOver,
    /// Another replica is the holder.
    Wait { holder: String },
}

/// Decides from the current Lease `spec` (or its absence).
pub fn decide(spec: Option<&LeaseSpec>, identity: &str, now: Timestamp) -> Decision {
    let Some(spec) = spec else {
        return Decision::Create;
    };
    let holder = spec.holder_identity.as_deref().unwrap_or_default();
    if holder == identity {
        return Decision::Renew;
    }
    if holder.is_empty() {
        return Decision::TakeOver;
    }

    // The renewal keeps its microseconds: truncating it to whole seconds would let a replica
    // take the Lease up to a second before it expires, while the holder still leads.
    let duration =
        SignedDuration::from_secs(i64::from(spec.lease_duration_seconds.unwrap_or_default()));
    let expires = spec
        .renew_time
        .as_ref()
        .and_then(|time| time.0.checked_add(duration).ok());
    match expires {
        Some(expires) if expires > now => Decision::Wait {
            holder: holder.to_owned(),
        },
        _ => Decision::TakeOver,
    }
}

/// Returns the spec this replica writes for `decision`, or `None` when it waits.
pub fn desired_spec(
    decision: &Decision,
    current: Option<&LeaseSpec>,
    settings: &LeaseSettings,
    now: Timestamp,
) -> Option<LeaseSpec> {
    let now_micro = MicroTime(now);
    let seconds = i32::try_from(settings.lease_duration.as_secs()).unwrap_or(i32::MAX);
    let transitions = current.and_then(|spec| spec.lease_transitions).unwrap_or(0);
    match decision {
        Decision::Wait { .. } => None,
        Decision::Renew => Some(LeaseSpec {
            renew_time: Some(now_micro),
            lease_duration_seconds: Some(seconds),
            ..current.cloned().unwrap_or_default()
        }),
        Decision::Create | Decision::TakeOver => Some(LeaseSpec {
            holder_identity: Some(settings.identity.clone()),
            lease_duration_seconds: Some(seconds),
            acquire_time: Some(now_micro.clone()),
            renew_time: Some(now_micro),
            lease_transitions: Some(match decision {
                Decision::Create => 0,
                _ => transitions + 1,
            }),
            ..LeaseSpec::default()
        }),
    }
}

/// Failure to read or write the Lease.
#[derive(Debug, thiserror::Error)]
#[error("failed to {action} Lease {namespace}/{name}: {source}")]
pub struct LeaseError {
    action: &'static str,
    namespace: String,
    name: String,
    #[source]
    source: kube::Error,
}

/// Makes one attempt to acquire or renew the Lease and returns whether this replica holds it.
///
/// # Errors
///
/// [`LeaseError`] when the API server fails; a write conflict is not an error but a lost race.
#[instrument(skip_all, fields(lease = %settings.name))]
pub async fn try_acquire(client: &Client, settings: &LeaseSettings) -> Result<bool, LeaseError> {
    let api: Api<Lease> = Api::namespaced(client.clone(), &settings.namespace);
    let error = |action| {
        move |source| LeaseError {
            action,
            namespace: settings.namespace.clone(),
            name: settings.name.clone(),
            source,
        }
    };
    let current = api.get_opt(&settings.name).await.map_err(error("read"))?;
    let now = Timestamp::now();
    let spec = current.as_ref().and_then(|lease| lease.spec.as_ref());
    let decision = decide(spec, &settings.identity, now);
    let Some(desired) = desired_spec(&decision, spec, settings, now) else {
        debug!(?decision, "Another replica leads");
        return Ok(false);
    };

    let result = match current {
        None => {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(settings.name.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(desired),
            };
            api.create(&PostParams::default(), &lease).await
        }
        Some(mut lease) => {
            // The object keeps its resourceVersion, so a concurrent write makes this one fail.
            lease.spec = Some(desired);
            api.replace(&lease.name_any(), &PostParams::default(), &lease)
                .await
        }
    };
    match result {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
        Err(source) => Err(error("write")(source)),
    }
}

/// Waits until this replica holds the Lease and returns when the successful attempt started,
/// which is no later than the `renewTime` it wrote. Returns `None` when `shutdown` completes
/// first.
pub async fn acquire(
    client: &Client,
    settings: &LeaseSettings,
    shutdown: impl std::future::Future<Output = ()>,
) -> Option<Instant> {
    tokio::pin!(shutdown);
    info!(lease = %settings.name, identity = %settings.identity, "Waiting for leadership");
    loop {
        let started = Instant::now();
        match try_acquire(client, settings).await {
            Ok(true) => {
                info!(lease = %settings.name, identity = %settings.identity, "Became the leader");
                return Some(started);
            }
            Ok(false) => {}
            Err(error) => warn!(%error, "Acquiring the lease failed; retrying"),
        }
        tokio::select! {
            () = &mut shutdown => return None,
            () = tokio::time::sleep(settings.retry_period) => {}
        }
    }
}

/// Renews the Lease, which this replica acquired in an attempt that started at `acquired`,
/// until `shutdown` completes. Returns `false` when the lease was lost: taken by another
/// replica, or not renewed within `renew_deadline`. The caller [`release`]s it after its
/// controllers have stopped.
///
/// The deadline counts from the start of the last successful attempt, which precedes the
/// `renewTime` that other replicas compare with their clocks. It also bounds an attempt that
/// hangs, for example on an API server that stopped responding.
pub async fn hold(
    client: &Client,
    settings: &LeaseSettings,
    acquired: Instant,
    shutdown: impl std::future::Future<Output = ()>,
) -> bool {
    tokio::pin!(shutdown);
    let mut renewed = acquired;
    loop {
        let deadline = renewed + settings.renew_deadline;
        tokio::select! {
            () = &mut shutdown => return true,
            () = tokio::time::sleep_until(deadline.min(Instant::now() + settings.retry_period)) => {}
        }
        let started = Instant::now();
        match tokio::time::timeout_at(deadline, try_acquire(client, settings)).await {
            Ok(Ok(true)) => renewed = started,
            Ok(Ok(false)) => {
                warn!(lease = %settings.name, "Another replica took the lease");
                return false;
            }
            Ok(Err(error)) => warn!(%error, "Renewing the lease failed; retrying"),
            Err(_) => {}
        }
        if Instant::now() >= renewed + settings.renew_deadline {
            warn!(
                lease = %settings.name,
                renew_deadline = ?settings.renew_deadline,
                "Stopped leading because the lease was not renewed in time"
            );
            return false;
        }
    }
}

/// Gives the Lease up so that another replica takes over at once instead of after
/// `lease_duration`. The attempt ends after `retry_period`, so that an unreachable API server
/// cannot hold up the shutdown.
pub async fn release(client: &Client, settings: &LeaseSettings) {
    if tokio::time::timeout(settings.retry_period, release_now(client, settings))
        .await
        .is_err()
    {
        warn!(lease = %settings.name, "Releasing the lease timed out");
    }
}

async fn release_now(client: &Client, settings: &LeaseSettings) {
    let api: Api<Lease> = Api::namespaced(client.clone(), &settings.namespace);
    let Ok(Some(mut lease)) = api.get_opt(&settings.name).await else {
        return;
    };
    let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
    if spec.holder_identity.as_deref() != Some(settings.identity.as_str()) {
        return;
    }
    spec.holder_identity = None;
    spec.lease_duration_seconds = Some(1);
    match api
        .replace(&settings.name, &PostParams::default(), &lease)
        .await
    {
        Ok(_) => info!(lease = %settings.name, "Released the lease"),
        Err(error) => warn!(%error, lease = %settings.name, "Releasing the lease failed"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(second: i64) -> Timestamp {
        Timestamp::from_second(second).unwrap()
    }

    fn held_by(holder: &str, renewed: i64) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(holder.to_owned()),
            lease_duration_seconds: Some(15),
            renew_time: Some(MicroTime(at(renewed))),
            lease_transitions: Some(3),
            ..LeaseSpec::default()
        }
    }

    #[test]
    fn decision_table() {
        let other = held_by("b", 1000);
        let released = LeaseSpec {
            holder_identity: None,
            ..other.clone()
        };
        for (spec, now, expected) in [
            (None, 1000, Decision::Create),
            (Some(held_by("a", 900)), 1000, Decision::Renew),
            (
                Some(other.clone()),
                1014,
                Decision::Wait {
                    holder: "b".to_owned(),
                },
            ),
            (Some(other.clone()), 1015, Decision::TakeOver),
            (Some(released), 1000, Decision::TakeOver),
            (
                Some(LeaseSpec {
                    renew_time: None,
                    ..other
                }),
                1000,
                Decision::TakeOver,
            ),
        ] {
            assert_eq!(
                decide(spec.as_ref(), "a", at(now)),
                expected,
                "{spec:?} at {now}"
            );
        }
    }

    #[test]
    fn lease_expiry_keeps_subseconds() {
        let renewed = Timestamp::from_millisecond(1_000_900).unwrap();
        let spec = LeaseSpec {
            renew_time: Some(MicroTime(renewed)),
            ..held_by("b", 0)
        };
        let just_before = Timestamp::from_millisecond(1_015_899).unwrap();
        assert!(matches!(
            decide(Some(&spec), "a", just_before),
            Decision::Wait { .. }
        ));
        let expiry = Timestamp::from_millisecond(1_015_900).unwrap();
        assert_eq!(decide(Some(&spec), "a", expiry), Decision::TakeOver);
    }

    #[test]
    fn take_over_counts_a_transition() {
        let settings = LeaseSettings::new("ops", "lease", "a".to_owned());
        let current = held_by("b", 900);
        let spec = desired_spec(&Decision::TakeOver, Some(&current), &settings, at(1000)).unwrap();
        assert_eq!(spec.holder_identity.as_deref(), Some("a"));
        assert_eq!(spec.lease_transitions, Some(4));
        assert_eq!(spec.acquire_time, Some(MicroTime(at(1000))));
        assert_eq!(spec.lease_duration_seconds, Some(15));
    }

    #[test]
    fn renewal_keeps_acquire_time() {
        let settings = LeaseSettings::new("ops", "lease", "a".to_owned());
        let mut current = held_by("a", 900);
        current.acquire_time = Some(MicroTime(at(100)));
        let spec = desired_spec(&Decision::Renew, Some(&current), &settings, at(1000)).unwrap();
        assert_eq!(spec.acquire_time, Some(MicroTime(at(100))));
        assert_eq!(spec.renew_time, Some(MicroTime(at(1000))));
        assert_eq!(spec.lease_transitions, Some(3));
    }

    #[test]
    fn identities_differ_per_process() {
        assert_ne!(identity("pod"), identity("pod"));
        assert!(identity("pod").starts_with("pod-"));
    }
}
