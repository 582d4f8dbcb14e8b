//! Batched KV-cache generation against independent truth: the reference greedy ids of a numpy
//! implementation of the same GGUF, and each prompt decoded alone without a cache.

use burn::backend::Flex;
use model::generate::{generate_batch, Finish, GreedyOn, Request};
use model::sampling::Sampling;
use model::{generate::greedy, Llama};
use std::path::Path;

fn smollm() -> Llama<Flex> {
    Llama::load(&model_files::test_model_path(), &Default::default()).unwrap()
}

fn reference_cases() -> Vec<(Vec<u32>, Vec<u32>)> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../model-files/tests/fixtures/reference_greedy.json");
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let ids = |v: &serde_json::Value| v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect::<Vec<u32>>();
    v["cases"].as_array().unwrap().iter().map(|c| (ids(&c["prompt_ids"]), ids(&c["greedy_ids"]))).collect()
}

const IM_END: u32 = 2;

#[test]
fn batched_greedy_equals_each_prompt_alone_and_the_reference() {
    let model = smollm();
    let dev = Default::default();
    let cases = reference_cases();
    // A third, much shorter prompt makes the left padding real for the other two.
    let short: Vec<u32> = cases[0].0[..12].to_vec();
    let prompts: Vec<Vec<u32>> = vec![cases[0].0.clone(), short.clone(), cases[1].0.clone()];
    assert_ne!(prompts[0].len(), prompts[2].len());
    let max_new = cases.iter().map(|c| c.1.len()).max().unwrap();
    let params = Sampling::greedy(max_new);
    let requests: Vec<Request> = prompts.iter().enumerate().map(|(i, p)| Request { prompt: p, stream: i as u64 }).collect();
    // Chosen on the host and on the device (the GPU's way), the same ids.
    let batch = generate_batch(&model, &requests, &params, &[IM_END], 0, GreedyOn::Host, &dev);
    assert_eq!(generate_batch(&model, &requests, &params, &[IM_END], 0, GreedyOn::Device, &dev), batch);

    // Independent truth: the numpy reference's greedy ids (they end with <|im_end|>).
    assert_eq!(batch[0].ids, cases[0].1);
    assert_eq!(batch[2].ids, cases[1].1);
    assert_eq!(batch[0].finish, Finish::Stop);
    for (i, p) in prompts.iter().enumerate() {
        let alone = generate_batch(&model, &[Request { prompt: p, stream: 0 }], &params, &[IM_END], 0, GreedyOn::Host, &dev);
        assert_eq!(alone[0].ids, batch[i].ids, "prompt {i}: batch vs alone");
        let uncached = greedy(&model, p, max_new, &[IM_END], &dev);
        assert_eq!(uncached, batch[i].ids, "prompt {i}: cache vs no cache");
    }
    // The budget ends a sequence that has not stopped.
    let cut = generate_batch(&model, &[Request { prompt: &short, stream: 0 }], &Sampling::greedy(3), &[IM_END], 0, GreedyOn::Host, &dev);
    assert_eq!(cut[0].ids, batch[1].ids[..3]);
    assert_eq!(cut[0].finish, Finish::Length);
}

#[test]
fn sampling_with_a_seed_repeats_and_another_seed_differs() {
    let model = smollm();
    let dev = Default::default();
    let cases = reference_cases();
    let p = &cases[0].0;
    let params = Sampling { temperature: 1.0, top_p: 0.95, top_k: 50, max_new_tokens: 24, seed: 11 };
    let requests: Vec<Request> = (0..4).map(|s| Request { prompt: p, stream: s }).collect();
    let a = generate_batch(&model, &requests, &params, &[IM_END], 0, GreedyOn::Host, &dev);
    let b = generate_batch(&model, &requests, &params, &[IM_END], 0, GreedyOn::Host, &dev);
    assert_eq!(a, b, "same seed, same samples");
    // Four streams of one prompt at T=1 are not all the same answer.
    assert!(a.iter().any(|c| c.ids != a[0].ids), "{a:?}");
    let c = generate_batch(&model, &requests, &Sampling { seed: 12, ..params }, &[IM_END], 0, GreedyOn::Host, &dev);
    assert_ne!(a, c, "another seed, other samples");
}

/// On the transformers fixtures (a llama3-scaled Llama, a biased untied Qwen2, a Qwen3 with q/k
/// norms): greedy decoding through Burn's KV cache, in a left-padded batch, equals decoding
/// without a cache and the host decoder (whose log-probabilities `tests/host.rs` checks against
/// transformers), for each architecture's own attention path.
#[test]
fn cached_greedy_equals_uncached_and_the_host_decoder_on_every_architecture() {
    let dev = Default::default();
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/transformers5");
    for name in ["llama3-tied", "qwen2-untied", "qwen3-tied"] {
        let path = fixtures.join(name);
        let model = Llama::<Flex>::load(&path, &dev).unwrap();
        let host = model::HostDecoder::load(&path).unwrap();
        let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path.join("logprobs.json")).unwrap()).unwrap();
        let ids: Vec<u32> = v["cases"][0]["input_ids"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect();
        let prompts: Vec<Vec<u32>> = vec![ids[..40].to_vec(), ids[100..107].to_vec()];
        let params = Sampling::greedy(12);
        let requests: Vec<Request> = prompts.iter().enumerate().map(|(i, p)| Request { prompt: p, stream: i as u64 }).collect();
        let batch = generate_batch(&model, &requests, &params, &[], 0, GreedyOn::Host, &dev);
        let none = |_: usize, _: usize| {};
        let on_host = model::generate::generate_continuous(&host, &requests, &params, &[], 2, &none);
        for (i, p) in prompts.iter().enumerate() {
            assert_eq!(batch[i].ids.len(), 12, "{name}, prompt {i}: no stop ids, so the whole budget");
            assert_eq!(greedy(&model, p, 12, &[], &dev), batch[i].ids, "{name}, prompt {i}: cache vs no cache");
            assert_eq!(on_host[i].ids, batch[i].ids, "{name}, prompt {i}: Burn vs the host decoder");
        }
    }
}
