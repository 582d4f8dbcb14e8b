//! Terminal output shared by the `pipeline` and `trainer` binaries: logs and progress bars.
//! indicatif hides the bars when stderr is not a terminal, so logs from CI stay clean.

pub use indicatif::ProgressBar;
use indicatif::ProgressStyle;

/// A bar for the training loop: optimizer steps, with the latest metrics as its message.
pub fn steps(len: u64, prefix: &str) -> ProgressBar {
    let pb = ProgressBar::new(len);
    pb.set_style(ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} {msg}").expect("valid template").progress_chars("=> "));
    pb.set_prefix(prefix.to_string());
    pb
}

/// A bar for a stage over `len` items, with rate and time left.
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

/// A bar for generation over `len` sequences: rate and time left, and a message for the
/// running tokens/s.
pub fn generation(len: usize, stage: &str) -> ProgressBar {
    let pb = ProgressBar::new(len as u64);
    pb.set_style(
        ProgressStyle::with_template("{prefix:>14} [{bar:40}] {pos}/{len} {msg} eta {eta}").expect("valid template").progress_chars("=> "),
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

/// The process's peak resident memory so far in MiB (Linux `VmHWM`), for run summaries and
/// benchmarks; `None` where `/proc` does not say.
pub fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kib: f64 = status.lines().find(|l| l.starts_with("VmHWM"))?.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}
