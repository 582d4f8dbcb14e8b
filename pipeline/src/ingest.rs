//! Stage 1, ingest: read JSONL (`.jsonl`, `.jsonl.gz`), JSON arrays and Parquet, validate every
//! row, and map it through the source's adapter to the canonical [`Example`].
//!
//! Parquet is scanned with DataFusion; JSON lines are read here so that every error can name its
//! line. A malformed row (invalid UTF-8, invalid JSON, a missing field, a wrong type) goes to the
//! quarantine with file, line and field; the source fails when more than `max_bad_fraction` of
//! its rows are malformed.

use anyhow::{bail, Context};
use model_files::tokenizer::ChatTokenizer;
use schemas::manifest::{InputFile, RolloutsOrigin};
use schemas::recipe::{FieldMap, Format, IngestConfig, Source};
use schemas::{CodeTests, Domain, Dropped, Example, Role, StageReport, Turn};
use serde::Serialize;
use serde_json::{Map, Value};
use std::collections::{BTreeSet, HashSet};
use std::io::Read;
use std::path::Path;
use verify::answer;

pub const STAGE: &str = "ingest";

/// A row that could not be read, with enough context to find and fix it.
#[derive(Debug, Clone, Serialize)]
pub struct QuarantineRow {
    pub source: String,
    pub file: String,
    pub line: u64,
    pub field: String,
    pub error: String,
    /// The start of the raw line, lossily decoded.
    pub raw: String,
}

pub struct Ingested {
    pub examples: Vec<Example>,
    pub dropped: Vec<Dropped>,
    pub quarantine: Vec<QuarantineRow>,
    pub inputs: Vec<InputFile>,
    /// What each `rollouts` source came from and what its selection kept.
    pub rollout_sources: Vec<RolloutsOrigin>,
    pub report: StageReport,
}

/// Why a field of a row is unusable.
#[derive(Debug)]
pub(crate) struct FieldError {
    pub(crate) field: String,
    pub(crate) message: String,
}

pub(crate) fn field_err(field: &str, message: impl Into<String>) -> FieldError {
    FieldError { field: field.to_string(), message: message.into() }
}

/// Read every source of a recipe, in recipe order.
/// `tokenizer`: the recipe's, which must render a rollouts snapshot's prompts as they were
/// sampled (see `rollouts::ingest_rollouts`); None where a recipe cannot hold rollouts
/// (benchmarks).
pub fn ingest(
    sources: &[Source],
    recipe_path: &Path,
    cfg: &IngestConfig,
    role_prefix: &str,
    tokenizer: Option<&ChatTokenizer>,
) -> anyhow::Result<Ingested> {
    let mut out = Ingested {
        examples: vec![],
        dropped: vec![],
        quarantine: vec![],
        inputs: vec![],
        rollout_sources: vec![],
        report: StageReport::default(),
    };
    let mut rows_in = 0usize;
    for source in sources {
        let before_q = out.quarantine.len();
        if source.format == Format::Rollouts {
            let tokenizer = tokenizer.context("rollouts are read only into train snapshots, with their tokenizer")?;
            let got = crate::rollouts::ingest_rollouts(source, recipe_path, role_prefix, tokenizer)?;
            rows_in += got.rows;
            out.examples.extend(got.examples);
            out.dropped.extend(got.dropped);
            out.quarantine.extend(got.quarantine);
            out.inputs.extend(got.inputs);
            out.rollout_sources.push(got.origin);
            check_bad_fraction(source, &out, before_q, got.rows, cfg)?;
            continue;
        }
        let path = schemas::recipe::resolve(recipe_path, &source.path);
        let bytes = std::fs::read(&path)
            .with_context(|| format!("source `{}`: cannot read {} (paths are relative to the recipe file)", source.name, path.display()))?;
        out.inputs.push(InputFile {
            role: format!("{role_prefix}{}", source.name),
            path: source.path.clone(),
            sha256: schemas::sha256_hex(&bytes),
            bytes: bytes.len() as u64,
        });
        let rows = read_rows(&path, bytes)?;
        let total = rows.len();
        if total == 0 {
            // Nothing is lost, but a source that gives nothing is more often a wrong file than
            // a choice.
            tracing::warn!("source `{}`: {} holds no rows", source.name, path.display());
        }
        rows_in += total;
        adapt_rows(source, &path, rows, &mut out)?;
        // Malformed rows are found in the whole file, so the fraction is over the whole file,
        // not over the rows `id_range`, `skip` and `limit` keep.
        check_bad_fraction(source, &out, before_q, total, cfg)?;
    }
    let mut report = StageReport::new(STAGE, rows_in, out.examples.len(), &out.dropped);
    if !out.quarantine.is_empty() {
        report.dropped.insert("malformed".into(), out.quarantine.len() as u64);
    }
    out.report = report;
    Ok(out)
}

/// Fails when more than `max_bad_fraction` of the `total` rows a source's file holds went to
/// the quarantine, naming the first errors.
fn check_bad_fraction(source: &Source, out: &Ingested, before_q: usize, total: usize, cfg: &IngestConfig) -> anyhow::Result<()> {
    let bad = out.quarantine.len() - before_q;
    if total > 0 && bad as f64 / total as f64 > cfg.max_bad_fraction {
        let first: Vec<String> = out.quarantine[before_q..]
            .iter()
            .take(5)
            // A line that is not a JSON object has no field to name.
            .map(|q| match q.field.as_str() {
                "" => format!("  {}:{}: {}", q.file, q.line, q.error),
                field => format!("  {}:{}: field `{field}`: {}", q.file, q.line, q.error),
            })
            .collect();
        bail!(
            "source `{}`: {bad} of {total} rows are malformed ({:.1}% > ingest.max_bad_fraction {:.1}%); first errors:\n{}",
            source.name,
            100.0 * bad as f64 / total as f64,
            100.0 * cfg.max_bad_fraction,
            first.join("\n")
        );
    }
    Ok(())
}

/// One raw row: its line (1-based; the row number for Parquet and JSON arrays) and parsed value,
/// or the reason it could not be parsed.
pub(crate) struct RawRow {
    pub(crate) line: u64,
    pub(crate) value: Result<Value, FieldError>,
    pub(crate) raw: String,
}

pub(crate) fn read_rows(path: &Path, bytes: Vec<u8>) -> anyhow::Result<Vec<RawRow>> {
    let name = path.to_string_lossy();
    if name.ends_with(".parquet") {
        return read_parquet(path);
    }
    let bytes = if name.ends_with(".gz") {
        let mut out = Vec::new();
        flate2::read::MultiGzDecoder::new(&bytes[..])
            .read_to_end(&mut out)
            .with_context(|| format!("{}: not a valid gzip file", path.display()))?;
        out
    } else {
        bytes
    };
    // A byte-order mark (as Windows editors write) is not part of the first row.
    let bytes = match bytes.strip_prefix(b"\xEF\xBB\xBF") {
        Some(rest) => rest.to_vec(),
        None => bytes,
    };
    let plain = name.trim_end_matches(".gz");
    if plain.ends_with(".json") {
        return read_json_array(path, &bytes);
    }
    if !plain.ends_with(".jsonl") && !plain.ends_with(".ndjson") {
        bail!("{}: unknown file type; use .jsonl, .jsonl.gz, .json or .parquet", path.display());
    }
    Ok(read_jsonl(&bytes))
}

/// Blank lines are not rows; every other line becomes a row, parsed or not.
fn read_jsonl(bytes: &[u8]) -> Vec<RawRow> {
    bytes
        .split(|&b| b == b'\n')
        .enumerate()
        .filter(|(_, line)| !line.iter().all(|b| b.is_ascii_whitespace()))
        .map(|(i, line)| {
            let raw = String::from_utf8_lossy(&line[..line.len().min(300)]).into_owned();
            let value = match std::str::from_utf8(line) {
                Err(e) => Err(field_err("", format!("invalid UTF-8 at byte {}", e.valid_up_to()))),
                Ok(text) => serde_json::from_str::<Value>(text).map_err(|e| field_err("", format!("invalid JSON: {e}"))),
            };
            RawRow { line: i as u64 + 1, value, raw }
        })
        .collect()
}

fn read_json_array(path: &Path, bytes: &[u8]) -> anyhow::Result<Vec<RawRow>> {
    let text = std::str::from_utf8(bytes).map_err(|e| anyhow::anyhow!("{}: invalid UTF-8 at byte {}", path.display(), e.valid_up_to()))?;
    let value: Value = serde_json::from_str(text).with_context(|| format!("{}: invalid JSON", path.display()))?;
    let Value::Array(items) = value else {
        bail!("{}: a .json source must hold one array of objects", path.display());
    };
    Ok(items
        .into_iter()
        .enumerate()
        .map(|(i, v)| RawRow { line: i as u64 + 1, raw: truncate(&v.to_string(), 300), value: Ok(v) })
        .collect())
}

/// Scan a Parquet file with DataFusion and turn each row into a JSON object, so that Parquet and
/// JSON sources share one validation path. One partition keeps file order, so row numbers are
/// stable.
fn read_parquet(path: &Path) -> anyhow::Result<Vec<RawRow>> {
    use datafusion::prelude::{ParquetReadOptions, SessionConfig, SessionContext};
    let runtime = tokio::runtime::Builder::new_current_thread().build()?;
    let batches = runtime
        .block_on(async {
            let ctx = SessionContext::new_with_config(SessionConfig::new().with_target_partitions(1));
            let df = ctx.read_parquet(path.to_string_lossy().as_ref(), ParquetReadOptions::default()).await?;
            df.collect().await
        })
        .with_context(|| format!("{}: cannot read Parquet", path.display()))?;
    let mut writer = arrow::json::ArrayWriter::new(Vec::new());
    for batch in &batches {
        writer.write(batch)?;
    }
    writer.finish()?;
    let bytes = writer.into_inner();
    if bytes.is_empty() {
        return Ok(vec![]);
    }
    read_json_array(path, &bytes)
}

fn truncate(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => s[..i].to_string(),
        None => s.to_string(),
    }
}

/// Fails when `fields` names a column that no row of the file has: a typo, not a column of
/// nulls. Unchecked, every id would quietly become the line number and every row would lose its
/// tests or gold answer. (Not for rollouts files: there a line may leave its question, gold and
/// tests to the `questions` snapshot, and `fields` written out with its defaults must still read
/// such a file.)
fn check_named_columns(source: &Source, path: &Path, rows: &[RawRow]) -> anyhow::Result<()> {
    let Some(fields) = &source.fields else { return Ok(()) };
    let named = fields.named();
    let mut found = vec![false; named.len()];
    let mut columns = BTreeSet::new();
    for row in rows {
        if let Ok(Value::Object(obj)) = &row.value {
            for (f, (_, column)) in found.iter_mut().zip(&named) {
                *f |= obj.contains_key(*column);
            }
            columns.extend(obj.keys().map(String::as_str));
        }
    }
    match named.iter().zip(&found).find(|(_, f)| !**f) {
        Some(((key, column), _)) if !columns.is_empty() => bail!(
            "source `{}`: `fields.{key}` names column `{column}`, which no row of {} has (its columns: {})",
            source.name,
            path.display(),
            columns.into_iter().collect::<Vec<_>>().join(", ")
        ),
        _ => Ok(()),
    }
}

fn adapt_rows(source: &Source, path: &Path, rows: Vec<RawRow>, out: &mut Ingested) -> anyhow::Result<()> {
    let file = path.display().to_string();
    let mut seen_ids = HashSet::new();
    let mut kept = 0usize;
    let mut skipped = 0usize;
    check_named_columns(source, path, &rows)?;
    for row in rows {
        let adapted = row.value.and_then(|v| match v {
            Value::Object(obj) => adapt(source, &obj, row.line),
            other => Err(field_err("", format!("expected a JSON object, got {}", type_name(&other)))),
        });
        let (example, int_id) = match adapted {
            Ok(x) => x,
            Err(e) => {
                out.quarantine.push(QuarantineRow {
                    source: source.name.clone(),
                    file: file.clone(),
                    line: row.line,
                    field: e.field,
                    error: e.message,
                    raw: row.raw,
                });
                continue;
            }
        };
        if !seen_ids.insert(example.id.clone()) {
            out.quarantine.push(QuarantineRow {
                source: source.name.clone(),
                file: file.clone(),
                line: row.line,
                field: "id".into(),
                error: format!("duplicate id `{}`", example.id),
                raw: row.raw,
            });
            continue;
        }
        if let Some([lo, hi]) = source.id_range {
            if !int_id.is_some_and(|id| id >= lo && id <= hi) {
                out.dropped.push(Dropped::new(STAGE, "outside_id_range", &example, format!("{lo}..={hi}")));
                continue;
            }
        }
        if source.skip.is_some_and(|skip| skipped < skip) {
            skipped += 1;
            out.dropped.push(Dropped::new(STAGE, "skipped", &example, ""));
            continue;
        }
        if source.limit.is_some_and(|limit| kept >= limit) {
            out.dropped.push(Dropped::new(STAGE, "over_limit", &example, ""));
            continue;
        }
        kept += 1;
        out.examples.push(example);
    }
    Ok(())
}

pub(crate) fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Typed access to the fields of one raw row; remembers which fields an adapter used so the rest
/// can go to `metadata`.
pub(crate) struct Row<'a> {
    pub(crate) obj: &'a Map<String, Value>,
    pub(crate) used: Vec<&'a str>,
}

impl<'a> Row<'a> {
    pub(crate) fn get(&mut self, field: &str) -> Option<&'a Value> {
        let (k, v) = self.obj.get_key_value(field)?;
        self.used.push(k.as_str());
        (!v.is_null()).then_some(v)
    }

    pub(crate) fn text(&mut self, field: &str) -> Result<String, FieldError> {
        self.opt_text(field)?.ok_or_else(|| field_err(field, "missing field"))
    }

    pub(crate) fn opt_text(&mut self, field: &str) -> Result<Option<String>, FieldError> {
        match self.get(field) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(v) => Err(field_err(field, format!("expected a string, got {}", type_name(v)))),
        }
    }

    /// A string, or a number written without a spurious `.0`.
    pub(crate) fn opt_scalar(&mut self, field: &str) -> Result<Option<String>, FieldError> {
        match self.get(field) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(Value::Number(n)) => Ok(Some(number_text(n))),
            Some(v) => Err(field_err(field, format!("expected a string or number, got {}", type_name(v)))),
        }
    }

    pub(crate) fn opt_int(&mut self, field: &str) -> Result<Option<i64>, FieldError> {
        match self.get(field) {
            None => Ok(None),
            Some(Value::Number(n)) => n.as_i64().map(Some).ok_or_else(|| field_err(field, format!("expected an integer, got {n}"))),
            Some(v) => Err(field_err(field, format!("expected an integer, got {}", type_name(v)))),
        }
    }

    fn string_list(&mut self, field: &str) -> Result<Vec<String>, FieldError> {
        match self.get(field) {
            None => Err(field_err(field, "missing field")),
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| match v {
                    Value::String(s) => Ok(s.clone()),
                    other => Err(field_err(field, format!("expected a list of strings, found {}", type_name(other)))),
                })
                .collect(),
            Some(v) => Err(field_err(field, format!("expected a list of strings, got {}", type_name(v)))),
        }
    }

    /// A string, or the first string of a list (OlympiadBench stores solutions as lists).
    fn opt_text_or_first(&mut self, field: &str) -> Result<Option<String>, FieldError> {
        match self.get(field) {
            Some(Value::Array(items)) => match items.first() {
                None => Ok(None),
                Some(Value::String(s)) => Ok(Some(s.clone())),
                Some(v) => Err(field_err(field, format!("expected a list of strings, found {}", type_name(v)))),
            },
            Some(_) => {
                self.used.pop();
                self.opt_scalar(field)
            }
            None => Ok(None),
        }
    }

    /// A code item's tests: a JSON object, or a string holding one (as a Parquet text column
    /// stores it), checked to be HumanEval's or MBPP's shape so that evaluation can run them.
    pub(crate) fn code_tests(&mut self, field: &str) -> Result<Option<String>, FieldError> {
        let text = match self.get(field) {
            None | Some(Value::Null) => return Ok(None),
            Some(Value::String(s)) => s.clone(),
            Some(v) => v.to_string(),
        };
        let tests = CodeTests::from_json(&text).map_err(|e| field_err(field, format!("{e:#}")))?;
        Ok(Some(tests.to_json()))
    }

    /// Every field the adapter did not use, as a JSON object string (keys in file order).
    pub(crate) fn metadata(&self) -> String {
        let rest: Map<String, Value> =
            self.obj.iter().filter(|(k, _)| !self.used.contains(&k.as_str())).map(|(k, v)| (k.clone(), v.clone())).collect();
        Value::Object(rest).to_string()
    }
}

fn number_text(n: &serde_json::Number) -> String {
    match n.as_f64() {
        Some(f) if n.is_f64() && f.fract() == 0.0 && f.abs() < 1e15 => format!("{}", f as i64),
        _ => n.to_string(),
    }
}

/// Apply the source's adapter. Returns the example and its integer id, if it has one.
fn adapt(source: &Source, obj: &Map<String, Value>, line: u64) -> Result<(Example, Option<i64>), FieldError> {
    let mut row = Row { obj, used: vec![] };
    let mut int_id = None;
    let mut context = vec![];
    let (native_id, domain, prompt, response, gold, tests) = match source.format {
        Format::Gsm8k => {
            let prompt = row.text("question")?;
            let answer = row.text("answer")?;
            let gold = answer::gsm8k_answer(&answer);
            (None, Domain::Math, prompt, answer::strip_gsm8k_calculations(&answer), gold, None)
        }
        Format::Math => {
            let prompt = row.text("problem")?;
            let solution = row.text("solution")?;
            let gold = row.opt_scalar("answer")?.or_else(|| answer::last_boxed(&solution));
            (row.opt_text("unique_id")?, Domain::Math, prompt, solution, gold, None)
        }
        Format::QwenMath => {
            let prompt = match row.opt_text("problem")? {
                Some(p) => p,
                None => row.text("question")?,
            };
            let solution = row.opt_text_or_first("solution")?.unwrap_or_default();
            let gold = match row.opt_scalar("answer")? {
                Some(a) => Some(a),
                None => match row.get("final_answer") {
                    Some(Value::Array(items)) => {
                        Some(items.iter().map(|v| value_text(v).trim_matches('$').to_string()).collect::<Vec<_>>().join(", "))
                    }
                    Some(v) => Some(value_text(v).trim_matches('$').to_string()),
                    None => answer::last_boxed(&solution),
                },
            };
            let id = match row.opt_scalar("id")? {
                Some(id) => Some(id),
                None => row.opt_scalar("idx")?,
            };
            int_id = id.as_deref().and_then(|s| s.parse().ok());
            (id, Domain::Math, prompt, solution, gold, None)
        }
        Format::Mbpp => {
            let text = match row.opt_text("text")? {
                Some(t) => t,
                None => row.text("prompt")?,
            };
            let code = row.text("code")?.replace("\r\n", "\n");
            let tests = if row.obj.contains_key("test_list") { row.string_list("test_list")? } else { row.string_list("test")? };
            let task_id = row.opt_int("task_id")?.ok_or_else(|| field_err("task_id", "missing field"))?;
            int_id = Some(task_id);
            let prompt = format!("{}\nYour code should pass these tests:\n\n{}", text.trim(), tests.join("\n"));
            let response = format!("```python\n{}\n```", code.trim_end());
            let mut setup = row.opt_text("test_setup_code")?.unwrap_or_default();
            // Sanitized MBPP lists the imports its asserts need (`import math` for `math.isclose`)
            // apart from the tests; without them a correct solution fails with a NameError.
            if row.obj.contains_key("test_imports") {
                let imports = row.string_list("test_imports")?;
                setup = imports.into_iter().chain((!setup.is_empty()).then_some(setup)).collect::<Vec<_>>().join("\n");
            }
            let tests = CodeTests::Mbpp { test_list: tests, test_setup_code: setup };
            (Some(task_id.to_string()), Domain::Code, prompt, response, None, Some(tests.to_json()))
        }
        Format::Humaneval => {
            let task_id = row.text("task_id")?;
            let code_prompt = row.text("prompt")?;
            let solution = row.text("canonical_solution")?;
            let test = row.text("test")?;
            let entry_point = row.text("entry_point")?;
            let prompt = format!("Complete the following Python function.\n\n```python\n{code_prompt}```");
            let response = format!("```python\n{code_prompt}{solution}```");
            let tests = CodeTests::HumanEval { test, entry_point, code_prompt };
            (Some(task_id.replace('/', "_")), Domain::Code, prompt, response, None, Some(tests.to_json()))
        }
        Format::Rollouts => unreachable!("rollouts sources are read by rollouts.rs"),
        Format::Generic => {
            let map: &FieldMap = source.fields.as_ref().expect("validated: generic has fields");
            let id = match &map.id {
                Some(f) => row.opt_scalar(f)?,
                None => None,
            };
            int_id = id.as_deref().and_then(|s| s.parse().ok());
            let (prompt, response) = match (&map.messages, &map.prompt) {
                (Some(f), _) => {
                    let (mut earlier, prompt, response) = conversation(&mut row, f)?;
                    // A system prompt kept in a column of its own (OpenThoughts' `system`).
                    if let Some(column) = &map.system {
                        if let Some(text) = row.opt_text(column)?.filter(|t| !t.trim().is_empty()) {
                            if earlier.first().is_some_and(|t| t.role == Role::System) {
                                return Err(field_err(column, format!("the conversation in `{f}` has a system turn of its own")));
                            }
                            earlier.insert(0, Turn { role: Role::System, content: text });
                        }
                    }
                    context = earlier;
                    (prompt, response)
                }
                (None, Some(p)) => {
                    // The prompt first: a row missing both is quarantined naming it, as before.
                    let prompt = row.text(p)?;
                    let response = match &map.response {
                        Some(f) => row.text(f)?,
                        None => String::new(),
                    };
                    (prompt, response)
                }
                (None, None) => unreachable!("validated: generic names prompt or messages"),
            };
            let gold = match &map.gold {
                Some(f) => row.opt_scalar(f)?,
                None => None,
            };
            let tests = match &map.tests {
                Some(f) => row.code_tests(f)?,
                None => None,
            };
            (id, source.domain.expect("validated: generic has domain"), prompt, response, gold, tests)
        }
    };
    let native = native_id.unwrap_or_else(|| format!("L{line}"));
    let example = Example {
        id: format!("{}/{}", source.name, native),
        source: source.name.clone(),
        domain,
        prompt,
        response,
        gold,
        tests,
        metadata: row.metadata(),
        unfinished: false,
        context,
    };
    Ok((example, int_id))
}

/// A conversation column: a list of `{"role", "content"}` turns, a system turn first or none,
/// then user and assistant in turn, ending with the assistant's. Returns the turns before the
/// last user turn, that turn's text (the prompt) and the last assistant turn's (the response).
/// A turn with other keys is refused rather than read in part: OpenAI's fine-tuning format
/// marks assistant turns not to train with `weight: 0`, which would otherwise be trained.
fn conversation(row: &mut Row, field: &str) -> Result<(Vec<Turn>, String, String), FieldError> {
    let items = match row.get(field) {
        Some(Value::Array(items)) => items,
        Some(other) => return Err(field_err(field, format!("expected a list of turns, got {}", type_name(other)))),
        None => return Err(field_err(field, "missing field")),
    };
    let mut turns: Vec<Turn> = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let at = format!("{field}[{i}]");
        let Some(obj) = item.as_object() else {
            return Err(field_err(&at, format!("expected a {{\"role\", \"content\"}} object, got {}", type_name(item))));
        };
        // OpenAI's `{role, content}`, or ShareGPT's `{from, value}` (`human`, `gpt`).
        let (role_key, content_key) = if obj.get("from").is_some_and(|v| !v.is_null()) { ("from", "value") } else { ("role", "content") };
        // A null key says nothing (JSON writers of Parquet rows leave `"name": null` and the like).
        if let Some(other) = obj.iter().find(|(k, v)| *k != role_key && *k != content_key && !v.is_null()).map(|(k, _)| k) {
            return Err(field_err(&at, format!("key `{other}` is not read (a turn is `{role_key}` and `{content_key}`)")));
        }
        let role = match obj.get(role_key).and_then(Value::as_str) {
            Some("system") => Role::System,
            Some("user" | "human") => Role::User,
            Some("assistant" | "gpt") => Role::Assistant,
            Some(other) => return Err(field_err(&at, format!("{role_key} `{other}` is not system, user or assistant (human, gpt)"))),
            None => return Err(field_err(&at, format!("no `{role_key}` text"))),
        };
        let content = match obj.get(content_key) {
            // A blank earlier turn would be trained (an assistant's, as a bare end of turn) or
            // read as context with nothing in it; the last two are the filter's to judge.
            Some(Value::String(s)) if s.trim().is_empty() && i + 2 < items.len() => {
                return Err(field_err(&at, format!("blank `{content_key}`")));
            }
            Some(Value::String(s)) => s.clone(),
            Some(other) => return Err(field_err(&at, format!("`{content_key}` is {}, not text", type_name(other)))),
            None => return Err(field_err(&at, format!("no `{content_key}`"))),
        };
        // What may come here: a system turn only first; then user, assistant, user, ...
        let expected = match turns.last().map(|t| t.role) {
            None => &[Role::System, Role::User][..],
            Some(Role::System | Role::Assistant) => &[Role::User][..],
            Some(Role::User) => &[Role::Assistant][..],
        };
        if !expected.contains(&role) {
            let after = turns.last().map_or("first".to_string(), |t| format!("after `{}`", t.role.as_str()));
            return Err(field_err(
                &at,
                format!("`{}` {after}: turns go system (optional), then user and assistant in turn", role.as_str()),
            ));
        }
        turns.push(Turn { role, content });
    }
    match turns.last().map(|t| t.role) {
        Some(Role::Assistant) => {}
        _ => return Err(field_err(field, "the conversation does not end with an assistant turn (the response to train)")),
    }
    let response = turns.pop().expect("an assistant turn").content;
    let prompt = turns.pop().expect("a user turn before it").content;
    Ok((turns, prompt, response))
}

fn value_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => number_text(n),
        other => other.to_string(),
    }
}

/// Write the quarantine as JSONL (deterministic: file order).
pub fn quarantine_jsonl(rows: &[QuarantineRow]) -> String {
    rows.iter().map(|r| serde_json::to_string(r).expect("serialises") + "\n").collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn source(name: &str, path: &str, format: Format) -> Source {
        Source::new(name, path, format)
    }

    #[test]
    fn malformed_lines_are_quarantined_with_line_and_field() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("g.jsonl");
        let mut f = std::fs::File::create(&p).unwrap();
        writeln!(f, r#"{{"question": "q1", "answer": "a\n#### 3"}}"#).unwrap();
        writeln!(f, r#"{{"question": "q2", "answer": 5}}"#).unwrap(); // wrong type
        writeln!(f, r#"{{"question": "q3""#).unwrap(); // invalid JSON
        writeln!(f).unwrap(); // blank: not a row
        f.write_all(b"{\"question\": \"\xff\", \"answer\": \"x\"}\n").unwrap(); // invalid UTF-8
        writeln!(f, r#"{{"answer": "a"}}"#).unwrap(); // missing field
        writeln!(f, r#"[1, 2]"#).unwrap(); // not an object
        drop(f);
        let cfg = IngestConfig { max_bad_fraction: 1.0 };
        let out = ingest(&[source("g", "g.jsonl", Format::Gsm8k)], &dir.path().join("r.yaml"), &cfg, "", None).unwrap();
        assert_eq!(out.examples.len(), 1);
        assert_eq!(out.examples[0].gold.as_deref(), Some("3"));
        let q: Vec<(u64, &str)> = out.quarantine.iter().map(|q| (q.line, q.field.as_str())).collect();
        assert_eq!(q, vec![(2, "answer"), (3, ""), (5, ""), (6, "question"), (7, "")]);
        assert!(out.quarantine[2].error.contains("UTF-8"));
        assert_eq!(out.report.rows_in, 6);
        assert!(out.report.balanced(), "{:?}", out.report);

        let strict = IngestConfig { max_bad_fraction: 0.5 };
        let err =
            ingest(&[source("g", "g.jsonl", Format::Gsm8k)], &dir.path().join("r.yaml"), &strict, "", None).err().unwrap().to_string();
        assert!(err.contains("5 of 6 rows are malformed") && err.contains("g.jsonl:2: field `answer`"), "{err}");
        assert!(err.contains("g.jsonl:3: invalid JSON") && !err.contains("field ``"), "{err}");
    }

    #[test]
    fn bad_fraction_is_over_the_whole_file_not_the_rows_kept() {
        let dir = tempfile::tempdir().unwrap();
        let mut f = std::fs::File::create(dir.path().join("g.jsonl")).unwrap();
        for i in 0..9 {
            writeln!(f, r#"{{"question": "q{i}", "answer": "a\n#### {i}"}}"#).unwrap();
        }
        writeln!(f, r#"{{"question": "q9""#).unwrap(); // 1 malformed row of 10
        drop(f);
        let mut s = source("g", "g.jsonl", Format::Gsm8k);
        s.skip = Some(1);
        s.limit = Some(2);
        // 1 of 10 rows (10%) is within 20%, though 1 of the 3 rows kept or malformed is not.
        let out = ingest(&[s.clone()], &dir.path().join("r.yaml"), &IngestConfig { max_bad_fraction: 0.2 }, "", None).unwrap();
        assert_eq!((out.examples.len(), out.quarantine.len()), (2, 1));
        let err = ingest(&[s], &dir.path().join("r.yaml"), &IngestConfig { max_bad_fraction: 0.05 }, "", None).err().unwrap().to_string();
        assert!(err.contains("1 of 10 rows are malformed"), "{err}");
    }

    #[test]
    fn generic_code_tests_are_read_from_an_object_or_a_string_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let mut f = std::fs::File::create(dir.path().join("c.jsonl")).unwrap();
        let tests = r#"{"test_list": ["assert f() == 1"]}"#;
        writeln!(f, "{}", serde_json::json!({"q": "object", "a": "x", "t": serde_json::from_str::<Value>(tests).unwrap()})).unwrap();
        writeln!(f, "{}", serde_json::json!({"q": "string", "a": "x", "t": tests})).unwrap();
        writeln!(f, "{}", serde_json::json!({"q": "bad", "a": "x", "t": {"asserts": []}})).unwrap();
        writeln!(f, "{}", serde_json::json!({"q": "none", "a": "x"})).unwrap();
        drop(f);
        let mut s = source("c", "c.jsonl", Format::Generic);
        s.domain = Some(Domain::Code);
        s.fields = Some(FieldMap { prompt: Some("q".into()), response: Some("a".into()), tests: Some("t".into()), ..FieldMap::default() });
        let out = ingest(&[s], &dir.path().join("r.yaml"), &IngestConfig { max_bad_fraction: 1.0 }, "", None).unwrap();
        let want = r#"{"test_list":["assert f() == 1"],"test_setup_code":""}"#;
        let got: Vec<(&str, Option<&str>)> = out.examples.iter().map(|e| (e.prompt.as_str(), e.tests.as_deref())).collect();
        assert_eq!(got, [("object", Some(want)), ("string", Some(want)), ("none", None)]);
        assert_eq!((out.quarantine.len(), out.quarantine[0].line, out.quarantine[0].field.as_str()), (1, 3, "t"));
        assert!(out.quarantine[0].error.contains("neither HumanEval"), "{}", out.quarantine[0].error);
    }

    /// A `messages` column: the last exchange becomes prompt and response, the turns before it
    /// the context; a conversation that is not system?, (user, assistant)+ is quarantined naming
    /// the turn and what is wrong.
    #[test]
    fn generic_conversations_are_read_turn_by_turn() {
        let dir = tempfile::tempdir().unwrap();
        let turn = |role: &str, content: &str| serde_json::json!({"role": role, "content": content});
        let lines = [
            serde_json::json!({"id": 7, "m": [turn("system", "Be brief."), turn("user", "2+2?"), turn("assistant", "4"), turn("user", "3+3?"), turn("assistant", "6")], "src": "x"}),
            serde_json::json!({"m": [turn("user", "hi"), turn("assistant", "hello")]}),
            serde_json::json!({"m": [turn("user", "a"), turn("user", "b"), turn("assistant", "c")]}),
            serde_json::json!({"m": [turn("user", "a"), turn("assistant", "b"), turn("user", "c")]}),
            serde_json::json!({"m": [turn("user", "a"), {"role": "assistant", "content": "b", "weight": 0}]}),
            serde_json::json!({"m": [turn("user", "a"), turn("tool", "b")]}),
            serde_json::json!({"m": [turn("user", "a"), {"role": "assistant", "content": [{"type": "text", "text": "b"}]}]}),
            serde_json::json!({"m": "user: a"}),
            serde_json::json!({"m": [turn("user", "a"), turn("assistant", "b"), turn("system", "late")]}),
            serde_json::json!({"m": [turn("user", "a"), turn("assistant", " "), turn("user", "b"), turn("assistant", "c")]}),
            serde_json::json!({"m": [turn("user", "null keys"), {"role": "assistant", "content": "ok", "name": null}]}),
        ];
        std::fs::write(dir.path().join("c.jsonl"), lines.iter().map(|l| format!("{l}\n")).collect::<String>()).unwrap();
        let mut s = source("c", "c.jsonl", Format::Generic);
        s.domain = Some(Domain::Math);
        s.fields = Some(FieldMap { id: Some("id".into()), messages: Some("m".into()), ..FieldMap::default() });
        let out = ingest(&[s], &dir.path().join("r.yaml"), &IngestConfig { max_bad_fraction: 1.0 }, "", None).unwrap();
        let e = &out.examples[0];
        assert_eq!((e.id.as_str(), e.prompt.as_str(), e.response.as_str(), e.metadata.as_str()), ("c/7", "3+3?", "6", r#"{"src":"x"}"#));
        let roles: Vec<(Role, &str)> = e.context.iter().map(|t| (t.role, t.content.as_str())).collect();
        assert_eq!(roles, [(Role::System, "Be brief."), (Role::User, "2+2?"), (Role::Assistant, "4")]);
        assert_eq!((out.examples[1].prompt.as_str(), out.examples[1].context.len()), ("hi", 0));
        assert_eq!((out.examples.len(), out.examples[2].prompt.as_str()), (3, "null keys"));
        let q: Vec<(u64, &str, &str)> = out.quarantine.iter().map(|q| (q.line, q.field.as_str(), q.error.as_str())).collect();
        assert_eq!(
            q,
            [
                (3, "m[1]", "`user` after `user`: turns go system (optional), then user and assistant in turn"),
                (4, "m", "the conversation does not end with an assistant turn (the response to train)"),
                (5, "m[1]", "key `weight` is not read (a turn is `role` and `content`)"),
                (6, "m[1]", "role `tool` is not system, user or assistant (human, gpt)"),
                (7, "m[1]", "`content` is an array, not text"),
                (8, "m", "expected a list of turns, got a string"),
                (9, "m[2]", "`system` after `assistant`: turns go system (optional), then user and assistant in turn"),
                (10, "m[1]", "blank `content`"),
            ]
        );
        assert!(out.report.balanced(), "{:?}", out.report);
    }

    /// ShareGPT's `{from, value}` turns (`human`, `gpt`) read as OpenAI's do, and a system prompt
    /// kept in a column of its own (as OpenThoughts keeps it) becomes the first turn; a
    /// conversation that also has one is quarantined naming the column.
    #[test]
    fn sharegpt_turns_and_a_system_column() {
        let dir = tempfile::tempdir().unwrap();
        let sg = |from: &str, value: &str| serde_json::json!({"from": from, "value": value});
        let lines = [
            serde_json::json!({"sys": "Think step by step.", "c": [sg("human", "2+2?"), sg("gpt", "4"), sg("human", "3+3?"), sg("gpt", "6")]}),
            serde_json::json!({"sys": null, "c": [sg("human", "hi"), sg("gpt", "hello")]}),
            serde_json::json!({"sys": "Be brief.", "c": [sg("system", "Be long."), sg("human", "hi"), sg("gpt", "hello")]}),
            serde_json::json!({"c": [sg("human", "hi"), {"from": "gpt", "content": "hello"}]}),
        ];
        std::fs::write(dir.path().join("s.jsonl"), lines.iter().map(|l| format!("{l}\n")).collect::<String>()).unwrap();
        let mut s = source("s", "s.jsonl", Format::Generic);
        s.domain = Some(Domain::Math);
        s.fields = Some(FieldMap { messages: Some("c".into()), system: Some("sys".into()), ..FieldMap::default() });
        let out = ingest(&[s], &dir.path().join("r.yaml"), &IngestConfig { max_bad_fraction: 1.0 }, "", None).unwrap();
        let turns = |e: &Example| e.context.iter().map(|t| (t.role, t.content.clone())).collect::<Vec<_>>();
        let first = &out.examples[0];
        assert_eq!((first.prompt.as_str(), first.response.as_str()), ("3+3?", "6"));
        assert_eq!(
            turns(first),
            [(Role::System, "Think step by step.".to_string()), (Role::User, "2+2?".to_string()), (Role::Assistant, "4".to_string())]
        );
        assert_eq!((out.examples.len(), turns(&out.examples[1])), (2, vec![]));
        let q: Vec<(u64, &str, &str)> = out.quarantine.iter().map(|q| (q.line, q.field.as_str(), q.error.as_str())).collect();
        assert_eq!(
            q,
            [
                (3, "sys", "the conversation in `c` has a system turn of its own"),
                (4, "c[1]", "key `content` is not read (a turn is `from` and `value`)"),
            ]
        );
    }

    /// A generic row missing both its prompt and its response is quarantined naming the prompt:
    /// the field read first, so `quarantine.jsonl` (hashed into the manifest) stays as it was.
    #[test]
    fn a_generic_row_missing_everything_names_its_prompt() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("g.jsonl"), "{\"q\": \"ok\", \"a\": \"fine\"}\n{\"other\": 1}\n").unwrap();
        let mut s = source("g", "g.jsonl", Format::Generic);
        s.domain = Some(Domain::Math);
        s.fields = Some(FieldMap { prompt: Some("q".into()), response: Some("a".into()), ..FieldMap::default() });
        let out = ingest(&[s], &dir.path().join("r.yaml"), &IngestConfig { max_bad_fraction: 1.0 }, "", None).unwrap();
        let q: Vec<(u64, &str)> = out.quarantine.iter().map(|q| (q.line, q.field.as_str())).collect();
        assert_eq!(q, [(2, "q")]);
    }

    #[test]
    fn mbpp_id_range_and_gzip() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m.jsonl.gz");
        let mut gz = flate2::write::GzEncoder::new(std::fs::File::create(&p).unwrap(), flate2::Compression::default());
        for id in 1..=5 {
            writeln!(gz, r#"{{"text": "t{id}", "code": "def f():\r\n    return {id}", "task_id": {id}, "test_list": ["assert f() == {id}"], "test_setup_code": ""}}"#).unwrap();
        }
        gz.finish().unwrap();
        let mut s = source("m", "m.jsonl.gz", Format::Mbpp);
        s.id_range = Some([2, 4]);
        let out = ingest(&[s], &dir.path().join("r.yaml"), &IngestConfig::default(), "", None).unwrap();
        let ids: Vec<&str> = out.examples.iter().map(|e| e.id.as_str()).collect();
        assert_eq!(ids, ["m/2", "m/3", "m/4"]);
        assert_eq!(out.examples[0].response, "```python\ndef f():\n    return 2\n```");
        assert_eq!(out.report.dropped.get("outside_id_range"), Some(&2));
        assert!(out.report.balanced());
    }

    #[test]
    fn a_generic_field_no_row_has_is_refused_naming_key_column_and_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("g.jsonl"), "{\"q\": \"a\", \"tests\": null}\n{\"q\": \"b\"}\n").unwrap();
        let mut s = source("g", "g.jsonl", Format::Generic);
        s.domain = Some(Domain::Code);
        let map = |tests: &str| FieldMap { prompt: Some("q".into()), tests: Some(tests.into()), ..FieldMap::default() };
        s.fields = Some(map("testz"));
        let err = ingest(&[s.clone()], &dir.path().join("r.yaml"), &IngestConfig::default(), "", None).err().unwrap().to_string();
        assert!(err.contains("`fields.tests` names column `testz`") && err.contains("g.jsonl") && err.contains("q, tests"), "{err}");
        // A column that is present but null on every row is data, not a typo.
        s.fields = Some(map("tests"));
        assert_eq!(ingest(&[s], &dir.path().join("r.yaml"), &IngestConfig::default(), "", None).unwrap().examples.len(), 2);
    }

    #[test]
    fn sanitized_mbpp_imports_go_before_its_tests_and_qwen_math_ids_select() {
        let dir = tempfile::tempdir().unwrap();
        // As sanitized-mbpp.json writes task 82 (its assert needs `math`).
        let row = serde_json::json!([{"source_file": "x", "task_id": 82, "prompt": "Write a function to find the volume of a sphere.",
            "code": "import math\ndef volume_sphere(r):\n  return (4./3.)*math.pi*r*r*r",
            "test_imports": ["import math"], "test_list": ["assert math.isclose(volume_sphere(10), 4188.790204786391, rel_tol=0.001)"]}]);
        std::fs::write(dir.path().join("m.json"), "\u{feff}".to_string() + &row.to_string()).unwrap();
        let out = ingest(&[source("m", "m.json", Format::Mbpp)], &dir.path().join("r.yaml"), &IngestConfig::default(), "", None).unwrap();
        let tests = CodeTests::from_json(out.examples[0].tests.as_deref().unwrap()).unwrap();
        assert!(matches!(&tests, CodeTests::Mbpp { test_setup_code, .. } if test_setup_code == "import math"), "{tests:?}");
        assert!(!out.examples[0].metadata.contains("test_imports"));

        let lines: String = (0..4).map(|i| format!("{{\"idx\": {i}, \"problem\": \"p{i}\", \"answer\": \"{i}\"}}\n")).collect();
        std::fs::write(dir.path().join("q.jsonl"), "\u{feff}".to_string() + &lines).unwrap();
        let mut s = source("q", "q.jsonl", Format::QwenMath);
        s.id_range = Some([1, 2]);
        let out = ingest(&[s], &dir.path().join("r.yaml"), &IngestConfig::default(), "", None).unwrap();
        // The byte-order mark costs no row.
        let ids: Vec<&str> = out.examples.iter().map(|e| e.id.as_str()).collect();
        assert_eq!((ids, out.quarantine.len()), (vec!["q/1", "q/2"], 0));
    }

    #[test]
    fn parquet_goes_through_datafusion_with_row_numbers() {
        use arrow::array::{Int64Array, RecordBatch, StringArray};
        use std::sync::Arc;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("g.parquet");
        let batch = RecordBatch::try_from_iter(vec![
            ("uid", Arc::new(Int64Array::from(vec![7, 8, 9])) as arrow::array::ArrayRef),
            ("q", Arc::new(StringArray::from(vec![Some("What is 1+1?"), None, Some("What is 2+2?")])) as _),
            ("a", Arc::new(StringArray::from(vec![Some("\\boxed{2}"), Some("x"), Some("\\boxed{4}")])) as _),
        ])
        .unwrap();
        let mut w = parquet::arrow::ArrowWriter::try_new(std::fs::File::create(&path).unwrap(), batch.schema(), None).unwrap();
        w.write(&batch).unwrap();
        w.close().unwrap();
        let source = Source {
            domain: Some(Domain::Math),
            fields: Some(FieldMap { id: Some("uid".into()), prompt: Some("q".into()), response: Some("a".into()), ..FieldMap::default() }),
            ..Source::new("p", "g.parquet", Format::Generic)
        };
        let out = ingest(&[source], &dir.path().join("r.yaml"), &IngestConfig { max_bad_fraction: 0.5 }, "", None).unwrap();
        let ids: Vec<&str> = out.examples.iter().map(|e| e.id.as_str()).collect();
        assert_eq!(ids, ["p/7", "p/9"]);
        assert_eq!(out.examples[1].response, "\\boxed{4}");
        // The null prompt is quarantined with its row number and field.
        assert_eq!((out.quarantine[0].line, out.quarantine[0].field.as_str()), (2, "q"));
        assert!(out.report.balanced());
    }
}
