//! URL source tests against an HTTP/1.1 server on 127.0.0.1 that the test starts.
//!
//! The server serves the Apache Camel JAR that `tests/env/fetch-jars.sh` downloads, so run that
//! script once before these tests. No test needs an API server or the test environment file.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
};

mod support;

use artifact_operator::{
    artifact::{
        address_policy::{AddressPolicy, Denial},
        checks::ContentChecks,
        error::{ContentError, SourceError},
        source::{Credentials, FetchOptions, FetchedContent, UrlFetcher, UrlRequest},
    },
    oci::Digest,
};
use futures::StreamExt;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};

const BASIC_USER: &str = "reader";
const BASIC_PASSWORD: &str = "s3cret pass";
const BEARER_TOKEN: &str = "Bearer test-token-123";

fn camel_jar() -> Arc<Vec<u8>> {
    Arc::new(support::camel_jar())
}

/// A minimal HTTP/1.1 server: one request per connection, routes fixed by path.
struct TestServer {
    address: SocketAddr,
    requests: Arc<AtomicUsize>,
}

impl TestServer {
    async fn start(jar: Arc<Vec<u8>>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let requests = Arc::new(AtomicUsize::new(0));
        let counter = requests.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                counter.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(serve(stream, jar.clone(), address.port()));
            }
        });
        Self { address, requests }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.address)
    }

    fn request_count(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

struct RequestHead {
    path: String,
    authorization: Option<String>,
}

async fn read_head(stream: &mut TcpStream) -> Option<RequestHead> {
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
    let path = lines.next()?.split(' ').nth(1)?.to_owned();
    let authorization = lines.find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.eq_ignore_ascii_case("authorization")
            .then(|| value.trim().to_owned())
    });
    Some(RequestHead {
        path,
        authorization,
    })
}

async fn serve(mut stream: TcpStream, jar: Arc<Vec<u8>>, port: u16) {
    let Some(head) = read_head(&mut stream).await else {
        return;
    };
    let expected_basic = format!(
        "Basic {}",
        base64_encode(format!("{BASIC_USER}:{BASIC_PASSWORD}").as_bytes())
    );

    let path = head.path.as_str();
    let _ = match path {
        "/camel.jar" => respond(&mut stream, "200 OK", &[], &jar).await,
        "/missing" => respond(&mut stream, "404 Not Found", &[], b"not found").await,
        "/unavailable" => respond(&mut stream, "503 Service Unavailable", &[], b"try later").await,
        "/page.html" => respond(&mut stream, "200 OK", &[], b"<html>a login page</html>").await,
        "/endless" => send_endless(&mut stream).await,
        "/redirect" => redirect(&mut stream, "/camel.jar").await,
        "/redirect-denied" => {
            redirect(&mut stream, &format!("http://127.0.0.2:{port}/camel.jar")).await
        }
        "/basic" if head.authorization.as_deref() == Some(expected_basic.as_str()) => {
            respond(&mut stream, "200 OK", &[], &jar).await
        }
        "/bearer" if head.authorization.as_deref() == Some(BEARER_TOKEN) => {
            respond(&mut stream, "200 OK", &[], &jar).await
        }
        "/basic" | "/bearer" => respond(&mut stream, "401 Unauthorized", &[], b"").await,
        _ if path.starts_with("/loop/") => {
            let hop: u32 = path["/loop/".len()..].parse().unwrap_or(0);
            redirect(&mut stream, &format!("/loop/{}", hop + 1)).await
        }
        // Redirects to the rest of the path on another port of 127.0.0.1, another origin.
        _ if path.starts_with("/port/") => {
            let (other_port, rest) = path["/port/".len()..].split_once('/').unwrap_or(("0", ""));
            redirect(
                &mut stream,
                &format!("http://127.0.0.1:{other_port}/{rest}"),
            )
            .await
        }
        _ => respond(&mut stream, "404 Not Found", &[], b"").await,
    };
}

async fn respond(
    stream: &mut TcpStream,
    status: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<()> {
    let mut head = format!(
        "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body).await?;
    stream.shutdown().await
}

async fn redirect(stream: &mut TcpStream, location: &str) -> std::io::Result<()> {
    respond(stream, "302 Found", &[("Location", location)], b"").await
}

/// Sends a ZIP-looking body without a length until the client hangs up.
async fn send_endless(stream: &mut TcpStream) -> std::io::Result<()> {
    stream
        .write_all(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nPK\x03\x04")
        .await?;
    let filler = vec![0u8; 64 * 1024];
    loop {
        stream.write_all(&filler).await?;
    }
}

fn base64_encode(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Builds the policy of every test, which exempts the test server's address and keeps the second
/// loopback address 127.0.0.2 denied.
fn test_policy() -> AddressPolicy {
    AddressPolicy::default()
        .exempt_range("127.0.0.1/32".parse().unwrap())
        .deny_range("127.0.0.2/32".parse().unwrap())
}

fn fetcher() -> UrlFetcher {
    UrlFetcher::new(test_policy(), FetchOptions::default())
}

fn request(url: String) -> UrlRequest {
    UrlRequest {
        url,
        credentials: None,
        ca_bundle: None,
        checks: ContentChecks::default(),
    }
}

/// Reads the content to its end, and returns the bytes or the first error.
async fn read_all(content: FetchedContent) -> Result<Vec<u8>, SourceError> {
    let mut stream = content.stream;
    let mut bytes = Vec::new();
    while let Some(chunk) = stream.next().await {
        bytes.extend_from_slice(&chunk?);
    }
    Ok(bytes)
}

async fn fetch_all(fetcher: &UrlFetcher, request: &UrlRequest) -> Result<Vec<u8>, SourceError> {
    read_all(fetcher.fetch(request).await?).await
}

fn content_error(error: SourceError) -> ContentError {
    match error {
        SourceError::Content { source, .. } => source,
        other => panic!("expected a content error, got {other:?}"),
    }
}

#[tokio::test]
async fn fetched_jar_matches_file() {
    let jar = camel_jar();
    let server = TestServer::start(jar.clone()).await;
    let mut request = request(server.url("/camel.jar"));
    request.checks.sha256 = Some(Digest::of(&jar));

    let content = fetcher().fetch(&request).await.unwrap();
    assert_eq!(content.content_length, Some(jar.len() as u64));
    let bytes = read_all(content).await.unwrap();

    assert_eq!(Digest::of(&bytes), Digest::of(&jar));
}

#[tokio::test]
async fn sha256_pin_mismatch_reports_both() {
    let jar = camel_jar();
    let server = TestServer::start(jar.clone()).await;
    let pin = Digest::of(b"another JAR");
    let mut request = request(server.url("/camel.jar"));
    request.checks.sha256 = Some(pin);

    let error = fetch_all(&fetcher(), &request).await.unwrap_err();

    let message = error.to_string();
    assert!(message.contains(&pin.hex()), "{message}");
    assert!(message.contains(&Digest::of(&jar).hex()), "{message}");
    assert!(!error.is_transient());
    assert_eq!(
        content_error(error),
        ContentError::DigestMismatch {
            expected: pin,
            actual: Digest::of(&jar)
        }
    );
}

#[tokio::test]
async fn not_found_is_permanent() {
    let server = TestServer::start(camel_jar()).await;
    let error = fetcher()
        .fetch(&request(server.url("/missing")))
        .await
        .unwrap_err();
    assert!(matches!(&error, SourceError::Status { status, .. } if status.as_u16() == 404));
    assert!(!error.is_transient());
    assert_eq!(error.metric_label(), "http_4xx");
}

#[tokio::test]
async fn unavailable_is_transient() {
    let server = TestServer::start(camel_jar()).await;
    let error = fetcher()
        .fetch(&request(server.url("/unavailable")))
        .await
        .unwrap_err();
    assert!(matches!(&error, SourceError::Status { status, .. } if status.as_u16() == 503));
    assert!(error.is_transient());
    assert_eq!(error.metric_label(), "http_5xx");
}

#[tokio::test]
async fn html_page_rejected_as_not_jar() {
    let server = TestServer::start(camel_jar()).await;
    let error = fetch_all(&fetcher(), &request(server.url("/page.html")))
        .await
        .unwrap_err();
    assert_eq!(
        content_error(error),
        ContentError::NotZip {
            actual: b"<htm".to_vec()
        }
    );
}

#[tokio::test]
async fn declared_length_over_limit_rejected() {
    let jar = camel_jar();
    let server = TestServer::start(jar.clone()).await;
    let mut request = request(server.url("/camel.jar"));
    request.checks.max_size = 1024;

    let error = fetcher().fetch(&request).await.unwrap_err();

    assert!(!error.is_transient());
    assert_eq!(
        content_error(error),
        ContentError::DeclaredTooLarge {
            max_size: 1024,
            declared: jar.len() as u64
        }
    );
}

#[tokio::test]
async fn endless_body_cut_at_limit() {
    let server = TestServer::start(camel_jar()).await;
    let mut request = request(server.url("/endless"));
    request.checks.max_size = 1024 * 1024;

    let content = fetcher().fetch(&request).await.unwrap();
    assert_eq!(content.content_length, None);
    let mut stream = content.stream;
    let mut received = 0usize;
    let error = loop {
        match stream.next().await.expect("stream ended without an error") {
            Ok(chunk) => received += chunk.len(),
            Err(error) => break error,
        }
    };

    assert!(received <= 1024 * 1024, "passed {received} bytes");
    assert_eq!(
        content_error(error),
        ContentError::TooLarge {
            max_size: 1024 * 1024
        }
    );
    assert!(stream.next().await.is_none());
}

#[tokio::test]
async fn redirect_followed() {
    let jar = camel_jar();
    let server = TestServer::start(jar.clone()).await;
    let content = fetcher()
        .fetch(&request(server.url("/redirect")))
        .await
        .unwrap();
    assert_eq!(content.url, server.url("/camel.jar"));
    assert_eq!(
        Digest::of(&read_all(content).await.unwrap()),
        Digest::of(&jar)
    );
}

#[tokio::test]
async fn redirect_to_denied_address_rejected() {
    let server = TestServer::start(camel_jar()).await;
    let error = fetcher()
        .fetch(&request(server.url("/redirect-denied")))
        .await
        .unwrap_err();

    let SourceError::DeniedAddress { url, host, denial } = &error else {
        panic!("expected a denied address, got {error:?}");
    };
    assert_eq!(
        url,
        &format!("http://127.0.0.2:{}/camel.jar", server.address.port())
    );
    assert_eq!(host, "127.0.0.2");
    assert_eq!(
        denial,
        &Denial::DeniedRange {
            address: "127.0.0.2".parse().unwrap(),
            range: "127.0.0.0/8".parse().unwrap()
        }
    );
    let message = error.to_string();
    assert!(message.contains("127.0.0.0/8"), "{message}");
    assert!(!error.is_transient());
    assert_eq!(server.request_count(), 1);
}

#[tokio::test]
async fn denied_address_never_contacted() {
    let server = TestServer::start(camel_jar()).await;
    let strict = UrlFetcher::new(AddressPolicy::default(), FetchOptions::default());

    let error = strict
        .fetch(&request(server.url("/camel.jar")))
        .await
        .unwrap_err();

    assert_eq!(error.metric_label(), "denied_address");
    assert_eq!(server.request_count(), 0);
}

#[tokio::test]
async fn too_many_redirects_rejected() {
    let server = TestServer::start(camel_jar()).await;
    let error = fetcher()
        .fetch(&request(server.url("/loop/0")))
        .await
        .unwrap_err();

    assert!(
        matches!(&error, SourceError::TooManyRedirects { max: 5, .. }),
        "{error:?}"
    );
    assert!(!error.is_transient());
    // The first request and five redirects, the last of which redirects again.
    assert_eq!(server.request_count(), 6);
}

#[tokio::test]
async fn basic_credentials_sent() {
    let jar = camel_jar();
    let server = TestServer::start(jar.clone()).await;
    let mut request = request(server.url("/basic"));
    request.credentials = Some(Credentials::Basic {
        username: BASIC_USER.to_owned(),
        password: BASIC_PASSWORD.to_owned(),
    });

    let bytes = fetch_all(&fetcher(), &request).await.unwrap();

    assert_eq!(Digest::of(&bytes), Digest::of(&jar));
}

#[tokio::test]
async fn authorization_header_sent() {
    let jar = camel_jar();
    let server = TestServer::start(jar.clone()).await;
    let mut request = request(server.url("/bearer"));
    request.credentials = Some(Credentials::Authorization(BEARER_TOKEN.to_owned()));

    let bytes = fetch_all(&fetcher(), &request).await.unwrap();

    assert_eq!(Digest::of(&bytes), Digest::of(&jar));
}

#[tokio::test]
async fn missing_credentials_rejected() {
    let server = TestServer::start(camel_jar()).await;
    let error = fetcher()
        .fetch(&request(server.url("/bearer")))
        .await
        .unwrap_err();
    assert!(matches!(&error, SourceError::Status { status, .. } if status.as_u16() == 401));
    assert!(!error.is_transient());
}

#[tokio::test]
async fn connection_refused_is_transient() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    drop(listener);

    let error = fetcher()
        .fetch(&request(format!("http://{address}/camel.jar")))
        .await
        .unwrap_err();

    assert!(matches!(&error, SourceError::Request { .. }), "{error:?}");
    assert!(error.is_transient());
}

#[tokio::test]
async fn credentials_withheld_from_other_origin() {
    let first = TestServer::start(camel_jar()).await;
    let second = TestServer::start(camel_jar()).await;
    let path = format!("/port/{}/bearer", second.address.port());
    let mut request = request(first.url(&path));
    request.credentials = Some(Credentials::Authorization(BEARER_TOKEN.to_owned()));

    let error = fetcher().fetch(&request).await.unwrap_err();

    let SourceError::Status { status, url } = &error else {
        panic!("expected a status error, got {error:?}");
    };
    assert_eq!(status.as_u16(), 401);
    assert_eq!(url, &second.url("/bearer"));
    assert_eq!(second.request_count(), 1);
}
