//! `cat` and `substr`, which write and cut strings as flagd's Go engine does.

use super::evaluate::{Env, Scope};
use super::expr::Expr;
use super::value::{Val, to_cow_str, to_number};

/// Why an evaluation failed on `cat`.
pub(crate) const CAT_FAULT: &str = "cat can join only strings, numbers and null (flagd fails the evaluation on a boolean, an array or an object)";

/// `cat` as flagd's engine (diegoholiveira/jsonlogic v3.9.1) does it: `null` (a missing
/// attribute too) adds nothing, numbers are written as Go's
/// `strconv.FormatFloat(n, 'f', -1, 64)` writes them, strings as they are; with two or
/// more arguments the result is whitespace-trimmed. A boolean, an array or an object
/// fails the evaluation there (a type assertion panics), so it is a fault here.
// Inlined into the evaluator as when it shared its file (the same instructions per
// evaluation as before the split).
#[inline]
pub(super) fn eval_cat<'a>(args: &'a [Expr], env: &Env<'a>, scope: &Scope<'a, '_>) -> Val<'a> {
    let mut s = String::new();
    for a in args {
        if !write_cat_part(&a.eval_in(env, scope), &mut s) {
            env.fail(CAT_FAULT);
            return Val::Null;
        }
    }
    if args.len() > 1 {
        let t = s.trim();
        if t.len() != s.len() {
            s = t.to_owned();
        }
    }
    Val::String(s)
}

/// Appends one `cat` argument; `false` for the values flagd cannot join.
fn write_cat_part(v: &Val<'_>, out: &mut String) -> bool {
    match v {
        Val::Null => true,
        Val::Num(n) => {
            write_go_number(*n, out);
            true
        }
        Val::Str(s) => {
            out.push_str(s);
            true
        }
        Val::String(s) => {
            out.push_str(s);
            true
        }
        Val::Bool(_) | Val::Arr(_) | Val::List(_) | Val::Obj(_) => false,
        Val::Owned(o) => write_cat_part(&Val::of(o), out),
    }
}

/// Go's `strconv.FormatFloat(n, 'f', -1, 64)`: the shortest digits that read back as
/// `n`, never an exponent (`1`, `1.5`, `1000000000000000000000`, `0.0000001`), and
/// `-0` for negative zero. Rust's `Display` for `f64` is the same for finite numbers.
fn write_go_number(n: f64, out: &mut String) {
    use std::fmt::Write as _;
    if n.is_nan() {
        out.push_str("NaN");
    } else if n.is_infinite() {
        out.push_str(if n > 0.0 { "+Inf" } else { "-Inf" });
    } else {
        // Writing into a String cannot fail.
        let _ = write!(out, "{n}");
    }
}

// Inlined into the evaluator as when it shared its file (the same instructions per
// evaluation as before the split).
#[inline]
pub(super) fn eval_substr<'a>(args: &'a [Expr], env: &Env<'a>, scope: &Scope<'a, '_>) -> Val<'a> {
    let s = args.first().map_or(Val::Null, |a| a.eval_in(env, scope));
    let s = to_cow_str(&s);
    let chars: Vec<char> = s.chars().collect();
    let n = chars.len() as i64;
    let start = args
        .get(1)
        .map_or(0.0, |a| to_number(&a.eval_in(env, scope)));
    let start = if start.is_nan() { 0 } else { start as i64 };
    let start = if start < 0 {
        (n + start).max(0)
    } else {
        start.min(n)
    };
    let end = match args.get(2) {
        None => n,
        Some(l) => {
            let len = to_number(&l.eval_in(env, scope));
            let len = if len.is_nan() { 0 } else { len as i64 };
            if len < 0 {
                (n + len).max(start)
            } else {
                (start + len).min(n)
            }
        }
    };
    Val::String(
        chars[start as usize..end.max(start) as usize]
            .iter()
            .collect(),
    )
}
