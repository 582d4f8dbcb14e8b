//! Stage 7, pack: place tokenized examples into rows of exactly `seq_len` tokens with global
//! best-fit-decreasing, then shuffle the rows with the recipe seed.
//!
//! An example never spans two rows: one longer than `seq_len` is dropped or truncated, as the
//! recipe says, and counted. Within a row, positions restart at 0 for each example and the
//! example's first token is never a target, so nothing is learned across example boundaries.

use schemas::manifest::PackingReport;
use schemas::recipe::{Overlong, PackConfig};
use schemas::rng::shuffle;
use schemas::Dropped;
use std::collections::BTreeSet;

pub const STAGE: &str = "pack";

/// One example after chat template and tokenization.
#[derive(Debug, Clone)]
pub struct Tokenized {
    pub id: String,
    pub source: String,
    pub ids: Vec<u32>,
    /// Aligned with `ids`: 1 where the token is a training target.
    pub loss_mask: Vec<u8>,
}

/// One packed row, `seq_len` long, with every per-token column aligned to `input_ids`.
#[derive(Debug, Clone, PartialEq)]
pub struct PackedRow {
    pub input_ids: Vec<i32>,
    pub loss_mask: Vec<i8>,
    pub position_ids: Vec<i32>,
    /// 1, 2, ... for the examples in the row; 0 for padding.
    pub segment_ids: Vec<i32>,
    pub example_ids: Vec<String>,
    pub num_tokens: i32,
    pub num_loss_tokens: i32,
}

/// Best-fit-decreasing: longest first (ties by input order); each goes to the open row with the
/// least room that still fits it, else a new row. Returns the example indices of each row.
pub fn best_fit_decreasing(lengths: &[usize], capacity: usize) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..lengths.len()).collect();
    order.sort_by_key(|&i| (std::cmp::Reverse(lengths[i]), i));
    let mut rows: Vec<Vec<usize>> = vec![];
    // (room left, row index): the first entry at or above `len` is the best fit.
    let mut open: BTreeSet<(usize, usize)> = BTreeSet::new();
    for i in order {
        let len = lengths[i];
        assert!(len <= capacity && len > 0, "example longer than a row reached the packer");
        match open.range((len, 0)..).next().copied() {
            Some((room, row)) => {
                open.remove(&(room, row));
                rows[row].push(i);
                if room > len {
                    open.insert((room - len, row));
                }
            }
            None => {
                rows.push(vec![i]);
                if capacity > len {
                    open.insert((capacity - len, rows.len() - 1));
                }
            }
        }
    }
    rows
}

/// Pack `items` into rows and shuffle them. Returns the rows, the examples dropped here, and the
/// packing report.
pub fn pack(mut items: Vec<Tokenized>, cfg: &PackConfig, pad_id: u32, seed: u64) -> (Vec<PackedRow>, Vec<Dropped>, PackingReport) {
    let seq_len = cfg.seq_len;
    let mut dropped = vec![];
    let mut truncated = 0u64;
    items.retain_mut(|t| {
        let len = t.ids.len();
        if len > seq_len {
            match cfg.overlong {
                Overlong::Drop => {
                    dropped.push(drop_record(t, "longer_than_seq_len", format!("{len} tokens")));
                    return false;
                }
                Overlong::Truncate => {
                    t.ids.truncate(seq_len);
                    t.loss_mask.truncate(seq_len);
                }
            }
        }
        if t.loss_mask.iter().all(|&m| m == 0) {
            // Truncation can cut a long prompt's whole response away; say so.
            let detail = if len > seq_len { format!("truncated from {len} tokens") } else { String::new() };
            dropped.push(drop_record(t, "no_loss_tokens", detail));
            return false;
        }
        // Counted among the examples kept only, so the report's figures add up.
        truncated += u64::from(len > seq_len);
        true
    });
    let lengths: Vec<usize> = items.iter().map(|t| t.ids.len()).collect();
    let mut rows: Vec<PackedRow> = best_fit_decreasing(&lengths, seq_len)
        .iter()
        .map(|members| materialise(members.iter().map(|&i| &items[i]), seq_len, pad_id))
        .collect();
    shuffle(&mut rows, seed);

    let non_pad: u64 = rows.iter().map(|r| r.num_tokens as u64).sum();
    let total = (rows.len() * seq_len) as u64;
    let report = PackingReport {
        seq_len: seq_len as u64,
        rows: rows.len() as u64,
        examples: items.len() as u64,
        tokens: total,
        non_pad_tokens: non_pad,
        loss_tokens: rows.iter().map(|r| r.num_loss_tokens as u64).sum(),
        truncated_examples: truncated,
        efficiency: if total == 0 { 0.0 } else { non_pad as f64 / total as f64 },
    };
    (rows, dropped, report)
}

fn drop_record(t: &Tokenized, reason: &str, detail: impl Into<String>) -> Dropped {
    Dropped { stage: STAGE.into(), reason: reason.into(), id: t.id.clone(), source: t.source.clone(), detail: detail.into() }
}

fn materialise<'a>(members: impl Iterator<Item = &'a Tokenized>, seq_len: usize, pad_id: u32) -> PackedRow {
    let mut row = PackedRow {
        input_ids: Vec::with_capacity(seq_len),
        loss_mask: Vec::with_capacity(seq_len),
        position_ids: Vec::with_capacity(seq_len),
        segment_ids: Vec::with_capacity(seq_len),
        example_ids: vec![],
        num_tokens: 0,
        num_loss_tokens: 0,
    };
    for (segment, t) in members.enumerate() {
        row.example_ids.push(t.id.clone());
        for (pos, (&id, &m)) in t.ids.iter().zip(&t.loss_mask).enumerate() {
            row.input_ids.push(id as i32);
            // Nothing precedes an example's first token within its segment, so it is no target.
            row.loss_mask.push(if pos == 0 { 0 } else { m as i8 });
            row.position_ids.push(pos as i32);
            row.segment_ids.push(segment as i32 + 1);
        }
    }
    row.num_tokens = row.input_ids.len() as i32;
    row.num_loss_tokens = row.loss_mask.iter().map(|&m| m as i32).sum();
    row.input_ids.resize(seq_len, pad_id as i32);
    row.loss_mask.resize(seq_len, 0);
    row.position_ids.resize(seq_len, 0);
    row.segment_ids.resize(seq_len, 0);
    row
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(id: &str, len: usize) -> Tokenized {
        let mut loss_mask = vec![0u8; len];
        for m in loss_mask.iter_mut().skip(len / 2) {
            *m = 1;
        }
        Tokenized { id: id.into(), source: "s".into(), ids: (0..len as u32).map(|x| x + 10).collect(), loss_mask }
    }

    #[test]
    fn best_fit_decreasing_by_hand() {
        // Sorted: 6(a) 5(b) 4(c) 3(d) 2(e); capacity 10.
        // 6 -> row0 (room 4); 5 -> row1 (room 5); 4 -> row0, best fit (room 0);
        // 3 -> row1 (room 2); 2 -> row1 (room 0).
        let rows = best_fit_decreasing(&[4, 6, 3, 5, 2], 10);
        assert_eq!(rows, vec![vec![1, 0], vec![3, 2, 4]]);
    }

    #[test]
    fn rows_restart_positions_and_never_target_a_first_token() {
        let cfg = PackConfig { seq_len: 16, overlong: Overlong::Drop };
        let (rows, dropped, report) = pack(vec![item("a", 6), item("b", 4), item("long", 17)], &cfg, 2, 7);
        assert_eq!(dropped.len(), 1);
        assert_eq!(dropped[0].reason, "longer_than_seq_len");
        assert_eq!(rows.len(), 1);
        let r = &rows[0];
        assert_eq!(r.input_ids.len(), 16);
        assert_eq!(r.example_ids, ["a", "b"]);
        assert_eq!(r.segment_ids, [1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 0, 0, 0, 0, 0, 0]);
        assert_eq!(r.position_ids, [0, 1, 2, 3, 4, 5, 0, 1, 2, 3, 0, 0, 0, 0, 0, 0]);
        assert_eq!(r.loss_mask, [0, 0, 0, 1, 1, 1, 0, 0, 1, 1, 0, 0, 0, 0, 0, 0]);
        assert_eq!(&r.input_ids[10..], &[2; 6]);
        assert_eq!((r.num_tokens, r.num_loss_tokens), (10, 5));
        assert_eq!(report.efficiency, 10.0 / 16.0);
    }

    #[test]
    fn truncation_is_counted_and_first_token_rule_holds() {
        let cfg = PackConfig { seq_len: 16, overlong: Overlong::Truncate };
        let mut it = item("long", 20);
        it.loss_mask = vec![1; 20];
        let (rows, dropped, report) = pack(vec![it], &cfg, 0, 1);
        assert!(dropped.is_empty());
        assert_eq!(report.truncated_examples, 1);
        assert_eq!(rows[0].loss_mask[0], 0);
        assert_eq!(rows[0].num_loss_tokens, 15);
    }

    #[test]
    fn a_response_truncated_away_is_dropped_with_why_and_not_counted_as_truncated() {
        let cfg = PackConfig { seq_len: 16, overlong: Overlong::Truncate };
        let mut it = item("long_prompt", 20);
        it.loss_mask = [vec![0; 18], vec![1; 2]].concat();
        let (rows, dropped, report) = pack(vec![it], &cfg, 0, 1);
        assert!(rows.is_empty());
        assert_eq!((dropped[0].reason.as_str(), dropped[0].detail.as_str()), ("no_loss_tokens", "truncated from 20 tokens"));
        assert_eq!((report.examples, report.truncated_examples), (0, 0));
    }
}
