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
