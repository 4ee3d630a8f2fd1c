//! Keys between sites: a secondary's [`AccessKey`] and [`Secret`], its [`Credentials`], and the
//! primary's [`KeyRing`] of accepted keys (read from a keys file).

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE;
use hmac::Mac;
use rand::RngCore;
use serde::{Deserialize, Serialize};

use super::admin::{AdminToken, AdminTokens, Scope};
use super::token::{HmacSha256, sign};
use super::{ACCESS_KEY_LEN, MAX_VALIDITY, RequestData, SCHEME, SECRET_LEN};

/// Why a key or secret is not well formed.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
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
    /// The keys file may be read or written by its group or other users.
    #[error(
        "keys file {path} is accessible by group or others (mode {mode:04o}); it holds secrets: run `chmod 600 {path}`"
    )]
    Exposed {
        /// The file.
        path: String,
        /// Its permission bits.
        mode: u32,
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

    pub(super) fn mac(&self) -> HmacSha256 {
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

/// Keys of the secondaries a primary accepts, by access key.
#[derive(Clone, Default)]
pub struct KeyRing {
    keys: BTreeMap<AccessKey, Secret>,
    admin: AdminTokens,
}

impl fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyRing")
            .field("access_keys", &self.keys.keys().collect::<Vec<_>>())
            .field("admin", &self.admin)
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

    /// The admin tokens of the keys file (lines `admin <scope> <sha256> [name]`).
    pub fn admin_tokens(&self) -> &AdminTokens {
        &self.admin
    }

    /// Accepts an admin token too.
    pub fn insert_admin(&mut self, token: &AdminToken, scope: Scope, name: &str) {
        self.admin.insert(token, scope, name);
    }

    /// Number of site keys (admin tokens are not counted).
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether there is no site key.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Parses a keys file: one `ACCESS_KEY SECRET` (or `ACCESS_KEY:SECRET`) per line, or
    /// `admin <read|admin> <sha256 hex> [name]` for an admin token ([`super::admin`]); `#`
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
            if k == "admin" {
                let scope = Scope::parse(s)
                    .ok_or_else(|| bad(format!("admin scope {s:?} is not `read` or `admin`")))?;
                let digest = parts.next().unwrap_or("");
                let name = parts.next().unwrap_or("admin");
                if !ring.admin.insert_digest(digest, scope, name) {
                    return Err(bad(
                        "expected `admin <read|admin> <sha256 of the token, 64 hex digits> [name]`"
                            .into(),
                    ));
                }
                continue;
            }
            ring.insert(Credentials::new(k, s).map_err(|e| bad(e.to_string()))?);
        }
        Ok(ring)
    }

    /// Reads a keys file (see [`KeyRing::parse`]). As ssh does with a private key, a file that
    /// its group or other users may read or write is refused ([`KeyError::Exposed`]): it holds
    /// the secondaries' secrets.
    pub fn load(path: &Path) -> Result<Self, KeyError> {
        let io = |e: std::io::Error| KeyError::Io {
            path: path.display().to_string(),
            source: std::sync::Arc::new(e),
        };
        let file = std::fs::File::open(path).map_err(io)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = file.metadata().map_err(io)?.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                return Err(KeyError::Exposed {
                    path: path.display().to_string(),
                    mode,
                });
            }
        }
        let text = std::io::read_to_string(file).map_err(io)?;
        KeyRing::parse(&text)
    }

    /// The secret of `key`, with the ring's copy of the key.
    pub(super) fn secret(&self, key: &AccessKey) -> Option<(&AccessKey, &Secret)> {
        self.keys.get_key_value(key)
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    pub(crate) fn creds() -> Credentials {
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
    fn keys_file() {
        let ring = KeyRing::parse(
            "# secondaries\n\n0123456789abcdef0123 abcdefghijklmnopqrstuvwxyz0123456789-_AB  eu-west\n\
             aaaaaaaaaaaaaaaaaaaa:abcdefghijklmnopqrstuvwxyz0123456789-_AB\n",
        )
        .unwrap();
        assert_eq!(ring.len(), 2);
        let token = AdminToken::generate();
        let ring = KeyRing::parse(&format!(
            "0123456789abcdef0123 abcdefghijklmnopqrstuvwxyz0123456789-_AB\n{}\n",
            token.keys_file_line(Scope::Admin, "ops")
        ))
        .unwrap();
        assert_eq!(ring.len(), 1);
        assert_eq!(
            ring.admin_tokens().verify(token.expose()),
            Some(Scope::Admin)
        );
        for bad in ["admin root 00", "admin read xyz", "admin read"] {
            let err = KeyRing::parse(bad).unwrap_err();
            assert!(
                matches!(err, KeyError::BadLine { line: 1, .. }),
                "{bad}: {err}"
            );
        }
        let err = KeyRing::parse("ok\n").unwrap_err();
        assert!(matches!(err, KeyError::BadLine { line: 1, .. }), "{err}");
        let err = KeyRing::parse("0123456789abcdef0123 tooshort\n").unwrap_err();
        assert!(err.to_string().contains("line 1"), "{err}");
    }

    #[cfg(unix)]
    #[test]
    fn a_keys_file_others_may_read_is_refused() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys");
        std::fs::write(
            &path,
            "0123456789abcdef0123 abcdefghijklmnopqrstuvwxyz0123456789-_AB\n",
        )
        .unwrap();
        for mode in [0o644, 0o640, 0o604, 0o620, 0o660] {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            let err = KeyRing::load(&path).unwrap_err();
            assert!(
                matches!(err, KeyError::Exposed { mode: m, .. } if m == mode),
                "{mode:o}: {err}"
            );
            assert!(err.to_string().contains("chmod 600"), "{err}");
        }
        for mode in [0o600, 0o400] {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            assert_eq!(KeyRing::load(&path).unwrap().len(), 1, "{mode:o}");
        }
    }
}
