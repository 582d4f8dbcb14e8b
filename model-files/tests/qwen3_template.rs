//! Qwen3's own chat template, rendered by rectify as transformers renders it (the expected texts
//! were computed with transformers 5.25's Jinja environment; tests/fixtures/templates/README.md),
//! on the real Qwen2 vocabulary with ChatML's end of turn. What the README promises of it: the
//! prompt ends at `<|im_start|>assistant\n`; the trained span of a reply is the empty think block
//! the template writes, the reply and `<|im_end|>`; `enable_thinking: false` moves the block into
//! the prompt; earlier turns of a conversation are trained as written, and a conversation whose
//! earlier reasoning the template drops is refused.

use flate2::read::GzDecoder;
use model_files::tokenizer::ChatTokenizer;
use schemas::example::Turn;
use schemas::Role;
use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

fn fixture(path: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(path)
}

/// The Qwen2 vocabulary GGUF with Qwen3's template and `<|im_end|>` ending a turn.
fn qwen3(dir: &Path) -> ChatTokenizer {
    let mut bytes = Vec::new();
    GzDecoder::new(std::fs::File::open(fixture("qwen2-tokenizer/ggml-vocab-qwen2.gguf.gz")).unwrap()).read_to_end(&mut bytes).unwrap();
    let gguf = dir.join("vocab.gguf");
    std::fs::write(&gguf, bytes).unwrap();
    let template = std::fs::read_to_string(fixture("templates/qwen3.jinja")).unwrap();
    ChatTokenizer::from_gguf(&gguf, None, Some(template)).unwrap().with_eos_token("<|im_end|>").unwrap()
}

/// The whole text and each trained run of tokens, decoded.
fn rendered(t: &ChatTokenizer, context: &[Turn], prompt: &str, response: &str) -> (String, Vec<String>) {
    let enc = t.encode_conversation(context, prompt, response).unwrap();
    let mut runs: Vec<Vec<u32>> = vec![];
    let mut inside = false;
    for (&id, &m) in enc.ids.iter().zip(&enc.loss_mask) {
        match (m == 1, inside) {
            (true, false) => runs.push(vec![id]),
            (true, true) => runs.last_mut().unwrap().push(id),
            _ => {}
        }
        inside = m == 1;
    }
    (t.decode(&enc.ids), runs.iter().map(|r| t.decode(r)).collect())
}

fn turn(role: Role, content: &str) -> Turn {
    Turn { role, content: content.into() }
}

#[test]
fn qwen3_template_renders_as_transformers_and_trains_the_replies() {
    let dir = tempfile::tempdir().unwrap();
    let t = qwen3(dir.path());
    let q = "What is 2+2?";
    assert_eq!(t.encode_prompt(q).unwrap().0, "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n");
    let (text, trained) = rendered(&t, &[], q, "4");
    assert_eq!(text, "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n4<|im_end|>\n");
    assert_eq!(trained, ["<think>\n\n</think>\n\n4<|im_end|>"]);
    let (text, trained) = rendered(&t, &[], q, "<think>\nadd them\n</think>\n\n4");
    assert_eq!(text, "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n<think>\nadd them\n</think>\n\n4<|im_end|>\n");
    assert_eq!(trained, ["<think>\nadd them\n</think>\n\n4<|im_end|>"]);

    // The switch: the empty block joins the prompt, and only the reply is trained.
    let plain = t.clone().with_template_vars(BTreeMap::from([("enable_thinking".to_string(), false.into())])).unwrap();
    assert_eq!(
        plain.encode_prompt(q).unwrap().0,
        "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
    );
    assert_eq!(rendered(&plain, &[], q, "4").1, ["4<|im_end|>"]);

    // A system prompt opens the conversation.
    let terse = t.clone().with_system_prompt(Some("You are terse.".into()));
    assert_eq!(
        terse.encode_prompt(q).unwrap().0,
        "<|im_start|>system\nYou are terse.<|im_end|>\n<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n"
    );

    // Two exchanges: the earlier reply as written, the last with the template's think block.
    let context = [turn(Role::User, "What is 1+2?"), turn(Role::Assistant, "3")];
    let (text, trained) = rendered(&t, &context, "And 2+2?", "4");
    assert_eq!(
        text,
        "<|im_start|>user\nWhat is 1+2?<|im_end|>\n<|im_start|>assistant\n3<|im_end|>\n<|im_start|>user\nAnd 2+2?<|im_end|>\n\
         <|im_start|>assistant\n<think>\n\n</think>\n\n4<|im_end|>\n"
    );
    assert_eq!(trained, ["3<|im_end|>", "<think>\n\n</think>\n\n4<|im_end|>"]);
    // The template drops an earlier turn's reasoning: training that turn would train text the
    // data never held, so the conversation is refused.
    let reasoned = [turn(Role::User, "What is 1+2?"), turn(Role::Assistant, "<think>\nadd\n</think>\n\n3")];
    let err = t.encode_conversation(&reasoned, "And 2+2?", "4").unwrap_err().to_string();
    assert!(err.contains("renders assistant turn 1 otherwise than it is written"), "{err}");
}
