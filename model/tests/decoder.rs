//! The model against independent truth: greedy ids and first-step logits of a numpy reference
//! implementation of the same GGUF, and the block-diagonal attention of packed rows.

use burn::backend::Flex;
use burn::tensor::{Int, Tensor, TensorData};
use model::decoder::{single_sequence, Llama};
use model::generate::greedy;
use schemas::snapshot::segment_runs;
use std::path::{Path, PathBuf};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn model_path() -> PathBuf {
    model_files::test_model_path()
}

fn smollm() -> Llama<Flex> {
    Llama::load(&model_path(), &Default::default()).unwrap()
}

fn ids(v: &serde_json::Value) -> Vec<u32> {
    v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect()
}

#[test]
fn greedy_decoding_and_first_step_logits_match_the_reference() {
    let reference: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(repo().join("model-files/tests/fixtures/reference_greedy.json")).unwrap()).unwrap();
    let model = smollm();
    let dev = Default::default();
    for case in reference["cases"].as_array().unwrap() {
        let prompt = ids(&case["prompt_ids"]);
        let want = ids(&case["greedy_ids"]);
        let (x, pos) = single_sequence::<Flex>(&prompt, &dev);
        let logits = model.forward(x, pos, &[vec![(0, prompt.len())]]);
        let v = logits.dims()[2];
        let last: Vec<f32> = logits.narrow(1, prompt.len() - 1, 1).reshape([v]).into_data().to_vec().unwrap();
        for top in case["first_step_top5"].as_array().unwrap() {
            let (id, want_logit) = (top[0].as_u64().unwrap() as usize, top[2].as_f64().unwrap());
            let got = last[id] as f64;
            assert!((got - want_logit).abs() < 1e-2, "token {id}: logit {got} vs reference {want_logit}");
        }
        let got = greedy(&model, &prompt, want.len(), &[2], &dev);
        assert_eq!(got, want, "greedy ids for {:?}", case["greedy_text"]);
    }
}

/// Logits of a packed row with two examples; `b` replaces the second example's tokens.
fn packed_logits(model: &Llama<Flex>, a: &[u32], b: &[u32]) -> (Vec<f32>, usize) {
    let dev = Default::default();
    let toks: Vec<i64> = a.iter().chain(b).map(|&t| t as i64).collect();
    let pos: Vec<i64> = (0..a.len()).chain(0..b.len()).map(|p| p as i64).collect();
    let seg: Vec<i32> = std::iter::repeat_n(1, a.len()).chain(std::iter::repeat_n(2, b.len())).collect();
    let n = toks.len();
    let x = Tensor::<Flex, 2, Int>::from_data(TensorData::new(toks, [1, n]), &dev);
    let p = Tensor::<Flex, 2, Int>::from_data(TensorData::new(pos, [1, n]), &dev);
    let logits = model.forward(x, p, &[segment_runs(&seg)]);
    let v = logits.dims()[2];
    (logits.into_data().to_vec().unwrap(), v)
}

#[test]
fn packed_examples_do_not_see_each_other() {
    let model = smollm();
    let a = [1u32, 4093, 198, 1780, 314, 216, 33, 34, 1232, 216, 39, 47, 2];
    let b1 = [1u32, 4093, 198, 504, 3575, 282, 4649, 2];
    let b2 = [1u32, 4093, 198, 1348, 314, 253, 8170, 2];
    let (l1, v) = packed_logits(&model, &a, &b1);
    let (l2, _) = packed_logits(&model, &a, &b2);
    // The maxima below pass over a NaN (`f32::max`): every logit is checked to be a number.
    assert!(l1.iter().chain(&l2).all(|x| x.is_finite()), "a logit is not a number");
    // The first example's logits do not move when the second example changes...
    let first = a.len() * v;
    let max_diff = l1[..first].iter().zip(&l2[..first]).map(|(x, y)| (x - y).abs()).fold(0.0f32, f32::max);
    assert!(max_diff < 1e-4, "example 1 changed by {max_diff} when example 2 changed");
    // ...and do change within the second, so the test can fail.
    let second = l1[first..].iter().zip(&l2[first..]).map(|(x, y)| (x - y).abs()).fold(0.0f32, f32::max);
    assert!(second > 1e-1, "example 2 did not change: {second}");
    // The second example, packed behind the first, gives the same logits as run alone.
    let dev = Default::default();
    let (x, p) = single_sequence::<Flex>(&b1, &dev);
    let alone: Vec<f32> = model.forward(x, p, &[vec![(0, b1.len())]]).into_data().to_vec().unwrap();
    assert!(alone.iter().all(|x| x.is_finite()), "a logit of the example alone is not a number");
    let diff = alone.iter().zip(&l1[first..]).map(|(x, y)| (x - y).abs()).fold(0.0f32, f32::max);
    assert!(diff < 1e-3, "packed vs alone differ by {diff}");
}
