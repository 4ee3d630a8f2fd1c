//! A secondary's registry as the operator sees it: filtered, sorted, keyset-paginated lists,
//! counts of what a filter matches, one row by its registry id, and the per-row actions.
//!
//! The state filters read the registry indexes `(state, id)` and `(verification_state, id)`:
//! a filter on one state in id order walks one index range and stops after `limit + 1` rows,
//! and its count reads the same range from the index alone.

use chrono::{DateTime, Utc};
use diesel::QueryableByName;
use diesel::sql_types::{BigInt, Binary, Bool, Nullable, SmallInt, Text};
use geo_core::schema::Column;
use geo_core::transitions::registry as rules;
use geo_core::{ReplicationState, VerificationState};

use super::{
    AdminError, Key, Keyset, Page, PageRequest, RegistryFilter, RegistrySort, count, db, in_ids,
    into_page, micros, plan,
};
use crate::db::AsDbConn;
use crate::registry::{Action, Registry};
use crate::sql::{Sql, Table};
use crate::types::UtcDateTime;
use crate::types::sql_types::GeoTimestamp;

/// One registry row, every field of GitLab's `RegistryType` (plus `blob_path`).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct RegistryRecord {
    /// The registry row's id.
    pub id: i64,
    /// The model record's id.
    pub model_record_id: i64,
    /// When the row was created.
    pub created_at: DateTime<Utc>,
    /// Replication state.
    pub state: ReplicationState,
    /// Failed syncs in a row.
    pub retry_count: i16,
    /// When the next sync retry is due.
    pub retry_at: Option<DateTime<Utc>>,
    /// When the last sync started.
    pub last_synced_at: Option<DateTime<Utc>>,
    /// Why the last sync failed.
    pub last_sync_failure: Option<String>,
    /// The file was missing on the primary at the last attempt.
    pub missing_on_primary: bool,
    /// Verification state.
    pub verification_state: VerificationState,
    /// When the running verification started.
    pub verification_started_at: Option<DateTime<Utc>>,
    /// When the row was last verified.
    pub verified_at: Option<DateTime<Utc>>,
    /// When the next verification retry is due.
    pub verification_retry_at: Option<DateTime<Utc>>,
    /// Failed verifications in a row.
    pub verification_retry_count: i16,
    /// Why the last verification failed.
    pub verification_failure: Option<String>,
    /// The local checksum.
    pub verification_checksum: Option<Vec<u8>>,
    /// The local checksum that did not match the primary's.
    pub verification_checksum_mismatched: Option<Vec<u8>>,
    /// The local checksum did not match the primary's.
    pub checksum_mismatch: bool,
    /// Where the file was written.
    pub blob_path: Option<String>,
}

#[derive(QueryableByName)]
struct Row {
    #[diesel(sql_type = BigInt)]
    id: i64,
    #[diesel(sql_type = BigInt)]
    model_record_id: i64,
    #[diesel(sql_type = GeoTimestamp)]
    created_at: UtcDateTime,
    #[diesel(sql_type = SmallInt)]
    state: i16,
    #[diesel(sql_type = SmallInt)]
    retry_count: i16,
    #[diesel(sql_type = Nullable<GeoTimestamp>)]
    retry_at: Option<UtcDateTime>,
    #[diesel(sql_type = Nullable<GeoTimestamp>)]
    last_synced_at: Option<UtcDateTime>,
    #[diesel(sql_type = Nullable<Text>)]
    last_sync_failure: Option<String>,
    #[diesel(sql_type = Bool)]
    missing_on_primary: bool,
    #[diesel(sql_type = SmallInt)]
    verification_state: i16,
    #[diesel(sql_type = Nullable<GeoTimestamp>)]
    verification_started_at: Option<UtcDateTime>,
    #[diesel(sql_type = Nullable<GeoTimestamp>)]
    verified_at: Option<UtcDateTime>,
    #[diesel(sql_type = Nullable<GeoTimestamp>)]
    verification_retry_at: Option<UtcDateTime>,
    #[diesel(sql_type = SmallInt)]
    verification_retry_count: i16,
    #[diesel(sql_type = Nullable<Text>)]
    verification_failure: Option<String>,
    #[diesel(sql_type = Nullable<Binary>)]
    verification_checksum: Option<Vec<u8>>,
    #[diesel(sql_type = Nullable<Binary>)]
    verification_checksum_mismatched: Option<Vec<u8>>,
    #[diesel(sql_type = Bool)]
    checksum_mismatch: bool,
    #[diesel(sql_type = Nullable<Text>)]
    blob_path: Option<String>,
}

/// The columns read, in [`Row`]'s names (besides `id` and the model id): every registry column
/// but `claimed_by`, which names a secondary process, not a state an operator reads.
const COLUMNS: [Column; 18] = Column::ALL;

fn t(v: Option<UtcDateTime>) -> Option<DateTime<Utc>> {
    v.map(UtcDateTime::get)
}

impl Row {
    fn into_record(self) -> RegistryRecord {
        RegistryRecord {
            id: self.id,
            model_record_id: self.model_record_id,
            created_at: self.created_at.get(),
            // An unknown stored value shows as the closest safe state rather than failing the
            // whole page.
            state: ReplicationState::from_i16(self.state).unwrap_or(ReplicationState::Pending),
            retry_count: self.retry_count,
            retry_at: t(self.retry_at),
            last_synced_at: t(self.last_synced_at),
            last_sync_failure: self.last_sync_failure,
            missing_on_primary: self.missing_on_primary,
            verification_state: VerificationState::from_i16(self.verification_state)
                .unwrap_or(VerificationState::Disabled),
            verification_started_at: t(self.verification_started_at),
            verified_at: t(self.verified_at),
            verification_retry_at: t(self.verification_retry_at),
            verification_retry_count: self.verification_retry_count,
            verification_failure: self.verification_failure,
            verification_checksum: self.verification_checksum,
            verification_checksum_mismatched: self.verification_checksum_mismatched,
            checksum_mismatch: self.checksum_mismatch,
            blob_path: self.blob_path,
        }
    }
}

impl RegistryRecord {
    fn key(&self, sort: RegistrySort) -> Key {
        let t = match sort.column() {
            Some(Column::VerifiedAt) => micros(self.verified_at),
            Some(_) => micros(self.last_synced_at),
            None => None,
        };
        Key { id: self.id, t }
    }
}

impl Registry {
    fn check_filter(&self, filter: &RegistryFilter) -> Result<(), AdminError> {
        if filter.verification_state.is_some() && !self.descriptor().verifies() {
            return Err(AdminError::BadArgument(format!(
                "{} has no verification: cannot filter by verification state",
                self.descriptor().name
            )));
        }
        Ok(())
    }

    fn select(&self) -> Sql {
        let name = self.descriptor().tables.registry;
        let mut sql = Sql::new();
        sql.push("SELECT ").qualified(name, "id").push(" AS id, ");
        sql.qualified(name, self.descriptor().tables.registry_model_id)
            .push(" AS model_record_id");
        for c in COLUMNS.into_iter().filter(|c| *c != Column::ClaimedBy) {
            sql.push(", ")
                .qualified(name, c.name())
                .push(" AS ")
                .ident(c.name());
        }
        sql.push(" FROM ").ident(name).push(" WHERE 1 = 1");
        sql
    }

    /// Appends ` AND …` for every term of `filter`.
    fn filter(&self, sql: &mut Sql, filter: &RegistryFilter) {
        let tables = &self.descriptor().tables;
        let name = tables.registry;
        if let Some(ids) = &filter.ids {
            in_ids(sql, name, "id", ids);
        }
        if let Some(s) = filter.replication_state {
            super::state_is(sql, name, Column::State, s.as_i16());
        }
        if let Some(s) = filter.verification_state {
            super::state_is(sql, name, Column::VerificationState, s.as_i16());
        }
        super::keyword_is(
            sql,
            name,
            tables.registry_model_id,
            Column::BlobPath.name(),
            filter.keyword.as_deref(),
        );
    }

    fn list_sql(&self, filter: &RegistryFilter, sort: RegistrySort, plan: &super::Plan) -> Sql {
        let mut sql = self.select();
        self.filter(&mut sql, filter);
        let keyset = Keyset {
            table: self.descriptor().tables.registry,
            id: "id",
            time: sort.column().map(Column::name),
            ascending: sort.ascending(),
        };
        keyset.finish(&mut sql, plan);
        sql
    }

    fn count_sql(&self, filter: &RegistryFilter) -> Sql {
        let mut sql = Sql::new();
        sql.push("SELECT CAST(COUNT(*) AS BIGINT) AS n FROM ")
            .ident(self.descriptor().tables.registry)
            .push(" WHERE 1 = 1");
        self.filter(&mut sql, filter);
        sql
    }

    /// The backend's plans of the two statements [`Registry::list`] and
    /// [`Registry::count_matching`] run for these arguments ([`Sql::explain`]), to check that
    /// they read the registry's indexes.
    pub fn explain_list(
        &self,
        conn: &mut impl AsDbConn,
        filter: &RegistryFilter,
        sort: RegistrySort,
        page: &PageRequest,
    ) -> Result<(Vec<String>, Vec<String>), AdminError> {
        self.check_filter(filter)?;
        let plan = plan(page, sort.tag())?;
        let list = self
            .list_sql(filter, sort, &plan)
            .explain(conn)
            .map_err(db("explaining a registry list"))?;
        let count = self
            .count_sql(filter)
            .explain(conn)
            .map_err(db("explaining a registry count"))?;
        Ok((list, count))
    }

    /// One page of the rows matching `filter` in `sort` order (GitLab's registries resolver).
    pub fn list(
        &self,
        conn: &mut impl AsDbConn,
        filter: &RegistryFilter,
        sort: RegistrySort,
        page: &PageRequest,
    ) -> Result<Page<RegistryRecord>, AdminError> {
        self.check_filter(filter)?;
        let plan = plan(page, sort.tag())?;
        let sql = self.list_sql(filter, sort, &plan);
        let rows: Vec<Row> = sql.load(conn).map_err(db("listing registry rows"))?;
        let rows = rows.into_iter().map(Row::into_record).collect();
        Ok(into_page(rows, &plan, sort.tag(), |r: &RegistryRecord| {
            r.key(sort)
        }))
    }

    /// How many rows match `filter` (the connection's `count`).
    pub fn count_matching(
        &self,
        conn: &mut impl AsDbConn,
        filter: &RegistryFilter,
    ) -> Result<i64, AdminError> {
        self.check_filter(filter)?;
        count(conn, &self.count_sql(filter), "counting registry rows")
    }

    /// The row with registry id `registry_id`.
    pub fn get(
        &self,
        conn: &mut impl AsDbConn,
        registry_id: i64,
    ) -> Result<Option<RegistryRecord>, AdminError> {
        let mut sql = self.select();
        in_ids(
            &mut sql,
            self.descriptor().tables.registry,
            "id",
            &[registry_id],
        );
        let rows: Vec<Row> = sql.load(conn).map_err(db("reading a registry row"))?;
        Ok(rows.into_iter().next().map(Row::into_record))
    }

    /// The row tracking model record `model_record_id`.
    pub fn get_by_model_id(
        &self,
        conn: &mut impl AsDbConn,
        model_record_id: i64,
    ) -> Result<Option<RegistryRecord>, AdminError> {
        let tables = &self.descriptor().tables;
        let mut sql = self.select();
        in_ids(
            &mut sql,
            tables.registry,
            tables.registry_model_id,
            &[model_record_id],
        );
        let rows: Vec<Row> = sql.load(conn).map_err(db("reading a registry row"))?;
        Ok(rows.into_iter().next().map(Row::into_record))
    }

    /// The registry table keyed by its own `id` (the operator's ids are registry ids).
    pub(crate) fn by_row_id(&self) -> Table {
        Table {
            name: self.descriptor().tables.registry,
            key: "id",
            row_key: "id",
        }
    }

    /// GitLab's per-row RESYNC / REVERIFY on registry row `registry_id`, through the same rules
    /// as [`Registry::act`]; `Ok(false)` when the row does not exist or the rule does not apply
    /// (e.g. a `started` row).
    pub fn act_on_registry_id(
        &self,
        conn: &mut impl AsDbConn,
        registry_id: i64,
        action: Action,
    ) -> Result<bool, AdminError> {
        self.check_action(action)?;
        Ok(!self.act_on_rows(conn, action, &[registry_id])?.is_empty())
    }

    /// [`AdminError::BadArgument`] for a reverify of a type without verification.
    pub(crate) fn check_action(&self, action: Action) -> Result<(), AdminError> {
        if action == Action::Reverify && !self.descriptor().verifies() {
            return Err(AdminError::BadArgument(format!(
                "{} has no verification: nothing to reverify",
                self.descriptor().name
            )));
        }
        Ok(())
    }

    /// [`Registry::act`] on registry row ids; returns the registry ids changed.
    pub(crate) fn act_on_rows(
        &self,
        conn: &mut impl AsDbConn,
        action: Action,
        registry_ids: &[i64],
    ) -> Result<Vec<i64>, AdminError> {
        let change = match action {
            Action::Resync => rules::resync(),
            Action::Reverify => rules::reverify(),
        };
        let changed = self
            .by_row_id()
            .apply(conn, &change, Some(registry_ids), &|_, _| Utc::now())
            .map_err(db(change.name))?;
        if !changed.is_empty() {
            // The sync and verification workers start on them now.
            crate::notify::registry_changed();
        }
        Ok(changed)
    }
}
