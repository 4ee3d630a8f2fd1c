//! The admin page at `/admin/geo`, on every node: one HTML shell and its script and style,
//! embedded in the binary (`include_str!`; no CDN, no build step but cargo).
//!
//! The page asks for an admin token once (a plain form, [`route::ADMIN_SESSION`]) and trades
//! it for a session: an `HttpOnly; SameSite=Strict` cookie ([`SESSION_COOKIE`]) plus a CSRF
//! token the script sends in [`CSRF_HEADER`] on every write (checked by [`AdminCaller`]). The
//! sign-in form itself refuses a cross-origin post by its `Origin` header.
//!
//! Everything per type comes from one JSON description, `GET /admin/geo/api/types`
//! ([`ReplicableType::all`], GitLab's `replicable_types`): adding a replicable adds no frontend
//! code. The lists and actions go through GraphQL (`POST /api/graphql`), the overview through
//! `GET /admin/geo/api/status` (the node's [`NodeStatus`]).
//!
//! [`route::ADMIN_SESSION`]: crate::server::route::ADMIN_SESSION

use std::sync::{Arc, OnceLock};

use axum::Json;
use axum::Router;
use axum::extract::rejection::FormRejection;
use axum::extract::{Form, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::api::{NodeStatus, ReplicableType, SiteRole};
use crate::auth::admin::{CSRF_HEADER, SESSION_COOKIE};
use crate::server::extract::AdminCaller;
use crate::server::{ApiError, NodeState, collect_status, route};

const INDEX_HTML: &str = include_str!("assets/index.html");
const APP_JS: &str = include_str!("assets/app.js");
const APP_CSS: &str = include_str!("assets/app.css");

/// What the page's own answers allow: its own script, style and API, nothing else, and no
/// framing.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

/// The routes of the admin page, merged into [`crate::server::router`].
pub fn routes() -> Router<Arc<NodeState>> {
    Router::new()
        .route(route::ADMIN_PAGE, get(page))
        // The address typed with a trailing slash finds the page too.
        .route(
            "/admin/geo/",
            get(|| async { axum::response::Redirect::permanent(route::ADMIN_PAGE) }),
        )
        .route(route::ADMIN_ASSET, get(asset))
        .route(route::ADMIN_SESSION, post(sign_in))
        .route(route::ADMIN_SESSION_DELETE, post(sign_out))
        .route(route::ADMIN_API_SESSION, get(session))
        .route(route::ADMIN_API_TYPES, get(types))
        .route(route::ADMIN_API_STATUS, get(status))
}

/// An embedded asset: its name, content type and text.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static str,
}

const ASSETS: [Asset; 2] = [
    Asset {
        name: "app.js",
        content_type: "text/javascript; charset=utf-8",
        body: APP_JS,
    },
    Asset {
        name: "app.css",
        content_type: "text/css; charset=utf-8",
        body: APP_CSS,
    },
];

/// A short hash of the embedded assets: the page links `app.js?v=<hash>`, so a new binary's
/// assets are never read from an old cache, and the assets can be cached for long.
fn assets_version() -> &'static str {
    static V: OnceLock<String> = OnceLock::new();
    V.get_or_init(|| {
        let mut h = Sha256::new();
        for a in &ASSETS {
            h.update(a.body.as_bytes());
        }
        hex::encode(&h.finalize()[..6])
    })
}

/// The shell, with the sign-in form showing `message` when it is given.
fn shell(status: StatusCode, login_message: Option<&str>) -> Response {
    let html = INDEX_HTML.replace("{{v}}", assets_version()).replace(
        "{{login_message}}",
        &login_message.map(escape_html).unwrap_or_default(),
    );
    let mut res = (status, html).into_response();
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    security_headers(h);
    res
}

fn security_headers(h: &mut HeaderMap) {
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
}

fn escape_html(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// `GET /admin/geo`: the shell. The script asks [`session`] whether it is signed in and shows
/// the sign-in form when not.
async fn page() -> Response {
    shell(StatusCode::OK, None)
}

/// `GET /admin/geo/assets/{file}`.
async fn asset(Path(file): Path<String>) -> Response {
    let Some(a) = ASSETS.iter().find(|a| a.name == file) else {
        return ApiError::no_such_endpoint().into_response();
    };
    let mut res = a.body.into_response();
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(a.content_type),
    );
    // Linked as `?v=<hash of the assets>`: a changed asset has a new URL.
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=86400, immutable"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    res
}

/// The sign-in form.
#[derive(Deserialize)]
struct SignIn {
    token: String,
}

/// Whether a form post comes from this site: a browser sends `Origin` on every POST, and it must
/// name the host the request was sent to. A post without `Origin` (a script, curl) is not a
/// cross-site request a browser could be tricked into.
fn same_origin(headers: &HeaderMap) -> bool {
    if headers
        .get("sec-fetch-site")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == "cross-site" || v == "same-site")
    {
        return false;
    }
    let Some(origin) = headers.get(header::ORIGIN) else {
        return true;
    };
    let (Ok(origin), Some(host)) = (
        origin.to_str(),
        headers.get(header::HOST).and_then(|h| h.to_str().ok()),
    ) else {
        return false;
    };
    origin
        .split_once("://")
        .is_some_and(|(scheme, rest)| matches!(scheme, "http" | "https") && rest == host)
}

/// `POST /admin/geo/session` (`token=…`): opens a session and sends the page back to
/// `/admin/geo` (303); a refused token is `401` with the form and a message.
async fn sign_in(
    State(state): State<Arc<NodeState>>,
    headers: HeaderMap,
    form: Result<Form<SignIn>, FormRejection>,
) -> Response {
    if !same_origin(&headers) {
        tracing::warn!("refused a cross-origin admin sign-in");
        state.metrics().admin_auth_failure();
        return shell(
            StatusCode::FORBIDDEN,
            Some("Sign-in refused: the form was posted from another site."),
        );
    }
    let token = form.map(|Form(f)| f.token).unwrap_or_default();
    let Some(scope) = state.admin_tokens().verify(token.trim()) else {
        tracing::warn!("refused an admin sign-in: unknown token");
        state.metrics().admin_auth_failure();
        return shell(
            StatusCode::UNAUTHORIZED,
            Some("That admin token is not valid on this site."),
        );
    };
    let session = state.sessions().create(scope);
    tracing::info!(scope = %scope, "admin page signed in");
    // `Secure` when the form came over HTTPS (a browser's `Origin` says so); a plain-HTTP
    // loopback site would never get a `Secure` cookie back.
    let secure = headers
        .get(header::ORIGIN)
        .and_then(|o| o.to_str().ok())
        .is_some_and(|o| o.starts_with("https://"));
    let cookie = format!(
        "{SESSION_COOKIE}={}; HttpOnly; SameSite=Strict; Path=/{}",
        session.id,
        if secure { "; Secure" } else { "" }
    );
    let mut res = StatusCode::SEE_OTHER.into_response();
    let h = res.headers_mut();
    h.insert(
        header::LOCATION,
        HeaderValue::from_static(route::ADMIN_PAGE),
    );
    h.insert(
        header::SET_COOKIE,
        HeaderValue::from_str(&cookie).expect("a session id is URL-safe base64"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}

/// `POST /admin/geo/session/delete`: ends the session (a write: it needs the CSRF header).
async fn sign_out(State(state): State<Arc<NodeState>>, caller: AdminCaller) -> Response {
    if let Some(s) = &caller.session {
        state.sessions().remove(&s.id);
    }
    let mut res = StatusCode::NO_CONTENT.into_response();
    let expired = format!("{SESSION_COOKIE}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0");
    res.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_str(&expired).expect("a constant cookie"),
    );
    res
}

/// The body of `GET /admin/geo/api/session`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionInfo {
    /// What the caller may do.
    pub scope: String,
    /// The token to send in [`CSRF_HEADER`] on writes (`null` for a Bearer caller).
    pub csrf: Option<String>,
    /// The header's name.
    pub csrf_header: String,
    /// This node.
    pub node: NodeInfo,
}

/// The node the page runs on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// Its name.
    pub name: String,
    /// Its roles.
    pub role: SiteRole,
}

/// `GET /admin/geo/api/session`: who is signed in, or `401`.
async fn session(State(state): State<Arc<NodeState>>, caller: AdminCaller) -> Json<SessionInfo> {
    Json(SessionInfo {
        scope: caller.scope.as_str().to_owned(),
        csrf: caller.session.map(|s| s.csrf),
        csrf_header: CSRF_HEADER.to_owned(),
        node: NodeInfo {
            name: state.name().to_owned(),
            role: SiteRole::of(state.is_primary(), state.secondary_service().is_some()),
        },
    })
}

/// `GET /admin/geo/api/types`: the one description the page is driven by.
async fn types(_: AdminCaller) -> Json<Vec<ReplicableType>> {
    Json(ReplicableType::all())
}

/// `GET /admin/geo/api/status`: the node's status, for an operator.
async fn status(
    State(state): State<Arc<NodeState>>,
    _: AdminCaller,
) -> Result<Json<NodeStatus>, ApiError> {
    tokio::task::spawn_blocking(move || collect_status(&state))
        .await
        .map(Json)
        .map_err(|e| ApiError::internal(format!("worker failed: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn sign_in_is_refused_from_another_origin() {
        assert!(same_origin(&headers(&[("host", "geo.example:8080")])));
        assert!(same_origin(&headers(&[
            ("host", "geo.example:8080"),
            ("origin", "https://geo.example:8080")
        ])));
        assert!(!same_origin(&headers(&[
            ("host", "geo.example:8080"),
            ("origin", "https://evil.example")
        ])));
        assert!(!same_origin(&headers(&[
            ("host", "geo.example"),
            ("origin", "null")
        ])));
        assert!(!same_origin(&headers(&[
            ("host", "geo.example"),
            ("sec-fetch-site", "cross-site")
        ])));
    }

    #[test]
    fn the_shell_links_versioned_assets_and_escapes_the_message() {
        assert!(INDEX_HTML.contains("{{v}}") && INDEX_HTML.contains("{{login_message}}"));
        assert_eq!(
            escape_html("<b a=\"x\">&'"),
            "&lt;b a=&quot;x&quot;&gt;&amp;&#39;"
        );
        assert_eq!(assets_version().len(), 12);
    }
}
