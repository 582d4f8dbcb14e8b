//! Stage 8, write: packed rows and prompts as Arrow record batches of the shard schemas;
//! `schemas::snapshot::write_shard` writes each as a Parquet shard.

use crate::pack::PackedRow;
use arrow::array::{ArrayRef, Float32Builder, Int32Array, Int64Array, ListBuilder, RecordBatch, StringArray, StringBuilder};
use arrow::array::{Int32Builder, Int8Builder};
use schemas::{shard, Example};
use std::sync::Arc;

fn list_i32<'a>(rows: impl Iterator<Item = &'a [i32]>) -> ArrayRef {
    let mut b = ListBuilder::new(Int32Builder::new()).with_field(item_field(arrow::datatypes::DataType::Int32));
    for r in rows {
        b.values().append_slice(r);
        b.append(true);
    }
    Arc::new(b.finish())
}

fn item_field(dt: arrow::datatypes::DataType) -> Arc<arrow::datatypes::Field> {
    Arc::new(arrow::datatypes::Field::new("item", dt, false))
}

pub fn train_batch(rows: &[PackedRow], first_row: usize) -> anyhow::Result<RecordBatch> {
    let mut mask = ListBuilder::new(Int8Builder::new()).with_field(item_field(arrow::datatypes::DataType::Int8));
    let mut ids = ListBuilder::new(StringBuilder::new()).with_field(item_field(arrow::datatypes::DataType::Utf8));
    let mut ref_lp = ListBuilder::new(Float32Builder::new()).with_field(item_field(arrow::datatypes::DataType::Float32));
    for r in rows {
        mask.values().append_slice(&r.loss_mask);
        mask.append(true);
        for id in &r.example_ids {
            ids.values().append_value(id);
        }
        ids.append(true);
        ref_lp.append(false);
    }
    let columns: Vec<ArrayRef> = vec![
        Arc::new((first_row..first_row + rows.len()).map(|i| i as i64).collect::<Int64Array>()),
        list_i32(rows.iter().map(|r| r.input_ids.as_slice())),
        Arc::new(mask.finish()),
        list_i32(rows.iter().map(|r| r.position_ids.as_slice())),
        list_i32(rows.iter().map(|r| r.segment_ids.as_slice())),
        Arc::new(ids.finish()),
        Arc::new(rows.iter().map(|r| r.num_tokens).collect::<Int32Array>()),
        Arc::new(rows.iter().map(|r| r.num_loss_tokens).collect::<Int32Array>()),
        Arc::new(ref_lp.finish()),
    ];
    Ok(RecordBatch::try_new(Arc::new(shard::train_schema()), columns)?)
}

/// An evaluation prompt row: the example plus its templated text and ids.
pub struct PromptRow<'a> {
    pub example: &'a Example,
    pub text: String,
    pub ids: Vec<u32>,
}

pub fn prompts_batch(rows: &[PromptRow]) -> anyhow::Result<RecordBatch> {
    let strings = |f: &dyn Fn(&PromptRow) -> Option<String>| -> ArrayRef { Arc::new(rows.iter().map(f).collect::<StringArray>()) };
    let ids: Vec<Vec<i32>> = rows.iter().map(|r| r.ids.iter().map(|&i| i as i32).collect()).collect();
    let columns: Vec<ArrayRef> = vec![
        strings(&|r| Some(r.example.id.clone())),
        strings(&|r| Some(r.example.source.clone())),
        strings(&|r| Some(r.example.domain.as_str().to_string())),
        strings(&|r| Some(r.example.prompt.clone())),
        strings(&|r| Some(r.text.clone())),
        list_i32(ids.iter().map(Vec::as_slice)),
        strings(&|r| Some(r.example.response.clone())),
        strings(&|r| r.example.gold.clone()),
        strings(&|r| r.example.tests.clone()),
        strings(&|r| Some(r.example.metadata.clone())),
    ];
    Ok(RecordBatch::try_new(Arc::new(shard::prompts_schema()), columns)?)
}
