//! Expected values in `expect` steps: a literal, or `{oneOf: [...]}`.

use serde::Deserialize;
use std::fmt;

/// What an expectation accepts: exactly one value, or any of several.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum Expected<T> {
    OneOf {
        #[serde(rename = "oneOf")]
        one_of: Vec<T>,
    },
    Literal(T),
}

impl<T: PartialEq> Expected<T> {
    pub fn matches(&self, actual: &T) -> bool {
        match self {
            Expected::Literal(v) => v == actual,
            Expected::OneOf { one_of } => one_of.contains(actual),
        }
    }
}

impl Expected<String> {
    /// Compares as strings, so `5` in YAML matches an actual `"5"`.
    pub fn matches_str(&self, actual: &str) -> bool {
        match self {
            Expected::Literal(v) => v == actual,
            Expected::OneOf { one_of } => one_of.iter().any(|v| v == actual),
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
        let n: Expected<i64> = serde_saphyr::from_str("2").unwrap();
        assert!(n.matches(&2));
        assert!(!n.matches(&1));
    }
}
