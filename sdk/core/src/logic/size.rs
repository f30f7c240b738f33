//! The size a rule compiles to, counted on its JSON: a rule too large is refused without
//! building it.

use serde_json::Value as Json;

use super::refs::Shared;

/// The compiled size of a rule (see [`crate::limits::MAX_COMPILED_SIZE`]): every JSON
/// value once, an array of literals as one, a `$ref` as the size of its evaluator each
/// time. Stops counting above `cap`, so that a rule far too large costs little to refuse.
pub(crate) fn rule_size(
    v: &Json,
    evaluators: &serde_json::Map<String, Json>,
    shared: &Shared,
    cap: usize,
) -> usize {
    fn walk(
        v: &Json,
        evaluators: &serde_json::Map<String, Json>,
        shared: &Shared,
        cap: usize,
        total: &mut usize,
        in_evaluator: bool,
    ) {
        if *total > cap {
            return;
        }
        match v {
            Json::Array(items) if items.iter().all(|i| !i.is_array() && !i.is_object()) => {
                *total += 1;
            }
            Json::Array(items) => {
                *total += 1;
                for i in items {
                    walk(i, evaluators, shared, cap, total, in_evaluator);
                }
            }
            Json::Object(m) => {
                if !in_evaluator
                    && m.len() == 1
                    && let Some(Json::String(name)) = m.get("$ref")
                {
                    let known = shared.sizes.borrow().get(name.as_str()).copied();
                    let size = match known {
                        Some(n) => n,
                        None => {
                            let mut n = 0;
                            if let Some(body) = evaluators.get(name) {
                                walk(body, evaluators, shared, cap, &mut n, true);
                            }
                            shared.sizes.borrow_mut().insert(name.clone(), n);
                            n
                        }
                    };
                    *total += size.max(1);
                    return;
                }
                *total += 1;
                for x in m.values() {
                    walk(x, evaluators, shared, cap, total, in_evaluator);
                }
            }
            _ => *total += 1,
        }
    }
    let mut total = 0;
    walk(v, evaluators, shared, cap, &mut total, false);
    total
}
