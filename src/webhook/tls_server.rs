//! An HTTPS server for an axum router whose certificate comes from a [`CertHandle`], so a
//! renewed certificate reaches new TLS handshakes without a restart.

use std::{future::Future, time::Duration};

use axum::Router;
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::{conn::auto, graceful::GracefulShutdown},
    service::TowerToHyperService,
};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tracing::{debug, info, warn};

use super::certs::CertHandle;

/// Time a client has to complete the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause after a failed accept, such as when the process is out of file descriptors.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// Serves `router` over TLS on `listener` until `shutdown` completes, then stops accepting,
/// lets in-flight requests finish and closes idle connections.
///
/// Each handshake takes the certificate that `certs` has at that moment, so a renewal
/// applies to new connections while open ones keep theirs. ALPN offers HTTP/2 and HTTP/1.1.
///
/// NOTE: the drain after `shutdown` waits for every in-flight request, however slow; wrap the
/// call in a timeout to bound it.
pub async fn serve_tls(
    listener: TcpListener,
    router: Router,
    certs: &CertHandle,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let acceptor = TlsAcceptor::from(certs.server_config());
    let graceful = GracefulShutdown::new();
    let address = listener.local_addr()?;
    info!(%address, "Serving the webhook over TLS");
    tokio::pin!(shutdown);

    loop {
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    warn!(%error, %address, "Failed to accept a webhook connection");
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                    continue;
                }
            },
        };

        let acceptor = acceptor.clone();
        let service = TowerToHyperService::new(router.clone());
        // The watcher is taken before the task starts, so a shutdown that begins during the
        // handshake still waits for this connection.
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(error)) => {
                    debug!(%error, %peer, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    debug!(%peer, "TLS handshake timed out");
                    return;
                }
            };
            let builder = auto::Builder::new(TokioExecutor::new());
            let connection = builder.serve_connection(TokioIo::new(tls), service);
            if let Err(error) = watcher.watch(connection).await {
                debug!(%error, %peer, "Webhook connection ended with an error");
            }
        });
    }

    drop(listener);
    info!(%address, "Webhook server stopped accepting; waiting for in-flight requests");
    graceful.shutdown().await;
    Ok(())
}
