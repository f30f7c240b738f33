//! Values during evaluation, and JavaScript's conversions of them (truthiness, to a
//! number, to a string), on which every operator's semantics rest.

use std::borrow::Cow;

use crate::context::{Map, Tag, Value};

/// A value during evaluation: borrowed from the rule or the context where possible.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Val<'a> {
    Null,
    Bool(bool),
    Num(f64),
    Str(&'a str),
    String(String),
    Arr(&'a [Value]),
    Obj(&'a Map),
    List(Vec<Val<'a>>),
    Owned(Box<Value>),
}

impl<'a> Val<'a> {
    /// Drops the value, inline for the variants that own nothing: `Val`'s drop glue is
    /// out of line (the type is recursive), a call on every operand of every condition.
    #[inline(always)]
    pub(crate) fn release(self) {
        match self {
            owned @ (Self::String(_) | Self::List(_) | Self::Owned(_)) => drop(owned),
            borrowed => std::mem::forget(borrowed),
        }
    }

    #[inline]
    pub(crate) fn of(v: &'a Value) -> Self {
        match v {
            Value::Null => Self::Null,
            Value::Bool(b) => Self::Bool(*b),
            Value::Int(i) => Self::Num(*i as f64),
            Value::Float(f) => Self::Num(*f),
            Value::String(s) => Self::Str(s),
            Value::Array(a) => Self::Arr(a),
            Value::Object(o) => Self::Obj(o),
        }
    }

    pub(super) fn owned(v: Value) -> Self {
        match v {
            Value::Null => Self::Null,
            Value::Bool(b) => Self::Bool(b),
            Value::Int(i) => Self::Num(i as f64),
            Value::Float(f) => Self::Num(f),
            Value::String(s) => Self::String(s),
            other => Self::Owned(Box::new(other)),
        }
    }

    pub(crate) fn to_value(&self) -> Value {
        match self {
            Self::Null => Value::Null,
            Self::Bool(b) => Value::Bool(*b),
            Self::Num(n) => num_value(*n),
            Self::Str(s) => Value::String((*s).to_owned()),
            Self::String(s) => Value::String(s.clone()),
            Self::Arr(a) => Value::Array(a.to_vec()),
            Self::Obj(o) => Value::Object((*o).clone()),
            Self::List(l) => Value::Array(l.iter().map(Val::to_value).collect()),
            Self::Owned(v) => (**v).clone(),
        }
    }

    pub(crate) fn as_str(&self) -> Option<&str> {
        match self {
            Self::Str(s) => Some(s),
            Self::String(s) => Some(s),
            Self::Owned(v) => match &**v {
                Value::String(s) => Some(s),
                _ => None,
            },
            _ => None,
        }
    }

    pub(super) fn is_null(&self) -> bool {
        matches!(self, Self::Null) || matches!(self, Self::Owned(v) if **v == Value::Null)
    }

    pub(super) fn kind(&self) -> Kind {
        match self {
            Self::Null => Kind::Null,
            Self::Bool(_) => Kind::Bool,
            Self::Num(_) => Kind::Num,
            Self::Str(_) | Self::String(_) => Kind::Str,
            Self::Arr(_) | Self::List(_) => Kind::Array,
            Self::Obj(_) => Kind::Object,
            Self::Owned(v) => match &**v {
                Value::Null => Kind::Null,
                Value::Bool(_) => Kind::Bool,
                Value::Int(_) | Value::Float(_) => Kind::Num,
                Value::String(_) => Kind::Str,
                Value::Array(_) => Kind::Array,
                Value::Object(_) => Kind::Object,
            },
        }
    }

    /// The elements, if this is an array.
    pub(super) fn items(&self) -> Option<Vec<Val<'_>>> {
        match self {
            Self::Arr(a) => Some(a.iter().map(Val::of).collect()),
            Self::List(l) => Some(l.clone()),
            Self::Owned(v) => match &**v {
                Value::Array(a) => Some(a.iter().map(Val::of).collect()),
                _ => None,
            },
            _ => None,
        }
    }

    pub(super) fn len_if_array(&self) -> Option<usize> {
        match self {
            Self::Arr(a) => Some(a.len()),
            Self::List(l) => Some(l.len()),
            Self::Owned(v) => match &**v {
                Value::Array(a) => Some(a.len()),
                _ => None,
            },
            _ => None,
        }
    }

    /// One member or element, following a path segment.
    pub(super) fn member(&self, seg: &str) -> Option<Val<'a>> {
        self.member_tagged(Tag::of(seg), seg)
    }

    #[inline]
    pub(super) fn member_tagged(&self, tag: Tag, seg: &str) -> Option<Val<'a>> {
        match self {
            Self::Obj(m) => m.get_tagged(tag, seg).map(Val::of),
            Self::Arr(a) => seg
                .parse::<usize>()
                .ok()
                .and_then(|i| a.get(i))
                .map(Val::of),
            Self::List(l) => seg.parse::<usize>().ok().and_then(|i| l.get(i)).cloned(),
            Self::Owned(v) => {
                let found = match &**v {
                    Value::Object(m) => m.get(seg),
                    Value::Array(a) => seg.parse::<usize>().ok().and_then(|i| a.get(i)),
                    _ => None,
                };
                found.map(|f| Val::owned(f.clone()))
            }
            _ => None,
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Null,
    Bool,
    Num,
    Str,
    Array,
    Object,
}

fn num_value(n: f64) -> Value {
    if n.fract() == 0.0 && n.abs() < 9.007_199_254_740_992e15 {
        Value::Int(n as i64)
    } else {
        Value::Float(n)
    }
}

/// JavaScript truthiness, with `[]` falsy as in JsonLogic.
#[inline]
pub(crate) fn truthy(v: &Val<'_>) -> bool {
    match v {
        Val::Null => false,
        Val::Bool(b) => *b,
        Val::Num(n) => *n != 0.0 && !n.is_nan(),
        Val::Str(s) => !s.is_empty(),
        Val::String(s) => !s.is_empty(),
        Val::Arr(a) => !a.is_empty(),
        Val::List(l) => !l.is_empty(),
        Val::Obj(_) => true,
        Val::Owned(v) => value_truthy(v),
    }
}

fn value_truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Int(i) => *i != 0,
        Value::Float(f) => *f != 0.0 && !f.is_nan(),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(_) => true,
    }
}

pub(super) fn to_number(v: &Val<'_>) -> f64 {
    match v {
        Val::Null => 0.0,
        Val::Bool(b) => f64::from(u8::from(*b)),
        Val::Num(n) => *n,
        Val::Str(s) => str_to_number(s),
        Val::String(s) => str_to_number(s),
        Val::Owned(v) => to_number(&Val::of(v)),
        Val::Arr(a) if a.len() == 1 => to_number(&Val::of(&a[0])),
        Val::Arr([]) => 0.0,
        _ => f64::NAN,
    }
}

fn str_to_number(s: &str) -> f64 {
    let t = s.trim();
    if t.is_empty() {
        0.0
    } else {
        t.parse().unwrap_or(f64::NAN)
    }
}

/// Numbers as flagd prints them: shortest decimal, no exponent (`1`, `1.5`).
pub(crate) fn format_number(n: f64) -> String {
    if n == 0.0 {
        "0".to_owned()
    } else {
        format!("{n}")
    }
}

fn write_str(v: &Val<'_>, out: &mut String) {
    match v {
        Val::Null => {}
        Val::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Val::Num(n) => out.push_str(&format_number(*n)),
        Val::Str(s) => out.push_str(s),
        Val::String(s) => out.push_str(s),
        Val::Arr(_) | Val::List(_) => {
            if let Some(items) = v.items() {
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    write_str(item, out);
                }
            }
        }
        Val::Obj(_) => out.push_str(&v.to_value().to_json().to_string()),
        Val::Owned(o) => write_str(&Val::of(o), out),
    }
}

pub(super) fn to_cow_str<'v>(v: &'v Val<'_>) -> Cow<'v, str> {
    match v.as_str() {
        Some(s) => Cow::Borrowed(s),
        None => {
            let mut s = String::new();
            write_str(v, &mut s);
            Cow::Owned(s)
        }
    }
}
