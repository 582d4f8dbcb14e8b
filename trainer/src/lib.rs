//! rectify's trainer: a Llama-family model in Burn, SFT and DFT objectives, and the loop that
//! trains it on packed snapshots.

pub mod config;
pub mod data;
pub mod eval;
pub mod generate;
pub mod loss;
pub mod model;
pub mod optim;
pub mod plot;
pub mod probs;
pub mod sandbox;
pub mod score;
pub mod train;
pub mod weights;
