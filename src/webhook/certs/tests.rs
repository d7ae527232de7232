use std::{net::Ipv4Addr, time::Duration};

use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhook, MutatingWebhookConfiguration, WebhookClientConfig,
};
use serde_json::json;
use x509_parser::{certificate::X509Certificate, extensions::ParsedExtension};

use super::{
    material::{CLOCK_SKEW_ALLOWANCE, Certificate, ServingIssuer},
    renewal::{ServingReason, apply, plan},
    *,
};

const SECOND: Duration = Duration::from_secs(1);

fn at(seconds: i64) -> Timestamp {
    Timestamp::from_second(seconds).unwrap()
}

const START: i64 = 1_800_000_000;
/// When the default 5-year CA generated at `START` is due for rollover, a year before expiry.
const ROLLOVER: i64 = START + 4 * 365 * 24 * 3600;

fn settings() -> CertSettings {
    let mut settings = CertSettings::new("operator");
    settings.ip_addresses = vec![IpAddr::from(Ipv4Addr::LOCALHOST)];
    settings
}

fn generated(settings: &CertSettings) -> StoredCerts {
    StoredCerts::generate(
        &settings.subject_alt_names(),
        settings.ca_validity,
        settings.serving_validity,
        at(START),
    )
    .unwrap()
}

fn parse(certificate: &Certificate) -> X509Certificate<'_> {
    x509_parser::parse_x509_certificate(certificate.der())
        .unwrap()
        .1
}

fn count_certificates(pem: &str) -> usize {
    pem.matches("-----BEGIN CERTIFICATE-----").count()
}

// === generation ===

#[test]
fn generated_serving_cert_has_configured_names() {
    let settings = settings();
    let certs = generated(&settings);

    let names = &certs.serving.subject_alt_names;
    assert_eq!(
        names.dns_names.iter().cloned().collect::<Vec<_>>(),
        vec![
            "artifact-operator-webhook.operator.svc".to_owned(),
            "artifact-operator-webhook.operator.svc.cluster.local".to_owned(),
        ]
    );
    assert_eq!(
        names.ip_addresses.iter().copied().collect::<Vec<_>>(),
        vec![IpAddr::from(Ipv4Addr::LOCALHOST)]
    );
}

#[test]
fn generated_validity_is_backdated_and_exact() {
    let settings = settings();
    let certs = generated(&settings);
    let backdated = at(START - CLOCK_SKEW_ALLOWANCE.as_secs() as i64);

    assert_eq!(certs.ca.not_before, backdated);
    assert_eq!(
        certs.ca.not_after,
        at(START + settings.ca_validity.as_secs() as i64)
    );
    assert_eq!(certs.serving.not_before, backdated);
    assert_eq!(
        certs.serving.not_after,
        at(START + settings.serving_validity.as_secs() as i64)
    );
}

#[test]
fn generated_ca_signs_leaves_only() {
    let certs = generated(&settings());
    let x509 = parse(&certs.ca);

    assert!(certs.ca.is_ca);
    let constraints = x509.basic_constraints().unwrap().unwrap().value;
    assert!(constraints.ca);
    assert_eq!(constraints.path_len_constraint, Some(0));
    let usage = x509.key_usage().unwrap().unwrap().value;
    assert!(usage.key_cert_sign());
    assert!(usage.crl_sign());
    assert!(usage.digital_signature());
}

#[test]
fn generated_serving_cert_is_server_leaf() {
    let certs = generated(&settings());
    let x509 = parse(&certs.serving);

    assert!(!certs.serving.is_ca);
    let usage = x509.key_usage().unwrap().unwrap().value;
    assert!(usage.digital_signature());
    assert!(!usage.key_cert_sign());
    let extended = x509.extended_key_usage().unwrap().unwrap().value;
    assert!(extended.server_auth);
    assert!(!extended.client_auth);
    assert!(certs.serving.is_signed_by(&certs.ca));
    assert_eq!(certs.serving_issuer, ServingIssuer::Current);
    let has_authority_key_id = x509.extensions().iter().any(|extension| {
        matches!(
            extension.parsed_extension(),
            ParsedExtension::AuthorityKeyIdentifier(_)
        )
    });
    assert!(has_authority_key_id);
}

#[test]
fn serving_cert_expires_no_later_than_ca() {
    let mut settings = settings();
    settings.ca_validity = 10 * DAY;
    settings.serving_validity = 90 * DAY;
    let certs = generated(&settings);

    assert_eq!(certs.serving.not_after, certs.ca.not_after);
}

#[test]
fn ca_subjects_differ_between_generations() {
    let settings = settings();
    let (first, _) = material::generate_ca(settings.ca_validity, at(START)).unwrap();
    let (second, _) = material::generate_ca(settings.ca_validity, at(START + 1)).unwrap();

    assert_ne!(parse(&first).subject(), parse(&second).subject());
}

// === renewal decision ===

#[test]
fn serving_kept_until_renew_threshold() {
    let settings = settings();
    let certs = generated(&settings);
    let threshold = subtract_secs(certs.serving.not_after, settings.serving_renew_before);

    assert!(plan(&certs, &settings, at(START)).is_empty());
    assert!(plan(&certs, &settings, threshold.checked_sub(SECOND).unwrap()).is_empty());
    assert_eq!(
        plan(&certs, &settings, threshold),
        Renewal {
            serving: Some(ServingReason::Expiring),
            ..Renewal::default()
        }
    );
}

#[test]
fn serving_renewed_when_names_change() {
    let settings = settings();
    let certs = generated(&settings);
    let mut changed = settings.clone();
    changed
        .dns_names
        .push("webhook.example.internal".to_owned());

    let renewal = plan(&certs, &changed, at(START));
    assert_eq!(renewal.serving, Some(ServingReason::NamesChanged));

    let renewed = apply(&certs, renewal, &changed, at(START)).unwrap();
    assert_eq!(
        renewed.serving.subject_alt_names,
        changed.subject_alt_names()
    );
    assert_eq!(renewed.ca, certs.ca);
    assert!(plan(&renewed, &changed, at(START)).is_empty());
}

#[test]
fn renewed_serving_cert_keeps_ca() {
    let settings = settings();
    let certs = generated(&settings);
    let now = subtract_secs(certs.serving.not_after, settings.serving_renew_before);

    let renewed = apply(&certs, plan(&certs, &settings, now), &settings, now).unwrap();
    assert_eq!(renewed.ca, certs.ca);
    assert_ne!(renewed.serving, certs.serving);
    assert_ne!(renewed.serving_key, certs.serving_key);
    assert!(renewed.serving.is_signed_by(&certs.ca));
    assert_eq!(renewed.ca_bundle_pem(), certs.ca_bundle_pem());
}

#[test]
fn ca_rollover_starts_at_threshold() {
    let settings = settings();
    let certs = generated(&settings);
    let threshold = subtract_secs(certs.ca.not_after, settings.ca_renew_before);

    // The serving certificate is renewed often before; keep it fresh so that only the CA is due.
    let mut fresh = settings.clone();
    fresh.serving_renew_before = Duration::ZERO;
    fresh.serving_validity = 10 * 365 * DAY;
    let certs = apply(
        &certs,
        Renewal {
            serving: Some(ServingReason::Expiring),
            ..Renewal::default()
        },
        &fresh,
        at(START),
    )
    .unwrap();

    assert!(!plan(&certs, &fresh, threshold.checked_sub(SECOND).unwrap()).roll_over_ca);
    assert_eq!(
        plan(&certs, &fresh, threshold),
        Renewal {
            roll_over_ca: true,
            ..Renewal::default()
        }
    );
}

/// Builds a certificate set right after a rollover started at `now`, with a serving certificate the
/// old CA issued at `now`, and the CA it replaced.
fn rolled_over(settings: &CertSettings, now: Timestamp) -> (StoredCerts, Certificate) {
    let certs = generated(settings);
    let renewal = Renewal {
        serving: Some(ServingReason::Expiring),
        roll_over_ca: true,
        ..Renewal::default()
    };
    (apply(&certs, renewal, settings, now).unwrap(), certs.ca)
}

#[test]
fn rollover_keeps_both_cas_and_old_serving_cert() {
    let settings = settings();
    let before = generated(&settings);
    let now = at(ROLLOVER);
    let after = apply(
        &before,
        Renewal {
            roll_over_ca: true,
            ..Renewal::default()
        },
        &settings,
        now,
    )
    .unwrap();

    assert_ne!(after.ca, before.ca);
    assert_eq!(after.previous_ca.as_ref(), Some(&before.ca));
    assert_eq!(after.serving, before.serving);
    assert_eq!(after.serving_issuer, ServingIssuer::Previous);
    assert_eq!(
        after.ca_bundle_pem(),
        format!("{}{}", after.ca.pem(), before.ca.pem())
    );
}

#[test]
fn rollover_reissues_serving_after_propagation() {
    let settings = settings();
    let now = at(ROLLOVER);
    let (certs, _) = rolled_over(&settings, now);
    let published = now.checked_add(settings.bundle_propagation).unwrap();

    assert!(plan(&certs, &settings, now).is_empty());
    assert!(plan(&certs, &settings, published.checked_sub(SECOND).unwrap()).is_empty());
    assert_eq!(
        plan(&certs, &settings, published),
        Renewal {
            serving: Some(ServingReason::CaRolledOver),
            ..Renewal::default()
        }
    );
}

#[test]
fn rollover_waits_for_propagation_despite_name_change() {
    let settings = settings();
    let now = at(ROLLOVER);
    let (certs, _) = rolled_over(&settings, now);
    let mut changed = settings.clone();
    changed.ip_addresses.clear();

    assert!(plan(&certs, &changed, now).is_empty());
}

#[test]
fn rollover_replaces_expired_serving_cert_at_once() {
    let mut settings = settings();
    // Propagation outlasts the serving certificate, so only its expiry can trigger the renewal.
    settings.bundle_propagation = 200 * DAY;
    let now = at(ROLLOVER);
    let (certs, _) = rolled_over(&settings, now);

    assert_eq!(
        plan(&certs, &settings, certs.serving.not_after).serving,
        Some(ServingReason::Expiring)
    );
}

#[test]
fn rollover_finishes_when_previous_ca_expires() {
    let settings = settings();
    let now = at(ROLLOVER);
    let (certs, old_ca) = rolled_over(&settings, now);
    let published = now.checked_add(settings.bundle_propagation).unwrap();
    let moved = apply(
        &certs,
        plan(&certs, &settings, published),
        &settings,
        published,
    )
    .unwrap();

    assert_eq!(moved.serving_issuer, ServingIssuer::Current);
    assert!(moved.serving.is_signed_by(&moved.ca));
    assert_eq!(moved.previous_ca.as_ref(), Some(&old_ca));
    assert!(plan(&moved, &settings, published).is_empty());

    let expiry = old_ca.not_after;
    assert!(!plan(&moved, &settings, expiry.checked_sub(SECOND).unwrap()).drop_previous_ca);
    assert!(plan(&moved, &settings, expiry).drop_previous_ca);
    let finished = apply(&moved, plan(&moved, &settings, expiry), &settings, expiry).unwrap();
    assert_eq!(finished.previous_ca, None);
    assert_eq!(count_certificates(&finished.ca_bundle_pem()), 1);
}

#[test]
fn no_new_rollover_while_serving_depends_on_previous() {
    let mut settings = settings();
    let now = at(ROLLOVER);
    let (certs, _) = rolled_over(&settings, now);
    // Make the new CA due at once; the serving certificate still needs the previous CA.
    settings.ca_renew_before = 10 * 365 * DAY;

    assert!(!plan(&certs, &settings, now).roll_over_ca);
}

fn subtract_secs(time: Timestamp, duration: Duration) -> Timestamp {
    time.checked_sub(duration).unwrap()
}

// === Secret data ===

#[test]
fn secret_round_trip_keeps_everything() {
    let settings = settings();
    let (certs, _) = rolled_over(&settings, at(ROLLOVER));
    let secret = Secret {
        data: Some(secret_data(&certs)),
        ..Secret::default()
    };

    assert_eq!(
        secret
            .data
            .as_ref()
            .unwrap()
            .keys()
            .cloned()
            .collect::<Vec<_>>(),
        vec!["ca-previous.crt", "ca.crt", "ca.key", "tls.crt", "tls.key"]
    );
    assert_eq!(read_certs(&secret, &settings).unwrap(), certs);
}

fn secret_with(certs: &StoredCerts, key: &str, value: Option<&[u8]>) -> Secret {
    let mut data = secret_data(certs);
    match value {
        Some(value) => data.insert(key.to_owned(), ByteString(value.to_vec())),
        None => data.remove(key),
    };
    Secret {
        data: Some(data),
        ..Secret::default()
    }
}

/// Reads `secret` and returns the error message, checking the parts every message has.
fn rejection(secret: &Secret, certs: &StoredCerts) -> String {
    let error = read_certs(secret, &settings()).unwrap_err().to_string();
    assert!(
        error.contains("Secret operator/artifact-operator-webhook-tls"),
        "{error}"
    );
    assert!(error.contains("delete the Secret"), "{error}");
    assert!(!error.contains("PRIVATE KEY"), "{error}");
    assert!(!error.contains(certs.ca_key.as_str()), "{error}");
    error
}

#[test]
fn secret_missing_key_rejected() {
    let certs = generated(&settings());
    let error = rejection(&secret_with(&certs, "tls.key", None), &certs);
    assert!(error.contains("tls.key: the key is missing"), "{error}");
}

#[test]
fn secret_garbage_certificate_rejected() {
    let certs = generated(&settings());
    let error = rejection(
        &secret_with(&certs, "ca.crt", Some(b"not a certificate")),
        &certs,
    );
    assert!(
        error.contains("ca.crt: no PEM certificate found"),
        "{error}"
    );
}

#[test]
fn secret_mismatched_serving_key_rejected() {
    let certs = generated(&settings());
    let other = generated(&settings());
    let error = rejection(
        &secret_with(
            &certs,
            "tls.key",
            Some(other.serving_key.as_str().as_bytes()),
        ),
        &certs,
    );
    assert!(error.contains("tls.key: unusable with tls.crt"), "{error}");
}

#[test]
fn secret_mismatched_ca_key_rejected() {
    let certs = generated(&settings());
    let other = generated(&settings());
    let error = rejection(
        &secret_with(&certs, "ca.key", Some(other.ca_key.as_str().as_bytes())),
        &certs,
    );
    assert!(error.contains("ca.key: the key does not match"), "{error}");
}

#[test]
fn secret_foreign_serving_cert_rejected() {
    let certs = generated(&settings());
    let other = generated(&settings());
    let mut secret = secret_with(&certs, "tls.crt", Some(other.serving.pem().as_bytes()));
    secret.data.as_mut().unwrap().insert(
        "tls.key".to_owned(),
        ByteString(other.serving_key.as_str().as_bytes().to_vec()),
    );
    let error = rejection(&secret, &certs);
    assert!(
        error.contains("tls.crt: not signed by ca.crt or ca-previous.crt"),
        "{error}"
    );
}

#[test]
fn secret_leaf_as_ca_rejected() {
    let certs = generated(&settings());
    let mut secret = secret_with(&certs, "ca.crt", Some(certs.serving.pem().as_bytes()));
    secret.data.as_mut().unwrap().insert(
        "ca.key".to_owned(),
        ByteString(certs.serving_key.as_str().as_bytes().to_vec()),
    );
    let error = rejection(&secret, &certs);
    assert!(error.contains("ca.crt: not a CA certificate"), "{error}");
}

#[test]
fn secret_two_certificates_in_one_key_rejected() {
    let certs = generated(&settings());
    let both = format!("{}{}", certs.ca.pem(), certs.serving.pem());
    let error = rejection(
        &secret_with(&certs, "ca.crt", Some(both.as_bytes())),
        &certs,
    );
    assert!(
        error.contains("ca.crt: more than one certificate"),
        "{error}"
    );
}

#[test]
fn debug_output_shows_no_pem() {
    let certs = generated(&settings());
    let debug = format!("{certs:?}");
    assert!(!debug.contains("PRIVATE KEY"), "{debug}");
    assert!(!debug.contains("CERTIFICATE"), "{debug}");
    assert!(debug.contains("[redacted]"), "{debug}");
}

// === settings ===

#[test]
fn settings_defaults_are_valid() {
    settings().validate().unwrap();
}

#[test]
fn settings_renew_before_validity_rejected() {
    let mut settings = settings();
    settings.serving_renew_before = settings.serving_validity;
    let error = settings.validate().unwrap_err().to_string();
    assert_eq!(
        error,
        "invalid webhook certificate settings: serving_renew_before must be shorter than \
         serving_validity"
    );
}

#[test]
fn settings_without_names_rejected() {
    let mut settings = settings();
    settings.dns_names.clear();
    settings.ip_addresses.clear();
    assert!(settings.validate().is_err());
}

// === CA bundle patch ===

fn configuration(bundles: &[(&str, Option<&[u8]>)]) -> MutatingWebhookConfiguration {
    MutatingWebhookConfiguration {
        metadata: ObjectMeta {
            name: Some("artifact-operator".to_owned()),
            resource_version: Some("42".to_owned()),
            ..ObjectMeta::default()
        },
        webhooks: Some(
            bundles
                .iter()
                .map(|(name, bundle)| MutatingWebhook {
                    name: (*name).to_owned(),
                    client_config: WebhookClientConfig {
                        ca_bundle: bundle.map(|bytes| ByteString(bytes.to_vec())),
                        ..WebhookClientConfig::default()
                    },
                    ..MutatingWebhook::default()
                })
                .collect(),
        ),
    }
}

#[test]
fn bundle_patch_lists_only_stale_webhooks() {
    let bundle = b"PEM".as_slice();
    let configuration = configuration(&[
        ("current.example.io", Some(bundle)),
        ("empty.example.io", None),
        ("stale.example.io", Some(b"OLD".as_slice())),
    ]);

    let (patch, names) = ca_bundle::ca_bundle_patch(&configuration, bundle).unwrap();
    assert_eq!(names, vec!["empty.example.io", "stale.example.io"]);
    assert_eq!(
        patch,
        json!({
            "metadata": { "resourceVersion": "42" },
            "webhooks": [
                { "name": "empty.example.io", "clientConfig": { "caBundle": "UEVN" } },
                { "name": "stale.example.io", "clientConfig": { "caBundle": "UEVN" } },
            ],
        })
    );
}

#[test]
fn bundle_patch_absent_when_current() {
    let bundle = b"PEM".as_slice();
    let configuration = configuration(&[("current.example.io", Some(bundle))]);
    assert_eq!(ca_bundle::ca_bundle_patch(&configuration, bundle), None);
}

// === handle ===

#[test]
fn handle_switches_serving_cert_and_bundle() {
    let settings = settings();
    let certs = generated(&settings);
    let handle = CertHandle::new(certs.clone());
    let (rolled, _) = rolled_over(&settings, at(ROLLOVER));
    let now = at(ROLLOVER)
        .checked_add(settings.bundle_propagation)
        .unwrap();
    let moved = apply(&rolled, plan(&rolled, &settings, now), &settings, now).unwrap();

    assert_eq!(
        handle.serving_cert_der(),
        Some(certs.serving.der().to_vec())
    );
    assert!(!handle.set(certs.clone()));
    assert!(handle.set(moved.clone()));
    assert_eq!(
        handle.serving_cert_der(),
        Some(moved.serving.der().to_vec())
    );
    assert_eq!(handle.ca_bundle_pem(), moved.ca_bundle_pem());
    assert_eq!(count_certificates(&handle.ca_bundle_pem()), 2);
}

#[test]
fn handle_loaded_only_while_valid() {
    let settings = settings();
    let now = Timestamp::now();
    let valid = StoredCerts::generate(
        &settings.subject_alt_names(),
        settings.ca_validity,
        settings.serving_validity,
        now,
    )
    .unwrap();
    let expired = StoredCerts::generate(
        &settings.subject_alt_names(),
        settings.ca_validity,
        SECOND,
        now.checked_sub(Duration::from_secs(3600)).unwrap(),
    )
    .unwrap();

    assert!(CertHandle::new(valid).is_loaded());
    assert!(!CertHandle::new(expired).is_loaded());
}
