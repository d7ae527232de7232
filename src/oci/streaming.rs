//! Streams that hash content in the same pass that moves it, so memory stays flat whatever the
//! content size.

use std::{
    io,
    pin::Pin,
    task::{Context, Poll},
};

use bytes::{Bytes, BytesMut};
use futures::{SinkExt as _, Stream, channel::mpsc};
use tokio::io::{AsyncRead, AsyncReadExt as _};

use super::digest::{ContentHasher, ContentSummary};

/// Size of one chunk read from an upload's reader.
pub const CHUNK_SIZE: usize = 256 * 1024;

/// Chunks buffered between the reader and the HTTP body. With [`CHUNK_SIZE`] this bounds the
/// upload buffer at about 1 MiB.
const QUEUED_CHUNKS: usize = 4;

/// Reason an upload body ended before the reader's end.
#[derive(Debug)]
pub enum PumpError {
    /// The reader failed.
    Read(io::Error),
    /// The HTTP request stopped taking the body, typically because the registry already sent a
    /// response. That response explains the failure.
    BodyClosed,
}

/// Creates an HTTP body fed from `reader`, and the future that feeds it.
///
/// The future must run concurrently with the request (see [`send_with_body`]). It hashes every
/// chunk before handing it over and returns the digest and size of everything read. Memory use
/// is bounded by a queue of a few chunks, so the reader may be of any size and need not be
/// `'static`.
pub fn reader_body<R>(
    reader: R,
) -> (
    reqwest::Body,
    impl Future<Output = Result<ContentSummary, PumpError>> + Send,
)
where
    R: AsyncRead + Unpin + Send,
{
    let (sender, receiver) = mpsc::channel::<io::Result<Bytes>>(QUEUED_CHUNKS);
    (reqwest::Body::wrap_stream(receiver), pump(reader, sender))
}

async fn pump<R>(
    mut reader: R,
    mut sender: mpsc::Sender<io::Result<Bytes>>,
) -> Result<ContentSummary, PumpError>
where
    R: AsyncRead + Unpin + Send,
{
    let mut hasher = ContentHasher::new();
    let mut buffer = BytesMut::new();
    loop {
        buffer.reserve(CHUNK_SIZE);
        let read = match reader.read_buf(&mut buffer).await {
            Ok(read) => read,
            Err(error) => {
                // The body gets a copy so the request fails too; the original goes to the caller.
                let _ = sender
                    .send(Err(io::Error::new(error.kind(), error.to_string())))
                    .await;
                return Err(PumpError::Read(error));
            }
        };
        if read == 0 {
            return Ok(hasher.finish());
        }
        let chunk = buffer.split().freeze();
        hasher.update(&chunk);
        if sender.send(Ok(chunk)).await.is_err() {
            return Err(PumpError::BodyClosed);
        }
    }
}

/// Outcome of a request whose body is fed by [`reader_body`].
pub enum BodyOutcome<T> {
    /// The reader was read to its end; `response` is the request's result.
    Sent {
        content: ContentSummary,
        response: T,
    },
    /// The reader failed, so the request was abandoned.
    ReadFailed(io::Error),
    /// The request finished before the reader's end, typically with an error response.
    Unfinished { response: T },
}

/// Runs `request` and the body's `pump` together until the request has a result.
///
/// When the request ends first, the pump is dropped, so a request that never reads its body
/// cannot block the caller on a full queue.
pub async fn send_with_body<T>(
    request: impl Future<Output = T>,
    pump: impl Future<Output = Result<ContentSummary, PumpError>>,
) -> BodyOutcome<T> {
    use futures::future::{Either, select};

    let request = std::pin::pin!(request);
    let pump = std::pin::pin!(pump);
    match select(request, pump).await {
        Either::Left((response, _unfinished_pump)) => BodyOutcome::Unfinished { response },
        Either::Right((Ok(content), request)) => BodyOutcome::Sent {
            content,
            response: request.await,
        },
        Either::Right((Err(PumpError::Read(error)), _request)) => BodyOutcome::ReadFailed(error),
        Either::Right((Err(PumpError::BodyClosed), request)) => BodyOutcome::Unfinished {
            response: request.await,
        },
    }
}

/// A byte stream that checks the digest and size of everything it passes through.
///
/// At the end it yields `Err(on_mismatch(actual))` instead of ending when the content differs
/// from `expected`, and it fails as soon as more than the expected size arrives. In that case
/// `actual` describes only the bytes received so far. After an error it ends.
pub struct VerifyingStream<S, F> {
    inner: S,
    expected: ContentSummary,
    hasher: Option<ContentHasher>,
    on_mismatch: Option<F>,
}

impl<S, F> VerifyingStream<S, F> {
    pub fn new(inner: S, expected: ContentSummary, on_mismatch: F) -> Self {
        Self {
            inner,
            expected,
            hasher: Some(ContentHasher::new()),
            on_mismatch: Some(on_mismatch),
        }
    }

    fn mismatch<E>(&mut self, hasher: ContentHasher) -> Poll<Option<Result<Bytes, E>>>
    where
        F: FnOnce(ContentSummary) -> E,
    {
        self.hasher = None;
        let on_mismatch = self
            .on_mismatch
            .take()
            .expect("a verifying stream reports a mismatch once");
        Poll::Ready(Some(Err(on_mismatch(hasher.finish()))))
    }
}

impl<S, E, F> Stream for VerifyingStream<S, F>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    F: FnOnce(ContentSummary) -> E + Unpin,
{
    type Item = Result<Bytes, E>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        let Some(hasher) = this.hasher.as_mut() else {
            return Poll::Ready(None);
        };
        match Pin::new(&mut this.inner).poll_next(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some(Ok(chunk))) => {
                hasher.update(&chunk);
                if hasher.size() > this.expected.size {
                    let hasher = this.hasher.take().expect("checked above");
                    return this.mismatch(hasher);
                }
                Poll::Ready(Some(Ok(chunk)))
            }
            Poll::Ready(Some(Err(error))) => {
                this.hasher = None;
                Poll::Ready(Some(Err(error)))
            }
            Poll::Ready(None) => {
                let hasher = this.hasher.take().expect("checked above");
                if hasher.clone().finish() == this.expected {
                    Poll::Ready(None)
                } else {
                    this.mismatch(hasher)
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use futures::{StreamExt as _, TryStreamExt as _, stream};

    use super::*;
    use crate::oci::digest::Digest;

    fn summary_of(bytes: &[u8]) -> ContentSummary {
        ContentSummary {
            digest: Digest::of(bytes),
            size: bytes.len() as u64,
        }
    }

    fn chunks(parts: &[&'static [u8]]) -> impl Stream<Item = Result<Bytes, String>> + Unpin {
        stream::iter(
            parts
                .iter()
                .map(|part| Ok(Bytes::from_static(part)))
                .collect::<Vec<_>>(),
        )
    }

    #[tokio::test]
    async fn verifying_stream_passes_matching_content() {
        let stream = VerifyingStream::new(chunks(&[b"ab", b"c"]), summary_of(b"abc"), |_| {
            "mismatch".to_owned()
        });
        let collected: Vec<Bytes> = stream.try_collect().await.unwrap();
        assert_eq!(collected.concat(), b"abc");
    }

    #[tokio::test]
    async fn verifying_stream_fails_at_end_on_digest_mismatch() {
        let mut stream = VerifyingStream::new(
            chunks(&[b"ab", b"d"]),
            summary_of(b"abc"),
            |actual: ContentSummary| format!("got {}", actual.digest),
        );
        assert_eq!(stream.next().await, Some(Ok(Bytes::from_static(b"ab"))));
        assert_eq!(stream.next().await, Some(Ok(Bytes::from_static(b"d"))));
        assert_eq!(
            stream.next().await,
            Some(Err(format!("got {}", Digest::of(b"abd"))))
        );
        assert_eq!(stream.next().await, None);
    }

    #[tokio::test]
    async fn verifying_stream_fails_early_on_extra_bytes() {
        let mut stream = VerifyingStream::new(
            chunks(&[b"abcd", b"e"]),
            summary_of(b"abc"),
            |actual: ContentSummary| format!("size {}", actual.size),
        );
        assert_eq!(stream.next().await, Some(Err("size 4".to_owned())));
        assert_eq!(stream.next().await, None);
    }

    #[tokio::test]
    async fn verifying_stream_fails_on_short_content() {
        let stream =
            VerifyingStream::new(chunks(&[b"ab"]), summary_of(b"abc"), |_| "short".to_owned());
        let result: Result<Vec<Bytes>, String> = stream.try_collect().await;
        assert_eq!(result, Err("short".to_owned()));
    }

    #[tokio::test]
    async fn reader_body_pump_hashes_everything() {
        let content = vec![7u8; CHUNK_SIZE * 3 + 5];
        let (body, pump) = reader_body(content.as_slice());
        let consume = async move {
            use http_body_util::BodyExt as _;
            body.collect().await.unwrap().to_bytes().len()
        };
        let outcome = send_with_body(consume, pump).await;
        let BodyOutcome::Sent {
            content: summary,
            response,
        } = outcome
        else {
            panic!("the whole body must be sent");
        };
        assert_eq!(response, content.len());
        assert_eq!(summary, summary_of(&content));
    }

    #[tokio::test]
    async fn reader_body_stops_when_request_ends_early() {
        let content = vec![0u8; CHUNK_SIZE * 20];
        let (_body, pump) = reader_body(content.as_slice());
        let outcome = send_with_body(async { "early response" }, pump).await;
        assert!(matches!(
            outcome,
            BodyOutcome::Unfinished {
                response: "early response"
            }
        ));
    }
}
