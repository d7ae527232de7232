//! SHA-256 content digests in the OCI `sha256:<hex>` form.

use std::{fmt, str::FromStr};

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest as _, Sha256};

const ALGORITHM_PREFIX: &str = "sha256:";

/// A SHA-256 digest. Other algorithms are rejected when parsing.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest([u8; 32]);

impl Digest {
    /// Hashes `bytes` in one call, for content that is already in memory.
    pub fn of(bytes: &[u8]) -> Self {
        Self(Sha256::digest(bytes).into())
    }

    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Returns the 64 lowercase hex characters, without the algorithm prefix.
    pub fn hex(&self) -> String {
        use fmt::Write as _;
        self.0.iter().fold(String::with_capacity(64), |mut hex, b| {
            let _ = write!(hex, "{b:02x}");
            hex
        })
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{ALGORITHM_PREFIX}{}", self.hex())
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// A string that is not a `sha256:` digest with 64 lowercase hex characters.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid digest {value:?}: expected \"sha256:\" followed by 64 lowercase hex characters")]
pub struct InvalidDigest {
    pub value: String,
}

impl FromStr for Digest {
    type Err = InvalidDigest;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        let invalid = || InvalidDigest {
            value: value.to_owned(),
        };
        let hex = value.strip_prefix(ALGORITHM_PREFIX).ok_or_else(invalid)?;
        if hex.len() != 64 {
            return Err(invalid());
        }
        let mut bytes = [0u8; 32];
        for (byte, pair) in bytes.iter_mut().zip(hex.as_bytes().chunks_exact(2)) {
            *byte = (hex_value(pair[0]).ok_or_else(invalid)? << 4)
                | hex_value(pair[1]).ok_or_else(invalid)?;
        }
        Ok(Self(bytes))
    }
}

/// Decodes one lowercase hex character. The OCI digest grammar allows only lowercase.
fn hex_value(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

impl Serialize for Digest {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Digest {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = String::deserialize(deserializer)?;
        value.parse().map_err(serde::de::Error::custom)
    }
}

/// Incremental SHA-256 that also counts the bytes, so one pass over a stream yields both the
/// digest and the size.
#[derive(Clone, Default)]
pub struct ContentHasher {
    hasher: Sha256,
    size: u64,
}

impl ContentHasher {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn update(&mut self, bytes: &[u8]) {
        self.hasher.update(bytes);
        self.size += bytes.len() as u64;
    }

    /// Bytes hashed so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    pub fn finish(self) -> ContentSummary {
        ContentSummary {
            digest: Digest(self.hasher.finalize().into()),
            size: self.size,
        }
    }
}

/// Digest and size of a complete piece of content.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContentSummary {
    pub digest: Digest,
    pub size: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    const EMPTY_OBJECT_DIGEST: &str =
        "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a";

    #[test]
    fn digest_of_empty_json_object() {
        assert_eq!(Digest::of(b"{}").to_string(), EMPTY_OBJECT_DIGEST);
    }

    #[test]
    fn digest_parse_round_trips() {
        let digest: Digest = EMPTY_OBJECT_DIGEST.parse().unwrap();
        assert_eq!(digest, Digest::of(b"{}"));
        assert_eq!(digest.to_string(), EMPTY_OBJECT_DIGEST);
    }

    #[test]
    fn digest_parse_rejects_malformed_values() {
        let uppercase = EMPTY_OBJECT_DIGEST
            .to_uppercase()
            .replace("SHA256", "sha256");
        let short = &EMPTY_OBJECT_DIGEST[..70];
        let sha512 = format!("sha512:{}", &EMPTY_OBJECT_DIGEST[7..]);
        for value in [
            "",
            "sha256:",
            short,
            &uppercase,
            &sha512,
            "44136fa355b3678a",
        ] {
            assert!(value.parse::<Digest>().is_err(), "{value:?}");
        }
    }

    #[test]
    fn hasher_counts_bytes_across_updates() {
        let mut hasher = ContentHasher::new();
        hasher.update(b"{");
        hasher.update(b"}");
        let summary = hasher.finish();
        assert_eq!(summary.size, 2);
        assert_eq!(summary.digest, Digest::of(b"{}"));
    }

    #[test]
    fn digest_serializes_as_string() {
        let digest = Digest::of(b"{}");
        let json = serde_json::to_string(&digest).unwrap();
        assert_eq!(json, format!("\"{EMPTY_OBJECT_DIGEST}\""));
        assert_eq!(serde_json::from_str::<Digest>(&json).unwrap(), digest);
    }
}
