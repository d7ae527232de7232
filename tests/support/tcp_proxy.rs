//! A TCP proxy on 127.0.0.1 that forwards every connection to one address until it is
//! partitioned. From then on it keeps every connection open and forwards nothing, in either
//! direction, as a network partition does. TLS passes through untouched.

#![allow(dead_code)] // Each test crate uses a different subset.

use std::net::SocketAddr;

use tokio::{
    net::{TcpListener, TcpStream},
    sync::watch,
};

/// A forwarding proxy that stops when the runtime that started it shuts down.
pub struct TcpProxy {
    pub address: SocketAddr,
    partitioned: watch::Sender<bool>,
}

impl TcpProxy {
    /// Starts forwarding connections to `upstream`.
    pub async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let (partitioned, partition) = watch::channel(false);
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                tokio::spawn(forward(client, upstream, partition.clone()));
            }
        });
        Self {
            address,
            partitioned,
        }
    }

    /// Stops forwarding on open and new connections, without closing any.
    pub fn partition(&self) {
        self.partitioned.send_replace(true);
    }
}

async fn forward(
    mut client: TcpStream,
    upstream: SocketAddr,
    mut partition: watch::Receiver<bool>,
) {
    if *partition.borrow() {
        return hold_open(client).await;
    }
    let Ok(mut server) = TcpStream::connect(upstream).await else {
        return;
    };
    let partitioned = tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => false,
        _ = partition.wait_for(|partitioned| *partitioned) => true,
    };
    if partitioned {
        // The copy has stopped, and both sockets stay open and silent.
        std::future::pending::<()>().await;
    }
}

/// Keeps a connection open without reading from or writing to it.
async fn hold_open(_connection: TcpStream) {
    std::future::pending::<()>().await;
}
