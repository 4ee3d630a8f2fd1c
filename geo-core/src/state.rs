//! The two state enums, stored as small integers exactly as GitLab stores them.
//!
//! The transitions themselves are pure functions in [`crate::transitions`].

use std::fmt;

use geo_schema::state::{replication, verification};

/// Replication state of a registry row on a secondary.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
#[repr(i16)]
pub enum ReplicationState {
    /// Waiting to be synced (0).
    Pending = replication::PENDING,
    /// A sync is in progress (1).
    Started = replication::STARTED,
    /// The file is present and matches the primary (2).
    Synced = replication::SYNCED,
    /// The last sync failed; it is retried after `retry_at` (3).
    Failed = replication::FAILED,
}

/// Verification state of a record on the primary or of a registry row on a secondary.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
#[repr(i16)]
pub enum VerificationState {
    /// Waiting to be checksummed (0).
    Pending = verification::PENDING,
    /// A checksum is being computed (1).
    Started = verification::STARTED,
    /// The checksum was computed (primary) or matched the primary's (secondary) (2).
    Succeeded = verification::SUCCEEDED,
    /// Checksumming failed or did not match; retried after `verification_retry_at` (3).
    Failed = verification::FAILED,
    /// Verification does not apply right now (the primary has not verified the record, or the
    /// registry row is not synced) (4).
    Disabled = verification::DISABLED,
}

/// A stored state value that is not one of the known integers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("unknown {kind} state value {value}")]
pub struct UnknownState {
    /// "replication" or "verification".
    pub kind: &'static str,
    /// The stored value.
    pub value: i16,
}

impl ReplicationState {
    /// All states in numeric order.
    pub const ALL: [ReplicationState; 4] =
        [Self::Pending, Self::Started, Self::Synced, Self::Failed];

    /// The stored integer.
    pub const fn as_i16(self) -> i16 {
        self as i16
    }

    /// The state stored as `value`.
    pub const fn from_i16(value: i16) -> Result<Self, UnknownState> {
        Ok(match value {
            replication::PENDING => Self::Pending,
            replication::STARTED => Self::Started,
            replication::SYNCED => Self::Synced,
            replication::FAILED => Self::Failed,
            _ => {
                return Err(UnknownState {
                    kind: "replication",
                    value,
                });
            }
        })
    }

    /// Lower-case name, e.g. `synced`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Started => "started",
            Self::Synced => "synced",
            Self::Failed => "failed",
        }
    }
}

impl VerificationState {
    /// All states in numeric order.
    pub const ALL: [VerificationState; 5] = [
        Self::Pending,
        Self::Started,
        Self::Succeeded,
        Self::Failed,
        Self::Disabled,
    ];

    /// The stored integer.
    pub const fn as_i16(self) -> i16 {
        self as i16
    }

    /// The state stored as `value`.
    pub const fn from_i16(value: i16) -> Result<Self, UnknownState> {
        Ok(match value {
            verification::PENDING => Self::Pending,
            verification::STARTED => Self::Started,
            verification::SUCCEEDED => Self::Succeeded,
            verification::FAILED => Self::Failed,
            verification::DISABLED => Self::Disabled,
            _ => {
                return Err(UnknownState {
                    kind: "verification",
                    value,
                });
            }
        })
    }

    /// Lower-case name, e.g. `succeeded`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Started => "started",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Disabled => "disabled",
        }
    }
}

impl fmt::Display for ReplicationState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for VerificationState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
