//! A TCP proxy on 127.0.0.1 that holds each response in the middle, so a test can inject a
//! fault while a transfer is provably under way.
//!
//! Each connection to the proxy opens one to the target. Bytes from the client pass at once.
//! Bytes from the target pass until the connection has forwarded `hold_after` of them; then the
//! proxy stops reading from the target until [`GatedProxy::release`], so the sender sees back
//! pressure and the transfer pauses without failing. A target that closes or fails makes the
//! proxy close the client's side too, so a cut transfer stays cut.

#![allow(dead_code)] // Not every test crate uses every part.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{
        TcpListener, TcpStream,
        tcp::{OwnedReadHalf, OwnedWriteHalf},
    },
    sync::watch,
};

/// Size of one read from the target.
const CHUNK: usize = 64 * 1024;

#[derive(Default)]
struct Counters {
    /// Bytes sent to clients, over all connections.
    forwarded: AtomicU64,
    /// Connections currently held at their limit.
    held: AtomicU64,
}

/// The running proxy. It stops accepting when the test's runtime shuts down.
pub struct GatedProxy {
    address: SocketAddr,
    counters: Arc<Counters>,
    released: watch::Sender<bool>,
    held_changed: watch::Receiver<u64>,
}

impl GatedProxy {
    /// Starts a proxy to `target` that holds every connection after `hold_after` response bytes.
    pub async fn start(target: SocketAddr, hold_after: u64) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let counters = Arc::new(Counters::default());
        let (released, gate) = watch::channel(false);
        let (held_sender, held_changed) = watch::channel(0u64);
        let held_sender = Arc::new(held_sender);
        let shared = Arc::clone(&counters);
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let connection = Gate {
                    hold_after,
                    counters: Arc::clone(&shared),
                    released: gate.clone(),
                    held_changed: Arc::clone(&held_sender),
                };
                tokio::spawn(connection.forward(client, target));
            }
        });
        Self {
            address,
            counters,
            released,
            held_changed,
        }
    }

    /// URL of `path` (starting with `/`) through the proxy.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.address)
    }

    /// Response bytes sent to clients so far.
    pub fn forwarded(&self) -> u64 {
        self.counters.forwarded.load(Ordering::SeqCst)
    }

    /// Waits until at least one connection is held at its limit.
    pub async fn wait_held(&self) {
        let mut held = self.held_changed.clone();
        held.wait_for(|_| self.counters.held.load(Ordering::SeqCst) > 0)
            .await
            .unwrap();
    }

    /// Lets every held connection go on, and stops holding new ones.
    pub fn release(&self) {
        self.released.send_replace(true);
    }
}

/// One connection's view of the proxy's gate.
struct Gate {
    hold_after: u64,
    counters: Arc<Counters>,
    released: watch::Receiver<bool>,
    held_changed: Arc<watch::Sender<u64>>,
}

impl Gate {
    async fn forward(self, client: TcpStream, target: SocketAddr) {
        let Ok(upstream) = TcpStream::connect(target).await else {
            return;
        };
        let (client_read, client_write) = client.into_split();
        let (upstream_read, upstream_write) = upstream.into_split();
        let requests = tokio::spawn(pass_requests(client_read, upstream_write));
        self.pass_responses(upstream_read, client_write).await;
        requests.abort();
    }

    /// Copies the target's bytes to the client, pausing once at the limit.
    async fn pass_responses(mut self, mut upstream: OwnedReadHalf, mut client: OwnedWriteHalf) {
        let mut sent = 0u64;
        let mut buffer = vec![0u8; CHUNK];
        loop {
            let released = *self.released.borrow();
            let room = self.hold_after.saturating_sub(sent);
            if !released && room == 0 {
                self.hold().await;
                continue;
            }
            let limit = if released {
                CHUNK
            } else {
                CHUNK.min(room as usize)
            };
            let read = match upstream.read(&mut buffer[..limit]).await {
                Ok(0) | Err(_) => break,
                Ok(read) => read,
            };
            if client.write_all(&buffer[..read]).await.is_err() {
                break;
            }
            sent += read as u64;
            self.counters
                .forwarded
                .fetch_add(read as u64, Ordering::SeqCst);
        }
        let _ = client.shutdown().await;
    }

    /// Waits, counted as held, until the proxy is released.
    async fn hold(&mut self) {
        self.counters.held.fetch_add(1, Ordering::SeqCst);
        self.held_changed.send_modify(|count| *count += 1);
        let _ = self.released.wait_for(|released| *released).await;
        self.counters.held.fetch_sub(1, Ordering::SeqCst);
        self.held_changed.send_modify(|count| *count += 1);
    }
}

/// Copies the client's bytes to the target until either side closes.
async fn pass_requests(mut client: OwnedReadHalf, mut upstream: OwnedWriteHalf) {
    let _ = tokio::io::copy(&mut client, &mut upstream).await;
    let _ = upstream.shutdown().await;
}
