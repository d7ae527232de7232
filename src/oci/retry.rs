//! Retry policy for registry requests: exponential backoff on connection errors, 429 and 5xx.

use std::time::Duration;

use reqwest::{StatusCode, header::HeaderMap};

/// How often and how long the client retries a request that failed transiently.
///
/// Only requests whose body can be sent again are retried: requests without a body or with a
/// body held in memory. A streamed upload consumes its reader, so its failure is returned at once
/// and [`super::OciError::is_transient`] reports whether the caller should start it again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Maximum number of attempts, counting the first. 1 disables retries.
    pub max_attempts: u32,
    /// Delay before the second attempt. Each further delay doubles.
    pub initial_backoff: Duration,
    /// Upper bound of one delay, also applied to a server's `Retry-After`.
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 4,
            initial_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(5),
        }
    }
}

impl RetryPolicy {
    /// Returns a policy that sends each request once.
    pub fn none() -> Self {
        Self {
            max_attempts: 1,
            ..Self::default()
        }
    }

    /// Returns the delay after failed attempt number `attempt` (1-based).
    pub fn backoff(&self, attempt: u32) -> Duration {
        let exponent = attempt.saturating_sub(1).min(16);
        self.initial_backoff
            .saturating_mul(1 << exponent)
            .min(self.max_backoff)
    }

    /// Returns the delay after a retryable response: its `Retry-After` in seconds if present,
    /// else the backoff, both capped at [`Self::max_backoff`].
    pub fn delay_for_response(&self, attempt: u32, headers: &HeaderMap) -> Duration {
        retry_after(headers).map_or_else(
            || self.backoff(attempt),
            |delay| delay.min(self.max_backoff),
        )
    }
}

/// Returns whether a response status is worth retrying: 408, 429 and every 5xx except 501 and 505,
/// which report a permanent lack of support.
pub fn is_retryable_status(status: StatusCode) -> bool {
    match status {
        StatusCode::REQUEST_TIMEOUT | StatusCode::TOO_MANY_REQUESTS => true,
        StatusCode::NOT_IMPLEMENTED | StatusCode::HTTP_VERSION_NOT_SUPPORTED => false,
        status => status.is_server_error(),
    }
}

/// Returns whether a failed send is worth retrying: every transport error except a TLS error
/// (such as an untrusted certificate), which fails the same way on every attempt.
pub fn is_retryable_transport(error: &reqwest::Error) -> bool {
    !is_tls_error(error)
}

fn is_tls_error(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut current = Some(error);
    while let Some(error) = current {
        if error.is::<rustls::Error>() {
            return true;
        }
        // hyper-rustls wraps the rustls::Error in io::Errors, whose `source()` skips the wrapped
        // error itself, so the chain continues through `get_ref()`.
        current = match error.downcast_ref::<std::io::Error>() {
            Some(io_error) => io_error
                .get_ref()
                .map(|inner| inner as &(dyn std::error::Error + 'static)),
            None => error.source(),
        };
    }
    false
}

/// Reads `Retry-After` in its delay-seconds form. The HTTP-date form is ignored.
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?;
    value.trim().parse().ok().map(Duration::from_secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_maximum() {
        let policy = RetryPolicy::default();
        let delays: Vec<_> = (1..=7).map(|attempt| policy.backoff(attempt)).collect();
        let millis: Vec<_> = delays.iter().map(Duration::as_millis).collect();
        assert_eq!(millis, [200, 400, 800, 1600, 3200, 5000, 5000]);
    }

    #[test]
    fn retryable_status_table() {
        let cases = [
            (200, false),
            (400, false),
            (401, false),
            (404, false),
            (408, true),
            (429, true),
            (500, true),
            (501, false),
            (502, true),
            (503, true),
            (505, false),
        ];
        for (code, expected) in cases {
            let status = StatusCode::from_u16(code).unwrap();
            assert_eq!(is_retryable_status(status), expected, "{code}");
        }
    }

    #[test]
    fn tls_error_found_inside_nested_io_errors() {
        use std::io;
        let certificate =
            rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
        let nested = io::Error::other(io::Error::new(io::ErrorKind::InvalidData, certificate));
        assert!(is_tls_error(&nested));
        assert!(!is_tls_error(&io::Error::from(
            io::ErrorKind::ConnectionRefused
        )));
    }

    #[test]
    fn retry_after_seconds_is_capped() {
        let policy = RetryPolicy::default();
        let mut headers = HeaderMap::new();
        headers.insert(reqwest::header::RETRY_AFTER, "2".parse().unwrap());
        assert_eq!(
            policy.delay_for_response(1, &headers),
            Duration::from_secs(2)
        );
        headers.insert(reqwest::header::RETRY_AFTER, "120".parse().unwrap());
        assert_eq!(policy.delay_for_response(1, &headers), policy.max_backoff);
        headers.insert(
            reqwest::header::RETRY_AFTER,
            "Wed, 21 Oct 2015 07:28:00 GMT".parse().unwrap(),
        );
        assert_eq!(policy.delay_for_response(2, &headers), policy.backoff(2));
    }
}
