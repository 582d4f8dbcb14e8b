//! String-level clean-up of an extracted answer, before parsing: everything that is notation rather
//! than mathematics (`\left`, `\dfrac`, spacing commands, `$`, degrees, "and"/"or" between
//! answers, `{,}` thousands separators) is rewritten to one canonical spelling, so the parser only
//! has to know one form of each construct.

use regex::Regex;
use std::sync::LazyLock;

/// Canonical text of an answer. Pure string rewriting: linear in the input, never fails.
pub fn normalize(answer: &str) -> String {
    let mut s = unicode_symbols(answer);
    s = unwrap_boxes(&s);
    if !s.contains("matrix") && !s.contains("array") {
        // Answers copied out of JSON or Python sources often arrive with doubled backslashes
        // (`\\frac`); in a matrix `\\` is the row separator, so leave those alone.
        s = DOUBLED_COMMAND.replace_all(&s, r"\$1").into_owned();
    }
    // Before the spacing commands turn `10\,000` into the product `10 000`.
    s = join_spaced_thousands(&s);
    s = spacing_commands(&s);
    for (re, to) in REWRITES.iter() {
        s = re.replace_all(&s, *to).into_owned();
    }
    s = and_or_to_commas(&s);
    s = s.replace(['\n', '\t', '\r'], " ");
    trim_punctuation(&s).to_string()
}

/// Form used for the cheap "identical answers" check: whitespace removed, except that a space
/// after a comma is kept, because `32, 349` is a list and `32,349` a number.
pub fn squeeze(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c.is_whitespace() {
            continue;
        }
        out.push(c);
        if c == ',' && chars.next_if(|c| c.is_whitespace()).is_some() {
            out.push(' ');
            while chars.next_if(|c| c.is_whitespace()).is_some() {}
        }
    }
    out
}

fn unicode_symbols(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\u{2212}' | '\u{2013}' => out.push('-'),
            '\u{00d7}' | '\u{22c5}' | '\u{00b7}' => out.push_str(r" \cdot "),
            '\u{00f7}' => out.push('/'),
            '\u{2264}' => out.push_str(r" \le "),
            '\u{2265}' => out.push_str(r" \ge "),
            '\u{2260}' => out.push_str(r" \ne "),
            '\u{221e}' => out.push_str(r"\infty "),
            '\u{03c0}' => out.push_str(r"\pi "),
            '\u{221a}' => out.push_str(r"\sqrt"),
            '\u{00b0}' => out.push_str(r"^\circ"),
            '\u{00b2}' => out.push_str("^2"),
            '\u{00b3}' => out.push_str("^3"),
            '\u{222a}' => out.push_str(r" \cup "),
            '\u{2208}' => out.push_str(r" \in "),
            '\u{00b1}' => out.push_str(r" \pm "),
            '\u{00a0}' => out.push(' '),
            _ => out.push(c),
        }
    }
    out
}

/// `\boxed{x}` → `x`, so an answer that still carries its box compares like the bare answer; a
/// blank box (which [`crate::answer::boxes_from_end`] passes over) is dropped.
fn unwrap_boxes(s: &str) -> String {
    let mut out = BLANK_BOX.replace_all(s, "").into_owned();
    // Each pass removes one box; the bound keeps a pathological input linear-ish.
    for _ in 0..8 {
        let Some(b) = crate::answer::boxes_from_end(&out, 1).into_iter().next() else { break };
        let inner = b.content.to_string();
        out.replace_range(b.start..b.end, &inner);
    }
    out
}

static BLANK_BOX: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"\\(?:boxed|fbox)\s*\{\s*\}").expect("static regex"));

static DOUBLED_COMMAND: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"\\\\([a-zA-Z])").expect("static regex"));

/// Ordered rewrites; each is a plain regex (linear time). A command name is matched with the
/// character after it captured as `$1` (the regex crate has no look-ahead), so `\le` does not
/// match inside `\left` and `\lt3` still matches.
static REWRITES: LazyLock<Vec<(Regex, &'static str)>> = LazyLock::new(|| {
    let rules: &[(&str, &str)] = &[
        // Delimiter sizing carries no meaning; `\left.` / `\right.` are invisible delimiters.
        (r"\\(?:left|right|middle|[bB]igg?[lr]?)\s*\.", ""),
        (r"\\(?:left|right|middle|[bB]igg?[lr]?)([^a-zA-Z]|$)", "$1"),
        (r"\\[dtc]frac([^a-zA-Z]|$)", r"\frac$1"),
        (r"\\(?:displaystyle|textstyle|scriptstyle|limits|nolimits|mathstrut)([^a-zA-Z]|$)", "$1"),
        // `\quad` is often glued to the next word (`\quadx_2`); match it by prefix.
        (r"\\q?quad", " "),
        (r"\\(?:hline|cline\{[^}]*\}|noindent|nonumber|notag)([^a-zA-Z]|$)", "$1"),
        (r"\\\$|\$", ""),
        (r"\s*\{\s*,\s*\}", ","),
        (
            r"\\(?:mathrm|mathit|mathbf|mathsf|mathtt|textbf|textit|textrm|textnormal|textsf|texttt|mbox|hbox|boldsymbol|bm|operatorname\*?)\s*\{",
            r"\text{",
        ),
        (r",?\s*\\text\s*\{\s*(?:and|or)\s*\}", " and "),
        (r"\\text\s*\{\s*\}", ""),
        // Degrees: 90^\circ = 90 (angles are compared as plain numbers).
        (r"\^\s*\{\s*\\circ\s*\}|\^\s*\\circ|\\circ|\\degree", ""),
        // Percent in all its spellings becomes a postfix `%`.
        (r"\\text\{\s*(?:percentage|percent|pct)\s*\}|\\%", "%"),
        (r"\s*\b(?:percentage|percent|pct)\b", "%"),
        (r"\\(?:dots|ldots|cdots|dotsc|dotsb)([^a-zA-Z]|$)", "$1"),
        (r"\\lt([^a-zA-Z]|$)", "<$1"),
        (r"\\gt([^a-zA-Z]|$)", ">$1"),
        (r"\\(?:leqslant|leq|le)([^a-zA-Z]|$)", r" \le $1"),
        (r"<=", r" \le "),
        (r"\\(?:geqslant|geq|ge)([^a-zA-Z]|$)", r" \ge $1"),
        (r">=", r" \ge "),
        (r"\\(?:neq|ne)([^a-zA-Z]|$)", r" \ne $1"),
        (r"!=", r" \ne "),
        (r"\\(?:infinity|infin)([^a-zA-Z]|$)|\binfinity\b|\binf\b", r"\infty $1"),
        (r"\\(?:emptyset|varnothing)([^a-zA-Z]|$)", r"\{\}$1"),
        (r"\\lbrace([^a-zA-Z]|$)", r"\{$1"),
        (r"\\rbrace([^a-zA-Z]|$)", r"\}$1"),
        (r"\\langle([^a-zA-Z]|$)", "($1"),
        (r"\\rangle([^a-zA-Z]|$)", ")$1"),
        (r"\\(?:lvert|rvert|vert)([^a-zA-Z]|$)", "|$1"),
        (r"\\(?:lfloor|rfloor|lceil|rceil)([^a-zA-Z]|$)", "$1"),
    ];
    rules.iter().map(|(p, to)| (Regex::new(p).expect("static regex"), *to)).collect()
});

/// `\,` `\;` `\:` `\>` `\ ` `~` are spaces; `\!` (negative space, as in `11,\!111`) joins
/// what it separates. A `\\` row break is kept whole, so its second backslash is never read as the
/// start of `\ `.
fn spacing_commands(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, chars.peek()) {
            ('~', _) => out.push(' '),
            ('\\', Some('\\')) => {
                out.push_str("\\\\");
                chars.next();
            }
            ('\\', Some('!')) => {
                chars.next();
                while chars.next_if(|c| c.is_whitespace()).is_some() {}
            }
            ('\\', Some(',' | ';' | ':' | '>' | ' ')) => {
                chars.next();
                out.push(' ');
            }
            _ => out.push(c),
        }
    }
    out
}

/// `10\,000`, `1\ 234\ 567`, `10~000`, `10 000` (U+2009 or U+202F thin space) → `10000`: digit
/// groups of three after a lead of one to three digits, joined by a thin space, are one number,
/// as `join_thousands` reads `10,000`. A group must be exactly three digits (`2\,x`, `1\,25`
/// and `12\,3456` stay apart), and a run that follows a digit, `.` or a comma is not a start.
fn join_spaced_thousands(s: &str) -> String {
    const SEPARATORS: [&str; 5] = ["\\,", "\\ ", "~", "\u{2009}", "\u{202f}"];
    let digits = |t: &str| t.bytes().take_while(u8::is_ascii_digit).count();
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        let b = s.as_bytes();
        // The `,` of a `\,` before the number is a space, not a comma.
        let comma_before = i > 0 && b[i - 1] == b',' && !(i > 1 && b[i - 2] == b'\\');
        let starts_number = b[i].is_ascii_digit() && (i == 0 || !(b[i - 1].is_ascii_digit() || b[i - 1] == b'.' || comma_before));
        if starts_number && digits(&s[i..]) <= 3 {
            let mut end = i + digits(&s[i..]);
            let mut joined = s[i..end].to_string();
            while let Some(sep) = SEPARATORS.iter().find(|sep| s[end..].starts_with(**sep)) {
                let group = end + sep.len();
                if digits(&s[group..]) != 3 {
                    break;
                }
                joined.push_str(&s[group..group + 3]);
                end = group + 3;
            }
            out.push_str(&joined);
            i = end;
            continue;
        }
        let ch = s[i..].chars().next().expect("char boundary");
        out.push(ch);
        i += ch.len_utf8();
    }
    out
}

/// "1, 2 and 3", "1 or 2", `(11,7)or(7,11)` → comma lists. A word counts when it is not part of a
/// longer lowercase word ("for", "order"); a following capital is allowed so `1orW(x)` splits.
fn and_or_to_commas(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    while i < b.len() {
        let word = if b[i..].starts_with(b"and") {
            3
        } else if b[i..].starts_with(b"or") {
            2
        } else {
            0
        };
        let before_ok = i == 0 || !b[i - 1].is_ascii_alphabetic();
        let after_ok = b.get(i + word).is_none_or(|c| !c.is_ascii_lowercase());
        // `\operatorname`, `\orth`: a command, not a word.
        let in_command = i > 0 && b[i - 1] == b'\\';
        if word > 0 && before_ok && after_ok && !in_command && !inside_text_run(b, i) {
            let trimmed = out.trim_end().trim_end_matches(',').trim_end().len();
            out.truncate(trimmed);
            out.push_str(", ");
            i += word;
            while b.get(i) == Some(&b' ') {
                i += 1;
            }
            continue;
        }
        let ch = s[i..].chars().next().expect("char boundary");
        out.push(ch);
        i += ch.len_utf8();
    }
    out
}

/// Inside `\text{...}` prose ("form a regular hexagon") "and"/"or" are words, not separators,
/// unless the text is only that word (handled by the `\text{and}` rewrite before).
fn inside_text_run(b: &[u8], i: usize) -> bool {
    let start = i.saturating_sub(400);
    let window = &b[start..i];
    let Some(open) = window.windows(6).rposition(|w| w == b"\\text{") else { return false };
    !window[open..].contains(&b'}')
}

fn trim_punctuation(s: &str) -> &str {
    let mut s = s.trim();
    loop {
        let t = s.trim_end_matches(['.', ',', ';', ' ']).trim_start_matches([',', ';', ' ']);
        // A trailing `\\` ends an align row, not the answer.
        let t = t.strip_suffix("\\\\").unwrap_or(t).trim();
        if t.len() == s.len() {
            return s;
        }
        s = t;
    }
}

#[cfg(test)]
mod tests {
    use super::normalize;

    #[test]
    fn latex_noise_is_removed() {
        assert_eq!(normalize(r"\left( \dfrac{1}{3} \right)"), r"( \frac{1}{3} )");
        assert_eq!(normalize(r"$\tfrac12$."), r"\frac12");
        assert_eq!(normalize(r"11,\! 111,\! 100"), "11,111,100");
        assert_eq!(normalize(r"14{,}916"), "14,916");
        assert_eq!(normalize(r"14 {, }916"), "14,916");
        assert_eq!(normalize(r"a\,b\;c\quad d\qquadx"), "a b c  d x");
        assert_eq!(normalize(r"1 & 2 \\ 3 & 4"), r"1 & 2 \\ 3 & 4");
        assert_eq!(normalize(r"\\frac{1}{2}"), r"\frac{1}{2}");
        assert_eq!(normalize(r"\boxed{\frac{1}{2}}"), r"\frac{1}{2}");
    }

    #[test]
    fn thin_space_thousands_are_one_number() {
        assert_eq!(normalize(r"10\,000"), "10000");
        assert_eq!(normalize(r"1\,234\,567.5"), "1234567.5");
        assert_eq!(normalize(r"1\ 000~000"), "1000000");
        assert_eq!(normalize("12\u{2009}345\u{202f}678"), "12345678");
        assert_eq!(normalize(r"[1\,000, 2\,000)"), "[1000, 2000)");
        assert_eq!(normalize(r"x =\,1\,000"), "x = 1000");
        // Not digit groups: a variable, a group of other than three digits, a long lead, the
        // digits after a decimal point, a list.
        assert_eq!(normalize(r"2\,x"), "2 x");
        assert_eq!(normalize(r"1\,25"), "1 25");
        assert_eq!(normalize(r"12\,3456"), "12 3456");
        assert_eq!(normalize(r"1234\,567"), "1234 567");
        assert_eq!(normalize(r"0.5\,100"), "0.5 100");
        assert_eq!(normalize(r"1,\,100"), "1, 100");
    }

    #[test]
    fn degrees_percent_and_relations_are_canonical() {
        assert_eq!(normalize(r"90^\circ"), "90");
        assert_eq!(normalize(r"90^{\circ}"), "90");
        assert_eq!(normalize(r"28\%"), "28%");
        assert_eq!(normalize("28 percent"), "28%");
        assert_eq!(normalize(r"\boxed{28 pct}"), "28%");
        assert_eq!(normalize(r"x \geq 5"), r"x  \ge  5");
        assert_eq!(normalize("x <= 2"), r"x  \le  2");
    }

    #[test]
    fn and_or_become_commas_only_as_words() {
        assert_eq!(normalize("1, 2, and 3"), "1, 2, 3");
        assert_eq!(normalize(r"6 \text{ and } 8"), "6, 8");
        assert_eq!(normalize("(11,7)or(7,11)"), "(11,7), (7,11)");
        assert_eq!(normalize("W(x)=1orW(x)=-1"), "W(x)=1, W(x)=-1");
        assert_eq!(normalize(r"\text{The midpoints form a regular hexagon}"), r"\text{The midpoints form a regular hexagon}");
        assert_eq!(normalize("order"), "order");
    }
}
