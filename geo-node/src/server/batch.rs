//! `retrieve_batch`: the paths of many records and the bytes of their small blobs in one answer,
//! each blob's checksum MAC'd for the caller's key.

use std::collections::BTreeMap;
use std::io::Read;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

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
use crate::api::batch::BatchEntry;
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

/// Threads one `retrieve_batch` answer reads its files on. The secondary waits for the answer
/// before its downloads start, so the primary's cores would otherwise idle beside the one
/// reading.
pub const BATCH_READ_THREADS: usize = 2;

impl PrimaryService {
    /// The body of a `retrieve_batch` answer for `ids`, each blob's checksum MAC'd with
    /// `mac`, the number of blobs whose bytes it carries, and those bytes' total. Every path
    /// goes through the same checks as `retrieve` ([`BlobPath`], the store's link checks);
    /// anything refused, unreadable, larger than [`api::MAX_BATCH_BLOB`] or past
    /// [`api::MAX_BATCH_BYTES`] is left to `retrieve`. The files are read on
    /// [`BATCH_READ_THREADS`] threads, each reserving its bytes from the answer's budget.
    fn batch(
        &self,
        name: &'static str,
        ids: &[i64],
        mac: &(dyn Fn(i64, &Checksum) -> Result<ChecksumMac, ApiError> + Sync),
    ) -> Result<(Bytes, usize, u64), ApiError> {
        use api::batch::Encoder;
        let paths = self.blob_paths(name, ids)?;
        let sums = match self.source.primary_checksums(name, ids) {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!(replicable = name, error = %e, "no checksums for a retrieve_batch answer");
                BTreeMap::new()
            }
        };
        let budget = AtomicU64::new(api::MAX_BATCH_BYTES);
        let entries = geo_diesel::parallel::parallel_map(ids, BATCH_READ_THREADS, |&id| {
            let verified = sums.get(&id).and_then(|c| c.verified_checksum().copied());
            self.batch_entry(name, id, paths.get(&id), &budget, verified, mac)
        });
        let mut enc = Encoder::new();
        let (mut blobs, mut bytes) = (0usize, 0u64);
        for entry in entries {
            let entry = entry?;
            if let BatchEntry::Blob { data, .. } = &entry {
                blobs += 1;
                bytes += data.len() as u64;
            }
            enc.push(&entry);
        }
        Ok((enc.finish(), blobs, bytes))
    }

    /// The entry of one record: its bytes when they fit what is left of `budget` (taken from
    /// it), with the primary's `verified` checksum (the blake3 of the bytes without one), else
    /// what `retrieve` should be asked.
    fn batch_entry(
        &self,
        name: &'static str,
        id: i64,
        path: Option<&String>,
        budget: &AtomicU64,
        verified: Option<Checksum>,
        mac: &(dyn Fn(i64, &Checksum) -> Result<ChecksumMac, ApiError> + Sync),
    ) -> Result<BatchEntry, ApiError> {
        let Some(path) = path else {
            return Ok(BatchEntry::RecordNotFound { id });
        };
        let individual = || BatchEntry::Individual {
            id,
            path: path.clone(),
        };
        let left = || budget.load(Ordering::Relaxed);
        let entry = match BlobPath::new(path) {
            _ if path.len() > usize::from(u16::MAX) || left() == 0 => individual(),
            Err(_) => individual(),
            Ok(p) => match self.open(name, id, &p) {
                Err(SourceError::MissingOnPrimary { .. }) => BatchEntry::FileNotFound {
                    id,
                    path: path.clone(),
                },
                Err(SourceError::RecordNotFound { .. }) => BatchEntry::RecordNotFound { id },
                Err(_) => individual(),
                Ok(b) if b.size.is_some_and(|n| n > api::MAX_BATCH_BLOB.min(left())) => {
                    individual()
                }
                Ok(b) => {
                    let limit = api::MAX_BATCH_BLOB.min(left());
                    let mut data = Vec::with_capacity(b.size.unwrap_or(0) as usize);
                    match b.reader.take(limit + 1).read_to_end(&mut data) {
                        Ok(n)
                            if (n as u64) <= limit
                                && b.size.is_none_or(|s| s == n as u64)
                                && budget
                                    .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| {
                                        b.checked_sub(n as u64)
                                    })
                                    .is_ok() =>
                        {
                            let checksum = verified.unwrap_or_else(|| checksum_bytes(&data));
                            BatchEntry::Blob {
                                id,
                                path: path.clone(),
                                checksum,
                                mac: mac(id, &checksum)?,
                                data: Bytes::from(data),
                            }
                        }
                        // Grew, shrank, failed while being read or over the budget:
                        // `retrieve` decides.
                        _ => individual(),
                    }
                }
            },
        };
        Ok(entry)
    }
}
