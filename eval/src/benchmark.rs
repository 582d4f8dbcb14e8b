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

/// Where a benchmark's snapshot is: `bench` itself if it is a snapshot folder, else the folder of
/// that name under `eval_dir`, else that name's `_test` split (so `gsm8k` means `gsm8k_test`).
/// scripts/eval_snapshots.sh builds snapshots by the same rule.
fn snapshot_dir(bench: &str, eval_dir: &Path) -> anyhow::Result<PathBuf> {
    let named = eval_dir.join(bench);
    let split = eval_dir.join(format!("{bench}_test"));
    let found = [PathBuf::from(bench), named.clone(), split.clone()].into_iter().find(|dir| dir.join("manifest.json").exists());
    match found {
        Some(dir) => Ok(dir),
        None => bail!(
            "no evaluation snapshot for `{bench}` at {} or {} (build it with `scripts/eval_snapshots.sh {bench}`, or all of them with `make data-eval`)",
            named.display(),
            split.display()
        ),
    }
}

/// Reads and verifies an evaluation snapshot named by `bench` (see [`snapshot_dir`]).
pub fn load_benchmark(bench: &str, eval_dir: &Path) -> anyhow::Result<Benchmark> {
    let dir = snapshot_dir(bench, eval_dir)?;
    let (manifest, prompts) = load_prompts(&dir)?;
    let tokenizer =
        ChatTokenizer::from_tokenizer_json(&dir.join(TOKENIZER_FILE), &dir.join(TEMPLATE_FILE), &manifest.tokenizer.eos_token, None)?;
    let name = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| bench.to_string());
    Ok(Benchmark { name, dir, manifest, prompts, tokenizer })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_benchmark_name_is_a_folder_its_test_split_or_a_path() {
        let tmp = tempfile::tempdir().unwrap();
        let eval_dir = tmp.path().join("eval");
        for name in ["gsm8k_test", "math500", "mbpp_test", "mbpp"] {
            std::fs::create_dir_all(eval_dir.join(name)).unwrap();
            std::fs::write(eval_dir.join(name).join("manifest.json"), "{}").unwrap();
        }
        let elsewhere = tmp.path().join("mine");
        std::fs::create_dir_all(&elsewhere).unwrap();
        std::fs::write(elsewhere.join("manifest.json"), "{}").unwrap();

        assert_eq!(snapshot_dir("gsm8k", &eval_dir).unwrap(), eval_dir.join("gsm8k_test"));
        assert_eq!(snapshot_dir("gsm8k_test", &eval_dir).unwrap(), eval_dir.join("gsm8k_test"));
        assert_eq!(snapshot_dir("math500", &eval_dir).unwrap(), eval_dir.join("math500"));
        // A folder of the name itself wins over its split.
        assert_eq!(snapshot_dir("mbpp", &eval_dir).unwrap(), eval_dir.join("mbpp"));
        assert_eq!(snapshot_dir(elsewhere.to_str().unwrap(), &eval_dir).unwrap(), elsewhere);
        let missing = snapshot_dir("aime24", &eval_dir).unwrap_err().to_string();
        assert!(missing.contains("aime24_test") && missing.contains("scripts/eval_snapshots.sh aime24"), "{missing}");
    }
}
