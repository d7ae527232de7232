//! Registry authentication: credentials, `WWW-Authenticate` challenge parsing and the bearer
//! token cache.
//!
//! The client learns the scheme from the first `401` of a registry. With `Basic` it then sends
//! the configured credentials on every request. With `Bearer` it fetches a token from the
//! challenge's realm for each scope (sending the basic credentials to the realm when they are
//! configured) and caches the token until shortly before it expires.

use std::{
    collections::{BTreeMap, HashMap},
    fmt,
    sync::Mutex,
    time::{Duration, Instant},
};

use reqwest::header::HeaderValue;
use serde::Deserialize;

/// Identity the client presents to a registry.
#[derive(Clone, Default, PartialEq, Eq)]
pub enum Credentials {
    /// No credentials. Bearer tokens are still requested, without credentials.
    #[default]
    Anonymous,
    /// A user name and password for HTTP basic authentication, or for the token realm of a
    /// registry that uses bearer tokens.
    Basic { username: String, password: String },
}

impl Credentials {
    /// Describes the credentials for error messages without revealing the password.
    pub fn describe(&self) -> String {
        match self {
            Credentials::Anonymous => "anonymous access".to_owned(),
            Credentials::Basic { username, .. } => {
                format!("basic credentials for user '{username}'")
            }
        }
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credentials::Anonymous => f.write_str("Anonymous"),
            Credentials::Basic { username, .. } => f
                .debug_struct("Basic")
                .field("username", username)
                .field("password", &"<redacted>")
                .finish(),
        }
    }
}

/// The access an operation requests, which becomes the action list of a token scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Access {
    Pull,
    Push,
    Delete,
}

/// Builds the token scope `repository:{name}:{actions}` of the distribution token protocol.
pub fn scope(repository: &str, access: Access) -> String {
    let actions = match access {
        Access::Pull => "pull",
        Access::Push => "pull,push",
        Access::Delete => "delete",
    };
    format!("repository:{repository}:{actions}")
}

/// One challenge of a `WWW-Authenticate` header: a scheme and its parameters.
///
/// The scheme and the parameter names are lowercased because both are case-insensitive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    pub scheme: String,
    pub params: BTreeMap<String, String>,
}

/// A `WWW-Authenticate` header value that does not follow the RFC 7235 challenge grammar.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid WWW-Authenticate header {header:?}: {reason}")]
pub struct InvalidChallenge {
    pub header: String,
    pub reason: &'static str,
}

/// Parses a `WWW-Authenticate` header value into its challenges (RFC 7235 section 4.1).
///
/// Parameters are `name=token` or `name="quoted string"`. The token68 form (`Scheme abc==`),
/// which registries do not send, is rejected.
///
/// # Errors
///
/// [`InvalidChallenge`] for an empty header, a parameter without a value, or an unterminated
/// quoted string.
pub fn parse_challenges(header: &str) -> Result<Vec<Challenge>, InvalidChallenge> {
    let mut parser = ChallengeParser {
        header,
        rest: header,
    };
    let mut challenges = Vec::new();
    loop {
        parser.skip_separators();
        if parser.rest.is_empty() {
            break;
        }
        challenges.push(parser.challenge()?);
    }
    if challenges.is_empty() {
        return Err(parser.error("no challenge"));
    }
    Ok(challenges)
}

struct ChallengeParser<'a> {
    header: &'a str,
    rest: &'a str,
}

impl<'a> ChallengeParser<'a> {
    fn challenge(&mut self) -> Result<Challenge, InvalidChallenge> {
        let scheme = self
            .token()
            .ok_or_else(|| self.error("expected a scheme"))?;
        let mut params = BTreeMap::new();
        loop {
            self.skip_separators();
            let before_name = self.rest;
            let Some(name) = self.token() else { break };
            self.skip_whitespace();
            let Some(after_equals) = self.rest.strip_prefix('=') else {
                // A token without '=' starts the next challenge.
                self.rest = before_name;
                break;
            };
            self.rest = after_equals;
            self.skip_whitespace();
            let value = self.value()?;
            params.insert(name.to_ascii_lowercase(), value);
        }
        Ok(Challenge {
            scheme: scheme.to_ascii_lowercase(),
            params,
        })
    }

    fn token(&mut self) -> Option<&'a str> {
        let is_token_char = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
        let end = self
            .rest
            .find(|c: char| !is_token_char(c))
            .unwrap_or(self.rest.len());
        if end == 0 {
            return None;
        }
        let (token, rest) = self.rest.split_at(end);
        self.rest = rest;
        Some(token)
    }

    fn value(&mut self) -> Result<String, InvalidChallenge> {
        if let Some(quoted) = self.rest.strip_prefix('"') {
            let mut value = String::new();
            let mut chars = quoted.char_indices();
            while let Some((i, c)) = chars.next() {
                match c {
                    '"' => {
                        self.rest = &quoted[i + 1..];
                        return Ok(value);
                    }
                    '\\' => match chars.next() {
                        Some((_, escaped)) => value.push(escaped),
                        None => break,
                    },
                    c => value.push(c),
                }
            }
            return Err(self.error("unterminated quoted string"));
        }
        self.token()
            .map(str::to_owned)
            .ok_or_else(|| self.error("expected a parameter value"))
    }

    fn skip_whitespace(&mut self) {
        self.rest = self.rest.trim_start_matches([' ', '\t']);
    }

    fn skip_separators(&mut self) {
        self.rest = self.rest.trim_start_matches([' ', '\t', ',']);
    }

    fn error(&self, reason: &'static str) -> InvalidChallenge {
        InvalidChallenge {
            header: self.header.to_owned(),
            reason,
        }
    }
}

/// The parameters of a `Bearer` challenge that a token request needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BearerChallenge {
    pub realm: String,
    pub service: Option<String>,
    pub scope: Option<String>,
}

impl BearerChallenge {
    /// Reads a `Bearer` challenge, or returns `None` for other schemes and for a bearer
    /// challenge without a realm.
    pub fn from_challenge(challenge: &Challenge) -> Option<Self> {
        if challenge.scheme != "bearer" {
            return None;
        }
        Some(Self {
            realm: challenge.params.get("realm")?.clone(),
            service: challenge.params.get("service").cloned(),
            scope: challenge.params.get("scope").cloned(),
        })
    }
}

/// The authentication scheme a registry requested in its last challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scheme {
    Basic,
    Bearer(BearerChallenge),
}

impl Scheme {
    /// Picks the scheme to use from a registry's challenges, preferring bearer tokens.
    pub fn from_challenges(challenges: &[Challenge]) -> Option<Self> {
        let bearer = challenges.iter().find_map(BearerChallenge::from_challenge);
        if let Some(bearer) = bearer {
            return Some(Scheme::Bearer(bearer));
        }
        challenges
            .iter()
            .any(|challenge| challenge.scheme == "basic")
            .then_some(Scheme::Basic)
    }
}

/// A bearer token. Its `Debug` output is redacted so it cannot end up in logs.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

impl Token {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    fn authorization(&self) -> Option<HeaderValue> {
        let mut value = HeaderValue::from_str(&format!("Bearer {}", self.0)).ok()?;
        value.set_sensitive(true);
        Some(value)
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

/// Response body of a token endpoint (distribution token authentication specification).
#[derive(Debug, Deserialize)]
pub struct TokenResponse {
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    access_token: Option<String>,
    #[serde(default)]
    expires_in: Option<u64>,
}

/// Token lifetime the specification prescribes when the response has no `expires_in`.
pub const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(60);

impl TokenResponse {
    /// Returns the token (`token`, or `access_token` as OAuth 2 servers name it) and its
    /// lifetime, or `None` when the response has neither field.
    pub fn into_token(self) -> Option<(Token, Duration)> {
        let value = self.token.or(self.access_token)?;
        if value.is_empty() {
            return None;
        }
        let lifetime = self
            .expires_in
            .map_or(DEFAULT_TOKEN_LIFETIME, Duration::from_secs);
        Some((Token(value), lifetime))
    }
}

/// Returns how long a token may be cached: nine tenths of its lifetime, so a request never
/// starts with a token that expires in transit.
pub fn cache_duration(lifetime: Duration) -> Duration {
    lifetime * 9 / 10
}

/// Next step to authorize a request.
#[derive(Debug)]
pub enum Authorization {
    /// Send with this `Authorization` header, or without one.
    Ready(Option<HeaderValue>),
    /// Fetch a token for the scope first.
    FetchToken(BearerChallenge),
}

/// The scheme a registry uses and the bearer tokens fetched for it, one per scope.
#[derive(Debug)]
pub struct AuthState {
    credentials: Credentials,
    inner: Mutex<AuthStateInner>,
}

#[derive(Debug, Default)]
struct AuthStateInner {
    scheme: Option<Scheme>,
    tokens: HashMap<String, (Token, Instant)>,
}

impl AuthState {
    pub fn new(credentials: Credentials) -> Self {
        Self {
            credentials,
            inner: Mutex::default(),
        }
    }

    pub fn credentials(&self) -> &Credentials {
        &self.credentials
    }

    /// Returns the scheme learned from the registry's last challenge.
    pub fn scheme(&self) -> Option<Scheme> {
        self.lock().scheme.clone()
    }

    /// Decides how to authorize a request for `scope` with what is known now.
    pub fn authorization(&self, scope: &str) -> Authorization {
        let inner = self.lock();
        match &inner.scheme {
            None => Authorization::Ready(None),
            Some(Scheme::Basic) => Authorization::Ready(self.basic_authorization()),
            Some(Scheme::Bearer(challenge)) => match inner.tokens.get(scope) {
                Some((token, expires_at)) if Instant::now() < *expires_at => {
                    Authorization::Ready(token.authorization())
                }
                _ => Authorization::FetchToken(challenge.clone()),
            },
        }
    }

    /// Records the scheme of a new challenge and drops the cached token of `scope`, which the
    /// registry just rejected.
    ///
    /// A bearer challenge's own scope is not kept, because it belongs to the request that was
    /// challenged and not to later requests for other repositories.
    pub fn learn(&self, scheme: Scheme, scope: &str) {
        let scheme = match scheme {
            Scheme::Bearer(challenge) => Scheme::Bearer(BearerChallenge {
                scope: None,
                ..challenge
            }),
            Scheme::Basic => Scheme::Basic,
        };
        let mut inner = self.lock();
        inner.tokens.remove(scope);
        inner.scheme = Some(scheme);
    }

    pub fn store_token(&self, scope: &str, token: Token, lifetime: Duration) {
        let expires_at = Instant::now() + cache_duration(lifetime);
        self.lock()
            .tokens
            .insert(scope.to_owned(), (token, expires_at));
    }

    fn basic_authorization(&self) -> Option<HeaderValue> {
        match &self.credentials {
            Credentials::Anonymous => None,
            Credentials::Basic { username, password } => {
                Some(basic_authorization(username, password))
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, AuthStateInner> {
        // The state stays consistent even if a holder panicked, since every update is one
        // assignment.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Builds a sensitive `Authorization: Basic` header value.
pub fn basic_authorization(username: &str, password: &str) -> HeaderValue {
    use base64::Engine as _;
    let encoded =
        base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"));
    let mut value = HeaderValue::from_str(&format!("Basic {encoded}"))
        .expect("base64 output is a valid header value");
    value.set_sensitive(true);
    value
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn challenge_bearer_with_all_parameters() {
        let header = r#"Bearer realm="https://auth.example.com/token",service="registry.example.com",scope="repository:acme/app:pull,push""#;
        let challenges = parse_challenges(header).unwrap();
        assert_eq!(
            challenges,
            vec![Challenge {
                scheme: "bearer".to_owned(),
                params: params(&[
                    ("realm", "https://auth.example.com/token"),
                    ("service", "registry.example.com"),
                    ("scope", "repository:acme/app:pull,push"),
                ]),
            }]
        );
        assert_eq!(
            BearerChallenge::from_challenge(&challenges[0]),
            Some(BearerChallenge {
                realm: "https://auth.example.com/token".to_owned(),
                service: Some("registry.example.com".to_owned()),
                scope: Some("repository:acme/app:pull,push".to_owned()),
            })
        );
    }

    #[test]
    fn challenge_basic_with_realm() {
        let challenges = parse_challenges(r#"Basic realm="testenv""#).unwrap();
        assert_eq!(challenges.len(), 1);
        assert_eq!(challenges[0].scheme, "basic");
        assert_eq!(challenges[0].params, params(&[("realm", "testenv")]));
        assert_eq!(Scheme::from_challenges(&challenges), Some(Scheme::Basic));
    }

    #[test]
    fn challenge_scheme_without_parameters() {
        let challenges = parse_challenges("Basic").unwrap();
        assert_eq!(challenges[0].scheme, "basic");
        assert!(challenges[0].params.is_empty());
    }

    #[test]
    fn challenge_list_with_two_schemes() {
        let header = r#"Basic realm="a", Bearer realm="https://t/token", service=reg"#;
        let challenges = parse_challenges(header).unwrap();
        assert_eq!(challenges.len(), 2);
        assert_eq!(challenges[0].scheme, "basic");
        assert_eq!(challenges[0].params, params(&[("realm", "a")]));
        assert_eq!(challenges[1].scheme, "bearer");
        assert_eq!(
            challenges[1].params,
            params(&[("realm", "https://t/token"), ("service", "reg")])
        );
        assert!(matches!(
            Scheme::from_challenges(&challenges),
            Some(Scheme::Bearer(_))
        ));
    }

    #[test]
    fn challenge_case_whitespace_and_escapes() {
        let header = "BEARER  Realm = \"https://t/a\\\"b\" ,\tService=reg";
        let challenges = parse_challenges(header).unwrap();
        assert_eq!(challenges[0].scheme, "bearer");
        assert_eq!(
            challenges[0].params,
            params(&[("realm", "https://t/a\"b"), ("service", "reg")])
        );
    }

    #[test]
    fn challenge_rejects_malformed_headers() {
        for header in ["", "   ", r#"Bearer realm="open"#, "Bearer realm=", "=x"] {
            assert!(parse_challenges(header).is_err(), "{header:?}");
        }
    }

    #[test]
    fn bearer_without_realm_is_ignored() {
        let challenges = parse_challenges("Bearer service=reg").unwrap();
        assert_eq!(BearerChallenge::from_challenge(&challenges[0]), None);
        assert_eq!(Scheme::from_challenges(&challenges), None);
    }

    #[test]
    fn scope_strings() {
        assert_eq!(scope("acme/app", Access::Pull), "repository:acme/app:pull");
        assert_eq!(
            scope("acme/app", Access::Push),
            "repository:acme/app:pull,push"
        );
        assert_eq!(
            scope("acme/app", Access::Delete),
            "repository:acme/app:delete"
        );
    }

    #[test]
    fn token_response_fields() {
        let response: TokenResponse =
            serde_json::from_str(r#"{"token":"abc","expires_in":300}"#).unwrap();
        let (token, lifetime) = response.into_token().unwrap();
        assert_eq!(token, Token::new("abc"));
        assert_eq!(lifetime, Duration::from_secs(300));

        let response: TokenResponse = serde_json::from_str(r#"{"access_token":"xyz"}"#).unwrap();
        let (token, lifetime) = response.into_token().unwrap();
        assert_eq!(token, Token::new("xyz"));
        assert_eq!(lifetime, DEFAULT_TOKEN_LIFETIME);

        let response: TokenResponse = serde_json::from_str(r#"{"expires_in":1}"#).unwrap();
        assert!(response.into_token().is_none());
    }

    #[test]
    fn token_is_cached_per_scope() {
        let state = AuthState::new(Credentials::Anonymous);
        let challenge = BearerChallenge {
            realm: "https://t/token".to_owned(),
            service: None,
            scope: None,
        };
        state.learn(Scheme::Bearer(challenge), "repository:a/b:pull");
        assert!(matches!(
            state.authorization("repository:a/b:pull"),
            Authorization::FetchToken(_)
        ));

        state.store_token(
            "repository:a/b:pull",
            Token::new("t1"),
            Duration::from_secs(60),
        );
        let Authorization::Ready(Some(header)) = state.authorization("repository:a/b:pull") else {
            panic!("a cached token must be used");
        };
        assert_eq!(header.to_str().unwrap(), "Bearer t1");
        assert!(matches!(
            state.authorization("repository:a/b:pull,push"),
            Authorization::FetchToken(_)
        ));
    }

    #[test]
    fn expired_token_is_fetched_again() {
        let state = AuthState::new(Credentials::Anonymous);
        let challenge = BearerChallenge {
            realm: "https://t/token".to_owned(),
            service: None,
            scope: None,
        };
        state.learn(Scheme::Bearer(challenge), "s");
        state.store_token("s", Token::new("t1"), Duration::ZERO);
        assert!(matches!(
            state.authorization("s"),
            Authorization::FetchToken(_)
        ));
    }

    #[test]
    fn basic_scheme_sends_credentials() {
        let state = AuthState::new(Credentials::Basic {
            username: "user".to_owned(),
            password: "pass".to_owned(),
        });
        assert!(matches!(
            state.authorization("s"),
            Authorization::Ready(None)
        ));
        state.learn(Scheme::Basic, "s");
        let Authorization::Ready(Some(header)) = state.authorization("s") else {
            panic!("basic credentials must be sent");
        };
        assert_eq!(header.to_str().unwrap(), "Basic dXNlcjpwYXNz");
        assert!(header.is_sensitive());
    }

    #[test]
    fn credentials_debug_and_description_hide_password() {
        let credentials = Credentials::Basic {
            username: "user".to_owned(),
            password: "hunter2".to_owned(),
        };
        assert!(!format!("{credentials:?}").contains("hunter2"));
        assert_eq!(credentials.describe(), "basic credentials for user 'user'");
        assert_eq!(Credentials::Anonymous.describe(), "anonymous access");
        assert_eq!(format!("{:?}", Token::new("secret")), "Token(<redacted>)");
    }
}
