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
//! Operators use separate credentials: admin tokens with a read or admin [`Scope`], for GraphQL
//! and the admin page ([`admin`]).
//!
//! Every refused token gets the same `401` body, whatever the reason (no oracle for a
//! prober); the reason goes to the `geo_auth_failures_total{reason}` counter and to a log line
//! rate-limited per source ([`failures`]).
//!
//! Secrets never appear in logs: [`Secret`]'s `Debug` and `Display` print `***`.

pub mod admin;
pub mod failures;
mod keys;
pub mod mac;
mod token;

pub use admin::{AdminToken, AdminTokens, Scope, Session, Sessions};
pub use failures::{FailureLog, FailureSource};
pub use keys::{AccessKey, Credentials, KeyError, KeyRing, Secret};
pub use token::{AuthError, RequestData, sign};

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
