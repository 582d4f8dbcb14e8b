//! `pipeline inspect` and `pipeline stats`: read a snapshot back the way a person checks it.

use anyhow::{bail, Context};
use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{Int32Type, Int8Type};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use schemas::manifest::Manifest;
use schemas::recipe::SnapshotKind;
use schemas::snapshot::{read_manifest, TOKENIZER_FILE};
use std::fmt::Write as _;
use std::path::Path;

/// How trained spans are marked: ANSI colour, or brackets for pipes and files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Marking {
    Colour,
    Brackets,
}

/// Read global row `row` of a snapshot (rows numbered across shards in manifest order).
pub fn read_row(dir: &Path, manifest: &Manifest, row: usize) -> anyhow::Result<(RecordBatch, String)> {
    let mut first = 0usize;
    for shard in &manifest.shards {
        let rows = shard.rows as usize;
        if row < first + rows {
            let path = dir.join(&shard.file);
            let damaged = || format!("shard {} (run `pipeline verify {}`)", path.display(), dir.display());
            let file = std::fs::File::open(&path).with_context(damaged)?;
            let reader = ParquetRecordBatchReaderBuilder::try_new(file)
                .with_context(damaged)?
                .with_row_selection(parquet::arrow::arrow_reader::RowSelection::from(vec![
                    parquet::arrow::arrow_reader::RowSelector::skip(row - first),
                    parquet::arrow::arrow_reader::RowSelector::select(1),
                ]))
                .build()
                .with_context(damaged)?;
            let batches: Vec<RecordBatch> = reader.collect::<Result<_, _>>().with_context(damaged)?;
            let batch = arrow::compute::concat_batches(&batches[0].schema(), &batches)?;
            return Ok((batch, shard.file.clone()));
        }
        first += rows;
    }
    bail!("row {row} is out of range: the snapshot has {first} rows")
}

fn list_i32(batch: &RecordBatch, name: &str) -> Vec<i32> {
    let list = batch.column_by_name(name).expect("column").as_list::<i32>();
    list.value(0).as_primitive::<Int32Type>().values().to_vec()
}

pub fn inspect(dir: &Path, row: usize, marking: Marking) -> anyhow::Result<String> {
    let manifest = read_manifest(dir)?;
    let tokenizer = tokenizers::Tokenizer::from_file(dir.join(TOKENIZER_FILE))
        .map_err(|e| anyhow::anyhow!("cannot load {}: {e}", dir.join(TOKENIZER_FILE).display()))?;
    let decode = |ids: &[u32]| tokenizer.decode(ids, false).unwrap_or_else(|e| format!("<undecodable: {e}>"));
    let (batch, shard) = read_row(dir, &manifest, row)?;
    let total: u64 = manifest.shards.iter().map(|s| s.rows).sum();
    let mut out = String::new();
    if manifest.kind == SnapshotKind::Prompts {
        let s =
            |name: &str| batch.column_by_name(name).map(|c| c.as_string::<i32>()).filter(|c| c.is_valid(0)).map(|c| c.value(0).to_string());
        let ids = list_i32(&batch, "prompt_ids");
        writeln!(out, "row {row} of {total} ({shard}): {}, {} prompt tokens", s("id").unwrap_or_default(), ids.len())?;
        writeln!(out, "--- prompt as the model sees it ---\n{}", s("prompt_text").unwrap_or_default())?;
        writeln!(out, "--- gold ---\n{}", s("gold").unwrap_or_else(|| "(none)".into()))?;
        if let Some(t) = s("tests") {
            writeln!(out, "--- tests ---\n{t}")?;
        }
        return Ok(out);
    }
    if manifest.kind == SnapshotKind::Rollouts {
        let s =
            |name: &str| batch.column_by_name(name).map(|c| c.as_string::<i32>()).filter(|c| c.is_valid(0)).map(|c| c.value(0).to_string());
        let sample = batch.column_by_name("sample").map(|c| c.as_primitive::<Int32Type>().value(0)).unwrap_or_default();
        let correct = batch.column_by_name("correct").is_some_and(|c| c.as_boolean().value(0));
        writeln!(
            out,
            "row {row} of {total} ({shard}): question {}, sample {sample}, {} ({}), finish {}, {} new tokens",
            s("question_id").unwrap_or_default(),
            if correct { "correct" } else { "wrong" },
            s("verifier").unwrap_or_default(),
            s("finish").unwrap_or_default(),
            list_i32(&batch, "completion_ids").len()
        )?;
        writeln!(out, "--- question ---\n{}", s("prompt").unwrap_or_default())?;
        writeln!(out, "--- completion ---\n{}", s("completion").unwrap_or_default())?;
        writeln!(out, "--- extracted ---\n{}", s("extracted").unwrap_or_else(|| "(none)".into()))?;
        writeln!(out, "--- gold ---\n{}", s("gold").unwrap_or_else(|| "(none)".into()))?;
        if let Some(t) = s("status") {
            writeln!(out, "--- sandbox ---\n{t}")?;
        }
        return Ok(out);
    }
    let ids = list_i32(&batch, "input_ids");
    let pos = list_i32(&batch, "position_ids");
    let seg = list_i32(&batch, "segment_ids");
    let mask: Vec<i8> =
        batch.column_by_name("loss_mask").expect("column").as_list::<i32>().value(0).as_primitive::<Int8Type>().values().to_vec();
    let example_ids = batch.column_by_name("example_ids").expect("column").as_list::<i32>().value(0);
    let example_ids = example_ids.as_string::<i32>();
    let has_ref = batch.column_by_name("ref_logprobs").is_some_and(|c| c.is_valid(0));
    let non_pad = seg.iter().filter(|&&s| s != 0).count();
    let trained = mask.iter().filter(|&&m| m != 0).count();
    let (open, close) = match marking {
        Marking::Colour => ("\x1b[1;32m", "\x1b[0m"),
        Marking::Brackets => ("⟦", "⟧"),
    };
    writeln!(
        out,
        "row {row} of {total} ({shard}): {} examples, {non_pad}/{} tokens used, {trained} trained, ref_logprobs {}",
        example_ids.len(),
        ids.len(),
        if has_ref { "present" } else { "null" }
    )?;
    writeln!(out, "trained tokens are shown {}", if marking == Marking::Colour { "in green" } else { "inside ⟦ ⟧" })?;
    for (s, example) in (1..).zip(example_ids.iter()) {
        let idx: Vec<usize> = (0..ids.len()).filter(|&i| seg[i] == s).collect();
        let (Some(&a), Some(&b)) = (idx.first(), idx.last()) else { continue };
        let n_train = idx.iter().filter(|&&i| mask[i] != 0).count();
        writeln!(
            out,
            "\n── segment {s}: {} · tokens {a}..={b} · positions {}..={} · {n_train} trained",
            example.unwrap_or("?"),
            pos[a],
            pos[b]
        )?;
        // Decode runs of equal mask value so trained spans can be marked.
        let mut i = a;
        while i <= b {
            let m = mask[i];
            let mut j = i;
            while j <= b && mask[j] == m {
                j += 1;
            }
            let text = decode(&ids[i..j].iter().map(|&t| t as u32).collect::<Vec<_>>());
            if m != 0 {
                write!(out, "{open}{text}{close}")?;
            } else {
                write!(out, "{text}")?;
            }
            i = j;
        }
        writeln!(out)?;
    }
    let pad = ids.len() - non_pad;
    if pad > 0 {
        writeln!(out, "\n── padding: {pad} tokens (id {})", ids[ids.len() - 1])?;
    }
    Ok(out)
}

pub fn stats(dir: &Path) -> anyhow::Result<String> {
    let m = read_manifest(dir)?;
    let mut out = String::new();
    writeln!(out, "snapshot {} ({}, {:?}), tokenizer {}", m.snapshot_id, m.name, m.kind, m.tokenizer.path)?;
    writeln!(out, "\n{:<14} {:>8} {:>8} {:>8}  dropped by reason", "stage", "in", "out", "dropped")?;
    for s in &m.stages {
        let reasons: Vec<String> = s.dropped.iter().map(|(r, n)| format!("{r}={n}")).collect();
        writeln!(out, "{:<14} {:>8} {:>8} {:>8}  {}", s.stage, s.rows_in, s.rows_out, s.rows_in - s.rows_out, reasons.join(", "))?;
    }
    if !m.decontamination.is_empty() {
        writeln!(out, "\n{:<16} {:>8} {:>14} {:>15}  examples", "benchmark", "items", "rows removed", "items overlapped")?;
        for d in &m.decontamination {
            let ex: Vec<String> = d.examples.iter().take(3).map(|(a, b)| format!("{a}~{b}")).collect();
            writeln!(out, "{:<16} {:>8} {:>14} {:>15}  {}", d.benchmark, d.items, d.contaminated_rows, d.contaminated_items, ex.join(" "))?;
        }
    }
    if let Some(p) = &m.packing {
        writeln!(
            out,
            "\npacking: {} examples in {} rows of {} tokens; {} non-pad of {} tokens = {:.2}% efficiency; {} loss tokens; {} truncated",
            p.examples,
            p.rows,
            p.seq_len,
            p.non_pad_tokens,
            p.tokens,
            100.0 * p.efficiency,
            p.loss_tokens,
            p.truncated_examples
        )?;
    }
    writeln!(out, "\n{:<34} {:>6} {:>10} {:>10} {:>10}  sha256", "file", "rows", "tokens", "loss", "bytes")?;
    for s in m.shards.iter().chain(&m.sidecars) {
        writeln!(out, "{:<34} {:>6} {:>10} {:>10} {:>10}  {}", s.file, s.rows, s.tokens, s.loss_tokens, s.bytes, &s.sha256[..16])?;
    }
    // The table is the manifest's; a file that is gone or of another size is said (`pipeline
    // verify` checks the hashes).
    for s in m.shards.iter().chain(&m.sidecars) {
        match std::fs::metadata(dir.join(&s.file)) {
            Err(_) => writeln!(out, "MISSING: {} (run `pipeline verify {}`)", s.file, dir.display())?,
            Ok(f) if f.len() != s.bytes => {
                writeln!(out, "CHANGED: {} holds {} bytes, not {} (run `pipeline verify {}`)", s.file, f.len(), s.bytes, dir.display())?
            }
            Ok(_) => {}
        }
    }
    let scored = match &m.ref_logprobs {
        Some(i) => format!(
            "scored by {} (sha256 {}), parent snapshot {}, {} tokens",
            i.model,
            &i.model_sha256[..16.min(i.model_sha256.len())],
            i.parent_snapshot_id,
            i.scored_tokens
        ),
        None => "not scored yet (null; `trainer score` fills them)".to_string(),
    };
    if m.kind == SnapshotKind::Train {
        writeln!(out, "\nreference log-probabilities: {scored}")?;
    }
    for o in &m.rollout_sources {
        let from = match (&o.snapshot_id, &o.rollouts) {
            (Some(id), Some(r)) => format!(
                "rollouts snapshot {id} (model sha256 {}, cache key {})",
                &r.key.model_sha256[..16.min(r.key.model_sha256.len())],
                r.cache_key
            ),
            _ => format!("file verified on ingest with verifier {}", o.verifier_version),
        };
        let reasons: Vec<String> = o.dropped.iter().map(|(r, n)| format!("{r}={n}")).collect();
        writeln!(
            out,
            "\nrollouts source `{}` ({}): {from}\n  {} samples, {} malformed, {} correct, {} kept; dropped {}",
            o.source,
            o.path,
            o.samples,
            o.malformed,
            o.correct,
            o.kept,
            if reasons.is_empty() { "none".to_string() } else { reasons.join(", ") }
        )?;
    }
    if m.kind == SnapshotKind::Rollouts {
        out.push_str(&rollouts_stats(dir, &m)?);
    }
    Ok(out)
}

/// Per source of a rollouts snapshot: samples, correct, truncated, and how many questions have
/// 0, 1, ..., K correct samples.
fn rollouts_stats(dir: &Path, m: &Manifest) -> anyhow::Result<String> {
    let (_, rows) = schemas::rollouts::load_rollouts(dir)?;
    let mut out = String::new();
    if let Some(r) = &m.rollouts {
        let s = &r.key.sampling;
        writeln!(
            out,
            "\nrollouts of {} (sha256 {}) on prompts {} ({}): {} questions x {}, temperature {}, top-p {}, top-k {}, {} new tokens, seed {}; cache key {}",
            r.model,
            &r.key.model_sha256[..16.min(r.key.model_sha256.len())],
            r.key.prompts_snapshot_id,
            r.prompts_snapshot,
            r.key.questions,
            r.key.samples_per_question,
            s.temperature,
            s.top_p,
            s.top_k,
            s.max_new_tokens,
            s.seed,
            r.cache_key
        )?;
        for v in &r.verifiers {
            writeln!(out, "  verifier {} {}: {} samples, {} correct", v.verifier, v.version, v.samples, v.correct)?;
        }
    }
    let k = m.rollouts.as_ref().map(|r| r.key.samples_per_question).unwrap_or(0);
    // Per source, in order of first appearance: samples, correct, truncated, and per question
    // (in order of first appearance) its correct count.
    type Counts = (String, [u64; 3], Vec<(String, usize)>);
    let mut sources: Vec<Counts> = vec![];
    for r in &rows {
        let i = match sources.iter().position(|(s, ..)| *s == r.source) {
            Some(i) => i,
            None => {
                sources.push((r.source.clone(), [0; 3], vec![]));
                sources.len() - 1
            }
        };
        let (_, counts, questions) = &mut sources[i];
        counts[0] += 1;
        counts[1] += r.correct as u64;
        counts[2] += (r.finish == schemas::generation::Finish::Length) as u64;
        match questions.last_mut() {
            Some((q, n)) if *q == r.question_id => *n += r.correct as usize,
            _ => questions.push((r.question_id.clone(), r.correct as usize)),
        }
    }
    let k = k.max(sources.iter().flat_map(|(.., q)| q.iter().map(|(_, n)| *n)).max().unwrap_or(0));
    let head: Vec<String> = (0..=k).map(|c| format!("{c:>5}")).collect();
    writeln!(out, "\n{:<16} {:>8} {:>8} {:>9}  questions with 0..{k} correct samples", "source", "samples", "correct", "truncated")?;
    writeln!(out, "{:<16} {:>8} {:>8} {:>9}  {}", "", "", "", "", head.join(""))?;
    for (source, [samples, correct, truncated], questions) in &sources {
        let mut hist = vec![0u64; k + 1];
        for (_, n) in questions {
            hist[*n] += 1;
        }
        let hist: Vec<String> = hist.iter().map(|h| format!("{h:>5}")).collect();
        writeln!(out, "{source:<16} {samples:>8} {correct:>8} {truncated:>9}  {}", hist.join(""))?;
    }
    Ok(out)
}
