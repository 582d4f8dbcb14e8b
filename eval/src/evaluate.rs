//! `trainer eval`: generate K completions per benchmark prompt, verify each (math answers with
//! the math verifier, code in the sandbox), and report Average@K, pass@K and (math) maj@K per benchmark.

use crate::benchmark::{Benchmark, Prompt};
use crate::metrics::{majority, pass_at_k_curve, pass_rates};
use crate::report::{write_results, BenchSummary, EvalConfig, SampleResult};
use anyhow::{bail, Context};
use model::generate::{stop_ids, Completion, Finish, Generator, Request};
use model::sampling::Sampling;
use rayon::prelude::*;
use schemas::Domain;
use std::path::Path;
use std::time::Instant;

/// Generates, verifies and writes results for one benchmark.
pub fn evaluate(model: &dyn Generator, bench: &Benchmark, cfg: &EvalConfig, out_dir: &Path) -> anyhow::Result<BenchSummary> {
    let prompts = &bench.prompts[..cfg.limit.unwrap_or(usize::MAX).min(bench.prompts.len())];
    if prompts.is_empty() {
        bail!("{}: no prompts to evaluate", bench.name);
    }
    let k = cfg.samples;
    if k == 0 {
        bail!("{}: samples per prompt must be at least 1", bench.name);
    }
    let tok = &bench.tokenizer;
    let stop = stop_ids(tok);
    check_prompts(&bench.name, prompts, model.config())?;
    // A prompt that cannot be graded (no gold answer, unreadable tests) fails now, not after
    // all the generation.
    for p in prompts {
        verify::grade::gradable(&p.into()).map_err(|e| anyhow::anyhow!("{}: {e}", bench.name))?;
    }

    let bar = progress::bar(prompts.len() * k, &format!("gen {}", bench.name));
    let start = Instant::now();
    let completions = generate_samples(model, prompts, 0, k, &cfg.sampling, cfg.batch_size, &stop, |n, _| bar.inc(n as u64));
    bar.finish_and_clear();
    let generation_seconds = start.elapsed().as_secs_f64();
    let mut results: Vec<SampleResult> = vec![];
    for (p, prompt) in prompts.iter().enumerate() {
        for (s, c) in completions[p].iter().enumerate() {
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
    let results_sha256 = write_results(&out_dir.join("results").join(format!("{}.jsonl", bench.name)), &results)?;
    Ok(summarise(bench, k, &results, generation_seconds, stop, results_sha256))
}

/// Grades the completions of `results/<bench>.jsonl` in `out_dir` again, with this build's
/// verifier: for results that the same model, settings and snapshot wrote when another verifier
/// graded them. Nothing is generated; the generation figures are `earlier`'s.
pub fn regrade(bench: &Benchmark, earlier: &BenchSummary, out_dir: &Path) -> anyhow::Result<BenchSummary> {
    let mut results = stored_results(bench, earlier, out_dir)?;
    let n = earlier.prompts;
    grade(&bench.name, &bench.prompts[..n], earlier.samples, &mut results)?;
    let results_sha256 = write_results(&out_dir.join("results").join(format!("{}.jsonl", bench.name)), &results)?;
    Ok(summarise(bench, earlier.samples, &results, earlier.generation_seconds, earlier.stop_ids.clone(), results_sha256))
}

/// `earlier` summed up again from its stored results, their verdicts as they are (nothing is
/// graded or written): for a summary written before some of its figures (the pass@k curve,
/// maj@K) were recorded.
pub fn resummed(bench: &Benchmark, earlier: &BenchSummary, out_dir: &Path) -> anyhow::Result<BenchSummary> {
    let results = stored_results(bench, earlier, out_dir)?;
    let s =
        summarise(bench, earlier.samples, &results, earlier.generation_seconds, earlier.stop_ids.clone(), earlier.results_sha256.clone());
    Ok(BenchSummary { graded_by: earlier.graded_by.clone(), ..s })
}

/// The results file `earlier` was written with: the K samples of the snapshot's first `n`
/// prompts, in order, as `evaluate` writes them; anything else is not the run the summary
/// describes.
fn stored_results(bench: &Benchmark, earlier: &BenchSummary, out_dir: &Path) -> anyhow::Result<Vec<SampleResult>> {
    let path = out_dir.join("results").join(format!("{}.jsonl", bench.name));
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let results = text
        .lines()
        .enumerate()
        .map(|(i, l)| serde_json::from_str::<SampleResult>(l).with_context(|| format!("{}:{}", path.display(), i + 1)))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let (n, k) = (earlier.prompts, earlier.samples);
    let in_order = k > 0
        && results.len() == n * k
        && n <= bench.prompts.len()
        && results.iter().enumerate().all(|(i, r)| r.prompt_id == bench.prompts[i / k].id && r.sample == i % k);
    if !in_order {
        bail!("{}: not the {n} x {k} samples of {} in order; evaluate it again", path.display(), bench.name);
    }
    Ok(results)
}

/// The figures of graded `results` (K per prompt, for the snapshot's first `results.len() / k`
/// prompts) written as `results_sha256`.
fn summarise(
    bench: &Benchmark,
    k: usize,
    results: &[SampleResult],
    generation_seconds: f64,
    stop: Vec<u32>,
    results_sha256: String,
) -> BenchSummary {
    let prompts = &bench.prompts[..results.len() / k];
    let correct: Vec<usize> = results.chunks(k).map(|s| s.iter().filter(|r| r.correct).count()).collect();
    let (average_at_k, pass_at_1, pass_at_k) = pass_rates(&correct, k);
    let majority_at_k = (k > 1 && prompts.iter().all(|p| p.domain == Domain::Math)).then(|| majority_rate(results, k));
    let new_tokens: usize = results.iter().map(|r| r.new_tokens).sum();
    BenchSummary {
        bench: bench.name.clone(),
        snapshot_id: bench.manifest.snapshot_id.clone(),
        snapshot: bench.dir.display().to_string(),
        prompts: prompts.len(),
        samples: k,
        average_at_k,
        average_at_k_interval: Some(crate::metrics::wilson_interval(average_at_k, prompts.len())),
        pass_at_1,
        pass_at_k,
        pass_at: pass_at_k_curve(&correct, k),
        majority_at_k,
        truncated: results.iter().filter(|r| r.finish == Finish::Length).count(),
        mean_new_tokens: new_tokens as f64 / results.len().max(1) as f64,
        generation_seconds,
        new_tokens_per_second: new_tokens as f64 / generation_seconds.max(1e-9),
        results_sha256,
        stop_ids: stop,
        graded_by: String::new(),
    }
}

/// maj@K of graded math `results` (K per prompt, in prompt order): the fraction of prompts whose
/// majority answer ([`majority`]) is correct. Two answers are one when the verifier finds them
/// equivalent either way round (it reads its first argument as the gold answer, and is not
/// symmetric); the majority's verdict is that of its first sample.
pub fn majority_rate(results: &[SampleResult], k: usize) -> f64 {
    // Equal text first: most votes repeat an answer word for word, and the verifier parses. A
    // blank answer is no answer to the verifier, so equal blanks are no shared one either.
    let same = |a: &str, b: &str| (a == b && !a.trim().is_empty()) || verify::math::equivalent(a, b) || verify::math::equivalent(b, a);
    let right = results
        .par_chunks(k)
        .filter(|samples| {
            let answers: Vec<Option<&str>> = samples.iter().map(|r| r.extracted.as_deref()).collect();
            majority(&answers, same).is_some_and(|i| samples[i].correct)
        })
        .count();
    right as f64 / (results.len() / k).max(1) as f64
}

/// Fails when a prompt holds ids the model has no embedding for (the snapshot was tokenized for
/// another model), or leaves no room for a new token in the model's context; before anything is
/// generated, naming the prompt.
pub fn check_prompts(name: &str, prompts: &[Prompt], config: &model_files::config::LlamaConfig) -> anyhow::Result<()> {
    let vocab = config.vocab_size;
    if let Some(p) = prompts.iter().find(|p| p.prompt_ids.iter().any(|&t| t as usize >= vocab)) {
        bail!(
            "{name}: prompt {} has token ids beyond the model's vocabulary ({vocab}): the snapshot was tokenized for another model",
            p.id
        );
    }
    for p in prompts {
        config
            .check_prompt_fits(p.prompt_ids.len())
            .with_context(|| format!("{name}: prompt {} (build the snapshot with a filter.max_tokens that leaves it out)", p.id))?;
    }
    Ok(())
}

/// K completions of every prompt, `[prompt][sample]`. Sample `s` of `prompts[p]` draws from
/// stream `(first + p) * k + s`, where `first` is the index of `prompts[0]` in its snapshot, so a
/// sample's draws do not depend on which slice of the snapshot is generated or how it is batched
/// (its logits do not either on CPU; on CUDA a batch's padding can change their last bits).
/// `on_done(sequences, new_tokens)` follows progress.
#[allow(clippy::too_many_arguments)]
pub fn generate_samples(
    model: &dyn Generator,
    prompts: &[Prompt],
    first: usize,
    k: usize,
    sampling: &Sampling,
    batch_size: usize,
    stop: &[u32],
    on_done: impl Fn(usize, usize) + Sync,
) -> Vec<Vec<Completion>> {
    let requests: Vec<Request> = (0..prompts.len())
        .flat_map(|p| (0..k).map(move |s| (p, s)))
        .map(|(p, s)| Request { prompt: &prompts[p].prompt_ids, stream: ((first + p) * k + s) as u64 })
        .collect();
    let mut done = model.complete(&requests, sampling, stop, batch_size, &on_done).into_iter();
    (0..prompts.len()).map(|_| done.by_ref().take(k).collect()).collect()
}

/// Fills `extracted`, `correct` and (code) `status` of `results` (K per prompt, in prompt
/// order) with [`verify::grade`]: math with the verifier (GSM8K may fall back to the last
/// number), HumanEval and MBPP by running the code with the benchmark's tests in the sandbox.
pub fn grade(bench: &str, prompts: &[Prompt], k: usize, results: &mut [SampleResult]) -> anyhow::Result<()> {
    let items: Vec<(verify::grade::Question, &str)> =
        results.iter().enumerate().map(|(i, r)| ((&prompts[i / k]).into(), r.completion.as_str())).collect();
    let bar = progress::bar(items.len(), &format!("grade {bench}"));
    let grades = verify::grade::grade_all(&items, || bar.inc(1))?;
    bar.finish_and_clear();
    for (r, g) in results.iter_mut().zip(grades) {
        let g = g.map_err(|e| anyhow::anyhow!("{bench}: {e}"))?;
        r.extracted = g.extracted;
        r.correct = g.correct;
        r.status = g.status;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::benchmark::load_benchmark;

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

    /// maj@K counts answers the verifier finds equal as one (1/2 written three ways outvotes a
    /// 3 written first), takes the majority's verdict, and lets no unanswered sample vote.
    #[test]
    fn majority_votes_count_equivalent_answers_as_one() {
        let result = |extracted: Option<&str>, correct: bool| SampleResult {
            bench: "math500".into(),
            prompt_id: String::new(),
            sample: 0,
            completion: String::new(),
            extracted: extracted.map(str::to_string),
            correct,
            finish: Finish::Stop,
            new_tokens: 0,
            status: None,
        };
        let halves =
            [result(Some("3"), false), result(Some("\\frac{1}{2}"), true), result(Some("0.5"), true), result(Some("\\dfrac12"), true)];
        let sevens = [result(Some("7"), false), result(None, false), result(Some("1/2"), true), result(Some("7.0"), false)];
        let unanswered = [result(None, false), result(None, false), result(None, false), result(None, false)];
        assert_eq!(majority_rate(&halves, 4), 1.0);
        assert_eq!(majority_rate(&sevens, 4), 0.0);
        assert_eq!(majority_rate(&[halves.clone(), sevens.clone(), unanswered].concat(), 4), 1.0 / 3.0);
        // As exact strings, every answer of the first prompt differs and the first, 3, would win.
        let exact = |samples: &[SampleResult]| {
            let answers: Vec<Option<&str>> = samples.iter().map(|r| r.extracted.as_deref()).collect();
            majority(&answers, |a, b| a == b)
        };
        assert_eq!(exact(&halves), Some(0));
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
                if p.domain == Domain::Code {
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
}
