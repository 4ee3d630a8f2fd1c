//! Capture by the database (`events = "triggers"`, the default): triggers on the model table
//! write `created`, `updated` and `deleted` to `geo_events` in the transaction that changes the
//! row, so an insert through Diesel's DSL, a bulk `diesel::update`, raw SQL or a `psql` session
//! is never missed, and a rollback publishes nothing.
//!
//! What the triggers do, per row, when the type's feature flag is on (the same
//! `COALESCE((SELECT enabled FROM geo_feature_flags …), <enabled_by_default>)` as
//! [`insert_event_if_enabled`](super::insert_event_if_enabled)):
//!
//! | change | events | verification |
//! |---|---|---|
//! | `INSERT` | `created` | pending |
//! | `DELETE` | `deleted` with the old file path | — |
//! | `UPDATE` of the file column to another value | `updated` | pending |
//! | `UPDATE` of the id | `deleted` (old id, old path), then `created` (new id) | pending (new id) |
//!
//! The rows are the ones [`publish_created`](super::publish_created) and friends write: the
//! same columns, the same payloads (`{"model_record_id": …}`, plus `"blob_path"` for
//! `deleted` and `"partition"` for a type with `#[replicable(partition)]`), `created_at` from the column default (`strftime('%Y-%m-%dT%H:%M:%fZ','now')` on
//! SQLite — the text form of [`UtcDateTime`](crate::UtcDateTime) — and `now()` on PostgreSQL).
//! "Pending" is [`geo_core::transitions::verification::pending`] rendered by
//! [`Table`] with the trigger's `NEW."<id>"` as the key, the same rule
//! [`mark_verification_pending`](super::mark_verification_pending) runs. The inline pending
//! update sets only verification columns, so it never fires the file trigger again.
//!
//! The DDL is its own migration step, `<name>_events_primary`, right after `<name>_primary`
//! (see [`crate::migrations::plan_for`]), so databases migrated before triggers existed get
//! them on upgrade. On SQLite four triggers `geo_<name>_{created,deleted,updated,id_changed}`;
//! on PostgreSQL one PL/pgSQL function `geo_<name>_events()` and two triggers (insert/delete and
//! update of the file column or the id).

use geo_core::transitions::{Datum, verification as rules};
use geo_core::{Backend, ReplicableDescriptor, VerificationMode};

use super::EventKind;
use crate::sql::{RowRef, Sql, Table};

/// The longest identifier PostgreSQL keeps (it cuts longer ones silently).
const MAX_IDENT: usize = 63;

/// The up and down SQL of a replicable's event triggers for one backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TriggerSql {
    /// Creates the triggers (and the PostgreSQL function).
    pub up: String,
    /// Drops them.
    pub down: String,
}

/// `geo_<name>_<suffix>`, cut to 63 bytes with a stable hash suffix when longer (names are
/// validated ASCII identifiers, so byte cuts are character cuts).
fn object_name(d: &ReplicableDescriptor, suffix: &str) -> String {
    let full = format!("geo_{}_{suffix}", d.name);
    if full.len() <= MAX_IDENT {
        return full;
    }
    let hash = full.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    format!("{}_{:08x}", &full[..MAX_IDENT - 9], hash as u32)
}

/// The feature-flag condition: `COALESCE((SELECT "enabled" …), <default>)`.
fn flag_enabled(d: &'static ReplicableDescriptor) -> Sql {
    let mut sql = Sql::new();
    sql.push("COALESCE((SELECT ")
        .ident("enabled")
        .push(" FROM ")
        .ident("geo_feature_flags")
        .push(" WHERE ")
        .ident("name")
        .push(" = ")
        .bind(Datum::Text(d.feature_flag()))
        .push("), ")
        .bind(Datum::Bool(d.enabled_by_default))
        .push(")");
    sql
}

/// `INSERT INTO "geo_events" (…) VALUES ('<name>', '<kind>', ROW."<id>", <payload>)`; the
/// payload of `deleted` carries `ROW."<file>"` as `blob_path`, like `publish_deleted`'s.
fn insert_event(
    d: &'static ReplicableDescriptor,
    kind: EventKind,
    row: fn(&'static str) -> RowRef,
    backend: Backend,
) -> Sql {
    let t = &d.tables;
    let mut sql = Sql::new();
    sql.push("INSERT INTO ").ident("geo_events").push(" (");
    for (i, c) in [
        "replicable_name",
        "event_name",
        "model_record_id",
        "payload",
    ]
    .into_iter()
    .enumerate()
    {
        if i > 0 {
            sql.push(", ");
        }
        sql.ident(c);
    }
    sql.push(") VALUES (")
        .bind(Datum::Text(d.name.to_owned()))
        .push(", ")
        .bind(Datum::Text(kind.as_str().to_owned()))
        .push(", ")
        .row_ref(row(t.model_id))
        .push(", ")
        .push(match backend {
            Backend::Sqlite => "json_object(",
            Backend::Postgres => "jsonb_build_object(",
        });
    // Keys in serde_json's order (sorted), so SQLite's text is byte-identical to Rust's.
    if kind == EventKind::Deleted {
        sql.bind(Datum::Text("blob_path".into()))
            .push(", ")
            .row_ref(row(t.model_file))
            .push(", ");
    }
    sql.bind(Datum::Text("model_record_id".into()))
        .push(", ")
        .row_ref(row(t.model_id));
    // The partition key of a type with `#[replicable(partition)]`, as `publish_*` writes it.
    if let Some(partition) = t.partition {
        sql.push(", ")
            .bind(Datum::Text("partition".into()))
            .push(", ")
            .row_ref(row(partition));
    }
    sql.push("))");
    sql
}

/// Marks the new row's verification pending ([`rules::pending`]), or nothing without
/// verification.
fn mark_pending(d: &'static ReplicableDescriptor) -> Option<Sql> {
    let (name, key) = d.tables.verification?;
    let table = Table {
        name,
        key,
        row_key: key,
    };
    let row = RowRef::new_row(d.tables.model_id);
    match d.verification {
        VerificationMode::Separate => Some(table.upsert_row_sql(&rules::pending(), row)),
        VerificationMode::Inline => Some(table.update_row_sql(&rules::pending(), row)),
        VerificationMode::None => None,
    }
}

/// The statements of one trigger body, each ended by `;` and a newline, indented by `indent`.
fn body(statements: &[Sql], backend: Backend, indent: &str) -> String {
    statements
        .iter()
        .map(|s| format!("{indent}{};\n", s.to_literal_sql(backend)))
        .collect()
}

/// The statements run for `created`/`updated` of `NEW`: the event, then pending.
fn publish_new(d: &'static ReplicableDescriptor, kind: EventKind, backend: Backend) -> Vec<Sql> {
    let mut v = vec![insert_event(d, kind, RowRef::new_row, backend)];
    v.extend(mark_pending(d));
    v
}

fn deleted_old(d: &'static ReplicableDescriptor, backend: Backend) -> Sql {
    insert_event(d, EventKind::Deleted, RowRef::old_row, backend)
}

/// A quoted identifier as literal SQL.
fn q(name: &'static str) -> String {
    let mut s = Sql::new();
    s.ident(name);
    s.to_literal_sql(Backend::Sqlite)
}

fn q_owned(name: String) -> String {
    let mut s = Sql::new();
    s.ident_owned(name);
    s.to_literal_sql(Backend::Sqlite)
}

/// The event triggers of `d` for `backend`, or `None` for an `events = "manual"` type.
pub fn event_triggers(d: &'static ReplicableDescriptor, backend: Backend) -> Option<TriggerSql> {
    if !d.captured_by_triggers() {
        return None;
    }
    Some(match backend {
        Backend::Sqlite => sqlite(d),
        Backend::Postgres => postgres(d),
    })
}

fn sqlite(d: &'static ReplicableDescriptor) -> TriggerSql {
    let b = Backend::Sqlite;
    let t = &d.tables;
    let (model, id, file) = (q(t.model), q(t.model_id), q(t.model_file));
    let flag = flag_enabled(d).to_literal_sql(b);
    let names = ["created", "deleted", "updated", "id_changed"].map(|s| object_name(d, s));
    let [created, deleted, updated, id_changed] = names.clone().map(q_owned);
    let mut up = String::new();
    let mut trigger = |name: &str, event: &str, when: String, statements: Vec<Sql>| {
        up.push_str(&format!(
            "CREATE TRIGGER IF NOT EXISTS {name} AFTER {event} ON {model} FOR EACH ROW\n\
             WHEN {when}\nBEGIN\n{}END;\n",
            body(&statements, b, "    ")
        ));
    };
    trigger(
        &created,
        "INSERT",
        flag.clone(),
        publish_new(d, EventKind::Created, b),
    );
    trigger(&deleted, "DELETE", flag.clone(), vec![deleted_old(d, b)]);
    trigger(
        &updated,
        &format!("UPDATE OF {file}"),
        format!("OLD.{id} = NEW.{id} AND OLD.{file} IS NOT NEW.{file} AND {flag}"),
        publish_new(d, EventKind::Updated, b),
    );
    let mut moved = vec![deleted_old(d, b)];
    moved.extend(publish_new(d, EventKind::Created, b));
    trigger(
        &id_changed,
        &format!("UPDATE OF {id}"),
        format!("OLD.{id} IS NOT NEW.{id} AND {flag}"),
        moved,
    );
    let down = names
        .into_iter()
        .rev()
        .map(|n| format!("DROP TRIGGER IF EXISTS {};\n", q_owned(n)))
        .collect();
    TriggerSql { up, down }
}

fn postgres(d: &'static ReplicableDescriptor) -> TriggerSql {
    let b = Backend::Postgres;
    let t = &d.tables;
    let (model, id, file) = (q(t.model), q(t.model_id), q(t.model_file));
    let flag = flag_enabled(d).to_literal_sql(b);
    let function = q_owned(object_name(d, "events"));
    let row_trigger = q_owned(object_name(d, "events"));
    let file_trigger = q_owned(object_name(d, "file_events"));
    let mut moved = vec![deleted_old(d, b)];
    moved.extend(publish_new(d, EventKind::Created, b));
    let indent = "        ";
    let up = format!(
        "CREATE OR REPLACE FUNCTION {function}() RETURNS trigger LANGUAGE plpgsql AS $geo$\n\
         BEGIN\n    \
             IF NOT {flag} THEN\n        RETURN NULL;\n    END IF;\n    \
             IF TG_OP = 'INSERT' THEN\n{created}    \
             ELSIF TG_OP = 'DELETE' THEN\n{deleted}    \
             ELSIF OLD.{id} IS DISTINCT FROM NEW.{id} THEN\n{moved}    \
             ELSE\n{updated}    \
             END IF;\n    \
             RETURN NULL;\n\
         END\n$geo$;\n\
         DROP TRIGGER IF EXISTS {row_trigger} ON {model};\n\
         CREATE TRIGGER {row_trigger} AFTER INSERT OR DELETE ON {model}\n    \
             FOR EACH ROW EXECUTE FUNCTION {function}();\n\
         DROP TRIGGER IF EXISTS {file_trigger} ON {model};\n\
         CREATE TRIGGER {file_trigger} AFTER UPDATE OF {file}, {id} ON {model}\n    \
             FOR EACH ROW WHEN (OLD.{file} IS DISTINCT FROM NEW.{file} OR OLD.{id} IS DISTINCT FROM NEW.{id})\n    \
             EXECUTE FUNCTION {function}();\n",
        created = body(&publish_new(d, EventKind::Created, b), b, indent),
        deleted = body(&[deleted_old(d, b)], b, indent),
        moved = body(&moved, b, indent),
        updated = body(&publish_new(d, EventKind::Updated, b), b, indent),
    );
    let down = format!(
        "DROP TRIGGER IF EXISTS {file_trigger} ON {model};\n\
         DROP TRIGGER IF EXISTS {row_trigger} ON {model};\n\
         DROP FUNCTION IF EXISTS {function}();\n"
    );
    TriggerSql { up, down }
}

/// The one trigger every event wakes waiting feeds with, on PostgreSQL: after each statement
/// that inserts into `geo_events` — the model-table triggers above, the library's
/// [`insert_event_if_enabled`](super::insert_event_if_enabled), raw SQL — it runs
/// `pg_notify('geo_events', '')`, delivered when the transaction commits (and never when it
/// rolls back; notifications of one transaction are folded into one). A statement-level
/// trigger on the log itself rather than a `pg_notify` in each type's function: one place
/// covers every writer, bulk inserts notify once, and the per-type triggers (and databases
/// migrated with them) stay as they are.
///
/// Its own migration step, `geo_notify_primary` ([`crate::migrations::plan_for`]), so a
/// database migrated before it existed gets it on upgrade. `None` on SQLite, which has no
/// NOTIFY: [`crate::notify`] watches `PRAGMA data_version` there.
pub fn notify_triggers(backend: Backend) -> Option<TriggerSql> {
    match backend {
        Backend::Sqlite => None,
        Backend::Postgres => {
            let function = q("geo_events_notify");
            let events = q("geo_events");
            let channel = crate::notify::CHANNEL;
            Some(TriggerSql {
                up: format!(
                    "CREATE OR REPLACE FUNCTION {function}() RETURNS trigger LANGUAGE plpgsql AS $geo$\n\
                     BEGIN\n    \
                         PERFORM pg_notify('{channel}', '');\n    \
                         RETURN NULL;\n\
                     END\n$geo$;\n\
                     DROP TRIGGER IF EXISTS {function} ON {events};\n\
                     CREATE TRIGGER {function} AFTER INSERT ON {events}\n    \
                         FOR EACH STATEMENT EXECUTE FUNCTION {function}();\n"
                ),
                down: format!(
                    "DROP TRIGGER IF EXISTS {function} ON {events};\n\
                     DROP FUNCTION IF EXISTS {function}();\n"
                ),
            })
        }
    }
}

#[cfg(test)]
mod tests;
