//! The static description of a replicable type, and how the runtime discovers them.
//!
//! Every `#[replicable]` struct registers one [`ReplicableDescriptor`] through
//! [`inventory`]; [`replicables()`] returns all of them, sorted by name, so the runtime never
//! needs a hand-kept list (GitLab keeps six).

use std::fmt;

/// How a replicable's data is copied between sites.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Strategy {
    /// A file in a blob store, named by one field of the model (`#[replicable(file)]`).
    Blob,
}

impl Strategy {
    /// The name used in the attribute (`strategy = "blob"`) and in status output.
    pub const fn as_str(self) -> &'static str {
        match self {
            Strategy::Blob => "blob",
        }
    }
}

impl fmt::Display for Strategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where the primary keeps a replicable's verification state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum VerificationMode {
    /// A separate `<snake_name>_states` table keyed by the model id (GitLab's recommended option).
    Separate,
    /// Verification columns added to the model table itself.
    Inline,
    /// No verification for this type.
    None,
}

impl VerificationMode {
    /// The name used in the attribute (`verification = "..."`).
    pub const fn as_str(self) -> &'static str {
        match self {
            VerificationMode::Separate => "separate",
            VerificationMode::Inline => "inline",
            VerificationMode::None => "none",
        }
    }
}

impl fmt::Display for VerificationMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a replicable's `created`/`updated`/`deleted` events reach `geo_events` on the primary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EventCapture {
    /// Triggers on the model table write the events in the changing transaction (the default):
    /// every `INSERT`, `DELETE` and `UPDATE` of the file column or the id is captured, whether
    /// it came through Diesel's DSL, a bulk update, raw SQL or a `psql` session. Only a file
    /// rewritten in place with no column change needs `publish_updated`.
    Triggers,
    /// The application calls `publish_created`/`publish_updated`/`publish_deleted` itself.
    Manual,
}

impl EventCapture {
    /// The name used in the attribute (`events = "..."`).
    pub const fn as_str(self) -> &'static str {
        match self {
            EventCapture::Triggers => "triggers",
            EventCapture::Manual => "manual",
        }
    }
}

impl fmt::Display for EventCapture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which database a migration targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    /// The application's main database on the primary site: `geo_events`, verification state.
    Primary,
    /// The tracking database on a secondary site: registries, the event-log cursor and gaps.
    Secondary,
}

impl Role {
    /// `"primary"` or `"secondary"`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Role::Primary => "primary",
            Role::Secondary => "secondary",
        }
    }

    /// Both roles, primary first.
    pub const ALL: [Role; 2] = [Role::Primary, Role::Secondary];
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A database backend the generated SQL is written for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Backend {
    /// SQLite 3.35 or newer (the embedded default).
    Sqlite,
    /// PostgreSQL 13 or newer.
    Postgres,
}

impl Backend {
    /// `"sqlite"` or `"postgres"`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }

    /// Both backends, SQLite first.
    pub const ALL: [Backend; 2] = [Backend::Sqlite, Backend::Postgres];
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One migration: the SQL that applies it and the SQL that reverts it.
///
/// Each string holds one or more statements separated by `;` and newlines; `up` is written to be
/// idempotent (`CREATE TABLE IF NOT EXISTS`, `CREATE INDEX IF NOT EXISTS`) where the backend allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Migration {
    /// Statements that apply the migration.
    pub up: &'static str,
    /// Statements that revert it.
    pub down: &'static str,
}

/// The migrations of one replicable for every backend and role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MigrationSet {
    /// SQLite, primary database.
    pub sqlite_primary: Migration,
    /// SQLite, secondary tracking database.
    pub sqlite_secondary: Migration,
    /// PostgreSQL, primary database.
    pub postgres_primary: Migration,
    /// PostgreSQL, secondary tracking database.
    pub postgres_secondary: Migration,
}

impl MigrationSet {
    /// The migration for `backend` and `role`.
    pub const fn get(&self, backend: Backend, role: Role) -> &Migration {
        match (backend, role) {
            (Backend::Sqlite, Role::Primary) => &self.sqlite_primary,
            (Backend::Sqlite, Role::Secondary) => &self.sqlite_secondary,
            (Backend::Postgres, Role::Primary) => &self.postgres_primary,
            (Backend::Postgres, Role::Secondary) => &self.postgres_secondary,
        }
    }
}

/// The SQL names of the tables and columns a replicable uses. Every identifier was validated at
/// compile time as a plain SQL identifier of at most 63 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tables {
    /// The model table on the primary (`#[diesel(table_name = ...)]`), e.g. `widgets`.
    pub model: &'static str,
    /// The model's primary-key column, e.g. `id`.
    pub model_id: &'static str,
    /// The column holding the blob path, relative to the blob store root (blob strategy).
    pub model_file: &'static str,
    /// The registry table on secondaries, e.g. `widget_registry`.
    pub registry: &'static str,
    /// The registry's foreign-key column naming the model record, e.g. `widget_id`.
    pub registry_model_id: &'static str,
    /// Where the primary keeps verification state: `(table, key column)`; `widget_states` /
    /// `widget_id` when separate, the model table and its id when inline, `None` without
    /// verification.
    pub verification: Option<(&'static str, &'static str)>,
    /// The column of the `#[replicable(partition)]` field (a tenant, a namespace): the integer
    /// key a secondary's selective sync selects on ([`crate::selective::Selection`]); `None`
    /// when the type has no partition field (a secondary then replicates all its records).
    pub partition: Option<&'static str>,
}

/// Everything the runtime knows about one replicable type, generated by `#[replicable]`.
#[derive(Debug)]
pub struct ReplicableDescriptor {
    /// The replicable name used in events, URLs, feature flags and metrics, e.g. `widget`.
    pub name: &'static str,
    /// Its plural, used in status fields and metrics, e.g. `widgets`.
    pub plural: &'static str,
    /// The Rust type name of the model, e.g. `Widget`.
    pub type_name: &'static str,
    /// How the data is replicated.
    pub strategy: Strategy,
    /// Where verification state lives on the primary.
    pub verification: VerificationMode,
    /// Default of the feature flag `geo_<name>_replication`.
    pub enabled_by_default: bool,
    /// How events are captured on the primary (`events = "..."`).
    pub events: EventCapture,
    /// SQL names.
    pub tables: Tables,
    /// Migration SQL for every backend and role.
    pub migrations: MigrationSet,
}

impl ReplicableDescriptor {
    /// The replicable name, e.g. `widget`.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The plural, e.g. `widgets`.
    pub fn plural(&self) -> &'static str {
        self.plural
    }

    /// The strategy.
    pub fn strategy(&self) -> Strategy {
        self.strategy
    }

    /// The SQL table and column names.
    pub fn tables(&self) -> &Tables {
        &self.tables
    }

    /// The partition column (`#[replicable(partition)]`), if the type has one.
    pub fn partition(&self) -> Option<&'static str> {
        self.tables.partition
    }

    /// Whether verification is on for this type.
    pub fn verifies(&self) -> bool {
        !matches!(self.verification, VerificationMode::None)
    }

    /// Whether triggers on the model table capture this type's events (`events = "triggers"`).
    pub fn captured_by_triggers(&self) -> bool {
        matches!(self.events, EventCapture::Triggers)
    }

    /// The migration for `backend` and `role`.
    pub fn migration(&self, backend: Backend, role: Role) -> &Migration {
        self.migrations.get(backend, role)
    }

    /// The feature flag that turns replication of this type on and off: `geo_<name>_replication`.
    pub fn feature_flag(&self) -> String {
        format!("geo_{}_replication", self.name)
    }
}

/// The entry `#[replicable]` submits to the inventory. Not for direct use.
#[doc(hidden)]
#[derive(Debug)]
pub struct Registration(pub &'static ReplicableDescriptor);

inventory::collect!(Registration);

/// Every replicable compiled into this program, sorted by name.
///
/// A type is "compiled in" when its crate is linked: a binary that never names the crate
/// defining a model gets no entry for it (rustc does not link an unreferenced dependency).
pub fn replicables() -> Vec<&'static ReplicableDescriptor> {
    let mut all: Vec<&'static ReplicableDescriptor> = inventory::iter::<Registration>
        .into_iter()
        .map(|r| r.0)
        .collect();
    all.sort_by(|a, b| a.name.cmp(b.name).then(a.type_name.cmp(b.type_name)));
    all
}

/// The registered replicable called `name`, if any.
pub fn find_replicable(name: &str) -> Option<&'static ReplicableDescriptor> {
    inventory::iter::<Registration>
        .into_iter()
        .map(|r| r.0)
        .find(|d| d.name == name)
}

/// Two registered replicables that would collide at run time.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "replicables `{first}` and `{second}` both use the {what} `{value}`; give one of them another `name` or `registry`"
)]
pub struct RegistryConflict {
    /// Type name of the first replicable.
    pub first: &'static str,
    /// Type name of the second replicable.
    pub second: &'static str,
    /// What collides: "name", "registry table" or "states table".
    pub what: &'static str,
    /// The colliding value.
    pub value: &'static str,
}

/// Checks that no two registered replicables share a name, a registry table or a states table.
pub fn check_replicables(all: &[&'static ReplicableDescriptor]) -> Result<(), RegistryConflict> {
    for (i, a) in all.iter().enumerate() {
        for b in &all[i + 1..] {
            let clash = |what, x: &'static str, y: &'static str| {
                (x == y).then_some(RegistryConflict {
                    first: a.type_name,
                    second: b.type_name,
                    what,
                    value: x,
                })
            };
            let sep = |d: &ReplicableDescriptor| match d.verification {
                VerificationMode::Separate => d.tables.verification.map(|v| v.0),
                _ => None,
            };
            if let Some(e) = clash("name", a.name, b.name)
                .or_else(|| clash("registry table", a.tables.registry, b.tables.registry))
                .or_else(|| match (sep(a), sep(b)) {
                    (Some(x), Some(y)) => clash("states table", x, y),
                    _ => None,
                })
            {
                return Err(e);
            }
        }
    }
    Ok(())
}
