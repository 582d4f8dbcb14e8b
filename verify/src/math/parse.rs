//! Parsing a normalised answer: first its structure (lists, tuples, intervals, sets, relations,
//! text), then each mathematical leaf with a small recursive-descent LaTeX expression parser.
//!
//! Every recursion carries a depth and every parse counts its nodes, so no input can exhaust the
//! stack or memory; a parse that hits a limit fails, and a failed parse only ever compares by
//! string equality.

use super::num::Rat;

pub const MAX_DEPTH: usize = 48;
const MAX_NODES: usize = 4000;
/// Literals longer than this are not numbers anyone asks for; they only cost time.
const MAX_LITERAL_DIGITS: usize = 40;
/// `a \pm b \pm c ...` expands to 2^k values; a few are answers, many are an attack.
const MAX_PLUS_MINUS: usize = 4;
const MAX_MATRIX_CELLS: usize = 400;
const MAX_ITEMS: usize = 256;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Const {
    Pi,
    E,
    Inf,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Func {
    Sqrt,
    Abs,
    Exp,
    Ln,
    Sin,
    Cos,
    Tan,
    Sec,
    Csc,
    Cot,
    Asin,
    Acos,
    Atan,
    Sinh,
    Cosh,
    Tanh,
    Factorial,
    Floor,
    Ceil,
}

#[derive(Clone, Debug)]
pub enum Node {
    /// A literal; `decimal` when written with a decimal point (it may be a rounded value).
    Num {
        value: Rat,
        decimal: bool,
    },
    Const(Const),
    Var(String),
    Neg(Box<Node>),
    /// Flat sums and products keep the tree shallow for long chains like `1+1+...+1`.
    Add(Vec<Node>),
    Mul(Vec<(Node, bool)>),
    Pow(Box<Node>, Box<Node>),
    Func(Func, Box<Node>),
    Root(Box<Node>, Box<Node>),
    Log(Box<Node>, Box<Node>),
    Binom(Box<Node>, Box<Node>),
    /// An undefined function applied to arguments: `f(x)`, `F_{n-1}`.
    Apply(String, Vec<Node>),
    Sum {
        var: String,
        lo: Box<Node>,
        hi: Box<Node>,
        body: Box<Node>,
        product: bool,
    },
    Matrix(Vec<Vec<Node>>),
    Percent(Box<Node>),
    /// `a \pm b` (or `\pm b` with `a` absent); expanded into two answers before comparison.
    PlusMinus(Option<Box<Node>>, Box<Node>),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RelOp {
    Eq,
    Lt,
    Le,
    Gt,
    Ge,
    Ne,
}

#[derive(Clone, Debug)]
pub struct Interval {
    pub lo: Node,
    pub hi: Node,
    pub lo_closed: bool,
    pub hi_closed: bool,
}

#[derive(Clone, Debug)]
pub enum Kind {
    Expr(Node),
    /// `\text{...}` alone: compared as text (its `src`).
    Text,
    /// A chain `t0 op0 t1 op1 t2 ...`; terms may be tuples, as in `(p,q) = (3,2)`.
    Rel(Vec<Answer>, Vec<RelOp>),
    /// `(a, b, ...)`; with two elements it may equally be an open interval.
    Tuple(Vec<Answer>),
    Interval(Box<Interval>),
    Union(Vec<Answer>),
    /// `explicit`: written `\{...\}`; otherwise a bare list `1, 2, 3`.
    Set {
        items: Vec<Answer>,
        explicit: bool,
    },
    /// Could not be parsed: compares only by its text.
    Unparsed,
}

#[derive(Clone, Debug)]
pub struct Answer {
    pub kind: Kind,
    /// The normalised source text of this part, for text comparisons.
    pub src: String,
}

impl Answer {
    fn new(kind: Kind, src: &str) -> Answer {
        Answer { kind, src: src.trim().to_string() }
    }
}

#[derive(Debug)]
pub struct ParseError;

type Res<T> = Result<T, ParseError>;

/// Parses a normalised answer. Never fails: what cannot be parsed is [`Kind::Unparsed`].
pub fn parse_answer(s: &str) -> Answer {
    structure(s, 0).unwrap_or_else(|_| Answer::new(Kind::Unparsed, s))
}

fn structure(s: &str, depth: usize) -> Res<Answer> {
    let depth = deeper(depth)?;
    let s = s.trim();
    let groups = split_top(s, &[";"]);
    if groups.len() > 1 {
        // `p=5,q=2;p=7,q=2`: semicolons separate solutions, commas the parts of one.
        let items = groups
            .iter()
            .filter(|g| !g.trim().is_empty())
            .map(|g| {
                let parts = split_top(g, &[","]);
                if parts.len() > 1 {
                    Ok(Answer::new(Kind::Tuple(items(&parts, depth)?), g))
                } else {
                    item(g, depth)
                }
            })
            .collect::<Res<Vec<_>>>()?;
        return Ok(Answer::new(Kind::Set { items: flatten_lists(items), explicit: false }, s));
    }
    let s_grouped = join_thousands(s);
    let parts = split_top(&s_grouped, &[","]);
    if parts.len() > 1 {
        return Ok(Answer::new(Kind::Set { items: flatten_lists(items(&parts, depth)?), explicit: false }, s));
    }
    item(&s_grouped, depth)
}

fn items(parts: &[&str], depth: usize) -> Res<Vec<Answer>> {
    if parts.len() > MAX_ITEMS {
        return Err(ParseError);
    }
    parts.iter().filter(|p| !p.trim().is_empty()).map(|p| item(p, depth)).collect()
}

/// `{1±√5, -2}`: the values of a `±` item join the list they are in.
fn flatten_lists(items: Vec<Answer>) -> Vec<Answer> {
    let mut out = vec![];
    for a in items {
        match a.kind {
            Kind::Set { items, explicit: false } => out.extend(items),
            _ => out.push(a),
        }
    }
    out
}

/// One item of a list: a relation chain, or a single element.
fn item(s: &str, depth: usize) -> Res<Answer> {
    let depth = deeper(depth)?;
    let s = strip_membership(s.trim());
    let s = approx_tail(s);
    let (terms, ops) = split_relations(s);
    if ops.is_empty() {
        return element(s, depth);
    }
    let parsed: Res<Vec<Answer>> = terms.iter().map(|t| element(t, depth)).collect();
    match parsed {
        Ok(terms) => Ok(Answer::new(Kind::Rel(terms, ops), s)),
        // `1 = \zzz = x = 0`: when a chain does not parse, its last value is still the answer.
        Err(_) if terms.len() > 2 => element(terms.last().expect("non-empty"), depth),
        Err(e) => Err(e),
    }
}

/// `x \in [1,2]` → `[1,2]`: the variable name is not part of the answer.
fn strip_membership(s: &str) -> &str {
    // The first `\in` that is not the start of a longer command (`\infty`, `\int`).
    let Some(i) = s.match_indices("\\in").map(|(i, _)| i).find(|&i| !s.as_bytes().get(i + 3).is_some_and(u8::is_ascii_alphabetic)) else {
        return s;
    };
    let head = s[..i].trim();
    let simple = head.is_empty() || head.chars().all(|c| c.is_alphanumeric() || "_{}()\\ ".contains(c));
    if simple {
        s[i + 3..].trim()
    } else {
        s
    }
}

/// `x = 1/3 \approx 0.33`: the approximation after an exact value is commentary, so drop it; a
/// lone `x \approx 11` means `x = 11`.
fn approx_tail(s: &str) -> &str {
    match s.find("\\approx") {
        Some(i) if s[..i].contains('=') => s[..i].trim(),
        _ => s,
    }
}

fn split_relations(s: &str) -> (Vec<&str>, Vec<RelOp>) {
    const OPS: &[(&str, RelOp)] = &[
        ("\\le", RelOp::Le),
        ("\\ge", RelOp::Ge),
        ("\\ne", RelOp::Ne),
        ("\\approx", RelOp::Eq),
        ("=", RelOp::Eq),
        ("<", RelOp::Lt),
        (">", RelOp::Gt),
    ];
    let mut terms = vec![];
    let mut ops = vec![];
    let mut start = 0;
    let mut depth = 0i32;
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'(' | b'[' | b'{' => depth += 1,
            b')' | b']' | b'}' => depth -= 1,
            _ => {}
        }
        if depth == 0 {
            if let Some((tok, op)) = OPS.iter().find(|(tok, _)| is_token_at(s, i, tok)) {
                terms.push(&s[start..i]);
                ops.push(*op);
                i += tok.len();
                start = i;
                continue;
            }
        }
        i += 1;
    }
    terms.push(&s[start..]);
    (terms, ops)
}

/// `tok` at byte `i`, and when it is a command, not the prefix of a longer one.
fn is_token_at(s: &str, i: usize, tok: &str) -> bool {
    let b = s.as_bytes();
    if !b[i..].starts_with(tok.as_bytes()) {
        return false;
    }
    if tok.starts_with('\\') {
        return !b.get(i + tok.len()).is_some_and(u8::is_ascii_alphabetic);
    }
    // An escaped brace `\{` is not an opener; neither is `\<`.
    !(i > 0 && s.as_bytes()[i - 1] == b'\\')
}

/// One element: a union, a set, a tuple or interval, text, or an expression.
fn element(s: &str, depth: usize) -> Res<Answer> {
    let depth = deeper(depth)?;
    let s = s.trim();
    if s.is_empty() {
        return Err(ParseError);
    }
    let parts = split_top_cmd(s, "\\cup");
    if parts.len() > 1 {
        let parts = parts.iter().map(|p| element(p, depth)).collect::<Res<Vec<_>>>()?;
        return Ok(Answer::new(Kind::Union(parts), s));
    }
    if let Some(inner) = enclosed(s, "\\{", "\\}") {
        let parts = split_top(inner, &[","]);
        let items = flatten_lists(items(&parts, depth)?);
        return Ok(Answer::new(Kind::Set { items, explicit: true }, s));
    }
    if let Some(inner) = enclosed(s, "{", "}") {
        // A brace group around a comma list is how `${1,2,3}$` writes a set.
        if split_top(inner, &[","]).len() > 1 {
            return structure(inner, depth);
        }
    }
    if let Some(a) = tuple_or_interval(s, depth)? {
        return Ok(a);
    }
    let s = strip_units(s);
    if let Some(inner) = enclosed(s, "\\text{", "}") {
        // `\textbf{(55)}`, an answer-choice style number, is the number.
        let bare = inner.trim().trim_start_matches('(').trim_end_matches(')').trim();
        if !bare.is_empty() && bare.chars().all(|c| c.is_ascii_digit() || c == '.') {
            return Ok(Answer::new(Kind::Expr(parse_expr(bare, depth)?), s));
        }
        if !inner.contains('{') {
            return Ok(Answer::new(Kind::Text, s));
        }
    }
    let node = parse_expr(s, depth)?;
    let values = expand_plus_minus(node)?;
    if values.len() == 1 {
        return Ok(Answer::new(Kind::Expr(values.into_iter().next().expect("one")), s));
    }
    // The values have no text of their own (an empty `src` is never equal by text, never a
    // duplicate of another).
    let items = values.into_iter().map(|n| Answer { kind: Kind::Expr(n), src: String::new() }).collect();
    Ok(Answer::new(Kind::Set { items, explicit: false }, s))
}

/// `(a, b)`, `[a, b)`, `(a, b, c)`: a bracketed comma list whose brackets enclose the whole term.
fn tuple_or_interval(s: &str, depth: usize) -> Res<Option<Answer>> {
    let (open, close) = (s.as_bytes()[0], s.as_bytes()[s.len() - 1]);
    if !matches!(open, b'(' | b'[') || !matches!(close, b')' | b']') || matching_close(s, 0) != Some(s.len() - 1) {
        return Ok(None);
    }
    let inner = &s[1..s.len() - 1];
    let parts = split_top(inner, &[",", ";"]);
    if parts.len() < 2 {
        return Ok(None);
    }
    if parts.len() == 2 && (open == b'[' || close == b']') {
        let lo = parse_expr(parts[0], depth)?;
        let hi = parse_expr(parts[1], depth)?;
        let iv = Interval { lo, hi, lo_closed: open == b'[', hi_closed: close == b']' };
        return Ok(Some(Answer::new(Kind::Interval(Box::new(iv)), s)));
    }
    let elems = parts.iter().map(|p| structure(p, depth)).collect::<Res<Vec<_>>>()?;
    Ok(Some(Answer::new(Kind::Tuple(elems), s)))
}

/// The byte index of the bracket closing the one at `open`; `(` and `[` close with either `)` or
/// `]`, because half-open intervals mix them.
fn matching_close(s: &str, open: usize) -> Option<usize> {
    let mut depth = 0i32;
    for (i, c) in s.bytes().enumerate().skip(open) {
        let escaped = i > 0 && s.as_bytes()[i - 1] == b'\\';
        match c {
            b'(' | b'[' | b'{' if !escaped => depth += 1,
            b')' | b']' | b'}' if !escaped => {
                depth -= 1;
                if depth == 0 {
                    return Some(i);
                }
            }
            _ => {}
        }
    }
    None
}

/// The inside of `s` when `s` is exactly `open ... close` with balanced content.
fn enclosed<'a>(s: &'a str, open: &str, close: &str) -> Option<&'a str> {
    let inner = s.strip_prefix(open)?.strip_suffix(close)?;
    let mut depth = 0i32;
    let b = inner.as_bytes();
    for (i, &c) in b.iter().enumerate() {
        let escaped = i > 0 && b[i - 1] == b'\\';
        match c {
            b'{' if !escaped || open == "\\{" => depth += 1,
            b'}' if !escaped || open == "\\{" => {
                depth -= 1;
                if depth < 0 {
                    return None;
                }
            }
            _ => {}
        }
    }
    (depth == 0).then_some(inner)
}

/// Splits at separators outside any bracket; `\{`/`\}` count as brackets, escaped or not.
pub fn split_top<'a>(s: &'a str, seps: &[&str]) -> Vec<&'a str> {
    let mut out = vec![];
    let (mut depth, mut start, mut i) = (0i32, 0usize, 0usize);
    let b = s.as_bytes();
    let mut env = 0i32;
    while i < b.len() {
        // Byte comparisons: every token here is ASCII, so a match is always at a char boundary.
        if b[i..].starts_with(b"\\begin") {
            env += 1;
        } else if b[i..].starts_with(b"\\end") {
            env -= 1;
        }
        match b[i] {
            b'(' | b'[' | b'{' => depth += 1,
            b')' | b']' | b'}' => depth -= 1,
            _ => {}
        }
        if depth == 0 && env == 0 {
            if let Some(sep) = seps.iter().find(|sep| b[i..].starts_with(sep.as_bytes())) {
                out.push(&s[start..i]);
                i += sep.len();
                start = i;
                continue;
            }
        }
        i += 1;
    }
    out.push(&s[start..]);
    out
}

/// Splits at a command (`\cup`) outside brackets.
fn split_top_cmd<'a>(s: &'a str, cmd: &str) -> Vec<&'a str> {
    let parts = split_top(s, &[cmd]);
    if parts.len() > 1 && parts.iter().skip(1).all(|p| !p.starts_with(|c: char| c.is_ascii_alphabetic())) {
        parts
    } else {
        vec![s]
    }
}

/// `12,000,023` → `12000023` outside brackets (inside, `(1,200)` is a pair). A run counts as
/// grouped only when every group after the first has exactly three digits and there is no space.
pub(crate) fn join_thousands(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = String::with_capacity(s.len());
    let (mut i, mut depth) = (0usize, 0i32);
    while i < b.len() {
        match b[i] {
            b'(' | b'[' | b'{' => depth += 1,
            b')' | b']' | b'}' => depth -= 1,
            _ => {}
        }
        let starts_number = b[i].is_ascii_digit() && (i == 0 || !(b[i - 1].is_ascii_digit() || b[i - 1] == b'.' || b[i - 1] == b','));
        if depth == 0 && starts_number {
            if let Some(end) = thousands_run(b, i) {
                out.extend(s[i..end].chars().filter(|&c| c != ','));
                i = end;
                continue;
            }
        }
        let ch = s[i..].chars().next().expect("char boundary");
        out.push(ch);
        i += ch.len_utf8();
    }
    out
}

fn thousands_run(b: &[u8], start: usize) -> Option<usize> {
    let lead = b[start..].iter().take_while(|c| c.is_ascii_digit()).count();
    if lead > 3 {
        return None;
    }
    let (mut i, mut groups) = (start + lead, 0);
    while b.get(i) == Some(&b',') && b.len() >= i + 4 && b[i + 1..i + 4].iter().all(u8::is_ascii_digit) {
        if b.get(i + 4).is_some_and(u8::is_ascii_digit) {
            return None;
        }
        i += 4;
        groups += 1;
    }
    (groups > 0).then_some(i)
}

/// Drops a trailing unit: `\text{ cm}^2`, `\text{meters}`, ` miles`, `35 cm`. Only after
/// something else, so an answer that is only text stays text.
fn strip_units(s: &str) -> &str {
    let mut s = s.trim();
    for _ in 0..3 {
        let before = s.len();
        s = strip_trailing_text(s);
        s = strip_unit_word(s);
        if s.len() == before {
            break;
        }
    }
    s
}

fn strip_trailing_text(s: &str) -> &str {
    let t = s.trim_end();
    let t = t
        .strip_suffix("^2")
        .or_else(|| t.strip_suffix("^3"))
        .or_else(|| t.strip_suffix("^{2}"))
        .or_else(|| t.strip_suffix("^{3}"))
        .unwrap_or(t);
    let Some(body) = t.strip_suffix('}') else { return s };
    let Some(open) = body.rfind("\\text{") else { return s };
    let head = body[..open].trim_end();
    let content = &body[open + 6..];
    if head.is_empty() || content.contains('{') || content.trim().parse::<f64>().is_ok() {
        return s;
    }
    head
}

pub(super) const UNITS: &[&str] = &[
    "cm", "mm", "km", "meter", "metre", "meters", "metres", "inch", "inches", "feet", "foot", "ft", "yard", "yards", "mile", "miles",
    "unit", "units", "degree", "degrees", "dollar", "dollars", "cent", "cents", "hour", "hours", "hr", "hrs", "minute", "minutes", "min",
    "mins", "second", "seconds", "sec", "day", "days", "week", "weeks", "month", "months", "year", "years", "kg", "gram", "grams", "lb",
    "lbs", "pound", "pounds", "liter", "liters", "litre", "litres", "ml", "mph", "kmh", "yuan", "euro", "euros", "rupees", "square", "sq",
];

fn strip_unit_word(s: &str) -> &str {
    let t = s.trim_end();
    let t = t.strip_suffix("^2").or_else(|| t.strip_suffix("^3")).unwrap_or(t);
    let word_start = t.trim_end_matches(|c: char| c.is_ascii_alphabetic()).len();
    let word = &t[word_start..];
    let head = t[..word_start].trim_end();
    let separated = t[..word_start].ends_with(|c: char| c.is_whitespace() || c.is_ascii_digit() || c == '}');
    if head.is_empty() || !separated || !UNITS.contains(&word.to_ascii_lowercase().as_str()) {
        return s;
    }
    head
}

fn deeper(depth: usize) -> Res<usize> {
    if depth >= MAX_DEPTH {
        Err(ParseError)
    } else {
        Ok(depth + 1)
    }
}

// ---------------------------------------------------------------------------------------------
// Expressions

/// Parses one expression (no top-level commas or relations).
pub fn parse_expr(s: &str, depth: usize) -> Res<Node> {
    let chars: Vec<char> = s.chars().collect();
    let mut p = Parser { s: &chars, i: 0, depth, nodes: 0, abs_open: 0 };
    let node = p.expr()?;
    p.ws();
    if p.i != p.s.len() {
        return Err(ParseError);
    }
    Ok(node)
}

struct Parser<'a> {
    s: &'a [char],
    i: usize,
    depth: usize,
    nodes: usize,
    /// Inside `|...|`, a `|` closes instead of starting an implicit product.
    abs_open: usize,
}

/// Commands that are operators or separators, never the start of an implicit product.
const NOT_ATOMS: &[&str] = &[
    "cdot", "times", "div", "pm", "mp", "le", "ge", "ne", "cup", "cap", "in", "to", "end", "right", "setminus", "mid", "approx", "equiv",
    "pmod", "bmod", "mod",
];

impl Parser<'_> {
    fn peek(&self) -> Option<char> {
        self.s.get(self.i).copied()
    }

    fn ws(&mut self) {
        while self.peek().is_some_and(char::is_whitespace) {
            self.i += 1;
        }
    }

    fn eat(&mut self, c: char) -> bool {
        self.ws();
        if self.peek() == Some(c) {
            self.i += 1;
            true
        } else {
            false
        }
    }

    fn expect(&mut self, c: char) -> Res<()> {
        if self.eat(c) {
            Ok(())
        } else {
            Err(ParseError)
        }
    }

    fn node(&mut self, n: Node) -> Res<Node> {
        self.nodes += 1;
        if self.nodes > MAX_NODES {
            Err(ParseError)
        } else {
            Ok(n)
        }
    }

    fn enter(&mut self) -> Res<()> {
        self.depth += 1;
        if self.depth > MAX_DEPTH * 2 {
            Err(ParseError)
        } else {
            Ok(())
        }
    }

    fn leave(&mut self) {
        self.depth -= 1;
    }

    /// The command name at the cursor (after `\`), without consuming it.
    fn command_ahead(&self) -> Option<String> {
        if self.peek() != Some('\\') {
            return None;
        }
        let name: String = self.s[self.i + 1..].iter().take_while(|c| c.is_ascii_alphabetic()).collect();
        if name.is_empty() {
            self.s.get(self.i + 1).map(|c| c.to_string())
        } else {
            Some(name)
        }
    }

    fn eat_command(&mut self, name: &str) -> bool {
        self.ws();
        if self.command_ahead().as_deref() == Some(name) {
            self.i += 1 + name.chars().count();
            true
        } else {
            false
        }
    }

    fn expr(&mut self) -> Res<Node> {
        self.enter()?;
        let first = self.signed_term()?;
        let mut terms = vec![first];
        loop {
            self.ws();
            if self.eat('+') {
                terms.push(self.term()?);
            } else if self.peek() == Some('-') {
                self.i += 1;
                let t = self.term()?;
                terms.push(self.node(Node::Neg(Box::new(t)))?);
            } else if self.eat_command("pm") || self.eat_command("mp") {
                let rhs = self.term()?;
                let lhs = if terms.len() == 1 { terms.pop().expect("one") } else { Node::Add(std::mem::take(&mut terms)) };
                terms.push(self.node(Node::PlusMinus(Some(Box::new(lhs)), Box::new(rhs)))?);
            } else {
                break;
            }
        }
        self.leave();
        let n = if terms.len() == 1 { terms.pop().expect("one") } else { Node::Add(terms) };
        self.node(n)
    }

    /// A term with its leading sign: `-x^2` is `-(x^2)`, `\pm 3` is both signs.
    fn signed_term(&mut self) -> Res<Node> {
        self.ws();
        if self.eat('-') {
            self.enter()?;
            let t = self.signed_term()?;
            self.leave();
            return self.node(Node::Neg(Box::new(t)));
        }
        if self.eat('+') {
            self.enter()?;
            let t = self.signed_term()?;
            self.leave();
            return Ok(t);
        }
        if self.eat_command("pm") || self.eat_command("mp") {
            let t = self.term()?;
            return self.node(Node::PlusMinus(None, Box::new(t)));
        }
        self.term()
    }

    fn term(&mut self) -> Res<Node> {
        self.enter()?;
        let start = self.i;
        let first = self.unary()?;
        let first = self.mixed_number(start, first)?;
        let mut factors = vec![(first, false)];
        loop {
            self.ws();
            let inverse = if self.eat('*') || self.eat_command("cdot") || self.eat_command("times") || self.eat_command("ast") {
                false
            } else if self.eat('/') || self.eat(':') || self.eat_command("div") {
                true
            } else if self.starts_atom() {
                factors.push((self.power()?, false));
                continue;
            } else {
                break;
            };
            factors.push((self.unary()?, inverse));
        }
        self.leave();
        if factors.len() == 1 && !factors[0].1 {
            return Ok(factors.pop().expect("one").0);
        }
        self.node(Node::Mul(factors))
    }

    /// `15\frac{39}{40}` and `4 4/9` (on one line) are mixed numbers, 15 + 39/40, as MATH and
    /// Math-Verify write them; a bare integer literal followed by a proper fraction of literals.
    /// An improper one (`11 7/6`) is neither a product nor a sum anyone meant: a parse error.
    fn mixed_number(&mut self, start: usize, first: Node) -> Res<Node> {
        let Node::Num { value: whole, decimal: false } = first else { return Ok(first) };
        if !self.s[start..self.i].iter().all(|c| c.is_ascii_digit() || *c == ' ' || *c == '\t') {
            return Ok(first);
        }
        // The literal's own end: parsing it may already have consumed the spaces after it.
        let lit_start = start + self.s[start..].iter().take_while(|c| c.is_whitespace()).count();
        let lit_end = lit_start + self.s[lit_start..].iter().take_while(|c| c.is_ascii_digit()).count();
        let mut j = lit_end;
        while matches!(self.s.get(j), Some(' ' | '\t')) {
            j += 1;
        }
        let digits_at = |k: usize| self.s[k.min(self.s.len())..].iter().take_while(|c| c.is_ascii_digit()).count();
        let (num_at, num_len, den_at, den_len, end) = if self.s[j..].starts_with(&['\\', 'f', 'r', 'a', 'c', '{']) {
            let (n, nl) = (j + 6, digits_at(j + 6));
            if self.s.get(n + nl..n + nl + 2) != Some(&['}', '{'][..]) {
                return Ok(first);
            }
            let (d, dl) = (n + nl + 2, digits_at(n + nl + 2));
            if self.s.get(d + dl) != Some(&'}') {
                return Ok(first);
            }
            (n, nl, d, dl, d + dl + 1)
        } else if j > lit_end {
            let (n, nl) = (j, digits_at(j));
            if self.s.get(n + nl) != Some(&'/') {
                return Ok(first);
            }
            let (d, dl) = (n + nl + 1, digits_at(n + nl + 1));
            if self.s.get(d + dl).is_some_and(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '/' | '^' | '(' | '\\')) {
                return Ok(first);
            }
            (n, nl, d, dl, d + dl)
        } else {
            return Ok(first);
        };
        if num_len == 0 || den_len == 0 || num_len > MAX_LITERAL_DIGITS || den_len > MAX_LITERAL_DIGITS {
            return Ok(first);
        }
        let literal = |a: usize, l: usize| self.s[a..a + l].iter().collect::<String>().parse::<i128>().map_err(|_| ParseError);
        let (num, den) = (literal(num_at, num_len)?, literal(den_at, den_len)?);
        if den == 0 || num >= den {
            return Err(ParseError);
        }
        self.i = end;
        let value = whole.add(Rat::new(num, den).ok_or(ParseError)?).ok_or(ParseError)?;
        self.node(Node::Num { value, decimal: false })
    }

    fn unary(&mut self) -> Res<Node> {
        self.ws();
        if self.eat('-') {
            self.enter()?;
            let u = self.unary()?;
            self.leave();
            return self.node(Node::Neg(Box::new(u)));
        }
        if self.eat('+') {
            self.enter()?;
            let u = self.unary()?;
            self.leave();
            return Ok(u);
        }
        self.power()
    }

    fn starts_atom(&self) -> bool {
        let mut j = self.i;
        while self.s.get(j).is_some_and(|c| c.is_whitespace()) {
            j += 1;
        }
        match self.s.get(j) {
            Some(c) if c.is_ascii_alphanumeric() || matches!(c, '(' | '{' | '.') => true,
            Some('|') => self.abs_open == 0,
            Some('\\') => {
                let name: String = self.s[j + 1..].iter().take_while(|c| c.is_ascii_alphabetic()).collect();
                !name.is_empty() && !NOT_ATOMS.contains(&name.as_str())
            }
            _ => false,
        }
    }

    fn power(&mut self) -> Res<Node> {
        self.enter()?;
        let mut base = self.postfix()?;
        self.ws();
        if self.eat('^') {
            let exp = self.exponent()?;
            base = self.node(Node::Pow(Box::new(base), Box::new(exp)))?;
            base = self.postfixes(base)?;
        }
        self.leave();
        Ok(base)
    }

    /// `^{...}`, `^2`, `^-1`, `^\frac12`, and right-associative towers `9^9^9`.
    fn exponent(&mut self) -> Res<Node> {
        self.ws();
        if self.peek() == Some('{') {
            return self.group('{', '}');
        }
        if self.eat('-') {
            self.enter()?;
            let e = self.exponent()?;
            self.leave();
            return self.node(Node::Neg(Box::new(e)));
        }
        self.power()
    }

    fn postfix(&mut self) -> Res<Node> {
        let a = self.atom()?;
        self.postfixes(a)
    }

    fn postfixes(&mut self, mut a: Node) -> Res<Node> {
        loop {
            self.ws();
            match self.peek() {
                Some('!') if self.s.get(self.i + 1) != Some(&'=') => {
                    self.i += 1;
                    a = self.node(Node::Func(Func::Factorial, Box::new(a)))?;
                }
                Some('%') => {
                    self.i += 1;
                    a = self.node(Node::Percent(Box::new(a)))?;
                }
                _ => return Ok(a),
            }
        }
    }

    fn group(&mut self, open: char, close: char) -> Res<Node> {
        self.expect(open)?;
        let saved = self.abs_open;
        self.abs_open = 0;
        let e = self.expr()?;
        self.abs_open = saved;
        self.expect(close)?;
        Ok(e)
    }

    fn atom(&mut self) -> Res<Node> {
        self.enter()?;
        self.ws();
        let r = match self.peek() {
            Some(c) if c.is_ascii_digit() || c == '.' => self.number(),
            Some(c) if c.is_ascii_alphabetic() => self.identifier(),
            Some('(') => self.group('(', ')'),
            Some('[') => self.group('[', ']'),
            Some('{') => self.group('{', '}'),
            Some('|') => {
                self.i += 1;
                self.abs_open += 1;
                let e = self.expr()?;
                self.abs_open -= 1;
                self.expect('|')?;
                self.node(Node::Func(Func::Abs, Box::new(e)))
            }
            Some('\\') => self.command(),
            _ => Err(ParseError),
        };
        self.leave();
        r
    }

    fn number(&mut self) -> Res<Node> {
        let start = self.i;
        while self.peek().is_some_and(|c| c.is_ascii_digit()) {
            self.i += 1;
        }
        let int_end = self.i;
        let decimal = self.peek() == Some('.') && self.s.get(self.i + 1).is_some_and(|c| c.is_ascii_digit());
        if decimal {
            self.i += 1;
            while self.peek().is_some_and(|c| c.is_ascii_digit()) {
                self.i += 1;
            }
        }
        let digits: String = self.s[start..self.i].iter().filter(|c| c.is_ascii_digit()).collect();
        if digits.is_empty() || digits.len() > MAX_LITERAL_DIGITS {
            return Err(ParseError);
        }
        let frac_len = if decimal { self.i - int_end - 1 } else { 0 };
        let n: i128 = digits.parse().map_err(|_| ParseError)?;
        let d = 10i128.checked_pow(frac_len as u32).ok_or(ParseError)?;
        let value = Rat::new(n, d).ok_or(ParseError)?;
        if let Some(k) = self.scientific_exponent()? {
            // `4.5e33` is 4.5 × 10^33 exactly. Such a literal is a rounded measurement as much as
            // `4.5` is, so it compares with the decimal tolerance (see `compare::nums_close`).
            let scale = Rat::int(10).ok_or(ParseError)?.pow(k).ok_or(ParseError)?;
            return self.node(Node::Num { value: value.mul(scale).ok_or(ParseError)?, decimal: true });
        }
        if !decimal && self.peek() == Some('_') {
            return self.base_number(&digits);
        }
        self.node(Node::Num { value, decimal })
    }

    /// The exponent of scientific notation right after a literal, consumed: `e33`, `E-5`, `e+8`
    /// (how Minerva's golds, calculators and programs write numbers). Only with digits after the
    /// optional sign, so `2e`, `2e^{x}` and `3e x` stay products with Euler's number. Past
    /// `10^±38` the value leaves the `i128` range: a parse error, never a rounded value.
    fn scientific_exponent(&mut self) -> Res<Option<i128>> {
        if !matches!(self.peek(), Some('e' | 'E')) {
            return Ok(None);
        }
        let mut j = self.i + 1;
        let negative = self.s.get(j) == Some(&'-');
        if matches!(self.s.get(j), Some('+' | '-')) {
            j += 1;
        }
        let len = self.s[j.min(self.s.len())..].iter().take_while(|c| c.is_ascii_digit()).count();
        if len == 0 {
            return Ok(None);
        }
        let digits: String = self.s[j..j + len].iter().collect();
        self.i = j + len;
        let k: i128 = digits.parse().ok().filter(|k| *k <= 38).ok_or(ParseError)?;
        Ok(Some(if negative { -k } else { k }))
    }

    /// `204_5`, `1112112_{3}`: a numeral with its base. The subscript is notation, so the value
    /// is the digits as written: `204_5` matches `204` (the base left implicit) but not `54`,
    /// which answers a "give it in base 5" question in the wrong base.
    fn base_number(&mut self, digits: &str) -> Res<Node> {
        self.i += 1;
        let sub = self.subscript_text()?;
        let base: u32 = sub.parse().map_err(|_| ParseError)?;
        if !(2..=36).contains(&base) || !digits.chars().all(|d| d.is_digit(base)) {
            return Err(ParseError);
        }
        let n: i128 = digits.parse().map_err(|_| ParseError)?;
        self.node(Node::Num { value: Rat::int(n).ok_or(ParseError)?, decimal: false })
    }

    /// The raw text of a subscript: `{...}` (balanced) or one character.
    fn subscript_text(&mut self) -> Res<String> {
        self.ws();
        if self.peek() == Some('{') {
            let start = self.i + 1;
            let mut depth = 0;
            while let Some(c) = self.peek() {
                self.i += 1;
                match c {
                    '{' => depth += 1,
                    '}' => {
                        depth -= 1;
                        if depth == 0 {
                            return Ok(self.s[start..self.i - 1].iter().collect::<String>().trim().to_string());
                        }
                    }
                    _ => {}
                }
            }
            return Err(ParseError);
        }
        if self.peek() == Some('\\') {
            let name = self.command_ahead().ok_or(ParseError)?;
            self.i += 1 + name.chars().count();
            return Ok(format!("\\{name}"));
        }
        let c = self.peek().ok_or(ParseError)?;
        self.i += 1;
        Ok(c.to_string())
    }

    /// A letter: a variable (one letter each, as LaTeX reads `xy`), a plain-text function name
    /// such as `sqrt(2)`, or a named function applied with parentheses (`f(x)`).
    fn identifier(&mut self) -> Res<Node> {
        let run: String = self.s[self.i..].iter().take_while(|c| c.is_ascii_alphabetic()).collect();
        let next = self.s.get(self.i + run.len()).copied();
        if next == Some('(') {
            if let Some(f) = func_named(&run) {
                self.i += run.len();
                let arg = self.group('(', ')')?;
                return self.apply_func(f, arg);
            }
        }
        if run == "pi" {
            self.i += 2;
            return self.node(Node::Const(Const::Pi));
        }
        let c = self.s[self.i];
        self.i += 1;
        self.variable(c.to_string())
    }

    /// A variable name with its subscript, or an undefined function applied to arguments.
    fn variable(&mut self, name: String) -> Res<Node> {
        let mut name = name;
        if self.peek() == Some('_') {
            self.i += 1;
            let sub = self.subscript_text()?;
            if sub.chars().all(|c| c.is_ascii_alphanumeric()) {
                name = format!("{name}_{sub}");
            } else {
                // `F_{n-k-1}`: a sequence indexed by an expression is a function of the index.
                let arg = parse_expr(&sub, self.depth + 1)?;
                return self.node(Node::Apply(name, vec![arg]));
            }
        }
        if self.peek() == Some('(') && FUNCTION_LETTERS.contains(&name.as_str()) {
            // `f(x)`, `W(n)`, `f(2)` apply a function; `h(h+r)` is a product.
            let start = self.i;
            if let Ok(args) = self.arguments() {
                if args.iter().all(|a| matches!(a, Node::Var(_) | Node::Num { .. } | Node::Const(_))) {
                    return self.node(Node::Apply(name, args));
                }
            }
            self.i = start;
        }
        if name == "e" {
            return self.node(Node::Const(Const::E));
        }
        self.node(Node::Var(name))
    }

    fn arguments(&mut self) -> Res<Vec<Node>> {
        self.expect('(')?;
        let mut args = vec![self.expr()?];
        while self.eat(',') {
            args.push(self.expr()?);
        }
        self.expect(')')?;
        Ok(args)
    }

    fn command(&mut self) -> Res<Node> {
        let name = self.command_ahead().ok_or(ParseError)?;
        self.i += 1 + name.chars().count();
        match name.as_str() {
            "frac" | "over" => {
                let a = self.argument()?;
                let b = self.argument()?;
                self.node(Node::Mul(vec![(a, false), (b, true)]))
            }
            "binom" | "dbinom" | "tbinom" | "choose" => {
                let a = self.argument()?;
                let b = self.argument()?;
                self.node(Node::Binom(Box::new(a), Box::new(b)))
            }
            "sqrt" => {
                self.ws();
                if self.peek() == Some('[') {
                    let k = self.group('[', ']')?;
                    let x = self.argument()?;
                    return self.node(Node::Root(Box::new(k), Box::new(x)));
                }
                let x = self.argument()?;
                self.node(Node::Func(Func::Sqrt, Box::new(x)))
            }
            "pi" => self.node(Node::Const(Const::Pi)),
            "infty" => self.node(Node::Const(Const::Inf)),
            "text" => self.text_atom(),
            "log" | "ln" | "lg" => self.logarithm(&name),
            "sum" | "prod" => self.big_operator(name == "prod"),
            "begin" => self.matrix(),
            "overline" | "bar" | "vec" | "hat" | "widehat" | "tilde" | "widetilde" | "underline" | "mathbb" | "mathcal" | "dot"
            | "ddot" => self.argument(),
            _ => {
                if let Some(f) = func_named(&name) {
                    return self.function(f);
                }
                if GREEK.contains(&name.as_str()) {
                    return self.variable(format!("\\{name}"));
                }
                Err(ParseError)
            }
        }
    }

    /// The argument of `\frac`, `\sqrt`, a function without parentheses: a brace group, or a
    /// single digit, letter or command (so `\frac12` is 1/2 and `\sqrt3` is √3).
    fn argument(&mut self) -> Res<Node> {
        self.ws();
        match self.peek() {
            Some('{') => self.group('{', '}'),
            Some(c) if c.is_ascii_digit() => {
                self.i += 1;
                self.node(Node::Num { value: Rat::int(c.to_digit(10).expect("digit") as i128).ok_or(ParseError)?, decimal: false })
            }
            Some(c) if c.is_ascii_alphabetic() => {
                self.i += 1;
                self.variable(c.to_string())
            }
            Some('\\') => self.atom(),
            _ => Err(ParseError),
        }
    }

    /// `\text{...}` inside an expression: a number, a constant, or a word taken as one symbol.
    fn text_atom(&mut self) -> Res<Node> {
        self.ws();
        if self.peek() != Some('{') {
            return Err(ParseError);
        }
        let raw = self.subscript_text()?;
        if raw.is_empty() {
            return Err(ParseError);
        }
        // `\mathbf{2 5}`: digits typeset apart (as in ARML solutions) are one number.
        let compact: String = raw.chars().filter(|c| !c.is_whitespace()).collect();
        if compact.chars().all(|c| c.is_ascii_digit() || c == '.') {
            return parse_expr(&compact, self.depth + 1);
        }
        if raw == "e" {
            return self.node(Node::Const(Const::E));
        }
        if raw.chars().all(|c| c.is_alphanumeric() || c == ' ') {
            return self.node(Node::Var(raw.replace(' ', "")));
        }
        Err(ParseError)
    }

    fn apply_func(&mut self, f: Func, arg: Node) -> Res<Node> {
        self.node(Node::Func(f, Box::new(arg)))
    }

    /// `\sin x`, `\sin(x)`, `\sin^2 x` (= (sin x)^2), `\sin^{-1} x` (= arcsin x).
    fn function(&mut self, f: Func) -> Res<Node> {
        self.ws();
        let mut power = None;
        if self.eat('^') {
            let e = self.exponent()?;
            power = Some(e);
        }
        let inverse = matches!(&power, Some(Node::Neg(x)) if matches!(**x, Node::Num { value, .. } if value == Rat::ONE));
        let arg = self.function_argument()?;
        let f = if inverse { inverse_of(f).ok_or(ParseError)? } else { f };
        let applied = self.node(Node::Func(f, Box::new(arg)))?;
        match power {
            Some(p) if !inverse => self.node(Node::Pow(Box::new(applied), Box::new(p))),
            _ => Ok(applied),
        }
    }

    /// Parenthesised, braced, or a run of implicitly multiplied atoms up to the next operator or
    /// function: `\sin 2x` is sin(2x) but `\sin b \cos a` is sin(b)·cos(a).
    fn function_argument(&mut self) -> Res<Node> {
        self.ws();
        match self.peek() {
            Some('(') => self.group('(', ')'),
            Some('{') => self.group('{', '}'),
            _ => {
                let mut factors = vec![(self.power()?, false)];
                while self.starts_atom() && !self.function_ahead() {
                    factors.push((self.power()?, false));
                }
                if factors.len() == 1 {
                    Ok(factors.pop().expect("one").0)
                } else {
                    self.node(Node::Mul(factors))
                }
            }
        }
    }

    fn function_ahead(&self) -> bool {
        let mut p = Parser { s: self.s, i: self.i, depth: self.depth, nodes: 0, abs_open: 0 };
        p.ws();
        p.command_ahead().is_some_and(|n| func_named(&n).is_some() || matches!(n.as_str(), "log" | "ln" | "lg"))
    }

    fn logarithm(&mut self, name: &str) -> Res<Node> {
        self.ws();
        let base = if self.eat('_') {
            self.ws();
            if self.peek() == Some('{') {
                self.group('{', '}')?
            } else {
                self.argument()?
            }
        } else if name == "lg" {
            self.node(Node::Num { value: Rat::int(10).ok_or(ParseError)?, decimal: false })?
        } else {
            // `\log` is the natural logarithm, as in SymPy and hence in Math-Verify.
            self.node(Node::Const(Const::E))?
        };
        let mut power = None;
        if self.eat('^') {
            power = Some(self.exponent()?);
        }
        let arg = self.function_argument()?;
        let log = self.node(Node::Log(Box::new(base), Box::new(arg)))?;
        match power {
            Some(p) => self.node(Node::Pow(Box::new(log), Box::new(p))),
            None => Ok(log),
        }
    }

    /// `\sum_{k=a}^{b} body`; the body is one term (`\sum_k a_k + 1` adds 1 once).
    fn big_operator(&mut self, product: bool) -> Res<Node> {
        self.ws();
        if !self.eat('_') {
            return Err(ParseError);
        }
        let lower = self.subscript_text()?;
        let (var, lo) = lower.split_once('=').ok_or(ParseError)?;
        let var = var.trim().to_string();
        if var.is_empty() || !var.chars().all(|c| c.is_ascii_alphabetic()) {
            return Err(ParseError);
        }
        let lo = parse_expr(lo, self.depth + 1)?;
        if !self.eat('^') {
            return Err(ParseError);
        }
        let hi = self.exponent()?;
        let body = self.term()?;
        self.node(Node::Sum { var, lo: Box::new(lo), hi: Box::new(hi), body: Box::new(body), product })
    }

    /// `\begin{pmatrix} a & b \\ c & d \end{pmatrix}` and friends, `array` with its column spec.
    fn matrix(&mut self) -> Res<Node> {
        let env = self.subscript_text()?;
        if !matches!(env.as_str(), "pmatrix" | "bmatrix" | "Bmatrix" | "matrix" | "smallmatrix" | "array" | "vmatrix") {
            return Err(ParseError);
        }
        if env == "array" {
            self.ws();
            if self.peek() == Some('{') {
                self.subscript_text()?;
            }
        }
        let start = self.i;
        let end_tag: Vec<char> = format!("\\end{{{env}}}").chars().collect();
        let mut nested = 0;
        let body_end = loop {
            if self.i >= self.s.len() {
                return Err(ParseError);
            }
            if self.s[self.i..].starts_with(&['\\', 'b', 'e', 'g', 'i', 'n']) {
                nested += 1;
            }
            if self.s[self.i..].starts_with(&end_tag) {
                if nested == 0 {
                    break self.i;
                }
                nested -= 1;
            }
            self.i += 1;
        };
        self.i = body_end + end_tag.len();
        let body: String = self.s[start..body_end].iter().collect();
        let mut rows = vec![];
        let mut cells = 0;
        for row in split_top(&body, &["\\\\"]) {
            if row.trim().is_empty() {
                continue;
            }
            let row = split_top(row, &["&"])
                .into_iter()
                .map(|cell| {
                    cells += 1;
                    if cells > MAX_MATRIX_CELLS {
                        return Err(ParseError);
                    }
                    parse_expr(cell, self.depth + 1)
                })
                .collect::<Res<Vec<_>>>()?;
            rows.push(row);
        }
        let width = rows.first().map_or(0, Vec::len);
        if width == 0 || rows.iter().any(|r| r.len() != width) {
            return Err(ParseError);
        }
        if env == "vmatrix" {
            // A determinant is a number, not a matrix; not evaluated here.
            return Err(ParseError);
        }
        self.node(Node::Matrix(rows))
    }
}

/// Letters that, followed by `(`, apply a function rather than multiply: `f(x)`, `W(n)`.
const FUNCTION_LETTERS: &[&str] = &["f", "g", "h", "F", "G", "H", "P", "Q", "W"];

const GREEK: &[&str] = &[
    "alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta", "vartheta", "iota", "kappa", "lambda", "mu", "nu", "xi", "rho",
    "varrho", "sigma", "tau", "upsilon", "phi", "varphi", "chi", "psi", "omega", "Gamma", "Delta", "Theta", "Lambda", "Xi", "Sigma",
    "Upsilon", "Phi", "Psi", "Omega",
];

fn func_named(name: &str) -> Option<Func> {
    Some(match name {
        "sqrt" => Func::Sqrt,
        "abs" => Func::Abs,
        "exp" => Func::Exp,
        "ln" => Func::Ln,
        "sin" => Func::Sin,
        "cos" => Func::Cos,
        "tan" | "tg" => Func::Tan,
        "sec" => Func::Sec,
        "csc" => Func::Csc,
        "cot" | "ctg" => Func::Cot,
        "arcsin" | "asin" => Func::Asin,
        "arccos" | "acos" => Func::Acos,
        "arctan" | "atan" => Func::Atan,
        "sinh" => Func::Sinh,
        "cosh" => Func::Cosh,
        "tanh" => Func::Tanh,
        "floor" => Func::Floor,
        "ceil" => Func::Ceil,
        _ => return None,
    })
}

fn inverse_of(f: Func) -> Option<Func> {
    Some(match f {
        Func::Sin => Func::Asin,
        Func::Cos => Func::Acos,
        Func::Tan => Func::Atan,
        _ => return None,
    })
}

/// All sign choices of the `±` in a node: `1 \pm \sqrt5` → [1+√5, 1-√5].
pub fn expand_plus_minus(node: Node) -> Res<Vec<Node>> {
    let count = count_pm(&node);
    if count == 0 {
        return Ok(vec![node]);
    }
    if count > MAX_PLUS_MINUS {
        return Err(ParseError);
    }
    Ok((0..1u32 << count)
        .map(|signs| {
            let mut k = 0;
            choose_signs(&node, signs, &mut k)
        })
        .collect())
}

fn count_pm(n: &Node) -> usize {
    let mut count = usize::from(matches!(n, Node::PlusMinus(..)));
    for_each_child(n, &mut |c| count += count_pm(c));
    count
}

fn choose_signs(n: &Node, signs: u32, k: &mut usize) -> Node {
    if let Node::PlusMinus(a, b) = n {
        let minus = signs >> *k & 1 == 1;
        *k += 1;
        let a = a.as_ref().map(|a| choose_signs(a, signs, k));
        let b = choose_signs(b, signs, k);
        let b = if minus { Node::Neg(Box::new(b)) } else { b };
        return match a {
            Some(a) => Node::Add(vec![a, b]),
            None => b,
        };
    }
    map_children(n, &mut |c| choose_signs(c, signs, k))
}

/// Calls `f` on each direct child.
pub fn for_each_child(n: &Node, f: &mut dyn FnMut(&Node)) {
    match n {
        Node::Num { .. } | Node::Const(_) | Node::Var(_) => {}
        Node::Neg(a) | Node::Func(_, a) | Node::Percent(a) => f(a),
        Node::Add(xs) => xs.iter().for_each(f),
        Node::Mul(xs) => xs.iter().for_each(|(x, _)| f(x)),
        Node::Pow(a, b) | Node::Root(a, b) | Node::Log(a, b) | Node::Binom(a, b) => {
            f(a);
            f(b);
        }
        Node::Apply(_, xs) => xs.iter().for_each(f),
        Node::Sum { lo, hi, body, .. } => {
            f(lo);
            f(hi);
            f(body);
        }
        Node::Matrix(rows) => rows.iter().flatten().for_each(f),
        Node::PlusMinus(a, b) => {
            if let Some(a) = a {
                f(a);
            }
            f(b);
        }
    }
}

/// A copy of `n` with each direct child replaced by `f(child)`.
pub fn map_children(n: &Node, f: &mut dyn FnMut(&Node) -> Node) -> Node {
    let mut b = |x: &Node| Box::new(f(x));
    match n {
        Node::Num { .. } | Node::Const(_) | Node::Var(_) => n.clone(),
        Node::Neg(a) => Node::Neg(b(a)),
        Node::Func(g, a) => Node::Func(*g, b(a)),
        Node::Percent(a) => Node::Percent(b(a)),
        Node::Add(xs) => Node::Add(xs.iter().map(|x| *b(x)).collect()),
        Node::Mul(xs) => Node::Mul(xs.iter().map(|(x, inv)| (*b(x), *inv)).collect()),
        Node::Pow(x, y) => Node::Pow(b(x), b(y)),
        Node::Root(x, y) => Node::Root(b(x), b(y)),
        Node::Log(x, y) => Node::Log(b(x), b(y)),
        Node::Binom(x, y) => Node::Binom(b(x), b(y)),
        Node::Apply(name, xs) => Node::Apply(name.clone(), xs.iter().map(|x| *b(x)).collect()),
        Node::Sum { var, lo, hi, body, product } => Node::Sum { var: var.clone(), lo: b(lo), hi: b(hi), body: b(body), product: *product },
        Node::Matrix(rows) => Node::Matrix(rows.iter().map(|r| r.iter().map(|x| *b(x)).collect()).collect()),
        Node::PlusMinus(x, y) => Node::PlusMinus(x.as_ref().map(|x| b(x)), b(y)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expr(s: &str) -> Node {
        parse_expr(s, 0).unwrap_or_else(|_| panic!("{s} should parse"))
    }

    #[test]
    fn latex_shorthands_parse() {
        for s in [
            r"\frac12",
            r"\frac3{3}",
            r"\frac{1}3",
            r"\sqrt3",
            r"\sqrt 2+\sqrt 5",
            r"\frac94\pi",
            r"\sqrt[3]{x}^2",
            r"2 \sin b \cos a",
            r"\tan^2(y)+1",
            r"x^{2/3}",
            r"|x-2|",
            r"204_5",
            r"F_{n-k-1}",
            r"\sum_{k=0}^{n-1} F_k F_{n-k-1}",
            r"\begin{pmatrix}1 & 2 \\ 3 & 4\end{pmatrix}",
            r"\binom{5}{2}",
            r"5!",
            r"28%",
            r"\log_2 8",
            r"-x^2",
            r"9^9^9^9",
        ] {
            expr(s);
        }
        assert!(parse_expr(r"\zzz", 0).is_err());
        assert!(parse_expr(r"(1", 0).is_err());
    }

    #[test]
    fn structure_of_lists_tuples_intervals_sets() {
        assert!(matches!(parse_answer("1, 2, 3").kind, Kind::Set { ref items, explicit: false } if items.len() == 3));
        assert!(matches!(parse_answer("(1, 2)").kind, Kind::Tuple(ref v) if v.len() == 2));
        assert!(matches!(parse_answer("[0, 1)").kind, Kind::Interval(ref i) if i.lo_closed && !i.hi_closed));
        assert!(matches!(parse_answer(r"\{1, 2\}").kind, Kind::Set { explicit: true, .. }));
        assert!(matches!(parse_answer(r"(2, 12) \cup (12, 102)").kind, Kind::Union(ref v) if v.len() == 2));
        assert!(matches!(parse_answer("x = 3").kind, Kind::Rel(_, ref ops) if ops == &[RelOp::Eq]));
        assert!(matches!(parse_answer("12,000,023").kind, Kind::Expr(Node::Num { .. })));
        assert!(matches!(parse_answer(r"1 \pm \sqrt{19}").kind, Kind::Set { ref items, .. } if items.len() == 2));
        assert!(matches!(parse_answer(r"\text{Evelyn}").kind, Kind::Text));
        assert!(matches!(parse_answer(r"15 \text{ cm}^2").kind, Kind::Expr(Node::Num { .. })));
        assert!(matches!(parse_answer("-12;-11;-10").kind, Kind::Set { ref items, .. } if items.len() == 3));
    }
}
