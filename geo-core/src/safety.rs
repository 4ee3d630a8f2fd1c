//! Safety before destruction: the pure rules a secondary applies before it removes anything.
//!
//! Two guards, both stated here once and used by geo-diesel's passes:
//!
//! - **The mass-removal guard** ([`allowed_removals`]): a sweep may remove at most
//!   `⌊rows × share⌋` of a type's registry rows (default share 10 %), and always one:
//!   `max(⌊rows × share⌋, 1)`. So 10 of 100 go and 11 are refused; in a tiny registry, where a
//!   share means nothing, one row at a time goes (1 of 3, the only row of a registry of one) and
//!   2 of 3 are refused. The case one row cannot cover — a primary whose database was replaced
//!   — is the identity check's. A sweep over the limit removes nothing
//!   ([`MassRemovalRefusal`]) until an operator confirms it.
//! - **The primary's identity and event-id high-water mark** ([`check_primary`]): a secondary
//!   follows one primary database ([`PrimaryIdentity`]); another identity, or a high-water mark
//!   below the event id the cursor already passed, halts every pass that applies events or
//!   removes anything ([`SafetyHalt`]) until the operator reconciles.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The default share of a type's registry rows one sweep may remove (10 %).
pub const DEFAULT_MAX_REMOVAL_SHARE: f64 = 0.10;

/// How many of `rows` registry rows one sweep may remove with `share` (clamped to 0..=1):
/// `max(⌊rows × share⌋, 1)` — one row may always go.
pub fn allowed_removals(rows: u64, share: f64) -> u64 {
    let share = if share.is_nan() {
        0.0
    } else {
        share.clamp(0.0, 1.0)
    };
    // A tiny epsilon so that 0.1 × 100 is 10, not 9.999….
    let by_share = ((rows as f64) * share + 1e-9).floor() as u64;
    by_share.min(rows).max(1)
}

/// What a refused removal would have done.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RemovalKind {
    /// The backfill's removal of registry rows (and their files) the primary no longer lists.
    Orphans,
    /// The sync's marking of rows as `missing_on_primary`.
    MissingOnPrimary,
}

impl RemovalKind {
    /// The wire name (`orphans`, `missing_on_primary`), also the metric's `kind` label.
    pub fn as_str(self) -> &'static str {
        match self {
            RemovalKind::Orphans => "orphans",
            RemovalKind::MissingOnPrimary => "missing_on_primary",
        }
    }
}

/// A sweep the mass-removal guard refused: nothing was removed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MassRemovalRefusal {
    /// The replicable name.
    pub replicable: String,
    /// What would have been removed.
    pub kind: RemovalKind,
    /// How many rows the sweep would have removed (or marked).
    pub would_remove: u64,
    /// The type's registry rows the share is taken of.
    pub registry_rows: u64,
    /// The most the guard allows ([`allowed_removals`]).
    pub allowed: u64,
}

impl fmt::Display for MassRemovalRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self.kind {
            RemovalKind::Orphans => "remove",
            RemovalKind::MissingOnPrimary => "mark missing on the primary",
        };
        write!(
            f,
            "mass removal refused: {} would {what} {} of {} registry rows (at most {} allowed); confirm with `backfill --allow-mass-removal`",
            self.replicable, self.would_remove, self.registry_rows, self.allowed
        )
    }
}

/// What a primary publishes about its database: a random identity created once with the
/// database, and the highest event id it ever issued (ids are never reused).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrimaryIdentity {
    /// The database's identity (32 hex digits).
    pub identity: String,
    /// The highest event id ever issued (0 before the first event), even if pruned since.
    pub high_water_mark: i64,
}

/// Why a secondary stopped applying events and every destructive pass.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum SafetyHalt {
    /// The primary's database is not the one this secondary followed (restarted on an empty
    /// or another database).
    IdentityChanged {
        /// The identity the secondary followed.
        followed: String,
        /// The identity the primary publishes now.
        seen: String,
    },
    /// The primary's highest issued event id is below what the cursor already passed (a
    /// restore, a failover to a lagging replica, a power loss): new events would reuse ids the
    /// cursor skips.
    EventIdsWentBackwards {
        /// The event id the cursor already passed.
        cursor: i64,
        /// The primary's high-water mark.
        high_water_mark: i64,
    },
    /// The primary stopped publishing an identity although the secondary followed one.
    IdentityMissing {
        /// The identity the secondary followed.
        followed: String,
    },
}

impl fmt::Display for SafetyHalt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let fix = "events and removals stopped; run `secondary --reconcile`";
        match self {
            SafetyHalt::IdentityChanged { followed, seen } => write!(
                f,
                "primary identity changed (followed {followed}, primary now says {seen}): {fix}"
            ),
            SafetyHalt::EventIdsWentBackwards {
                cursor,
                high_water_mark,
            } => write!(
                f,
                "primary event ids went backwards (cursor passed {cursor}, primary's high-water mark is {high_water_mark}): {fix}"
            ),
            SafetyHalt::IdentityMissing { followed } => write!(
                f,
                "primary no longer publishes its identity (followed {followed}): {fix}"
            ),
        }
    }
}

/// What a secondary does with what its primary published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PrimaryCheck {
    /// The primary is the one followed and its ids did not go backwards.
    Same,
    /// First contact: follow this identity from now on.
    Adopt(String),
    /// Stop (see [`SafetyHalt`]).
    Halt(SafetyHalt),
}

/// Compares what the primary published (`seen`; `None` when its source publishes nothing) with
/// the identity the secondary follows and the event id its cursor passed.
pub fn check_primary(
    followed: Option<&str>,
    cursor: i64,
    seen: Option<&PrimaryIdentity>,
) -> PrimaryCheck {
    match (followed, seen) {
        (None, None) => PrimaryCheck::Same,
        (Some(f), None) => PrimaryCheck::Halt(SafetyHalt::IdentityMissing {
            followed: f.to_owned(),
        }),
        (Some(f), Some(s)) if f != s.identity => PrimaryCheck::Halt(SafetyHalt::IdentityChanged {
            followed: f.to_owned(),
            seen: s.identity.clone(),
        }),
        (_, Some(s)) if s.high_water_mark < cursor => {
            PrimaryCheck::Halt(SafetyHalt::EventIdsWentBackwards {
                cursor,
                high_water_mark: s.high_water_mark,
            })
        }
        (Some(_), Some(_)) => PrimaryCheck::Same,
        (None, Some(s)) => PrimaryCheck::Adopt(s.identity.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn share_with_one_row_always_allowed() {
        assert_eq!(allowed_removals(100, 0.10), 10);
        assert_eq!(allowed_removals(1000, 0.10), 100);
        assert_eq!(allowed_removals(3, 0.10), 1);
        assert_eq!(allowed_removals(2, 0.10), 1);
        assert_eq!(allowed_removals(1, 0.10), 1);
        assert_eq!(allowed_removals(0, 0.10), 1);
        assert_eq!(allowed_removals(1, 1.0), 1);
        assert_eq!(allowed_removals(9, 1.0), 9);
        assert_eq!(allowed_removals(100, 0.0), 1);
        assert_eq!(allowed_removals(100, 7.0), 100, "clamped");
        assert_eq!(allowed_removals(100, f64::NAN), 1);
    }

    fn id(identity: &str, hwm: i64) -> PrimaryIdentity {
        PrimaryIdentity {
            identity: identity.into(),
            high_water_mark: hwm,
        }
    }

    #[test]
    fn identity_and_high_water_mark_rules() {
        assert_eq!(
            check_primary(None, 0, Some(&id("a", 0))),
            PrimaryCheck::Adopt("a".into())
        );
        assert_eq!(
            check_primary(Some("a"), 5, Some(&id("a", 5))),
            PrimaryCheck::Same
        );
        assert_eq!(
            check_primary(Some("a"), 5, Some(&id("a", 9))),
            PrimaryCheck::Same
        );
        assert_eq!(check_primary(None, 0, None), PrimaryCheck::Same);
        assert!(matches!(
            check_primary(Some("a"), 5, Some(&id("b", 9))),
            PrimaryCheck::Halt(SafetyHalt::IdentityChanged { .. })
        ));
        assert_eq!(
            check_primary(Some("a"), 5, Some(&id("a", 4))),
            PrimaryCheck::Halt(SafetyHalt::EventIdsWentBackwards {
                cursor: 5,
                high_water_mark: 4
            })
        );
        // A cursor ahead of a first-seen primary is refused too (never adopt by skipping).
        assert!(matches!(
            check_primary(None, 5, Some(&id("a", 4))),
            PrimaryCheck::Halt(SafetyHalt::EventIdsWentBackwards { .. })
        ));
        assert!(matches!(
            check_primary(Some("a"), 5, None),
            PrimaryCheck::Halt(SafetyHalt::IdentityMissing { .. })
        ));
    }

    #[test]
    fn messages_say_what_and_how_to_recover() {
        let h = SafetyHalt::IdentityChanged {
            followed: "a".into(),
            seen: "b".into(),
        };
        assert!(h.to_string().contains("identity changed"), "{h}");
        assert!(h.to_string().contains("--reconcile"), "{h}");
        let r = MassRemovalRefusal {
            replicable: "widget".into(),
            kind: RemovalKind::Orphans,
            would_remove: 11,
            registry_rows: 100,
            allowed: 10,
        };
        assert_eq!(
            r.to_string(),
            "mass removal refused: widget would remove 11 of 100 registry rows (at most 10 allowed); confirm with `backfill --allow-mass-removal`"
        );
        let json = serde_json::to_value(&h).unwrap();
        assert_eq!(json["reason"], "identity_changed");
        assert_eq!(serde_json::from_value::<SafetyHalt>(json).unwrap(), h);
    }
}
