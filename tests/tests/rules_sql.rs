//! The SQL that runs is the pure machine: a differential test of every rule in
//! `geo_core::transitions::{registry, verification}`.
//!
//! For random rows (every column, times around a random clock, states including values no
//! state has), each rule runs twice: as the statement geo-diesel renders
//! ([`Table::apply`], [`Table::claim`], [`Table::apply_batch`], [`Table::upsert`], the way the
//! runtime calls them) against the widgets example's tables in a real, migrated SQLite file,
//! and in memory through [`Change::apply`]. The rows read back, the rows kept in memory and the
//! keys each side reports changed must be identical, column by column (timestamps at
//! millisecond precision, which is what SQLite stores).
//!
//! The random source is geo-core's [`SeededRandom`] (geo-tests has no proptest): every case
//! is reproducible from the seed printed with a mismatch. `GEO_RULES_SEED` picks another base
//! seed and `GEO_RULES_CASES` another number of cases per rule.

use std::cmp::Ordering;
use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::sql_query;
use diesel::sql_types::{BigInt, Binary, Bool, Nullable, SmallInt, Text};
use geo_diesel::geo_core::backoff::{BackoffCap, next_retry_time};
use geo_diesel::geo_core::clock::{Env, FixedRandom, ManualClock, RandomSource, SeededRandom};
use geo_diesel::geo_core::schema::Column;
use geo_diesel::geo_core::transitions::registry::{self as reg, VerificationFailure};
use geo_diesel::geo_core::transitions::verification as ver;
use geo_diesel::geo_core::transitions::{
    Change, Claim, Datum, Order, RegistryFields, Row, SYNC_TIMEOUT, SyncFailure,
    VERIFICATION_TIMEOUT, timeout_cutoff,
};
use geo_diesel::geo_core::{Replicable, ReplicableDescriptor, Role, VerificationFields};
use geo_diesel::registry::Registry;
use geo_diesel::sql::Table;
use geo_diesel::sql_types::GeoTimestamp;
use geo_diesel::{UtcDateTime, run_migrations};
use widgets::{Gadget, Widget, app};

// ---------------------------------------------------------------------------------------------
// Random values

/// Model ids are drawn from `1..=MAX_ID`.
const MAX_ID: i64 = 12;
const HOUR_MS: i64 = 3_600_000;
const DAY_MS: i64 = 24 * HOUR_MS;
/// Offsets from `now` the rules compare against: `now ± 1 ms`, the 8 h timeout cutoffs, the
/// 7-day reverification cutoff.
const EDGES_MS: [i64; 11] = [
    -1,
    1,
    -8 * HOUR_MS,
    -8 * HOUR_MS - 1,
    -8 * HOUR_MS + 1,
    -7 * DAY_MS,
    -7 * DAY_MS - 1,
    -7 * DAY_MS + 1,
    16_000,
    74_000,
    -16_000,
];

fn cases() -> usize {
    std::env::var("GEO_RULES_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(128)
}

fn base_seed() -> u64 {
    std::env::var("GEO_RULES_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x6e0_5eed)
}

/// A deterministic generator of the values the rows and rules are made of.
struct Gen(SeededRandom);

impl Gen {
    fn new(seed: u64) -> Self {
        Gen(SeededRandom::new(seed))
    }

    fn below(&self, n: u32) -> u32 {
        self.0.below(n)
    }

    fn flip(&self) -> bool {
        self.below(2) == 1
    }

    fn one_in(&self, n: u32) -> bool {
        self.below(n) == 0
    }

    fn pick<T: Clone>(&self, xs: &[T]) -> T {
        xs[self.below(xs.len() as u32) as usize].clone()
    }

    /// A claim's batch size: mostly smaller than the candidates, so the order matters.
    fn limit(&self) -> i64 {
        self.pick(&[1, 1, 2, 2, 3, 6])
    }

    fn u64(&self) -> u64 {
        (u64::from(self.below(u32::MAX)) << 32) | u64::from(self.below(u32::MAX))
    }

    /// In `lo..hi`.
    fn range(&self, lo: i64, hi: i64) -> i64 {
        lo + (self.u64() % (hi - lo) as u64) as i64
    }

    /// A clock between 2000 and 2100, to the millisecond.
    fn now(&self) -> DateTime<Utc> {
        let ms = self.range(946_684_800_000, 4_102_444_800_000);
        Utc.timestamp_millis_opt(ms).unwrap()
    }

    /// `None`, `now`, an edge the rules compare against, or any time within four months.
    fn time(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let at = |ms: i64| Some(now + TimeDelta::milliseconds(ms));
        match self.below(10) {
            0..=2 => None,
            3 => Some(now),
            4 | 5 => at(self.pick(&EDGES_MS)),
            _ => at(self.range(-10_000_000_000, 10_000_000_000)),
        }
    }

    fn some_time(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        self.time(now).unwrap_or(now)
    }

    fn count(&self) -> i16 {
        match self.below(10) {
            0..=4 => self.below(5) as i16,
            5 => i16::MAX,
            6 => i16::MAX - 1,
            7 => -1,
            _ => self.below(65_536) as u16 as i16,
        }
    }

    /// A state drawn with these weights (one per known state, in numeric order), sometimes a
    /// value no state has.
    fn state(&self, weights: &[u32]) -> i16 {
        let total: u32 = weights.iter().sum();
        if self.one_in(12) {
            return self.pick(&[weights.len() as i16, 9, -1, 100, i16::MAX]);
        }
        let mut draw = self.below(total);
        for (state, w) in weights.iter().enumerate() {
            if draw < *w {
                return state as i16;
            }
            draw -= w;
        }
        unreachable!("the draw is below the total")
    }

    fn string(&self, len: usize) -> String {
        const ALPHABET: [char; 10] = ['a', 'b', 'z', ' ', ':', 'é', 'ß', '日', '🦀', '\''];
        (0..len).map(|_| self.pick(&ALPHABET)).collect()
    }

    /// `None`, a short text or one longer than the 255 characters a failure may have.
    fn text(&self) -> Option<String> {
        match self.below(3) {
            0 => None,
            1 => Some(self.string(self.below(20) as usize)),
            _ => Some(self.string(250 + self.below(50) as usize)),
        }
    }

    fn message(&self) -> String {
        self.text().unwrap_or_else(|| "x".into())
    }

    fn bytes32(&self) -> Vec<u8> {
        (0..32).map(|_| self.below(256) as u8).collect()
    }

    /// A checksum: none, one of two fixed ones (so rows and rules often agree), random bytes,
    /// or rarely an empty one.
    fn sum(&self) -> Option<Vec<u8>> {
        match self.below(9) {
            0..=2 => None,
            3 | 4 => Some(vec![0xaa; 32]),
            5 => Some(vec![0xbb; 32]),
            6 => Some(Vec::new()),
            _ => Some(self.bytes32()),
        }
    }

    fn path(&self) -> Option<String> {
        self.flip()
            .then(|| format!("{}/{}", self.string(2), self.below(100)))
    }

    fn verification(&self, now: DateTime<Utc>) -> VerificationFields {
        VerificationFields {
            state: self.state(&[3, 4, 2, 2, 2]),
            started_at: self.time(now),
            retry_at: self.time(now),
            verified_at: self.time(now),
            retry_count: self.count(),
            checksum: self.sum(),
            failure: self.text(),
        }
    }

    fn registry(&self, now: DateTime<Utc>) -> RegistryFields {
        RegistryFields {
            state: self.state(&[2, 3, 4, 2]),
            retry_count: self.count(),
            retry_at: self.time(now),
            last_synced_at: self.time(now),
            last_sync_failure: self.text(),
            missing_on_primary: self.flip(),
            checksum_mismatch: self.flip(),
            verification_checksum_mismatched: self.sum(),
            blob_path: self.path(),
            claimed_by: self
                .flip()
                .then(|| ["a", "b"][self.below(2) as usize].to_string()),
            verification: self.verification(now),
        }
    }

    /// `k` distinct model ids in random order.
    fn distinct_ids(&self, k: usize) -> Vec<i64> {
        let mut pool: Vec<i64> = (1..=MAX_ID).collect();
        let mut out = Vec::with_capacity(k);
        for _ in 0..k {
            out.push(pool.remove(self.below(pool.len() as u32) as usize));
        }
        out
    }
}

// ---------------------------------------------------------------------------------------------
// The tables

/// A row as stored: its row key (what claims order by), its model id and its columns.
#[derive(Debug, Clone, PartialEq)]
struct Stored<F> {
    key: i64,
    id: i64,
    fields: F,
}

/// One of the example's tables in a migrated SQLite file, with how to write and read a row.
struct Fixture<F> {
    _dir: tempfile::TempDir,
    conn: SqliteConnection,
    table: Table,
    what: &'static str,
    columns: &'static [Column],
    insert: fn(&mut SqliteConnection, &Table, i64, &F),
    read: fn(&mut SqliteConnection, &Table) -> Vec<Stored<F>>,
    /// The row an upsert inserts for a model id that has none.
    fresh: fn() -> F,
}

fn migrated(role: Role) -> (tempfile::TempDir, SqliteConnection) {
    let dir = tempfile::Builder::new()
        .prefix("geo-rules-")
        .tempdir()
        .expect("a temporary folder for the SQLite file");
    let path = dir.path().join("geo.sqlite3");
    let mut conn = SqliteConnection::establish(path.to_str().unwrap()).expect("open SQLite");
    // Durability is not under test; speed is welcome.
    conn.batch_execute("PRAGMA journal_mode = MEMORY; PRAGMA synchronous = OFF;")
        .unwrap();
    if role == Role::Primary {
        app::create_app_schema(&mut conn).expect("the example's tables");
        for id in 1..=MAX_ID {
            sql_query("INSERT INTO widgets (id, file_path, name) VALUES (?, 'f', 'n')")
                .bind::<BigInt, _>(id)
                .execute(&mut conn)
                .unwrap();
        }
    }
    run_migrations(&mut conn, role).expect("migrations");
    (dir, conn)
}

fn wd() -> &'static ReplicableDescriptor {
    <Widget as Replicable>::DESCRIPTOR
}

fn gd() -> &'static ReplicableDescriptor {
    <Gadget as Replicable>::DESCRIPTOR
}

/// The tables the primary's verification rules run on, as `geo_diesel::primary` builds them.
fn verification_table(d: &'static ReplicableDescriptor) -> Table {
    let (name, key) = d.tables.verification.expect("a verifying replicable");
    Table {
        name,
        key,
        row_key: key,
    }
}

const REGISTRY_COLUMNS: &[Column] = &[
    Column::State,
    Column::RetryCount,
    Column::RetryAt,
    Column::LastSyncedAt,
    Column::LastSyncFailure,
    Column::MissingOnPrimary,
    Column::ChecksumMismatch,
    Column::VerificationChecksumMismatched,
    Column::BlobPath,
    Column::ClaimedBy,
    Column::VerificationState,
    Column::VerificationStartedAt,
    Column::VerificationRetryAt,
    Column::VerifiedAt,
    Column::VerificationRetryCount,
    Column::VerificationChecksum,
    Column::VerificationFailure,
];

const VERIFICATION_COLUMNS: &[Column] = &[
    Column::VerificationState,
    Column::VerificationStartedAt,
    Column::VerificationRetryAt,
    Column::VerifiedAt,
    Column::VerificationRetryCount,
    Column::VerificationChecksum,
    Column::VerificationFailure,
];

fn ts(t: Option<DateTime<Utc>>) -> Option<UtcDateTime> {
    t.map(UtcDateTime)
}

fn dt(t: Option<UtcDateTime>) -> Option<DateTime<Utc>> {
    t.map(UtcDateTime::get)
}

fn insert_registry(conn: &mut SqliteConnection, t: &Table, id: i64, f: &RegistryFields) {
    let v = &f.verification;
    sql_query(format!(
        "INSERT INTO \"{}\" (\"{}\", state, retry_count, retry_at, last_synced_at, \
         last_sync_failure, missing_on_primary, checksum_mismatch, \
         verification_checksum_mismatched, blob_path, claimed_by, verification_state, \
         verification_started_at, verification_retry_at, verified_at, verification_retry_count, \
         verification_checksum, verification_failure) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        t.name, t.key
    ))
    .bind::<BigInt, _>(id)
    .bind::<SmallInt, _>(f.state)
    .bind::<SmallInt, _>(f.retry_count)
    .bind::<Nullable<GeoTimestamp>, _>(ts(f.retry_at))
    .bind::<Nullable<GeoTimestamp>, _>(ts(f.last_synced_at))
    .bind::<Nullable<Text>, _>(f.last_sync_failure.clone())
    .bind::<Bool, _>(f.missing_on_primary)
    .bind::<Bool, _>(f.checksum_mismatch)
    .bind::<Nullable<Binary>, _>(f.verification_checksum_mismatched.clone())
    .bind::<Nullable<Text>, _>(f.blob_path.clone())
    .bind::<Nullable<Text>, _>(f.claimed_by.clone())
    .bind::<SmallInt, _>(v.state)
    .bind::<Nullable<GeoTimestamp>, _>(ts(v.started_at))
    .bind::<Nullable<GeoTimestamp>, _>(ts(v.retry_at))
    .bind::<Nullable<GeoTimestamp>, _>(ts(v.verified_at))
    .bind::<SmallInt, _>(v.retry_count)
    .bind::<Nullable<Binary>, _>(v.checksum.clone())
    .bind::<Nullable<Text>, _>(v.failure.clone())
    .execute(conn)
    .expect("insert a registry row");
}

#[derive(QueryableByName)]
struct VerificationRow {
    #[diesel(sql_type = BigInt)]
    key: i64,
    #[diesel(sql_type = BigInt)]
    id: i64,
    #[diesel(sql_type = SmallInt)]
    verification_state: i16,
    #[diesel(sql_type = Nullable<GeoTimestamp>)]
    verification_started_at: Option<UtcDateTime>,
    #[diesel(sql_type = Nullable<GeoTimestamp>)]
    verification_retry_at: Option<UtcDateTime>,
    #[diesel(sql_type = Nullable<GeoTimestamp>)]
    verified_at: Option<UtcDateTime>,
    #[diesel(sql_type = SmallInt)]
    verification_retry_count: i16,
    #[diesel(sql_type = Nullable<Binary>)]
    verification_checksum: Option<Vec<u8>>,
    #[diesel(sql_type = Nullable<Text>)]
    verification_failure: Option<String>,
}

impl VerificationRow {
    fn fields(self) -> VerificationFields {
        VerificationFields {
            state: self.verification_state,
            started_at: dt(self.verification_started_at),
            retry_at: dt(self.verification_retry_at),
            verified_at: dt(self.verified_at),
            retry_count: self.verification_retry_count,
            checksum: self.verification_checksum,
            failure: self.verification_failure,
        }
    }
}

#[derive(QueryableByName)]
struct RegistryRow {
    #[diesel(embed)]
    v: VerificationRow,
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
    #[diesel(sql_type = Bool)]
    checksum_mismatch: bool,
    #[diesel(sql_type = Nullable<Binary>)]
    verification_checksum_mismatched: Option<Vec<u8>>,
    #[diesel(sql_type = Nullable<Text>)]
    blob_path: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    claimed_by: Option<String>,
}

const VERIFICATION_SELECT: &str = "verification_state, verification_started_at, \
    verification_retry_at, verified_at, verification_retry_count, verification_checksum, \
    verification_failure";

fn read_registry(conn: &mut SqliteConnection, t: &Table) -> Vec<Stored<RegistryFields>> {
    let rows: Vec<RegistryRow> = sql_query(format!(
        "SELECT \"{rk}\" AS key, \"{k}\" AS id, state, retry_count, retry_at, last_synced_at, \
         last_sync_failure, missing_on_primary, checksum_mismatch, \
         verification_checksum_mismatched, blob_path, claimed_by, {VERIFICATION_SELECT} \
         FROM \"{t}\" ORDER BY \"{k}\"",
        rk = t.row_key,
        k = t.key,
        t = t.name
    ))
    .load(conn)
    .expect("read the registry");
    rows.into_iter()
        .map(|r| Stored {
            key: r.v.key,
            id: r.v.id,
            fields: RegistryFields {
                state: r.state,
                retry_count: r.retry_count,
                retry_at: dt(r.retry_at),
                last_synced_at: dt(r.last_synced_at),
                last_sync_failure: r.last_sync_failure,
                missing_on_primary: r.missing_on_primary,
                checksum_mismatch: r.checksum_mismatch,
                verification_checksum_mismatched: r.verification_checksum_mismatched,
                blob_path: r.blob_path,
                claimed_by: r.claimed_by,
                verification: r.v.fields(),
            },
        })
        .collect()
}

/// Writes a verification row: a `widget_states` row, or a `gadgets` model row with its inline
/// verification columns.
fn insert_verification(conn: &mut SqliteConnection, t: &Table, id: i64, f: &VerificationFields) {
    let (extra_columns, extra_values) = if t.name == "gadgets" {
        (", blob_key, label", ", 'k', 'l'")
    } else {
        ("", "")
    };
    sql_query(format!(
        "INSERT INTO \"{}\" (\"{}\"{extra_columns}, {VERIFICATION_SELECT}) \
         VALUES (?{extra_values}, ?, ?, ?, ?, ?, ?, ?)",
        t.name, t.key
    ))
    .bind::<BigInt, _>(id)
    .bind::<SmallInt, _>(f.state)
    .bind::<Nullable<GeoTimestamp>, _>(ts(f.started_at))
    .bind::<Nullable<GeoTimestamp>, _>(ts(f.retry_at))
    .bind::<Nullable<GeoTimestamp>, _>(ts(f.verified_at))
    .bind::<SmallInt, _>(f.retry_count)
    .bind::<Nullable<Binary>, _>(f.checksum.clone())
    .bind::<Nullable<Text>, _>(f.failure.clone())
    .execute(conn)
    .expect("insert a verification row");
}

fn read_verification(conn: &mut SqliteConnection, t: &Table) -> Vec<Stored<VerificationFields>> {
    let rows: Vec<VerificationRow> = sql_query(format!(
        "SELECT \"{rk}\" AS key, \"{k}\" AS id, {VERIFICATION_SELECT} FROM \"{t}\" ORDER BY \"{k}\"",
        rk = t.row_key,
        k = t.key,
        t = t.name
    ))
    .load(conn)
    .expect("read verification rows");
    rows.into_iter()
        .map(|r| Stored {
            key: r.key,
            id: r.id,
            fields: r.fields(),
        })
        .collect()
}

fn registry_fixture(d: &'static ReplicableDescriptor) -> Fixture<RegistryFields> {
    let (dir, conn) = migrated(Role::Secondary);
    Fixture {
        _dir: dir,
        conn,
        table: Registry::of(d).table(),
        what: d.tables.registry,
        columns: REGISTRY_COLUMNS,
        insert: insert_registry,
        read: read_registry,
        fresh: RegistryFields::new,
    }
}

fn verification_fixture(d: &'static ReplicableDescriptor) -> Fixture<VerificationFields> {
    let (dir, conn) = migrated(Role::Primary);
    let table = verification_table(d);
    Fixture {
        _dir: dir,
        conn,
        table,
        what: table.name,
        columns: VERIFICATION_COLUMNS,
        insert: insert_verification,
        read: read_verification,
        fresh: VerificationFields::default,
    }
}

// ---------------------------------------------------------------------------------------------
// Running a rule both ways

/// How the runtime runs a rule, and on which rows.
#[derive(Debug, Clone)]
enum Op {
    /// [`Table::apply`] on these model ids (`None`: every row).
    Apply(Change, Option<Vec<i64>>),
    /// [`Table::apply_batch`] with per-row values.
    Batch(Change, Vec<(i64, Vec<Datum>)>),
    /// [`Table::upsert`] of these model ids.
    Upsert(Change, Vec<i64>),
    /// [`Table::claim`] of at most `limit` rows.
    Claim(Vec<Claim>, i64),
}

/// What a statement reports: the model ids it changed, or (an upsert) how many rows.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Reported {
    Ids(Vec<i64>),
    Count(usize),
}

/// One case: a clock and the rows as stored.
struct Case<F> {
    now: DateTime<Utc>,
    rows: Vec<Stored<F>>,
}

impl<F> Case<F> {
    fn ids(&self) -> Vec<i64> {
        self.rows.iter().map(|r| r.id).collect()
    }
}

/// A non-empty set of model ids: some of the rows', sometimes one without a row.
fn some_ids<F>(g: &Gen, case: &Case<F>) -> Vec<i64> {
    let mut ids: Vec<i64> = case.ids().into_iter().filter(|_| g.flip()).collect();
    if ids.is_empty() || g.one_in(4) {
        let absent: Vec<i64> = (1..=MAX_ID).filter(|i| !case.ids().contains(i)).collect();
        ids.push(g.pick(&absent));
    }
    ids.sort_unstable();
    ids
}

/// Every row, or some.
fn target<F>(g: &Gen, case: &Case<F>) -> Option<Vec<i64>> {
    (!g.one_in(3)).then(|| some_ids(g, case))
}

/// A claim token: often one a row holds, else any time.
fn token<F>(g: &Gen, case: &Case<F>, held: impl Fn(&F) -> Option<DateTime<Utc>>) -> DateTime<Utc> {
    let held: Vec<DateTime<Utc>> = case.rows.iter().filter_map(|r| held(&r.fields)).collect();
    if !held.is_empty() && !g.one_in(3) {
        g.pick(&held)
    } else {
        g.some_time(case.now)
    }
}

fn retry_time(now: DateTime<Utc>, jitter: u32) -> impl Fn(i16, BackoffCap) -> DateTime<Utc> {
    move |n, cap| next_retry_time(now, i64::from(n), cap, &FixedRandom(jitter))
}

fn run_sql<F>(
    fx: &mut Fixture<F>,
    op: &Op,
    now: DateTime<Utc>,
    jitter: u32,
) -> Result<Reported, String> {
    let retry = retry_time(now, jitter);
    let conn = &mut fx.conn;
    let ids = match op {
        Op::Apply(change, ids) => fx.table.apply(conn, change, ids.as_deref(), &retry),
        Op::Batch(change, rows) => fx.table.apply_batch(conn, change, rows),
        Op::Upsert(change, ids) => {
            return fx
                .table
                .upsert(conn, change, ids)
                .map(Reported::Count)
                .map_err(|e| e.to_string());
        }
        Op::Claim(claims, limit) => fx.table.claim(conn, claims, *limit),
    };
    ids.map(|mut ids| {
        ids.sort_unstable();
        Reported::Ids(ids)
    })
    .map_err(|e| e.to_string())
}

fn datum_order(a: &Datum, b: &Datum) -> Ordering {
    match (a, b) {
        (Datum::Null, Datum::Null) => Ordering::Equal,
        // SQLite sorts NULL before every value.
        (Datum::Null, _) => Ordering::Less,
        (_, Datum::Null) => Ordering::Greater,
        (Datum::Time(a), Datum::Time(b)) => a.cmp(b),
        (Datum::SmallInt(a), Datum::SmallInt(b)) => a.cmp(b),
        (a, b) => panic!("no order between {a:?} and {b:?}"),
    }
}

/// The in-memory reading of a claim's order.
fn claim_order<F: Row>(order: &[Order], a: &Stored<F>, b: &Stored<F>) -> Ordering {
    order
        .iter()
        .map(|o| match o {
            Order::Asc(c) | Order::NullsFirst(c) => {
                datum_order(&a.fields.get(*c), &b.fields.get(*c))
            }
            Order::Key => a.key.cmp(&b.key),
        })
        .find(|o| o.is_ne())
        .unwrap_or(Ordering::Equal)
}

/// The same operation in memory, with [`Change::apply`].
fn run_memory<F: Row + Clone>(
    rows: &mut Vec<Stored<F>>,
    op: &Op,
    env: &Env,
    fresh: fn() -> F,
) -> Reported {
    let mut out = Vec::new();
    match op {
        Op::Apply(change, ids) => {
            for r in rows.iter_mut() {
                let targeted = ids.as_ref().is_none_or(|ids| ids.contains(&r.id));
                if targeted && change.apply(&mut r.fields, &[], env) {
                    out.push(r.id);
                }
            }
        }
        Op::Batch(change, values) => {
            for (id, per_row) in values {
                if let Some(r) = rows.iter_mut().find(|r| r.id == *id)
                    && change.apply(&mut r.fields, per_row, env)
                {
                    out.push(r.id);
                }
            }
        }
        Op::Upsert(change, ids) => {
            let mut n = 0;
            for id in ids {
                match rows.iter_mut().find(|r| r.id == *id) {
                    Some(r) => n += usize::from(change.apply(&mut r.fields, &[], env)),
                    None => {
                        rows.push(Stored {
                            key: -1,
                            id: *id,
                            fields: fresh(),
                        });
                        n += 1;
                    }
                }
            }
            rows.sort_by_key(|r| r.id);
            return Reported::Count(n);
        }
        Op::Claim(claims, limit) => {
            for claim in claims {
                let remaining = limit - out.len() as i64;
                if remaining <= 0 {
                    break;
                }
                let mut candidates: Vec<usize> = (0..rows.len())
                    .filter(|&i| claim.change.guard.matches(&rows[i].fields, &[]))
                    .collect();
                candidates.sort_by(|&a, &b| claim_order(&claim.order, &rows[a], &rows[b]));
                for &i in candidates.iter().take(remaining as usize) {
                    assert!(claim.change.apply(&mut rows[i].fields, &[], env));
                    out.push(rows[i].id);
                }
            }
        }
    }
    out.sort_unstable();
    Reported::Ids(out)
}

/// Timestamps cut to the millisecond, as SQLite stores them.
fn to_millis<F: Row>(f: &mut F, columns: &[Column]) {
    for c in columns {
        if let Datum::Time(t) = f.get(*c) {
            let ms = Utc.timestamp_millis_opt(t.timestamp_millis()).unwrap();
            f.set(*c, Datum::Time(ms));
        }
    }
}

fn diff<F: Row>(sql: &F, memory: &F, columns: &[Column]) -> String {
    columns
        .iter()
        .filter(|c| sql.get(**c) != memory.get(**c))
        .map(|c| {
            format!(
                "    {}: sql {:?}, memory {:?}\n",
                c.name(),
                sql.get(*c),
                memory.get(*c)
            )
        })
        .collect()
}

/// Runs `rule` on `cases()` random cases both ways and fails with every disagreement.
fn differential<F>(
    fx: &mut Fixture<F>,
    rule: &str,
    row: impl Fn(&Gen, DateTime<Utc>) -> F,
    op: impl Fn(&Gen, &Case<F>) -> Op,
) where
    F: Row + Clone + Debug + PartialEq,
{
    let salt = format!("{rule} {}", fx.what)
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
        });
    let mut failures = Vec::new();
    let mut effective = 0;
    let n = cases();
    for i in 0..n {
        let seed = base_seed() ^ salt ^ (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        let g = Gen::new(seed);
        let now = g.now();
        let jitter = g.below(30);
        let k = 1 + g.below(6) as usize;
        let inserted: Vec<(i64, F)> = g
            .distinct_ids(k)
            .into_iter()
            .map(|id| (id, row(&g, now)))
            .collect();

        fx.conn
            .batch_execute(&format!("DELETE FROM \"{}\"", fx.table.name))
            .unwrap();
        for (id, f) in &inserted {
            (fx.insert)(&mut fx.conn, &fx.table, *id, f);
        }
        let rows = (fx.read)(&mut fx.conn, &fx.table);
        let mut stored: Vec<(i64, F)> = rows.iter().map(|r| (r.id, r.fields.clone())).collect();
        let mut want = inserted.clone();
        stored.sort_by_key(|(id, _)| *id);
        want.sort_by_key(|(id, _)| *id);
        assert_eq!(
            stored, want,
            "{}: a row does not read back as written",
            fx.what
        );

        let case = Case { now, rows };
        let op = op(&g, &case);
        let env = Env::new(
            Arc::new(ManualClock::new(now)),
            Arc::new(FixedRandom(jitter)),
        );
        let mut memory = case.rows.clone();
        let reported_memory = run_memory(&mut memory, &op, &env, fx.fresh);
        if reported_memory != Reported::Ids(Vec::new()) && reported_memory != Reported::Count(0) {
            effective += 1;
        }
        let reported_sql = match run_sql(fx, &op, now, jitter) {
            Ok(r) => r,
            Err(e) => {
                failures.push(format!(
                    "case {i} (seed {seed}): the statement failed: {e}\n  {op:?}"
                ));
                continue;
            }
        };
        let mut sql = (fx.read)(&mut fx.conn, &fx.table);

        let mut report = String::new();
        if reported_sql != reported_memory {
            report += &format!("  reported: sql {reported_sql:?}, memory {reported_memory:?}\n");
        }
        let ids = |rows: &[Stored<F>]| rows.iter().map(|r| r.id).collect::<Vec<_>>();
        if ids(&sql) != ids(&memory) {
            report += &format!("  rows: sql {:?}, memory {:?}\n", ids(&sql), ids(&memory));
        } else {
            for (s, m) in sql.iter_mut().zip(memory.iter_mut()) {
                let before = case.rows.iter().find(|r| r.id == s.id);
                to_millis(&mut s.fields, fx.columns);
                to_millis(&mut m.fields, fx.columns);
                if s.fields != m.fields {
                    report += &format!(
                        "  model id {} (row key {}), before {:?}\n{}",
                        s.id,
                        s.key,
                        before.map(|b| &b.fields),
                        diff(&s.fields, &m.fields, fx.columns)
                    );
                }
            }
        }
        if !report.is_empty() {
            failures.push(format!(
                "case {i} (seed {seed}, now {now}, jitter {jitter}): {op:?}\n{report}"
            ));
        }
    }
    assert!(
        effective * 40 >= n,
        "{rule} on {}: only {effective} of {n} cases change a row; the generator misses the guard",
        fx.what
    );
    assert!(
        failures.is_empty(),
        "{rule} on {}: SQL and memory disagree in {} of {n} cases; the first:\n{}",
        fx.what,
        failures.len(),
        failures
            .iter()
            .take(3)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// A rule of the secondary's registry, on both example registries.
fn registry_rule(rule: &str, op: impl Fn(&Gen, &Case<RegistryFields>) -> Op) {
    for d in [wd(), gd()] {
        differential(
            &mut registry_fixture(d),
            rule,
            |g, now| g.registry(now),
            &op,
        );
    }
}

/// A rule of the primary's verification state, on a states table (`widget_states`) and on a
/// model table's inline columns (`gadgets`).
fn verification_rule(rule: &str, op: impl Fn(&Gen, &Case<VerificationFields>, bool) -> Op) {
    for (d, separate) in [(wd(), true), (gd(), false)] {
        differential(
            &mut verification_fixture(d),
            rule,
            |g, now| g.verification(now),
            |g, case| op(g, case, separate),
        );
    }
}

fn last_synced_at(f: &RegistryFields) -> Option<DateTime<Utc>> {
    f.last_synced_at
}

fn started_at(f: &VerificationFields) -> Option<DateTime<Utc>> {
    f.started_at
}

fn optional_token(g: &Gen, case: &Case<RegistryFields>) -> Option<DateTime<Utc>> {
    (!g.one_in(4)).then(|| token(g, case, last_synced_at))
}

// ---------------------------------------------------------------------------------------------
// The secondary's registry

#[test]
fn changed_on_primary() {
    registry_rule("changed_on_primary", |g, case| {
        // As `Registry::upsert_pending_at`: the ids sorted and unique, missing rows created.
        let now = if g.flip() {
            token(g, case, last_synced_at)
        } else {
            case.now
        };
        Op::Upsert(reg::changed_on_primary(now), some_ids(g, case))
    });
}

#[test]
fn resync() {
    registry_rule("resync", |g, case| {
        Op::Apply(reg::resync(), target(g, case))
    });
}

#[test]
fn claims() {
    registry_rule("claims", |g, case| {
        Op::Claim(reg::claims(case.now).to_vec(), g.limit())
    });
}

#[test]
fn claim_now() {
    registry_rule("claim_now", |g, case| {
        Op::Apply(reg::claim_now(case.now), Some(some_ids(g, case)))
    });
}

#[test]
fn synced() {
    registry_rule("synced", |g, case| {
        let with_path = g.flip();
        let change = reg::synced(
            optional_token(g, case),
            g.flip(),
            g.flip(),
            with_path,
            case.now,
        );
        let rows = some_ids(g, case)
            .into_iter()
            .map(|id| {
                let mut values = vec![Datum::Bytes(g.bytes32())];
                if with_path {
                    values.push(Datum::Text(format!("{id}/{}", g.string(3))));
                }
                (id, values)
            })
            .collect();
        Op::Batch(change, rows)
    });
}

#[test]
fn sync_failed() {
    registry_rule("sync_failed", |g, case| {
        let mut failure = SyncFailure::new(g.message()).missing_on_primary(g.flip());
        if g.flip() {
            failure = failure.with_error(g.message());
        }
        if g.one_in(4) {
            failure = failure.with_cap(BackoffCap::Custom(Duration::from_secs(u64::from(
                g.below(100_000),
            ))));
        }
        Op::Apply(
            reg::sync_failed(optional_token(g, case), &failure),
            target(g, case),
        )
    });
}

#[test]
fn requeue_changed() {
    registry_rule("requeue_changed", |g, case| {
        Op::Apply(
            reg::requeue_changed(token(g, case, last_synced_at)),
            target(g, case),
        )
    });
}

#[test]
fn sync_timed_out() {
    registry_rule("sync_timed_out", |g, case| {
        let cutoff = timeout_cutoff(case.now, SYNC_TIMEOUT);
        let retry_at = g.some_time(case.now);
        Op::Apply(reg::sync_timed_out(cutoff, &g.message(), retry_at), None)
    });
}

#[test]
fn reclaim_syncs() {
    registry_rule("reclaim_syncs", |g, case| {
        Op::Apply(reg::reclaim_syncs(), target(g, case))
    });
}

#[test]
fn verified_by_event() {
    registry_rule("verified_by_event", |g, case| {
        // As `Registry::on_checksum_succeeded_batch`: the records the primary sent a checksum for.
        let rows = some_ids(g, case)
            .into_iter()
            .map(|id| {
                let own = case
                    .rows
                    .iter()
                    .find(|r| r.id == id)
                    .and_then(|r| r.fields.verification.checksum.clone());
                let sum = match own {
                    Some(sum) if g.flip() => sum,
                    _ => g.pick(&[vec![0xaa; 32], vec![0xbb; 32], g.bytes32()]),
                };
                (id, vec![Datum::Bytes(sum)])
            })
            .collect();
        Op::Batch(reg::verified_by_event(case.now), rows)
    });
}

#[test]
fn reverify_after_event() {
    registry_rule("reverify_after_event", |g, case| {
        // The event's time: before, at or after the rows' verification times.
        let primary_at = g.some_time(case.now);
        Op::Apply(
            reg::reverify_after_event(primary_at),
            Some(some_ids(g, case)),
        )
    });
}

#[test]
fn reverify() {
    registry_rule("reverify", |g, case| {
        Op::Apply(reg::reverify(), target(g, case))
    });
}

#[test]
fn verification_claims() {
    registry_rule("verification_claims", |g, case| {
        Op::Claim(reg::verification_claims(case.now).to_vec(), g.limit())
    });
}

#[test]
fn verification_succeeded() {
    registry_rule("verification_succeeded", |g, case| {
        let sum = g.sum().unwrap_or_else(|| g.bytes32());
        Op::Apply(
            reg::verification_succeeded(&sum, case.now),
            Some(some_ids(g, case)),
        )
    });
}

#[test]
fn verification_disabled() {
    registry_rule("verification_disabled", |g, case| {
        Op::Apply(reg::verification_disabled(), Some(some_ids(g, case)))
    });
}

#[test]
fn verification_failed() {
    registry_rule("verification_failed", |g, case| {
        let failure = if g.flip() {
            VerificationFailure::Mismatch(g.bytes32())
        } else {
            VerificationFailure::Error(g.message())
        };
        Op::Apply(
            reg::verification_failed(&failure, case.now),
            Some(some_ids(g, case)),
        )
    });
}

#[test]
fn registry_verification_timed_out() {
    registry_rule("verification_timed_out", |g, case| {
        let cutoff = timeout_cutoff(case.now, VERIFICATION_TIMEOUT);
        let change =
            reg::verification_timed_out(cutoff, VERIFICATION_TIMEOUT, g.some_time(case.now));
        Op::Apply(change, None)
    });
}

#[test]
fn claims_by_a_process() {
    registry_rule("sync_claims", |g, case| {
        let owner = ["a", "b"][g.below(2) as usize];
        let claims = if g.flip() {
            reg::sync_claims(case.now, owner)
        } else {
            reg::verification_claims_by(case.now, owner)
        };
        Op::Claim(claims.to_vec(), g.limit())
    });
}

#[test]
fn release_owned() {
    registry_rule("release_owned", |g, case| {
        let owner = ["a", "b"][g.below(2) as usize];
        let change = if g.flip() {
            reg::release_owned_syncs(owner)
        } else {
            reg::release_owned_verifications(owner)
        };
        Op::Apply(change, target(g, case))
    });
}

#[test]
fn release_claimed() {
    registry_rule("release_claimed", |g, case| {
        Op::Apply(
            reg::release_claimed(token(g, case, last_synced_at)),
            target(g, case),
        )
    });
}

#[test]
fn release_verification() {
    registry_rule("release_verification", |g, case| {
        Op::Apply(reg::release_verification(), target(g, case))
    });
}

#[test]
fn set_blob_path() {
    registry_rule("set_blob_path", |g, case| {
        let path = g.path().unwrap_or_default();
        Op::Apply(reg::set_blob_path(&path), Some(some_ids(g, case)))
    });
}

// ---------------------------------------------------------------------------------------------
// The primary's verification state

#[test]
fn verification_pending() {
    // As `primary::mark_verification_pending`: an upsert on a states table, an update inline.
    verification_rule("verification::pending", |g, case, separate| {
        let ids = some_ids(g, case);
        if separate {
            Op::Upsert(ver::pending(), ids)
        } else {
            Op::Apply(ver::pending(), Some(ids))
        }
    });
}

#[test]
fn verification_claims_on_the_primary() {
    verification_rule("verification::claims", |g, case, _| {
        Op::Claim(ver::claims(case.now).to_vec(), g.limit())
    });
}

#[test]
fn verification_succeeded_on_the_primary() {
    verification_rule("verification::succeeded", |g, case, _| {
        let change = ver::succeeded(token(g, case, started_at), &g.bytes32(), case.now);
        Op::Apply(change, Some(some_ids(g, case)))
    });
}

#[test]
fn verification_failed_on_the_primary() {
    verification_rule("verification::failed", |g, case, _| {
        let change = ver::failed(token(g, case, started_at), &g.message(), case.now);
        Op::Apply(change, Some(some_ids(g, case)))
    });
}

#[test]
fn reverify_due() {
    verification_rule("verification::reverify_due", |g, case, _| {
        let cutoff = case.now - TimeDelta::days(7);
        Op::Claim(vec![ver::reverify_due(cutoff)], g.limit())
    });
}

#[test]
fn verification_timed_out_on_the_primary() {
    verification_rule("verification::timed_out", |g, case, _| {
        let cutoff = timeout_cutoff(case.now, VERIFICATION_TIMEOUT);
        let change = ver::timed_out(
            cutoff,
            VERIFICATION_TIMEOUT,
            g.some_time(case.now),
            g.flip(),
        );
        Op::Apply(change, None)
    });
}
