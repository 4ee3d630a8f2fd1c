//! What handlers take from a request, each checked once here: the GL-Geo token ([`Authorized`],
//! [`AuthorizedBlob`]), the path's replicable and id ([`Replicable`], [`Record`]), the query
//! ([`Params`]) and the primary half of the site ([`Primary`]). Each rejects with an
//! [`ApiError`]; handlers list them in the order the checks run.
//!
//! A refused token is answered with one `401` body whatever the reason; the reason is counted
//! (`geo_auth_failures_total{reason}`) and logged at most once per source per window
//! ([`crate::auth::failures`]). An accepted one takes a place under its access key's limit on
//! requests in flight, or is answered `429` with `Retry-After`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{ConnectInfo, FromRequestParts, Path, Query};
use axum::http::request::Parts;
use axum::http::{Method, header};
use geo_diesel::geo_core::find_replicable;
use serde::de::DeserializeOwned;

use super::middleware::KeySlot;
use super::{ApiError, NodeState, PrimaryService};
use crate::api;
use crate::auth::admin::{CSRF_HEADER, SESSION_COOKIE};
use crate::auth::{AccessKey, AuthError, FailureSource, RequestData, Scope, Session};

/// Seconds a caller over its per-key limit is told to wait (`Retry-After`).
const RETRY_AFTER_SECS: u32 = 1;

/// Proof that the request carries a valid GL-Geo token bound to its method, path and query
/// (`{"request": "GET /api/geo/events?after=0"}`).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Authorized {
    /// The caller's access key (its secret is the pair's shared secret).
    pub key: AccessKey,
}

impl FromRequestParts<Arc<NodeState>> for Authorized {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<NodeState>,
    ) -> Result<Self, ApiError> {
        let data = RequestData::get(parts.uri.path_and_query().map_or("/", |p| p.as_str()));
        let key = authorize(parts, state, &data)?;
        Ok(Authorized { key })
    }
}

/// A blob request (`/{replicable}/{id}`) whose token is bound to that replicable and id, as
/// GitLab binds `retrieve`: the id is checked first (`400`), then the token (`401`), then the
/// replicable (`400 UNKNOWN_REPLICABLE`).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct AuthorizedBlob {
    /// The replicable, as registered.
    pub name: &'static str,
    /// The record id.
    pub id: i64,
    /// The caller's access key.
    pub key: AccessKey,
}

impl FromRequestParts<Arc<NodeState>> for AuthorizedBlob {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<NodeState>,
    ) -> Result<Self, ApiError> {
        let (replicable, id) = path::<(String, String)>(parts, state).await?;
        let id = parse_id(&id)?;
        let key = authorize(parts, state, &RequestData::blob(&replicable, id))?;
        Ok(AuthorizedBlob {
            name: known_replicable(&replicable)?,
            id,
            key,
        })
    }
}

/// The registered replicable named by the path (`/{replicable}`).
#[derive(Debug, Clone, Copy)]
pub struct Replicable(pub &'static str);

impl FromRequestParts<Arc<NodeState>> for Replicable {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<NodeState>,
    ) -> Result<Self, ApiError> {
        let name = path::<String>(parts, state).await?;
        Ok(Replicable(known_replicable(&name)?))
    }
}

/// A record named by the path (`/{replicable}/{id}`): the id is checked before the name.
#[derive(Debug, Clone, Copy)]
pub struct Record {
    /// The replicable, as registered.
    pub name: &'static str,
    /// The record id.
    pub id: i64,
}

impl FromRequestParts<Arc<NodeState>> for Record {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<NodeState>,
    ) -> Result<Self, ApiError> {
        let (name, id) = path::<(String, String)>(parts, state).await?;
        let id = parse_id(&id)?;
        Ok(Record {
            name: known_replicable(&name)?,
            id,
        })
    }
}

/// The query string, decoded; a malformed one is `400 BAD_REQUEST`.
#[derive(Debug, Clone)]
pub struct Params<T>(pub T);

impl<T: DeserializeOwned + Send> FromRequestParts<Arc<NodeState>> for Params<T> {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<NodeState>,
    ) -> Result<Self, ApiError> {
        let Query(q) = Query::<T>::from_request_parts(parts, state)
            .await
            .map_err(|e| ApiError::bad_request(e.body_text()))?;
        Ok(Params(q))
    }
}

/// The primary half of the site; `404 NOT_A_PRIMARY` on a site that is not a primary.
#[derive(Clone)]
pub struct Primary(pub PrimaryService);

impl FromRequestParts<Arc<NodeState>> for Primary {
    type Rejection = ApiError;

    async fn from_request_parts(
        _parts: &mut Parts,
        state: &Arc<NodeState>,
    ) -> Result<Self, ApiError> {
        state
            .primary_service()
            .cloned()
            .map(Primary)
            .ok_or_else(ApiError::not_a_primary)
    }
}

/// An operator: an admin token (`Authorization: Bearer …`) or the admin page's session cookie.
/// Refuses with `401` when neither is valid, `403` for a site key (`GL-Geo`, which may not
/// administer) and for a cookie-authenticated write without its CSRF token ([`CSRF_HEADER`]).
/// Handlers that change things check [`AdminCaller::require_write`].
#[derive(Debug, Clone)]
pub struct AdminCaller {
    /// What the credential may do.
    pub scope: Scope,
    /// The admin page's session, when the request came with its cookie.
    pub session: Option<Session>,
}

impl AdminCaller {
    /// `403` unless the caller may change things.
    pub fn require_write(&self) -> Result<(), ApiError> {
        if self.scope.can_write() {
            Ok(())
        } else {
            Err(ApiError::forbidden("this token is read-only"))
        }
    }
}

impl FromRequestParts<Arc<NodeState>> for AdminCaller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<NodeState>,
    ) -> Result<Self, ApiError> {
        admin_caller(parts, state).inspect_err(|e| {
            state.metrics().admin_auth_failure();
            if let Some(suppressed) = state.auth_log().record(peer_source(parts), Instant::now()) {
                tracing::warn!(
                    status = e.status().as_u16(),
                    reason = %e.body().message,
                    suppressed,
                    "refused an operator's request"
                );
            }
        })
    }
}

fn admin_caller(parts: &Parts, state: &NodeState) -> Result<AdminCaller, ApiError> {
    // The answer is the same for every reason; the log says which.
    let refuse = |reason: &'static str| {
        tracing::debug!(reason, "refused an operator's request");
        ApiError::admin_unauthorized()
    };
    if let Some(value) = parts.headers.get(header::AUTHORIZATION) {
        let value = value.to_str().unwrap_or("");
        if value.starts_with(crate::auth::SCHEME) {
            return Err(ApiError::forbidden(
                "site keys cannot use the operator's API: use an admin token",
            ));
        }
        let token = value
            .strip_prefix("Bearer ")
            .ok_or_else(|| refuse("not a Bearer token"))?;
        let scope = state
            .admin_tokens()
            .verify(token.trim())
            .ok_or_else(|| refuse("unknown admin token"))?;
        return Ok(AdminCaller {
            scope,
            session: None,
        });
    }
    let id = session_cookie(parts).ok_or_else(|| refuse("no token and no session"))?;
    let session = state
        .sessions()
        .get(id)
        .ok_or_else(|| refuse("the session has ended"))?;
    let safe = matches!(parts.method, Method::GET | Method::HEAD);
    if !safe {
        let sent = parts
            .headers
            .get(CSRF_HEADER)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if !constant_time_eq(sent.as_bytes(), session.csrf.as_bytes()) {
            return Err(ApiError::forbidden(format!(
                "a write from the admin page needs its {CSRF_HEADER} header"
            )));
        }
    }
    Ok(AdminCaller {
        scope: session.scope,
        session: Some(session),
    })
}

/// The admin session cookie's value.
pub fn session_cookie(parts: &Parts) -> Option<&str> {
    parts
        .headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == SESSION_COOKIE)
        .map(|(_, v)| v)
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Checks the request's token against `data` and takes a place under the caller's per-key
/// limit. A refusal is counted and (rate-limited) logged here, and always answers the same
/// `401` body.
fn authorize(parts: &Parts, state: &NodeState, data: &RequestData) -> Result<AccessKey, ApiError> {
    let header = parts
        .headers
        .get(header::AUTHORIZATION)
        .map(|v| v.to_str().unwrap_or(""));
    let key = state
        .verify_token(header, data)
        .map_err(|e| refused(parts, state, header, &e))?;
    if let Some(slot) = parts.extensions.get::<KeySlot>()
        && !slot.is_held()
    {
        let limits = state.key_limits();
        let permit = limits.try_acquire(&key).ok_or_else(|| {
            state.metrics().key_limited();
            tracing::debug!(key = %key, limit = limits.max(), "over the per-key limit");
            ApiError::too_many_requests(limits.max(), RETRY_AFTER_SECS)
        })?;
        slot.put(permit);
    }
    Ok(key)
}

/// Counts a refused token, logs it unless its source was logged within the window, and
/// answers the one `401`.
fn refused(parts: &Parts, state: &NodeState, header: Option<&str>, e: &AuthError) -> ApiError {
    state.metrics().auth_failure(e);
    let source = match state.keys().named_key(header) {
        Some(key) => FailureSource::Key(key.clone()),
        None => peer_source(parts),
    };
    if let Some(suppressed) = state.auth_log().record(source.clone(), Instant::now()) {
        tracing::warn!(
            reason = %e,
            source = %source,
            suppressed,
            path = parts.uri.path(),
            "refused a Geo request"
        );
    }
    ApiError::unauthorized()
}

/// The peer's address as the source of a refusal.
fn peer_source(parts: &Parts) -> FailureSource {
    parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(FailureSource::Other, |c| FailureSource::Peer(c.0.ip()))
}

/// The path parameters; an undecodable path is `400 BAD_REQUEST`.
async fn path<T: DeserializeOwned + Send>(
    parts: &mut Parts,
    state: &Arc<NodeState>,
) -> Result<T, ApiError> {
    Path::<T>::from_request_parts(parts, state)
        .await
        .map(|Path(p)| p)
        .map_err(|e| ApiError::bad_request(e.body_text()))
}

/// A record id: a positive integer.
fn parse_id(s: &str) -> Result<i64, ApiError> {
    match s.parse::<i64>() {
        Ok(id) if id > 0 => Ok(id),
        _ => Err(ApiError::bad_request(format!("bad id {s:?}"))),
    }
}

/// The registered replicable named `name`.
fn known_replicable(name: &str) -> Result<&'static str, ApiError> {
    if !api::valid_replicable_name(name) {
        return Err(ApiError::unknown_replicable("bad replicable name"));
    }
    find_replicable(name)
        .map(|d| d.name)
        .ok_or_else(|| ApiError::unknown_replicable(format!("unknown replicable {name:?}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_positive_integers() {
        assert_eq!(parse_id("7").unwrap(), 7);
        for bad in ["0", "-1", "1.5", "", "../x", "99999999999999999999"] {
            assert_eq!(parse_id(bad).unwrap_err().status().as_u16(), 400, "{bad}");
        }
        let e = known_replicable("../etc").unwrap_err();
        assert_eq!(e.body().geo_code, api::geo_code::UNKNOWN_REPLICABLE);
    }
}
