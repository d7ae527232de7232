//! `artifact-operator loader` as a process, against a scripted HTTP server on 127.0.0.1.
//!
//! Each test runs the built binary with a cleared environment, so no proxy or `ARTIFACT_*`
//! variable of the developer's shell reaches it. Every run is checked for the URL's signature
//! in its standard error and termination log, where it must never appear.

#[path = "support/fault_server.rs"]
mod fault_server;

use std::{
    os::unix::process::ExitStatusExt,
    path::{Path, PathBuf},
    process::Command,
    sync::Arc,
};

use fault_server::{FaultServer, Reply};
use sha2::{Digest as _, Sha256};
use tempfile::TempDir;

const BINARY: &str = env!("CARGO_BIN_EXE_artifact-operator");

/// Signature in every test URL's query. It must never appear in any output.
const SIGNATURE: &str = "c2lnbmF0dXJlLXNlY3JldA";

/// Size of the test JAR: several chunks, so that the body streams in more than one read.
const JAR_SIZE: usize = 300 * 1024;

/// Builds a test JAR: the ZIP signature followed by deterministic pseudo-random bytes. Each
/// `seed` gives other content.
fn jar(seed: u32) -> Vec<u8> {
    let mut state = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
    let mut bytes = b"PK\x03\x04".to_vec();
    bytes.extend((4..JAR_SIZE).map(|_| {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        state as u8
    }));
    bytes
}

fn digest_of(bytes: &[u8]) -> String {
    format!("sha256:{:x}", Sha256::digest(bytes))
}

/// The result of one loader process.
#[derive(Debug)]
struct Run {
    code: i32,
    stderr: String,
    /// Content of the termination log after the run.
    termination: String,
}

/// A server, an output directory and a termination log for one test.
struct Fixture {
    server: FaultServer,
    dir: TempDir,
    termination_log: PathBuf,
}

impl Fixture {
    async fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        // The loader only writes a termination log that exists, as the kubelet's does.
        let termination_log = dir.path().join("termination-log");
        std::fs::write(&termination_log, b"").unwrap();
        let output = dir.path().join("out");
        std::fs::create_dir(&output).unwrap();
        Self {
            server: FaultServer::start().await,
            dir,
            termination_log,
        }
    }

    fn output_dir(&self) -> PathBuf {
        self.dir.path().join("out")
    }

    fn target(&self) -> PathBuf {
        self.output_dir().join("app.jar")
    }

    /// Scripts `path` and returns its pre-signed URL.
    fn signed_url(&self, path: &str, replies: Vec<Reply>) -> String {
        let url = self.server.script(path, replies);
        format!("{url}?kid=k1&exp=4102444800&sig={SIGNATURE}")
    }

    /// Runs the loader with the URL, digest, output and file name as flags, plus `extra`.
    async fn load(&self, url: &str, digest: &str, extra: &[&str]) -> Run {
        let output = self.output_dir();
        let mut args = vec![
            "--url",
            url,
            "--digest",
            digest,
            "--output",
            output.to_str().unwrap(),
            "--filename",
            "app.jar",
            "--initial-backoff",
            "10ms",
        ];
        args.extend_from_slice(extra);
        self.run(&args, &[]).await
    }

    /// Runs `artifact-operator loader ARGS` with only the variables `env`.
    async fn run(&self, args: &[&str], env: &[(&str, &str)]) -> Run {
        self.run_with_log(args, env, &self.termination_log).await
    }

    /// Runs the loader like [`Self::run`] with another termination log path. A log that does
    /// not exist after the run reads as empty.
    async fn run_with_log(&self, args: &[&str], env: &[(&str, &str)], log: &Path) -> Run {
        let mut command = Command::new(BINARY);
        command
            .arg("loader")
            .args(args)
            .arg("--termination-log")
            .arg(log)
            .env_clear()
            .env("RUST_LOG", "info")
            .envs(env.iter().copied());
        let output = tokio::task::spawn_blocking(move || command.output().unwrap())
            .await
            .unwrap();
        let run = Run {
            code: output
                .status
                .code()
                .unwrap_or_else(|| panic!("loader ended by signal {:?}", output.status.signal())),
            stderr: String::from_utf8(output.stderr).unwrap(),
            termination: std::fs::read_to_string(log).unwrap_or_default(),
        };
        assert!(!run.stderr.contains(SIGNATURE), "{}", run.stderr);
        assert!(!run.termination.contains(SIGNATURE), "{}", run.termination);
        run
    }

    /// Names of the files in the output directory, sorted.
    fn output_files(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(self.output_dir())
            .unwrap()
            .map(|entry| entry.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    }
}

/// Asserts the exit code, and that the termination message is one line that starts with
/// `label` and is also the last line of standard error.
fn assert_outcome(run: &Run, code: i32, label: &str) {
    assert_eq!(run.code, code, "{run:#?}");
    assert!(
        run.termination.starts_with(&format!("{label}: ")),
        "{}",
        run.termination
    );
    assert!(!run.termination.contains('\n'), "{}", run.termination);
    assert_eq!(
        run.stderr.lines().last(),
        Some(run.termination.as_str()),
        "{}",
        run.stderr
    );
}

// === Success ===

#[tokio::test]
async fn download_writes_verified_file() {
    let fixture = Fixture::new().await;
    let content = jar(1);
    let url = fixture.signed_url("/jar", vec![Reply::body(&content)]);
    let digest = digest_of(&content);
    let size = content.len().to_string();

    let run = fixture.load(&url, &digest, &["--size", &size]).await;

    assert_outcome(&run, 0, "downloaded");
    assert!(run.termination.contains(&digest), "{}", run.termination);
    assert!(
        run.termination.contains(fixture.target().to_str().unwrap()),
        "{}",
        run.termination
    );
    assert_eq!(std::fs::read(fixture.target()).unwrap(), content);
    assert_eq!(fixture.output_files(), ["app.jar"]);
    let targets = fixture.server.targets();
    assert_eq!(targets.len(), 1);
    assert!(
        targets[0].ends_with(&format!("sig={SIGNATURE}")),
        "{targets:?}"
    );
    assert!(
        run.stderr.contains(&fixture.server.url("/jar")),
        "{}",
        run.stderr
    );
}

#[tokio::test]
async fn rerun_skips_download_of_present_file() {
    let fixture = Fixture::new().await;
    let content = jar(2);
    let url = fixture.signed_url("/jar", vec![Reply::body(&content)]);
    let digest = digest_of(&content);

    let first = fixture.load(&url, &digest, &[]).await;
    let second = fixture.load(&url, &digest, &[]).await;

    assert_outcome(&first, 0, "downloaded");
    assert_outcome(&second, 0, "present");
    assert_eq!(fixture.server.request_count("/jar"), 1);
    assert_eq!(std::fs::read(fixture.target()).unwrap(), content);
}

#[tokio::test]
async fn download_replaces_file_with_other_digest() {
    let fixture = Fixture::new().await;
    std::fs::write(fixture.target(), jar(3)).unwrap();
    let content = jar(4);
    let url = fixture.signed_url("/jar", vec![Reply::body(&content)]);

    let run = fixture.load(&url, &digest_of(&content), &[]).await;

    assert_outcome(&run, 0, "downloaded");
    assert_eq!(std::fs::read(fixture.target()).unwrap(), content);
    assert_eq!(fixture.server.request_count("/jar"), 1);
}

#[tokio::test]
async fn download_removes_stale_part_files() {
    let fixture = Fixture::new().await;
    let stale = fixture.output_dir().join(".app.jar.k3Xq9Z.part");
    std::fs::write(&stale, b"left by a killed run").unwrap();
    let content = jar(5);
    let url = fixture.signed_url("/jar", vec![Reply::body(&content)]);

    let run = fixture.load(&url, &digest_of(&content), &[]).await;

    assert_outcome(&run, 0, "downloaded");
    assert!(!stale.exists());
    assert_eq!(fixture.output_files(), ["app.jar"]);
}

#[tokio::test]
async fn output_may_name_the_file() {
    let fixture = Fixture::new().await;
    let content = jar(6);
    let url = fixture.signed_url("/jar", vec![Reply::body(&content)]);
    let path = fixture.output_dir().join("named.jar");
    let digest = digest_of(&content);

    let run = fixture
        .run(
            &[
                "--url",
                &url,
                "--digest",
                &digest,
                "--output",
                path.to_str().unwrap(),
            ],
            &[],
        )
        .await;

    assert_outcome(&run, 0, "downloaded");
    assert_eq!(std::fs::read(&path).unwrap(), content);
}

#[tokio::test]
async fn env_prefix_selects_variable_set() {
    let fixture = Fixture::new().await;
    let first = jar(7);
    let second = jar(8);
    let first_url = fixture.signed_url("/first", vec![Reply::body(&first)]);
    let second_url = fixture.signed_url("/second", vec![Reply::body(&second)]);
    let output = fixture.output_dir();
    let first_digest = digest_of(&first);
    let second_digest = digest_of(&second);
    let second_size = second.len().to_string();
    let env = [
        ("ARTIFACT_URL", first_url.as_str()),
        ("ARTIFACT_DIGEST", &first_digest),
        ("ARTIFACT_FILENAME", "first.jar"),
        ("ARTIFACT_OUTPUT", output.to_str().unwrap()),
        ("ARTIFACT_2_URL", &second_url),
        ("ARTIFACT_2_DIGEST", &second_digest),
        ("ARTIFACT_2_SIZE", &second_size),
        ("ARTIFACT_2_FILENAME", "second.jar"),
    ];

    let run = fixture.run(&["--env-prefix", "ARTIFACT_2_"], &env).await;

    assert_outcome(&run, 0, "downloaded");
    assert_eq!(fixture.server.request_count("/second"), 1);
    assert_eq!(fixture.server.request_count("/first"), 0);
    assert_eq!(std::fs::read(output.join("second.jar")).unwrap(), second);
    assert_eq!(fixture.output_files(), ["second.jar"]);
}

#[tokio::test]
async fn default_env_names_are_read() {
    let fixture = Fixture::new().await;
    let content = jar(9);
    let url = fixture.signed_url("/jar", vec![Reply::body(&content)]);
    let output = fixture.output_dir();
    let digest = digest_of(&content);
    let size = content.len().to_string();
    let env = [
        ("ARTIFACT_URL", url.as_str()),
        ("ARTIFACT_DIGEST", &digest),
        ("ARTIFACT_SIZE", &size),
        ("ARTIFACT_FILENAME", "app.jar"),
        ("ARTIFACT_OUTPUT", output.to_str().unwrap()),
    ];

    let run = fixture.run(&[], &env).await;

    assert_outcome(&run, 0, "downloaded");
    assert_eq!(std::fs::read(fixture.target()).unwrap(), content);
}

// === Retries ===

#[tokio::test]
async fn retry_after_two_503_succeeds() {
    let fixture = Fixture::new().await;
    let content = jar(10);
    let url = fixture.signed_url(
        "/jar",
        vec![
            Reply::status(503, "unavailable"),
            Reply::status(503, "unavailable"),
            Reply::body(&content),
        ],
    );

    let run = fixture.load(&url, &digest_of(&content), &[]).await;

    assert_outcome(&run, 0, "downloaded");
    assert!(
        run.termination.contains("3 attempts"),
        "{}",
        run.termination
    );
    assert_eq!(fixture.server.request_count("/jar"), 3);
    assert_eq!(std::fs::read(fixture.target()).unwrap(), content);
    assert_eq!(
        run.stderr.matches("Retrying download").count(),
        2,
        "{}",
        run.stderr
    );
}

#[tokio::test]
async fn retry_follows_429_retry_after() {
    let fixture = Fixture::new().await;
    let content = jar(11);
    let url = fixture.signed_url(
        "/jar",
        vec![
            Reply::status_with_header(429, "Retry-After", "0"),
            Reply::body(&content),
        ],
    );

    let run = fixture.load(&url, &digest_of(&content), &[]).await;

    assert_outcome(&run, 0, "downloaded");
    assert_eq!(fixture.server.request_count("/jar"), 2);
}

#[tokio::test]
async fn server_errors_exhaust_attempts() {
    let fixture = Fixture::new().await;
    let content = jar(12);
    let url = fixture.signed_url("/jar", vec![Reply::status(502, "bad gateway")]);

    let run = fixture
        .load(&url, &digest_of(&content), &["--max-attempts", "3"])
        .await;

    assert_outcome(&run, 31, "server_error");
    assert!(
        run.termination.contains("3 attempts"),
        "{}",
        run.termination
    );
    assert!(run.termination.contains("502"), "{}", run.termination);
    assert_eq!(fixture.server.request_count("/jar"), 3);
    assert!(fixture.output_files().is_empty());
}

#[tokio::test]
async fn body_cut_short_is_retried() {
    let fixture = Fixture::new().await;
    let content = Arc::new(jar(13));
    let url = fixture.signed_url(
        "/jar",
        vec![
            Reply::CutShort {
                body: Arc::clone(&content),
                sent: JAR_SIZE / 2,
                etag: None,
            },
            Reply::Body(Arc::clone(&content)),
        ],
    );

    let run = fixture.load(&url, &digest_of(&content), &[]).await;

    assert_outcome(&run, 0, "downloaded");
    let requests = fixture.server.requests_for("/jar");
    assert_eq!(requests.len(), 2);
    // Without an entity tag the second attempt cannot resume safely.
    assert_eq!(requests[1].range, None);
    assert_eq!(std::fs::read(fixture.target()).unwrap(), *content);
    assert_eq!(fixture.output_files(), ["app.jar"]);
}

#[tokio::test]
async fn cut_body_resumes_with_range() {
    let fixture = Fixture::new().await;
    let content = Arc::new(jar(37));
    let etag = format!("\"{}\"", digest_of(&content));
    let sent = JAR_SIZE / 2;
    let url = fixture.signed_url(
        "/jar",
        vec![
            Reply::CutShort {
                body: Arc::clone(&content),
                sent,
                etag: Some(etag.clone()),
            },
            Reply::Ranged {
                body: Arc::clone(&content),
                etag: etag.clone(),
            },
        ],
    );

    let run = fixture.load(&url, &digest_of(&content), &[]).await;

    assert_outcome(&run, 0, "downloaded");
    let requests = fixture.server.requests_for("/jar");
    assert_eq!(requests.len(), 2);
    assert_eq!(requests[0].range, None);
    assert_eq!(requests[1].range, Some(format!("bytes={sent}-")));
    assert_eq!(requests[1].if_range, Some(etag));
    assert!(run.stderr.contains("Resuming download"), "{}", run.stderr);
    // Each byte crossed the connection once.
    assert_eq!(fixture.server.bytes_sent("/jar"), JAR_SIZE as u64);
    assert_eq!(std::fs::read(fixture.target()).unwrap(), *content);
    assert_eq!(fixture.output_files(), ["app.jar"]);
}

#[tokio::test]
async fn resume_ignored_by_server_starts_over() {
    let fixture = Fixture::new().await;
    let content = Arc::new(jar(38));
    let url = fixture.signed_url(
        "/jar",
        vec![
            Reply::CutShort {
                body: Arc::clone(&content),
                sent: JAR_SIZE / 2,
                etag: Some("\"v1\"".to_owned()),
            },
            Reply::Body(Arc::clone(&content)),
        ],
    );

    let run = fixture.load(&url, &digest_of(&content), &[]).await;

    assert_outcome(&run, 0, "downloaded");
    let requests = fixture.server.requests_for("/jar");
    assert_eq!(requests.len(), 2);
    assert!(requests[1].range.is_some(), "{requests:?}");
    assert_eq!(std::fs::read(fixture.target()).unwrap(), *content);
}

#[tokio::test]
async fn resume_of_changed_content_starts_over() {
    let fixture = Fixture::new().await;
    let old = Arc::new(jar(39));
    let content = Arc::new(jar(40));
    let url = fixture.signed_url(
        "/jar",
        vec![
            Reply::CutShort {
                body: old,
                sent: JAR_SIZE / 2,
                etag: Some("\"old\"".to_owned()),
            },
            Reply::Ranged {
                body: Arc::clone(&content),
                etag: "\"new\"".to_owned(),
            },
        ],
    );

    let run = fixture.load(&url, &digest_of(&content), &[]).await;

    assert_outcome(&run, 0, "downloaded");
    let requests = fixture.server.requests_for("/jar");
    assert_eq!(requests[1].if_range.as_deref(), Some("\"old\""));
    assert_eq!(std::fs::read(fixture.target()).unwrap(), *content);
}

#[tokio::test]
async fn stalled_body_times_out_and_is_retried() {
    let fixture = Fixture::new().await;
    let content = Arc::new(jar(14));
    let url = fixture.signed_url(
        "/jar",
        vec![
            Reply::Stall {
                body: Arc::clone(&content),
                sent: JAR_SIZE / 3,
            },
            Reply::Body(Arc::clone(&content)),
        ],
    );

    let run = fixture
        .load(&url, &digest_of(&content), &["--read-timeout", "1s"])
        .await;

    assert_outcome(&run, 0, "downloaded");
    assert_eq!(fixture.server.request_count("/jar"), 2);
    assert_eq!(std::fs::read(fixture.target()).unwrap(), *content);
}

#[tokio::test]
async fn unreachable_server_reports_network_failure() {
    let fixture = Fixture::new().await;
    // A port that was just free and has no listener now refuses connections.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let url = format!("http://127.0.0.1:{port}/jar?sig={SIGNATURE}");

    let run = fixture
        .load(&url, &digest_of(&jar(15)), &["--max-attempts", "3"])
        .await;

    assert_outcome(&run, 30, "network");
    assert!(
        run.termination.contains("3 attempts"),
        "{}",
        run.termination
    );
    assert!(run.termination.contains(&format!("127.0.0.1:{port}/jar")));
    assert!(fixture.output_files().is_empty());
}

// === Rejections ===

#[tokio::test]
async fn not_found_is_not_retried() {
    let fixture = Fixture::new().await;
    let url = fixture.signed_url("/jar", vec![Reply::status(404, "not_found")]);

    let run = fixture.load(&url, &digest_of(&jar(16)), &[]).await;

    assert_outcome(&run, 22, "not_found");
    assert_eq!(fixture.server.request_count("/jar"), 1);
    assert!(fixture.output_files().is_empty());
}

#[tokio::test]
async fn forbidden_is_not_retried() {
    let fixture = Fixture::new().await;
    let url = fixture.signed_url(
        "/jar",
        vec![Reply::status(403, r#"{"reason":"bad_signature"}"#)],
    );

    let run = fixture.load(&url, &digest_of(&jar(17)), &[]).await;

    assert_outcome(&run, 21, "forbidden");
    assert!(
        run.termination.contains("bad_signature"),
        "{}",
        run.termination
    );
    assert_eq!(fixture.server.request_count("/jar"), 1);
    assert!(fixture.output_files().is_empty());
}

#[tokio::test]
async fn gone_reports_expired() {
    let fixture = Fixture::new().await;
    let url = fixture.signed_url("/jar", vec![Reply::status(410, "gone")]);

    let run = fixture.load(&url, &digest_of(&jar(18)), &[]).await;

    assert_outcome(&run, 20, "expired");
    assert_eq!(fixture.server.request_count("/jar"), 1);
}

#[tokio::test]
async fn forbidden_with_expired_reason_reports_expired() {
    let fixture = Fixture::new().await;
    let url = fixture.signed_url("/jar", vec![Reply::status(403, "expired\n")]);

    let run = fixture.load(&url, &digest_of(&jar(19)), &[]).await;

    assert_outcome(&run, 20, "expired");
    assert_eq!(fixture.server.request_count("/jar"), 1);
}

#[tokio::test]
async fn other_client_error_is_not_retried() {
    let fixture = Fixture::new().await;
    let url = fixture.signed_url("/jar", vec![Reply::status(400, "bad request")]);

    let run = fixture.load(&url, &digest_of(&jar(20)), &[]).await;

    assert_outcome(&run, 23, "http_status");
    assert!(run.termination.contains("400"), "{}", run.termination);
    assert_eq!(fixture.server.request_count("/jar"), 1);
}

// === Content checks ===

#[tokio::test]
async fn digest_mismatch_leaves_no_file() {
    let fixture = Fixture::new().await;
    let expected = jar(21);
    let served = jar(22);
    let url = fixture.signed_url("/jar", vec![Reply::body(&served)]);

    let run = fixture.load(&url, &digest_of(&expected), &[]).await;

    assert_outcome(&run, 10, "digest_mismatch");
    let expected_hex = &digest_of(&expected)["sha256:".len()..];
    let served_hex = &digest_of(&served)["sha256:".len()..];
    assert!(
        run.termination.contains(expected_hex),
        "{}",
        run.termination
    );
    assert!(run.termination.contains(served_hex), "{}", run.termination);
    assert_eq!(fixture.server.request_count("/jar"), 1);
    assert!(
        fixture.output_files().is_empty(),
        "{:?}",
        fixture.output_files()
    );
}

#[tokio::test]
async fn digest_mismatch_keeps_previous_file() {
    let fixture = Fixture::new().await;
    let previous = jar(23);
    std::fs::write(fixture.target(), &previous).unwrap();
    let url = fixture.signed_url("/jar", vec![Reply::body(&jar(24))]);

    let run = fixture.load(&url, &digest_of(&jar(25)), &[]).await;

    assert_outcome(&run, 10, "digest_mismatch");
    assert_eq!(std::fs::read(fixture.target()).unwrap(), previous);
    assert_eq!(fixture.output_files(), ["app.jar"]);
}

#[tokio::test]
async fn html_body_reports_digest_mismatch() {
    let fixture = Fixture::new().await;
    let url = fixture.signed_url("/jar", vec![Reply::body(b"<html>login</html>")]);

    let run = fixture.load(&url, &digest_of(&jar(26)), &[]).await;

    assert_outcome(&run, 10, "digest_mismatch");
    assert!(run.termination.contains("not a JAR"), "{}", run.termination);
    assert!(fixture.output_files().is_empty());
}

#[tokio::test]
async fn body_over_max_size_stops_reading() {
    let fixture = Fixture::new().await;
    let length = 64 * 1024 * 1024;
    let url = fixture.signed_url(
        "/jar",
        vec![Reply::Generated {
            length,
            declared: false,
        }],
    );

    let run = fixture
        .load(&url, &digest_of(&jar(27)), &["--max-size", "1048576"])
        .await;

    assert_outcome(&run, 12, "too_large");
    assert!(run.termination.contains("1048576"), "{}", run.termination);
    assert!(fixture.output_files().is_empty());
    fixture.server.wait_idle().await;
    let sent = fixture.server.bytes_sent("/jar");
    assert!(sent < length, "the server sent all {sent} bytes");
}

#[tokio::test]
async fn declared_length_over_max_size_is_rejected() {
    let fixture = Fixture::new().await;
    let length = 64 * 1024 * 1024;
    let url = fixture.signed_url(
        "/jar",
        vec![Reply::Generated {
            length,
            declared: true,
        }],
    );

    let run = fixture
        .load(&url, &digest_of(&jar(28)), &["--max-size", "1048576"])
        .await;

    assert_outcome(&run, 12, "too_large");
    assert!(
        run.termination.contains("Content-Length"),
        "{}",
        run.termination
    );
    assert_eq!(fixture.server.request_count("/jar"), 1);
    fixture.server.wait_idle().await;
    let sent = fixture.server.bytes_sent("/jar");
    assert!(sent < length, "the server sent all {sent} bytes");
}

#[tokio::test]
async fn expected_size_over_max_size_sends_no_request() {
    let fixture = Fixture::new().await;
    let url = fixture.signed_url("/jar", vec![Reply::body(&jar(29))]);

    let run = fixture
        .load(
            &url,
            &digest_of(&jar(29)),
            &["--size", "2048", "--max-size", "1024"],
        )
        .await;

    assert_outcome(&run, 12, "too_large");
    assert_eq!(fixture.server.request_count("/jar"), 0);
}

#[tokio::test]
async fn declared_length_differing_from_size_is_rejected() {
    let fixture = Fixture::new().await;
    let content = jar(30);
    let url = fixture.signed_url("/jar", vec![Reply::body(&content)]);
    let size = (content.len() + 1).to_string();

    let run = fixture
        .load(&url, &digest_of(&content), &["--size", &size])
        .await;

    assert_outcome(&run, 11, "size_mismatch");
    assert!(run.termination.contains(&size), "{}", run.termination);
    assert_eq!(fixture.server.request_count("/jar"), 1);
    assert!(fixture.output_files().is_empty());
}

#[tokio::test]
async fn unsized_body_shorter_than_size_is_rejected() {
    let fixture = Fixture::new().await;
    let content = Arc::new(jar(31));
    let url = fixture.signed_url("/jar", vec![Reply::Unsized(Arc::clone(&content))]);
    let size = (content.len() + 10).to_string();

    let run = fixture
        .load(&url, &digest_of(&content), &["--size", &size])
        .await;

    assert_outcome(&run, 11, "size_mismatch");
    assert!(
        run.termination
            .contains(&format!("ended after {JAR_SIZE} bytes")),
        "{}",
        run.termination
    );
    assert!(fixture.output_files().is_empty());
}

#[tokio::test]
async fn unsized_body_longer_than_size_is_rejected() {
    let fixture = Fixture::new().await;
    let content = Arc::new(jar(32));
    let url = fixture.signed_url("/jar", vec![Reply::Unsized(Arc::clone(&content))]);
    let size = (content.len() - 10).to_string();

    let run = fixture
        .load(&url, &digest_of(&content), &["--size", &size])
        .await;

    assert_outcome(&run, 11, "size_mismatch");
    assert!(
        run.termination.contains("longer than"),
        "{}",
        run.termination
    );
    assert!(fixture.output_files().is_empty());
}

// === Input and output ===

#[tokio::test]
async fn missing_url_reports_invalid_input() {
    let fixture = Fixture::new().await;
    let digest = digest_of(&jar(33));

    let run = fixture
        .run(
            &[
                "--env-prefix",
                "ARTIFACT_4",
                "--digest",
                &digest,
                "--output",
                "/tmp",
            ],
            &[("ARTIFACT_URL", "http://127.0.0.1:9/unused.jar")],
        )
        .await;

    assert_outcome(&run, 2, "invalid_input");
    assert!(
        run.termination.contains("ARTIFACT_4_URL"),
        "{}",
        run.termination
    );
}

#[tokio::test]
async fn invalid_url_is_not_shown() {
    let fixture = Fixture::new().await;
    let url = format!("ftp://127.0.0.1/app.jar?sig={SIGNATURE}");

    let run = fixture.load(&url, &digest_of(&jar(34)), &[]).await;

    assert_outcome(&run, 2, "invalid_input");
    assert!(
        run.termination.contains("ftp://127.0.0.1/app.jar"),
        "{}",
        run.termination
    );
}

#[tokio::test]
async fn missing_output_directory_reports_local_file() {
    let fixture = Fixture::new().await;
    let content = jar(35);
    let url = fixture.signed_url("/jar", vec![Reply::body(&content)]);
    let missing = fixture.dir.path().join("missing/");
    let digest = digest_of(&content);

    let run = fixture
        .run(
            &[
                "--url",
                &url,
                "--digest",
                &digest,
                "--output",
                missing.to_str().unwrap(),
                "--filename",
                "app.jar",
            ],
            &[],
        )
        .await;

    assert_outcome(&run, 3, "local_file");
    assert!(run.termination.contains("missing"), "{}", run.termination);
    assert_eq!(fixture.server.request_count("/jar"), 0);
}

#[tokio::test]
async fn absent_termination_log_is_not_created() {
    let fixture = Fixture::new().await;
    let content = jar(36);
    let url = fixture.signed_url("/jar", vec![Reply::body(&content)]);
    let digest = digest_of(&content);
    let absent = fixture.dir.path().join("absent-log");
    let output = fixture.output_dir();

    let run = fixture
        .run_with_log(
            &[
                "--url",
                &url,
                "--digest",
                &digest,
                "--output",
                output.to_str().unwrap(),
                "--filename",
                "app.jar",
            ],
            &[],
            &absent,
        )
        .await;

    assert_eq!(run.code, 0, "{run:#?}");
    assert!(!absent.exists());
    assert!(
        run.stderr
            .lines()
            .last()
            .unwrap()
            .starts_with("downloaded: ")
    );
}
