//! `--selective-sync`: which partitions a secondary replicates ([`geo_diesel::geo_core::selective`]).

use geo_diesel::geo_core::Selection;
use geo_diesel::secondary::SecondaryConfig;

/// The selective-sync flag of `secondary` and `backfill`.
#[derive(Debug, Clone, Default, clap::Args)]
#[non_exhaustive]
pub struct SelectiveArgs {
    /// Replicate only the records whose `#[replicable(partition)]` key is one of these
    /// (comma-separated integers, e.g. `3,7,12`), for every type with a partition field; types
    /// without one are replicated whole. Empty or absent: everything. Restarting with another
    /// list adds the newly selected records and removes the deselected ones with their files
    /// (a removal beyond `--max-removal-share` waits for `backfill --allow-mass-removal`).
    #[arg(long, env = "GEO_SELECTIVE_SYNC", value_name = "KEYS")]
    pub selective_sync: Option<Selection>,
}

impl SelectiveArgs {
    /// `config` with the selection set.
    pub fn apply(&self, config: SecondaryConfig) -> SecondaryConfig {
        config.selective_sync(self.selective_sync.clone().unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Sec {
        #[command(flatten)]
        s: SelectiveArgs,
    }

    fn parse(args: &[&str]) -> Result<Selection, String> {
        Sec::try_parse_from(args)
            .map(|s| s.s.apply(SecondaryConfig::default()).selective_sync)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn the_flag_sets_the_selection() {
        assert!(parse(&["x"]).unwrap().is_all());
        assert!(parse(&["x", "--selective-sync="]).unwrap().is_all());
        assert_eq!(
            parse(&["x", "--selective-sync", "12,3,7"]).unwrap(),
            Selection::only([3, 7, 12])
        );
        let e = parse(&["x", "--selective-sync=3,seven"]).unwrap_err();
        assert!(
            e.contains("--selective-sync") && e.contains("`seven`"),
            "{e}"
        );
    }
}
