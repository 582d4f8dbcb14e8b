//! rectify's forward against transformers 5 itself: tiny random checkpoints that transformers
//! saved with `save_pretrained` (f16), and transformers' own float32 log-probabilities of a
//! 300-token sequence and of a packed row whose positions restart per example
//! (`scripts/transformers_fixtures.py` made them): a Llama with a tied head and llama3 RoPE
//! scaling, a Qwen2 with q/k/v biases and an untied head, and a Qwen3 (transformers 5.25) with
//! q/k norms and heads wider than hidden_size / heads. The same checkpoints
//! converted to GGUF by llama.cpp's own `convert_hf_to_gguf.py` (`scripts/llama_cpp_gguf_fixtures.py`)
//! must match transformers too: Q/K rows permuted, llama3 scaling stored as `rope_freqs.weight`,
//! GGUF tensor names of every architecture.

use burn::backend::Flex;
use model::logprobs::row_logprobs;
use model::Llama;
use schemas::snapshot::Row;
use serde_json::Value;
use std::path::PathBuf;

/// Per-token agreement required with transformers, in nats.
const TOLERANCE: f32 = 1e-4;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/transformers5").join(name)
}

fn cases(name: &str) -> Vec<(String, Row, Vec<f32>)> {
    let v: Value = serde_json::from_str(&std::fs::read_to_string(fixture(name).join("logprobs.json")).unwrap()).unwrap();
    let ints = |c: &Value, k: &str| -> Vec<i32> { serde_json::from_value(c[k].clone()).unwrap() };
    v["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            let input_ids = ints(c, "input_ids");
            let row = Row {
                loss_mask: vec![0; input_ids.len()],
                position_ids: ints(c, "position_ids"),
                segment_ids: ints(c, "segment_ids"),
                ref_logprobs: None,
                input_ids,
            };
            (c["name"].as_str().unwrap().to_string(), row, serde_json::from_value(c["logprobs"].clone()).unwrap())
        })
        .collect()
}

/// The largest difference from transformers over every predicted token of every case.
fn max_diff(model: &Llama<Flex>, name: &str) -> f32 {
    let mut worst = 0.0f32;
    for (case, row, want) in cases(name) {
        let got = row_logprobs(model, &[&row], &Default::default()).pop().unwrap();
        let predicted: Vec<usize> = (0..got.len()).filter(|&i| row.is_predicted(i)).collect();
        assert!(predicted.len() > 200, "{name}, {case}: too few tokens to compare");
        for i in predicted {
            // `f32::max` would pass over a NaN: each difference is checked to be a number.
            let d = (got[i] - want[i]).abs();
            assert!(d.is_finite(), "{name}, {case}: position {i} gives {} where transformers gives {}", got[i], want[i]);
            worst = worst.max(d);
        }
    }
    eprintln!("{name}: largest difference from transformers {worst:.2e} nats");
    worst
}

fn load(name: &str) -> Llama<Flex> {
    Llama::load(&fixture(name), &Default::default()).unwrap()
}

fn load_gguf(name: &str) -> Llama<Flex> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/llama-cpp-gguf").join(format!("{name}.gguf"));
    Llama::load(&path, &Default::default()).unwrap()
}

#[test]
fn llama_cpp_conversions_match_transformers() {
    for (name, arch) in [("llama3-tied", "llama"), ("qwen2-untied", "qwen2"), ("qwen3-tied", "qwen3")] {
        let m = load_gguf(name);
        assert_eq!(m.config.model_type.as_str(), arch);
        let d = max_diff(&m, name);
        assert!(d <= TOLERANCE, "{name}.gguf: log-probabilities differ from transformers by up to {d}");
        if let model_files::rope::RopeScaling::Llama3 { factor, original_max_position_embeddings: old, .. } =
            m.config.rope_scaling().unwrap()
        {
            // Read back from rope_freqs.weight: transformers requires a whole number here.
            assert_eq!((factor, old.fract()), (4.0, 0.0), "{:?}", m.config.rope_scaling());
            // ... and an export writes it as an integer, which transformers reads without a warning.
            let written: serde_json::Value = serde_json::from_str(&m.config.to_json()).unwrap();
            assert!(written["rope_scaling"]["original_max_position_embeddings"].is_u64(), "{written}");
            eprintln!("{name}.gguf: {:?}", m.config.rope_scaling().unwrap());
        } else {
            assert!(name.starts_with("qwen"), "{name}.gguf: llama3 scaling not read back from rope_freqs.weight");
        }
    }
}

#[test]
fn llama_with_llama3_rope_scaling_matches_transformers() {
    let d = max_diff(&load("llama3-tied"), "llama3-tied");
    assert!(d <= TOLERANCE, "log-probabilities differ from transformers by up to {d}");
    // The scaling matters here: the same weights with plain RoPE are far off, so the check
    // above would see a scaling read wrongly or ignored.
    let mut ckpt = model_files::checkpoint::load(fixture("llama3-tied")).unwrap();
    ckpt.config.extra.insert("rope_parameters".into(), serde_json::json!({"rope_type": "default", "rope_theta": 10000.0}));
    let plain = Llama::<Flex>::from_checkpoint(&ckpt, &Default::default()).unwrap();
    let off = max_diff(&plain, "llama3-tied");
    assert!(off > 100.0 * TOLERANCE, "plain RoPE differs by only {off}: the fixture does not exercise the scaling");
}

#[test]
fn qwen2_with_biases_and_untied_head_matches_transformers() {
    let m = load("qwen2-untied");
    assert!(m.params.lm_head.is_some() && m.config.qkv_bias() && m.config.rope_theta == 1e6);
    let d = max_diff(&m, "qwen2-untied");
    assert!(d <= TOLERANCE, "log-probabilities differ from transformers by up to {d}");
}

#[test]
fn qwen3_with_qk_norms_and_wide_heads_matches_transformers() {
    let m = load("qwen3-tied");
    assert!(m.config.qk_norm() && !m.config.qkv_bias() && m.params.lm_head.is_none());
    assert_eq!((m.config.head_dim(), m.config.hidden_size / m.config.num_attention_heads), (16, 8));
    let d = max_diff(&m, "qwen3-tied");
    assert!(d <= TOLERANCE, "log-probabilities differ from transformers by up to {d}");
    // The norms matter here: the same weights without them are far off, so the check above
    // would see them left out.
    let mut ckpt = model_files::checkpoint::load(fixture("qwen3-tied")).unwrap();
    ckpt.tensors.retain(|name, _| !name.ends_with("q_norm.weight") && !name.ends_with("k_norm.weight"));
    ckpt.config.model_type = model_files::config::ModelType::Llama;
    let plain = Llama::<Flex>::from_checkpoint(&ckpt, &Default::default()).unwrap();
    let off = max_diff(&plain, "qwen3-tied");
    assert!(off > 100.0 * TOLERANCE, "without q/k norms it differs by only {off}: the fixture does not exercise them");
}

#[test]
fn the_context_bounds_the_longest_packed_example_not_the_row() {
    // 512 positions; a 2048-token row of short examples is fine, a 513-token example is not.
    let m = load("llama3-tied");
    assert_eq!(m.config.max_position_embeddings, 512);
    let packed = |lens: &[usize]| Row {
        input_ids: vec![1; 2048],
        loss_mask: vec![0; 2048],
        position_ids: lens.iter().flat_map(|&n| 0..n as i32).chain(std::iter::repeat(0)).take(2048).collect(),
        segment_ids: vec![1; 2048],
        ref_logprobs: None,
    };
    let short = packed(&[500, 512, 512, 300]);
    assert_eq!(short.longest_example(), 512);
    m.check_context(short.longest_example()).unwrap();
    let long = packed(&[513, 100]);
    let e = m.check_context(long.longest_example()).unwrap_err().to_string();
    assert!(e.contains("an example of 513 tokens") && e.contains("context of 512"), "{e}");
}
