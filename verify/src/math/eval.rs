//! Evaluating an expression tree to a number or a matrix, exactly where possible.
//!
//! Each evaluation has a fuel budget (one unit per node visited, so sums and nested sums are
//! bounded too); running out, an unbound variable or a shape mismatch gives `None`.

use super::num::{self, Num, Overflow, Rat};
use super::parse::{Const, Func, Node};
use std::collections::BTreeSet;

/// Node visits per evaluation.
const FUEL: usize = 200_000;
/// Terms of one `\sum` / `\prod`.
const MAX_TERMS: i128 = 10_000;

#[derive(Clone, Debug)]
pub enum Val {
    Scalar(Num),
    /// Row-major entries and the number of columns.
    Matrix(Vec<Num>, usize),
}

pub struct Env {
    vars: Vec<(String, Num)>,
    fuel: usize,
    pub overflow: Overflow,
}

impl Env {
    pub fn new(vars: Vec<(String, Num)>) -> Env {
        Env { vars, fuel: FUEL, overflow: Overflow::default() }
    }

    fn lookup(&self, name: &str) -> Option<Num> {
        self.vars.iter().rev().find(|(n, _)| n == name).map(|(_, v)| *v)
    }
}

pub fn eval(n: &Node, env: &mut Env) -> Option<Val> {
    env.fuel = env.fuel.checked_sub(1)?;
    match n {
        Node::Num { value, .. } => Some(Val::Scalar(Num::Exact(*value))),
        Node::Const(c) => Some(Val::Scalar(Num::Approx(match c {
            Const::Pi => std::f64::consts::PI,
            Const::E => std::f64::consts::E,
            Const::Inf => f64::INFINITY,
        }))),
        Node::Var(name) => env.lookup(name).map(Val::Scalar),
        Node::Neg(a) => Some(map(eval(a, env)?, num::neg)),
        Node::Add(terms) => {
            let mut acc = eval(&terms[0], env)?;
            for t in &terms[1..] {
                let v = eval(t, env)?;
                acc = zip(acc, v, |a, b| num::add(&mut env.overflow, a, b))?;
            }
            Some(acc)
        }
        Node::Mul(factors) => {
            let mut acc = Val::Scalar(Num::int(1));
            for (f, inverse) in factors {
                let v = eval(f, env)?;
                acc = if *inverse { divide(env, acc, v)? } else { multiply(env, acc, v)? };
            }
            Some(acc)
        }
        Node::Pow(a, b) => {
            let (a, b) = (scalar(eval(a, env)?)?, scalar(eval(b, env)?)?);
            Some(Val::Scalar(num::pow(&mut env.overflow, a, b)))
        }
        Node::Func(f, a) => {
            let a = scalar(eval(a, env)?)?;
            Some(Val::Scalar(func(*f, a, &mut env.overflow)))
        }
        Node::Root(k, a) => {
            let (k, a) = (scalar(eval(k, env)?)?, scalar(eval(a, env)?)?);
            Some(Val::Scalar(num::root(a, k)))
        }
        Node::Log(base, a) => {
            let (base, a) = (scalar(eval(base, env)?)?, scalar(eval(a, env)?)?);
            Some(Val::Scalar(log(base, a)))
        }
        Node::Binom(n, k) => {
            let (n, k) = (scalar(eval(n, env)?)?, scalar(eval(k, env)?)?);
            Some(Val::Scalar(binom(n, k, &mut env.overflow)))
        }
        Node::Apply(name, args) => {
            let args = args.iter().map(|a| eval(a, env).and_then(scalar)).collect::<Option<Vec<_>>>()?;
            Some(Val::Scalar(Num::Approx(undefined_function(name, &args))))
        }
        Node::Sum { var, lo, hi, body, product } => sum(env, var, lo, hi, body, *product),
        Node::Matrix(rows) => {
            let cols = rows[0].len();
            let cells = rows.iter().flatten().map(|c| eval(c, env).and_then(scalar)).collect::<Option<Vec<_>>>()?;
            Some(Val::Matrix(cells, cols))
        }
        Node::Percent(a) => {
            let a = scalar(eval(a, env)?)?;
            Some(Val::Scalar(num::div(&mut env.overflow, a, Num::int(100))))
        }
        // Expanded into separate answers before evaluation.
        Node::PlusMinus(..) => None,
    }
}

fn scalar(v: Val) -> Option<Num> {
    match v {
        Val::Scalar(x) => Some(x),
        Val::Matrix(..) => None,
    }
}

fn map(v: Val, mut f: impl FnMut(Num) -> Num) -> Val {
    match v {
        Val::Scalar(x) => Val::Scalar(f(x)),
        Val::Matrix(xs, c) => Val::Matrix(xs.into_iter().map(f).collect(), c),
    }
}

/// Element-wise for equal shapes (sums); `None` on a shape mismatch.
fn zip(a: Val, b: Val, mut f: impl FnMut(Num, Num) -> Num) -> Option<Val> {
    match (a, b) {
        (Val::Scalar(x), Val::Scalar(y)) => Some(Val::Scalar(f(x, y))),
        (Val::Matrix(xs, c), Val::Matrix(ys, d)) if c == d && xs.len() == ys.len() => {
            Some(Val::Matrix(xs.into_iter().zip(ys).map(|(x, y)| f(x, y)).collect(), c))
        }
        _ => None,
    }
}

/// Scalar, scalar·matrix, or the matrix product (juxtaposed matrices multiply).
fn multiply(env: &mut Env, a: Val, b: Val) -> Option<Val> {
    let o = &mut env.overflow;
    match (a, b) {
        (Val::Scalar(x), Val::Scalar(y)) => Some(Val::Scalar(num::mul(o, x, y))),
        (Val::Scalar(x), m @ Val::Matrix(..)) | (m @ Val::Matrix(..), Val::Scalar(x)) => Some(map(m, |y| num::mul(o, x, y))),
        (Val::Matrix(xs, c), Val::Matrix(ys, d)) => {
            let (rows, inner) = (xs.len() / c, c);
            if ys.len() / d != inner {
                return None;
            }
            let mut out = Vec::with_capacity(rows * d);
            for i in 0..rows {
                for j in 0..d {
                    let mut acc = Num::int(0);
                    for k in 0..inner {
                        let term = num::mul(o, xs[i * c + k], ys[k * d + j]);
                        acc = num::add(o, acc, term);
                    }
                    out.push(acc);
                }
            }
            Some(Val::Matrix(out, d))
        }
    }
}

fn divide(env: &mut Env, a: Val, b: Val) -> Option<Val> {
    let y = scalar(b)?;
    let o = &mut env.overflow;
    Some(map(a, |x| num::div(o, x, y)))
}

fn func(f: Func, a: Num, o: &mut Overflow) -> Num {
    let x = a.f();
    let approx = |v: f64| Num::Approx(v);
    match f {
        Func::Sqrt => num::root(a, Num::int(2)),
        Func::Abs => match a {
            Num::Exact(r) if r.numer() < 0 => Num::Exact(r.neg()),
            _ => approx(x.abs()),
        },
        Func::Factorial => num::factorial(o, a),
        Func::Floor | Func::Ceil => match a.exact() {
            Some(r) => {
                let (n, d) = (r.numer(), r.denom());
                let floor = n.div_euclid(d);
                let v = if f == Func::Ceil && n.rem_euclid(d) != 0 { floor + 1 } else { floor };
                Num::int(v)
            }
            None => approx(if f == Func::Floor { x.floor() } else { x.ceil() }),
        },
        // sin(0), ln(1)... stay exact so that e.g. `\sin 0 + 1` compares exactly with `1`.
        Func::Sin | Func::Tan | Func::Asin | Func::Atan | Func::Sinh | Func::Tanh if a.is_zero() => Num::int(0),
        Func::Cos | Func::Cosh | Func::Exp | Func::Sec if a.is_zero() => Num::int(1),
        Func::Ln if a.exact() == Some(Rat::ONE) => Num::int(0),
        Func::Exp => approx(x.exp()),
        Func::Ln => approx(x.ln()),
        Func::Sin => approx(x.sin()),
        Func::Cos => approx(x.cos()),
        Func::Tan => approx(x.tan()),
        Func::Sec => approx(1.0 / x.cos()),
        Func::Csc => approx(1.0 / x.sin()),
        Func::Cot => approx(1.0 / x.tan()),
        Func::Asin => approx(x.asin()),
        Func::Acos => approx(x.acos()),
        Func::Atan => approx(x.atan()),
        Func::Sinh => approx(x.sinh()),
        Func::Cosh => approx(x.cosh()),
        Func::Tanh => approx(x.tanh()),
    }
}

fn log(base: Num, a: Num) -> Num {
    // Exact when a is an integer power of an exact base: log_2 8 = 3, log_10 0.001 = -3.
    if let (Some(b), Some(x)) = (base.exact(), a.exact()) {
        if b.numer() > 0 && b != Rat::ONE && x.numer() > 0 {
            let k = (x.to_f64().ln() / b.to_f64().ln()).round();
            if k.abs() <= 128.0 && b.pow(k as i128) == Some(x) {
                return Num::int(k as i128);
            }
        }
    }
    Num::Approx(a.f().ln() / base.f().ln())
}

fn binom(n: Num, k: Num, o: &mut Overflow) -> Num {
    let (Some(n), Some(k)) = (n.exact(), k.exact()) else { return Num::Approx(f64::NAN) };
    if !n.is_int() || !k.is_int() || k.numer() < 0 || k.numer() > 1000 {
        return Num::Approx(f64::NAN);
    }
    if n.numer() >= 0 && k.numer() > n.numer() {
        return Num::int(0);
    }
    let mut acc = Num::int(1);
    for i in 0..k.numer() {
        let top = Num::Exact(n.sub(Rat::int(i).expect("small")).unwrap_or(Rat::ZERO));
        let scaled = num::mul(o, acc, top);
        acc = num::div(o, scaled, Num::int(i + 1));
    }
    acc
}

/// A fixed smooth function per name, so `f(x)` equals `f(x)` and differs from `g(x)` and `f(y)`
/// at sample points, without knowing what `f` is.
fn undefined_function(name: &str, args: &[Num]) -> f64 {
    let h = schemas::rng::fnv64(name.as_bytes());
    let mut acc = 0.0;
    for (i, a) in args.iter().enumerate() {
        let k = mix(h ^ (i as u64 + 1));
        let (p, q) = (1.0 + (k & 0xffff) as f64 / 65536.0, (k >> 16 & 0xffff) as f64 / 65536.0 * 6.0);
        acc += (p * a.f() + q).sin() + 0.3 * a.f() * p;
    }
    acc
}

fn sum(env: &mut Env, var: &str, lo: &Node, hi: &Node, body: &Node, product: bool) -> Option<Val> {
    let lo = integer(scalar(eval(lo, env)?)?)?;
    let hi = integer(scalar(eval(hi, env)?)?)?;
    if hi.checked_sub(lo)? >= MAX_TERMS {
        return None;
    }
    let mut acc = Num::int(i128::from(product));
    for k in lo..=hi {
        env.vars.push((var.to_string(), Num::int(k)));
        let v = eval(body, env).and_then(scalar);
        env.vars.pop();
        let v = v?;
        acc = if product { num::mul(&mut env.overflow, acc, v) } else { num::add(&mut env.overflow, acc, v) };
    }
    Some(Val::Scalar(acc))
}

fn integer(x: Num) -> Option<i128> {
    match x {
        Num::Exact(r) if r.is_int() => Some(r.numer()),
        Num::Approx(v) if v.is_finite() && (v - v.round()).abs() < 1e-9 && v.abs() < 1e15 => Some(v.round() as i128),
        _ => None,
    }
}

/// One splitmix64 step from state `z`: a well-mixed deterministic hash of a 64-bit value.
pub fn mix(z: u64) -> u64 {
    schemas::rng::SplitMix64::new(z).next_u64()
}

/// Free variables of `n` (names bound by `\sum` excluded).
pub fn free_vars(n: &Node, out: &mut BTreeSet<String>) {
    match n {
        Node::Var(v) => {
            out.insert(v.clone());
        }
        Node::Sum { var, lo, hi, body, .. } => {
            free_vars(lo, out);
            free_vars(hi, out);
            let mut inner = BTreeSet::new();
            free_vars(body, &mut inner);
            inner.remove(var);
            out.extend(inner);
        }
        _ => super::parse::for_each_child(n, &mut |c| free_vars(c, out)),
    }
}

/// Whether a literal written with a decimal point appears: such a value may be rounded, so it is
/// compared with a tolerance instead of exactly.
pub fn has_decimal(n: &Node) -> bool {
    if let Node::Num { decimal, .. } = n {
        return *decimal;
    }
    let mut found = false;
    super::parse::for_each_child(n, &mut |c| found |= has_decimal(c));
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::math::parse::parse_expr;

    fn value(s: &str) -> Num {
        match eval(&parse_expr(s, 0).unwrap(), &mut Env::new(vec![])).unwrap() {
            Val::Scalar(x) => x,
            Val::Matrix(..) => panic!("matrix"),
        }
    }

    fn exact(s: &str) -> (i128, i128) {
        let r = value(s).exact().unwrap_or_else(|| panic!("{s} should be exact"));
        (r.numer(), r.denom())
    }

    #[test]
    fn exact_arithmetic() {
        assert_eq!(exact(r"\frac{3(-2)-2}{-2-2}+\frac{5}{3}+1"), (14, 3));
        assert_eq!(exact(r"\sqrt{144}/\sqrt[3]{8}"), (6, 1));
        assert_eq!(exact("2^{-3}"), (1, 8));
        assert_eq!(exact("(-8)^{2/3}"), (4, 1));
        assert_eq!(exact("5!"), (120, 1));
        assert_eq!(exact(r"\binom{10}{3}"), (120, 1));
        assert_eq!(exact(r"\log_2 8"), (3, 1));
        assert_eq!(exact("204_5"), (204, 1));
        assert_eq!(exact(r"\sum_{k=1}^{10} k"), (55, 1));
        assert_eq!(exact("28%"), (7, 25));
        assert_eq!(exact("0.0833"), (833, 10000));
    }

    #[test]
    fn bounded_evaluation() {
        assert!(value("9^9^9^9").f().is_infinite());
        assert!(eval(&parse_expr(r"\sum_{k=1}^{1000000000} k", 0).unwrap(), &mut Env::new(vec![])).is_none());
        let nested = r"\sum_{i=1}^{9000} \sum_{j=1}^{9000} 1";
        assert!(eval(&parse_expr(nested, 0).unwrap(), &mut Env::new(vec![])).is_none());
        assert!(value("(10^{30})!").f().is_infinite());
    }

    #[test]
    fn matrices_add_and_multiply() {
        let m = parse_expr(r"\begin{pmatrix}1 & 2 \\ 3 & 4\end{pmatrix} \begin{pmatrix}0 & 1 \\ 1 & 0\end{pmatrix}", 0).unwrap();
        let Some(Val::Matrix(xs, 2)) = eval(&m, &mut Env::new(vec![])) else { panic!() };
        assert_eq!(xs.iter().map(|x| x.f()).collect::<Vec<_>>(), [2.0, 1.0, 4.0, 3.0]);
    }
}
