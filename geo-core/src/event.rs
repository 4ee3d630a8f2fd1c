//! Replication events: the rows of `geo_events` and their validated form.
//!
//! The primary writes one [`Event`] per model change in the same transaction as the change. A
//! secondary's log cursor reads them and calls [`parse_event`]; an event that does not parse is a
//! [`BadEvent`], which the cursor counts, logs and skips (it never stops the cursor). Whether the
//! replicable name is known is checked by the caller with [`crate::find_replicable`].

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::blob_store::{BlobPath, InvalidBlobPath};
use crate::checksum::{Checksum, ChecksumError};

/// The kinds of event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventName {
    /// A record was created: sync it.
    Created,
    /// A record's data changed: sync it again (a first-class event, unlike GitLab's blobs).
    Updated,
    /// A record was deleted: remove its file and registry row.
    Deleted,
    /// The primary computed the record's checksum: re-verify it.
    ChecksumSucceeded,
}

impl EventName {
    /// Every event name.
    pub const ALL: [EventName; 4] = [
        EventName::Created,
        EventName::Updated,
        EventName::Deleted,
        EventName::ChecksumSucceeded,
    ];

    /// The stored name: `created`, `updated`, `deleted` or `checksum_succeeded`.
    pub const fn as_str(self) -> &'static str {
        match self {
            EventName::Created => "created",
            EventName::Updated => "updated",
            EventName::Deleted => "deleted",
            EventName::ChecksumSucceeded => "checksum_succeeded",
        }
    }

    /// Parses a stored name (exact, lower case).
    pub fn parse(s: &str) -> Result<Self, UnknownEventName> {
        EventName::ALL
            .into_iter()
            .find(|n| n.as_str() == s)
            .ok_or_else(|| UnknownEventName(s.to_owned()))
    }
}

impl fmt::Display for EventName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for EventName {
    type Err = UnknownEventName;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        EventName::parse(s)
    }
}

/// A stored event name that is not one of [`EventName`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown event name {0:?} (expected created, updated, deleted or checksum_succeeded)")]
pub struct UnknownEventName(pub String);

/// A row of `geo_events`, as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// The event id (`geo_events.id`), increasing in commit order most of the time (see gaps).
    pub id: i64,
    /// The replicable name, e.g. `widget`.
    pub replicable_name: String,
    /// The event name as stored; see [`EventName`].
    pub event_name: String,
    /// The id of the model record the event is about.
    pub model_record_id: i64,
    /// The JSON payload; see [`EventPayload`].
    pub payload: serde_json::Value,
    /// When the event was written.
    pub created_at: DateTime<Utc>,
}

/// The JSON payload of an event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventPayload {
    /// The id of the model record (repeats the column, as GitLab's payload does).
    pub model_record_id: i64,
    /// For `deleted`: the blob's path relative to the blob store root, since the record is gone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blob_path: Option<String>,
    /// For `checksum_succeeded`: the primary's checksum as hex, so an HTTP secondary need not ask.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checksum: Option<String>,
    /// A correlation id tying the event to the request that caused it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<String>,
    /// For a type with a `#[replicable(partition)]` field: the record's partition key
    /// (`Some(None)`: `null`, the record is in no partition), so a secondary's selective sync
    /// can skip the event. `None`: the key is absent (a type without partition, or an event
    /// written before it had one).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    pub partition: Option<Option<i64>>,
}

/// A field that is present (even as `null`) deserializes to `Some`; an absent one stays
/// `None` through `#[serde(default)]`.
fn present<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(d).map(Some)
}

impl EventPayload {
    /// A payload naming only the record.
    pub fn new(model_record_id: i64) -> Self {
        EventPayload {
            model_record_id,
            blob_path: None,
            checksum: None,
            correlation_id: None,
            partition: None,
        }
    }

    /// With the record's partition key (`None`: the partition field is `NULL`).
    pub fn with_partition(mut self, partition: Option<i64>) -> Self {
        self.partition = Some(partition);
        self
    }

    /// With the blob path (for `deleted`).
    pub fn with_blob_path(mut self, path: impl Into<String>) -> Self {
        self.blob_path = Some(path.into());
        self
    }

    /// With the primary's checksum (for `checksum_succeeded`).
    pub fn with_checksum(mut self, checksum: &Checksum) -> Self {
        self.checksum = Some(checksum.to_hex());
        self
    }

    /// With a correlation id.
    pub fn with_correlation_id(mut self, id: impl Into<String>) -> Self {
        self.correlation_id = Some(id.into());
        self
    }

    /// The payload as a JSON value, as stored in `geo_events.payload`.
    pub fn to_value(&self) -> serde_json::Value {
        // Serializing this struct cannot fail: every field is a plain string or integer.
        serde_json::to_value(self).unwrap_or_else(|_| serde_json::json!({}))
    }
}

/// An event that passed validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedEvent {
    /// The event id.
    pub id: i64,
    /// The replicable name (not yet checked against the registered replicables).
    pub replicable_name: String,
    /// The event kind.
    pub name: EventName,
    /// The model record id.
    pub model_record_id: i64,
    /// The validated blob path, when the payload carries one.
    pub blob_path: Option<BlobPath>,
    /// The primary's checksum, when the payload carries one.
    pub checksum: Option<Checksum>,
    /// The correlation id, when present.
    pub correlation_id: Option<String>,
    /// The record's partition key as the payload gave it ([`EventPayload::partition`]):
    /// `None` when the payload does not say, `Some(None)` for a record in no partition.
    pub partition: Option<Option<i64>>,
    /// When the event was written.
    pub created_at: DateTime<Utc>,
}

/// An event the log cursor must skip, and why. Every variant names the event id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadEvent {
    /// The event name is not one of [`EventName`].
    #[error("event {id}: {source}")]
    UnknownName {
        /// The event id.
        id: i64,
        /// The unknown name.
        source: UnknownEventName,
    },
    /// The replicable name is empty.
    #[error("event {id}: empty replicable name")]
    EmptyReplicableName {
        /// The event id.
        id: i64,
    },
    /// The payload is not a JSON object of the expected shape.
    #[error("event {id}: bad payload: {reason}")]
    BadPayload {
        /// The event id.
        id: i64,
        /// What serde said.
        reason: String,
    },
    /// The payload's `model_record_id` differs from the column.
    #[error("event {id}: payload model_record_id {payload} differs from the column's {column}")]
    ModelIdMismatch {
        /// The event id.
        id: i64,
        /// `geo_events.model_record_id`.
        column: i64,
        /// `payload.model_record_id`.
        payload: i64,
    },
    /// The payload's `blob_path` is not a valid relative path (it could escape the store).
    #[error("event {id}: {source}")]
    BadBlobPath {
        /// The event id.
        id: i64,
        /// Why the path was refused.
        source: InvalidBlobPath,
    },
    /// The payload's `checksum` is not 64 hex digits.
    #[error("event {id}: bad checksum in payload: {source}")]
    BadChecksum {
        /// The event id.
        id: i64,
        /// Why it was refused.
        source: ChecksumError,
    },
}

impl BadEvent {
    /// The id of the event that was refused.
    pub fn event_id(&self) -> i64 {
        match self {
            BadEvent::UnknownName { id, .. }
            | BadEvent::EmptyReplicableName { id }
            | BadEvent::BadPayload { id, .. }
            | BadEvent::ModelIdMismatch { id, .. }
            | BadEvent::BadBlobPath { id, .. }
            | BadEvent::BadChecksum { id, .. } => *id,
        }
    }
}

/// Validates an event's name and payload. Unknown payload fields are ignored (newer primaries
/// may add some); `model_record_id` must be present and equal the column.
pub fn parse_event(event: &Event) -> Result<ParsedEvent, BadEvent> {
    let id = event.id;
    let name = EventName::parse(&event.event_name)
        .map_err(|source| BadEvent::UnknownName { id, source })?;
    if event.replicable_name.is_empty() {
        return Err(BadEvent::EmptyReplicableName { id });
    }
    if !event.payload.is_object() {
        return Err(BadEvent::BadPayload {
            id,
            reason: format!("expected a JSON object, got {}", json_kind(&event.payload)),
        });
    }
    let payload: EventPayload =
        serde_json::from_value(event.payload.clone()).map_err(|e| BadEvent::BadPayload {
            id,
            reason: e.to_string(),
        })?;
    if payload.model_record_id != event.model_record_id {
        return Err(BadEvent::ModelIdMismatch {
            id,
            column: event.model_record_id,
            payload: payload.model_record_id,
        });
    }
    let blob_path = payload
        .blob_path
        .as_deref()
        .map(BlobPath::new)
        .transpose()
        .map_err(|source| BadEvent::BadBlobPath { id, source })?;
    let checksum = payload
        .checksum
        .as_deref()
        .map(Checksum::from_hex)
        .transpose()
        .map_err(|source| BadEvent::BadChecksum { id, source })?;
    Ok(ParsedEvent {
        id,
        replicable_name: event.replicable_name.clone(),
        name,
        model_record_id: event.model_record_id,
        blob_path,
        checksum,
        correlation_id: payload.correlation_id,
        partition: payload.partition,
        created_at: event.created_at,
    })
}

fn json_kind(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checksum::checksum_bytes;
    use chrono::TimeZone;
    use serde_json::json;

    fn event(name: &str, id: i64, payload: serde_json::Value) -> Event {
        Event {
            id: 10,
            replicable_name: "widget".into(),
            event_name: name.into(),
            model_record_id: id,
            payload,
            created_at: Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap(),
        }
    }

    #[test]
    fn names_round_trip() {
        for n in EventName::ALL {
            assert_eq!(EventName::parse(n.as_str()), Ok(n));
            assert_eq!(n.to_string().parse::<EventName>(), Ok(n));
            assert_eq!(
                serde_json::to_value(n).unwrap(),
                json!(n.as_str()),
                "serde name matches as_str"
            );
        }
        assert_eq!(
            EventName::parse("Created"),
            Err(UnknownEventName("Created".into()))
        );
        assert!(EventName::parse("repository_updated").is_err());
    }

    #[test]
    fn parses_each_kind() {
        let sum = checksum_bytes(b"x");
        let created = parse_event(&event("created", 7, EventPayload::new(7).to_value())).unwrap();
        assert_eq!(created.name, EventName::Created);
        assert_eq!((created.model_record_id, created.blob_path), (7, None));

        let deleted = parse_event(&event(
            "deleted",
            7,
            EventPayload::new(7)
                .with_blob_path("w/7.bin")
                .with_correlation_id("abc")
                .to_value(),
        ))
        .unwrap();
        assert_eq!(deleted.blob_path.unwrap().as_str(), "w/7.bin");
        assert_eq!(deleted.correlation_id.as_deref(), Some("abc"));

        let verified = parse_event(&event(
            "checksum_succeeded",
            7,
            EventPayload::new(7).with_checksum(&sum).to_value(),
        ))
        .unwrap();
        assert_eq!(verified.checksum, Some(sum));

        // Unknown fields (GitLab's uploader_class) are ignored.
        let extra = json!({"model_record_id": 7, "uploader_class": "X"});
        assert!(parse_event(&event("updated", 7, extra)).is_ok());
    }

    #[test]
    fn refuses_bad_events() {
        let e = parse_event(&event("exploded", 1, json!({"model_record_id": 1}))).unwrap_err();
        assert!(matches!(e, BadEvent::UnknownName { id: 10, .. }));
        assert_eq!(e.event_id(), 10);

        for payload in [
            json!(null),
            json!([1]),
            json!({}),
            json!({"model_record_id": "1"}),
        ] {
            let e = parse_event(&event("created", 1, payload.clone())).unwrap_err();
            assert!(matches!(e, BadEvent::BadPayload { .. }), "{payload}: {e}");
        }

        assert_eq!(
            parse_event(&event("created", 1, json!({"model_record_id": 2}))).unwrap_err(),
            BadEvent::ModelIdMismatch {
                id: 10,
                column: 1,
                payload: 2
            }
        );
        let e = parse_event(&event(
            "deleted",
            1,
            json!({"model_record_id": 1, "blob_path": "../../etc/passwd"}),
        ))
        .unwrap_err();
        assert!(matches!(e, BadEvent::BadBlobPath { .. }), "{e}");
        let e = parse_event(&event(
            "checksum_succeeded",
            1,
            json!({"model_record_id": 1, "checksum": "abc"}),
        ))
        .unwrap_err();
        assert!(matches!(e, BadEvent::BadChecksum { .. }), "{e}");

        let mut empty = event("created", 1, json!({"model_record_id": 1}));
        empty.replicable_name.clear();
        assert_eq!(
            parse_event(&empty),
            Err(BadEvent::EmptyReplicableName { id: 10 })
        );
    }

    #[test]
    fn payload_serialization_omits_absent_fields() {
        assert_eq!(
            EventPayload::new(3).to_value(),
            json!({"model_record_id": 3})
        );
        let v = EventPayload::new(3).with_blob_path("a/b").to_value();
        assert_eq!(v, json!({"model_record_id": 3, "blob_path": "a/b"}));
    }

    #[test]
    fn partition_absent_null_and_present_stay_apart() {
        let p = |v| parse_event(&event("created", 3, v)).unwrap().partition;
        assert_eq!(p(json!({"model_record_id": 3})), None);
        assert_eq!(
            p(json!({"model_record_id": 3, "partition": null})),
            Some(None)
        );
        assert_eq!(
            p(json!({"model_record_id": 3, "partition": 7})),
            Some(Some(7))
        );
        let bad = json!({"model_record_id": 3, "partition": "7"});
        assert!(matches!(
            parse_event(&event("created", 3, bad)),
            Err(BadEvent::BadPayload { .. })
        ));
        // Serialized in serde_json's key order, as the triggers write it.
        let v = EventPayload::new(3).with_partition(None).to_value();
        assert_eq!(v.to_string(), r#"{"model_record_id":3,"partition":null}"#);
        let v = EventPayload::new(3).with_partition(Some(7)).to_value();
        assert_eq!(v.to_string(), r#"{"model_record_id":3,"partition":7}"#);
    }
}
