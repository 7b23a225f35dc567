//! The `loadtest` binary: parses the command line, runs the scenario,
//! prints the summary table (and with `--json`, the report as the last
//! line of stdout). Exit code 1 if the run could not be carried out.

use clap::Parser;
use loadtest::cli::{self, Cli};
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli::execute(&cli) {
        Ok(report) => {
            print!("{}", report.table());
            if cli.scenario.server().json {
                println!("{}", report.to_json());
            }
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("loadtest: {error:#}");
            ExitCode::FAILURE
        }
    }
}
