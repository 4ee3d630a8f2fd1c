//! `geoRegistriesUpdate` (RESYNC / REVERIFY one row) and `geoRegistriesBulkUpdate`
//! (RESYNC_ALL / REVERIFY_ALL with filters, run durably in the background by the site's
//! bulk worker), GitLab's two mutations with their input and payload shapes.

use std::sync::Arc;

use async_graphql::Value;
use async_graphql::dynamic::{
    Enum, Field, FieldFuture, FieldValue, InputObject, InputValue, Object, ObjectAccessor,
    ResolverContext, Scalar, Type, TypeRef, Union,
};
use geo_diesel::admin::{self, BulkAction, BulkFilter};
use geo_diesel::geo_core::Role;
use geo_diesel::registry::{Action, Registry};

use super::nodes::{RecordNode, RegistryNode};
use super::paging::{REPLICATION_STATE_ENUM, VERIFICATION_STATE_ENUM};
use super::{Ctx, Kind, with_db};
use crate::api::parse_gid;

const ACTION_ENUM: &str = "GeoRegistryAction";
const BULK_ACTION_ENUM: &str = "GeoRegistriesBulkAction";
const CLASS_ENUM: &str = "GeoRegistryClass";
const REGISTRY_ID: &str = "GeoBaseRegistryID";
const REGISTRABLE: &str = "Registrable";
const UPDATE_INPUT: &str = "GeoRegistriesUpdateInput";
const BULK_INPUT: &str = "GeoRegistriesBulkUpdateInput";
const UPDATE_PAYLOAD: &str = "GeoRegistriesUpdatePayload";
const BULK_PAYLOAD: &str = "GeoRegistriesBulkUpdatePayload";

/// The row a `geoRegistriesUpdate` changed.
enum Registrable {
    Registry(RegistryNode),
    Record(RecordNode),
}

/// What `geoRegistriesUpdate` answers.
struct UpdatePayload {
    registry: Option<Registrable>,
    errors: Vec<String>,
    client_mutation_id: Option<String>,
}

/// What `geoRegistriesBulkUpdate` answers.
struct BulkPayload {
    registry_class: String,
    errors: Vec<String>,
    client_mutation_id: Option<String>,
}

/// A mutation payload: `errors` and `clientMutationId` are read the same way from both.
trait Payload: Send + Sync + 'static {
    fn errors(&self) -> &[String];
    fn client_mutation_id(&self) -> Option<&str>;
}

impl Payload for UpdatePayload {
    fn errors(&self) -> &[String] {
        &self.errors
    }
    fn client_mutation_id(&self) -> Option<&str> {
        self.client_mutation_id.as_deref()
    }
}

impl Payload for BulkPayload {
    fn errors(&self) -> &[String] {
        &self.errors
    }
    fn client_mutation_id(&self) -> Option<&str> {
        self.client_mutation_id.as_deref()
    }
}

/// Object `name` of payload `P` with its `errors` and `clientMutationId` fields.
fn payload_object<P: Payload>(name: &str) -> Object {
    Object::new(name)
        .field(Field::new(
            "errors",
            TypeRef::named_nn_list_nn(TypeRef::STRING),
            |ctx| {
                FieldFuture::new(async move {
                    let p = ctx.parent_value.try_downcast_ref::<P>()?;
                    Ok(Some(FieldValue::list(
                        p.errors().iter().map(|e| FieldValue::value(e.clone())),
                    )))
                })
            },
        ))
        .field(Field::new(
            "clientMutationId",
            TypeRef::named(TypeRef::STRING),
            |ctx| {
                FieldFuture::new(async move {
                    let p = ctx.parent_value.try_downcast_ref::<P>()?;
                    Ok(p.client_mutation_id()
                        .map(|s| FieldValue::value(s.to_owned())))
                })
            },
        ))
}

/// The enums, scalar, union, inputs and payloads of the two mutations.
pub(crate) fn types(kinds: &[Arc<Kind>]) -> Vec<Type> {
    let mut class =
        Enum::new(CLASS_ENUM).description("A registry class (GitLab's GeoRegistryClass)");
    let mut registrable = Union::new(REGISTRABLE).description("A registry row or a primary record");
    for k in kinds {
        class = class.item(k.names.graphql_mutation_registry_class.clone());
        registrable = registrable
            .possible_type(k.names.graphql_registry_type.clone())
            .possible_type(k.names.graphql_record_type.clone());
    }
    let client_id = || InputValue::new("clientMutationId", TypeRef::named(TypeRef::STRING));
    let update_input = InputObject::new(UPDATE_INPUT)
        .field(InputValue::new(
            "registryId",
            TypeRef::named_nn(REGISTRY_ID),
        ))
        .field(InputValue::new("action", TypeRef::named_nn(ACTION_ENUM)))
        .field(InputValue::new("registryClass", TypeRef::named(CLASS_ENUM)))
        .field(client_id());
    let bulk_input = InputObject::new(BULK_INPUT)
        .field(InputValue::new(
            "registryClass",
            TypeRef::named_nn(CLASS_ENUM),
        ))
        .field(InputValue::new(
            "action",
            TypeRef::named_nn(BULK_ACTION_ENUM),
        ))
        .field(InputValue::new("ids", TypeRef::named_nn_list(REGISTRY_ID)))
        .field(InputValue::new(
            "replicationState",
            TypeRef::named(REPLICATION_STATE_ENUM),
        ))
        .field(InputValue::new(
            "verificationState",
            TypeRef::named(VERIFICATION_STATE_ENUM),
        ))
        .field(client_id());
    let mut update_payload = payload_object::<UpdatePayload>(UPDATE_PAYLOAD);
    if !kinds.is_empty() {
        update_payload =
            update_payload.field(Field::new("registry", TypeRef::named(REGISTRABLE), |ctx| {
                FieldFuture::new(async move {
                    let p = ctx.parent_value.try_downcast_ref::<UpdatePayload>()?;
                    Ok(p.registry.as_ref().map(|r| match r {
                        Registrable::Registry(n) => n.clone().union_value(),
                        Registrable::Record(n) => n.clone().union_value(),
                    }))
                })
            }));
    }
    let bulk_payload = payload_object::<BulkPayload>(BULK_PAYLOAD).field(Field::new(
        "registryClass",
        TypeRef::named(CLASS_ENUM),
        |ctx| {
            FieldFuture::new(async move {
                let p = ctx.parent_value.try_downcast_ref::<BulkPayload>()?;
                Ok(Some(FieldValue::value(Value::Enum(
                    async_graphql::Name::new(&p.registry_class),
                ))))
            })
        },
    ));
    let mut out: Vec<Type> = vec![
        Enum::new(ACTION_ENUM).items(["RESYNC", "REVERIFY"]).into(),
        Enum::new(BULK_ACTION_ENUM)
            .items(["RESYNC_ALL", "REVERIFY_ALL"])
            .into(),
        Scalar::new(REGISTRY_ID)
            .description("A registry row's or a primary record's global id: gid://geo/<Type>/<id>")
            .validator(|v| matches!(v, Value::String(s) if parse_gid(s).is_some()))
            .into(),
        update_input.into(),
        bulk_input.into(),
        update_payload.into(),
        bulk_payload.into(),
    ];
    if !kinds.is_empty() {
        out.push(class.into());
        out.push(registrable.into());
    } else {
        out.push(Enum::new(CLASS_ENUM).item("NONE").into());
    }
    out
}

/// The `Mutation` root.
pub(crate) fn mutation(kinds: &[Arc<Kind>]) -> Object {
    let all: Arc<Vec<Arc<Kind>>> = Arc::new(kinds.to_vec());
    let for_update = Arc::clone(&all);
    let update = Field::new(
        "geoRegistriesUpdate",
        TypeRef::named(UPDATE_PAYLOAD),
        move |ctx| {
            let kinds = Arc::clone(&for_update);
            FieldFuture::new(async move { update(ctx, &kinds).await.map(Some) })
        },
    )
    .description("Resyncs or reverifies one registry row (or reverifies one primary record)")
    .argument(InputValue::new("input", TypeRef::named_nn(UPDATE_INPUT)));
    let bulk = Field::new(
        "geoRegistriesBulkUpdate",
        TypeRef::named(BULK_PAYLOAD),
        move |ctx| {
            let kinds = Arc::clone(&all);
            FieldFuture::new(async move { bulk(ctx, &kinds).await.map(Some) })
        },
    )
    .description(
        "Resyncs or reverifies every row of a registry class matching the filters, in the \
         background, in batches; its progress survives a restart",
    )
    .argument(InputValue::new("input", TypeRef::named_nn(BULK_INPUT)));
    Object::new("Mutation").field(update).field(bulk)
}

fn client_mutation_id(input: &ObjectAccessor<'_>) -> Option<String> {
    input
        .get("clientMutationId")
        .and_then(|v| v.string().ok().map(str::to_owned))
}

async fn update(
    ctx: ResolverContext<'_>,
    kinds: &[Arc<Kind>],
) -> async_graphql::Result<FieldValue<'static>> {
    let c = ctx.data::<Ctx>()?;
    let input = ctx.args.try_get("input")?.object()?;
    let gid = input.try_get("registryId")?.string()?.to_owned();
    let action = match input.try_get("action")?.enum_name()? {
        "RESYNC" => Action::Resync,
        "REVERIFY" => Action::Reverify,
        other => return Err(format!("unknown action {other}").into()),
    };
    let client_mutation_id = client_mutation_id(&input);
    let (ty, id) = parse_gid(&gid).ok_or_else(|| format!("{gid:?} is not a global id"))?;
    let payload = |registry: Option<Registrable>, errors: Vec<String>| {
        FieldValue::owned_any(UpdatePayload {
            registry,
            errors,
            client_mutation_id: client_mutation_id.clone(),
        })
    };
    if let Some(kind) = kinds.iter().find(|k| k.names.graphql_registry_type == ty) {
        let db = c.tracking()?;
        let registry = Registry::of(kind.d);
        let (changed, row) = with_db(db, move |conn| {
            let changed = registry.act_on_registry_id(conn, id, action)?;
            Ok((changed, registry.get(conn, id)?))
        })
        .await?;
        let Some(row) = row else {
            return Ok(payload(None, vec![format!("no {ty} with id {id}")]));
        };
        let errors = if changed {
            Vec::new()
        } else {
            vec![not_changed(action, &row)]
        };
        let node = RegistryNode {
            kind: Arc::clone(kind),
            row,
        };
        return Ok(payload(Some(Registrable::Registry(node)), errors));
    }
    if let Some(kind) = kinds.iter().find(|k| k.names.pascal() == ty) {
        if action != Action::Reverify {
            return Ok(payload(
                None,
                vec![format!(
                    "{gid} is a primary record: it can be reverified; resync is for a secondary's registry rows"
                )],
            ));
        }
        if !kind.d.verifies() {
            return Ok(payload(
                None,
                vec![format!("{} has no verification", kind.d.name)],
            ));
        }
        let db = c.primary_db()?;
        let d = kind.d;
        let (changed, row) = with_db(db, move |conn| {
            let changed = admin::reverify_record(conn, d, id)?;
            Ok((changed, admin::get_record(conn, d, id)?))
        })
        .await?;
        let Some(row) = row else {
            return Ok(payload(None, vec![format!("no {ty} with id {id}")]));
        };
        let errors = if changed {
            Vec::new()
        } else {
            vec![format!("{gid} was not changed")]
        };
        let node = RecordNode {
            kind: Arc::clone(kind),
            row,
        };
        return Ok(payload(Some(Registrable::Record(node)), errors));
    }
    Err(format!("{ty} is not a registry or record type of this site").into())
}

/// Why an action changed nothing, in the row's terms.
fn not_changed(action: Action, row: &admin::RegistryRecord) -> String {
    match action {
        Action::Resync => format!(
            "not resynced: the row is {} (a sync is running; it will see the latest file)",
            super::paging::replication_name(row.state).to_lowercase()
        ),
        Action::Reverify => format!(
            "not reverified: only synced rows not being verified can be (the row is {}, verification {})",
            super::paging::replication_name(row.state).to_lowercase(),
            super::paging::verification_name(row.verification_state).to_lowercase()
        ),
    }
}

async fn bulk(
    ctx: ResolverContext<'_>,
    kinds: &[Arc<Kind>],
) -> async_graphql::Result<FieldValue<'static>> {
    let c = ctx.data::<Ctx>()?;
    let input = ctx.args.try_get("input")?.object()?;
    let class = input.try_get("registryClass")?.enum_name()?.to_owned();
    let kind = kinds
        .iter()
        .find(|k| k.names.graphql_mutation_registry_class == class)
        .ok_or_else(|| format!("unknown registry class {class}"))?;
    let action = match input.try_get("action")?.enum_name()? {
        "RESYNC_ALL" => BulkAction::ResyncAll,
        "REVERIFY_ALL" => BulkAction::ReverifyAll,
        other => return Err(format!("unknown action {other}").into()),
    };
    let (role, db, id_type) = match c.tracking() {
        Ok(db) => (
            Role::Secondary,
            db,
            kind.names.graphql_registry_type.clone(),
        ),
        Err(_) => (
            Role::Primary,
            c.primary_db()?,
            kind.names.pascal().to_owned(),
        ),
    };
    let ids = super::paging::gid_list(input.get("ids"), &id_type)?;
    let filter = BulkFilter {
        ids,
        replication_state: super::paging::replication_in(input.get("replicationState"))?,
        verification_state: super::paging::verification_in(input.get("verificationState"))?,
    };
    let client_mutation_id = client_mutation_id(&input);
    let d = kind.d;
    let queued = with_db(db, move |conn| {
        admin::enqueue(conn, role, d, action, filter)
    })
    .await;
    let errors = match queued {
        Ok(job) => {
            tracing::info!(job, replicable = d.name, ?action, "bulk update queued");
            Vec::new()
        }
        Err(e) => vec![e.message],
    };
    Ok(FieldValue::owned_any(BulkPayload {
        registry_class: class,
        errors,
        client_mutation_id,
    }))
}
