//! `trainer eval`: generate K completions per benchmark prompt, verify each (math answers with
//! the math verifier, code in the sandbox), and report Average@K and pass@K per benchmark.

use crate::benchmark::{Benchmark, Prompt};
use crate::metrics::pass_rates;
use crate::report::{write_results, BenchSummary, EvalConfig, SampleResult};
use anyhow::{bail, Context};
use burn::tensor::backend::Backend;
use model::generate::{generate_batch, stop_ids, Completion, Finish, Request};
use model::Llama;
use rayon::prelude::*;
use schemas::{CodeTests, Domain};
use std::path::Path;
use std::time::Instant;
use verify::math::{self, ExtractOptions};
use verify::sandbox::{self, Limits};

/// Generates, verifies and writes results for one benchmark.
pub fn evaluate<B: Backend>(
    model: &Llama<B>,
    bench: &Benchmark,
    cfg: &EvalConfig,
    out_dir: &Path,
    device: &B::Device,
) -> anyhow::Result<BenchSummary> {
    let prompts = &bench.prompts[..cfg.limit.unwrap_or(usize::MAX).min(bench.prompts.len())];
    if prompts.is_empty() {
        bail!("{}: no prompts to evaluate", bench.name);
    }
    let k = cfg.samples.max(1);
    let tok = &bench.tokenizer;
    let stop = stop_ids(tok);
    let vocab = model.config.vocab_size;
    if let Some(p) = prompts.iter().find(|p| p.prompt_ids.iter().any(|&t| t as usize >= vocab)) {
        bail!(
            "{}: prompt {} has token ids beyond the model's vocabulary ({vocab}): the snapshot was tokenized for another model",
            bench.name,
            p.id
        );
    }

    // Requests sorted by prompt length so each batch pads little; `stream` = prompt * K + sample
    // fixes each sample's random stream whatever the batching.
    let mut order: Vec<(usize, usize)> = (0..prompts.len()).flat_map(|p| (0..k).map(move |s| (p, s))).collect();
    order.sort_by_key(|&(p, s)| (prompts[p].prompt_ids.len(), p, s));
    let batches: Vec<&[(usize, usize)]> = order.chunks(cfg.batch_size.max(1)).collect();
    let bar = progress::bar(order.len(), &format!("gen {}", bench.name));
    let start = Instant::now();
    let done: Vec<Vec<Completion>> = batches
        .par_iter()
        .map(|batch| {
            let requests: Vec<Request> =
                batch.iter().map(|&(p, s)| Request { prompt: &prompts[p].prompt_ids, stream: (p * k + s) as u64 }).collect();
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

    let correct: Vec<usize> = results.chunks(k).map(|s| s.iter().filter(|r| r.correct).count()).collect();
    let (average_at_k, pass_at_1, pass_at_k) = pass_rates(&correct, k);
    let new_tokens: usize = results.iter().map(|r| r.new_tokens).sum();
    Ok(BenchSummary {
        bench: bench.name.clone(),
        snapshot_id: bench.manifest.snapshot_id.clone(),
        snapshot: bench.dir.display().to_string(),
        prompts: prompts.len(),
        samples: k,
        average_at_k,
        pass_at_1,
        pass_at_k,
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
    let code = prompts.first().is_some_and(|p| p.domain == Domain::Code);
    if !code {
        let opts = ExtractOptions::for_benchmark(bench);
        results.par_iter_mut().enumerate().try_for_each(|(i, r)| -> anyhow::Result<()> {
            let gold = prompt_of(i).gold.as_deref().with_context(|| format!("{bench}: prompt {} has no gold answer", prompt_of(i).id))?;
            let v = math::verify(gold, &r.completion, &opts);
            r.extracted = v.extracted;
            r.correct = v.correct;
            Ok(())
        })?;
        return Ok(());
    }
    let mut programs = Vec::with_capacity(results.len());
    for (i, r) in results.iter_mut().enumerate() {
        let p = prompt_of(i);
        let tests = CodeTests::from_json(p.tests.as_deref().with_context(|| format!("{bench}: prompt {} has no tests", p.id))?)
            .with_context(|| format!("{bench}: prompt {}", p.id))?;
        let code = sandbox::extract_code(&r.completion);
        let program = match &tests {
            CodeTests::HumanEval { test, entry_point, code_prompt } => sandbox::humaneval_program(code_prompt, &code, test, entry_point),
            CodeTests::Mbpp { test_list, test_setup_code } => sandbox::mbpp_program(&code, test_setup_code, test_list),
        };
        r.extracted = Some(code);
        programs.push(program);
    }
    let bar = progress::bar(programs.len(), &format!("run {bench}"));
    // One pool over all programs: batches would wait for their slowest (a timed-out loop).
    let outcomes = sandbox::run_many(&programs, &Limits::default(), rayon::current_num_threads(), |_| bar.inc(1))?;
    bar.finish_and_clear();
    for (r, o) in results.iter_mut().zip(outcomes) {
        r.correct = o.passed;
        r.status = Some(format!("{:?}", o.status));
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
