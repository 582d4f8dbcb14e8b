//! Reading a `prompts` snapshot: one question per row, chat template applied up to the
//! generation prompt, gold answers and tests kept beside it. Evaluation, sampling and the
//! pipeline's `rollouts` source all read questions through this.

use crate::manifest::Manifest;
use crate::recipe::SnapshotKind;
use crate::snapshot::{for_each_batch, verified_manifest};
use crate::Domain;
use anyhow::Context;
use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::Int32Type;
use std::path::Path;

/// One question as stored in a `prompts` snapshot.
#[derive(Debug, Clone, PartialEq)]
pub struct Prompt {
    pub id: String,
    /// The recipe source it came from (GSM8K sources are graded with GSM8K's answer rules).
    pub source: String,
    pub domain: Domain,
    /// The user turn, without chat template.
    pub prompt: String,
    pub prompt_ids: Vec<u32>,
    /// The dataset's own answer (a worked solution, a canonical program).
    pub reference: String,
    pub gold: Option<String>,
    /// Code: the tests, as the pipeline's HumanEval and MBPP adapters wrote them (the raw JSON:
    /// a generic source may hold something else, reported when graded).
    pub tests: Option<String>,
}

/// Every question of a `prompts` snapshot, in snapshot order, after checking its files against
/// the manifest.
pub fn load_prompts(dir: &Path) -> anyhow::Result<(Manifest, Vec<Prompt>)> {
    let manifest = verified_manifest(dir, SnapshotKind::Prompts)?;
    let mut prompts = vec![];
    for_each_batch(dir, &manifest, |batch| read_batch(batch, &mut prompts))?;
    Ok((manifest, prompts))
}

fn read_batch(batch: &RecordBatch, out: &mut Vec<Prompt>) -> anyhow::Result<()> {
    let col = |name: &str| batch.column_by_name(name).with_context(|| format!("column `{name}` missing"));
    let (id, source, domain, prompt, gold, tests) = (
        col("id")?.as_string::<i32>(),
        col("source")?.as_string::<i32>(),
        col("domain")?.as_string::<i32>(),
        col("prompt")?.as_string::<i32>(),
        col("gold")?.as_string::<i32>(),
        col("tests")?.as_string::<i32>(),
    );
    let ids = col("prompt_ids")?.as_list::<i32>();
    let reference = col("reference")?.as_string::<i32>();
    for i in 0..batch.num_rows() {
        out.push(Prompt {
            id: id.value(i).to_string(),
            source: source.value(i).to_string(),
            domain: domain.value(i).parse().with_context(|| format!("row {i}: column `domain`"))?,
            prompt: prompt.value(i).to_string(),
            prompt_ids: ids.value(i).as_primitive::<Int32Type>().values().iter().map(|&x| x as u32).collect(),
            reference: reference.value(i).to_string(),
            gold: gold.is_valid(i).then(|| gold.value(i).to_string()),
            tests: tests.is_valid(i).then(|| tests.value(i).to_string()),
        });
    }
    Ok(())
}
