//! What every type's connection shares: `PageInfo`, the `Time` scalar, the state and sort
//! enums, and one generic connection (`count`, `nodes`, `edges`, `pageInfo`) over a lazily
//! loaded [`Page`].

use std::sync::Arc;

use async_graphql::Value;
use async_graphql::dynamic::{
    Enum, Field, FieldFuture, FieldValue, InputValue, Object, ResolverContext, Scalar, Type,
    TypeRef, ValueAccessor,
};
use chrono::{DateTime, SecondsFormat, Utc};
use geo_diesel::admin::{AdminError, MAX_PAGE, Page, PageRequest, RegistrySort};
use geo_diesel::geo_core::state::{ReplicationState, VerificationState};
use tokio::sync::OnceCell;

/// `ReplicationStateEnum`: the `replicationState` argument.
pub(crate) const REPLICATION_STATE_ENUM: &str = "ReplicationStateEnum";
/// `RegistryState`: a registry row's `state` field.
pub(crate) const REGISTRY_STATE: &str = "RegistryState";
/// `VerificationStateEnum`: the `verificationState` argument and field.
pub(crate) const VERIFICATION_STATE_ENUM: &str = "VerificationStateEnum";
/// `GeoRegistrySort`.
pub(crate) const SORT_ENUM: &str = "GeoRegistrySort";
/// The ISO 8601 time scalar (GitLab's `Time`).
pub(crate) const TIME: &str = "Time";

const REPLICATION: [(&str, ReplicationState); 4] = [
    ("PENDING", ReplicationState::Pending),
    ("STARTED", ReplicationState::Started),
    ("SYNCED", ReplicationState::Synced),
    ("FAILED", ReplicationState::Failed),
];

const VERIFICATION: [(&str, VerificationState); 5] = [
    ("PENDING", VerificationState::Pending),
    ("STARTED", VerificationState::Started),
    ("SUCCEEDED", VerificationState::Succeeded),
    ("FAILED", VerificationState::Failed),
    ("DISABLED", VerificationState::Disabled),
];

const SORTS: [(&str, RegistrySort); 6] = [
    ("ID_ASC", RegistrySort::IdAsc),
    ("ID_DESC", RegistrySort::IdDesc),
    ("VERIFIED_AT_ASC", RegistrySort::VerifiedAtAsc),
    ("VERIFIED_AT_DESC", RegistrySort::VerifiedAtDesc),
    ("LAST_SYNCED_AT_ASC", RegistrySort::LastSyncedAtAsc),
    ("LAST_SYNCED_AT_DESC", RegistrySort::LastSyncedAtDesc),
];

/// The GraphQL name of a replication state.
pub(crate) fn replication_name(s: ReplicationState) -> &'static str {
    REPLICATION
        .iter()
        .find(|(_, v)| *v == s)
        .map_or("PENDING", |(n, _)| n)
}

/// The GraphQL name of a verification state.
pub(crate) fn verification_name(s: VerificationState) -> &'static str {
    VERIFICATION
        .iter()
        .find(|(_, v)| *v == s)
        .map_or("PENDING", |(n, _)| n)
}

/// The enum value `value` (an argument or an input field named `name`), looked up in `table`.
fn enum_value<T: Copy>(
    value: Option<ValueAccessor<'_>>,
    name: &str,
    table: &[(&str, T)],
) -> async_graphql::Result<Option<T>> {
    let Some(v) = value.filter(|v| !v.is_null()) else {
        return Ok(None);
    };
    let given = v.enum_name()?;
    table
        .iter()
        .find(|(n, _)| *n == given)
        .map(|(_, t)| Some(*t))
        .ok_or_else(|| format!("unknown {name} {given:?}").into())
}

/// A `replicationState` argument or input field.
pub(crate) fn replication_in(
    value: Option<ValueAccessor<'_>>,
) -> async_graphql::Result<Option<ReplicationState>> {
    enum_value(value, "replicationState", &REPLICATION)
}

/// A `verificationState` argument or input field.
pub(crate) fn verification_in(
    value: Option<ValueAccessor<'_>>,
) -> async_graphql::Result<Option<VerificationState>> {
    enum_value(value, "verificationState", &VERIFICATION)
}

/// The `sort` argument.
pub(crate) fn sort_arg(ctx: &ResolverContext<'_>) -> async_graphql::Result<RegistrySort> {
    Ok(enum_value(ctx.args.get("sort"), "sort", &SORTS)?.unwrap_or_default())
}

/// A time as GitLab's `Time` scalar shows it (ISO 8601, UTC).
pub(crate) fn time(t: Option<DateTime<Utc>>) -> Value {
    t.map_or(Value::Null, |t| {
        Value::from(t.to_rfc3339_opts(SecondsFormat::Millis, true))
    })
}

/// `first`, `after`, `last`, `before`.
pub(crate) fn page_args(field: Field) -> Field {
    field
        .argument(
            InputValue::new("first", TypeRef::named(TypeRef::INT))
                .description(format!("Rows after `after` (at most {})", MAX_PAGE)),
        )
        .argument(InputValue::new("after", TypeRef::named(TypeRef::STRING)))
        .argument(
            InputValue::new("last", TypeRef::named(TypeRef::INT))
                .description(format!("Rows before `before` (at most {})", MAX_PAGE)),
        )
        .argument(InputValue::new("before", TypeRef::named(TypeRef::STRING)))
}

/// The page asked for; a negative size is an error.
pub(crate) fn page_request(ctx: &ResolverContext<'_>) -> async_graphql::Result<PageRequest> {
    let size = |name: &str| -> async_graphql::Result<Option<usize>> {
        match ctx.args.get(name) {
            Some(v) if !v.is_null() => {
                let n = v.i64()?;
                usize::try_from(n)
                    .map(Some)
                    .map_err(|_| format!("`{name}` must not be negative").into())
            }
            _ => Ok(None),
        }
    };
    let cursor = |name: &str| -> async_graphql::Result<Option<String>> {
        match ctx.args.get(name) {
            Some(v) if !v.is_null() => Ok(Some(v.string()?.to_owned())),
            _ => Ok(None),
        }
    };
    Ok(PageRequest {
        first: size("first")?,
        after: cursor("after")?,
        last: size("last")?,
        before: cursor("before")?,
    })
}

/// The `ids` argument: global ids of `type_name`.
pub(crate) fn ids_arg(
    ctx: &ResolverContext<'_>,
    type_name: &str,
) -> async_graphql::Result<Option<Vec<i64>>> {
    gid_list(ctx.args.get("ids"), type_name)
}

/// A list of global ids of `type_name` (`None` when absent or null), as their ids.
pub(crate) fn gid_list(
    value: Option<ValueAccessor<'_>>,
    type_name: &str,
) -> async_graphql::Result<Option<Vec<i64>>> {
    let Some(v) = value.filter(|v| !v.is_null()) else {
        return Ok(None);
    };
    let mut out = Vec::new();
    for item in v.list()?.iter() {
        let s = item.string()?;
        match crate::api::parse_gid(s) {
            Some((ty, id)) if ty == type_name => out.push(id),
            _ => {
                return Err(format!(
                    "{s:?} is not a global id of a {type_name} (gid://geo/{type_name}/<id>)"
                )
                .into());
            }
        }
    }
    Ok(Some(out))
}

/// A connection's rows, loaded on first use (a query asking only `count` loads none).
pub(crate) struct Connection<T> {
    load: Arc<dyn Fn() -> Result<Page<T>, AdminError> + Send + Sync>,
    count: Arc<dyn Fn() -> Result<i64, AdminError> + Send + Sync>,
    page: OnceCell<Page<T>>,
}

impl<T: Clone + Send + Sync + 'static> Connection<T> {
    /// A connection that loads with `load` and counts with `count` (both blocking).
    pub(crate) fn new(
        load: impl Fn() -> Result<Page<T>, AdminError> + Send + Sync + 'static,
        count: impl Fn() -> Result<i64, AdminError> + Send + Sync + 'static,
    ) -> Self {
        Connection {
            load: Arc::new(load),
            count: Arc::new(count),
            page: OnceCell::new(),
        }
    }

    async fn page(&self) -> async_graphql::Result<&Page<T>> {
        self.page
            .get_or_try_init(|| {
                let load = Arc::clone(&self.load);
                async move {
                    tokio::task::spawn_blocking(move || load())
                        .await
                        .map_err(|e| async_graphql::Error::new(format!("worker failed: {e}")))?
                        .map_err(super::admin_error)
                }
            })
            .await
    }
}

/// One row of a connection with its cursor.
struct Edge<T> {
    cursor: String,
    node: T,
}

/// `PageInfo` values.
struct PageInfo {
    has_next_page: bool,
    has_previous_page: bool,
    start_cursor: Option<String>,
    end_cursor: Option<String>,
}

fn opt_text(s: &Option<String>) -> Value {
    s.clone().map_or(Value::Null, Value::from)
}

/// `PageInfo` and `Time`, `ReplicationStateEnum`, `RegistryState`, `VerificationStateEnum`,
/// `GeoRegistrySort`.
pub(crate) fn shared_types() -> Vec<Type> {
    let info = |name: &'static str, ty: TypeRef, get: fn(&PageInfo) -> Value| {
        Field::new(name, ty, move |ctx| {
            FieldFuture::new(async move {
                let p = ctx.parent_value.try_downcast_ref::<PageInfo>()?;
                Ok(Some(FieldValue::value(get(p))))
            })
        })
    };
    let page_info = Object::new("PageInfo")
        .field(info(
            "hasNextPage",
            TypeRef::named_nn(TypeRef::BOOLEAN),
            |p| p.has_next_page.into(),
        ))
        .field(info(
            "hasPreviousPage",
            TypeRef::named_nn(TypeRef::BOOLEAN),
            |p| p.has_previous_page.into(),
        ))
        .field(info("startCursor", TypeRef::named(TypeRef::STRING), |p| {
            opt_text(&p.start_cursor)
        }))
        .field(info("endCursor", TypeRef::named(TypeRef::STRING), |p| {
            opt_text(&p.end_cursor)
        }));
    let names = |e: Enum, items: &[&str]| e.items(items.iter().copied());
    vec![
        page_info.into(),
        Scalar::new(TIME)
            .description("An ISO 8601 time in UTC, e.g. 2026-12-02T10:15:00.000Z")
            .into(),
        names(
            Enum::new(REPLICATION_STATE_ENUM),
            &REPLICATION.map(|(n, _)| n),
        )
        .into(),
        names(Enum::new(REGISTRY_STATE), &REPLICATION.map(|(n, _)| n)).into(),
        names(
            Enum::new(VERIFICATION_STATE_ENUM),
            &VERIFICATION.map(|(n, _)| n),
        )
        .into(),
        names(Enum::new(SORT_ENUM), &SORTS.map(|(n, _)| n)).into(),
    ]
}

/// The connection and edge types of `node_type` (`<node_type>Connection`,
/// `<node_type>Edge`); nodes are shown by `wrap`.
pub(crate) fn connection_types<T: Clone + Send + Sync + 'static>(
    node_type: &str,
    wrap: impl Fn(T) -> FieldValue<'static> + Send + Sync + Clone + 'static,
) -> [Type; 2] {
    let conn_name = format!("{node_type}Connection");
    let edge_name = format!("{node_type}Edge");
    let w = wrap.clone();
    let nodes = Field::new("nodes", TypeRef::named_nn_list_nn(node_type), move |ctx| {
        let w = w.clone();
        FieldFuture::new(async move {
            let c = ctx.parent_value.try_downcast_ref::<Connection<T>>()?;
            let page = c.page().await?;
            Ok(Some(FieldValue::list(
                page.rows.iter().map(|(_, r)| w(r.clone())),
            )))
        })
    });
    let edges = Field::new("edges", TypeRef::named_nn_list_nn(&edge_name), move |ctx| {
        FieldFuture::new(async move {
            let c = ctx.parent_value.try_downcast_ref::<Connection<T>>()?;
            let page = c.page().await?;
            Ok(Some(FieldValue::list(page.rows.iter().map(|(cur, r)| {
                FieldValue::owned_any(Edge {
                    cursor: cur.clone(),
                    node: r.clone(),
                })
            }))))
        })
    });
    let page_info = Field::new("pageInfo", TypeRef::named_nn("PageInfo"), |ctx| {
        FieldFuture::new(async move {
            let c = ctx.parent_value.try_downcast_ref::<Connection<T>>()?;
            let page = c.page().await?;
            Ok(Some(FieldValue::owned_any(PageInfo {
                has_next_page: page.has_next_page,
                has_previous_page: page.has_previous_page,
                start_cursor: page.rows.first().map(|(c, _)| c.clone()),
                end_cursor: page.rows.last().map(|(c, _)| c.clone()),
            })))
        })
    });
    let count = Field::new("count", TypeRef::named_nn(TypeRef::INT), |ctx| {
        FieldFuture::new(async move {
            let c = ctx.parent_value.try_downcast_ref::<Connection<T>>()?;
            let count = Arc::clone(&c.count);
            let n = tokio::task::spawn_blocking(move || count())
                .await
                .map_err(|e| async_graphql::Error::new(format!("worker failed: {e}")))?
                .map_err(super::admin_error)?;
            Ok(Some(FieldValue::value(n)))
        })
    })
    .description("Rows matching the filters, on every page");
    let connection = Object::new(conn_name)
        .field(count)
        .field(nodes)
        .field(edges)
        .field(page_info);
    let edge = Object::new(edge_name)
        .field(Field::new(
            "cursor",
            TypeRef::named_nn(TypeRef::STRING),
            |ctx| {
                FieldFuture::new(async move {
                    let e = ctx.parent_value.try_downcast_ref::<Edge<T>>()?;
                    Ok(Some(FieldValue::value(e.cursor.clone())))
                })
            },
        ))
        .field(Field::new(
            "node",
            TypeRef::named_nn(node_type),
            move |ctx| {
                let wrap = wrap.clone();
                FieldFuture::new(async move {
                    let e = ctx.parent_value.try_downcast_ref::<Edge<T>>()?;
                    Ok(Some(wrap(e.node.clone())))
                })
            },
        ));
    [connection.into(), edge.into()]
}
