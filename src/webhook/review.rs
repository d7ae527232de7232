//! The `admission.k8s.io/v1` review, reduced to the fields the pod webhook reads and writes.
//!
//! The webhook needs the pod as raw JSON, because its patch only adds to what the API server
//! sent. kube-core's typed review buffers its `DynamicObject` through serde's untyped content,
//! because the type flattens its fields. The pod then has to be serialised back into a value,
//! and kube-core writes the returned patch as an array of byte values instead of base64.
//! Parsing the object straight into a [`Value`] and writing the patch as base64 halves the
//! handler's cost (BENCHMARKS.md, "Fixed: admission overhead").

use base64::{Engine, engine::general_purpose::STANDARD};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// API version of the reviews the webhook accepts and returns.
pub const API_VERSION: &str = "admission.k8s.io/v1";
const KIND: &str = "AdmissionReview";

/// A review as the API server posts it.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Review {
    pub api_version: String,
    pub kind: String,
    pub request: Option<Request>,
}

/// The request part of a review.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Request {
    pub uid: String,
    pub kind: RequestKind,
    pub operation: String,
    pub namespace: Option<String>,
    /// The object as the API server will store it, absent on DELETE.
    pub object: Option<Value>,
}

/// Group, version and kind of the reviewed object.
#[derive(Debug, Deserialize)]
pub struct RequestKind {
    #[serde(default)]
    pub group: String,
    pub version: String,
    pub kind: String,
}

impl Review {
    /// Returns the request, or the reason why the webhook cannot process the review.
    ///
    /// # Errors
    ///
    /// A message naming the unexpected `apiVersion` or `kind`, or the missing request.
    pub fn into_request(self) -> Result<Request, String> {
        if self.api_version != API_VERSION || self.kind != KIND {
            return Err(format!(
                "the review has apiVersion {:?} and kind {:?}; this webhook accepts only {KIND} \
                 of {API_VERSION}, so set admissionReviewVersions to [\"v1\"]",
                self.api_version, self.kind
            ));
        }
        self.request
            .ok_or_else(|| "the review has no request to answer".to_owned())
    }
}

impl Request {
    /// Returns whether this is the creation of a core/v1 pod, the only request the webhook
    /// mutates.
    pub fn is_pod_creation(&self) -> bool {
        self.operation == "CREATE"
            && self.kind.group.is_empty()
            && self.kind.version == "v1"
            && self.kind.kind == "Pod"
    }
}

/// The response to one review.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Response {
    pub uid: String,
    pub allowed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub patch_type: Option<&'static str>,
    /// The JSON patch, base64-encoded as the API's `[]byte` field requires.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub patch: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<Status>,
}

/// Reason for a rejection, as the API server shows it to the client.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Status {
    pub code: u16,
    pub reason: &'static str,
    pub message: String,
}

impl Response {
    /// Allows the request unchanged.
    pub fn allow(uid: &str) -> Self {
        Self {
            uid: uid.to_owned(),
            allowed: true,
            patch_type: None,
            patch: None,
            status: None,
        }
    }

    /// Allows the request with `patch`, the serialised JSON patch.
    pub fn patch(uid: &str, patch: &[u8]) -> Self {
        Self {
            patch_type: Some("JSONPatch"),
            patch: Some(STANDARD.encode(patch)),
            ..Self::allow(uid)
        }
    }

    /// Refuses the request with HTTP `code` and `message`.
    pub fn deny(uid: &str, code: u16, message: impl Into<String>) -> Self {
        let reason = match code {
            400 => "BadRequest",
            _ => "Forbidden",
        };
        Self {
            allowed: false,
            status: Some(Status {
                code,
                reason,
                message: message.into(),
            }),
            ..Self::allow(uid)
        }
    }

    /// Wraps the response into the review that carries it back.
    pub fn into_review(self) -> Value {
        serde_json::json!({ "apiVersion": API_VERSION, "kind": KIND, "response": self })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn review(api_version: &str, operation: &str, kind: &str) -> Review {
        serde_json::from_value(json!({
            "apiVersion": api_version,
            "kind": "AdmissionReview",
            "request": {
                "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
                "kind": {"group": "", "version": "v1", "kind": kind},
                "resource": {"group": "", "version": "v1", "resource": "pods"},
                "operation": operation,
                "namespace": "team-a",
                "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller"},
                "object": {"metadata": {"generateName": "app-"}, "spec": {"containers": []}},
                "dryRun": false
            }
        }))
        .unwrap()
    }

    #[test]
    fn reads_a_pod_creation() {
        let request = review(API_VERSION, "CREATE", "Pod").into_request().unwrap();
        assert!(request.is_pod_creation());
        assert_eq!(request.namespace.as_deref(), Some("team-a"));
        assert_eq!(request.object.unwrap()["metadata"]["generateName"], "app-");
    }

    #[test]
    fn other_operations_and_kinds_are_not_pod_creations() {
        for (operation, kind) in [("UPDATE", "Pod"), ("CREATE", "Binding"), ("DELETE", "Pod")] {
            let request = review(API_VERSION, operation, kind).into_request().unwrap();
            assert!(!request.is_pod_creation(), "{operation} {kind}");
        }
    }

    #[test]
    fn refuses_an_older_review_version_and_names_it() {
        let error = review("admission.k8s.io/v1beta1", "CREATE", "Pod")
            .into_request()
            .unwrap_err();
        assert!(error.contains("admission.k8s.io/v1beta1"), "{error}");
        assert!(error.contains("admissionReviewVersions"), "{error}");
    }

    #[test]
    fn patch_is_base64_with_its_type() {
        let review = Response::patch("uid-1", br#"[{"op":"add"}]"#).into_review();
        assert_eq!(review["apiVersion"], API_VERSION);
        assert_eq!(review["response"]["uid"], "uid-1");
        assert_eq!(review["response"]["allowed"], true);
        assert_eq!(review["response"]["patchType"], "JSONPatch");
        let patch = STANDARD
            .decode(review["response"]["patch"].as_str().unwrap())
            .unwrap();
        assert_eq!(patch, br#"[{"op":"add"}]"#);
    }

    #[test]
    fn denial_carries_code_reason_and_message() {
        let review =
            Response::deny("uid-2", 403, "AppArtifact team-a/x was not found").into_review();
        assert_eq!(review["response"]["allowed"], false);
        assert_eq!(
            review["response"]["status"],
            json!({"code": 403, "reason": "Forbidden", "message": "AppArtifact team-a/x was not found"})
        );
        assert!(review["response"].get("patch").is_none());
    }

    #[test]
    fn plain_allow_has_no_patch_or_status() {
        let review = Response::allow("uid-3").into_review();
        assert_eq!(review["response"], json!({"uid": "uid-3", "allowed": true}));
    }
}
