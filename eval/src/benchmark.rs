//! Benchmarks: the prompts of an evaluation snapshot (prompt-only, chat template already applied),
//! read after the snapshot is verified against its manifest, so an evaluation is pinned to a
//! snapshot id just as training is.

use anyhow::bail;
use model_files::tokenizer::ChatTokenizer;
use schemas::manifest::Manifest;
use schemas::prompts::load_prompts;
use schemas::snapshot::{TEMPLATE_FILE, TOKENIZER_FILE};
use std::path::{Path, PathBuf};

pub use schemas::prompts::Prompt;

pub struct Benchmark {
    pub name: String,
    pub dir: PathBuf,
    pub manifest: Manifest,
    pub prompts: Vec<Prompt>,
    pub tokenizer: ChatTokenizer,
}

/// Short names users type, and the snapshot folder each means.
pub fn snapshot_name(bench: &str) -> &str {
    match bench {
        "gsm8k" => "gsm8k_test",
        "mbpp" => "mbpp_test",
        other => other,
    }
}

/// Reads and verifies an evaluation snapshot: `dir` is `<snapshots>/eval/<name>` for a name, or
/// any snapshot folder given as a path.
pub fn load_benchmark(bench: &str, eval_dir: &Path) -> anyhow::Result<Benchmark> {
    let dir = if Path::new(bench).join("manifest.json").exists() { PathBuf::from(bench) } else { eval_dir.join(snapshot_name(bench)) };
    if !dir.join("manifest.json").exists() {
        bail!("no evaluation snapshot for `{bench}` at {} (build it with `make data-eval`)", dir.display());
    }
    let (manifest, prompts) = load_prompts(&dir)?;
    let tokenizer =
        ChatTokenizer::from_tokenizer_json(&dir.join(TOKENIZER_FILE), &dir.join(TEMPLATE_FILE), &manifest.tokenizer.eos_token, None)?;
    let name = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| bench.to_string());
    Ok(Benchmark { name, dir, manifest, prompts, tokenizer })
}
