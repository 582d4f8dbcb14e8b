//! Terminal output shared by the `pipeline` and `trainer` binaries: logs and progress bars.
//! Progress bars for the long stages. indicatif hides them when stderr is not a terminal, so
//! logs from CI stay clean.

use indicatif::{ProgressBar, ProgressStyle};

pub fn bar(len: usize, stage: &str) -> ProgressBar {
    let pb = ProgressBar::new(len as u64);
    pb.set_style(
        ProgressStyle::with_template("{prefix:>14} [{bar:40}] {pos}/{len} {per_sec} eta {eta}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    pb.set_prefix(stage.to_string());
    pb
}

/// Logs to stderr, `info` unless `RUST_LOG` says otherwise, so stdout stays for results.
pub fn init_logging() {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .with_target(false)
        .without_time()
        .init();
}
