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

/// A secondary's site key, as `keys generate` prints it.
pub struct Site {
    pub access_key: String,
    pub secret: String,
}

impl Site {
    /// `widgets keys generate --append-to keys`.
    pub fn generate(keys: &Path) -> Site {
        let out = run(&["keys", "generate", "--append-to", path(keys)]);
        Site {
            access_key: export(&out, "GEO_ACCESS_KEY"),
            secret: export(&out, "GEO_SECRET"),
        }
    }

    /// `widgets secondary` against `primary` (an address) with this key and `extra` flags.
    pub fn secondary(&self, primary: &str, db: &Path, files: &Path, extra: &[&str]) -> Node {
        self.secondary_of(&format!("http://{primary}"), db, files, extra)
    }

    /// `widgets secondary --primary <url>` (any scheme) with this key and `extra` flags.
    pub fn secondary_of(&self, url: &str, db: &Path, files: &Path, extra: &[&str]) -> Node {
        let mut args = vec![
            "secondary",
            "--primary",
            url,
            "--listen",
            "127.0.0.1:0",
            "--database-url",
            path(db),
            "--blob-dir",
            path(files),
            "--idle-ms",
            "20",
        ];
        args.extend_from_slice(extra);
        Node::start(
            &args,
            &[
                ("GEO_ACCESS_KEY", &self.access_key),
                ("GEO_SECRET", &self.secret),
            ],
        )
    }
}

/// `widgets primary` on `listen` with its database, blob folder and keys file.
pub fn primary(listen: &str, db: &Path, files: &Path, keys: &Path) -> Node {
    Node::start(
        &[
            "primary",
            "--listen",
            listen,
            "--database-url",
            path(db),
            "--blob-dir",
            path(files),
            "--keys-file",
            path(keys),
        ],
        &[],
    )
}

/// `widgets seed` of `count` records on the primary's database and blob folder.
pub fn seed(db: &Path, files: &Path, count: usize) {
    run(&[
        "seed",
        "--database-url",
        path(db),
        "--blob-dir",
        path(files),
        "--count",
        &count.to_string(),
    ]);
}
