//! A real S3-compatible server process for tests and the bench: `s3s-fs` (located, or built
//! once, by `scripts/s3-test-server path`) on a free loopback port, serving a temporary
//! directory, with an access key and secret of its own (SigV4). No server, no test: it panics
//! with what is missing, it never skips.

#![allow(dead_code, missing_docs)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use geo_node::store::{S3BlobStore, S3Options};
use object_store::aws::AmazonS3Builder;

/// A running s3s-fs; killed on drop.
pub struct S3Server {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
    /// The directory it serves: one sub-directory per bucket, multipart parts as
    /// `.upload_id-*` files at its top.
    pub root: PathBuf,
    pub access_key: String,
    pub secret_key: String,
    _dir: tempfile::TempDir,
}

/// The s3s-fs binary: `scripts/s3-test-server path` (which installs it when missing).
pub fn binary() -> PathBuf {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/s3-test-server");
    let out = Command::new("bash")
        .arg(&script)
        .arg("path")
        .stderr(Stdio::inherit())
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", script.display()));
    assert!(
        out.status.success(),
        "{} path failed ({}): the S3 tests need s3s-fs (cargo install s3s-fs --version 0.14.1 --locked --features binary)",
        script.display(),
        out.status
    );
    let path = String::from_utf8(out.stdout).unwrap();
    PathBuf::from(
        path.lines()
            .last()
            .expect("the script printed a path")
            .trim(),
    )
}

impl S3Server {
    /// Starts s3s-fs on 127.0.0.1 (a port of its choosing) with fresh credentials and the
    /// buckets `buckets`.
    pub fn start(buckets: &[&str]) -> S3Server {
        let bin = binary();
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("s3");
        std::fs::create_dir_all(&root).unwrap();
        for b in buckets {
            // s3s-fs keeps a bucket as a directory of its root.
            std::fs::create_dir_all(root.join(b)).unwrap();
        }
        let access_key = format!("geo-test-{}", std::process::id());
        let secret_key = hex::encode(rand::random::<[u8; 20]>());
        let mut child = Command::new(&bin)
            .args(["--host", "127.0.0.1", "--port", "0"])
            .args(["--access-key", &access_key, "--secret-key", &secret_key])
            .arg(&root)
            .env("RUST_LOG", "s3s_fs=info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", bin.display()));
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(at) = line.find("server is running at http://")
                    && let Some(tx) = tx.take()
                {
                    let url = line[at + "server is running at ".len()..].trim().to_owned();
                    let _ = tx.send(url);
                }
                // Keep draining so the server never blocks on a full pipe.
            }
        });
        let endpoint = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(url) => url,
            Err(_) => {
                let _ = child.kill();
                panic!("{} did not report its address within 30 s", bin.display());
            }
        };
        S3Server {
            child,
            endpoint,
            root,
            access_key,
            secret_key,
            _dir: dir,
        }
    }

    /// The `AWS_*` variables a site process needs to reach this server.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT_URL", self.endpoint.clone()),
            ("AWS_REGION", "us-east-1".into()),
            ("AWS_ACCESS_KEY_ID", self.access_key.clone()),
            ("AWS_SECRET_ACCESS_KEY", self.secret_key.clone()),
            ("AWS_ALLOW_HTTP", "true".into()),
        ]
    }

    /// A client builder for this server (what `from_env` builds from [`S3Server::env`]).
    pub fn builder(&self) -> AmazonS3Builder {
        AmazonS3Builder::new()
            .with_endpoint(&self.endpoint)
            .with_region("us-east-1")
            .with_access_key_id(&self.access_key)
            .with_secret_access_key(&self.secret_key)
            .with_allow_http(true)
    }

    /// A blob store on `bucket` under `prefix`.
    pub fn store(&self, bucket: &str, prefix: &str, options: S3Options) -> S3BlobStore {
        S3BlobStore::with_builder(self.builder(), bucket, prefix, options).unwrap()
    }

    /// Pending multipart uploads: the part files s3s-fs keeps at its root until an upload is
    /// completed or aborted (it does not implement ListMultipartUploads).
    pub fn pending_parts(&self) -> Vec<String> {
        let mut out: Vec<String> = std::fs::read_dir(&self.root)
            .unwrap()
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(".upload_id-"))
            .collect();
        out.sort();
        out
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
