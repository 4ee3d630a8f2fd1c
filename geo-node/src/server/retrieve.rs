//! `retrieve`: one blob, whole or one byte range of it, with the whole blob's checksum and its
//! MAC for the caller's key.

use std::io::Read;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use bytes::Bytes;
use geo_diesel::geo_core::blob_store::BlobPath;
use geo_diesel::geo_core::buffer::BufferPool;
use geo_diesel::geo_core::checksum::{Checksum, checksum_bytes, checksum_reader};
use geo_diesel::geo_core::source::SourceError;
use prometheus_client::metrics::counter::Counter;

use super::extract::{AuthorizedBlob, Primary};
use super::range::{ByteRange, Span};
use super::{ApiError, NodeState, PrimaryService, blocking};
use crate::api;
use crate::auth::AccessKey;
use crate::auth::mac::ChecksumMac;

/// Bytes per piece of a streamed blob.
pub const CHUNK: usize = 1024 * 1024;

/// `GET /api/geo/retrieve/{replicable}/{id}`: the blob, streamed in [`CHUNK`]-sized pieces,
/// with `Content-Length`, `Accept-Ranges: bytes`, [`api::CHECKSUM_HEADER`] (always the whole
/// blob's checksum: the verified one, or the file's blake3 when the primary has not verified
/// it) and its MAC for the caller's key, [`api::CHECKSUM_MAC_HEADER`].
///
/// A `Range: bytes=N-`, `bytes=N-M` or `bytes=-K` request (one range) is answered `206 Partial
/// Content` with `Content-Range`, and `416 Range Not Satisfiable` (with `Content-Range: bytes
/// */size`) when the range starts past the end; any other `Range` is ignored (`200`, the whole
/// blob), as RFC 9110 allows.
///
/// No thread waits on the socket: each piece is read by its own short blocking task when the
/// body is polled for it, that is, when the client has taken the piece before. A client that
/// reads slowly, or not at all, holds a socket and one piece, never a blocking thread.
pub(super) async fn retrieve(
    State(state): State<Arc<NodeState>>,
    AuthorizedBlob { name, id, key, .. }: AuthorizedBlob,
    Primary(service): Primary,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let asked = headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .and_then(ByteRange::parse);
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
        let verified = match source.primary_checksum(name, id) {
            Ok(c) => c.and_then(|c| c.verified_checksum().copied()),
            Err(e) => {
                tracing::debug!(replicable = name, id, error = %e, "no checksum for the retrieve header");
                None
            }
        };
        let mut blob = service.open_from(name, id, &path, asked.map_or(0, ByteRange::offset))?;
        let span = match (asked, blob.total) {
            (Some(r), Some(total)) => r.resolve(total),
            _ => Span::Whole,
        };
        // What the answer sends, with the blob opened where it starts.
        let (len, span) = match span {
            Span::Unsatisfiable => {
                // Nothing is sent: the checksum goes only when it costs no read.
                let signed = verified
                    .map(|c| checksum_mac(&macs, &key, name, id, &c).map(|m| (c, m)))
                    .transpose()?;
                return Ok(Opened::Unsatisfiable(blob.total, signed));
            }
            Span::Whole if blob.start != 0 => {
                blob = service.open_from(name, id, &path, 0)?;
                (blob.total, Span::Whole)
            }
            Span::Whole => (blob.total, Span::Whole),
            Span::Part { start, end, total } => {
                if blob.start != start {
                    blob = service.open_from(name, id, &path, start)?;
                }
                if blob.start != start {
                    // The file changed under us: send it whole.
                    blob = service.open_from(name, id, &path, 0)?;
                    (blob.total, Span::Whole)
                } else {
                    (Some(end + 1 - start), Span::Part { start, end, total })
                }
            }
        };
        let mut reader: Box<dyn Read + Send> = match len {
            Some(n) => Box::new(blob.reader.take(n)),
            None => blob.reader,
        };
        // Read the first piece here: small blobs need no second trip to the blocking pool.
        let first = read_chunk(&mut reader, len)
            .map_err(|e| ApiError::transient(format!("reading the file of {name} {id}"), e))?;
        let checksum = match verified {
            Some(c) => c,
            None => {
                // `first` is the blob's start only in a whole answer.
                let head = matches!(span, Span::Whole).then_some(&first[..]);
                service.served_checksum(name, id, &path, blob.total, head)?
            }
        };
        let mac = checksum_mac(&macs, &key, name, id, &checksum)?;
        Ok(Opened::Blob {
            len,
            span,
            signed: (checksum, mac),
            first,
            reader,
        })
    })
    .await?;
    let (len, span, signed, first, reader) = match opened {
        Opened::Unsatisfiable(total, signed) => {
            let range = total.map_or("bytes */*".to_owned(), |n| format!("bytes */{n}"));
            return Ok(blob_response(
                StatusCode::RANGE_NOT_SATISFIABLE,
                Body::empty(),
                Some(0),
                Some(range),
                signed,
            ));
        }
        Opened::Blob {
            len,
            span,
            signed,
            first,
            reader,
        } => (len, span, signed, first, reader),
    };
    let served = state.metrics().served_counter();
    served.inc_by(first.len() as u64);
    let body = if first.len() < CHUNK {
        Body::from(first)
    } else {
        Body::from_stream(pieces(first, reader, served, name, id))
    };
    Ok(match span {
        Span::Part { start, end, total } => blob_response(
            StatusCode::PARTIAL_CONTENT,
            body,
            len,
            Some(format!("bytes {start}-{end}/{total}")),
            Some(signed),
        ),
        _ => blob_response(StatusCode::OK, body, len, None, Some(signed)),
    })
}

/// The headers of every `retrieve` answer, set in this one place.
fn blob_response(
    status: StatusCode,
    body: Body,
    size: Option<u64>,
    content_range: Option<String>,
    signed: Option<(Checksum, ChecksumMac)>,
) -> Response {
    let mut response = Response::new(body);
    *response.status_mut() = status;
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    if let Some(n) = size {
        h.insert(header::CONTENT_LENGTH, HeaderValue::from(n));
    }
    if let Some(r) = content_range
        && let Ok(v) = HeaderValue::from_str(&r)
    {
        h.insert(header::CONTENT_RANGE, v);
    }
    if let Some((checksum, mac)) = signed {
        if let Ok(v) = HeaderValue::from_str(&checksum.to_hex()) {
            h.insert(api::CHECKSUM_HEADER, v);
        }
        if let Ok(v) = HeaderValue::from_str(&mac.to_hex()) {
            h.insert(api::CHECKSUM_MAC_HEADER, v);
        }
    }
    response
}

/// What the blocking part of `retrieve` opened.
enum Opened {
    /// The range starts past the end of the blob (its size, when known; the verified checksum
    /// and its MAC, when there is one).
    Unsatisfiable(Option<u64>, Option<(Checksum, ChecksumMac)>),
    /// The bytes to send: their count, which part of the blob, the whole blob's checksum and
    /// its MAC, the first piece, and a reader for the rest.
    Blob {
        len: Option<u64>,
        span: Span,
        signed: (Checksum, ChecksumMac),
        first: Bytes,
        reader: Box<dyn Read + Send>,
    },
}

/// A blob opened at an offset.
struct OpenedFrom {
    reader: Box<dyn Read + Send>,
    /// The whole blob's size, when known.
    total: Option<u64>,
    /// Where the reader starts (0 when the source could not start at the offset asked).
    start: u64,
}

impl PrimaryService {
    /// Opens the blob of `name` `id` at `path` from byte `offset`: a seek in the local store
    /// when there is one, [`PrimarySource::open_blob_from`] otherwise.
    fn open_from(
        &self,
        name: &'static str,
        id: i64,
        path: &BlobPath,
        offset: u64,
    ) -> Result<OpenedFrom, SourceError> {
        if offset == 0 {
            let b = self.open(name, id, path)?;
            return Ok(OpenedFrom {
                reader: b.reader,
                total: b.size,
                start: 0,
            });
        }
        let Some(store) = &self.store else {
            let r = self.source.open_blob_from(name, id, path, offset)?;
            return Ok(OpenedFrom {
                total: r.stream.size.map(|n| n + r.start),
                reader: r.stream.reader,
                start: r.start,
            });
        };
        match store.open_at(path, offset) {
            Ok(b) => Ok(OpenedFrom {
                reader: b.reader,
                total: Some(b.size),
                start: offset,
            }),
            Err(e) if e.is_not_found() => Err(SourceError::MissingOnPrimary {
                replicable: name.to_owned(),
                id,
            }),
            Err(e) => Err(SourceError::transient(
                format!("opening the file of {name} {id}"),
                e,
            )),
        }
    }

    /// The checksum of a blob the primary has not verified, as it is served: the blake3 of
    /// `first` when that is the whole file from its start (no second read for small blobs), else
    /// of the file read once more (the store's hasher when it is local). `first` is `None` when
    /// the answer is a range. A file that changes between this read and the stream fails the
    /// secondary's check and is fetched again.
    fn served_checksum(
        &self,
        name: &'static str,
        id: i64,
        path: &BlobPath,
        size: Option<u64>,
        first: Option<&[u8]>,
    ) -> Result<Checksum, ApiError> {
        if let Some(first) = first {
            let whole = match size {
                Some(n) => n == first.len() as u64,
                None => first.len() < CHUNK,
            };
            if whole {
                return Ok(checksum_bytes(first));
            }
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
}

/// The pieces of a blob after `first`, each read by its own blocking task when the body asks
/// for it (so the read happens only once the client took the piece before).
fn pieces(
    first: Bytes,
    reader: Box<dyn Read + Send>,
    served: Counter,
    name: &'static str,
    id: i64,
) -> impl futures_util::Stream<Item = std::io::Result<Bytes>> + Send + 'static {
    futures_util::stream::unfold((Some(first), Some(reader)), move |(first, reader)| {
        let served = served.clone();
        async move {
            if let Some(b) = first {
                return Some((Ok(b), (None, reader)));
            }
            let mut reader = reader?;
            let read = tokio::task::spawn_blocking(move || {
                let piece = read_chunk(&mut reader, None);
                (piece, reader)
            })
            .await;
            match read {
                Ok((Ok(b), _)) if b.is_empty() => None,
                Ok((Ok(b), reader)) => {
                    served.inc_by(b.len() as u64);
                    Some((Ok(b), (None, Some(reader))))
                }
                Ok((Err(e), _)) => {
                    tracing::warn!(replicable = name, id, error = %e, "reading a blob failed mid-stream");
                    Some((Err(e), (None, None)))
                }
                Err(e) => Some((Err(std::io::Error::other(e)), (None, None))),
            }
        }
    })
}

/// The MAC of `checksum` for the caller's `key` (which it was authorized with just before).
pub(super) fn checksum_mac(
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

/// Buffers of streamed pieces, each back here once hyper has sent it: a piece is read into a
/// buffer zeroed once, not into a fresh zeroed allocation (that zeroing was 6% of a large
/// blob's CPU). At most [`MAX_REQUESTS_PER_KEY`](super::DEFAULT_MAX_REQUESTS_PER_KEY) answers
/// per key are in flight, one piece each.
static PIECES: BufferPool = BufferPool::new(CHUNK, 16);

/// Reads up to [`CHUNK`] bytes (fewer only at the end of the data); `left`, when known, is
/// what the answer still has to send (a small blob's only piece is allocated to its size).
fn read_chunk(reader: &mut dyn Read, left: Option<u64>) -> std::io::Result<Bytes> {
    if let Some(n) = left.filter(|&n| n < CHUNK as u64) {
        let mut buf = vec![0u8; n as usize];
        let filled = fill(reader, &mut buf)?;
        buf.truncate(filled);
        return Ok(Bytes::from(buf));
    }
    let mut buf = PIECES.take();
    let filled = fill(reader, &mut buf)?;
    Ok(Bytes::from_owner(buf).slice(..filled))
}

/// Reads into `buf` until it is full or the data ends; returns the bytes read.
fn fill(reader: &mut dyn Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}
