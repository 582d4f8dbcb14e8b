//! rectify's trainer: batch assembly (`batch`), the SFT / DFT / iwsft objectives (`loss`), AdamW
//! and the schedule (`optim`), the loop (`train`) and its checkpoints (`checkpoint`), and reference scoring into
//! a new snapshot (`score`). The `trainer` binary also fronts evaluation (the `eval` crate).

pub mod batch;
pub mod checkpoint;
pub mod loss;
pub mod optim;
pub mod score;
pub mod train;
