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

/// The normalised text split into words.
///
/// A word is a maximal run of alphanumeric characters (`char::is_alphanumeric`, plus combining
/// marks so that scripts such as Devanagari are not cut inside a word). Everything else —
/// punctuation, whitespace, LaTeX backslashes and braces, operators — only separates words.
/// So `coordinates.` and `coordinates` are the same word, `\frac{1}{2}` is `frac 1 2`, and
/// `2+2` is `2 2`. Dropping punctuation makes matching robust to reformatting (a benchmark
/// question re-punctuated or re-typeset still matches), at the cost of treating texts that
/// differ only in symbols (`x+y` vs `x-y`) as equal; for n-grams of several words that cost is
/// small.
pub fn words(text: &str) -> Vec<String> {
    split_words(&normalize(text)).map(str::to_string).collect()
}

/// Words of text that is already normalised; see [`words`] for what a word is.
pub fn split_words(normalized: &str) -> impl Iterator<Item = &str> {
    normalized.split(|c: char| !is_word_char(c)).filter(|w| !w.is_empty())
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
    fn words_keep_non_latin_scripts_whole() {
        assert_eq!(words("Число π равно"), ["число", "π", "равно"]);
        // Devanagari vowel signs are combining marks, not separators.
        assert_eq!(words("नमस्ते दुनिया"), ["नमस्ते", "दुनिया"]);
    }
}
