//! Helpers shared by the integration tests: the repository root, the real model file, and small
//! real snapshots built from the shipped GSM8K training file.

#![allow(dead_code)] // each test file uses its own subset

use std::path::{Path, PathBuf};

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").canonicalize().unwrap()
}

pub fn model_path() -> PathBuf {
    model_files::test_model_path()
}

/// Builds a `train` snapshot of the first `examples` GSM8K training problems (about 200 tokens
/// each with the template) packed into 512-token rows, two or three per row with padding at the
/// end, into `dir/<name>`. `extra` is appended to the recipe (e.g. a `write:` block).
pub fn gsm8k_snapshot(dir: &Path, name: &str, examples: usize, extra: &str) -> PathBuf {
    let lines: Vec<String> =
        std::fs::read_to_string(repo().join("datasets/raw/gsm8k/train.jsonl")).unwrap().lines().take(examples).map(String::from).collect();
    std::fs::write(dir.join("gsm.jsonl"), lines.join("\n") + "\n").unwrap();
    let recipe = format!(
        "name: {name}\nseed: 1\nsources:\n  - {{name: gsm, path: gsm.jsonl, format: gsm8k}}\ntokenizer: {{gguf: {}}}\npack: {{seq_len: 512}}\n{extra}",
        model_path().display()
    );
    build_snapshot(dir, name, &recipe)
}

/// Writes `recipe` to `dir/<name>.yaml` and builds it into `dir/<name>`.
pub fn build_snapshot(dir: &Path, name: &str, recipe: &str) -> PathBuf {
    let recipe_path = dir.join(format!("{name}.yaml"));
    std::fs::write(&recipe_path, recipe).unwrap();
    let out = dir.join(name);
    pipeline::build::build(&recipe_path, &out, false).unwrap();
    out
}
