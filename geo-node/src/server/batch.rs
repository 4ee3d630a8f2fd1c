//! `retrieve_batch`: the paths of many records and the bytes of their small blobs in one answer,
//! each blob's checksum MAC'd for the caller's key.

use std::collections::BTreeMap;
use std::io::Read;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::Response;
use bytes::Bytes;
use geo_diesel::geo_core::blob_store::BlobPath;
use geo_diesel::geo_core::checksum::{Checksum, checksum_bytes};
use geo_diesel::geo_core::source::SourceError;

use super::extract::{Authorized, Params, Primary, Replicable};
use super::retrieve::checksum_mac;
use super::{ApiError, IdListQuery, NodeState, PrimaryService, blocking};
use crate::api;
use crate::auth::mac::ChecksumMac;

/// `GET /api/geo/retrieve_batch/{replicable}?ids=…`: the paths of those records and the bytes of
/// their small blobs, in the framing of [`api::batch`].
pub(super) async fn retrieve_batch(
    State(state): State<Arc<NodeState>>,
    Authorized { key, .. }: Authorized,
    Params(q): Params<IdListQuery>,
    Replicable(name): Replicable,
    Primary(service): Primary,
) -> Result<Response, ApiError> {
    let ids = q.ids()?;
    let macs = Arc::clone(&state);
    let (body, blobs, bytes) = blocking(move || {
        service.batch(name, &ids, &|id, sum| {
            checksum_mac(&macs, &key, name, id, sum)
        })
    })
    .await?;
    state.metrics().served(bytes);
    tracing::debug!(replicable = name, blobs, bytes, "retrieve_batch");
    let mut response = Response::new(Body::from(body));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    Ok(response)
}

impl PrimaryService {
    /// The body of a `retrieve_batch` answer for `ids`, each blob's checksum MAC'd with
    /// `mac`, the number of blobs whose bytes it carries, and those bytes' total. Every path goes through the same checks as `retrieve`
    /// ([`BlobPath`], the store's link checks); anything refused, unreadable, larger than
    /// [`api::MAX_BATCH_BLOB`] or past [`api::MAX_BATCH_BYTES`] is left to `retrieve`.
    fn batch(
        &self,
        name: &'static str,
        ids: &[i64],
        mac: &dyn Fn(i64, &Checksum) -> Result<ChecksumMac, ApiError>,
    ) -> Result<(Bytes, usize, u64), ApiError> {
        use api::batch::{BatchEntry, Encoder};
        let paths = self.blob_paths(name, ids)?;
        let sums = match self.source.primary_checksums(name, ids) {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!(replicable = name, error = %e, "no checksums for a retrieve_batch answer");
                BTreeMap::new()
            }
        };
        let mut enc = Encoder::new();
        let (mut blobs, mut budget) = (0usize, api::MAX_BATCH_BYTES);
        for &id in ids {
            let Some(path) = paths.get(&id) else {
                enc.push(&BatchEntry::RecordNotFound { id });
                continue;
            };
            let individual = || BatchEntry::Individual {
                id,
                path: path.clone(),
            };
            let entry = match BlobPath::new(path) {
                _ if path.len() > usize::from(u16::MAX) || budget == 0 => individual(),
                Err(_) => individual(),
                Ok(p) => match self.open(name, id, &p) {
                    Err(SourceError::MissingOnPrimary { .. }) => BatchEntry::FileNotFound {
                        id,
                        path: path.clone(),
                    },
                    Err(SourceError::RecordNotFound { .. }) => BatchEntry::RecordNotFound { id },
                    Err(_) => individual(),
                    Ok(b) if b.size.is_some_and(|n| n > api::MAX_BATCH_BLOB.min(budget)) => {
                        individual()
                    }
                    Ok(b) => {
                        let limit = api::MAX_BATCH_BLOB.min(budget);
                        let mut data = Vec::with_capacity(b.size.unwrap_or(0) as usize);
                        match b.reader.take(limit + 1).read_to_end(&mut data) {
                            Ok(n)
                                if (n as u64) <= limit && b.size.is_none_or(|s| s == n as u64) =>
                            {
                                let checksum = sums
                                    .get(&id)
                                    .and_then(|c| c.verified_checksum().copied())
                                    .unwrap_or_else(|| checksum_bytes(&data));
                                budget -= n as u64;
                                blobs += 1;
                                BatchEntry::Blob {
                                    id,
                                    path: path.clone(),
                                    checksum,
                                    mac: mac(id, &checksum)?,
                                    data: Bytes::from(data),
                                }
                            }
                            // Grew, shrank or failed while being read: `retrieve` decides.
                            _ => individual(),
                        }
                    }
                },
            };
            enc.push(&entry);
        }
        Ok((enc.finish(), blobs, api::MAX_BATCH_BYTES - budget))
    }
}
