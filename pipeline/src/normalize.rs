//! Text normalisation shared by deduplication and decontamination.
//!
//! The stages must agree on what "the same text" means: exact deduplication compares
//! [`normalize`]d text, near deduplication and decontamination compare n-grams of [`words`], and
//! all hash with `schemas::rng::hash64` / `hash_ngram`.

use unicode_normalization::UnicodeNormalization;

/// Unicode NFC, lowercase, every whitespace run collapsed to one space, trimmed.
///
/// NFC comes first so that a precomposed `é` and `e` + combining acute compare equal. The
/// lowercased text is checked again because case mapping is not guaranteed to preserve NFC
/// (some characters, e.g. `İ`, lowercase to a combining sequence); the check is cheap.
pub fn normalize(text: &str) -> String {
    let lower = text.nfc().collect::<String>().to_lowercase();
    let lower = if unicode_normalization::is_nfc(&lower) { lower } else { lower.nfc().collect() };
    let mut out = String::with_capacity(lower.len());
    for word in lower.split_whitespace() {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(word);
    }
    out
}

/// The text split into the words near-deduplication and decontamination compare.
///
/// The text is folded with NFKC (so full-width digits, ligatures and superscripts read as their
/// plain forms) and lowercased. A word is a maximal run of alphanumeric characters
/// (`char::is_alphanumeric`, plus combining marks so that scripts such as Devanagari are not cut
/// inside a word). Everything else (punctuation, whitespace, LaTeX backslashes and braces,
/// operators) only separates words, and digit groups joined by thousands commas are one number
/// (`1,000` is `1000`, as `1000` is written without them), except inside brackets and in lists
/// (see [`without_thousands_commas`]).
///
/// So `coordinates.` and `coordinates` are the same word, `\frac{1}{2}` is `frac 1 2` and `2+2`
/// is `2 2`: a benchmark question re-punctuated still matches. LaTeX command names stay words:
/// a question re-typeset from `\dfrac{3}{4}` to `3/4` matches less, but without them a formula
/// is little more than its numbers, and those match unrelated lists of numbers (MATH-500's
/// `\log_2{3} \cdot \log_3{4} ...` matched an MBPP test's list of pairs). The cost of dropping
/// symbols is treating texts that differ only in them (`x+y` vs `x-y`) as equal; for n-grams of
/// several words that cost is small.
pub fn words(text: &str) -> Vec<String> {
    let folded: Vec<char> = text.nfkc().collect::<String>().to_lowercase().chars().collect();
    let text: String = without_thousands_commas(&folded).into_iter().collect();
    text.split(|c: char| !is_word_char(c)).filter(|w| !w.is_empty()).map(str::to_string).collect()
}

/// `1,000,000` → `1000000`: one to three digits, then groups of exactly three after commas. Not
/// inside parentheses or square brackets, where commas separate values (`[10,100,1000]`,
/// `(123,456)`), nor in a run that a comma and a digit follow, which is a list (`1,000,2`).
fn without_thousands_commas(text: &[char]) -> Vec<char> {
    let digit = |i: usize| text.get(i).is_some_and(char::is_ascii_digit);
    let mut out = Vec::with_capacity(text.len());
    let (mut i, mut depth) = (0, 0i32);
    while i < text.len() {
        // Braces are LaTeX grouping (`\boxed{1,000}`), not lists; a stray closing bracket (`1)`,
        // `:)`) must not keep every later number apart.
        match text[i] {
            '(' | '[' => depth += 1,
            ')' | ']' => depth = (depth - 1).max(0),
            _ => {}
        }
        let starts = digit(i) && (i == 0 || !(digit(i - 1) || matches!(text[i - 1], '.' | ',')));
        if depth == 0 && starts {
            let lead = (i..text.len()).take_while(|&j| digit(j)).count();
            let mut end = i + lead;
            while text.get(end) == Some(&',') && (1..=3).all(|k| digit(end + k)) && !digit(end + 4) {
                end += 4;
            }
            let list_follows = text.get(end) == Some(&',') && digit(end + 1);
            if lead <= 3 && end > i + lead && !list_follows {
                out.extend(text[i..end].iter().filter(|&&c| c != ','));
                i = end;
                continue;
            }
        }
        out.push(text[i]);
        i += 1;
    }
    out
}

fn is_word_char(c: char) -> bool {
    c.is_alphanumeric() || unicode_normalization::char::is_combining_mark(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize_folds_case_whitespace_and_nfc() {
        assert_eq!(normalize("  Hello \t\n  WORLD  "), "hello world");
        // Precomposed é vs e + combining acute.
        assert_eq!(normalize("Caf\u{e9}"), normalize("Cafe\u{301}"));
        assert_eq!(normalize("CAFE\u{301}"), "caf\u{e9}");
        assert_eq!(normalize(""), "");
        assert_eq!(normalize(" \n\t "), "");
    }

    #[test]
    fn normalize_output_is_nfc_even_after_lowercasing() {
        let n = normalize("\u{130}STANBUL");
        assert!(unicode_normalization::is_nfc(&n));
        assert_eq!(normalize(&n), n);
        // `J` + caron has no precomposed capital, so NFC leaves it; lowercased, `j` + caron has
        // one (U+01F0), which only the second NFC gives. Without it the two spellings of `ǰ`
        // would be different texts to exact deduplication.
        assert_eq!(normalize("J\u{30C}"), "\u{1F0}");
        assert_eq!(normalize("J\u{30C}"), normalize("\u{1F0}"));
    }

    #[test]
    fn words_drop_punctuation_and_latex_markup() {
        assert_eq!(words("Find the coordinates."), ["find", "the", "coordinates"]);
        assert_eq!(words("coordinates."), words("COORDINATES"));
        assert_eq!(words("\\frac{1}{2} + x^2"), ["frac", "1", "2", "x", "2"]);
        assert_eq!(words("What is 2+2?"), ["what", "is", "2", "2"]);
        assert_eq!(words("don't"), ["don", "t"]);
        assert!(words("  ?!. ").is_empty());
    }

    #[test]
    fn words_fold_compatibility_forms_and_thousands_commas() {
        assert_eq!(words("Pay $1,000,000 now"), ["pay", "1000000", "now"]);
        assert_eq!(words("1,000 apples"), words("1000 APPLES"));
        // Full-width digits and letters, a ligature, a superscript.
        assert_eq!(words("\u{ff11}\u{ff12} \u{ff21}pples, \u{fb01}ne x\u{b2}"), ["12", "apples", "fine", "x2"]);
        // Not thousands: lists, bracketed values and decimals keep their parts.
        assert_eq!(words("1,2,3 and 1,0000 and 2,50"), ["1", "2", "3", "and", "1", "0000", "and", "2", "50"]);
        assert_eq!(words("x,123"), ["x", "123"]);
        assert_eq!(
            words("[10,100,1000] (123,456) 1,000,2 12345,678"),
            ["10", "100", "1000", "123", "456", "1", "000", "2", "12345", "678"]
        );
        assert_eq!(words("0.5,000"), ["0", "5", "000"]);
        // Braces group, they do not list; a stray `)` does not keep later numbers apart.
        assert_eq!(words("\\boxed{1,000} 1) 2,000"), ["boxed", "1000", "1", "2000"]);
    }

    #[test]
    fn words_keep_non_latin_scripts_whole() {
        assert_eq!(words("Число π равно"), ["число", "π", "равно"]);
        // Devanagari vowel signs are combining marks, not separators.
        assert_eq!(words("नमस्ते दुनिया"), ["नमस्ते", "दुनिया"]);
    }
}
