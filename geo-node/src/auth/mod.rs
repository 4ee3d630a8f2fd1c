//! Authentication between sites, as GitLab Geo does it (behaviour notes §4).
//!
//! Each secondary has an [`AccessKey`] (20 hex characters) and a [`Secret`] (40 characters of
//! URL-safe base64). The secondary signs every request with its own secret: an HS256 JWT whose
//! `data` claim binds the request (the replicable and id for a blob, the path and query for the
//! other endpoints), valid for at most [`MAX_VALIDITY`] seconds. The header is
//! `Authorization: GL-Geo <access_key>:<jwt>`. The primary looks the secret up by access key in
//! its [`KeyRing`], checks the signature in constant time (`hmac::Mac::verify_slice`), the
//! expiry with a bounded leeway, and that `data` equals what the request asks for.
//!
//! Secrets never appear in logs: [`Secret`]'s `Debug` and `Display` print `***`.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::{URL_SAFE, URL_SAFE_NO_PAD};
use hmac::{Hmac, Mac};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::Sha256;

/// The scheme word of the `Authorization` header.
pub const SCHEME: &str = "GL-Geo";

/// A token is valid for at most this many seconds after it is issued (GitLab:
/// `VALIDITY_PERIOD`, one minute).
pub const MAX_VALIDITY: i64 = 60;

/// Default clock leeway in seconds (GitLab: `leeway: 60`).
pub const DEFAULT_LEEWAY: i64 = 60;

/// Length of an access key.
pub const ACCESS_KEY_LEN: usize = 20;

/// Length of a secret.
pub const SECRET_LEN: usize = 40;

type HmacSha256 = Hmac<Sha256>;

/// Why a key or secret is not well formed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum KeyError {
    /// The access key is not 20 characters of `[0-9A-Za-z_-]`.
    #[error("an access key is {ACCESS_KEY_LEN} characters of [0-9A-Za-z_-], got {0} characters")]
    BadAccessKey(usize),
    /// The secret is not 40 characters of URL-safe base64.
    #[error("a secret is {SECRET_LEN} characters of URL-safe base64 ([0-9A-Za-z_-])")]
    BadSecret,
    /// A line of a keys file cannot be read.
    #[error("keys file line {line}: {reason}")]
    BadLine {
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        reason: String,
    },
    /// The keys file cannot be read.
    #[error("reading keys file {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        #[source]
        source: std::sync::Arc<std::io::Error>,
    },
}

fn urlsafe(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// A secondary's access key: public, identifies the secondary.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct AccessKey(String);

impl AccessKey {
    /// Validates an access key (20 characters of `[0-9A-Za-z_-]`).
    pub fn new(s: &str) -> Result<Self, KeyError> {
        if s.len() == ACCESS_KEY_LEN && urlsafe(s) {
            Ok(AccessKey(s.to_owned()))
        } else {
            Err(KeyError::BadAccessKey(s.chars().count()))
        }
    }

    /// A new random key: 10 random bytes as hex (GitLab: `SecureRandom.hex(10)`).
    pub fn generate() -> Self {
        let mut b = [0u8; ACCESS_KEY_LEN / 2];
        rand::rng().fill_bytes(&mut b);
        AccessKey(hex::encode(b))
    }

    /// The key.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for AccessKey {
    type Error = KeyError;
    fn try_from(s: String) -> Result<Self, KeyError> {
        AccessKey::new(&s)
    }
}

impl From<AccessKey> for String {
    fn from(k: AccessKey) -> String {
        k.0
    }
}

impl fmt::Display for AccessKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for AccessKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AccessKey({})", self.0)
    }
}

/// A secondary's secret: signs its requests. `Debug` and `Display` never show it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Validates a secret (40 characters of URL-safe base64).
    pub fn new(s: &str) -> Result<Self, KeyError> {
        if s.len() == SECRET_LEN && urlsafe(s) {
            Ok(Secret(s.to_owned()))
        } else {
            Err(KeyError::BadSecret)
        }
    }

    /// A new random secret: 30 random bytes, URL-safe base64 (GitLab:
    /// `SecureRandom.urlsafe_base64(30)`).
    pub fn generate() -> Self {
        let mut b = [0u8; SECRET_LEN * 3 / 4];
        rand::rng().fill_bytes(&mut b);
        Secret(URL_SAFE.encode(b))
    }

    /// The secret itself. Only for writing a keys file; never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    fn mac(&self) -> HmacSha256 {
        // HMAC accepts keys of any length.
        <HmacSha256 as Mac>::new_from_slice(self.0.as_bytes()).expect("HMAC takes any key length")
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// A secondary's key pair.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Credentials {
    /// The public half.
    pub access_key: AccessKey,
    /// The secret half.
    pub secret: Secret,
}

impl Credentials {
    /// A new random key pair.
    pub fn generate() -> Self {
        Credentials {
            access_key: AccessKey::generate(),
            secret: Secret::generate(),
        }
    }

    /// Validates both halves.
    pub fn new(access_key: &str, secret: &str) -> Result<Self, KeyError> {
        Ok(Credentials {
            access_key: AccessKey::new(access_key)?,
            secret: Secret::new(secret)?,
        })
    }

    /// The `Authorization` header value for a request described by `data`, issued at `now`
    /// (Unix seconds) and valid for [`MAX_VALIDITY`] seconds.
    pub fn authorization(&self, data: &RequestData, now: i64) -> String {
        format!(
            "{SCHEME} {}:{}",
            self.access_key,
            sign(&self.secret, data, now, now + MAX_VALIDITY)
        )
    }
}

/// What a token is bound to: GitLab's `request_data`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum RequestData {
    /// A blob: the replicable and the record id.
    Blob {
        /// The replicable name.
        replicable_name: String,
        /// The model record id.
        replicable_id: i64,
    },
    /// Any other request: its method, path and query exactly as sent (`GET /api/geo/events?after=0`).
    Request {
        /// `METHOD path?query`.
        request: String,
    },
}

impl RequestData {
    /// Binding for a blob.
    pub fn blob(replicable: &str, id: i64) -> Self {
        RequestData::Blob {
            replicable_name: replicable.to_owned(),
            replicable_id: id,
        }
    }

    /// Binding for a `GET` of `path_and_query`.
    pub fn get(path_and_query: &str) -> Self {
        RequestData::Request {
            request: format!("GET {path_and_query}"),
        }
    }

    fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

#[derive(Serialize, Deserialize)]
struct Claims {
    data: String,
    exp: i64,
    iat: i64,
}

const JWT_HEADER: &str = r#"{"alg":"HS256","typ":"JWT"}"#;

/// Signs `data` into an HS256 JWT with `iat` and `exp` (Unix seconds).
pub fn sign(secret: &Secret, data: &RequestData, iat: i64, exp: i64) -> String {
    let claims = Claims {
        data: data.to_json(),
        exp,
        iat,
    };
    let payload = serde_json::to_vec(&claims).unwrap_or_default();
    let signing_input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(JWT_HEADER),
        URL_SAFE_NO_PAD.encode(payload)
    );
    let mut mac = secret.mac();
    mac.update(signing_input.as_bytes());
    let sig = mac.finalize().into_bytes();
    format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(sig))
}

/// Why a request was refused. Every variant answers 401; the text never contains a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No `Authorization` header.
    #[error("missing Authorization header")]
    Missing,
    /// The header is not `GL-Geo <access_key>:<jwt>`, or the JWT is not three base64 parts of
    /// the expected JSON.
    #[error("malformed Geo token: {0}")]
    Malformed(&'static str),
    /// The JWT's algorithm is not HS256.
    #[error("unsupported token algorithm")]
    Algorithm,
    /// No secondary has this access key.
    #[error("unknown access key")]
    UnknownKey,
    /// The signature does not match the secret.
    #[error("invalid token signature")]
    Signature,
    /// The token expired (beyond the leeway). GitLab: "Check your system clocks!".
    #[error("token expired; check your system clocks")]
    Expired,
    /// The token was issued in the future (beyond the leeway), or claims a validity longer than
    /// allowed.
    #[error("token not valid yet or valid for too long; check your system clocks")]
    Immature,
    /// The token is for another request (another replicable, id, path or query).
    #[error("token does not match the request")]
    WrongRequest,
}

/// Keys of the secondaries a primary accepts, by access key.
#[derive(Clone, Default)]
pub struct KeyRing {
    keys: BTreeMap<AccessKey, Secret>,
}

impl fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyRing")
            .field("access_keys", &self.keys.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl KeyRing {
    /// An empty ring (refuses everything).
    pub fn new() -> Self {
        KeyRing::default()
    }

    /// Adds a key pair (replacing an existing secret for the same access key).
    pub fn insert(&mut self, creds: Credentials) {
        self.keys.insert(creds.access_key, creds.secret);
    }

    /// A ring with these key pairs.
    pub fn with(creds: impl IntoIterator<Item = Credentials>) -> Self {
        let mut ring = KeyRing::new();
        for c in creds {
            ring.insert(c);
        }
        ring
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether there is no key.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Parses a keys file: one `ACCESS_KEY SECRET` (or `ACCESS_KEY:SECRET`) per line, `#`
    /// comments and blank lines ignored; anything after the secret (a name) is ignored.
    pub fn parse(text: &str) -> Result<Self, KeyError> {
        let mut ring = KeyRing::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let bad = |reason: String| KeyError::BadLine {
                line: i + 1,
                reason,
            };
            let mut parts = line
                .split(|c: char| c.is_whitespace() || c == ':')
                .filter(|p| !p.is_empty());
            let (Some(k), Some(s)) = (parts.next(), parts.next()) else {
                return Err(bad("expected `ACCESS_KEY SECRET`".into()));
            };
            ring.insert(Credentials::new(k, s).map_err(|e| bad(e.to_string()))?);
        }
        Ok(ring)
    }

    /// Reads a keys file (see [`KeyRing::parse`]).
    pub fn load(path: &Path) -> Result<Self, KeyError> {
        let text = std::fs::read_to_string(path).map_err(|e| KeyError::Io {
            path: path.display().to_string(),
            source: std::sync::Arc::new(e),
        })?;
        KeyRing::parse(&text)
    }

    /// Checks an `Authorization` header value against `expected` at `now` (Unix seconds),
    /// allowing `leeway` seconds of clock skew. Returns the access key on success.
    pub fn verify(
        &self,
        header: Option<&str>,
        expected: &RequestData,
        now: i64,
        leeway: i64,
    ) -> Result<&AccessKey, AuthError> {
        let header = header.ok_or(AuthError::Missing)?;
        let (scheme, rest) = header.split_once(' ').ok_or(AuthError::Malformed(
            "expected `GL-Geo <access_key>:<token>`",
        ))?;
        if scheme != SCHEME {
            return Err(AuthError::Malformed("the scheme must be GL-Geo"));
        }
        let (key, token) = rest
            .trim()
            .split_once(':')
            .ok_or(AuthError::Malformed("expected `<access_key>:<token>`"))?;
        let key = AccessKey::new(key).map_err(|_| AuthError::Malformed("bad access key"))?;
        let (key, secret) = self.keys.get_key_value(&key).ok_or(AuthError::UnknownKey)?;
        let claims = decode(secret, token)?;
        if now > claims.exp.saturating_add(leeway) {
            return Err(AuthError::Expired);
        }
        if claims.iat > now.saturating_add(leeway)
            || claims.exp.saturating_sub(claims.iat) > MAX_VALIDITY
            || claims.exp > now.saturating_add(MAX_VALIDITY).saturating_add(leeway)
        {
            return Err(AuthError::Immature);
        }
        let expected = expected.to_json();
        if claims.data.len() != expected.len()
            || !constant_eq(claims.data.as_bytes(), expected.as_bytes())
        {
            return Err(AuthError::WrongRequest);
        }
        Ok(key)
    }
}

fn constant_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn decode(secret: &Secret, token: &str) -> Result<Claims, AuthError> {
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(AuthError::Malformed("a JWT has three parts"));
    };
    let header = URL_SAFE_NO_PAD
        .decode(h)
        .map_err(|_| AuthError::Malformed("bad JWT header encoding"))?;
    #[derive(Deserialize)]
    struct Header {
        alg: String,
    }
    let header: Header =
        serde_json::from_slice(&header).map_err(|_| AuthError::Malformed("bad JWT header"))?;
    if header.alg != "HS256" {
        return Err(AuthError::Algorithm);
    }
    let sig = URL_SAFE_NO_PAD
        .decode(s)
        .map_err(|_| AuthError::Malformed("bad JWT signature encoding"))?;
    let mut mac = secret.mac();
    mac.update(h.as_bytes());
    mac.update(b".");
    mac.update(p.as_bytes());
    mac.verify_slice(&sig).map_err(|_| AuthError::Signature)?;
    let payload = URL_SAFE_NO_PAD
        .decode(p)
        .map_err(|_| AuthError::Malformed("bad JWT payload encoding"))?;
    serde_json::from_slice(&payload).map_err(|_| AuthError::Malformed("bad JWT claims"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn creds() -> Credentials {
        Credentials::new(
            "0123456789abcdef0123",
            "abcdefghijklmnopqrstuvwxyz0123456789-_AB",
        )
        .unwrap()
    }

    #[test]
    fn generated_keys_have_gitlab_shapes() {
        let c = Credentials::generate();
        assert_eq!(c.access_key.as_str().len(), ACCESS_KEY_LEN);
        assert_eq!(c.secret.expose().len(), SECRET_LEN);
        assert!(Credentials::new(c.access_key.as_str(), c.secret.expose()).is_ok());
        assert_ne!(Credentials::generate(), c);
    }

    #[test]
    fn debug_and_display_redact_secrets() {
        let c = creds();
        let shown = format!("{c:?} {} {:?}", c.secret, KeyRing::with([c.clone()]));
        assert!(!shown.contains(c.secret.expose()), "{shown}");
        assert!(shown.contains("***") && shown.contains(c.access_key.as_str()));
    }

    #[test]
    fn round_trip_and_every_refusal() {
        let c = creds();
        let ring = KeyRing::with([c.clone()]);
        let data = RequestData::blob("widget", 7);
        let now = 1_000_000;
        let h = c.authorization(&data, now);
        assert_eq!(ring.verify(Some(&h), &data, now, 60), Ok(&c.access_key));
        // Within the leeway either side.
        assert!(
            ring.verify(Some(&h), &data, now + MAX_VALIDITY + 59, 60)
                .is_ok()
        );
        assert!(ring.verify(Some(&h), &data, now - 59, 60).is_ok());
        // Expired.
        assert_eq!(
            ring.verify(Some(&h), &data, now + MAX_VALIDITY + 61, 60),
            Err(AuthError::Expired)
        );
        assert_eq!(
            ring.verify(Some(&h), &data, now + MAX_VALIDITY + 1, 0),
            Err(AuthError::Expired)
        );
        // Issued in the future.
        assert_eq!(
            ring.verify(Some(&h), &data, now - 61, 60),
            Err(AuthError::Immature)
        );
        // Valid for too long.
        let long = format!(
            "{SCHEME} {}:{}",
            c.access_key,
            sign(&c.secret, &data, now, now + 3600)
        );
        assert_eq!(
            ring.verify(Some(&long), &data, now, 60),
            Err(AuthError::Immature)
        );
        // Wrong id or replicable.
        assert_eq!(
            ring.verify(Some(&h), &RequestData::blob("widget", 8), now, 60),
            Err(AuthError::WrongRequest)
        );
        assert_eq!(
            ring.verify(Some(&h), &RequestData::blob("gadget", 7), now, 60),
            Err(AuthError::WrongRequest)
        );
        assert_eq!(
            ring.verify(Some(&h), &RequestData::get("/api/geo/status"), now, 60),
            Err(AuthError::WrongRequest)
        );
        // Missing and malformed.
        assert_eq!(ring.verify(None, &data, now, 60), Err(AuthError::Missing));
        for bad in [
            "",
            "GL-Geo",
            "Bearer x:y",
            "GL-Geo nocolon",
            "GL-Geo short:a.b.c",
            &format!("GL-Geo {}:a.b", c.access_key),
            &format!("GL-Geo {}:a.b.c.d", c.access_key),
        ] {
            assert!(
                matches!(
                    ring.verify(Some(bad), &data, now, 60),
                    Err(AuthError::Malformed(_))
                ),
                "{bad:?}"
            );
        }
        // Unknown key, wrong secret.
        let other = Credentials::generate();
        assert_eq!(
            ring.verify(Some(&other.authorization(&data, now)), &data, now, 60),
            Err(AuthError::UnknownKey)
        );
        let forged = Credentials {
            access_key: c.access_key.clone(),
            secret: other.secret.clone(),
        };
        assert_eq!(
            ring.verify(Some(&forged.authorization(&data, now)), &data, now, 60),
            Err(AuthError::Signature)
        );
        // A tampered payload fails the signature.
        let (head, jwt) = h.split_once(':').unwrap();
        let mut parts: Vec<String> = jwt.split('.').map(str::to_owned).collect();
        let claims = format!(
            r#"{{"data":{},"exp":{},"iat":{}}}"#,
            serde_json::to_string(&RequestData::blob("widget", 8).to_json()).unwrap(),
            now + 60,
            now
        );
        parts[1] = URL_SAFE_NO_PAD.encode(claims);
        let tampered = format!("{head}:{}", parts.join("."));
        assert_eq!(
            ring.verify(Some(&tampered), &RequestData::blob("widget", 8), now, 60),
            Err(AuthError::Signature)
        );
        // alg = none is refused.
        parts[0] = URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#);
        let none = format!("{head}:{}", parts.join("."));
        assert_eq!(
            ring.verify(Some(&none), &RequestData::blob("widget", 8), now, 60),
            Err(AuthError::Algorithm)
        );
    }

    #[test]
    fn keys_file() {
        let ring = KeyRing::parse(
            "# secondaries\n\n0123456789abcdef0123 abcdefghijklmnopqrstuvwxyz0123456789-_AB  eu-west\n\
             aaaaaaaaaaaaaaaaaaaa:abcdefghijklmnopqrstuvwxyz0123456789-_AB\n",
        )
        .unwrap();
        assert_eq!(ring.len(), 2);
        let err = KeyRing::parse("ok\n").unwrap_err();
        assert!(matches!(err, KeyError::BadLine { line: 1, .. }), "{err}");
        let err = KeyRing::parse("0123456789abcdef0123 tooshort\n").unwrap_err();
        assert!(err.to_string().contains("line 1"), "{err}");
    }
}
