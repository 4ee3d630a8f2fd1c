//! Removing the files of removed records without removing a file another record still uses.
//!
//! Two records may point at one path (an application that deduplicates uploads, a copy that
//! kept its source's path), of one type or of two types sharing the blob store. Every place a
//! secondary removes a record's file — a `deleted` event (the log cursor), an orphan (the
//! backfill), a record gone during its download (the sync) — goes through
//! [`remove_unshared_files`], which keeps every path a registry row of any type, other than the
//! rows being removed, still records.

use std::collections::{BTreeMap, BTreeSet};

use geo_core::blob_store::{BlobPath, BlobStore};
use geo_core::schema::Column;
use geo_core::transitions::Datum;
use geo_core::{ReplicableDescriptor, replicables};

use crate::db::AsDbConn;
use crate::registry::{Registry, RegistryError};
use crate::sql::{IdPathRow, Sql};

/// One file a removal wants gone: the record removed and the path its file has.
#[derive(Debug, Clone)]
pub struct FileRemoval {
    /// The type of the removed record.
    pub descriptor: &'static ReplicableDescriptor,
    /// The removed record's id.
    pub id: i64,
    /// Its file.
    pub path: BlobPath,
}

/// The paths among `paths` that a registry row of any registered type records, other than the
/// rows in `except` (`(replicable name, id)`).
pub fn paths_in_use(
    conn: &mut impl AsDbConn,
    paths: &[String],
    except: &BTreeSet<(&'static str, i64)>,
) -> Result<BTreeSet<String>, RegistryError> {
    let mut used = BTreeSet::new();
    if paths.is_empty() {
        return Ok(used);
    }
    for d in replicables() {
        let table = Registry::of(d).table();
        for chunk in paths.chunks(crate::sql::CHUNK) {
            let mut sql = Sql::new();
            sql.push("SELECT ")
                .ident(table.key)
                .push(" AS id, ")
                .ident(Column::BlobPath.name())
                .push(" AS path FROM ")
                .ident(table.name)
                .push(" WHERE ")
                .ident(Column::BlobPath.name())
                .push(" IN (");
            for (i, p) in chunk.iter().enumerate() {
                if i > 0 {
                    sql.push(",");
                }
                sql.bind(Datum::Text(p.clone()));
            }
            sql.push(")");
            let rows: Vec<IdPathRow> = sql.load(conn).map_err(|source| RegistryError {
                what: "reading shared blob paths",
                registry: d.tables.registry,
                source,
            })?;
            used.extend(
                rows.into_iter()
                    .filter(|r| !except.contains(&(d.name, r.id)))
                    .map(|r| r.path),
            );
        }
    }
    Ok(used)
}

/// Deletes the files of `removals` from `store`, except those whose path another registry row
/// (of any type) still records. Failures are logged, not returned: the record is gone either
/// way, and a file left behind is only space. Returns how many files were deleted.
///
/// `store` is `None` when this site does not manage its files: object storage with
/// `sync_object_storage` off, whose objects the storage provider copies (and may share with the
/// primary). Then nothing is deleted.
pub fn remove_unshared_files(
    conn: &mut impl AsDbConn,
    store: Option<&dyn BlobStore>,
    removals: &[FileRemoval],
    why: &'static str,
) -> usize {
    if removals.is_empty() {
        return 0;
    }
    let Some(store) = store else {
        tracing::debug!(
            files = removals.len(),
            why,
            "files left to the storage provider (sync_object_storage off)"
        );
        return 0;
    };
    let except: BTreeSet<(&'static str, i64)> =
        removals.iter().map(|r| (r.descriptor.name, r.id)).collect();
    let mut by_path: BTreeMap<String, &FileRemoval> = BTreeMap::new();
    for r in removals {
        by_path.entry(r.path.as_str().to_owned()).or_insert(r);
    }
    let paths: Vec<String> = by_path.keys().cloned().collect();
    let used = match paths_in_use(conn, &paths, &except) {
        Ok(used) => used,
        Err(e) => {
            // Not knowing whether a file is shared, keep it.
            tracing::warn!(error = %e, why, files = paths.len(), "could not check whether files are shared; keeping them");
            return 0;
        }
    };
    let mut deleted = 0;
    for (path, r) in by_path {
        if used.contains(&path) {
            tracing::info!(
                replicable = r.descriptor.name,
                id = r.id,
                path,
                why,
                "file kept: another record still uses it"
            );
            continue;
        }
        match store.delete(&r.path) {
            Ok(true) => deleted += 1,
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(replicable = r.descriptor.name, id = r.id, path, why, error = %e, "could not remove a file")
            }
        }
    }
    deleted
}
