//! The one set of limits: enforced by strict validation when flagd accepts a write, and
//! honoured by every decoder (the SDK, flagctl, the server), so that anything flagd
//! accepts loads everywhere.
//!
//! | limit | value |
//! |---|---|
//! | nesting depth of a flag-set document | [`MAX_DEPTH`] = 100 |
//! | nesting depth any decoder reads | [`MAX_DECODE_DEPTH`] = 512 |
//! | compiled size of one flag's targeting | [`MAX_COMPILED_SIZE`] = 100,000 nodes |
//! | flags in a flag set | [`MAX_FLAGS`] = 100,000 |
//! | size of a flag-set document | [`MAX_DOCUMENT_BYTES`] = 32 MiB |
//! | size of one flag's definition | [`MAX_FLAG_BYTES`] = 1 MiB |
//! | one stream message (SDK side) | [`MAX_MESSAGE_BYTES`] = 64 MiB |
//! | a key (flag, evaluator, variant, metadata) | [`MAX_KEY_BYTES`] = 256 bytes, see [`check_key`] |

use serde_json::Value;

/// The deepest nesting of arrays and objects a flag-set document may have (the document
/// itself is level 1, `flags` 2, a flag 3, its targeting 4). Stream frames wrap a
/// document or a flag in at most two more levels, so every frame stays well inside the
/// 128 levels a default JSON decoder reads.
pub const MAX_DEPTH: usize = 100;

/// The deepest nesting a decoder of this workspace reads (the SDK's frame decoder);
/// above [`MAX_DEPTH`] so that data stored before the limit existed still loads.
pub const MAX_DECODE_DEPTH: usize = 512;

/// The largest compiled size of one flag's targeting: its JSON values counted once
/// each, a `$ref` counted as the size of the evaluator it names every time it is used
/// (that is the work one evaluation may do), an array of literals as one value. Bounds
/// both memory and the work of one evaluation.
pub const MAX_COMPILED_SIZE: usize = 100_000;

/// The most flags one flag set may hold.
pub const MAX_FLAGS: usize = 100_000;

/// The largest flag-set document, in bytes of compact JSON.
pub const MAX_DOCUMENT_BYTES: usize = 32 * 1024 * 1024;

/// The largest definition of one flag, in bytes of compact JSON. Every change to a flag
/// (a kill switch included) stores its definition again, so this bounds what one change
/// costs; large shared data (a long list of user ids) belongs in `$evaluators`, which a
/// flag refers to with `$ref` and which its changes do not copy.
pub const MAX_FLAG_BYTES: usize = 1024 * 1024;

/// The largest stream message an SDK reads: a snapshot of the largest document, with
/// room to spare.
pub const MAX_MESSAGE_BYTES: usize = 2 * MAX_DOCUMENT_BYTES;

/// The longest key, in bytes of UTF-8.
pub const MAX_KEY_BYTES: usize = 256;

/// Checks the key syntax shared by flag keys, evaluator names, variant names and
/// metadata keys: 1 to [`MAX_KEY_BYTES`] bytes of printable characters (no control
/// characters: no NUL, newline or tab), and not `.` or `..`, which no URL can address.
///
/// ```
/// assert!(flagd_core::check_key("new-checkout").is_ok());
/// assert!(flagd_core::check_key("checkout v2 / EU").is_ok());
/// assert!(flagd_core::check_key("..").is_err());
/// assert!(flagd_core::check_key("a\nb").is_err());
/// ```
pub fn check_key(key: &str) -> Result<(), String> {
    if key.is_empty() {
        return Err("must not be empty".into());
    }
    if key.len() > MAX_KEY_BYTES {
        return Err(format!(
            "is {} bytes long; at most {MAX_KEY_BYTES} bytes",
            key.len()
        ));
    }
    if key == "." || key == ".." {
        return Err(format!("\"{key}\" cannot be addressed in a URL"));
    }
    if let Some(c) = key.chars().find(|c| c.is_control()) {
        return Err(format!(
            "must not contain control characters (found U+{:04X})",
            u32::from(c)
        ));
    }
    Ok(())
}

/// The nesting depth of a JSON value (a scalar is 0, `[]` and `{}` are 1), counted up
/// to `cap + 1` at most, so that the walk stops early on a document far too deep.
pub fn depth(v: &Value, cap: usize) -> usize {
    fn walk(v: &Value, level: usize, cap: usize) -> usize {
        if level > cap {
            return level;
        }
        match v {
            Value::Array(a) => deepest(a.iter(), level, cap),
            Value::Object(m) => deepest(m.values(), level, cap),
            _ => level,
        }
    }
    fn deepest<'v>(items: impl Iterator<Item = &'v Value>, level: usize, cap: usize) -> usize {
        items
            .map(|x| walk(x, level + 1, cap))
            .fold(level + 1, usize::max)
    }
    walk(v, 0, cap).min(cap + 1)
}

/// The nesting depth of JSON text, read without parsing it (strings are skipped), so
/// that a decoder can refuse text deeper than it can read before recursing into it.
/// Counts up to the first level above `cap`.
pub fn text_depth(text: &[u8], cap: usize) -> usize {
    let (mut level, mut max) = (0usize, 0usize);
    let mut in_string = false;
    let mut escaped = false;
    for &b in text {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                level += 1;
                if level > max {
                    max = level;
                    if max > cap {
                        return max;
                    }
                }
            }
            b']' | b'}' => level = level.saturating_sub(1),
            _ => {}
        }
    }
    max
}

/// Counts the bytes of a value's compact JSON without building it.
pub fn json_bytes(v: &Value) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut c = Count(0);
    // Writing a Value into a counter cannot fail.
    let _ = serde_json::to_writer(&mut c, v);
    c.0
}

/// Parses JSON text of any depth up to [`MAX_DECODE_DEPTH`], for decoders that must read
/// whatever flagd may have stored, including data deeper than the default 128 levels.
pub fn from_slice_deep<T: serde::de::DeserializeOwned>(text: &[u8]) -> Result<T, String> {
    let d = text_depth(text, MAX_DECODE_DEPTH);
    if d > MAX_DECODE_DEPTH {
        return Err(format!(
            "nested more than {MAX_DECODE_DEPTH} levels deep: refused"
        ));
    }
    let mut de = serde_json::Deserializer::from_slice(text);
    // The depth was checked above; serde_json's own limit (128) is lower than ours.
    de.disable_recursion_limit();
    let v = T::deserialize(&mut de).map_err(|e| e.to_string())?;
    de.end().map_err(|e| e.to_string())?;
    Ok(v)
}

/// [`from_slice_deep`] into a JSON value, the members of a large object parsed on the
/// machine's cores: what a 10,000-flag bootstrap or cache file is read with. The same
/// value, and for text that is not JSON the same error.
pub fn value_from_slice_deep(text: &[u8]) -> Result<Value, String> {
    if text_depth(text, MAX_DECODE_DEPTH) <= MAX_DECODE_DEPTH
        && let Some(v) = crate::parallel::parse_large(text)
    {
        return Ok(v);
    }
    from_slice_deep(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn nested(n: usize) -> String {
        let mut s = String::new();
        for _ in 0..n {
            s.push_str("{\"!\":");
        }
        s.push_str("{\"var\":\"x\"}");
        for _ in 0..n {
            s.push('}');
        }
        s
    }

    #[test]
    fn depths() {
        assert_eq!(depth(&json!(1), 10), 0);
        assert_eq!(depth(&json!([]), 10), 1);
        assert_eq!(depth(&json!({"a": [1, {"b": []}]}), 10), 4);
        assert_eq!(text_depth(br#"{"a": [1, {"b": "[[[[{"}]}"#, 10), 3);
        assert_eq!(text_depth(br#"{"a": "\"[["}"#, 10), 1);
        let deep = nested(300);
        assert_eq!(text_depth(deep.as_bytes(), 1000), 301);
        let v: Value = from_slice_deep(deep.as_bytes()).unwrap();
        assert_eq!(depth(&v, 1000), 301);
        assert_eq!(depth(&v, 50), 51, "capped");
        assert!(
            serde_json::from_str::<Value>(&deep).is_err(),
            "the default limit"
        );
        assert!(from_slice_deep::<Value>(nested(600).as_bytes()).is_err());
    }

    #[test]
    fn keys() {
        assert!(check_key("a").is_ok());
        assert!(check_key("ünïcode ✓").is_ok());
        assert!(check_key(&"k".repeat(256)).is_ok());
        assert!(check_key(&"k".repeat(257)).is_err());
        for bad in ["", ".", "..", "a\0b", "a\tb", "a\u{7f}", "a\u{85}b"] {
            assert!(check_key(bad).is_err(), "{bad:?}");
        }
        assert!(check_key("...").is_ok());
    }

    #[test]
    fn bytes() {
        let v = json!({"a": [1, "x"], "b": null});
        assert_eq!(json_bytes(&v), v.to_string().len());
    }
}
