//! Decisions on a response's status: accept, retry, or fail with which error.

use reqwest::StatusCode;

use super::{failure::LoaderError, settings::SignedUrl};
use crate::oci::retry::is_retryable_status;

/// Maximum number of bytes of an error response read to find its reason code.
pub const MAX_REASON_BODY: usize = 1024;

/// Maximum length of a reason code. Longer words are not treated as reason codes.
const MAX_REASON_LENGTH: usize = 64;

/// Action on a response, decided from its status alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusDecision {
    /// 200: read the body.
    Accept,
    /// 408, 429 or a 5xx other than 501 and 505: try again after a delay.
    Retry,
    /// Any other status: fail at once, because the same request fails the same way again.
    Reject,
}

pub fn decide(status: StatusCode) -> StatusDecision {
    if status == StatusCode::OK {
        StatusDecision::Accept
    } else if is_retryable_status(status) {
        StatusDecision::Retry
    } else {
        StatusDecision::Reject
    }
}

/// A `Content-Range: bytes FIRST-LAST/TOTAL` header of a 206 response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContentRange {
    pub first: u64,
    pub last: u64,
    /// Length of the whole content, unless the server sent `*`.
    pub total: Option<u64>,
}

/// Parses a `Content-Range` value in bytes. Returns `None` for any other unit, a malformed
/// value, or a range that ends before it starts or after the total.
pub fn parse_content_range(value: &str) -> Option<ContentRange> {
    let range = value.trim().strip_prefix("bytes ")?;
    let (span, total) = range.split_once('/')?;
    let (first, last) = span.split_once('-')?;
    let first: u64 = first.parse().ok()?;
    let last: u64 = last.parse().ok()?;
    let total = match total {
        "*" => None,
        total => Some(total.parse::<u64>().ok()?),
    };
    let valid = first <= last && total.is_none_or(|total| last < total);
    valid.then_some(ContentRange { first, last, total })
}

/// Action on the response to a resumed request, one sent with `Range: bytes={offset}-`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResumeDecision {
    /// 206 from the offset: append the body. `total` is the whole content's length.
    Append { total: Option<u64> },
    /// 200: the server ignores ranges, or the content changed since the entity tag in
    /// `If-Range`, so the body is the whole content. Read it from the first byte.
    StartOver,
    /// 416, or 206 with a missing or different range: try again without a range.
    RetryFromStart,
    /// Any other status, decided as for a request without a range.
    Status(StatusDecision),
}

pub fn decide_resumed(
    status: StatusCode,
    offset: u64,
    content_range: Option<&str>,
) -> ResumeDecision {
    match status {
        StatusCode::OK => ResumeDecision::StartOver,
        StatusCode::PARTIAL_CONTENT => match content_range.and_then(parse_content_range) {
            Some(range) if range.first == offset => ResumeDecision::Append { total: range.total },
            _ => ResumeDecision::RetryFromStart,
        },
        StatusCode::RANGE_NOT_SATISFIABLE => ResumeDecision::RetryFromStart,
        status => ResumeDecision::Status(decide(status)),
    }
}

/// Builds the error for a rejected status and the reason code of its body, if any.
///
/// 410 Gone, or 403 whose reason is `expired` (or ends in `_expired` or `-expired`), means the
/// pre-signed URL has expired. The gateway also returns 410 with reason `revoked` when the
/// AppArtifact is gone or stores another digest, which is reported as not found.
pub fn rejection(url: &SignedUrl, status: StatusCode, reason: Option<String>) -> LoaderError {
    let url = url.clone();
    match status {
        StatusCode::GONE if reason.as_deref() == Some("revoked") => {
            LoaderError::NotFound { url, reason }
        }
        StatusCode::GONE => LoaderError::Expired {
            url,
            status,
            reason,
        },
        StatusCode::FORBIDDEN if reason.as_deref().is_some_and(is_expired_reason) => {
            LoaderError::Expired {
                url,
                status,
                reason,
            }
        }
        StatusCode::FORBIDDEN => LoaderError::Forbidden { url, reason },
        StatusCode::NOT_FOUND => LoaderError::NotFound { url, reason },
        status => LoaderError::Status {
            url,
            status,
            reason,
        },
    }
}

fn is_expired_reason(reason: &str) -> bool {
    reason
        .split(['_', '-'])
        .next_back()
        .is_some_and(|word| word.eq_ignore_ascii_case("expired"))
}

/// Extracts the reason code from the start of an error body: the string field `reason` of a
/// JSON object, or else the first word of a plain-text body.
///
/// Only a word of ASCII letters, digits, `_`, `-` and `.` of at most 64 characters counts as a
/// reason code, so that an HTML page or a long message never ends up in the termination
/// message.
pub fn parse_reason(body: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(body);
    let text = text.trim_start();
    let candidate = if text.starts_with('{') {
        let value: serde_json::Value = serde_json::from_str(text).ok()?;
        value.get("reason")?.as_str()?.to_owned()
    } else {
        text.split(|c: char| c.is_whitespace() || c == ':' || c == ',')
            .next()?
            .to_owned()
    };
    let valid = !candidate.is_empty()
        && candidate.len() <= MAX_REASON_LENGTH
        && candidate
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    valid.then_some(candidate)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::loader::failure::FailureKind;

    fn url() -> SignedUrl {
        SignedUrl::from_url(
            url::Url::parse("http://gateway.example/v1/artifacts/ns/app/sha256:ab?sig=SECRET")
                .unwrap(),
        )
    }

    fn kind(status: u16, reason: Option<&str>) -> FailureKind {
        let status = StatusCode::from_u16(status).unwrap();
        rejection(&url(), status, reason.map(str::to_owned)).kind()
    }

    #[test]
    fn decide_status_table() {
        let cases = [
            (200, StatusDecision::Accept),
            (206, StatusDecision::Reject),
            (304, StatusDecision::Reject),
            (400, StatusDecision::Reject),
            (403, StatusDecision::Reject),
            (404, StatusDecision::Reject),
            (408, StatusDecision::Retry),
            (410, StatusDecision::Reject),
            (429, StatusDecision::Retry),
            (500, StatusDecision::Retry),
            (501, StatusDecision::Reject),
            (502, StatusDecision::Retry),
            (503, StatusDecision::Retry),
            (504, StatusDecision::Retry),
        ];
        for (code, expected) in cases {
            assert_eq!(
                decide(StatusCode::from_u16(code).unwrap()),
                expected,
                "{code}"
            );
        }
    }

    #[test]
    fn content_range_parsing() {
        let range = |first, last, total| Some(ContentRange { first, last, total });
        assert_eq!(
            parse_content_range("bytes 100-199/200"),
            range(100, 199, Some(200))
        );
        assert_eq!(parse_content_range("bytes 0-0/*"), range(0, 0, None));
        for invalid in [
            "",
            "bytes */200",
            "items 0-9/10",
            "bytes 10-9/20",
            "bytes 0-200/200",
            "bytes a-b/c",
        ] {
            assert_eq!(parse_content_range(invalid), None, "{invalid:?}");
        }
    }

    #[test]
    fn decide_resumed_table() {
        let decide = |status: u16, range: Option<&str>| {
            decide_resumed(StatusCode::from_u16(status).unwrap(), 100, range)
        };
        assert_eq!(
            decide(206, Some("bytes 100-199/200")),
            ResumeDecision::Append { total: Some(200) }
        );
        assert_eq!(
            decide(206, Some("bytes 0-199/200")),
            ResumeDecision::RetryFromStart
        );
        assert_eq!(decide(206, None), ResumeDecision::RetryFromStart);
        assert_eq!(decide(416, None), ResumeDecision::RetryFromStart);
        assert_eq!(decide(200, None), ResumeDecision::StartOver);
        assert_eq!(
            decide(503, None),
            ResumeDecision::Status(StatusDecision::Retry)
        );
        assert_eq!(
            decide(410, None),
            ResumeDecision::Status(StatusDecision::Reject)
        );
    }

    #[test]
    fn rejection_kind_table() {
        assert_eq!(kind(410, None), FailureKind::Expired);
        assert_eq!(kind(410, Some("revoked")), FailureKind::NotFound);
        assert_eq!(kind(403, Some("expired")), FailureKind::Expired);
        assert_eq!(kind(403, Some("URL_EXPIRED")), FailureKind::Expired);
        assert_eq!(kind(403, Some("bad_signature")), FailureKind::Forbidden);
        assert_eq!(kind(403, Some("expired_key_id")), FailureKind::Forbidden);
        assert_eq!(kind(403, None), FailureKind::Forbidden);
        assert_eq!(kind(404, Some("expired")), FailureKind::NotFound);
        assert_eq!(kind(400, None), FailureKind::HttpStatus);
        assert_eq!(kind(501, None), FailureKind::HttpStatus);
    }

    #[test]
    fn rejection_message_hides_query() {
        let error = rejection(&url(), StatusCode::FORBIDDEN, Some("bad_signature".into()));
        let message = error.to_string();
        assert!(!message.contains("SECRET"), "{message}");
        assert!(message.contains("\"bad_signature\""), "{message}");
    }

    #[test]
    fn parse_reason_reads_json_field() {
        let body = br#"{"reason":"expired","message":"the URL expired at 12:00"}"#;
        assert_eq!(parse_reason(body).as_deref(), Some("expired"));
    }

    #[test]
    fn parse_reason_reads_first_word() {
        assert_eq!(parse_reason(b"expired\n").as_deref(), Some("expired"));
        assert_eq!(
            parse_reason(b"  bad_signature: the signature does not match").as_deref(),
            Some("bad_signature")
        );
    }

    #[test]
    fn parse_reason_ignores_other_bodies() {
        assert_eq!(parse_reason(b""), None);
        assert_eq!(parse_reason(b"<html><body>Forbidden</body></html>"), None);
        assert_eq!(parse_reason(br#"{"reason": 3}"#), None);
        assert_eq!(parse_reason(br#"{"reason": "two words"}"#), None);
        assert_eq!(parse_reason("x".repeat(65).as_bytes()), None);
    }
}
