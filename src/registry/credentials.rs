//! The two Zot accounts of a managed registry, the htpasswd file that Zot checks them against,
//! and the Secret that keeps both.
//!
//! Passwords are generated once and then read back from the Secret on every reconcile. An
//! htpasswd line is kept as long as it still matches its password: bcrypt draws a new salt for
//! every hash, so hashing again would change the file, the config hash and thereby roll the pods.

use std::{collections::BTreeMap, fmt};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use bcrypt::Version;
use k8s_openapi::ByteString;
use rand::CryptoRng;

use super::zot::{GATEWAY_USERNAME, OPERATOR_USERNAME};

/// Secret key of the operator account's username.
pub const OPERATOR_USERNAME_KEY: &str = "operator-username";
/// Secret key of the operator account's password.
pub const OPERATOR_PASSWORD_KEY: &str = "operator-password";
/// Secret key of the gateway account's username.
pub const GATEWAY_USERNAME_KEY: &str = "gateway-username";
/// Secret key of the gateway account's password.
pub const GATEWAY_PASSWORD_KEY: &str = "gateway-password";
/// Secret key of the htpasswd file that Zot mounts.
pub const HTPASSWD_KEY: &str = "htpasswd";
/// Secret key of Zot's `cluster.hashKey`. Repositories move between cluster members when the
/// key changes, so it is generated once like the passwords.
pub const CLUSTER_HASH_KEY_KEY: &str = "cluster-hash-key";
/// Length of `cluster.hashKey`: Zot requires exactly 16 characters, SipHash's 128-bit key.
pub const CLUSTER_HASH_KEY_LENGTH: usize = 16;

/// Random bytes behind each password, encoded as 43 URL-safe base64 characters.
const PASSWORD_BYTES: usize = 32;
/// Random bytes behind the cluster hash key: 12 bytes encode to exactly 16 base64 characters.
const CLUSTER_HASH_KEY_BYTES: usize = 12;
/// Zot runs bcrypt on every request with basic credentials and caches nothing, while no cost
/// factor changes the odds of guessing a 256-bit random password, so the cost stays low.
const BCRYPT_COST: u32 = 5;
/// Maximum length in bytes of a password that bcrypt uses in full. Go's `x/crypto/bcrypt`, which
/// Zot uses, rejects a longer one when hashing and ignores the excess bytes when comparing.
///
/// Hashing uses the bcrypt crate's truncating functions after checking this length, because
/// like Go they drop the terminating NUL of a 72-byte password. The crate's `non_truncating_*`
/// functions reject such a password.
const BCRYPT_MAX_PASSWORD_BYTES: usize = 72;

/// A secret string whose `Debug` output hides the value.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretString(String);

impl SecretString {
    /// Wraps `value`.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// Returns the secret value.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretString {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("SecretString(<redacted>)")
    }
}

/// A Zot user and its password.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Account {
    pub username: String,
    pub password: SecretString,
}

/// The content of a registry's credentials Secret.
#[derive(Clone, PartialEq, Eq)]
pub struct RegistryCredentials {
    /// The account that pushes and deletes artifacts.
    pub operator: Account,
    /// The read-only account of the download gateway.
    pub gateway: Account,
    /// One bcrypt line per account, each ending in a newline.
    pub htpasswd: String,
    /// Zot's `cluster.hashKey`.
    pub cluster_hash_key: SecretString,
}

impl fmt::Debug for RegistryCredentials {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("RegistryCredentials")
            .field("operator", &self.operator)
            .field("gateway", &self.gateway)
            .field(
                "htpasswd",
                &format_args!("<{} lines>", self.htpasswd.lines().count()),
            )
            .field("cluster_hash_key", &self.cluster_hash_key)
            .finish()
    }
}

impl RegistryCredentials {
    /// Builds the credentials from an existing Secret's `data`, generating only what is missing
    /// or unusable.
    ///
    /// A stored password is reused when it is UTF-8, not empty, at most 72 bytes long and free
    /// of control characters. A stored htpasswd line is reused when it still matches its
    /// account, and a stored hash key when it has 16 characters. The usernames are always the
    /// constants of [`super::zot`].
    pub fn reconcile<R: CryptoRng + ?Sized>(
        existing: &BTreeMap<String, ByteString>,
        rng: &mut R,
    ) -> Self {
        let operator =
            stored_or_new_account(existing, OPERATOR_USERNAME, OPERATOR_PASSWORD_KEY, rng);
        let gateway = stored_or_new_account(existing, GATEWAY_USERNAME, GATEWAY_PASSWORD_KEY, rng);
        let stored_htpasswd = stored_text(existing, HTPASSWD_KEY).unwrap_or_default();
        let htpasswd = [&operator, &gateway]
            .into_iter()
            .map(|account| stored_or_new_htpasswd_line(stored_htpasswd, account, rng) + "\n")
            .collect();
        let cluster_hash_key = stored_text(existing, CLUSTER_HASH_KEY_KEY)
            .filter(|key| key.len() == CLUSTER_HASH_KEY_LENGTH)
            .map(SecretString::new)
            .unwrap_or_else(|| generate_cluster_hash_key(rng));
        Self {
            operator,
            gateway,
            htpasswd,
            cluster_hash_key,
        }
    }

    /// Generates new credentials.
    pub fn generate<R: CryptoRng + ?Sized>(rng: &mut R) -> Self {
        Self::reconcile(&BTreeMap::new(), rng)
    }

    /// Returns the Secret's `data`.
    pub fn to_secret_data(&self) -> BTreeMap<String, ByteString> {
        [
            (OPERATOR_USERNAME_KEY, self.operator.username.as_str()),
            (OPERATOR_PASSWORD_KEY, self.operator.password.expose()),
            (GATEWAY_USERNAME_KEY, self.gateway.username.as_str()),
            (GATEWAY_PASSWORD_KEY, self.gateway.password.expose()),
            (HTPASSWD_KEY, self.htpasswd.as_str()),
            (CLUSTER_HASH_KEY_KEY, self.cluster_hash_key.expose()),
        ]
        .into_iter()
        .map(|(key, value)| (key.to_owned(), ByteString(value.as_bytes().to_vec())))
        .collect()
    }
}

/// Generates a password from 32 random bytes, encoded as URL-safe base64 without padding.
pub fn generate_password<R: CryptoRng + ?Sized>(rng: &mut R) -> SecretString {
    SecretString(random_base64::<PASSWORD_BYTES, R>(rng))
}

/// Returns whether `line` is an htpasswd line of `account` whose bcrypt hash matches the
/// account's password. A password longer than 72 bytes never matches, because bcrypt ignores
/// its excess bytes and the line would accept other passwords too.
pub fn htpasswd_line_matches(line: &str, account: &Account) -> bool {
    let Some((username, hash)) = line.split_once(':') else {
        return false;
    };
    let password = account.password.expose();
    username == account.username
        && password.len() <= BCRYPT_MAX_PASSWORD_BYTES
        && bcrypt::verify(password, hash).unwrap_or(false)
}

fn stored_or_new_account<R: CryptoRng + ?Sized>(
    existing: &BTreeMap<String, ByteString>,
    username: &str,
    password_key: &str,
    rng: &mut R,
) -> Account {
    let password = stored_text(existing, password_key)
        .filter(|password| is_usable_password(password))
        .map(SecretString::new)
        .unwrap_or_else(|| generate_password(rng));
    Account {
        username: username.to_owned(),
        password,
    }
}

fn stored_or_new_htpasswd_line<R: CryptoRng + ?Sized>(
    stored_htpasswd: &str,
    account: &Account,
    rng: &mut R,
) -> String {
    stored_htpasswd
        .lines()
        .find(|line| htpasswd_line_matches(line, account))
        .map(str::to_owned)
        .unwrap_or_else(|| new_htpasswd_line(account, rng))
}

/// Hashes the account's password with a fresh salt into a `username:$2y$...` line, the bcrypt
/// variant that the Apache htpasswd tool writes. The password must be usable, at most 72 bytes.
fn new_htpasswd_line<R: CryptoRng + ?Sized>(account: &Account, rng: &mut R) -> String {
    let mut salt = [0; 16];
    rng.fill_bytes(&mut salt);
    let hash = bcrypt::hash_with_salt(account.password.expose(), BCRYPT_COST, salt)
        .expect("the bcrypt cost is a constant within bcrypt's range");
    format!(
        "{}:{}",
        account.username,
        hash.format_for_version(Version::TwoY)
    )
}

fn generate_cluster_hash_key<R: CryptoRng + ?Sized>(rng: &mut R) -> SecretString {
    SecretString(random_base64::<CLUSTER_HASH_KEY_BYTES, R>(rng))
}

fn random_base64<const BYTES: usize, R: CryptoRng + ?Sized>(rng: &mut R) -> String {
    let mut bytes = [0; BYTES];
    rng.fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

fn stored_text<'a>(existing: &'a BTreeMap<String, ByteString>, key: &str) -> Option<&'a str> {
    std::str::from_utf8(&existing.get(key)?.0).ok()
}

fn is_usable_password(password: &str) -> bool {
    !password.is_empty()
        && password.len() <= BCRYPT_MAX_PASSWORD_BYTES
        && !password.chars().any(char::is_control)
}

#[cfg(test)]
mod tests {
    use rand::{SeedableRng, rngs::StdRng};

    use super::*;

    fn rng() -> StdRng {
        StdRng::seed_from_u64(7)
    }

    fn text(data: &BTreeMap<String, ByteString>, key: &str) -> String {
        String::from_utf8(data[key].0.clone()).unwrap()
    }

    fn set(data: &mut BTreeMap<String, ByteString>, key: &str, value: &[u8]) {
        data.insert(key.to_owned(), ByteString(value.to_vec()));
    }

    fn account(username: &str, password: &str) -> Account {
        Account {
            username: username.to_owned(),
            password: SecretString::new(password),
        }
    }

    fn is_url_safe_base64(text: &str) -> bool {
        text.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    }

    #[test]
    fn password_is_43_url_safe_characters() {
        let mut rng = rng();

        let first = generate_password(&mut rng);
        let second = generate_password(&mut rng);

        assert_eq!(first.expose().len(), 43);
        assert!(is_url_safe_base64(first.expose()), "{}", first.expose());
        assert_ne!(first, second);
    }

    #[test]
    fn generate_fills_every_key() {
        let credentials = RegistryCredentials::generate(&mut rng());
        let data = credentials.to_secret_data();

        let keys: Vec<&str> = data.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                CLUSTER_HASH_KEY_KEY,
                GATEWAY_PASSWORD_KEY,
                GATEWAY_USERNAME_KEY,
                HTPASSWD_KEY,
                OPERATOR_PASSWORD_KEY,
                OPERATOR_USERNAME_KEY,
            ]
        );
        assert_eq!(text(&data, OPERATOR_USERNAME_KEY), "artifact-operator");
        assert_eq!(text(&data, GATEWAY_USERNAME_KEY), "artifact-gateway");
        assert_eq!(
            text(&data, OPERATOR_PASSWORD_KEY),
            credentials.operator.password.expose()
        );
        assert_eq!(
            text(&data, GATEWAY_PASSWORD_KEY),
            credentials.gateway.password.expose()
        );
        assert_ne!(credentials.operator.password, credentials.gateway.password);
        let hash_key = text(&data, CLUSTER_HASH_KEY_KEY);
        assert_eq!(hash_key.len(), CLUSTER_HASH_KEY_LENGTH);
        assert!(is_url_safe_base64(&hash_key), "{hash_key}");
    }

    #[test]
    fn htpasswd_has_one_bcrypt_line_per_account() {
        let credentials = RegistryCredentials::generate(&mut rng());

        let lines: Vec<&str> = credentials.htpasswd.lines().collect();
        assert_eq!(lines.len(), 2, "{}", credentials.htpasswd);
        assert!(credentials.htpasswd.ends_with('\n'));
        assert!(
            lines[0].starts_with("artifact-operator:$2y$05$"),
            "{}",
            lines[0]
        );
        assert!(
            lines[1].starts_with("artifact-gateway:$2y$05$"),
            "{}",
            lines[1]
        );
        // A bcrypt hash has 60 characters.
        assert_eq!(lines[0].len(), "artifact-operator:".len() + 60);
        assert!(htpasswd_line_matches(lines[0], &credentials.operator));
        assert!(htpasswd_line_matches(lines[1], &credentials.gateway));
    }

    #[test]
    fn reconcile_keeps_stored_values() {
        let first = RegistryCredentials::generate(&mut rng());
        let stored = first.to_secret_data();

        let second = RegistryCredentials::reconcile(&stored, &mut StdRng::seed_from_u64(99));

        assert_eq!(second, first);
        assert_eq!(second.to_secret_data(), stored);
    }

    #[test]
    fn reconcile_fills_missing_password() {
        let first = RegistryCredentials::generate(&mut rng());
        let mut stored = first.to_secret_data();
        stored.remove(GATEWAY_PASSWORD_KEY);

        let second = RegistryCredentials::reconcile(&stored, &mut StdRng::seed_from_u64(99));

        assert_eq!(second.operator, first.operator);
        assert_ne!(second.gateway.password, first.gateway.password);
        assert_eq!(second.cluster_hash_key, first.cluster_hash_key);
        let first_lines: Vec<&str> = first.htpasswd.lines().collect();
        let second_lines: Vec<&str> = second.htpasswd.lines().collect();
        assert_eq!(
            second_lines[0], first_lines[0],
            "the operator's line is kept"
        );
        assert_ne!(
            second_lines[1], first_lines[1],
            "the gateway's line is hashed again"
        );
        assert!(htpasswd_line_matches(second_lines[1], &second.gateway));
    }

    #[test]
    fn reconcile_rehashes_changed_password() {
        let first = RegistryCredentials::generate(&mut rng());
        let mut stored = first.to_secret_data();
        set(&mut stored, OPERATOR_PASSWORD_KEY, b"rotated-by-hand");

        let second = RegistryCredentials::reconcile(&stored, &mut rng());

        assert_eq!(second.operator.password.expose(), "rotated-by-hand");
        let operator_line = second.htpasswd.lines().next().unwrap();
        assert!(htpasswd_line_matches(operator_line, &second.operator));
        assert_eq!(
            second.htpasswd.lines().nth(1),
            first.htpasswd.lines().nth(1)
        );
    }

    #[test]
    fn reconcile_replaces_unusable_passwords() {
        let unusable: [&[u8]; 4] = [b"", &[b'a'; 73], &[0xff, 0xfe], b"line\nbreak"];
        for value in unusable {
            let mut stored = BTreeMap::new();
            set(&mut stored, OPERATOR_PASSWORD_KEY, value);

            let credentials = RegistryCredentials::reconcile(&stored, &mut rng());

            assert_eq!(
                credentials.operator.password.expose().len(),
                43,
                "{value:?}"
            );
        }
    }

    #[test]
    fn reconcile_keeps_longest_usable_password() {
        let password = "a".repeat(72);
        let mut stored = BTreeMap::new();
        set(&mut stored, OPERATOR_PASSWORD_KEY, password.as_bytes());

        let credentials = RegistryCredentials::reconcile(&stored, &mut rng());

        assert_eq!(credentials.operator.password.expose(), password);
        let line = credentials.htpasswd.lines().next().unwrap();
        assert!(htpasswd_line_matches(line, &credentials.operator));
    }

    #[test]
    fn reconcile_replaces_wrong_length_hash_key() {
        let mut stored = BTreeMap::new();
        set(&mut stored, CLUSTER_HASH_KEY_KEY, b"too-short");

        let credentials = RegistryCredentials::reconcile(&stored, &mut rng());

        assert_eq!(
            credentials.cluster_hash_key.expose().len(),
            CLUSTER_HASH_KEY_LENGTH
        );
        assert_ne!(credentials.cluster_hash_key.expose(), "too-short");
    }

    #[test]
    fn reconcile_overwrites_edited_username() {
        let mut stored = RegistryCredentials::generate(&mut rng()).to_secret_data();
        set(&mut stored, OPERATOR_USERNAME_KEY, b"admin");

        let credentials = RegistryCredentials::reconcile(&stored, &mut rng());

        assert_eq!(credentials.operator.username, "artifact-operator");
    }

    #[test]
    fn line_matching_checks_user_and_password() {
        let operator = account("artifact-operator", "correct");
        let line = new_htpasswd_line(&operator, &mut rng());

        assert!(htpasswd_line_matches(&line, &operator));
        assert!(!htpasswd_line_matches(
            &line,
            &account("artifact-operator", "wrong")
        ));
        assert!(!htpasswd_line_matches(
            &line,
            &account("artifact-gateway", "correct")
        ));
        assert!(!htpasswd_line_matches(
            "artifact-operator:not-a-hash",
            &operator
        ));
        assert!(!htpasswd_line_matches("artifact-operator", &operator));
        assert!(!htpasswd_line_matches("", &operator));

        let long = account("artifact-operator", &"a".repeat(73));
        let truncated = account("artifact-operator", &"a".repeat(72));
        let line = new_htpasswd_line(&truncated, &mut rng());
        assert!(htpasswd_line_matches(&line, &truncated));
        assert!(
            !htpasswd_line_matches(&line, &long),
            "bcrypt ignores bytes after the 72nd"
        );
    }

    #[test]
    fn debug_hides_secrets() {
        let credentials = RegistryCredentials::generate(&mut rng());

        let output = format!("{credentials:?}");

        assert!(
            !output.contains(credentials.operator.password.expose()),
            "{output}"
        );
        assert!(
            !output.contains(credentials.gateway.password.expose()),
            "{output}"
        );
        assert!(
            !output.contains(credentials.cluster_hash_key.expose()),
            "{output}"
        );
        assert!(!output.contains("$2y$"), "{output}");
        assert!(output.contains("artifact-operator"), "{output}");
        assert!(output.contains("<2 lines>"), "{output}");
    }
}
