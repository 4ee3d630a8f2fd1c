//! The fixture's steps as the scenarios take them: each calls the fixture, then checks on the
//! primary what the step must have done (the record, its file, its event) before anything
//! reaches the secondary, so a broken fixture fails with what is missing.

use geo_core::Replicable;
use geo_core::checksum::checksum_bytes;

use super::sites::{found_bytes, found_sum, sqlite};
use super::{BlobModel, Failure, Fixture, Primary, Sites};
use crate::admin::RegistryRecord;
use crate::primary::EventKind;

/// What a `create` step made: the record, its id, its file and the content written.
pub struct Made<M> {
    /// The record the fixture returned.
    pub model: M,
    /// Its id.
    pub id: i64,
    /// Its file, as the primary database holds it now.
    pub path: String,
    /// The content it was given.
    pub content: Vec<u8>,
}

/// Deterministic content: `len` pseudo-random bytes from `seed`.
pub fn content(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

impl<F: Fixture> Sites<'_, F> {
    /// Runs the fixture's `step` (`what`, for a failure) with the primary's connection and store.
    fn with_primary<T>(
        &self,
        what: &str,
        step: impl FnOnce(&mut Primary<'_>) -> super::FixtureResult<T>,
    ) -> Result<T, Failure> {
        let mut conn = self.p()?;
        let mut p = Primary {
            conn: sqlite(&mut conn),
            store: self.primary_store.as_ref(),
        };
        step(&mut p).map_err(|e| self.error(what, e))
    }

    /// The fixture's `create` with fresh content; checks the record and its file on the
    /// primary and, when `expect_event`, its `created` event.
    pub fn create(&mut self, expect_event: bool) -> Result<Made<F::Model>, Failure> {
        self.next += 1;
        let n = self.next;
        let path = format!("conformance/{}/{n}.bin", self.d().name);
        let data = content(n, 3000 + 1000 * n as usize);
        let model = self.with_primary("the fixture's create", |p| {
            self.fixture.create(p, &path, &data)
        })?;
        let id = model.model_record_id();
        let file = model.file();
        let name = self.name(id, &file);
        match self.primary_path(id)? {
            None => {
                return Err(self
                    .fail("the new record in the primary's model table", "no such row")
                    .record(name)
                    .hint("create must insert the record (and commit) before it returns"));
            }
            Some(p) if p != file => {
                return Err(self
                    .fail(
                        format!("the model table's file column to hold {file:?}"),
                        format!("{p:?}"),
                    )
                    .record(name)
                    .hint("is #[replicable(file)] on the field that holds the blob path?"));
            }
            Some(_) => {}
        }
        let want = checksum_bytes(&data);
        let got = self.primary_sum(&file);
        if got != Some(want) {
            return Err(self
                .fail(
                    format!(
                        "the primary's file at {file:?} with the content given (blake3 {want})"
                    ),
                    found_sum(got),
                )
                .record(name)
                .hint(
                    "create must write the record's file at the path its file column holds: \
                     is #[replicable(file)] on the field that holds the blob path?",
                ));
        }
        if expect_event {
            self.expect_event(id, &file, EventKind::Created)?;
        }
        Ok(Made {
            model,
            id,
            path: file,
            content: data,
        })
    }

    /// The fixture's `update` with new content; checks the file on the primary and the
    /// `updated` event. Returns the record with its file as the primary now holds it.
    pub fn update(&mut self, made: &mut Made<F::Model>) -> Result<(), Failure> {
        self.next += 1;
        let data = content(self.next + 1_000, 2000 + 700 * self.next as usize);
        let before = self.events(made.id, EventKind::Updated)?;
        let model = &made.model;
        self.with_primary("the fixture's update", |p| {
            self.fixture.update(p, model, &data)
        })?;
        let name = self.name(made.id, &made.path);
        let path = self.primary_path(made.id)?.ok_or_else(|| {
            self.fail(
                "the record to remain on the primary after update",
                "no such row",
            )
            .record(name.clone())
        })?;
        let want = checksum_bytes(&data);
        let got = self.primary_sum(&path);
        if got != Some(want) {
            let old = (got == Some(checksum_bytes(&made.content))).then_some(" (the old content)");
            return Err(self
                .fail(
                    format!("the primary's file at {path:?} with the new content (blake3 {want})"),
                    format!("{}{}", found_sum(got), old.unwrap_or_default()),
                )
                .record(self.name(made.id, &path))
                .hint("update must write the new content to the record's file"));
        }
        let after = self.events(made.id, EventKind::Updated)?;
        if after <= before {
            return Err(self
                .fail(
                    "an `updated` event for the record on the primary",
                    "none was published",
                )
                .record(self.name(made.id, &path))
                .hint(
                    "a file rewritten under the same path changes no column: call \
                     geo_diesel::publish_updated in the update (with events = \"triggers\" too)",
                ));
        }
        made.path = path;
        made.content = data;
        Ok(())
    }

    /// The fixture's `delete`; checks the record is gone on the primary and its `deleted`
    /// event.
    pub fn delete(&mut self, made: &Made<F::Model>) -> Result<(), Failure> {
        let model = &made.model;
        self.with_primary("the fixture's delete", |p| self.fixture.delete(p, model))?;
        let name = self.name(made.id, &made.path);
        if let Some(p) = self.primary_path(made.id)? {
            return Err(self
                .fail(
                    "the record gone from the primary's model table",
                    format!("still there (file {p:?})"),
                )
                .record(name));
        }
        self.expect_event(made.id, &made.path, EventKind::Deleted)
    }

    fn expect_event(&self, id: i64, path: &str, kind: EventKind) -> Result<(), Failure> {
        if self.events(id, kind)? > 0 {
            return Ok(());
        }
        let call = match kind {
            EventKind::Created => "publish_created",
            EventKind::Deleted => "publish_deleted",
            _ => "publish_updated",
        };
        Err(self
            .fail(
                format!("a `{}` event for the record on the primary", kind.as_str()),
                "none was published",
            )
            .record(self.name(id, path))
            .hint(if self.d().captured_by_triggers() {
                "events = \"triggers\": are Geo's primary migrations (the triggers) applied after the schema?".to_owned()
            } else {
                format!(
                    "events = \"manual\": the fixture must call geo_diesel::{call} in the \
                     transaction that changes the record"
                )
            }))
    }

    /// The record is synced on the secondary with `made`'s content: registry row `synced`
    /// without failure, the registry's checksum and the secondary's file both the blake3 of it.
    pub fn expect_synced(&self, made: &Made<F::Model>) -> Result<RegistryRecord, Failure> {
        let name = self.name(made.id, &made.path);
        let row = self.reg_row(made.id, &made.path)?;
        let want = checksum_bytes(&made.content);
        if row.state != geo_core::ReplicationState::Synced {
            return Err(self
                .fail(
                    "the registry row synced",
                    format!("{:?}, failure {:?}", row.state, row.last_sync_failure),
                )
                .record(name));
        }
        let got = self.secondary_sum(&made.path);
        if got != Some(want) {
            return Err(self
                .fail(
                    format!(
                        "the secondary's file at {:?} with the primary's content (blake3 {want})",
                        made.path
                    ),
                    found_sum(got),
                )
                .record(name));
        }
        if row.verification_checksum.as_deref() != Some(&want.0[..]) {
            return Err(self
                .fail(
                    format!("the registry's checksum to be blake3 {want}"),
                    found_bytes(row.verification_checksum.as_deref()),
                )
                .record(name));
        }
        Ok(row)
    }
}
