//! Pre-signed URLs: verification accepts exactly what the signer produced, for as long as the
//! expiry and the clock skew allow, and rejects every change of a signed value and every other
//! key.

use std::time::Duration;

use artifact_operator::gateway::signing::{
    self, CLOCK_SKEW, KeyRing, MAX_TTL, Rejection, UrlSignature, UrlTarget,
};
use base64::{Engine as _, engine::general_purpose::STANDARD};
use jiff::Timestamp;
use proptest::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::corpus;

const TARGET: &str = "signing";
const KEY_ID: &str = "0123456789abcdef";
const OTHER_KEY_ID: &str = "fedcba9876543210";
/// Characters of unpadded base64url, the alphabet of `sig`.
const BASE64URL: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// One signed URL and the values that vary it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SigningCase {
    namespace: String,
    name: String,
    digest: String,
    /// Requested lifetime; signing caps it at [`MAX_TTL`].
    ttl_seconds: u64,
    /// Clock of the signer, in Unix seconds.
    signed_at: i64,
    /// The active key's secret.
    key: Vec<u8>,
    /// Byte that replaces each byte of a signed value in the mutation checks.
    replacement: u8,
    /// Change of `exp` in the mutation check; never zero.
    exp_change: i64,
}

proptest! {
    #![proptest_config(corpus::config(TARGET))]

    #[test]
    fn verification_accepts_exactly_the_signed_url(case in signing_case()) {
        check(&case)?;
    }
}

#[test]
fn seeds_hold_the_properties() {
    for (file, case) in corpus::seeds::<SigningCase>(TARGET) {
        check(&case).unwrap_or_else(|error| panic!("seed {file}: {error}"));
    }
}

// === Cases ===

fn signing_case() -> impl Strategy<Value = SigningCase> {
    let replacement = prop_oneof![
        any::<u8>().prop_filter("ASCII keeps the value a string", u8::is_ascii),
        Just(b'\n'),
    ];
    (
        (dns_label(), dns_subdomain(), digest()),
        (0u64..=10 * 24 * 3600, 1_600_000_000i64..2_200_000_000),
        prop::collection::vec(any::<u8>(), 32..=64),
        replacement,
        prop_oneof![-4_000_000i64..=-1, 1i64..=4_000_000],
    )
        .prop_map(
            |(
                (namespace, name, digest),
                (ttl_seconds, signed_at),
                key,
                replacement,
                exp_change,
            )| {
                SigningCase {
                    namespace,
                    name,
                    digest,
                    ttl_seconds,
                    signed_at,
                    key,
                    replacement,
                    exp_change,
                }
            },
        )
}

fn dns_label() -> impl Strategy<Value = String> {
    "[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?"
}

fn dns_subdomain() -> impl Strategy<Value = String> {
    "[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?(\\.[a-z0-9]{1,10}){0,3}"
}

fn digest() -> impl Strategy<Value = String> {
    "sha256:[0-9a-f]{64}"
}

// === Properties ===

fn check(case: &SigningCase) -> Result<(), TestCaseError> {
    let ring = ring(&[
        (KEY_ID, &case.key),
        (OTHER_KEY_ID, &other_secret(&case.key)),
    ]);
    let target = UrlTarget {
        namespace: &case.namespace,
        name: &case.name,
        digest: &case.digest,
    };
    let ttl = Duration::from_secs(case.ttl_seconds);
    let signature = signing::sign(&ring, &target, ttl, at(case.signed_at));

    prop_assert_eq!(&signature.kid, KEY_ID);
    let expected_exp = case.signed_at + ttl.min(MAX_TTL).as_secs() as i64;
    prop_assert_eq!(signature.exp, expected_exp);
    check_validity_window(&ring, &target, &signature)?;
    check_url_round_trip(&ring, &target, &signature)?;
    check_target_mutations(case, &ring, &target, &signature)?;
    check_parameter_mutations(case, &ring, &target, &signature)?;
    check_other_keys(case, &target, &signature)
}

/// Checks that a signed URL verifies from `exp - MAX_TTL - CLOCK_SKEW` to `exp + CLOCK_SKEW`, and
/// is expired or too far ahead one second outside that window.
fn check_validity_window(
    ring: &KeyRing,
    target: &UrlTarget<'_>,
    signature: &UrlSignature,
) -> Result<(), TestCaseError> {
    let skew = CLOCK_SKEW.as_secs() as i64;
    let earliest = signature.exp - MAX_TTL.as_secs() as i64 - skew;
    let latest = signature.exp + skew;
    for (now, expected) in [
        (earliest - 1, Err(Rejection::ExpiryTooFar)),
        (earliest, Ok(())),
        (signature.exp, Ok(())),
        (latest, Ok(())),
        (latest + 1, Err(Rejection::Expired)),
    ] {
        prop_assert_eq!(
            signing::verify(ring, target, signature, at(now)),
            expected,
            "verified at {} with exp {}",
            now,
            signature.exp
        );
    }
    Ok(())
}

/// Checks that the URL text carries the target and the signature unchanged, so what a client
/// receives verifies as what was signed.
fn check_url_round_trip(
    ring: &KeyRing,
    target: &UrlTarget<'_>,
    signature: &UrlSignature,
) -> Result<(), TestCaseError> {
    let text = signing::signed_url("https://gateway.test:8443/", target, signature);
    let url =
        url::Url::parse(&text).map_err(|error| TestCaseError::fail(format!("{text}: {error}")))?;
    let segments: Vec<&str> = url.path_segments().into_iter().flatten().collect();
    prop_assert_eq!(
        &segments,
        &[
            "v1",
            "artifacts",
            target.namespace,
            target.name,
            target.digest
        ]
    );
    let query: Vec<(String, String)> = url.query_pairs().into_owned().collect();
    let expected = [
        ("kid".to_owned(), signature.kid.clone()),
        ("exp".to_owned(), signature.exp.to_string()),
        ("sig".to_owned(), signature.sig.clone()),
    ];
    prop_assert_eq!(&query, &expected);

    let parsed_target = UrlTarget {
        namespace: segments[2],
        name: segments[3],
        digest: segments[4],
    };
    let parsed = UrlSignature {
        kid: query[0].1.clone(),
        exp: signing::parse_expiry(&query[1].1)
            .ok_or_else(|| TestCaseError::fail("exp is not in canonical form"))?,
        sig: query[2].1.clone(),
    };
    prop_assert_eq!(
        signing::verify(ring, &parsed_target, &parsed, at(signature.exp)),
        Ok(())
    );
    Ok(())
}

/// Checks that replacing, inserting or removing one byte of the namespace, name or digest, or
/// moving a byte across the boundary of two of them, breaks the signature.
fn check_target_mutations(
    case: &SigningCase,
    ring: &KeyRing,
    target: &UrlTarget<'_>,
    signature: &UrlSignature,
) -> Result<(), TestCaseError> {
    let now = at(case.signed_at);
    let fields = [target.namespace, target.name, target.digest];
    for (field, value) in fields.iter().enumerate() {
        for mutated in single_byte_mutations(value, case.replacement) {
            let mut changed = fields;
            changed[field] = &mutated;
            let changed = UrlTarget {
                namespace: changed[0],
                name: changed[1],
                digest: changed[2],
            };
            prop_assert_eq!(
                signing::verify(ring, &changed, signature, now),
                Err(Rejection::InvalidSignature),
                "accepted {:?} for a URL signed for {:?}",
                changed,
                target
            );
        }
    }
    for (left, right) in [(0, 1), (1, 2)] {
        let mut moved = fields.map(str::to_owned);
        let last = moved[left].pop().expect("generated values are not empty");
        moved[right].insert(0, last);
        let changed = UrlTarget {
            namespace: &moved[0],
            name: &moved[1],
            digest: &moved[2],
        };
        prop_assert_eq!(
            signing::verify(ring, &changed, signature, now),
            Err(Rejection::InvalidSignature),
            "accepted {:?} for a URL signed for {:?}",
            changed,
            target
        );
    }
    Ok(())
}

/// Checks that another `exp`, a changed or cut `sig`, and another or unknown `kid` are rejected.
fn check_parameter_mutations(
    case: &SigningCase,
    ring: &KeyRing,
    target: &UrlTarget<'_>,
    signature: &UrlSignature,
) -> Result<(), TestCaseError> {
    let now = at(case.signed_at);
    let verify = |changed: &UrlSignature| signing::verify(ring, target, changed, now);

    let later = UrlSignature {
        exp: signature.exp + case.exp_change,
        ..signature.clone()
    };
    prop_assert_eq!(verify(&later), Err(Rejection::InvalidSignature));

    // The gateway reads `exp` with `parse_expiry`, so another text of the parameter is either
    // rejected or another expiry, which the signature does not cover.
    let text = signature.exp.to_string();
    for mutated in single_byte_mutations(&text, case.replacement)
        .into_iter()
        .chain([format!("+{text}"), format!("0{text}")])
    {
        let parsed = signing::parse_expiry(&mutated);
        prop_assert_ne!(
            parsed,
            Some(signature.exp),
            "{:?} reads as {}",
            mutated,
            text
        );
    }

    // Each position gets another character of the alphabet, so the result still decodes unless
    // the change lands in the unused bits of the last character.
    let pick =
        |offset: usize| BASE64URL[(usize::from(case.replacement) + offset) % BASE64URL.len()];
    for index in 0..signature.sig.len() {
        let mut sig = signature.sig.clone().into_bytes();
        sig[index] = if sig[index] == pick(0) {
            pick(1)
        } else {
            pick(0)
        };
        let changed = UrlSignature {
            sig: String::from_utf8(sig).expect("the alphabet is ASCII"),
            ..signature.clone()
        };
        let result = verify(&changed);
        prop_assert!(
            matches!(
                result,
                Err(Rejection::InvalidSignature | Rejection::Malformed)
            ),
            "sig {} gave {:?}",
            changed.sig,
            result
        );
    }
    for sig in single_byte_mutations(&signature.sig, case.replacement) {
        let changed = UrlSignature {
            sig,
            ..signature.clone()
        };
        prop_assert!(verify(&changed).is_err(), "accepted sig {}", changed.sig);
    }

    let other_key = UrlSignature {
        kid: OTHER_KEY_ID.to_owned(),
        ..signature.clone()
    };
    prop_assert_eq!(verify(&other_key), Err(Rejection::InvalidSignature));
    for kid in single_byte_mutations(&signature.kid, case.replacement) {
        let changed = UrlSignature {
            kid,
            ..signature.clone()
        };
        prop_assert_eq!(verify(&changed), Err(Rejection::UnknownKey));
    }
    Ok(())
}

/// Checks that a ring whose key of the same id has another secret rejects the URL, and so does
/// a ring without that id.
fn check_other_keys(
    case: &SigningCase,
    target: &UrlTarget<'_>,
    signature: &UrlSignature,
) -> Result<(), TestCaseError> {
    let now = at(case.signed_at);
    let replaced = ring(&[(KEY_ID, &other_secret(&case.key))]);
    prop_assert_eq!(
        signing::verify(&replaced, target, signature, now),
        Err(Rejection::InvalidSignature)
    );
    let without = ring(&[(OTHER_KEY_ID, &case.key)]);
    prop_assert_eq!(
        signing::verify(&without, target, signature, now),
        Err(Rejection::UnknownKey)
    );
    Ok(())
}

// === Helpers ===

/// Returns `value` with each byte replaced by `replacement` (or by another byte where they are
/// equal), with `replacement` inserted at each position, and with each byte removed.
fn single_byte_mutations(value: &str, replacement: u8) -> Vec<String> {
    assert!(value.is_ascii(), "{value:?} is not ASCII");
    assert!(replacement.is_ascii(), "{replacement} is not ASCII");
    let bytes = value.as_bytes();
    let mut mutations = Vec::with_capacity(3 * bytes.len() + 1);
    for index in 0..bytes.len() {
        let mut replaced = bytes.to_vec();
        replaced[index] = if bytes[index] == replacement {
            replacement ^ 1
        } else {
            replacement
        };
        mutations.push(replaced);
        let mut removed = bytes.to_vec();
        removed.remove(index);
        mutations.push(removed);
    }
    for index in 0..=bytes.len() {
        let mut inserted = bytes.to_vec();
        inserted.insert(index, replacement);
        mutations.push(inserted);
    }
    mutations
        .into_iter()
        .map(|bytes| String::from_utf8(bytes).expect("ASCII stays UTF-8"))
        .collect()
}

/// A secret that differs from `secret` in every byte.
fn other_secret(secret: &[u8]) -> Vec<u8> {
    secret.iter().map(|byte| byte ^ 0x5a).collect()
}

/// Builds a ring whose first key is active, through the same JSON form the Secret holds.
fn ring(keys: &[(&str, &[u8])]) -> KeyRing {
    let keys: Vec<_> = keys
        .iter()
        .map(|(id, secret)| {
            json!({
                "id": id,
                "secret": STANDARD.encode(secret),
                "created": "2020-01-01T00:00:00Z",
            })
        })
        .collect();
    let ring: KeyRing = serde_json::from_value(json!({ "active": keys[0]["id"], "keys": keys }))
        .expect("the ring's JSON form must parse");
    ring.validate().expect("generated keys are long enough");
    ring
}

fn at(seconds: i64) -> Timestamp {
    Timestamp::from_second(seconds).expect("generated times are within jiff's range")
}
