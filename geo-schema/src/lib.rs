//! PROVISIONAL stub (replaced by the reshape-schema branch): the column names only.

/// A column of a registry or verification-state table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[allow(missing_docs)]
pub enum Column {
    State,
    RetryCount,
    RetryAt,
    LastSyncedAt,
    CreatedAt,
    LastSyncFailure,
    VerificationState,
    VerificationStartedAt,
    VerifiedAt,
    VerificationRetryAt,
    VerificationRetryCount,
    VerificationChecksum,
    VerificationChecksumMismatched,
    ChecksumMismatch,
    VerificationFailure,
    MissingOnPrimary,
    BlobPath,
}

impl Column {
    /// The SQL name.
    pub const fn name(self) -> &'static str {
        match self {
            Column::State => "state",
            Column::RetryCount => "retry_count",
            Column::RetryAt => "retry_at",
            Column::LastSyncedAt => "last_synced_at",
            Column::CreatedAt => "created_at",
            Column::LastSyncFailure => "last_sync_failure",
            Column::VerificationState => "verification_state",
            Column::VerificationStartedAt => "verification_started_at",
            Column::VerifiedAt => "verified_at",
            Column::VerificationRetryAt => "verification_retry_at",
            Column::VerificationRetryCount => "verification_retry_count",
            Column::VerificationChecksum => "verification_checksum",
            Column::VerificationChecksumMismatched => "verification_checksum_mismatched",
            Column::ChecksumMismatch => "checksum_mismatch",
            Column::VerificationFailure => "verification_failure",
            Column::MissingOnPrimary => "missing_on_primary",
            Column::BlobPath => "blob_path",
        }
    }
}
