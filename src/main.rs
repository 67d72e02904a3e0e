//! The `trainprov` command: a thin layer over the `attest` and `recorder` crates.
//!
//! Each subcommand lives in `commands/`, parses nothing itself, and returns a [`Report`]
//! (human text + JSON) or a [`CliError`] carrying its exit code.
#![forbid(unsafe_code)]

mod cli;
mod commands;
mod exit;

use std::io::Write as _;
use std::process::ExitCode;

use clap::Parser as _;

use crate::cli::{Cli, Command};

/// What a successful command prints.
pub struct Report {
    /// Lines for humans (stdout).
    pub human: String,
    /// The same, for machines.
    pub json: serde_json::Value,
    /// Exit code (0 except for `run`, which passes the command's through).
    pub exit: u8,
}

impl Report {
    /// A successful report (exit 0).
    pub fn ok(human: String, json: serde_json::Value) -> Self {
        Report {
            human,
            json,
            exit: 0,
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let (json, result) = match cli.command {
        Command::Keygen(args) => (args.global.json, commands::keygen::run(&args)),
        Command::SignModel(args) => (args.global.json, commands::sign_model::run(&args)),
        Command::Verify(args) => (args.global.json, commands::verify::run(&args)),
        Command::Approve(args) => (args.global.json, commands::approve::run(&args)),
        Command::Attest(args) => (args.global.json, commands::attest::run(&args)),
        Command::Snapshot(args) => (args.global.json, commands::snapshot::run(&args)),
        Command::Run(args) => (args.global.json, commands::run::run(&args)),
        Command::Registry(args) => (args.global.json, commands::registry::run(&args)),
        Command::Train(args) => (args.global.json, commands::train::run(&args)),
        Command::Eval(args) => (args.global.json, commands::eval::run(&args)),
        Command::Retrain(args) => (args.global.json, commands::retrain::run(&args)),
        Command::Scan(args) => (args.global.json, commands::scan::run(&args)),
        Command::Data(args) => (args.global.json, commands::datacheck::run(&args)),
        Command::Probe(args) => (args.global.json, commands::probe::run(&args)),
        Command::Bom(args) => (false, commands::bom::run(&args)),
    };
    match result {
        Ok(report) => {
            let text = if json {
                to_json_line(&report.json)
            } else {
                report.human
            };
            print_stdout(&text);
            ExitCode::from(report.exit)
        }
        Err(err) => {
            let message = err.error.to_string();
            let label = if err.code == exit::FAILED {
                "verification failed"
            } else {
                "error"
            };
            eprintln!("trainprov: {label}: {message}");
            if json {
                let mut object = serde_json::json!({
                    "status": if err.code == exit::FAILED { "failed" } else { "error" },
                    "error": message,
                });
                if let (Some(detail), Some(map)) = (err.detail, object.as_object_mut()) {
                    map.insert("detail".into(), detail);
                }
                print_stdout(&to_json_line(&object));
            }
            ExitCode::from(err.code)
        }
    }
}

fn to_json_line(value: &serde_json::Value) -> String {
    let mut text = serde_json::to_string_pretty(value).unwrap_or_else(|_| "{}".into());
    text.push('\n');
    text
}

/// Prints to stdout; a closed pipe (`trainprov verify … | head -1`) is not an error.
fn print_stdout(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes()).and_then(|_| out.flush());
}
