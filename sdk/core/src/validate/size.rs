//! The size limits of a document, checked as a whole: reading it flag by flag cannot see
//! them.

use serde_json::{Map, Value};

use crate::limits;
use crate::model::FlagSet;
use crate::path::Path;
use crate::problem::Checker;

/// The size limits of strict validation: nesting depth (with the path of every item too
/// deep), flag count and document size.
pub(super) fn check_limits(
    json: &Value,
    obj: &Map<String, Value>,
    set: &FlagSet,
    ck: &mut Checker,
) {
    let root = Path::root();
    if set.flags.len() > limits::MAX_FLAGS {
        ck.hard(
            &root.key("flags"),
            format!(
                "holds {} flags; at most {} are allowed",
                set.flags.len(),
                limits::MAX_FLAGS
            ),
        );
    }
    let bytes = limits::json_bytes(json);
    if bytes > limits::MAX_DOCUMENT_BYTES {
        ck.hard(
            &root,
            format!(
                "the flag set is {bytes} bytes as compact JSON; at most {} bytes (32 MiB) are allowed",
                limits::MAX_DOCUMENT_BYTES
            ),
        );
    }
    // No flag can be larger than the whole document.
    if bytes > limits::MAX_FLAG_BYTES {
        let big = |ck: &mut Checker, path: Path, flag: &Value| {
            let n = limits::json_bytes(flag);
            if n > limits::MAX_FLAG_BYTES {
                ck.hard(
                    &path,
                    format!(
                        "the flag is {n} bytes as compact JSON; at most {} bytes (1 MiB) are allowed (put large lists in \"$evaluators\" and use \"$ref\")",
                        limits::MAX_FLAG_BYTES
                    ),
                );
            }
        };
        match obj.get("flags") {
            Some(Value::Object(m)) => {
                for (k, f) in m {
                    big(ck, root.key("flags").key(k), f);
                }
            }
            Some(Value::Array(a)) => {
                for (i, f) in a.iter().enumerate() {
                    big(ck, root.key("flags").index(i), f);
                }
            }
            _ => {}
        }
    }
    if limits::depth(json, limits::MAX_DEPTH) <= limits::MAX_DEPTH {
        return;
    }
    // Too deep somewhere: name each item, with its depth counted from the document.
    let too_deep = |ck: &mut Checker, path: &Path, v: &Value, above: usize| {
        let d = limits::depth(v, limits::MAX_DECODE_DEPTH) + above;
        if d > limits::MAX_DEPTH {
            ck.hard(
                path,
                format!(
                    "is nested {d} levels deep in the document; at most {} levels are allowed",
                    limits::MAX_DEPTH
                ),
            );
        }
    };
    for (k, v) in obj {
        let p = root.key(k);
        match (k.as_str(), v) {
            ("flags" | "$evaluators", Value::Object(m)) => {
                for (name, item) in m {
                    too_deep(ck, &p.key(name), item, 2);
                }
            }
            ("flags", Value::Array(a)) => {
                for (i, item) in a.iter().enumerate() {
                    too_deep(ck, &p.index(i), item, 2);
                }
            }
            _ => too_deep(ck, &p, v, 1),
        }
    }
}
