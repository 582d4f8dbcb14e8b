//! The `rollouts` source format: a rollouts snapshot with planted verdicts becomes a train
//! snapshot of exactly its correct, untruncated samples, and a file from another engine with
//! planted correct, wrong, truncated and malformed lines is accounted for line by line.

use schemas::generation::{Finish, Sampling};
use schemas::manifest::{Manifest, RolloutsInfo};
use schemas::rollouts::{publish_rollouts, CacheKey, Rollout};
use schemas::snapshot::{load_snapshot, read_manifest, DROPPED_FILE, QUARANTINE_FILE};
use schemas::Dropped;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").canonicalize().unwrap()
}

fn model() -> PathBuf {
    model_files::test_model_path()
}

const MBPP_602: &str = "```python\ndef first_repeated_char(str1):\n  for index,c in enumerate(str1):\n    if str1[:index+1].count(c) > 1:\n      return c\n  return \"None\"\n```";

/// GSM8K train problems 1-2 (gold 72 and 10) and MBPP task 602, as a prompts snapshot.
fn questions(dir: &Path) -> PathBuf {
    let recipe = format!(
        "name: q\nkind: prompts\nsources:\n  - {{name: gsm8k_train, path: {raw}/gsm8k/train.jsonl, format: gsm8k, limit: 2}}\n  \
         - {{name: mbpp_train, path: {raw}/mbpp/mbpp.jsonl, format: mbpp, id_range: [602, 602]}}\n\
         filter: {{require_python_parses: false}}\ndedup: {{exact: false, near: {{enabled: false}}}}\ntokenizer: {{gguf: {model}}}\n",
        raw = repo().join("datasets/raw").display(),
        model = model().display()
    );
    std::fs::write(dir.join("q.yaml"), recipe).unwrap();
    let out = dir.join("q");
    pipeline::build::build(&dir.join("q.yaml"), &out, false).unwrap();
    out
}

/// A train recipe over `sources` (YAML list items) that keeps every example it is given.
fn train_recipe(dir: &Path, name: &str, sources: &str) -> PathBuf {
    let recipe = format!(
        "name: {name}\nkind: train\nsources:\n{sources}\ningest: {{max_bad_fraction: 1.0}}\n\
         filter: {{require_math_answer: false, require_python_parses: false}}\ndedup: {{exact: false, near: {{enabled: false}}}}\n\
         tokenizer: {{gguf: {}}}\npack: {{seq_len: 1024}}\n",
        model().display()
    );
    let path = dir.join(format!("{name}.yaml"));
    std::fs::write(&path, recipe).unwrap();
    path
}

/// Example ids of every packed row of a train snapshot, sorted.
/// A JSON-lines file of `lines`, each ended by a newline.
fn write_lines(path: &Path, lines: &[String]) {
    std::fs::write(path, lines.join("\n") + "\n").unwrap();
}

fn trained_ids(dir: &Path) -> Vec<String> {
    use arrow::array::AsArray;
    let m = read_manifest(dir).unwrap();
    let mut ids = vec![];
    schemas::snapshot::for_each_batch(dir, &m, |b| {
        let list = b.column_by_name("example_ids").unwrap().as_list::<i32>();
        for i in 0..b.num_rows() {
            let v = list.value(i);
            ids.extend(v.as_string::<i32>().iter().map(|s| s.unwrap().to_string()));
        }
        Ok(())
    })
    .unwrap();
    ids.sort();
    ids
}

fn dropped(dir: &Path) -> BTreeMap<String, String> {
    std::fs::read_to_string(dir.join(DROPPED_FILE))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<Dropped>(l).unwrap())
        .map(|d| (d.id, d.reason))
        .collect()
}

#[test]
fn a_rollouts_snapshot_trains_on_exactly_its_correct_untruncated_samples() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let prompts = questions(dir);
    let (pm, qs) = schemas::prompts::load_prompts(&prompts).unwrap();
    let sampling = Sampling { temperature: 1.0, top_p: 1.0, top_k: 0, max_new_tokens: 64, seed: 3 };
    let key = CacheKey {
        engine: "test".into(),
        model_sha256: "ab".repeat(32),
        prompts_snapshot_id: pm.snapshot_id.clone(),
        questions: 3,
        samples_per_question: 4,
        sampling,
        batch_size: 8,
        chunk_questions: 8,
        verifier_version: verify::grade::VERSION.into(),
        stop_ids: vec![2],
    };
    // (correct, finish, completion) for 4 samples of each of the 3 questions.
    let plan: [[(bool, Finish, &str); 4]; 3] = [
        [
            (true, Finish::Stop, "48 + 24 = 72. The answer is \\boxed{72}."),
            (false, Finish::Stop, "The answer is \\boxed{71}."),
            (true, Finish::Length, "48 + 24 = 72, so"),
            (true, Finish::Stop, "48 + 24 = 72. The answer is \\boxed{72}."),
        ],
        [
            (false, Finish::Stop, "$12 an hour: \\boxed{12}."),
            (false, Finish::Length, "0.2 per minute and"),
            (false, Finish::Stop, "\\boxed{600}"),
            (false, Finish::Stop, "\\boxed{5}"),
        ],
        [
            (true, Finish::Stop, MBPP_602),
            (false, Finish::Stop, "```python\npass\n```"),
            (true, Finish::Stop, MBPP_602),
            (false, Finish::Length, "def"),
        ],
    ];
    let mut rows = vec![];
    for (q, samples) in qs.iter().zip(&plan) {
        for (s, &(correct, finish, text)) in samples.iter().enumerate() {
            rows.push(Rollout {
                question_id: q.id.clone(),
                source: q.source.clone(),
                domain: q.domain,
                sample: s as u32,
                prompt: q.prompt.clone(),
                completion: text.to_string(),
                completion_ids: vec![1, 2, 3],
                finish,
                new_tokens: 3,
                extracted: None,
                correct,
                status: None,
                verifier: "planted".into(),
                verifier_version: verify::grade::VERSION.into(),
                gold: q.gold.clone(),
                tests: q.tests.clone(),
                model_sha256: key.model_sha256.clone(),
                temperature: 1.0,
                top_p: 1.0,
                top_k: 0,
                max_new_tokens: 64,
                seed: 3,
                prompts_snapshot_id: pm.snapshot_id.clone(),
            });
        }
    }
    let info = RolloutsInfo {
        cache_key: key.digest(),
        key,
        model: "planted".into(),
        model_files: vec![],
        prompts_snapshot: prompts.display().to_string(),
        samples: rows.len() as u64,
        correct: rows.iter().filter(|r| r.correct).count() as u64,
        truncated: rows.iter().filter(|r| r.finish == Finish::Length).count() as u64,
        new_tokens: 36,
        verifiers: vec![],
        tool: "test".into(),
    };
    let rollouts = dir.join("rollouts");
    let rm = publish_rollouts(&rollouts, &prompts, &pm, &rows, info, &[]).unwrap();
    assert!(schemas::snapshot::verify(&rollouts).unwrap().1.is_empty());

    // What the defaults must keep, counted from the rollouts themselves.
    let mut want: Vec<String> =
        rows.iter().filter(|r| r.correct && r.finish == Finish::Stop).map(|r| format!("r/{}/{}", r.question_id, r.sample)).collect();
    want.sort();
    assert_eq!(want.len(), 4);

    let recipe = train_recipe(dir, "t", "  - {name: r, path: rollouts, format: rollouts}\n");
    let out = dir.join("t");
    let m: Manifest = pipeline::build::build(&recipe, &out, false).unwrap();
    assert_eq!(trained_ids(&out), want);
    let d = dropped(&out);
    for r in &rows {
        let id = format!("r/{}/{}", r.question_id, r.sample);
        let expect = if r.finish == Finish::Length {
            Some("truncated")
        } else if !r.correct {
            Some("wrong")
        } else {
            None
        };
        assert_eq!(d.get(&id).map(String::as_str), expect, "{id}");
    }
    // The manifest names the rollouts and what selection did with them.
    let o = &m.rollout_sources[0];
    assert_eq!(o.snapshot_id.as_deref(), Some(rm.snapshot_id.as_str()));
    assert_eq!(o.rollouts.as_ref().unwrap().cache_key, rm.rollouts.as_ref().unwrap().cache_key);
    assert_eq!((o.samples, o.correct, o.kept, o.malformed), (12, 5, 4, 0));
    assert_eq!(o.dropped, BTreeMap::from([("truncated".into(), 3), ("wrong".into(), 5)]));
    assert!(m.inputs.iter().any(|i| i.role == "r" && i.sha256 == schemas::sha256_file(&rollouts.join("manifest.json")).unwrap()));
    assert!(load_snapshot(&out).is_ok());

    // Stricter selection: one per exact duplicate, at most one per question, questions with no
    // correct sample dropped as a whole.
    let recipe = train_recipe(
        dir,
        "strict",
        "  - {name: r, path: rollouts, format: rollouts, select: {collapse_duplicates: true, max_per_question: 1, drop_all_wrong: true}}\n",
    );
    pipeline::build::build(&recipe, &dir.join("strict"), false).unwrap();
    let q = |i: usize, s: usize| format!("r/{}/{s}", qs[i].id);
    assert_eq!(trained_ids(&dir.join("strict")), {
        let mut v = vec![q(0, 0), q(2, 0)];
        v.sort();
        v
    });
    let d = dropped(&dir.join("strict"));
    assert_eq!(d[&q(0, 3)], "duplicate_completion");
    assert_eq!(d[&q(2, 2)], "duplicate_completion");
    assert!((0..4).all(|s| d[&q(1, s)] == "question_all_wrong"));
    let stats = pipeline::inspect::stats(&rollouts).unwrap();
    // Per source: samples, correct, truncated, then questions with 0..4 correct samples.
    assert!(stats.contains("gsm8k_train") && stats.contains("mbpp_train"), "{stats}");
    let line = |s: &str| stats.lines().find(|l| l.starts_with(s)).unwrap().split_whitespace().skip(1).collect::<Vec<_>>().join(" ");
    assert_eq!(line("gsm8k_train"), "8 3 2 1 0 0 1 0", "{stats}");
    assert_eq!(line("mbpp_train"), "4 2 1 0 0 1 0 0", "{stats}");

    // What is compared is the rendering. Another system message would train the completions
    // after prompts they were not sampled from: refused, quoting the difference.
    let with_tokenizer = |name: &str, sources: &str, tokenizer: &str| {
        let recipe = train_recipe(dir, name, sources);
        let text = std::fs::read_to_string(&recipe).unwrap().replace("tokenizer: {gguf: ", &format!("tokenizer: {{{tokenizer}gguf: "));
        std::fs::write(&recipe, text).unwrap();
        pipeline::build::build(&recipe, &dir.join(name), false)
    };
    let source = "  - {name: r, path: rollouts, format: rollouts}\n";
    let e = format!("{:#}", with_tokenizer("system", source, "system_prompt: Be brief., ").unwrap_err());
    assert!(e.contains("source `r`: this recipe's tokenizer renders its prompts otherwise than they were sampled"), "{e}");
    assert!(e.contains("in the sampled prompts") && e.contains("Be brief.") && e.contains("system_prompt null"), "{e}");
    // A template variable SmolLM2's template does not read changes no prompt: accepted (the
    // rows are the ones trained without it).
    with_tokenizer("vars", source, "template_vars: {enable_thinking: false}, ").unwrap();
    assert_eq!(trained_ids(&dir.join("vars")), want);

    // Questions rendered by an exported template that carries the system message (a trained
    // final/ folder, whose manifest records none) are the prompts a recipe setting the same
    // system message renders: accepted.
    let exported = dir.join("exported");
    std::fs::create_dir(&exported).unwrap();
    model_files::tokenizer::ChatTokenizer::from_snapshot(&prompts, &pm.tokenizer)
        .unwrap()
        .with_system_prompt(Some("Be brief.".into()))
        .save_hf_files(&exported)
        .unwrap();
    let q2 = dir.join("q2.yaml");
    let text = std::fs::read_to_string(dir.join("q.yaml")).unwrap();
    let text =
        text.replace(&format!("tokenizer: {{gguf: {}}}", model().display()), &format!("tokenizer: {{hf_dir: {}}}", exported.display()));
    std::fs::write(&q2, text).unwrap();
    pipeline::build::build(&q2, &dir.join("q2"), false).unwrap();
    let (pm2, _) = schemas::prompts::load_prompts(&dir.join("q2")).unwrap();
    assert_eq!(pm2.tokenizer.system_prompt, None);
    let mut info2 = rm.rollouts.clone().unwrap();
    info2.key.prompts_snapshot_id = pm2.snapshot_id.clone();
    info2.cache_key = info2.key.digest();
    info2.prompts_snapshot = dir.join("q2").display().to_string();
    publish_rollouts(&dir.join("rollouts2"), &dir.join("q2"), &pm2, &rows, info2, &[]).unwrap();
    let source2 = "  - {name: r, path: rollouts2, format: rollouts}\n";
    with_tokenizer("brief", source2, "system_prompt: Be brief., ").unwrap();
    assert_eq!(trained_ids(&dir.join("brief")), want);

    // Rollouts sampled before begin tokens were recorded (a template writing `bos_token`, a
    // manifest naming none) cannot have their prompts rendered again as they were: the recorded
    // settings are compared instead, and a recipe with the same ones is accepted.
    let bos = dir.join("bos");
    std::fs::create_dir(&bos).unwrap();
    let base = model_files::tokenizer::ChatTokenizer::from_snapshot(&prompts, &pm.tokenizer).unwrap();
    base.save_hf_files(&bos).unwrap();
    let config = bos.join("tokenizer_config.json");
    let mut c: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&config).unwrap()).unwrap();
    c["bos_token"] = "<|endoftext|>".into();
    std::fs::write(&config, c.to_string()).unwrap();
    std::fs::write(bos.join("chat_template.jinja"), format!("{{{{ bos_token }}}}{}", base.chat_template())).unwrap();
    let q3 = dir.join("q3.yaml");
    let text = std::fs::read_to_string(dir.join("q.yaml")).unwrap();
    let text = text.replace(&format!("tokenizer: {{gguf: {}}}", model().display()), &format!("tokenizer: {{hf_dir: {}}}", bos.display()));
    std::fs::write(&q3, text).unwrap();
    pipeline::build::build(&q3, &dir.join("q3"), false).unwrap();
    let (pm3, _) = schemas::prompts::load_prompts(&dir.join("q3")).unwrap();
    assert_eq!(pm3.tokenizer.bos_token, "<|endoftext|>");
    let mut info3 = rm.rollouts.clone().unwrap();
    info3.key.prompts_snapshot_id = pm3.snapshot_id.clone();
    info3.cache_key = info3.key.digest();
    publish_rollouts(&dir.join("rollouts3"), &dir.join("q3"), &pm3, &rows, info3, &[]).unwrap();
    let manifest = dir.join("rollouts3/manifest.json");
    let mut m: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&manifest).unwrap()).unwrap();
    m["tokenizer"].as_object_mut().unwrap().remove("bos_token");
    std::fs::write(&manifest, serde_json::to_string_pretty(&m).unwrap()).unwrap();
    let recipe = train_recipe(dir, "old", "  - {name: r, path: rollouts3, format: rollouts}\n");
    let text = std::fs::read_to_string(&recipe).unwrap();
    let text = text.replace(&format!("tokenizer: {{gguf: {}}}", model().display()), &format!("tokenizer: {{hf_dir: {}}}", bos.display()));
    std::fs::write(&recipe, text).unwrap();
    pipeline::build::build(&recipe, &dir.join("old"), false).unwrap();
    assert_eq!(trained_ids(&dir.join("old")), want);
}

#[test]
fn a_file_from_another_engine_is_verified_and_accounted_line_by_line() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let prompts = questions(dir);
    let (_, qs) = schemas::prompts::load_prompts(&prompts).unwrap();
    let q = |i: usize| qs[i].id.clone();
    let tests = qs[2].tests.clone().unwrap();
    // vLLM-style lines with their own question and gold answer; the labels are planted.
    let lines = [
        serde_json::json!({"question_id": "n1", "question": "What is 6 * 7?", "completion": "6 * 7 = 42, so \\boxed{42}.", "gold": "42", "finish_reason": "stop"}).to_string(),
        serde_json::json!({"question_id": "n1", "question": "What is 6 * 7?", "completion": "It is \\boxed{41}.", "gold": "42", "finish_reason": "stop"}).to_string(),
        serde_json::json!({"question_id": "n1", "question": "What is 6 * 7?", "completion": "6 * 7 = \\boxed{42} and then", "gold": "42", "finish_reason": "length"}).to_string(),
        "{\"question_id\": \"n2\", \"completion\": ".to_string(),
        serde_json::json!({"question_id": "n2", "question": "What is 1 + 1?", "gold": "2"}).to_string(),
        serde_json::json!({"question_id": "n2", "question": "What is 1 + 1?", "completion": "\\boxed{2}", "gold": "2", "finish_reason": "maybe"}).to_string(),
        serde_json::json!({"question_id": "n3", "question": "No gold here", "completion": "\\boxed{2}"}).to_string(),
        serde_json::json!({"question_id": "n1", "question": "What is 6 * 7?", "completion": "\\boxed{42}", "gold": "42", "sample": 0}).to_string(),
        serde_json::json!({"question_id": "n4", "question": "What is 2^10?", "completion": "2^10 = 1024. The final answer is 1024.", "gold": "1024"}).to_string(),
        serde_json::json!({"question_id": "n5", "question": "Code?", "completion": MBPP_602, "tests": serde_json::from_str::<serde_json::Value>(&tests).unwrap()}).to_string(),
        // n = 3 samples in one line, as vLLM and SGLang write them.
        serde_json::json!({"question_id": "n6", "question": "What is 3 + 3?", "gold": "6", "completion": [
            {"text": "3 + 3 = \\boxed{6}", "finish_reason": "stop"},
            {"text": "\\boxed{7}", "finish_reason": "stop"},
            {"text": "3 + 3 = \\boxed{6} and", "finish_reason": {"type": "length"}}]}).to_string(),
    ];
    write_lines(&dir.join("engine.jsonl"), &lines);
    // Lines that name a question of the snapshot and leave the rest to it.
    let looked_up = [
        serde_json::json!({"question_id": q(0), "completion": "48 + 24 = 72. #### 72"}).to_string(),
        serde_json::json!({"question_id": q(1), "completion": "She earned $10. The answer is 10."}).to_string(),
        serde_json::json!({"question_id": q(1), "completion": "She earned $12."}).to_string(),
        serde_json::json!({"question_id": q(2), "completion": MBPP_602}).to_string(),
        serde_json::json!({"question_id": q(2), "completion": "```python\ndef first_repeated_char(s):\n    return s[0]\n```"}).to_string(),
        serde_json::json!({"question_id": "gsm8k_train/L999", "completion": "\\boxed{1}"}).to_string(),
    ];
    write_lines(&dir.join("lookup.jsonl"), &looked_up);
    let recipe = train_recipe(
        dir,
        "ext",
        "  - {name: engine, path: engine.jsonl, format: rollouts, domain: math, math_rules: math}\n  - {name: lookup, path: lookup.jsonl, format: rollouts, questions: q}\n",
    );
    let out = dir.join("ext");
    let m = pipeline::build::build(&recipe, &out, false).unwrap();
    // The questions snapshot decided the lookup lines' verdicts, so it is an input on record.
    let q_manifest = schemas::sha256_file(&prompts.join("manifest.json")).unwrap();
    assert!(m.inputs.iter().any(|i| i.role == "lookup:questions" && i.path == "q" && i.sha256 == q_manifest), "{:?}", m.inputs);

    // Kept: the correct, untruncated lines. (n5 carries tests, but its source says `math`, so it
    // is a math line without a gold answer: quarantined.)
    let kept = trained_ids(&out);
    let want = [
        "engine/n1/0",
        "engine/n4/0",
        "engine/n6/0",
        &format!("lookup/{}/0", q(0)),
        &format!("lookup/{}/0", q(1)),
        &format!("lookup/{}/0", q(2)),
    ];
    let mut want: Vec<String> = want.iter().map(|s| s.to_string()).collect();
    want.sort();
    assert_eq!(kept, want);
    let d = dropped(&out);
    assert_eq!(d["engine/n1/1"], "wrong");
    assert_eq!(d["engine/n1/2"], "truncated");
    assert_eq!(d["engine/n6/1"], "wrong");
    assert_eq!(d["engine/n6/2"], "truncated");
    assert_eq!(d[&format!("lookup/{}/1", q(1))], "wrong");
    assert_eq!(d[&format!("lookup/{}/1", q(2))], "wrong");
    assert_eq!(d.len(), 6, "{d:?}");
    // Malformed lines: quarantined with file, line and field.
    let quarantine: Vec<(String, u64, String)> = std::fs::read_to_string(out.join(QUARANTINE_FILE))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .map(|v| (v["source"].as_str().unwrap().to_string(), v["line"].as_u64().unwrap(), v["field"].as_str().unwrap().to_string()))
        .collect();
    let want_q: Vec<(String, u64, String)> = [
        ("engine", 4, ""),
        ("engine", 5, "completion"),
        ("engine", 6, "finish_reason"),
        ("engine", 7, "gold"),
        ("engine", 8, "sample"),
        ("engine", 10, "gold"),
        ("lookup", 6, "question_id"),
    ]
    .iter()
    .map(|(s, l, f)| (s.to_string(), *l, f.to_string()))
    .collect();
    assert_eq!(quarantine, want_q);
    // Every line is kept, dropped or quarantined; the stage report balances.
    let ingest = &m.stages[0];
    assert_eq!(ingest.rows_in, 19);
    assert_eq!(ingest.rows_out, 6);
    assert!(ingest.balanced(), "{ingest:?}");
    let (e, l) = (&m.rollout_sources[0], &m.rollout_sources[1]);
    assert!(e.verified_on_ingest && e.snapshot_id.is_none());
    assert_eq!((e.samples, e.malformed, e.kept), (13, 6, 3));
    assert_eq!((l.samples, l.malformed, l.kept, l.correct), (6, 1, 3, 3));
}

#[test]
fn a_fields_map_without_finish_or_sample_still_reads_them() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    // Renamed id, prompt and completion columns; the finish reason and sample index keep their
    // default names, so a truncated sample is still seen as truncated.
    let lines = [
        serde_json::json!({"qid": "n1", "q": "What is 6 * 7?", "text": "6 * 7 = \\boxed{42}.", "gold": "42", "finish_reason": "stop"}),
        serde_json::json!({"qid": "n1", "q": "What is 6 * 7?", "text": "\\boxed{42} and", "gold": "42", "finish_reason": "length"}),
        serde_json::json!({"qid": "n1", "q": "What is 6 * 7?", "text": "\\boxed{41}", "gold": "42", "sample": 7}),
    ];
    write_lines(&dir.join("renamed.jsonl"), &lines.map(|l| l.to_string()));
    let recipe = train_recipe(
        dir,
        "partial",
        "  - {name: e, path: renamed.jsonl, format: rollouts, domain: math, math_rules: math, fields: {id: qid, prompt: q, response: text, gold: gold}}\n",
    );
    let out = dir.join("partial");
    pipeline::build::build(&recipe, &out, false).unwrap();
    assert_eq!(trained_ids(&out), ["e/n1/0"]);
    let d = dropped(&out);
    assert_eq!(d["e/n1/1"], "truncated", "{d:?}");
    assert_eq!(d["e/n1/7"], "wrong", "{d:?}");
}
