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

#[cfg(test)]
mod tests {
    use std::{net::SocketAddr, sync::Arc};

    use axum::routing::get;
    use bytes::Bytes;
    use http_body_util::{BodyExt, Empty};
    use hyper::client::conn::http1::SendRequest;
    use jiff::Timestamp;
    use rustls::pki_types::{CertificateDer, ServerName, pem::PemObject};
    use tokio::sync::{Notify, oneshot};

    use super::*;
    use crate::webhook::certs::{CertSettings, material::StoredCerts};

    fn generate() -> StoredCerts {
        let mut settings = CertSettings::new("operator");
        settings.ip_addresses = vec!["127.0.0.1".parse().unwrap()];
        StoredCerts::generate(
            &settings.subject_alt_names(),
            settings.ca_validity,
            settings.serving_validity,
            Timestamp::now(),
        )
        .unwrap()
    }

    /// Opens an HTTP/1.1 connection that trusts only `bundle_pem`, and returns it with the
    /// certificate the server presented.
    async fn connect(
        address: SocketAddr,
        bundle_pem: &str,
    ) -> (SendRequest<Empty<Bytes>>, CertificateDer<'static>) {
        let mut roots = rustls::RootCertStore::empty();
        for certificate in CertificateDer::pem_slice_iter(bundle_pem.as_bytes()) {
            roots.add(certificate.unwrap()).unwrap();
        }
        let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];

        let tcp = tokio::net::TcpStream::connect(address).await.unwrap();
        let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(ServerName::IpAddress(address.ip().into()), tcp)
            .await
            .unwrap();
        let presented = tls.get_ref().1.peer_certificates().unwrap()[0].clone();
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .unwrap();
        tokio::spawn(connection);
        (sender, presented)
    }

    async fn get_text(sender: &mut SendRequest<Empty<Bytes>>, path: &str) -> (u16, String) {
        let request = hyper::Request::get(path)
            .header("host", "127.0.0.1")
            .body(Empty::new())
            .unwrap();
        let response = sender.send_request(request).await.unwrap();
        let status = response.status().as_u16();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8(body.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn in_flight_request_survives_shutdown() {
        let certs = CertHandle::new(generate());
        let started = Arc::new(Notify::new());
        let release = Arc::new(Notify::new());
        let router = Router::new().route(
            "/slow",
            get({
                let (started, release) = (started.clone(), release.clone());
                move || async move {
                    started.notify_one();
                    release.notified().await;
                    "finished"
                }
            }),
        );
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn({
            let certs = certs.clone();
            async move {
                serve_tls(listener, router, &certs, async move {
                    let _ = stopped.await;
                })
                .await
            }
        });

        let (mut sender, _) = connect(address, &certs.ca_bundle_pem()).await;
        let in_flight = tokio::spawn(async move { get_text(&mut sender, "/slow").await });
        started.notified().await;
        stop.send(()).unwrap();

        // Release the request only once the listener is closed, so it finishes during the drain.
        let mut attempts = 0;
        while tokio::net::TcpStream::connect(address).await.is_ok() {
            attempts += 1;
            assert!(attempts < 1000, "the listener stayed open after shutdown");
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert!(!server.is_finished());
        release.notify_one();

        assert_eq!(in_flight.await.unwrap(), (200, "finished".to_owned()));
        server.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn renewed_certificate_reaches_new_handshakes() {
        let first = generate();
        let certs = CertHandle::new(first.clone());
        let router = Router::new().route("/hello", get(|| async { "hello" }));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let (_stop, stopped) = oneshot::channel::<()>();
        tokio::spawn({
            let certs = certs.clone();
            async move {
                serve_tls(listener, router, &certs, async move {
                    let _ = stopped.await;
                })
                .await
            }
        });

        let (mut old_connection, old_certificate) = connect(address, &first.ca_bundle_pem()).await;
        assert_eq!(old_certificate, *first.serving.der());

        let second = generate();
        assert!(certs.set(second.clone()));
        let (mut new_connection, new_certificate) = connect(address, &second.ca_bundle_pem()).await;
        assert_eq!(new_certificate, *second.serving.der());
        assert_eq!(
            get_text(&mut new_connection, "/hello").await,
            (200, "hello".to_owned())
        );
        assert_eq!(
            get_text(&mut old_connection, "/hello").await,
            (200, "hello".to_owned())
        );
    }
}
