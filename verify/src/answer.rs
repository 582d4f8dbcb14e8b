//! The pieces of a solution text that datasets and graders point at: `\boxed{}` groups, GSM8K's
//! `#### x`, and the code of a fenced block. The ingest adapters fill `gold` with them, the math
//! extractor builds on them, and the pipeline's filter and the sandbox take code with [`code_of`].

/// Contents of the last `\boxed{...}` or `\fbox{...}` (braces balanced), or of `\boxed 5`.
pub fn last_boxed(text: &str) -> Option<String> {
    let b = boxes_from_end(text, 1).into_iter().next()?;
    if b.closed {
        non_empty(b.content)
    } else {
        None
    }
}

/// A `\boxed{...}` or `\fbox{...}` found by [`boxes_from_end`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Boxed<'a> {
    /// Byte offset of the command's backslash.
    pub start: usize,
    /// Byte offset just past the closing brace (past the argument for `\boxed 5`).
    pub end: usize,
    pub content: &'a str,
    /// False when the braces never close; `content` then runs to the end of the search window.
    pub closed: bool,
}

/// The boxes of `text`, last first, at most `limit`. Each box is searched for only before the start
/// of the box after it, so a box that encloses a later one reads as unclosed (and ends the list):
/// the innermost, last-written answer wins, as in Math-Verify. A box with nothing but whitespace
/// in it is skipped and the search goes on before it: a model that echoes "put your final answer
/// within \boxed{}" after `\boxed{5}` has answered 5 (Math-Verify's box pattern, which needs
/// content, reads it so too).
pub fn boxes_from_end(text: &str, limit: usize) -> Vec<Boxed<'_>> {
    let mut out = vec![];
    let mut window_end = text.len();
    // Each step re-searches the text; bounding the steps (not only the boxes found) keeps a text
    // full of `\boxedx`-like non-boxes linear.
    for _ in 0..limit.saturating_add(64) {
        if out.len() >= limit {
            break;
        }
        let window = &text[..window_end];
        let Some((start, cmd_len)) = ["\\boxed", "\\fbox"].iter().filter_map(|m| window.rfind(m).map(|i| (i, m.len()))).max() else {
            break;
        };
        if let Some((content, used, closed)) = box_argument(&window[start + cmd_len..]).filter(|(c, _, _)| !c.trim().is_empty()) {
            out.push(Boxed { start, end: start + cmd_len + used, content, closed });
            if !closed {
                break;
            }
        }
        window_end = start;
    }
    out
}

/// The argument after `\boxed`: `{...}` with balanced braces (or unclosed: the rest), or the
/// `\boxed 5` form that runs to the next `$` or whitespace. Returns (content, bytes used, closed).
fn box_argument(rest: &str) -> Option<(&str, usize, bool)> {
    let trimmed = rest.trim_start();
    let offset = rest.len() - trimmed.len();
    if let Some(inner) = trimmed.strip_prefix('{') {
        return Some(match matching_brace(inner) {
            Some(i) => (&inner[..i], offset + 1 + i + 1, true),
            None => (inner, rest.len(), false),
        });
    }
    if offset == 0 {
        // `\boxedx`: another command, not a box.
        return None;
    }
    let end = trimmed.find(|c: char| c == '$' || c.is_whitespace()).unwrap_or(trimmed.len());
    Some((&trimmed[..end], offset + end, true))
}

/// Byte index of the `}` that closes an already-open brace at the start of `inner`.
fn matching_brace(inner: &str) -> Option<usize> {
    let mut depth = 1usize;
    for (i, c) in inner.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    return Some(i);
                }
            }
            _ => {}
        }
    }
    None
}

/// The GSM8K answer: the line after the last `####`, with thousands separators removed
/// (`1,234` → `1234`). Only those: other commas separate values (`3, 5` is two answers, not 35).
pub fn gsm8k_answer(text: &str) -> Option<String> {
    let tail = &text[text.rfind("####")? + 4..];
    let line = tail.trim_start().lines().next()?;
    non_empty(&crate::math::join_thousands(line))
}

/// The response with GSM8K's calculator annotations `<<48/2=24>>` removed: they are an artefact
/// of how the data was written, not text a model should learn to emit.
pub fn strip_gsm8k_calculations(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(open) = rest.find("<<") {
        match rest[open..].find(">>") {
            Some(close) => {
                out.push_str(&rest[..open]);
                rest = &rest[open + close + 2..];
            }
            None => break,
        }
    }
    out.push_str(rest);
    out
}

/// The code inside the first ```python fence, or the whole text when there is none.
pub fn code_of(response: &str) -> &str {
    let Some(start) = response.find("```") else { return response };
    let after = &response[start + 3..];
    let body_start = after.find('\n').map(|i| i + 1).unwrap_or(after.len());
    let body = &after[body_start..];
    match body.find("```") {
        Some(end) => &body[..end],
        None => body,
    }
}

fn non_empty(s: &str) -> Option<String> {
    let s = s.trim();
    (!s.is_empty()).then(|| s.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boxed_with_nested_braces() {
        let s = r"so $\boxed{\left( 3, \frac{\pi}{2} \right)}.$";
        assert_eq!(last_boxed(s).unwrap(), r"\left( 3, \frac{\pi}{2} \right)");
    }

    #[test]
    fn last_of_several_boxes_and_fbox() {
        assert_eq!(last_boxed(r"\boxed{1} then \fbox{2}").unwrap(), "2");
        assert_eq!(last_boxed(r"\fbox{1} then \boxed{22}").unwrap(), "22");
        assert_eq!(last_boxed(r"is $\boxed 5$.").unwrap(), "5");
        assert_eq!(last_boxed(r"\boxed{unbalanced"), None);
        assert_eq!(last_boxed(r"\boxed{}"), None);
    }

    #[test]
    fn blank_boxes_are_skipped() {
        // The instruction echoed after the answer leaves the answer in place.
        let echoed = r"So the answer is $\boxed{5}$. Remember to put your final answer within \boxed{}.";
        assert_eq!(last_boxed(echoed).unwrap(), "5");
        assert_eq!(last_boxed("\\boxed{5}\n\nFinal answer: \\boxed{ }").unwrap(), "5");
        assert_eq!(last_boxed(r"\fbox{7} \boxed{} \boxed {  }").unwrap(), "7");
        let contents: Vec<_> = boxes_from_end(r"\boxed{1} \boxed{} \boxed{2} \boxed{ }", 10).iter().map(|b| b.content).collect();
        assert_eq!(contents, ["2", "1"]);
        // An unclosed blank box at the very end is no answer either.
        assert_eq!(last_boxed(r"\boxed{3} then \boxed{"), Some("3".into()));
        assert_eq!(last_boxed(r"\boxed{} \boxed{ }"), None);
    }

    #[test]
    fn boxes_from_the_end() {
        let text = r"\boxed{1} and \fbox{2} then \boxed{3}";
        let contents: Vec<_> = boxes_from_end(text, 10).iter().map(|b| b.content).collect();
        assert_eq!(contents, ["3", "2", "1"]);
        let b = &boxes_from_end(text, 1)[0];
        assert_eq!(&text[b.start..b.end], r"\boxed{3}");
        // A box around a later box is unclosed within its window: the inner answer is last.
        let nested = boxes_from_end(r"\boxed{a \boxed{b}}", 10);
        assert_eq!(nested[0].content, "b");
        assert!(!nested[1].closed);
        assert_eq!(boxes_from_end(r"\boxedx{1}", 10), vec![]);
    }

    #[test]
    fn gsm8k() {
        assert_eq!(gsm8k_answer("a\n#### 1,234").unwrap(), "1234");
        assert_eq!(gsm8k_answer("a\n#### 1,234,567\n").unwrap(), "1234567");
        // Commas that are not thousands grouping separate values; only the answer line counts.
        assert_eq!(gsm8k_answer("a\n#### 3, 5\nnote: 7,000").unwrap(), "3, 5");
        assert_eq!(gsm8k_answer("no marker"), None);
        assert_eq!(strip_gsm8k_calculations("48/2 = <<48/2=24>>24 clips"), "48/2 = 24 clips");
    }

    #[test]
    fn code_fence_extraction() {
        assert_eq!(code_of("```python\nx = 1\n```"), "x = 1\n");
        assert_eq!(code_of("x = 1"), "x = 1");
        assert_eq!(code_of("text\n```\nunclosed"), "unclosed");
    }
}
