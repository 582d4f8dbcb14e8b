//! Arrow schemas of the Parquet files in a snapshot.
//!
//! Alignment convention for `train` shards: every per-token column lines up with `input_ids`.
//! `loss_mask[i] == 1` means token `input_ids[i]` is a *target*: the loss at position `i-1`
//! predicts it. The first token of every packed example has `loss_mask == 0`, so no example is
//! ever trained to follow the previous one. `ref_logprobs[i]` is the reference model's
//! log-probability of `input_ids[i]` given the tokens before it in the same example (0 where no
//! prediction is made: the first token of each example and padding).

use arrow_schema::{DataType, Field, Schema};
use std::sync::Arc;

pub const INPUT_IDS: &str = "input_ids";
pub const LOSS_MASK: &str = "loss_mask";
pub const POSITION_IDS: &str = "position_ids";
pub const SEGMENT_IDS: &str = "segment_ids";
pub const EXAMPLE_IDS: &str = "example_ids";
pub const REF_LOGPROBS: &str = "ref_logprobs";

fn list_of(name: &str, item: DataType, nullable: bool) -> Field {
    Field::new(name, DataType::List(Arc::new(Field::new("item", item, false))), nullable)
}

/// One packed row of `seq_len` tokens.
pub fn train_schema() -> Schema {
    Schema::new(vec![
        Field::new("row", DataType::Int64, false),
        list_of(INPUT_IDS, DataType::Int32, false),
        list_of(LOSS_MASK, DataType::Int8, false),
        list_of(POSITION_IDS, DataType::Int32, false),
        list_of(SEGMENT_IDS, DataType::Int32, false),
        list_of(EXAMPLE_IDS, DataType::Utf8, false),
        Field::new("num_tokens", DataType::Int32, false),
        Field::new("num_loss_tokens", DataType::Int32, false),
        list_of(REF_LOGPROBS, DataType::Float32, true),
    ])
}

/// One evaluation prompt, chat template applied and tokenized up to the generation prompt.
pub fn prompts_schema() -> Schema {
    Schema::new(vec![
        Field::new("id", DataType::Utf8, false),
        Field::new("source", DataType::Utf8, false),
        Field::new("domain", DataType::Utf8, false),
        Field::new("prompt", DataType::Utf8, false),
        Field::new("prompt_text", DataType::Utf8, false),
        list_of("prompt_ids", DataType::Int32, false),
        Field::new("reference", DataType::Utf8, false),
        Field::new("gold", DataType::Utf8, true),
        Field::new("tests", DataType::Utf8, true),
        Field::new("metadata", DataType::Utf8, false),
    ])
}

/// One sampled completion of a question with its verdict and provenance (`schemas::rollouts`).
pub fn rollouts_schema() -> Schema {
    let text = |name: &str, nullable: bool| Field::new(name, DataType::Utf8, nullable);
    Schema::new(vec![
        text("question_id", false),
        text("source", false),
        text("domain", false),
        Field::new("sample", DataType::Int32, false),
        text("prompt", false),
        text("completion", false),
        list_of("completion_ids", DataType::Int32, false),
        text("finish", false),
        Field::new("new_tokens", DataType::Int32, false),
        text("extracted", true),
        Field::new("correct", DataType::Boolean, false),
        text("status", true),
        text("verifier", false),
        text("verifier_version", false),
        text("gold", true),
        text("tests", true),
        text("model_sha256", false),
        Field::new("temperature", DataType::Float32, false),
        Field::new("top_p", DataType::Float32, false),
        Field::new("top_k", DataType::Int32, false),
        Field::new("max_new_tokens", DataType::Int32, false),
        Field::new("seed", DataType::UInt64, false),
        text("prompts_snapshot_id", false),
    ])
}
