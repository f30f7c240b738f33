//! Setting a flag's percentage split, for CI promotion: `{"variant": "on", "percent": 25}`.
//!
//! The flag's targeting must be a single `fractional`, or an `if` whose last branch (the
//! else) is a `fractional`. The named variant gets `percent`; the others share the rest
//! in proportion to their current weights. Buckets keep their order, so ramping a
//! variant that is the first or last bucket never moves a user out of it.

use serde_json::{Value, json};

use crate::Problem;

fn invalid(path: &str, message: impl Into<String>) -> Problem {
    Problem {
        path: path.to_owned(),
        message: message.into(),
    }
}

/// Where the `fractional` is: its arguments, mutable.
fn split_args(targeting: &mut Value) -> Option<(&mut Vec<Value>, &'static str)> {
    let obj = targeting.as_object_mut()?;
    if obj.len() != 1 {
        return None;
    }
    if obj.contains_key("fractional") {
        return obj
            .get_mut("fractional")
            .and_then(Value::as_array_mut)
            .map(|a| (a, "targeting.fractional"));
    }
    let branches = obj.get_mut("if")?.as_array_mut()?;
    if branches.len() % 2 == 0 {
        return None;
    }
    let last = branches.last_mut()?.as_object_mut()?;
    if last.len() != 1 {
        return None;
    }
    last.get_mut("fractional")
        .and_then(Value::as_array_mut)
        .map(|a| (a, "targeting.if[-1].fractional"))
}

fn variant_key(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// The flag definition with `variant` at `percent` of the split, or what stops it (the
/// path is relative to the request: `percent`, `variant`, or within `targeting`).
pub fn set_percent(def: &Value, variant: &str, percent: f64) -> Result<Value, Problem> {
    // Hundredths as decimal text means: 16.56 is 1655.9999999999998 hundredths in binary.
    let hundredths = percent * 100.0;
    if !(0.0..=100.0).contains(&percent) || (hundredths - hundredths.round()).abs() > 1e-6 {
        return Err(invalid(
            "percent",
            format!("must be from 0 to 100 with at most two decimals, got {percent}"),
        ));
    }
    let mut def = def.clone();
    let known = def
        .get("variants")
        .and_then(Value::as_object)
        .is_some_and(|v| v.contains_key(variant));
    if !known {
        let names: Vec<String> = def
            .get("variants")
            .and_then(Value::as_object)
            .map(|v| v.keys().cloned().collect())
            .unwrap_or_default();
        return Err(invalid(
            "variant",
            format!(
                "\"{variant}\" is not a variant of this flag ({})",
                names.join(", ")
            ),
        ));
    }
    let shape_error = || {
        invalid(
            "targeting",
            "a rollout needs targeting that is a single fractional, or an if whose last branch is a fractional; edit the flag instead",
        )
    };
    let targeting = def.get_mut("targeting").ok_or_else(shape_error)?;
    let (args, path) = split_args(targeting).ok_or_else(shape_error)?;
    let first_bucket = usize::from(args.first().is_some_and(|a| !a.is_array()));
    let mut weights = Vec::new();
    let mut target = None;
    for (i, b) in args.iter().enumerate().skip(first_bucket) {
        let bucket = b
            .as_array()
            .filter(|b| (1..=2).contains(&b.len()))
            .ok_or_else(|| invalid(&format!("{path}[{i}]"), "is not a [variant, weight] bucket"))?;
        let name = variant_key(&bucket[0]).ok_or_else(|| {
            invalid(
                &format!("{path}[{i}][0]"),
                "a computed variant cannot be given a percentage",
            )
        })?;
        let w = match bucket.get(1) {
            None | Some(Value::Null) => 1,
            Some(w) => w.as_u64().ok_or_else(|| {
                invalid(
                    &format!("{path}[{i}][1]"),
                    "a computed weight cannot be given a percentage",
                )
            })?,
        };
        if name == variant {
            target = Some(weights.len());
        }
        weights.push((i, name, w));
    }
    let target = match target {
        Some(t) => t,
        None => {
            args.push(json!([variant, 0]));
            weights.push((args.len() - 1, variant.to_owned(), 0));
            weights.len() - 1
        }
    };
    // Whole percentages keep a total of 100; hundredths use 10,000.
    let total: u64 = if percent.fract() == 0.0 { 100 } else { 10_000 };
    let want = (percent * total as f64 / 100.0).round() as u64;
    let rest = total - want;
    let others: Vec<usize> = (0..weights.len()).filter(|&i| i != target).collect();
    let old_rest: u64 = others.iter().map(|&i| weights[i].2).sum();
    if others.is_empty() && rest > 0 {
        return Err(invalid(
            "percent",
            format!("\"{variant}\" is the only bucket of the split, so it must be 100%"),
        ));
    }
    // Largest-remainder shares, in proportion to the current weights (equal if all 0).
    let mut shares: Vec<(usize, u64, u64)> = others
        .iter()
        .map(|&i| {
            let (num, den) = if old_rest == 0 {
                (rest, others.len() as u64)
            } else {
                (rest * weights[i].2, old_rest)
            };
            (i, num / den, num % den)
        })
        .collect();
    let mut left = rest - shares.iter().map(|s| s.1).sum::<u64>();
    let mut order: Vec<usize> = (0..shares.len()).collect();
    order.sort_by(|&a, &b| shares[b].2.cmp(&shares[a].2).then(a.cmp(&b)));
    for &o in &order {
        if left == 0 {
            break;
        }
        shares[o].1 += 1;
        left -= 1;
    }
    weights[target].2 = want;
    for (i, w, _) in shares {
        weights[i].2 = w;
    }
    for (arg_index, _, w) in &weights {
        if let Some(Value::Array(b)) = args.get_mut(*arg_index) {
            b.truncate(1);
            b.push(json!(w));
        }
    }
    Ok(def)
}

/// The split of a flag whose targeting has the shape a rollout accepts, as each
/// bucket's variant and percentage; `None` for any other targeting, or buckets whose
/// variant or weight is computed.
pub fn split(def: &Value) -> Option<Vec<(String, f64)>> {
    let mut targeting = def.get("targeting")?.clone();
    let (args, _) = split_args(&mut targeting)?;
    let first_bucket = usize::from(args.first().is_some_and(|a| !a.is_array()));
    let buckets = args
        .iter()
        .skip(first_bucket)
        .map(|b| {
            let b = b.as_array().filter(|b| (1..=2).contains(&b.len()))?;
            let weight = match b.get(1) {
                None | Some(Value::Null) => 1,
                Some(w) => w.as_u64()?,
            };
            Some((variant_key(&b[0])?, weight))
        })
        .collect::<Option<Vec<_>>>()?;
    let total: u64 = buckets.iter().map(|(_, w)| w).sum();
    Some(
        buckets
            .into_iter()
            .map(|(v, w)| {
                let pct = if total == 0 {
                    0.0
                } else {
                    w as f64 * 100.0 / total as f64
                };
                (v, pct)
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flag(targeting: Value) -> Value {
        json!({"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "off", "targeting": targeting})
    }

    #[test]
    fn ramps_a_plain_split() {
        let f = flag(json!({"fractional": [["on", 5], ["off", 95]]}));
        let out = set_percent(&f, "on", 25.0).unwrap();
        assert_eq!(
            out["targeting"],
            json!({"fractional": [["on", 25], ["off", 75]]})
        );
        // Two decimals that binary floating point cannot hold exactly.
        let out = set_percent(&f, "on", 16.56).unwrap();
        assert_eq!(
            out["targeting"],
            json!({"fractional": [["on", 1656], ["off", 8344]]})
        );
        let out = set_percent(&f, "on", 2.5).unwrap();
        assert_eq!(
            out["targeting"],
            json!({"fractional": [["on", 250], ["off", 9750]]})
        );
    }

    #[test]
    fn keeps_bucketing_and_the_if_before_it() {
        let f = flag(
            json!({"if": [{"in": [{"var": "country"}, ["NO"]]}, "on", {"fractional": [{"var": "email"}, ["on"], ["off", 3]]}]}),
        );
        let out = set_percent(&f, "on", 50.0).unwrap();
        assert_eq!(
            out["targeting"]["if"][2],
            json!({"fractional": [{"var": "email"}, ["on", 50], ["off", 50]]})
        );
    }

    #[test]
    fn shares_the_rest_in_proportion() {
        let f = json!({"state": "ENABLED", "variants": {"a": "a", "b": "b", "c": "c"}, "targeting": {"fractional": [["a", 10], ["b", 30], ["c", 60]]}});
        let out = set_percent(&f, "a", 40.0).unwrap();
        assert_eq!(
            out["targeting"],
            json!({"fractional": [["a", 40], ["b", 20], ["c", 40]]})
        );
        let f = json!({"state": "ENABLED", "variants": {"a": "a", "b": "b", "c": "c"}, "targeting": {"fractional": [["a", 0], ["b", 0]]}});
        let out = set_percent(&f, "c", 1.0).unwrap();
        assert_eq!(
            out["targeting"],
            json!({"fractional": [["a", 50], ["b", 49], ["c", 1]]})
        );
    }

    #[test]
    fn reads_the_split_back() {
        let def = flag(json!({"if": [{"in": ["@x", {"var": "email"}]}, "on",
            {"fractional": [{"var": "targetingKey"}, ["on", 1], ["off", 3]]}]}));
        assert_eq!(
            split(&def),
            Some(vec![("on".to_owned(), 25.0), ("off".to_owned(), 75.0)])
        );
        let ramped = set_percent(&def, "on", 50.0).unwrap();
        assert_eq!(split(&ramped).unwrap()[0].1, 50.0);
        assert_eq!(split(&flag(json!({"==": [1, 1]}))), None);
        assert_eq!(
            split(&flag(
                json!({"fractional": [[{"var": "v"}, 50], ["off", 50]]})
            )),
            None
        );
    }

    #[test]
    fn refuses_other_shapes_and_bad_input() {
        let e = |v: Result<Value, Problem>| match v {
            Err(p) => p.path,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            e(set_percent(
                &flag(json!({"if": [true, "on", "off"]})),
                "on",
                5.0
            )),
            "targeting"
        );
        assert_eq!(
            e(set_percent(
                &flag(json!({"fractional": [["on", 5], ["off", 95]]})),
                "onn",
                5.0
            )),
            "variant"
        );
        assert_eq!(
            e(set_percent(
                &flag(json!({"fractional": [["on", 5], ["off", 95]]})),
                "on",
                101.0
            )),
            "percent"
        );
        assert_eq!(
            e(set_percent(
                &flag(json!({"fractional": [["on", {"var": "w"}], ["off", 95]]})),
                "on",
                5.0
            )),
            "targeting.fractional[0][1]"
        );
        let no_targeting =
            json!({"state": "ENABLED", "variants": {"on": true}, "defaultVariant": "on"});
        assert_eq!(e(set_percent(&no_targeting, "on", 5.0)), "targeting");
    }
}
