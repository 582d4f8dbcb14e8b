//! rectify's trainer: batch assembly (`batch`), the SFT / DFT / iwsft objectives (`loss`), AdamW
//! and the schedule (`optim`), LoRA's starting adapters (`lora`), element-wise updates in place on CPU (`in_place`), the loop
//! (`train`), its held-out loss (`validation`), its checkpoints (`checkpoint`) and training curves
//! (`curves`), reference scoring into a new snapshot (`score`), and sampling verified rollouts for
//! rejection-sampled offline RL (`sample`). The `trainer` binary also fronts evaluation (the
//! `eval` crate).

pub mod batch;
pub mod checkpoint;
pub mod curves;
pub mod in_place;
pub mod journal;
pub mod lora;
pub mod loss;
pub mod optim;
pub mod sample;
pub mod score;
pub mod train;
pub mod validation;
