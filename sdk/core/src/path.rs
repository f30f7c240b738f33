//! JSON paths for error messages: `flags.new-checkout.targeting.if[1]`.

use std::fmt;

/// A JSON path, built segment by segment while walking a document.
#[derive(Clone, Debug, Default)]
pub(crate) struct Path(String);

impl Path {
    pub(crate) fn root() -> Self {
        Self(String::new())
    }

    /// The path of an object member. Plain names are written `.name`; names with other
    /// characters as `["na.me"]`, so every path reads back unambiguously.
    pub(crate) fn key(&self, name: &str) -> Self {
        let plain = !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '$'));
        let mut s = self.0.clone();
        if plain {
            if !s.is_empty() {
                s.push('.');
            }
            s.push_str(name);
        } else {
            s.push('[');
            s.push_str(&serde_json::Value::String(name.to_owned()).to_string());
            s.push(']');
        }
        Self(s)
    }

    /// The path of an array element.
    pub(crate) fn index(&self, i: usize) -> Self {
        Self(format!("{}[{i}]", self.0))
    }
}

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders() {
        let p = Path::root()
            .key("flags")
            .key("new-checkout")
            .key("targeting")
            .key("if")
            .index(1);
        assert_eq!(p.to_string(), "flags.new-checkout.targeting.if[1]");
        assert_eq!(
            Path::root().key("flags").key("a.b").key("x").to_string(),
            r#"flags["a.b"].x"#
        );
        assert_eq!(
            Path::root()
                .key("$evaluators")
                .key("is_ballmer")
                .to_string(),
            "$evaluators.is_ballmer"
        );
    }
}
