//! The certificates and keys kept in the webhook's TLS Secret: parsing, validation and
//! generation. Nothing here does I/O.

use std::{collections::BTreeSet, fmt, net::IpAddr, time::Duration};

use jiff::Timestamp;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PublicKeyData, SanType,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
use x509_parser::{certificate::X509Certificate, extensions::GeneralName};

/// How far new certificates are backdated, so that a peer whose clock runs a little behind
/// ours does not reject a certificate as not yet valid.
pub const CLOCK_SKEW_ALLOWANCE: Duration = Duration::from_secs(5 * 60);

/// Common name prefix of generated CAs. The creation time follows it, so that two CAs of a
/// rollover have distinct subjects.
const CA_COMMON_NAME: &str = "artifact-operator-webhook-ca";
/// Common name of generated serving certificates; clients check the SANs, not this name.
const SERVING_COMMON_NAME: &str = "artifact-operator-webhook";

/// The names a serving certificate is valid for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SubjectAltNames {
    pub dns_names: BTreeSet<String>,
    pub ip_addresses: BTreeSet<IpAddr>,
}

impl SubjectAltNames {
    pub fn new(
        dns_names: impl IntoIterator<Item = String>,
        ip_addresses: impl IntoIterator<Item = IpAddr>,
    ) -> Self {
        Self {
            dns_names: dns_names.into_iter().collect(),
            ip_addresses: ip_addresses.into_iter().collect(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.dns_names.is_empty() && self.ip_addresses.is_empty()
    }
}

/// A private key in PKCS#8 PEM. Its `Debug` output never shows the key.
#[derive(Clone, PartialEq, Eq)]
pub struct PrivateKeyPem(String);

impl PrivateKeyPem {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for PrivateKeyPem {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("PrivateKeyPem([redacted])")
    }
}

/// One parsed X.509 certificate with the fields that renewal decisions read. Its `Debug`
/// output leaves out the PEM and DER, so that logging it never prints a certificate.
#[derive(Clone, PartialEq, Eq)]
pub struct Certificate {
    pem: String,
    der: CertificateDer<'static>,
    pub not_before: Timestamp,
    pub not_after: Timestamp,
    pub is_ca: bool,
    pub subject_alt_names: SubjectAltNames,
}

impl Certificate {
    /// Parses a PEM text that must contain exactly one certificate.
    pub fn from_pem(pem: &str) -> Result<Self, String> {
        let mut certificates = CertificateDer::pem_slice_iter(pem.as_bytes());
        let der = match certificates.next() {
            Some(Ok(der)) => der,
            Some(Err(error)) => return Err(format!("invalid PEM ({error})")),
            None => return Err("no PEM certificate found".to_owned()),
        };
        if certificates.next().is_some() {
            return Err("more than one certificate found, expected one".to_owned());
        }
        Self::from_der(der)
    }

    pub(crate) fn from_der(der: CertificateDer<'static>) -> Result<Self, String> {
        let x509 = parse_x509(&der)?;
        let validity = x509.validity();
        let not_before = timestamp(validity.not_before.timestamp())?;
        let not_after = timestamp(validity.not_after.timestamp())?;
        let is_ca = x509.is_ca();
        let subject_alt_names = read_subject_alt_names(&x509)?;
        let pem = pem_encode("CERTIFICATE", &der);
        Ok(Self {
            pem,
            der,
            not_before,
            not_after,
            is_ca,
            subject_alt_names,
        })
    }

    /// Returns the certificate as one PEM block ending in a newline.
    pub fn pem(&self) -> &str {
        &self.pem
    }

    pub fn der(&self) -> &CertificateDer<'static> {
        &self.der
    }

    /// Returns whether `issuer`'s public key verifies this certificate's signature.
    pub fn is_signed_by(&self, issuer: &Certificate) -> bool {
        let (Ok(this), Ok(issuer)) = (parse_x509(&self.der), parse_x509(&issuer.der)) else {
            return false;
        };
        this.verify_signature(Some(issuer.public_key())).is_ok()
    }

    /// Returns the DER SubjectPublicKeyInfo, for comparing with a private key's public half.
    fn subject_public_key_info(&self) -> Vec<u8> {
        parse_x509(&self.der)
            .map(|x509| x509.public_key().raw.to_vec())
            .unwrap_or_default()
    }
}

impl fmt::Debug for Certificate {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("Certificate")
            .field("not_before", &self.not_before)
            .field("not_after", &self.not_after)
            .field("is_ca", &self.is_ca)
            .field("subject_alt_names", &self.subject_alt_names)
            .finish_non_exhaustive()
    }
}

/// A serving certificate with the chain sent after it and its private key, checked to be
/// usable together by rustls. The TLS server presents it in both certificate modes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServingPair {
    /// The end-entity certificate, first in `chain`.
    pub leaf: Certificate,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyPem,
}

impl ServingPair {
    /// Parses `tls.crt` (the end-entity certificate, optionally followed by intermediates) and
    /// `tls.key` (PKCS#8, PKCS#1 or SEC1 PEM, as cert-manager writes them). The error names the
    /// Secret key at fault and never contains key material.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self, String> {
        let chain = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|error| format!("tls.crt: invalid PEM ({error})"))?;
        let Some(first) = chain.first() else {
            return Err("tls.crt: no PEM certificate found".to_owned());
        };
        let leaf =
            Certificate::from_der(first.clone()).map_err(|reason| format!("tls.crt: {reason}"))?;
        let pair = Self {
            leaf,
            chain,
            key: PrivateKeyPem(key_pem.to_owned()),
        };
        pair.try_certified_key()?;
        Ok(pair)
    }

    /// The certificates after the leaf, such as an intermediate CA.
    pub fn intermediates(&self) -> impl Iterator<Item = &CertificateDer<'static>> {
        self.chain.iter().skip(1)
    }

    /// Builds the rustls certificate of this pair.
    pub fn certified_key(&self) -> rustls::sign::CertifiedKey {
        self.try_certified_key()
            .expect("ServingPair checked that its key matches its certificate")
    }

    fn try_certified_key(&self) -> Result<rustls::sign::CertifiedKey, String> {
        let key = PrivateKeyDer::from_pem_slice(self.key.as_str().as_bytes())
            .map_err(|error| format!("tls.key: invalid private key ({error})"))?;
        rustls::sign::CertifiedKey::from_der(
            self.chain.clone(),
            key,
            &rustls::crypto::ring::default_provider(),
        )
        .map_err(|error| format!("tls.key: does not match tls.crt or is unusable ({error})"))
    }

    /// Returns why the leaf cannot be served at `now`: not valid yet, or expired.
    pub fn validity_problem(&self, now: Timestamp) -> Option<String> {
        if now < self.leaf.not_before {
            return Some(format!(
                "tls.crt: not valid before {}",
                self.leaf.not_before
            ));
        }
        if now >= self.leaf.not_after {
            return Some(format!("tls.crt: expired at {}", self.leaf.not_after));
        }
        None
    }
}

/// The CA of the Secret that signed the serving certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServingIssuer {
    /// `ca.crt`, the CA that signs new certificates.
    Current,
    /// `ca-previous.crt`, the CA being replaced during a rollover.
    Previous,
}

/// Everything the Secret stores, validated: every certificate parses, each key matches its
/// certificate, and the serving certificate was signed by one of the two CAs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredCerts {
    pub ca: Certificate,
    pub ca_key: PrivateKeyPem,
    /// The CA being replaced, trusted until it expires.
    pub previous_ca: Option<Certificate>,
    pub serving: Certificate,
    pub serving_key: PrivateKeyPem,
    pub serving_issuer: ServingIssuer,
}

/// The Secret's PEM texts before validation.
#[derive(Debug, Clone, Copy)]
pub struct StoredPem<'a> {
    pub ca_cert: &'a str,
    pub ca_key: &'a str,
    pub previous_ca_cert: Option<&'a str>,
    pub serving_cert: &'a str,
    pub serving_key: &'a str,
}

impl StoredCerts {
    /// Parses and validates the Secret's PEM texts. The error names the Secret key at fault and
    /// never contains key material.
    pub fn from_pem(pem: StoredPem<'_>) -> Result<Self, String> {
        let ca =
            Certificate::from_pem(pem.ca_cert).map_err(|reason| format!("ca.crt: {reason}"))?;
        if !ca.is_ca {
            return Err("ca.crt: not a CA certificate (basicConstraints CA is not set)".to_owned());
        }
        let ca_key_pair = KeyPair::from_pem(pem.ca_key)
            .map_err(|error| format!("ca.key: invalid private key ({error})"))?;
        if ca_key_pair.subject_public_key_info() != ca.subject_public_key_info() {
            return Err("ca.key: the key does not match the certificate in ca.crt".to_owned());
        }

        let previous_ca = pem
            .previous_ca_cert
            .map(|text| {
                Certificate::from_pem(text).map_err(|reason| format!("ca-previous.crt: {reason}"))
            })
            .transpose()?;

        let serving = Certificate::from_pem(pem.serving_cert)
            .map_err(|reason| format!("tls.crt: {reason}"))?;
        let serving_key = PrivateKeyDer::from_pem_slice(pem.serving_key.as_bytes())
            .map_err(|error| format!("tls.key: invalid private key ({error})"))?;
        rustls::sign::CertifiedKey::from_der(
            vec![serving.der.clone()],
            serving_key,
            &rustls::crypto::ring::default_provider(),
        )
        .map_err(|error| format!("tls.key: unusable with tls.crt ({error})"))?;

        let serving_issuer = if serving.is_signed_by(&ca) {
            ServingIssuer::Current
        } else if previous_ca
            .as_ref()
            .is_some_and(|previous| serving.is_signed_by(previous))
        {
            ServingIssuer::Previous
        } else {
            return Err("tls.crt: not signed by ca.crt or ca-previous.crt".to_owned());
        };

        Ok(Self {
            ca,
            ca_key: PrivateKeyPem(pem.ca_key.to_owned()),
            previous_ca,
            serving,
            serving_key: PrivateKeyPem(pem.serving_key.to_owned()),
            serving_issuer,
        })
    }

    /// Generates a new CA and a serving certificate signed by it.
    pub fn generate(
        names: &SubjectAltNames,
        ca_validity: Duration,
        serving_validity: Duration,
        now: Timestamp,
    ) -> Result<Self, rcgen::Error> {
        let (ca, ca_key) = generate_ca(ca_validity, now)?;
        let (serving, serving_key) = issue_serving(&ca, &ca_key, names, serving_validity, now)?;
        Ok(Self {
            ca,
            ca_key,
            previous_ca: None,
            serving,
            serving_key,
            serving_issuer: ServingIssuer::Current,
        })
    }

    /// The serving certificate and its key, as the TLS server presents them.
    pub fn serving_pair(&self) -> ServingPair {
        ServingPair {
            leaf: self.serving.clone(),
            chain: vec![self.serving.der().clone()],
            key: self.serving_key.clone(),
        }
    }

    /// The PEM of every CA that clients must trust: the current CA, then the previous one
    /// while a rollover is in progress.
    pub fn ca_bundle_pem(&self) -> String {
        let mut bundle = self.ca.pem().to_owned();
        if let Some(previous) = &self.previous_ca {
            bundle.push_str(previous.pem());
        }
        bundle
    }
}

/// Generates a self-signed CA that may sign end-entity certificates only (path length 0).
pub fn generate_ca(
    validity: Duration,
    now: Timestamp,
) -> Result<(Certificate, PrivateKeyPem), rcgen::Error> {
    let now = whole_seconds(now);
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.distinguished_name.push(
        DnType::CommonName,
        format!("{CA_COMMON_NAME}@{}", now.as_second()),
    );
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.not_before = offset_date_time(subtract(now, CLOCK_SKEW_ALLOWANCE));
    params.not_after = offset_date_time(add(now, validity));

    let key = KeyPair::generate()?;
    let certificate = params.self_signed(&key)?;
    let parsed = Certificate::from_der(certificate.der().clone())
        .expect("a certificate rcgen generated must parse");
    Ok((parsed, PrivateKeyPem(key.serialize_pem())))
}

/// Issues a serving certificate for `names`, signed by `ca`. It expires after `validity` or
/// with the CA, whichever comes first, because a certificate cannot outlive its issuer's
/// trust.
pub fn issue_serving(
    ca: &Certificate,
    ca_key: &PrivateKeyPem,
    names: &SubjectAltNames,
    validity: Duration,
    now: Timestamp,
) -> Result<(Certificate, PrivateKeyPem), rcgen::Error> {
    let now = whole_seconds(now);
    let ca_key_pair = KeyPair::from_pem(ca_key.as_str())?;
    let issuer = Issuer::from_ca_cert_der(ca.der(), ca_key_pair)?;

    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, SERVING_COMMON_NAME);
    params.subject_alt_names = names
        .dns_names
        .iter()
        .map(|name| Ok(SanType::DnsName(name.clone().try_into()?)))
        .chain(
            names
                .ip_addresses
                .iter()
                .map(|address| Ok(SanType::IpAddress(*address))),
        )
        .collect::<Result<_, rcgen::Error>>()?;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = true;
    params.not_before = offset_date_time(subtract(now, CLOCK_SKEW_ALLOWANCE));
    params.not_after = offset_date_time(add(now, validity).min(ca.not_after));

    let key = KeyPair::generate()?;
    let certificate = params.signed_by(&key, &issuer)?;
    let parsed = Certificate::from_der(certificate.der().clone())
        .expect("a certificate rcgen generated must parse");
    Ok((parsed, PrivateKeyPem(key.serialize_pem())))
}

/// Returns `time + duration`, or the latest timestamp when that overflows.
pub fn add(time: Timestamp, duration: Duration) -> Timestamp {
    time.checked_add(duration).unwrap_or(Timestamp::MAX)
}

/// Returns `time - duration`, or the earliest timestamp when that overflows.
pub fn subtract(time: Timestamp, duration: Duration) -> Timestamp {
    time.checked_sub(duration).unwrap_or(Timestamp::MIN)
}

fn whole_seconds(time: Timestamp) -> Timestamp {
    Timestamp::from_second(time.as_second()).expect("a timestamp's own seconds are in range")
}

fn offset_date_time(time: Timestamp) -> time::OffsetDateTime {
    // X.509 times have whole seconds; the generated range is far inside what `time` supports.
    time::OffsetDateTime::from_unix_timestamp(time.as_second())
        .expect("certificate times are within the range of the time crate")
}

fn timestamp(unix_seconds: i64) -> Result<Timestamp, String> {
    Timestamp::from_second(unix_seconds)
        .map_err(|_| format!("validity time {unix_seconds} (Unix seconds) is out of range"))
}

fn parse_x509<'a>(der: &'a CertificateDer<'_>) -> Result<X509Certificate<'a>, String> {
    let (rest, x509) = x509_parser::parse_x509_certificate(der)
        .map_err(|error| format!("invalid X.509 certificate ({error})"))?;
    if !rest.is_empty() {
        return Err("invalid X.509 certificate (trailing bytes after the DER)".to_owned());
    }
    Ok(x509)
}

fn read_subject_alt_names(x509: &X509Certificate<'_>) -> Result<SubjectAltNames, String> {
    let mut names = SubjectAltNames::default();
    let extension = x509
        .subject_alternative_name()
        .map_err(|error| format!("invalid subjectAltName extension ({error})"))?;
    let Some(extension) = extension else {
        return Ok(names);
    };
    for name in &extension.value.general_names {
        match name {
            GeneralName::DNSName(dns_name) => {
                names.dns_names.insert((*dns_name).to_owned());
            }
            GeneralName::IPAddress(bytes) => {
                let address = match bytes.len() {
                    4 => IpAddr::from(<[u8; 4]>::try_from(*bytes).expect("length checked")),
                    16 => IpAddr::from(<[u8; 16]>::try_from(*bytes).expect("length checked")),
                    length => {
                        return Err(format!(
                            "invalid IP address in subjectAltName ({length} bytes)"
                        ));
                    }
                };
                names.ip_addresses.insert(address);
            }
            // Other name types are never generated and play no part in renewal.
            _ => {}
        }
    }
    Ok(names)
}

fn pem_encode(label: &str, der: &[u8]) -> String {
    use base64::Engine as _;

    let encoded = base64::engine::general_purpose::STANDARD.encode(der);
    let mut pem = format!("-----BEGIN {label}-----\n");
    for line in encoded.as_bytes().chunks(64) {
        pem.push_str(std::str::from_utf8(line).expect("base64 output is ASCII"));
        pem.push('\n');
    }
    pem.push_str(&format!("-----END {label}-----\n"));
    pem
}
