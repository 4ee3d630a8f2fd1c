//! B2 and B3: direct-mode sync, registry and verification included, vs `rsync -a`.

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::Instant;

use anyhow::{Result, ensure};
use geo_diesel::registry;
use geo_diesel::secondary::SecondaryConfig;

use super::data::{
    bench_path, insert_widgets, open, registry_counts, reset_secondary, size_text, tree_size,
    widget, write_random_file,
};
use super::peers::{lookup_tool, run_timed, tool_peer};
use super::report::{Aim, BenchResult, Figure};
use super::{BenchId, BenchOptions, MIB};

/// B2/B3: direct-mode sync of `n` files of `size` bytes, from pending registry rows to all
/// synced and verified, vs `rsync -a` of the same folder.
pub(super) fn bench_sync(
    opts: &BenchOptions,
    dir: &Path,
    id: BenchId,
    n: usize,
    size: u64,
) -> Result<BenchResult> {
    ensure!(n > 0, "{id} needs at least one file");
    let config = SecondaryConfig::default();
    let sites = open(opts, dir, config.clone())?;
    let d = widget();
    let t = Instant::now();
    let paths: Vec<String> = (0..n).map(|i| bench_path("widgets", i)).collect();
    let root = sites.primary_store.root().to_path_buf();
    let mut buf = vec![0u8; MIB.min(size.max(1)) as usize];
    for (i, p) in paths.iter().enumerate() {
        write_random_file(&root.join(p), size, (id as u64) << 32 | i as u64, &mut buf)?;
    }
    drop(buf);
    insert_widgets(&sites.primary_db, &paths)?;
    let files_written = t.elapsed().as_secs_f64();
    let t = Instant::now();
    sites.verifier.run_until_idle(100_000)?;
    let primary_verification = t.elapsed().as_secs_f64();
    let status = sites.verifier.status()?;
    let checksummed = status
        .iter()
        .find(|(x, _)| x.name == d.name)
        .and_then(|(_, s)| s.checksummed_count)
        .unwrap_or(0);
    ensure!(
        checksummed == n as u64,
        "the primary checksummed {checksummed} of {n} files"
    );

    let ids: Vec<i64> = (1..=n as i64).collect();
    let rsync = lookup_tool("rsync");
    let dst = dir.join("rsync-dst");
    let (mut ours, mut rsync_samples) = (Vec::new(), Vec::new());
    for rep in 0..opts.repeat {
        reset_secondary(&sites)?;
        {
            let mut conn = sites.secondary.tracking().get()?;
            registry::Registry::of(d).upsert_pending(&mut conn, &ids)?;
        }
        let bytes_before = sites
            .secondary
            .counters()
            .bytes
            .load(std::sync::atomic::Ordering::Relaxed);
        let t = Instant::now();
        while sites.secondary.sync_pass()? > 0 {}
        while sites.secondary.verification_pass()? > 0 {}
        ours.push(t.elapsed().as_secs_f64());
        let c = registry_counts(&sites)?;
        ensure!(
            c.synced == n as i64 && c.verified == n as i64,
            "not converged: {} synced, {} verified, {} failed of {n}",
            c.synced,
            c.verified,
            c.failed
        );
        let written = sites
            .secondary
            .counters()
            .bytes
            .load(std::sync::atomic::Ordering::Relaxed)
            - bytes_before;
        ensure!(
            written == n as u64 * size,
            "the secondary wrote {written} bytes, expected {}",
            n as u64 * size
        );

        if let Ok(tool) = &rsync {
            if dst.exists() {
                fs::remove_dir_all(&dst)?;
            }
            let src = format!("{}/", root.display());
            let to = format!("{}/", dst.display());
            let (secs, _) = run_timed(Command::new(&tool.path).arg("-a").arg(&src).arg(&to))?;
            rsync_samples.push(secs);
            if rep == 0 {
                let (files, bytes) = tree_size(&dst)?;
                ensure!(
                    files == n as u64 && bytes == n as u64 * size,
                    "rsync copied {files} files, {bytes} bytes"
                );
            }
        }
    }
    let bytes = (n as u64 * size) as f64;
    let fig = |label: String, samples: Vec<f64>| Figure {
        label,
        samples,
        items: n as f64,
        item_unit: "files",
        bytes: Some(bytes),
    };
    Ok(BenchResult {
        id,
        what: "direct-mode sync, registry and verification included (sync_pass + verification_pass until done)".to_string(),
        data: format!("{n} files × {} = {:.1} MB", size_text(size), bytes / 1e6),
        ours: vec![fig(format!("sync_capacity {}, sync_batch {}", config.sync_capacity, config.sync_batch), ours)],
        peers: vec![tool_peer(rsync, |t| fig(format!("{} -a src/ dst/", t.name), rsync_samples))],
        aim: Aim::NotSlowerThan("rsync".to_string()),
        notes: vec![
            format!("setup not timed: files and rows {files_written:.1} s, primary verification {primary_verification:.1} s"),
            "checked after each run: every registry row synced and verified, every byte written".to_string(),
        ],
    })
}
