//! `cargo bench -p widgets`: runs [`widgets::bench`] and prints every figure with its ratios
//! against the peers measured in the same run.
//!
//! Arguments after `--`: `--quick`, `--only B1,B2`, `--repeat N`, `--dir DIR`,
//! `--database-url postgres://…`, `--json` (e.g. `cargo bench -p widgets -- --only B1`).

use std::io::Write;
use std::process::ExitCode;

use widgets::bench::{self, Progress};

fn main() -> ExitCode {
    let (opts, json) = match bench::parse_bench_args(std::env::args().skip(1)) {
        Ok(x) => x,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    let result = bench::run_with(&opts, &mut |p| {
        if json {
            return;
        }
        match p {
            Progress::Started(report) => print!("{}", bench::render_header(report)),
            Progress::Finished(r) => print!("{}", bench::render_result(r, opts.quick)),
        }
        let _ = std::io::stdout().flush();
    });
    match result {
        Ok(report) => {
            if json {
                println!("{:#}", bench::render_json(&report));
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
