//! SKELETON (type-check only; replaced by the admin-data branch).
#![allow(missing_docs, unused_variables, clippy::all)]
use crate::db::{AsDbConn, DbPool};
use crate::registry::{Action, Registry};
use chrono::{DateTime, Utc};
use geo_core::state::{ReplicationState, VerificationState};
use geo_core::{ReplicableDescriptor, Role};
pub const MAX_PAGE: usize = 100;
pub const DEFAULT_PAGE: usize = 20;
pub const BULK_BATCH: usize = 1000;
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AdminError {
    #[error("invalid cursor")]
    BadCursor,
    #[error("{0}")]
    BadArgument(String),
    #[error(transparent)]
    Registry(#[from] crate::registry::RegistryError),
    #[error("{what}: {source}")]
    Database {
        what: &'static str,
        #[source]
        source: diesel::result::Error,
    },
}
#[derive(Debug, Clone, Default)]
pub struct PageRequest {
    pub first: Option<usize>,
    pub after: Option<String>,
    pub last: Option<usize>,
    pub before: Option<String>,
}
#[derive(Debug, Clone)]
pub struct Page<T> {
    pub rows: Vec<(String, T)>,
    pub has_next_page: bool,
    pub has_previous_page: bool,
}
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum RegistrySort {
    #[default]
    IdAsc,
    IdDesc,
    VerifiedAtAsc,
    VerifiedAtDesc,
    LastSyncedAtAsc,
    LastSyncedAtDesc,
}
#[derive(Debug, Clone, Default)]
pub struct RegistryFilter {
    pub ids: Option<Vec<i64>>,
    pub replication_state: Option<ReplicationState>,
    pub verification_state: Option<VerificationState>,
    pub keyword: Option<String>,
}
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct RegistryRecord {
    pub id: i64,
    pub model_record_id: i64,
    pub created_at: DateTime<Utc>,
    pub state: ReplicationState,
    pub retry_count: i16,
    pub retry_at: Option<DateTime<Utc>>,
    pub last_synced_at: Option<DateTime<Utc>>,
    pub last_sync_failure: Option<String>,
    pub missing_on_primary: bool,
    pub verification_state: VerificationState,
    pub verification_started_at: Option<DateTime<Utc>>,
    pub verified_at: Option<DateTime<Utc>>,
    pub verification_retry_at: Option<DateTime<Utc>>,
    pub verification_retry_count: i16,
    pub verification_failure: Option<String>,
    pub verification_checksum: Option<Vec<u8>>,
    pub verification_checksum_mismatched: Option<Vec<u8>>,
    pub checksum_mismatch: bool,
    pub blob_path: Option<String>,
}
impl Registry {
    pub fn list(
        &self,
        conn: &mut impl AsDbConn,
        filter: &RegistryFilter,
        sort: RegistrySort,
        page: &PageRequest,
    ) -> Result<Page<RegistryRecord>, AdminError> {
        todo!()
    }
    pub fn count_matching(
        &self,
        conn: &mut impl AsDbConn,
        filter: &RegistryFilter,
    ) -> Result<i64, AdminError> {
        todo!()
    }
    pub fn get(
        &self,
        conn: &mut impl AsDbConn,
        registry_id: i64,
    ) -> Result<Option<RegistryRecord>, AdminError> {
        todo!()
    }
    pub fn act_on_registry_id(
        &self,
        conn: &mut impl AsDbConn,
        registry_id: i64,
        action: Action,
    ) -> Result<bool, AdminError> {
        todo!()
    }
}
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct RecordRow {
    pub model_record_id: i64,
    pub file: Option<String>,
    pub verification_state: Option<VerificationState>,
    pub verification_started_at: Option<DateTime<Utc>>,
    pub verified_at: Option<DateTime<Utc>>,
    pub verification_retry_at: Option<DateTime<Utc>>,
    pub verification_retry_count: i16,
    pub verification_checksum: Option<Vec<u8>>,
    pub verification_failure: Option<String>,
}
#[derive(Debug, Clone, Default)]
pub struct RecordFilter {
    pub ids: Option<Vec<i64>>,
    pub verification_state: Option<VerificationState>,
    pub keyword: Option<String>,
}
pub fn list_records(
    conn: &mut impl AsDbConn,
    d: &'static ReplicableDescriptor,
    filter: &RecordFilter,
    page: &PageRequest,
) -> Result<Page<RecordRow>, AdminError> {
    todo!()
}
pub fn count_records_matching(
    conn: &mut impl AsDbConn,
    d: &'static ReplicableDescriptor,
    filter: &RecordFilter,
) -> Result<i64, AdminError> {
    todo!()
}
pub fn get_record(
    conn: &mut impl AsDbConn,
    d: &'static ReplicableDescriptor,
    model_id: i64,
) -> Result<Option<RecordRow>, AdminError> {
    todo!()
}
pub fn reverify_record(
    conn: &mut impl AsDbConn,
    d: &'static ReplicableDescriptor,
    model_id: i64,
) -> Result<bool, AdminError> {
    todo!()
}
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum BulkAction {
    ResyncAll,
    ReverifyAll,
}
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct BulkFilter {
    pub ids: Option<Vec<i64>>,
    pub replication_state: Option<ReplicationState>,
    pub verification_state: Option<VerificationState>,
}
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct BulkUpdate {
    pub id: i64,
    pub replicable: String,
    pub action: BulkAction,
    pub filter: BulkFilter,
    pub cursor: i64,
    pub processed: i64,
    pub changed: i64,
    pub created_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}
pub fn enqueue(
    conn: &mut impl AsDbConn,
    role: Role,
    d: &'static ReplicableDescriptor,
    action: BulkAction,
    filter: BulkFilter,
) -> Result<i64, AdminError> {
    todo!()
}
pub fn step(
    conn: &mut impl AsDbConn,
    role: Role,
    batch: usize,
) -> Result<Option<BulkUpdate>, AdminError> {
    todo!()
}
pub fn jobs(
    conn: &mut impl AsDbConn,
    unfinished_only: bool,
) -> Result<Vec<BulkUpdate>, AdminError> {
    todo!()
}
pub struct BulkWorker;
pub struct BulkWorkerHandle;
impl BulkWorkerHandle {
    pub fn stop(self) {}
}
impl BulkWorker {
    pub fn spawn(
        db: DbPool,
        role: Role,
        idle: std::time::Duration,
    ) -> std::io::Result<BulkWorkerHandle> {
        todo!()
    }
}
pub fn run_to_end(
    conn: &mut impl AsDbConn,
    role: Role,
    batch: usize,
    on_progress: &mut dyn FnMut(&BulkUpdate),
) -> Result<Option<BulkUpdate>, AdminError> {
    todo!()
}
