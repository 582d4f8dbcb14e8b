//! rectify's data pipeline. Each stage lives in the file named after it; `build` runs them in
//! order and writes the snapshot.

pub mod answer;
pub mod build;
pub mod decontaminate;
pub mod dedup;
pub mod filter;
pub mod gguf;
pub mod ingest;
pub mod inspect;
pub mod math_verify;
pub mod normalize;
pub mod pack;
pub mod progress;
pub mod tokenize;
pub mod verify;
pub mod write;
