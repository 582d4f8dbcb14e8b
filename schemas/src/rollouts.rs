//! Rollouts: completions a model sampled for the questions of a `prompts` snapshot, each with
//! its verdict and everything needed to say where it came from (model hash, sampling settings,
//! seed, prompts snapshot id). A rollouts snapshot is Parquet plus a manifest like any other;
//! the pipeline's `rollouts` source format turns one into training examples.

use crate::generation::{Finish, Sampling};
use crate::manifest::{Manifest, RolloutsInfo, MANIFEST_FILE};
use crate::recipe::{SnapshotKind, WriteConfig};
use crate::snapshot::{for_each_batch, publish_dir, verified_manifest, verify, write_shard, StageTiming};
use crate::snapshot::{TEMPLATE_FILE, TIMINGS_FILE, TOKENIZER_FILE};
use crate::Domain;
use anyhow::Context;
use arrow::array::UInt64Array;
use arrow::array::{Array, ArrayRef, AsArray, BooleanArray, Float32Array, Int32Array, Int32Builder, ListBuilder, RecordBatch, StringArray};
use arrow::datatypes::{Float32Type, Int32Type, UInt64Type};
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::sync::Arc;

/// One sampled completion of one question.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rollout {
    /// The question's id in the prompts snapshot (`{source}/{native id}`).
    pub question_id: String,
    /// The question's source (recipe source name) and domain.
    pub source: String,
    pub domain: Domain,
    /// 0..K-1 within the question; sample `s` of question `q` drew from stream `q * K + s`.
    pub sample: u32,
    /// The user turn, without chat template (what a training example's prompt is).
    pub prompt: String,
    /// The decoded completion, without the stop token.
    pub completion: String,
    /// Every generated id, the stop token included when `finish` is `stop`.
    pub completion_ids: Vec<u32>,
    pub finish: Finish,
    pub new_tokens: u32,
    /// Math: the answer the verifier found; code: the code that ran.
    pub extracted: Option<String>,
    /// The verdict.
    pub correct: bool,
    /// Code: how the sandboxed run ended (`Passed`, `Failed { .. }`, `Timeout`, ...).
    pub status: Option<String>,
    /// Which verifier judged it (`math`, `math-gsm8k`, `sandbox-mbpp`, `sandbox-humaneval`) and
    /// the version of rectify's verify crate.
    pub verifier: String,
    pub verifier_version: String,
    pub gold: Option<String>,
    pub tests: Option<String>,
    pub model_sha256: String,
    pub temperature: f32,
    pub top_p: f32,
    pub top_k: u32,
    pub max_new_tokens: u32,
    pub seed: u64,
    pub prompts_snapshot_id: String,
}

/// The identity of a sampling job: everything the rollouts' bytes are a function of on a given
/// machine. A rollouts snapshot or a half-finished sampling run is reused only for the same key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CacheKey {
    pub model_sha256: String,
    pub prompts_snapshot_id: String,
    /// Questions sampled (the first N of the snapshot).
    pub questions: usize,
    pub samples_per_question: usize,
    pub sampling: Sampling,
    /// Sequences decoded together, and questions per chunk (batches form within a chunk): they
    /// change no distribution, but they can change the last bits of logits and so the bytes.
    pub batch_size: usize,
    pub chunk_questions: usize,
    /// What computed the logits (the host decoder's kernels, or Burn on a GPU with or without
    /// TF32): engines agree in distribution, not in the last bits. Empty in keys written before
    /// it was recorded.
    #[serde(default)]
    pub engine: String,
    /// The verify crate's version (`verify::grade::VERSION`): the same samples graded by other
    /// rules are other rollouts. Empty in keys written before it was recorded.
    #[serde(default)]
    pub verifier_version: String,
    /// The ids that end a completion (`model::generate::stop_ids` of the prompts' tokenizer):
    /// other stops give other completions. Empty in keys written before it was recorded.
    #[serde(default)]
    pub stop_ids: Vec<u32>,
}

impl CacheKey {
    /// First 16 hex digits of the sha256 of the key's JSON (fields in declaration order).
    pub fn digest(&self) -> String {
        crate::sha256_hex(serde_json::to_string(self).expect("serialises").as_bytes())[..16].to_string()
    }
}

/// Columns written with dictionary encoding: the same value on every row of a question or run.
pub const DICTIONARY_COLUMNS: &[&str] =
    &["source", "domain", "finish", "verifier", "verifier_version", "model_sha256", "prompts_snapshot_id"];

fn strings<'a>(rows: &'a [Rollout], f: impl Fn(&'a Rollout) -> Option<&'a str>) -> ArrayRef {
    Arc::new(rows.iter().map(f).collect::<StringArray>())
}

/// The rows as one record batch of [`crate::shard::rollouts_schema`].
pub fn rollouts_batch(rows: &[Rollout]) -> anyhow::Result<RecordBatch> {
    let mut ids = ListBuilder::new(Int32Builder::new()).with_field(Arc::new(arrow::datatypes::Field::new(
        "item",
        arrow::datatypes::DataType::Int32,
        false,
    )));
    for r in rows {
        ids.values().append_slice(&r.completion_ids.iter().map(|&t| t as i32).collect::<Vec<_>>());
        ids.append(true);
    }
    let int32 = |f: &dyn Fn(&Rollout) -> i32| -> ArrayRef { Arc::new(rows.iter().map(f).collect::<Int32Array>()) };
    let f32s = |f: &dyn Fn(&Rollout) -> f32| -> ArrayRef { Arc::new(rows.iter().map(f).collect::<Float32Array>()) };
    let columns: Vec<ArrayRef> = vec![
        strings(rows, |r| Some(&r.question_id)),
        strings(rows, |r| Some(&r.source)),
        strings(rows, |r| Some(r.domain.as_str())),
        int32(&|r| r.sample as i32),
        strings(rows, |r| Some(&r.prompt)),
        strings(rows, |r| Some(&r.completion)),
        Arc::new(ids.finish()),
        strings(rows, |r| Some(r.finish.as_str())),
        int32(&|r| r.new_tokens as i32),
        strings(rows, |r| r.extracted.as_deref()),
        Arc::new(rows.iter().map(|r| Some(r.correct)).collect::<BooleanArray>()),
        strings(rows, |r| r.status.as_deref()),
        strings(rows, |r| Some(&r.verifier)),
        strings(rows, |r| Some(&r.verifier_version)),
        strings(rows, |r| r.gold.as_deref()),
        strings(rows, |r| r.tests.as_deref()),
        strings(rows, |r| Some(&r.model_sha256)),
        f32s(&|r| r.temperature),
        f32s(&|r| r.top_p),
        int32(&|r| r.top_k as i32),
        int32(&|r| r.max_new_tokens as i32),
        Arc::new(rows.iter().map(|r| r.seed).collect::<UInt64Array>()),
        strings(rows, |r| Some(&r.prompts_snapshot_id)),
    ];
    Ok(RecordBatch::try_new(Arc::new(crate::shard::rollouts_schema()), columns)?)
}

/// Rollouts per Parquet shard.
const ROWS_PER_SHARD: usize = 8192;

/// Write `rows` (question order, then sample) as the rollouts snapshot `out`, atomically. Its
/// manifest is the prompts snapshot's (where the questions came from: recipe, inputs,
/// decontamination) with kind `rollouts`, the new shards, the prompts' tokenizer and template
/// and `info`; `timings` go to `timings.json`, outside the hashed files.
pub fn publish_rollouts(
    out: &Path,
    prompts_dir: &Path,
    prompts: &Manifest,
    rows: &[Rollout],
    info: RolloutsInfo,
    timings: &[StageTiming],
) -> anyhow::Result<Manifest> {
    publish_dir(out, |stage| {
        let cfg = WriteConfig::default();
        let chunks: Vec<&[Rollout]> = rows.chunks(ROWS_PER_SHARD).collect();
        let mut shards = vec![];
        for (i, chunk) in chunks.iter().enumerate() {
            let file = format!("rollouts-{i:05}-of-{:05}.parquet", chunks.len());
            shards.push(write_shard(stage, &file, &rollouts_batch(chunk)?, &cfg, DICTIONARY_COLUMNS)?);
        }
        let mut m = prompts.clone();
        m.name = format!("{}-rollouts", prompts.name);
        m.kind = SnapshotKind::Rollouts;
        m.snapshot_id = Manifest::snapshot_id_for(&shards);
        m.shards = shards;
        m.sidecars.retain(|s| s.file == TOKENIZER_FILE || s.file == TEMPLATE_FILE);
        for side in &m.sidecars {
            std::fs::copy(prompts_dir.join(&side.file), stage.join(&side.file)).with_context(|| format!("copying {}", side.file))?;
        }
        // The stage reports describe the questions' build, which the prompts snapshot (named by
        // id in `rollouts`) keeps; recipe, inputs and decontamination stay: where the questions
        // came from.
        m.stages = vec![];
        m.seeds.insert("sample".into(), info.key.sampling.seed);
        m.packing = None;
        m.ref_logprobs = None;
        m.conventions.insert("rollouts".into(), CONVENTION.into());
        m.tool = info.tool.clone();
        m.rollouts = Some(info);
        std::fs::write(stage.join(TIMINGS_FILE), serde_json::to_string_pretty(timings)? + "\n")?;
        crate::write_atomic(&stage.join(MANIFEST_FILE), m.to_json().as_bytes())?;
        let (_, problems) = verify(stage)?;
        if !problems.is_empty() {
            anyhow::bail!("the rollouts snapshot does not verify:\n  {}", problems.join("\n  "));
        }
        Ok(m)
    })
}

/// What the rows of a rollouts snapshot mean; recorded in its manifest's `conventions`.
pub const CONVENTION: &str = "one row per sample: sample s of question q (snapshot order) drew from stream q*K+s of the seed; \
completion is the decoded text without the stop token, completion_ids every generated id (the stop token included when finish is \
stop); correct is the verdict of `verifier` at `verifier_version`";

/// Every rollout of a rollouts snapshot, in file order, after checking its files against the
/// manifest.
pub fn load_rollouts(dir: &Path) -> anyhow::Result<(Manifest, Vec<Rollout>)> {
    let manifest = verified_manifest(dir, SnapshotKind::Rollouts)?;
    let mut rows = vec![];
    for_each_batch(dir, &manifest, |batch| read_batch(batch, &mut rows))?;
    Ok((manifest, rows))
}

fn read_batch(batch: &RecordBatch, out: &mut Vec<Rollout>) -> anyhow::Result<()> {
    let col = |name: &str| batch.column_by_name(name).with_context(|| format!("column `{name}` missing"));
    let text = |name: &str| -> anyhow::Result<&StringArray> { Ok(col(name)?.as_string::<i32>()) };
    let int = |name: &str| -> anyhow::Result<&Int32Array> { Ok(col(name)?.as_primitive::<Int32Type>()) };
    let opt = |a: &StringArray, i: usize| a.is_valid(i).then(|| a.value(i).to_string());
    let (question_id, source, domain, prompt, completion) =
        (text("question_id")?, text("source")?, text("domain")?, text("prompt")?, text("completion")?);
    let (finish, extracted, status, verifier, verifier_version) =
        (text("finish")?, text("extracted")?, text("status")?, text("verifier")?, text("verifier_version")?);
    let (gold, tests, model_sha256, prompts_snapshot_id) =
        (text("gold")?, text("tests")?, text("model_sha256")?, text("prompts_snapshot_id")?);
    let (sample, new_tokens, top_k, max_new_tokens) = (int("sample")?, int("new_tokens")?, int("top_k")?, int("max_new_tokens")?);
    let ids = col("completion_ids")?.as_list::<i32>();
    let correct = col("correct")?.as_boolean();
    let (temperature, top_p) = (col("temperature")?.as_primitive::<Float32Type>(), col("top_p")?.as_primitive::<Float32Type>());
    let seed = col("seed")?.as_primitive::<UInt64Type>();
    for i in 0..batch.num_rows() {
        out.push(Rollout {
            question_id: question_id.value(i).to_string(),
            source: source.value(i).to_string(),
            domain: domain.value(i).parse().with_context(|| format!("row {i}: column `domain`"))?,
            sample: sample.value(i) as u32,
            prompt: prompt.value(i).to_string(),
            completion: completion.value(i).to_string(),
            completion_ids: ids.value(i).as_primitive::<Int32Type>().values().iter().map(|&t| t as u32).collect(),
            finish: finish.value(i).parse().with_context(|| format!("row {i}: column `finish`"))?,
            new_tokens: new_tokens.value(i) as u32,
            extracted: opt(extracted, i),
            correct: correct.value(i),
            status: opt(status, i),
            verifier: verifier.value(i).to_string(),
            verifier_version: verifier_version.value(i).to_string(),
            gold: opt(gold, i),
            tests: opt(tests, i),
            model_sha256: model_sha256.value(i).to_string(),
            temperature: temperature.value(i),
            top_p: top_p.value(i),
            top_k: top_k.value(i) as u32,
            max_new_tokens: max_new_tokens.value(i) as u32,
            seed: seed.value(i),
            prompts_snapshot_id: prompts_snapshot_id.value(i).to_string(),
        });
    }
    Ok(())
}
