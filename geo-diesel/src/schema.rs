//! The framework tables as Diesel `table!`s, one definition for SQLite and PostgreSQL.
//!
//! The DDL that creates them is in [`crate::migrations`]; the column contract is
//! `docs/SCHEMA.md` ("Framework tables").

diesel::table! {
    use diesel::sql_types::*;
    use crate::types::sql_types::GeoTimestamp;
    use crate::json::GeoJson;

    /// Primary role: the event log, written in the same transaction as the model change.
    ///
    /// `id` never repeats, even after pruning (`AUTOINCREMENT` on SQLite, a sequence on
    /// PostgreSQL), so the secondaries' cursor only moves forward.
    geo_events (id) {
        /// Event id, assigned by the database.
        id -> BigInt,
        /// The replicable name (`ReplicableDescriptor::name`), e.g. `widget`.
        replicable_name -> Text,
        /// The event, e.g. `created`, `updated`, `deleted`, `checksum_succeeded`.
        event_name -> Text,
        /// The model record's id.
        model_record_id -> BigInt,
        /// Event-specific data (`jsonb` on PostgreSQL, JSON text on SQLite).
        payload -> GeoJson,
        /// When the event was written.
        created_at -> GeoTimestamp,
    }
}

diesel::table! {
    use diesel::sql_types::*;
    use crate::types::sql_types::GeoTimestamp;

    /// Secondary role: the log cursor's position (one row per cursor, normally id 0).
    geo_event_log_states (id) {
        /// Cursor number; `0` for the single log cursor.
        id -> SmallInt,
        /// The last `geo_events.id` the cursor processed.
        event_id -> BigInt,
        /// When the cursor last moved.
        updated_at -> GeoTimestamp,
    }
}

diesel::table! {
    use diesel::sql_types::*;
    use crate::types::sql_types::GeoTimestamp;

    /// Secondary role: event ids the cursor skipped over, to replay when they appear late.
    /// Written in the same transaction as the cursor.
    geo_event_log_gaps (event_id) {
        /// The missing `geo_events.id`.
        event_id -> BigInt,
        /// When the gap was first seen.
        detected_at -> GeoTimestamp,
    }
}

diesel::table! {
    use diesel::sql_types::*;
    use crate::types::sql_types::GeoTimestamp;

    /// Both roles: persisted feature flags such as `geo_widget_replication`.
    geo_feature_flags (name) {
        /// Flag name.
        name -> Text,
        /// Whether the flag is on.
        enabled -> Bool,
        /// When the flag was last changed.
        updated_at -> GeoTimestamp,
    }
}

diesel::table! {
    use diesel::sql_types::*;
    use crate::types::sql_types::GeoTimestamp;

    /// Both roles: the migration runner's ledger, one row per applied migration.
    geo_schema_migrations (name) {
        /// Migration name, e.g. `geo_framework_primary` or `widget_secondary`.
        name -> Text,
        /// When it was applied.
        applied_at -> GeoTimestamp,
    }
}

diesel::table! {
    use diesel::sql_types::*;
    use crate::types::sql_types::GeoTimestamp;

    /// Both roles (migration `geo_admin_<role>`): the operator's bulk resync and reverify jobs
    /// ([`crate::admin::bulk`]), one row per job. A worker steps the oldest unfinished job one
    /// batch at a time, committing `cursor`, `processed` and `changed` with each batch, so a
    /// job survives a restart.
    geo_bulk_updates (id) {
        /// Job id, assigned by the database.
        id -> BigInt,
        /// The replicable name, e.g. `widget`.
        replicable -> Text,
        /// `resync_all` or `reverify_all`.
        action -> Text,
        /// The job's filter as JSON (`ids`, `replication_state`, `verification_state`).
        filter -> Text,
        /// The last row key processed (registry `id` on a secondary, the verification table's
        /// key on the primary); `0` before the first batch.
        cursor -> BigInt,
        /// Rows looked at so far.
        processed -> BigInt,
        /// Rows the rule changed so far.
        changed -> BigInt,
        /// When the job was enqueued.
        created_at -> GeoTimestamp,
        /// When its last batch ran; `NULL` while it is unfinished.
        finished_at -> Nullable<GeoTimestamp>,
    }
}

diesel::table! {
    use diesel::sql_types::*;
    use crate::types::sql_types::GeoTimestamp;

    /// Primary (migration `geo_safety_primary`): one row, the database's identity, a random
    /// value created once with the database ([`crate::direct::DirectSource`] publishes it).
    geo_node_identity (id) {
        /// Always 0.
        id -> SmallInt,
        /// 32 random hex digits.
        identity -> Text,
        /// When it was created.
        created_at -> GeoTimestamp,
    }
}

diesel::table! {
    use diesel::sql_types::*;
    use crate::types::sql_types::GeoTimestamp;

    /// Secondary (migration `geo_safety_secondary`): one row, the primary this secondary
    /// follows and, while it is halted, why ([`crate::cursor::identity`]).
    geo_followed_primary (id) {
        /// Always 0.
        id -> SmallInt,
        /// The followed primary's identity; `NULL` before the first contact.
        identity -> Nullable<Text>,
        /// JSON of the [`geo_core::safety::SafetyHalt`] in force; `NULL` when not halted.
        halt -> Nullable<Text>,
        /// When it last changed.
        updated_at -> GeoTimestamp,
    }
}

diesel::allow_tables_to_appear_in_same_query!(geo_event_log_states, geo_event_log_gaps);

diesel::table! {
    use diesel::sql_types::*;
    use crate::types::sql_types::GeoTimestamp;

    /// Primary (migration `geo_prune_primary`): the secondaries that read the event feed, and
    /// how far each consumed it ([`crate::primary::prune`]). GitLab's Sites page on a primary.
    geo_known_secondaries (name) {
        /// The secondary's name: its access key over HTTP, the name given to a direct source.
        name -> Text,
        /// The event id up to which it needs nothing (its cursor, or its lowest open gap minus
        /// one); `NULL` when it never said (it then holds pruning back at 0).
        consumed_event_id -> Nullable<BigInt>,
        /// When it first read the feed.
        first_seen_at -> GeoTimestamp,
        /// When it last read the feed.
        last_seen_at -> GeoTimestamp,
    }
}

diesel::table! {
    use diesel::sql_types::*;
    use crate::types::sql_types::GeoTimestamp;

    /// Primary (migration `geo_prune_primary`): one row, how far the event log was pruned.
    /// Written in the transaction that deletes the events, so a feed that finds an event
    /// missing finds the mark too.
    geo_event_prune_state (id) {
        /// Always 0.
        id -> SmallInt,
        /// Every event with an id up to this one is gone.
        pruned_through -> BigInt,
        /// When the last batch was pruned.
        pruned_at -> GeoTimestamp,
    }
}
