//! `trainer score` against a plain forward pass of each example on its own, the scored
//! snapshot's manifest, resuming after `kill -9`, and the iwsft loss that reads the scores
//! (real model and tokenizer, a small real snapshot with several examples packed per row).

use burn::backend::Flex;
use model::decoder::{single_sequence, Llama};
use schemas::snapshot::load_snapshot;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use trainer::score::{score, ScoreOptions};

mod common;
use common::{gsm8k_snapshot, model_path};

/// GSM8K examples packed two or three per 512-token row, two rows per shard.
fn small_snapshot(dir: &Path, examples: usize) -> PathBuf {
    gsm8k_snapshot(dir, "unscored", examples, "write: {rows_per_shard: 2}\n")
}

fn trainer(args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_trainer"));
    c.args(args).env("RUST_LOG", "info");
    c
}

/// Log-softmax of each next token of `ids` run alone (positions 0.., one segment), in f64 on
/// the host from the model's logits.
fn alone(model: &Llama<Flex>, ids: &[u32]) -> Vec<f64> {
    let dev = Default::default();
    let (x, pos) = single_sequence::<Flex>(ids, &dev);
    let logits: Vec<f32> = model.forward(x, pos, &[vec![(0, ids.len())]]).into_data().to_vec().unwrap();
    let v = logits.len() / ids.len();
    (1..ids.len())
        .map(|i| {
            let z = &logits[(i - 1) * v..i * v];
            let m = z.iter().cloned().fold(f32::MIN, f32::max) as f64;
            let lse = m + z.iter().map(|&x| (x as f64 - m).exp()).sum::<f64>().ln();
            z[ids[i] as usize] as f64 - lse
        })
        .collect()
}

#[test]
fn scores_match_each_example_run_alone_and_a_killed_run_resumes() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let unscored = small_snapshot(dir, 10);
    let parent = load_snapshot(&unscored).unwrap();
    assert!(parent.rows.len() >= 3, "{} rows", parent.rows.len());
    assert!(parent.rows.iter().any(|r| r.examples().len() >= 2), "no row packs several examples");
    assert!(parent.manifest.ref_logprobs.is_none());

    // Library call: two rows at a time (one per thread), chunks of 2 rows.
    let out = dir.join("scored");
    let opts = ScoreOptions {
        model: model_path(),
        snapshot: unscored.clone(),
        out: out.clone(),
        force: false,
        chunk_rows: 2,
        engine: "burn flex".into(),
    };
    let summary = score::<Flex>(&opts, &Default::default()).unwrap();
    assert_eq!(summary.rows, parent.rows.len());

    // The manifest: parent id, model hash, the new id, the convention; and it verifies.
    let (m, problems) = schemas::snapshot::verify(&out).unwrap();
    assert!(problems.is_empty(), "{problems:?}");
    let info = m.ref_logprobs.clone().expect("ref_logprobs recorded");
    assert_eq!(info.parent_snapshot_id, parent.manifest.snapshot_id);
    assert_eq!(info.model_sha256, schemas::sha256_file(&model_path()).unwrap());
    assert_eq!(info.dtype, "float32");
    assert_ne!(m.snapshot_id, parent.manifest.snapshot_id);
    assert_eq!(m.conventions["ref_logprobs"], trainer::score::CONVENTION);
    assert_eq!(m.sidecars, parent.manifest.sidecars);
    assert_eq!((m.packing.clone(), m.stages.clone()), (parent.manifest.packing.clone(), parent.manifest.stages.clone()));

    // Every stored value against the example run on its own.
    let scored = load_snapshot(&out).unwrap();
    let model = Llama::<Flex>::load(&model_path(), &Default::default()).unwrap();
    let (mut checked, mut worst) = (0usize, 0.0f64);
    for (r, (row, before)) in scored.rows.iter().zip(&parent.rows).enumerate() {
        assert_eq!(
            (&row.input_ids, &row.loss_mask, &row.position_ids, &row.segment_ids),
            (&before.input_ids, &before.loss_mask, &before.position_ids, &before.segment_ids)
        );
        let lp = row.ref_logprobs.as_ref().expect("scored row");
        assert_eq!(lp.len(), row.input_ids.len());
        let mut expected_zero = vec![true; lp.len()];
        for (s, n) in row.examples() {
            let ids: Vec<u32> = row.input_ids[s..s + n].iter().map(|&t| t as u32).collect();
            let want = alone(&model, &ids);
            for i in 1..n {
                let (got, want) = (lp[s + i] as f64, want[i - 1]);
                let diff = (got - want).abs();
                assert!(diff < 1e-3, "row {r} position {}: stored {got}, alone {want}", s + i);
                worst = worst.max(diff);
                expected_zero[s + i] = false;
                checked += 1;
            }
        }
        for (i, z) in expected_zero.iter().enumerate() {
            if *z {
                assert_eq!(lp[i], 0.0, "row {r} position {i}: segment start or padding must be 0");
            }
        }
    }
    assert_eq!(checked as u64, info.scored_tokens);
    eprintln!("{checked} log-probabilities checked, largest difference {worst:.2e}");

    // The same job through the CLI, one row per chunk, killed after its first chunk and started
    // again: it resumes and ends at the same scores.
    let cli_out = dir.join("cli");
    let model_file = model_path();
    let args = [
        "score",
        "--model",
        model_file.to_str().unwrap(),
        "--snapshot",
        unscored.to_str().unwrap(),
        "--out",
        cli_out.to_str().unwrap(),
        "--chunk-rows",
        "1",
    ];
    let mut child = trainer(&args).spawn().unwrap();
    let journal = dir.join(".cli.scoring/done.jsonl");
    let t0 = Instant::now();
    while std::fs::read_to_string(&journal).map_or(0, |t| t.lines().count()) < 1 {
        assert!(t0.elapsed() < Duration::from_secs(300), "scoring made no progress");
        assert!(child.try_wait().unwrap().is_none(), "scoring finished before it could be killed");
        std::thread::sleep(Duration::from_millis(10));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert!(!cli_out.exists(), "an interrupted run must leave no snapshot");
    let o = trainer(&args).output().unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    assert!(stderr.contains("resuming"), "{stderr}");
    assert!(!dir.join(".cli.scoring").exists(), "work folder left behind");
    let resumed = load_snapshot(&cli_out).unwrap();
    assert_eq!(resumed.rows.len(), scored.rows.len(), "the resumed run scored every row");
    for (k, (ra, rb)) in resumed.rows.iter().zip(&scored.rows).enumerate() {
        assert_eq!((&ra.input_ids, &ra.segment_ids), (&rb.input_ids, &rb.segment_ids), "row {k}");
        let (a, b) = (ra.ref_logprobs.as_ref().unwrap(), rb.ref_logprobs.as_ref().unwrap());
        // Each score on its own: a NaN fails the comparison, where a maximum would pass over it.
        for (i, (x, y)) in a.iter().zip(b).enumerate() {
            assert!((x - y).abs() < 1e-5, "row {k}, position {i}: resumed {x}, uninterrupted {y}");
        }
    }

    // An existing output is not replaced without --force.
    let o = trainer(&args).output().unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("--force"));
}

/// `trainer train` of `recipe` on the default model and the snapshot `scored`, into `out`; it
/// must succeed.
fn train_scored(recipe: &Path, scored: &Path, out: &Path, extra: &[&str]) {
    let model = model_path();
    let paths = [recipe, model.as_path(), scored, out].map(|p| p.to_str().unwrap().to_string());
    let mut args = vec!["train", "--recipe", &paths[0], "--model", &paths[1], "--snapshot", &paths[2], "--output-dir", &paths[3]];
    args.extend_from_slice(extra);
    let o = trainer(&args).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

#[test]
fn iwsft_needs_scores_and_with_the_reference_as_model_starts_as_sft() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let unscored = small_snapshot(dir, 3);
    let recipe = dir.join("train.yaml");
    std::fs::write(&recipe, "model: no-such-model.gguf\nsnapshot: unscored\noutput_dir: run\nloss: iwsft\nsteps: 1\nbatch_tokens: 512\n")
        .unwrap();

    // No reference scores: refused before the (missing) model is even opened.
    let o = trainer(&["train", "--recipe", recipe.to_str().unwrap()]).output().unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(stderr.contains("trainer score") && stderr.contains("make score"), "{stderr}");
    assert!(!stderr.contains("no-such-model"), "{stderr}");

    // Scored by the model it then trains: every weight exp(logp - ref) is 1 at the first step,
    // so the iwsft objective equals the plain cross-entropy.
    let scored = dir.join("scored");
    let opts = ScoreOptions {
        model: model_path(),
        snapshot: unscored,
        out: scored.clone(),
        force: false,
        chunk_rows: 16,
        engine: "burn flex".into(),
    };
    score::<Flex>(&opts, &Default::default()).unwrap();
    train_scored(&recipe, &scored, &dir.join("run"), &[]);
    let line = std::fs::read_to_string(dir.join("run/metrics.jsonl")).unwrap();
    let m: serde_json::Value = serde_json::from_str(line.lines().next().unwrap()).unwrap();
    let (obj, ce) = (m["objective"].as_f64().unwrap(), m["cross_entropy"].as_f64().unwrap());
    assert!((obj - ce).abs() < 1e-3 * ce, "iwsft objective {obj} vs cross-entropy {ce}");
    // The same model as the reference: no drift yet.
    let drift = m["log_ratio_to_reference"].as_f64().unwrap();
    assert!(drift.abs() < 1e-4, "log-ratio to the reference at the first step: {drift}");

    // SFT at a high learning rate, every row in every step: the second step sees the model after
    // one update raise the probability of the very tokens the reference scored.
    let sft = dir.join("sft.yaml");
    std::fs::write(&sft, "model: m\nsnapshot: s\noutput_dir: o\nloss: sft\nsteps: 2\nbatch_tokens: 1024\nlr: 0.0003\nwarmup_ratio: 0\n")
        .unwrap();
    train_scored(&sft, &scored, &dir.join("sft"), &["--no-save"]);
    let ratios: Vec<f64> = std::fs::read_to_string(dir.join("sft/metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["log_ratio_to_reference"].as_f64().unwrap())
        .collect();
    assert!(ratios[0].abs() < 1e-4 && ratios[1] > 0.05, "log-ratios {ratios:?}");
}
