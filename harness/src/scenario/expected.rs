//! Expected values in `expect` steps: a literal, `{oneOf: [...]}`, or (for text)
//! `{pattern: REGEX}` for values no scenario can know in advance, such as mdev UUIDs.

use serde::Deserialize;
use std::fmt;

/// What an expectation accepts: exactly one value, any of several, or text matching a pattern.
#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
pub enum Expected<T> {
    OneOf {
        #[serde(rename = "oneOf")]
        one_of: Vec<T>,
    },
    Pattern {
        #[serde(deserialize_with = "regex_de")]
        pattern: regex::Regex,
    },
    Literal(T),
}

impl<T: PartialEq> PartialEq for Expected<T> {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Expected::OneOf { one_of: a }, Expected::OneOf { one_of: b }) => a == b,
            (Expected::Pattern { pattern: a }, Expected::Pattern { pattern: b }) => {
                a.as_str() == b.as_str()
            }
            (Expected::Literal(a), Expected::Literal(b)) => a == b,
            _ => false,
        }
    }
}

fn regex_de<'de, D: serde::Deserializer<'de>>(d: D) -> Result<regex::Regex, D::Error> {
    let s = String::deserialize(d)?;
    // Anchored: a pattern describes the whole value.
    regex::Regex::new(&format!("^(?:{s})$"))
        .map_err(|e| serde::de::Error::custom(format!("bad pattern {s:?}: {e}")))
}

impl<T: PartialEq> Expected<T> {
    pub fn matches(&self, actual: &T) -> bool {
        match self {
            Expected::Literal(v) => v == actual,
            Expected::OneOf { one_of } => one_of.contains(actual),
            // Patterns only describe text; see `matches_str`.
            Expected::Pattern { .. } => false,
        }
    }
}

impl Expected<String> {
    /// Compares as strings, so `5` in YAML matches an actual `"5"`.
    pub fn matches_str(&self, actual: &str) -> bool {
        match self {
            Expected::Literal(v) => v == actual,
            Expected::OneOf { one_of } => one_of.iter().any(|v| v == actual),
            Expected::Pattern { pattern } => pattern.is_match(actual),
        }
    }
}

impl<T: fmt::Display> fmt::Display for Expected<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Expected::Literal(v) => write!(f, "{v}"),
            Expected::OneOf { one_of } => {
                write!(f, "one of [")?;
                for (i, v) in one_of.iter().enumerate() {
                    if i > 0 {
                        write!(f, ", ")?;
                    }
                    write!(f, "{v}")?;
                }
                write!(f, "]")
            }
            Expected::Pattern { pattern } => write!(f, "a match of /{}/", pattern.as_str()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literal_and_one_of_parse_and_match() {
        let lit: Expected<String> = serde_saphyr::from_str("\"0000:05:00.0\"").unwrap();
        assert!(lit.matches_str("0000:05:00.0"));
        assert!(!lit.matches_str("0000:06:00.0"));
        let any: Expected<String> = serde_saphyr::from_str("{oneOf: [a, b]}").unwrap();
        assert!(any.matches_str("b"));
        assert!(!any.matches_str("c"));
        assert_eq!(any.to_string(), "one of [a, b]");
        let uuid: Expected<String> = serde_saphyr::from_str("{pattern: '[0-9a-f-]{36}'}").unwrap();
        assert!(uuid.matches_str("6f0c3f2e-0000-4000-8000-000000000001"));
        assert!(
            !uuid.matches_str("6f0c3f2e-0000-4000-8000-000000000001x"),
            "patterns are anchored"
        );
        let n: Expected<i64> = serde_saphyr::from_str("2").unwrap();
        assert!(n.matches(&2));
        assert!(!n.matches(&1));
    }
}
