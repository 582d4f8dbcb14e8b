//! Deciding whether two parsed answers are the same.
//!
//! Numbers compare exactly when both are exact rationals; a side written with a decimal point may
//! be rounded, so it matches when the two agree to `float_digits` decimal places. Expressions with
//! variables are compared by evaluating both at the same deterministic sample points. Structures
//! compare part by part: tuples in order, sets and lists in any order, intervals with their
//! brackets. Relations compare as relations (`x < 1` ≡ `-x > -1`, `2x+4y-3=0` ≡ `y=-x/2+3/4`), or
//! by their solution sets against intervals. The conventions — which side is unwrapped when one is
//! an equation, that a bare list matches a tuple in order — follow Math-Verify, so labels agree.

use super::eval::{self, eval, free_vars, has_decimal, Env, Val};
use super::normalize::squeeze;
use super::num::{Num, Rat};
use super::parse::{map_children, Answer, Interval, Kind, Node, RelOp};
use super::CompareOptions;
use std::borrow::Cow;
use std::collections::BTreeSet;

/// Sub-comparisons per top-level comparison; sets of sets could otherwise multiply up.
const MAX_COMPARISONS: usize = 100_000;
/// Sample points for expressions with variables: 4 small integers (so sums and factorials of a
/// variable make sense), 4 positive and 2 negative fractions.
const SAMPLE_POINTS: u64 = 10;
/// Points where both sides must be defined and agree; fewer and the answer is "not equal".
const MIN_VALID_POINTS: usize = 3;
const MAX_VARS: usize = 8;
/// Lists up to this long are de-duplicated by value (all pairs compared), longer ones by text.
const MAX_VALUE_DEDUPE: usize = 32;
/// Relative agreement for values computed in floating point (irrational constants, functions):
/// far above `f64` rounding noise, far below any difference an answer could have.
const FLOAT_REL_TOL: f64 = 1e-9;
const SAMPLE_REL_TOL: f64 = 1e-8;
/// The magnitude below which the floating-point tolerance stops shrinking (it is then `rel` times
/// this, 1e-12 for constants and 1e-11 at sample points). A result near 0 carries the rounding
/// error of the terms that cancelled to give it (`\sin\pi` is 1.2e-16, not 0), which are of
/// ordinary size, so a relative tolerance alone would fail it. A floor of 1 would make every value
/// under 1e-9 equal every other (`10^{-10}` and `\pi \cdot 10^{-10}`).
const FLOAT_NOISE_SCALE: f64 = 1e-3;

pub struct Comparer<'a> {
    opts: &'a CompareOptions,
    budget: usize,
}

impl<'a> Comparer<'a> {
    pub fn new(opts: &'a CompareOptions) -> Comparer<'a> {
        Comparer { opts, budget: MAX_COMPARISONS }
    }

    pub fn equal(&mut self, g: &Answer, p: &Answer) -> bool {
        if self.budget == 0 {
            return false;
        }
        self.budget -= 1;
        if !g.src.is_empty() && squeeze(&g.src) == squeeze(&p.src) {
            return true;
        }
        let (g, p) = unwrap_equations(g, p);
        let (g, p) = (g.as_ref(), p.as_ref());
        match (&g.kind, &p.kind) {
            (Kind::Text | Kind::Unparsed, _) | (_, Kind::Text | Kind::Unparsed) => {
                !g.src.is_empty() && text_key(&g.src) == text_key(&p.src)
            }
            (Kind::Rel(..), Kind::Rel(..)) => self.relations(g, p),
            (Kind::Rel(..), _) if is_setlike(p) => self.relation_vs_set(g, p),
            (_, Kind::Rel(..)) if is_setlike(g) && self.opts.allow_set_relation => self.relation_vs_set(p, g),
            (Kind::Rel(..), _) | (_, Kind::Rel(..)) => false,
            (Kind::Expr(a), Kind::Expr(b)) => self.exprs(a, b),
            _ => self.collections(g, p),
        }
    }

    // --- structures ------------------------------------------------------------------------

    fn collections(&mut self, g: &Answer, p: &Answer) -> bool {
        match (&g.kind, &p.kind) {
            (Kind::Interval(a), Kind::Interval(b)) => {
                a.lo_closed == b.lo_closed && a.hi_closed == b.hi_closed && self.exprs(&a.lo, &b.lo) && self.exprs(&a.hi, &b.hi)
            }
            // `(a, b)` is both a point and an open interval.
            (Kind::Interval(a), Kind::Tuple(t)) if is_open(a) && t.len() == 2 => {
                self.equal(&expr_answer(&a.lo), &t[0]) && self.equal(&expr_answer(&a.hi), &t[1])
            }
            (Kind::Tuple(t), Kind::Interval(a)) if is_open(a) && t.len() == 2 => {
                self.equal(&t[0], &expr_answer(&a.lo)) && self.equal(&t[1], &expr_answer(&a.hi))
            }
            (Kind::Union(a), Kind::Union(b)) => self.unordered(a, b),
            (Kind::Tuple(a), Kind::Tuple(b)) => self.ordered(a, b),
            // A bare list against a tuple is read in order, as Math-Verify does: `(3,1)` ≠ `{1,3}`.
            (Kind::Tuple(a), Kind::Set { items: b, .. }) | (Kind::Set { items: a, .. }, Kind::Tuple(b)) => self.ordered(a, b),
            (Kind::Set { items: a, .. }, Kind::Set { items: b, .. }) => self.unordered(a, b),
            // A one-element set is its element: `\{5\}` and `5`; so is `15\frac{39}{40}, \frac{639}{40}`,
            // two spellings of one value.
            (Kind::Set { items, .. }, _) => !items.is_empty() && items.iter().all(|x| self.equal(x, p)),
            (_, Kind::Set { items, .. }) => !items.is_empty() && items.iter().all(|x| self.equal(g, x)),
            _ => false,
        }
    }

    fn ordered(&mut self, a: &[Answer], b: &[Answer]) -> bool {
        a.len() == b.len() && a.iter().zip(b).all(|(x, y)| self.equal(x, y))
    }

    /// Same elements in any order, duplicates ignored (`{(3,17,3,7), (3,17,3,7)}` is one pair).
    fn unordered(&mut self, a: &[Answer], b: &[Answer]) -> bool {
        let (a, b) = (self.distinct(a), self.distinct(b));
        if a.len() != b.len() {
            return false;
        }
        let mut used = vec![false; b.len()];
        for x in a {
            match (0..b.len()).find(|&j| !used[j] && self.equal(x, b[j])) {
                Some(j) => used[j] = true,
                None => return false,
            }
        }
        true
    }

    /// Items without repeats: first by text, then (for lists small enough that comparing all
    /// pairs is cheap) by value, so `1/2` and `0.5` in one list are one element.
    fn distinct<'b>(&mut self, items: &'b [Answer]) -> Vec<&'b Answer> {
        let by_text = dedupe(items);
        if by_text.len() > MAX_VALUE_DEDUPE {
            return by_text;
        }
        let mut kept: Vec<&Answer> = vec![];
        for x in by_text {
            if !kept.iter().any(|k| self.equal(k, x)) {
                kept.push(x);
            }
        }
        kept
    }

    // --- relations -------------------------------------------------------------------------

    fn relations(&mut self, g: &Answer, p: &Answer) -> bool {
        let (Some((gt, gops)), Some((pt, pops))) = (oriented(g), oriented(p)) else { return false };
        if gops == pops && gt.len() == pt.len() {
            if gt.iter().zip(&pt).all(|(a, b)| self.equal(a, b)) {
                return true;
            }
            if gt.len() == 2 {
                let symmetric = matches!(gops[0], RelOp::Eq | RelOp::Ne);
                if symmetric && self.equal(gt[0], pt[1]) && self.equal(gt[1], pt[0]) {
                    return true;
                }
                if let (Kind::Expr(g0), Kind::Expr(g1), Kind::Expr(p0), Kind::Expr(p1)) =
                    (&gt[0].kind, &gt[1].kind, &pt[0].kind, &pt[1].kind)
                {
                    if self.proportional(&difference(g0, g1), &difference(p0, p1), !symmetric) {
                        return true;
                    }
                    if gops[0] == RelOp::Eq && self.same_function_definition(g0, g1, p0, p1) {
                        return true;
                    }
                }
            }
        }
        // Inequalities in one variable: same solution set on the line. (Equations have isolated
        // solutions that line sampling could miss, so they only count as equal above.)
        match (Chain::of(g), Chain::of(p)) {
            (Some(a), Some(b)) if a.var == b.var && a.inequalities_only() && b.inequalities_only() => {
                let bounds = [a.boundaries(), b.boundaries()].concat();
                sample_line(&bounds).all(|x| a.holds(x) == b.holds(x))
            }
            _ => false,
        }
    }

    /// Two equations (or same-direction inequalities) with the same solutions: `f = c·h` for a
    /// constant `c` (positive for inequalities, which a negative factor would flip).
    fn proportional(&mut self, f: &Node, h: &Node, positive: bool) -> bool {
        let Some(points) = self.assignments(f, h) else { return false };
        let (mut ratio, mut valid) = (None::<f64>, 0);
        for (fa, ha) in points {
            let (Some(x), Some(y)) = (eval_f64(f, fa), eval_f64(h, ha)) else { continue };
            let zero = |v: f64| v.abs() <= 1e-10;
            if zero(x) && zero(y) {
                valid += 1;
                continue;
            }
            if zero(x) || zero(y) {
                return false;
            }
            let r = x / y;
            match ratio {
                None => ratio = Some(r),
                Some(r0) if (r - r0).abs() <= SAMPLE_REL_TOL * r.abs().max(r0.abs()) => {}
                Some(_) => return false,
            }
            valid += 1;
        }
        valid >= MIN_VALID_POINTS && ratio.is_none_or(|r| !positive || r > 0.0)
    }

    /// `f(x) = 2x` and `f(t) = 2t`: the same definition under another argument name.
    fn same_function_definition(&mut self, g_lhs: &Node, g_rhs: &Node, p_lhs: &Node, p_rhs: &Node) -> bool {
        let (Node::Apply(gf, ga), Node::Apply(pf, pa)) = (g_lhs, p_lhs) else { return false };
        let ([Node::Var(gv)], [Node::Var(pv)]) = (ga.as_slice(), pa.as_slice()) else { return false };
        gf == pf && self.exprs(g_rhs, &rename(p_rhs, pv, gv))
    }

    /// A relation in one variable against an interval, union or finite set: the same points
    /// satisfy both (`-2 ≤ x ≤ 7` ≡ `[-2, 7]`, `1 ≤ |z| ≤ 3/2` ≡ `[-3/2,-1] ∪ [1,3/2]`).
    fn relation_vs_set(&mut self, rel: &Answer, set: &Answer) -> bool {
        let (Some(chain), Some(region)) = (Chain::of(rel), Region::of(set)) else { return false };
        let mut bounds = chain.boundaries();
        region.boundaries(&mut bounds);
        sample_line(&bounds).all(|x| chain.holds(x) == region.contains(x))
    }

    // --- expressions -----------------------------------------------------------------------

    fn exprs(&mut self, a: &Node, b: &Node) -> bool {
        if self.budget == 0 {
            return false;
        }
        self.budget -= 1;
        let (a_inner, a_pct) = strip_percent(a);
        let (b_inner, b_pct) = strip_percent(b);
        if a_pct == b_pct {
            return self.values(a, b);
        }
        // "28%" answers "what percent" as well as "28" does, and equals 0.28 as a number.
        self.values(a_inner, b_inner) || self.values(a, b)
    }

    fn values(&mut self, a: &Node, b: &Node) -> bool {
        let decimal = has_decimal(a) || has_decimal(b);
        let (mut va, mut vb) = (BTreeSet::new(), BTreeSet::new());
        free_vars(a, &mut va);
        free_vars(b, &mut vb);
        if va.is_empty() && vb.is_empty() {
            let mut ea = Env::new(vec![]);
            let mut eb = Env::new(vec![]);
            let (Some(x), Some(y)) = (eval(a, &mut ea), eval(b, &mut eb)) else { return false };
            // Past i128 the exact value is unknown; a rounded comparison could call 10^40 and
            // 10^40 + 1 equal, so refuse.
            if ea.overflow.0 || eb.overflow.0 {
                return false;
            }
            return vals_close(&x, &y, decimal, self.opts.float_digits, FLOAT_REL_TOL);
        }
        let Some(points) = self.assignments(a, b) else { return false };
        let mut valid = 0;
        for (pa, pb) in points {
            let (Some(x), Some(y)) = (eval(a, &mut Env::new(pa)), eval(b, &mut Env::new(pb))) else { continue };
            if !finite(&x) || !finite(&y) {
                continue;
            }
            if !vals_close(&x, &y, decimal, self.opts.float_digits, SAMPLE_REL_TOL) {
                return false;
            }
            valid += 1;
        }
        valid >= MIN_VALID_POINTS
    }

    /// Variable values for each sample point, for the gold and the predicted side. Strict: by
    /// name, so `f(x)` ≠ `f(y)`. Lenient: the k-th variable of one side (by name order) takes
    /// the value of the k-th of the other.
    #[allow(clippy::type_complexity)]
    fn assignments(&self, a: &Node, b: &Node) -> Option<Vec<(Vec<(String, Num)>, Vec<(String, Num)>)>> {
        let (mut va, mut vb) = (BTreeSet::new(), BTreeSet::new());
        free_vars(a, &mut va);
        free_vars(b, &mut vb);
        let rename = !self.opts.strict_variables && va.len() == vb.len();
        let names: BTreeSet<String> = if rename { va.clone() } else { va.union(&vb).cloned().collect() };
        if names.len() > MAX_VARS {
            return None;
        }
        let points = (0..SAMPLE_POINTS)
            .map(|i| {
                let ga: Vec<(String, Num)> = names.iter().map(|n| (n.clone(), sample(i, n))).collect();
                let pa = if rename { vb.iter().zip(&ga).map(|(n, (_, v))| (n.clone(), *v)).collect() } else { ga.clone() };
                (ga, pa)
            })
            .collect();
        Some(points)
    }
}

fn eval_f64(n: &Node, vars: Vec<(String, Num)>) -> Option<f64> {
    match eval(n, &mut Env::new(vars))? {
        Val::Scalar(x) if x.f().is_finite() => Some(x.f()),
        _ => None,
    }
}

/// A deterministic value for variable `name` at point `i`.
fn sample(i: u64, name: &str) -> Num {
    let h = eval::mix(schemas::rng::fnv64(name.as_bytes()) ^ eval::mix(i));
    let exact = |n: i128, d: i128| Num::Exact(Rat::new(n, d).expect("nonzero denominator"));
    match i {
        0..4 => exact(2 + (h % 8) as i128, 1),
        4..8 => exact(1 + (h % 89) as i128, 11 + (h >> 8 & 0xf) as i128 * 2),
        _ => exact(-1 - (h % 89) as i128, 11 + (h >> 8 & 0xf) as i128 * 2),
    }
}

fn finite(v: &Val) -> bool {
    match v {
        Val::Scalar(x) => x.f().is_finite(),
        Val::Matrix(xs, _) => xs.iter().all(|x| x.f().is_finite()),
    }
}

fn vals_close(x: &Val, y: &Val, decimal: bool, digits: u32, rel: f64) -> bool {
    match (x, y) {
        (Val::Scalar(a), Val::Scalar(b)) => nums_close(*a, *b, decimal, digits, rel),
        (Val::Matrix(xs, c), Val::Matrix(ys, d)) => {
            c == d && xs.len() == ys.len() && xs.iter().zip(ys).all(|(a, b)| nums_close(*a, *b, decimal, digits, rel))
        }
        _ => false,
    }
}

/// Exact rationals must be equal unless a decimal was written (it may be rounded); values computed
/// in floating point agree to a relative `rel`.
///
/// A written decimal (`0.333333`, `3.89 \times 10^{-10}`, `1e-5`) must agree to `digits` decimal
/// places, Math-Verify's rounding, *and* to `digits - 2` significant digits, a relative
/// `10^(2 - digits)`: 1e-4 at the default 6, the `rel_tol` of Qwen2.5-Math's `math_equal`. Neither
/// rule is enough alone. Decimal places say nothing about small magnitudes: under 5e-7 every value
/// would be 0, and `3.89e-10` would be `4e-10` (Minerva asks for such values). Significant digits
/// would call `1000.1` and `1000` equal. From a magnitude of 0.005 up, the relative rule follows
/// from the decimal places (`10^(2 - digits) · 0.005` is half the last place), so Math-Verify's
/// verdicts stand there, its test cases among them. Below 0.005 the relative rule decides, as in
/// Qwen2.5-Math. Large values keep the decimal places: `4.5e33 + 1` is not `4.5e33`, as
/// `4000000003.5` is not `4000000000`.
fn nums_close(a: Num, b: Num, decimal: bool, digits: u32, rel: f64) -> bool {
    let both_exact = a.exact().zip(b.exact());
    if let Some((x, y)) = both_exact {
        if x == y {
            return true;
        }
        if !decimal {
            return false;
        }
    }
    let (x, y) = (a.f(), b.f());
    if x.is_nan() || y.is_nan() {
        return false;
    }
    if x.is_infinite() || y.is_infinite() {
        return x == y;
    }
    // Between exact values the difference is exact too (in `f64`, 4.5e33 + 1 and 4.5e33 are one
    // number); otherwise it carries the rounding of `f64` subtraction.
    let exact_diff = both_exact.and_then(|(x, y)| x.sub(y));
    let diff = exact_diff.map_or((x - y).abs(), |d| d.to_f64().abs());
    let size = x.abs().max(y.abs());
    let rounding = if exact_diff.is_some() { 0.0 } else { f64::EPSILON * size.max(1.0) };
    let digits = digits.min(30) as i32;
    // Both tolerances carry the same slack, so that the relative one is implied by the places
    // wherever it is the larger.
    let slack = |tol: f64| tol * (1.0 + 1e-9) + rounding;
    let places = slack(0.5 * 10f64.powi(-digits));
    let significant = slack(10f64.powi(2 - digits) * size);
    // The relative tolerance absorbs floating-point error, so it applies only where a side was
    // computed in floating point: between exact values a decimal answer is judged by its
    // decimal places alone (4000000003.5 is not 4000000000). A decimal still needs its
    // significant digits (`2\pi \times 10^{-10}` is not `6.28e-10`).
    if both_exact.is_none() && diff <= rel * size.max(FLOAT_NOISE_SCALE) && (!decimal || diff <= significant) {
        return true;
    }
    decimal && diff <= places && diff <= significant
}

fn strip_percent(n: &Node) -> (&Node, bool) {
    match n {
        Node::Percent(inner) => (inner, true),
        _ => (n, false),
    }
}

fn difference(a: &Node, b: &Node) -> Node {
    Node::Add(vec![a.clone(), Node::Neg(Box::new(b.clone()))])
}

fn rename(n: &Node, from: &str, to: &str) -> Node {
    match n {
        Node::Var(v) if v == from => Node::Var(to.to_string()),
        _ => map_children(n, &mut |c| rename(c, from, to)),
    }
}

fn expr_answer(n: &Node) -> Answer {
    Answer { kind: Kind::Expr(n.clone()), src: String::new() }
}

fn is_open(i: &Interval) -> bool {
    !i.lo_closed && !i.hi_closed
}

fn is_setlike(a: &Answer) -> bool {
    matches!(a.kind, Kind::Interval(_) | Kind::Union(_) | Kind::Set { .. } | Kind::Tuple(_))
}

/// Distinct items by text without spaces (`(3,17,3,7)` and `(3, 17, 3, 7)` are one; an item
/// never holds a top-level comma, so no space there is significant).
fn dedupe(items: &[Answer]) -> Vec<&Answer> {
    let mut seen = BTreeSet::new();
    items.iter().filter(|a| a.src.is_empty() || seen.insert(a.src.chars().filter(|c| !c.is_whitespace()).collect::<String>())).collect()
}

/// Text answers compare without markup and spacing, case-insensitively beyond one letter (a
/// single letter is a variable or a choice, where case matters), `(C)` as `C`.
fn text_key(s: &str) -> String {
    let mut t = s.replace("\\text{", "");
    t.retain(|c| !c.is_whitespace() && c != '{' && c != '}');
    if t.starts_with('(') && t.ends_with(')') && t.len() > 2 && !t[1..t.len() - 1].contains(['(', ')']) {
        t = t[1..t.len() - 1].to_string();
    }
    if t.chars().count() > 1 {
        t.to_lowercase()
    } else {
        t
    }
}

// --- equations as Math-Verify reads them ------------------------------------------------------

fn is_equation(a: &Answer) -> bool {
    matches!(&a.kind, Kind::Rel(_, ops) if ops.iter().all(|&o| o == RelOp::Eq))
}

/// `x = 3`, `(p, q) = (3, 2)`, `f(x) = 1`, `|AB| = 1`: the left side only names what is given.
fn is_assignment(a: &Answer) -> bool {
    match &a.kind {
        Kind::Rel(terms, _) if is_equation(a) => names_only(&terms[0]),
        _ => false,
    }
}

fn names_only(a: &Answer) -> bool {
    match &a.kind {
        Kind::Expr(n) => {
            let (mut names, mut other) = (false, false);
            symbols_walk(n, &mut names, &mut other);
            names && !other
        }
        Kind::Tuple(items) => !items.is_empty() && items.iter().all(names_only),
        _ => false,
    }
}

fn symbols_walk(n: &Node, names: &mut bool, other: &mut bool) {
    match n {
        Node::Var(_) | Node::Apply(..) => *names = true,
        Node::Num { .. } | Node::Const(_) | Node::Matrix(_) | Node::Sum { .. } | Node::PlusMinus(..) => *other = true,
        _ => {}
    }
    super::parse::for_each_child(n, &mut |c| symbols_walk(c, names, other));
}

/// Math-Verify's rules: an assignment chain `x = a = b` means `x = b`; if only the prediction is
/// an equation its last value is the answer (`k = 1/3` for `1/3`); if the gold is an assignment
/// and the prediction no equation, the gold's value is (`k=1` for `1`). A gold equation that is
/// not an assignment (`2x + z = 1`) is never reduced to its right side.
fn unwrap_equations<'x>(g: &'x Answer, p: &'x Answer) -> (Cow<'x, Answer>, Cow<'x, Answer>) {
    let (g_assign, p_assign) = (is_assignment(g), is_assignment(p));
    let (g_eq, p_eq) = (is_equation(g), is_equation(p));
    let mut g = Cow::Borrowed(g);
    let mut p = Cow::Borrowed(p);
    if g_assign {
        g = Cow::Owned(first_and_last(&g));
    }
    if p_assign {
        p = Cow::Owned(first_and_last(&p));
    }
    if p_eq && !g_eq {
        p = Cow::Owned(last_term(&p));
    } else if g_assign && !p_eq {
        g = Cow::Owned(last_term(&g));
    }
    (g, p)
}

fn first_and_last(a: &Answer) -> Answer {
    let Kind::Rel(terms, _) = &a.kind else { return a.clone() };
    let pair = vec![terms[0].clone(), terms[terms.len() - 1].clone()];
    Answer { kind: Kind::Rel(pair, vec![RelOp::Eq]), src: a.src.clone() }
}

fn last_term(a: &Answer) -> Answer {
    match &a.kind {
        Kind::Rel(terms, _) => terms[terms.len() - 1].clone(),
        _ => a.clone(),
    }
}

/// The terms and operators of a chain, turned to read left to right with `<`/`≤` when every
/// operator points the other way (`5 ≥ x` → `x ≤ 5`).
fn oriented(a: &Answer) -> Option<(Vec<&Answer>, Vec<RelOp>)> {
    let Kind::Rel(terms, ops) = &a.kind else { return None };
    let flip = |o: RelOp| match o {
        RelOp::Gt => RelOp::Lt,
        RelOp::Ge => RelOp::Le,
        o => o,
    };
    if ops.iter().all(|o| matches!(o, RelOp::Gt | RelOp::Ge)) {
        Some((terms.iter().rev().collect(), ops.iter().rev().map(|&o| flip(o)).collect()))
    } else {
        Some((terms.iter().collect(), ops.clone()))
    }
}

// --- solution sets on the real line -------------------------------------------------------

/// A relation chain in one variable (an undefined function call such as `f(x)` counts as the
/// variable: `0 < f(x) < 1` describes the values of `f(x)`).
struct Chain {
    terms: Vec<Node>,
    ops: Vec<RelOp>,
    var: String,
}

impl Chain {
    fn of(a: &Answer) -> Option<Chain> {
        let Kind::Rel(terms, ops) = &a.kind else { return None };
        let terms = terms
            .iter()
            .map(|t| match &t.kind {
                Kind::Expr(n) => Some(atomize(n)),
                _ => None,
            })
            .collect::<Option<Vec<_>>>()?;
        let mut vars = BTreeSet::new();
        terms.iter().for_each(|t| free_vars(t, &mut vars));
        if vars.len() != 1 {
            return None;
        }
        let var = vars.into_iter().next()?;
        Some(Chain { terms, ops: ops.clone(), var })
    }

    fn holds(&self, x: f64) -> bool {
        let vals: Option<Vec<f64>> = self.terms.iter().map(|t| eval_f64(t, vec![(self.var.clone(), Num::Approx(x))])).collect();
        let Some(vals) = vals else { return false };
        self.ops.iter().zip(vals.windows(2)).all(|(op, w)| {
            let (a, b) = (w[0], w[1]);
            let eps = 1e-9 * a.abs().max(b.abs()).max(1.0);
            match op {
                RelOp::Eq => (a - b).abs() <= eps,
                RelOp::Ne => (a - b).abs() > eps,
                RelOp::Lt => a < b - eps,
                RelOp::Le => a <= b + eps,
                RelOp::Gt => a > b + eps,
                RelOp::Ge => a >= b - eps,
            }
        })
    }

    fn inequalities_only(&self) -> bool {
        self.ops.iter().all(|o| matches!(o, RelOp::Lt | RelOp::Le | RelOp::Gt | RelOp::Ge))
    }

    /// Values of the terms that do not depend on the variable: where the truth can change.
    fn boundaries(&self) -> Vec<f64> {
        self.terms.iter().filter_map(|t| eval_f64(t, vec![])).collect()
    }
}

/// `f(x)` → a variable named after the call, so a chain over it has one variable.
fn atomize(n: &Node) -> Node {
    match n {
        Node::Apply(name, args) => Node::Var(format!("{name}{args:?}")),
        _ => map_children(n, &mut atomize),
    }
}

enum Region {
    Interval { lo: f64, hi: f64, lo_closed: bool, hi_closed: bool },
    Point(f64),
    Union(Vec<Region>),
}

impl Region {
    fn of(a: &Answer) -> Option<Region> {
        let constant = |n: &Node| eval_f64(n, vec![]).or_else(|| infinite(n));
        match &a.kind {
            Kind::Interval(i) => {
                Some(Region::Interval { lo: constant(&i.lo)?, hi: constant(&i.hi)?, lo_closed: i.lo_closed, hi_closed: i.hi_closed })
            }
            Kind::Tuple(t) if t.len() == 2 => {
                let (Kind::Expr(lo), Kind::Expr(hi)) = (&t[0].kind, &t[1].kind) else { return None };
                Some(Region::Interval { lo: constant(lo)?, hi: constant(hi)?, lo_closed: false, hi_closed: false })
            }
            Kind::Union(parts) | Kind::Set { items: parts, .. } => {
                Some(Region::Union(parts.iter().map(Region::of).collect::<Option<Vec<_>>>()?))
            }
            Kind::Expr(n) => Some(Region::Point(constant(n)?)),
            _ => None,
        }
    }

    fn contains(&self, x: f64) -> bool {
        let at = |e: f64| (x - e).abs() <= 1e-9 * e.abs().max(1.0);
        match self {
            Region::Interval { lo, hi, lo_closed, hi_closed } => {
                if at(*lo) {
                    *lo_closed
                } else if at(*hi) {
                    *hi_closed
                } else {
                    *lo < x && x < *hi
                }
            }
            Region::Point(p) => at(*p),
            Region::Union(parts) => parts.iter().any(|r| r.contains(x)),
        }
    }

    fn boundaries(&self, out: &mut Vec<f64>) {
        match self {
            Region::Interval { lo, hi, .. } => out.extend([*lo, *hi]),
            Region::Point(p) => out.push(*p),
            Region::Union(parts) => parts.iter().for_each(|r| r.boundaries(out)),
        }
    }
}

/// `\infty`, `+\infty`, `-\infty` as interval ends.
fn infinite(n: &Node) -> Option<f64> {
    match n {
        Node::Const(super::parse::Const::Inf) => Some(f64::INFINITY),
        Node::Neg(a) => infinite(a).map(|v| -v),
        _ => None,
    }
}

/// Points on the line that tell two solution sets apart if anything does: each boundary, just
/// either side of it, midpoints between boundaries, and a coarse grid and far points.
fn sample_line(bounds: &[f64]) -> impl Iterator<Item = f64> {
    let mut b: Vec<f64> = bounds.iter().copied().filter(|v| v.is_finite()).collect();
    b.sort_by(f64::total_cmp);
    b.dedup();
    let mut pts: Vec<f64> = (-20..=20).map(|k| k as f64 * 0.5).collect();
    pts.extend([-1e6, 1e6]);
    for (i, &v) in b.iter().enumerate() {
        let d = 1e-6 * v.abs().max(1.0);
        pts.extend([v, v - d, v + d]);
        if let Some(&next) = b.get(i + 1) {
            pts.push((v + next) / 2.0);
        }
    }
    if let (Some(lo), Some(hi)) = (b.first(), b.last()) {
        pts.extend([lo - 1.0, hi + 1.0]);
    }
    pts.into_iter()
}
