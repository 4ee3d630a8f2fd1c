//! A state change as a value: which rows it applies to ([`Guard`]), which columns it sets to
//! what ([`Value`]), and what must follow it ([`Then`]).
//!
//! geo-diesel renders a [`Change`] as one conditional `UPDATE … SET … WHERE <key> IN (…) AND
//! <guard>` (or the `DO UPDATE` of an upsert, or a claim's `… IN (SELECT … ORDER BY … LIMIT …)`);
//! [`Change::apply`] performs the same change on an in-memory [`Row`], which is what the
//! property tests exercise and what a differential test compares against real SQLite. Every
//! value is computed from the row *before* the change, as SQL evaluates an `UPDATE`.

use chrono::{DateTime, TimeDelta, Utc};

use crate::backoff::{BackoffCap, next_retry_time};
use crate::clock::Env;
use crate::schema::Column;
use crate::state::{ReplicationState, VerificationState};

/// A column value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Datum {
    /// SQL `NULL`.
    Null,
    /// A `SMALLINT` (states, retry counts).
    SmallInt(i16),
    /// A `BOOLEAN`.
    Bool(bool),
    /// Text (failure messages, paths).
    Text(String),
    /// Bytes (checksums).
    Bytes(Vec<u8>),
    /// A timestamp.
    Time(DateTime<Utc>),
}

impl Datum {
    /// `Some(t)` → [`Datum::Time`], `None` → [`Datum::Null`].
    pub fn time(t: Option<DateTime<Utc>>) -> Datum {
        t.map_or(Datum::Null, Datum::Time)
    }

    /// `Some(s)` → [`Datum::Text`], `None` → [`Datum::Null`].
    pub fn text(s: Option<String>) -> Datum {
        s.map_or(Datum::Null, Datum::Text)
    }

    /// `Some(b)` → [`Datum::Bytes`], `None` → [`Datum::Null`].
    pub fn bytes(b: Option<Vec<u8>>) -> Datum {
        b.map_or(Datum::Null, Datum::Bytes)
    }
}

/// A set of states of one state column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum States {
    /// Replication states (`state`).
    Replication(&'static [ReplicationState]),
    /// Verification states (`verification_state`).
    Verification(&'static [VerificationState]),
}

impl States {
    /// The state column the set is about.
    pub fn column(self) -> Column {
        match self {
            States::Replication(_) => Column::State,
            States::Verification(_) => Column::VerificationState,
        }
    }

    /// The stored values.
    pub fn values(self) -> Vec<i16> {
        match self {
            States::Replication(s) => s.iter().map(|s| s.as_i16()).collect(),
            States::Verification(s) => s.iter().map(|s| s.as_i16()).collect(),
        }
    }

    /// Whether `row` is in one of the states.
    pub fn matches(self, row: &dyn Row) -> bool {
        match row.get(self.column()) {
            Datum::SmallInt(v) => self.values().contains(&v),
            _ => false,
        }
    }
}

/// What a column is set to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// A constant (bound as a parameter).
    Set(Datum),
    /// The value of another column, `+ 1`, saturating at the `SMALLINT` maximum.
    IncrementOf(Column),
    /// A claim token: `t`, or `t − 1 ms` when the column already holds `t`, so a new token
    /// always differs from the one a running download holds, even on a manual clock.
    Token(DateTime<Utc>),
    /// The `n`-th per-row value of a batch (`UPDATE … FROM (VALUES …)`).
    PerRow(usize),
    /// The column keeps its value.
    Keep,
    /// `then` for rows in `states`, `otherwise` for the others (an SQL `CASE`).
    When {
        /// The condition.
        states: States,
        /// The value for rows in `states`.
        then: Box<Value>,
        /// The value for the others.
        otherwise: Box<Value>,
    },
}

impl Value {
    /// `Value::Set(Datum::Null)`.
    pub const NULL: Value = Value::Set(Datum::Null);

    /// A state value.
    pub fn replication(s: ReplicationState) -> Value {
        Value::Set(Datum::SmallInt(s.as_i16()))
    }

    /// A verification state value.
    pub fn verification(s: VerificationState) -> Value {
        Value::Set(Datum::SmallInt(s.as_i16()))
    }

    /// A `SMALLINT` constant.
    pub fn small(n: i16) -> Value {
        Value::Set(Datum::SmallInt(n))
    }

    /// A boolean constant.
    pub fn bool(b: bool) -> Value {
        Value::Set(Datum::Bool(b))
    }

    /// A timestamp constant.
    pub fn time(t: DateTime<Utc>) -> Value {
        Value::Set(Datum::Time(t))
    }

    /// A text constant.
    pub fn text(s: impl Into<String>) -> Value {
        Value::Set(Datum::Text(s.into()))
    }

    /// `then` for rows in `states`, `otherwise` for the others.
    pub fn when(states: States, then: Value, otherwise: Value) -> Value {
        Value::When {
            states,
            then: Box::new(then),
            otherwise: Box::new(otherwise),
        }
    }

    /// The value for `row` before the change (`per_row`: the batch values of this row).
    pub fn evaluate(&self, column: Column, row: &dyn Row, per_row: &[Datum]) -> Datum {
        match self {
            Value::Set(d) => d.clone(),
            Value::IncrementOf(c) => match row.get(*c) {
                Datum::SmallInt(n) if n < i16::MAX => Datum::SmallInt(n + 1),
                other => other,
            },
            Value::Token(t) => match row.get(column) {
                Datum::Time(old) if old == *t => Datum::Time(*t - TimeDelta::milliseconds(1)),
                _ => Datum::Time(*t),
            },
            Value::PerRow(n) => per_row.get(*n).cloned().unwrap_or(Datum::Null),
            Value::Keep => row.get(column),
            Value::When {
                states,
                then,
                otherwise,
            } => {
                if states.matches(row) {
                    then.evaluate(column, row, per_row)
                } else {
                    otherwise.evaluate(column, row, per_row)
                }
            }
        }
    }
}

/// A comparison of a column in a [`Guard`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Condition {
    /// The column equals the value (`NULL` never equals anything, as in SQL).
    Equals(Column, Value),
    /// The column is not `NULL` and differs from the value.
    Differs(Column, Datum),
    /// The column is `NULL` or earlier than the time (a stuck `started` row).
    NullOrBefore(Column, DateTime<Utc>),
    /// The column is `NULL` or not later than the time (a due retry).
    NullOrNotAfter(Column, DateTime<Utc>),
    /// The column is earlier than the time (`NULL` excluded).
    Before(Column, DateTime<Utc>),
}

impl Condition {
    fn matches(&self, row: &dyn Row, per_row: &[Datum]) -> bool {
        match self {
            Condition::Equals(c, v) => {
                let want = v.evaluate(*c, row, per_row);
                want != Datum::Null && row.get(*c) == want
            }
            Condition::Differs(c, d) => {
                let have = row.get(*c);
                have != Datum::Null && have != *d
            }
            Condition::NullOrBefore(c, t) => match row.get(*c) {
                Datum::Time(have) => have < *t,
                _ => true,
            },
            Condition::NullOrNotAfter(c, t) => match row.get(*c) {
                Datum::Time(have) => have <= *t,
                _ => true,
            },
            Condition::Before(c, t) => matches!(row.get(*c), Datum::Time(have) if have < *t),
        }
    }
}

/// Which rows a change applies to: the allowed from-states and the compare-and-set conditions
/// (claim tokens, timestamps), all of which must hold.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Guard {
    /// Allowed replication and verification states (empty: any).
    pub states: Vec<States>,
    /// Further conditions.
    pub conditions: Vec<Condition>,
}

impl Guard {
    /// Whether the guard holds for `row`.
    pub fn matches(&self, row: &dyn Row, per_row: &[Datum]) -> bool {
        self.states.iter().all(|s| s.matches(row))
            && self.conditions.iter().all(|c| c.matches(row, per_row))
    }
}

/// What follows a change in the same transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Then {
    /// Read the new value of `count` back (`RETURNING`) and set every column of `at` to
    /// [`next_retry_time`]`(now, count, cap)`: the backoff of a failure that just incremented it.
    ScheduleRetry {
        /// The retry count column, already incremented by the change.
        count: Column,
        /// The retry time columns to set.
        at: &'static [Column],
        /// The backoff cap.
        cap: BackoffCap,
    },
}

/// One state change: the only statement of a rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// A short name for errors and logs, e.g. `"sync failed"`.
    pub name: &'static str,
    /// Which rows it applies to.
    pub guard: Guard,
    /// The columns it sets, in order.
    pub set: Vec<(Column, Value)>,
    /// What follows it.
    pub then: Option<Then>,
}

impl Change {
    /// A change named `name` that sets `set` on rows matching `guard`.
    pub fn new(name: &'static str, guard: Guard, set: Vec<(Column, Value)>) -> Self {
        Change {
            name,
            guard,
            set,
            then: None,
        }
    }

    /// The value this change gives `column`, if it sets it.
    pub fn value_of(&self, column: Column) -> Option<&Value> {
        self.set.iter().find(|(c, _)| *c == column).map(|(_, v)| v)
    }

    /// Applies the change to `row` if the guard holds, as the `UPDATE` does (values from the
    /// row before the change), then its [`Then`]; returns whether it applied.
    pub fn apply(&self, row: &mut dyn Row, per_row: &[Datum], env: &Env) -> bool {
        if !self.guard.matches(&*row, per_row) {
            return false;
        }
        let new: Vec<(Column, Datum)> = self
            .set
            .iter()
            .map(|(c, v)| (*c, v.evaluate(*c, &*row, per_row)))
            .collect();
        for (c, d) in new {
            row.set(c, d);
        }
        if let Some(Then::ScheduleRetry { count, at, cap }) = &self.then {
            let n = match row.get(*count) {
                Datum::SmallInt(n) => i64::from(n),
                _ => 0,
            };
            let when = next_retry_time(env.now(), n, *cap, env.rng.as_ref());
            for c in *at {
                row.set(*c, Datum::Time(when));
            }
        }
        true
    }
}

/// A row held in memory, read and written column by column.
pub trait Row {
    /// The value of `column` (`Null` for a column the row does not have).
    fn get(&self, column: Column) -> Datum;
    /// Sets `column` (ignored for a column the row does not have).
    fn set(&mut self, column: Column, value: Datum);
}
