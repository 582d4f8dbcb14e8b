//! `pipeline build`: run every stage of a recipe in order and write the snapshot atomically.
//!
//! The snapshot is assembled in a hidden temp folder beside `out` and renamed into place only
//! when every file, the manifest last, is written: a failed run leaves no half snapshot that
//! looks complete.

use crate::decontaminate::{self, Benchmark};
use crate::pack;
use crate::{dedup, filter, ingest, tokenize, write};
use anyhow::{bail, Context};
use model_files::tokenizer::ChatTokenizer;
use schemas::manifest::{Manifest, RecipeInfo, FORMAT_VERSION, MANIFEST_FILE};
use schemas::recipe::{self, Recipe, SnapshotKind};
use schemas::snapshot::{self, StageTiming, DROPPED_FILE, QUARANTINE_FILE, TEMPLATE_FILE, TIMINGS_FILE, TOKENIZER_FILE};
use schemas::{Dropped, Example, StageReport};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Collects stage reports, dropped rows and timings as the build goes.
struct Ledger {
    stages: Vec<StageReport>,
    dropped: Vec<Dropped>,
    timings: Vec<StageTiming>,
    clock: Instant,
}

impl Ledger {
    /// Fails when no row is left, naming where the rows went: an empty snapshot trains and
    /// evaluates nothing, and every empty snapshot would have the same id.
    fn ensure_rows(&self, rows: usize) -> anyhow::Result<()> {
        if rows > 0 {
            return Ok(());
        }
        let stages: Vec<String> = self
            .stages
            .iter()
            .filter(|s| s.rows_in > s.rows_out)
            .map(|s| {
                // With the first row's detail: dropped.jsonl, which has them all, is not written.
                let why: Vec<String> = s
                    .dropped
                    .iter()
                    .map(|(reason, n)| {
                        let first = self.dropped.iter().find(|d| d.stage == s.stage && d.reason == *reason && !d.detail.is_empty());
                        match first {
                            Some(d) => format!("{reason}={n}, the first {}: {}", d.id, d.detail),
                            None => format!("{reason}={n}"),
                        }
                    })
                    .collect();
                format!("{} dropped {} of {} ({})", s.stage, s.rows_in - s.rows_out, s.rows_in, why.join("; "))
            })
            .collect();
        if stages.is_empty() {
            bail!("no rows to write: the sources hold no rows");
        }
        bail!("no rows to write: {}. Loosen the recipe or check its sources", stages.join("; "))
    }

    fn record(&mut self, report: StageReport, dropped: Vec<Dropped>, tokens: u64) {
        let seconds = self.clock.elapsed().as_secs_f64();
        assert!(report.balanced(), "stage {} lost rows: {report:?}", report.stage);
        tracing::info!(
            "{:<14} {:>7} in {:>7} out {:>6} dropped  {:.2}s",
            report.stage,
            report.rows_in,
            report.rows_out,
            report.rows_in - report.rows_out,
            seconds
        );
        self.timings.push(StageTiming {
            stage: report.stage.clone(),
            seconds,
            rows_in: report.rows_in,
            rows_per_second: report.rows_in as f64 / seconds.max(1e-9),
            tokens,
            tokens_per_second: tokens as f64 / seconds.max(1e-9),
        });
        self.stages.push(report);
        self.dropped.extend(dropped);
        self.clock = Instant::now();
    }
}

fn stage(name: &str, rows_in: usize, rows_out: usize, dropped: &[Dropped]) -> StageReport {
    StageReport::new(name, rows_in, rows_out, dropped)
}

pub fn load_tokenizer(recipe: &Recipe, recipe_path: &Path) -> anyhow::Result<(ChatTokenizer, PathBuf)> {
    let t = &recipe.tokenizer;
    let template = match &t.chat_template {
        Some(p) => {
            let path = recipe::resolve(recipe_path, p);
            Some(std::fs::read_to_string(&path).with_context(|| format!("cannot read chat template {}", path.display()))?)
        }
        None => None,
    };
    if let Some(gguf) = &t.gguf {
        let path = recipe::resolve(recipe_path, gguf);
        // Names `make model` only where the file is the default model.
        model_files::checkpoint::check_model_path(&path).with_context(|| format!("tokenizer.gguf of {}", recipe_path.display()))?;
        let tokenizer = ChatTokenizer::from_gguf(&path, t.system_prompt.clone(), template)?;
        Ok((with_template_vars(with_eos_token(tokenizer, t, recipe_path)?, t, recipe_path)?, path))
    } else if let Some(dir) = &t.hf_dir {
        let dir = recipe::resolve(recipe_path, dir);
        if !dir.join(TOKENIZER_FILE).exists() {
            bail!("{} has no {TOKENIZER_FILE} (from tokenizer.hf_dir in {})", dir.display(), recipe_path.display());
        }
        let tokenizer = ChatTokenizer::from_hf_dir(&dir, t.system_prompt.clone(), template)
            .with_context(|| format!("tokenizer.hf_dir in {}", recipe_path.display()))?;
        // The manifest hashes the file the tokens come from.
        Ok((with_template_vars(with_eos_token(tokenizer, t, recipe_path)?, t, recipe_path)?, dir.join(TOKENIZER_FILE)))
    } else {
        let path = recipe::resolve(recipe_path, t.tokenizer_json.as_deref().expect("validated"));
        let tpl = recipe::resolve(recipe_path, t.chat_template.as_deref().expect("validated"));
        let eos = t.eos_token.as_deref().expect("validated");
        let tokenizer = ChatTokenizer::from_tokenizer_json(&path, &tpl, eos, t.bos_token.as_deref(), t.system_prompt.clone())
            .with_context(|| format!("tokenizer.tokenizer_json in {}", recipe_path.display()))?;
        Ok((with_template_vars(tokenizer, t, recipe_path)?, path))
    }
}

/// The recipe's `tokenizer.eos_token` in place of a GGUF's or a folder's own, an error naming the
/// recipe and the field.
fn with_eos_token(tokenizer: ChatTokenizer, t: &recipe::TokenizerConfig, recipe_path: &Path) -> anyhow::Result<ChatTokenizer> {
    match &t.eos_token {
        Some(e) => tokenizer.with_eos_token(e).with_context(|| format!("{}: tokenizer.eos_token", recipe_path.display())),
        None => Ok(tokenizer),
    }
}

/// The recipe's `tokenizer.template_vars` applied, an error naming the recipe and the field.
fn with_template_vars(tokenizer: ChatTokenizer, t: &recipe::TokenizerConfig, recipe_path: &Path) -> anyhow::Result<ChatTokenizer> {
    tokenizer.with_template_vars(t.template_vars.clone()).with_context(|| format!("{}: tokenizer.template_vars", recipe_path.display()))
}

/// Build the snapshot of `recipe_path` into `out`. With `force`, an existing snapshot is replaced.
pub fn build(recipe_path: &Path, out: &Path, force: bool) -> anyhow::Result<Manifest> {
    build_with(recipe_path, out, force, &TokenizerOverride::default())
}

/// What `pipeline build --tokenizer MODEL --eos-token TOKEN` puts in place of the recipe's
/// tokenizer settings; the manifest's resolved recipe records the result.
#[derive(Debug, Clone, Copy, Default)]
pub struct TokenizerOverride<'a> {
    /// A model (GGUF file or Hugging Face folder) whose tokenizer and template to use, as
    /// [`recipe::TokenizerConfig::use_model`] says.
    pub model: Option<&'a Path>,
    /// The end-of-turn token (`tokenizer.eos_token`).
    pub eos_token: Option<&'a str>,
}

/// [`build`] with the recipe's tokenizer settings overridden.
pub fn build_with(recipe_path: &Path, out: &Path, force: bool, over: &TokenizerOverride) -> anyhow::Result<Manifest> {
    snapshot::check_replaceable(out, force)?;
    snapshot::publish_dir(out, |dir| build_into(recipe_path, dir, over))
}

fn build_into(recipe_path: &Path, dir: &Path, over: &TokenizerOverride) -> anyhow::Result<Manifest> {
    let recipe_bytes = std::fs::read(recipe_path).with_context(|| format!("cannot read recipe {}", recipe_path.display()))?;
    let text = std::str::from_utf8(&recipe_bytes).with_context(|| format!("recipe {} is not UTF-8", recipe_path.display()))?;
    let mut recipe = Recipe::parse(text, recipe_path)?;
    if let Some(model) = over.model {
        recipe.tokenizer.use_model(model)?;
    }
    if let Some(eos) = over.eos_token {
        anyhow::ensure!(
            recipe.tokenizer.tokenizer_json.is_none() || over.model.is_some(),
            "--eos-token: a `tokenizer_json` recipe names its end-of-turn token itself (`eos_token`)"
        );
        recipe.tokenizer.eos_token = Some(eos.to_string());
    }
    if recipe.kind == SnapshotKind::Train && !recipe.seed_given {
        // The shuffle decides which examples share a packed row, and so what a step trains on.
        tracing::warn!(
            "{} names no `seed`: the row shuffle and MinHash permutations use 0 (write `seed: N` to choose)",
            recipe_path.display()
        );
    }
    if recipe.kind == SnapshotKind::Train && recipe.decontaminate.against.is_empty() {
        // Off unless named: a training set that holds benchmark questions inflates every score
        // measured on them.
        tracing::warn!(
            "{} decontaminates against no benchmark (`decontaminate.against` is empty): rows that hold evaluation questions are kept",
            recipe_path.display()
        );
    }
    if !recipe.defaulted_stages.is_empty() {
        let stages: Vec<String> = recipe.defaulted_stages.iter().map(|s| format!("{s} {}", recipe.stage_json(s))).collect();
        tracing::warn!("{} leaves these stages to their defaults: {}", recipe_path.display(), stages.join("; "));
    }
    // A bad pattern fails now, naming its rule, not after ingest.
    filter::check_patterns(&recipe.filter).with_context(|| format!("recipe {}", recipe_path.display()))?;
    let mut ledger = Ledger { stages: vec![], dropped: vec![], timings: vec![], clock: Instant::now() };

    let (tok, tok_path) = match over.model {
        Some(m) => load_tokenizer(&recipe, recipe_path).with_context(|| format!("--tokenizer {}", m.display()))?,
        None => load_tokenizer(&recipe, recipe_path)?,
    };
    let tok_info = tok.info(&tok_path)?;

    let ing = ingest::ingest(&recipe.sources, recipe_path, &recipe.ingest, "", Some(&tok))?;
    let mut inputs = ing.inputs;
    let quarantine = ing.quarantine;
    let rollout_sources = ing.rollout_sources;
    ledger.record(ing.report, ing.dropped, 0);
    let examples = ing.examples;

    let n = examples.len();
    let (examples, dropped) = filter::filter(examples, &recipe.filter, recipe.kind, &tok)?;
    ledger.record(stage(filter::STAGE, n, examples.len(), &dropped), dropped, 0);

    let examples = if recipe.dedup.exact {
        let n = examples.len();
        let (kept, dropped) = dedup::exact_dedup(examples);
        ledger.record(stage("exact_dedup", n, kept.len(), &dropped), dropped, 0);
        kept
    } else {
        examples
    };
    let examples = if recipe.dedup.near.enabled {
        let n = examples.len();
        let (kept, dropped, stats) = dedup::near_dedup(examples, &recipe.dedup.near, recipe.seed);
        tracing::info!("near-dedup: {stats:?}");
        ledger.record(stage("near_dedup", n, kept.len(), &dropped), dropped, 0);
        kept
    } else {
        examples
    };

    let mut contamination = vec![];
    let examples = if recipe.decontaminate.against.is_empty() {
        examples
    } else {
        let mut benchmarks = vec![];
        for rel in &recipe.decontaminate.against {
            let path = recipe::resolve(recipe_path, rel);
            let bench = Recipe::load(&path).with_context(|| format!("decontaminate.against `{rel}`"))?;
            let got = ingest::ingest(&bench.sources, &path, &bench.ingest, &format!("benchmark:{}/", bench.name), None)?;
            inputs.extend(got.inputs);
            if !got.quarantine.is_empty() {
                tracing::warn!(
                    "decontaminate: {} rows of benchmark {} are malformed and not checked against (first: {}:{})",
                    got.quarantine.len(),
                    bench.name,
                    got.quarantine[0].file,
                    got.quarantine[0].line
                );
            }
            benchmarks.push(Benchmark { name: bench.name, items: got.examples, malformed: got.quarantine.len() });
        }
        let n = examples.len();
        let (kept, dropped, report) =
            decontaminate::decontaminate(examples, &benchmarks, recipe.decontaminate.ngram, recipe.decontaminate.min_overlap);
        for r in &report {
            tracing::info!(
                "decontaminate: {}: {} training rows overlap {} of {} items",
                r.benchmark,
                r.contaminated_rows,
                r.contaminated_items,
                r.items
            );
        }
        contamination = report;
        ledger.record(stage("decontaminate", n, kept.len(), &dropped), dropped, 0);
        kept
    };

    let (shards, packing) = match recipe.kind {
        SnapshotKind::Train => {
            let (rows, packing) = tokenize_and_pack(examples, &recipe, &tok, tok_info.pad_id, &mut ledger)?;
            ledger.ensure_rows(rows.len())?;
            let mut shards = vec![];
            let chunks: Vec<&[pack::PackedRow]> = rows.chunks(recipe.write.rows_per_shard).collect();
            for (i, chunk) in chunks.iter().enumerate() {
                let batch = write::train_batch(chunk, i * recipe.write.rows_per_shard)?;
                let file = format!("train-{i:05}-of-{:05}.parquet", chunks.len());
                shards.push(snapshot::write_shard(dir, &file, &batch, &recipe.write, &[schemas::shard::EXAMPLE_IDS])?);
            }
            let tokens = packing.tokens;
            ledger.record(stage("write", rows.len(), rows.len(), &[]), vec![], tokens);
            (shards, Some(packing))
        }
        SnapshotKind::Prompts => {
            let n = examples.len();
            let (rows, dropped) = tokenize::tokenize_prompts(&examples, &tok);
            let tokens: u64 = rows.iter().map(|r| r.ids.len() as u64).sum();
            let kept = rows.len();
            ledger.record(stage(tokenize::STAGE, n, kept, &dropped), dropped, tokens);
            ledger.ensure_rows(kept)?;
            let batch = write::prompts_batch(&rows)?;
            let shard = snapshot::write_shard(dir, "prompts-00000-of-00001.parquet", &batch, &recipe.write, &["source", "domain"])?;
            ledger.record(stage("write", kept, kept, &[]), vec![], tokens);
            (vec![shard], None)
        }
        SnapshotKind::Rollouts => bail!("recipe validation admits no `rollouts` kind"),
    };

    let dropped_text: String = ledger.dropped.iter().map(|d| serde_json::to_string(d).expect("serialises") + "\n").collect();
    let sidecars = vec![
        snapshot::write_sidecar(dir, QUARANTINE_FILE, &ingest::quarantine_jsonl(&quarantine))?,
        snapshot::write_sidecar(dir, DROPPED_FILE, &dropped_text)?,
        snapshot::write_sidecar(dir, TOKENIZER_FILE, &tok.tokenizer_json())?,
        snapshot::write_sidecar(dir, TEMPLATE_FILE, tok.chat_template())?,
    ];

    let mut seeds = BTreeMap::new();
    seeds.insert("recipe".to_string(), recipe.seed);
    let mut conventions = BTreeMap::new();
    conventions.insert(
        "loss_mask".into(),
        "aligned with input_ids: loss_mask[i]=1 means input_ids[i] is a target predicted at position i-1; the first token of every packed example is 0".into(),
    );
    conventions
        .insert("segment_ids".into(), "1..k for the examples of a row in order, 0 for padding; attention must not cross segments".into());
    conventions.insert("position_ids".into(), "restart at 0 for every packed example; 0 on padding".into());
    conventions.insert(
        "ref_logprobs".into(),
        "aligned like loss_mask: log p_ref(input_ids[i] | tokens before i in its example); null until scored".into(),
    );

    let manifest = Manifest {
        format_version: FORMAT_VERSION,
        snapshot_id: Manifest::snapshot_id_for(&shards),
        name: recipe.name.clone(),
        kind: recipe.kind,
        recipe: RecipeInfo {
            path: recipe_path.display().to_string(),
            sha256: schemas::sha256_hex(&recipe_bytes),
            resolved: serde_json::to_value(&recipe)?,
        },
        inputs,
        tokenizer: tok_info,
        seeds,
        stages: ledger.stages,
        decontamination: contamination,
        packing,
        shards,
        sidecars,
        conventions,
        ref_logprobs: None,
        rollouts: None,
        rollout_sources,
        tool: format!("rectify-pipeline {}", env!("CARGO_PKG_VERSION")),
    };
    std::fs::write(dir.join(TIMINGS_FILE), serde_json::to_string_pretty(&ledger.timings)? + "\n")?;
    schemas::write_atomic(&dir.join(MANIFEST_FILE), manifest.to_json().as_bytes())?;
    Ok(manifest)
}

fn tokenize_and_pack(
    examples: Vec<Example>,
    recipe: &Recipe,
    tok: &ChatTokenizer,
    pad_id: u32,
    ledger: &mut Ledger,
) -> anyhow::Result<(Vec<pack::PackedRow>, schemas::manifest::PackingReport)> {
    let n = examples.len();
    let (items, dropped) = tokenize::tokenize_chats(&examples, tok);
    let tokens: u64 = items.iter().map(|t| t.ids.len() as u64).sum();
    ledger.record(stage(tokenize::STAGE, n, items.len(), &dropped), dropped, tokens);

    let n = items.len();
    let (rows, dropped, report) = pack::pack(items, &recipe.pack, pad_id, recipe.seed);
    ledger.record(stage(pack::STAGE, n, n - dropped.len(), &dropped), dropped, tokens);
    tracing::info!("packing: {} rows of {} tokens, efficiency {:.2}%", report.rows, report.seq_len, 100.0 * report.efficiency);
    Ok((rows, report))
}
