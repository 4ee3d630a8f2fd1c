//! Runs every benchmark in quick mode on SQLite and checks the report's shape: every figure is a
//! positive finite number, and every peer line is either a measured figure or "missing".

use widgets::bench::{self, BenchId, BenchOptions, PeerKind, PeerOutcome};

fn positive(what: &str, x: f64) {
    assert!(x.is_finite() && x > 0.0, "{what} is {x}");
}

#[test]
fn quick_bench_reports_positive_figures_and_peers() {
    let report = bench::run(&BenchOptions::quick()).expect("the quick bench runs");
    let ids: Vec<BenchId> = report.results.iter().map(|r| r.id).collect();
    assert_eq!(ids, BenchId::ALL.to_vec());
    for r in &report.results {
        assert!(!r.ours.is_empty(), "{} has no figure of ours", r.id);
        assert!(!r.peers.is_empty(), "{} has no peer", r.id);
        for f in &r.ours {
            assert_eq!(
                f.samples.len(),
                1,
                "{} {}: one run in quick mode",
                r.id,
                f.label
            );
            for s in &f.samples {
                positive(&format!("{} {} run", r.id, f.label), *s);
            }
            positive(&format!("{} {} items/s", r.id, f.label), f.items_per_sec());
            if let Some(g) = f.gb_per_sec() {
                positive(&format!("{} {} GB/s", r.id, f.label), g);
            }
        }
        for p in &r.peers {
            match &p.outcome {
                PeerOutcome::Measured(f) => {
                    positive(&format!("{} {} median", r.id, p.name), f.median());
                    for ratio in p.ratios(&r.ours).expect("measured peers have ratios") {
                        positive(&format!("{} {} ratio", r.id, p.name), ratio);
                    }
                }
                PeerOutcome::Missing { program, install } => {
                    assert_eq!(p.kind, PeerKind::Tool, "only tools can be missing");
                    assert!(
                        bench::find_program(program).is_none(),
                        "{program} is on PATH but reported missing"
                    );
                    assert!(!install.is_empty());
                }
            }
        }
    }
    // Every tool the benchmarks compare with appears, measured or missing.
    let tools: Vec<&str> = report
        .results
        .iter()
        .flat_map(|r| r.peers.iter())
        .filter(|p| p.kind == PeerKind::Tool)
        .map(|p| p.name.split_whitespace().next().unwrap_or(""))
        .collect();
    for t in ["b3sum", "sha256sum", "rsync"] {
        assert!(tools.contains(&t), "{t} is not among the peers: {tools:?}");
    }
    let text = bench::render(&report);
    for r in &report.results {
        assert!(
            text.contains(&format!("\n{}  ", r.id)),
            "the text report lacks {}",
            r.id
        );
    }
    for line in text.lines().filter(|l| l.trim_start().starts_with("peer")) {
        assert!(
            line.contains("ratio peer/ours") || line.contains("missing (install with"),
            "bad peer line: {line}"
        );
    }
    let json = bench::render_json(&report);
    assert_eq!(
        json["results"].as_array().map(Vec::len),
        Some(BenchId::ALL.len())
    );
}
