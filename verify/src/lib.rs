//! Is an answer right? The math verifier (`math`: extract the final answer, then compare it with
//! the gold answer), the pieces of solution texts datasets and graders point at (`answer`), and
//! the sandbox that runs a program against a benchmark's tests (`sandbox`), and grading a completion
//! of a question with whichever of the two applies (`grade`). No tensor library and
//! no DataFusion: the pipeline's filter, evaluation and rejection sampling all use this crate.

pub mod answer;
pub mod grade;
pub mod math;
pub mod sandbox;
