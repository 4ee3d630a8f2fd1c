//! What the tests that run the real `widgets` binary share: running a command, reading its
//! `export` lines, a node process killed on drop, and waiting with a deadline.
// Each test file uses its own part of this module.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub fn widgets() -> Command {
    Command::new(env!("CARGO_BIN_EXE_widgets"))
}

/// Runs `widgets args…`; its stdout, panicking on a failure.
pub fn run(args: &[&str]) -> String {
    let out = widgets().args(args).output().unwrap();
    assert!(
        out.status.success(),
        "widgets {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The value of `export NAME=value` in `text`.
pub fn export(text: &str, name: &str) -> String {
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("export {name}=")))
        .unwrap_or_else(|| panic!("no {name} in {text:?}"))
        .to_owned()
}

/// A node process; killed on drop.
pub struct Node {
    pub child: Child,
    pub addr: String,
}

impl Node {
    pub fn start(args: &[&str], env: &[(&str, &str)]) -> Node {
        let mut child = widgets()
            .args(args)
            .envs(env.iter().copied())
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let line = lines.next().unwrap().unwrap();
        let url = line
            .split_once(" listening on ")
            .map(|(_, u)| u.to_owned())
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"));
        Node {
            child,
            addr: url.trim_start_matches("http://").to_owned(),
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A path as the `&str` a command line takes.
pub fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Polls `done` every 100 ms until it holds, failing after `limit`.
pub fn wait_until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < limit, "timed out after {limit:?}: {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}
