//! `trainer score`: fill a `train` snapshot's `ref_logprobs` column with a reference model's
//! log-probability of every next token and write the result as a new snapshot.
//!
//! Rows are scored exactly as they are trained: packed, with the shard's `position_ids` and
//! block-diagonal attention (each example attends only to itself). Inference only, no autodiff.
//! On CPU the rows of a chunk run side by side, one per core (Burn's CPU element-wise ops are
//! single-threaded, as in training).
//!
//! Resuming: scores go to a work folder beside `--out` (`.<out>.scoring/`), one file per chunk of
//! rows, each listed with its sha256 in `done.jsonl` after it is written and renamed into place.
//! A run killed at any point and started again with the same command re-checks every listed
//! chunk against its hash and scores only the rest. The work folder records the parent snapshot
//! id and the model hash; a different snapshot or model starts it afresh. The scored snapshot is
//! assembled in a hidden folder and renamed into place only when complete and verified.

use crate::journal::{Chunk, WorkDir};
use anyhow::{bail, Context};
use arrow::array::{ArrayRef, Float32Builder, ListBuilder, RecordBatch};
use burn::tensor::backend::Backend;
use model::logprobs::rows_logprobs;
use model::Llama;
use model_files::checkpoint::model_hash;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use schemas::manifest::{Manifest, RefLogprobsInfo, MANIFEST_FILE};
use schemas::recipe::WriteConfig;
use schemas::shard;
use schemas::snapshot::{load_snapshot, publish_dir, verify, write_shard, Row, StageTiming, TIMINGS_FILE};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

/// What every stored value means; recorded in the manifest's `conventions` and `ref_logprobs`.
pub const CONVENTION: &str =
    "aligned like loss_mask: ref_logprobs[i] = ln p_ref(input_ids[i] | input_ids of the same packed example before i), \
float32, from the reference model's logits with the row's position_ids and attention confined to each example (as in training); \
0.0 at the first token of every example and on padding, where nothing is predicted; every other position is scored, prompt tokens included";

pub struct ScoreOptions {
    pub model: PathBuf,
    pub snapshot: PathBuf,
    pub out: PathBuf,
    /// Replace `out` if it exists.
    pub force: bool,
    /// Rows per resumable chunk.
    pub chunk_rows: usize,
    /// What computes the log-probabilities (Burn on CPU, or on CUDA with f32 or TF32 matmuls):
    /// engines agree to rounding, not in the last bits, so a work folder of one is not resumed by
    /// another, and the scored manifest names it.
    pub engine: String,
}

pub struct ScoreSummary {
    pub manifest: Manifest,
    pub rows: usize,
    /// Rows found already scored in the work folder.
    pub resumed_rows: usize,
    /// Non-pad tokens run through the model by this process, and the seconds it took.
    pub tokens: u64,
    pub seconds: f64,
}

impl ScoreSummary {
    pub fn tokens_per_second(&self) -> f64 {
        self.tokens as f64 / self.seconds.max(1e-9)
    }
}

/// The identity of a scoring job: a work folder is reused only for the same one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Work {
    parent_snapshot_id: String,
    model_sha256: String,
    rows: usize,
    seq_len: usize,
    chunk_rows: usize,
    engine: String,
}

fn chunk_file(start: usize, end: usize) -> String {
    format!("rows-{start:07}-{end:07}.f32")
}

/// The chunks of the plan: consecutive rows, never crossing a shard.
fn plan(manifest: &Manifest, chunk_rows: usize) -> Vec<(usize, usize)> {
    let mut out = vec![];
    let mut start = 0;
    for s in &manifest.shards {
        let end = start + s.rows as usize;
        let mut a = start;
        while a < end {
            let b = (a + chunk_rows).min(end);
            out.push((a, b - a));
            a = b;
        }
        start = end;
    }
    out
}

fn read_chunk(bytes: &[u8]) -> Vec<f32> {
    bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect()
}

/// Score `opts.snapshot` with `opts.model` into the new snapshot `opts.out`.
/// Where a snapshot is scored to without `--out`: `SNAPSHOT-scored` beside it, also when the
/// path is written with a trailing `/` or as `.`.
pub fn default_out(snapshot: &Path) -> anyhow::Result<PathBuf> {
    let dir = if snapshot.file_name().is_some() { snapshot.to_path_buf() } else { std::fs::canonicalize(snapshot)? };
    let name = dir.file_name().context("the snapshot path names no folder")?.to_string_lossy().into_owned();
    Ok(dir.with_file_name(format!("{name}-scored")))
}

/// `path` with symbolic links, `.` and `..` resolved, also where its last components do not
/// exist yet (a new output folder).
fn real_path(path: &Path) -> anyhow::Result<PathBuf> {
    let abs = std::path::absolute(path)?;
    let mut rest = vec![];
    let mut existing = abs.as_path();
    while !existing.exists() {
        rest.push(existing.file_name().map(|n| n.to_os_string()).unwrap_or_default());
        existing = existing.parent().context("no part of the path exists")?;
    }
    let mut real = std::fs::canonicalize(existing)?;
    real.extend(rest.iter().rev());
    Ok(real)
}

pub fn score<B: Backend>(opts: &ScoreOptions, device: &B::Device) -> anyhow::Result<ScoreSummary> {
    // Inside the snapshot, the result would be replaced with it by the next `pipeline build
    // --force`; around it, `--force` would replace the snapshot being read.
    let (out, snap) = (real_path(&opts.out)?, real_path(&opts.snapshot)?);
    if out.starts_with(&snap) || snap.starts_with(&out) {
        bail!(
            "--out {} must be a folder beside the snapshot being scored ({}), neither it, inside it, nor around it",
            opts.out.display(),
            opts.snapshot.display()
        );
    }
    schemas::snapshot::check_replaceable(&opts.out, opts.force)?;
    let chunk_rows = opts.chunk_rows.max(1);
    let snapshot = load_snapshot(&opts.snapshot)?;
    model_files::vocab::check_model_tokens(&opts.model, &opts.snapshot, snapshot.token_ids())?;
    let parent = &snapshot.manifest;
    let seq_len = snapshot.seq_len;
    let write_cfg: WriteConfig = serde_json::from_value(parent.recipe.resolved.get("write").cloned().unwrap_or_default())
        .context("the snapshot manifest's resolved recipe has no valid `write` settings")?;
    let (model_sha, model_files) = model_hash(&opts.model)?;

    let job = Work {
        parent_snapshot_id: parent.snapshot_id.clone(),
        model_sha256: model_sha.clone(),
        rows: snapshot.rows.len(),
        seq_len,
        chunk_rows,
        engine: opts.engine.clone(),
    };
    let mut work = WorkDir::open(&opts.out, "scoring", &job)?;
    let mut done = work.finished()?;
    let chunks = plan(parent, chunk_rows);
    done.retain(|start, c| chunks.iter().any(|&(s, n)| s == *start && n == c.len));
    let resumed_rows: usize = done.values().map(|c| c.len).sum();
    if resumed_rows > 0 {
        tracing::info!("resuming: {resumed_rows} of {} rows already scored in {}", snapshot.rows.len(), work.dir.display());
    }

    let pending: Vec<(usize, usize)> = chunks.iter().copied().filter(|(s, _)| !done.contains_key(s)).collect();
    let start_time = Instant::now();
    let mut tokens = 0u64;
    if !pending.is_empty() {
        let model = Llama::<B>::load(&opts.model, device)?;
        model.check_vocab(parent.tokenizer.vocab_size)?;
        model.check_context(snapshot.longest_example())?;
        let pb = progress::bar(snapshot.rows.len(), "score");
        pb.set_position(resumed_rows as u64);
        for (start, n) in pending {
            let rows: Vec<&Row> = snapshot.rows[start..start + n].iter().collect();
            let scored = rows_logprobs(&model, &rows, device, || pb.inc(1));
            for (k, v) in scored.iter().enumerate() {
                if let Some(i) = v.iter().position(|x| !x.is_finite() || *x > 1e-4) {
                    bail!("row {}: position {i} scored {}: not a log-probability", start + k, v[i]);
                }
            }
            let bytes: Vec<u8> = scored.iter().flatten().flat_map(|x| x.to_le_bytes()).collect();
            let c = work.record(chunk_file(start, start + n), start, n, &bytes)?;
            tokens += rows.iter().map(|r| r.segment_ids.iter().filter(|&&s| s != 0).count() as u64).sum::<u64>();
            done.insert(start, c);
        }
        pb.finish_and_clear();
    }
    let seconds = start_time.elapsed().as_secs_f64();

    // Assemble the scored snapshot in a hidden folder, verify it, then rename it into place.
    let manifest = publish_dir(&opts.out, |stage| {
        let shards = assemble(&opts.snapshot, stage, &snapshot.rows, &snapshot.manifest, &work, &done, &write_cfg, seq_len)?;
        let mut m = parent.clone();
        m.snapshot_id = Manifest::snapshot_id_for(&shards);
        m.shards = shards;
        m.ref_logprobs = Some(RefLogprobsInfo {
            model: opts.model.display().to_string(),
            model_sha256: model_sha.clone(),
            model_files: model_files.clone(),
            parent_snapshot_id: parent.snapshot_id.clone(),
            convention: CONVENTION.to_string(),
            dtype: "float32".into(),
            rows: snapshot.rows.len() as u64,
            scored_tokens: snapshot.rows.iter().map(Row::predicted).sum::<usize>() as u64,
            engine: opts.engine.clone(),
            tool: format!("rectify-trainer {} score", env!("CARGO_PKG_VERSION")),
        });
        m.conventions.insert("ref_logprobs".into(), CONVENTION.into());
        for side in &m.sidecars {
            std::fs::copy(opts.snapshot.join(&side.file), stage.join(&side.file)).with_context(|| format!("copying {}", side.file))?;
        }
        write_timings(&opts.snapshot, stage, snapshot.rows.len() - resumed_rows, tokens, seconds)?;
        schemas::write_atomic(&stage.join(MANIFEST_FILE), m.to_json().as_bytes())?;
        let (_, problems) = verify(stage)?;
        if !problems.is_empty() {
            bail!("the scored snapshot does not verify:\n  {}", problems.join("\n  "));
        }
        Ok(m)
    })?;
    work.remove()?;
    Ok(ScoreSummary { manifest, rows: snapshot.rows.len(), resumed_rows, tokens, seconds })
}

/// Write each shard again with `ref_logprobs` filled from the chunk files; every other column is
/// copied as it is, and the writer settings are the snapshot's own.
#[allow(clippy::too_many_arguments)]
fn assemble(
    src: &Path,
    dst: &Path,
    rows: &[Row],
    manifest: &Manifest,
    work: &WorkDir,
    done: &BTreeMap<usize, Chunk>,
    cfg: &WriteConfig,
    seq_len: usize,
) -> anyhow::Result<Vec<schemas::ShardInfo>> {
    let mut values: Vec<Vec<f32>> = Vec::with_capacity(rows.len());
    for c in done.values() {
        anyhow::ensure!(c.start == values.len(), "scores for row {} missing", values.len());
        let v = read_chunk(&work.read(c)?);
        values.extend(v.chunks_exact(seq_len).map(<[f32]>::to_vec));
    }
    anyhow::ensure!(values.len() == rows.len(), "scored {} of {} rows", values.len(), rows.len());
    let schema = Arc::new(shard::train_schema());
    let mut shards = vec![];
    let mut first = 0;
    for info in &manifest.shards {
        let path = src.join(&info.file);
        let file = std::fs::File::open(&path).with_context(|| format!("cannot open {}", path.display()))?;
        let batches: Vec<RecordBatch> = ParquetRecordBatchReaderBuilder::try_new(file)?.build()?.collect::<Result<_, _>>()?;
        let batch = arrow::compute::concat_batches(&schema, &batches)?;
        let n = batch.num_rows();
        anyhow::ensure!(n as u64 == info.rows, "{}: {n} rows, manifest says {}", info.file, info.rows);
        let mut b = ListBuilder::new(Float32Builder::new()).with_field(Arc::new(arrow::datatypes::Field::new(
            "item",
            arrow::datatypes::DataType::Float32,
            false,
        )));
        for v in &values[first..first + n] {
            b.values().append_slice(v);
            b.append(true);
        }
        let idx = schema.index_of(shard::REF_LOGPROBS)?;
        let mut columns: Vec<ArrayRef> = batch.columns().to_vec();
        columns[idx] = Arc::new(b.finish());
        let scored = RecordBatch::try_new(schema.clone(), columns)?;
        shards.push(write_shard(dst, &info.file, &scored, cfg, &[shard::EXAMPLE_IDS])?);
        first += n;
    }
    Ok(shards)
}

/// The parent's `timings.json` plus a `score` entry for this run (not hashed: it varies).
fn write_timings(src: &Path, dst: &Path, rows: usize, tokens: u64, seconds: f64) -> anyhow::Result<()> {
    let file = TIMINGS_FILE;
    let mut timings: Vec<StageTiming> =
        std::fs::read_to_string(src.join(file)).ok().and_then(|t| serde_json::from_str(&t).ok()).unwrap_or_default();
    let per_second = |n: f64| n / seconds.max(1e-9);
    timings.push(StageTiming {
        stage: "score".into(),
        seconds,
        rows_in: rows as u64,
        rows_per_second: per_second(rows as f64),
        tokens,
        tokens_per_second: per_second(tokens as f64),
    });
    std::fs::write(dst.join(file), serde_json::to_string_pretty(&timings)? + "\n")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_output_is_beside_the_snapshot_however_its_path_is_written() {
        let tmp = tempfile::tempdir().unwrap();
        let snap = tmp.path().join("snap");
        std::fs::create_dir(&snap).unwrap();
        assert_eq!(default_out(Path::new("a/snap")).unwrap(), Path::new("a/snap-scored"));
        assert_eq!(default_out(Path::new("snap/")).unwrap(), Path::new("snap-scored"));
        assert_eq!(default_out(&snap.join(".")).unwrap(), std::fs::canonicalize(tmp.path()).unwrap().join("snap-scored"));
    }

    #[test]
    fn an_output_in_or_around_the_snapshot_is_refused_before_anything_is_read() {
        let tmp = tempfile::tempdir().unwrap();
        let snap = tmp.path().join("snap");
        std::fs::create_dir(&snap).unwrap();
        for (out, force) in [(snap.join("x-scored"), false), (snap.join("."), true), (tmp.path().to_path_buf(), true)] {
            let opts = ScoreOptions {
                model: tmp.path().join("no-model.gguf"),
                snapshot: snap.join("../snap/"),
                out: out.clone(),
                force,
                chunk_rows: 1,
                engine: String::new(),
            };
            let err = score::<burn::backend::Flex>(&opts, &Default::default()).err().expect("refused").to_string();
            assert!(err.contains("must be a folder beside the snapshot"), "{}: {err}", out.display());
        }
    }
}
