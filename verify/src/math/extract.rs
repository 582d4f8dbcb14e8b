//! Finding the final answer in a model output.
//!
//! Tiers, first hit wins: (0) the last `\boxed{}`/`\fbox{}` group that is not blank, or "final answer is X. I hope",
//! whichever ends later; GSM8K `#### x` (x alone on its line); (1) "final answer ... is X"; (2) "answer: X";
//! (3) "answer ... X"; (4) the last LaTeX math span, or — only with
//! [`ExtractOptions::last_number_fallback`] — the last plain number or arithmetic expression,
//! whichever ends later. X is a math span (`$..$`, `$$..$$`, `\(..\)`, `\[..\]`, a bare
//! `\frac{1}{2}`) or a plain number/expression on the anchor's line.
//!
//! The rules follow Hugging Face Math-Verify's extraction (the checker the DFT paper used), so the
//! same output yields the same answer; everything is a linear scan over at most the last
//! [`MAX_SCAN_BYTES`] of the text.

use super::parse::UNITS;
use super::ExtractOptions;
use crate::answer;

/// Answers sit at the end of an output; scanning only its tail bounds the work on huge inputs.
pub const MAX_SCAN_BYTES: usize = 64 * 1024;
/// Adjacent boxes or math spans joined into one list answer (`\boxed{1}, \boxed{2}`).
const MAX_JOINED: usize = 6;
/// Longest plain arithmetic expression taken as an answer, in characters.
const MAX_EXPR_CHARS: usize = 200;
const CURRENCY: &str = "$€£¥₹₽₪₩₫฿₡₢₣₤₥₦₧₨₭₮₯₰₱₲₳₴₵₶₷₸₺₻₼₾₿";

/// An answer and the byte offset where it ends, to pick the later of two candidates.
type Found = (String, usize);

pub fn extract(text: &str, opts: &ExtractOptions) -> Option<String> {
    let doc = Doc::new(tail(text, MAX_SCAN_BYTES));
    let found = later(doc.boxed(), doc.final_answer_i_hope())
        .or_else(|| doc.gsm8k())
        .or_else(|| doc.final_answer_is())
        .or_else(|| doc.after_answer_word("answer:"))
        .or_else(|| doc.after_answer_word("answer"))
        .or_else(|| later(doc.last_math_span(), opts.last_number_fallback.then(|| last_number(doc.text)).flatten()));
    found.map(|(s, _)| s.trim().to_string()).filter(|s| !s.is_empty())
}

fn tail(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut start = text.len() - max;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    &text[start..]
}

/// The candidate that ends later; on a tie the first.
fn later(a: Option<Found>, b: Option<Found>) -> Option<Found> {
    match (a, b) {
        (Some(a), Some(b)) => Some(if b.1 > a.1 { b } else { a }),
        (a, b) => a.or(b),
    }
}

/// A math span: byte range of the whole span, and its content (with a `%` if one follows).
#[derive(Debug, Clone)]
struct Span {
    start: usize,
    end: usize,
    content: String,
}

/// The text with the positions of every closing delimiter precomputed, so finding the end of a
/// span is a binary search and no scan is quadratic, whatever the input.
struct Doc<'a> {
    text: &'a str,
    /// ASCII-lowercased copy: same byte offsets as `text`.
    lower: String,
    double_dollar: Vec<usize>,
    dollar: Vec<usize>,
    bracket: Vec<usize>,
    paren: Vec<usize>,
    newline: Vec<usize>,
}

impl<'a> Doc<'a> {
    fn new(text: &'a str) -> Doc<'a> {
        let b = text.as_bytes();
        let unescaped = |i: usize| i == 0 || b[i - 1] != b'\\';
        let mut doc = Doc {
            text,
            lower: text.to_ascii_lowercase(),
            double_dollar: vec![],
            dollar: vec![],
            bracket: vec![],
            paren: vec![],
            newline: vec![],
        };
        for i in 0..b.len() {
            match b[i] {
                b'$' if unescaped(i) => {
                    doc.dollar.push(i);
                    if b.get(i + 1) == Some(&b'$') {
                        doc.double_dollar.push(i);
                    }
                }
                b'\\' if unescaped(i) && b.get(i + 1) == Some(&b']') => doc.bracket.push(i),
                b'\\' if unescaped(i) && b.get(i + 1) == Some(&b')') => doc.paren.push(i),
                b'\n' => doc.newline.push(i),
                _ => {}
            }
        }
        doc
    }

    /// The first closer at or after `from`; for inline spans, only before the next line break.
    fn close(&self, closers: &[usize], from: usize, multiline: bool) -> Option<usize> {
        let at = closers.get(closers.partition_point(|&c| c < from)).copied()?;
        if !multiline {
            let nl = self.newline.get(self.newline.partition_point(|&n| n < from)).copied();
            if nl.is_some_and(|nl| nl < at) {
                return None;
            }
        }
        Some(at)
    }

    /// The span that starts exactly at `p`, if any.
    fn span_at(&self, p: usize) -> Option<Span> {
        let (inner_start, inner_end, end) = self.delimited_at(p)?;
        let text = self.text;
        if !holds_math(&text[inner_start..inner_end]) {
            return None;
        }
        let mut content = text[inner_start..inner_end].to_string();
        let mut end = end;
        if let Some(len) = percent_suffix_len(&text[end..]) {
            content.push('%');
            end += len;
        }
        Some(Span { start: p, end, content })
    }

    /// The delimiters of a span starting exactly at `p`, whatever its content: where the inside
    /// starts and ends, and where the closing delimiter ends.
    fn delimited_at(&self, p: usize) -> Option<(usize, usize, usize)> {
        let (text, b) = (self.text, self.text.as_bytes());
        let escaped = p > 0 && b[p - 1] == b'\\';
        let rest = &text[p..];
        let (inner_start, inner_end, end) = if rest.starts_with("$$") && !escaped {
            let close = self.close(&self.double_dollar, p + 2, true)?;
            (p + 2, close, close + 2)
        } else if rest.starts_with('$') && !escaped && !(p > 0 && b[p - 1].is_ascii_digit()) {
            let close = self.close(&self.dollar, p + 1, false)?;
            (p + 1, close, close + 1)
        } else if rest.starts_with("\\[") && !escaped {
            let close = self.close(&self.bracket, p + 2, true)?;
            (p + 2, close, close + 2)
        } else if rest.starts_with("\\(") && !escaped {
            let close = self.close(&self.paren, p + 2, false)?;
            (p + 2, close, close + 2)
        } else {
            let len = bare_fraction_len(rest)?;
            (p, p + len, p + len)
        };
        Some((inner_start, inner_end, end))
    }

    fn all_spans(&self) -> Vec<Span> {
        let mut spans = vec![];
        let mut p = 0;
        while p < self.text.len() {
            match self.span_at(p) {
                Some(s) => {
                    p = s.end.max(p + 1);
                    spans.push(s);
                }
                // A pair of delimiters around nothing that could be an answer (`$, $`) is still a
                // pair: its closing `$` must not open a span over the text that follows.
                None => match self.delimited_at(p) {
                    Some((_, _, end)) => p = end.max(p + 1),
                    None => p += self.text[p..].chars().next().map_or(1, char::len_utf8),
                },
            }
        }
        spans
    }

    /// The span starting at `p`, then any spans joined to it by ",", "and", "or".
    fn math_spans_from(&self, p: usize) -> Option<Found> {
        let first = self.span_at(p)?;
        let mut contents = vec![first.content];
        let mut end = first.end;
        while contents.len() < MAX_JOINED {
            let Some(next) = list_separator_end(self.text, end).and_then(|q| self.span_at(q)) else { break };
            contents.push(next.content);
            end = next.end;
        }
        Some((contents.join(", "), end))
    }

    /// The last span, joined with the spans just before it that it is listed with.
    fn last_math_span(&self) -> Option<Found> {
        let spans = self.all_spans();
        let last = spans.last()?;
        let mut contents = vec![last.content.clone()];
        for pair in spans.windows(2).rev() {
            if contents.len() >= MAX_JOINED || list_separator_end(self.text, pair[0].end) != Some(pair[1].start) {
                break;
            }
            contents.push(pair[0].content.clone());
        }
        contents.reverse();
        Some((contents.join(", "), last.end))
    }

    /// The last box, joined with the boxes just before it when they read as one list: close
    /// together (`\boxed{1}\boxed{2}`), or a little apart with a separator between
    /// (`\boxed{(2,2)} \text{ and } \boxed{(6,2)}`), but not a box repeated after more reasoning.
    fn boxed(&self) -> Option<Found> {
        let boxes = answer::boxes_from_end(self.text, 4 * MAX_JOINED);
        let last = boxes.first()?;
        let mut parts = vec![last.content.trim()];
        for pair in boxes.windows(2) {
            let (later_box, earlier) = (&pair[0], &pair[1]);
            if parts.len() >= MAX_JOINED || !earlier.closed {
                break;
            }
            let between = &self.text[earlier.end..later_box.start];
            let near = between.chars().count() < 10;
            let listed = earlier.content.trim() != later_box.content.trim() && between.chars().count() < 70 && has_list_separator(between);
            if !(near || listed) {
                break;
            }
            if parts.last() != Some(&earlier.content.trim()) {
                parts.push(earlier.content.trim());
            }
        }
        parts.reverse();
        Some((parts.join(", "), last.end))
    }

    /// GSM8K's `#### 72`: the value on the line after the last `####`, only when it fills that
    /// line (trailing punctuation and a unit aside). Models also write `####` as a Markdown
    /// heading (`#### Step 2: Solve`); that is no answer, and the later tiers decide.
    fn gsm8k(&self) -> Option<Found> {
        let text = self.text;
        let after = text.rfind("####")? + 4;
        let line_end = text[after..].find('\n').map_or(text.len(), |n| after + n);
        let mut p = skip(text, after, |c| c == ' ' || c == '\t');
        // `#### **72**`: the bold marks the answer, it is no part of it.
        if text[p..line_end].starts_with("**") {
            p += 2;
        }
        // A math span or a plain number first: numbers come back normalised (`1,234` → `1234`).
        let fills_line = |&(_, end): &Found| end <= line_end && only_unit_or_punctuation(&text[end..line_end]);
        if let Some((value, _)) = self.math_spans_from(p).filter(fills_line).or_else(|| number_or_expr_at(text, p).filter(fills_line)) {
            return Some((value, text.len()));
        }
        // Bare LaTeX (`2\sqrt{3}`, `x = 5`, `3, 5`), taken as written: its commas are the parser's
        // to read, which keeps `3, 5` a list and joins only thousands (`1,234`).
        let line = text[p..line_end].trim_end_matches(|c: char| c.is_whitespace() || ".!*".contains(c));
        reads_as_math(line).then(|| (line.to_string(), text.len()))
    }

    /// "The final answer is $X$. I hope it is correct." — the template many models were tuned
    /// on; it ranks with `\boxed{}` because it is just as deliberate.
    fn final_answer_i_hope(&self) -> Option<Found> {
        let (text, lower) = (self.text, self.lower.as_str());
        for (i, m) in lower.rmatch_indices("final answer is").take(8) {
            let p = skip(text, i + m.len(), |c| c == ':');
            let Some((value, end)) = self.value_at(p) else { continue };
            let mut q = end;
            if text[q..].starts_with('.') {
                q += 1;
            }
            if text[q..].starts_with(char::is_whitespace) {
                q += text[q..].chars().next().map_or(0, char::len_utf8);
            }
            if lower[q..].starts_with("i hope") {
                return Some((value, end));
            }
        }
        None
    }

    /// "Final answer: the volume is 120." — "is" within 100 characters of "final answer".
    fn final_answer_is(&self) -> Option<Found> {
        let (text, lower) = (self.text, self.lower.as_str());
        for (i, m) in lower.rmatch_indices("final answer").take(8) {
            let start = i + m.len();
            let window_end = char_offset(text, start, 100);
            for (j, _) in lower[start..window_end].match_indices("is") {
                let at = start + j;
                let spaced = lower[..at].ends_with(char::is_whitespace);
                let word_end = !lower[at + 2..].starts_with(|c: char| c.is_ascii_alphabetic());
                if !(spaced && word_end) {
                    continue;
                }
                if let Some(found) = self.value_at(skip(text, at + 2, |c| c == ':')) {
                    return Some(found);
                }
            }
        }
        None
    }

    /// The first math span within 50 characters after the anchor, or a number on the same line.
    fn after_answer_word(&self, anchor: &str) -> Option<Found> {
        let text = self.text;
        for (i, m) in self.lower.rmatch_indices(anchor).take(16) {
            let start = i + m.len();
            let window_end = char_offset(text, start, 50);
            for (p, _) in text[start..window_end].char_indices() {
                let p = start + p;
                if let Some(found) = self.math_spans_from(p) {
                    return Some(found);
                }
                let same_line = !text[start..p].contains('\n');
                if same_line && number_prefix_ok(text, p) {
                    if let Some(found) = number_or_expr_at(text, p) {
                        return Some(found);
                    }
                }
            }
        }
        None
    }

    /// A value right at `p` (after optional whitespace): math spans, else a number on this line.
    fn value_at(&self, p: usize) -> Option<Found> {
        let q = skip(self.text, p, char::is_whitespace);
        if let Some(found) = self.math_spans_from(q) {
            return Some(found);
        }
        let q = skip(self.text, p, |c| c == ' ' || c == '\t');
        number_or_expr_at(self.text, q)
    }
}

/// A gold answer made of math pieces whose outermost `$` were stripped: `f(n)=n$, $g(n)=1` and
/// `-1$,$2$,$-2` are what ingest keeps of OlympiadBench's `$f(n)=n$, $g(n)=1$` and
/// `$-1$,$2$,$-2$`. Read as the list of the pieces, as the outer `$` would have it
/// (`f(n)=n, g(n)=1`); its spans as they stand are the separators. `None` unless every stretch
/// between a closing and an opening `$` is a list separator (",", "and", "or"): `x$ is $5` and
/// prose between the pieces are not lists.
pub fn stripped_math_list(gold: &str) -> Option<String> {
    let t = gold.trim();
    let b = t.as_bytes();
    let dollars: Vec<usize> = (0..b.len()).filter(|&i| b[i] == b'$' && (i == 0 || b[i - 1] != b'\\')).collect();
    let (&first, &last) = (dollars.first()?, dollars.last()?);
    if dollars.len() % 2 == 1 || first == 0 || last == t.len() - 1 || t.contains("$$") {
        return None;
    }
    let mut pieces = vec![];
    let mut from = 0;
    for pair in dollars.chunks(2) {
        let (close, open) = (pair[0], pair[1]);
        let gap = &t[close + 1..open];
        pieces.push(t[from..close].trim());
        if list_separator_end(gap, 0) != Some(gap.len()) {
            return None;
        }
        from = open + 1;
    }
    pieces.push(t[from..].trim());
    pieces.iter().all(|p| holds_math(p)).then(|| pieces.join(", "))
}

/// Whether the inside of a span could be an answer: not blank, and not only ASCII punctuation.
/// `$, $` is no answer but what is left between two answers when a dataset strips the outer `$`
/// of `$f(n)=n$, $g(n)=1$` (OlympiadBench's `final_answer`); `$\$$`, `$\{\}$` and `$∅$` are
/// answers, `$.$` and `$($` are not.
fn holds_math(inner: &str) -> bool {
    inner.chars().any(|c| !(c.is_whitespace() || (c.is_ascii_punctuation() && c != '\\')))
}

/// What may follow an answer on its line: punctuation, bold, and at most one unit word
/// (`#### 18 dollars.`).
fn only_unit_or_punctuation(rest: &str) -> bool {
    let rest = rest.trim().trim_end_matches(|c: char| c.is_whitespace() || ".!*".contains(c));
    rest.is_empty() || UNITS.contains(&rest.to_ascii_lowercase().as_str())
}

/// Whether a bare line is mathematics rather than prose: it has a digit or a LaTeX command, and
/// every word in it is a command (`\sqrt`), a single ASCII letter (a variable), Greek, a unit, or
/// "and"/"or" between values. `Step 2: Solve` and `第2步` are prose.
fn reads_as_math(s: &str) -> bool {
    if !s.contains(|c: char| c.is_ascii_digit() || c == '\\') {
        return false;
    }
    let mut rest = s;
    while let Some(start) = rest.find(char::is_alphabetic) {
        let len = rest[start..].find(|c: char| !c.is_alphabetic()).unwrap_or(rest.len() - start);
        let word = &rest[start..start + len];
        let command = rest[..start].ends_with('\\');
        let variable = word.len() == 1 && word.is_ascii();
        let greek = word.chars().all(|c| ('\u{0370}'..='\u{03ff}').contains(&c));
        let lower = word.to_ascii_lowercase();
        if !(command || variable || greek || UNITS.contains(&lower.as_str()) || lower == "and" || lower == "or") {
            return false;
        }
        rest = &rest[start + len..];
    }
    true
}

fn has_list_separator(s: &str) -> bool {
    s.contains([',', ';']) || s.split(|c: char| !c.is_ascii_alphabetic()).any(|w| w == "and" || w == "or")
}

fn skip(text: &str, mut p: usize, pred: impl Fn(char) -> bool) -> usize {
    while let Some(c) = text[p..].chars().next().filter(|&c| pred(c)) {
        p += c.len_utf8();
    }
    p
}

/// Byte offset `n` characters after `start` (or the end).
fn char_offset(text: &str, start: usize, n: usize) -> usize {
    text[start..].char_indices().nth(n).map_or(text.len(), |(i, _)| start + i)
}

/// After `p`: whitespace, then ",", "and", "or" (optionally after a comma), then whitespace.
fn list_separator_end(text: &str, p: usize) -> Option<usize> {
    let mut q = skip(text, p, char::is_whitespace);
    let comma = text[q..].starts_with(',');
    if comma {
        q = skip(text, q + 1, char::is_whitespace);
    }
    let word =
        ["and", "or"].iter().find(|w| text[q..].starts_with(**w) && !text[q + w.len()..].starts_with(|c: char| c.is_ascii_alphanumeric()));
    match word {
        Some(w) => Some(skip(text, q + w.len(), char::is_whitespace)),
        None if comma => Some(q),
        None => None,
    }
}

/// `\frac{1}{2}` or `-\frac{3}{4}` written without math delimiters, numbers only.
fn bare_fraction_len(s: &str) -> Option<usize> {
    let body = s.strip_prefix('-').unwrap_or(s);
    let sign = s.len() - body.len();
    let body = body.strip_prefix("\\frac{")?;
    let num = simple_number_len(body)?;
    let body = body[num..].strip_prefix("}{")?;
    let den = simple_number_len(body)?;
    body[den..].starts_with('}').then_some(sign + 6 + num + 2 + den + 1)
}

fn simple_number_len(s: &str) -> Option<usize> {
    let b = s.as_bytes();
    let mut i = usize::from(b.first() == Some(&b'-'));
    let digits = b[i..].iter().take_while(|c| c.is_ascii_digit()).count();
    if digits == 0 {
        return None;
    }
    i += digits;
    if matches!(b.get(i), Some(b'.' | b',')) {
        let frac = b[i + 1..].iter().take_while(|c| c.is_ascii_digit()).count();
        if frac > 0 {
            i += 1 + frac;
        }
    }
    Some(i)
}

/// `%`, `\%`, "percent", "percentage", "pct" after optional whitespace.
fn percent_suffix_len(s: &str) -> Option<usize> {
    let t = s.trim_start();
    let ws = s.len() - t.len();
    let word = ["\\%", "%", "percentage", "percent", "pct"]
        .iter()
        .find(|w| t.len() >= w.len() && t.as_bytes()[..w.len()].eq_ignore_ascii_case(w.as_bytes()))?;
    let after = &t[word.len()..];
    (word.contains('%') || !after.starts_with(|c: char| c.is_ascii_alphabetic())).then_some(ws + word.len())
}

// ---------------------------------------------------------------------------------------------
// Plain numbers and expressions

/// The plain number or arithmetic expression that ends last in the text.
fn last_number(text: &str) -> Option<Found> {
    let mut best: Option<Found> = None;
    let mut p = 0;
    while p < text.len() {
        if number_prefix_ok(text, p) {
            if let Some((value, end)) = number_or_expr_at(text, p) {
                if best.as_ref().is_none_or(|b| end > b.1) {
                    best = Some((value, end));
                }
                p = end.max(p + 1);
                continue;
            }
        }
        p += text[p..].chars().next().map_or(1, char::len_utf8);
    }
    best
}

/// A plain value may start at `p`: after whitespace, `=`, `**`, or the start, so that the `2` in
/// `AZYUK2A` or `x_2` is never an answer.
fn number_prefix_ok(text: &str, p: usize) -> bool {
    let before = text[..p].trim_end_matches("**");
    match before.chars().next_back() {
        None => true,
        Some(c) => c.is_whitespace() || c == '=',
    }
}

fn number_or_expr_at(text: &str, p: usize) -> Option<Found> {
    expr_at(text, p).or_else(|| number_at(text, p))
}

/// An arithmetic expression with at least one operator: `2/3`, `(1/2) * (4/3)`, `5+5+1`. The
/// longest prefix that ends in a digit or `)`, balances its parentheses and is followed by
/// punctuation or space; one pass, at most [`MAX_EXPR_CHARS`].
fn expr_at(text: &str, p: usize) -> Option<Found> {
    let chars: Vec<(usize, char)> = text[p..]
        .char_indices()
        .take(MAX_EXPR_CHARS)
        .take_while(|&(_, c)| c.is_ascii_digit() || " \t.+-*/^()×÷".contains(c) || UNICODE_MINUS.contains(&c))
        .collect();
    let mut first_digit = 0;
    let leads: [fn(char) -> bool; 3] = [is_minus, |c| c == '(', is_minus];
    for lead in leads {
        if chars.get(first_digit).is_some_and(|&(_, c)| lead(c)) {
            first_digit += 1;
        }
    }
    if !chars.get(first_digit).is_some_and(|&(_, c)| c.is_ascii_digit()) {
        return None;
    }
    let (mut depth, mut has_op, mut best) = (0i32, false, None);
    for (k, &(off, c)) in chars.iter().enumerate() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            _ => {}
        }
        if depth < 0 {
            break;
        }
        has_op |= k > first_digit && "+-*/^×÷".contains(c);
        let end = p + off + c.len_utf8();
        if has_op && depth == 0 && (c.is_ascii_digit() || c == ')') && expr_suffix_ok(&text[end..]) {
            best = Some(end);
        }
    }
    let end = best?;
    Some((text[p..end].trim().to_string(), end))
}

fn expr_suffix_ok(rest: &str) -> bool {
    let rest = rest.strip_prefix("**").unwrap_or(rest);
    rest.is_empty() || rest.starts_with(|c: char| c.is_whitespace() || ".,:)$".contains(c))
}

/// A number as people write it: `1,000.99`, `1 000`, `2,74` (decimal comma), `.4`, `-5`, with an
/// optional currency sign before and percent after. Returned normalised: `1000.99`, `2.74`,
/// `0.4`, `28%`.
fn number_at(text: &str, p: usize) -> Option<Found> {
    let mut q = p;
    if let Some(c) = text[q..].chars().next().filter(|&c| CURRENCY.contains(c)) {
        q += c.len_utf8();
    }
    let sign = text[q..].chars().next().filter(|&c| is_minus(c));
    let neg = sign.is_some();
    if let Some(c) = sign {
        q += c.len_utf8();
    }
    let b = text.as_bytes();
    let (int_part, frac_part, end) =
        grouped_number(b, q).or_else(|| decimal_number(b, q)).or_else(|| fraction_only(b, q)).or_else(|| integer(b, q))?;
    let int_digits: String = text[int_part.0..int_part.1].chars().filter(char::is_ascii_digit).collect();
    let int_digits = int_digits.trim_start_matches('0');
    let mut out = String::new();
    if neg {
        out.push('-');
    }
    out.push_str(if int_digits.is_empty() { "0" } else { int_digits });
    if let Some((a, z)) = frac_part {
        out.push('.');
        out.push_str(&text[a..z]);
    }
    let mut end = end;
    if let Some(len) = exponent_len(&b[end..]) {
        out.push_str(&text[end..end + len]);
        end += len;
    }
    if let Some(len) = percent_suffix_len(&text[end..]) {
        out.push('%');
        end += len;
    }
    Some((out, end))
}

/// `e33`, `E-5`, `e+8`: the exponent of a number in scientific notation (`4.5e33`), when a word
/// does not go on after it.
fn exponent_len(b: &[u8]) -> Option<usize> {
    if !matches!(b.first(), Some(b'e' | b'E')) {
        return None;
    }
    let sign = usize::from(matches!(b.get(1), Some(b'+' | b'-')));
    let n = digits(b, 1 + sign);
    let end = 1 + sign + n;
    (n > 0 && !b.get(end).is_some_and(u8::is_ascii_alphanumeric)).then_some(end)
}

/// Typeset minus signs: U+2212 MINUS SIGN, and U+2013 EN DASH, which word processors and models
/// put in its place. Read as a sign; alone between two numbers one makes no expression (`3–5` is
/// more often a range than a subtraction).
const UNICODE_MINUS: [char; 2] = ['\u{2212}', '\u{2013}'];

fn is_minus(c: char) -> bool {
    c == '-' || UNICODE_MINUS.contains(&c)
}

type NumberParts = ((usize, usize), Option<(usize, usize)>, usize);

/// `[1-9]\d{0,2}([ ,]\d{3})+(\.\d+)?`
fn grouped_number(b: &[u8], q: usize) -> Option<NumberParts> {
    if !b.get(q).is_some_and(|c| (b'1'..=b'9').contains(c)) {
        return None;
    }
    let lead = digits(b, q).min(3);
    let mut i = q + lead;
    let mut groups = 0;
    while matches!(b.get(i), Some(b' ' | b',')) && b.len() >= i + 4 && b[i + 1..i + 4].iter().all(u8::is_ascii_digit) {
        i += 4;
        groups += 1;
    }
    if groups == 0 || (lead == 3 && digits(b, q) > 3) {
        return None;
    }
    let int = (q, i);
    if b.get(i) == Some(&b'.') && digits(b, i + 1) > 0 {
        let z = i + 1 + digits(b, i + 1);
        return Some((int, Some((i + 1, z)), z));
    }
    Some((int, None, i))
}

/// `\d+[.,]\d+`
fn decimal_number(b: &[u8], q: usize) -> Option<NumberParts> {
    let n = digits(b, q);
    if n == 0 || !matches!(b.get(q + n), Some(b'.' | b',')) {
        return None;
    }
    let f = digits(b, q + n + 1);
    (f > 0).then_some(((q, q + n), Some((q + n + 1, q + n + 1 + f)), q + n + 1 + f))
}

/// `\.\d+`
fn fraction_only(b: &[u8], q: usize) -> Option<NumberParts> {
    if b.get(q) != Some(&b'.') {
        return None;
    }
    let f = digits(b, q + 1);
    (f > 0).then_some(((q, q), Some((q + 1, q + 1 + f)), q + 1 + f))
}

fn integer(b: &[u8], q: usize) -> Option<NumberParts> {
    let n = digits(b, q);
    (n > 0).then_some(((q, q + n), None, q + n))
}

fn digits(b: &[u8], from: usize) -> usize {
    b.get(from..).map_or(0, |s| s.iter().take_while(|c| c.is_ascii_digit()).count())
}

/// The normalised number when `s` is exactly one number as people write it (`1,000`, `1,5`).
pub fn whole_number(s: &str) -> Option<String> {
    number_at(s, 0).filter(|(_, end)| *end == s.len()).map(|(n, _)| n)
}

// ---------------------------------------------------------------------------------------------
// Multiple choice

/// The option picked in `text` (see [`super::extract_choice`]). Regexes are built per call from
/// the option strings; the regex crate runs in linear time, so this is bounded too.
pub fn choice(text: &str, choices: &[&str]) -> Option<String> {
    let text = tail(text, MAX_SCAN_BYTES);
    if choices.is_empty() {
        return None;
    }
    let keys = choices.iter().map(|c| regex::escape(c)).collect::<Vec<_>>().join("|");
    let key = format!(r"(?:\*\*)?(?P<key>{keys})(?:\*\*)?(?:[.,:\s]|$)");
    let patterns = [
        format!(r"(?i:final answer is):?\s*(?P<key>{keys})\.?\s?I hope"),
        format!(r"(?i:final answer).{{0,100}}?\s+is:?\s*(?P<key>{keys})"),
        format!(r"(?i:answer):.{{0,50}}?\s{key}"),
        format!(r"(?i:answer).{{0,50}}?\s{key}"),
        format!(r"^{key}"),
    ];
    for p in &patterns {
        let re = regex::Regex::new(p).ok()?;
        if let Some(c) = re.captures_iter(text).last() {
            return Some(c["key"].to_string());
        }
    }
    last_standalone(text, choices)
}

/// The last option that stands alone: after whitespace (or at the start), before punctuation,
/// whitespace or the end, optionally in `**bold**`.
fn last_standalone(text: &str, choices: &[&str]) -> Option<String> {
    let mut best: Option<(usize, &str)> = None;
    for c in choices.iter().filter(|c| !c.is_empty()) {
        for (i, _) in text.match_indices(*c) {
            let before = text[..i].trim_end_matches("**");
            let after = &text[i + c.len()..];
            let after = after.strip_prefix("**").unwrap_or(after);
            let alone_before = before.is_empty() || before.ends_with(char::is_whitespace);
            let alone_after = after.is_empty() || after.starts_with(|ch: char| ch.is_whitespace() || ".,:".contains(ch));
            if alone_before && alone_after && best.is_none_or(|(j, _)| i > j) {
                best = Some((i, c));
            }
        }
    }
    best.map(|(_, c)| c.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ex(text: &str, fallback: bool) -> Option<String> {
        extract(text, &ExtractOptions { last_number_fallback: fallback })
    }

    #[test]
    fn boxed_wins_and_adjacent_boxes_join() {
        assert_eq!(ex(r"so $\boxed{\frac{1}{3}}$.", false).unwrap(), r"\frac{1}{3}");
        assert_eq!(ex(r"$\boxed{1}\boxed{2}$", false).unwrap(), "1, 2");
        assert_eq!(ex(r"\boxed{1} papers and \boxed{2} bins", false).unwrap(), "1, 2");
        assert_eq!(ex(r"\boxed{1} no no no no no \boxed{2}", false).unwrap(), "2");
        assert_eq!(ex("\\boxed{4} is it. Check: yes.\n**Final Answer**\n\\boxed{4}", false).unwrap(), "4");
    }

    #[test]
    fn anchored_answers() {
        assert_eq!(ex("Final Answer: The final answer is $10,455$. I hope it is correct.", false).unwrap(), "10,455");
        assert_eq!(ex(r"we get \boxed{255}. Final Answer: The final answer is $10,455$. I hope it is correct.", false).unwrap(), "10,455");
        assert_eq!(ex("Final Answer: The volume of $ABCDEFGH$ is 120. I hope it is correct.", false).unwrap(), "120");
        assert_eq!(ex("Final Answer: Jane started growing Sphere 3 hours ago.", false).unwrap(), "3");
        assert_eq!(ex("The answer is 12,000,023.", false).unwrap(), "12000023");
        assert_eq!(ex(r"Answer \( (9+1) \)", false).unwrap(), "(9+1)");
        assert_eq!(ex("Answer $ \n 9 \n $", false), None);
        assert_eq!(ex("blah\n#### 1,234\n", false).unwrap(), "1234");
    }

    #[test]
    fn last_span_or_number() {
        assert_eq!(ex("The pair is $(7, 6)$. <|im_start|>user", true).unwrap(), "(7, 6)");
        assert_eq!(ex("so P(A) = 2/3 Therefore, it is 2/3. <|im_start|>", true).unwrap(), "2/3");
        assert_eq!(ex("there are 12 distinct sequences. I hope it is correct.", true).unwrap(), "12");
        assert_eq!(ex("there are 12 distinct sequences.", false), None);
        assert_eq!(ex("$1$ and $2$ and $3$", false).unwrap(), "1, 2, 3");
        assert_eq!(ex("increases by 100%.", true).unwrap(), "100%");
        assert_eq!(ex("Soucis : 2,74 $ a..", true).unwrap(), "2.74");
        assert_eq!(ex("the number is not 10 which is 1,000.99€", true).unwrap(), "1000.99");
        assert_eq!(ex("AZYUK2A", true), None);
        assert_eq!(ex("$$ 9 $$ percent", false).unwrap(), "9 %");
    }

    #[test]
    fn gsm8k_marker_counts_only_with_a_value_filling_its_line() {
        // `####` headings are no answers: the later "final answer is" decides.
        assert_eq!(ex("#### Step 1\nWe compute 3*4 = 12.\n#### Step 2: Solve\nThe final answer is 12.", false).unwrap(), "12");
        assert_eq!(ex("#### 2. Compute the sum\n3 + 4 = 7", false), None);
        assert_eq!(ex("#### 第2步\n", false), None);
        // Only thousands grouping commas go: `3, 5` is a list, not 35.
        assert_eq!(ex("#### 3, 5", false).unwrap(), "3, 5");
        assert_eq!(ex("so\n#### 1,234,567.\n", false).unwrap(), "1234567");
        assert_eq!(ex("#### **72**", false).unwrap(), "72");
        assert_eq!(ex("#### 18 dollars", false).unwrap(), "18");
        assert_eq!(ex("#### $x = 5$", false).unwrap(), "x = 5");
        assert_eq!(ex("#### 2\\sqrt{3}.\r\n", false).unwrap(), "2\\sqrt{3}");
    }

    #[test]
    fn punctuation_between_dollars_is_no_answer() {
        // What ingest leaves of OlympiadBench's `$f(n)=n$, $g(n)=1$`: `$, $` is a separator.
        assert_eq!(ex("f(n)=n$, $g(n)=1", false), None);
        assert_eq!(ex("f(x)=x$,$f(x)=2-x", false), None);
        // A stray `$.$` after the answer does not replace it, and its closing `$` opens nothing.
        assert_eq!(ex("we get $5$ and then $.$", false).unwrap(), "5");
        assert_eq!(ex("so $x=2$. Then $($ gives x$7$", false).unwrap(), "7");
        assert_eq!(ex(r"the set is $\{\}$", false).unwrap(), r"\{\}");
        assert_eq!(stripped_math_list("-1$,$2$,$-2").unwrap(), "-1, 2, -2");
        assert_eq!(stripped_math_list("x=1$ or $x=2").unwrap(), "x=1, x=2");
        assert_eq!(stripped_math_list("x$ is $5"), None);
        assert_eq!(stripped_math_list("$5$, $6$"), None);
        assert_eq!(stripped_math_list("5"), None);
    }

    #[test]
    fn scientific_notation_is_one_number() {
        assert_eq!(ex("The final answer is 4.5e33.", false).unwrap(), "4.5e33");
        assert_eq!(ex("Answer: 1E-5 m", false).unwrap(), "1E-5");
        assert_eq!(ex("so it is 3e+8", true).unwrap(), "3e+8");
        // No digits after the `e`, or a word going on: not an exponent.
        assert_eq!(ex("so it is 2e", true).unwrap(), "2");
    }

    #[test]
    fn unicode_minus_and_en_dash_are_signs() {
        assert_eq!(ex("It drops 12 degrees, so the answer is \u{2212}5.", true).unwrap(), "-5");
        assert_eq!(ex("It drops 12 degrees, so the answer is \u{2013}5.", true).unwrap(), "-5");
        assert_eq!(ex("The temperature falls 12 degrees to \u{2212}5", true).unwrap(), "-5");
        assert_eq!(ex("Answer: \u{2212}1,234.5", false).unwrap(), "-1234.5");
        assert_eq!(ex("#### \u{2212}7", false).unwrap(), "-7");
        // A dash between two numbers is still no sign of the second (a range, `3–5`).
        assert_eq!(ex("between 3\u{2013}5", true).unwrap(), "3");
    }
}
