//! Shared fixtures: a replicable model, a primary served over loopback HTTP, a secondary
//! replicating through `HttpSource`, a fault-injecting source, and a raw HTTP client.

#![allow(dead_code, missing_docs)]

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use diesel::prelude::*;
use geo_diesel::db::{DbPool, PooledConn};
use geo_diesel::direct::DirectSource;
use geo_diesel::geo_core::Replicable;
use geo_diesel::geo_core::blob_store::{BlobPath, BlobStore, LocalBlobStore};
use geo_diesel::geo_core::clock::Env;
use geo_diesel::geo_core::event::Event;
use geo_diesel::geo_core::source::{BlobStream, PrimaryChecksum, PrimarySource, SourceError};
use geo_diesel::replicable;
use geo_diesel::secondary::{Secondary, SecondaryConfig};
use geo_diesel::verifier::{PrimaryConfig, PrimaryVerifier};
use geo_node::auth::{Credentials, KeyRing};
use geo_node::cli::{App, BoxError};
use geo_node::client::{HttpConfig, HttpSource};
use geo_node::server::{NodeState, PrimaryService, ServeOptions, ServerHandle};
use geo_node::tls::ServerTls;

pub mod schema {
    diesel::table! {
        /// Documents: a title and a file.
        docs (id) {
            /// Primary key.
            id -> BigInt,
            /// Blob path.
            path -> Text,
            /// Title.
            title -> Text,
        }
    }
}

use schema::docs;

pub mod tls;

/// The test model.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable, Identifiable)]
#[diesel(table_name = docs)]
#[replicable(strategy = "blob")]
pub struct Doc {
    /// Primary key.
    pub id: i64,
    /// Blob path.
    #[replicable(file)]
    pub path: String,
    /// Title.
    pub title: String,
}

/// Links the model (so `replicables()` sees it) and returns its name.
pub fn doc_name() -> &'static str {
    <Doc as Replicable>::DESCRIPTOR.name
}

/// The SQLite connection behind a pooled one: these tests and the bench run on SQLite files.
/// The one place they name a backend.
pub fn sqlite(conn: &mut PooledConn) -> &mut SqliteConnection {
    match conn {
        PooledConn::Sqlite(c) => c,
        #[allow(unreachable_patterns)]
        _ => panic!("geo-node's tests run on SQLite"),
    }
}

/// The application's schema hook.
pub fn create_schema(conn: &mut PooledConn) -> Result<(), BoxError> {
    use diesel::connection::SimpleConnection;
    sqlite(conn).batch_execute(
        "CREATE TABLE IF NOT EXISTS \"docs\" (\"id\" INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL, \
         \"path\" TEXT NOT NULL, \"title\" TEXT NOT NULL);",
    )?;
    Ok(())
}

pub fn app() -> App {
    App::new().primary_setup(create_schema)
}

/// Writes the file, then inserts the record (its trigger publishes `created`).
pub fn create_doc(db: &DbPool, store: &dyn BlobStore, path: &str, data: &[u8]) -> Doc {
    store
        .write(&BlobPath::new(path).unwrap(), &mut &data[..], None)
        .unwrap();
    insert_doc(db, path)
}

/// Inserts a record (no file); its trigger publishes `created`.
pub fn insert_doc(db: &DbPool, path: &str) -> Doc {
    let mut conn = db.get().unwrap();
    sqlite(&mut conn)
        .transaction::<_, BoxError, _>(|c| {
            // `events = "triggers"`: the insert trigger publishes `created`.
            let d: Doc = diesel::insert_into(docs::table)
                .values((docs::path.eq(path), docs::title.eq("t")))
                .returning(Doc::as_returning())
                .get_result(c)?;
            Ok(d)
        })
        .unwrap()
}

/// Deterministic pseudo-random bytes.
pub fn data(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// How the [`FaultySource`] misbehaves.
pub mod fault {
    pub const NONE: u8 = 0;
    /// Every call fails with `Other` (the server answers 500).
    pub const ERROR_500: u8 = 1;
    /// Blobs end half way (the server aborts the body).
    pub const TRUNCATE: u8 = 2;
    /// Blobs have one byte flipped.
    pub const CORRUPT: u8 = 3;
}

/// A primary source that can be told to fail.
pub struct FaultySource {
    pub inner: DirectSource,
    pub mode: AtomicU8,
}

impl FaultySource {
    fn check(&self) -> Result<(), SourceError> {
        if self.mode.load(Ordering::SeqCst) == fault::ERROR_500 {
            return Err(SourceError::other("injected", "primary on fire"));
        }
        Ok(())
    }
}

struct Truncated {
    inner: Box<dyn Read + Send>,
    left: u64,
}

impl Read for Truncated {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.left == 0 {
            return Err(std::io::Error::other("disk failed mid-read"));
        }
        let n = buf.len().min(self.left as usize);
        let n = self.inner.read(&mut buf[..n])?;
        self.left -= n as u64;
        Ok(n)
    }
}

struct Corrupt {
    inner: Box<dyn Read + Send>,
    flipped: bool,
}

impl Read for Corrupt {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n > 0 && !self.flipped {
            buf[n / 2] ^= 0x55;
            self.flipped = true;
        }
        Ok(n)
    }
}

impl PrimarySource for FaultySource {
    fn events_after(&self, after_id: i64, limit: usize) -> Result<Vec<Event>, SourceError> {
        self.check()?;
        self.inner.events_after(after_id, limit)
    }
    fn events_by_ids(&self, ids: &[i64]) -> Result<Vec<Event>, SourceError> {
        self.check()?;
        self.inner.events_by_ids(ids)
    }
    fn max_event_id(&self) -> Result<Option<i64>, SourceError> {
        self.check()?;
        self.inner.max_event_id()
    }
    fn primary_identity(
        &self,
    ) -> Result<Option<geo_diesel::geo_core::source::PrimaryIdentity>, SourceError> {
        self.check()?;
        self.inner.primary_identity()
    }
    fn event_feed(
        &self,
        after_id: i64,
        limit: usize,
    ) -> Result<geo_diesel::geo_core::source::EventFeed, SourceError> {
        self.check()?;
        self.inner.event_feed(after_id, limit)
    }
    fn model_ids(&self, r: &str, range: RangeInclusive<i64>) -> Result<Vec<i64>, SourceError> {
        self.check()?;
        self.inner.model_ids(r, range)
    }
    fn max_model_id(&self, r: &str) -> Result<Option<i64>, SourceError> {
        self.check()?;
        self.inner.max_model_id(r)
    }
    fn primary_checksums(
        &self,
        r: &str,
        ids: &[i64],
    ) -> Result<BTreeMap<i64, PrimaryChecksum>, SourceError> {
        self.check()?;
        self.inner.primary_checksums(r, ids)
    }
    fn blob_path(&self, r: &str, id: i64) -> Result<Option<String>, SourceError> {
        self.check()?;
        self.inner.blob_path(r, id)
    }
    fn open_blob(&self, r: &str, id: i64) -> Result<BlobStream, SourceError> {
        self.check()?;
        let mut blob = self.inner.open_blob(r, id)?;
        match self.mode.load(Ordering::SeqCst) {
            fault::TRUNCATE => {
                let left = blob.size.unwrap_or(0) / 2;
                blob.reader = Box::new(Truncated {
                    inner: blob.reader,
                    left,
                });
            }
            fault::CORRUPT => {
                blob.reader = Box::new(Corrupt {
                    inner: blob.reader,
                    flipped: false,
                });
            }
            _ => {}
        }
        Ok(blob)
    }
}

/// A primary: database, files, verifier, and its HTTP server on 127.0.0.1:0.
pub struct Primary {
    pub dir: PathBuf,
    pub db: DbPool,
    pub store: Arc<LocalBlobStore>,
    pub verifier: Arc<PrimaryVerifier>,
    pub source: Arc<FaultySource>,
    pub server: Option<ServerHandle>,
    pub creds: Credentials,
    /// Serve with `PrimaryService::direct` (as the CLI does) instead of through the
    /// fault-injecting source.
    pub direct: bool,
}

impl Primary {
    /// This primary's database and files served again, over HTTPS with `tls` (as the CLI
    /// serves them: `PrimaryService::direct`).
    pub fn https(&self, tls: ServerTls) -> ServerHandle {
        let state = NodeState::new("tls-primary", KeyRing::with([self.creds.clone()]))
            .with_primary(PrimaryService::direct(
                self.db.clone(),
                self.store.clone(),
                Some(self.verifier.clone()),
            ));
        ServerHandle::start_with(
            "127.0.0.1:0",
            Arc::new(state),
            ServeOptions::new().threads(2).tls(tls),
        )
        .unwrap()
    }

    pub fn new(dir: &Path) -> Self {
        Self::with_service(dir, false)
    }

    /// A primary served as the CLI serves it (database and store fast paths, no faults).
    pub fn direct(dir: &Path) -> Self {
        Self::with_service(dir, true)
    }

    fn with_service(dir: &Path, direct: bool) -> Self {
        doc_name();
        let db = geo_node::cli::open_primary_db(
            &dir.join("primary.sqlite3").display().to_string(),
            8,
            &app(),
        )
        .unwrap();
        let store = Arc::new(LocalBlobStore::new(dir.join("primary-files")).unwrap());
        let verifier = Arc::new(PrimaryVerifier::new(
            db.clone(),
            store.clone(),
            Env::system(),
            PrimaryConfig::default(),
        ));
        let source = Arc::new(FaultySource {
            inner: DirectSource::new(db.clone(), store.clone()),
            mode: AtomicU8::new(fault::NONE),
        });
        let creds = Credentials::generate();
        let mut p = Primary {
            dir: dir.to_path_buf(),
            db,
            store,
            verifier,
            source,
            server: None,
            creds,
            direct,
        };
        p.start("127.0.0.1:0");
        p
    }

    pub fn start(&mut self, addr: &str) {
        let service = if self.direct {
            PrimaryService::direct(
                self.db.clone(),
                self.store.clone(),
                Some(self.verifier.clone()),
            )
        } else {
            PrimaryService::from_source(self.source.clone(), Some(self.verifier.clone()))
        };
        let state = NodeState::new("test-primary", KeyRing::with([self.creds.clone()]))
            .with_primary(service);
        self.server = Some(ServerHandle::start(addr, Arc::new(state), 2).unwrap());
    }

    pub fn url(&self) -> String {
        self.server.as_ref().unwrap().url()
    }

    pub fn addr(&self) -> String {
        self.server.as_ref().unwrap().addr().to_string()
    }

    pub fn set_fault(&self, mode: u8) {
        self.source.mode.store(mode, Ordering::SeqCst);
    }

    pub fn verify_all(&self) {
        self.verifier.run_until_idle(50).unwrap();
    }

    /// Every (id, path) on the primary.
    pub fn paths(&self) -> Vec<(i64, String)> {
        let mut conn = self.db.get().unwrap();
        let d = <Doc as Replicable>::DESCRIPTOR;
        let ids = geo_diesel::primary::all_ids(&mut conn, d).unwrap();
        let mut out = Vec::new();
        for chunk in ids.chunks(500) {
            out.extend(geo_diesel::primary::blob_paths(&mut conn, d, chunk).unwrap());
        }
        out.sort();
        out
    }
}

/// A secondary replicating from `primary_url` over HTTP.
pub fn secondary(
    dir: &Path,
    primary_url: &str,
    creds: &Credentials,
    env: Env,
) -> (Arc<Secondary>, Arc<LocalBlobStore>) {
    let tracking =
        geo_node::cli::open_secondary_db(&dir.join("tracking.sqlite3").display().to_string(), 8)
            .unwrap();
    let store = Arc::new(LocalBlobStore::new(dir.join("secondary-files")).unwrap());
    let mut http = HttpConfig::new(primary_url, creds.clone());
    http.read_timeout = Duration::from_secs(5);
    http.connect_timeout = Duration::from_secs(2);
    let source = Arc::new(HttpSource::new(http));
    // These suites remove primary files on purpose in registries of a few rows; the
    // mass-removal guard, which would refuse most of those marks, has its own suite
    // (tests/tests/safety.rs, examples/widgets/tests/wrong_primary.rs).
    let config = SecondaryConfig::default()
        .idle_sleep(Duration::from_millis(20))
        .max_removal_share(1.0);
    (
        Arc::new(Secondary::new(tracking, source, store.clone(), env, config)),
        store,
    )
}

/// Files on the secondary that differ from the primary's (missing ones included).
pub fn differing(primary: &Primary, secondary: &LocalBlobStore) -> Vec<String> {
    let mut bad = Vec::new();
    for (id, path) in primary.paths() {
        let p = BlobPath::new(&path).unwrap();
        let a = primary.store.checksum(&p).ok().map(|x| x.0);
        let b = secondary.checksum(&p).ok().map(|x| x.0);
        if a.is_none() || a != b {
            bad.push(format!("{id} {path}"));
        }
    }
    bad
}

/// A raw HTTP/1.1 GET (no normalization of the path): (status, body).
pub fn raw_get(addr: &str, path: &str, authorization: Option<&str>) -> (u16, String) {
    let auth: Vec<(&str, &str)> = authorization
        .map(|a| ("Authorization", a))
        .into_iter()
        .collect();
    let (status, _, body) = http(addr, "GET", path, &auth, "");
    (status, body)
}

/// One raw HTTP/1.1 request (the path sent as given): (status, head, body), a chunked body
/// decoded.
pub fn http(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).unwrap();
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_owned()
    };
    (status, head.to_owned(), body)
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((len, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(len.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].strip_prefix("\r\n").unwrap_or(&rest[n..]);
    }
    out
}

/// Every file under `root` (relative paths, sorted), temporary files included.
pub fn files_under(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                dirs.push(e.path());
            } else {
                out.push(e.path().strip_prefix(root).unwrap().display().to_string());
            }
        }
    }
    out.sort();
    out
}
