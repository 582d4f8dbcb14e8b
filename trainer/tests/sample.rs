//! `trainer sample` with the real model on a handful of real questions: the same seed gives the
//! same bytes, a `kill -9` and a resume give the uninterrupted run's bytes, the verdicts are the
//! verifier's, and rollouts of another model or other settings are never silently reused.

mod common;

use common::{build_snapshot, model_path, repo};
use schemas::generation::Finish;
use schemas::rollouts::load_rollouts;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

fn trainer(args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_trainer"));
    // The resume test reads an info line; a RUST_LOG from the caller's shell must not hide it.
    c.args(args).env("RUST_LOG", "info");
    c
}

/// Three GSM8K and two MBPP training questions, decontaminated against GSM8K test (as sampling
/// requires of its questions).
fn questions(dir: &Path) -> PathBuf {
    let recipe = format!(
        "name: q\nkind: prompts\nsources:\n  - {{name: gsm8k_train, path: {raw}/gsm8k/train.jsonl, format: gsm8k, limit: 3}}\n  \
         - {{name: mbpp_train, path: {raw}/mbpp/mbpp.jsonl, format: mbpp, id_range: [601, 602]}}\n\
         filter: {{require_python_parses: false}}\ndedup: {{exact: false, near: {{enabled: false}}}}\n\
         decontaminate: {{against: [{recipes}/eval/gsm8k_test.yaml]}}\ntokenizer: {{gguf: {model}}}\n",
        raw = repo().join("datasets/raw").display(),
        recipes = repo().join("datasets/recipes").display(),
        model = model_path().display()
    );
    build_snapshot(dir, "q", &recipe)
}

/// The bytes that define a snapshot: manifest and shards (not `timings.json`).
fn bytes(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let m = schemas::snapshot::read_manifest(dir).unwrap();
    let mut files = vec!["manifest.json".to_string()];
    files.extend(m.shards.iter().chain(&m.sidecars).map(|s| s.file.clone()));
    files.into_iter().map(|f| (f.clone(), std::fs::read(dir.join(&f)).unwrap())).collect()
}

#[test]
fn sampling_is_deterministic_resumable_verified_and_keyed() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let prompts = questions(dir);
    let model = model_path();
    let args = |out: &Path, seed: &str, model: &Path| -> Vec<String> {
        [
            "sample",
            "--model",
            model.to_str().unwrap(),
            "--prompts",
            prompts.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--samples",
            "2",
            "--max-new-tokens",
            "24",
            "--seed",
            seed,
            "--chunk-questions",
            "1",
            "--batch-size",
            "4",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let run = |a: &[String]| {
        let o = trainer(&a.iter().map(String::as_str).collect::<Vec<_>>()).output().unwrap();
        (o.status.success(), String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr))
    };

    let a = dir.join("a");
    let (ok, log) = run(&args(&a, "7", &model));
    assert!(ok, "{log}");
    let (manifest, rows) = load_rollouts(&a).unwrap();
    assert_eq!(rows.len(), 5 * 2);
    let info = manifest.rollouts.as_ref().unwrap();
    assert_eq!((info.key.questions, info.key.samples_per_question, info.samples), (5, 2, 10));
    assert_eq!(info.key.sampling.temperature, 1.0, "the paper's default temperature");
    assert_eq!(info.key.model_sha256, schemas::sha256_file(&model).unwrap());
    let (pm, questions) = schemas::prompts::load_prompts(&prompts).unwrap();
    assert_eq!(info.key.prompts_snapshot_id, pm.snapshot_id);
    // Rows in question order, then sample; each row carries its provenance, and its verdict is
    // the verifier's on its own completion.
    let tok = model_files::tokenizer::ChatTokenizer::from_gguf(&model, None, None).unwrap();
    for (i, r) in rows.iter().enumerate() {
        let q = &questions[i / 2];
        assert_eq!((r.question_id.as_str(), r.sample), (q.id.as_str(), (i % 2) as u32));
        assert_eq!(r.prompt, q.prompt);
        assert_eq!(
            (r.model_sha256.as_str(), r.prompts_snapshot_id.as_str(), r.seed),
            (info.key.model_sha256.as_str(), pm.snapshot_id.as_str(), 7)
        );
        assert_eq!(r.new_tokens as usize, r.completion_ids.len());
        let text_ids = if r.finish == Finish::Stop { &r.completion_ids[..r.completion_ids.len() - 1] } else { &r.completion_ids[..] };
        assert_eq!(tok.decode(text_ids), r.completion);
        let g = verify::grade::grade_all(&[(q.into(), r.completion.as_str())], || {}).unwrap().remove(0).unwrap();
        assert_eq!((g.correct, g.verifier, g.extracted.as_ref()), (r.correct, r.verifier.as_str(), r.extracted.as_ref()), "row {i}");
        assert_eq!(r.verifier_version, verify::grade::VERSION);
    }
    assert!(rows.iter().any(|r| r.verifier == "math-gsm8k") && rows.iter().any(|r| r.verifier == "sandbox-mbpp"));
    // The two samples of a question draw from different streams.
    assert!(rows.chunks(2).any(|s| s[0].completion_ids != s[1].completion_ids));

    // The same command again, into another folder: the same bytes.
    let b = dir.join("b");
    let (ok, log) = run(&args(&b, "7", &model));
    assert!(ok, "{log}");
    assert_eq!(bytes(&a), bytes(&b), "two runs with the same seed differ");

    // Killed after its first chunk, then run again: it resumes and ends at the same bytes.
    let c = dir.join("c");
    let c_args = args(&c, "7", &model);
    let mut child = trainer(&c_args.iter().map(String::as_str).collect::<Vec<_>>()).spawn().unwrap();
    let journal = dir.join(".c.sampling/done.jsonl");
    let t0 = Instant::now();
    while std::fs::read_to_string(&journal).map_or(0, |t| t.lines().count()) < 1 {
        assert!(t0.elapsed() < Duration::from_secs(300), "sampling made no progress");
        assert!(child.try_wait().unwrap().is_none(), "sampling finished before it could be killed");
        std::thread::sleep(Duration::from_millis(10));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert!(!c.join("manifest.json").exists(), "an interrupted run must leave no snapshot");
    let (ok, log) = run(&c_args);
    assert!(ok, "{log}");
    assert!(log.contains("resuming"), "{log}");
    assert!(!dir.join(".c.sampling").exists(), "work folder left behind");
    assert_eq!(bytes(&a), bytes(&c), "the resumed run differs from the uninterrupted one");

    // The same key again: reused as it is, nothing sampled.
    let (ok, log) = run(&args(&a, "7", &model));
    assert!(ok && log.contains("already holds these rollouts"), "{log}");
    // Another seed, or another model file (one byte appended: another sha256), is another cache
    // key: never silently reused, an error that says how to replace them.
    let (ok, log) = run(&args(&a, "8", &model));
    assert!(!ok && log.contains("--force") && log.contains("cache key"), "{log}");
    assert!(log.contains("they differ in sampling.seed (7 there, 8 here)"), "only what differs is named: {log}");
    let other_model = dir.join("other.gguf");
    let mut data = std::fs::read(&model).unwrap();
    data.push(0);
    std::fs::write(&other_model, data).unwrap();
    let (ok, log) = run(&args(&a, "7", &other_model));
    assert!(!ok && log.contains("--force"), "{log}");
    assert_eq!(bytes(&a), bytes(&b), "a refused run changed the rollouts");
}

#[test]
fn benchmark_prompts_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let recipe = repo().join("datasets/recipes/eval/gsm8k_test.yaml");
    let bench = tmp.path().join("gsm8k_test");
    pipeline::build::build(&recipe, &bench, false).unwrap();
    let o = trainer(&["sample", "--model", model_path().to_str().unwrap(), "--prompts", bench.to_str().unwrap(), "--out", "x"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("decontaminated"), "{err}");
}
