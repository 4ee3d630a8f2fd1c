//! What a secondary asks about records: `ids` (for the backfill), `checksums` (for
//! verification, with the blob paths), and `blob_path`.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use serde::Deserialize;

use super::extract::{Authorized, Params, Primary, Record, Replicable};
use super::{ApiError, IdListQuery, NodeState, blocking};
use crate::api::{self, BlobPathResponse, ChecksumEntry, ChecksumsResponse, IdsResponse};

/// `GET /api/geo/blob_path/{replicable}/{id}`.
pub(super) async fn blob_path(
    _: Authorized,
    Record { name, id }: Record,
    Primary(service): Primary,
) -> Result<Json<BlobPathResponse>, ApiError> {
    let source = service.source;
    let blob_path = blocking(move || Ok(source.blob_path(name, id)?)).await?;
    Ok(Json(BlobPathResponse { blob_path }))
}

/// Query of `/api/geo/ids/{replicable}`.
#[derive(Debug, Deserialize)]
pub(super) struct IdsQuery {
    from: Option<i64>,
    to: Option<i64>,
    /// Selective sync: only records whose partition key is in this list (`3,7,12`).
    partitions: Option<String>,
}

/// `GET /api/geo/ids/{replicable}[?from=A&to=B[&partitions=3,7,12]]`: ids in `A..=B` (of the
/// listed partitions only, for a type with `#[replicable(partition)]`) and the highest id.
pub(super) async fn ids(
    _: Authorized,
    Params(q): Params<IdsQuery>,
    Replicable(name): Replicable,
    Primary(service): Primary,
) -> Result<Json<IdsResponse>, ApiError> {
    let range = match (q.from, q.to) {
        (Some(a), Some(b)) if a <= b && b.saturating_sub(a) < api::MAX_ID_RANGE => Some(a..=b),
        (None, None) => None,
        _ => {
            return Err(ApiError::bad_request(format!(
                "from and to go together, from <= to, at most {} ids",
                api::MAX_ID_RANGE
            )));
        }
    };
    let partitions = super::selective::partitions(q.partitions.as_deref())?;
    let source = service.source;
    blocking(move || {
        let ids = match (range, partitions) {
            (Some(r), None) => source.model_ids(name, r)?,
            (Some(r), Some(keys)) => source.model_ids_in_partitions(name, r, &keys)?,
            (None, _) => Vec::new(),
        };
        let max_id = source.max_model_id(name)?;
        Ok(Json(IdsResponse { ids, max_id }))
    })
    .await
}

/// `GET /api/geo/checksums/{replicable}?ids=…`: the primary's verification state of those
/// records, each verified checksum with its MAC for the caller's key
/// ([`crate::auth::mac`]), and their blob paths (so the secondary needs no request per
/// download for them).
pub(super) async fn checksums(
    State(state): State<Arc<NodeState>>,
    Authorized { key, .. }: Authorized,
    Params(q): Params<IdListQuery>,
    Replicable(name): Replicable,
    Primary(service): Primary,
) -> Result<Json<ChecksumsResponse>, ApiError> {
    let ids = q.ids()?;
    blocking(move || {
        let sums = service.source.primary_checksums(name, &ids)?;
        let blob_paths = service.blob_paths(name, &ids)?;
        let keys = state.keys();
        Ok(Json(ChecksumsResponse {
            checksums: sums
                .iter()
                .map(|(id, p)| {
                    ChecksumEntry::new(*id, p)
                        .with_mac(|id, sum| keys.checksum_mac(&key, name, id, sum))
                })
                .collect(),
            blob_paths,
        }))
    })
    .await
}
