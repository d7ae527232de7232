//! An HTTP/1.1 server on 127.0.0.1 that responds to each path with a script of replies, including
//! the faults a download must survive or report: error statuses, bodies cut short, stalled
//! bodies and bodies larger than any limit.
//!
//! One request per connection (`Connection: close`). The replies of a path are used in order
//! and the last one repeats. A path without a script gets 404. Only [`Reply::Ranged`] honours
//! `Range`; every other reply ignores it, as a server without range support does.

#![allow(dead_code)] // Not every test crate that includes it uses every part.

use std::{
    collections::{HashMap, VecDeque},
    net::SocketAddr,
    sync::{Arc, Mutex},
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::watch,
};

/// Size of the chunks in which generated bodies are written.
const CHUNK: usize = 64 * 1024;

/// One scripted reply.
#[derive(Debug, Clone)]
pub enum Reply {
    /// 200 with the body and its `Content-Length`.
    Body(Arc<Vec<u8>>),
    /// Any status with extra headers and a small body.
    Status {
        status: u16,
        headers: Vec<(String, String)>,
        body: String,
    },
    /// 200 that declares the whole body's length but closes the connection after `sent`
    /// bytes. `etag`, when set, is sent as the `ETag` header, quotes included.
    CutShort {
        body: Arc<Vec<u8>>,
        sent: usize,
        etag: Option<String>,
    },
    /// The body with `ETag: etag`. A request with `Range: bytes=N-` and a matching `If-Range`
    /// gets 206 with the bytes from N, and any other request gets 200 with the whole body.
    Ranged { body: Arc<Vec<u8>>, etag: String },
    /// 200 without `Content-Length`, whose end is the closed connection.
    Unsized(Arc<Vec<u8>>),
    /// 200 with a generated body of `length` bytes that starts with the ZIP signature. The
    /// length is declared in `Content-Length` when `declared` is set.
    Generated { length: u64, declared: bool },
    /// 200 that declares the body's length, sends `sent` bytes and then waits, sending
    /// nothing, until the client closes the connection.
    Stall { body: Arc<Vec<u8>>, sent: usize },
}

impl Reply {
    pub fn body(body: &[u8]) -> Self {
        Self::Body(Arc::new(body.to_vec()))
    }

    pub fn status(status: u16, body: &str) -> Self {
        Self::Status {
            status,
            headers: Vec::new(),
            body: body.to_owned(),
        }
    }

    pub fn status_with_header(status: u16, name: &str, value: &str) -> Self {
        Self::Status {
            status,
            headers: vec![(name.to_owned(), value.to_owned())],
            body: String::new(),
        }
    }
}

/// A request as the server received it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedRequest {
    /// Path and query.
    pub target: String,
    pub range: Option<String>,
    pub if_range: Option<String>,
}

impl RecordedRequest {
    pub fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or_default()
    }
}

#[derive(Default)]
struct State {
    scripts: HashMap<String, VecDeque<Reply>>,
    /// Requests in the order they arrived.
    requests: Vec<RecordedRequest>,
    /// Body bytes that the kernel accepted, per path.
    bytes_sent: HashMap<String, u64>,
}

/// The running server. It stops when the test's runtime shuts down.
pub struct FaultServer {
    address: SocketAddr,
    state: Arc<Mutex<State>>,
    active: watch::Receiver<usize>,
}

impl FaultServer {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(State::default()));
        let (active_sender, active) = watch::channel(0usize);
        let active_sender = Arc::new(active_sender);
        let served = Arc::clone(&state);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let connection = Connection::open(Arc::clone(&active_sender));
                tokio::spawn(serve(stream, Arc::clone(&served), connection));
            }
        });
        Self {
            address,
            state,
            active,
        }
    }

    /// Sets the replies of `path` (starting with `/`) and returns its URL.
    pub fn script(&self, path: &str, replies: Vec<Reply>) -> String {
        assert!(!replies.is_empty(), "a script needs at least one reply");
        let mut state = self.state.lock().unwrap();
        state.scripts.insert(path.to_owned(), replies.into());
        drop(state);
        self.url(path)
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.address)
    }

    /// Number of requests for `path`, whatever their query.
    pub fn request_count(&self, path: &str) -> usize {
        self.requests_for(path).len()
    }

    /// Requests for `path` in the order they arrived.
    pub fn requests_for(&self, path: &str) -> Vec<RecordedRequest> {
        let state = self.state.lock().unwrap();
        let requests = state.requests.iter();
        requests
            .filter(|request| request.path() == path)
            .cloned()
            .collect()
    }

    /// Request targets as received, with their queries.
    pub fn targets(&self) -> Vec<String> {
        let state = self.state.lock().unwrap();
        state
            .requests
            .iter()
            .map(|request| request.target.clone())
            .collect()
    }

    /// Body bytes written for `path` so far, over all requests.
    pub fn bytes_sent(&self, path: &str) -> u64 {
        let state = self.state.lock().unwrap();
        state.bytes_sent.get(path).copied().unwrap_or(0)
    }

    /// Waits until every connection accepted so far is finished.
    pub async fn wait_idle(&self) {
        let mut active = self.active.clone();
        active.wait_for(|count| *count == 0).await.unwrap();
    }
}

/// Counts a connection as active until it is dropped.
struct Connection(Arc<watch::Sender<usize>>);

impl Connection {
    fn open(active: Arc<watch::Sender<usize>>) -> Self {
        active.send_modify(|count| *count += 1);
        Self(active)
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.0.send_modify(|count| *count -= 1);
    }
}

async fn serve(mut stream: TcpStream, state: Arc<Mutex<State>>, _connection: Connection) {
    let Some(request) = read_request(&mut stream).await else {
        return;
    };
    let path = request.path().to_owned();
    let reply = {
        let mut state = state.lock().unwrap();
        state.requests.push(request.clone());
        next_reply(&mut state, &path)
    };
    let sent = match reply {
        None => write_reply(&mut stream, 404, &[], b"not found").await,
        Some(reply) => send(&mut stream, reply, &request).await,
    };
    *state.lock().unwrap().bytes_sent.entry(path).or_default() += sent;
    let _ = stream.shutdown().await;
}

fn next_reply(state: &mut State, path: &str) -> Option<Reply> {
    let script = state.scripts.get_mut(path)?;
    if script.len() > 1 {
        script.pop_front()
    } else {
        script.front().cloned()
    }
}

/// Sends one reply to `request` and returns the number of body bytes written.
async fn send(stream: &mut TcpStream, reply: Reply, request: &RecordedRequest) -> u64 {
    match reply {
        Reply::Body(body) => write_reply(stream, 200, &[], &body).await,
        Reply::Status {
            status,
            headers,
            body,
        } => write_reply(stream, status, &headers, body.as_bytes()).await,
        Reply::CutShort { body, sent, etag } => {
            let headers: Vec<_> = etag
                .map(|etag| ("ETag".to_owned(), etag))
                .into_iter()
                .collect();
            if write_head(stream, 200, &headers, Some(body.len() as u64)).await {
                write_body(stream, &body[..sent]).await
            } else {
                0
            }
        }
        Reply::Ranged { body, etag } => {
            let offset = range_offset(request, &etag).filter(|offset| *offset < body.len());
            let mut headers = vec![("ETag".to_owned(), etag)];
            let Some(offset) = offset else {
                return write_reply(stream, 200, &headers, &body).await;
            };
            let range = format!("bytes {offset}-{}/{}", body.len() - 1, body.len());
            headers.push(("Content-Range".to_owned(), range));
            write_reply(stream, 206, &headers, &body[offset..]).await
        }
        Reply::Unsized(body) => {
            if write_head(stream, 200, &[], None).await {
                write_body(stream, &body).await
            } else {
                0
            }
        }
        Reply::Generated { length, declared } => {
            if write_head(stream, 200, &[], declared.then_some(length)).await {
                write_generated(stream, length).await
            } else {
                0
            }
        }
        Reply::Stall { body, sent } => {
            if !write_head(stream, 200, &[], Some(body.len() as u64)).await {
                return 0;
            }
            let written = write_body(stream, &body[..sent]).await;
            wait_for_close(stream).await;
            written
        }
    }
}

async fn write_reply(
    stream: &mut TcpStream,
    status: u16,
    headers: &[(String, String)],
    body: &[u8],
) -> u64 {
    if write_head(stream, status, headers, Some(body.len() as u64)).await {
        write_body(stream, body).await
    } else {
        0
    }
}

/// Writes the status line and headers. Returns whether the write succeeded.
async fn write_head(
    stream: &mut TcpStream,
    status: u16,
    headers: &[(String, String)],
    content_length: Option<u64>,
) -> bool {
    let mut head = format!("HTTP/1.1 {status} Scripted\r\nConnection: close\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    if let Some(length) = content_length {
        head.push_str(&format!("Content-Length: {length}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).await.is_ok()
}

/// Writes `body` in chunks and returns the bytes written before the first error.
async fn write_body(stream: &mut TcpStream, body: &[u8]) -> u64 {
    let mut written = 0;
    for chunk in body.chunks(CHUNK) {
        if stream.write_all(chunk).await.is_err() {
            break;
        }
        written += chunk.len() as u64;
    }
    written
}

/// Writes `length` bytes that start with the ZIP signature, until done or the client closes.
async fn write_generated(stream: &mut TcpStream, length: u64) -> u64 {
    let mut chunk = vec![0u8; CHUNK];
    chunk[..4].copy_from_slice(b"PK\x03\x04");
    let mut written = 0u64;
    while written < length {
        let size = (length - written).min(CHUNK as u64) as usize;
        if stream.write_all(&chunk[..size]).await.is_err() {
            break;
        }
        written += size as u64;
        chunk[..4].fill(0);
    }
    written
}

/// Returns N of a request with `Range: bytes=N-` whose `If-Range` matches `etag`.
fn range_offset(request: &RecordedRequest, etag: &str) -> Option<usize> {
    if request.if_range.as_deref() != Some(etag) {
        return None;
    }
    let range = request.range.as_deref()?.strip_prefix("bytes=")?;
    range.strip_suffix('-')?.parse().ok()
}

/// Reads until the client closes the connection or it fails.
async fn wait_for_close(stream: &mut TcpStream) {
    let mut buffer = [0u8; 1024];
    while matches!(stream.read(&mut buffer).await, Ok(read) if read > 0) {}
}

/// Reads the request head and returns its target and range headers.
async fn read_request(stream: &mut TcpStream) -> Option<RecordedRequest> {
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 1024];
    while !buffer.windows(4).any(|window| window == b"\r\n\r\n") {
        let read = stream.read(&mut chunk).await.ok()?;
        if read == 0 {
            return None;
        }
        buffer.extend_from_slice(&chunk[..read]);
    }
    let head = String::from_utf8(buffer).ok()?;
    let mut lines = head.split("\r\n");
    let target = lines.next()?.split(' ').nth(1)?.to_owned();
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_owned()))
        .collect();
    let header = |name: &str| {
        let found = headers.iter().find(|(key, _)| key == name);
        found.map(|(_, value)| value.clone())
    };
    Some(RecordedRequest {
        target,
        range: header("range"),
        if_range: header("if-range"),
    })
}
