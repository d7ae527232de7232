//! Serving a certificate that another component issues, such as cert-manager
//! (`--webhook-certificates=external`).
//!
//! The operator only reads the `kubernetes.io/tls` Secret: `tls.crt` (the serving
//! certificate, optionally followed by intermediates), `tls.key` (PKCS#8, PKCS#1 or SEC1) and
//! the optional `ca.crt`. A watch on the Secret reloads it when the issuer renews it, and the
//! next TLS handshake gets the new certificate. The operator never creates or changes the
//! Secret and never touches the webhook configuration: with cert-manager, its cainjector
//! writes `caBundle` from the Certificate named by the annotation
//! `cert-manager.io/inject-ca-from`.
//!
//! Until the Secret contains a usable certificate, TLS handshakes fail and readiness names the
//! Secret and what is wrong with it. Once a certificate is served, a Secret that turns
//! unusable (deleted, or with a key that does not match) is only logged. The last certificate
//! stays in use until it expires, because failing every handshake would block the pods that
//! opt in.
//!
//! Required RBAC: `get`, `list` and `watch` on that Secret.

use std::net::IpAddr;

use futures::StreamExt;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::Secret;
use kube::{
    Api, Client,
    runtime::{WatchStreamExt, watcher},
};
use rustls::pki_types::{CertificateDer, pem::PemObject};
use tracing::{info, warn};

use super::{
    CA_CERT_KEY, CertError, CertHandle, TLS_CERT_KEY, TLS_KEY_KEY,
    material::{Certificate, ServingPair},
};

/// Location of the external certificate and the names it should carry.
#[derive(Debug, Clone)]
pub struct ExternalSettings {
    pub namespace: String,
    pub secret_name: String,
    /// DNS names through which clients reach the webhook. A certificate that names none of
    /// them, nor any of `ip_addresses`, is served with a warning, because the issuer's configuration decides.
    pub dns_names: Vec<String>,
    pub ip_addresses: Vec<IpAddr>,
}

impl ExternalSettings {
    fn source(&self) -> String {
        format!("Secret {}/{}", self.namespace, self.secret_name)
    }
}

/// Reads the Secret once and starts watching it. A missing or unusable Secret is not an error:
/// the handle reports it through readiness until a usable certificate arrives. Only a failure
/// to read the Secret at all (such as a missing `get` permission) stops start-up. The watch
/// stops when `shutdown` completes.
pub async fn start(
    client: Client,
    settings: ExternalSettings,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<CertHandle, CertError> {
    let api: Api<Secret> = Api::namespaced(client, &settings.namespace);
    let secret = api
        .get_opt(&settings.secret_name)
        .await
        .map_err(|source| CertError::Kube {
            action: "read",
            namespace: settings.namespace.clone(),
            name: settings.secret_name.clone(),
            source: Box::new(source),
        })?;
    let handle =
        CertHandle::without_certificate(&settings.source(), "no certificate loaded yet".to_owned());
    update(&handle, &settings, secret.as_ref());

    let background = handle.clone();
    tokio::spawn(async move {
        watch(api, settings, background, shutdown).await;
    });
    Ok(handle)
}

/// Loads every version of the Secret that the watch reports, until `shutdown` completes.
async fn watch(
    api: Api<Secret>,
    settings: ExternalSettings,
    handle: CertHandle,
    shutdown: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    let changes = watcher::watch_object(api, &settings.secret_name).default_backoff();
    tokio::pin!(changes);
    loop {
        tokio::select! {
            () = &mut shutdown => return,
            change = changes.next() => match change {
                Some(Ok(secret)) => update(&handle, &settings, secret.as_ref()),
                Some(Err(error)) => {
                    warn!(%error, secret = %settings.secret_name, namespace = %settings.namespace, "Watching the webhook certificate Secret failed; retrying with backoff");
                }
                // Watch streams retry forever, so this is not expected.
                None => return,
            },
        }
    }
}

/// Serves the certificate of `secret` when it is usable, and logs why otherwise.
fn update(handle: &CertHandle, settings: &ExternalSettings, secret: Option<&Secret>) {
    let loaded = match secret {
        Some(secret) => read_serving(secret, Timestamp::now()),
        None => Err(
            "the Secret does not exist yet; it is expected from the certificate's issuer, such \
             as cert-manager"
                .to_owned(),
        ),
    };
    match loaded {
        Ok((pair, bundle_pem)) => {
            warn_unless_named(&pair, settings);
            let not_after = pair.leaf.not_after;
            if handle.serve(pair, bundle_pem) {
                info!(secret = %settings.secret_name, namespace = %settings.namespace, %not_after, "Loaded the webhook serving certificate");
            }
        }
        Err(reason) if handle.has_certificate() => {
            warn!(secret = %settings.secret_name, namespace = %settings.namespace, %reason, "The webhook certificate Secret is unusable; the last certificate stays in use");
        }
        Err(reason) => {
            warn!(secret = %settings.secret_name, namespace = %settings.namespace, %reason, "No usable webhook serving certificate; the webhook is not ready");
            handle.set_missing(reason);
        }
    }
}

/// Reads the serving certificate of a `kubernetes.io/tls` Secret and the PEM of `ca.crt`
/// (empty without it). It must be valid at `now`, and when `ca.crt` is present the chain in
/// `tls.crt` must lead to it. The error names the Secret key at fault.
pub fn read_serving(secret: &Secret, now: Timestamp) -> Result<(ServingPair, String), String> {
    let text = |key: &str| -> Result<Option<&str>, String> {
        secret
            .data
            .as_ref()
            .and_then(|data| data.get(key))
            .map(|bytes| {
                std::str::from_utf8(&bytes.0).map_err(|_| format!("{key}: not UTF-8 text"))
            })
            .transpose()
    };
    let required =
        |key: &str| text(key)?.ok_or_else(|| format!("{key}: the key is missing or empty"));

    let pair = ServingPair::from_pem(required(TLS_CERT_KEY)?, required(TLS_KEY_KEY)?)?;
    if let Some(problem) = pair.validity_problem(now) {
        return Err(problem);
    }
    let bundle_pem = match text(CA_CERT_KEY)? {
        Some(pem) if !pem.trim().is_empty() => {
            check_issued_by(&pair, pem)?;
            pem.to_owned()
        }
        _ => String::new(),
    };
    Ok((pair, bundle_pem))
}

/// Checks that each certificate of the chain is signed by the next, and that the last one is
/// a certificate of `ca_pem` or signed by one.
fn check_issued_by(pair: &ServingPair, ca_pem: &str) -> Result<(), String> {
    let authorities = CertificateDer::pem_slice_iter(ca_pem.as_bytes())
        .map(|der| {
            let der = der.map_err(|error| format!("ca.crt: invalid PEM ({error})"))?;
            Certificate::from_der(der).map_err(|reason| format!("ca.crt: {reason}"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    if authorities.is_empty() {
        return Err("ca.crt: no PEM certificate found".to_owned());
    }

    let mut issued = pair.leaf.clone();
    for intermediate in pair.intermediates() {
        let intermediate = Certificate::from_der(intermediate.clone())
            .map_err(|reason| format!("tls.crt: {reason}"))?;
        if !issued.is_signed_by(&intermediate) {
            return Err(
                "tls.crt: the certificates are not in order (each must be signed by the next)"
                    .to_owned(),
            );
        }
        issued = intermediate;
    }
    let trusted = authorities
        .iter()
        .any(|authority| authority == &issued || issued.is_signed_by(authority));
    if !trusted {
        return Err(
            "tls.crt: not issued by the CA in ca.crt, so clients that trust ca.crt reject it"
                .to_owned(),
        );
    }
    Ok(())
}

/// Warns when the certificate names none of the addresses through which clients call the
/// webhook: they will reject it, but the issuer's configuration is the place to fix that.
fn warn_unless_named(pair: &ServingPair, settings: &ExternalSettings) {
    let names = &pair.leaf.subject_alt_names;
    let named = settings
        .dns_names
        .iter()
        .any(|name| names.dns_names.contains(name))
        || settings
            .ip_addresses
            .iter()
            .any(|address| names.ip_addresses.contains(address));
    if !named {
        warn!(
            secret = %settings.secret_name,
            namespace = %settings.namespace,
            expected = ?settings.dns_names,
            found = ?names.dns_names,
            "The webhook serving certificate names none of the webhook's addresses; clients will reject it"
        );
    }
}

#[cfg(test)]
mod tests {
    use std::{collections::BTreeMap, time::Duration};

    use k8s_openapi::ByteString;

    use super::*;
    use crate::webhook::certs::material::{
        PrivateKeyPem, SubjectAltNames, generate_ca, issue_serving,
    };

    const DAY: Duration = Duration::from_secs(24 * 3600);

    fn names() -> SubjectAltNames {
        SubjectAltNames::new(["webhook.ops.svc".to_owned()], [])
    }

    /// Issues a CA and a serving certificate at `now`, valid for `validity`.
    fn issued(now: Timestamp, validity: Duration) -> (Certificate, Certificate, PrivateKeyPem) {
        let (ca, ca_key) = generate_ca(365 * DAY, now).unwrap();
        let (serving, key) = issue_serving(&ca, &ca_key, &names(), validity, now).unwrap();
        (ca, serving, key)
    }

    fn secret(entries: &[(&str, &str)]) -> Secret {
        let data: BTreeMap<_, _> = entries
            .iter()
            .map(|(key, value)| ((*key).to_owned(), ByteString(value.as_bytes().to_vec())))
            .collect();
        Secret {
            data: Some(data),
            type_: Some("kubernetes.io/tls".to_owned()),
            ..Secret::default()
        }
    }

    #[test]
    fn reads_cert_manager_secret() {
        let now = Timestamp::now();
        let (ca, serving, key) = issued(now, 90 * DAY);
        let stored = secret(&[
            ("ca.crt", ca.pem()),
            ("tls.crt", serving.pem()),
            ("tls.key", key.as_str()),
        ]);

        let (pair, bundle) = read_serving(&stored, now).unwrap();
        assert_eq!(pair.leaf, serving);
        assert_eq!(bundle, ca.pem());
    }

    #[test]
    fn ca_crt_is_optional() {
        let now = Timestamp::now();
        let (_, serving, key) = issued(now, 90 * DAY);
        let stored = secret(&[("tls.crt", serving.pem()), ("tls.key", key.as_str())]);
        let (_, bundle) = read_serving(&stored, now).unwrap();
        assert_eq!(bundle, "");
    }

    #[test]
    fn missing_key_is_named() {
        let now = Timestamp::now();
        let (_, serving, _) = issued(now, 90 * DAY);
        let error = read_serving(&secret(&[("tls.crt", serving.pem())]), now).unwrap_err();
        assert_eq!(error, "tls.key: the key is missing or empty");
    }

    #[test]
    fn key_of_another_certificate_is_rejected() {
        let now = Timestamp::now();
        let (_, serving, _) = issued(now, 90 * DAY);
        let (_, _, other_key) = issued(now, 90 * DAY);
        let stored = secret(&[("tls.crt", serving.pem()), ("tls.key", other_key.as_str())]);
        let error = read_serving(&stored, now).unwrap_err();
        assert!(
            error.starts_with("tls.key: does not match tls.crt"),
            "{error}"
        );
    }

    #[test]
    fn expired_certificate_is_rejected() {
        let issued_at = Timestamp::now().checked_sub(2 * DAY).unwrap();
        let (ca, serving, key) = issued(issued_at, DAY);
        let stored = secret(&[
            ("ca.crt", ca.pem()),
            ("tls.crt", serving.pem()),
            ("tls.key", key.as_str()),
        ]);
        let error = read_serving(&stored, Timestamp::now()).unwrap_err();
        assert_eq!(error, format!("tls.crt: expired at {}", serving.not_after));
    }

    #[test]
    fn certificate_of_another_ca_is_rejected() {
        let now = Timestamp::now();
        let (_, serving, key) = issued(now, 90 * DAY);
        let (other_ca, _, _) = issued(now, 90 * DAY);
        let stored = secret(&[
            ("ca.crt", other_ca.pem()),
            ("tls.crt", serving.pem()),
            ("tls.key", key.as_str()),
        ]);
        let error = read_serving(&stored, now).unwrap_err();
        assert!(
            error.starts_with("tls.crt: not issued by the CA in ca.crt"),
            "{error}"
        );
    }

    #[test]
    fn readiness_names_the_secret_until_a_certificate_arrives() {
        let settings = ExternalSettings {
            namespace: "ops".to_owned(),
            secret_name: "webhook-tls".to_owned(),
            dns_names: vec!["webhook.ops.svc".to_owned()],
            ip_addresses: Vec::new(),
        };
        let handle = CertHandle::without_certificate(&settings.source(), "not yet".to_owned());

        update(&handle, &settings, None);
        let reason = handle.readiness().unwrap_err();
        assert!(
            reason.starts_with("Secret ops/webhook-tls: the Secret does not exist yet"),
            "{reason}"
        );
        assert_eq!(handle.serving_cert_der(), None);

        let now = Timestamp::now();
        let (ca, serving, key) = issued(now, 90 * DAY);
        let stored = secret(&[
            ("ca.crt", ca.pem()),
            ("tls.crt", serving.pem()),
            ("tls.key", key.as_str()),
        ]);
        update(&handle, &settings, Some(&stored));
        assert_eq!(handle.readiness(), Ok(()));
        assert_eq!(handle.serving_cert_der(), Some(serving.der().to_vec()));

        // A Secret that turns unusable leaves the served certificate in place.
        update(
            &handle,
            &settings,
            Some(&secret(&[("tls.crt", serving.pem())])),
        );
        assert_eq!(handle.serving_cert_der(), Some(serving.der().to_vec()));
    }
}
