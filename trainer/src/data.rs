//! Packed rows from a snapshot, and the tensors of a micro-batch.

use crate::model::segment_runs;
use anyhow::{bail, Context};
use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{Float32Type, Int32Type, Int8Type};
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use schemas::manifest::Manifest;
use schemas::recipe::SnapshotKind;
use std::path::Path;

#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub input_ids: Vec<i32>,
    pub loss_mask: Vec<i8>,
    pub position_ids: Vec<i32>,
    pub segment_ids: Vec<i32>,
    pub ref_logprobs: Option<Vec<f32>>,
}

impl Row {
    /// Loss tokens of this row as targets of the next-token objective (the first position is
    /// never a target: nothing precedes it).
    pub fn targets(&self) -> usize {
        self.loss_mask[1..].iter().filter(|&&m| m != 0).count()
    }
}

pub struct Snapshot {
    pub manifest: Manifest,
    pub seq_len: usize,
    pub rows: Vec<Row>,
}

/// Read every row of a `train` snapshot after checking its shards against the manifest: a
/// corrupted shard must not train silently.
pub fn load_snapshot(dir: &Path) -> anyhow::Result<Snapshot> {
    let manifest = verified_manifest(dir, SnapshotKind::Train)?;
    let seq_len = manifest.packing.as_ref().context("train snapshot without packing report")?.seq_len as usize;
    let mut rows = vec![];
    for_each_batch(dir, &manifest, |batch| read_rows(batch, &mut rows))?;
    Ok(Snapshot { manifest, seq_len, rows })
}

impl Snapshot {
    /// Fail unless the snapshot carries reference log-probabilities in its manifest and in every
    /// row (what `iwsft` needs), saying how to get them.
    pub fn require_ref_logprobs(&self, dir: &Path) -> anyhow::Result<()> {
        let how = format!(
            "run `trainer score --model MODEL --snapshot {} --out SCORED` (or `make score` for the default snapshot) and train on the scored snapshot",
            dir.display()
        );
        if self.manifest.ref_logprobs_info()?.is_none() {
            bail!("snapshot {} has no reference log-probabilities (its manifest's `ref_logprobs` is null), which the iwsft loss needs: {how}", dir.display());
        }
        if let Some(i) = self.rows.iter().position(|r| r.ref_logprobs.as_ref().is_none_or(|v| v.len() != r.input_ids.len())) {
            bail!("snapshot {}: row {i} has no reference log-probabilities (or the wrong number), which the iwsft loss needs: {how}", dir.display());
        }
        Ok(())
    }
}

/// The manifest of a snapshot whose shards and sidecars match it, of the expected kind: a
/// corrupted shard must not train or evaluate silently.
pub fn verified_manifest(dir: &Path, kind: SnapshotKind) -> anyhow::Result<Manifest> {
    let (manifest, problems) = pipeline::verify::verify(dir).with_context(|| format!("snapshot {}", dir.display()))?;
    if !problems.is_empty() {
        bail!("snapshot {} does not match its manifest (run `pipeline verify`):\n  {}", dir.display(), problems.join("\n  "));
    }
    if manifest.kind != kind {
        let (is, wants) = match kind {
            SnapshotKind::Train => ("prompts", "training needs a `train` snapshot"),
            SnapshotKind::Prompts => ("train", "evaluation needs a `prompts` snapshot"),
        };
        bail!("snapshot {} is a `{is}` snapshot; {wants}", dir.display());
    }
    Ok(manifest)
}

/// Calls `f` on every record batch of every shard, in manifest order.
pub fn for_each_batch(dir: &Path, manifest: &Manifest, mut f: impl FnMut(&RecordBatch) -> anyhow::Result<()>) -> anyhow::Result<()> {
    for shard in &manifest.shards {
        let path = dir.join(&shard.file);
        let file = std::fs::File::open(&path).with_context(|| format!("cannot open {}", path.display()))?;
        for batch in ParquetRecordBatchReaderBuilder::try_new(file)?.build()? {
            f(&batch?).with_context(|| format!("reading {}", path.display()))?;
        }
    }
    Ok(())
}

fn read_rows(batch: &RecordBatch, out: &mut Vec<Row>) -> anyhow::Result<()> {
    let col = |name: &str| batch.column_by_name(name).with_context(|| format!("column `{name}` missing"));
    let ids = col("input_ids")?.as_list::<i32>();
    let mask = col("loss_mask")?.as_list::<i32>();
    let pos = col("position_ids")?.as_list::<i32>();
    let seg = col("segment_ids")?.as_list::<i32>();
    let refs = col("ref_logprobs")?.as_list::<i32>();
    for i in 0..batch.num_rows() {
        let i32s = |l: &arrow::array::ListArray| l.value(i).as_primitive::<Int32Type>().values().to_vec();
        out.push(Row {
            input_ids: i32s(ids),
            loss_mask: mask.value(i).as_primitive::<Int8Type>().values().to_vec(),
            position_ids: i32s(pos),
            segment_ids: i32s(seg),
            ref_logprobs: refs.is_valid(i).then(|| refs.value(i).as_primitive::<Float32Type>().values().to_vec()),
        });
    }
    Ok(())
}

/// Tensors for a micro-batch of rows: inputs, positions, next-token targets and their mask
/// (both `[batch, seq-1]`), the reference log-probabilities of those targets when every row has
/// them (`ref_logprobs[1..]`, also `[batch, seq-1]`), and the segment runs of each row.
pub struct MicroBatch<B: Backend> {
    pub input_ids: Tensor<B, 2, Int>,
    pub positions: Tensor<B, 2, Int>,
    pub targets: Tensor<B, 2, Int>,
    pub target_mask: Tensor<B, 2>,
    pub target_ref_logprobs: Option<Tensor<B, 2>>,
    pub segments: Vec<Vec<(usize, usize)>>,
}

pub fn micro_batch<B: Backend>(rows: &[&Row], device: &B::Device) -> MicroBatch<B> {
    let b = rows.len();
    let t = rows[0].input_ids.len();
    let flat = |f: &dyn Fn(&Row) -> Vec<i64>| -> Vec<i64> { rows.iter().flat_map(|r| f(r)).collect() };
    let ids = flat(&|r| r.input_ids.iter().map(|&x| x as i64).collect());
    let pos = flat(&|r| r.position_ids.iter().map(|&x| x as i64).collect());
    let targets = flat(&|r| r.input_ids[1..].iter().map(|&x| x as i64).collect());
    let mask: Vec<f32> = rows.iter().flat_map(|r| r.loss_mask[1..].iter().map(|&m| m as f32)).collect();
    let refs: Option<Vec<f32>> = rows.iter().map(|r| r.ref_logprobs.as_ref().map(|v| &v[1..])).collect::<Option<Vec<&[f32]>>>().map(|v| v.concat());
    MicroBatch {
        target_ref_logprobs: refs.map(|v| Tensor::from_data(TensorData::new(v, [b, t - 1]), device)),
        input_ids: Tensor::from_data(TensorData::new(ids, [b, t]), device),
        positions: Tensor::from_data(TensorData::new(pos, [b, t]), device),
        targets: Tensor::from_data(TensorData::new(targets, [b, t - 1]), device),
        target_mask: Tensor::from_data(TensorData::new(mask, [b, t - 1]), device),
        segments: rows.iter().map(|r| segment_runs(&r.segment_ids)).collect(),
    }
}
