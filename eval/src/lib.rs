//! Evaluation: benchmarks read from prompt snapshots (`benchmark`), generation and grading with
//! the verifier and the sandbox (`evaluate`), Average@K / pass@K (`metrics`), results and
//! summaries (`report`), and the histogram of the probability a model gives the training tokens
//! with its PNG chart (`probs`, `plot`), decoding throughput (`throughput`).

pub mod benchmark;
pub mod evaluate;
pub mod metrics;
pub mod plot;
pub mod probs;
pub mod report;
pub mod throughput;
