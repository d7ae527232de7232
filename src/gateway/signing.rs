//! Pre-signed fetch URLs: the key ring, the canonical string, signing and verification.
//!
//! A URL names one artifact by namespace, AppArtifact name and digest, and carries `kid` (the
//! key id), `exp` (expiry in Unix seconds) and `sig`, the unpadded base64url HMAC-SHA256 over
//!
//! ```text
//! artifact-operator/v1
//! read
//! {namespace}
//! {name}
//! {digest}
//! {exp}
//! ```
//!
//! `read` is the method class of GET and HEAD, so a signature never authorizes another kind of
//! request. Everything here is pure; [`super::keys`] keeps the ring in a Secret.
//!
//! The signer (the webhook) and the verifier (the gateway) may run on nodes whose clocks
//! differ, so [`verify`] allows [`CLOCK_SKEW`] each way, and both bounds include their last
//! second. A URL stays valid until `CLOCK_SKEW` after `exp` by the verifier's clock. An `exp`
//! up to [`MAX_TTL`] plus `CLOCK_SKEW` ahead of the verifier's clock is accepted, so a signer
//! whose clock runs up to `CLOCK_SKEW` fast can still issue URLs of the maximum lifetime.

use std::{fmt, time::Duration};

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use hmac::{Hmac, Mac};
use jiff::Timestamp;
use rand::CryptoRng;
use serde::{Deserialize, Serialize};
use sha2::Sha256;

/// First line of every canonical string, so that a signature of this scheme matches no other.
const SCHEME: &str = "artifact-operator/v1";
/// Method class of GET and HEAD.
const READ: &str = "read";
/// Number of random bytes of a new key.
pub const KEY_BYTES: usize = 32;
/// Maximum lifetime of a URL.
pub const MAX_TTL: Duration = Duration::from_secs(7 * 24 * 3600);
/// Default lifetime of a URL.
pub const DEFAULT_TTL: Duration = Duration::from_secs(24 * 3600);
/// Clock difference between signer and verifier that verification tolerates.
pub const CLOCK_SKEW: Duration = Duration::from_secs(5 * 60);

type HmacSha256 = Hmac<Sha256>;

/// Secret bytes of a key, never printed.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct KeySecret(#[serde(with = "base64_bytes")] Vec<u8>);

impl fmt::Debug for KeySecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("KeySecret(<redacted>)")
    }
}

mod base64_bytes {
    use base64::{Engine as _, engine::general_purpose::STANDARD};
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub fn serialize<S: Serializer>(bytes: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&STANDARD.encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(deserializer)?;
        STANDARD.decode(text).map_err(D::Error::custom)
    }
}

/// One signing key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SigningKey {
    pub id: String,
    pub secret: KeySecret,
    pub created: Timestamp,
    /// When the key stopped signing. It still verifies until every URL it signed has expired.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retired: Option<Timestamp>,
}

/// The keys that sign and verify URLs: one active key and the retired keys that may still have
/// valid URLs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KeyRing {
    pub active: String,
    pub keys: Vec<SigningKey>,
    /// The last on-demand rotation request that was carried out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handled_rotation_request: Option<String>,
}

/// Failure to load a key ring.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidKeyRing {
    #[error("the key ring has no key {active}, which it names as active")]
    MissingActive { active: String },
    #[error("key {id} has {length} bytes; a key needs at least {KEY_BYTES}")]
    ShortKey { id: String, length: usize },
}

impl KeyRing {
    /// Creates a ring with one new active key.
    pub fn generate<R: CryptoRng + ?Sized>(rng: &mut R, now: Timestamp) -> Self {
        let key = new_key(rng, now);
        Self {
            active: key.id.clone(),
            keys: vec![key],
            handled_rotation_request: None,
        }
    }

    /// Checks that the active key exists and that every key is long enough.
    pub fn validate(&self) -> Result<(), InvalidKeyRing> {
        if let Some(short) = self.keys.iter().find(|key| key.secret.0.len() < KEY_BYTES) {
            return Err(InvalidKeyRing::ShortKey {
                id: short.id.clone(),
                length: short.secret.0.len(),
            });
        }
        if self.key(&self.active).is_none() {
            return Err(InvalidKeyRing::MissingActive {
                active: self.active.clone(),
            });
        }
        Ok(())
    }

    fn key(&self, id: &str) -> Option<&SigningKey> {
        self.keys.iter().find(|key| key.id == id)
    }

    fn active_key(&self) -> &SigningKey {
        self.key(&self.active)
            .expect("a validated key ring has its active key")
    }

    /// Replaces the active key with a new one and retires the old one at `now`.
    pub fn rotate<R: CryptoRng + ?Sized>(&mut self, rng: &mut R, now: Timestamp) {
        let active = self.active.clone();
        if let Some(old) = self.keys.iter_mut().find(|key| key.id == active) {
            old.retired = Some(now);
        }
        let key = new_key(rng, now);
        self.active = key.id.clone();
        self.keys.push(key);
    }

    /// Returns whether the active key is at least `interval` old.
    pub fn rotation_due(&self, interval: Duration, now: Timestamp) -> bool {
        let created = self.active_key().created;
        now.duration_since(created).unsigned_abs() >= interval && now > created
    }

    /// Drops retired keys that no URL still accepted by a verifier can name, and returns whether
    /// a key was dropped.
    ///
    /// A replica signs with a retired key until it rereads the ring, up to `signing_lag` after
    /// the retirement, and its URLs last up to [`MAX_TTL`]. Three allowances of [`CLOCK_SKEW`]
    /// add up on top: between the clocks of the replica that stamped `retired` and the one that
    /// prunes, between the signer's and the verifier's clocks, and the verifier's acceptance
    /// after `exp`. A key is therefore kept for `MAX_TTL + 3 * CLOCK_SKEW + signing_lag`.
    pub fn prune(&mut self, now: Timestamp, signing_lag: Duration) -> bool {
        let keep_for = MAX_TTL + 3 * CLOCK_SKEW + signing_lag;
        let before = self.keys.len();
        self.keys.retain(|key| match key.retired {
            None => true,
            Some(retired) => now <= retired + keep_for,
        });
        self.keys.len() != before
    }
}

fn new_key<R: CryptoRng + ?Sized>(rng: &mut R, now: Timestamp) -> SigningKey {
    let mut secret = vec![0u8; KEY_BYTES];
    rng.fill_bytes(&mut secret);
    let mut id = [0u8; 8];
    rng.fill_bytes(&mut id);
    SigningKey {
        id: id.iter().map(|byte| format!("{byte:02x}")).collect(),
        secret: KeySecret(secret),
        created: now,
        retired: None,
    }
}

/// The artifact a URL grants access to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UrlTarget<'a> {
    pub namespace: &'a str,
    pub name: &'a str,
    /// `sha256:` and 64 hex digits.
    pub digest: &'a str,
}

impl UrlTarget<'_> {
    /// Returns the path of the gateway route, `/v1/artifacts/{namespace}/{name}/{digest}`.
    pub fn path(&self) -> String {
        format!(
            "/v1/artifacts/{}/{}/{}",
            self.namespace, self.name, self.digest
        )
    }
}

/// The query parameters of a signed URL.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct UrlSignature {
    pub kid: String,
    pub exp: i64,
    pub sig: String,
}

/// Returns the canonical string that the signature covers.
pub fn canonical_string(target: &UrlTarget<'_>, exp: i64) -> String {
    format!(
        "{SCHEME}\n{READ}\n{}\n{}\n{}\n{exp}",
        target.namespace, target.name, target.digest
    )
}

fn mac(secret: &KeySecret, target: &UrlTarget<'_>, exp: i64) -> HmacSha256 {
    let mut mac = HmacSha256::new_from_slice(&secret.0).expect("HMAC accepts keys of any length");
    mac.update(canonical_string(target, exp).as_bytes());
    mac
}

/// Signs `target` with the ring's active key for `ttl` from `now`, capped at [`MAX_TTL`].
pub fn sign(ring: &KeyRing, target: &UrlTarget<'_>, ttl: Duration, now: Timestamp) -> UrlSignature {
    let ttl = ttl.min(MAX_TTL);
    let exp = now.as_second() + i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX);
    let key = ring.active_key();
    let sig = URL_SAFE_NO_PAD.encode(mac(&key.secret, target, exp).finalize().into_bytes());
    UrlSignature {
        kid: key.id.clone(),
        exp,
        sig,
    }
}

/// Returns the full URL: `base` (the gateway's external URL), the route path and the query.
pub fn signed_url(base: &str, target: &UrlTarget<'_>, signature: &UrlSignature) -> String {
    format!(
        "{}{}?kid={}&exp={}&sig={}",
        base.trim_end_matches('/'),
        target.path(),
        signature.kid,
        signature.exp,
        signature.sig
    )
}

/// Parses the `exp` query parameter.
///
/// Only the decimal form that [`signed_url`] writes is accepted. `str::parse` alone would also
/// take `+1800000000` or `01800000000`, so one signature would have many URLs.
pub fn parse_expiry(text: &str) -> Option<i64> {
    let exp: i64 = text.parse().ok()?;
    (exp.to_string() == text).then_some(exp)
}

/// Reason why a URL was rejected. The code goes into the response body. It names what is
/// wrong and never which key material would have been right.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// `kid`, `exp` or `sig` is missing or malformed.
    Malformed,
    /// No key of the ring has the URL's `kid`, for example because it was pruned.
    UnknownKey,
    /// The URL expired more than [`CLOCK_SKEW`] ago.
    Expired,
    /// The expiry lies further ahead than [`MAX_TTL`] plus [`CLOCK_SKEW`].
    ExpiryTooFar,
    /// The signature does not match.
    InvalidSignature,
}

impl Rejection {
    /// Returns the stable code sent to clients and used as a metric label.
    pub fn code(self) -> &'static str {
        match self {
            Rejection::Malformed => "malformed_signature",
            Rejection::UnknownKey => "unknown_key",
            Rejection::Expired => "expired",
            Rejection::ExpiryTooFar => "expiry_too_far",
            Rejection::InvalidSignature => "invalid_signature",
        }
    }
}

/// Verifies a URL's signature against the ring at `now`.
///
/// The signature is compared in constant time. Expiry is checked after the signature, so that
/// an unsigned `exp` never changes the response an attacker gets.
pub fn verify(
    ring: &KeyRing,
    target: &UrlTarget<'_>,
    signature: &UrlSignature,
    now: Timestamp,
) -> Result<(), Rejection> {
    let Some(key) = ring.key(&signature.kid) else {
        return Err(Rejection::UnknownKey);
    };
    let sig = URL_SAFE_NO_PAD
        .decode(&signature.sig)
        .map_err(|_| Rejection::Malformed)?;
    mac(&key.secret, target, signature.exp)
        .verify_slice(&sig)
        .map_err(|_| Rejection::InvalidSignature)?;

    let skew = CLOCK_SKEW.as_secs() as i64;
    let now = now.as_second();
    if signature.exp < now - skew {
        return Err(Rejection::Expired);
    }
    if signature.exp > now + MAX_TTL.as_secs() as i64 + skew {
        return Err(Rejection::ExpiryTooFar);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIGEST: &str = "sha256:0000000000000000000000000000000000000000000000000000000000000001";

    fn target() -> UrlTarget<'static> {
        UrlTarget {
            namespace: "tenant-a",
            name: "billing",
            digest: DIGEST,
        }
    }

    fn ring(now: Timestamp) -> KeyRing {
        KeyRing::generate(&mut rand::rng(), now)
    }

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(seconds).unwrap()
    }

    #[test]
    fn canonical_string_lists_every_field() {
        assert_eq!(
            canonical_string(&target(), 1_800_000_000),
            format!("artifact-operator/v1\nread\ntenant-a\nbilling\n{DIGEST}\n1800000000")
        );
    }

    #[test]
    fn signed_url_verifies() {
        let now = at(1_800_000_000);
        let ring = ring(now);
        let signature = sign(&ring, &target(), DEFAULT_TTL, now);
        assert_eq!(signature.exp, 1_800_000_000 + 24 * 3600);
        assert_eq!(verify(&ring, &target(), &signature, now), Ok(()));
        let url = signed_url("https://gw.test/", &target(), &signature);
        assert!(
            url.starts_with(&format!(
                "https://gw.test/v1/artifacts/tenant-a/billing/{DIGEST}?kid="
            )),
            "{url}"
        );
    }

    #[test]
    fn changed_field_breaks_signature() {
        let now = at(1_800_000_000);
        let ring = ring(now);
        let signature = sign(&ring, &target(), DEFAULT_TTL, now);
        let other_name = UrlTarget {
            name: "payroll",
            ..target()
        };
        let other_namespace = UrlTarget {
            namespace: "tenant-b",
            ..target()
        };
        for changed in [other_name, other_namespace] {
            assert_eq!(
                verify(&ring, &changed, &signature, now),
                Err(Rejection::InvalidSignature)
            );
        }
        let mut later = signature.clone();
        later.exp += 3600;
        assert_eq!(
            verify(&ring, &target(), &later, now),
            Err(Rejection::InvalidSignature)
        );
        let mut garbled = signature;
        garbled.sig.replace_range(0..2, "AA");
        assert_eq!(
            verify(&ring, &target(), &garbled, now),
            Err(Rejection::InvalidSignature)
        );
    }

    #[test]
    fn expiry_checked_with_skew() {
        let signed_at = at(1_800_000_000);
        let ring = ring(signed_at);
        let signature = sign(&ring, &target(), Duration::from_secs(60), signed_at);
        let within_skew = at(1_800_000_000 + 60 + 299);
        assert_eq!(verify(&ring, &target(), &signature, within_skew), Ok(()));
        let past_skew = at(1_800_000_000 + 60 + 301);
        assert_eq!(
            verify(&ring, &target(), &signature, past_skew),
            Err(Rejection::Expired)
        );
    }

    /// Each URL comes from a signer whose clock is off from the verifier's by about
    /// [`CLOCK_SKEW`]. The accepted window ends exactly at the allowance on both sides.
    #[test]
    fn signer_skew_edges_exact() {
        let verifier_now = at(1_800_000_000);
        let skew = CLOCK_SKEW.as_secs() as i64;
        let ring = ring(verifier_now);
        let ttl = Duration::from_secs(60);
        // A signer behind the verifier: its URL expired, by the verifier's clock, at most
        // `skew` seconds ago.
        for (behind, expected) in [(skew, Ok(())), (skew + 1, Err(Rejection::Expired))] {
            let signer_now = at(1_800_000_000 - 60 - behind);
            let signature = sign(&ring, &target(), ttl, signer_now);
            assert_eq!(
                verify(&ring, &target(), &signature, verifier_now),
                expected,
                "signer {behind} s past the expiry"
            );
        }
        // A signer ahead of the verifier with the longest lifetime: its expiry lies at most
        // `MAX_TTL + skew` ahead of the verifier's clock.
        for (ahead, expected) in [(skew, Ok(())), (skew + 1, Err(Rejection::ExpiryTooFar))] {
            let signer_now = at(1_800_000_000 + ahead);
            let signature = sign(&ring, &target(), MAX_TTL, signer_now);
            assert_eq!(
                verify(&ring, &target(), &signature, verifier_now),
                expected,
                "signer {ahead} s ahead"
            );
        }
    }

    #[test]
    fn ttl_capped_at_seven_days() {
        let now = at(1_800_000_000);
        let ring = ring(now);
        let signature = sign(&ring, &target(), Duration::from_secs(30 * 24 * 3600), now);
        assert_eq!(signature.exp, 1_800_000_000 + 7 * 24 * 3600);
        // A signer whose clock runs far ahead produces an expiry the verifier rejects.
        let behind = at(1_800_000_000 - 3600);
        assert_eq!(
            verify(&ring, &target(), &signature, behind),
            Err(Rejection::ExpiryTooFar)
        );
    }

    #[test]
    fn unknown_key_and_malformed_signature_rejected() {
        let now = at(1_800_000_000);
        let ring = ring(now);
        let mut signature = sign(&ring, &target(), DEFAULT_TTL, now);
        signature.sig = "not base64!".to_owned();
        assert_eq!(
            verify(&ring, &target(), &signature, now),
            Err(Rejection::Malformed)
        );
        signature.kid = "0000000000000000".to_owned();
        assert_eq!(
            verify(&ring, &target(), &signature, now),
            Err(Rejection::UnknownKey)
        );
    }

    #[test]
    fn retired_key_verifies_until_pruned() {
        let start = at(1_800_000_000);
        let mut ring = ring(start);
        let old = sign(&ring, &target(), MAX_TTL, start);
        ring.rotate(&mut rand::rng(), start);
        assert_ne!(sign(&ring, &target(), MAX_TTL, start).kid, old.kid);
        assert_eq!(verify(&ring, &target(), &old, start), Ok(()));

        let last_valid = at(1_800_000_000 + 7 * 24 * 3600 + 300);
        assert!(!ring.prune(last_valid, Duration::ZERO));
        assert_eq!(verify(&ring, &target(), &old, last_valid), Ok(()));
        assert!(ring.prune(at(1_800_000_000 + 7 * 24 * 3600 + 901), Duration::ZERO));
        assert_eq!(ring.keys.len(), 1);
        ring.validate().unwrap();
    }

    /// The worst case of [`KeyRing::prune`]: a replica rereads the ring `lag` after the
    /// rotation, with a clock [`CLOCK_SKEW`] ahead of the verifier's, and the pruning replica's
    /// clock is `CLOCK_SKEW` ahead of the one that stamped the retirement.
    #[test]
    fn retired_key_kept_while_late_urls_verify() {
        let retired = 1_800_000_000;
        let skew = CLOCK_SKEW.as_secs() as i64;
        let max_ttl = MAX_TTL.as_secs() as i64;
        let lag = Duration::from_secs(60);
        let mut ring = ring(at(retired - 3600));
        let stale_ring = ring.clone();
        ring.rotate(&mut rand::rng(), at(retired));

        let late = sign(&stale_ring, &target(), MAX_TTL, at(retired + 60 + skew));
        let verifier_last = retired + 60 + 2 * skew + max_ttl;
        assert_eq!(verify(&ring, &target(), &late, at(verifier_last)), Ok(()));
        assert_eq!(
            verify(&ring, &target(), &late, at(verifier_last + 1)),
            Err(Rejection::Expired)
        );

        let pruner_clock = verifier_last + skew;
        assert!(!ring.prune(at(pruner_clock), lag));
        assert_eq!(verify(&ring, &target(), &late, at(verifier_last)), Ok(()));
        assert!(ring.prune(at(pruner_clock + 1), lag));
    }

    #[test]
    fn rotation_due_after_interval() {
        let start = at(1_800_000_000);
        let ring = ring(start);
        let day = Duration::from_secs(24 * 3600);
        assert!(!ring.rotation_due(day, at(1_800_000_000 + 3600)));
        assert!(ring.rotation_due(day, at(1_800_000_000 + 24 * 3600)));
    }

    #[test]
    fn key_ring_round_trips_and_hides_secrets() {
        let ring = ring(at(1_800_000_000));
        let json = serde_json::to_string(&ring).unwrap();
        let parsed: KeyRing = serde_json::from_str(&json).unwrap();
        assert_eq!(parsed, ring);
        parsed.validate().unwrap();
        assert!(!format!("{ring:?}").contains(&json[json.find("secret").unwrap() + 9..][..20]));
    }

    /// A `+` or a leading zero used to give another URL text that verified.
    #[test]
    fn expiry_parses_only_in_canonical_form() {
        assert_eq!(parse_expiry("1800000000"), Some(1_800_000_000));
        assert_eq!(parse_expiry("-5"), Some(-5));
        assert_eq!(parse_expiry("0"), Some(0));
        for text in [
            "+1800000000",
            "01800000000",
            "-0",
            " 1",
            "1 ",
            "",
            "1e3",
            "x",
        ] {
            assert_eq!(parse_expiry(text), None, "{text:?}");
        }
    }

    #[test]
    fn short_key_rejected() {
        let mut ring = ring(at(1_800_000_000));
        ring.keys[0].secret = KeySecret(vec![1; 16]);
        assert!(matches!(
            ring.validate(),
            Err(InvalidKeyRing::ShortKey { length: 16, .. })
        ));
    }
}
