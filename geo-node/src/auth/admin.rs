//! Operators' credentials, separate from the site keys: admin tokens with a [`Scope`] for
//! GraphQL and the admin page, and the page's [`Sessions`].
//!
//! A token is `geoadm_` followed by 43 characters of URL-safe base64 (32 random bytes). The keys
//! file keeps only its SHA-256, on a line `admin <read|admin> <sha256 hex> [name]`, so a leaked
//! keys file does not leak a usable token (GitLab stores personal access tokens the same way).
//! A request presents it as `Authorization: Bearer <token>`. The admin page trades it once for
//! a session: a random id in an `HttpOnly; SameSite=Strict` cookie, plus a CSRF token the page
//! sends back in [`CSRF_HEADER`] on every write.

use std::collections::HashMap;
use std::fmt;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore;
use sha2::{Digest, Sha256};

/// The prefix of every admin token.
pub const TOKEN_PREFIX: &str = "geoadm_";

/// The admin page's session cookie.
pub const SESSION_COOKIE: &str = "geo_session";

/// The header a cookie-authenticated write must carry, equal to its session's CSRF token.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// How long a session lasts without use.
pub const SESSION_IDLE: Duration = Duration::from_secs(8 * 3600);

/// Most sessions kept at once; the least recently used goes first.
pub const MAX_SESSIONS: usize = 1000;

/// What an admin credential may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Scope {
    /// Queries only (GitLab's `read_geo_registry`).
    Read,
    /// Queries and mutations: resync, reverify, bulk actions.
    Admin,
}

impl Scope {
    /// `read` or `admin`, as written in the keys file.
    pub const fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Admin => "admin",
        }
    }

    /// Parses [`Scope::as_str`].
    pub fn parse(s: &str) -> Option<Scope> {
        match s {
            "read" => Some(Scope::Read),
            "admin" => Some(Scope::Admin),
            _ => None,
        }
    }

    /// Whether this scope may change things.
    pub fn can_write(self) -> bool {
        self == Scope::Admin
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A new admin token (shown once, never stored).
#[derive(Clone, PartialEq, Eq)]
pub struct AdminToken(String);

impl AdminToken {
    /// A new random token.
    pub fn generate() -> Self {
        let mut b = [0u8; 32];
        rand::rng().fill_bytes(&mut b);
        AdminToken(format!("{TOKEN_PREFIX}{}", URL_SAFE_NO_PAD.encode(b)))
    }

    /// The token, to hand to the operator.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The SHA-256 (hex) kept in the keys file.
    pub fn digest(&self) -> String {
        digest(&self.0)
    }

    /// The keys-file line granting `scope` to this token.
    pub fn keys_file_line(&self, scope: Scope, name: &str) -> String {
        let name: Vec<&str> = name.split_whitespace().collect();
        format!("admin {scope} {} {}", self.digest(), name.join("_"))
    }
}

impl fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AdminToken(***)")
    }
}

fn digest(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// The admin tokens a site accepts, by digest.
#[derive(Clone, Default)]
pub struct AdminTokens {
    by_digest: HashMap<String, (Scope, String)>,
}

impl fmt::Debug for AdminTokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut names: Vec<_> = self
            .by_digest
            .values()
            .map(|(s, n)| format!("{n} ({s})"))
            .collect();
        names.sort();
        f.debug_struct("AdminTokens")
            .field("tokens", &names)
            .finish()
    }
}

impl AdminTokens {
    /// Accepts the token whose SHA-256 is `digest_hex` with `scope`.
    pub fn insert_digest(&mut self, digest_hex: &str, scope: Scope, name: &str) -> bool {
        let ok = digest_hex.len() == 64 && digest_hex.bytes().all(|b| b.is_ascii_hexdigit());
        if ok {
            self.by_digest
                .insert(digest_hex.to_ascii_lowercase(), (scope, name.to_owned()));
        }
        ok
    }

    /// Accepts `token` with `scope`.
    pub fn insert(&mut self, token: &AdminToken, scope: Scope, name: &str) {
        self.by_digest
            .insert(token.digest(), (scope, name.to_owned()));
    }

    /// The scope of `token`, when accepted.
    pub fn verify(&self, token: &str) -> Option<Scope> {
        if !token.starts_with(TOKEN_PREFIX) || token.len() > 200 {
            return None;
        }
        self.by_digest.get(&digest(token)).map(|(s, _)| *s)
    }

    /// Number of tokens.
    pub fn len(&self) -> usize {
        self.by_digest.len()
    }

    /// Whether no token is accepted.
    pub fn is_empty(&self) -> bool {
        self.by_digest.is_empty()
    }
}

/// A signed-in admin page.
#[derive(Clone, PartialEq, Eq)]
pub struct Session {
    /// The cookie value.
    pub id: String,
    /// What the page sends in [`CSRF_HEADER`] on writes.
    pub csrf: String,
    /// The scope of the token it was opened with.
    pub scope: Scope,
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("scope", &self.scope)
            .finish_non_exhaustive()
    }
}

fn random_id() -> String {
    let mut b = [0u8; 32];
    rand::rng().fill_bytes(&mut b);
    URL_SAFE_NO_PAD.encode(b)
}

/// The admin page's sessions, in memory (a restart signs everyone out).
#[derive(Debug, Default)]
pub struct Sessions {
    inner: Mutex<HashMap<String, (Session, Instant)>>,
}

impl Sessions {
    /// Opens a session with `scope`.
    pub fn create(&self, scope: Scope) -> Session {
        let session = Session {
            id: random_id(),
            csrf: random_id(),
            scope,
        };
        let mut map = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        map.retain(|_, (_, used)| now.duration_since(*used) < SESSION_IDLE);
        if map.len() >= MAX_SESSIONS
            && let Some(oldest) = map
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(k, _)| k.clone())
        {
            map.remove(&oldest);
        }
        map.insert(session.id.clone(), (session.clone(), now));
        session
    }

    /// The live session `id` (refreshing its idle time).
    pub fn get(&self, id: &str) -> Option<Session> {
        let mut map = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        match map.get_mut(id) {
            Some((s, used)) if now.duration_since(*used) < SESSION_IDLE => {
                *used = now;
                Some(s.clone())
            }
            Some(_) => {
                map.remove(id);
                None
            }
            None => None,
        }
    }

    /// Ends session `id`.
    pub fn remove(&self, id: &str) {
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_checked_by_digest() {
        let t = AdminToken::generate();
        assert!(t.expose().starts_with(TOKEN_PREFIX));
        assert_eq!(t.expose().len(), TOKEN_PREFIX.len() + 43);
        let line = t.keys_file_line(Scope::Read, "ops team");
        assert!(!line.contains(t.expose()), "the file holds the digest only");
        assert!(line.starts_with("admin read ") && line.ends_with(" ops_team"));
        let mut ring = AdminTokens::default();
        assert!(ring.insert_digest(&t.digest(), Scope::Read, "ops"));
        assert_eq!(ring.verify(t.expose()), Some(Scope::Read));
        assert_eq!(ring.verify(AdminToken::generate().expose()), None);
        assert_eq!(ring.verify(&t.digest()), None);
        assert!(!ring.insert_digest("abc", Scope::Admin, "x"));
        assert!(!format!("{t:?} {ring:?}").contains(t.expose()));
    }

    #[test]
    fn sessions() {
        let s = Sessions::default();
        let a = s.create(Scope::Admin);
        assert_ne!(a.id, a.csrf);
        assert_eq!(s.get(&a.id), Some(a.clone()));
        assert_eq!(s.get("nope"), None);
        s.remove(&a.id);
        assert_eq!(s.get(&a.id), None);
    }
}
