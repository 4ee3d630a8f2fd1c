//! [`S3BlobStore`]: blobs as objects in an S3-compatible bucket, through `object_store`'s AWS
//! client, behind the synchronous [`BlobStore`] trait.
//!
//! The store owns a small tokio runtime and blocks on it; call it from plain threads or from
//! tokio's blocking pool (`spawn_blocking`), never from async code.
//!
//! - **Writes** stream: the reader is read one part ([`S3Options::part_size`], 8 MiB) at a
//!   time and hashed as it goes. A blob that fits in one part is one `PUT`, sent only after its
//!   checksum matched; a larger one is a multipart upload with at most
//!   [`S3Options::parts_in_flight`] parts uploading while the next is read, completed only when
//!   the whole checksum matched and aborted otherwise (a reader error, a mismatch, a failed
//!   part). S3 makes an object visible at its key only when its `PUT` or its multipart
//!   completion succeeds, so a half-written object is never at its final key and the old object
//!   stays until the new one is whole. Memory is bounded by `parts_in_flight + 1` parts.
//! - **Reads** stream the `GET` body; `open_at` is a ranged `GET`. `size` and `exists` are a
//!   `HEAD`; `checksum` hashes the streamed body.

use std::collections::VecDeque;
use std::fmt;
use std::io::{self, Read};
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use geo_diesel::geo_core::blob_store::{BlobError, BlobPath, BlobReader, BlobStore, Written};
use geo_diesel::geo_core::checksum::{Checksum, ChecksumWriter};
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path as ObjectPath;
use object_store::{GetOptions, GetRange, ObjectStore, ObjectStoreExt, PutPayload};
use tokio::task::JoinHandle;

/// The smallest part S3 accepts in a multipart upload (all but the last part).
pub const MIN_PART_SIZE: usize = 5 * 1024 * 1024;

/// Tunables of an [`S3BlobStore`].
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct S3Options {
    /// Size of one multipart part, and the largest blob sent as one `PUT` (8 MiB; S3 wants at
    /// least 5 MiB for every part but the last).
    pub part_size: usize,
    /// Parts of one upload sent at once while the next part is read (2).
    pub parts_in_flight: usize,
}

impl Default for S3Options {
    fn default() -> Self {
        S3Options {
            part_size: 8 * 1024 * 1024,
            parts_in_flight: 2,
        }
    }
}

impl S3Options {
    /// Sets [`part_size`](S3Options::part_size); at least [`MIN_PART_SIZE`], the smallest part
    /// S3 accepts.
    pub fn part_size(mut self, bytes: usize) -> Self {
        self.part_size = bytes.max(MIN_PART_SIZE);
        self
    }
}

/// Blobs in an S3-compatible bucket under a key prefix: blob `a/b` is object `prefix/a/b`.
pub struct S3BlobStore {
    client: Arc<AmazonS3>,
    bucket: String,
    prefix: String,
    options: S3Options,
    /// Always `Some` until drop (taken there to shut it down without blocking).
    rt: Option<tokio::runtime::Runtime>,
}

impl fmt::Debug for S3BlobStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3BlobStore")
            .field("url", &self.url())
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl Drop for S3BlobStore {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            // Never blocks, so dropping the store from async code is safe too.
            rt.shutdown_background();
        }
    }
}

impl S3BlobStore {
    /// The store of `bucket` under `prefix` (`""` for the whole bucket), configured from the
    /// `AWS_*` environment variables (`AWS_ENDPOINT_URL`, `AWS_REGION`, `AWS_ACCESS_KEY_ID`,
    /// `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, `AWS_ALLOW_HTTP`, ... as
    /// [`AmazonS3Builder::from_env`] reads them). Requests use the path style
    /// (`endpoint/bucket/key`) unless `AWS_VIRTUAL_HOSTED_STYLE_REQUEST` is true.
    pub fn from_env(bucket: &str, prefix: &str, options: S3Options) -> Result<Self, S3Error> {
        Self::with_builder(AmazonS3Builder::from_env(), bucket, prefix, options)
    }

    /// The store of `bucket` under `prefix` through `builder` (the bucket is set here).
    pub fn with_builder(
        builder: AmazonS3Builder,
        bucket: &str,
        prefix: &str,
        options: S3Options,
    ) -> Result<Self, S3Error> {
        if bucket.is_empty() {
            return Err(S3Error::Config("the bucket name is empty".into()));
        }
        let client = builder
            .with_bucket_name(bucket)
            .build()
            .map_err(|e| S3Error::Config(format!("s3://{bucket}: {e}")))?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("geo-s3")
            .enable_all()
            .build()
            .map_err(|e| S3Error::Config(format!("starting the S3 client's runtime: {e}")))?;
        Ok(S3BlobStore {
            client: Arc::new(client),
            bucket: bucket.to_owned(),
            prefix: prefix.trim_matches('/').to_owned(),
            options,
            rt: Some(rt),
        })
    }

    /// `s3://bucket/prefix`.
    pub fn url(&self) -> String {
        if self.prefix.is_empty() {
            format!("s3://{}", self.bucket)
        } else {
            format!("s3://{}/{}", self.bucket, self.prefix)
        }
    }

    /// The options in force.
    pub fn options(&self) -> S3Options {
        self.options
    }

    /// Every blob path stored under the prefix, sorted (one `LIST`; for tests and tools).
    pub fn list(&self) -> Result<Vec<String>, S3Error> {
        let prefix = (!self.prefix.is_empty()).then(|| ObjectPath::from(self.prefix.as_str()));
        let metas: Vec<_> = self.rt().block_on(async {
            let mut out = Vec::new();
            let mut stream = self.client.list(prefix.as_ref());
            while let Some(m) = stream.next().await {
                out.push(m);
            }
            out
        });
        let strip = if self.prefix.is_empty() {
            String::new()
        } else {
            format!("{}/", self.prefix)
        };
        let mut keys = Vec::new();
        for m in metas {
            let m = m.map_err(|e| S3Error::Request(format!("listing {}: {e}", self.url())))?;
            let key = m.location.to_string();
            keys.push(key.strip_prefix(&strip).unwrap_or(&key).to_owned());
        }
        keys.sort();
        Ok(keys)
    }

    fn rt(&self) -> &tokio::runtime::Runtime {
        self.rt.as_ref().expect("the runtime lives until drop")
    }

    fn key(&self, path: &BlobPath) -> ObjectPath {
        if self.prefix.is_empty() {
            ObjectPath::from(path.as_str())
        } else {
            ObjectPath::from(format!("{}/{}", self.prefix, path.as_str()))
        }
    }

    fn err(&self, path: &BlobPath, op: &'static str, e: object_store::Error) -> BlobError {
        match e {
            object_store::Error::NotFound { .. } => BlobError::NotFound {
                path: path.to_string(),
            },
            e => BlobError::Remote {
                path: path.to_string(),
                store: self.url(),
                op,
                source: Box::new(e),
            },
        }
    }

    /// `HEAD`: the size, or `None` when there is no object.
    fn head(&self, path: &BlobPath) -> Result<Option<u64>, BlobError> {
        match self.rt().block_on(self.client.head(&self.key(path))) {
            Ok(meta) => Ok(Some(meta.size)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.err(path, "head", e)),
        }
    }

    /// Reads from `reader` until `buf` holds `want` bytes or the reader ends.
    fn fill(
        reader: &mut dyn Read,
        want: usize,
        path: &BlobPath,
        before: u64,
    ) -> Result<Vec<u8>, BlobError> {
        let mut buf = Vec::with_capacity(want);
        let mut chunk = vec![0u8; 64 * 1024];
        while buf.len() < want {
            let n = want.saturating_sub(buf.len()).min(chunk.len());
            match reader.read(&mut chunk[..n]) {
                Ok(0) => break,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    return Err(BlobError::Source {
                        path: path.to_string(),
                        bytes: before + buf.len() as u64,
                        source: e,
                    });
                }
            }
        }
        Ok(buf)
    }

    fn mismatch(path: &BlobPath, expected: &Checksum, written: &Written) -> BlobError {
        BlobError::ChecksumMismatch {
            path: path.to_string(),
            expected: *expected,
            actual: written.checksum,
            bytes: written.bytes,
        }
    }

    /// The multipart upload of a blob whose first part, `first`, is already read: each part is
    /// sent by a task of the runtime while the next is read, at most `parts_in_flight` at once;
    /// the upload is completed only when every part is in and the whole checksum matched, and
    /// aborted on any failure.
    fn write_multipart(
        &self,
        path: &BlobPath,
        key: &ObjectPath,
        first: Vec<u8>,
        reader: &mut dyn Read,
        expected: Option<&Checksum>,
        hasher: &mut ChecksumWriter<io::Sink>,
    ) -> Result<Written, BlobError> {
        let rt = self.rt();
        let mut upload = rt
            .block_on(self.client.put_multipart(key))
            .map_err(|e| self.err(path, "start multipart upload", e))?;
        let mut parts: VecDeque<JoinHandle<object_store::Result<()>>> = VecDeque::new();
        let result = (|| {
            let mut next = first;
            while !next.is_empty() {
                while parts.len() >= self.options.parts_in_flight.max(1) {
                    let part = parts.pop_front().expect("not empty");
                    self.part_done(path, rt.block_on(part))?;
                }
                let full = next.len() == self.options.part_size;
                parts.push_back(rt.spawn(upload.put_part(PutPayload::from(next))));
                if !full {
                    break;
                }
                next = Self::fill(reader, self.options.part_size, path, hasher.bytes_written())?;
                hash(hasher, &next);
            }
            let written = Written {
                bytes: hasher.bytes_written(),
                checksum: hasher.checksum(),
            };
            if let Some(expected) = expected
                && *expected != written.checksum
            {
                return Err(Self::mismatch(path, expected, &written));
            }
            while let Some(part) = parts.pop_front() {
                self.part_done(path, rt.block_on(part))?;
            }
            Ok(written)
        })();
        let completed = match result {
            Ok(written) => rt
                .block_on(upload.complete())
                .map(|_| written)
                .map_err(|e| self.err(path, "complete multipart upload", e)),
            Err(e) => Err(e),
        };
        if completed.is_err() {
            // Let the parts in flight finish rather than cancel them: a request cancelled
            // mid-body may still be stored by the server after the abort below, and stay
            // behind as an orphan part. Finished first, every part goes with the abort.
            for part in parts {
                let _ = rt.block_on(part);
            }
            if let Err(e) = rt.block_on(upload.abort()) {
                tracing::warn!(path = %path, store = %self.url(), error = %e, "could not abort a multipart upload");
            }
        }
        completed
    }

    fn part_done(
        &self,
        path: &BlobPath,
        joined: Result<object_store::Result<()>, tokio::task::JoinError>,
    ) -> Result<(), BlobError> {
        match joined {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(self.err(path, "upload part", e)),
            Err(e) => Err(BlobError::Remote {
                path: path.to_string(),
                store: self.url(),
                op: "upload part",
                source: Box::new(e),
            }),
        }
    }
}

fn hash(hasher: &mut ChecksumWriter<io::Sink>, bytes: &[u8]) {
    use std::io::Write;
    hasher.write_all(bytes).expect("hashing into a sink");
}

impl BlobStore for S3BlobStore {
    fn open(&self, path: &BlobPath) -> Result<BlobReader, BlobError> {
        self.open_at(path, 0)
    }

    fn open_at(&self, path: &BlobPath, offset: u64) -> Result<BlobReader, BlobError> {
        let key = self.key(path);
        if offset > 0 {
            // A range at or past the end is refused (416): answer it from a HEAD.
            let size = self.head(path)?.ok_or_else(|| BlobError::NotFound {
                path: path.to_string(),
            })?;
            if offset >= size {
                return Ok(BlobReader {
                    reader: Box::new(io::empty()),
                    size,
                });
            }
        }
        let options = GetOptions {
            range: (offset > 0).then_some(GetRange::Offset(offset)),
            ..GetOptions::default()
        };
        let got = self
            .rt()
            .block_on(self.client.get_opts(&key, options))
            .map_err(|e| self.err(path, "get", e))?;
        let size = got.meta.size;
        Ok(BlobReader {
            reader: Box::new(ObjectReader {
                rt: self.rt().handle().clone(),
                stream: got.into_stream(),
                buf: Bytes::new(),
                path: path.to_string(),
                store: self.url(),
            }),
            size,
        })
    }

    fn write(
        &self,
        path: &BlobPath,
        reader: &mut dyn Read,
        expected: Option<&Checksum>,
    ) -> Result<Written, BlobError> {
        let key = self.key(path);
        let mut hasher = ChecksumWriter::new(io::sink());
        let first = Self::fill(reader, self.options.part_size, path, 0)?;
        hash(&mut hasher, &first);
        if first.len() == self.options.part_size {
            return self.write_multipart(path, &key, first, reader, expected, &mut hasher);
        }
        // The whole blob is in `first`: check it, then one PUT.
        let written = Written {
            bytes: hasher.bytes_written(),
            checksum: hasher.checksum(),
        };
        if let Some(expected) = expected
            && *expected != written.checksum
        {
            return Err(Self::mismatch(path, expected, &written));
        }
        self.rt()
            .block_on(self.client.put(&key, PutPayload::from(first)))
            .map_err(|e| self.err(path, "put", e))?;
        Ok(written)
    }

    fn delete(&self, path: &BlobPath) -> Result<bool, BlobError> {
        // S3 answers a DELETE of a missing key with success: ask first.
        if self.head(path)?.is_none() {
            return Ok(false);
        }
        match self.rt().block_on(self.client.delete(&self.key(path))) {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(true),
            Err(e) => Err(self.err(path, "delete", e)),
        }
    }

    fn size(&self, path: &BlobPath) -> Result<Option<u64>, BlobError> {
        self.head(path)
    }

    fn is_object_storage(&self) -> bool {
        true
    }

    fn absolute_path(&self, path: &BlobPath) -> Result<PathBuf, BlobError> {
        Err(BlobError::Unsupported {
            path: path.to_string(),
            op: "a local file path",
            why: "the blob is an object in S3-compatible storage, not a local file",
        })
    }
}

/// The body of a `GET`, read synchronously.
struct ObjectReader {
    rt: tokio::runtime::Handle,
    stream: BoxStream<'static, object_store::Result<Bytes>>,
    buf: Bytes,
    path: String,
    store: String,
}

impl Read for ObjectReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.buf.is_empty() {
            match self.rt.block_on(self.stream.next()) {
                None => return Ok(0),
                Some(Ok(b)) => self.buf = b,
                Some(Err(e)) => {
                    return Err(io::Error::other(format!(
                        "reading blob {:?} from {}: {e}",
                        self.path, self.store
                    )));
                }
            }
        }
        let n = out.len().min(self.buf.len());
        out[..n].copy_from_slice(&self.buf.split_to(n));
        Ok(n)
    }
}

/// Why an [`S3BlobStore`] could not be opened or listed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum S3Error {
    /// The configuration (bucket, environment) is not usable.
    #[error("object storage configuration: {0}")]
    Config(String),
    /// A request failed.
    #[error("object storage: {0}")]
    Request(String),
}
