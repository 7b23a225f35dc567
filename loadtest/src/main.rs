//! The `loadtest` binary: parses the command line, runs the scenario,
//! prints the summary table (and with `--json`, the report as the last
//! line of stdout). Exit code 2 for options clap refuses; 1 if the run could
//! not be carried out, or if it fails (`Report::failures`: nothing
//! published, deliveries missing, ...), after the report, with the reasons
//! on stderr. `nemesis` prints its own JSON summary and exits 1 on any
//! violation.

use clap::Parser;
use loadtest::cli::{self, Cli, ScenarioCommand};
use loadtest::nemesis;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let ScenarioCommand::Nemesis { options } = &cli.scenario {
        return match nemesis::run(options) {
            Ok(true) => ExitCode::SUCCESS,
            Ok(false) => ExitCode::FAILURE,
            Err(error) => {
                eprintln!("loadtest: nemesis: {error:#}");
                ExitCode::FAILURE
            }
        };
    }
    match cli::execute(&cli) {
        Ok(report) => {
            print!("{}", report.table());
            if cli.scenario.server().is_some_and(|s| s.json) {
                println!("{}", report.to_json());
            }
            let failures = report.failures();
            for failure in &failures {
                eprintln!("loadtest: FAILED: {failure}");
            }
            if failures.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(error) => {
            eprintln!("loadtest: {error:#}");
            ExitCode::FAILURE
        }
    }
}
