//! `manifest.json`: everything needed to say which exact tokens a snapshot holds and how they
//! were made. It carries no timestamps or timings, so two builds of the same recipe and inputs
//! produce the same manifest byte for byte (timings go to `timings.json`).

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

pub const MANIFEST_FILE: &str = "manifest.json";
pub const FORMAT_VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub format_version: u32,
    /// First 16 hex digits of the sha256 over the shard hashes, in shard order.
    pub snapshot_id: String,
    pub name: String,
    pub kind: crate::recipe::SnapshotKind,
    pub recipe: RecipeInfo,
    pub inputs: Vec<InputFile>,
    pub tokenizer: TokenizerInfo,
    pub seeds: BTreeMap<String, u64>,
    pub stages: Vec<StageReport>,
    pub decontamination: Vec<BenchmarkContamination>,
    /// Present for `train` snapshots.
    pub packing: Option<PackingReport>,
    pub shards: Vec<ShardInfo>,
    /// Files beside the shards: the quarantine of malformed input rows and the dropped-row log.
    pub sidecars: Vec<ShardInfo>,
    /// How the masks line up with the tokens, stated once so no reader has to guess.
    pub conventions: BTreeMap<String, String>,
    /// Filled by a reference-scoring pass (`trainer score`, see [`RefLogprobsInfo`]); null until
    /// then.
    #[serde(default)]
    pub ref_logprobs: Option<RefLogprobsInfo>,
    /// A `rollouts` snapshot: which model sampled which prompts how (absent otherwise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollouts: Option<RolloutsInfo>,
    /// A `train` snapshot built from rollouts: where each `rollouts` source came from and what
    /// its selection kept (absent when there is none).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rollout_sources: Vec<RolloutsOrigin>,
    pub tool: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecipeInfo {
    pub path: String,
    pub sha256: String,
    /// The parsed recipe with every default filled in.
    pub resolved: serde_json::Value,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InputFile {
    /// Source name, or `benchmark:<name>` for decontamination inputs.
    pub role: String,
    pub path: String,
    pub sha256: String,
    pub bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenizerInfo {
    /// Model or tokenizer.json file the tokenizer was read from.
    pub path: String,
    pub file_sha256: String,
    /// sha256 of the tokenizer serialised as Hugging Face `tokenizer.json`.
    pub tokenizer_sha256: String,
    pub chat_template_sha256: String,
    pub vocab_size: usize,
    pub eos_token: String,
    pub eos_id: u32,
    pub pad_id: u32,
    /// The begin-of-text token the chat template was rendered with as `bos_token` (empty when
    /// the source names none, and in manifests written before it was recorded).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub bos_token: String,
    /// The recipe's `tokenizer.template_vars` the template was rendered with (absent when none),
    /// so that a tokenizer rebuilt from the snapshot renders as its rows were rendered.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub template_vars: BTreeMap<String, serde_json::Value>,
    /// The recipe's `tokenizer.system_prompt`, the system message put before every prompt
    /// but a conversation's that has its own (absent when the template's own default applied).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system_prompt: Option<String>,
}

/// Rows in, rows out and rows dropped by reason for one stage. `rows_in == rows_out + sum(dropped)`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StageReport {
    pub stage: String,
    pub rows_in: u64,
    pub rows_out: u64,
    pub dropped: BTreeMap<String, u64>,
}

impl StageReport {
    pub fn new(stage: &str, rows_in: usize, rows_out: usize, drops: &[crate::Dropped]) -> Self {
        let mut dropped = BTreeMap::new();
        for d in drops {
            *dropped.entry(d.reason.clone()).or_insert(0) += 1;
        }
        StageReport { stage: stage.to_string(), rows_in: rows_in as u64, rows_out: rows_out as u64, dropped }
    }

    pub fn balanced(&self) -> bool {
        self.rows_in == self.rows_out + self.dropped.values().sum::<u64>()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BenchmarkContamination {
    pub benchmark: String,
    pub items: u64,
    /// Rows of the benchmark's files its ingest quarantined: not checked against (within the
    /// benchmark recipe's `ingest.max_bad_fraction`).
    #[serde(default)]
    pub malformed_items: u64,
    /// Training rows that overlap this benchmark (and were removed).
    pub contaminated_rows: u64,
    /// Benchmark items that some training row overlaps.
    pub contaminated_items: u64,
    /// Up to ten `training id -> benchmark id` pairs.
    pub examples: Vec<(String, String)>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PackingReport {
    pub seq_len: u64,
    pub rows: u64,
    pub examples: u64,
    pub tokens: u64,
    pub non_pad_tokens: u64,
    pub loss_tokens: u64,
    pub truncated_examples: u64,
    /// non-pad tokens / all tokens.
    pub efficiency: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShardInfo {
    pub file: String,
    pub sha256: String,
    pub bytes: u64,
    pub rows: u64,
    pub tokens: u64,
    pub loss_tokens: u64,
}

/// What `trainer score` records in [`Manifest::ref_logprobs`]: which model scored the rows and
/// which snapshot they came from. `null` (or absent, in manifests written before scoring
/// existed) until a snapshot is scored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RefLogprobsInfo {
    /// The reference model as given on the command line.
    pub model: String,
    /// sha256 of the model file; for a folder, sha256 over `"<sha256>  <file>\n"` lines of its
    /// files (sorted by name), as listed in `model_files`.
    pub model_sha256: String,
    pub model_files: Vec<InputFile>,
    /// The unscored (or previously scored) snapshot these rows were copied from.
    pub parent_snapshot_id: String,
    /// What each value means and where it is zero.
    pub convention: String,
    /// Element type of the stored values.
    pub dtype: String,
    pub rows: u64,
    /// Values that are a real log-probability (not a segment start or padding).
    pub scored_tokens: u64,
    /// What computed them (`burn flex`, `burn cuda, f32 matmuls`, ...); empty in manifests
    /// written before it was recorded.
    #[serde(default)]
    pub engine: String,
    pub tool: String,
}

/// What `trainer sample` records in a rollouts snapshot's manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RolloutsInfo {
    /// [`crate::rollouts::CacheKey::digest`] of `key`: equal keys, interchangeable rollouts.
    pub cache_key: String,
    pub key: crate::rollouts::CacheKey,
    /// The model as given on the command line, and its files' hashes (see [`RefLogprobsInfo`]).
    pub model: String,
    pub model_files: Vec<InputFile>,
    /// The `prompts` snapshot the questions came from (its id is in `key`).
    pub prompts_snapshot: String,
    pub samples: u64,
    pub correct: u64,
    /// Samples cut off by `max_new_tokens` (`finish: length`).
    pub truncated: u64,
    pub new_tokens: u64,
    pub verifiers: Vec<VerifierCount>,
    pub tool: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VerifierCount {
    pub verifier: String,
    pub version: String,
    pub samples: u64,
    pub correct: u64,
}

/// One `rollouts` source of a train snapshot: its origin and what selection did with it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RolloutsOrigin {
    pub source: String,
    pub path: String,
    /// A rollouts snapshot: its id and its sampling record. A file from another engine: null
    /// (its sha256 is in `inputs`).
    pub snapshot_id: Option<String>,
    pub rollouts: Option<RolloutsInfo>,
    /// True for files: every line was verified on ingest with `verifier_version`. A snapshot's
    /// verdicts are its own (recorded per row with their verifier version).
    pub verified_on_ingest: bool,
    pub verifier_version: String,
    pub selection: crate::recipe::RolloutsSelection,
    /// Samples read (a row, or a line; a line with a list of n completions counts n);
    /// `malformed` of them went to the quarantine.
    pub samples: u64,
    pub malformed: u64,
    pub correct: u64,
    pub kept: u64,
    pub dropped: BTreeMap<String, u64>,
}

impl Manifest {
    pub fn to_json(&self) -> String {
        let mut s = serde_json::to_string_pretty(self).expect("manifest serialises");
        s.push('\n');
        s
    }

    /// Snapshot id from the shard hashes: same shards, same id.
    pub fn snapshot_id_for(shards: &[ShardInfo]) -> String {
        let joined: String = shards.iter().map(|s| format!("{}\n", s.sha256)).collect();
        crate::sha256_hex(joined.as_bytes())[..16].to_string()
    }
}
