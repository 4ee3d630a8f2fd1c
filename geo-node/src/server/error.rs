//! [`ApiError`]: every error answer of the API, its status and its [`ErrorBody`], decided here.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use geo_diesel::geo_core::blob_store::BlobError;
use geo_diesel::geo_core::source::SourceError;

use crate::api::{ErrorBody, geo_code};

/// The message of every refused site token: the same body whatever the reason, so a prober
/// learns nothing from it (the reason is counted and logged on the server).
pub const UNAUTHORIZED_MESSAGE: &str = "the request's GL-Geo token was refused";

/// The one message of every refused operator's request (see [`ApiError::admin_unauthorized`]).
pub const ADMIN_UNAUTHORIZED_MESSAGE: &str = "an admin token is needed: send `Authorization: Bearer \
     <admin token>`, or sign in on the admin page (a missing, unknown or ended token or session \
     is refused alike)";

/// An error answer: a status and a JSON [`ErrorBody`] (`{"geo_code": …, "message": …}`).
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    body: ErrorBody,
    retry_after: Option<u32>,
}

impl ApiError {
    fn new(status: StatusCode, code: &str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            body: ErrorBody {
                geo_code: code.to_owned(),
                message: message.into(),
                pruned_through: None,
                consumed: None,
            },
            retry_after: None,
        }
    }

    /// Seconds the client should wait before retrying (`Retry-After`), when the answer says.
    pub fn retry_after(&self) -> Option<u32> {
        self.retry_after
    }

    /// The answer's status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The answer's body.
    pub fn body(&self) -> &ErrorBody {
        &self.body
    }

    /// `400 BAD_REQUEST`: a malformed parameter.
    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, geo_code::BAD_REQUEST, message)
    }

    /// `400 UNKNOWN_REPLICABLE`: a replicable name this site does not have (or could not have).
    pub(crate) fn unknown_replicable(message: impl Into<String>) -> Self {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            geo_code::UNKNOWN_REPLICABLE,
            message,
        )
    }

    /// `401 UNAUTHORIZED`: a refused site token, one body for every reason (missing,
    /// malformed, unknown key, bad signature, expired, bound to another request).
    pub(crate) fn unauthorized() -> Self {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            geo_code::UNAUTHORIZED,
            UNAUTHORIZED_MESSAGE,
        )
    }

    /// `429 TOO_MANY_REQUESTS` with `Retry-After`: the caller's access key has as many
    /// requests in flight as it may.
    pub(crate) fn too_many_requests(limit: usize, retry_after: u32) -> Self {
        let mut e = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            geo_code::TOO_MANY_REQUESTS,
            format!("this access key has {limit} requests in flight already: retry later"),
        );
        e.retry_after = Some(retry_after);
        e
    }

    /// `401 UNAUTHORIZED` for an operator's request, one body for every reason (no token or
    /// session, a malformed header, an unknown token, an ended session): the answer says what
    /// to send, not which check failed.
    pub(crate) fn admin_unauthorized() -> Self {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            geo_code::UNAUTHORIZED,
            ADMIN_UNAUTHORIZED_MESSAGE,
        )
    }

    /// `403 FORBIDDEN`: authenticated, but not allowed (a read-only token writing, a site key on
    /// an operator's endpoint, a cookie write without its CSRF token).
    pub(crate) fn forbidden(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::FORBIDDEN, geo_code::FORBIDDEN, message)
    }

    /// `403 BLOB_PATH_REFUSED`: a stored path that is absolute, has `..` or leaves the store.
    pub(crate) fn blob_path_refused(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::FORBIDDEN, geo_code::BLOB_PATH_REFUSED, message)
    }

    /// `404 NOT_A_PRIMARY`: primary data asked of a site that is not one.
    pub(crate) fn not_a_primary() -> Self {
        ApiError::new(
            StatusCode::NOT_FOUND,
            geo_code::NOT_A_PRIMARY,
            "this site is not a primary",
        )
    }

    /// `404 BAD_REQUEST`: no such endpoint.
    pub(crate) fn no_such_endpoint() -> Self {
        ApiError::new(
            StatusCode::NOT_FOUND,
            geo_code::BAD_REQUEST,
            "no such endpoint",
        )
    }

    /// `410 EVENTS_PRUNED`: the events after what the caller consumed are pruned, through
    /// `pruned_through` (both in the body).
    pub(crate) fn events_pruned(pruned_through: i64, consumed: i64) -> Self {
        let e = SourceError::EventsPruned {
            pruned_through,
            consumed,
        };
        let mut a = ApiError::new(StatusCode::GONE, geo_code::EVENTS_PRUNED, e.to_string());
        a.body.pruned_through = Some(pruned_through);
        a.body.consumed = Some(consumed);
        a
    }

    /// `500 INTERNAL`.
    pub(crate) fn internal(message: impl Into<String>) -> Self {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            geo_code::INTERNAL,
            message,
        )
    }

    /// `503 UNAVAILABLE`: a temporary failure (reading `what` failed with `e`).
    pub(crate) fn transient(
        what: impl Into<String>,
        e: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        ApiError::from(SourceError::transient(what.into(), e))
    }
}

impl From<SourceError> for ApiError {
    fn from(e: SourceError) -> Self {
        ApiError::from(&e)
    }
}

impl From<&SourceError> for ApiError {
    fn from(e: &SourceError) -> Self {
        if let SourceError::EventsPruned {
            pruned_through,
            consumed,
        } = e
        {
            return ApiError::events_pruned(*pruned_through, *consumed);
        }
        let (status, code) = match e {
            SourceError::UnknownReplicable { .. } => {
                (StatusCode::BAD_REQUEST, geo_code::UNKNOWN_REPLICABLE)
            }
            SourceError::RecordNotFound { .. } => {
                (StatusCode::NOT_FOUND, geo_code::RECORD_NOT_FOUND)
            }
            SourceError::MissingOnPrimary { .. } => {
                (StatusCode::NOT_FOUND, geo_code::FILE_NOT_FOUND)
            }
            SourceError::Transient { source, .. } | SourceError::Other { source, .. }
                if matches!(
                    source.downcast_ref::<BlobError>(),
                    Some(BlobError::Escapes { .. } | BlobError::InvalidPath(_))
                ) =>
            {
                (StatusCode::FORBIDDEN, geo_code::BLOB_PATH_REFUSED)
            }
            SourceError::Transient { .. } | SourceError::Unauthorized { .. } => {
                (StatusCode::SERVICE_UNAVAILABLE, geo_code::UNAVAILABLE)
            }
            _ => (StatusCode::INTERNAL_SERVER_ERROR, geo_code::INTERNAL),
        };
        ApiError::new(status, code, e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, Json(self.body)).into_response();
        if let Some(secs) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_errors_map_to_gitlab_codes() {
        let cases = [
            (
                SourceError::MissingOnPrimary {
                    replicable: "widget".into(),
                    id: 7,
                },
                404,
                geo_code::FILE_NOT_FOUND,
            ),
            (
                SourceError::RecordNotFound {
                    replicable: "widget".into(),
                    id: 7,
                },
                404,
                geo_code::RECORD_NOT_FOUND,
            ),
            (
                SourceError::UnknownReplicable {
                    replicable: "x".into(),
                },
                400,
                geo_code::UNKNOWN_REPLICABLE,
            ),
            (
                SourceError::transient("db", "busy"),
                503,
                geo_code::UNAVAILABLE,
            ),
            (SourceError::other("db", "bad"), 500, geo_code::INTERNAL),
            (
                SourceError::EventsPruned {
                    pruned_through: 9,
                    consumed: 4,
                },
                410,
                geo_code::EVENTS_PRUNED,
            ),
            (
                SourceError::transient(
                    "open",
                    BlobError::Escapes {
                        path: "link/x".into(),
                    },
                ),
                403,
                geo_code::BLOB_PATH_REFUSED,
            ),
        ];
        for (e, status, code) in cases {
            let a = ApiError::from(&e);
            assert_eq!(
                (a.status().as_u16(), a.body().geo_code.as_str()),
                (status, code),
                "{e}"
            );
        }
        let body = serde_json::to_string(&ApiError::no_such_endpoint().body).unwrap();
        assert_eq!(
            body,
            r#"{"geo_code":"BAD_REQUEST","message":"no such endpoint"}"#
        );
    }

    #[test]
    fn a_limited_caller_is_told_when_to_retry() {
        let r = ApiError::too_many_requests(16, 1).into_response();
        assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(r.headers()[header::RETRY_AFTER], "1");
        let r = ApiError::unauthorized().into_response();
        assert!(r.headers().get(header::RETRY_AFTER).is_none());
    }
}
