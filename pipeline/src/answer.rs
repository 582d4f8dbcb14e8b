//! Final-answer extraction from math solutions. The filter uses it to drop math rows without an
//! answer; the adapters use it to fill `gold` from `\boxed{}` solutions.

/// Contents of the last `\boxed{...}` or `\fbox{...}` (braces balanced), or of `\boxed 5`.
pub fn last_boxed(text: &str) -> Option<String> {
    let start = ["\\boxed", "\\fbox"].iter().filter_map(|m| text.rfind(m).map(|i| (i, m.len()))).max()?;
    let rest = &text[start.0 + start.1..];
    if let Some(inner) = rest.strip_prefix('{') {
        let mut depth = 1usize;
        for (i, c) in inner.char_indices() {
            match c {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        return non_empty(&inner[..i]);
                    }
                }
                _ => {}
            }
        }
        None
    } else if let Some(inner) = rest.strip_prefix(' ') {
        // `\boxed 5`: the argument runs to the next `$` or whitespace.
        let end = inner.find(|c: char| c == '$' || c.is_whitespace()).unwrap_or(inner.len());
        non_empty(&inner[..end])
    } else {
        None
    }
}

/// The GSM8K answer after `####`, thousands separators removed.
pub fn gsm8k_answer(text: &str) -> Option<String> {
    let tail = &text[text.rfind("####")? + 4..];
    non_empty(&tail.trim().replace(',', ""))
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

/// The final answer of a solution: `\boxed{}`, else GSM8K `####`, else "final answer is X" or
/// "answer: X" (up to the end of the line, trailing full stop removed).
pub fn extract_answer(text: &str) -> Option<String> {
    if let Some(a) = last_boxed(text) {
        return Some(a);
    }
    if let Some(a) = gsm8k_answer(text) {
        return Some(a);
    }
    let lower = text.to_lowercase();
    for marker in ["final answer is", "answer:"] {
        if let Some(i) = lower.rfind(marker) {
            // Lowercasing can change byte lengths; only trust the index when it did not.
            if lower.len() != text.len() {
                break;
            }
            let tail = text[i + marker.len()..].lines().next().unwrap_or("");
            let tail = tail.trim().trim_end_matches('.').trim_matches('$').trim();
            if let Some(a) = non_empty(tail) {
                return Some(a);
            }
        }
    }
    None
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
    fn gsm8k() {
        assert_eq!(gsm8k_answer("a\n#### 1,234").unwrap(), "1234");
        assert_eq!(gsm8k_answer("no marker"), None);
        assert_eq!(strip_gsm8k_calculations("48/2 = <<48/2=24>>24 clips"), "48/2 = 24 clips");
    }

    #[test]
    fn fallbacks() {
        assert_eq!(extract_answer("So the final answer is 42.").unwrap(), "42");
        assert_eq!(extract_answer("Answer: $x=3$").unwrap(), "x=3");
        assert_eq!(extract_answer("I am not sure"), None);
    }
}
