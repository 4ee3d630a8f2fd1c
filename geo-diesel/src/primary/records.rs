//! Reads of the primary's model tables and verification state that the secondaries ask for.

use diesel::QueryableByName;
use diesel::sql_types::{BigInt, Binary, Nullable, SmallInt};
use geo_core::schema::Column;
use geo_core::{ReplicableDescriptor, VerificationState};

use super::{PrimaryError, q};
use crate::db::AsDbConn;
use crate::sql::{IdPathRow, IdRow, Sql};

/// The blob paths of `ids`, read from the model table.
pub fn blob_paths(
    conn: &mut impl AsDbConn,
    d: &'static ReplicableDescriptor,
    ids: &[i64],
) -> Result<Vec<(i64, String)>, PrimaryError> {
    let mut out = Vec::new();
    let (t, id, file) = (d.tables.model, d.tables.model_id, d.tables.model_file);
    for chunk in ids.chunks(crate::sql::CHUNK) {
        let mut sql = Sql::new();
        sql.push("SELECT CAST(")
            .ident(id)
            .push(" AS BIGINT) AS id, ");
        sql.ident(file)
            .push(" AS path FROM ")
            .ident(t)
            .push(" WHERE ");
        sql.ident(id)
            .push(" IN (")
            .ints(chunk.iter().copied())
            .push(")");
        let rows: Vec<IdPathRow> = sql.load(conn).map_err(q("reading blob paths", d))?;
        out.extend(rows.into_iter().map(|r| (r.id, r.path)));
    }
    Ok(out)
}

/// The verification state and checksum of records, read from the primary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrimaryChecksum {
    /// The model id.
    pub id: i64,
    /// The verification state.
    pub state: VerificationState,
    /// The checksum, present when `state` is `Succeeded`.
    pub checksum: Option<Vec<u8>>,
}

/// Reads the verification state and checksum of `ids` on the primary (set-based).
pub fn primary_checksums(
    conn: &mut impl AsDbConn,
    d: &'static ReplicableDescriptor,
    ids: &[i64],
) -> Result<Vec<PrimaryChecksum>, PrimaryError> {
    #[derive(QueryableByName)]
    struct Row {
        #[diesel(sql_type = BigInt)]
        id: i64,
        #[diesel(sql_type = SmallInt)]
        state: i16,
        #[diesel(sql_type = Nullable<Binary>)]
        checksum: Option<Vec<u8>>,
    }
    let Some((table, key)) = d.tables.verification else {
        return Ok(Vec::new());
    };
    let mut out = Vec::with_capacity(ids.len());
    for chunk in ids.chunks(crate::sql::CHUNK) {
        let mut sql = Sql::new();
        sql.push("SELECT CAST(").ident(key);
        sql.push(" AS BIGINT) AS id, ")
            .ident(Column::VerificationState.name())
            .push(" AS state, ")
            .ident(Column::VerificationChecksum.name())
            .push(" AS checksum FROM ");
        sql.ident(table).push(" WHERE ").ident(key);
        sql.push(" IN (").ints(chunk.iter().copied()).push(")");
        let rows: Vec<Row> = sql.load(conn).map_err(q("reading primary checksums", d))?;
        out.extend(rows.into_iter().map(|r| {
            let state = VerificationState::from_i16(r.state).unwrap_or(VerificationState::Pending);
            PrimaryChecksum {
                id: r.id,
                checksum: (state == VerificationState::Succeeded)
                    .then_some(r.checksum)
                    .flatten(),
                state,
            }
        }));
    }
    Ok(out)
}

/// Number of model records.
pub fn count_records(
    conn: &mut impl AsDbConn,
    d: &'static ReplicableDescriptor,
) -> Result<u64, PrimaryError> {
    #[derive(QueryableByName)]
    struct Row {
        #[diesel(sql_type = BigInt)]
        n: i64,
    }
    let mut sql = Sql::new();
    sql.push("SELECT CAST(COUNT(*) AS BIGINT) AS n FROM ")
        .ident(d.tables.model);
    let rows: Vec<Row> = sql.load(conn).map_err(q("counting records", d))?;
    Ok(rows.first().map_or(0, |r| r.n.max(0) as u64))
}

/// Every model id, ascending.
pub fn all_ids(
    conn: &mut impl AsDbConn,
    d: &'static ReplicableDescriptor,
) -> Result<Vec<i64>, PrimaryError> {
    model_ids(conn, d, i64::MIN, i64::MAX)
}

/// The model ids in `[from, to]`, ascending.
pub fn model_ids(
    conn: &mut impl AsDbConn,
    d: &'static ReplicableDescriptor,
    from: i64,
    to: i64,
) -> Result<Vec<i64>, PrimaryError> {
    let id = d.tables.model_id;
    let mut sql = Sql::new();
    sql.push("SELECT CAST(")
        .ident(id)
        .push(" AS BIGINT) AS id FROM ");
    sql.ident(d.tables.model).push(" WHERE ").ident(id);
    sql.push(" BETWEEN ")
        .bind_i64(from)
        .push(" AND ")
        .bind_i64(to);
    sql.push(" ORDER BY ").ident(id);
    let rows: Vec<IdRow> = sql.load(conn).map_err(q("reading model ids", d))?;
    Ok(rows.into_iter().map(|r| r.id).collect())
}

/// The largest model id.
pub fn max_model_id(
    conn: &mut impl AsDbConn,
    d: &'static ReplicableDescriptor,
) -> Result<Option<i64>, PrimaryError> {
    #[derive(QueryableByName)]
    struct Row {
        #[diesel(sql_type = Nullable<BigInt>)]
        n: Option<i64>,
    }
    let mut sql = Sql::new();
    sql.push("SELECT CAST(MAX(").ident(d.tables.model_id);
    sql.push(") AS BIGINT) AS n FROM ").ident(d.tables.model);
    let rows: Vec<Row> = sql.load(conn).map_err(q("reading the max model id", d))?;
    Ok(rows.first().and_then(|r| r.n))
}

/// Whether any record of any registered replicable still points at `path` (its file column),
/// optionally leaving out one record (`except`: the replicable name and model id being removed).
/// A record removed from the primary removes its file only when this is `false`: two records
/// may share one file. One query per replicable on its file column: give that column an index
/// when deletes are frequent (the registry's `blob_path` has one).
pub fn blob_path_in_use(
    conn: &mut impl AsDbConn,
    path: &str,
    except: Option<(&str, i64)>,
) -> Result<bool, PrimaryError> {
    use geo_core::transitions::Datum;
    for d in geo_core::replicables() {
        let (t, id, file) = (d.tables.model, d.tables.model_id, d.tables.model_file);
        let mut sql = Sql::new();
        sql.push("SELECT CAST(")
            .ident(id)
            .push(" AS BIGINT) AS id FROM ")
            .ident(t)
            .push(" WHERE ")
            .ident(file)
            .push(" = ")
            .bind(Datum::Text(path.to_owned()));
        if let Some((_, except_id)) = except.filter(|(name, _)| *name == d.name) {
            sql.push(" AND ").ident(id).push(" <> ").bind_i64(except_id);
        }
        sql.push(" LIMIT 1");
        let rows: Vec<IdRow> = sql
            .load(conn)
            .map_err(q("looking for other users of a file", d))?;
        if !rows.is_empty() {
            return Ok(true);
        }
    }
    Ok(false)
}
