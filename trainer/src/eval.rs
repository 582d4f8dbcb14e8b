//! `trainer eval`: generate K completions per benchmark prompt, verify each (math answers with
//! the math verifier, code in the sandbox), and report Average@K and pass@K per benchmark.
//!
//! The prompts come from the pipeline's evaluation snapshots (prompt-only, chat template already
//! applied), so an evaluation is pinned to a snapshot id just as training is. Every sample is
//! written to `results/<bench>.jsonl`, and `summary.json` / `summary.md` carry the model's and
//! each snapshot's hashes.

use crate::generate::{generate_batch, stop_ids, Completion, Finish, Request, Sampling};
use crate::model::Llama;
use crate::sandbox::{self, Limits};
use anyhow::{bail, Context};
use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::Int32Type;
use burn::tensor::backend::Backend;
use pipeline::math_verify::{self, ExtractOptions};
use pipeline::tokenize::ChatTokenizer;
use rayon::prelude::*;
use schemas::manifest::Manifest;
use schemas::recipe::SnapshotKind;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// One evaluation prompt as stored in a `prompts` snapshot.
#[derive(Debug, Clone)]
pub struct Prompt {
    pub id: String,
    pub domain: String,
    pub prompt_ids: Vec<u32>,
    /// The dataset's own answer (a worked solution, a canonical program).
    pub reference: String,
    pub gold: Option<String>,
    /// Code benchmarks: JSON with the tests (see the pipeline's HumanEval and MBPP adapters).
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
    let manifest = crate::data::verified_manifest(&dir, SnapshotKind::Prompts)?;
    let tokenizer = ChatTokenizer::from_tokenizer_json(
        &dir.join(pipeline::build::TOKENIZER_FILE),
        &dir.join("chat_template.jinja"),
        &manifest.tokenizer.eos_token,
        None,
    )?;
    let mut prompts = vec![];
    crate::data::for_each_batch(&dir, &manifest, |batch| read_prompts(batch, &mut prompts))?;
    let name = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| bench.to_string());
    Ok(Benchmark { name, dir, manifest, prompts, tokenizer })
}

fn read_prompts(batch: &RecordBatch, out: &mut Vec<Prompt>) -> anyhow::Result<()> {
    let col = |name: &str| batch.column_by_name(name).with_context(|| format!("column `{name}` missing"));
    let (id, domain, gold, tests) = (col("id")?.as_string::<i32>(), col("domain")?.as_string::<i32>(), col("gold")?.as_string::<i32>(), col("tests")?.as_string::<i32>());
    let ids = col("prompt_ids")?.as_list::<i32>();
    let reference = col("reference")?.as_string::<i32>();
    for i in 0..batch.num_rows() {
        out.push(Prompt {
            id: id.value(i).to_string(),
            domain: domain.value(i).to_string(),
            prompt_ids: ids.value(i).as_primitive::<Int32Type>().values().iter().map(|&x| x as u32).collect(),
            reference: reference.value(i).to_string(),
            gold: gold.is_valid(i).then(|| gold.value(i).to_string()),
            tests: tests.is_valid(i).then(|| tests.value(i).to_string()),
        });
    }
    Ok(())
}

/// Settings of one evaluation run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EvalConfig {
    pub samples: usize,
    pub sampling: Sampling,
    /// First N prompts of each benchmark (snapshot order), for quick runs.
    pub limit: Option<usize>,
    /// Sequences decoded together; each CPU thread decodes one batch at a time.
    pub batch_size: usize,
}

/// One line of `results/<bench>.jsonl`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SampleResult {
    pub bench: String,
    pub prompt_id: String,
    pub sample: usize,
    pub completion: String,
    /// Math: the answer found in the completion; code: the code that was run.
    pub extracted: Option<String>,
    pub correct: bool,
    pub finish: Finish,
    pub new_tokens: usize,
    /// Code: how the sandboxed run ended (`Passed`, `Failed { .. }`, `Timeout`, ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
}

/// Per-benchmark figures of `summary.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BenchSummary {
    pub bench: String,
    pub snapshot_id: String,
    pub snapshot: String,
    pub prompts: usize,
    pub samples: usize,
    /// Mean over prompts of the fraction of correct samples (greedy accuracy when K = 1, T = 0).
    pub average_at_k: f64,
    /// Unbiased pass@k (Chen et al. 2021) for k = 1 and k = K.
    pub pass_at_1: f64,
    pub pass_at_k: f64,
    /// Samples cut off by `max_new_tokens` rather than ended by the model.
    pub truncated: usize,
    pub mean_new_tokens: f64,
    pub generation_seconds: f64,
    pub new_tokens_per_second: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Summary {
    pub model: String,
    pub model_sha256: String,
    pub config: EvalConfig,
    pub benchmarks: Vec<BenchSummary>,
}

/// Unbiased pass@k from `n` samples of which `c` are correct: `1 - C(n-c, k) / C(n, k)`,
/// computed as a product so large `n` does not overflow.
pub fn pass_at_k(n: usize, c: usize, k: usize) -> f64 {
    assert!(k >= 1 && k <= n && c <= n, "pass@{k} needs 1 <= k <= n = {n} and c = {c} <= n");
    if n - c < k {
        return 1.0;
    }
    1.0 - ((n - c + 1)..=n).map(|i| 1.0 - k as f64 / i as f64).product::<f64>()
}

/// Generates, verifies and writes results for one benchmark.
pub fn evaluate<B: Backend>(model: &Llama<B>, bench: &Benchmark, cfg: &EvalConfig, out_dir: &Path, device: &B::Device) -> anyhow::Result<BenchSummary> {
    let prompts = &bench.prompts[..cfg.limit.unwrap_or(usize::MAX).min(bench.prompts.len())];
    if prompts.is_empty() {
        bail!("{}: no prompts to evaluate", bench.name);
    }
    let k = cfg.samples.max(1);
    let tok = &bench.tokenizer;
    let stop = stop_ids(tok);
    let vocab = model.config.vocab_size;
    if let Some(p) = prompts.iter().find(|p| p.prompt_ids.iter().any(|&t| t as usize >= vocab)) {
        bail!("{}: prompt {} has token ids beyond the model's vocabulary ({vocab}): the snapshot was tokenized for another model", bench.name, p.id);
    }

    // Requests sorted by prompt length so each batch pads little; `stream` = prompt * K + sample
    // fixes each sample's random stream whatever the batching.
    let mut order: Vec<(usize, usize)> = (0..prompts.len()).flat_map(|p| (0..k).map(move |s| (p, s))).collect();
    order.sort_by_key(|&(p, s)| (prompts[p].prompt_ids.len(), p, s));
    let batches: Vec<&[(usize, usize)]> = order.chunks(cfg.batch_size.max(1)).collect();
    let bar = pipeline::progress::bar(order.len(), &format!("gen {}", bench.name));
    let start = Instant::now();
    let done: Vec<Vec<Completion>> = batches
        .par_iter()
        .map(|batch| {
            let requests: Vec<Request> = batch.iter().map(|&(p, s)| Request { prompt: &prompts[p].prompt_ids, stream: (p * k + s) as u64 }).collect();
            let out = generate_batch(model, &requests, &cfg.sampling, &stop, tok.pad_id(), device);
            bar.inc(batch.len() as u64);
            out
        })
        .collect();
    bar.finish_and_clear();
    let generation_seconds = start.elapsed().as_secs_f64();
    let mut completions: Vec<Vec<Option<Completion>>> = vec![vec![None; k]; prompts.len()];
    for (batch, outs) in batches.iter().zip(done) {
        for (&(p, s), c) in batch.iter().zip(outs) {
            completions[p][s] = Some(c);
        }
    }
    let mut results: Vec<SampleResult> = vec![];
    for (p, prompt) in prompts.iter().enumerate() {
        for (s, c) in completions[p].iter().enumerate() {
            let c = c.as_ref().expect("every sample generated");
            results.push(SampleResult {
                bench: bench.name.clone(),
                prompt_id: prompt.id.clone(),
                sample: s,
                completion: tok.decode(c.text_ids()),
                extracted: None,
                correct: false,
                finish: c.finish,
                new_tokens: c.ids.len(),
                status: None,
            });
        }
    }
    grade(&bench.name, prompts, k, &mut results)?;
    write_results(&out_dir.join("results").join(format!("{}.jsonl", bench.name)), &results)?;

    let mut average = 0.0;
    let (mut pass1, mut passk) = (0.0, 0.0);
    for per_prompt in results.chunks(k) {
        let c = per_prompt.iter().filter(|r| r.correct).count();
        average += c as f64 / k as f64;
        pass1 += pass_at_k(k, c, 1);
        passk += pass_at_k(k, c, k);
    }
    let n = prompts.len() as f64;
    let new_tokens: usize = results.iter().map(|r| r.new_tokens).sum();
    Ok(BenchSummary {
        bench: bench.name.clone(),
        snapshot_id: bench.manifest.snapshot_id.clone(),
        snapshot: bench.dir.display().to_string(),
        prompts: prompts.len(),
        samples: k,
        average_at_k: average / n,
        pass_at_1: pass1 / n,
        pass_at_k: passk / n,
        truncated: results.iter().filter(|r| r.finish == Finish::Length).count(),
        mean_new_tokens: new_tokens as f64 / results.len() as f64,
        generation_seconds,
        new_tokens_per_second: new_tokens as f64 / generation_seconds.max(1e-9),
    })
}

/// Fills `extracted` and `correct`: math with the verifier (GSM8K may fall back to the last
/// number), HumanEval and MBPP by running the code with the benchmark's tests in the sandbox.
pub fn grade(bench: &str, prompts: &[Prompt], k: usize, results: &mut [SampleResult]) -> anyhow::Result<()> {
    let prompt_of = |i: usize| &prompts[i / k];
    let code = prompts.first().is_some_and(|p| p.domain == "code");
    if !code {
        let opts = ExtractOptions::for_benchmark(bench);
        results.par_iter_mut().enumerate().try_for_each(|(i, r)| -> anyhow::Result<()> {
            let gold = prompt_of(i).gold.as_deref().with_context(|| format!("{bench}: prompt {} has no gold answer", prompt_of(i).id))?;
            let v = math_verify::verify(gold, &r.completion, &opts);
            r.extracted = v.extracted;
            r.correct = v.correct;
            Ok(())
        })?;
        return Ok(());
    }
    let mut programs = Vec::with_capacity(results.len());
    for (i, r) in results.iter_mut().enumerate() {
        let p = prompt_of(i);
        let tests: serde_json::Value = serde_json::from_str(p.tests.as_deref().with_context(|| format!("{bench}: prompt {} has no tests", p.id))?)
            .with_context(|| format!("{bench}: prompt {}: tests are not JSON", p.id))?;
        let text = |f: &str| tests[f].as_str().map(str::to_string).with_context(|| format!("{bench}: prompt {}: tests lack `{f}`", p.id));
        let code = sandbox::extract_code(&r.completion);
        let program = if tests.get("entry_point").is_some() {
            sandbox::humaneval_program(&text("code_prompt")?, &code, &text("test")?, &text("entry_point")?)
        } else {
            let list: Vec<String> = serde_json::from_value(tests["test_list"].clone()).with_context(|| format!("{bench}: prompt {}: `test_list`", p.id))?;
            sandbox::mbpp_program(&code, tests["test_setup_code"].as_str().unwrap_or(""), &list)
        };
        r.extracted = Some(code);
        programs.push(program);
    }
    let bar = pipeline::progress::bar(programs.len(), &format!("run {bench}"));
    // One pool over all programs: batches would wait for their slowest (a timed-out loop).
    let outcomes = sandbox::run_many(&programs, &Limits::default(), rayon::current_num_threads(), |_| bar.inc(1))?;
    bar.finish_and_clear();
    for (r, o) in results.iter_mut().zip(outcomes) {
        r.correct = o.passed;
        r.status = Some(format!("{:?}", o.status));
    }
    Ok(())
}

fn write_results(path: &Path, results: &[SampleResult]) -> anyhow::Result<()> {
    let mut buf = Vec::new();
    for r in results {
        serde_json::to_writer(&mut buf, r)?;
        buf.push(b'\n');
    }
    std::fs::create_dir_all(path.parent().expect("results/ folder"))?;
    schemas::write_atomic(path, &buf)
}

/// The summary as a Markdown table, model and snapshots named by hash.
pub fn markdown(s: &Summary) -> String {
    let c = &s.config;
    let mut md = format!(
        "model: `{}` (sha256 `{}`)\n\nK = {} samples, temperature {}, top-p {}, top-k {}, max {} new tokens, seed {}{}\n\n",
        s.model,
        &s.model_sha256[..16.min(s.model_sha256.len())],
        c.samples,
        c.sampling.temperature,
        c.sampling.top_p,
        c.sampling.top_k,
        c.sampling.max_new_tokens,
        c.sampling.seed,
        c.limit.map(|l| format!(", first {l} prompts per benchmark")).unwrap_or_default()
    );
    let k = c.samples;
    // With K = 1, pass@1 and pass@K are the same column.
    let kcol = if k > 1 { format!(" pass@{k} |") } else { String::new() };
    md.push_str(&format!("| benchmark | snapshot | prompts | Average@{k} | pass@1 |{kcol} truncated | mean new tokens | tokens/s |\n"));
    md.push_str(&format!("|---|---|---:|---:|---:|{}---:|---:|---:|\n", if k > 1 { "---:|" } else { "" }));
    for b in &s.benchmarks {
        let kval = if k > 1 { format!(" {:.1}% |", 100.0 * b.pass_at_k) } else { String::new() };
        md.push_str(&format!(
            "| {} | `{}` | {} | {:.1}% | {:.1}% |{kval} {} | {:.0} | {:.0} |\n",
            b.bench,
            b.snapshot_id,
            b.prompts,
            100.0 * b.average_at_k,
            100.0 * b.pass_at_1,
            b.truncated,
            b.mean_new_tokens,
            b.new_tokens_per_second
        ));
    }
    md
}

/// Writes `summary.json` and `summary.md` into `out_dir` (atomically).
pub fn write_summary(out_dir: &Path, s: &Summary) -> anyhow::Result<()> {
    std::fs::create_dir_all(out_dir)?;
    let mut json = serde_json::to_vec_pretty(s)?;
    json.write_all(b"\n")?;
    schemas::write_atomic(&out_dir.join("summary.json"), &json)?;
    schemas::write_atomic(&out_dir.join("summary.md"), markdown(s).as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(bench: &str, p: &Prompt, completion: &str) -> SampleResult {
        SampleResult {
            bench: bench.into(),
            prompt_id: p.id.clone(),
            sample: 0,
            completion: completion.into(),
            extracted: None,
            correct: false,
            finish: Finish::Stop,
            new_tokens: 0,
            status: None,
        }
    }

    /// The benchmarks' own solutions, graded as if a model had written them, must pass; the
    /// same solutions with the answer changed must fail. Runs the real snapshot build, verifier
    /// and sandbox.
    #[test]
    fn reference_solutions_pass_and_corrupted_ones_fail() {
        let recipes = Path::new(env!("CARGO_MANIFEST_DIR")).join("../datasets/recipes/eval");
        let tmp = tempfile::tempdir().unwrap();
        for (bench, n) in [("gsm8k_test", 40), ("math500", 40), ("humaneval", 20), ("mbpp_test", 20)] {
            let dir = tmp.path().join(bench);
            pipeline::build::build(&recipes.join(format!("{bench}.yaml")), &dir, true).unwrap();
            let b = load_benchmark(dir.to_str().unwrap(), tmp.path()).unwrap();
            let prompts = &b.prompts[..n];
            let mut good: Vec<SampleResult> = prompts.iter().map(|p| sample(bench, p, &p.reference)).collect();
            grade(bench, prompts, 1, &mut good).unwrap();
            let failed: Vec<&str> = good.iter().filter(|r| !r.correct).map(|r| r.prompt_id.as_str()).collect();
            assert!(failed.is_empty(), "{bench}: reference solutions graded wrong: {failed:?}");
            let corrupt = |p: &Prompt| -> String {
                if p.domain == "code" {
                    // The function is left undefined (MBPP) or a stub that returns None (HumanEval).
                    "```python\npass\n```".to_string()
                } else {
                    format!("The final answer is $\\boxed{{({})+1}}$.", p.gold.as_deref().unwrap())
                }
            };
            let mut bad: Vec<SampleResult> = prompts.iter().map(|p| sample(bench, p, &corrupt(p))).collect();
            grade(bench, prompts, 1, &mut bad).unwrap();
            let passed: Vec<&str> = bad.iter().filter(|r| r.correct).map(|r| r.prompt_id.as_str()).collect();
            assert!(passed.is_empty(), "{bench}: corrupted solutions graded right: {passed:?}");
        }
    }

    #[test]
    fn pass_at_k_matches_the_combinatorial_definition() {
        // By hand: n = 5, c = 2. pass@1 = c/n = 0.4; pass@2 = 1 - C(3,2)/C(5,2) = 1 - 3/10 = 0.7;
        // pass@5 = 1 (any 5 of 5 include a correct one); c = 0 gives 0.
        assert!((pass_at_k(5, 2, 1) - 0.4).abs() < 1e-12);
        assert!((pass_at_k(5, 2, 2) - 0.7).abs() < 1e-12);
        assert_eq!(pass_at_k(5, 2, 5), 1.0);
        assert_eq!(pass_at_k(5, 0, 3), 0.0);
        // n = 16, c = 3, k = 4: 1 - C(13,4)/C(16,4) = 1 - 715/1820.
        assert!((pass_at_k(16, 3, 4) - (1.0 - 715.0 / 1820.0)).abs() < 1e-12);
    }
}
