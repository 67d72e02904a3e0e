//! `trainprov snapshot`: print a data snapshot's digest and manifest summary.

use anyhow::anyhow;

use crate::cli::SnapshotArgs;
use crate::exit::CliError;
use crate::Report;

/// Snapshots `args.dir`.
pub fn run(args: &SnapshotArgs) -> Result<Report, CliError> {
    Err(CliError::input(anyhow!("{}: snapshot is not implemented yet", args.dir.display())))
}
