//! Where a site keeps its blobs: a local directory ([`LocalBlobStore`]) or an S3-compatible
//! bucket ([`S3BlobStore`]), named on the command line by `--blob-store` ([`BlobStoreSpec`]:
//! `s3://bucket/prefix`, `file:///path` or a plain path) or by `--blob-dir`.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use geo_diesel::geo_core::blob_store::{BlobStore, LocalBlobStore};

mod s3;

pub use s3::{MIN_PART_SIZE, S3BlobStore, S3Error, S3Options};

/// A blob store as the command line names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BlobStoreSpec {
    /// A local directory (`/path`, `relative/path`, `file:///path`).
    Local(PathBuf),
    /// Objects in an S3-compatible bucket under a key prefix (`s3://bucket/prefix`); endpoint,
    /// region and credentials from the `AWS_*` environment variables.
    S3 {
        /// The bucket.
        bucket: String,
        /// The key prefix, without leading or trailing `/` (may be empty).
        prefix: String,
    },
}

impl FromStr for BlobStoreSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Some(rest) = s.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(format!("{s:?}: no bucket (expected s3://bucket/prefix)"));
            }
            let prefix = prefix.trim_matches('/');
            if prefix.split('/').any(|p| p == "." || p == "..")
                || (!prefix.is_empty() && prefix.split('/').any(str::is_empty))
            {
                return Err(format!(
                    "{s:?}: the prefix may not have empty, `.` or `..` segments"
                ));
            }
            return Ok(BlobStoreSpec::S3 {
                bucket: bucket.to_owned(),
                prefix: prefix.to_owned(),
            });
        }
        if let Some(path) = s.strip_prefix("file://") {
            if path.is_empty() {
                return Err(format!("{s:?}: no path"));
            }
            return Ok(BlobStoreSpec::Local(PathBuf::from(path)));
        }
        if let Some((scheme, _)) = s.split_once("://") {
            return Err(format!(
                "{s:?}: unsupported blob store scheme {scheme:?} (use s3://bucket/prefix, file:///path or a path)"
            ));
        }
        if s.is_empty() {
            return Err("the blob store is empty".into());
        }
        Ok(BlobStoreSpec::Local(PathBuf::from(s)))
    }
}

impl fmt::Display for BlobStoreSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BlobStoreSpec::Local(p) => write!(f, "{}", p.display()),
            BlobStoreSpec::S3 { bucket, prefix } if prefix.is_empty() => write!(f, "s3://{bucket}"),
            BlobStoreSpec::S3 { bucket, prefix } => write!(f, "s3://{bucket}/{prefix}"),
        }
    }
}

impl BlobStoreSpec {
    /// Opens the store (an S3 store reads the `AWS_*` variables).
    pub fn open(&self) -> Result<SiteStore> {
        match self {
            BlobStoreSpec::Local(dir) => Ok(SiteStore::Local(Arc::new(
                LocalBlobStore::new(dir)
                    .with_context(|| format!("opening the blob store {}", dir.display()))?,
            ))),
            BlobStoreSpec::S3 { bucket, prefix } => Ok(SiteStore::S3(Arc::new(
                S3BlobStore::from_env(bucket, prefix, S3Options::default())
                    .with_context(|| format!("opening the blob store {self}"))?,
            ))),
        }
    }
}

/// An opened blob store, of either kind.
#[derive(Debug, Clone)]
pub enum SiteStore {
    /// A local directory.
    Local(Arc<LocalBlobStore>),
    /// An S3-compatible bucket.
    S3(Arc<S3BlobStore>),
}

impl SiteStore {
    /// The store behind the trait, for the primary's service and the secondary.
    pub fn shared(&self) -> Arc<dyn BlobStore> {
        match self {
            SiteStore::Local(s) => Arc::clone(s) as Arc<dyn BlobStore>,
            SiteStore::S3(s) => Arc::clone(s) as Arc<dyn BlobStore>,
        }
    }

    /// Removes temporary files of interrupted downloads untouched for `older_than` (a local
    /// directory only: an object store keeps no temporary object at any key).
    pub fn remove_stale_temp_files(&self, older_than: Duration) -> Result<usize> {
        match self {
            SiteStore::Local(s) => Ok(s.remove_stale_temp_files(older_than)?),
            SiteStore::S3(_) => Ok(0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Result<BlobStoreSpec, String> {
        s.parse()
    }

    #[test]
    fn parses_the_three_forms() {
        let s3 = |b: &str, pre: &str| BlobStoreSpec::S3 {
            bucket: b.into(),
            prefix: pre.into(),
        };
        assert_eq!(p("s3://b/geo/files/").unwrap(), s3("b", "geo/files"));
        assert_eq!(p("s3://b").unwrap(), s3("b", ""));
        assert_eq!(p("s3://b/").unwrap(), s3("b", ""));
        assert_eq!(
            p("file:///srv/files").unwrap(),
            BlobStoreSpec::Local("/srv/files".into())
        );
        assert_eq!(p("files").unwrap(), BlobStoreSpec::Local("files".into()));
        assert_eq!(
            p("s3://b/geo/files").unwrap().to_string(),
            "s3://b/geo/files"
        );
    }

    #[test]
    fn refuses_what_it_cannot_open() {
        for bad in [
            "s3://",
            "s3:///x",
            "s3://b/a//c",
            "s3://b/../x",
            "gs://b/x",
            "file://",
            "",
        ] {
            assert!(p(bad).is_err(), "{bad:?} accepted");
        }
        assert!(
            p("gs://b")
                .unwrap_err()
                .contains("unsupported blob store scheme")
        );
    }
}
