//! The HTTP transfer: one GET per attempt, retried with exponential backoff and jitter.
//!
//! Connection errors (except TLS errors), timeouts, a body cut short, 408, 429 and 5xx other
//! than 501 and 505 are retried. Every other failure ends the download at once.
//!
//! An attempt after a body was cut short resumes at the first missing byte when the response
//! had a strong `ETag`. It sends `Range: bytes={received}-` with that tag in `If-Range`, so a
//! server whose content changed sends the whole content (200) instead of the rest. Without a
//! strong tag, or without the matching 206, the next attempt reads from the first byte into
//! the emptied temporary file.

use std::{error::Error as _, time::Duration};

use reqwest::{
    Client, Response, StatusCode,
    header::{CONTENT_RANGE, ETAG, HeaderMap, HeaderValue, IF_RANGE, RANGE, RETRY_AFTER},
    redirect,
};

use super::{
    body::BodyCheck,
    failure::LoaderError,
    file::{PartFile, Target},
    response::{
        MAX_REASON_BODY, ResumeDecision, StatusDecision, decide, decide_resumed, parse_reason,
        rejection,
    },
    settings::Settings,
};
use crate::oci::{ContentSummary, retry::RetryPolicy};

/// Maximum number of redirects followed, reqwest's default.
const MAX_REDIRECTS: usize = 10;

/// A verified download in the temporary file.
#[derive(Debug)]
pub struct Downloaded {
    pub summary: ContentSummary,
    pub attempts: u32,
}

/// Builds the HTTP client. Proxies come from the usual `HTTPS_PROXY`, `HTTP_PROXY` and
/// `NO_PROXY` variables, as for curl.
pub fn client(settings: &Settings) -> Result<Client, LoaderError> {
    crate::tls::install_crypto_provider();
    // `connection_verbose` stays off: it logs every byte sent at trace level, the request line
    // with its signed query included. Without it, reqwest 0.13, hyper 1 and h2 0.4 log no
    // request URI even with RUST_LOG=trace.
    Client::builder()
        .connect_timeout(settings.connect_timeout)
        .read_timeout(settings.read_timeout)
        .redirect(redirect::Policy::limited(MAX_REDIRECTS))
        .build()
        .map_err(|error| LoaderError::HttpClient {
            reason: describe(error),
        })
}

/// Downloads the JAR into `part`, retrying transient failures, and returns its digest and size
/// once every body check has passed.
pub async fn download(
    client: &Client,
    settings: &Settings,
    target: &Target,
    part: &mut PartFile,
) -> Result<Downloaded, LoaderError> {
    let mut transfer = Transfer::new(settings);
    let mut attempt = 1;
    loop {
        let error = match send_once(client, settings, target, part, &mut transfer).await {
            Ok(summary) => {
                return Ok(Downloaded {
                    summary,
                    attempts: attempt,
                });
            }
            Err(error) => error,
        };
        if !error.is_retryable() || attempt >= settings.retry.max_attempts {
            return Err(error.into_loader_error(settings, attempt));
        }

        let delay = retry_delay(
            &settings.retry,
            attempt,
            error.retry_after(),
            rand::random(),
        );
        tracing::warn!(
            url = %settings.url,
            attempt,
            max_attempts = settings.retry.max_attempts,
            ?delay,
            error = %error,
            "Retrying download"
        );
        tokio::time::sleep(delay).await;
        attempt += 1;
    }
}

/// Failure of one attempt.
#[derive(Debug)]
enum AttemptError {
    /// The request or the body failed in transport.
    Transport { message: String, retryable: bool },
    /// The server returned a status worth retrying.
    Status {
        status: StatusCode,
        retry_after: Option<Duration>,
    },
    /// A failure that another attempt cannot fix.
    Final(LoaderError),
}

impl std::fmt::Display for AttemptError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Transport { message, .. } => f.write_str(message),
            Self::Status { status, .. } => write!(f, "status {status}"),
            Self::Final(error) => write!(f, "{error}"),
        }
    }
}

impl AttemptError {
    fn is_retryable(&self) -> bool {
        match self {
            Self::Transport { retryable, .. } => *retryable,
            Self::Status { .. } => true,
            Self::Final(_) => false,
        }
    }

    fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    fn into_loader_error(self, settings: &Settings, attempts: u32) -> LoaderError {
        let url = settings.url.clone();
        match self {
            Self::Transport { message, .. } => LoaderError::Network {
                url,
                attempts,
                last_error: message,
            },
            Self::Status { status, .. } => LoaderError::ServerError {
                url,
                attempts,
                status,
            },
            Self::Final(error) => error,
        }
    }
}

/// State of the body across attempts. The temporary file always contains exactly the bytes
/// that `check` has accepted, so a later attempt can continue it.
struct Transfer {
    check: BodyCheck,
    /// Strong entity tag of the response whose bytes the temporary file contains.
    etag: Option<HeaderValue>,
}

impl Transfer {
    fn new(settings: &Settings) -> Self {
        Self {
            check: BodyCheck::new(settings.digest, settings.size, settings.max_size),
            etag: None,
        }
    }

    /// Returns the offset and entity tag to resume from: some bytes arrived under a strong
    /// entity tag.
    fn resume_point(&self) -> Option<(u64, HeaderValue)> {
        let received = self.check.received();
        let etag = self.etag.clone()?;
        (received > 0).then_some((received, etag))
    }

    /// Forgets the received bytes and empties the temporary file.
    async fn restart(
        &mut self,
        settings: &Settings,
        part: &mut PartFile,
    ) -> Result<(), AttemptError> {
        *self = Self::new(settings);
        part.truncate().await.map_err(AttemptError::Final)
    }
}

/// Sends one GET, resuming the transfer when it can, and streams an accepted body through the
/// checks into `part`.
async fn send_once(
    client: &Client,
    settings: &Settings,
    target: &Target,
    part: &mut PartFile,
    transfer: &mut Transfer,
) -> Result<ContentSummary, AttemptError> {
    let resume = transfer.resume_point();
    if resume.is_none() && transfer.check.received() > 0 {
        transfer.restart(settings, part).await?;
    }

    let mut request = client.get(settings.url.as_url().clone());
    if let Some((offset, etag)) = &resume {
        request = request
            .header(RANGE, format!("bytes={offset}-"))
            .header(IF_RANGE, etag.clone());
    }
    let mut response = request.send().await.map_err(transport_error)?;

    let declared = match resume {
        None => {
            check_status(decide(response.status()), &mut response, settings).await?;
            response.content_length()
        }
        Some((offset, _)) => {
            continue_transfer(offset, &mut response, settings, part, transfer).await?
        }
    };
    if transfer.check.received() == 0 {
        transfer.etag = strong_etag(response.headers());
    }

    let body_error = |source| {
        AttemptError::Final(LoaderError::Body {
            url: settings.url.clone(),
            path: target.path.clone(),
            source,
        })
    };
    transfer
        .check
        .check_declared(declared)
        .map_err(body_error)?;
    while let Some(chunk) = response.chunk().await.map_err(transport_error)? {
        transfer.check.update(&chunk).map_err(body_error)?;
        part.write(&chunk).await.map_err(AttemptError::Final)?;
    }
    transfer.check.clone().finish().map_err(body_error)
}

/// Handles the response to a resumed request and returns the declared length of the whole
/// content. The transfer restarts from the first byte unless the server sent the rest.
async fn continue_transfer(
    offset: u64,
    response: &mut Response,
    settings: &Settings,
    part: &mut PartFile,
    transfer: &mut Transfer,
) -> Result<Option<u64>, AttemptError> {
    let status = response.status();
    let content_range = response
        .headers()
        .get(CONTENT_RANGE)
        .and_then(|value| value.to_str().ok());
    match decide_resumed(status, offset, content_range) {
        ResumeDecision::Append { total } => {
            tracing::info!(url = %settings.url, offset, "Resuming download");
            Ok(total)
        }
        ResumeDecision::StartOver => {
            transfer.restart(settings, part).await?;
            Ok(response.content_length())
        }
        ResumeDecision::RetryFromStart => {
            transfer.restart(settings, part).await?;
            Err(AttemptError::Transport {
                message: format!(
                    "the server responded to a request for the bytes from {offset} with status \
                     {status} and no matching Content-Range"
                ),
                retryable: true,
            })
        }
        ResumeDecision::Status(decision) => {
            check_status(decision, response, settings).await?;
            Ok(response.content_length())
        }
    }
}

/// Returns an error for a status that is not accepted. Reads the reason code of a rejected
/// response from its body.
async fn check_status(
    decision: StatusDecision,
    response: &mut Response,
    settings: &Settings,
) -> Result<(), AttemptError> {
    let status = response.status();
    match decision {
        StatusDecision::Accept => Ok(()),
        StatusDecision::Retry => Err(AttemptError::Status {
            status,
            retry_after: retry_after(response),
        }),
        StatusDecision::Reject => {
            let reason = read_reason(response).await;
            Err(AttemptError::Final(rejection(
                &settings.url,
                status,
                reason,
            )))
        }
    }
}

/// Returns the `ETag` when it is a strong entity tag, the only kind `If-Range` accepts.
fn strong_etag(headers: &HeaderMap) -> Option<HeaderValue> {
    headers
        .get(ETAG)
        .filter(|etag| etag.as_bytes().starts_with(b"\""))
        .cloned()
}

/// Reads the start of an error body and returns its reason code. A body that fails to arrive
/// has no reason.
async fn read_reason(response: &mut Response) -> Option<String> {
    let mut body = Vec::new();
    while body.len() < MAX_REASON_BODY {
        match response.chunk().await {
            Ok(Some(chunk)) => body.extend_from_slice(&chunk),
            Ok(None) | Err(_) => break,
        }
    }
    body.truncate(MAX_REASON_BODY);
    parse_reason(&body)
}

/// Reads `Retry-After` in its delay-seconds form. The HTTP-date form is ignored.
fn retry_after(response: &Response) -> Option<Duration> {
    let value = response.headers().get(RETRY_AFTER)?.to_str().ok()?;
    value.trim().parse().ok().map(Duration::from_secs)
}

fn transport_error(error: reqwest::Error) -> AttemptError {
    // Redirect loops and TLS errors, such as an untrusted certificate, fail the same way on
    // every attempt.
    let retryable = !error.is_redirect() && crate::oci::retry::is_retryable_transport(&error);
    AttemptError::Transport {
        message: describe(error),
        retryable,
    }
}

/// Formats an error with its sources, without the URL that reqwest would include.
fn describe(error: reqwest::Error) -> String {
    let error = error.without_url();
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// Returns the delay after failed attempt number `attempt` (1-based).
///
/// A server's `Retry-After` is used as sent, capped at the policy's maximum. Otherwise the
/// exponential backoff is shortened by up to half, by `random_fraction` in `[0, 1)`, so that
/// the pods of a rollout that failed together do not retry together.
pub fn retry_delay(
    policy: &RetryPolicy,
    attempt: u32,
    retry_after: Option<Duration>,
    random_fraction: f64,
) -> Duration {
    if let Some(delay) = retry_after {
        return delay.min(policy.max_backoff);
    }
    let fraction = random_fraction.clamp(0.0, 1.0);
    policy.backoff(attempt).mul_f64(1.0 - fraction / 2.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 5,
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(30),
        }
    }

    #[test]
    fn retry_delay_doubles_without_jitter() {
        let delays: Vec<u64> = (1..=7)
            .map(|attempt| retry_delay(&policy(), attempt, None, 0.0).as_secs())
            .collect();
        assert_eq!(delays, [1, 2, 4, 8, 16, 30, 30]);
    }

    #[test]
    fn retry_delay_jitter_removes_up_to_half() {
        let shortest = retry_delay(&policy(), 3, None, 0.999_999);
        let longest = retry_delay(&policy(), 3, None, 0.0);
        assert_eq!(longest, Duration::from_secs(4));
        assert!(shortest > Duration::from_secs(2), "{shortest:?}");
        assert!(shortest < Duration::from_millis(2001), "{shortest:?}");
    }

    #[test]
    fn retry_delay_follows_capped_retry_after() {
        let seconds = |value| Some(Duration::from_secs(value));
        assert_eq!(
            retry_delay(&policy(), 1, seconds(7), 0.5),
            Duration::from_secs(7)
        );
        assert_eq!(
            retry_delay(&policy(), 1, seconds(600), 0.5),
            Duration::from_secs(30)
        );
    }
}
