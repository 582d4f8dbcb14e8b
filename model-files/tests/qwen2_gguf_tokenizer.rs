//! A Qwen2 / Qwen2.5 tokenizer rebuilt from GGUF metadata gives the token ids Hugging Face's
//! Qwen2 tokenizer gives (llama.cpp's test vectors, tests/fixtures/qwen2-tokenizer/README.md).
//!
//! No Qwen2 GGUF is at hand, so the test writes one from the Qwen vocabulary the way llama.cpp's
//! `convert_hf_to_gguf.py` does: byte-level token strings, merges, token types (added tokens
//! CONTROL when special and USER_DEFINED when not, padding rows UNUSED), `tokenizer.ggml.pre =
//! qwen2`. The merges are the ones the ranks imply, derived as transformers' tiktoken converter
//! derives them.

use model_files::gguf::Value;
use model_files::gguf_writer::GgufWriter;
use model_files::tokenizer::ChatTokenizer;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

/// Qwen2.5's `config.json` vocab_size: embedding rows beyond the 151,665 real tokens.
const PADDED_VOCAB: usize = 151_936;
/// llama.cpp's token types.
const NORMAL: i32 = 1;
const CONTROL: i32 = 3;
const USER_DEFINED: i32 = 4;
const UNUSED: i32 = 5;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/qwen2-tokenizer").join(name)
}

fn base64_decode(s: &str) -> Vec<u8> {
    let value = |c: u8| -> u32 {
        match c {
            b'A'..=b'Z' => (c - b'A') as u32,
            b'a'..=b'z' => (c - b'a' + 26) as u32,
            b'0'..=b'9' => (c - b'0' + 52) as u32,
            b'+' => 62,
            b'/' => 63,
            _ => panic!("not base64: {c}"),
        }
    };
    let digits: Vec<u32> = s.bytes().filter(|&c| c != b'=').map(value).collect();
    let mut out = Vec::with_capacity(digits.len() * 3 / 4);
    for chunk in digits.chunks(4) {
        let n = chunk.iter().enumerate().fold(0u32, |acc, (i, d)| acc | d << (18 - 6 * i));
        out.extend(&n.to_be_bytes()[1..chunk.len()]);
    }
    out
}

/// GPT-2's byte-to-character map, which byte-level BPE vocabularies are written in.
fn byte_chars() -> [char; 256] {
    let mut map = ['\0'; 256];
    let mut next = 256u32;
    for b in 0..=255u8 {
        let printable = matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
        map[b as usize] = if printable {
            b as char
        } else {
            next += 1;
            char::from_u32(next - 1).unwrap()
        };
    }
    map
}

fn qwen2_gguf(path: &Path) {
    let ranks: Vec<Vec<u8>> = std::fs::read_to_string(fixture("qwen.tiktoken"))
        .unwrap()
        .lines()
        .enumerate()
        .map(|(i, line)| {
            let (b64, rank) = line.split_once(' ').unwrap();
            assert_eq!(rank.parse::<usize>().unwrap(), i, "ranks are ids, in order");
            base64_decode(b64)
        })
        .collect();
    let rank_of: HashMap<&[u8], usize> = ranks.iter().enumerate().map(|(i, t)| (t.as_slice(), i)).collect();
    let chars = byte_chars();
    let text = |b: &[u8]| -> String { b.iter().map(|&x| chars[x as usize]).collect() };

    // Every split of a token into two tokens is a merge, ranked by the merged token, then by the
    // parts' ranks.
    let mut merges: Vec<(usize, usize, usize)> = Vec::new();
    for (rank, t) in ranks.iter().enumerate() {
        for cut in 1..t.len() {
            if let (Some(&l), Some(&r)) = (rank_of.get(&t[..cut]), rank_of.get(&t[cut..])) {
                merges.push((rank, l, r));
            }
        }
    }
    merges.sort();

    let special: BTreeMap<usize, String> =
        serde_json::from_str::<BTreeMap<String, String>>(&std::fs::read_to_string(fixture("qwen2_special_tokens.json")).unwrap())
            .unwrap()
            .into_iter()
            .map(|(id, s)| (id.parse().unwrap(), s))
            .collect();
    let mut tokens: Vec<String> = ranks.iter().map(|t| text(t)).collect();
    let mut types = vec![NORMAL; tokens.len()];
    for (&id, s) in &special {
        assert_eq!(id, tokens.len(), "added tokens follow the ranks without gaps");
        tokens.push(s.clone());
        // Qwen2.5's tokenizer_config marks the tool-call and FIM tokens as not special.
        types.push(if id < 151_657 { CONTROL } else { USER_DEFINED });
    }
    for id in tokens.len()..PADDED_VOCAB {
        tokens.push(format!("[PAD{id}]"));
        types.push(UNUSED);
    }

    let template = "{% for m in messages %}{{ '<|im_start|>' + m.role + '\n' + m.content + '<|im_end|>' + '\n' }}{% endfor %}\
                    {% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";
    let mut w = GgufWriter::new();
    w.kv("tokenizer.ggml.model", Value::str("gpt2"))
        .kv("tokenizer.ggml.pre", Value::str("qwen2"))
        .kv("tokenizer.ggml.tokens", Value::strings(&tokens))
        .kv("tokenizer.ggml.token_type", Value::i32s(types))
        .kv("tokenizer.ggml.merges", Value::strings(merges.iter().map(|&(_, l, r)| format!("{} {}", tokens[l], tokens[r]))))
        .kv("tokenizer.ggml.eos_token_id", Value::U32(151_645))
        .kv("tokenizer.ggml.padding_token_id", Value::U32(151_643))
        .kv("tokenizer.ggml.bos_token_id", Value::U32(151_643))
        .kv("tokenizer.ggml.add_bos_token", Value::Bool(false))
        .kv("tokenizer.chat_template", Value::str(template));
    w.write(path).unwrap();
}

#[test]
fn qwen2_gguf_tokenizer_matches_hugging_face_ids() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("qwen2-vocab.gguf");
    qwen2_gguf(&path);
    let t = ChatTokenizer::from_gguf(&path, None, None).unwrap();
    assert_eq!((t.vocab_size(), t.eos_id(), t.pad_id()), (PADDED_VOCAB, 151_645, 151_643));
    let ids = |s: &str| t.tokenizer().encode(s, false).unwrap().get_ids().to_vec();

    let cases = std::fs::read_to_string(fixture("qwen2_tokenizer_cases.jsonl")).unwrap();
    let mut n = 0;
    for (line_no, line) in cases.lines().enumerate() {
        #[derive(serde::Deserialize)]
        struct Case {
            text: String,
            ids: Vec<u32>,
        }
        let case: Case = serde_json::from_str(line).unwrap();
        assert_eq!(ids(&case.text), case.ids, "qwen2_tokenizer_cases.jsonl line {}: {:?}", line_no + 1, case.text);
        assert_eq!(t.decode(&case.ids), case.text, "decoding line {}", line_no + 1);
        n += 1;
    }
    assert_eq!(n, 13);

    // Control and user-defined tokens are single ids; padding rows are not tokens of the text.
    assert_eq!(ids("<|im_start|>Hello world<|im_end|>"), vec![151_644, 9707, 1879, 151_645]);
    assert_eq!(ids("<tool_call>"), vec![151_657]);
    assert!(!ids("[PAD151700]").contains(&151_700));

    // The chat template's turns: the loss covers the reply and the end of turn only.
    let enc = t.encode_chat("Hello world", "Hello, world!").unwrap();
    let (prompt_text, prompt_ids) = t.encode_prompt("Hello world").unwrap();
    assert_eq!(prompt_text, "<|im_start|>user\nHello world<|im_end|>\n<|im_start|>assistant\n");
    assert_eq!(&enc.ids[..prompt_ids.len()], &prompt_ids[..]);
    let reply = &enc.ids[prompt_ids.len()..];
    assert_eq!(&reply[..5], &[9707, 11, 1879, 0, 151_645]);
    assert!(enc.loss_mask[..prompt_ids.len()].iter().all(|&m| m == 0));
    assert!(enc.loss_mask[prompt_ids.len()..prompt_ids.len() + 5].iter().all(|&m| m == 1));
}
