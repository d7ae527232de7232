//! An HTTP/1.1 file server on 127.0.0.1 whose files a test adds and removes while it runs.
//!
//! Each file may require an exact `Authorization` header; a request without it gets 401. Paths
//! without a file get 404. One request per connection, which is all a URL source sends.

#![allow(dead_code)] // Not every test crate that includes it uses every part.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{Arc, Mutex},
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};

#[derive(Clone)]
struct File {
    /// Status line such as `200 OK`.
    status: &'static str,
    body: Arc<Vec<u8>>,
    authorization: Option<String>,
}

type Files = Arc<Mutex<HashMap<String, File>>>;

/// The running server; it stops when the test's runtime ends.
pub struct FileServer {
    address: SocketAddr,
    files: Files,
    requests: Arc<Mutex<HashMap<String, usize>>>,
}

impl FileServer {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let files: Files = Arc::default();
        let requests: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
        let (served_files, counts) = (files.clone(), requests.clone());
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serve(stream, served_files.clone(), counts.clone()));
            }
        });
        Self {
            address,
            files,
            requests,
        }
    }

    /// Serves `body` at `path` (starting with `/`) and returns its URL.
    pub fn put(&self, path: &str, body: Vec<u8>) -> String {
        self.insert(path, body, None)
    }

    /// Serves `body` at `path` only to requests with this `Authorization` value.
    pub fn put_protected(&self, path: &str, body: Vec<u8>, authorization: &str) -> String {
        self.insert(path, body, Some(authorization.to_owned()))
    }

    /// Serves requests for `path` with an error status such as `503 Service Unavailable`.
    pub fn fail(&self, path: &str, status: &'static str) -> String {
        let file = File {
            status,
            body: Arc::new(b"failure set by the test".to_vec()),
            authorization: None,
        };
        self.files.lock().unwrap().insert(path.to_owned(), file);
        self.url(path)
    }

    fn insert(&self, path: &str, body: Vec<u8>, authorization: Option<String>) -> String {
        let file = File {
            status: "200 OK",
            body: Arc::new(body),
            authorization,
        };
        self.files.lock().unwrap().insert(path.to_owned(), file);
        self.url(path)
    }

    /// Stops serving `path`, which then returns 404.
    pub fn remove(&self, path: &str) {
        self.files.lock().unwrap().remove(path);
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.address)
    }

    /// Address the server listens on, for a proxy in front of it.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Number of requests for `path` so far.
    pub fn request_count(&self, path: &str) -> usize {
        self.requests
            .lock()
            .unwrap()
            .get(path)
            .copied()
            .unwrap_or(0)
    }
}

async fn serve(mut stream: TcpStream, files: Files, requests: Arc<Mutex<HashMap<String, usize>>>) {
    let Some((path, authorization)) = read_head(&mut stream).await else {
        return;
    };
    *requests.lock().unwrap().entry(path.clone()).or_default() += 1;
    let file = files.lock().unwrap().get(&path).cloned();
    let _ = match file {
        None => respond(&mut stream, "404 Not Found", b"not found").await,
        Some(file) if file.authorization.is_some() && file.authorization != authorization => {
            respond(&mut stream, "401 Unauthorized", b"").await
        }
        Some(file) => respond(&mut stream, file.status, &file.body).await,
    };
}

async fn read_head(stream: &mut TcpStream) -> Option<(String, Option<String>)> {
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
    Some((path, authorization))
}

async fn respond(stream: &mut TcpStream, status: &str, body: &[u8]) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body).await?;
    stream.shutdown().await
}
