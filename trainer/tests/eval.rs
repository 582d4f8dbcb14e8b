//! `trainer eval` with the real model on one-prompt GSM8K snapshots: a later run into the same
//! folder keeps the benchmarks it did not name when they were graded the same way (also when it
//! fails part way, and while their results file is the one written with them), drops them (and
//! says so) when not, two benchmarks filed under one name are refused, sampling settings that
//! would decode greedily under another name are refused, and so is a prompt that fills the
//! model's context (by name).

mod common;

use common::{build_snapshot, model_path, repo};
use eval::report::Summary;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A prompts snapshot of GSM8K test problem `first` (0-based) alone, in `dir/name`.
fn one_prompt(dir: &Path, name: &str, first: usize) -> PathBuf {
    one_prompt_with(dir, name, first, &format!("gguf: {}", model_path().display()))
}

/// [`one_prompt`] with the recipe's `tokenizer` given (`gguf: …`, `hf_dir: …`).
fn one_prompt_with(dir: &Path, name: &str, first: usize, tokenizer: &str) -> PathBuf {
    let line = std::fs::read_to_string(repo().join("datasets/raw/gsm8k/test.jsonl")).unwrap().lines().nth(first).unwrap().to_string();
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join(format!("{name}.jsonl")), line + "\n").unwrap();
    let recipe = format!(
        "name: {name}\nkind: prompts\nsources:\n  - {{name: {name}, path: {name}.jsonl, format: gsm8k}}\n\
         filter: {{require_math_answer: true, require_python_parses: false}}\ndedup: {{exact: false, near: {{enabled: false}}}}\n\
         tokenizer: {{{tokenizer}}}\n"
    );
    build_snapshot(dir, name, &recipe)
}

fn eval(benches: &[&Path], out: &Path, extra: &[&str]) -> (bool, String) {
    let bench = benches.iter().map(|b| b.to_str().unwrap()).collect::<Vec<_>>().join(",");
    // Tests read info lines ("reusing the results"); a RUST_LOG from the caller must not hide them.
    let o = Command::new(env!("CARGO_BIN_EXE_trainer"))
        .env("RUST_LOG", "info")
        .args(["eval", "--model", model_path().to_str().unwrap(), "--bench", &bench, "--out", out.to_str().unwrap()])
        .args(["--max-new-tokens", "4"])
        .args(extra)
        .output()
        .unwrap();
    (o.status.success(), String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr))
}

fn benchmarks(out: &Path) -> Vec<String> {
    let s: Summary = serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    s.benchmarks.into_iter().map(|b| b.bench).collect()
}

#[test]
fn eval_summaries_keep_what_still_holds_and_refuse_what_would_mislead() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (one_prompt(tmp.path(), "a", 0), one_prompt(tmp.path(), "b", 1));
    let out = tmp.path().join("out");

    let (ok, log) = eval(&[&a, &b], &out, &[]);
    assert!(ok, "{log}");
    assert_eq!(benchmarks(&out), ["a", "b"]);

    // Only `a` again, same settings: reused, and `b` stays in the summary.
    let (ok, log) = eval(&[&a], &out, &[]);
    assert!(ok, "{log}");
    assert!(log.contains("a: reusing the results"), "{log}");
    assert_eq!(benchmarks(&out), ["a", "b"]);

    // A run that fails part way (here on `c`, whose results cannot be written) keeps `b`, and
    // `a`, which it names but had not reached.
    let c = one_prompt(tmp.path(), "c", 2);
    std::fs::create_dir_all(out.join("results").join("c.jsonl")).unwrap();
    let (ok, log) = eval(&[&c, &a], &out, &[]);
    assert!(!ok, "{log}");
    assert_eq!(benchmarks(&out), ["a", "b"]);
    std::fs::remove_dir(out.join("results").join("c.jsonl")).unwrap();

    // Other settings: `b` was graded under the old ones, so it leaves the summary, with a word.
    let (ok, log) = eval(&[&a], &out, &["--seed", "7"]);
    assert!(ok, "{log}");
    assert_eq!(benchmarks(&out), ["a"]);
    assert!(log.contains("held b for another model or settings"), "{log}");
    assert!(log.contains("a: evaluating again, replacing the results in") && log.contains("for another model or settings"), "{log}");

    // Results that are no longer the file written with the summary's figures are not reused.
    let (ok, log) = eval(&[&a], &out, &["--seed", "7"]);
    assert!(ok && log.contains("a: reusing the results"), "{log}");
    let results = out.join("results").join("a.jsonl");
    let mut text = std::fs::read_to_string(&results).unwrap();
    text.push_str(&text.clone());
    std::fs::write(&results, text).unwrap();
    let (ok, log) = eval(&[&a], &out, &["--seed", "7"]);
    assert!(
        ok && !log.contains("reusing") && log.contains("a: evaluating again:") && log.contains("whose results file has changed since"),
        "{log}"
    );

    // A summary from before pass@k curves were recorded is summed up again from its results'
    // verdicts: the figures come back, the results file is not written.
    let path = out.join("summary.json");
    let before = std::fs::read_to_string(&path).unwrap();
    let mut summary: serde_json::Value = serde_json::from_str(&before).unwrap();
    let bench = summary["benchmarks"][0].as_object_mut().unwrap();
    for key in ["pass_at", "average_at_k_interval"] {
        assert!(bench.remove(key).is_some(), "{key} is recorded");
    }
    std::fs::write(&path, serde_json::to_string(&summary).unwrap()).unwrap();
    let modified = std::fs::metadata(&results).unwrap().modified().unwrap();
    let (ok, log) = eval(&[&a], &out, &["--seed", "7"]);
    assert!(ok && log.contains("a: reusing the results"), "{log}");
    let again: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let first: serde_json::Value = serde_json::from_str(&before).unwrap();
    assert_eq!(again["benchmarks"][0]["pass_at"], first["benchmarks"][0]["pass_at"]);
    assert_eq!(again["benchmarks"][0]["average_at_k_interval"], first["benchmarks"][0]["average_at_k_interval"]);
    assert_eq!(std::fs::metadata(&results).unwrap().modified().unwrap(), modified, "results not written again");

    // Results that ended on other stop ids (a change in which tokens end a completion) are not
    // reused either.
    let (ok, log) = eval(&[&a], &out, &["--seed", "7"]);
    assert!(ok && log.contains("a: reusing the results"), "{log}");
    let path = out.join("summary.json");
    let mut summary: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert!(!summary["benchmarks"][0]["stop_ids"].as_array().unwrap().is_empty(), "stop ids are recorded");
    summary["benchmarks"][0]["stop_ids"] = serde_json::json!([0]);
    std::fs::write(&path, serde_json::to_string(&summary).unwrap()).unwrap();
    let (ok, log) = eval(&[&a], &out, &["--seed", "7"]);
    assert!(ok && !log.contains("reusing") && log.contains("a: evaluating again: its results ended completions on stop ids [0]"), "{log}");

    // Results another verifier graded: the completions are graded again, not generated again
    // (planted: the verdicts flipped in the file, the summary naming an old verifier and the
    // flipped file's hash). `b`, not named, cannot be graded again and leaves the summary.
    let (ok, log) = eval(&[&a, &b], &out, &["--seed", "7"]);
    assert!(ok, "{log}");
    let results = out.join("results").join("a.jsonl");
    let graded = std::fs::read_to_string(&results).unwrap();
    let flipped: String = graded
        .lines()
        .map(|l| {
            let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
            v["correct"] = (!v["correct"].as_bool().unwrap()).into();
            v.to_string() + "\n"
        })
        .collect();
    std::fs::write(&results, &flipped).unwrap();
    let mut summary: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    summary["verifier_version"] = "0.0.0+old".into();
    summary["benchmarks"][0]["results_sha256"] = schemas::sha256_file(&results).unwrap().into();
    std::fs::write(&path, serde_json::to_string(&summary).unwrap()).unwrap();
    let (ok, log) = eval(&[&a], &out, &["--seed", "7"]);
    assert!(ok && log.contains("a: grading the completions in") && log.contains("(they were graded by 0.0.0+old"), "{log}");
    assert!(!log.contains("new tokens/s"), "nothing generated: {log}");
    assert!(log.contains("held b graded by another verifier"), "{log}");
    assert_eq!(std::fs::read_to_string(&results).unwrap(), graded, "graded as the first time");
    assert_eq!(benchmarks(&out), ["a"]);

    // A run grading several benchmarks again that stops part way (here on `b`, whose file is no
    // longer its samples though the summary holds its hash) keeps the benchmark it had not graded
    // again, marked with the verifier that graded it; a later run grades it again without
    // generating.
    let (ok, log) = eval(&[&a, &b], &out, &["--seed", "7"]);
    assert!(ok, "{log}");
    let b_results = out.join("results").join("b.jsonl");
    let b_text = std::fs::read_to_string(&b_results).unwrap();
    std::fs::write(&b_results, "").unwrap();
    let mut summary: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    summary["verifier_version"] = "0.0.0+old".into();
    assert_eq!(summary["benchmarks"][1]["bench"], "b");
    let b_sha256 = summary["benchmarks"][1]["results_sha256"].clone();
    summary["benchmarks"][1]["results_sha256"] = schemas::sha256_file(&b_results).unwrap().into();
    std::fs::write(&path, serde_json::to_string(&summary).unwrap()).unwrap();
    let (ok, log) = eval(&[&a, &b], &out, &["--seed", "7"]);
    assert!(!ok && log.contains("not the 1 x 1 samples of b in order"), "{log}");
    let summary: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(benchmarks(&out), ["a", "b"]);
    assert_eq!(summary["verifier_version"], verify::grade::VERSION);
    assert!(summary["benchmarks"][0].get("graded_by").is_none(), "{summary}");
    assert_eq!(summary["benchmarks"][1]["graded_by"], "0.0.0+old");
    std::fs::write(&b_results, b_text).unwrap();
    let mut summary = summary;
    summary["benchmarks"][1]["results_sha256"] = b_sha256;
    std::fs::write(&path, serde_json::to_string(&summary).unwrap()).unwrap();
    let (ok, log) = eval(&[&b], &out, &["--seed", "7"]);
    assert!(ok && log.contains("b: grading the completions in") && log.contains("(they were graded by 0.0.0+old"), "{log}");
    assert!(!log.contains("new tokens/s"), "nothing generated: {log}");
    assert_eq!(benchmarks(&out), ["b", "a"]);

    // Two folders named `a` would write one results/a.jsonl.
    let other_a = one_prompt(&tmp.path().join("elsewhere"), "a", 2);
    let (ok, log) = eval(&[&a, &other_a], &out, &[]);
    assert!(!ok && log.contains("are both `a`"), "{log}");

    // Greedy under another name.
    for bad in ["--temperature=-1", "--temperature=NaN", "--top-p=0"] {
        let (ok, log) = eval(&[&a], &out, &[bad]);
        assert!(!ok && (log.contains("temperature must be") || log.contains("top-p must be")), "{bad}: {log}");
    }
}

/// A model whose tokenizer gives some ids other tokens than the snapshot's is refused before
/// anything is loaded or generated: its results would be those of other prompts.
#[test]
fn a_model_with_another_vocabulary_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let a = one_prompt(tmp.path(), "a", 0);
    // The snapshot's own tokenizer.json with the ids of " the" and " for" swapped: both are in
    // the prompt ("... for breakfast ... the remainder ...").
    let mut tok: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(a.join("tokenizer.json")).unwrap()).unwrap();
    let vocab = tok["model"]["vocab"].as_object_mut().unwrap();
    let (ia, ib) = (vocab["Ġthe"].clone(), vocab["Ġfor"].clone());
    vocab.insert("Ġthe".into(), ib.clone());
    vocab.insert("Ġfor".into(), ia.clone());
    let model = tmp.path().join("other");
    std::fs::create_dir(&model).unwrap();
    std::fs::write(model.join("tokenizer.json"), tok.to_string()).unwrap();
    // A config.json makes the folder pass for a model until its weights are read.
    std::fs::write(model.join("config.json"), "{}").unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_trainer"))
        .args(["eval", "--model", model.to_str().unwrap(), "--bench", a.to_str().unwrap()])
        .args(["--out", tmp.path().join("out").to_str().unwrap()])
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{log}");
    assert!(
        log.contains("is not the one snapshot") && log.contains("2 of the 49152 ids both have stand for other tokens, 2 of them"),
        "{log}"
    );
    assert!(log.contains(&format!("id {ia} is \"Ġthe\" in the snapshot, \"Ġfor\" in the model")), "{log}");
    assert!(!tmp.path().join("out").exists(), "nothing written");

    // `generate --tokenizer` with a tokenizer other than the model's own: refused on the ids the
    // prompt uses, before any weights are read (this folder has none).
    let generate = |prompt: &str| {
        Command::new(env!("CARGO_BIN_EXE_trainer"))
            .args(["generate", "--model", model.to_str().unwrap(), "--tokenizer", common::model_path().to_str().unwrap()])
            .args(["--prompt", prompt])
            .output()
            .unwrap()
    };
    let o = generate("Eat the rest for breakfast.");
    let log = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && log.contains("is not the model's tokenizer"), "{log}");
    assert!(log.contains(&format!("id {ia} is \"Ġthe\" in ")), "{log}");
    // A prompt that uses neither id passes the check and fails later, on the missing weights.
    let o = generate("Hi.");
    let log = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && !log.contains("is not the model's tokenizer"), "{log}");
}

/// A prompt that leaves no room in the model's context (8192 tokens for the default model) stops
/// `trainer eval` before anything is generated, naming the prompt and the filter that leaves it
/// out; before the check the decoder panicked on the position beyond its RoPE table.
#[test]
fn a_prompt_that_fills_the_context_is_refused_by_name() {
    let tmp = tempfile::tempdir().unwrap();
    let line = std::fs::read_to_string(repo().join("datasets/raw/gsm8k/test.jsonl")).unwrap().lines().next().unwrap().to_string();
    let mut row: serde_json::Value = serde_json::from_str(&line).unwrap();
    // " apple" is one token; 9000 of them are past the context whatever the template adds.
    row["question"] = " apple".repeat(9000).into();
    std::fs::write(tmp.path().join("long.jsonl"), row.to_string() + "\n").unwrap();
    let recipe = format!(
        "name: long\nkind: prompts\nsources:\n  - {{name: long, path: long.jsonl, format: gsm8k}}\n\
         filter: {{require_math_answer: true, require_python_parses: false}}\ndedup: {{exact: false, near: {{enabled: false}}}}\n\
         tokenizer: {{gguf: {}}}\n",
        model_path().display()
    );
    let long = build_snapshot(tmp.path(), "long", &recipe);
    let out = tmp.path().join("out");
    let (ok, log) = eval(&[&long], &out, &[]);
    assert!(!ok, "{log}");
    assert!(
        log.contains("long: prompt long/L1 (build the snapshot with a filter.max_tokens that leaves it out): a prompt of 9030 tokens leaves no room in the model's context of 8192"),
        "{log}"
    );
    assert!(!log.contains("panicked"), "{log}");
    assert!(!out.join("results").join("long.jsonl").exists(), "nothing generated");
}

/// A model whose own chat template renders the benchmark's questions otherwise (here a folder
/// whose exported template carries a trained system prompt) is warned about, naming the first
/// difference and how to build snapshots in its format; the same template without the system
/// prompt is not. The folder has no weights (only an empty config.json, so that it passes for a
/// model until they are read), so both runs then fail on loading them.
#[test]
fn a_model_prompted_otherwise_than_it_was_saved_is_warned_about() {
    let tmp = tempfile::tempdir().unwrap();
    let a = one_prompt(tmp.path(), "a", 0);
    let (manifest, _) = schemas::prompts::load_prompts(&a).unwrap();
    let tok = model_files::tokenizer::ChatTokenizer::from_snapshot(&a, &manifest.tokenizer).unwrap();
    let run_on = |model: &Path, bench: &Path| {
        let o = Command::new(env!("CARGO_BIN_EXE_trainer"))
            .args(["eval", "--model", model.to_str().unwrap(), "--bench", bench.to_str().unwrap()])
            .args(["--out", tmp.path().join("out").to_str().unwrap()])
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stderr).into_owned()
    };
    let run = |model: &Path| run_on(model, &a);
    let same = tmp.path().join("same");
    std::fs::create_dir(&same).unwrap();
    tok.save_hf_files(&same).unwrap();
    std::fs::write(same.join("config.json"), "{}").unwrap();
    let log = run(&same);
    assert!(!log.contains("renders its prompts otherwise"), "{log}");

    let rex = tmp.path().join("rex");
    std::fs::create_dir(&rex).unwrap();
    tok.clone().with_system_prompt(Some("You are Rex, a terse math tutor.".into())).save_hf_files(&rex).unwrap();
    std::fs::write(rex.join("config.json"), "{}").unwrap();
    let log = run(&rex);
    assert!(
        log.contains(&format!("a: {} renders its prompts otherwise than snapshot {} (built with", rex.display(), a.display())),
        "{log}"
    );
    assert!(log.contains("You are Rex") && log.contains("You are a helpful AI assistant named SmolLM"), "{log}");
    assert!(log.contains(&format!("EVAL_TOKENIZER={}", rex.display())), "{log}");

    // A snapshot built before begin tokens were recorded (its template writes `bos_token`, its
    // manifest names none) cannot render its prompts again: the model's ids are compared with
    // the stored ones, which agree here, so no warning.
    let bos = tmp.path().join("bos");
    std::fs::create_dir(&bos).unwrap();
    tok.save_hf_files(&bos).unwrap();
    let config = bos.join("tokenizer_config.json");
    let mut c: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&config).unwrap()).unwrap();
    c["bos_token"] = "<|endoftext|>".into();
    std::fs::write(&config, c.to_string()).unwrap();
    std::fs::write(bos.join("chat_template.jinja"), format!("{{{{ bos_token }}}}{}", tok.chat_template())).unwrap();
    let old = one_prompt_with(tmp.path(), "old", 0, &format!("hf_dir: {}", bos.display()));
    let manifest = old.join("manifest.json");
    let mut m: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&manifest).unwrap()).unwrap();
    assert_eq!(m["tokenizer"]["bos_token"], "<|endoftext|>");
    m["tokenizer"].as_object_mut().unwrap().remove("bos_token");
    std::fs::write(&manifest, serde_json::to_string_pretty(&m).unwrap()).unwrap();
    let log = run_on(&bos, &old);
    assert!(!log.contains("renders its prompts otherwise") && log.contains("holds no config.json"), "{log}");
}

/// A mistyped benchmark name, with neither a snapshot nor a recipe, is refused listing the names
/// that exist; an empty name (a stray comma) is refused as such.
#[test]
fn a_mistyped_benchmark_lists_the_names_there_are() {
    let tmp = tempfile::tempdir().unwrap();
    let snapshots = tmp.path().join("eval");
    std::fs::create_dir(&snapshots).unwrap();
    let run = |bench: &str| {
        let o = Command::new(env!("CARGO_BIN_EXE_trainer"))
            .current_dir(repo())
            .args(["eval", "--model", model_path().to_str().unwrap(), "--bench", bench])
            .args(["--snapshots", snapshots.to_str().unwrap(), "--out", tmp.path().join("out").to_str().unwrap()])
            .output()
            .unwrap();
        assert!(!o.status.success());
        String::from_utf8_lossy(&o.stderr).into_owned()
    };
    let log = run("gsm8kk");
    assert!(log.contains("no benchmark `gsm8kk`") && log.contains("recipes: aime24, amc23, gsm8k_test,"), "{log}");
    let log = run("gsm8k,");
    assert!(log.contains("--bench names an empty benchmark"), "{log}");
}
