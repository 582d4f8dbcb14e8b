//! Grading a completion of one question, the one way evaluation, rejection sampling and the
//! pipeline's `rollouts` source all judge answers: math with the verifier (`math`), code with the
//! question's tests in the sandbox (`sandbox`).

use crate::math::{self, ExtractOptions};
use crate::sandbox::{self, Limits};
use rayon::prelude::*;
use schemas::{CodeTests, Domain};

/// The version of this crate's verifier and sandbox, recorded with every verdict: the crate's
/// version and a hash of the sources that decide verdicts (build.rs), so that results graded by
/// other rules are never reused as these rules' results.
pub const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), "+", env!("RECTIFY_VERIFY_SOURCES"));

/// What grading needs of a question.
#[derive(Debug, Clone, Copy)]
pub struct Question<'a> {
    /// Named in errors.
    pub id: &'a str,
    /// How a math answer is read: GSM8K's rules allow the final answer to be the last number of
    /// the text, MATH's need it marked ([`ExtractOptions`]).
    pub math: ExtractOptions,
    pub domain: Domain,
    pub gold: Option<&'a str>,
    /// Code: [`CodeTests`] as JSON.
    pub tests: Option<&'a str>,
}

impl<'a> From<&'a schemas::prompts::Prompt> for Question<'a> {
    fn from(p: &'a schemas::prompts::Prompt) -> Self {
        // A prompt snapshot's questions are read with their source's rules (`gsm8k*`: GSM8K's).
        let math = ExtractOptions::for_benchmark(&p.source);
        Question { id: &p.id, math, domain: p.domain, gold: p.gold.as_deref(), tests: p.tests.as_deref() }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Grade {
    /// Math: the answer found; code: the code that ran.
    pub extracted: Option<String>,
    pub correct: bool,
    /// Code: how the sandboxed run ended.
    pub status: Option<String>,
    /// `math`, `math-gsm8k`, `sandbox-mbpp` or `sandbox-humaneval`.
    pub verifier: &'static str,
}

enum Plan {
    Math { gold: String, opts: ExtractOptions },
    Code { program: String, code: String, verifier: &'static str },
}

fn plan(q: &Question, completion: &str) -> Result<Plan, String> {
    match q.domain {
        Domain::Math => {
            let gold = q.gold.ok_or_else(|| format!("question {} has no gold answer", q.id))?;
            Ok(Plan::Math { gold: gold.to_string(), opts: q.math })
        }
        Domain::Code => {
            let tests = q.tests.ok_or_else(|| format!("question {} has no tests", q.id))?;
            let tests = CodeTests::from_json(tests).map_err(|e| format!("question {}: {e}", q.id))?;
            let code = sandbox::extract_code(completion);
            let (program, verifier) = match &tests {
                CodeTests::HumanEval { test, entry_point, code_prompt } => {
                    (sandbox::humaneval_program(code_prompt, &code, test, entry_point), "sandbox-humaneval")
                }
                CodeTests::Mbpp { test_list, test_setup_code } => {
                    (sandbox::mbpp_program(&code, test_setup_code, test_list), "sandbox-mbpp")
                }
            };
            Ok(Plan::Code { program, code, verifier })
        }
    }
}

/// Whether a question can be graded at all (a gold answer for math, readable tests for code):
/// checked before sampling, so a bad question fails a run before any generation.
pub fn gradable(q: &Question) -> Result<(), String> {
    plan(q, "").map(|_| ())
}

/// Grades every `(question, completion)`: math in parallel, all code in one sandbox pool (batches
/// would wait for their slowest, a timed-out loop). An item whose question cannot be graded (no
/// gold answer, no or unreadable tests) is `Err` with the reason; `Err` overall only when the
/// sandbox itself cannot run. `on_done` is called once per item (a progress bar).
pub fn grade_all(items: &[(Question, &str)], on_done: impl Fn() + Sync) -> anyhow::Result<Vec<Result<Grade, String>>> {
    let plans: Vec<Result<Plan, String>> = items.iter().map(|(q, c)| plan(q, c)).collect();
    let programs: Vec<String> =
        plans.iter().filter_map(|p| if let Ok(Plan::Code { program, .. }) = p { Some(program.clone()) } else { None }).collect();
    let mut outcomes = sandbox::run_many(&programs, &Limits::default(), rayon::current_num_threads(), |_| on_done())?.into_iter();
    let math: Vec<Option<math::Verdict>> = plans
        .par_iter()
        .zip(items)
        .map(|(p, (_, completion))| match p {
            Ok(Plan::Math { gold, opts }) => {
                let v = math::verify(gold, completion, opts);
                on_done();
                Some(v)
            }
            _ => None,
        })
        .collect();
    Ok(plans
        .into_iter()
        .zip(math)
        .map(|(p, verdict)| match p? {
            Plan::Math { opts, .. } => {
                let v = verdict.expect("math items are verified");
                Ok(Grade { extracted: v.extracted, correct: v.correct, status: None, verifier: math_verifier(&opts) })
            }
            Plan::Code { code, verifier, .. } => {
                let o = outcomes.next().expect("one outcome per program");
                Ok(Grade { extracted: Some(code), correct: o.passed, status: Some(format!("{:?}", o.status)), verifier })
            }
        })
        .collect())
}

fn math_verifier(opts: &ExtractOptions) -> &'static str {
    if opts.last_number_fallback {
        "math-gsm8k"
    } else {
        "math"
    }
}
