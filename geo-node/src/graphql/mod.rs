//! GraphQL at `POST /api/graphql`, GitLab Geo's names and shapes (behaviour notes §11), built at
//! start from the registered replicables: no per-type resolver, finder or type is written
//! anywhere.
//!
//! ```graphql
//! query {
//!   geoNode {
//!     name primary filesMaxCapacity verificationMaxCapacity minimumReverificationInterval
//!     widgetRegistries(replicationState: FAILED, first: 20) {      # on a secondary
//!       count pageInfo { hasNextPage endCursor }
//!       nodes { id widgetId state lastSyncFailure verificationState }
//!     }
//!     widgetRecords(verificationState: FAILED) { nodes { id file verificationFailure } }  # on the primary
//!   }
//! }
//! mutation { geoRegistriesUpdate(input: {registryId: "gid://geo/WidgetRegistry/7", action: RESYNC}) { registry { ... on WidgetRegistry { state } } errors } }
//! mutation { geoRegistriesBulkUpdate(input: {registryClass: WIDGET_REGISTRY, action: RESYNC_ALL, replicationState: FAILED}) { registryClass errors } }
//! ```
//!
//! Per type (names from [`ReplicableType`]): a connection `<camelName>Registries` of
//! `<Type>Registry` rows on a secondary (every field of GitLab's `RegistryType` plus
//! `<camelName>Id` and our `blobPath`), and `<camelName>Records` of `<Type>Record` on the
//! primary (the records and their checksum state: GitLab's "Data management"). Arguments:
//! `ids`, `replicationState`, `verificationState`, `keyword`, `sort`, `first/after/last/before`
//! (at most [`MAX_PAGE`](geo_diesel::admin::MAX_PAGE) rows a page). Filtering by verification state on a type without
//! verification is a GraphQL error.
//!
//! Who may ask ([`AdminCaller`]): an admin token (`Authorization: Bearer`) or the admin page's
//! session; `401` without, `403` for a site key, and `403` for a read-only token sending a
//! mutation. Depth and complexity are limited; introspection is for the `admin` scope only.

mod mutations;
mod nodes;
mod paging;

use std::sync::Arc;

use async_graphql::dynamic::{
    Field, FieldFuture, FieldValue, Object, Schema, SchemaError, TypeRef,
};
use async_graphql::parser::types::OperationType;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use geo_diesel::admin::AdminError;
use geo_diesel::db::DbPool;
use geo_diesel::geo_core::{ReplicableDescriptor, replicables};

use crate::api::ReplicableType;
use crate::server::extract::AdminCaller;
use crate::server::{ApiError, NodeState};

/// Deepest query accepted (the standard introspection query needs 13).
pub const MAX_DEPTH: usize = 16;

/// Most fields one query may select.
pub const MAX_COMPLEXITY: usize = 1000;

/// What every resolver sees: the site and who is asking.
pub(crate) struct Ctx {
    pub(crate) state: Arc<NodeState>,
}

impl Ctx {
    /// The secondary's tracking database, or why there is none.
    pub(crate) fn tracking(&self) -> async_graphql::Result<DbPool> {
        self.state
            .secondary_service()
            .map(|s| s.secondary.tracking().clone())
            .ok_or_else(|| "this site is not a secondary: it has no registries".into())
    }

    /// The primary's database, or why there is none.
    pub(crate) fn primary_db(&self) -> async_graphql::Result<DbPool> {
        self.state
            .primary_service()
            .and_then(|p| p.db.clone())
            .ok_or_else(|| "this site is not a primary with a local database".into())
    }
}

/// A registered type with its GraphQL names.
#[derive(Debug, Clone)]
pub(crate) struct Kind {
    pub(crate) d: &'static ReplicableDescriptor,
    pub(crate) names: ReplicableType,
}

impl Kind {
    fn all() -> Vec<Arc<Kind>> {
        replicables()
            .into_iter()
            .map(|d| {
                Arc::new(Kind {
                    d,
                    names: ReplicableType::of(d),
                })
            })
            .collect()
    }
}

/// Runs `f` on tokio's blocking pool with a connection from `db`.
pub(crate) async fn with_db<T: Send + 'static>(
    db: DbPool,
    f: impl FnOnce(&mut geo_diesel::db::PooledConn) -> Result<T, AdminError> + Send + 'static,
) -> async_graphql::Result<T> {
    tokio::task::spawn_blocking(move || {
        let mut conn = db.get().map_err(nodes::pool_error).map_err(admin_error)?;
        f(&mut conn).map_err(admin_error)
    })
    .await
    .map_err(|e| async_graphql::Error::new(format!("worker failed: {e}")))?
}

/// An [`AdminError`] as a GraphQL error: the argument errors say what is wrong; database
/// failures are logged and reported without their SQL.
pub(crate) fn admin_error(e: AdminError) -> async_graphql::Error {
    match e {
        AdminError::BadCursor | AdminError::BadArgument(_) => {
            async_graphql::Error::new(e.to_string())
        }
        other => {
            tracing::warn!(error = %other, "GraphQL query failed");
            async_graphql::Error::new(format!("database error: {other}"))
        }
    }
}

/// A `GeoNode` field read from the site's state (`None` is `null`).
fn site_field(
    name: &'static str,
    ty: TypeRef,
    get: fn(&NodeState) -> Option<async_graphql::Value>,
) -> Field {
    Field::new(name, ty, move |ctx| {
        FieldFuture::new(async move {
            let c = ctx.data::<Ctx>()?;
            Ok(get(&c.state).map(FieldValue::value))
        })
    })
}

/// The schema of this build's replicables.
pub fn schema() -> Result<Schema, SchemaError> {
    let kinds = Kind::all();
    let mut geo_node = Object::new("GeoNode")
        .description("The current site (GitLab's GeoNode)")
        .field(site_field(
            "name",
            TypeRef::named_nn(TypeRef::STRING),
            |s| Some(s.name().into()),
        ))
        .field(site_field(
            "primary",
            TypeRef::named_nn(TypeRef::BOOLEAN),
            |s| Some(s.is_primary().into()),
        ))
        .field(site_field(
            "filesMaxCapacity",
            TypeRef::named(TypeRef::INT),
            |s| {
                let s = s.secondary_service()?;
                Some((s.secondary.config().sync_capacity as i64).into())
            },
        ))
        .field(site_field(
            "verificationMaxCapacity",
            TypeRef::named(TypeRef::INT),
            |s| {
                let threads = match (s.secondary_service(), s.primary_service()) {
                    (Some(sec), _) => sec.secondary.config().verification_threads,
                    (None, Some(p)) => p.verifier.as_ref()?.config().verification_threads,
                    (None, None) => return None,
                };
                Some((threads as i64).into())
            },
        ))
        .field(site_field(
            "minimumReverificationInterval",
            TypeRef::named(TypeRef::INT),
            |s| {
                let v = s.primary_service()?.verifier.as_ref()?;
                Some(v.config().reverification_interval.num_days().into())
            },
        ));
    let mut builder_types = Vec::new();
    for kind in &kinds {
        geo_node = geo_node.field(nodes::registries_field(kind));
        geo_node = geo_node.field(nodes::records_field(kind));
        builder_types.extend(nodes::types(kind));
    }
    // `geoNode(name:)` of another site is null: one site cannot read another's tracking data.
    let query = Object::new("Query").field(
        Field::new("geoNode", TypeRef::named("GeoNode"), |ctx| {
            FieldFuture::new(async move {
                let c = ctx.data::<Ctx>()?;
                let asked = ctx
                    .args
                    .get("name")
                    .and_then(|v| v.string().ok().map(str::to_owned));
                Ok(match asked {
                    Some(n) if n != c.state.name() => None,
                    _ => Some(FieldValue::value(())),
                })
            })
        })
        .argument(async_graphql::dynamic::InputValue::new(
            "name",
            TypeRef::named(TypeRef::STRING),
        ))
        .description("The current site; null when `name` names another site"),
    );
    let mut builder = Schema::build("Query", Some("Mutation"), None)
        .register(query)
        .register(geo_node)
        .register(mutations::mutation(&kinds))
        .limit_depth(MAX_DEPTH)
        .limit_complexity(MAX_COMPLEXITY);
    for t in paging::shared_types() {
        builder = builder.register(t);
    }
    for t in mutations::types(&kinds) {
        builder = builder.register(t);
    }
    for t in builder_types {
        builder = builder.register(t);
    }
    builder.finish()
}

/// `POST /api/graphql`: authorizes, refuses a read-only mutation with `403`, then executes.
pub(crate) async fn handle(
    State(state): State<Arc<NodeState>>,
    caller: AdminCaller,
    body: Result<Json<async_graphql::Request>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(mut request) = body.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let Some(schema) = state.graphql() else {
        return Err(ApiError::internal("GraphQL is not available on this site"));
    };
    let wanted = request.operation_name.clone();
    let writes = match request.parsed_query() {
        Ok(doc) => doc
            .operations
            .iter()
            .filter(|(name, _)| match (&wanted, name) {
                (Some(wanted), Some(n)) => n.as_str() == wanted.as_str(),
                _ => true,
            })
            .any(|(_, op)| op.node.ty == OperationType::Mutation),
        // Let the executor answer the syntax error in GraphQL's own format.
        Err(_) => false,
    };
    if writes {
        caller.require_write()?;
    }
    if !caller.scope.can_write() {
        request = request.disable_introspection();
    }
    let request = request.data(Ctx {
        state: Arc::clone(&state),
    });
    let response = schema.execute(request).await;
    Ok((StatusCode::OK, Json(response)).into_response())
}
