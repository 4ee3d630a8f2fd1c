//! `--blob-store` / `--blob-dir`: where a site's blobs are, for `primary`, `secondary` and
//! `backfill`.

use std::path::PathBuf;

use anyhow::Result;

use crate::store::{BlobStoreSpec, SiteStore};

/// The site's blob store: `--blob-store` (`s3://bucket/prefix`, `file:///path` or a path) or
/// `--blob-dir` (a directory), exactly one of them.
#[derive(Debug, Clone, clap::Args)]
#[group(required = true, multiple = false)]
#[non_exhaustive]
pub struct StoreArgs {
    /// The blob store directory.
    #[arg(long, env = "GEO_BLOB_DIR")]
    pub blob_dir: Option<PathBuf>,
    /// The blob store: `s3://bucket/prefix` (endpoint, region and credentials from AWS_*:
    /// AWS_ENDPOINT_URL, AWS_REGION, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_ALLOW_HTTP
    /// for a plain-http endpoint), or a local directory (`file:///path` or a path).
    #[arg(long, env = "GEO_BLOB_STORE")]
    pub blob_store: Option<BlobStoreSpec>,
}

impl StoreArgs {
    /// What the flags name.
    pub fn spec(&self) -> BlobStoreSpec {
        match (&self.blob_store, &self.blob_dir) {
            (Some(spec), _) => spec.clone(),
            (None, Some(dir)) => BlobStoreSpec::Local(dir.clone()),
            // clap's group requires one of them.
            (None, None) => unreachable!("--blob-store or --blob-dir is required"),
        }
    }

    /// Opens the store.
    pub fn open(&self) -> Result<SiteStore> {
        self.spec().open()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cmd {
        #[command(flatten)]
        s: StoreArgs,
    }

    #[test]
    fn one_of_the_two_flags() {
        let s3 = Cmd::try_parse_from(["x", "--blob-store", "s3://b/p"])
            .unwrap()
            .s;
        assert_eq!(
            s3.spec(),
            BlobStoreSpec::S3 {
                bucket: "b".into(),
                prefix: "p".into()
            }
        );
        let dir = Cmd::try_parse_from(["x", "--blob-dir", "files"]).unwrap().s;
        assert_eq!(dir.spec(), BlobStoreSpec::Local("files".into()));
        assert!(Cmd::try_parse_from(["x", "--blob-dir", "a", "--blob-store", "s3://b"]).is_err());
        let e = Cmd::try_parse_from(["x", "--blob-store", "gs://b"]).unwrap_err();
        assert!(
            e.to_string().contains("unsupported blob store scheme"),
            "{e}"
        );
    }
}
