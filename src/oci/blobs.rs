//! Blob endpoints: existence check, streamed upload (monolithic or PATCH then PUT) and verified
//! streamed download.

use std::{
    pin::Pin,
    task::{Context, Poll},
};

use bytes::Bytes;
use futures::{Stream, TryStreamExt as _};
use reqwest::{
    Method, Response, StatusCode,
    header::{self, HeaderMap, HeaderValue},
};
use tokio::io::AsyncRead;
use tracing::{debug, instrument};
use url::Url;

use super::{
    OciError, RegistryClient,
    auth::Access,
    client::{RegistryRequest, RequestBody},
    digest::{ContentSummary, Digest},
    error::RegistryObject,
    streaming::{BodyOutcome, VerifyingStream, reader_body, send_with_body},
};

/// Result of pushing a blob whose digest was known in advance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlobPush {
    /// The registry already had the blob, so the reader was not read.
    AlreadyPresent(ContentSummary),
    /// The reader was uploaded, and its content had the expected digest.
    Uploaded(ContentSummary),
}

impl BlobPush {
    pub fn content(&self) -> ContentSummary {
        match self {
            BlobPush::AlreadyPresent(content) | BlobPush::Uploaded(content) => *content,
        }
    }
}

/// A blob's content as it arrives from the registry, verified against its descriptor.
///
/// The stream yields [`OciError::ContentMismatch`] as its last item, instead of ending, when
/// the bytes do not have the expected digest and size. A consumer must therefore treat the
/// content as valid only once the stream has ended without error.
pub struct BlobStream {
    content: ContentSummary,
    inner: Pin<Box<dyn Stream<Item = Result<Bytes, OciError>> + Send>>,
}

impl BlobStream {
    /// Expected digest and size of the content.
    pub fn content(&self) -> ContentSummary {
        self.content
    }
}

impl Stream for BlobStream {
    type Item = Result<Bytes, OciError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inner.as_mut().poll_next(cx)
    }
}

impl std::fmt::Debug for BlobStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlobStream")
            .field("content", &self.content)
            .finish_non_exhaustive()
    }
}

/// A part of a blob, cut to the requested range. It yields [`OciError::InvalidResponse`] as
/// its last item when the registry sends fewer bytes than the range contains.
pub struct BlobRangeStream {
    inner: Pin<Box<dyn Stream<Item = Result<Bytes, OciError>> + Send>>,
    /// Bytes still to drop from the front, when the registry sent the whole blob.
    skip: u64,
    /// Bytes of the range not yet yielded.
    remaining: u64,
    object: RegistryObject,
}

impl Stream for BlobRangeStream {
    type Item = Result<Bytes, OciError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        while self.remaining > 0 {
            let Some(item) = std::task::ready!(self.inner.as_mut().poll_next(cx)) else {
                let error = OciError::InvalidResponse {
                    object: Box::new(self.object.clone()),
                    method: Method::GET,
                    reason: format!(
                        "the blob ended {} bytes before the end of the requested range",
                        self.remaining
                    ),
                };
                self.remaining = 0;
                return Poll::Ready(Some(Err(error)));
            };
            let mut chunk = match item {
                Ok(chunk) => chunk,
                Err(error) => {
                    self.remaining = 0;
                    return Poll::Ready(Some(Err(error)));
                }
            };
            let dropped = self.skip.min(chunk.len() as u64);
            self.skip -= dropped;
            let _ = chunk.split_to(dropped as usize);
            if chunk.is_empty() {
                continue;
            }
            let kept = self.remaining.min(chunk.len() as u64);
            chunk.truncate(kept as usize);
            self.remaining -= kept;
            return Poll::Ready(Some(Ok(chunk)));
        }
        Poll::Ready(None)
    }
}

const OCTET_STREAM: HeaderValue = HeaderValue::from_static("application/octet-stream");

impl RegistryClient {
    /// Returns the size of a blob, or `None` when the repository does not contain it.
    #[instrument(skip(self), fields(registry = %self.registry(), %digest))]
    pub async fn blob_size(
        &self,
        repository: &str,
        digest: &Digest,
    ) -> Result<Option<u64>, OciError> {
        let object = self.object(repository, &digest.to_string());
        let response = self
            .send(RegistryRequest {
                method: Method::HEAD,
                url: self.v2_url(&format!("{repository}/blobs/{digest}")),
                object: &object,
                access: Access::Pull,
                headers: HeaderMap::new(),
                body: RequestBody::Empty,
            })
            .await?;
        match response.status() {
            status if status.is_success() => {
                content_length_header(&response, &object, Method::HEAD).map(Some)
            }
            StatusCode::NOT_FOUND => Ok(None),
            _ => Err(self
                .error_for_response(response, &object, Method::HEAD, "blob")
                .await),
        }
    }

    /// Uploads content held in memory, unless the repository already contains it.
    #[instrument(skip(self, content), fields(registry = %self.registry(), size = content.len()))]
    pub async fn push_blob_bytes(
        &self,
        repository: &str,
        content: Bytes,
    ) -> Result<ContentSummary, OciError> {
        let summary = ContentSummary {
            digest: Digest::of(&content),
            size: content.len() as u64,
        };
        if self.blob_size(repository, &summary.digest).await?.is_some() {
            return Ok(summary);
        }
        let object = self.object(repository, &summary.digest.to_string());
        let location = self.start_upload(&object).await?;
        let response = self
            .send(RegistryRequest {
                method: Method::PUT,
                url: with_digest(location, &summary.digest),
                object: &object,
                access: Access::Push,
                headers: HeaderMap::from_iter([(header::CONTENT_TYPE, OCTET_STREAM)]),
                body: RequestBody::Bytes(content),
            })
            .await?;
        self.expect_status(
            response,
            StatusCode::CREATED,
            &object,
            Method::PUT,
            "upload",
        )
        .await?;
        Ok(summary)
    }

    /// Streams `reader` as a blob with digest `expected`, in one monolithic `PUT`.
    ///
    /// A `HEAD` comes first: when the repository already contains the blob, the reader is not
    /// read and [`BlobPush::AlreadyPresent`] is returned. The upload is not retried, because the
    /// reader cannot be read twice.
    ///
    /// # Errors
    ///
    /// [`OciError::UploadDigestMismatch`] when the content's digest differs from `expected`. The
    /// registry then rejects the upload, so nothing is stored. [`OciError::ReadInput`] when the
    /// reader fails.
    #[instrument(skip(self, reader), fields(registry = %self.registry(), %expected))]
    pub async fn push_blob_with_digest<R>(
        &self,
        repository: &str,
        reader: R,
        expected: &Digest,
    ) -> Result<BlobPush, OciError>
    where
        R: AsyncRead + Unpin + Send,
    {
        if let Some(size) = self.blob_size(repository, expected).await? {
            debug!(size, "blob already present, upload skipped");
            return Ok(BlobPush::AlreadyPresent(ContentSummary {
                digest: *expected,
                size,
            }));
        }
        let object = self.object(repository, &expected.to_string());
        let location = self.start_upload(&object).await?;
        let (body, pump) = reader_body(reader);
        let request = self.send(RegistryRequest {
            method: Method::PUT,
            url: with_digest(location, expected),
            object: &object,
            access: Access::Push,
            headers: HeaderMap::from_iter([(header::CONTENT_TYPE, OCTET_STREAM)]),
            body: RequestBody::Stream(body),
        });
        let outcome = send_with_body(request, pump).await;
        let (content, _) = self
            .finish_streamed(
                outcome,
                &object,
                Method::PUT,
                StatusCode::CREATED,
                Some(expected),
            )
            .await?;
        Ok(BlobPush::Uploaded(content))
    }

    /// Streams `reader` as a blob whose digest is computed on the way: one chunked `PATCH`
    /// carries the whole content, and a `PUT` with the computed digest closes the upload.
    ///
    /// The `PATCH` is not retried, because the reader cannot be read twice. The closing `PUT`
    /// has no body and is retried.
    ///
    /// # Errors
    ///
    /// [`OciError::ReadInput`] when the reader fails, and the registry errors of each step.
    #[instrument(skip(self, reader), fields(registry = %self.registry()))]
    pub async fn push_blob<R>(
        &self,
        repository: &str,
        reader: R,
    ) -> Result<ContentSummary, OciError>
    where
        R: AsyncRead + Unpin + Send,
    {
        let upload = self.object(repository, "");
        let location = self.start_upload(&upload).await?;
        let (body, pump) = reader_body(reader);
        let request = self.send(RegistryRequest {
            method: Method::PATCH,
            url: location,
            object: &upload,
            access: Access::Push,
            headers: HeaderMap::from_iter([(header::CONTENT_TYPE, OCTET_STREAM)]),
            body: RequestBody::Stream(body),
        });
        let outcome = send_with_body(request, pump).await;
        let (content, response) = self
            .finish_streamed(outcome, &upload, Method::PATCH, StatusCode::ACCEPTED, None)
            .await?;
        let location = self.location(&response, &upload, &Method::PATCH)?;

        let object = self.object(repository, &content.digest.to_string());
        let response = self
            .send(RegistryRequest {
                method: Method::PUT,
                url: with_digest(location, &content.digest),
                object: &object,
                access: Access::Push,
                headers: HeaderMap::new(),
                body: RequestBody::Empty,
            })
            .await?;
        // A retried PUT whose first attempt succeeded finds the upload gone, but the blob is
        // there.
        if response.status() == StatusCode::NOT_FOUND
            && self.blob_size(repository, &content.digest).await? == Some(content.size)
        {
            return Ok(content);
        }
        self.expect_status(
            response,
            StatusCode::CREATED,
            &object,
            Method::PUT,
            "upload",
        )
        .await?;
        Ok(content)
    }

    /// Reads the bytes `start..=end` of a blob whose full content is `content`.
    ///
    /// The registry is asked for the range; a registry that ignores `Range` and sends the whole
    /// blob is handled by skipping and cutting its body. A part of a blob cannot be checked
    /// against the blob's digest, so only its length is checked.
    ///
    /// # Errors
    ///
    /// [`OciError::NotFound`] when the blob is missing, and [`OciError::InvalidResponse`] as the
    /// stream's last item when fewer bytes than requested arrive.
    #[instrument(skip(self), fields(registry = %self.registry(), digest = %content.digest))]
    pub async fn pull_blob_range(
        &self,
        repository: &str,
        content: ContentSummary,
        start: u64,
        end: u64,
    ) -> Result<BlobRangeStream, OciError> {
        assert!(
            start <= end && end < content.size,
            "the caller checks the range"
        );
        let object = self.object(repository, &content.digest.to_string());
        let range = HeaderValue::from_str(&format!("bytes={start}-{end}"))
            .expect("a byte range is a valid header value");
        let response = self
            .send(RegistryRequest {
                method: Method::GET,
                url: self.v2_url(&format!("{repository}/blobs/{}", content.digest)),
                object: &object,
                access: Access::Pull,
                headers: HeaderMap::from_iter([(header::RANGE, range)]),
                body: RequestBody::Empty,
            })
            .await?;
        let skip = match response.status() {
            StatusCode::PARTIAL_CONTENT => 0,
            StatusCode::OK => start,
            _ => {
                return Err(self
                    .error_for_response(response, &object, Method::GET, "blob")
                    .await);
            }
        };
        let length = end - start + 1;
        let transfer_object = object.clone();
        let bytes = response.bytes_stream().map_err(move |source| {
            OciError::transport(transfer_object.clone(), Method::GET, source)
        });
        Ok(BlobRangeStream {
            inner: Box::pin(bytes),
            skip,
            remaining: length,
            object,
        })
    }

    /// Starts streaming a blob, verifying its digest and size on the way.
    ///
    /// # Errors
    ///
    /// [`OciError::NotFound`] when the repository does not contain the blob. Failures during the
    /// transfer, including a content mismatch, arrive as stream items.
    #[instrument(skip(self), fields(registry = %self.registry(), digest = %expected.digest))]
    pub async fn pull_blob(
        &self,
        repository: &str,
        expected: ContentSummary,
    ) -> Result<BlobStream, OciError> {
        let object = self.object(repository, &expected.digest.to_string());
        let response = self
            .send(RegistryRequest {
                method: Method::GET,
                url: self.v2_url(&format!("{repository}/blobs/{}", expected.digest)),
                object: &object,
                access: Access::Pull,
                headers: HeaderMap::new(),
                body: RequestBody::Empty,
            })
            .await?;
        if response.status() != StatusCode::OK {
            return Err(self
                .error_for_response(response, &object, Method::GET, "blob")
                .await);
        }
        let transfer_object = object.clone();
        let bytes = response.bytes_stream().map_err(move |source| {
            OciError::transport(transfer_object.clone(), Method::GET, source)
        });
        let verified =
            VerifyingStream::new(Box::pin(bytes), expected, move |actual: ContentSummary| {
                OciError::ContentMismatch {
                    object: Box::new(object),
                    expected: expected.digest,
                    expected_size: expected.size,
                    actual: actual.digest,
                    actual_size: actual.size,
                }
            });
        Ok(BlobStream {
            content: expected,
            inner: Box::pin(verified),
        })
    }

    /// Opens an upload session and returns its URL.
    async fn start_upload(&self, object: &RegistryObject) -> Result<Url, OciError> {
        let response = self
            .send(RegistryRequest {
                method: Method::POST,
                url: self.v2_url(&format!("{}/blobs/uploads/", object.repository)),
                object,
                access: Access::Push,
                headers: HeaderMap::new(),
                body: RequestBody::Empty,
            })
            .await?;
        let response = self
            .expect_status(
                response,
                StatusCode::ACCEPTED,
                object,
                Method::POST,
                "repository",
            )
            .await?;
        self.location(&response, object, &Method::POST)
    }

    /// Interprets the result of a streamed request and returns the content sent and the
    /// response.
    async fn finish_streamed(
        &self,
        outcome: BodyOutcome<Result<Response, OciError>>,
        object: &RegistryObject,
        method: Method,
        success: StatusCode,
        expected: Option<&Digest>,
    ) -> Result<(ContentSummary, Response), OciError> {
        match outcome {
            BodyOutcome::ReadFailed(source) => Err(OciError::ReadInput {
                object: Box::new(object.clone()),
                source,
            }),
            BodyOutcome::Unfinished { response } => {
                let response = response?;
                if response.status().is_success() {
                    return Err(OciError::InvalidResponse {
                        object: Box::new(object.clone()),
                        method,
                        reason: format!(
                            "status {} before the whole body was sent",
                            response.status()
                        ),
                    });
                }
                Err(self
                    .error_for_response(response, object, method, "upload")
                    .await)
            }
            BodyOutcome::Sent { content, response } => {
                if let Some(expected) = expected
                    && content.digest != *expected
                {
                    return Err(OciError::UploadDigestMismatch {
                        object: Box::new(object.clone()),
                        expected: *expected,
                        actual: content.digest,
                    });
                }
                let response = self
                    .expect_status(response?, success, object, method, "upload")
                    .await?;
                Ok((content, response))
            }
        }
    }

    /// Returns the response if it has the `expected` status, else the error it reports. `kind`
    /// names what a 404 did not find.
    pub(super) async fn expect_status(
        &self,
        response: Response,
        expected: StatusCode,
        object: &RegistryObject,
        method: Method,
        kind: &'static str,
    ) -> Result<Response, OciError> {
        if response.status() == expected {
            Ok(response)
        } else {
            Err(self
                .error_for_response(response, object, method, kind)
                .await)
        }
    }

    fn location(
        &self,
        response: &Response,
        object: &RegistryObject,
        method: &Method,
    ) -> Result<Url, OciError> {
        let location = response
            .headers()
            .get(header::LOCATION)
            .and_then(|value| value.to_str().ok())
            .ok_or_else(|| OciError::InvalidResponse {
                object: Box::new(object.clone()),
                method: method.clone(),
                reason: "missing Location header".to_owned(),
            })?;
        resolve_against(response, location, object, method)
    }
}

fn with_digest(mut url: Url, digest: &Digest) -> Url {
    url.query_pairs_mut()
        .append_pair("digest", &digest.to_string());
    url
}

/// Reads `Content-Length` from the headers, because the body size of a `HEAD` response is 0.
fn content_length_header(
    response: &Response,
    object: &RegistryObject,
    method: Method,
) -> Result<u64, OciError> {
    response
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse().ok())
        .ok_or_else(|| OciError::InvalidResponse {
            object: Box::new(object.clone()),
            method,
            reason: "missing or invalid Content-Length header".to_owned(),
        })
}

/// Resolves a `Location` or `Link` target, which registries often send as a path relative to the
/// request URL.
pub(super) fn resolve_against(
    response: &Response,
    target: &str,
    object: &RegistryObject,
    method: &Method,
) -> Result<Url, OciError> {
    response
        .url()
        .join(target)
        .map_err(|error| OciError::InvalidResponse {
            object: Box::new(object.clone()),
            method: method.clone(),
            reason: format!("invalid URL {target:?}: {error}"),
        })
}
