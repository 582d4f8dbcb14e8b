//! Is an answer right? The math verifier (`math`: extract the final answer, then compare it with
//! the gold answer), the pieces of solution texts datasets and graders point at (`answer`), and
//! the sandbox that runs a program against a benchmark's tests (`sandbox`). No tensor library and
//! no DataFusion: the pipeline's filter, evaluation and rejection sampling all use this crate.

pub mod answer;
pub mod math;
pub mod sandbox;
