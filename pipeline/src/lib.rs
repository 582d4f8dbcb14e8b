//! rectify's data pipeline: the stages only, each in the file named after it (ingest, filter,
//! dedup, decontaminate, tokenize, pack, write; `normalize` is the text normalisation dedup and
//! decontamination share; `rollouts` is the source format that selects sampled completions).
//! `build` runs them in order and publishes the snapshot; `inspect`
//! reads one back for people.

pub mod build;
pub mod decontaminate;
pub mod dedup;
pub mod filter;
pub mod ingest;
pub mod inspect;
pub mod normalize;
pub mod pack;
pub mod rollouts;
pub mod tokenize;
pub mod write;
