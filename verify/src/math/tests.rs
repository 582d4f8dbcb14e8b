//! Behaviour of the public API, one test per feature; the Math-Verify corpus is in
//! `tests/math_verify_cases.rs`.

use super::*;
use std::time::{Duration, Instant};

fn eq(gold: &str, pred: &str) -> bool {
    equivalent(gold, pred)
}

fn assert_same(pairs: &[(&str, &str)]) {
    for (g, p) in pairs {
        assert!(eq(g, p), "{g:?} should equal {p:?}");
    }
}

fn assert_different(pairs: &[(&str, &str)]) {
    for (g, p) in pairs {
        assert!(!eq(g, p), "{g:?} should differ from {p:?}");
    }
}

#[test]
fn latex_cleanup() {
    assert_same(&[
        (r"\frac{1}{3}", r"\left( \frac{1}{3} \right)"),
        (r"\frac{1}{3}", r"\dfrac{1}{3}"),
        (r"\frac{1}{3}", r"\tfrac{1}{3}"),
        (r"\frac{1}{3}", r"\cfrac{1}{3}"),
        (r"\frac{1}{2}", r"\frac12"),
        (r"\sqrt{3}", r"\sqrt3"),
        (r"2\sqrt{2}", r"2 \sqrt 2"),
        ("11111111100", r"11,\!111,\!111,\!100"),
        ("5", r"\,5\;"),
        ("5", "$5$"),
        (r"\frac{1}{2}", r"\boxed{\frac{1}{2}}"),
        (r"\frac{9}{4}\pi", r"\frac94\pi"),
    ]);
}

#[test]
fn units_degrees_percent() {
    assert_same(&[
        ("15", r"15\text{ cm}^2"),
        (r"\frac{1}{3}", r"\frac{1}{3} \text{meters}"),
        ("125", "125 miles"),
        ("90", r"90^\circ"),
        (r"90^{\circ}", "90"),
        (r"28\%", "28 percent"),
        (r"28\%", "28"),
        (r"28\%", "0.28"),
        (r"20\%", r"\frac{1}{5}"),
    ]);
    assert_different(&[(r"28\%", "29"), (r"28\%", "2.8")]);
}

#[test]
fn thousands_separators_and_decimals() {
    assert_same(&[("1000", "1,000"), ("7425000", "7,425,000"), ("1000", "1000.0"), ("0.4", ".4"), ("14916", "14{,}916")]);
    // "32, 349" with a space is a list of two numbers, not 32349.
    assert_different(&[("32349", "32, 349"), ("32,349", "32, 349"), ("(1,200)", "1200")]);
    // Thin spaces group digits too; `10\,000` is ten thousand, not the product 10·000 = 0.
    assert_same(&[("10^4", r"10\,000"), ("1000", r"1\,000"), ("1234567", r"1\ 234~567"), ("[1000, 2000]", r"[1\,000, 2\,000]")]);
    assert_same(&[("10000", "10\u{2009}000"), (r"2x", r"2\,x")]);
    assert_different(&[("0", r"1\,000"), ("0", r"10\,000")]);
}

#[test]
fn exact_rationals_and_tolerance() {
    assert_same(&[("10/9", r"\frac{10}{9}"), ("-10/9", r"-\frac{10}{9}"), ("0.5", r"\frac{2}{4}"), (r"\frac{1}{3}", "0.333333")]);
    // Decimals agree to `float_digits` places, no further: 0.3333 is not 1/3 at 6 places...
    assert_different(&[(r"\frac{1}{3}", "0.3333"), ("1000", "1000.1"), (r"\frac{70}{9}", "7.78"), ("2", "2.000001")]);
    // ...but is at 4, and irrational values compare at float precision.
    let four = CompareOptions { float_digits: 4, ..CompareOptions::default() };
    assert!(equivalent_with(r"\frac{1}{3}", "0.3333", &four));
    assert_same(&[(r"3\sqrt{13}", r"\sqrt{117}"), ("4.123105625617661", r"\sqrt{17}"), (r"\frac{\pi}{2}", "1.5707963")]);
    assert_different(&[("4", r"4\sqrt{2}"), ("2", r"\frac{1+\sqrt{5}}{2}")]);
    // The relative tolerance is for values computed in floating point; between exact values a
    // decimal is judged by its places alone, however large the numbers (a relative 1e-9 of 4e9
    // would be 4).
    assert_different(&[("4000000000", "4000000003.5"), ("4000000003.5", "4000000000"), ("10^{12}", "1000000000000.5")]);
    assert_same(&[(r"10^{12}\sqrt{2}", "1414213562373.095")]);
}

#[test]
fn overflow_is_not_equal() {
    // 10^40 and 10^40 + 1 round to the same float; past i128 nothing is claimed equal.
    assert_different(&[("10^{40}", "10^{40}+1"), ("2^{200}", "4^{100}")]);
    assert_same(&[("2^{100}", "1267650600228229401496703205376")]);
}

#[test]
fn tuples_intervals_sets() {
    assert_same(&[
        ("(1,2)", r"\left(1, 2\right)"),
        (r"(1,\frac{9}{2})", "(1,4.5)"),
        ("[0,1)", "[0, 1)"),
        (r"\{1,2\}", r"\{2,1\}"),
        ("1, 2, 3", r"\{3, 2, 1\}"),
        (r"(2, 12) \cup (12, 102)", r"x \in (2,12) \cup (12,102)"),
        ("(-6, 10)", r"x \in (-6, 10)"),
        (r"(1, +\infty)", r"(1, \infty)"),
        (r"\{5\}", "5"),
        (r"\frac{639}{40}", r"15\frac{39}{40}, \frac{639}{40}"),
        ("1/2, 3", "0.5, 3, 1/2"),
    ]);
    assert_different(&[("[0,1)", "(0,1)"), ("[0,9)", "[0,1)"), ("(3,1)", "{1,3}"), ("(1,2)", "(2,1)"), (r"\{1,2\}", r"\{1,2,3\}")]);
}

#[test]
fn matrices() {
    let m = r"\begin{pmatrix}1 & 2 \\ 3 & 4\end{pmatrix}";
    assert_same(&[
        (m, r"\left[\begin{array}{cc}1 & 2 \\3 & 4\end{array}\right]"),
        (m, r"\begin{bmatrix}1&2\\3&4\end{bmatrix}"),
        (
            r"\begin{pmatrix}6 & 8 \\ 10 & 12\end{pmatrix}",
            r"\begin{pmatrix}1 & 2 \\ 3 & 4\end{pmatrix} + \begin{pmatrix}5 & 6 \\ 7 & 8\end{pmatrix}",
        ),
        (r"\begin{pmatrix}\frac{1}{2}\\ 1\end{pmatrix}", r"\begin{pmatrix}0.5\\1\end{pmatrix}"),
    ]);
    assert_different(&[(m, r"\begin{pmatrix}1 & 2 \\ 3 & 5\end{pmatrix}"), (m, r"\begin{pmatrix}1 & 2 & 3 & 4\end{pmatrix}")]);
}

#[test]
fn plus_minus_is_a_set_of_two() {
    assert_same(&[
        (r"\pm 2021", "-2021, 2021"),
        (r"1 \pm \sqrt{19}", r"1-\sqrt{19}, 1+\sqrt{19}"),
        (r"\{1\pm\sqrt{5},-2\}", r"-2, 1+\sqrt5, 1-\sqrt5"),
    ]);
    assert_different(&[(r"\pm 2021", "2021")]);
}

#[test]
fn expressions_with_variables() {
    assert_same(&[
        (r"\frac{x+2}{7}", r"\frac{x}{7}+\frac{2}{7}"),
        (r"\tan^2(y)+1", r"\sec^2(y)"),
        (r"(x+1)^2", "x^2+2x+1"),
        (r"2 \sin b \cos a", r"\sin(a+b) - \sin(a-b)"),
        (r"\frac{\pi r}{h+r}", r"\frac{r\pi}{r+h}"),
        (r"\sum_{k=0}^{n-1} F_k F_{n-k-1}", r"\sum_{k=0}^{n-1} F_{n-k-1} F_k"),
        ("h^2+rh", "h(h+r)"),
    ]);
    assert_different(&[
        ("x+2n+1", "x+1"),
        ("(a+5)(b+2)", "(+5)(b+2)"),
        ("|x|", "x"),
        ("f(x)", "f(y)"),
        (r"\sum_{k=0}^{n-1} F_k", r"\sum_{k=0}^{n-2} F_k"),
    ]);
    let lenient = CompareOptions { strict_variables: false, ..CompareOptions::default() };
    assert!(equivalent_with("f(x)", "f(y)", &lenient));
}

#[test]
fn equations_and_relations() {
    assert_same(&[
        ("3", "x = 3"),
        ("x = 3", "3"),
        ("x=11", "x = 5+5+1 = 7 =11"),
        ("1/3", r"x=1/3\approx0.33"),
        ("2x+4y-3=0", r"y=-\frac{1}{2}x+\frac{3}{4}"),
        ("x < 1", "-x > -1"),
        (r"x \leq 5", r"5 \geq x"),
        ("x != 3", r"x \neq 3"),
        (r"-2 \le x \le 7", "[-2, 7]"),
        (r"1\leq|z|\leq \frac{3}{2}", r"z \in \left[-\frac{3}{2}, -1\right] \cup \left[1, \frac{3}{2}\right]"),
        ("(p,q)=(3,2)", "(3,2)"),
        ("a_3 = 2, a_{37} = 19", "a_{37} = 19, a_3 = 2"),
    ]);
    assert_different(&[("x > 5", "x < 5"), ("x < 1", "x > -1"), ("2x + z = 1", "1"), ("7 = 11a+c", "11a+c"), ("x = 1", "y = 1")]);
}

#[test]
fn mixed_numbers() {
    assert_same(&[(r"\frac{639}{40}", r"15\frac{39}{40}"), ("40/9", "4 4/9"), ("-40/9", "-4 4/9"), ("4", "4 0/9")]);
    // Juxtaposed non-literals still multiply; explicit operators keep their meaning; an improper
    // "mixed number" matches nothing.
    assert_same(&[(r"\sqrt{3}", r"2\frac{\sqrt{3}}{2}"), ("103/9", "11 + 4/9")]);
    assert_different(&[("4", "4 4/9"), ("11", "11 7/6"), ("73/6", "11 7/6"), ("77/6", "11 7/6"), ("103/9", "(11) 4/9")]);
}

#[test]
fn base_subscripts_are_notation() {
    assert_same(&[("204_5", "204_{5}"), ("204_5", "204")]);
    assert_different(&[("204_5", "54"), ("1112112_3", "1112122_3")]);
}

#[test]
fn text_answers() {
    assert_same(&[
        ("055", r"\textbf{(55) }"),
        (r"\text{13}", "13"),
        (r"\text{Evelyn}", "Evelyn"),
        (r"\text{odd}", "odd"),
        (r"\text{C}", r"\text{(C)}"),
        (r"\text{E}", "E"),
    ]);
    assert_different(&[(r"\text{E}", "d"), ("e", "E")]);
}

#[test]
fn extraction_options() {
    let text = "so we get 12 apples and then 14 pears.";
    assert_eq!(extract(text, &ExtractOptions::MATH), None);
    assert_eq!(extract(text, &ExtractOptions::GSM8K).as_deref(), Some("14"));
    assert_eq!(ExtractOptions::for_benchmark("gsm8k_test"), ExtractOptions::GSM8K);
    assert_eq!(ExtractOptions::for_benchmark("math500"), ExtractOptions::MATH);
    assert_eq!(extract(r"... so $x = \boxed{\frac{1}{2}}$.", &ExtractOptions::MATH).as_deref(), Some(r"\frac{1}{2}"));
}

#[test]
fn verify_extracts_and_compares() {
    let v = verify("$28\\%$", "If its value ... a total loss of $\\boxed{28\\%}$.", &ExtractOptions::MATH);
    assert_eq!(v, Verdict { extracted: Some("28\\%".into()), correct: true });
    let v = verify("72", "Natalia sold 48/2 = 24 clips in May.\n#### 72", &ExtractOptions::GSM8K);
    assert!(v.correct);
    let v = verify("5", "I don't know.", &ExtractOptions::MATH);
    assert_eq!(v, Verdict { extracted: None, correct: false });
    // A gold that is a whole solution is reduced to its boxed answer.
    assert!(verify(r"so the answer is $\boxed{14{,}916}$", "$14916$", &ExtractOptions::MATH).correct);
    assert_eq!(gold_answer("1,000", &ExtractOptions::GSM8K), "1000");
    assert_eq!(gold_answer("x^2+1", &ExtractOptions::GSM8K), "x^2+1");
}

#[test]
fn gsm8k_marker_is_an_answer_only_when_a_value_follows() {
    let headed = "#### Step 1\nWe compute 3*4 = 12.\n#### Step 2: Solve\nThe final answer is 12.";
    assert_eq!(verify("12", headed, &ExtractOptions::MATH), Verdict { extracted: Some("12".into()), correct: true });
    // `3, 5` is two values; dropping its comma would read 35 and parse as 3·5 = 15.
    assert!(!verify("15", "#### 3, 5", &ExtractOptions::MATH).correct);
    assert!(verify(r"\{3, 5\}", "#### 3, 5", &ExtractOptions::MATH).correct);
    // The GSM8K gold format, on both sides.
    assert!(verify("Half of 2,468 is 1,234.\n#### 1,234", "so 1234 in all.\n#### 1,234", &ExtractOptions::GSM8K).correct);
    assert!(verify("Half of 2,468 is 1,234.\n#### 1,234", "#### 1234", &ExtractOptions::MATH).correct);
}

#[test]
fn multiple_choice() {
    let abcd = ["A", "B", "C", "D"];
    assert_eq!(extract_choice("The answer is A.", &abcd).as_deref(), Some("A"));
    assert_eq!(extract_choice("A. Because B is not valid", &abcd).as_deref(), Some("A"));
    assert_eq!(extract_choice("Because B is valid", &abcd).as_deref(), Some("B"));
    assert_eq!(extract_choice("No valid answer here", &abcd), None);
}

/// Pathological inputs must come back "not equal" (or the right answer) fast, never hang, panic
/// or overflow the stack.
#[test]
fn pathological_inputs_are_fast_and_false() {
    let deep_parens = format!("{}1{}", "(".repeat(5000), ")".repeat(5000));
    let deep_small = format!("{}1{}", "(".repeat(1000), ")".repeat(1000));
    let many_pm = r"1 \pm 2 \pm 3 \pm 4 \pm 5 \pm 6 \pm 7 \pm 8 \pm 9 \pm 10".to_string();
    let cases: Vec<(String, String)> = vec![
        ("1".into(), r"\frac{".repeat(10_000)),
        ("1".into(), r"\frac{1}{".repeat(300)),
        ("1".into(), r"\sqrt{".repeat(1000) + "2" + &"}".repeat(1000)),
        ("1".into(), "9^9^9^9".into()),
        ("1".into(), "9^{9^{9^{9}}}".into()),
        ("1".into(), "10^{10^{10}} - 10^{10^{10}} + 1".into()),
        ("1".into(), "1".repeat(1 << 20)),
        ("1".into(), format!("0.{}", "3".repeat(5000))),
        ("1".into(), deep_parens),
        ("1".into(), deep_small),
        ("1".into(), "1+".repeat(1500) + "1"),
        ("1".into(), r"\sum_{k=1}^{10^{12}} k".into()),
        ("1".into(), r"\sum_{i=1}^{9999} \sum_{j=1}^{9999} \sum_{k=1}^{9999} 1".into()),
        ("1".into(), "(10^{30})!".into()),
        ("1".into(), r"\binom{10^{30}}{10^{29}}".into()),
        ("x".into(), "(x+1)^{1000000000}".into()),
        ("1".into(), many_pm),
        ("1".into(), format!(r"\{{{}\}}", (0..3000).map(|i| i.to_string()).collect::<Vec<_>>().join(","))),
        ("1".into(), format!(r"\begin{{pmatrix}}{}\end{{pmatrix}}", "1 & ".repeat(3000))),
        ("1".into(), "|".repeat(4000)),
        ("1".into(), "\\".repeat(4000)),
        // Sign chains recurse once per sign: they must hit the depth limit, not the stack.
        ("1".into(), "+".repeat(4000) + "1"),
        ("1".into(), "2^".to_string() + &"-".repeat(4000) + "2"),
        ("1".into(), "{".repeat(4000)),
        ("1".into(), r"\left(".repeat(1000)),
        ("1".into(), "é∑∞√".repeat(1000)),
        ("1".into(), "$".repeat(4000)),
        ("x_1".into(), format!("x_{{{}}}", "1".repeat(3000))),
    ];
    for (gold, pred) in &cases {
        let start = Instant::now();
        assert!(!equivalent(gold, pred), "{gold:?} vs {:?}...", &pred[..pred.len().min(40)]);
        let took = start.elapsed();
        assert!(took < Duration::from_secs(2), "{:?}... took {took:?}", &pred[..pred.len().min(40)]);
    }
}

#[test]
fn pathological_outputs_extract_fast() {
    let outputs = [
        "1".repeat(1 << 20),
        "1 ".repeat(1 << 19),
        r"\boxed{".repeat(100_000),
        "$".repeat(1 << 20),
        r"\[".repeat(1 << 18),
        "answer: ".repeat(1 << 17),
        "final answer is ".repeat(1 << 16),
        "(1+".repeat(1 << 18),
        "é".repeat(1 << 19),
    ];
    for text in &outputs {
        let start = Instant::now();
        for opts in [ExtractOptions::MATH, ExtractOptions::GSM8K] {
            let v = verify("1", text, &opts);
            assert!(!v.correct || text.starts_with('1'), "{:?}", &text[..20]);
        }
        let took = start.elapsed();
        assert!(took < Duration::from_secs(3), "{:?}... took {took:?}", &text[..20]);
    }
}

#[test]
fn jsonl_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    let output = dir.path().join("out.jsonl");
    std::fs::write(
        &input,
        concat!(
            r#"{"id": 7, "gold": "\\frac{1}{2}", "prediction": "so $\\boxed{0.5}$", "extra": [1]}"#,
            "\n\n",
            r#"{"id": 8, "gold": 42, "prediction": "no idea"}"#,
            "\n",
            r#"{"id": 9, "gold": "3", "prediction": "The final answer is 4. I hope it is correct."}"#,
            "\n",
        ),
    )
    .unwrap();
    let summary = verify_jsonl(&input, &output, &ExtractOptions::MATH).unwrap();
    assert_eq!(summary, Summary { lines: 3, correct: 1, no_answer: 1 });
    let rows: Vec<Value> = std::fs::read_to_string(&output).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(rows[0]["extra"], serde_json::json!([1]));
    assert_eq!(rows[0]["extracted"], "0.5");
    assert_eq!(rows[0]["correct"], true);
    assert_eq!(rows[1]["extracted"], Value::Null);
    assert_eq!(rows[2]["correct"], false);
    let keys: Vec<_> = rows[0].as_object().unwrap().keys().cloned().collect();
    assert_eq!(keys, ["id", "gold", "prediction", "extra", "extracted", "correct"]);

    std::fs::write(&input, "{\"gold\": \"1\", \"prediction\": \"1\"}\n{\"gold\": \"1\"}\n").unwrap();
    let err = verify_jsonl(&input, &dir.path().join("bad.jsonl"), &ExtractOptions::MATH).unwrap_err();
    let msg = format!("{err:#}");
    assert!(msg.contains("in.jsonl:2") && msg.contains("prediction"), "{msg}");
    // Nothing half-written is left behind.
    let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names.len(), 2, "{names:?}");
}

fn raw_dataset(path: &str) -> Vec<Value> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../datasets/raw").join(path);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// Minerva's golds in scientific notation (`4.5e33`, `1e-5`), as ingest takes them (the last box of
/// each solution), each against the same number written the way models write it,
/// `m \times 10^{k}`, built from the gold's text by hand.
#[test]
fn scientific_notation_golds_of_minerva() {
    let golds: Vec<String> = raw_dataset("qwen25_math_eval/minerva_math/test.jsonl")
        .iter()
        .filter_map(|r| crate::answer::last_boxed(r["solution"].as_str().unwrap()))
        .filter(|g| g.split_once('e').is_some_and(|(m, k)| m.parse::<f64>().is_ok() && k.parse::<i32>().is_ok()))
        .collect();
    assert_eq!(golds.len(), 58, "{golds:?}");
    for gold in &golds {
        let (m, k) = gold.split_once('e').unwrap();
        let k: i32 = k.parse().unwrap();
        let model = format!("The answer is $\\boxed{{{m} \\times 10^{{{k}}}}}$.");
        assert!(verify(gold, &model, &ExtractOptions::MATH).correct, "{gold} vs {model}");
        // Off by a power of ten, or by 0.1%: wrong, however small or large the value.
        assert!(!eq(gold, &format!(r"{m} \times 10^{{{}}}", k + 1)), "{gold}");
        assert!(!eq(gold, &format!(r"1.001 \cdot {m} \times 10^{{{k}}}")), "{gold}");
    }
    // Exact values: 1.325e-27 = 53/40 · 10^-27, 1e-5 = 0.00001, 3e8 = 300000000.
    assert_same(&[
        ("1.325e-27", r"\frac{53}{40} \cdot 10^{-27}"),
        ("1e-5", "0.00001"),
        ("1E-5", r"10^{-5}"),
        ("3e8", "300000000"),
        ("3e+8", r"3 \times 10^8"),
        (r"3 \times 10^{8}", "3e8"),
        ("2.7778e-6", r"2.77780 \times 10^{-6}"),
    ]);
    // `e` without digits after it is still Euler's number: `e-5` is e - 5, `4e^{33}` is 4·e^33.
    assert_different(&[("1e-5", "e-5"), ("1e-5", "-2.281718"), ("4e33", r"4e^{33}"), ("4e33", r"4 \cdot e \cdot 33")]);
    assert_same(&[(r"2e", "5.436563656918"), (r"e^{2}", "7.389056098931")]);
}

/// A written decimal must agree to 6 decimal places and to 4 significant digits: below a
/// magnitude of 0.005 the places alone would call every small value 0.
#[test]
fn tiny_and_huge_decimals_compare_by_significant_digits_too() {
    assert_different(&[
        (r"3.89 \times 10^{-10}", "0"),
        ("3.89e-10", "0"),
        ("1e-8", "0"),
        ("0", "0.0000001"),
        ("3.89e-10", r"4 \times 10^{-10}"),
        ("5.89e-7", "6e-7"),
        ("2.7778e-6", r"2.78 \times 10^{-6}"),
        ("6.28e-10", r"2\pi \times 10^{-10}"),
        (r"\frac{1}{7000}", "0.000143"),
        // Huge values keep their decimal places: exactly, not through `f64`.
        ("4.5e33", r"4.5 \times 10^{33} + 1"),
        ("10^{20}", "100000000000000000000.5"),
        // Values computed in floating point are compared relatively below 1 too.
        ("10^{-10}", r"\pi \times 10^{-10}"),
    ]);
    assert_same(&[
        ("3.89e-10", r"3.89 \times 10^{-10}"),
        ("3.89e-10", r"\frac{389}{10^{12}}"),
        (r"\frac{1}{3} \times 10^{-9}", r"3.333333 \times 10^{-10}"),
        ("0.785398", r"\frac{\pi}{4}"),
        ("6.2832e-10", r"2\pi \times 10^{-10}"),
        (r"\frac{1}{7000}", "0.0001428571"),
        // From 0.005 up the decimal places decide alone, as in Math-Verify.
        (r"\frac{1}{30}", "0.033333"),
        (r"\frac{1}{150}", "0.006667"),
        // Floating-point noise of cancelling terms is still nothing.
        ("0", r"\sin(\pi)"),
        (r"100\pi(x-3)", r"100\pi x - 300\pi"),
    ]);
}

/// OlympiadBench golds whose pieces were math spans: ingest strips only the outer `$`, leaving
/// `f(n)=n$, $g(n)=1`. Every such real gold must match the same answer boxed, and a model that
/// writes the pieces as math spans, as the original did.
#[test]
fn olympiadbench_golds_with_inner_dollars() {
    let golds: Vec<String> = raw_dataset("qwen25_math_eval/olympiadbench/test.jsonl")
        .iter()
        .map(|r| r["final_answer"].as_array().unwrap().iter().map(|v| v.as_str().unwrap().trim_matches('$')).collect::<Vec<_>>().join(", "))
        .collect();
    assert_eq!(golds.len(), 675);
    let inner: Vec<&String> = golds.iter().filter(|g| g.contains('$')).collect();
    assert_eq!(inner.len(), 21);
    // One is prose between spans ("where $b$ is an arbitrary integer"), no list of answers.
    let prose = inner.iter().filter(|g| g.contains("arbitrary")).count();
    assert_eq!(prose, 1);
    for gold in inner.iter().filter(|g| !g.contains("arbitrary")) {
        for pred in [format!("So the answer is \\boxed{{{gold}}}."), format!("So the answer is \\boxed{{{}}}.", gold.replace('$', ""))] {
            assert!(verify(gold, &pred, &ExtractOptions::MATH).correct, "{gold} vs {pred}");
        }
        // Where the `$` pair up (all but `221,$8`), the pieces written as math spans.
        if gold.matches('$').count() % 2 == 0 {
            let spans = format!("The answers are ${gold}$.");
            assert!(verify(gold, &spans, &ExtractOptions::MATH).correct, "{gold} vs {spans}");
        }
    }
    let gold = "f(n)=n$, $g(n)=1";
    assert_eq!(gold_answer(gold, &ExtractOptions::MATH), "f(n)=n, g(n)=1");
    assert!(verify(gold, r"Hence $f(n)=n$ and $g(n)=1$ for all $n$, so the answer is $f(n)=n$, $g(n)=1$.", &ExtractOptions::MATH).correct);
    assert!(!verify(gold, r"\boxed{g(n)=1}", &ExtractOptions::MATH).correct);
    // Three pieces: the middle one alone is not the answer.
    let gold = "-1$,$2$,$-2";
    assert_eq!(gold_answer(gold, &ExtractOptions::MATH), "-1, 2, -2");
    assert!(verify(gold, r"\boxed{-2, -1, 2}", &ExtractOptions::MATH).correct);
    assert!(!verify(gold, r"\boxed{2}", &ExtractOptions::MATH).correct);
    // Prose between spans is no list; a solution's spans are still read as a solution.
    assert_eq!(gold_answer("so $x$ is $5$", &ExtractOptions::MATH), "5");
    assert_eq!(gold_answer("The answer is $5$, $6$", &ExtractOptions::MATH), "5, 6");
}

/// A model that echoes the instruction "put your final answer within \boxed{}" after answering
/// has still answered.
#[test]
fn blank_boxes_do_not_hide_the_answer() {
    for text in [
        r"So the answer is $\boxed{5}$. Remember to put your final answer within \boxed{}.",
        r"The answer is 5. Please reason step by step, and put your final answer within \boxed{}.",
        "So the answer is $\\boxed{5}$.\n\nFinal answer: \\boxed{ }",
        r"The final answer is 5. \boxed{}",
        r"\boxed{5} \boxed{}",
    ] {
        assert_eq!(verify("5", text, &ExtractOptions::MATH), Verdict { extracted: Some("5".into()), correct: true }, "{text}");
    }
    assert_eq!(extract(r"put your final answer within \boxed{}", &ExtractOptions::MATH), None);
    // A blank box inside an answer is dropped, as before.
    assert_same(&[("5", r"5\boxed{}")]);
}
