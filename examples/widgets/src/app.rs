//! The application's own schema and record operations on the primary. Every change to a record
//! publishes its Geo event in the same transaction: for widgets (`events = "triggers"`) the
//! triggers on `widgets` do it, so only a file rewritten in place calls `publish_updated`; for
//! gadgets (`events = "manual"`) every operation calls `publish_*` itself.
//!
//! This application runs on SQLite and PostgreSQL alike, so it dispatches its own Diesel code on
//! the connection's backend (`on_backend!` below); an application on one backend passes its own
//! `SqliteConnection` or `PgConnection` to `publish_*` directly. Every transaction that writes
//! is a [`WriteTransaction`] (`BEGIN IMMEDIATE` on SQLite: a `publish_*` reads the feature flags
//! before it inserts, and a deferred transaction that reads first can fail on a busy database).

use diesel::prelude::*;
use geo_diesel::geo_core::Backend;
use geo_diesel::geo_core::blob_store::{BlobPath, BlobStore};
use geo_diesel::primary::blob_path_in_use;
use geo_diesel::{
    AsDbConn, DbConn, WriteTransaction, publish_created, publish_deleted, publish_updated,
};

/// Runs `$body` with `$c` bound to the concrete connection behind `$conn` (an [`AsDbConn`]), so
/// the application's Diesel code type-checks once per backend.
macro_rules! on_backend {
    ($conn:expr, $c:ident => $body:expr) => {
        match AsDbConn::db($conn) {
            DbConn::Sqlite($c) => $body,
            DbConn::Pg($c) => $body,
        }
    };
}

use crate::{Gadget, Widget, gadgets, widgets};

/// The application's own migration (run before Geo's primary migrations).
pub fn app_schema_sql(backend: Backend) -> &'static str {
    match backend {
        Backend::Sqlite => {
            "CREATE TABLE IF NOT EXISTS \"widgets\" (\"id\" INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL, \
             \"file_path\" TEXT NOT NULL, \"name\" TEXT NOT NULL, \
             \"tenant_id\" INTEGER NOT NULL DEFAULT 0);\n\
             CREATE TABLE IF NOT EXISTS \"gadgets\" (\"id\" INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL, \
             \"blob_key\" TEXT NOT NULL, \"label\" TEXT NOT NULL);"
        }
        Backend::Postgres => {
            "CREATE TABLE IF NOT EXISTS \"widgets\" (\"id\" BIGSERIAL PRIMARY KEY, \
             \"file_path\" TEXT NOT NULL, \"name\" TEXT NOT NULL, \
             \"tenant_id\" BIGINT NOT NULL DEFAULT 0);\n\
             CREATE TABLE IF NOT EXISTS \"gadgets\" (\"id\" BIGSERIAL PRIMARY KEY, \
             \"blob_key\" TEXT NOT NULL, \"label\" TEXT NOT NULL);"
        }
    }
}

/// Creates the application's tables.
pub fn create_app_schema(conn: &mut impl AsDbConn) -> QueryResult<()> {
    let mut db = conn.db();
    let backend = db.backend();
    db.batch_execute(app_schema_sql(backend))
}

/// Errors from the application's operations.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// Database.
    #[error(transparent)]
    Db(#[from] diesel::result::Error),
    /// Publishing the Geo event.
    #[error(transparent)]
    Publish(#[from] geo_diesel::primary::PrimaryError),
    /// Blob store.
    #[error(transparent)]
    Blob(#[from] geo_diesel::geo_core::blob_store::BlobError),
    /// Bad blob path.
    #[error(transparent)]
    Path(#[from] geo_diesel::geo_core::blob_store::InvalidBlobPath),
}

fn path(s: &str) -> Result<BlobPath, AppError> {
    Ok(BlobPath::new(s)?)
}

/// Stores `data` as a new widget's file, then inserts the widget (of tenant 0); the insert
/// trigger publishes `created` in the same statement.
pub fn create_widget(
    conn: &mut impl AsDbConn,
    store: &dyn BlobStore,
    name: &str,
    file_path: &str,
    data: &[u8],
) -> Result<Widget, AppError> {
    create_widget_in(conn, store, 0, name, file_path, data)
}

/// [`create_widget`] for tenant `tenant_id` (the partition selective sync selects on).
pub fn create_widget_in(
    conn: &mut impl AsDbConn,
    store: &dyn BlobStore,
    tenant_id: i64,
    name: &str,
    file_path: &str,
    data: &[u8],
) -> Result<Widget, AppError> {
    store.write(&path(file_path)?, &mut &data[..], None)?;
    let w = on_backend!(conn, c => diesel::insert_into(widgets::table)
        .values((
            widgets::file_path.eq(file_path),
            widgets::name.eq(name),
            widgets::tenant_id.eq(tenant_id),
        ))
        .returning(Widget::as_returning())
        .get_result(c)?);
    Ok(w)
}

/// Replaces a widget's file content (atomically, same path) and publishes `updated`: no column
/// changes, so no trigger sees it.
pub fn update_widget(
    conn: &mut impl AsDbConn,
    store: &dyn BlobStore,
    w: &Widget,
    data: &[u8],
) -> Result<(), AppError> {
    store.write(&path(&w.file_path)?, &mut &data[..], None)?;
    on_backend!(conn, c => c.write_transaction::<_, AppError, _>(|c| {
        publish_updated(c, w)?;
        Ok(())
    }))
}

/// Deletes a widget (the delete trigger publishes `deleted` in the same statement), then
/// removes its file unless another record still points at it.
pub fn delete_widget(
    conn: &mut impl AsDbConn,
    store: &dyn BlobStore,
    w: &Widget,
) -> Result<(), AppError> {
    let shared = on_backend!(conn, c => c.write_transaction::<_, AppError, _>(|c| {
        diesel::delete(widgets::table.find(w.id)).execute(c)?;
        Ok(blob_path_in_use(c, &w.file_path, None)?)
    }))?;
    // Another record may point at the same file: it stays until its last record goes.
    if !shared {
        store.delete(&path(&w.file_path)?)?;
    }
    Ok(())
}

/// Stores `data` as a new gadget's file, then inserts the gadget and publishes `created`.
pub fn create_gadget(
    conn: &mut impl AsDbConn,
    store: &dyn BlobStore,
    label: &str,
    blob_key: &str,
    data: &[u8],
) -> Result<Gadget, AppError> {
    store.write(&path(blob_key)?, &mut &data[..], None)?;
    on_backend!(conn, c => c.write_transaction::<_, AppError, _>(|c| {
        let g: Gadget = diesel::insert_into(gadgets::table)
            .values((gadgets::blob_key.eq(blob_key), gadgets::label.eq(label)))
            .returning(Gadget::as_returning())
            .get_result(c)?;
        publish_created(c, &g)?;
        Ok(g)
    }))
}

/// Replaces a gadget's file content and publishes `updated`.
pub fn update_gadget(
    conn: &mut impl AsDbConn,
    store: &dyn BlobStore,
    g: &Gadget,
    data: &[u8],
) -> Result<(), AppError> {
    store.write(&path(&g.blob_key)?, &mut &data[..], None)?;
    on_backend!(conn, c => c.write_transaction::<_, AppError, _>(|c| {
        publish_updated(c, g)?;
        Ok(())
    }))
}

/// Deletes a gadget and publishes `deleted`, then removes its file unless another record still
/// points at it.
pub fn delete_gadget(
    conn: &mut impl AsDbConn,
    store: &dyn BlobStore,
    g: &Gadget,
) -> Result<(), AppError> {
    let shared = on_backend!(conn, c => c.write_transaction::<_, AppError, _>(|c| {
        diesel::delete(gadgets::table.find(g.id)).execute(c)?;
        publish_deleted(c, g)?;
        Ok(blob_path_in_use(c, &g.blob_key, None)?)
    }))?;
    if !shared {
        store.delete(&path(&g.blob_key)?)?;
    }
    Ok(())
}
