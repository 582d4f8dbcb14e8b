//! The host decoder (`model::host`, CPU generation) against independent truth: transformers'
//! log-probabilities of the Llama (llama3 RoPE, tied head), Qwen2 (biases, untied head) and Qwen3
//! (q/k norms, wide heads) fixtures, the numpy reference's greedy ids of the SmolLM2 GGUF, and itself decoding each
//! prompt alone.

use model::generate::{generate_continuous, Finish, Request};
use model::sampling::Sampling;
use model::HostDecoder;
use schemas::snapshot::segment_runs;
use serde_json::Value;
use std::path::{Path, PathBuf};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// Log-probability of every predicted token of a packed row, one token per step (so it also
/// exercises the cache), each segment its own sequence; `None` where nothing is predicted.
fn logprobs(m: &HostDecoder, ids: &[u32], segments: &[i32]) -> Vec<Option<f32>> {
    let mut out = vec![None; ids.len()];
    for (start, len) in segment_runs(segments) {
        if segments[start] == 0 {
            continue;
        }
        let mut cache = m.new_cache(len);
        for i in start..start + len - 1 {
            let logits = m.step(&mut [&mut cache], &[&ids[i..i + 1]]);
            let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let lse = max + logits.iter().map(|l| (l - max).exp()).sum::<f32>().ln();
            out[i + 1] = Some(logits[ids[i + 1] as usize] - lse);
        }
    }
    out
}

/// Largest difference from transformers over every predicted token of the fixture's cases.
fn max_diff_from_transformers(m: &HostDecoder, name: &str) -> f32 {
    let v: Value =
        serde_json::from_str(&std::fs::read_to_string(fixtures().join("transformers5").join(name).join("logprobs.json")).unwrap()).unwrap();
    let mut worst = 0f32;
    let mut compared = 0;
    for c in v["cases"].as_array().unwrap() {
        let ints = |k: &str| -> Vec<i32> { serde_json::from_value(c[k].clone()).unwrap() };
        let ids: Vec<u32> = ints("input_ids").iter().map(|&t| t as u32).collect();
        let want: Vec<f32> = serde_json::from_value(c["logprobs"].clone()).unwrap();
        let segments = ints("segment_ids");
        let got = logprobs(m, &ids, &segments);
        let predicted = (1..ids.len()).filter(|&i| segments[i] != 0 && segments[i] == segments[i - 1]).count();
        let mut here = 0;
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            if let Some(g) = g {
                // `f32::max` would pass over a NaN: each difference is checked to be a number.
                assert!((g - w).is_finite(), "{name}: position {i} gives {g} where transformers gives {w}");
                worst = worst.max((g - w).abs());
                here += 1;
            }
        }
        assert_eq!(here, predicted, "{name}: every predicted position compared");
        compared += here;
    }
    assert!(compared > 200, "{name}: too few tokens compared");
    eprintln!("{name}: host decoder differs from transformers by up to {worst:.2e} nats over {compared} tokens");
    worst
}

/// The bound the Burn decoder meets on the same fixtures (`tests/transformers5.rs`).
const TOLERANCE: f32 = 1e-4;

#[test]
fn host_decoder_matches_transformers() {
    for name in ["llama3-tied", "qwen2-untied", "qwen3-tied"] {
        let m = HostDecoder::load(&fixtures().join("transformers5").join(name)).unwrap();
        let d = max_diff_from_transformers(&m, name);
        assert!(d <= TOLERANCE, "{name}: log-probabilities differ from transformers by up to {d}");
    }
}

fn reference_cases() -> Vec<(Vec<u32>, Vec<u32>)> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../model-files/tests/fixtures/reference_greedy.json");
    let v: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let ids = |v: &Value| v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect::<Vec<u32>>();
    v["cases"].as_array().unwrap().iter().map(|c| (ids(&c["prompt_ids"]), ids(&c["greedy_ids"]))).collect()
}

const IM_END: u32 = 2;

#[test]
fn continuous_batching_equals_each_prompt_alone_and_the_reference() {
    let model = HostDecoder::load(&model_files::test_model_path()).unwrap();
    let cases = reference_cases();
    let short: Vec<u32> = cases[0].0[..12].to_vec();
    let prompts: Vec<Vec<u32>> = vec![cases[0].0.clone(), short.clone(), cases[1].0.clone(), short.clone()];
    let max_new = cases.iter().map(|c| c.1.len()).max().unwrap();
    let greedy = Sampling::greedy(max_new);
    let requests: Vec<Request> = prompts.iter().enumerate().map(|(i, p)| Request { prompt: p, stream: i as u64 }).collect();
    let none = |_: usize, _: usize| {};
    // A batch of 2 for 4 requests: the later two join as the first ones finish.
    let batch = generate_continuous(&model, &requests, &greedy, &[IM_END], 2, &none);
    assert_eq!(batch[0].ids, cases[0].1, "reference greedy ids");
    assert_eq!(batch[2].ids, cases[1].1, "reference greedy ids");
    assert_eq!(batch[0].finish, Finish::Stop);
    for (i, r) in requests.iter().enumerate() {
        let alone = generate_continuous(&model, &[*r], &greedy, &[IM_END], 1, &none);
        assert_eq!(alone[0], batch[i], "request {i}: batch vs alone");
    }
    let cut = generate_continuous(&model, &[requests[1]], &Sampling::greedy(3), &[IM_END], 1, &none);
    assert_eq!((cut[0].ids.as_slice(), cut[0].finish), (&batch[1].ids[..3], Finish::Length));

    // Sampling: each request's stream alone decides its draws, whatever shares its batch.
    let sampled = Sampling { temperature: 1.0, top_p: 0.95, top_k: 50, max_new_tokens: 24, seed: 11 };
    let many: Vec<Request> = (0..6).map(|s| Request { prompt: &prompts[s % 2], stream: s as u64 }).collect();
    let a = generate_continuous(&model, &many, &sampled, &[IM_END], 6, &none);
    let b = generate_continuous(&model, &many, &sampled, &[IM_END], 2, &none);
    assert_eq!(a, b, "same seed, same samples, any batch size");
    assert!(a.iter().step_by(2).any(|c| c.ids != a[0].ids), "streams of one prompt at T=1 differ: {a:?}");
    let c = generate_continuous(&model, &many, &Sampling { seed: 12, ..sampled }, &[IM_END], 6, &none);
    assert_ne!(a, c, "another seed, other samples");
}

/// The GGUF's Q4_1 and Q8_0 matrices kept in their blocks give the same logits, bit for bit, as
/// the f32 dequantisation, from under a quarter of the bytes.
#[test]
fn gguf_blocks_give_the_bits_of_the_f32_model() {
    let path = model_files::test_model_path();
    let q = HostDecoder::load(&path).unwrap();
    let f = HostDecoder::load_f32(&path).unwrap();
    eprintln!("{}: {} ({} MB) vs f32 ({} MB)", path.display(), q.storage(), q.weight_bytes() / 1_000_000, f.weight_bytes() / 1_000_000);
    assert!(q.storage().contains("q4_1") && 4 * q.weight_bytes() < f.weight_bytes(), "{}", q.storage());
    let prompt = reference_cases()[0].0.clone();
    let (mut a, mut b) = (q.new_cache(64), f.new_cache(64));
    assert_eq!(q.step(&mut [&mut a], &[&prompt]), f.step(&mut [&mut b], &[&prompt]));
    assert_eq!(q.step(&mut [&mut a], &[&[42]]), f.step(&mut [&mut b], &[&[42]]));
}
