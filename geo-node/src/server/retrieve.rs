//! Blob retrieval: `retrieve` streams one blob; `retrieve_batch` answers many small ones at once.

use std::collections::BTreeMap;
use std::io::Read;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use bytes::Bytes;
use geo_diesel::geo_core::blob_store::BlobPath;
use geo_diesel::geo_core::checksum::{Checksum, checksum_bytes};
use geo_diesel::geo_core::source::SourceError;
use prometheus_client::metrics::counter::Counter;

use super::extract::{Authorized, AuthorizedBlob, Params, Primary, Replicable};
use super::{ApiError, IdListQuery, NodeState, PrimaryService, blocking};
use crate::api;

/// Bytes per piece of a streamed blob.
pub const CHUNK: usize = 256 * 1024;

/// `GET /api/geo/retrieve/{replicable}/{id}`: the blob, streamed in [`CHUNK`]-sized pieces,
/// with `Content-Length`, `Accept-Ranges: bytes` and, when the primary verified it,
/// [`api::CHECKSUM_HEADER`] (always the whole blob's checksum).
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
    AuthorizedBlob { name, id }: AuthorizedBlob,
    Primary(service): Primary,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let asked = headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .and_then(ByteRange::parse);
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
        let mut blob = service.open_from(name, id, &path, asked.map_or(0, ByteRange::offset))?;
        let span = match (asked, blob.total) {
            (Some(r), Some(total)) => r.resolve(total),
            _ => Span::Whole,
        };
        // What the answer sends, with the blob opened where it starts.
        let (len, span) = match span {
            Span::Unsatisfiable => return Ok(Opened::Unsatisfiable(blob.total, checksum)),
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
        let first = read_chunk(&mut reader)
            .map_err(|e| ApiError::transient(format!("reading the file of {name} {id}"), e))?;
        Ok(Opened::Blob {
            len,
            span,
            checksum,
            first,
            reader,
        })
    })
    .await?;
    let (len, span, checksum, first, reader) = match opened {
        Opened::Unsatisfiable(total, checksum) => {
            let range = total.map_or("bytes */*".to_owned(), |n| format!("bytes */{n}"));
            return Ok(blob_response(
                StatusCode::RANGE_NOT_SATISFIABLE,
                Body::empty(),
                Some(0),
                Some(range),
                checksum,
            ));
        }
        Opened::Blob {
            len,
            span,
            checksum,
            first,
            reader,
        } => (len, span, checksum, first, reader),
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
            checksum,
        ),
        _ => blob_response(StatusCode::OK, body, len, None, checksum),
    })
}

/// The headers of every `retrieve` answer, set in this one place.
fn blob_response(
    status: StatusCode,
    body: Body,
    size: Option<u64>,
    content_range: Option<String>,
    checksum: Option<Checksum>,
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
    if let Some(c) = checksum
        && let Ok(v) = HeaderValue::from_str(&c.to_hex())
    {
        h.insert(api::CHECKSUM_HEADER, v);
    }
    response
}

/// What the blocking part of `retrieve` opened.
enum Opened {
    /// The range starts past the end of the blob (its size, when known).
    Unsatisfiable(Option<u64>, Option<Checksum>),
    /// The bytes to send: their count, which part of the blob, the whole blob's checksum, the
    /// first piece, and a reader for the rest.
    Blob {
        len: Option<u64>,
        span: Span,
        checksum: Option<Checksum>,
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

/// One byte range of a `Range` request, as asked (RFC 9110 §14.1.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ByteRange {
    /// `bytes=N-` or `bytes=N-M`.
    From {
        /// First byte.
        start: u64,
        /// Last byte (inclusive), `None` for "to the end".
        end: Option<u64>,
    },
    /// `bytes=-K`: the last K bytes.
    Suffix(u64),
}

/// What a [`ByteRange`] selects of a blob of known size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Span {
    /// The whole blob (`200`).
    Whole,
    /// Bytes `start..=end` of `total` (`206`).
    Part {
        /// First byte.
        start: u64,
        /// Last byte, inclusive.
        end: u64,
        /// The whole blob's size.
        total: u64,
    },
    /// Nothing of it (`416`).
    Unsatisfiable,
}

impl ByteRange {
    /// The range of a `Range` header value; `None` for anything but one well-formed byte range
    /// (the header is then ignored).
    pub(crate) fn parse(value: &str) -> Option<ByteRange> {
        let spec = value.trim().strip_prefix("bytes=")?.trim();
        if spec.contains(',') {
            return None;
        }
        let (a, b) = spec.split_once('-')?;
        let (a, b) = (a.trim(), b.trim());
        let number = |s: &str| {
            (!s.is_empty() && s.bytes().all(|c| c.is_ascii_digit()))
                .then(|| s.parse::<u64>().ok())
                .flatten()
        };
        if a.is_empty() {
            return number(b).map(ByteRange::Suffix);
        }
        let start = number(a)?;
        let end = if b.is_empty() { None } else { Some(number(b)?) };
        if end.is_some_and(|e| e < start) {
            return None;
        }
        Some(ByteRange::From { start, end })
    }

    /// Where reading starts, as far as the request alone says (a suffix needs the size).
    fn offset(self) -> u64 {
        match self {
            ByteRange::From { start, .. } => start,
            ByteRange::Suffix(_) => 0,
        }
    }

    /// What the range selects of a blob of `total` bytes.
    pub(crate) fn resolve(self, total: u64) -> Span {
        let (start, end) = match self {
            ByteRange::From { start, end } => {
                if start >= total {
                    return Span::Unsatisfiable;
                }
                (start, end.map_or(total - 1, |e| e.min(total - 1)))
            }
            ByteRange::Suffix(0) => return Span::Unsatisfiable,
            ByteRange::Suffix(_) if total == 0 => return Span::Unsatisfiable,
            ByteRange::Suffix(k) => (total.saturating_sub(k), total - 1),
        };
        if start == 0 && end == total - 1 {
            // All of it: a plain answer (a client that asked from 0 gets the whole blob).
            return Span::Whole;
        }
        Span::Part { start, end, total }
    }
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
                let piece = read_chunk(&mut reader);
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
    _: Authorized,
    Params(q): Params<IdListQuery>,
    Replicable(name): Replicable,
    Primary(service): Primary,
) -> Result<Response, ApiError> {
    let ids = q.ids()?;
    let (body, blobs, bytes) = blocking(move || service.batch(name, &ids)).await?;
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
    /// The body of a `retrieve_batch` answer for `ids`, the number of blobs whose bytes it
    /// carries, and those bytes' total. Every path goes through the same checks as `retrieve`
    /// ([`BlobPath`], the store's link checks); anything refused, unreadable, larger than
    /// [`api::MAX_BATCH_BLOB`] or past [`api::MAX_BATCH_BYTES`] is left to `retrieve`.
    fn batch(&self, name: &'static str, ids: &[i64]) -> Result<(Bytes, usize, u64), ApiError> {
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

#[cfg(test)]
mod tests {
    use super::{ByteRange, Span};

    #[test]
    fn ranges_parse_as_rfc_9110_says() {
        let from = |start, end| Some(ByteRange::From { start, end });
        assert_eq!(ByteRange::parse("bytes=10-"), from(10, None));
        assert_eq!(ByteRange::parse("bytes=10-19"), from(10, Some(19)));
        assert_eq!(ByteRange::parse(" bytes= 0 - 0 "), from(0, Some(0)));
        assert_eq!(ByteRange::parse("bytes=-5"), Some(ByteRange::Suffix(5)));
        for ignored in [
            "",
            "bytes=",
            "bytes=-",
            "bytes=5-4",
            "bytes=a-",
            "bytes=1-2,4-5",
            "items=1-",
            "bytes=+1-",
            "bytes=99999999999999999999-",
        ] {
            assert_eq!(ByteRange::parse(ignored), None, "{ignored:?}");
        }
    }

    #[test]
    fn ranges_resolve_against_the_size() {
        let part = |start, end, total| Span::Part { start, end, total };
        let r = |s: &str| ByteRange::parse(s).unwrap();
        assert_eq!(r("bytes=10-").resolve(100), part(10, 99, 100));
        assert_eq!(r("bytes=10-1000").resolve(100), part(10, 99, 100));
        assert_eq!(r("bytes=99-").resolve(100), part(99, 99, 100));
        assert_eq!(r("bytes=0-").resolve(100), Span::Whole);
        assert_eq!(r("bytes=0-9").resolve(100), part(0, 9, 100));
        assert_eq!(r("bytes=-10").resolve(100), part(90, 99, 100));
        assert_eq!(r("bytes=-1000").resolve(100), Span::Whole);
        assert_eq!(r("bytes=100-").resolve(100), Span::Unsatisfiable);
        assert_eq!(r("bytes=0-").resolve(0), Span::Unsatisfiable);
        assert_eq!(r("bytes=-0").resolve(100), Span::Unsatisfiable);
    }
}
