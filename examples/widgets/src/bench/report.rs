//! What a bench run reports: figures, peers, aims, and the report as text or JSON.

use std::fmt;
use std::path::PathBuf;

use geo_diesel::geo_core::Backend;

use super::BenchId;
use super::peers::median;

/// One timed thing: its runs, and how much work one run does.
#[derive(Debug, Clone, PartialEq)]
pub struct Figure {
    /// What ran.
    pub label: String,
    /// Seconds of each run.
    pub samples: Vec<f64>,
    /// Work items per run (files, rows, events).
    pub items: f64,
    /// The unit of `items`.
    pub item_unit: &'static str,
    /// Bytes per run, when the work is bytes.
    pub bytes: Option<f64>,
}

impl Figure {
    /// The median of the runs, in seconds.
    pub fn median(&self) -> f64 {
        median(&self.samples)
    }

    /// Items per second at the median.
    pub fn items_per_sec(&self) -> f64 {
        self.items / self.median()
    }

    /// GB/s (10⁹ bytes) at the median, when the work is bytes.
    pub fn gb_per_sec(&self) -> Option<f64> {
        self.bytes.map(|b| b / 1e9 / self.median())
    }
}

/// What a comparison line is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerKind {
    /// Another tool doing the same job (b3sum, sha256sum, rsync).
    Tool,
    /// The least the database must do for the same result, measured on the same tables: a lower
    /// bound for our time, not a competitor.
    Floor,
}

/// The outcome of a comparison line.
#[derive(Debug, Clone, PartialEq)]
pub enum PeerOutcome {
    /// Measured in this run.
    Measured(Figure),
    /// The tool is not installed.
    Missing {
        /// The program looked up on `PATH`.
        program: String,
        /// How to install it.
        install: String,
    },
}

/// A comparison line.
#[derive(Debug, Clone, PartialEq)]
pub struct Peer {
    /// Tool or floor.
    pub kind: PeerKind,
    /// Name (`b3sum 1.8.2`, `rsync 3.2.7`, …).
    pub name: String,
    /// The figure, or why there is none.
    pub outcome: PeerOutcome,
}

impl Peer {
    /// `peer median / our median` for each of `ours` (> 1: we are faster). `None` when missing.
    pub fn ratios(&self, ours: &[Figure]) -> Option<Vec<f64>> {
        match &self.outcome {
            PeerOutcome::Measured(f) => {
                Some(ours.iter().map(|o| f.median() / o.median()).collect())
            }
            PeerOutcome::Missing { .. } => None,
        }
    }
}

/// The target a benchmark aims for.
#[derive(Debug, Clone, PartialEq)]
pub enum Aim {
    /// At least this many GB/s.
    MinGbPerSec(f64),
    /// At least this many items per second.
    MinItemsPerSec(f64),
    /// At most this many seconds.
    MaxSeconds(f64),
    /// No slower than the named peer.
    NotSlowerThan(String),
}

impl fmt::Display for Aim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Aim::MinGbPerSec(x) => write!(f, "≥ {x} GB/s"),
            Aim::MinItemsPerSec(x) => write!(f, "≥ {} per second", human(*x)),
            Aim::MaxSeconds(x) => write!(f, "≤ {x} s"),
            Aim::NotSlowerThan(p) => write!(f, "no slower than {p}"),
        }
    }
}

/// The result of one benchmark.
#[derive(Debug, Clone, PartialEq)]
pub struct BenchResult {
    /// Which.
    pub id: BenchId,
    /// What is measured.
    pub what: String,
    /// The data.
    pub data: String,
    /// Our figures (several when a tunable is tried at more than one value).
    pub ours: Vec<Figure>,
    /// Peers and floors.
    pub peers: Vec<Peer>,
    /// The target.
    pub aim: Aim,
    /// Remarks (setup times, checks made).
    pub notes: Vec<String>,
}

impl BenchResult {
    /// Whether the best of our figures meets the aim; `None` when it cannot be judged (the peer
    /// is missing).
    pub fn aim_met(&self) -> Option<bool> {
        let best = self
            .ours
            .iter()
            .min_by(|a, b| a.median().total_cmp(&b.median()))?;
        match &self.aim {
            Aim::MinGbPerSec(x) => best.gb_per_sec().map(|g| g >= *x),
            Aim::MinItemsPerSec(x) => Some(best.items_per_sec() >= *x),
            Aim::MaxSeconds(x) => Some(best.median() <= *x),
            Aim::NotSlowerThan(name) => {
                let peer = self
                    .peers
                    .iter()
                    .find(|p| p.name.starts_with(name.as_str()))?;
                match &peer.outcome {
                    PeerOutcome::Measured(f) => Some(best.median() <= f.median()),
                    PeerOutcome::Missing { .. } => None,
                }
            }
        }
    }
}

/// Everything a bench run measured.
#[derive(Debug, Clone)]
pub struct BenchReport {
    /// The folder the data went to.
    pub dir: PathBuf,
    /// Its file system type (`tmpfs`, `ext4`, …) when known.
    pub fs_type: Option<String>,
    /// The database backend.
    pub backend: Backend,
    /// Cores available.
    pub cores: usize,
    /// Repetitions per measurement.
    pub repeat: usize,
    /// Quick mode.
    pub quick: bool,
    /// One entry per benchmark run.
    pub results: Vec<BenchResult>,
}

/// `1.23k`, `4.56M`: a number with a metric suffix.
pub fn human(x: f64) -> String {
    let a = x.abs();
    if a >= 1e9 {
        format!("{:.2}G", x / 1e9)
    } else if a >= 1e6 {
        format!("{:.2}M", x / 1e6)
    } else if a >= 1e4 {
        format!("{:.1}k", x / 1e3)
    } else if a >= 100.0 {
        format!("{x:.0}")
    } else {
        format!("{x:.2}")
    }
}

fn secs_text(s: f64) -> String {
    if s < 0.1 {
        format!("{:.1} ms", s * 1e3)
    } else {
        format!("{s:.3} s")
    }
}

fn throughput_text(f: &Figure) -> String {
    let items = format!("{} {}/s", human(f.items_per_sec()), f.item_unit);
    match f.gb_per_sec() {
        Some(g) => format!("{g:.2} GB/s, {items}"),
        None => items,
    }
}

/// The header line of a report.
pub fn render_header(report: &BenchReport) -> String {
    format!(
        "Geo for Rust benchmarks: {} backend, data in {} ({}), {} cores, median of {} run{} (ours and peers interleaved){}\n",
        report.backend,
        report.dir.display(),
        report.fs_type.as_deref().unwrap_or("file system unknown"),
        report.cores,
        report.repeat,
        if report.repeat == 1 { "" } else { "s" },
        if report.quick {
            "; QUICK mode: small sizes, figures are not measurements"
        } else {
            ""
        },
    )
}

/// One benchmark as text: what, data, our time and throughput, each peer's time and ratio.
pub fn render_result(r: &BenchResult, quick: bool) -> String {
    let mut out = format!("\n{}  {}\n    data: {}\n", r.id, r.what, r.data);
    let width = r
        .ours
        .iter()
        .map(|f| f.label.chars().count())
        .chain(r.peers.iter().map(|p| p.name.chars().count()))
        .max()
        .unwrap_or(0);
    for f in &r.ours {
        let runs = f
            .samples
            .iter()
            .map(|s| secs_text(*s))
            .collect::<Vec<_>>()
            .join(", ");
        out.push_str(&format!(
            "    ours   {:<width$}  {:>10}  {}   [runs: {runs}]\n",
            f.label,
            secs_text(f.median()),
            throughput_text(f)
        ));
    }
    for p in &r.peers {
        let kind = match p.kind {
            PeerKind::Tool => "peer ",
            PeerKind::Floor => "floor",
        };
        match &p.outcome {
            PeerOutcome::Measured(f) => {
                let ratios = p.ratios(&r.ours).unwrap_or_default();
                let ratio_text = ratios
                    .iter()
                    .map(|x| format!("{x:.2}"))
                    .collect::<Vec<_>>()
                    .join(" / ");
                out.push_str(&format!(
                    "    {kind}  {:<width$}  {:>10}  {}   ratio peer/ours {ratio_text}\n",
                    p.name,
                    secs_text(f.median()),
                    throughput_text(f)
                ));
            }
            PeerOutcome::Missing { program, install } => {
                out.push_str(&format!("    {kind}  {:<width$}  missing (install with `{install}`; {program} is not on PATH)\n", p.name));
            }
        }
    }
    let verdict = if quick {
        "not judged in quick mode".to_string()
    } else {
        match r.aim_met() {
            Some(true) => "met".to_string(),
            Some(false) => "NOT met".to_string(),
            None => "cannot be judged (peer missing)".to_string(),
        }
    };
    out.push_str(&format!("    aim    {}: {verdict}\n", r.aim));
    for n in &r.notes {
        out.push_str(&format!("    note   {n}\n"));
    }
    out
}

/// The whole report as text.
pub fn render(report: &BenchReport) -> String {
    let mut out = render_header(report);
    for r in &report.results {
        out.push_str(&render_result(r, report.quick));
    }
    out
}

fn figure_json(f: &Figure) -> serde_json::Value {
    serde_json::json!({
        "label": f.label,
        "samples_seconds": f.samples,
        "median_seconds": f.median(),
        "items": f.items,
        "item_unit": f.item_unit,
        "items_per_second": f.items_per_sec(),
        "gb_per_second": f.gb_per_sec(),
    })
}

/// The whole report as JSON (`peers[].ratios` are peer/ours, one per entry of `ours`).
pub fn render_json(report: &BenchReport) -> serde_json::Value {
    let results: Vec<serde_json::Value> = report
        .results
        .iter()
        .map(|r| {
            let peers: Vec<serde_json::Value> = r
                .peers
                .iter()
                .map(|p| {
                    let kind = match p.kind {
                        PeerKind::Tool => "tool",
                        PeerKind::Floor => "floor",
                    };
                    match &p.outcome {
                        PeerOutcome::Measured(f) => serde_json::json!({
                            "kind": kind, "name": p.name, "figure": figure_json(f), "ratios": p.ratios(&r.ours),
                        }),
                        PeerOutcome::Missing { program, install } => serde_json::json!({
                            "kind": kind, "name": p.name, "missing": true, "program": program, "install": install,
                        }),
                    }
                })
                .collect();
            serde_json::json!({
                "id": r.id.as_str(),
                "what": r.what,
                "data": r.data,
                "ours": r.ours.iter().map(figure_json).collect::<Vec<_>>(),
                "peers": peers,
                "aim": r.aim.to_string(),
                "aim_met": if report.quick { None } else { r.aim_met() },
                "notes": r.notes,
            })
        })
        .collect();
    serde_json::json!({
        "dir": report.dir.display().to_string(),
        "fs_type": report.fs_type,
        "backend": report.backend.to_string(),
        "cores": report.cores,
        "repeat": report.repeat,
        "quick": report.quick,
        "results": results,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratios_are_peer_over_ours() {
        let f = |s: f64| Figure {
            label: String::new(),
            samples: vec![s],
            items: 1.0,
            item_unit: "files",
            bytes: Some(1e9),
        };
        let peer = Peer {
            kind: PeerKind::Tool,
            name: "rsync 3".into(),
            outcome: PeerOutcome::Measured(f(2.0)),
        };
        assert_eq!(peer.ratios(&[f(1.0), f(4.0)]), Some(vec![2.0, 0.5]));
        let r = BenchResult {
            id: BenchId::B2,
            what: String::new(),
            data: String::new(),
            ours: vec![f(1.0)],
            peers: vec![peer],
            aim: Aim::NotSlowerThan("rsync".into()),
            notes: vec![],
        };
        assert_eq!(r.aim_met(), Some(true));
        assert_eq!(f(0.5).gb_per_sec(), Some(2.0));
    }
}
