//! Blob retrieval: `retrieve` streams one blob; `retrieve_batch` answers many small ones at once.

use std::collections::BTreeMap;
use std::io::Read;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::Response;
use bytes::Bytes;
use geo_diesel::geo_core::blob_store::BlobPath;
use geo_diesel::geo_core::checksum::{Checksum, checksum_bytes, checksum_reader};
use geo_diesel::geo_core::source::SourceError;

use super::extract::{Authorized, AuthorizedBlob, Params, Primary, Replicable};
use super::{ApiError, IdListQuery, NodeState, PrimaryService, blocking};
use crate::api;
use crate::auth::AccessKey;
use crate::auth::mac::ChecksumMac;

/// Bytes per piece of a streamed blob.
pub const CHUNK: usize = 256 * 1024;

/// Pieces buffered between the file reader and the socket.
const CHANNEL_DEPTH: usize = 4;

/// `GET /api/geo/retrieve/{replicable}/{id}`: the blob, streamed in [`CHUNK`]-sized pieces
/// through a bounded channel from a blocking reader, with `Content-Length`,
/// [`api::CHECKSUM_HEADER`] (the verified checksum, or the file's blake3 when the primary has
/// not verified it) and its MAC for the caller's key, [`api::CHECKSUM_MAC_HEADER`].
pub(super) async fn retrieve(
    State(state): State<Arc<NodeState>>,
    AuthorizedBlob { name, id, key, .. }: AuthorizedBlob,
    Primary(service): Primary,
) -> Result<Response, ApiError> {
    let macs = Arc::clone(&state);
    let opened = blocking(move || {
        let source = &service.source;
        let path = source
            .blob_path(name, id)?
            .ok_or_else(|| SourceError::RecordNotFound {
                replicable: name.to_owned(),
                id,
            })?;
        let path =
            BlobPath::new(&path).map_err(|e| ApiError::blob_path_refused(e.to_string()))?;
        let checksum = match source.primary_checksum(name, id) {
            Ok(c) => c.and_then(|c| c.verified_checksum().copied()),
            Err(e) => {
                tracing::debug!(replicable = name, id, error = %e, "no checksum for the retrieve header");
                None
            }
        };
        let blob = service.open(name, id, &path)?;
        let size = blob.size;
        let mut reader: Box<dyn Read + Send> = match size {
            Some(n) => Box::new(blob.reader.take(n)),
            None => blob.reader,
        };
        // Read the first piece here: small blobs need no second trip to the blocking pool.
        let first = read_chunk(&mut reader)
            .map_err(|e| ApiError::transient(format!("reading the file of {name} {id}"), e))?;
        let checksum = match checksum {
            Some(c) => c,
            None => service.served_checksum(name, id, &path, size, &first)?,
        };
        let mac = checksum_mac(&macs, &key, name, id, &checksum)?;
        Ok((size, (checksum, mac), first, reader))
    })
    .await?;
    let (size, (checksum, mac), first, reader) = opened;
    let served = state.metrics().served_counter();
    served.inc_by(first.len() as u64);
    let body = if first.len() < CHUNK {
        Body::from(first)
    } else {
        let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(CHANNEL_DEPTH);
        let replicable = name.to_owned();
        tokio::task::spawn_blocking(move || {
            let mut reader = reader;
            if tx.blocking_send(Ok(first)).is_err() {
                return;
            }
            loop {
                match read_chunk(&mut reader) {
                    Ok(b) if b.is_empty() => return,
                    Ok(b) => {
                        served.inc_by(b.len() as u64);
                        if tx.blocking_send(Ok(b)).is_err() {
                            // The client went away.
                            return;
                        }
                    }
                    Err(e) => {
                        tracing::warn!(replicable = %replicable, id, error = %e, "reading a blob failed mid-stream");
                        let _ = tx.blocking_send(Err(e));
                        return;
                    }
                }
            }
        });
        Body::from_stream(futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|item| (item, rx))
        }))
    };
    let mut response = Response::new(body);
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    if let Some(n) = size {
        h.insert(header::CONTENT_LENGTH, HeaderValue::from(n));
    }
    if let Ok(v) = HeaderValue::from_str(&checksum.to_hex()) {
        h.insert(api::CHECKSUM_HEADER, v);
    }
    if let Ok(v) = HeaderValue::from_str(&mac.to_hex()) {
        h.insert(api::CHECKSUM_MAC_HEADER, v);
    }
    Ok(response)
}

/// The MAC of `checksum` for the caller's `key` (which it was authorized with just before).
fn checksum_mac(
    state: &NodeState,
    key: &AccessKey,
    name: &str,
    id: i64,
    checksum: &Checksum,
) -> Result<ChecksumMac, ApiError> {
    state
        .keys()
        .checksum_mac(key, name, id, checksum)
        .ok_or_else(|| ApiError::internal("the caller's access key is no longer known"))
}

/// Reads up to [`CHUNK`] bytes (fewer only at the end of the data).
fn read_chunk(reader: &mut dyn Read) -> std::io::Result<Bytes> {
    let mut buf = vec![0u8; CHUNK];
    let mut filled = 0;
    while filled < CHUNK {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    buf.truncate(filled);
    Ok(Bytes::from(buf))
}

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
    /// The checksum of a blob the primary has not verified, as it is served: the blake3 of
    /// `first` when that is the whole file (no second read for small blobs), else of the file
    /// read once more (the store's hasher when it is local). A file that changes between this
    /// read and the stream fails the secondary's check and is fetched again.
    fn served_checksum(
        &self,
        name: &'static str,
        id: i64,
        path: &BlobPath,
        size: Option<u64>,
        first: &[u8],
    ) -> Result<Checksum, ApiError> {
        let whole = match size {
            Some(n) => n == first.len() as u64,
            None => first.len() < CHUNK,
        };
        if whole {
            return Ok(checksum_bytes(first));
        }
        let hashing = |e: &dyn std::fmt::Display| {
            ApiError::transient(format!("hashing the file of {name} {id}"), e.to_string())
        };
        if let Some(store) = &self.store {
            return store
                .checksum(path)
                .map(|(c, _)| c)
                .map_err(|e| hashing(&e));
        }
        let blob = self.open(name, id, path)?;
        checksum_reader(blob.reader)
            .map(|(c, _)| c)
            .map_err(|e| hashing(&e))
    }

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
