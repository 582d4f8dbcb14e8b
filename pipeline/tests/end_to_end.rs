//! End-to-end builds on real files with planted problems: exact and near duplicates, benchmark
//! problems copied from MATH-500, malformed lines and broken code. Every input row must come out
//! either in a shard, in `dropped.jsonl` with its reason, or in `quarantine.jsonl`.

use arrow::array::{Array, AsArray};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").canonicalize().unwrap()
}

fn model() -> PathBuf {
    model_files::test_model_path()
}

fn json_lines(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// Writes a GSM8K-format file (200 real rows + planted rows), an MBPP-format file with one row
/// that is not Python, and a recipe over both.
fn planted_recipe(dir: &Path) -> PathBuf {
    let gsm: Vec<serde_json::Value> = std::fs::read_to_string(repo().join("datasets/raw/gsm8k/train.jsonl"))
        .unwrap()
        .lines()
        .take(200)
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let math500: Vec<serde_json::Value> = std::fs::read_to_string(repo().join("datasets/raw/math500/test.jsonl"))
        .unwrap()
        .lines()
        .take(3)
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let mut f = std::fs::File::create(dir.join("math.jsonl")).unwrap();
    for row in &gsm {
        writeln!(f, "{row}").unwrap(); // lines 1..=200
    }
    // 201..=203: exact duplicates of lines 1..=3 up to case and whitespace.
    for row in &gsm[..3] {
        let q = row["question"].as_str().unwrap().to_uppercase().replace(' ', "  ");
        writeln!(f, "{}", serde_json::json!({"question": q, "answer": row["answer"]})).unwrap();
    }
    // 204..=206: near duplicates of lines 11..=13: one word added in front of the answer.
    for row in &gsm[10..13] {
        let a = format!("So, {}", row["answer"].as_str().unwrap());
        writeln!(f, "{}", serde_json::json!({"question": row["question"], "answer": a})).unwrap();
    }
    // 207..=209: MATH-500 problems planted as training rows.
    for row in &math500 {
        writeln!(
            f,
            "{}",
            serde_json::json!({"question": row["problem"], "answer": format!("{}\n#### 1", row["solution"].as_str().unwrap())})
        )
        .unwrap();
    }
    // 210..=213: malformed lines.
    writeln!(f, "{{\"question\": \"broken json\", \"answer\": \"#### 1\"").unwrap();
    writeln!(f, "{}", serde_json::json!({"answer": "no question #### 1"})).unwrap();
    writeln!(f, "{}", serde_json::json!({"question": ["a list"], "answer": "#### 1"})).unwrap();
    f.write_all(b"{\"question\": \"bad \xc3\x28 utf8\", \"answer\": \"#### 1\"}\n").unwrap();
    // 214: no final answer.
    writeln!(f, r#"{{"question": "What is the meaning of life and everything?", "answer": "Nobody knows for sure."}}"#).unwrap();
    drop(f);

    let mut f = std::fs::File::create(dir.join("code.jsonl")).unwrap();
    writeln!(f, r#"{{"text": "Write a function to add two numbers.", "code": "def add(a, b):\n    return a + b", "task_id": 1, "test_list": ["assert add(1, 2) == 3"]}}"#).unwrap();
    writeln!(f, r#"{{"text": "Write a function to multiply two numbers.", "code": "def mul(a, b)\n    return a * b", "task_id": 2, "test_list": ["assert mul(2, 3) == 6"]}}"#).unwrap();
    drop(f);

    let recipe = format!(
        "name: planted\nseed: 7\nsources:\n  - {{name: math, path: math.jsonl, format: gsm8k}}\n  - {{name: code, path: code.jsonl, format: mbpp}}\n\
         ingest: {{max_bad_fraction: 0.05}}\nfilter: {{min_tokens: 4}}\n\
         decontaminate: {{against: [{}]}}\ntokenizer: {{gguf: {}}}\npack: {{seq_len: 1024}}\nwrite: {{rows_per_shard: 8, row_group_rows: 4}}\n",
        repo().join("datasets/recipes/eval/math500.yaml").display(),
        model().display()
    );
    let path = dir.join("planted.yaml");
    std::fs::write(&path, recipe).unwrap();
    path
}

/// Example ids in the shards, with the number of loss tokens of each row.
fn shard_example_ids(dir: &Path) -> Vec<String> {
    let mut ids = vec![];
    let mut files: Vec<PathBuf> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).filter(|p| p.extension().is_some_and(|e| e == "parquet")).collect();
    files.sort();
    for f in files {
        let reader = ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(f).unwrap()).unwrap().build().unwrap();
        for batch in reader {
            let batch = batch.unwrap();
            let lists = batch.column_by_name("example_ids").unwrap().as_list::<i32>();
            for i in 0..lists.len() {
                let v = lists.value(i);
                ids.extend(v.as_string::<i32>().iter().map(|s| s.unwrap().to_string()));
            }
        }
    }
    ids
}

#[test]
fn planted_problems_are_caught_and_every_row_is_accounted_for() {
    let tmp = tempfile::tempdir().unwrap();
    let recipe = planted_recipe(tmp.path());
    let out = tmp.path().join("snap");
    let manifest = pipeline::build::build(&recipe, &out, false).unwrap();

    let dropped = json_lines(&out.join("dropped.jsonl"));
    let reason_of: BTreeMap<String, (String, String)> = dropped
        .iter()
        .map(|d| {
            (
                d["id"].as_str().unwrap().to_string(),
                (d["reason"].as_str().unwrap().to_string(), d["detail"].as_str().unwrap_or("").to_string()),
            )
        })
        .collect();
    for line in 201..=203 {
        let (reason, detail) = &reason_of[&format!("math/L{line}")];
        assert_eq!(reason, "exact_duplicate");
        assert_eq!(detail, &format!("math/L{}", line - 200));
    }
    for line in 204..=206 {
        let (reason, detail) = &reason_of[&format!("math/L{line}")];
        assert_eq!(reason, "near_duplicate", "line {line}");
        assert_eq!(detail, &format!("math/L{}", line - 193));
    }
    for line in 207..=209 {
        let (reason, detail) = &reason_of[&format!("math/L{line}")];
        assert_eq!(reason, "benchmark_overlap", "line {line}");
        assert!(detail.starts_with("math500:math500/test/"), "{detail}");
    }
    assert_eq!(reason_of["math/L214"].0, "no_final_answer");
    assert_eq!(reason_of["code/2"].0, "python_syntax_error");
    assert!(reason_of["code/2"].1.starts_with("line 1"), "{:?}", reason_of["code/2"]);

    let quarantine = json_lines(&out.join("quarantine.jsonl"));
    let q: Vec<(u64, &str)> = quarantine.iter().map(|r| (r["line"].as_u64().unwrap(), r["field"].as_str().unwrap())).collect();
    assert_eq!(q, [(210, ""), (211, "question"), (212, "question"), (213, "")]);
    assert!(quarantine.iter().all(|r| r["file"].as_str().unwrap().ends_with("math.jsonl")));

    // Every one of the 214 + 2 input rows is kept, dropped with a reason, or quarantined.
    let kept = shard_example_ids(&out);
    let kept_set: BTreeSet<&String> = kept.iter().collect();
    assert_eq!(kept.len(), kept_set.len(), "an example appears in two rows");
    let mut accounted: BTreeSet<String> = kept.iter().cloned().collect();
    for d in &dropped {
        assert!(accounted.insert(d["id"].as_str().unwrap().to_string()), "{d} dropped twice or also kept");
    }
    let mut all: BTreeSet<String> = (1..=214).filter(|l| !(210..=213).contains(l)).map(|l| format!("math/L{l}")).collect();
    all.insert("code/1".into());
    all.insert("code/2".into());
    assert_eq!(accounted, all);
    assert_eq!(kept.len() + dropped.len() + quarantine.len(), 216);

    // Stage reports balance and chain.
    for pair in manifest.stages.windows(2) {
        assert!(pair[0].balanced(), "{:?}", pair[0]);
        if pair[1].stage != "write" {
            assert_eq!(pair[0].rows_out, pair[1].rows_in, "{} -> {}", pair[0].stage, pair[1].stage);
        }
    }
    assert_eq!(manifest.stages[0].rows_in, 216);
    assert_eq!(manifest.stages[0].dropped["malformed"], 4);
    let p = manifest.packing.unwrap();
    assert_eq!(p.examples as usize, kept.len());
}

#[test]
fn same_recipe_gives_byte_identical_shards_and_verify_catches_a_flipped_byte() {
    let tmp = tempfile::tempdir().unwrap();
    let recipe = planted_recipe(tmp.path());
    let a = pipeline::build::build(&recipe, &tmp.path().join("a"), false).unwrap();
    let b = pipeline::build::build(&recipe, &tmp.path().join("b"), false).unwrap();
    assert_eq!(a.snapshot_id, b.snapshot_id);
    assert!(a.shards.len() > 1, "the test should cover several shards");
    for s in a.shards.iter().chain(&a.sidecars) {
        let x = std::fs::read(tmp.path().join("a").join(&s.file)).unwrap();
        let y = std::fs::read(tmp.path().join("b").join(&s.file)).unwrap();
        assert!(x == y, "{} differs between two builds", s.file);
    }
    assert_eq!(std::fs::read(tmp.path().join("a/manifest.json")).unwrap(), std::fs::read(tmp.path().join("b/manifest.json")).unwrap());

    let (_, problems) = schemas::snapshot::verify(&tmp.path().join("a")).unwrap();
    assert!(problems.is_empty(), "{problems:?}");
    let shard = tmp.path().join("a").join(&a.shards[1].file);
    let mut bytes = std::fs::read(&shard).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    std::fs::write(&shard, bytes).unwrap();
    let (_, problems) = schemas::snapshot::verify(&tmp.path().join("a")).unwrap();
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(problems[0].starts_with(&a.shards[1].file) && problems[0].contains("sha256"), "{problems:?}");
}

#[test]
fn a_failed_build_leaves_no_snapshot_behind() {
    let tmp = tempfile::tempdir().unwrap();
    let recipe = planted_recipe(tmp.path());
    // Too many malformed rows for a zero tolerance: the build must fail...
    let text = std::fs::read_to_string(&recipe).unwrap().replace("max_bad_fraction: 0.05", "max_bad_fraction: 0.0");
    std::fs::write(&recipe, text).unwrap();
    let out = tmp.path().join("snap");
    let err = pipeline::build::build(&recipe, &out, false).unwrap_err();
    assert!(format!("{err:#}").contains("math.jsonl:210"), "{err:#}");
    // ...and leave neither the snapshot nor its temp folder.
    let left: Vec<String> = std::fs::read_dir(tmp.path()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert!(left.iter().all(|n| !n.contains("snap")), "{left:?}");

    // A build that keeps no row fails too, saying which stage took them, rather than writing an
    // empty snapshot (every empty snapshot would have the same id).
    let text = std::fs::read_to_string(&recipe).unwrap().replace("max_bad_fraction: 0.0", "max_bad_fraction: 0.05");
    let text =
        text.replace("filter: {min_tokens: 4}", "filter: {min_tokens: 4, include: [{field: prompt, pattern: nothing-matches-this}]}");
    std::fs::write(&recipe, text).unwrap();
    let err = format!("{:#}", pipeline::build::build(&recipe, &out, false).unwrap_err());
    assert!(err.contains("no rows to write") && err.contains("include_not_matched:nothing-matches-this="), "{err}");
    assert!(!out.exists());
}

#[test]
fn packed_tokens_match_the_reference_ids_and_masks() {
    // The reference prompts, as a one-row-per-example training set whose responses are the
    // reference greedy outputs: the packed row must hold exactly prompt_ids ++ greedy_ids.
    let reference: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(repo().join("model-files/tests/fixtures/reference_greedy.json")).unwrap()).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let mut f = std::fs::File::create(tmp.path().join("ref.jsonl")).unwrap();
    let mut expected = vec![];
    for (i, case) in reference["cases"].as_array().unwrap().iter().enumerate() {
        let prompt = case["prompt"].as_str().unwrap();
        let question = prompt.split("<|im_start|>user\n").nth(1).unwrap().split("<|im_end|>").next().unwrap();
        let answer = case["greedy_text"].as_str().unwrap().trim_end_matches("<|im_end|>");
        writeln!(f, "{}", serde_json::json!({"id": i, "q": question, "a": answer})).unwrap();
        let ids: Vec<i64> = case["prompt_ids"]
            .as_array()
            .unwrap()
            .iter()
            .chain(case["greedy_ids"].as_array().unwrap())
            .map(|v| v.as_i64().unwrap())
            .collect();
        expected.push((ids, case["prompt_ids"].as_array().unwrap().len()));
    }
    drop(f);
    let recipe = format!(
        "name: ref\nsources:\n  - {{name: r, path: ref.jsonl, format: generic, domain: math, fields: {{id: id, prompt: q, response: a}}}}\n\
         filter: {{require_math_answer: false}}\ndedup: {{exact: false, near: {{enabled: false}}}}\ntokenizer: {{gguf: {}}}\npack: {{seq_len: 128}}\n",
        model().display()
    );
    std::fs::write(tmp.path().join("ref.yaml"), recipe).unwrap();
    let out = tmp.path().join("snap");
    pipeline::build::build(&tmp.path().join("ref.yaml"), &out, false).unwrap();
    let file = std::fs::File::open(out.join("train-00000-of-00001.parquet")).unwrap();
    let batch = ParquetRecordBatchReaderBuilder::try_new(file).unwrap().build().unwrap().next().unwrap().unwrap();
    let mut seen = 0;
    for row in 0..batch.num_rows() {
        let ids = batch.column_by_name("input_ids").unwrap().as_list::<i32>().value(row);
        let ids: Vec<i64> = ids.as_primitive::<arrow::datatypes::Int32Type>().values().iter().map(|&v| v as i64).collect();
        let mask = batch.column_by_name("loss_mask").unwrap().as_list::<i32>().value(row);
        let mask: Vec<i8> = mask.as_primitive::<arrow::datatypes::Int8Type>().values().to_vec();
        let seg = batch.column_by_name("segment_ids").unwrap().as_list::<i32>().value(row);
        let seg: Vec<i32> = seg.as_primitive::<arrow::datatypes::Int32Type>().values().to_vec();
        for s in 1..=*seg.iter().max().unwrap() {
            let idx: Vec<usize> = (0..seg.len()).filter(|&i| seg[i] == s).collect();
            let got: Vec<i64> = idx.iter().map(|&i| ids[i]).collect();
            let m: Vec<i8> = idx.iter().map(|&i| mask[i]).collect();
            let (want, n_prompt) = expected.iter().find(|(w, _)| got.starts_with(w)).expect("a reference case");
            // ChatML ends the turn with "\n" (id 198) after <|im_end|>: present, not trained.
            assert_eq!(&got[want.len()..], &[198]);
            let want_mask: Vec<i8> = (0..got.len()).map(|i| (i >= *n_prompt && i < want.len()) as i8).collect();
            assert_eq!(m, want_mask);
            seen += 1;
        }
    }
    assert_eq!(seen, 2);
}

/// A `messages` source end to end: every assistant turn of a conversation is trained (the
/// packed row's trained tokens, run by run, decode to the assistant turns as written), the same
/// conversation twice is an exact duplicate, and a malformed one is quarantined.
#[test]
fn conversations_train_every_assistant_turn_end_to_end() {
    let tmp = tempfile::tempdir().unwrap();
    let turn = |role: &str, content: &str| serde_json::json!({"role": role, "content": content});
    let chat = serde_json::json!({"m": [turn("user", "What is 12 + 30?"), turn("assistant", "12 + 30 = 42."),
        turn("user", "And twice that?"), turn("assistant", "Twice 42 is 84.\n#### 84")]});
    let other = serde_json::json!({"m": [turn("system", "Answer briefly."), turn("user", "What is 5 * 6?"), turn("assistant", "#### 30")]});
    let broken = serde_json::json!({"m": [turn("assistant", "Hello")]});
    std::fs::write(tmp.path().join("chat.jsonl"), format!("{chat}\n{other}\n{chat}\n{broken}\n")).unwrap();
    let recipe = format!(
        "name: chat\nseed: 1\nsources:\n  - {{name: c, path: chat.jsonl, format: generic, domain: math, fields: {{messages: m}}}}\n\
         ingest: {{max_bad_fraction: 0.5}}\nfilter: {{}}\ndedup: {{exact: true, near: {{enabled: false}}}}\ndecontaminate: {{against: []}}\n\
         tokenizer: {{gguf: {}}}\npack: {{seq_len: 512}}\n",
        model().display()
    );
    std::fs::write(tmp.path().join("chat.yaml"), recipe).unwrap();
    let out = tmp.path().join("snap");
    pipeline::build::build(&tmp.path().join("chat.yaml"), &out, false).unwrap();
    let dropped = json_lines(&out.join("dropped.jsonl"));
    assert_eq!(dropped.len(), 1);
    assert_eq!(
        (dropped[0]["id"].as_str(), dropped[0]["reason"].as_str(), dropped[0]["detail"].as_str()),
        (Some("c/L3"), Some("exact_duplicate"), Some("c/L1"))
    );
    let quarantine = json_lines(&out.join("quarantine.jsonl"));
    assert_eq!((quarantine.len(), quarantine[0]["line"].as_u64(), quarantine[0]["field"].as_str()), (1, Some(4), Some("m[0]")));

    let tok = model_files::tokenizer::ChatTokenizer::from_gguf(&model(), None, None).unwrap();
    let file = std::fs::File::open(out.join("train-00000-of-00001.parquet")).unwrap();
    let batch = ParquetRecordBatchReaderBuilder::try_new(file).unwrap().build().unwrap().next().unwrap().unwrap();
    let mut trained = vec![];
    for row in 0..batch.num_rows() {
        let ids = batch.column_by_name("input_ids").unwrap().as_list::<i32>().value(row);
        let ids: Vec<u32> = ids.as_primitive::<arrow::datatypes::Int32Type>().values().iter().map(|&v| v as u32).collect();
        let mask = batch.column_by_name("loss_mask").unwrap().as_list::<i32>().value(row);
        let mask: Vec<i8> = mask.as_primitive::<arrow::datatypes::Int8Type>().values().to_vec();
        let pairs: Vec<(u32, i8)> = ids.into_iter().zip(mask).collect();
        for run in pairs.chunk_by(|a, b| a.1 == b.1).filter(|run| run[0].1 == 1) {
            trained.push(tok.decode(&run.iter().map(|&(id, _)| id).collect::<Vec<_>>()));
        }
    }
    trained.sort();
    assert_eq!(trained, ["#### 30<|im_end|>", "12 + 30 = 42.<|im_end|>", "Twice 42 is 84.\n#### 84<|im_end|>"]);
}

/// `tokenizer.template_vars` reaches the chat template and the manifest; a name the renderer
/// sets itself fails the build, naming the recipe and the field.
#[test]
fn template_vars_are_recorded_and_reserved_names_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let recipe = planted_recipe(tmp.path());
    let text = std::fs::read_to_string(&recipe).unwrap();
    let with = |vars: &str| text.replace("tokenizer: {gguf: ", &format!("tokenizer: {{template_vars: {vars}, gguf: "));
    std::fs::write(&recipe, with("{messages: []}")).unwrap();
    let err = format!("{:#}", pipeline::build::build(&recipe, &tmp.path().join("bad"), false).unwrap_err());
    assert!(err.contains("planted.yaml: tokenizer.template_vars") && err.contains("`messages` is set by the renderer"), "{err}");
    // SmolLM2's template reads no such variable: the same rows, with the variable on record.
    std::fs::write(&recipe, with("{enable_thinking: false}")).unwrap();
    let m = pipeline::build::build(&recipe, &tmp.path().join("snap"), false).unwrap();
    assert_eq!(m.recipe.resolved["tokenizer"]["template_vars"], serde_json::json!({"enable_thinking": false}));
    assert_eq!(m.tokenizer.template_vars["enable_thinking"], serde_json::json!(false));
    std::fs::write(&recipe, &text).unwrap();
    let plain = pipeline::build::build(&recipe, &tmp.path().join("plain"), false).unwrap();
    assert!(plain.recipe.resolved["tokenizer"].get("template_vars").is_none(), "an empty map is not recorded");
    assert!(plain.tokenizer.template_vars.is_empty());
    assert_eq!(m.snapshot_id, plain.snapshot_id);
    assert!(plain.tokenizer.system_prompt.is_none());
    // A system prompt is on record too, and changes the rows.
    std::fs::write(&recipe, text.replace("tokenizer: {gguf: ", "tokenizer: {system_prompt: Be brief., gguf: ")).unwrap();
    let brief = pipeline::build::build(&recipe, &tmp.path().join("brief"), false).unwrap();
    assert_eq!(brief.tokenizer.system_prompt.as_deref(), Some("Be brief."));
    assert_ne!(brief.snapshot_id, plain.snapshot_id);
    // A manifest from before the field existed: read back from its resolved recipe.
    let path = tmp.path().join("brief/manifest.json");
    let mut old: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    old["tokenizer"].as_object_mut().unwrap().remove("system_prompt").unwrap();
    std::fs::write(&path, old.to_string()).unwrap();
    let back = schemas::snapshot::read_manifest(&tmp.path().join("brief")).unwrap();
    assert_eq!(back.tokenizer.system_prompt.as_deref(), Some("Be brief."));
    std::fs::write(&recipe, &text).unwrap();
    // A template that prints a variable: its value reaches the rows.
    std::fs::write(
        tmp.path().join("tag.jinja"),
        "{{ '<|im_start|>system\\n' + tag + '<|im_end|>\\n' }}{%- for m in messages %}{{ '<|im_start|>' + m.role + '\\n' + m.content + '<|im_end|>\\n' }}\
         {%- endfor %}{%- if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{%- endif %}",
    )
    .unwrap();
    let tagged = |tag: &str, out: &str| {
        std::fs::write(&recipe, with(&format!("{{tag: {tag}}}, chat_template: tag.jinja"))).unwrap();
        pipeline::build::build(&recipe, &tmp.path().join(out), false).unwrap()
    };
    let (a, b) = (tagged("Alpha", "a"), tagged("Beta", "b"));
    assert_ne!(a.snapshot_id, b.snapshot_id, "the variable changes the rendered rows");
    let rendered = std::fs::read_to_string(tmp.path().join("a").join(schemas::snapshot::TEMPLATE_FILE)).unwrap();
    assert!(rendered.contains("+ tag +"), "the snapshot keeps the template as given");
}

/// `--tokenizer MODEL` (and a recipe's `tokenizer.hf_dir`) tokenize with a Hugging Face folder's
/// tokenizer and template: the default model's tokenizer saved as such a folder gives the very
/// rows its GGUF gives, read by another path (tokenizer.json and tokenizer_config.json instead
/// of GGUF metadata); the manifest records the folder.
fn model_only(model: &Path) -> pipeline::build::TokenizerOverride<'_> {
    pipeline::build::TokenizerOverride { model: Some(model), eos_token: None }
}

#[test]
fn a_hugging_face_folder_tokenizes_as_its_gguf_does() {
    let tmp = tempfile::tempdir().unwrap();
    let recipe = planted_recipe(tmp.path());
    let from_gguf = pipeline::build::build(&recipe, &tmp.path().join("gguf"), false).unwrap();

    let hf = tmp.path().join("hf");
    std::fs::create_dir(&hf).unwrap();
    model_files::tokenizer::ChatTokenizer::from_gguf(&model(), None, None).unwrap().save_hf_files(&hf).unwrap();
    let over = pipeline::build::build_with(&recipe, &tmp.path().join("over"), false, &model_only(&hf)).unwrap();
    assert_eq!(over.snapshot_id, from_gguf.snapshot_id);
    assert_eq!(over.recipe.resolved["tokenizer"]["hf_dir"], serde_json::json!(hf.display().to_string()));
    assert!(over.recipe.resolved["tokenizer"]["gguf"].is_null());
    assert_eq!(over.tokenizer.path, hf.join("tokenizer.json").display().to_string());
    assert_eq!(over.tokenizer.file_sha256, schemas::sha256_file(&hf.join("tokenizer.json")).unwrap());
    // --eos-token: the template's own end of turn changes nothing; a token not in the vocabulary
    // is an error naming the field.
    let eos = |e| pipeline::build::TokenizerOverride { model: Some(&hf), eos_token: Some(e) };
    let same = pipeline::build::build_with(&recipe, &tmp.path().join("eos"), false, &eos("<|im_end|>")).unwrap();
    assert_eq!((same.snapshot_id.as_str(), same.tokenizer.eos_token.as_str()), (from_gguf.snapshot_id.as_str(), "<|im_end|>"));
    assert_eq!(same.recipe.resolved["tokenizer"]["eos_token"], "<|im_end|>");
    let e = format!("{:#}", pipeline::build::build_with(&recipe, &tmp.path().join("nope"), false, &eos("<nope>")).unwrap_err());
    assert!(e.contains("tokenizer.eos_token") && e.contains("\"<nope>\" is not in the vocabulary"), "{e}");
    // A lone .safetensors file stands for its folder.
    let file = pipeline::build::build_with(&recipe, &tmp.path().join("file"), false, &model_only(&hf.join("model.safetensors"))).unwrap();
    assert_eq!(file.recipe.resolved["tokenizer"]["hf_dir"], serde_json::json!(hf.display().to_string()));

    // The same folder named in the recipe.
    let text = std::fs::read_to_string(&recipe).unwrap();
    let gguf_line = text.lines().find(|l| l.contains("tokenizer: {gguf: ")).unwrap().to_string();
    std::fs::write(&recipe, text.replace(&gguf_line, &format!("tokenizer: {{hf_dir: {}}}", hf.display()))).unwrap();
    let named = pipeline::build::build(&recipe, &tmp.path().join("named"), false).unwrap();
    assert_eq!(named.snapshot_id, from_gguf.snapshot_id);

    // Neither a GGUF nor a folder.
    let e = pipeline::build::build_with(&recipe, &tmp.path().join("bad"), false, &model_only(&hf.join("tokenizer.json")))
        .unwrap_err()
        .to_string();
    assert!(e.contains("expected a GGUF file or a Hugging Face model folder"), "{e}");
    // Two sources in a recipe.
    std::fs::write(&recipe, text.replace("tokenizer: {gguf: ", &format!("tokenizer: {{hf_dir: {}, gguf: ", hf.display()))).unwrap();
    let e = format!("{:#}", pipeline::build::build(&recipe, &tmp.path().join("two"), false).unwrap_err());
    assert!(e.contains("exactly one of `gguf`, `hf_dir` or `tokenizer_json`"), "{e}");
}
