//! `cargo bench -p widgets`: runs [`widgets::bench`] and prints every figure with its ratios
//! against the peers measured in the same run.
//!
//! Arguments after `--`: `--quick`, `--only B1,B2`, `--repeat N`, `--dir DIR`,
//! `--database-url postgres://…`, `--json` (e.g. `cargo bench -p widgets -- --only B1`).

use std::process::ExitCode;

use widgets::bench;

fn main() -> ExitCode {
    let result = bench::parse_bench_args(std::env::args().skip(1))
        .and_then(|(opts, json)| bench::run_and_print(&opts, json));
    match result {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
