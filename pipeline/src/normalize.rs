//! Text normalisation shared by deduplication and decontamination.
//!
//! Both stages must agree on what "the same text" means, so they both go through [`normalize`]
//! and [`words`], and hash with `schemas::rng::hash64` / `hash_ngram`.

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
/// (`1,000` is `1000`, as `1000` is written without them).
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
    let thousands_group = |at: usize| {
        folded.get(at..at + 3).is_some_and(|g| g.iter().all(char::is_ascii_digit)) && !folded.get(at + 3).is_some_and(char::is_ascii_digit)
    };
    let mut out = Vec::new();
    let mut i = 0;
    while i < folded.len() {
        if !is_word_char(folded[i]) {
            i += 1;
            continue;
        }
        let mut word = String::new();
        while i < folded.len() {
            if is_word_char(folded[i]) {
                word.push(folded[i]);
                i += 1;
            } else if folded[i] == ',' && word.bytes().all(|b| b.is_ascii_digit()) && thousands_group(i + 1) {
                i += 1;
            } else {
                break;
            }
        }
        out.push(word);
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
        // Not thousands: lists and decimals keep their parts.
        assert_eq!(words("1,2,3 and 1,0000 and 2,50"), ["1", "2", "3", "and", "1", "0000", "and", "2", "50"]);
        assert_eq!(words("x,123"), ["x", "123"]);
    }

    #[test]
    fn words_keep_non_latin_scripts_whole() {
        assert_eq!(words("Число π равно"), ["число", "π", "равно"]);
        // Devanagari vowel signs are combining marks, not separators.
        assert_eq!(words("नमस्ते दुनिया"), ["नमस्ते", "दुनिया"]);
    }
}
