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
    let own_system = examples.iter().filter(|e| e.context.first().is_some_and(|t| t.role == schemas::Role::System)).count();
    if let (Some(_), 1..) = (tok.system_prompt(), own_system) {
        // Said, since the recipe's system prompt is then not the one every row was trained with.
        tracing::warn!("{own_system} conversations carry a system turn of their own, which replaces the recipe's `system_prompt` in them");
    }
    let pairs: Vec<(&[schemas::Turn], &str, &str)> =
        examples.iter().map(|e| (e.context.as_slice(), e.prompt.as_str(), e.response.as_str())).collect();
    let encoded = tok.encode_chat_batch(&pairs);
    let mut items = Vec::with_capacity(examples.len());
    let mut dropped = vec![];
    for (e, enc) in examples.iter().zip(encoded) {
        match enc {
            Ok(mut enc) => {
                if e.unfinished {
                    untrain_end_of_turn(&enc.ids, &mut enc.loss_mask, tok.eos_id());
                }
                items.push(Tokenized { id: e.id.clone(), source: e.source.clone(), ids: enc.ids, loss_mask: enc.loss_mask })
            }
            Err(err) => dropped.push(Dropped::new(STAGE, "template_error", e, format!("{err:#}"))),
        }
    }
    (items, dropped)
}

/// Leaves the end-of-turn token that closes the trained span out of it: the last trained token,
/// where it is `eos`.
fn untrain_end_of_turn(ids: &[u32], loss_mask: &mut [u8], eos: u32) {
    if let Some(last) = loss_mask.iter().rposition(|&m| m == 1).filter(|&i| ids[i] == eos) {
        loss_mask[last] = 0;
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use schemas::Domain;

    #[test]
    fn an_unfinished_response_trains_its_text_but_not_the_end_of_turn() {
        let tok = ChatTokenizer::from_gguf(&model_files::test_model_path(), None, None).unwrap();
        let ex = |unfinished| Example {
            id: "r/q/0".into(),
            source: "r".into(),
            domain: Domain::Math,
            prompt: "What is 2 + 3?".into(),
            response: "2 + 3 = 5, so the answer".into(),
            gold: None,
            tests: None,
            metadata: String::new(),
            unfinished,
            context: vec![],
        };
        let (items, dropped) = tokenize_chats(&[ex(false), ex(true)], &tok);
        assert!(dropped.is_empty());
        let trained = |t: &Tokenized| t.ids.iter().zip(&t.loss_mask).filter(|(_, &m)| m == 1).map(|(&i, _)| i).collect::<Vec<_>>();
        let (done, cut) = (trained(&items[0]), trained(&items[1]));
        assert_eq!(done.last(), Some(&tok.eos_id()), "a finished reply trains its end of turn");
        assert_eq!(cut, done[..done.len() - 1], "a cut one trains the same text without it");
        assert_eq!(items[0].ids, items[1].ids);
    }
}
