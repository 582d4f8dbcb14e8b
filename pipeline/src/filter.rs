//! Stage 2, filter: drop rows that cannot train (or evaluate) well, each with its reason.
//!
//! The per-row facts that need Rust or Python (token counts, an extractable final answer, Python
//! syntax) are computed first; the decision is then one DataFusion plan: a `CASE` over those
//! columns and the recipe's regex rules yields the first failing reason for every row, in a fixed
//! order, so the reported reason is deterministic.

use anyhow::{bail, Context};
use arrow::array::{Array, ArrayRef, BooleanArray, Int64Array, RecordBatch, StringArray, UInt32Array};
use arrow::datatypes::DataType;
use datafusion::common::{Result as DfResult, ScalarValue};
use datafusion::logical_expr::{col, lit, when, ColumnarValue, Expr, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility};
use datafusion::prelude::SessionContext;
use model_files::tokenizer::ChatTokenizer;
use schemas::recipe::{FilterConfig, RegexRule, SnapshotKind, TextField};
use schemas::{Domain, Dropped, Example};
use std::io::Write;
use std::ops::Not;
use std::process::{Command, Stdio};
use std::sync::Arc;
use verify::answer::code_of;
use verify::math::{self, ExtractOptions};

pub const STAGE: &str = "filter";

/// `has_final_answer(text)`: true when the grader's extractor ([`verify::math::extract`], MATH
/// rules: no last-number fallback) finds a final answer, so training keeps exactly the solutions
/// whose answers evaluation could read.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct HasFinalAnswer {
    signature: Signature,
}

impl HasFinalAnswer {
    pub fn udf() -> ScalarUDF {
        ScalarUDF::new_from_impl(HasFinalAnswer { signature: Signature::exact(vec![DataType::Utf8], Volatility::Immutable) })
    }
}

impl ScalarUDFImpl for HasFinalAnswer {
    fn name(&self) -> &str {
        "has_final_answer"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> DfResult<DataType> {
        Ok(DataType::Boolean)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let text = arrays[0].as_any().downcast_ref::<StringArray>().expect("signature is Utf8");
        let out: BooleanArray = text.iter().map(|t| t.map(|t| math::extract(t, &ExtractOptions::MATH).is_some())).collect();
        Ok(ColumnarValue::Array(Arc::new(out)))
    }
}

/// Every include and exclude pattern compiles; an error names the rule (`filter.include[1]`).
pub fn check_patterns(cfg: &FilterConfig) -> anyhow::Result<()> {
    for (list, rules) in [("include", &cfg.include), ("exclude", &cfg.exclude)] {
        for (i, rule) in rules.iter().enumerate() {
            regex::Regex::new(&rule.pattern)
                .with_context(|| format!("`filter.{list}[{i}]`: pattern `{}` is not a valid regex", rule.pattern))?;
        }
    }
    Ok(())
}

pub fn filter(
    examples: Vec<Example>,
    cfg: &FilterConfig,
    kind: SnapshotKind,
    tok: &ChatTokenizer,
) -> anyhow::Result<(Vec<Example>, Vec<Dropped>)> {
    check_patterns(cfg)?;
    let python_errors = if cfg.require_python_parses { python_syntax_errors(&examples)? } else { vec![None; examples.len()] };
    let texts: Vec<String> = examples.iter().map(Example::text).collect();
    let counts = tok.count_tokens_batch(&texts.iter().map(String::as_str).collect::<Vec<_>>());
    // A text the tokenizer rejects has no length: its row is dropped as `tokenize_error`.
    let n_tokens: Vec<Option<usize>> = counts.iter().map(|c| c.as_ref().ok().copied()).collect();

    let batch = facts_batch(&examples, &texts, &n_tokens, &python_errors)?;
    let reasons = decide(batch, cfg, kind)?;

    let mut kept = Vec::with_capacity(examples.len());
    let mut dropped = vec![];
    for (((ex, reason), py_err), count) in examples.into_iter().zip(reasons).zip(python_errors).zip(counts) {
        match reason {
            None => kept.push(ex),
            Some(reason) => {
                let detail = match reason.as_str() {
                    "python_syntax_error" => py_err.unwrap_or_default(),
                    "tokenize_error" => count.err().unwrap_or_default(),
                    _ => String::new(),
                };
                dropped.push(Dropped::new(STAGE, &reason, &ex, detail));
            }
        }
    }
    Ok((kept, dropped))
}

/// `texts`: each example's [`Example::text`], as the token counts were taken from.
fn facts_batch(
    examples: &[Example],
    texts: &[String],
    n_tokens: &[Option<usize>],
    python_errors: &[Option<String>],
) -> anyhow::Result<RecordBatch> {
    let columns: Vec<(&str, ArrayRef)> = vec![
        ("idx", Arc::new((0..examples.len() as u32).collect::<UInt32Array>())),
        ("domain", Arc::new(examples.iter().map(|e| Some(e.domain.as_str())).collect::<StringArray>())),
        ("prompt", Arc::new(examples.iter().map(|e| Some(e.prompt.as_str())).collect::<StringArray>())),
        ("response", Arc::new(examples.iter().map(|e| Some(e.response.as_str())).collect::<StringArray>())),
        // The whole conversation (`prompt\nresponse` for one turn): what `any` rules match.
        ("text", Arc::new(texts.iter().map(|t| Some(t.as_str())).collect::<StringArray>())),
        ("gold", Arc::new(examples.iter().map(|e| e.gold.as_deref()).collect::<StringArray>())),
        ("n_tokens", Arc::new(n_tokens.iter().map(|n| n.map(|n| n as i64)).collect::<Int64Array>())),
        ("python_ok", Arc::new(python_errors.iter().map(|e| Some(e.is_none())).collect::<BooleanArray>())),
        ("has_tests", Arc::new(examples.iter().map(|e| Some(e.tests.is_some())).collect::<BooleanArray>())),
    ];
    Ok(RecordBatch::try_from_iter(columns)?)
}

fn text_col(field: TextField) -> Expr {
    match field {
        TextField::Prompt => col("prompt"),
        TextField::Response => col("response"),
        TextField::Any => col("text"),
    }
}

fn matches(rule: &RegexRule) -> Expr {
    datafusion::functions::regex::expr_fn::regexp_like(text_col(rule.field), lit(rule.pattern.clone()), None)
}

fn blank(e: Expr) -> Expr {
    datafusion::functions::regex::expr_fn::regexp_like(e, lit(r"^\s*$"), None)
}

/// The first failing reason per row (None = keep), from one DataFusion plan.
fn decide(batch: RecordBatch, cfg: &FilterConfig, kind: SnapshotKind) -> anyhow::Result<Vec<Option<String>>> {
    let has_answer = HasFinalAnswer::udf();
    let is_math = col("domain").eq(lit(Domain::Math.as_str()));
    let is_code = col("domain").eq(lit(Domain::Code.as_str()));
    // Evaluation rows need a gold answer; training rows need one in the response to learn from.
    // A blank gold is no answer: graded against it, every sample would be wrong.
    let answer_ok = match kind {
        SnapshotKind::Train | SnapshotKind::Rollouts => has_answer.call(vec![col("response")]),
        SnapshotKind::Prompts => col("gold").is_not_null().and(blank(col("gold")).not()),
    };
    let mut rules: Vec<(Expr, String)> = vec![(blank(col("prompt")), "empty_prompt".into())];
    if kind == SnapshotKind::Train {
        rules.push((blank(col("response")), "empty_response".into()));
    }
    rules.push((col("n_tokens").is_null(), "tokenize_error".into()));
    rules.push((col("n_tokens").lt(lit(cfg.min_tokens as i64)), "too_few_tokens".into()));
    if let Some(max) = cfg.max_tokens {
        rules.push((col("n_tokens").gt(lit(max as i64)), "too_many_tokens".into()));
    }
    if cfg.require_math_answer {
        rules.push((is_math.and(answer_ok.not()), "no_final_answer".into()));
    }
    // A code prompt without tests can be neither graded nor sampled from with a verdict.
    if kind == SnapshotKind::Prompts {
        rules.push((is_code.clone().and(col("has_tests").not()), "no_tests".into()));
    }
    if cfg.require_python_parses {
        rules.push((is_code.and(col("python_ok").not()), "python_syntax_error".into()));
    }
    for rule in &cfg.include {
        rules.push((matches(rule).not(), format!("include_not_matched:{}", rule.pattern)));
    }
    for rule in &cfg.exclude {
        rules.push((matches(rule), format!("exclude_matched:{}", rule.pattern)));
    }
    let mut case = when(rules[0].0.clone(), lit(rules[0].1.clone()));
    for (cond, reason) in &rules[1..] {
        case = case.when(cond.clone(), lit(reason.clone()));
    }
    let reason = case.otherwise(lit(ScalarValue::Utf8(None)))?;

    let runtime = tokio::runtime::Builder::new_current_thread().build()?;
    let batches = runtime.block_on(async {
        let ctx = SessionContext::new();
        let df = ctx.read_batch(batch)?.select(vec![col("idx"), reason.alias("reason")])?.sort(vec![col("idx").sort(true, false)])?;
        df.collect().await
    })?;
    let mut out = Vec::new();
    for b in &batches {
        let reasons = arrow::compute::cast(b.column(1), &DataType::Utf8)?;
        let reasons = reasons.as_any().downcast_ref::<StringArray>().expect("cast to Utf8");
        out.extend(reasons.iter().map(|r| r.map(str::to_string)));
    }
    Ok(out)
}

const PY_CHECK: &str = r#"
import ast, json, sys
out = []
for src in json.load(sys.stdin):
    if src is None:
        out.append(None)
        continue
    try:
        ast.parse(src)
        out.append(None)
    except SyntaxError as e:
        out.append(f"line {e.lineno}: {e.msg}")
    except Exception as e:
        out.append(f"{type(e).__name__}: {e}")
json.dump(out, sys.stdout)
"#;

/// Python syntax errors of the code rows (None = parses, or not a code row), checked with the
/// real Python parser in one `python3` process.
pub fn python_syntax_errors(examples: &[Example]) -> anyhow::Result<Vec<Option<String>>> {
    let sources: Vec<Option<&str>> = examples.iter().map(|e| (e.domain == Domain::Code).then(|| code_of(&e.response))).collect();
    if sources.iter().all(Option::is_none) {
        return Ok(vec![None; examples.len()]);
    }
    let mut child = Command::new("python3")
        .args(["-c", PY_CHECK])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("filter.require_python_parses needs `python3` on PATH; install it or set it to false")?;
    let input = serde_json::to_vec(&sources)?;
    let mut stdin = child.stdin.take().expect("piped");
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let output = child.wait_with_output()?;
    writer.join().expect("writer thread").context("writing code to python3")?;
    if !output.status.success() {
        bail!("python3 syntax check failed: {}", String::from_utf8_lossy(&output.stderr));
    }
    let result: Vec<Option<String>> = serde_json::from_slice(&output.stdout).context("reading python3 syntax check output")?;
    if result.len() != examples.len() {
        bail!("python3 syntax check returned {} results for {} rows", result.len(), examples.len());
    }
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(rows: &[Example]) -> Vec<String> {
        rows.iter().map(Example::text).collect()
    }

    fn ex(id: &str, domain: Domain, response: &str) -> Example {
        Example {
            id: id.into(),
            source: "s".into(),
            domain,
            prompt: "p".into(),
            response: response.into(),
            gold: None,
            tests: None,
            metadata: "{}".into(),
            unfinished: false,
            context: vec![],
        }
    }

    #[test]
    fn a_bad_pattern_is_named_by_its_rule() {
        let rule = |pattern: &str| RegexRule { field: TextField::Any, pattern: pattern.into() };
        let cfg = FilterConfig { include: vec![rule("ok")], exclude: vec![rule("fine"), rule("(unclosed")], ..FilterConfig::default() };
        let err = format!("{:#}", check_patterns(&cfg).unwrap_err());
        assert!(err.contains("`filter.exclude[1]`") && err.contains("(unclosed"), "{err}");
        assert!(check_patterns(&FilterConfig { exclude: vec![rule("fine")], ..cfg }).is_ok());
    }

    #[test]
    fn python_syntax_is_checked_by_python() {
        let rows = [
            ex("a", Domain::Code, "```python\ndef f(x):\n    return x\n```"),
            ex("b", Domain::Code, "```python\ndef f(x)\n    return x\n```"),
            ex("c", Domain::Math, "def f(x) not python but math"),
        ];
        let errs = python_syntax_errors(&rows).unwrap();
        assert_eq!(errs[0], None);
        assert!(errs[1].as_deref().unwrap().starts_with("line 1"), "{:?}", errs[1]);
        assert_eq!(errs[2], None);
    }

    #[test]
    fn reasons_come_from_one_plan_in_a_fixed_order() {
        let mut rows = vec![
            ex("keep", Domain::Math, "so \\boxed{3}"),
            ex("noans", Domain::Math, "I do not know"),
            ex("empty", Domain::Math, "  \n "),
            ex("code", Domain::Code, "x"),
            ex("spam", Domain::Math, "buy now #### 4"),
            ex("untokenizable", Domain::Math, "buy now #### 4"),
        ];
        rows[3].prompt = "  ".into();
        let n_tokens = vec![Some(10), Some(10), Some(10), Some(10), Some(10), None];
        let py = vec![None, None, None, None, None, None];
        let batch = facts_batch(&rows, &texts(&rows), &n_tokens, &py).unwrap();
        let cfg = FilterConfig {
            exclude: vec![RegexRule { field: TextField::Response, pattern: "(?i)buy now".into() }],
            ..FilterConfig::default()
        };
        let reasons = decide(batch, &cfg, SnapshotKind::Train).unwrap();
        assert_eq!(
            reasons,
            vec![
                None,
                Some("no_final_answer".into()),
                Some("empty_response".into()),
                Some("empty_prompt".into()),
                Some("exclude_matched:(?i)buy now".into()),
                Some("tokenize_error".into())
            ]
        );
    }

    #[test]
    fn evaluation_rows_need_a_gold_answer_that_is_not_blank_or_tests() {
        let mut rows = vec![
            ex("gold", Domain::Math, ""),
            ex("none", Domain::Math, ""),
            ex("blank", Domain::Math, ""),
            ex("tests", Domain::Code, ""),
            ex("untested", Domain::Code, ""),
        ];
        rows[0].gold = Some("3".into());
        rows[2].gold = Some(" \n".into());
        rows[3].tests = Some(r#"{"test_list":["assert f() == 1"],"test_setup_code":""}"#.into());
        let batch = facts_batch(&rows, &texts(&rows), &[Some(10); 5], &[None, None, None, None, None]).unwrap();
        let reasons = decide(batch, &FilterConfig::default(), SnapshotKind::Prompts).unwrap();
        let want = [None, Some("no_final_answer"), Some("no_final_answer"), None, Some("no_tests")];
        assert_eq!(reasons, want.map(|r| r.map(String::from)));
        // Training rows learn from their response; they need no tests.
        rows[4].response = "def f():\n    return 1".into();
        let batch = facts_batch(&rows[4..], &texts(&rows[4..]), &[Some(10)], &[None]).unwrap();
        assert_eq!(decide(batch, &FilterConfig::default(), SnapshotKind::Train).unwrap(), [None]);
    }
}
