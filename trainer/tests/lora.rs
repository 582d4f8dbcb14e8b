//! LoRA against PEFT itself: adapters PEFT made and saved on the transformers 5 fixtures, with
//! PEFT's log-probabilities and DFT gradients (`scripts/lora_fixtures.py`; no Python needed here).

use burn::backend::{Autodiff, Flex};
use burn::tensor::Tensor;
use model::dropout::LoraDropout;
use model::logprobs::row_logprobs;
use model::Llama;
use model_files::checkpoint::HostTensor;
use schemas::snapshot::Row;
use schemas::train::LossKind;
use std::collections::BTreeMap;
use std::path::PathBuf;
use trainer::optim::{AdamW, AdamWConfig};
use trainer::train::{apply_update, micro_step};

type B = Autodiff<Flex>;

/// The fixtures `scripts/lora_fixtures.py` made: rank 4, alpha 8 on every projection; one with
/// rsLoRA's scale (alpha / sqrt(rank) = 4, not alpha / rank = 2), one with DoRA's magnitudes, and
/// two trained with dropout 0.25 (their objective and gradients those of a step with rectify's
/// masks, which the script draws again).
const CASES: [&str; 6] =
    ["llama3-tied", "qwen2-untied", "qwen3-tied-rslora", "qwen2-untied-dora", "llama3-tied-dropout", "qwen2-untied-dora-dropout"];

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/lora").join(name)
}

/// The transformers 5 fixture a case's adapter was made on: its name's first two parts
/// (`qwen3-tied-rslora`: `qwen3-tied`).
fn base_model(name: &str) -> PathBuf {
    let base = name.splitn(3, '-').take(2).collect::<Vec<_>>().join("-");
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../model/tests/fixtures/transformers5").join(base)
}

/// The base fixture with PEFT's adapter on it, its trained parameters tracking gradients.
fn adapted(name: &str) -> Llama<B> {
    let (lora, adapters) = model_files::lora::read_adapter(&fixture(name).join("adapter")).unwrap();
    let settings = (lora.rank, lora.alpha, lora.targets.len(), lora.rslora, lora.dora);
    assert_eq!(settings, (4, 8.0, 7, name.contains("-rslora"), name.contains("-dora")));
    Llama::<B>::load(&base_model(name), &Default::default()).unwrap().with_lora(&lora, &adapters).unwrap().with_trainable_leaves()
}

struct Case {
    row: Row,
    logprobs: Vec<f32>,
    objective: f64,
    /// The seed and step whose dropout masks the objective was computed with (the row is the
    /// step's row 0).
    dropout: Option<(u64, u64)>,
}

fn case(name: &str) -> Case {
    let c: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(fixture(name).join("case.json")).unwrap()).unwrap();
    let ints = |k: &str| c[k].as_array().unwrap().iter().map(|v| v.as_i64().unwrap()).collect::<Vec<_>>();
    let row = Row {
        input_ids: ints("input_ids").into_iter().map(|v| v as i32).collect(),
        loss_mask: ints("loss_mask").into_iter().map(|v| v as i8).collect(),
        position_ids: ints("position_ids").into_iter().map(|v| v as i32).collect(),
        segment_ids: ints("segment_ids").into_iter().map(|v| v as i32).collect(),
        ref_logprobs: None,
    };
    let logprobs = c["logprobs"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect();
    let dropout = c.get("dropout").map(|d| {
        assert_eq!(d["slot"], 0);
        (d["seed"].as_u64().unwrap(), d["step"].as_u64().unwrap())
    });
    Case { row, logprobs, objective: c["objective"].as_f64().unwrap(), dropout }
}

fn host(t: Tensor<Flex, 2>) -> Vec<f32> {
    t.into_data().convert::<f32>().to_vec().unwrap()
}

fn worst_gap(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).fold(0.0f32, |m, (x, y)| m.max((x - y).abs()))
}

/// The adapted model's log-probabilities are PEFT's, and so are those of the model with the
/// adapters merged into its weights (what `final/` holds); without the adapters they are not.
#[test]
fn adapted_and_merged_log_probabilities_equal_pefts() {
    let dev = Default::default();
    for name in CASES {
        let (model, c) = (adapted(name), case(name));
        let got = &row_logprobs(&model, &[&c.row], &dev)[0];
        let gap = worst_gap(got, &c.logprobs);
        assert!(gap < 1e-4, "{name}: adapted model {gap} nats from PEFT's");
        let merged = Llama::<Flex>::from_checkpoint(&model.to_checkpoint(), &dev).unwrap();
        assert!(merged.lora.is_none());
        let gap = worst_gap(&row_logprobs(&merged, &[&c.row], &dev)[0], &c.logprobs);
        assert!(gap < 1e-4, "{name}: merged model {gap} nats from PEFT's");
        let base = Llama::<Flex>::load(&base_model(name), &dev).unwrap();
        let gap = worst_gap(&row_logprobs(&base, &[&c.row], &dev)[0], &c.logprobs);
        assert!(gap > 1e-2, "{name}: the adapters change nothing ({gap})");
    }
}

/// `trainer export --adapter` merges an adapter PEFT saved into its base: the folder it writes
/// gives PEFT's log-probabilities of the adapted model. An adapter on another base is refused.
#[test]
fn export_merges_a_peft_adapter_into_its_base() {
    let tmp = tempfile::tempdir().unwrap();
    let dev = Default::default();
    let export = |base: &str, adapter: &std::path::Path, out: &std::path::Path| {
        std::process::Command::new(env!("CARGO_BIN_EXE_trainer"))
            .args(["export", "--model", base_model(base).to_str().unwrap(), "--adapter"])
            .args([adapter, std::path::Path::new("--out"), out])
            .output()
            .unwrap()
    };
    for name in CASES {
        let out = tmp.path().join(name);
        // The weights file names its folder too.
        let adapter = fixture(name).join("adapter").join(model_files::lora::WEIGHTS_FILE);
        let run = export(base_model(name).file_name().unwrap().to_str().unwrap(), &adapter, &out);
        let err = String::from_utf8_lossy(&run.stderr);
        assert!(run.status.success() && !err.contains("make sure it was trained"), "{err}");
        let merged = Llama::<Flex>::load(&out, &dev).unwrap();
        let c = case(name);
        let gap = worst_gap(&row_logprobs(&merged, &[&c.row], &dev)[0], &c.logprobs);
        assert!(gap < 1e-4, "{name}: exported merge {gap} nats from PEFT's");
    }
    // Qwen3's wider heads make q_proj [32, 16], not the adapter's [16, 16].
    let run = export("qwen3-tied", &fixture("llama3-tied").join("adapter"), &tmp.path().join("mismatch"));
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(!run.status.success() && err.contains("does not fit") && err.contains("has shape"), "{err}");
    assert!(err.contains("(the adapter names its base `model/tests/fixtures/transformers5/llama3-tied`)"), "{err}");
    assert!(err.contains("make sure it was trained on this model's weights"), "another base's name is warned about: {err}");
    assert!(!tmp.path().join("mismatch").exists());
    // A mistyped adapter path is named, not replaced by the folder above it.
    let typo = fixture("llama3-tied").join("adapter").join("typo");
    let run = export("llama3-tied", &typo, &tmp.path().join("typo"));
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(!run.status.success() && err.contains("typo: no such file or folder"), "{err}");
}

/// One DFT micro-step gives PEFT's objective and PEFT's gradient of every adapter (with dropout:
/// with rectify's masks, the same in the recomputed forward pass), with and
/// without activation recompute, and no gradient for a base weight.
#[test]
fn dft_gradients_of_the_adapters_equal_pefts() {
    for name in CASES {
        let (model, c) = (adapted(name), case(name));
        // The dropout PEFT trained with, as its config records it (rectify reads no dropout).
        let config: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(fixture(name).join("adapter/adapter_config.json")).unwrap()).unwrap();
        let p = config["lora_dropout"].as_f64().unwrap();
        assert_eq!(p > 0.0, c.dropout.is_some(), "{name}");
        let model = model.with_dropout(c.dropout.map(|(seed, step)| LoraDropout::for_step(p, seed, step, 1)));
        let want: BTreeMap<String, HostTensor> =
            model_files::safetensors::read_safetensors(fixture(name).join("grads.safetensors")).unwrap();
        let n = c.row.targets() as f64;
        // Recompute of no block, of the first (the second keeps its graph), of both.
        for recompute in [0, 1, 2] {
            let step = micro_step(&model, &[&c.row], LossKind::Dft, n, recompute, &Default::default()).unwrap();
            let rel = (step.objective - c.objective).abs() / c.objective;
            assert!(rel < 1e-5, "{name} recompute {recompute}: objective {} vs PEFT's {} ({rel:e})", step.objective, c.objective);
            let mut names: Vec<&String> = step.grads.iter().map(|(n, _)| n).collect();
            names.sort();
            assert_eq!(names, want.keys().collect::<Vec<_>>(), "{name}: one gradient per adapter, none for the base weights");
            for (param, g) in step.grads {
                let (g, w) = (host(g), &want[&param].data);
                let scale = w.iter().fold(0.0f32, |m, x| m.max(x.abs()));
                assert!(scale > 0.0, "{name}: PEFT's gradient of {param} is zero");
                let gap = worst_gap(&g, w);
                assert!(gap <= 1e-4 * scale, "{name} recompute {recompute}: {param} differs by {gap} (largest {scale})");
            }
        }
    }
}

/// A rank past a projection's smaller side is refused before anything is allocated, naming it.
#[test]
fn a_rank_larger_than_a_projection_is_refused() {
    let base = Llama::<B>::load(&base_model(CASES[0]), &Default::default()).unwrap();
    let lora = schemas::train::Lora::plain(9, 9.0, vec![schemas::train::LoraTarget::KProj]);
    let err = base.with_lora(&lora, &BTreeMap::new()).unwrap_err().to_string();
    // The fixture's k_proj is [8, 16]: one key head of 8 over a hidden size of 16.
    assert!(err.contains("`lora.rank` 9 is larger than k_proj's smaller side (8, of [8, 16])"), "{err}");
}

/// An optimizer step moves the adapters and leaves every base weight as it was.
#[test]
fn an_update_changes_only_the_adapters() {
    let name = CASES[1];
    let (model, c) = (adapted(name), case(name));
    let dev = Default::default();
    let before: BTreeMap<String, Vec<f32>> = model.named_params().into_iter().map(|(n, p)| (n, host(p.clone().inner()))).collect();
    let step = micro_step(&model, &[&c.row], LossKind::Sft, c.row.targets() as f64, 0, &dev).unwrap();
    let mut opt = AdamW::new(AdamWConfig { beta1: 0.9, beta2: 0.95, eps: 1e-8, weight_decay: 0.01 });
    let after = apply_update(model, step.grads, &mut opt, 1e-3, 1, &dev);
    let mut moved = 0;
    for (param, p) in after.named_params() {
        let same = host(p.clone().inner()) == before[&param];
        assert_eq!(same, !model_files::params::is_adapter(&param), "{param}");
        assert_eq!(p.is_require_grad(), model_files::params::is_adapter(&param), "{param}");
        moved += usize::from(!same);
    }
    assert_eq!(moved, 28);
}
