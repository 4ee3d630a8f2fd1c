//! Per type: the `<Type>Registry` and `<Type>Record` objects, their connections, and the
//! `geoNode` fields that list them, all generated from the descriptor.

use std::sync::Arc;

use async_graphql::Value;
use async_graphql::dynamic::{
    Field, FieldFuture, FieldValue, InputValue, Object, ResolverContext, Type, TypeRef,
};
use geo_diesel::admin::{
    self, AdminError, RecordFilter, RecordRow, RegistryFilter, RegistryRecord,
};
use geo_diesel::registry::Registry;

use super::paging::{
    self, Connection, REGISTRY_STATE, REPLICATION_STATE_ENUM, SORT_ENUM, TIME,
    VERIFICATION_STATE_ENUM, time, verification_name,
};
use super::{Ctx, Kind};

/// A registry row and its type, as a GraphQL value.
#[derive(Clone)]
pub(crate) struct RegistryNode {
    pub(crate) kind: Arc<Kind>,
    pub(crate) row: RegistryRecord,
}

/// A primary record and its type, as a GraphQL value.
#[derive(Clone)]
pub(crate) struct RecordNode {
    pub(crate) kind: Arc<Kind>,
    pub(crate) row: RecordRow,
}

impl RegistryNode {
    /// As a field value of its object type.
    pub(crate) fn value(self) -> FieldValue<'static> {
        FieldValue::owned_any(self)
    }

    /// As a member of a union (which needs the object type named).
    pub(crate) fn union_value(self) -> FieldValue<'static> {
        let ty = self.kind.names.graphql_registry_type.clone();
        FieldValue::owned_any(self).with_type(ty)
    }
}

impl RecordNode {
    /// As a field value of its object type.
    pub(crate) fn value(self) -> FieldValue<'static> {
        FieldValue::owned_any(self)
    }

    /// As a member of a union.
    pub(crate) fn union_value(self) -> FieldValue<'static> {
        let ty = self.kind.names.graphql_record_type.clone();
        FieldValue::owned_any(self).with_type(ty)
    }
}

fn hex(b: &Option<Vec<u8>>) -> Value {
    b.as_ref()
        .map_or(Value::Null, |b| Value::from(::hex::encode(b)))
}

fn text(s: &Option<String>) -> Value {
    s.clone().map_or(Value::Null, Value::from)
}

type Getter<T> = fn(&Kind, &T) -> Value;

/// Every field of GitLab's `RegistryType`, then `<camelName>Id` and our `blobPath`.
fn registry_fields(kind: &Kind) -> Vec<(String, TypeRef, Getter<RegistryRecord>)> {
    let f = |n: &str, t: TypeRef, g: Getter<RegistryRecord>| (n.to_owned(), t, g);
    let mut v = vec![
        f("id", TypeRef::named_nn(TypeRef::ID), |k, r| {
            k.names.registry_gid(r.id).into()
        }),
        f("modelRecordId", TypeRef::named_nn(TypeRef::INT), |_, r| {
            r.model_record_id.into()
        }),
        f("createdAt", TypeRef::named(TIME), |_, r| {
            time(Some(r.created_at))
        }),
        f("state", TypeRef::named(REGISTRY_STATE), |_, r| {
            Value::Enum(async_graphql::Name::new(paging::replication_name(r.state)))
        }),
        f("retryCount", TypeRef::named(TypeRef::INT), |_, r| {
            i64::from(r.retry_count).into()
        }),
        f("retryAt", TypeRef::named(TIME), |_, r| time(r.retry_at)),
        f("lastSyncedAt", TypeRef::named(TIME), |_, r| {
            time(r.last_synced_at)
        }),
        f(
            "lastSyncFailure",
            TypeRef::named(TypeRef::STRING),
            |_, r| text(&r.last_sync_failure),
        ),
        f(
            "missingOnPrimary",
            TypeRef::named(TypeRef::BOOLEAN),
            |_, r| r.missing_on_primary.into(),
        ),
        f(
            "verificationState",
            TypeRef::named(VERIFICATION_STATE_ENUM),
            |_, r| {
                Value::Enum(async_graphql::Name::new(verification_name(
                    r.verification_state,
                )))
            },
        ),
        f("verificationStartedAt", TypeRef::named(TIME), |_, r| {
            time(r.verification_started_at)
        }),
        f("verifiedAt", TypeRef::named(TIME), |_, r| {
            time(r.verified_at)
        }),
        f("verificationRetryAt", TypeRef::named(TIME), |_, r| {
            time(r.verification_retry_at)
        }),
        f(
            "verificationRetryCount",
            TypeRef::named(TypeRef::INT),
            |_, r| i64::from(r.verification_retry_count).into(),
        ),
        f(
            "verificationFailure",
            TypeRef::named(TypeRef::STRING),
            |_, r| text(&r.verification_failure),
        ),
        f(
            "verificationChecksum",
            TypeRef::named(TypeRef::STRING),
            |_, r| hex(&r.verification_checksum),
        ),
        f(
            "verificationChecksumMismatched",
            TypeRef::named(TypeRef::STRING),
            |_, r| hex(&r.verification_checksum_mismatched),
        ),
        f(
            "checksumMismatch",
            TypeRef::named(TypeRef::BOOLEAN),
            |_, r| r.checksum_mismatch.into(),
        ),
        f(
            "forceToRedownload",
            TypeRef::named(TypeRef::BOOLEAN),
            |_, _| Value::Null,
        ),
        f("blobPath", TypeRef::named(TypeRef::STRING), |_, r| {
            text(&r.blob_path)
        }),
    ];
    v.push((
        kind.names.graphql_model_id_field.clone(),
        TypeRef::named_nn(TypeRef::ID),
        |_, r| r.model_record_id.to_string().into(),
    ));
    v
}

/// The primary's record: its id, file and checksum state.
fn record_fields() -> Vec<(&'static str, TypeRef, Getter<RecordRow>)> {
    vec![
        ("id", TypeRef::named_nn(TypeRef::ID), |k, r| {
            k.names.record_gid(r.model_record_id).into()
        }),
        ("modelRecordId", TypeRef::named_nn(TypeRef::INT), |_, r| {
            r.model_record_id.into()
        }),
        ("file", TypeRef::named(TypeRef::STRING), |_, r| {
            text(&r.file)
        }),
        (
            "verificationState",
            TypeRef::named(VERIFICATION_STATE_ENUM),
            |_, r| {
                r.verification_state.map_or(Value::Null, |s| {
                    Value::Enum(async_graphql::Name::new(verification_name(s)))
                })
            },
        ),
        ("verificationStartedAt", TypeRef::named(TIME), |_, r| {
            time(r.verification_started_at)
        }),
        ("verifiedAt", TypeRef::named(TIME), |_, r| {
            time(r.verified_at)
        }),
        ("verificationRetryAt", TypeRef::named(TIME), |_, r| {
            time(r.verification_retry_at)
        }),
        (
            "verificationRetryCount",
            TypeRef::named(TypeRef::INT),
            |_, r| i64::from(r.verification_retry_count).into(),
        ),
        (
            "verificationChecksum",
            TypeRef::named(TypeRef::STRING),
            |_, r| hex(&r.verification_checksum),
        ),
        (
            "verificationFailure",
            TypeRef::named(TypeRef::STRING),
            |_, r| text(&r.verification_failure),
        ),
    ]
}

/// The object types of `kind`: registry and record, with their connections and edges.
pub(crate) fn types(kind: &Arc<Kind>) -> Vec<Type> {
    let mut registry = Object::new(kind.names.graphql_registry_type.clone()).description(format!(
        "A {} registry row on this secondary (GitLab's RegistryType)",
        kind.d.name
    ));
    for (name, ty, get) in registry_fields(kind) {
        registry = registry.field(Field::new(name, ty, move |ctx| {
            FieldFuture::new(async move {
                let n = ctx.parent_value.try_downcast_ref::<RegistryNode>()?;
                Ok(Some(FieldValue::value(get(&n.kind, &n.row))))
            })
        }));
    }
    let mut record = Object::new(kind.names.graphql_record_type.clone()).description(format!(
        "A {} on this primary and its checksum state",
        kind.d.name
    ));
    for (name, ty, get) in record_fields() {
        record = record.field(Field::new(name, ty, move |ctx| {
            FieldFuture::new(async move {
                let n = ctx.parent_value.try_downcast_ref::<RecordNode>()?;
                Ok(Some(FieldValue::value(get(&n.kind, &n.row))))
            })
        }));
    }
    let k = Arc::clone(kind);
    let registry_conn =
        paging::connection_types::<RegistryRecord>(&kind.names.graphql_registry_type, move |row| {
            RegistryNode {
                kind: Arc::clone(&k),
                row,
            }
            .value()
        });
    let k = Arc::clone(kind);
    let record_conn =
        paging::connection_types::<RecordRow>(&kind.names.graphql_record_type, move |row| {
            RecordNode {
                kind: Arc::clone(&k),
                row,
            }
            .value()
        });
    let mut out: Vec<Type> = vec![registry.into(), record.into()];
    out.extend(registry_conn);
    out.extend(record_conn);
    out
}

fn keyword_arg(ctx: &ResolverContext<'_>) -> async_graphql::Result<Option<String>> {
    match ctx.args.get("keyword") {
        Some(v) if !v.is_null() => {
            let s = v.string()?.trim();
            Ok((!s.is_empty()).then(|| s.to_owned()))
        }
        _ => Ok(None),
    }
}

fn no_verification(kind: &Kind) -> async_graphql::Error {
    AdminError::BadArgument(format!(
        "{} has no verification: it cannot be filtered by verification state",
        kind.d.name
    ))
    .to_string()
    .into()
}

/// `<camelName>Registries(ids, replicationState, verificationState, keyword, sort, first/after/last/before)`.
pub(crate) fn registries_field(kind: &Arc<Kind>) -> Field {
    let k = Arc::clone(kind);
    let conn_type = format!("{}Connection", kind.names.graphql_registry_type);
    let field = Field::new(
        kind.names.graphql_field_name.clone(),
        TypeRef::named(conn_type),
        move |ctx| {
            let kind = Arc::clone(&k);
            FieldFuture::new(async move {
                let c = ctx.data::<Ctx>()?;
                let db = c.tracking()?;
                let filter = RegistryFilter {
                    ids: paging::ids_arg(&ctx, &kind.names.graphql_registry_type)?,
                    replication_state: paging::replication_in(ctx.args.get("replicationState"))?,
                    verification_state: paging::verification_in(ctx.args.get("verificationState"))?,
                    keyword: keyword_arg(&ctx)?,
                };
                if filter.verification_state.is_some() && !kind.d.verifies() {
                    return Err(no_verification(&kind));
                }
                let sort = paging::sort_arg(&ctx)?;
                let page = paging::page_request(&ctx)?;
                let registry = Registry::of(kind.d);
                let (db2, filter2) = (db.clone(), filter.clone());
                let conn = Connection::new(
                    move || {
                        let mut conn = db.get().map_err(pool_error)?;
                        registry.list(&mut conn, &filter, sort, &page)
                    },
                    move || {
                        let mut conn = db2.get().map_err(pool_error)?;
                        registry.count_matching(&mut conn, &filter2)
                    },
                );
                Ok(Some(FieldValue::owned_any(conn)))
            })
        },
    )
    .description(format!(
        "The {} registry of this secondary (GitLab's {}Registries)",
        kind.d.name, kind.names.graphql_field_name
    ))
    .argument(InputValue::new("ids", TypeRef::named_nn_list(TypeRef::ID)))
    .argument(InputValue::new(
        "replicationState",
        TypeRef::named(REPLICATION_STATE_ENUM),
    ))
    .argument(InputValue::new(
        "verificationState",
        TypeRef::named(VERIFICATION_STATE_ENUM),
    ))
    .argument(
        InputValue::new("keyword", TypeRef::named(TypeRef::STRING))
            .description("A model record id, or part of the file's path"),
    )
    .argument(InputValue::new("sort", TypeRef::named(SORT_ENUM)));
    paging::page_args(field)
}

/// `<camelName>Records(ids, verificationState, keyword, first/after/last/before)` on the primary.
pub(crate) fn records_field(kind: &Arc<Kind>) -> Field {
    let k = Arc::clone(kind);
    let conn_type = format!("{}Connection", kind.names.graphql_record_type);
    let field = Field::new(
        kind.names.graphql_records_field_name.clone(),
        TypeRef::named(conn_type),
        move |ctx| {
            let kind = Arc::clone(&k);
            FieldFuture::new(async move {
                let c = ctx.data::<Ctx>()?;
                let db = c.primary_db()?;
                let filter = RecordFilter {
                    ids: paging::ids_arg(&ctx, kind.names.pascal())?,
                    verification_state: paging::verification_in(ctx.args.get("verificationState"))?,
                    keyword: keyword_arg(&ctx)?,
                };
                if filter.verification_state.is_some() && !kind.d.verifies() {
                    return Err(no_verification(&kind));
                }
                let page = paging::page_request(&ctx)?;
                let d = kind.d;
                let (db2, filter2) = (db.clone(), filter.clone());
                let conn = Connection::new(
                    move || {
                        let mut conn = db.get().map_err(pool_error)?;
                        admin::list_records(&mut conn, d, &filter, &page)
                    },
                    move || {
                        let mut conn = db2.get().map_err(pool_error)?;
                        admin::count_records_matching(&mut conn, d, &filter2)
                    },
                );
                Ok(Some(FieldValue::owned_any(conn)))
            })
        },
    )
    .description(format!(
        "The {} records of this primary and their checksum state (data management)",
        kind.d.name
    ))
    .argument(InputValue::new("ids", TypeRef::named_nn_list(TypeRef::ID)))
    .argument(InputValue::new(
        "verificationState",
        TypeRef::named(VERIFICATION_STATE_ENUM),
    ))
    .argument(
        InputValue::new("keyword", TypeRef::named(TypeRef::STRING))
            .description("A model record id, or part of the file's path"),
    );
    paging::page_args(field)
}

/// A pool failure as an [`AdminError`].
pub(crate) fn pool_error(e: impl std::fmt::Display) -> AdminError {
    AdminError::Pool(e.to_string())
}
