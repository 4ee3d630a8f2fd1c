//! Streamed `GET /api/geo/retrieve/{name}/{id}` for [`HttpSource`], ranges included, with the
//! checksum's MAC checked before anything is trusted.

use super::transport::body_reader;
use crate::api;
use crate::auth::RequestData;
use crate::auth::mac::{MacError, UnauthenticChecksum};
use geo_diesel::geo_core::checksum::Checksum;
use geo_diesel::geo_core::source::{BlobStream, RangedBlobStream, SourceError};
use reqwest::header;

use super::source::HttpSource;

impl HttpSource {
    /// `GET /api/geo/retrieve/{name}/{id}`, streamed. The answer must carry the checksum and
    /// its MAC: the blob store compares the bytes with that checksum before renaming, so a
    /// checksum the secondary could not authenticate would let anyone on the path choose them.
    pub(super) fn retrieve(&self, name: &str, id: i64) -> Result<BlobStream, SourceError> {
        Ok(self.retrieve_from(name, id, 0)?.stream)
    }

    /// `GET /api/geo/retrieve/{name}/{id}` with `Range: bytes=<offset>-` (none for 0),
    /// streamed: a `206` answer starts at `offset` (its `Content-Range` must say so); a `200`
    /// (a primary without range support) at 0; a `416` (the blob is no longer than `offset`:
    /// its content changed) is asked again whole.
    pub(super) fn retrieve_from(
        &self,
        name: &str,
        id: i64,
        offset: u64,
    ) -> Result<RangedBlobStream, SourceError> {
        let path = format!("/api/geo/retrieve/{name}/{id}");
        let what = format!("GET {path}");
        let resp = self
            .client
            .get_from(&path, &RequestData::blob(name, id), offset)?;
        let start = match resp.status() {
            reqwest::StatusCode::RANGE_NOT_SATISFIABLE => {
                return self.retrieve_from(name, id, 0);
            }
            reqwest::StatusCode::PARTIAL_CONTENT => {
                let start = resp
                    .headers()
                    .get(header::CONTENT_RANGE)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.strip_prefix("bytes "))
                    .and_then(|v| v.split_once('-'))
                    .and_then(|(s, _)| s.trim().parse::<u64>().ok());
                if start != Some(offset) {
                    return Err(SourceError::other(
                        what,
                        format!("asked for bytes from {offset}, got Content-Range {start:?}"),
                    ));
                }
                offset
            }
            _ => 0,
        };
        let header = |h: &str| resp.headers().get(h).and_then(|v| v.to_str().ok());
        let checksum = match resp.headers().get(api::CHECKSUM_HEADER) {
            None => {
                let e = UnauthenticChecksum {
                    replicable: name.to_owned(),
                    id,
                    reason: MacError::Missing,
                };
                self.refused(&what, &e);
                return Err(SourceError::other(what, e));
            }
            Some(v) => v
                .to_str()
                .ok()
                .and_then(|s| Checksum::from_hex(s).ok())
                .ok_or_else(|| SourceError::other(what.clone(), "bad X-Geo-Checksum header"))?,
        };
        self.authentic(&what, header(api::CHECKSUM_MAC_HEADER), name, id, &checksum)
            .map_err(|e| SourceError::other(what.clone(), e))?;
        let size = resp.content_length();
        Ok(RangedBlobStream {
            stream: BlobStream {
                reader: Box::new(body_reader(resp)),
                size,
                checksum: Some(checksum),
            },
            start,
        })
    }
}
