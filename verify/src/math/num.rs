//! Exact rationals on `i128` with checked arithmetic, and the numbers the evaluator computes with:
//! exact when every step stayed rational and in range, `f64` otherwise.
//!
//! An `i128` rational holds every exact answer a benchmark asks for (38 digits); anything larger
//! is reported as overflow instead of silently rounding, so the comparison can refuse it.

/// `n / d` in lowest terms, `d > 0`. `i128::MIN` never appears, so negation and `abs` are total.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rat {
    n: i128,
    d: i128,
}

impl Rat {
    pub const ZERO: Rat = Rat { n: 0, d: 1 };
    pub const ONE: Rat = Rat { n: 1, d: 1 };

    pub fn int(n: i128) -> Option<Rat> {
        Rat::new(n, 1)
    }

    pub fn new(n: i128, d: i128) -> Option<Rat> {
        if d == 0 || n == i128::MIN || d == i128::MIN {
            return None;
        }
        let g = gcd(n, d) as i128;
        let (n, d) = (n / g, d / g);
        Some(if d < 0 { Rat { n: -n, d: -d } } else { Rat { n, d } })
    }

    pub fn numer(self) -> i128 {
        self.n
    }

    pub fn denom(self) -> i128 {
        self.d
    }

    pub fn is_int(self) -> bool {
        self.d == 1
    }

    pub fn neg(self) -> Rat {
        Rat { n: -self.n, d: self.d }
    }

    pub fn add(self, o: Rat) -> Option<Rat> {
        // Scale by the lcm of the denominators, not their product, to stay in range longer.
        let g = gcd(self.d, o.d) as i128;
        let d = (self.d / g).checked_mul(o.d)?;
        let n = self.n.checked_mul(o.d / g)?.checked_add(o.n.checked_mul(self.d / g)?)?;
        Rat::new(n, d)
    }

    pub fn sub(self, o: Rat) -> Option<Rat> {
        self.add(o.neg())
    }

    pub fn mul(self, o: Rat) -> Option<Rat> {
        // Cross-cancel first so that e.g. (10^20/3) * (3/10^20) never overflows.
        let g1 = gcd(self.n, o.d) as i128;
        let g2 = gcd(o.n, self.d) as i128;
        let n = (self.n / g1).checked_mul(o.n / g2)?;
        let d = (self.d / g2).checked_mul(o.d / g1)?;
        Rat::new(n, d)
    }

    pub fn recip(self) -> Option<Rat> {
        Rat::new(self.d, self.n)
    }

    pub fn div(self, o: Rat) -> Option<Rat> {
        self.mul(o.recip()?)
    }

    /// `self^e` by repeated squaring; `None` on overflow or `0^negative`.
    pub fn pow(self, e: i128) -> Option<Rat> {
        if e < 0 {
            return self.recip()?.pow(e.checked_neg()?);
        }
        let (mut base, mut e, mut acc) = (self, e, Rat::ONE);
        while e > 0 {
            if e & 1 == 1 {
                acc = acc.mul(base)?;
            }
            e >>= 1;
            if e > 0 {
                base = base.mul(base)?;
            }
        }
        Some(acc)
    }

    /// The exact `k`-th root when numerator and denominator are perfect `k`-th powers.
    pub fn root(self, k: u32) -> Option<Rat> {
        if k == 0 || (self.n < 0 && k.is_multiple_of(2)) {
            return None;
        }
        let n = int_root(self.n.unsigned_abs(), k)?;
        let d = int_root(self.d.unsigned_abs(), k)?;
        let n = i128::try_from(n).ok()?;
        Rat::new(if self.n < 0 { -n } else { n }, i128::try_from(d).ok()?)
    }

    pub fn to_f64(self) -> f64 {
        self.n as f64 / self.d as f64
    }
}

fn gcd(a: i128, b: i128) -> u128 {
    let (mut a, mut b) = (a.unsigned_abs(), b.unsigned_abs());
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a.max(1)
}

/// The exact integer `k`-th root of `x`, if there is one.
fn int_root(x: u128, k: u32) -> Option<u128> {
    if x < 2 || k == 1 {
        return Some(x);
    }
    let guess = (x as f64).powf(1.0 / k as f64).round() as u128;
    // The float guess is within one of the true root for every u128; check the neighbours.
    (guess.saturating_sub(1)..=guess + 1).find(|r| r.checked_pow(k) == Some(x))
}

/// A value computed by the evaluator.
#[derive(Clone, Copy, Debug)]
pub enum Num {
    Exact(Rat),
    Approx(f64),
}

impl Num {
    pub fn int(n: i128) -> Num {
        Num::Exact(Rat::int(n).expect("small literal"))
    }

    pub fn f(self) -> f64 {
        match self {
            Num::Exact(r) => r.to_f64(),
            Num::Approx(x) => x,
        }
    }

    pub fn exact(self) -> Option<Rat> {
        match self {
            Num::Exact(r) => Some(r),
            Num::Approx(_) => None,
        }
    }

    pub fn is_zero(self) -> bool {
        match self {
            Num::Exact(r) => r == Rat::ZERO,
            Num::Approx(x) => x == 0.0,
        }
    }
}

/// Set when an exact operation left the `i128` range and fell back to `f64`: the caller decides
/// whether an approximate answer is still good enough (sampling) or not (constant comparison).
#[derive(Default)]
pub struct Overflow(pub bool);

fn exact_or(o: &mut Overflow, exact: Option<Rat>, approx: impl FnOnce() -> f64) -> Num {
    match exact {
        Some(r) => Num::Exact(r),
        None => {
            o.0 = true;
            Num::Approx(approx())
        }
    }
}

pub fn add(o: &mut Overflow, a: Num, b: Num) -> Num {
    match (a, b) {
        (Num::Exact(x), Num::Exact(y)) => exact_or(o, x.add(y), || x.to_f64() + y.to_f64()),
        _ => Num::Approx(a.f() + b.f()),
    }
}

pub fn mul(o: &mut Overflow, a: Num, b: Num) -> Num {
    match (a, b) {
        (Num::Exact(x), Num::Exact(y)) => exact_or(o, x.mul(y), || x.to_f64() * y.to_f64()),
        _ => Num::Approx(a.f() * b.f()),
    }
}

pub fn neg(a: Num) -> Num {
    match a {
        Num::Exact(x) => Num::Exact(x.neg()),
        Num::Approx(x) => Num::Approx(-x),
    }
}

/// `a / b`; division by an exact zero is NaN, which no comparison accepts.
pub fn div(o: &mut Overflow, a: Num, b: Num) -> Num {
    match (a, b) {
        (_, Num::Exact(y)) if y == Rat::ZERO => Num::Approx(f64::NAN),
        (Num::Exact(x), Num::Exact(y)) => exact_or(o, x.div(y), || x.to_f64() / y.to_f64()),
        _ => Num::Approx(a.f() / b.f()),
    }
}

/// Exponents above this are not attempted exactly: the result could not fit anyway unless the base
/// is 0 or ±1, and repeated squaring of a huge exponent is the one loop that could run long.
const MAX_EXACT_EXPONENT: i128 = 4096;

pub fn pow(o: &mut Overflow, a: Num, b: Num) -> Num {
    if let (Num::Exact(x), Num::Exact(y)) = (a, b) {
        if y.is_int() {
            let e = y.numer();
            if x == Rat::ONE || x == Rat::ZERO && e > 0 {
                return Num::Exact(x);
            }
            if x == Rat::ONE.neg() {
                return Num::Exact(if e % 2 == 0 { Rat::ONE } else { x });
            }
            if e.abs() <= MAX_EXACT_EXPONENT {
                if x == Rat::ZERO && e < 0 {
                    return Num::Approx(f64::NAN);
                }
                return exact_or(o, x.pow(e), || x.to_f64().powf(e as f64));
            }
            o.0 = true;
            return Num::Approx(x.to_f64().powf(e as f64));
        }
        // Rational exponent p/q: exact when the q-th root is exact; a real odd root of a
        // negative base is defined (so (-8)^(1/3) = -2 and x^(2/3) is real for x < 0).
        if let Ok(q) = u32::try_from(y.denom()) {
            if let Some(root) = x.root(q) {
                return pow(o, Num::Exact(root), Num::int(y.numer()));
            }
            if x.numer() < 0 && q % 2 == 1 {
                let mag = (-x.to_f64()).powf(y.to_f64());
                return Num::Approx(if y.numer() % 2 == 0 { mag } else { -mag });
            }
        }
    }
    Num::Approx(a.f().powf(b.f()))
}

/// The `k`-th root, exact when possible, real for odd roots of negatives.
pub fn root(a: Num, k: Num) -> Num {
    let k_exact = k.exact().filter(|r| r.is_int() && r.numer() > 0 && r.numer() <= 64);
    if let (Num::Exact(x), Some(k)) = (a, k_exact) {
        if let Some(r) = x.root(k.numer() as u32) {
            return Num::Exact(r);
        }
        if x.numer() < 0 && k.numer() % 2 == 1 {
            return Num::Approx(-(-x.to_f64()).powf(1.0 / k.numer() as f64));
        }
    }
    Num::Approx(a.f().powf(1.0 / k.f()))
}

/// `n!` exact up to 33! (the largest that fits), then in `f64` up to 170!, else infinity.
pub fn factorial(o: &mut Overflow, a: Num) -> Num {
    let Some(n) = a.exact().filter(|r| r.is_int() && r.numer() >= 0).map(Rat::numer) else {
        return Num::Approx(f64::NAN);
    };
    if n > 170 {
        return Num::Approx(f64::INFINITY);
    }
    let mut acc = Num::int(1);
    for k in 2..=n {
        acc = mul(o, acc, Num::int(k));
    }
    acc
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(n: i128, d: i128) -> Rat {
        Rat::new(n, d).unwrap()
    }

    #[test]
    fn rationals_reduce_and_overflow_is_reported() {
        assert_eq!(r(2, -4), r(-1, 2));
        assert_eq!(r(1, 3).add(r(1, 6)).unwrap(), r(1, 2));
        assert_eq!(r(2, 3).pow(-2).unwrap(), r(9, 4));
        assert_eq!(Rat::int(10).unwrap().pow(38).map(|x| x.numer()), Some(10i128.pow(38)));
        assert_eq!(Rat::int(10).unwrap().pow(39), None);
        assert_eq!(Rat::new(1, 0), None);
        assert_eq!(Rat::new(i128::MIN, 1), None);
        assert_eq!(r(4, 9).root(2), Some(r(2, 3)));
        assert_eq!(r(-8, 27).root(3), Some(r(-2, 3)));
        assert_eq!(r(2, 1).root(2), None);
    }

    #[test]
    fn overflow_falls_back_to_float_and_is_flagged() {
        let mut o = Overflow::default();
        let big = pow(&mut o, Num::int(10), Num::int(40));
        assert!(o.0 && (big.f() - 1e40).abs() < 1e26);
        let mut o = Overflow::default();
        assert!(matches!(pow(&mut o, Num::int(-8), Num::Exact(r(2, 3))), Num::Exact(x) if x == r(4, 1)));
        assert!(!o.0);
        let huge = pow(&mut o, Num::int(9), Num::int(387_420_489));
        assert!(huge.f().is_infinite());
    }
}
