//! The fixture a user writes for the conformance kit: how the application creates, updates and
//! deletes a record and its file on the primary. Only `schema` and `create` have no default.

use std::error::Error;
use std::marker::PhantomData;

use diesel::connection::SimpleConnection;
use diesel::{Connection, SqliteConnection};
use geo_core::blob_store::{BlobPath, BlobStore};
use geo_core::{BlobReplicator, Replicable, Replicator};

use crate::primary::{EventKind, PrimaryError, blob_path_in_use};
use crate::sql::Sql;

/// What a fixture step returns: any error, shown in the failure.
pub type FixtureResult<T> = Result<T, Box<dyn Error + Send + Sync>>;

/// The primary a fixture step works on: its database connection and its blob store.
pub struct Primary<'a> {
    /// The primary database (a SQLite file: the kit runs on SQLite).
    pub conn: &'a mut SqliteConnection,
    /// The primary's blob store.
    pub store: &'a dyn BlobStore,
}

impl Primary<'_> {
    /// Writes `content` at `path` in the primary's store, atomically (the file half of a create
    /// or an update).
    pub fn write_file(&self, path: &str, content: &[u8]) -> FixtureResult<()> {
        self.store
            .write(&BlobPath::new(path)?, &mut &content[..], None)?;
        Ok(())
    }
}

/// A `#[replicable]` blob model, as the kit uses it: its file and its `publish_*` calls.
/// Implemented for every blob model.
pub trait BlobModel: Replicable {
    /// The record's file column: its blob path.
    fn file(&self) -> String;

    /// [`publish_created`](crate::publish_created), [`publish_updated`](crate::publish_updated)
    /// or [`publish_deleted`](crate::publish_deleted) for this record.
    fn publish(
        &self,
        conn: &mut SqliteConnection,
        kind: EventKind,
    ) -> Result<Option<i64>, PrimaryError>;
}

impl<R> BlobModel for R
where
    R: Replicable,
    for<'a> R::Replicator<'a>: BlobReplicator,
{
    fn file(&self) -> String {
        self.replicator().blob_path().to_owned()
    }

    fn publish(
        &self,
        conn: &mut SqliteConnection,
        kind: EventKind,
    ) -> Result<Option<i64>, PrimaryError> {
        match kind {
            EventKind::Created => crate::publish_created(conn, self),
            EventKind::Updated => crate::publish_updated(conn, self),
            EventKind::Deleted => crate::publish_deleted(conn, self),
            EventKind::ChecksumSucceeded => Ok(None),
        }
    }
}

/// How the application changes records of one type on the primary. The kit calls these and
/// nothing else to change records, so with `events = "manual"` they are where events are
/// published: `create` must publish `created` in its transaction (the defaults of `update` and
/// `delete` publish theirs).
pub trait Fixture {
    /// The model under test.
    type Model: BlobModel;

    /// Creates the application's tables in the fresh primary database (before Geo's primary
    /// migrations): every model table of every replicable linked into the test binary, since
    /// Geo's migrations cover them all.
    fn schema(&self, conn: &mut SqliteConnection) -> FixtureResult<()>;

    /// Creates a record whose file holds `content`, as the application does, and returns it.
    /// `path` is a fresh blob path the record may use (any other is fine too).
    fn create(&self, p: &mut Primary<'_>, path: &str, content: &[u8])
    -> FixtureResult<Self::Model>;

    /// Replaces the record's file content with `content` (same path or a new one). Default:
    /// [`default_update`].
    fn update(
        &self,
        p: &mut Primary<'_>,
        record: &Self::Model,
        content: &[u8],
    ) -> FixtureResult<()> {
        default_update(p, record, content)
    }

    /// Deletes the record and its file. Default: [`default_delete`].
    fn delete(&self, p: &mut Primary<'_>, record: &Self::Model) -> FixtureResult<()> {
        default_delete(p, record)
    }
}

/// Rewrites `record`'s file in place with `content`, then publishes `updated` (a file rewritten
/// under the same path changes no column, so triggers do not see it).
pub fn default_update<M: BlobModel>(
    p: &mut Primary<'_>,
    record: &M,
    content: &[u8],
) -> FixtureResult<()> {
    p.write_file(&record.file(), content)?;
    p.conn.transaction(|c| -> FixtureResult<()> {
        record.publish(c, EventKind::Updated)?;
        Ok(())
    })
}

/// Deletes `record`'s row (`DELETE … WHERE <id> = …` on its model table) and publishes
/// `deleted` in one transaction (the trigger publishes it with `events = "triggers"`), then
/// removes its file unless another record still points at it.
pub fn default_delete<M: BlobModel>(p: &mut Primary<'_>, record: &M) -> FixtureResult<()> {
    let d = M::DESCRIPTOR;
    let path = record.file();
    let shared = p.conn.transaction(|c| -> FixtureResult<bool> {
        let mut sql = Sql::new();
        sql.push("DELETE FROM ")
            .ident(d.tables.model)
            .push(" WHERE ")
            .ident(d.tables.model_id)
            .push(" = ")
            .bind_i64(record.replicator().model_record_id());
        sql.execute(c)?;
        record.publish(c, EventKind::Deleted)?;
        Ok(blob_path_in_use(c, &path, None)?)
    })?;
    if !shared {
        p.store.delete(&BlobPath::new(&path)?)?;
    }
    Ok(())
}

/// A [`Fixture`] from the application's schema SQL and create call (the short form of
/// [`conformance_tests!`](crate::conformance_tests)); `update` and `delete` are the defaults.
pub struct FnFixture<M, C> {
    schema: &'static str,
    create: C,
    model: PhantomData<fn() -> M>,
}

impl<M, C, E> FnFixture<M, C>
where
    C: Fn(&mut Primary<'_>, &str, &[u8]) -> Result<M, E>,
{
    /// `schema`: SQL creating the application's tables; `create`: creates a record and its file.
    pub fn new(schema: &'static str, create: C) -> Self {
        FnFixture {
            schema,
            create,
            model: PhantomData,
        }
    }
}

impl<M, C, E> Fixture for FnFixture<M, C>
where
    M: BlobModel,
    C: Fn(&mut Primary<'_>, &str, &[u8]) -> Result<M, E>,
    E: Into<Box<dyn Error + Send + Sync>>,
{
    type Model = M;

    fn schema(&self, conn: &mut SqliteConnection) -> FixtureResult<()> {
        Ok(conn.batch_execute(self.schema)?)
    }

    fn create(&self, p: &mut Primary<'_>, path: &str, content: &[u8]) -> FixtureResult<M> {
        (self.create)(p, path, content).map_err(Into::into)
    }
}
