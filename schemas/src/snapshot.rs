//! A snapshot on disk: its file names, reading and verifying it against its manifest, its packed
//! rows, writing shards and sidecars, and publishing a finished folder atomically.

use crate::manifest::{Manifest, ShardInfo, MANIFEST_FILE};
use crate::recipe::{SnapshotKind, WriteConfig};
use anyhow::{bail, Context};
use arrow::array::{Array, AsArray, Int32Array, RecordBatch};
use arrow::datatypes::{DataType, Float32Type, Int32Type, Int8Type};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use parquet::schema::types::ColumnPath;
use serde::{Deserialize, Serialize};
use std::path::Path;

pub const TOKENIZER_FILE: &str = "tokenizer.json";
pub const TEMPLATE_FILE: &str = "chat_template.jinja";
pub const DROPPED_FILE: &str = "dropped.jsonl";
pub const QUARANTINE_FILE: &str = "quarantine.jsonl";
pub const TIMINGS_FILE: &str = "timings.json";

/// Wall time and throughput of one stage; kept out of the manifest so it stays reproducible.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StageTiming {
    pub stage: String,
    pub seconds: f64,
    pub rows_in: u64,
    pub rows_per_second: f64,
    pub tokens: u64,
    pub tokens_per_second: f64,
}

pub fn read_manifest(dir: &Path) -> anyhow::Result<Manifest> {
    let path = dir.join(MANIFEST_FILE);
    let text = std::fs::read_to_string(&path).map_err(|e| anyhow::anyhow!("{}", not_a_snapshot(dir, e)))?;
    let mut m: Manifest = serde_json::from_str(&text).with_context(|| format!("{}: not a valid manifest", path.display()))?;
    // Manifests written before the system prompt was recorded beside the tokenizer have it in
    // their resolved recipe (a rollouts or scored snapshot carries its parent's).
    if m.tokenizer.system_prompt.is_none() {
        m.tokenizer.system_prompt = m.recipe.resolved["tokenizer"]["system_prompt"].as_str().map(str::to_string);
    }
    Ok(m)
}

/// Why `dir` has no readable manifest, with what to pass instead where that can be told: the
/// manifest file itself, or a folder whose subfolders are snapshots (`snapshots/eval`).
fn not_a_snapshot(dir: &Path, e: std::io::Error) -> String {
    if !dir.exists() {
        return format!("snapshot folder {} does not exist", dir.display());
    }
    if dir.is_file() {
        let hint = if dir.file_name().is_some_and(|n| n == MANIFEST_FILE) { " (give the snapshot's folder, not its manifest)" } else { "" };
        return format!("{} is a file, not a snapshot folder{hint}", dir.display());
    }
    let mut inside: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|d| d.path().join(MANIFEST_FILE).is_file())
        .map(|d| d.file_name().to_string_lossy().into_owned())
        .collect();
    inside.sort();
    if !inside.is_empty() {
        return format!("{} is not a snapshot but holds snapshots: {} (name one of them)", dir.display(), inside.join(", "));
    }
    format!("{} has no {MANIFEST_FILE}: not a snapshot, or its build did not finish ({e})", dir.display())
}

/// Re-hash every file a manifest lists (`pipeline verify`): the problems found (empty = the
/// snapshot is intact), and the manifest.
pub fn verify(dir: &Path) -> anyhow::Result<(Manifest, Vec<String>)> {
    let manifest = read_manifest(dir)?;
    let mut problems = vec![];
    for info in manifest.shards.iter().chain(&manifest.sidecars) {
        let path = dir.join(&info.file);
        let Ok(meta) = std::fs::metadata(&path) else {
            problems.push(format!("{}: missing", info.file));
            continue;
        };
        if meta.len() != info.bytes {
            problems.push(format!("{}: {} bytes, manifest says {}", info.file, meta.len(), info.bytes));
        }
        let sha = crate::sha256_file(&path)?;
        if sha != info.sha256 {
            problems.push(format!("{}: sha256 {sha}, manifest says {}", info.file, info.sha256));
        }
    }
    let id = Manifest::snapshot_id_for(&manifest.shards);
    if id != manifest.snapshot_id {
        problems.push(format!("snapshot id {id} from the shard hashes, manifest says {}", manifest.snapshot_id));
    }
    Ok((manifest, problems))
}

#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub input_ids: Vec<i32>,
    pub loss_mask: Vec<i8>,
    pub position_ids: Vec<i32>,
    pub segment_ids: Vec<i32>,
    pub ref_logprobs: Option<Vec<f32>>,
}

impl Row {
    /// Position `i` is a training target: `loss_mask[i]` is set. Position 0 never is: nothing
    /// precedes it (and the format sets the mask to 0 at every example's first token).
    pub fn is_target(&self, i: usize) -> bool {
        i > 0 && self.loss_mask[i] != 0
    }

    /// Position `i` is predicted from earlier tokens of its own example: not padding and not an
    /// example's first token. Reference log-probabilities are stored exactly there.
    pub fn is_predicted(&self, i: usize) -> bool {
        i > 0 && self.segment_ids[i] != 0 && self.segment_ids[i] == self.segment_ids[i - 1]
    }

    /// Number of training targets ([`Row::is_target`]).
    pub fn targets(&self) -> usize {
        (0..self.loss_mask.len()).filter(|&i| self.is_target(i)).count()
    }

    /// Tokens in the row's longest example: positions restart with each packed example, so this,
    /// not the row's length, is what must fit in a model's context.
    pub fn longest_example(&self) -> usize {
        self.position_ids.iter().max().map_or(0, |&p| p as usize + 1)
    }

    /// The `(start, len)` runs of the row's packed examples, padding (segment 0) left out.
    pub fn examples(&self) -> Vec<(usize, usize)> {
        segment_runs(&self.segment_ids).into_iter().filter(|&(start, _)| self.segment_ids[start] != 0).collect()
    }

    /// Number of predicted positions ([`Row::is_predicted`]).
    pub fn predicted(&self) -> usize {
        (0..self.segment_ids.len()).filter(|&i| self.is_predicted(i)).count()
    }

    /// What training relies on and the pipeline writes: every column `seq_len` long, and the
    /// loss mask 0 or 1 and set only where a token is predicted from its own example (a mask on
    /// an example's first token would train it to follow the one before; one on padding would
    /// count tokens that are cut away).
    pub fn check(&self, seq_len: usize) -> Result<(), String> {
        let lens = [
            ("input_ids", self.input_ids.len()),
            ("loss_mask", self.loss_mask.len()),
            ("position_ids", self.position_ids.len()),
            ("segment_ids", self.segment_ids.len()),
            ("ref_logprobs", self.ref_logprobs.as_ref().map_or(seq_len, Vec::len)),
        ];
        if let Some((column, len)) = lens.iter().find(|(_, len)| *len != seq_len) {
            return Err(format!("column `{column}` has {len} values, not the snapshot's seq_len {seq_len}"));
        }
        if let Some(i) = self.loss_mask.iter().position(|&m| m != 0 && m != 1) {
            return Err(format!("column `loss_mask` holds {} at position {i}; it must be 0 or 1", self.loss_mask[i]));
        }
        if let Some(i) = (0..seq_len).find(|&i| self.loss_mask[i] != 0 && !self.is_predicted(i)) {
            let what = if i == 0 || self.segment_ids[i] == 0 { "padding or the row's first token" } else { "an example's first token" };
            return Err(format!("column `loss_mask` is set at position {i}, {what}, which nothing in its example predicts"));
        }
        Ok(())
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
    for (i, row) in rows.iter().enumerate() {
        row.check(seq_len).map_err(|e| anyhow::anyhow!("snapshot {}: row {i} (`pipeline inspect {0} --row {i}`): {e}", dir.display()))?;
    }
    Ok(Snapshot { manifest, seq_len, rows })
}

impl Snapshot {
    /// Every token id the rows hold (padding included), for checking that a model reads them as
    /// the snapshot's tokenizer wrote them.
    pub fn token_ids(&self) -> impl Iterator<Item = u32> + '_ {
        self.rows.iter().flat_map(|r| r.input_ids.iter().map(|&t| t as u32))
    }

    /// Tokens in the longest example of any row (see [`Row::longest_example`]).
    pub fn longest_example(&self) -> usize {
        self.rows.iter().map(Row::longest_example).max().unwrap_or(0)
    }

    /// Fail unless the snapshot carries reference log-probabilities in its manifest and in every
    /// row (what `iwsft` needs), saying how to get them.
    pub fn require_ref_logprobs(&self, dir: &Path) -> anyhow::Result<()> {
        let how = format!(
            "run `trainer score --model MODEL --snapshot {} --out SCORED` (or `make score` for the default snapshot) and train on the scored snapshot",
            dir.display()
        );
        if self.manifest.ref_logprobs.is_none() {
            bail!(
                "snapshot {} has no reference log-probabilities (its manifest's `ref_logprobs` is null), which the iwsft loss needs: {how}",
                dir.display()
            );
        }
        if let Some(i) = self.rows.iter().position(|r| r.ref_logprobs.as_ref().is_none_or(|v| v.len() != r.input_ids.len())) {
            bail!(
                "snapshot {}: row {i} has no reference log-probabilities (or the wrong number), which the iwsft loss needs: {how}",
                dir.display()
            );
        }
        Ok(())
    }
}

/// The manifest of a snapshot whose shards and sidecars match it, of the expected kind: a
/// corrupted shard must not train or evaluate silently.
pub fn verified_manifest(dir: &Path, kind: SnapshotKind) -> anyhow::Result<Manifest> {
    let (manifest, problems) = verify(dir).with_context(|| format!("snapshot {}", dir.display()))?;
    if !problems.is_empty() {
        bail!("snapshot {} does not match its manifest (run `pipeline verify`):\n  {}", dir.display(), problems.join("\n  "));
    }
    if manifest.kind != kind {
        // Said without naming the command: training, scoring, `rows` and `probs` all read train
        // snapshots, evaluation, sampling and `bench-generate` prompts snapshots.
        let wants = match kind {
            SnapshotKind::Train => "this command needs a `train` snapshot (a recipe with `kind: train`)",
            SnapshotKind::Prompts => {
                "this command needs a `prompts` snapshot (a recipe with `kind: prompts`, as datasets/recipes/eval/ holds)"
            }
            SnapshotKind::Rollouts => "this command needs a `rollouts` snapshot (`trainer sample` writes one)",
        };
        bail!("snapshot {} is a `{}` snapshot; {wants}", dir.display(), manifest.kind.as_str());
    }
    Ok(manifest)
}

/// Calls `f` on every record batch of every shard, in manifest order.
pub fn for_each_batch(dir: &Path, manifest: &Manifest, mut f: impl FnMut(&RecordBatch) -> anyhow::Result<()>) -> anyhow::Result<()> {
    for shard in &manifest.shards {
        let path = dir.join(&shard.file);
        // A missing or damaged shard names itself and the check that tells the whole story.
        let damaged = || format!("shard {} (run `pipeline verify {}`)", path.display(), dir.display());
        let file = std::fs::File::open(&path).with_context(damaged)?;
        for batch in ParquetRecordBatchReaderBuilder::try_new(file).with_context(damaged)?.build().with_context(damaged)? {
            f(&batch.with_context(damaged)?).with_context(|| format!("reading {}", path.display()))?;
        }
    }
    Ok(())
}

/// The segments of one packed row as `(start, len)` runs of equal segment id, in order.
/// Padding (segment 0) is its own run: its outputs are never used, but computing them keeps
/// shapes whole.
pub fn segment_runs(segment_ids: &[i32]) -> Vec<(usize, usize)> {
    let mut runs = vec![];
    let mut start = 0;
    for i in 1..=segment_ids.len() {
        if i == segment_ids.len() || segment_ids[i] != segment_ids[start] {
            runs.push((start, i - start));
            start = i;
        }
    }
    runs
}

fn read_rows(batch: &RecordBatch, out: &mut Vec<Row>) -> anyhow::Result<()> {
    // A column of another type is an error naming it, not a panic in a downcast.
    let col = |name: &str, want: DataType| -> anyhow::Result<&arrow::array::ListArray> {
        let c = batch.column_by_name(name).with_context(|| format!("column `{name}` missing"))?;
        c.as_list_opt::<i32>()
            .filter(|l| l.value_type() == want)
            .with_context(|| format!("column `{name}` is {}, not a list of {want}", c.data_type()))
    };
    let ids = col("input_ids", DataType::Int32)?;
    let mask = col("loss_mask", DataType::Int8)?;
    let pos = col("position_ids", DataType::Int32)?;
    let seg = col("segment_ids", DataType::Int32)?;
    let refs = col("ref_logprobs", DataType::Float32)?;
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

/// zstd, small row groups so a reader can seek, and no dictionary encoding on token columns
/// (token ids barely repeat within a page; dictionaries only cost). The writer is
/// single-threaded and stamps no time, so the same rows give the same bytes.
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

/// Write one shard file and describe it for the manifest.
pub fn write_shard(
    dir: &Path,
    file: &str,
    batch: &RecordBatch,
    cfg: &WriteConfig,
    dictionary_columns: &[&str],
) -> anyhow::Result<ShardInfo> {
    let path = dir.join(file);
    let out = std::fs::File::create(&path).with_context(|| format!("cannot create {}", path.display()))?;
    let mut writer = ArrowWriter::try_new(out, batch.schema(), Some(properties(cfg, dictionary_columns)?))?;
    writer.write(batch)?;
    writer.close()?;
    let (tokens, loss_tokens) = token_counts(batch);
    Ok(ShardInfo {
        file: file.to_string(),
        sha256: crate::sha256_file(&path)?,
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
        sha256: crate::sha256_hex(text.as_bytes()),
        bytes: text.len() as u64,
        rows: text.lines().count() as u64,
        tokens: 0,
        loss_tokens: 0,
    })
}

/// Whether a command writing a snapshot may replace `out`: nothing there or an empty folder,
/// and with `force` a snapshot (a folder holding its manifest). Never anything else, `--force`
/// or not: a replace deletes the folder, and `--out` naming the recipe's own folder or a project
/// by mistake must not cost its files.
pub fn check_replaceable(out: &Path, force: bool) -> anyhow::Result<()> {
    if std::fs::symlink_metadata(out).is_err() {
        return Ok(());
    }
    if out.is_dir() && std::fs::read_dir(out).is_ok_and(|mut d| d.next().is_none()) {
        return Ok(());
    }
    if !out.join(MANIFEST_FILE).is_file() {
        bail!(
            "{} exists and is not a snapshot (no {MANIFEST_FILE}): it is not replaced, with --force or without; choose another --out",
            out.display()
        );
    }
    if !force {
        bail!("{} already holds a snapshot; pass --force to replace it", out.display());
    }
    Ok(())
}

/// Fill a new folder and put it at `out` atomically: `fill` writes into a hidden temp folder
/// beside `out`, which replaces `out` (if any) only once `fill` succeeded, so an interrupted or
/// failed run never leaves a half-written folder under the real name. The caller decides whether
/// an existing `out` may be replaced.
pub fn publish_dir<T>(out: &Path, fill: impl FnOnce(&Path) -> anyhow::Result<T>) -> anyhow::Result<T> {
    // A file there would be moved aside and then fail to be removed as a folder: the user's
    // file hidden, and an error.
    if out.exists() && !out.is_dir() {
        bail!("{} is a file, not a folder: choose another path for the folder, or remove the file first", out.display());
    }
    let parent = out.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).with_context(|| format!("cannot create {}", parent.display()))?;
    let name = out.file_name().and_then(|n| n.to_str()).with_context(|| format!("{} needs a folder name", out.display()))?;
    let tmp = parent.join(format!(".{name}.tmp-{}", std::process::id()));
    remove_leftovers(parent, name);
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
    // Removes the temp folder on an error and on a panic in `fill` alike.
    struct Cleanup<'a>(&'a Path);
    impl Drop for Cleanup<'_> {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(self.0);
        }
    }
    let cleanup = Cleanup(&tmp);
    let value = fill(&tmp)?;
    // On disk before the rename makes them the real thing, so a crash cannot publish empty files.
    sync_tree(&tmp)?;
    std::mem::forget(cleanup);
    if out.exists() {
        let old = parent.join(format!(".{name}.old-{}", std::process::id()));
        std::fs::rename(out, &old).with_context(|| format!("cannot move {} aside", out.display()))?;
        std::fs::rename(&tmp, out).with_context(|| format!("cannot rename {} to {}", tmp.display(), out.display()))?;
        std::fs::remove_dir_all(&old).with_context(|| format!("cannot remove {}", old.display()))?;
    } else {
        std::fs::rename(&tmp, out).with_context(|| format!("cannot rename {} to {}", tmp.display(), out.display()))?;
    }
    // The renames themselves (best effort, as for every folder: some file systems cannot sync
    // one, and the files in it are synced already).
    let _ = std::fs::File::open(parent).and_then(|d| d.sync_all());
    Ok(value)
}

/// Removes `.NAME.tmp-PID` and `.NAME.old-PID` folders whose process is gone: what a killed run
/// left of an earlier publish of the same name (a checkpoint is 1.6 GB for SmolLM2-135M). A
/// live process's folders are left to it. A run killed between its two renames left `out`
/// missing and the last complete copy in `.old`: that one is put back, not removed.
fn remove_leftovers(parent: &Path, name: &str) {
    remove_leftovers_of(parent, |n| n == name);
}

/// [`remove_leftovers`] for every name in `parent`: a run whose checkpoints are named by step
/// leaves temp folders under names no later publish repeats.
pub fn remove_all_leftovers(parent: &Path) {
    remove_leftovers_of(parent, |_| true);
}

/// The leftovers of the names `of` accepts; each one's published folder is `parent/NAME`.
fn remove_leftovers_of(parent: &Path, of: impl Fn(&str) -> bool) {
    let Ok(entries) = std::fs::read_dir(parent) else { return };
    for entry in entries.flatten() {
        let file_name = entry.file_name();
        let Some(hidden) = file_name.to_str().and_then(|n| n.strip_prefix('.')) else { continue };
        let (old, name, pid) = match (hidden.rsplit_once(".tmp-"), hidden.rsplit_once(".old-")) {
            (Some((name, pid)), _) => (false, name, pid),
            (_, Some((name, pid))) => (true, name, pid),
            _ => continue,
        };
        if !of(name) {
            continue;
        }
        let out = parent.join(name);
        let Ok(pid) = pid.parse::<u32>() else { continue };
        if pid == std::process::id() || Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        // `symlink_metadata`, not `exists`: a dangling link at `out` is not a missing folder.
        if !(old && std::fs::symlink_metadata(&out).is_err() && std::fs::rename(entry.path(), &out).is_ok()) {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// fsync every file and folder under `dir`, and `dir` itself.
fn sync_tree(dir: &Path) -> anyhow::Result<()> {
    for entry in std::fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))? {
        let path = entry?.path();
        if path.is_dir() {
            sync_tree(&path)?;
        } else {
            std::fs::File::open(&path).and_then(|f| f.sync_all()).with_context(|| format!("cannot sync {}", path.display()))?;
        }
    }
    let _ = std::fs::File::open(dir).and_then(|d| d.sync_all());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        v.sort();
        v
    }

    #[test]
    fn publish_dir_leaves_nothing_behind_on_an_error_or_a_panic_and_replaces_on_success() {
        let root = tempfile::tempdir().unwrap();
        let out = root.path().join("snap");
        publish_dir(&out, |d| Ok(std::fs::write(d.join("a"), "1")?)).unwrap();
        assert_eq!(names(root.path()), ["snap"]);

        let err = publish_dir(&out, |d| -> anyhow::Result<()> {
            std::fs::write(d.join("a"), "2")?;
            anyhow::bail!("failed part way")
        });
        assert!(err.is_err());
        let panicked = std::panic::catch_unwind(|| {
            publish_dir(&out, |d| -> anyhow::Result<()> {
                std::fs::write(d.join("a"), "3").unwrap();
                panic!("a bug part way")
            })
        });
        assert!(panicked.is_err());
        assert_eq!(names(root.path()), ["snap"], "no temp folder is left");
        assert_eq!(std::fs::read_to_string(out.join("a")).unwrap(), "1", "the published folder is untouched");

        publish_dir(&out, |d| Ok(std::fs::write(d.join("b"), "4")?)).unwrap();
        assert_eq!((names(root.path()), names(&out)), (vec!["snap".to_string()], vec!["b".to_string()]));

        // A file where the folder would go is refused before anything is written, and kept.
        let file = root.path().join("notes.txt");
        std::fs::write(&file, "mine").unwrap();
        let err = publish_dir(&file, |d| Ok(std::fs::write(d.join("a"), "1")?)).unwrap_err().to_string();
        assert!(err.contains("notes.txt is a file, not a folder"), "{err}");
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "mine");
        assert_eq!(names(root.path()), ["notes.txt", "snap"]);
    }

    #[test]
    fn a_path_that_is_not_a_snapshot_says_what_to_pass() {
        let root = tempfile::tempdir().unwrap();
        let err = |p: &Path| read_manifest(p).unwrap_err().to_string();
        assert!(err(&root.path().join("nope")).ends_with("nope does not exist"), "{}", err(&root.path().join("nope")));
        // A folder of snapshots (as snapshots/eval is) names them, sorted.
        for name in ["math500", "gsm8k_test"] {
            std::fs::create_dir(root.path().join(name)).unwrap();
            std::fs::write(root.path().join(name).join(MANIFEST_FILE), "{}").unwrap();
        }
        std::fs::create_dir(root.path().join("logs")).unwrap();
        assert!(err(root.path()).ends_with("holds snapshots: gsm8k_test, math500 (name one of them)"), "{}", err(root.path()));
        let manifest = root.path().join("math500").join(MANIFEST_FILE);
        assert!(err(&manifest).contains("give the snapshot's folder, not its manifest"), "{}", err(&manifest));
        assert!(err(&root.path().join("logs")).contains("has no manifest.json: not a snapshot"), "{}", err(&root.path().join("logs")));
    }

    #[test]
    fn rows_that_would_train_what_nothing_predicts_are_refused() {
        // Two examples (segments 1 and 2) and two pads; the second example's tokens are trained.
        let row = Row {
            input_ids: vec![5, 6, 7, 8, 9, 0, 0],
            loss_mask: vec![0, 0, 0, 0, 1, 0, 0],
            position_ids: vec![0, 1, 2, 0, 1, 0, 0],
            segment_ids: vec![1, 1, 1, 2, 2, 0, 0],
            ref_logprobs: None,
        };
        assert_eq!(row.check(7), Ok(()));
        let with = |f: &dyn Fn(&mut Row)| {
            let mut r = row.clone();
            f(&mut r);
            r.check(7).unwrap_err()
        };
        assert!(with(&|r| r.loss_mask[3] = 1).contains("position 3, an example's first token"));
        assert!(with(&|r| r.loss_mask[6] = 1).contains("position 6, padding"));
        assert!(with(&|r| r.loss_mask[0] = 1).contains("position 0"));
        assert!(with(&|r| r.loss_mask[4] = 2).contains("holds 2 at position 4"));
        assert!(with(&|r| r.segment_ids.pop().map_or((), drop)).contains("`segment_ids` has 6 values"));
        assert!(with(&|r| r.ref_logprobs = Some(vec![0.0; 3])).contains("`ref_logprobs` has 3 values"));
    }

    #[test]
    fn publish_dir_removes_what_a_killed_run_left_of_the_same_name() {
        let root = tempfile::tempdir().unwrap();
        // pid_max is at most 2^22, so this pid has no process; pid 1 always has one.
        for leftover in [".snap.tmp-4194305", ".snap.old-4194306", ".snap.tmp-1", ".snapshot.tmp-4194305", ".snap.tmp-x"] {
            std::fs::create_dir(root.path().join(leftover)).unwrap();
        }
        publish_dir(&root.path().join("snap"), |d| Ok(std::fs::write(d.join("a"), "1")?)).unwrap();
        assert_eq!(names(root.path()), [".snap.tmp-1", ".snap.tmp-x", ".snapshot.tmp-4194305", "snap"]);

        // Killed between its renames: `other` is missing, its last copy is in `.old`. A publish
        // that then fails leaves that copy back in place.
        let old = root.path().join(".other.old-4194305");
        std::fs::create_dir(&old).unwrap();
        std::fs::write(old.join("a"), "last").unwrap();
        let other = root.path().join("other");
        assert!(publish_dir(&other, |_| -> anyhow::Result<()> { anyhow::bail!("failed") }).is_err());
        assert_eq!(std::fs::read_to_string(other.join("a")).unwrap(), "last");
        assert!(!old.exists());
    }

    #[test]
    fn only_a_snapshot_or_an_empty_folder_is_replaced() {
        let root = tempfile::tempdir().unwrap();
        let p = |n: &str| root.path().join(n);
        assert!(check_replaceable(&p("missing"), false).is_ok());
        std::fs::create_dir(p("empty")).unwrap();
        assert!(check_replaceable(&p("empty"), false).is_ok());
        std::fs::create_dir(p("project")).unwrap();
        std::fs::write(p("project/notes.txt"), "mine").unwrap();
        std::fs::write(p("file"), "mine").unwrap();
        for other in ["project", "file"] {
            let e = check_replaceable(&p(other), true).unwrap_err().to_string();
            assert!(e.contains("is not a snapshot") && e.contains("choose another --out"), "{e}");
        }
        std::fs::create_dir(p("snap")).unwrap();
        std::fs::write(p("snap").join(MANIFEST_FILE), "{}").unwrap();
        assert!(check_replaceable(&p("snap"), false).unwrap_err().to_string().contains("pass --force"));
        assert!(check_replaceable(&p("snap"), true).is_ok());
    }

    #[test]
    fn leftovers_of_every_name_go_a_live_process_s_stay_a_last_copy_is_put_back() {
        let root = tempfile::tempdir().unwrap();
        for leftover in [".step-000002.tmp-4194305", ".step-000003.old-4194305", ".step-000004.tmp-1", "step-000001"] {
            std::fs::create_dir(root.path().join(leftover)).unwrap();
        }
        remove_all_leftovers(root.path());
        assert_eq!(names(root.path()), [".step-000004.tmp-1", "step-000001", "step-000003"]);
    }
}
