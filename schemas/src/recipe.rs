//! The YAML recipe: which files go in, and every stage's settings.
//!
//! Every struct denies unknown keys, so a typo such as `seq_lenght` is an error naming the key
//! and the file instead of a silently ignored setting. Paths inside a recipe are relative to the
//! recipe file's own folder.

use crate::Domain;
use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recipe {
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// `train`: packed token rows for training. `prompts`: one prompt-only row per example,
    /// gold answers and tests kept as metadata, for evaluation.
    #[serde(default)]
    pub kind: SnapshotKind,
    /// Seed for everything random in the build (MinHash permutations, row shuffle).
    #[serde(default)]
    pub seed: u64,
    /// Whether the recipe names `seed` (serde's default cannot tell 0 from absent): a train
    /// recipe that does not is warned about, since the seed decides which examples share a row.
    #[serde(skip)]
    pub seed_given: bool,
    /// The stages deciding what the snapshot holds ([`SnapshotKind::content_stages`]) that the
    /// recipe does not name: the build lists them with the values used, since a recipe that
    /// forgot `decontaminate`, say, would otherwise keep benchmark questions without a word.
    #[serde(skip)]
    pub defaulted_stages: Vec<&'static str>,
    pub sources: Vec<Source>,
    #[serde(default)]
    pub ingest: IngestConfig,
    #[serde(default)]
    pub filter: FilterConfig,
    #[serde(default)]
    pub dedup: DedupConfig,
    #[serde(default)]
    pub decontaminate: DecontamConfig,
    pub tokenizer: TokenizerConfig,
    #[serde(default)]
    pub pack: PackConfig,
    #[serde(default)]
    pub write: WriteConfig,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum SnapshotKind {
    #[default]
    Train,
    Prompts,
    /// Sampled completions with verdicts (`trainer sample`), not built from a recipe.
    Rollouts,
}

impl SnapshotKind {
    /// The recipe sections that decide which examples a snapshot of this kind holds (and, for
    /// `train`, how they are packed into rows). Decontamination is left out for `prompts`: an
    /// evaluation set is what others are checked against, and the one `prompts` recipe that
    /// must decontaminate (questions for `trainer sample`) is refused there without it.
    pub fn content_stages(self) -> &'static [&'static str] {
        match self {
            SnapshotKind::Train => &["filter", "dedup", "decontaminate", "pack"],
            SnapshotKind::Prompts => &["filter", "dedup"],
            SnapshotKind::Rollouts => &[],
        }
    }
}

spelled!(SnapshotKind, "snapshot kind", { Train => "train", Prompts => "prompts", Rollouts => "rollouts" });

/// Built-in adapters for the shipped formats, and `generic` for anything else.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    /// openai/grade-school-math: `question`, `answer` ending in `#### x`.
    Gsm8k,
    /// MATH / MATH-500: `problem`, `solution` with `\boxed{}`, optional `answer`.
    Math,
    /// Qwen2.5-Math evaluation files (aime24, amc23, minerva_math, olympiadbench, ...).
    QwenMath,
    /// MBPP: `text` or `prompt`, `code`, `task_id`, `test_list` or `test`.
    Mbpp,
    /// HumanEval: `task_id`, `prompt`, `canonical_solution`, `test`, `entry_point`.
    Humaneval,
    /// Any JSONL or Parquet file, with `fields` naming which column is which.
    Generic,
    /// Sampled completions to select training examples from: a rollouts snapshot folder
    /// (`trainer sample`), or a JSONL / Parquet file another engine wrote (verified on ingest).
    Rollouts,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Source {
    pub name: String,
    /// `.jsonl`, `.jsonl.gz`, `.json` (one array) or `.parquet`, relative to the recipe.
    pub path: String,
    pub format: Format,
    /// Required for `generic`; the built-in adapters know their domain.
    #[serde(default)]
    pub domain: Option<Domain>,
    /// Column mapping for the `generic` adapter.
    #[serde(default)]
    pub fields: Option<FieldMap>,
    /// Keep only rows whose integer id lies in this inclusive range (MBPP's task-id splits).
    #[serde(default)]
    pub id_range: Option<[i64; 2]>,
    /// Skip the first N rows (after `id_range`), to take a slice from the middle of a file.
    #[serde(default)]
    pub skip: Option<usize>,
    /// Keep only the first N rows (after `id_range` and `skip`), for small recipes.
    #[serde(default)]
    pub limit: Option<usize>,
    /// `rollouts` only: which samples become training examples.
    #[serde(default)]
    pub select: Option<RolloutsSelection>,
    /// `rollouts` from a file only: a `prompts` snapshot that supplies, by question id, the
    /// question, gold answer, tests and domain a line does not carry.
    #[serde(default)]
    pub questions: Option<String>,
    /// `rollouts` from a file only: how math answers are read. Required for math lines without
    /// a `questions` snapshot (with one, each question's own source decides: `gsm8k*` sources
    /// read GSM8K's way).
    #[serde(default)]
    pub math_rules: Option<MathRules>,
}

/// How a math answer is found in a completion.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MathRules {
    /// GSM8K: a final number may stand alone (the last number of the text counts).
    Gsm8k,
    /// MATH: the answer must be marked (`\boxed{}`, "the answer is", `####`).
    Math,
}

impl Source {
    /// A source with only its name, path and format set (every option off).
    pub fn new(name: &str, path: &str, format: Format) -> Source {
        Source {
            name: name.into(),
            path: path.into(),
            format,
            domain: None,
            fields: None,
            id_range: None,
            skip: None,
            limit: None,
            select: None,
            questions: None,
            math_rules: None,
        }
    }
}

/// Whether a sample's verdict keeps it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Keep {
    /// Only samples the verifier accepts (rejection sampling).
    #[default]
    Correct,
    /// Every sample, whatever its verdict (SFT on self-generated data, no verifier).
    All,
}

/// How a `rollouts` source selects samples. Each rule drops with its own reason, checked in
/// this order: `question_all_correct` / `question_all_wrong`, `truncated`, `wrong`,
/// `duplicate_completion`, `over_max_per_question`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RolloutsSelection {
    #[serde(default)]
    pub keep: Keep,
    /// Drop samples cut off by the token budget (`finish: length`).
    #[serde(default = "yes")]
    pub drop_truncated: bool,
    /// Keep at most N samples per question (the first in order: sample order in a rollouts
    /// snapshot, line order in a file).
    #[serde(default)]
    pub max_per_question: Option<usize>,
    /// Keep one of each exact-duplicate completion of a question (the RFT paper's practice).
    #[serde(default)]
    pub collapse_duplicates: bool,
    /// Drop every sample of a question whose samples are all correct (nothing left to learn)...
    #[serde(default)]
    pub drop_all_correct: bool,
    /// ...or all wrong.
    #[serde(default)]
    pub drop_all_wrong: bool,
}

impl Default for RolloutsSelection {
    fn default() -> Self {
        RolloutsSelection {
            keep: Keep::Correct,
            drop_truncated: true,
            max_per_question: None,
            collapse_duplicates: false,
            drop_all_correct: false,
            drop_all_wrong: false,
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldMap {
    #[serde(default)]
    pub id: Option<String>,
    /// The prompt's column; or, for a conversation, `messages`.
    #[serde(default)]
    pub prompt: Option<String>,
    /// `generic` only, in place of `prompt` and `response`: a column holding a conversation, a
    /// list of `{"role": "system" | "user" | "assistant", "content": "..."}` turns (the format
    /// TRL and most chat datasets use). It ends with the assistant turn; every assistant turn
    /// is trained.
    // Left out when unset, so that the resolved recipe a manifest records (and so the snapshot
    // id) of a recipe written before it existed stays as it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub messages: Option<String>,
    /// With `messages` only: a column holding the conversation's system prompt, where a dataset
    /// keeps it apart from the turns (blank or null: none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system: Option<String>,
    #[serde(default)]
    pub response: Option<String>,
    #[serde(default)]
    pub gold: Option<String>,
    #[serde(default)]
    pub tests: Option<String>,
    /// `rollouts` only: the finish reason (`stop` or `length`; vLLM's `finish_reason`).
    #[serde(default)]
    pub finish: Option<String>,
    /// `rollouts` only: the sample index within its question (default: order of appearance).
    #[serde(default)]
    pub sample: Option<String>,
}

impl FieldMap {
    /// Each column named, with the key that names it (`("tests", "testz")`).
    pub fn named(&self) -> Vec<(&'static str, &str)> {
        let optional = [
            ("prompt", &self.prompt),
            ("messages", &self.messages),
            ("system", &self.system),
            ("id", &self.id),
            ("response", &self.response),
            ("gold", &self.gold),
            ("tests", &self.tests),
            ("finish", &self.finish),
            ("sample", &self.sample),
        ];
        optional.into_iter().filter_map(|(key, column)| Some((key, column.as_deref()?))).collect()
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IngestConfig {
    /// The build fails when more than this fraction of a source's rows is malformed.
    #[serde(default = "default_max_bad_fraction")]
    pub max_bad_fraction: f64,
}

impl Default for IngestConfig {
    fn default() -> Self {
        IngestConfig { max_bad_fraction: default_max_bad_fraction() }
    }
}

fn default_max_bad_fraction() -> f64 {
    0.01
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TextField {
    Prompt,
    Response,
    Any,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegexRule {
    pub field: TextField,
    pub pattern: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilterConfig {
    /// Bounds on the tokenized prompt + response length (no chat template).
    #[serde(default)]
    pub min_tokens: usize,
    #[serde(default)]
    pub max_tokens: Option<usize>,
    /// Drop math rows from whose response no final answer can be extracted (train snapshots),
    /// or that have no gold answer (prompt snapshots).
    #[serde(default = "yes")]
    pub require_math_answer: bool,
    /// Drop code rows whose response does not parse as Python (checked with `python3 -m ast`).
    #[serde(default = "yes")]
    pub require_python_parses: bool,
    /// A row must match every include rule...
    #[serde(default)]
    pub include: Vec<RegexRule>,
    /// ...and no exclude rule.
    #[serde(default)]
    pub exclude: Vec<RegexRule>,
}

impl Default for FilterConfig {
    fn default() -> Self {
        FilterConfig {
            min_tokens: 0,
            max_tokens: None,
            require_math_answer: true,
            require_python_parses: true,
            include: vec![],
            exclude: vec![],
        }
    }
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DedupConfig {
    #[serde(default = "yes")]
    pub exact: bool,
    #[serde(default)]
    pub near: NearDedupConfig,
}

impl Default for DedupConfig {
    fn default() -> Self {
        DedupConfig { exact: true, near: NearDedupConfig::default() }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NearDedupConfig {
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Word n-gram size of the shingles.
    #[serde(default = "default_shingle")]
    pub ngram: usize,
    #[serde(default = "default_bands")]
    pub bands: usize,
    #[serde(default = "default_rows")]
    pub rows: usize,
    /// Candidate pairs are kept as duplicates when their true Jaccard similarity is at least this.
    #[serde(default = "default_threshold")]
    pub threshold: f64,
}

impl Default for NearDedupConfig {
    fn default() -> Self {
        NearDedupConfig {
            enabled: true,
            ngram: default_shingle(),
            bands: default_bands(),
            rows: default_rows(),
            threshold: default_threshold(),
        }
    }
}

fn default_shingle() -> usize {
    5
}
fn default_bands() -> usize {
    14
}
fn default_rows() -> usize {
    8
}
fn default_threshold() -> f64 {
    0.8
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecontamConfig {
    /// Evaluation recipes whose sources are the benchmarks to decontaminate against.
    #[serde(default)]
    pub against: Vec<String>,
    #[serde(default = "default_contam_ngram")]
    pub ngram: usize,
    /// A training row overlaps a benchmark item when it contains at least this fraction of the
    /// item's distinct n-grams (0 = any single shared n-gram).
    #[serde(default = "default_min_overlap")]
    pub min_overlap: f64,
}

impl Default for DecontamConfig {
    fn default() -> Self {
        DecontamConfig { against: vec![], ngram: default_contam_ngram(), min_overlap: default_min_overlap() }
    }
}

fn default_min_overlap() -> f64 {
    0.5
}

fn default_contam_ngram() -> usize {
    8
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenizerConfig {
    /// A GGUF model file: tokenizer, special tokens and chat template come from its metadata.
    #[serde(default)]
    pub gguf: Option<String>,
    /// Or a Hugging Face model folder: `tokenizer.json`, the chat template (`chat_template.jinja`
    /// or `tokenizer_config.json`'s) and the special tokens of `tokenizer_config.json`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hf_dir: Option<String>,
    /// Or a Hugging Face `tokenizer.json`...
    #[serde(default)]
    pub tokenizer_json: Option<String>,
    /// ...with a Jinja chat template file (also overrides a GGUF's or a folder's template when set).
    #[serde(default)]
    pub chat_template: Option<String>,
    /// The end-of-turn token the loss mask must cover and generation stops on, e.g.
    /// `<|im_end|>`: required with `tokenizer_json`; with `gguf` or `hf_dir` it replaces the
    /// source's own, for base models whose `eos_token` ends the text (`<|endoftext|>`) while
    /// their chat template ends each turn with another token (Qwen2.5-Math-1.5B).
    #[serde(default)]
    pub eos_token: Option<String>,
    /// The begin-of-text token a chat template writes as `bos_token`, e.g. `<|begin_of_text|>`
    /// (`""` for none): with `tokenizer_json`, which does not say which token that is, required
    /// when the template writes `bos_token`; a GGUF or a folder names its own. Omitted from the
    /// manifest when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bos_token: Option<String>,
    /// A system message placed before every prompt; when absent the template's default applies.
    #[serde(default)]
    pub system_prompt: Option<String>,
    /// Variables the chat template is rendered with besides the messages, as transformers'
    /// `apply_chat_template(..., **kwargs)` passes them: `{enable_thinking: false}` for Qwen3.
    /// Omitted from the manifest when empty, so recipes without it record what they did before.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub template_vars: std::collections::BTreeMap<String, serde_json::Value>,
}

impl TokenizerConfig {
    /// Tokenize with `model`'s own tokenizer and chat template (a GGUF file or a Hugging Face
    /// folder) instead of the ones named here; the system prompt, template variables and
    /// end-of-turn token stay.
    /// The path is made absolute, since recipe paths are read relative to the recipe.
    /// A lone `.safetensors` file stands for the folder it is in.
    pub fn use_model(&mut self, model: &Path) -> anyhow::Result<()> {
        let is = |ext: &str| model.extension().is_some_and(|e| e.eq_ignore_ascii_case(ext));
        let gguf = is("gguf");
        let model = if is("safetensors") { model.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new(".")) } else { model };
        if gguf && !model.is_file() {
            bail!("--tokenizer {}: no such file", model.display());
        }
        if !gguf && !model.is_dir() {
            bail!("--tokenizer {}: expected a GGUF file or a Hugging Face model folder", model.display());
        }
        let abs = std::path::absolute(model).with_context(|| format!("--tokenizer {}", model.display()))?.display().to_string();
        *self = TokenizerConfig {
            gguf: gguf.then(|| abs.clone()),
            hf_dir: (!gguf).then_some(abs),
            tokenizer_json: None,
            chat_template: None,
            eos_token: self.eos_token.take(),
            // The model names its own.
            bos_token: None,
            system_prompt: self.system_prompt.take(),
            template_vars: std::mem::take(&mut self.template_vars),
        };
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Overlong {
    Drop,
    Truncate,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PackConfig {
    #[serde(default = "default_seq_len")]
    pub seq_len: usize,
    /// What to do with an example longer than `seq_len`.
    #[serde(default = "default_overlong")]
    pub overlong: Overlong,
}

impl Default for PackConfig {
    fn default() -> Self {
        PackConfig { seq_len: default_seq_len(), overlong: default_overlong() }
    }
}

fn default_seq_len() -> usize {
    2048
}
fn default_overlong() -> Overlong {
    Overlong::Drop
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WriteConfig {
    #[serde(default = "default_rows_per_shard")]
    pub rows_per_shard: usize,
    #[serde(default = "default_row_group")]
    pub row_group_rows: usize,
    #[serde(default = "default_zstd")]
    pub zstd_level: i32,
}

impl Default for WriteConfig {
    fn default() -> Self {
        WriteConfig { rows_per_shard: default_rows_per_shard(), row_group_rows: default_row_group(), zstd_level: default_zstd() }
    }
}

fn default_rows_per_shard() -> usize {
    512
}
fn default_row_group() -> usize {
    256
}
fn default_zstd() -> i32 {
    3
}

impl Recipe {
    /// A section's values as this recipe has them (its defaults, for a section it leaves out),
    /// as one line of JSON.
    pub fn stage_json(&self, stage: &str) -> String {
        serde_json::to_value(self).map(|v| v[stage].to_string()).unwrap_or_default()
    }

    /// Read and validate a recipe. Errors name the file, and for unknown keys the key.
    pub fn load(path: &Path) -> anyhow::Result<Recipe> {
        let text = std::fs::read_to_string(path).with_context(|| format!("cannot read recipe {}", path.display()))?;
        Self::parse(&text, path)
    }

    pub fn parse(text: &str, path: &Path) -> anyhow::Result<Recipe> {
        let mut recipe: Recipe = serde_norway::from_str(text).map_err(|e| {
            // The two kinds of recipe sit side by side in datasets/recipes/, and a training
            // recipe's first complaint (`unknown field model`) does not say which tool it is for.
            let hint = if serde_norway::from_str::<crate::train::TrainRecipe>(text).is_ok() {
                format!("\n  this is a training recipe: run it with `trainer train --recipe {}`", path.display())
            } else {
                String::new()
            };
            anyhow::anyhow!("recipe {}: {e}{hint}", path.display())
        })?;
        let keys: serde_norway::Mapping = serde_norway::from_str(text).unwrap_or_default();
        recipe.seed_given = keys.contains_key("seed");
        recipe.defaulted_stages = recipe.kind.content_stages().iter().copied().filter(|s| !keys.contains_key(*s)).collect();
        recipe.validate().with_context(|| format!("recipe {}", path.display()))?;
        Ok(recipe)
    }

    fn validate(&self) -> anyhow::Result<()> {
        if self.kind == SnapshotKind::Rollouts {
            bail!("`kind: rollouts` snapshots are written by `trainer sample`, not built from a recipe (kinds: train, prompts)");
        }
        if self.sources.is_empty() {
            bail!("`sources` is empty: name at least one input file");
        }
        let mut names: Vec<&str> = self.sources.iter().map(|s| s.name.as_str()).collect();
        names.sort();
        if let Some(w) = names.windows(2).find(|w| w[0] == w[1]) {
            bail!("source name `{}` is used twice; names must be unique", w[0]);
        }
        for s in &self.sources {
            if s.format == Format::Generic && (s.fields.is_none() || s.domain.is_none()) {
                bail!("source `{}`: format `generic` needs `fields` and `domain`", s.name);
            }
            if let Some(f) = &s.fields {
                let conversation = f.messages.is_some();
                if conversation && s.format != Format::Generic {
                    bail!("source `{}`: `fields.messages` belongs to format `generic`", s.name);
                }
                if s.format == Format::Generic && conversation == f.prompt.is_some() {
                    bail!("source `{}`: `fields` names either `prompt` (and `response`) or `messages` (a conversation)", s.name);
                }
                if f.system.is_some() && !conversation {
                    bail!("source `{}`: `fields.system` is the system prompt of a conversation; it needs `fields.messages`", s.name);
                }
                if conversation && f.response.is_some() {
                    bail!("source `{}`: `fields.messages` holds the response (the last assistant turn); `response` does not apply", s.name);
                }
                if conversation && self.kind != SnapshotKind::Train {
                    bail!(
                        "source `{}`: conversations (`fields.messages`) are for `train` recipes; prompts snapshots hold one prompt per row",
                        s.name
                    );
                }
            }
            if s.name.contains('/') {
                bail!("source `{}`: names may not contain '/'", s.name);
            }
            let rollouts = s.format == Format::Rollouts;
            // A built-in adapter reads its own columns and knows its domain: `fields` or `domain`
            // there would be ignored (or quietly relabel every row), so they are refused.
            if !rollouts && s.format != Format::Generic && (s.fields.is_some() || s.domain.is_some()) {
                bail!(
                    "source `{}`: a built-in format reads its own columns and knows its domain; `fields` and `domain` are \
                     for formats `generic` and `rollouts` (use `generic` to read other columns)",
                    s.name
                );
            }
            if !rollouts && (s.select.is_some() || s.questions.is_some() || s.math_rules.is_some()) {
                bail!("source `{}`: `select`, `questions` and `math_rules` belong to format `rollouts`", s.name);
            }
            if !rollouts && s.fields.as_ref().is_some_and(|f| f.finish.is_some() || f.sample.is_some()) {
                bail!("source `{}`: `fields.finish` and `fields.sample` belong to format `rollouts`", s.name);
            }
            if rollouts && (s.id_range.is_some() || s.skip.is_some()) {
                bail!("source `{}`: format `rollouts` selects with `select` and `limit`; `id_range` and `skip` do not apply", s.name);
            }
            // Only these adapters read an integer id: elsewhere every row would fall outside.
            if s.id_range.is_some() && !matches!(s.format, Format::Mbpp | Format::QwenMath | Format::Generic) {
                bail!(
                    "source `{}`: `id_range` selects by integer id, which this format does not read (formats mbpp, \
                     qwen_math and generic do); use `skip` and `limit`",
                    s.name
                );
            }
            if let Some([lo, hi]) = s.id_range.filter(|[lo, hi]| lo > hi) {
                bail!("source `{}`: `id_range` [{lo}, {hi}] is empty (the first bound is above the second)", s.name);
            }
            if rollouts && self.kind != SnapshotKind::Train {
                bail!("source `{}`: rollouts become training examples; the recipe's `kind` must be `train`", s.name);
            }
        }
        let t = &self.tokenizer;
        if [t.gguf.is_some(), t.hf_dir.is_some(), t.tokenizer_json.is_some()].iter().filter(|&&s| s).count() != 1 {
            bail!("`tokenizer` needs exactly one of `gguf`, `hf_dir` or `tokenizer_json`");
        }
        if t.tokenizer_json.is_some() && (t.chat_template.is_none() || t.eos_token.is_none()) {
            bail!("`tokenizer.tokenizer_json` needs `chat_template` and `eos_token` too");
        }
        if t.tokenizer_json.is_none() && t.bos_token.is_some() {
            bail!("`tokenizer.bos_token` goes with `tokenizer_json`: a GGUF or a model folder names its own begin token");
        }
        let n = &self.dedup.near;
        if n.bands == 0 || n.rows == 0 || n.ngram == 0 || !(0.0..=1.0).contains(&n.threshold) {
            bail!("`dedup.near`: bands, rows and ngram must be positive and threshold in [0, 1]");
        }
        let d = &self.decontaminate;
        // Out of range, either would quietly turn decontamination off (`min_overlap: 50` meant
        // as a percentage never matches) while the manifest still reports it as done.
        if d.ngram == 0 || !(0.0..=1.0).contains(&d.min_overlap) {
            bail!(
                "`decontaminate`: ngram must be positive and min_overlap a fraction in [0, 1] (got ngram {}, min_overlap {})",
                d.ngram,
                d.min_overlap
            );
        }
        if !(0.0..=1.0).contains(&self.ingest.max_bad_fraction) {
            bail!("`ingest.max_bad_fraction` must be a fraction in [0, 1] (got {})", self.ingest.max_bad_fraction);
        }
        if let Some(max) = self.filter.max_tokens.filter(|&max| max < self.filter.min_tokens) {
            bail!("`filter`: max_tokens {max} is below min_tokens {}: every row would be dropped", self.filter.min_tokens);
        }
        if self.pack.seq_len < 16 {
            bail!("`pack.seq_len` must be at least 16");
        }
        if self.write.rows_per_shard == 0 || self.write.row_group_rows == 0 {
            bail!("`write.rows_per_shard` and `write.row_group_rows` must be positive");
        }
        // Parquet's zstd levels; checked here so that a typo fails before the stages run.
        if !(1..=22).contains(&self.write.zstd_level) {
            bail!("`write.zstd_level` must be in 1..=22 (zstd's levels; got {})", self.write.zstd_level);
        }
        Ok(())
    }
}

/// Resolve a path written in a recipe against the recipe's folder, folding `..` lexically so
/// messages and manifests show `models/x.gguf` rather than `datasets/recipes/../../models/x.gguf`.
pub fn resolve(recipe_path: &Path, rel: &str) -> PathBuf {
    use std::path::Component;
    let p = Path::new(rel);
    let joined = if p.is_absolute() { p.to_path_buf() } else { recipe_path.parent().unwrap_or(Path::new(".")).join(p) };
    let mut out = PathBuf::new();
    for c in joined.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir if matches!(out.components().next_back(), Some(Component::Normal(_))) => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    if out.as_os_str().is_empty() {
        out.push(".");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = "name: t\nsources:\n  - {name: a, path: a.jsonl, format: gsm8k}\ntokenizer: {gguf: m.gguf}\n";

    #[test]
    fn defaults_match_the_documented_values() {
        let r = Recipe::parse(MINIMAL, Path::new("r.yaml")).unwrap();
        assert_eq!(r.pack.seq_len, 2048);
        assert_eq!((r.dedup.near.ngram, r.dedup.near.bands, r.dedup.near.rows), (5, 14, 8));
        assert_eq!(r.dedup.near.threshold, 0.8);
        assert_eq!(r.decontaminate.ngram, 8);
        assert_eq!(r.kind, SnapshotKind::Train);
        assert_eq!((r.seed, r.seed_given), (0, false));
        assert_eq!(r.defaulted_stages, ["filter", "dedup", "decontaminate", "pack"]);
        let r = Recipe::parse(&format!("{MINIMAL}seed: 0\n"), Path::new("r.yaml")).unwrap();
        assert_eq!((r.seed, r.seed_given), (0, true), "an explicit 0 is given");
        // Named, even empty, is chosen; a prompts snapshot is not decontaminated nor packed.
        let r = Recipe::parse(&format!("{MINIMAL}dedup: {{}}\npack: {{seq_len: 512}}\n"), Path::new("r.yaml")).unwrap();
        assert_eq!(r.defaulted_stages, ["filter", "decontaminate"]);
        let r = Recipe::parse(&format!("{MINIMAL}kind: prompts\n"), Path::new("r.yaml")).unwrap();
        assert_eq!(r.defaulted_stages, ["filter", "dedup"]);
        let dedup: serde_json::Value = serde_json::from_str(&r.stage_json("dedup")).unwrap();
        assert_eq!(
            dedup,
            serde_json::json!({"exact": true, "near": {"enabled": true, "ngram": 5, "bands": 14, "rows": 8, "threshold": 0.8}})
        );
    }

    #[test]
    fn out_of_range_fractions_are_errors() {
        for (bad, what) in [
            ("decontaminate: {min_overlap: 50}", "min_overlap"),
            ("decontaminate: {ngram: 0}", "ngram must be positive"),
            ("ingest: {max_bad_fraction: 5}", "max_bad_fraction"),
            ("filter: {min_tokens: 500, max_tokens: 100}", "max_tokens 100 is below min_tokens 500"),
            ("write: {zstd_level: 40}", "write.zstd_level"),
        ] {
            let err = format!("{:#}", Recipe::parse(&format!("{MINIMAL}{bad}\n"), Path::new("r.yaml")).unwrap_err());
            assert!(err.contains(what) && err.contains("r.yaml"), "{bad}: {err}");
        }
    }

    #[test]
    fn a_conversation_column_stands_alone_in_a_generic_train_source() {
        let with = |kind: &str, source: &str| {
            let text = format!("name: t\nkind: {kind}\nsources:\n  - {source}\ntokenizer: {{gguf: m.gguf}}\n");
            Recipe::parse(&text, Path::new("r.yaml")).map(|_| ()).map_err(|e| format!("{e:#}"))
        };
        let generic = |fields: &str| format!("{{name: c, path: c.jsonl, format: generic, domain: math, fields: {{{fields}}}}}");
        assert_eq!(with("train", &generic("messages: m")), Ok(()));
        assert_eq!(with("train", &generic("messages: m, id: i, gold: g")), Ok(()));
        for (kind, source, said) in [
            ("train", generic("messages: m, prompt: p"), "either `prompt` (and `response`) or `messages`"),
            ("train", generic("id: i"), "either `prompt` (and `response`) or `messages`"),
            ("train", generic("messages: m, response: r"), "`response` does not apply"),
            ("train", generic("prompt: p, system: s"), "`fields.system` is the system prompt of a conversation"),
            ("prompts", generic("messages: m"), "conversations (`fields.messages`) are for `train` recipes"),
            (
                "train",
                "{name: r, path: r.jsonl, format: rollouts, fields: {messages: m, id: i, response: r}}".to_string(),
                "`fields.messages` belongs to format `generic`",
            ),
        ] {
            let e = with(kind, &source).unwrap_err();
            assert!(e.contains(said), "{source}: {e}");
        }
    }

    #[test]
    fn unknown_key_is_an_error_naming_key_and_file() {
        let text = MINIMAL.replace("tokenizer:", "pack: {seq_lenght: 10}\ntokenizer:");
        let err = Recipe::parse(&text, Path::new("recipes/bad.yaml")).unwrap_err().to_string();
        assert!(err.contains("seq_lenght"), "{err}");
        assert!(err.contains("recipes/bad.yaml"), "{err}");
    }

    #[test]
    fn unknown_source_key_is_an_error() {
        let text = MINIMAL.replace("format: gsm8k", "format: gsm8k, lmit: 3");
        let err = Recipe::parse(&text, Path::new("r.yaml")).unwrap_err().to_string();
        assert!(err.contains("lmit"), "{err}");
    }

    #[test]
    fn paths_resolve_against_the_recipe_folder() {
        let r = Path::new("datasets/recipes/default.yaml");
        assert_eq!(resolve(r, "../../models/m.gguf"), Path::new("models/m.gguf"));
        assert_eq!(resolve(r, "../raw/a.jsonl"), Path::new("datasets/raw/a.jsonl"));
        assert_eq!(resolve(Path::new("r.yaml"), "../x"), Path::new("../x"));
        assert_eq!(resolve(r, "/abs/x"), Path::new("/abs/x"));
    }

    #[test]
    fn generic_source_needs_fields() {
        let text = MINIMAL.replace("format: gsm8k", "format: generic");
        let err = format!("{:#}", Recipe::parse(&text, Path::new("r.yaml")).unwrap_err());
        assert!(err.contains("needs `fields`"), "{err}");
    }

    #[test]
    fn settings_the_build_would_ignore_are_errors() {
        for (from, to, what) in [
            ("format: gsm8k", "format: gsm8k, fields: {prompt: q, response: a}", "reads its own columns"),
            ("format: gsm8k", "format: gsm8k, domain: code", "reads its own columns"),
            ("format: gsm8k", "format: gsm8k, id_range: [0, 9]", "`id_range` selects by integer id"),
            ("format: gsm8k", "format: mbpp, id_range: [9, 0]", "`id_range` [9, 0] is empty"),
            ("{gguf: m.gguf}", "{gguf: m.gguf, bos_token: \"<s>\"}", "names its own begin token"),
        ] {
            let text = MINIMAL.replace(from, to);
            let err = format!("{:#}", Recipe::parse(&text, Path::new("r.yaml")).unwrap_err());
            assert!(err.contains(what) && err.contains("r.yaml"), "{to}: {err}");
        }
    }
}
