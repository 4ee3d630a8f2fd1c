//! The peers (`b3sum`, `sha256sum`, `rsync`): finding them on `PATH`, running and timing them;
//! and the measuring helpers every benchmark shares (medians, load average, tmpfs choice).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, ensure};

use super::report::{Figure, Peer, PeerKind, PeerOutcome};

/// The median of `xs` (the mean of the two middle values for an even count); NaN when empty.
pub fn median(xs: &[f64]) -> f64 {
    if xs.is_empty() {
        return f64::NAN;
    }
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    }
}

/// Finds `program` in the directories of `PATH`.
pub fn find_program(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(program))
        .find(|p| is_executable(p))
}

#[cfg(unix)]
fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(not(unix))]
fn is_executable(p: &Path) -> bool {
    p.is_file()
}

/// A peer program found on `PATH`, with its version line.
#[derive(Debug, Clone)]
pub(super) struct Tool {
    pub(super) path: PathBuf,
    pub(super) name: String,
}

/// How to install each peer.
fn install_hint(program: &str) -> String {
    match program {
        "b3sum" => "cargo install b3sum".to_string(),
        "rsync" => "apt-get install -y rsync".to_string(),
        "sha256sum" => "apt-get install -y coreutils".to_string(),
        other => format!("install {other}"),
    }
}

pub(super) fn lookup_tool(program: &str) -> Result<Tool, Peer> {
    match find_program(program) {
        Some(path) => {
            let version = Command::new(&path)
                .arg("--version")
                .output()
                .ok()
                .and_then(|o| String::from_utf8(o.stdout).ok())
                .and_then(|s| s.lines().next().map(str::to_string))
                .map(|line| version_of(&line))
                .unwrap_or_default();
            let name = if version.is_empty() {
                program.to_string()
            } else {
                format!("{program} {version}")
            };
            Ok(Tool { path, name })
        }
        None => Err(Peer {
            kind: PeerKind::Tool,
            name: program.to_string(),
            outcome: PeerOutcome::Missing {
                program: program.to_string(),
                install: install_hint(program),
            },
        }),
    }
}

/// The first word of a `--version` line that starts with a digit (`rsync  version 3.2.7 …`).
fn version_of(line: &str) -> String {
    line.split_whitespace()
        .find(|w| w.starts_with(|c: char| c.is_ascii_digit()))
        .unwrap_or("")
        .to_string()
}

/// Runs a peer and returns its wall time; a non-zero exit is an error (a peer that fails is not
/// a figure).
pub(super) fn run_timed(cmd: &mut Command) -> Result<(f64, Vec<u8>)> {
    let t = Instant::now();
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    let secs = t.elapsed().as_secs_f64();
    ensure!(
        out.status.success(),
        "{cmd:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok((secs, out.stdout))
}

pub(super) fn tool_peer(tool: Result<Tool, Peer>, figure: impl FnOnce(&Tool) -> Figure) -> Peer {
    match tool {
        Ok(t) => {
            let f = figure(&t);
            Peer {
                kind: PeerKind::Tool,
                name: f.label.clone(),
                outcome: PeerOutcome::Measured(f),
            }
        }
        Err(missing) => missing,
    }
}

/// The tmpfs folder when there is one (`/dev/shm`), else the temp dir.
pub fn default_data_dir() -> PathBuf {
    let shm = Path::new("/dev/shm");
    if fs_type(shm).as_deref() == Some("tmpfs") && writable(shm) {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    }
}

fn writable(dir: &Path) -> bool {
    tempfile::Builder::new()
        .prefix("geo-bench-probe-")
        .tempfile_in(dir)
        .is_ok()
}

/// The 1-minute load average (Linux `/proc/loadavg`); other processes on the machine skew
/// every figure, so the report says how busy it was.
pub fn load_average() -> Option<f64> {
    fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The type of the file system holding `path`, from `/proc/mounts` (Linux); `None` elsewhere.
pub fn fs_type(path: &Path) -> Option<String> {
    let path = fs::canonicalize(path).ok()?;
    let mounts = fs::read_to_string("/proc/mounts").ok()?;
    mounts
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (_, mount, kind) = (f.next()?, f.next()?, f.next()?);
            let mount = mount.replace("\\040", " ");
            path.starts_with(&mount)
                .then(|| (mount.len(), kind.to_string()))
        })
        .max_by_key(|(len, _)| *len)
        .map(|(_, kind)| kind)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(&[]).is_nan());
    }

    #[test]
    fn versions_are_found_in_version_lines() {
        assert_eq!(
            version_of("rsync  version 3.2.7  protocol version 31"),
            "3.2.7"
        );
        assert_eq!(version_of("b3sum 1.8.2"), "1.8.2");
        assert_eq!(version_of("sha256sum (GNU coreutils) 9.1"), "9.1");
    }

    #[test]
    fn a_missing_program_is_missing() {
        let peer = lookup_tool("geo-bench-no-such-program").unwrap_err();
        assert!(matches!(peer.outcome, PeerOutcome::Missing { .. }));
        assert!(peer.ratios(&[]).is_none());
    }
}
