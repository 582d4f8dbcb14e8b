//! The canonical example every ingest adapter produces, and the record of a dropped row.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Domain {
    Math,
    Code,
}

spelled!(Domain, "domain", { Math => "math", Code => "code" });

/// Who speaks a turn of a conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    System,
    User,
    Assistant,
}

spelled!(Role, "role", { System => "system", User => "user", Assistant => "assistant" });

/// One turn of a conversation, as chat templates read it (`{"role": ..., "content": ...}`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Turn {
    pub role: Role,
    pub content: String,
}

/// One training or evaluation item, whatever file format it came from.
///
/// A multi-turn conversation is its last exchange (`prompt`, `response`) after the turns that
/// led to it (`context`); a single-turn example has no context.
///
/// Examples are kept in a `Vec` in input order (recipe source order, then file order); every
/// "keep the first" rule in the pipeline refers to that order, which makes winners deterministic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Example {
    /// `{source}/{native id or line number}`, unique within a snapshot.
    pub id: String,
    /// Name of the recipe source the row came from.
    pub source: String,
    pub domain: Domain,
    /// The user turn, without chat template.
    pub prompt: String,
    /// The assistant turn. Empty for prompt-only (evaluation) sources.
    pub response: String,
    /// Final answer for math (e.g. `72`, `\frac{\pi}{2}`), if known.
    pub gold: Option<String>,
    /// Tests for code, as JSON: [`CodeTests`] for the HumanEval and MBPP adapters (a generic
    /// source may carry any JSON value here; evaluation then says it cannot run it).
    pub tests: Option<String>,
    /// Anything else from the source row, as a JSON object string.
    pub metadata: String,
    /// The response stops where a token budget cut it, not where its writer ended it (a rollout
    /// kept with `drop_truncated: false`): the end-of-turn token the template closes it with is
    /// then not trained, since the model never wrote it there.
    #[serde(default)]
    pub unfinished: bool,
    /// The turns before `prompt`: a system turn first where the conversation has one (it takes
    /// the place of the tokenizer's system prompt), then user and assistant turns in turn.
    /// Every assistant turn among them is trained, as the response is.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub context: Vec<Turn>,
}

impl Example {
    /// The whole conversation as plain text, one turn after another on its own line, roles not
    /// written: what the filter counts and matches, and dedup compares (`prompt\nresponse` for a
    /// single-turn example).
    pub fn text(&self) -> String {
        let mut parts: Vec<&str> = self.context.iter().map(|t| t.content.as_str()).collect();
        parts.extend([self.prompt.as_str(), self.response.as_str()]);
        parts.join("\n")
    }
}

/// The tests of a code benchmark item, as the `tests` column stores them (JSON). The ingest
/// adapters write this type and evaluation reads it, so the two cannot drift apart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum CodeTests {
    /// HumanEval: a `check(candidate)` program, the function it checks, and the prompt's code
    /// (signature and docstring) that a completion continues.
    HumanEval { test: String, entry_point: String, code_prompt: String },
    /// MBPP: assert statements, and code to run before them.
    Mbpp {
        test_list: Vec<String>,
        #[serde(default)]
        test_setup_code: String,
    },
}

impl CodeTests {
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("strings serialise")
    }

    pub fn from_json(text: &str) -> anyhow::Result<CodeTests> {
        serde_json::from_str(text).map_err(|e| {
            anyhow::anyhow!(
                "tests are neither HumanEval's {{test, entry_point, code_prompt}} nor MBPP's {{test_list, test_setup_code}} ({e})"
            )
        })
    }
}

/// A row that left the pipeline, and why. Nothing is dropped without one of these.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Dropped {
    pub stage: String,
    pub reason: String,
    pub id: String,
    pub source: String,
    /// Stage-specific detail: the id a duplicate duplicates, the benchmark item a
    /// contaminated row overlaps, the pattern that matched.
    #[serde(skip_serializing_if = "String::is_empty", default)]
    pub detail: String,
}

impl Dropped {
    pub fn new(stage: &str, reason: &str, ex: &Example, detail: impl Into<String>) -> Self {
        Dropped {
            stage: stage.to_string(),
            reason: reason.to_string(),
            id: ex.id.clone(),
            source: ex.source.clone(),
            detail: detail.into(),
        }
    }
}
