//! Qwen2 / Qwen2.5 tokenizers rebuilt from GGUF metadata give the ids Hugging Face's Qwen2
//! tokenizer gives. The file is the real thing: the vocabulary GGUF llama.cpp's converter wrote
//! for Qwen2, with llama.cpp's 46 test vectors (tests/fixtures/qwen2-tokenizer/README.md).

use flate2::read::GzDecoder;
use model_files::gguf::{Gguf, Value};
use model_files::gguf_writer::GgufWriter;
use model_files::tokenizer::ChatTokenizer;
use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

/// llama.cpp's token types.
const CONTROL: i32 = 3;
const USER_DEFINED: i32 = 4;
const UNUSED: i32 = 5;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/qwen2-tokenizer").join(name)
}

/// The vocabulary GGUF, unpacked into `dir`.
fn qwen2_vocab(dir: &Path) -> PathBuf {
    let mut bytes = Vec::new();
    GzDecoder::new(std::fs::File::open(fixture("ggml-vocab-qwen2.gguf.gz")).unwrap()).read_to_end(&mut bytes).unwrap();
    assert_eq!(bytes.len(), 5_928_681, "ggml-vocab-qwen2.gguf unpacked");
    let path = dir.join("ggml-vocab-qwen2.gguf");
    std::fs::write(&path, bytes).unwrap();
    path
}

/// llama.cpp's test vectors: texts between `__ggml_vocab_test__` lines, ids one line each.
fn llama_cpp_vectors() -> Vec<(String, Vec<u32>)> {
    let inp = std::fs::read_to_string(fixture("ggml-vocab-qwen2.gguf.inp")).unwrap();
    let out = std::fs::read_to_string(fixture("ggml-vocab-qwen2.gguf.out")).unwrap();
    let texts: Vec<&str> = inp.strip_suffix("\n__ggml_vocab_test__\n").unwrap().split("\n__ggml_vocab_test__\n").collect();
    let ids: Vec<Vec<u32>> = out.lines().map(|l| l.split_whitespace().map(|t| t.parse().unwrap()).collect()).collect();
    assert_eq!(texts.len(), ids.len());
    texts.into_iter().map(String::from).zip(ids).collect()
}

#[test]
fn qwen2_gguf_vocabulary_gives_llama_cpp_test_vectors() {
    let dir = tempfile::tempdir().unwrap();
    let t = ChatTokenizer::from_gguf(&qwen2_vocab(dir.path()), None, None).unwrap();
    assert_eq!((t.vocab_size(), t.eos_id(), t.pad_id()), (151_936, 151_643, 151_643));
    let vectors = llama_cpp_vectors();
    assert_eq!(vectors.len(), 46);
    for (k, (text, want)) in vectors.iter().enumerate() {
        let got = t.tokenizer().encode(text.as_str(), false).unwrap().get_ids().to_vec();
        assert_eq!(&got, want, "vector {k}: {text:?}");
        assert_eq!(&t.decode(want), text, "decoding vector {k}");
    }
    // And the cases verified against the Qwen vocabulary (some from another llama.cpp version).
    #[derive(serde::Deserialize)]
    struct Case {
        text: String,
        ids: Vec<u32>,
    }
    let cases = std::fs::read_to_string(fixture("qwen2_tokenizer_cases.jsonl")).unwrap();
    for line in cases.lines() {
        let c: Case = serde_json::from_str(line).unwrap();
        assert_eq!(t.tokenizer().encode(c.text.as_str(), false).unwrap().get_ids(), &c.ids[..], "{:?}", c.text);
    }
}

/// The same vocabulary laid out as a Qwen2.5 GGUF is: its 22 added tokens (CONTROL when special in
/// Qwen2.5's tokenizer_config, USER_DEFINED when not), padding rows UNUSED, `<|im_end|>` as eos.
#[test]
fn qwen25_added_tokens_stay_whole_and_the_loss_covers_the_reply() {
    let dir = tempfile::tempdir().unwrap();
    let g = Gguf::open(qwen2_vocab(dir.path())).unwrap();
    let mut tokens = g.get_str_array("tokenizer.ggml.tokens").unwrap().iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let mut types = g.get_i32_array("tokenizer.ggml.token_type").unwrap();
    let special: BTreeMap<String, String> =
        serde_json::from_str(&std::fs::read_to_string(fixture("qwen2_special_tokens.json")).unwrap()).unwrap();
    for (id, s) in &special {
        let id: usize = id.parse().unwrap();
        tokens[id] = s.clone();
        // Qwen2.5 marks the tool-call and FIM tokens as not special.
        types[id] = if id < 151_657 { CONTROL } else { USER_DEFINED };
    }
    types[151_665..].iter_mut().for_each(|t| *t = UNUSED);
    let template = "{% for m in messages %}{{ '<|im_start|>' + m.role + '\n' + m.content + '<|im_end|>' + '\n' }}{% endfor %}\
                    {% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";
    let mut w = GgufWriter::new();
    for (k, v) in &g.metadata {
        let v = match k.as_str() {
            "tokenizer.ggml.tokens" => Value::strings(&tokens),
            "tokenizer.ggml.token_type" => Value::i32s(types.iter().copied()),
            "tokenizer.ggml.eos_token_id" => Value::U32(151_645),
            "tokenizer.chat_template" => Value::str(template),
            _ => v.clone(),
        };
        w.kv(k, v);
    }
    let path = dir.path().join("qwen25-vocab.gguf");
    w.write(&path).unwrap();
    let t = ChatTokenizer::from_gguf(&path, None, None).unwrap();
    assert_eq!((t.eos_id(), t.pad_id()), (151_645, 151_643));
    // Generation stops on the special end tokens only, as transformers does: `</s>` is an
    // ordinary entry of this vocabulary (id 128247), not an end token.
    assert_eq!((t.end_token_ids(), t.token_to_id("</s>")), (vec![151_643, 151_645], Some(128_247)));
    let ids = |s: &str| t.tokenizer().encode(s, false).unwrap().get_ids().to_vec();
    assert_eq!(ids("<|im_start|>Hello world<|im_end|>"), vec![151_644, 9707, 1879, 151_645]);
    assert_eq!(ids("<tool_call>"), vec![151_657]);
    assert!(!ids("[PAD151700]").contains(&151_700), "unused rows are not tokens of the text");

    let enc = t.encode_chat("Hello world", "Hello, world!").unwrap();
    let (prompt_text, prompt_ids) = t.encode_prompt("Hello world").unwrap();
    assert_eq!(prompt_text, "<|im_start|>user\nHello world<|im_end|>\n<|im_start|>assistant\n");
    assert_eq!(&enc.ids[..prompt_ids.len()], &prompt_ids[..]);
    assert_eq!(&enc.ids[prompt_ids.len()..prompt_ids.len() + 5], &[9707, 11, 1879, 0, 151_645]);
    assert!(enc.loss_mask[..prompt_ids.len()].iter().all(|&m| m == 0));
    assert!(enc.loss_mask[prompt_ids.len()..prompt_ids.len() + 5].iter().all(|&m| m == 1));
}

/// A snapshot's ids mean the same tokens to a model only with the same vocabulary: a Qwen2 model
/// reads SmolLM2's ids as other text (its embedding table is large enough to take them), and the
/// check says so for a GGUF and for a Hugging Face folder alike.
#[test]
fn a_snapshot_tokenized_for_another_vocabulary_is_refused() {
    use model_files::vocab::ModelTokens;
    let dir = tempfile::tempdir().unwrap();
    let qwen_gguf = qwen2_vocab(dir.path());
    let qwen = ChatTokenizer::from_gguf(&qwen_gguf, None, None).unwrap();
    let smol = ChatTokenizer::from_gguf(&model_files::test_model_path(), None, None).unwrap();
    let snapshot = dir.path().join("snapshot");
    std::fs::create_dir(&snapshot).unwrap();

    // What a snapshot would hold: the ids of a rendered prompt.
    let used = |t: &ChatTokenizer| t.encode_prompt("How many is 2 + 2?").unwrap().1;
    let from_gguf = ModelTokens::of(&qwen_gguf).unwrap().expect("a GGUF carries its tokens");
    from_gguf.check(qwen.tokenizer(), used(&qwen), &snapshot).unwrap();
    let e = from_gguf.check(smol.tokenizer(), used(&smol), &snapshot).unwrap_err().to_string();
    assert!(e.contains("is not the one snapshot") && e.contains("stand for other tokens"), "{e}");
    assert!(e.contains(&format!("--tokenizer {}", qwen_gguf.display())), "{e}");
    // SmolLM2's id 1 opens a turn; Qwen2's id 1 is a quote.
    assert!(e.contains(r#"of them used by the snapshot (id 1 is "<|im_start|>" in the snapshot, "\"" in the model"#), "{e}");

    // A Hugging Face folder's tokenizer.json, and a lone .safetensors file beside it.
    let hf = dir.path().join("hf");
    std::fs::create_dir(&hf).unwrap();
    assert!(ModelTokens::of(&hf).unwrap().is_none(), "no tokenizer.json: nothing to check with");
    std::fs::write(hf.join("tokenizer.json"), qwen.tokenizer_json()).unwrap();
    for model in [hf.clone(), hf.join("model.safetensors")] {
        let from_json = ModelTokens::of(&model).unwrap().expect("tokenizer.json");
        from_json.check(qwen.tokenizer(), used(&qwen), &snapshot).unwrap();
        let e = from_json.check(smol.tokenizer(), used(&smol), &snapshot).unwrap_err().to_string();
        assert!(e.contains(&format!("--tokenizer {}", hf.display())), "{e}");
    }
    // The GGUF and the tokenizer rebuilt from it agree, and so do SmolLM2's, on every id.
    let smol_tokens = ModelTokens::of(&model_files::test_model_path()).unwrap().unwrap();
    smol_tokens.check(smol.tokenizer(), 0..smol.vocab_size() as u32, &snapshot).unwrap();

    // Ids that differ but that the snapshot does not use only warn (Llama 3.1 renamed reserved
    // tokens of Llama 3.0); among the ids it uses, one is enough to refuse.
    let mut json: serde_json::Value = serde_json::from_str(&smol.tokenizer_json()).unwrap();
    let vocab = json["model"]["vocab"].as_object_mut().unwrap();
    let (x, y) = (vocab["Ġthe"].as_u64().unwrap() as u32, vocab["Ġfor"].as_u64().unwrap() as u32);
    vocab.insert("Ġthe".into(), y.into());
    vocab.insert("Ġfor".into(), x.into());
    let swapped = tokenizers::Tokenizer::from_bytes(json.to_string().as_bytes()).unwrap();
    smol_tokens.check(&swapped, used(&smol), &snapshot).unwrap();
    let e = smol_tokens.check(&swapped, used(&smol).into_iter().chain([x]), &snapshot).unwrap_err().to_string();
    assert!(e.contains("2 of the 49152 ids both have stand for other tokens, 1 of them"), "{e}");
}

/// A base model's eos ends the text (`<|endoftext|>`) while its ChatML template ends each turn
/// with `<|im_end|>` (Qwen2.5-Math-1.5B, the DFT paper's model): rows cannot be masked until the
/// recipe names the template's end-of-turn token, and then the reply and `<|im_end|>` are trained.
#[test]
fn a_base_models_end_of_text_is_replaced_by_the_templates_end_of_turn() {
    let dir = tempfile::tempdir().unwrap();
    let template = "{% for m in messages %}{{ '<|im_start|>' + m.role + '\n' + m.content + '<|im_end|>' + '\n' }}{% endfor %}\
                    {% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";
    let base = ChatTokenizer::from_gguf(&qwen2_vocab(dir.path()), None, Some(template.into())).unwrap();
    assert_eq!(base.eos_token(), "<|endoftext|>");
    let e = base.encode_chat("Hello world", "Hello, world!").unwrap_err().to_string();
    assert!(e.contains("does not end the assistant turn") && e.contains(r#"eos_token: "<|im_end|>""#), "{e}");

    let t = base.clone().with_eos_token("<|im_end|>").unwrap();
    assert_eq!((t.eos_token(), t.eos_id(), t.pad_id()), ("<|im_end|>", 151_645, 151_643));
    let (_, prompt) = t.encode_prompt("Hello world").unwrap();
    let enc = t.encode_chat("Hello world", "Hello, world!").unwrap();
    let trained: Vec<u32> = enc.ids.iter().zip(&enc.loss_mask).filter(|(_, &m)| m == 1).map(|(&i, _)| i).collect();
    assert_eq!(trained, [9707, 11, 1879, 0, 151_645]);
    assert!(enc.loss_mask[..prompt.len()].iter().all(|&m| m == 0));
    let e = base.with_eos_token("<nope>").unwrap_err().to_string();
    assert!(e.contains("\"<nope>\" is not in the vocabulary"), "{e}");
}
