//! The token of a request: what it is bound to ([`RequestData`]), the HS256 JWT that carries
//! it ([`sign`]), and its check on the primary ([`KeyRing::verify`], refusals as [`AuthError`]).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use super::{AccessKey, KeyRing, MAX_VALIDITY, SCHEME, Secret};

pub(super) type HmacSha256 = Hmac<Sha256>;

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
#[non_exhaustive]
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

impl KeyRing {
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
        let (key, secret) = self.secret(&key).ok_or(AuthError::UnknownKey)?;
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

impl KeyRing {
    /// The access key an `Authorization` header names, when this ring knows it (whether or
    /// not the token is valid): who to blame for a refusal.
    pub fn named_key(&self, header: Option<&str>) -> Option<&AccessKey> {
        let rest = header?.strip_prefix(SCHEME)?.strip_prefix(' ')?;
        let (key, _) = rest.trim().split_once(':')?;
        let key = AccessKey::new(key).ok()?;
        self.secret(&key).map(|(k, _)| k)
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
    use crate::auth::keys::tests::creds;
    use crate::auth::{Credentials, SCHEME};

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
}
