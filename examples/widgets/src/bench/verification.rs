//! B1: primary verification of large files ([`PrimaryVerifier::verification_pass`]) vs `b3sum`
//! and `sha256sum`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use super::data::ident;
use anyhow::{Context, Result, anyhow, ensure};
use geo_diesel::geo_core::checksum::Checksum;
use geo_diesel::geo_core::clock::Env;
use geo_diesel::secondary::SecondaryConfig;
use geo_diesel::verifier::{PrimaryConfig, PrimaryVerifier};

use super::data::{exec, insert_widgets, open, size_text, widget, write_random_file};
use super::peers::{lookup_tool, run_timed, tool_peer};
use super::report::{Aim, BenchResult, Figure};
use super::{BenchId, BenchOptions, MIB};
use crate::demo::Sites;

/// B1: `PrimaryVerifier::verification_pass` over N large files vs `b3sum` and `sha256sum`.
pub(super) fn bench_primary_verification(opts: &BenchOptions, dir: &Path) -> Result<BenchResult> {
    let (n, size) = (opts.sizes.b1_files, opts.sizes.b1_file_bytes);
    ensure!(n > 0 && size > 0, "B1 needs at least one non-empty file");
    let sites = open(opts, dir, SecondaryConfig::default())?;
    let d = widget();
    let t = Instant::now();
    let paths: Vec<String> = (0..n).map(|i| format!("b1/{i:03}.bin")).collect();
    let mut buf = vec![0u8; MIB.min(size) as usize];
    let root = sites.primary_store.root().to_path_buf();
    for (i, p) in paths.iter().enumerate() {
        write_random_file(&root.join(p), size, 0xb1_0000 + i as u64, &mut buf)?;
    }
    drop(buf);
    insert_widgets(&sites.primary_db, &paths)?;
    let setup = t.elapsed().as_secs_f64();
    let files: Vec<PathBuf> = paths.iter().map(|p| root.join(p)).collect();

    let config = PrimaryConfig::default()
        .verification_batch(n as i64)
        .verification_threads(opts.threads);
    let verifier = PrimaryVerifier::new(
        sites.primary_db.clone(),
        sites.primary_store.clone(),
        Env::system(),
        config,
    );
    let (states, _) = d
        .tables
        .verification
        .ok_or_else(|| anyhow!("widgets must keep verification state"))?;
    let reset = format!(
        "UPDATE {} SET verification_state = 0, verification_checksum = NULL, verified_at = NULL, verification_started_at = NULL",
        ident(states)
    );

    let b3 = lookup_tool("b3sum");
    let sha = lookup_tool("sha256sum");
    let (mut ours, mut b3_samples, mut b3_one_samples, mut sha_samples) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut notes = vec![format!(
        "setup (write files, insert rows) {setup:.1} s, not timed"
    )];
    for rep in 0..opts.repeat {
        exec(&sites.primary_db, &reset)?;
        let before = verifier
            .checksummed
            .load(std::sync::atomic::Ordering::Relaxed);
        let t = Instant::now();
        let processed = verifier.verification_pass()?;
        ours.push(t.elapsed().as_secs_f64());
        let done = verifier
            .checksummed
            .load(std::sync::atomic::Ordering::Relaxed)
            - before;
        ensure!(
            processed == n && done == n as u64,
            "verification pass checksummed {done} of {n} files"
        );

        if let Ok(tool) = &b3 {
            let (secs, out) = run_timed(
                Command::new(&tool.path)
                    .arg("--num-threads")
                    .arg(opts.threads.to_string())
                    .args(&files),
            )?;
            b3_samples.push(secs);
            if rep == 0 {
                check_against_b3sum(&sites, &root, &paths, &out)?;
                notes.push("our checksums equal b3sum's for every file".to_string());
            }
            if opts.threads > 1 {
                let (secs, _) = run_timed(
                    Command::new(&tool.path)
                        .args(["--num-threads", "1"])
                        .args(&files),
                )?;
                b3_one_samples.push(secs);
            }
        }
        if let Ok(tool) = &sha {
            let (secs, _) = run_timed(Command::new(&tool.path).args(&files))?;
            sha_samples.push(secs);
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
    let mut peers = vec![tool_peer(b3.clone(), |t| {
        fig(
            format!("{} --num-threads {}", t.name, opts.threads),
            b3_samples,
        )
    })];
    if opts.threads > 1 {
        // One core's worth of blake3 in this run: what the machine gives a single thread now.
        peers.push(tool_peer(b3, |t| {
            fig(format!("{} --num-threads 1", t.name), b3_one_samples)
        }));
    }
    peers.push(tool_peer(sha, |t| fig(t.name.clone(), sha_samples)));
    Ok(BenchResult {
        id: BenchId::B1,
        what: "primary verification (PrimaryVerifier::verification_pass)".to_string(),
        data: format!("{n} files × {} = {:.2} GB", size_text(size), bytes / 1e9),
        ours: vec![fig(
            format!("verification_pass, {} threads", opts.threads),
            ours,
        )],
        peers,
        aim: Aim::MinGbPerSec(4.0),
        notes,
    })
}

/// Compares the checksums the verifier stored with `b3sum`'s output (`<hex>  <path>` lines).
fn check_against_b3sum(sites: &Sites, root: &Path, paths: &[String], out: &[u8]) -> Result<()> {
    let text = String::from_utf8_lossy(out);
    let by_path: BTreeMap<&str, &str> = text
        .lines()
        .filter_map(|l| l.split_once("  "))
        .map(|(h, p)| (p, h))
        .collect();
    let ids: Vec<i64> = (1..=paths.len() as i64).collect();
    let mut conn = sites.primary_db.get()?;
    let sums = geo_diesel::primary::primary_checksums(&mut conn, widget(), &ids)?;
    ensure!(
        sums.len() == paths.len(),
        "{} checksums stored for {} files",
        sums.len(),
        paths.len()
    );
    for s in sums {
        let path = root.join(&paths[(s.id - 1) as usize]);
        let ours = s
            .checksum
            .as_deref()
            .ok_or_else(|| anyhow!("widget {} has no checksum", s.id))?;
        let ours = Checksum::from_bytes(ours)
            .with_context(|| format!("widget {} has a malformed checksum", s.id))?
            .to_hex();
        let theirs = by_path
            .get(path.to_string_lossy().as_ref())
            .ok_or_else(|| anyhow!("b3sum printed nothing for {}", path.display()))?;
        ensure!(
            ours == *theirs,
            "checksum of {} differs: ours {ours}, b3sum {theirs}",
            path.display()
        );
    }
    Ok(())
}
