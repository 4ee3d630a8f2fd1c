//! The `geo-test-worker` binary's contract, written once for the binary and for the test that
//! starts it: its command line ([`WorkerOptions`]), the shared log it appends to ([`LogLine`],
//! [`WorkerLog`]) and its warped clock ([`WarpClock`]).

use std::ffi::OsString;
use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use chrono::{DateTime, TimeZone, Utc};
use geo_diesel::geo_core::clock::Clock;

/// How a worker process runs: where its databases and folders are, where it logs, when it
/// stops, and its time and sync settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerOptions {
    /// The tracking database (a SQLite path or a PostgreSQL URL).
    pub tracking: String,
    /// The primary database, read directly.
    pub primary: String,
    /// The primary's blob store root.
    pub primary_files: PathBuf,
    /// The secondary's blob store root.
    pub secondary_files: PathBuf,
    /// The shared log (appended to, one line per event).
    pub log: PathBuf,
    /// The worker stops once this file exists.
    pub stop: PathBuf,
    /// The warped clock's base in Unix milliseconds (default: the worker's start).
    pub warp_base_ms: Option<i64>,
    /// How much faster than real time the clock runs (default 1).
    pub warp_factor: i32,
    /// `SecondaryConfig::sync_timeout` in seconds (default 8 h).
    pub sync_timeout_s: i64,
    /// How long each download waits before its first byte, in milliseconds (default 0).
    pub download_delay_ms: u64,
    /// `SecondaryConfig::sync_batch` (default 200).
    pub sync_batch: usize,
    /// `SecondaryConfig::sync_capacity` (default 10).
    pub sync_capacity: usize,
}

/// The usage line of the binary.
pub const USAGE: &str = "usage: geo-test-worker --tracking URL --primary URL --primary-files DIR \
     --secondary-files DIR --log FILE --stop FILE [--warp-base-ms MS] [--warp-factor N] \
     [--sync-timeout-s S] [--download-delay-ms MS] [--sync-batch N] [--sync-capacity N]";

impl WorkerOptions {
    /// The required settings, every other one at its default.
    pub fn new(
        tracking: impl Into<String>,
        primary: impl Into<String>,
        primary_files: impl Into<PathBuf>,
        secondary_files: impl Into<PathBuf>,
        log: impl Into<PathBuf>,
        stop: impl Into<PathBuf>,
    ) -> Self {
        WorkerOptions {
            tracking: tracking.into(),
            primary: primary.into(),
            primary_files: primary_files.into(),
            secondary_files: secondary_files.into(),
            log: log.into(),
            stop: stop.into(),
            warp_base_ms: None,
            warp_factor: 1,
            sync_timeout_s: 8 * 3600,
            download_delay_ms: 0,
            sync_batch: 200,
            sync_capacity: 10,
        }
    }

    /// The command-line arguments that [`parse`](Self::parse) reads back into `self`.
    pub fn args(&self) -> Vec<OsString> {
        let mut out: Vec<OsString> = Vec::new();
        let mut put = |key: &str, value: OsString| {
            out.push(format!("--{key}").into());
            out.push(value);
        };
        put("tracking", self.tracking.clone().into());
        put("primary", self.primary.clone().into());
        put("primary-files", self.primary_files.clone().into());
        put("secondary-files", self.secondary_files.clone().into());
        put("log", self.log.clone().into());
        put("stop", self.stop.clone().into());
        if let Some(ms) = self.warp_base_ms {
            put("warp-base-ms", ms.to_string().into());
        }
        put("warp-factor", self.warp_factor.to_string().into());
        put("sync-timeout-s", self.sync_timeout_s.to_string().into());
        put(
            "download-delay-ms",
            self.download_delay_ms.to_string().into(),
        );
        put("sync-batch", self.sync_batch.to_string().into());
        put("sync-capacity", self.sync_capacity.to_string().into());
        out
    }

    /// Reads `--key value` pairs (without the program name). Batch and capacity below 1 are
    /// taken as 1, a negative delay as 0.
    pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Self, String> {
        let mut it = args.into_iter();
        let mut pairs = std::collections::BTreeMap::new();
        while let Some(arg) = it.next() {
            let key = arg
                .strip_prefix("--")
                .ok_or_else(|| format!("unexpected argument {arg:?}"))?
                .to_string();
            let value = it.next().ok_or_else(|| format!("--{key} needs a value"))?;
            pairs.insert(key, value);
        }
        let required = |key: &str| {
            pairs
                .get(key)
                .cloned()
                .ok_or_else(|| format!("--{key} is required"))
        };
        let number = |key: &str| -> Result<Option<i64>, String> {
            pairs
                .get(key)
                .map(|v| {
                    v.parse()
                        .map_err(|_| format!("--{key}: {v:?} is not a number"))
                })
                .transpose()
        };
        let mut o = WorkerOptions::new(
            required("tracking")?,
            required("primary")?,
            required("primary-files")?,
            required("secondary-files")?,
            required("log")?,
            required("stop")?,
        );
        o.warp_base_ms = number("warp-base-ms")?;
        if let Some(n) = number("warp-factor")? {
            o.warp_factor = i32::try_from(n).map_err(|_| "--warp-factor is out of range")?;
        }
        if let Some(n) = number("sync-timeout-s")? {
            o.sync_timeout_s = n;
        }
        if let Some(n) = number("download-delay-ms")? {
            o.download_delay_ms = n.max(0) as u64;
        }
        if let Some(n) = number("sync-batch")? {
            o.sync_batch = n.max(1) as usize;
        }
        if let Some(n) = number("sync-capacity")? {
            o.sync_capacity = n.max(1) as usize;
        }
        if let Some(key) = pairs.keys().find(|k| !KEYS.contains(&k.as_str())) {
            return Err(format!("unknown option --{key}"));
        }
        Ok(o)
    }
}

const KEYS: [&str; 12] = [
    "tracking",
    "primary",
    "primary-files",
    "secondary-files",
    "log",
    "stop",
    "warp-base-ms",
    "warp-factor",
    "sync-timeout-s",
    "download-delay-ms",
    "sync-batch",
    "sync-capacity",
];

/// One line of the workers' shared log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogLine {
    /// `ready <replicables> <pid>`: the workers run (replicables comma-separated).
    Ready(String, u32),
    /// `start <replicable> <id> <pid>`: a blob download began.
    Start(String, i64, u32),
    /// `end <replicable> <id> <pid>`: that download ended, finished or not.
    End(String, i64, u32),
    /// `stopped <pid>`: the worker stopped cleanly.
    Stopped(u32),
    /// `killed <pid>`: written by the test after it killed the process.
    Killed(u32),
}

impl fmt::Display for LogLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LogLine::Ready(types, pid) => write!(f, "ready {types} {pid}"),
            LogLine::Start(r, id, pid) => write!(f, "start {r} {id} {pid}"),
            LogLine::End(r, id, pid) => write!(f, "end {r} {id} {pid}"),
            LogLine::Stopped(pid) => write!(f, "stopped {pid}"),
            LogLine::Killed(pid) => write!(f, "killed {pid}"),
        }
    }
}

impl LogLine {
    /// Every line of a log.
    ///
    /// # Panics
    ///
    /// On a line that is none of the above (a torn or foreign line hides an overlap).
    pub fn parse_all(text: &str) -> Vec<LogLine> {
        text.lines()
            .map(|line| {
                let f: Vec<&str> = line.split(' ').collect();
                let pid = |s: &str| {
                    s.parse::<u32>()
                        .unwrap_or_else(|_| panic!("bad pid: {line}"))
                };
                let id = |s: &str| {
                    s.parse::<i64>()
                        .unwrap_or_else(|_| panic!("bad id: {line}"))
                };
                match f.as_slice() {
                    ["ready", t, p] => LogLine::Ready(t.to_string(), pid(p)),
                    ["start", r, i, p] => LogLine::Start(r.to_string(), id(i), pid(p)),
                    ["end", r, i, p] => LogLine::End(r.to_string(), id(i), pid(p)),
                    ["stopped", p] => LogLine::Stopped(pid(p)),
                    ["killed", p] => LogLine::Killed(pid(p)),
                    _ => panic!("unexpected worker log line: {line:?}"),
                }
            })
            .collect()
    }

    /// Every line of the log file at `path`.
    ///
    /// # Panics
    ///
    /// When the file cannot be read or holds a bad line.
    pub fn read_all(path: &Path) -> Vec<LogLine> {
        let text = std::fs::read_to_string(path)
            .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
        Self::parse_all(&text)
    }
}

/// The shared log, opened for appending: each line is one `write` on an `O_APPEND` file, so
/// the lines of several processes never interleave.
#[derive(Debug)]
pub struct WorkerLog {
    file: Mutex<File>,
}

impl WorkerLog {
    /// Opens (creating if needed) the log at `path` for appending.
    pub fn open(path: &Path) -> std::io::Result<Self> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        Ok(WorkerLog {
            file: Mutex::new(file),
        })
    }

    /// Appends `line`.
    ///
    /// # Panics
    ///
    /// When the write fails: a lost line would hide an overlap.
    pub fn append(&self, line: &LogLine) {
        let text = format!("{line}\n");
        let mut f = self.file.lock().unwrap_or_else(|p| p.into_inner());
        f.write_all(text.as_bytes())
            .expect("append to the worker log");
    }
}

/// A wall clock running `factor` times faster than real time from `base` on; every process
/// given the same base and factor agrees on the time.
#[derive(Debug, Clone, Copy)]
pub struct WarpClock {
    /// Where warped and real time agree.
    pub base: DateTime<Utc>,
    /// The speed-up.
    pub factor: i32,
}

impl WarpClock {
    /// The clock of `options` (its base defaults to now).
    pub fn of(options: &WorkerOptions) -> Result<Self, String> {
        let base_ms = options
            .warp_base_ms
            .unwrap_or_else(|| Utc::now().timestamp_millis());
        let base = Utc
            .timestamp_millis_opt(base_ms)
            .single()
            .ok_or("--warp-base-ms is out of range")?;
        Ok(WarpClock {
            base,
            factor: options.warp_factor,
        })
    }
}

impl Clock for WarpClock {
    fn now(&self) -> DateTime<Utc> {
        self.base + (Utc::now() - self.base) * self.factor
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_round_trip_through_the_command_line() {
        let mut o = WorkerOptions::new("t.sqlite3", "postgres://h/p", "/a", "/b", "/l", "/s");
        let defaults = WorkerOptions::parse(
            o.args()
                .into_iter()
                .map(|a| a.into_string().expect("utf-8")),
        )
        .expect("parse defaults");
        assert_eq!(defaults, o);
        o.warp_base_ms = Some(1_700_000_000_000);
        o.warp_factor = 30;
        o.sync_timeout_s = 60;
        o.download_delay_ms = 40;
        o.sync_batch = 4;
        o.sync_capacity = 2;
        let args: Vec<String> = o
            .args()
            .into_iter()
            .map(|a| a.into_string().expect("utf-8"))
            .collect();
        assert_eq!(WorkerOptions::parse(args).expect("parse"), o);
    }

    #[test]
    fn bad_command_lines_are_refused_with_the_reason() {
        let parse = |args: &[&str]| WorkerOptions::parse(args.iter().map(|s| s.to_string()));
        let required = [
            "--tracking",
            "t",
            "--primary",
            "p",
            "--primary-files",
            "a",
            "--secondary-files",
            "b",
            "--log",
            "l",
            "--stop",
            "s",
        ];
        assert_eq!(
            parse(&required[..6]).unwrap_err(),
            "--secondary-files is required"
        );
        let with = |more: &[&str]| parse(&[&required[..], more].concat()).map(|o| o.sync_batch);
        assert_eq!(with(&[]), Ok(200));
        assert_eq!(with(&["--sync-batch", "0"]), Ok(1));
        let refusals: [(&[&str], &str); 4] = [
            (
                &["--sync-batch", "x"],
                "--sync-batch: \"x\" is not a number",
            ),
            (&["--sync-batch"], "--sync-batch needs a value"),
            (&["--colour", "red"], "unknown option --colour"),
            (&["stray"], "unexpected argument \"stray\""),
        ];
        for (args, reason) in refusals {
            assert_eq!(with(args), Err(reason.to_string()), "{args:?}");
        }
    }

    #[test]
    fn log_lines_round_trip() {
        let lines = vec![
            LogLine::Ready("widget,gadget".into(), 7),
            LogLine::Start("widget".into(), 12, 7),
            LogLine::End("widget".into(), 12, 7),
            LogLine::Stopped(7),
            LogLine::Killed(8),
        ];
        let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
        assert_eq!(
            text,
            "ready widget,gadget 7\nstart widget 12 7\nend widget 12 7\nstopped 7\nkilled 8\n"
        );
        assert_eq!(LogLine::parse_all(&text), lines);
    }
}
