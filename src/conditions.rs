//! Status conditions in the kstatus convention.
//!
//! `Ready` is always present. `Reconciling` and `Stalled` are "abnormal-true" conditions: they
//! appear only while true, so tools such as `kubectl wait` and Flux's health checks read the
//! state the same way for every resource. A reconciler computes the desired conditions from its
//! outcome with [`summarize`] and merges them into the stored ones with [`merge`], which keeps
//! `lastTransitionTime` unless the status flips, so an unchanged outcome produces an unchanged
//! status and no write.

use k8s_openapi::{
    apimachinery::pkg::apis::meta::v1::{Condition, Time},
    jiff::Timestamp,
};

pub const READY: &str = "Ready";
pub const RECONCILING: &str = "Reconciling";
pub const STALLED: &str = "Stalled";
/// Abnormal-true condition of objects that read content from a source: present only while the
/// last read failed.
pub const FETCH_FAILED: &str = "FetchFailed";

/// Conditions that appear only while true.
const ABNORMAL_TRUE: [&str; 3] = [RECONCILING, STALLED, FETCH_FAILED];

/// A condition as a reconciler wants it, before timestamps and generations are filled in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Desired {
    pub type_: &'static str,
    pub status: bool,
    pub reason: String,
    pub message: String,
}

impl Desired {
    pub fn new(
        type_: &'static str,
        status: bool,
        reason: &str,
        message: impl Into<String>,
    ) -> Self {
        Self {
            type_,
            status,
            reason: reason.to_owned(),
            message: message.into(),
        }
    }
}

/// Overall outcome of one reconcile, which decides `Ready`, `Reconciling` and `Stalled`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Everything is in place.
    Ready { reason: String, message: String },
    /// Work is under way or a transient error will be retried.
    Progressing { reason: String, message: String },
    /// Nothing will change until the spec (or something the spec names) changes.
    Stalled { reason: String, message: String },
    /// The object waits for an action outside the operator, such as an upload. Only `Ready`
    /// is set (to false): the operator has no work in progress and nothing failed, so neither
    /// `Reconciling` nor `Stalled` applies, and kstatus reads the object as in progress.
    Waiting { reason: String, message: String },
}

impl Outcome {
    /// Returns the reason of the `Ready` condition this outcome produces.
    pub fn reason(&self) -> &str {
        match self {
            Outcome::Ready { reason, .. }
            | Outcome::Progressing { reason, .. }
            | Outcome::Stalled { reason, .. }
            | Outcome::Waiting { reason, .. } => reason,
        }
    }

    /// Returns the message of the `Ready` condition this outcome produces.
    pub fn message(&self) -> &str {
        match self {
            Outcome::Ready { message, .. }
            | Outcome::Progressing { message, .. }
            | Outcome::Stalled { message, .. }
            | Outcome::Waiting { message, .. } => message,
        }
    }
}

/// Turns an outcome plus resource-specific conditions into the full desired list.
pub fn summarize(outcome: &Outcome, mut extra: Vec<Desired>) -> Vec<Desired> {
    let mut desired = match outcome {
        Outcome::Ready { reason, message } => vec![Desired::new(READY, true, reason, message)],
        Outcome::Progressing { reason, message } => vec![
            Desired::new(READY, false, reason, message),
            Desired::new(RECONCILING, true, reason, message),
        ],
        Outcome::Stalled { reason, message } => vec![
            Desired::new(READY, false, reason, message),
            Desired::new(STALLED, true, reason, message),
        ],
        Outcome::Waiting { reason, message } => vec![Desired::new(READY, false, reason, message)],
    };
    desired.append(&mut extra);
    desired
}

/// Merges desired conditions into the existing ones.
///
/// `Reconciling`, `Stalled` and `FetchFailed` are dropped unless desired true. A condition keeps
/// its `lastTransitionTime` while its status stays the same; everything else comes from
/// `desired`.
/// Conditions of other types that the reconciler does not manage are kept as they are.
pub fn merge(
    existing: &[Condition],
    desired: &[Desired],
    generation: Option<i64>,
    now: Timestamp,
) -> Vec<Condition> {
    let managed = |type_: &str| {
        type_ == RECONCILING || type_ == STALLED || desired.iter().any(|d| d.type_ == type_)
    };
    let abnormal_true = |type_: &str| ABNORMAL_TRUE.contains(&type_);
    let mut merged: Vec<Condition> = existing
        .iter()
        .filter(|condition| !managed(&condition.type_))
        .cloned()
        .collect();

    for target in desired {
        if abnormal_true(target.type_) && !target.status {
            continue;
        }
        let status = if target.status { "True" } else { "False" };
        let previous = existing
            .iter()
            .find(|condition| condition.type_ == target.type_);
        let last_transition_time = match previous {
            Some(previous) if previous.status == status => previous.last_transition_time.clone(),
            _ => Time(now),
        };
        merged.push(Condition {
            type_: target.type_.to_owned(),
            status: status.to_owned(),
            reason: target.reason.clone(),
            message: target.message.clone(),
            observed_generation: generation,
            last_transition_time,
        });
    }
    merged.sort_by(|a, b| {
        order(&a.type_)
            .cmp(&order(&b.type_))
            .then(a.type_.cmp(&b.type_))
    });
    merged
}

/// Sort key that puts the kstatus conditions first, for readable `kubectl describe` output.
fn order(type_: &str) -> u8 {
    match type_ {
        READY => 0,
        RECONCILING => 1,
        STALLED => 2,
        _ => 3,
    }
}

/// Finds a condition by type.
pub fn find<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|condition| condition.type_ == type_)
}

/// Returns true when the condition of this type is present with status `True`.
pub fn is_true(conditions: &[Condition], type_: &str) -> bool {
    find(conditions, type_).is_some_and(|condition| condition.status == "True")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(seconds).unwrap()
    }

    fn progressing() -> Outcome {
        Outcome::Progressing {
            reason: "Progressing".into(),
            message: "waiting".into(),
        }
    }

    fn ready() -> Outcome {
        Outcome::Ready {
            reason: "Succeeded".into(),
            message: "all good".into(),
        }
    }

    #[test]
    fn summarize_progressing_sets_reconciling() {
        let desired = summarize(&progressing(), vec![]);
        assert_eq!(
            desired,
            vec![
                Desired::new(READY, false, "Progressing", "waiting"),
                Desired::new(RECONCILING, true, "Progressing", "waiting"),
            ]
        );
    }

    #[test]
    fn summarize_waiting_sets_only_ready() {
        let waiting = Outcome::Waiting {
            reason: "AwaitingUpload".into(),
            message: "upload it".into(),
        };
        let first = merge(&[], &summarize(&progressing(), vec![]), Some(1), at(10));
        let second = merge(&first, &summarize(&waiting, vec![]), Some(1), at(20));
        let types: Vec<&str> = second.iter().map(|c| c.type_.as_str()).collect();
        assert_eq!(types, vec![READY]);
        assert_eq!(second[0].status, "False");
        assert_eq!(second[0].reason, "AwaitingUpload");
    }

    #[test]
    fn merge_drops_reconciling_when_ready() {
        let first = merge(&[], &summarize(&progressing(), vec![]), Some(1), at(10));
        let second = merge(&first, &summarize(&ready(), vec![]), Some(1), at(20));
        let types: Vec<&str> = second.iter().map(|c| c.type_.as_str()).collect();
        assert_eq!(types, vec![READY]);
        assert_eq!(second[0].status, "True");
        assert_eq!(second[0].last_transition_time, Time(at(20)));
    }

    #[test]
    fn merge_keeps_transition_time_when_status_unchanged() {
        let first = merge(&[], &summarize(&progressing(), vec![]), Some(1), at(10));
        let outcome = Outcome::Progressing {
            reason: "Other".into(),
            message: "still".into(),
        };
        let second = merge(&first, &summarize(&outcome, vec![]), Some(2), at(20));
        assert_eq!(second[0].last_transition_time, Time(at(10)));
        assert_eq!(second[0].reason, "Other");
        assert_eq!(second[0].observed_generation, Some(2));
    }

    #[test]
    fn merge_is_stable_for_same_outcome() {
        let desired = summarize(
            &ready(),
            vec![Desired::new("ConfigValid", true, "Valid", "ok")],
        );
        let first = merge(&[], &desired, Some(3), at(10));
        let second = merge(&first, &desired, Some(3), at(99));
        assert_eq!(first, second);
    }

    #[test]
    fn merge_keeps_unmanaged_conditions() {
        let foreign = Condition {
            type_: "Custom".into(),
            status: "True".into(),
            reason: "Elsewhere".into(),
            message: String::new(),
            observed_generation: None,
            last_transition_time: Time(at(1)),
        };
        let merged = merge(
            std::slice::from_ref(&foreign),
            &summarize(&ready(), vec![]),
            Some(1),
            at(5),
        );
        assert!(merged.contains(&foreign));
        assert!(is_true(&merged, READY));
    }
}
