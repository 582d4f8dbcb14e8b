//! The rectify trainer (SFT, DFT and rejection-sampled offline RL on packed snapshots) is the
//! next milestone. Until it exists this binary says so and exits with an error, rather than
//! pretending to train.

use std::process::ExitCode;

fn main() -> ExitCode {
    eprintln!(
        "trainer: not built yet. This release ships the data pipeline only: run `make data` to build \
         snapshots, and `pipeline --help` for the snapshot tools."
    );
    ExitCode::from(2)
}
