//! `kill -9` in the middle of training, then `--resume`, must end at the same weights, bit for
//! bit, as a run that was never interrupted (CPU, tiny model, real snapshot and tokenizer).

use model_files::checkpoint::{Checkpoint, HostTensor};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

mod common;
use common::gsm8k_snapshot;

/// A 2-layer model with SmolLM2's vocabulary and seeded random weights.
fn tiny_model(dir: &Path) {
    let config = serde_json::from_str(
        r#"{"architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": 49152, "hidden_size": 32,
            "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
            "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "max_position_embeddings": 1024, "tie_word_embeddings": true}"#,
    )
    .unwrap();
    let mut rng = schemas::rng::SplitMix64::new(3);
    let mut tensors = BTreeMap::new();
    for (name, shape) in model_files::checkpoint::expected_tensors(&config) {
        let n: usize = shape.iter().product();
        let data = if name.contains("norm") {
            vec![1.0; n]
        } else {
            (0..n).map(|_| ((rng.next_u64() >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.1).collect()
        };
        tensors.insert(name, HostTensor { shape, data });
    }
    model_files::checkpoint::save_hf(dir, &Checkpoint { config, tensors }).unwrap();
}

/// A fresh folder holding the tiny model (`tiny/`) and a snapshot of 40 GSM8K examples (`snap/`).
fn tiny_run_dir() -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    tiny_model(&tmp.path().join("tiny"));
    let snap = gsm8k_snapshot(tmp.path(), "snap", 40, "");
    assert_eq!(snap, tmp.path().join("snap"));
    tmp
}

fn recipe(dir: &Path, name: &str) -> PathBuf {
    let path = dir.join(format!("{name}.yaml"));
    let mut f = std::fs::File::create(&path).unwrap();
    writeln!(
        f,
        "model: tiny\nsnapshot: snap\noutput_dir: {name}\nloss: dft\nlr: 1e-3\nsteps: 6\nbatch_tokens: 1024\ncheckpoint_every: 1\nseed: 5"
    )
    .unwrap();
    path
}

fn trainer(args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_trainer"));
    c.args(args).env("RUST_LOG", "warn");
    c
}

fn steps_logged(metrics: &Path) -> Vec<u64> {
    std::fs::read_to_string(metrics)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .map(|v| v["step"].as_u64().unwrap())
        .collect()
}

/// Each step's objective, from the text of a `metrics.jsonl`.
fn objectives(metrics: &str) -> Vec<f64> {
    metrics.lines().map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["objective"].as_f64().unwrap()).collect()
}

#[test]
fn kill_9_and_resume_reaches_the_same_weights() {
    let tmp = tiny_run_dir();
    let dir = tmp.path();

    let a = recipe(dir, "a");
    let status = trainer(&["train", "--recipe", a.to_str().unwrap()]).status().unwrap();
    assert!(status.success());

    let b = recipe(dir, "b");
    let mut child = trainer(&["train", "--recipe", b.to_str().unwrap()]).spawn().unwrap();
    let metrics = dir.join("b/metrics.jsonl");
    let t0 = Instant::now();
    while steps_logged(&metrics).len() < 3 {
        assert!(t0.elapsed() < Duration::from_secs(300), "training made no progress");
        if child.try_wait().unwrap().is_some() {
            panic!("training finished before it could be killed; make the run longer");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert!(!dir.join("b/final").exists(), "the run was not interrupted");
    // A fresh start over the interrupted run is refused, pointing to --resume.
    let out = trainer(&["train", "--recipe", b.to_str().unwrap()]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("already holds checkpoint") && err.contains("pass --resume"), "{err}");
    let status = trainer(&["train", "--recipe", b.to_str().unwrap(), "--resume"]).status().unwrap();
    assert!(status.success());

    let wa = std::fs::read(dir.join("a/final/model.safetensors")).unwrap();
    let wb = std::fs::read(dir.join("b/final/model.safetensors")).unwrap();
    assert!(wa == wb, "resumed run ended at different weights");
    assert_eq!(steps_logged(&metrics), [1, 2, 3, 4, 5, 6], "each step logged once");
    let la = std::fs::read_to_string(dir.join("a/metrics.jsonl")).unwrap();
    let lb = std::fs::read_to_string(&metrics).unwrap();
    assert_eq!(objectives(&la), objectives(&lb));
    // Each run keeps its training curves beside its metrics, the resumed one drawn from all six
    // steps: the figure is the one `trainer curves` draws from the whole log.
    for run in ["a", "b"] {
        let curves = trainer::curves::read_run(&dir.join(run), None).unwrap();
        assert_eq!((curves.label.as_str(), curves.steps.len()), (run, 6));
        let expected = dir.join(format!("{run}-curves.png"));
        trainer::curves::write(&[curves], &expected).unwrap();
        assert_eq!(std::fs::read(dir.join(run).join("curves.png")).unwrap(), std::fs::read(&expected).unwrap(), "{run}");
    }
    // What computed the steps is recorded with them.
    let json = |p: &str| serde_json::from_str::<serde_json::Value>(&std::fs::read_to_string(dir.join(p)).unwrap()).unwrap();
    assert_eq!(json("b/final/training.json")["engine"], "burn flex");
    assert_eq!(json("b/checkpoints/step-000006/trainer_state.json")["engine"], "burn flex");
    // A checkpoint is the model folder `final/` is (tokenizer included), plus what resuming needs.
    for file in ["model.safetensors", "config.json", "tokenizer.json", "chat_template.jinja", "tokenizer_config.json"] {
        let read = |run: &str| std::fs::read(dir.join(run).join(file)).unwrap();
        assert!(read("b/checkpoints/step-000006") == read("b/final"), "{file}");
    }

    // Without --resume an existing run is not overwritten (a finished one is said to be).
    let out = trainer(&["train", "--recipe", b.to_str().unwrap()]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("holds a finished run (6 of 6 steps"));

    // A resume that changes the math is refused, naming each change.
    let out = trainer(&["train", "--recipe", b.to_str().unwrap(), "--resume", "--loss", "sft", "--seed", "6"]).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("loss: dft -> sft") && err.contains("seed: 5 -> 6"), "{err}");

    // Nor is a finished run whose checkpoints were deleted, with or without --resume.
    std::fs::remove_dir_all(dir.join("b/checkpoints")).unwrap();
    for args in [&["--resume"][..], &[]] {
        let out = trainer(&[&["train", "--recipe", b.to_str().unwrap()][..], args].concat()).output().unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("holds a run (final/) but no checkpoint"), "{err}");
    }
    assert_eq!(std::fs::read(dir.join("b/final/model.safetensors")).unwrap(), wb, "the finished run is untouched");
    assert_eq!(steps_logged(&metrics), [1, 2, 3, 4, 5, 6]);

    // A run stopped before its first checkpoint (two steps logged, none saved, as a kill before
    // step `checkpoint_every` leaves it) is refused without --resume, and with it starts afresh,
    // dropping the logged steps: the same weights and each step logged once. Past the step its
    // first checkpoint was due, the checkpoint is gone, not never made: refused even with
    // --resume, the log kept.
    let c = recipe(dir, "c");
    std::fs::create_dir(dir.join("c")).unwrap();
    let two: String = la.lines().take(2).map(|l| l.to_string() + "\n").collect();
    std::fs::write(dir.join("c/metrics.jsonl"), &two).unwrap();
    let out = trainer(&["train", "--recipe", c.to_str().unwrap()]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("holds a run (metrics.jsonl, up to step 2) but no checkpoint to continue"), "{err}");
    let out = trainer(&["train", "--recipe", c.to_str().unwrap(), "--resume"]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("but no checkpoint to resume from"), "checkpoint_every 1: {err}");
    assert_eq!(std::fs::read_to_string(dir.join("c/metrics.jsonl")).unwrap(), two, "the log is kept");
    let out = trainer(&["train", "--recipe", c.to_str().unwrap(), "--resume", "--checkpoint-every", "3"]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && err.contains("the run stopped before its first one, due at step 3): starting afresh"), "{err}");
    assert!(std::fs::read(dir.join("c/final/model.safetensors")).unwrap() == wa);
    assert_eq!(steps_logged(&dir.join("c/metrics.jsonl")), [1, 2, 3, 4, 5, 6]);
}

#[test]
fn a_diverging_run_stops_naming_the_step_and_keeps_its_last_checkpoint() {
    let tmp = tiny_run_dir();
    let dir = tmp.path();
    let r = recipe(dir, "nan");
    // An absurd learning rate overflows the weights after the first update.
    let text = std::fs::read_to_string(&r).unwrap().replace("lr: 1e-3", "lr: 1.0e+30");
    std::fs::write(&r, text + "clip: 0\n").unwrap();
    let out = trainer(&["train", "--recipe", r.to_str().unwrap()]).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("step 2") && err.contains("not finite"), "{err}");
    let ckpt = dir.join("nan/checkpoints/step-000001");
    assert!(ckpt.join("trainer_state.json").exists(), "the step-1 checkpoint is kept");
    assert!(!dir.join("nan/checkpoints/step-000002").exists());
    model_files::checkpoint::load(&ckpt).expect("the kept checkpoint loads");
}

/// `--resume` into a folder that does not exist says so (a mistyped path, most often) and starts
/// a new run; a finished run is refused to a fresh start as finished, and resumed with a
/// warning that nothing is left to train.
#[test]
fn resume_says_when_there_is_nothing_to_resume() {
    let tmp = tiny_run_dir();
    let dir = tmp.path();
    let r = recipe(dir, "fin");
    let run = |extra: &[&str]| trainer(&[&["train", "--recipe", r.to_str().unwrap(), "--steps", "2"], extra].concat()).output().unwrap();
    let out = run(&["--resume"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && err.contains("did not exist, so there is nothing to resume"), "{err}");
    let out = run(&[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("holds a finished run (2 of 2 steps"), "{err}");
    let out = run(&["--resume"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && err.contains("the run finished at step 2 of 2: nothing left to train"), "{err}");
    assert_eq!(steps_logged(&dir.join("fin/metrics.jsonl")), [1, 2]);
}

/// A run refused after its output folder was made (here: more recompute blocks than the model
/// has, found once the model is loaded) leaves no empty folder; an existing folder stays.
#[test]
fn a_refused_run_leaves_no_empty_output_folder() {
    let tmp = tiny_run_dir();
    let dir = tmp.path();
    let r = recipe(dir, "refused");
    let out = trainer(&["train", "--recipe", r.to_str().unwrap(), "--recompute", "99"]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("`recompute: 99` asks for more blocks"), "{err}");
    assert!(!dir.join("refused").exists(), "the folder the run made is removed");
    std::fs::create_dir(dir.join("refused")).unwrap();
    assert!(!trainer(&["train", "--recipe", r.to_str().unwrap(), "--recompute", "99"]).output().unwrap().status.success());
    assert!(dir.join("refused").is_dir(), "a folder the user made stays");
}

/// `--no-save` leaves metrics only, and each step's `rows` is the documented data order: epoch
/// `e` visits the rows in `shuffle(0..n, seed ^ mix64(e))` order.
#[test]
fn no_save_writes_only_metrics_with_each_steps_rows() {
    let tmp = tiny_run_dir();
    let dir = tmp.path();
    let snap = dir.join("snap");
    let r = recipe(dir, "ns");
    let status = trainer(&["train", "--recipe", r.to_str().unwrap(), "--no-save"]).status().unwrap();
    assert!(status.success());
    assert!(!dir.join("ns/checkpoints").exists() && !dir.join("ns/final").exists(), "nothing but metrics is written");
    assert!(!dir.join("ns/curves.png").exists());
    let n = schemas::snapshot::load_snapshot(&snap).unwrap().rows.len();
    let logged: Vec<Vec<usize>> = std::fs::read_to_string(dir.join("ns/metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_value(serde_json::from_str::<serde_json::Value>(l).unwrap()["rows"].clone()).unwrap())
        .collect();
    assert_eq!(logged.len(), 6);
    let first: serde_json::Value =
        serde_json::from_str(std::fs::read_to_string(dir.join("ns/metrics.jsonl")).unwrap().lines().next().unwrap()).unwrap();
    assert!(first.get("log_ratio_to_reference").is_none(), "an unscored snapshot has no reference to compare with");
    let flat: Vec<usize> = logged.concat();
    let expected: Vec<usize> = (0..flat.len())
        .map(|k| {
            let mut order: Vec<usize> = (0..n).collect();
            schemas::rng::shuffle(&mut order, 5 ^ schemas::rng::mix64((k / n) as u64));
            order[k % n]
        })
        .collect();
    assert_eq!(flat, expected);
    assert!(logged.iter().all(|r| r.len() == logged[0].len()), "every step trains on as many rows");
}

/// Each step's learning rate in `metrics.jsonl` follows the schedule `--lr-schedule` picks: one
/// warmup step (10% of 6, rounded), then cosine (the default) or a straight line towards 0 at
/// step 7, or the peak throughout.
#[test]
fn the_lr_schedule_flag_sets_each_steps_learning_rate() {
    let tmp = tiny_run_dir();
    let dir = tmp.path();
    let r = recipe(dir, "sched");
    let lrs = |schedule: &[&str]| -> Vec<f64> {
        let _ = std::fs::remove_dir_all(dir.join("sched"));
        let status = trainer(&[&["train", "--recipe", r.to_str().unwrap(), "--no-save"], schedule].concat()).status().unwrap();
        assert!(status.success(), "{schedule:?}");
        std::fs::read_to_string(dir.join("sched/metrics.jsonl"))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["lr"].as_f64().unwrap())
            .collect()
    };
    // After the warmup step, step s (1..=5) is (s - 1) / 5 of the way.
    let expected =
        |f: fn(f64) -> f64| -> Vec<f64> { std::iter::once(1e-3).chain((1..6).map(|s| 1e-3 * f((s - 1) as f64 / 5.0))).collect() };
    let close = |a: Vec<f64>, b: Vec<f64>| a.len() == b.len() && a.iter().zip(&b).all(|(x, y)| (x - y).abs() < 1e-12);
    let (cosine, linear, constant) = (lrs(&[]), lrs(&["--lr-schedule", "linear"]), lrs(&["--lr-schedule", "constant"]));
    assert!(close(cosine.clone(), expected(|p| 0.5 * (1.0 + (std::f64::consts::PI * p).cos()))), "{cosine:?}");
    assert!(close(linear.clone(), expected(|p| 1.0 - p)), "{linear:?}");
    assert!(close(constant.clone(), vec![1e-3; 6]), "{constant:?}");
}

/// `validation.jsonl`'s lines of a run (step, cross-entropy, target tokens).
fn measured(path: &Path) -> Vec<(u64, f64, u64)> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (v["step"].as_u64().unwrap(), v["cross_entropy"].as_f64().unwrap(), v["loss_tokens"].as_u64().unwrap())
        })
        .collect()
}

/// A held-out snapshot is measured before the first step, every `validation_every` steps and
/// after the last, without changing what training computes; its cross-entropy before training
/// is what a training step on the same rows logs for the model before its update; a resumed run
/// measures each step once, drops the lines of another held-out set it is given (measuring the
/// new one from the resume) and keeps its lines under `--no-validation`; held-out rows that are
/// training rows are warned about.
#[test]
fn held_out_loss_is_measured_without_changing_training() {
    let tmp = tiny_run_dir();
    let dir = tmp.path();
    let snap = dir.join("snap");
    let gsm = common::repo().join("datasets/raw/gsm8k/train.jsonl");
    let held_out = |name: &str, skip: usize| {
        let recipe = format!(
            "name: {name}\nseed: 1\nsources:\n  - {{name: gsm, path: {}, format: gsm8k, skip: {skip}, limit: 8}}\ntokenizer: {{gguf: {}}}\npack: {{seq_len: 512}}\n",
            gsm.display(),
            common::model_path().display()
        );
        common::build_snapshot(dir, name, &recipe)
    };
    // The problems after the 40 the run trains on.
    let held = held_out("held", 40);
    let targets: u64 = schemas::snapshot::load_snapshot(&held).unwrap().rows.iter().map(|r| r.targets() as u64).sum();

    let a = recipe(dir, "a");
    assert!(trainer(&["train", "--recipe", a.to_str().unwrap()]).status().unwrap().success());
    assert!(!dir.join("a/validation.jsonl").exists(), "no validation_snapshot, nothing measured");
    let b = recipe(dir, "b");
    let measure = ["--validation-snapshot", held.to_str().unwrap(), "--validation-every", "4"];
    let out = trainer(&[&["train", "--recipe", b.to_str().unwrap()][..], &measure].concat()).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("held-out") && !String::from_utf8_lossy(&out.stderr).contains("training snapshot")
    );
    let read = |p: &str| std::fs::read(dir.join(p)).unwrap();
    assert!(read("a/final/model.safetensors") == read("b/final/model.safetensors"), "measuring changed training");
    let log = |run: &str| std::fs::read_to_string(dir.join(run).join("metrics.jsonl")).unwrap();
    assert_eq!(objectives(&log("a")), objectives(&log("b")));
    let held_b = measured(&dir.join("b/validation.jsonl"));
    assert_eq!(held_b.iter().map(|m| (m.0, m.2)).collect::<Vec<_>>(), [(0, targets), (4, targets), (6, targets)]);
    assert!(held_b[0].1 != held_b[2].1 && held_b.iter().all(|m| m.1.is_finite() && m.1 > 0.0), "{held_b:?}");

    // One SFT step over exactly the held-out rows logs their cross-entropy under the model
    // before its update: the held-out measurement at step 0, computed the training way.
    let rows = schemas::snapshot::load_snapshot(&held).unwrap().rows.len();
    let one = trainer(&[
        "train",
        "--recipe",
        a.to_str().unwrap(),
        "--snapshot",
        held.to_str().unwrap(),
        "--output-dir",
        dir.join("one").to_str().unwrap(),
        "--loss",
        "sft",
        "--steps",
        "1",
        "--batch-tokens",
        &(rows * 512).to_string(),
        "--no-save",
    ])
    .status()
    .unwrap();
    assert!(one.success());
    let first: serde_json::Value =
        serde_json::from_str(std::fs::read_to_string(dir.join("one/metrics.jsonl")).unwrap().lines().next().unwrap()).unwrap();
    let trained = first["cross_entropy"].as_f64().unwrap();
    assert!((trained - held_b[0].1).abs() < 1e-5, "training step {trained}, held out {}", held_b[0].1);

    // As a kill after the checkpoint of step 4 leaves the run (checkpoints 5 and 6 never
    // written, the logs past them kept): resumed, each step is measured once, as before.
    for gone in ["final", "checkpoints/step-000005", "checkpoints/step-000006"] {
        std::fs::remove_dir_all(dir.join("b").join(gone)).unwrap();
    }
    let out = trainer(&[&["train", "--recipe", b.to_str().unwrap(), "--resume"][..], &measure].concat()).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(measured(&dir.join("b/validation.jsonl")), held_b);
    assert!(read("a/final/model.safetensors") == read("b/final/model.safetensors"));

    // Resumed from step 5 (no measurement due) naming another held-out set: the first set's
    // lines go, said, and the new set's curve starts where the run resumes. Resumed again
    // without measuring: the lines up to the checkpoint stay and none is added.
    let mixed = held_out("mixed", 36);
    let mixed_targets: u64 = schemas::snapshot::load_snapshot(&mixed).unwrap().rows.iter().map(|r| r.targets() as u64).sum();
    assert_ne!(mixed_targets, targets);
    let remove = |gone: &[&str]| gone.iter().for_each(|g| std::fs::remove_dir_all(dir.join("b").join(g)).unwrap());
    remove(&["final", "checkpoints/step-000006"]);
    let other = ["--validation-snapshot", mixed.to_str().unwrap(), "--validation-every", "4"];
    let out = trainer(&[&["train", "--recipe", b.to_str().unwrap(), "--resume"][..], &other].concat()).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && err.contains("dropped 2 lines measured on another held-out snapshot"), "{err}");
    let lines = |m: Vec<(u64, f64, u64)>| m.iter().map(|m| (m.0, m.2)).collect::<Vec<_>>();
    assert_eq!(lines(measured(&dir.join("b/validation.jsonl"))), [(5, mixed_targets), (6, mixed_targets)]);
    remove(&["final", "checkpoints/step-000006"]);
    let out = trainer(&["train", "--recipe", b.to_str().unwrap(), "--resume", "--no-validation"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(lines(measured(&dir.join("b/validation.jsonl"))), [(5, mixed_targets)]);
    assert!(read("a/final/model.safetensors") == read("b/final/model.safetensors"));

    // Held-out rows that are training rows: the training snapshot itself, and 8 problems of
    // which the first 4 are among the training 40.
    for (snapshot, said) in [(&snap, "is the training snapshot"), (&mixed, "4 of its 8 examples are also in the training snapshot")] {
        let out = trainer(&[
            "train",
            "--recipe",
            a.to_str().unwrap(),
            "--output-dir",
            dir.join("w").to_str().unwrap(),
            "--steps",
            "1",
            "--no-save",
            "--validation-snapshot",
            snapshot.to_str().unwrap(),
        ])
        .output()
        .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success() && err.contains(said), "{err}");
        std::fs::remove_dir_all(dir.join("w")).unwrap();
    }
}

/// `--device cuda` on a build without CUDA says how to build one, instead of clap's suggestion
/// of `cpu` as if `cuda` were a typo.
#[test]
#[cfg(not(feature = "cuda"))]
fn device_cuda_on_a_cpu_build_says_how_to_build_one() {
    for args in [&["train", "--recipe", "x.yaml", "--device", "cuda"][..], &["eval", "--model", "m", "--device=cuda"]] {
        let out = trainer(args).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.code() == Some(2) && err.contains("built without CUDA") && err.contains("make build-cuda"), "{err}");
    }
}

/// A LoRA run trains only the adapters: `final/` holds the base weights with the adapters merged
/// (embeddings and norms untouched) and `final/adapter/` the adapters as PEFT writes them; the
/// optimizer keeps moments for the adapters alone. Resumed from a checkpoint, it ends at the
/// same adapters and weights, bit for bit; a resume with other adapters is refused.
#[test]
fn lora_trains_the_adapters_alone_and_resumes_to_the_same_ones() {
    let tmp = tiny_run_dir();
    let dir = tmp.path();
    // With dropout: its masks follow from the seed and the step, so the resumed run draws the
    // uninterrupted one's.
    let lora = "lora: {rank: 4, alpha: 8, targets: [q_proj, v_proj, down_proj], dropout: 0.1}\ncheckpoint_every: 2\nsteps: 4\n";
    let write = |name: &str| {
        let path = recipe(dir, name);
        let text = std::fs::read_to_string(&path).unwrap().replace("steps: 6\n", "").replace("checkpoint_every: 1\n", "");
        std::fs::write(&path, format!("{text}{lora}")).unwrap();
        path
    };
    let (a, b) = (write("a"), write("b"));
    // b lists the same targets in another order: the same adapters, and a resume takes them.
    std::fs::write(&b, std::fs::read_to_string(&b).unwrap().replace("[q_proj, v_proj, down_proj]", "[down_proj, q_proj, v_proj]")).unwrap();
    for r in [&a, &b] {
        let out = trainer(&["train", "--recipe", r.to_str().unwrap()]).env("RUST_LOG", "info").output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{err}");
        // 2 blocks x (q 32x32 + v 16x32 + down 32x64): A and B of rank 4.
        let trained = 2 * (4 * 32 + 32 * 4 + 4 * 32 + 16 * 4 + 4 * 64 + 32 * 4);
        let said = format!("LoRA rank 4, alpha 8, targets [q_proj, v_proj, down_proj], dropout 0.1: {trained} trained parameters");
        assert!(err.contains(&said), "{err}");
        assert!(
            err.contains(&format!("of the base model's {}", 49152 * 32 + 2 * (2 * 32 + 2 * 32 * 32 + 2 * 16 * 32 + 3 * 32 * 64) + 32)),
            "{err}"
        );
    }
    let tensors = |p: &str| model_files::safetensors::read_safetensors(dir.join(p)).unwrap();
    let (base, merged) = (tensors("tiny/model.safetensors"), tensors("a/final/model.safetensors"));
    assert_eq!(base.keys().collect::<Vec<_>>(), merged.keys().collect::<Vec<_>>(), "final/ holds the base model's tensors");
    for (name, t) in &base {
        let adapted = ["q_proj", "v_proj", "down_proj"].iter().any(|m| name.contains(m));
        assert_eq!(merged[name] == *t, !adapted, "{name}");
    }
    let adapters = tensors("a/final/adapter/adapter_model.safetensors");
    assert_eq!(adapters.len(), 2 * 3 * 2);
    assert!(adapters.keys().all(|k| k.starts_with("base_model.model.model.layers.") && k.contains(".lora_")));
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("a/final/adapter/adapter_config.json")).unwrap()).unwrap();
    assert_eq!((config["r"].as_u64(), config["lora_alpha"].as_f64(), config["lora_dropout"].as_f64()), (Some(4), Some(8.0), Some(0.1)));
    let moments = tensors("a/checkpoints/step-000004/optimizer.safetensors");
    assert_eq!(moments.len(), 2 * adapters.len(), "an m and a v per adapter, none for frozen weights");

    // b as if killed after its step-2 checkpoint, then resumed.
    resume_lora_to_the_same_end(dir, "a", "b", &b, "step-000004");
    let la = std::fs::read_to_string(dir.join("a/metrics.jsonl")).unwrap();
    assert_eq!(objectives(&la), objectives(&std::fs::read_to_string(dir.join("b/metrics.jsonl")).unwrap()));

    // A checkpoint without its adapters cannot be resumed (the merged weights cannot be split
    // back): said, naming what to do.
    std::fs::remove_dir_all(dir.join("b/checkpoints/step-000004")).unwrap();
    let (adapter, aside) = (dir.join("b/checkpoints/step-000002/adapter"), dir.join("adapter-aside"));
    std::fs::rename(&adapter, &aside).unwrap();
    let out = trainer(&["train", "--recipe", b.to_str().unwrap(), "--resume"]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("has no adapter/, the LoRA adapters a resume continues from"), "{err}");
    std::fs::rename(&aside, &adapter).unwrap();

    // Other adapters on resume: refused, naming both; rsLoRA's scale is another model too.
    let text = std::fs::read_to_string(&b).unwrap();
    std::fs::write(&b, text.replace("dropout: 0.1}", "dropout: 0.1, rslora: true}")).unwrap();
    let out = trainer(&["train", "--recipe", b.to_str().unwrap(), "--resume"]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("-> rank 4, alpha 8 (rsLoRA), targets [q_proj, v_proj, down_proj]"), "{err}");
    std::fs::write(&b, text.replace("rank: 4", "rank: 8")).unwrap();
    let out = trainer(&["train", "--recipe", b.to_str().unwrap(), "--resume"]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("lora: rank 4, alpha 8, targets [q_proj, v_proj, down_proj], dropout 0.1 -> rank 8"),
        "{err}"
    );
}

/// A recipe `NAME.yaml` in `dir` training `model` on the tiny snapshot for `steps` steps at `lr`
/// (DFT, seed 5, a checkpoint every step), with `lora` (a `lora:` line, or empty) appended.
fn lora_recipe(dir: &Path, name: &str, model: &str, steps: u64, lr: f64, lora: &str) -> PathBuf {
    let path = dir.join(format!("{name}.yaml"));
    let text = format!(
        "model: {model}\nsnapshot: snap\noutput_dir: {name}\nloss: dft\nlr: {lr}\nwarmup_ratio: 0\nsteps: {steps}\nbatch_tokens: 1024\ncheckpoint_every: 1\nseed: 5\n{lora}"
    );
    std::fs::write(&path, text).unwrap();
    path
}

/// Run `run` as if killed after the checkpoint before `last`: that checkpoint and `final/` gone.
fn kill_before(dir: &Path, run: &str, last: &str) {
    std::fs::remove_dir_all(dir.join(run).join("checkpoints").join(last)).unwrap();
    std::fs::remove_dir_all(dir.join(run).join("final")).unwrap();
}

/// LoRA run `resumed` (of `recipe`), killed before its checkpoint `last` ([`kill_before`]) and
/// resumed, ends with the merged weights and the adapters of the uninterrupted run `whole`, bit
/// for bit.
fn resume_lora_to_the_same_end(dir: &Path, whole: &str, resumed: &str, recipe: &Path, last: &str) {
    kill_before(dir, resumed, last);
    let out = trainer(&["train", "--recipe", recipe.to_str().unwrap(), "--resume"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    for file in ["final/model.safetensors", "final/adapter/adapter_model.safetensors"] {
        let read = |run: &str| std::fs::read(dir.join(run).join(file)).unwrap();
        assert!(read(whole) == read(resumed), "{file}");
    }
}

/// `trainer train --recipe RECIPE`: whether it succeeded, and its log.
fn train(recipe: &Path) -> (bool, String) {
    let out = trainer(&["train", "--recipe", recipe.to_str().unwrap()]).env("RUST_LOG", "info").output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// DoRA starts at the base model (`B` zero, each magnitude its row's norm), so its first
/// objective is plain LoRA's; it trains the magnitudes too, saves them as PEFT does, and its
/// `final/adapter` merged by `trainer export` is the `final/` it saved. Dropout changes the
/// second step (the first's output is the base model's, whatever the low-rank path drops).
#[test]
fn dora_starts_at_the_base_model_and_its_adapter_merges_to_its_final_model() {
    let tmp = tiny_run_dir();
    let dir = tmp.path();
    let targets = "rank: 4, alpha: 8, targets: [q_proj, v_proj, down_proj]";
    let first_objective = |name: &str| objectives(&std::fs::read_to_string(dir.join(name).join("metrics.jsonl")).unwrap())[0];
    for (name, extra) in [("lora", ""), ("dora", ", dora: true"), ("dropped", ", dropout: 0.5")] {
        let (ok, log) = train(&lora_recipe(dir, name, "tiny", 2, 1e-2, &format!("lora: {{{targets}{extra}}}\n")));
        assert!(ok, "{log}");
    }
    let (lora, dora) = (first_objective("lora"), first_objective("dora"));
    assert!((lora - dora).abs() <= 1e-6 * lora.abs(), "DoRA's first objective {dora}, plain LoRA's {lora}");
    let second = |name: &str| objectives(&std::fs::read_to_string(dir.join(name).join("metrics.jsonl")).unwrap())[1];
    assert_eq!(first_objective("dropped"), lora);
    assert!((second("dropped") - second("lora")).abs() > 1e-4 * second("lora").abs(), "dropout changed nothing");
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("dora/final/adapter/adapter_config.json")).unwrap()).unwrap();
    assert_eq!(config["use_dora"], true);
    let adapters = model_files::safetensors::read_safetensors(dir.join("dora/final/adapter/adapter_model.safetensors")).unwrap();
    // 2 blocks x 3 targets: A, B and a magnitude [out] each (q 32, v 16, down 32 rows).
    assert_eq!(adapters.len(), 2 * 3 * 3);
    let m = &adapters["base_model.model.model.layers.1.self_attn.v_proj.lora_magnitude_vector"];
    assert_eq!(m.shape, [16]);
    // Trained: no longer v_proj's row norms.
    let base = model_files::safetensors::read_safetensors(dir.join("tiny/model.safetensors")).unwrap();
    let v = &base["model.layers.1.self_attn.v_proj.weight"];
    let norms: Vec<f32> = v.data.chunks(v.shape[1]).map(|row| row.iter().map(|x| x * x).sum::<f32>().sqrt()).collect();
    assert!(m.data.iter().zip(&norms).any(|(a, b)| (a - b).abs() > 1e-4 * b), "the magnitudes did not move");
    // The saved adapter, merged into the base by export, is the merged model the run saved.
    let out = trainer(&["export", "--model"])
        .args([dir.join("tiny"), "--adapter".into(), dir.join("dora/final/adapter"), "--out".into(), dir.join("merged")])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let exported = model_files::safetensors::read_safetensors(dir.join("merged/model.safetensors")).unwrap();
    let saved = model_files::safetensors::read_safetensors(dir.join("dora/final/model.safetensors")).unwrap();
    assert_eq!(exported.keys().collect::<Vec<_>>(), saved.keys().collect::<Vec<_>>());
    for (name, t) in &saved {
        let gap = t.data.iter().zip(&exported[name].data).fold(0.0f32, |g, (a, b)| g.max((a - b).abs()));
        assert!(gap <= 1e-6, "{name}: the export differs by {gap}");
        assert_eq!(*t == base[name], !["q_proj", "v_proj", "down_proj"].iter().any(|p| name.contains(p)), "{name}");
    }
    // Continued from its adapter (`lora.from`, magnitudes included), DoRA starts where the run
    // ended: its first objective is that of the merged final/ trained in full, on the same rows.
    let from = format!("lora: {{{targets}, dora: true, from: dora/final/adapter}}\n");
    for (name, model, lora) in [("dora-from", "tiny", from.as_str()), ("merged-full", "dora/final", "")] {
        let (ok, log) = train(&lora_recipe(dir, name, model, 1, 1e-3, lora));
        assert!(ok, "{log}");
    }
    let (from, full) = (first_objective("dora-from"), first_objective("merged-full"));
    assert!((from - full).abs() <= 1e-5 * full.abs(), "from the DoRA adapter {from}, its merged model {full}");
    assert!((from - lora).abs() > 1e-3 * lora.abs(), "the adapter changes nothing: {from} against the base's {lora}");
}

/// `lora.from` starts the adapters as a PEFT adapter folder holds them: the first step's
/// objective is the one of the model with those adapters merged (trained in full from it, on the
/// same data), not the base model's. Such a run resumes bit for bit. An adapter of other
/// settings, a run's adapters on another base, and a resume from other adapters are refused.
#[test]
fn lora_from_an_adapter_folder_starts_where_it_ended() {
    let tmp = tiny_run_dir();
    let dir = tmp.path();
    let lora = "lora: {rank: 4, alpha: 8, targets: [q_proj, v_proj, down_proj]";
    let write = |name: &str, model: &str, steps: u64, lr: f64, lora: &str| lora_recipe(dir, name, model, steps, lr, lora);
    let first_objective = |name: &str| objectives(&std::fs::read_to_string(dir.join(name).join("metrics.jsonl")).unwrap())[0];
    // a trains adapters; b starts from them, c trains a/final (them merged) in full, d starts
    // afresh. All see the same first batch.
    let (ok, log) = train(&write("a", "tiny", 3, 1e-2, &format!("{lora}}}\n")));
    assert!(ok, "{log}");
    let (ok, log) = train(&write("b", "tiny", 1, 1e-3, &format!("{lora}, from: a/final/adapter}}\n")));
    assert!(ok && log.contains(&format!("LoRA starts from the adapters in {}", dir.join("a/final/adapter").display())), "{log}");
    let (ok, log) = train(&write("c", "a/final", 1, 1e-3, ""));
    assert!(ok, "{log}");
    let (ok, log) = train(&write("d", "tiny", 1, 1e-3, &format!("{lora}}}\n")));
    assert!(ok, "{log}");
    let (b, c, d) = (first_objective("b"), first_objective("c"), first_objective("d"));
    assert!((b - c).abs() <= 1e-5 * c.abs(), "from the adapters {b}, their merged model {c}");
    assert!((b - d).abs() > 1e-3 * d.abs(), "the adapters change nothing: {b} against fresh ones' {d}");

    // Another rank than the folder's: refused before training, naming both.
    let (ok, log) =
        train(&write("e", "tiny", 1, 1e-3, "lora: {rank: 2, alpha: 8, targets: [q_proj, v_proj, down_proj], from: a/final/adapter}\n"));
    assert!(
        !ok && log.contains("holds adapters of rank 4, alpha 8, targets [q_proj, v_proj, down_proj], the recipe asks for rank 2"),
        "{log}"
    );
    // rsLoRA on adapters trained without it: refused (another scale, another model).
    let (ok, log) = train(&write(
        "e",
        "tiny",
        1,
        1e-3,
        "lora: {rank: 4, alpha: 8, targets: [q_proj, v_proj, down_proj], rslora: true, from: a/final/adapter}\n",
    ));
    assert!(!ok && log.contains("the recipe asks for rank 4, alpha 8 (rsLoRA), targets"), "{log}");
    // A run's model folder named instead of its adapters: pointed to them.
    let (ok, log) = train(&write("e", "tiny", 1, 1e-3, &format!("{lora}, from: a/final}}\n")));
    assert!(!ok && log.contains(&format!("is a model folder; its adapters are in {}", dir.join("a/final/adapter").display())), "{log}");
    // A rectify run's adapters on another base than the one they were trained on (c/final is
    // a's merged model trained further): refused by the sha256 a's training.json records.
    let (ok, log) = train(&write("e", "c/final", 1, 1e-3, &format!("{lora}, from: a/final/adapter}}\n")));
    assert!(!ok && log.contains("was trained on another base model") && log.contains("a/final/training.json"), "{log}");

    // A run from the adapters, stopped after its first checkpoint and resumed, ends bit for bit
    // where the uninterrupted run does.
    let from_a = format!("{lora}, from: a/final/adapter}}\n");
    let (f, g) = (write("f", "tiny", 2, 1e-3, &from_a), write("g", "tiny", 2, 1e-3, &from_a));
    for r in [&f, &g] {
        let (ok, log) = train(r);
        assert!(ok, "{log}");
    }
    resume_lora_to_the_same_end(dir, "f", "g", &g, "step-000002");
    let training: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join("g/final/training.json")).unwrap()).unwrap();
    assert_eq!(training["lora_from_sha256"].as_str().unwrap(), model_files::lora::adapter_sha256(&dir.join("a/final/adapter")).unwrap());

    // Resumed from another start (d's adapters): refused by their sha256, whatever the path.
    kill_before(dir, "g", "step-000002");
    let g2 = write("g", "tiny", 2, 1e-3, &format!("{lora}, from: d/final/adapter}}\n"));
    let out = trainer(&["train", "--recipe", g2.to_str().unwrap(), "--resume"]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success()
            && err.contains("started from the adapters of sha256")
            && err.contains("the recipe's `lora.from` gives the adapters of sha256"),
        "{err}"
    );
    assert!(!err.contains("steps:"), "only the start differs: {err}");
}
