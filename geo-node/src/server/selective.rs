//! The `partitions=` filter of `GET /api/geo/ids/{replicable}` (selective sync,
//! [`geo_diesel::geo_core::selective`]).

use std::collections::BTreeSet;

use super::ApiError;
use crate::api;

/// The partition keys of a `partitions=3,7,12` parameter: `None` when absent; `400` when the
/// list is empty, malformed or longer than [`api::MAX_IDS`] (an empty list would be ambiguous:
/// a secondary that selects everything sends no filter).
pub(super) fn partitions(raw: Option<&str>) -> Result<Option<BTreeSet<i64>>, ApiError> {
    let Some(raw) = raw else {
        return Ok(None);
    };
    let keys =
        api::parse_ids(raw).map_err(|e| ApiError::bad_request(format!("partitions: {e}")))?;
    if keys.is_empty() {
        return Err(ApiError::bad_request(
            "partitions: list at least one partition key, or leave the parameter out",
        ));
    }
    Ok(Some(keys.into_iter().collect()))
}

#[cfg(test)]
mod tests {
    use super::partitions;

    #[test]
    fn parses_refuses_and_defaults() {
        assert_eq!(partitions(None).unwrap(), None);
        let keys = partitions(Some("12,3,3")).unwrap().unwrap();
        assert_eq!(keys.into_iter().collect::<Vec<_>>(), vec![3, 12]);
        assert!(partitions(Some("")).is_err());
        assert!(partitions(Some("3,x")).is_err());
        let many = (0..=crate::api::MAX_IDS as i64)
            .map(|k| k.to_string())
            .collect::<Vec<_>>()
            .join(",");
        assert!(partitions(Some(&many)).is_err());
    }
}
