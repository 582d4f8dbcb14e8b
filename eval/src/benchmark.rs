//! Benchmarks: the prompts of an evaluation snapshot (prompt-only, chat template already applied),
//! read after the snapshot is verified against its manifest, so an evaluation is pinned to a
//! snapshot id just as training is.

use anyhow::{bail, Context};
use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::Int32Type;
use model_files::tokenizer::ChatTokenizer;
use schemas::manifest::Manifest;
use schemas::recipe::SnapshotKind;
use schemas::snapshot::{for_each_batch, verified_manifest, TEMPLATE_FILE, TOKENIZER_FILE};
use schemas::Domain;
use std::path::{Path, PathBuf};

/// One evaluation prompt as stored in a `prompts` snapshot.
#[derive(Debug, Clone)]
pub struct Prompt {
    pub id: String,
    pub domain: Domain,
    pub prompt_ids: Vec<u32>,
    /// The dataset's own answer (a worked solution, a canonical program).
    pub reference: String,
    pub gold: Option<String>,
    /// Code benchmarks: the tests, as the pipeline's HumanEval and MBPP adapters wrote them
    /// (the raw JSON: a generic source may hold something else, reported when graded).
    pub tests: Option<String>,
}

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
    let manifest = verified_manifest(&dir, SnapshotKind::Prompts)?;
    let tokenizer =
        ChatTokenizer::from_tokenizer_json(&dir.join(TOKENIZER_FILE), &dir.join(TEMPLATE_FILE), &manifest.tokenizer.eos_token, None)?;
    let mut prompts = vec![];
    for_each_batch(&dir, &manifest, |batch| read_prompts(batch, &mut prompts))?;
    let name = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| bench.to_string());
    Ok(Benchmark { name, dir, manifest, prompts, tokenizer })
}

fn read_prompts(batch: &RecordBatch, out: &mut Vec<Prompt>) -> anyhow::Result<()> {
    let col = |name: &str| batch.column_by_name(name).with_context(|| format!("column `{name}` missing"));
    let (id, domain, gold, tests) = (
        col("id")?.as_string::<i32>(),
        col("domain")?.as_string::<i32>(),
        col("gold")?.as_string::<i32>(),
        col("tests")?.as_string::<i32>(),
    );
    let ids = col("prompt_ids")?.as_list::<i32>();
    let reference = col("reference")?.as_string::<i32>();
    for i in 0..batch.num_rows() {
        out.push(Prompt {
            id: id.value(i).to_string(),
            domain: domain.value(i).parse().with_context(|| format!("row {i}: column `domain`"))?,
            prompt_ids: ids.value(i).as_primitive::<Int32Type>().values().iter().map(|&x| x as u32).collect(),
            reference: reference.value(i).to_string(),
            gold: gold.is_valid(i).then(|| gold.value(i).to_string()),
            tests: tests.is_valid(i).then(|| tests.value(i).to_string()),
        });
    }
    Ok(())
}
