//! Batch assembly: the tensors of a micro-batch of packed rows, and its next-token targets.

use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};
use schemas::snapshot::{segment_runs, Row};

/// A micro-batch of rows: inputs, positions and the segment runs of each row as tensors, and
/// the trained positions on the host (the loss gathers just those, see `loss::objective`).
pub struct MicroBatch<B: Backend> {
    pub input_ids: Tensor<B, 2, Int>,
    pub positions: Tensor<B, 2, Int>,
    pub segments: Vec<Vec<(usize, usize)>>,
    pub targets: Targets,
}

/// The positions of a micro-batch whose next token is trained (loss mask set on it), in row
/// order: where each sits in the flattened `[batch * seq]` hidden states, the token it must
/// predict, and the reference model's log-probability of that token when every row has one.
#[derive(Debug, Clone, PartialEq)]
pub struct Targets {
    pub index: Vec<i64>,
    pub ids: Vec<i64>,
    pub reference: Option<Vec<f32>>,
}

impl Targets {
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
}

/// Rows are cut after their last real token (the longest row's): trailing padding is never a
/// target and attends only to itself, but as one segment its attention would cost `pad²` memory
/// per head and layer (a row one quarter full, as a few selected rollouts make, needs gigabytes).
pub fn micro_batch<B: Backend>(rows: &[&Row], device: &B::Device) -> MicroBatch<B> {
    let b = rows.len();
    let full = rows[0].input_ids.len();
    assert!(rows.iter().all(|r| r.input_ids.len() == full), "rows of one micro-batch have the same length");
    let t =
        rows.iter().map(|r| r.segment_ids.iter().rposition(|&s| s != 0).map_or(0, |i| i + 1)).max().unwrap_or(0).clamp(2.min(full), full);
    let trimmed: Vec<Row> = rows.iter().map(|r| trim(r, t)).collect();
    let rows: Vec<&Row> = trimmed.iter().collect();
    let flat = |f: &dyn Fn(&Row) -> Vec<i64>| -> Vec<i64> { rows.iter().flat_map(|r| f(r)).collect() };
    let ids = flat(&|r| r.input_ids.iter().map(|&x| x as i64).collect());
    let pos = flat(&|r| r.position_ids.iter().map(|&x| x as i64).collect());
    // Position i - 1 predicts token i; the last position of a row predicts nothing.
    let trained: Vec<(usize, usize)> = (0..b)
        .flat_map(|k| {
            let row = rows[k];
            (1..t).filter(move |&i| row.is_target(i)).map(move |i| (k, i))
        })
        .collect();
    let reference = rows
        .iter()
        .all(|r| r.ref_logprobs.is_some())
        .then(|| trained.iter().map(|&(k, i)| rows[k].ref_logprobs.as_ref().expect("checked")[i]).collect());
    MicroBatch {
        input_ids: Tensor::from_data(TensorData::new(ids, [b, t]), device),
        positions: Tensor::from_data(TensorData::new(pos, [b, t]), device),
        segments: rows.iter().map(|r| segment_runs(&r.segment_ids)).collect(),
        targets: Targets {
            index: trained.iter().map(|&(k, i)| (k * t + i - 1) as i64).collect(),
            ids: trained.iter().map(|&(k, i)| rows[k].input_ids[i] as i64).collect(),
            reference,
        },
    }
}

fn trim(r: &Row, t: usize) -> Row {
    Row {
        input_ids: r.input_ids[..t].to_vec(),
        loss_mask: r.loss_mask[..t].to_vec(),
        position_ids: r.position_ids[..t].to_vec(),
        segment_ids: r.segment_ids[..t].to_vec(),
        ref_logprobs: r.ref_logprobs.as_ref().map(|v| v[..t].to_vec()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Flex;

    fn ints(t: Tensor<Flex, 2, Int>) -> Vec<i64> {
        t.into_data().convert::<i64>().to_vec().unwrap()
    }

    /// Two packed examples and a pad in one row, one example in the other: each trained target
    /// is the token after its position, and the reference scores move with it.
    #[test]
    fn targets_are_the_next_tokens_and_references_shift_with_them() {
        let a = Row {
            input_ids: vec![5, 6, 7, 8, 9, 0],
            loss_mask: vec![0, 0, 1, 0, 1, 0],
            position_ids: vec![0, 1, 2, 0, 1, 0],
            segment_ids: vec![1, 1, 1, 2, 2, 0],
            ref_logprobs: Some(vec![0.0, -0.1, -0.2, 0.0, -0.4, 0.0]),
        };
        let b = Row {
            input_ids: vec![20, 21, 22, 23, 24, 25],
            loss_mask: vec![0, 1, 1, 1, 1, 1],
            position_ids: vec![0, 1, 2, 3, 4, 5],
            segment_ids: vec![1, 1, 1, 1, 1, 1],
            ref_logprobs: Some(vec![0.0, -1.0, -2.0, -3.0, -4.0, -5.0]),
        };
        let mb = micro_batch::<Flex>(&[&a, &b], &Default::default());
        assert_eq!(ints(mb.input_ids), [5, 6, 7, 8, 9, 0, 20, 21, 22, 23, 24, 25]);
        assert_eq!(ints(mb.positions), [0, 1, 2, 0, 1, 0, 0, 1, 2, 3, 4, 5]);
        // Only targets with loss_mask set count: 7 (end of example 1, predicted at position 1)
        // and 9 (position 3); the first token of example 2 (8) and the pad are never trained.
        // Row b's positions 0..4 predict 21..25; its flat indices start at 6.
        assert_eq!(
            mb.targets,
            Targets {
                index: vec![1, 3, 6, 7, 8, 9, 10],
                ids: vec![7, 9, 21, 22, 23, 24, 25],
                reference: Some(vec![-0.2, -0.4, -1.0, -2.0, -3.0, -4.0, -5.0]),
            }
        );
        assert_eq!(mb.segments, vec![vec![(0, 3), (3, 2), (5, 1)], vec![(0, 6)]]);
        // Alone, the first row loses its trailing pad: nothing of it was ever a target.
        let alone = micro_batch::<Flex>(&[&a], &Default::default());
        assert_eq!(ints(alone.input_ids), [5, 6, 7, 8, 9]);
        assert_eq!(alone.targets, Targets { index: vec![1, 3], ids: vec![7, 9], reference: Some(vec![-0.2, -0.4]) });
        assert_eq!(alone.segments, vec![vec![(0, 3), (3, 2)]]);
    }

    #[test]
    fn reference_scores_only_when_every_row_has_them() {
        let scored = Row {
            input_ids: vec![1, 2, 3],
            loss_mask: vec![0, 1, 1],
            position_ids: vec![0, 1, 2],
            segment_ids: vec![1, 1, 1],
            ref_logprobs: Some(vec![0.0, -0.5, -0.5]),
        };
        let unscored = Row { ref_logprobs: None, ..scored.clone() };
        assert!(micro_batch::<Flex>(&[&scored, &unscored], &Default::default()).targets.reference.is_none());
        assert!(micro_batch::<Flex>(&[&scored], &Default::default()).targets.reference.is_some());
    }
}
