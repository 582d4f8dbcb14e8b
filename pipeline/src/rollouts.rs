//! The `rollouts` source format: sampled completions become training examples (rejection
//! sampling's second half).
//!
//! A source is either a rollouts snapshot (`trainer sample`; its verdicts are its own, checked
//! against its manifest) or a JSONL / Parquet file another engine wrote (vLLM, SGLang, ...), one
//! completion per line, which is verified here with the same verifier and sandbox. Then the
//! source's `select` rules pick the samples to train on; every sample not kept is dropped with
//! its reason, and a line that cannot be read goes to the quarantine with file, line and field.
//!
//! File lines are read through `fields` (default: `question_id`, `question`, `completion`,
//! `gold`, `tests`, `finish_reason`, `sample`; a map without `finish` or `sample` still reads
//! them under their default names). The completion may also be a list (an engine
//! asked for n samples per request: strings, or objects with `text` and `finish_reason` as vLLM
//! and SGLang write them), whose items are samples 0..n. A line may leave out the question, gold
//! answer and tests when the source names a `questions` snapshot (`prompts` kind) to look them
//! up by question id. Without a finish reason a sample counts as not truncated.

use crate::ingest::{field_err, read_rows, type_name, FieldError, QuarantineRow, Row, STAGE};
use anyhow::{bail, Context};
use model_files::tokenizer::ChatTokenizer;
use schemas::generation::Finish;
use schemas::manifest::{InputFile, RolloutsOrigin, MANIFEST_FILE};
use schemas::prompts::{load_prompts, Prompt};
use schemas::recipe::{FieldMap, Keep, MathRules, RolloutsSelection, Source};
use schemas::rollouts::load_rollouts;
use schemas::{Domain, Dropped, Example};
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use verify::math::ExtractOptions;

/// One source's rollouts after reading, verifying and selecting.
pub struct RolloutsIngested {
    pub examples: Vec<Example>,
    pub dropped: Vec<Dropped>,
    pub quarantine: Vec<QuarantineRow>,
    /// The file or snapshot read, and the questions snapshot it was graded against, if any.
    pub inputs: Vec<InputFile>,
    pub origin: RolloutsOrigin,
    /// Samples (rows or lines) read, malformed ones included.
    pub rows: usize,
}

/// A readable sample with its verdict, before selection.
struct Candidate {
    question_id: String,
    finish: Option<Finish>,
    correct: bool,
    example: Example,
}

/// `tokenizer`: the train recipe's, which renders each sampled prompt again for its row. A
/// rollouts snapshot whose prompts it renders otherwise under the same chat template (another
/// system prompt, or Qwen3's `enable_thinking: false`, which adds an empty think block) is
/// refused: its completions would be trained after prompts they were not sampled from. Under
/// another chat template it only warns, quoting the difference: distilling one model's samples
/// into another is legitimate. What is compared is the rendering, not the recorded settings, so
/// a system prompt an exported template carries and one a recipe sets are the same when they
/// render the same.
pub fn ingest_rollouts(
    source: &Source,
    recipe_path: &Path,
    role_prefix: &str,
    tokenizer: &ChatTokenizer,
) -> anyhow::Result<RolloutsIngested> {
    let path = schemas::recipe::resolve(recipe_path, &source.path);
    let selection = source.select.clone().unwrap_or_default();
    let (candidates, quarantine, inputs, mut origin, rows) = if path.join(MANIFEST_FILE).exists() {
        from_snapshot(source, &path, role_prefix, selection.clone(), tokenizer)?
    } else if path.is_dir() {
        bail!("source `{}`: {} is a folder without {MANIFEST_FILE}: not a rollouts snapshot", source.name, path.display());
    } else {
        from_file(source, &path, recipe_path, role_prefix, selection.clone())?
    };
    let reasons = select(&candidates, &selection, source.limit);
    let mut examples = vec![];
    let mut dropped = vec![];
    for (c, reason) in candidates.into_iter().zip(reasons) {
        match reason {
            None => examples.push(Example { unfinished: c.finish == Some(Finish::Length), ..c.example }),
            Some(r) => dropped.push(Dropped::new(STAGE, r, &c.example, "")),
        }
    }
    origin.malformed = quarantine.len() as u64;
    origin.kept = examples.len() as u64;
    for d in &dropped {
        *origin.dropped.entry(d.reason.clone()).or_insert(0) += 1;
    }
    Ok(RolloutsIngested { examples, dropped, quarantine, inputs, origin, rows })
}

type Read = (Vec<Candidate>, Vec<QuarantineRow>, Vec<InputFile>, RolloutsOrigin, usize);

fn origin(source: &Source, selection: RolloutsSelection) -> RolloutsOrigin {
    RolloutsOrigin {
        source: source.name.clone(),
        path: source.path.clone(),
        snapshot_id: None,
        rollouts: None,
        verified_on_ingest: false,
        verifier_version: String::new(),
        selection,
        samples: 0,
        malformed: 0,
        correct: 0,
        kept: 0,
        dropped: BTreeMap::new(),
    }
}

fn example(source: &Source, question_id: &str, sample: u32, domain: Domain, prompt: String, response: String) -> Example {
    Example {
        id: format!("{}/{question_id}/{sample}", source.name),
        source: source.name.clone(),
        domain,
        prompt,
        response,
        gold: None,
        tests: None,
        metadata: String::new(),
        unfinished: false,
        context: vec![],
    }
}

/// A rollouts snapshot: rows in snapshot order, verdicts as recorded.
fn from_snapshot(
    source: &Source,
    dir: &Path,
    role_prefix: &str,
    selection: RolloutsSelection,
    tokenizer: &ChatTokenizer,
) -> anyhow::Result<Read> {
    if source.fields.is_some() || source.domain.is_some() || source.questions.is_some() || source.math_rules.is_some() {
        bail!(
            "source `{}`: {} is a rollouts snapshot, which carries its own questions, domains and verdicts; \
             `fields`, `domain`, `questions` and `math_rules` are for files from other engines",
            source.name,
            dir.display()
        );
    }
    let (manifest, rows) = load_rollouts(dir).with_context(|| format!("source `{}`", source.name))?;
    // The tokenizer the prompts were rendered with, as the snapshot keeps it.
    let sampled = ChatTokenizer::from_snapshot(dir, &manifest.tokenizer).with_context(|| format!("source `{}`", source.name))?;
    let recorded = &manifest.tokenizer;
    if sampled.begin_token_unknown() {
        // Sampled before begin tokens were recorded: its prompts cannot be rendered again as
        // they were, so the recorded settings are compared instead.
        let differs = |field: &str, sampled: Value, here: Value| {
            anyhow::anyhow!(
                "source `{}`: its prompts were rendered with {field} {sampled} and this recipe's tokenizer.{field} is {here}; \
                 set the same in the recipe so the completions are trained after the prompts they were sampled from",
                source.name,
            )
        };
        if recorded.template_vars != *tokenizer.template_vars() {
            return Err(differs("template_vars", json!(recorded.template_vars), json!(tokenizer.template_vars())));
        }
        if recorded.system_prompt.as_deref() != tokenizer.system_prompt() {
            return Err(differs("system_prompt", json!(recorded.system_prompt), json!(tokenizer.system_prompt())));
        }
        if sampled.chat_template() != tokenizer.chat_template() {
            tracing::warn!(
                "source `{}`: its prompts were rendered with another chat template than this recipe's: the completions are \
                 trained after prompts unlike the ones they were sampled from (as intended when distilling one model's \
                 samples into another)",
                source.name
            );
        }
    } else if let Some(first) = rows.first() {
        let difference = sampled
            .prompt_difference(tokenizer, &first.prompt, ("the sampled prompts", "this recipe's"))
            .with_context(|| format!("source `{}`: rendering its first prompt", source.name))?;
        match difference {
            Some(how) if sampled.chat_template() == tokenizer.chat_template() => bail!(
                "source `{}`: this recipe's tokenizer renders its prompts otherwise than they were sampled ({how}); set the \
                 tokenizer.system_prompt and tokenizer.template_vars they were rendered with (system_prompt {}, template_vars \
                 {}) so the completions are trained after the prompts they were sampled from",
                source.name,
                json!(recorded.system_prompt),
                json!(recorded.template_vars)
            ),
            Some(how) => tracing::warn!(
                "source `{}`: its prompts were rendered with another chat template than this recipe's ({how}): the completions \
                 are trained after prompts unlike the ones they were sampled from (as intended when distilling one model's \
                 samples into another)",
                source.name
            ),
            None => {}
        }
    }
    let manifest_bytes = std::fs::read(dir.join(MANIFEST_FILE))?;
    // The manifest lists every shard's sha256, so its own hash pins the whole snapshot.
    let input = InputFile {
        role: format!("{role_prefix}{}", source.name),
        path: source.path.clone(),
        sha256: schemas::sha256_hex(&manifest_bytes),
        bytes: manifest_bytes.len() as u64,
    };
    let mut versions: Vec<&str> = rows.iter().map(|r| r.verifier_version.as_str()).collect();
    versions.sort_unstable();
    versions.dedup();
    if versions.iter().any(|v| *v != verify::grade::VERSION) {
        tracing::warn!(
            "source `{}`: verdicts from verifier version {} (this build: {}); re-sample to re-verify",
            source.name,
            versions.join(", "),
            verify::grade::VERSION
        );
    }
    let mut o = origin(source, selection);
    o.snapshot_id = Some(manifest.snapshot_id.clone());
    o.rollouts = manifest.rollouts.clone();
    o.verifier_version = versions.join(",");
    o.samples = rows.len() as u64;
    o.correct = rows.iter().filter(|r| r.correct).count() as u64;
    let candidates = rows
        .into_iter()
        .map(|r| {
            let mut ex = example(source, &r.question_id, r.sample, r.domain, r.prompt, r.completion);
            ex.gold = r.gold;
            ex.tests = r.tests;
            ex.metadata = json!({
                "question_id": r.question_id, "sample": r.sample, "finish": r.finish, "correct": r.correct,
                "extracted": r.extracted, "verifier": r.verifier, "verifier_version": r.verifier_version,
                "model_sha256": r.model_sha256, "rollouts_snapshot_id": manifest.snapshot_id,
            })
            .to_string();
            Candidate { question_id: r.question_id, finish: Some(r.finish), correct: r.correct, example: ex }
        })
        .collect();
    let n = o.samples as usize;
    Ok((candidates, vec![], vec![input], o, n))
}

/// The field names a file from another engine is read with. Without `fields`, the defaults. With
/// it, the keys it gives, and the finish reason and sample index under their default names unless
/// it names them or uses those names for another key: a map that renames only the id, prompt and
/// completion must still see truncated samples (for `drop_truncated`). A file's gold and tests
/// columns are read only when the map names them (a line without them takes them from the
/// questions snapshot either way).
fn file_fields(source: &Source) -> anyhow::Result<FieldMap> {
    let defaults = FieldMap {
        id: Some("question_id".into()),
        prompt: Some("question".into()),
        response: Some("completion".into()),
        gold: Some("gold".into()),
        tests: Some("tests".into()),
        finish: Some("finish_reason".into()),
        sample: Some("sample".into()),
        ..FieldMap::default()
    };
    let f = match source.fields.clone() {
        None => defaults,
        Some(f) => {
            let named: Vec<&str> = f.named().into_iter().map(|(_, column)| column).collect();
            let unless_taken = |default: Option<String>| default.filter(|d| !named.contains(&d.as_str()));
            FieldMap {
                finish: f.finish.clone().or_else(|| unless_taken(defaults.finish)),
                sample: f.sample.clone().or_else(|| unless_taken(defaults.sample)),
                ..f
            }
        }
    };
    if f.finish.is_some() && f.finish == f.sample {
        bail!("source `{}`: `fields.finish` and `fields.sample` both name `{}`", source.name, f.finish.as_deref().unwrap_or_default());
    }
    if f.id.is_none() || f.prompt.is_none() || f.response.is_none() {
        bail!(
            "source `{}`: a rollouts file needs `fields.id` (the question id), `fields.prompt` and `fields.response` (the completion)",
            source.name
        );
    }
    Ok(f)
}

/// A sample read from a line, before verification.
struct Parsed {
    line: u64,
    raw: String,
    question_id: String,
    sample: Option<u32>,
    finish: Option<Finish>,
    /// How its math answer is read.
    math: ExtractOptions,
    example: Example,
}

/// A file from another engine: every line parsed, then verified.
fn from_file(source: &Source, path: &Path, recipe_path: &Path, role_prefix: &str, selection: RolloutsSelection) -> anyhow::Result<Read> {
    let fields = file_fields(source)?;
    let mut inputs = vec![];
    let questions: HashMap<String, Prompt> = match &source.questions {
        Some(q) => {
            let dir = schemas::recipe::resolve(recipe_path, q);
            let (_, prompts) = load_prompts(&dir).with_context(|| format!("source `{}`: questions {}", source.name, dir.display()))?;
            // Its gold answers and tests decide the verdicts, so the manifest names it as an input.
            let manifest = std::fs::read(dir.join(MANIFEST_FILE))?;
            inputs.push(InputFile {
                role: format!("{role_prefix}{}:questions", source.name),
                path: q.clone(),
                sha256: schemas::sha256_hex(&manifest),
                bytes: manifest.len() as u64,
            });
            prompts.into_iter().map(|p| (p.id.clone(), p)).collect()
        }
        None => HashMap::new(),
    };
    if source.domain.is_none() && source.questions.is_none() {
        bail!("source `{}`: a rollouts file needs `domain` (math or code) or a `questions` snapshot to take it from", source.name);
    }
    if source.questions.is_none() && source.domain == Some(Domain::Math) && source.math_rules.is_none() {
        bail!(
            "source `{}`: say how math answers are read: `math_rules: gsm8k` (a final number may stand alone, as in GSM8K) \
             or `math_rules: math` (the answer must be marked: \\boxed{{}}, \"the answer is\", ####)",
            source.name
        );
    }
    let bytes = std::fs::read(path)
        .with_context(|| format!("source `{}`: cannot read {} (paths are relative to the recipe file)", source.name, path.display()))?;
    inputs.insert(
        0,
        InputFile {
            role: format!("{role_prefix}{}", source.name),
            path: source.path.clone(),
            sha256: schemas::sha256_hex(&bytes),
            bytes: bytes.len() as u64,
        },
    );
    let raw_rows = read_rows(path, bytes)?;
    let file = path.display().to_string();
    let quarantine_row = |line: u64, raw: &str, e: FieldError| QuarantineRow {
        source: source.name.clone(),
        file: file.clone(),
        line,
        field: e.field,
        error: e.message,
        raw: raw.to_string(),
    };
    let mut quarantine = vec![];
    let mut parsed: Vec<Parsed> = vec![];
    for row in raw_rows {
        let got = row.value.and_then(|v| match v {
            Value::Object(obj) => parse_line(source, &fields, &questions, &obj, row.line, row.raw.clone()),
            other => Err(field_err("", format!("expected a JSON object, got {}", type_name(&other)))),
        });
        match got {
            Ok(p) => parsed.extend(p),
            Err(e) => quarantine.push(quarantine_row(row.line, &row.raw, e)),
        }
    }
    // Samples read: one per completion (a line with a list of n counts n), one per unreadable line.
    let rows = parsed.len() + quarantine.len();
    // Sample indices: as given, else order of appearance within the question; a repeated
    // (question, sample) pair is malformed.
    let mut next: HashMap<String, u32> = HashMap::new();
    let mut seen: HashSet<(String, u32)> = HashSet::new();
    let mut numbered = vec![];
    for mut p in parsed {
        let counter = next.entry(p.question_id.clone()).or_insert(0);
        let sample = p.sample.unwrap_or(*counter);
        *counter = (*counter).max(sample + 1);
        if !seen.insert((p.question_id.clone(), sample)) {
            let e = field_err(
                fields.sample.as_deref().unwrap_or("sample"),
                format!("sample {sample} of question `{}` appears twice", p.question_id),
            );
            quarantine.push(quarantine_row(p.line, &p.raw, e));
            continue;
        }
        p.sample = Some(sample);
        p.example.id = format!("{}/{}/{sample}", source.name, p.question_id);
        numbered.push(p);
    }

    let items: Vec<(verify::grade::Question, &str)> = numbered
        .iter()
        .map(|p| {
            let q = verify::grade::Question {
                id: &p.question_id,
                math: p.math,
                domain: p.example.domain,
                gold: p.example.gold.as_deref(),
                tests: p.example.tests.as_deref(),
            };
            (q, p.example.response.as_str())
        })
        .collect();
    let bar = progress::bar(items.len(), &format!("verify {}", source.name));
    let grades = verify::grade::grade_all(&items, || bar.inc(1))?;
    bar.finish_and_clear();

    let mut candidates = vec![];
    for (p, g) in numbered.into_iter().zip(grades) {
        let g = match g {
            Ok(g) => g,
            // `keep: all` trains on every sample, so one that cannot be graded is kept as
            // not correct (and says so in its metadata) instead of quarantined.
            Err(reason) if selection.keep == Keep::All => {
                verify::grade::Grade { extracted: None, correct: false, status: Some(format!("ungraded: {reason}")), verifier: "none" }
            }
            Err(reason) => {
                let field = if p.example.domain == Domain::Math { "gold" } else { "tests" };
                quarantine.push(quarantine_row(p.line, &p.raw, field_err(field, reason)));
                continue;
            }
        };
        let mut ex = p.example;
        let mut meta: serde_json::Map<String, Value> = serde_json::from_str(&ex.metadata).unwrap_or_default();
        meta.insert("question_id".into(), json!(p.question_id));
        meta.insert("sample".into(), json!(p.sample));
        meta.insert("line".into(), json!(p.line));
        meta.insert("correct".into(), json!(g.correct));
        meta.insert("extracted".into(), json!(g.extracted));
        meta.insert("verifier".into(), json!(g.verifier));
        if let Some(status) = &g.status {
            meta.insert("status".into(), json!(status));
        }
        meta.insert("verifier_version".into(), json!(verify::grade::VERSION));
        ex.metadata = Value::Object(meta).to_string();
        candidates.push(Candidate { question_id: p.question_id, finish: p.finish, correct: g.correct, example: ex });
    }
    // In line order, whichever check found the problem.
    quarantine.sort_by_key(|q| q.line);
    let mut o = origin(source, selection);
    o.verified_on_ingest = true;
    o.verifier_version = verify::grade::VERSION.to_string();
    o.samples = rows as u64;
    o.correct = candidates.iter().filter(|c| c.correct).count() as u64;
    Ok((candidates, quarantine, inputs, o, rows))
}

/// A string, or any other JSON value as its JSON text (tests may be an object or a string).
fn json_text(row: &mut Row, field: &str) -> Option<String> {
    row.get(field).map(|v| match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    })
}

fn parse_line(
    source: &Source,
    fields: &FieldMap,
    questions: &HashMap<String, Prompt>,
    obj: &serde_json::Map<String, Value>,
    line: u64,
    raw: String,
) -> Result<Vec<Parsed>, FieldError> {
    let mut row = Row { obj, used: vec![] };
    let id_field = fields.id.as_deref().expect("checked by file_fields");
    let question_id = row.opt_scalar(id_field)?.ok_or_else(|| field_err(id_field, "missing field"))?;
    let question = questions.get(&question_id);
    if source.questions.is_some() && question.is_none() {
        return Err(field_err(id_field, format!("question `{question_id}` is not in the questions snapshot")));
    }
    let response_field = fields.response.as_deref().expect("checked by file_fields");
    let completions = completions(&mut row, response_field)?;
    let prompt_field = fields.prompt.as_deref().expect("checked by file_fields");
    let prompt = match row.opt_text(prompt_field)? {
        Some(p) => p,
        None => question.map(|q| q.prompt.clone()).ok_or_else(|| field_err(prompt_field, "missing field"))?,
    };
    let gold = match &fields.gold {
        Some(f) => row.opt_scalar(f)?,
        None => None,
    }
    .or_else(|| question.and_then(|q| q.gold.clone()));
    let tests = fields.tests.as_deref().and_then(|f| json_text(&mut row, f)).or_else(|| question.and_then(|q| q.tests.clone()));
    let line_finish = match &fields.finish {
        Some(f) => match row.opt_text(f)? {
            Some(text) => Some(text.parse::<Finish>().map_err(|e| field_err(f, e.to_string()))?),
            None => None,
        },
        None => None,
    };
    let sample = match &fields.sample {
        Some(f) => match row.opt_int(f)? {
            Some(s) if (0..=u32::MAX as i64).contains(&s) => Some(s as u32),
            Some(s) => return Err(field_err(f, format!("sample index {s} out of range"))),
            None => None,
        },
        None => None,
    };
    if completions.len() > 1 && sample.is_some() {
        return Err(field_err(fields.sample.as_deref().unwrap_or("sample"), "a sample index beside a list of completions"));
    }
    let domain = source.domain.or(question.map(|q| q.domain)).expect("checked: domain or questions");
    let metadata = row.metadata();
    let math = match (source.math_rules, question) {
        (Some(MathRules::Gsm8k), _) => ExtractOptions::GSM8K,
        (Some(MathRules::Math), _) => ExtractOptions::MATH,
        (None, Some(q)) => ExtractOptions::for_benchmark(&q.source),
        // Only code lines get here (checked in `from_file`); the rules are not used.
        (None, None) => ExtractOptions::MATH,
    };
    let listed = completions.len() > 1;
    Ok(completions
        .into_iter()
        .enumerate()
        .map(|(i, (completion, finish))| {
            let mut ex = example(source, &question_id, 0, domain, prompt.clone(), completion);
            ex.gold = gold.clone();
            ex.tests = tests.clone();
            ex.metadata = metadata.clone();
            Parsed {
                line,
                raw: raw.clone(),
                question_id: question_id.clone(),
                // A list's completions are samples 0..n of their question, in list order.
                sample: if listed { Some(i as u32) } else { sample },
                finish: finish.or(line_finish),
                math,
                example: ex,
            }
        })
        .collect())
}

/// The completions of a line: one string, or a list (an engine asked for n > 1 samples) of
/// strings or of objects with `text` (vLLM, SGLang) or `content`, each with an optional
/// `finish_reason` (a string, or an object with a `type`, as SGLang writes it).
fn completions(row: &mut Row, field: &str) -> Result<Vec<(String, Option<Finish>)>, FieldError> {
    let value = row.get(field).ok_or_else(|| field_err(field, "missing field"))?;
    let one = |v: &Value, at: &str| -> Result<(String, Option<Finish>), FieldError> {
        match v {
            Value::String(s) => Ok((s.clone(), None)),
            Value::Object(o) => {
                let text = ["text", "content"].iter().find_map(|k| o.get(*k).and_then(Value::as_str));
                let text = text.ok_or_else(|| field_err(at, "a completion object needs a `text` (or `content`) string"))?;
                let finish = match o.get("finish_reason") {
                    None | Some(Value::Null) => None,
                    Some(Value::String(s)) => Some(s.as_str()),
                    Some(Value::Object(r)) => r.get("type").and_then(Value::as_str),
                    Some(other) => return Err(field_err(at, format!("finish_reason: expected a string, got {}", type_name(other)))),
                };
                let finish = finish.map(|f| f.parse::<Finish>().map_err(|e| field_err(at, format!("finish_reason: {e}")))).transpose()?;
                Ok((text.to_string(), finish))
            }
            other => Err(field_err(at, format!("expected a string, a completion object or a list of them, got {}", type_name(other)))),
        }
    };
    match value {
        Value::Array(items) if items.is_empty() => Err(field_err(field, "an empty list of completions")),
        Value::Array(items) => items.iter().enumerate().map(|(i, v)| one(v, &format!("{field}[{i}]"))).collect(),
        v => Ok(vec![one(v, field)?]),
    }
}

/// The drop reason of every candidate (None = keep), by the rules of [`RolloutsSelection`] in
/// their documented order; then `limit` caps the kept samples of the source.
fn select(candidates: &[Candidate], cfg: &RolloutsSelection, limit: Option<usize>) -> Vec<Option<&'static str>> {
    let mut per_question: HashMap<&str, (usize, usize)> = HashMap::new();
    for c in candidates {
        let e = per_question.entry(&c.question_id).or_default();
        e.0 += 1;
        e.1 += c.correct as usize;
    }
    let mut kept_per_question: HashMap<&str, usize> = HashMap::new();
    let mut completions: HashSet<(&str, &str)> = HashSet::new();
    let mut kept = 0usize;
    candidates
        .iter()
        .map(|c| {
            let (samples, correct) = per_question[c.question_id.as_str()];
            let reason = if cfg.drop_all_correct && correct == samples {
                Some("question_all_correct")
            } else if cfg.drop_all_wrong && correct == 0 {
                Some("question_all_wrong")
            } else if cfg.drop_truncated && c.finish == Some(Finish::Length) {
                Some("truncated")
            } else if cfg.keep == Keep::Correct && !c.correct {
                Some("wrong")
            } else if cfg.collapse_duplicates && !completions.insert((&c.question_id, &c.example.response)) {
                Some("duplicate_completion")
            } else if cfg.max_per_question.is_some_and(|n| kept_per_question.get(c.question_id.as_str()).copied().unwrap_or(0) >= n) {
                Some("over_max_per_question")
            } else if limit.is_some_and(|l| kept >= l) {
                Some("over_limit")
            } else {
                None
            };
            if reason.is_none() {
                *kept_per_question.entry(&c.question_id).or_insert(0) += 1;
                kept += 1;
            }
            reason
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cand(q: &str, sample: u32, correct: bool, finish: Finish, response: &str) -> Candidate {
        let source = Source { domain: Some(Domain::Math), ..Source::new("r", "r.jsonl", schemas::recipe::Format::Rollouts) };
        Candidate {
            question_id: q.into(),
            finish: Some(finish),
            correct,
            example: example(&source, q, sample, Domain::Math, "p".into(), response.into()),
        }
    }

    #[test]
    fn selection_rules_apply_in_their_documented_order() {
        use Finish::{Length, Stop};
        let c = vec![
            cand("a", 0, true, Stop, "x"),
            cand("a", 1, true, Stop, "x"),   // duplicate of sample 0
            cand("a", 2, true, Length, "y"), // truncated, though correct
            cand("a", 3, false, Stop, "z"),  // wrong
            cand("b", 0, true, Stop, "1"),
            cand("b", 1, true, Stop, "2"), // over max_per_question = 1
            cand("b", 2, false, Stop, "3"),
            cand("c", 0, false, Stop, "w"), // all wrong
            cand("d", 0, true, Stop, "v"),  // all correct
        ];
        let defaults = select(&c, &RolloutsSelection::default(), None);
        assert_eq!(defaults, [None, None, Some("truncated"), Some("wrong"), None, None, Some("wrong"), Some("wrong"), None]);
        let cfg = RolloutsSelection {
            max_per_question: Some(1),
            collapse_duplicates: true,
            drop_all_correct: true,
            drop_all_wrong: true,
            ..RolloutsSelection::default()
        };
        let strict = select(&c, &cfg, None);
        assert_eq!(
            strict,
            [
                None,
                Some("duplicate_completion"),
                Some("truncated"),
                Some("wrong"),
                None,
                Some("over_max_per_question"),
                Some("wrong"),
                Some("question_all_wrong"),
                Some("question_all_correct")
            ]
        );
        let all = select(&c, &RolloutsSelection { keep: Keep::All, drop_truncated: false, ..RolloutsSelection::default() }, Some(6));
        assert_eq!(all, [None, None, None, None, None, None, Some("over_limit"), Some("over_limit"), Some("over_limit")]);
    }
}
