//! Stage 8, write: Parquet shards. zstd, small row groups so a reader can seek, and no dictionary
//! encoding on token columns (token ids barely repeat within a page; dictionaries only cost).
//! The writer is single-threaded and stamps no time, so the same rows give the same bytes.

use crate::pack::PackedRow;
use anyhow::Context;
use arrow::array::{ArrayRef, Float32Builder, Int32Array, Int64Array, ListBuilder, RecordBatch, StringArray, StringBuilder};
use arrow::array::{Int32Builder, Int8Builder};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use parquet::schema::types::ColumnPath;
use schemas::manifest::ShardInfo;
use schemas::recipe::WriteConfig;
use schemas::{shard, Example};
use std::path::Path;
use std::sync::Arc;

fn properties(cfg: &WriteConfig, dictionary_columns: &[&str]) -> anyhow::Result<WriterProperties> {
    let mut b = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(cfg.zstd_level)?))
        .set_max_row_group_row_count(Some(cfg.row_group_rows))
        .set_dictionary_enabled(false)
        .set_created_by(format!("rectify {}", env!("CARGO_PKG_VERSION")));
    for c in dictionary_columns {
        b = b.set_column_dictionary_enabled(ColumnPath::from(*c), true);
    }
    Ok(b.build())
}

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

/// Write one shard file and describe it for the manifest.
pub fn write_shard(dir: &Path, file: &str, batch: &RecordBatch, cfg: &WriteConfig, dictionary_columns: &[&str]) -> anyhow::Result<ShardInfo> {
    let path = dir.join(file);
    let out = std::fs::File::create(&path).with_context(|| format!("cannot create {}", path.display()))?;
    let mut writer = ArrowWriter::try_new(out, batch.schema(), Some(properties(cfg, dictionary_columns)?))?;
    writer.write(batch)?;
    writer.close()?;
    let (tokens, loss_tokens) = token_counts(batch);
    Ok(ShardInfo {
        file: file.to_string(),
        sha256: schemas::sha256_file(&path)?,
        bytes: std::fs::metadata(&path)?.len(),
        rows: batch.num_rows() as u64,
        tokens,
        loss_tokens,
    })
}

fn token_counts(batch: &RecordBatch) -> (u64, u64) {
    let sum = |name: &str| -> u64 {
        batch
            .column_by_name(name)
            .and_then(|c| c.as_any().downcast_ref::<Int32Array>())
            .map(|a| a.iter().flatten().map(|v| v as u64).sum())
            .unwrap_or(0)
    };
    (sum("num_tokens"), sum("num_loss_tokens"))
}

/// Write a text sidecar (JSONL) and describe it.
pub fn write_sidecar(dir: &Path, file: &str, text: &str) -> anyhow::Result<ShardInfo> {
    let path = dir.join(file);
    std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(ShardInfo {
        file: file.to_string(),
        sha256: schemas::sha256_hex(text.as_bytes()),
        bytes: text.len() as u64,
        rows: text.lines().count() as u64,
        tokens: 0,
        loss_tokens: 0,
    })
}
