//! Verification fields shared by the primary's state rows and the secondary's registry rows, and
//! the accessor trait that generated `<Model>State` row types implement.

use chrono::{DateTime, Utc};

use crate::state::{UnknownState, VerificationState};

/// GitLab's verification columns, as plain Rust values.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct VerificationFields {
    /// `verification_state` as stored (see [`VerificationState`]).
    pub state: i16,
    /// `verification_started_at`.
    pub started_at: Option<DateTime<Utc>>,
    /// `verification_retry_at`.
    pub retry_at: Option<DateTime<Utc>>,
    /// `verified_at`.
    pub verified_at: Option<DateTime<Utc>>,
    /// `verification_retry_count`.
    pub retry_count: i16,
    /// `verification_checksum` (32 bytes of blake3).
    pub checksum: Option<Vec<u8>>,
    /// `verification_failure`, at most 255 characters.
    pub failure: Option<String>,
}

/// Read access to a row's verification columns, with typed accessors.
///
/// Generated `<Model>State` rows implement it, whether verification is kept in a separate
/// table or inline on the model table.
pub trait VerificationRecord {
    /// A copy of the verification columns.
    fn verification_fields(&self) -> VerificationFields;

    /// Replaces the verification columns (after a transition).
    fn set_verification_fields(&mut self, fields: VerificationFields);

    /// The verification state.
    fn verification_state(&self) -> Result<VerificationState, UnknownState> {
        VerificationState::from_i16(self.verification_fields().state)
    }

    /// Whether the record is verified (`succeeded`).
    fn is_verified(&self) -> bool {
        self.verification_fields().state == VerificationState::Succeeded.as_i16()
    }

    /// The checksum as lower-case hex, if any.
    fn verification_checksum_hex(&self) -> Option<String> {
        self.verification_fields().checksum.map(hex::encode)
    }
}
