//! Stage 6, tokenize: apply the chat template and encode each example, with the loss mask on the
//! response tokens (train snapshots) or the prompt alone (prompt snapshots). An example the
//! template cannot render is dropped with the reason.

use crate::pack::Tokenized;
use crate::write::PromptRow;
use model_files::tokenizer::ChatTokenizer;
use schemas::{Dropped, Example};

pub const STAGE: &str = "tokenize";

/// Prompt and response of each example as one chat, in parallel; the kept examples in order.
pub fn tokenize_chats(examples: &[Example], tok: &ChatTokenizer) -> (Vec<Tokenized>, Vec<Dropped>) {
    let pairs: Vec<(&str, &str)> = examples.iter().map(|e| (e.prompt.as_str(), e.response.as_str())).collect();
    let encoded = tok.encode_chat_batch(&pairs);
    let mut items = Vec::with_capacity(examples.len());
    let mut dropped = vec![];
    for (e, enc) in examples.iter().zip(encoded) {
        match enc {
            Ok(enc) => items.push(Tokenized { id: e.id.clone(), source: e.source.clone(), ids: enc.ids, loss_mask: enc.loss_mask }),
            Err(err) => dropped.push(Dropped::new(STAGE, "template_error", e, format!("{err:#}"))),
        }
    }
    (items, dropped)
}

/// The prompt of each example with the generation prompt appended, for evaluation.
pub fn tokenize_prompts<'a>(examples: &'a [Example], tok: &ChatTokenizer) -> (Vec<PromptRow<'a>>, Vec<Dropped>) {
    let mut rows = vec![];
    let mut dropped = vec![];
    for e in examples {
        match tok.encode_prompt(&e.prompt) {
            Ok((text, ids)) => rows.push(PromptRow { example: e, text, ids }),
            Err(err) => dropped.push(Dropped::new(STAGE, "template_error", e, format!("{err:#}"))),
        }
    }
    (rows, dropped)
}
