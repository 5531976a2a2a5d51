//! Expected values in `expect` steps: a literal, `{oneOf: [...]}`, or (for text)
//! `{pattern: REGEX}` for values no scenario can know in advance, such as mdev UUIDs.

use serde::Deserialize;
use serde::de::{DeserializeOwned, Error as _};
use serde_json::Value as Json;
use std::fmt;

/// What an expectation accepts: exactly one value, any of several, or text matching a pattern.
#[derive(Clone, Debug)]
pub enum Expected<T> {
    OneOf { one_of: Vec<T> },
    Pattern { pattern: regex::Regex },
    Literal(T),
}

/// By hand rather than `untagged`: an untagged enum's only error is "did not match any
/// variant", which hides the useful one (`unknown variant `running`, expected one of ...`).
impl<'de, T: DeserializeOwned> Deserialize<'de> for Expected<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = Json::deserialize(d)?;
        if let Json::Object(map) = &v
            && map.len() == 1
        {
            if let Some(list) = map.get("oneOf") {
                let Json::Array(items) = list else {
                    return Err(D::Error::custom("`oneOf:` takes a list of values"));
                };
                let one_of = items
                    .iter()
                    .map(|i| literal(i.clone()))
                    .collect::<Result<_, _>>()
                    .map_err(|e| D::Error::custom(format!("in oneOf: {e}")))?;
                return Ok(Expected::OneOf { one_of });
            }
            if let Some(p) = map.get("pattern") {
                let Json::String(p) = p else {
                    return Err(D::Error::custom("`pattern:` takes a regular expression"));
                };
                return regex_of(p)
                    .map(|pattern| Expected::Pattern { pattern })
                    .map_err(D::Error::custom);
            }
        }
        if let Json::Object(map) = &v {
            let keys: Vec<&str> = map.keys().map(String::as_str).collect();
            return Err(D::Error::custom(format!(
                "expected a value, `{{oneOf: [...]}}` or `{{pattern: REGEX}}`, got a mapping with {}",
                keys.join(", ")
            )));
        }
        literal(v).map(Expected::Literal).map_err(D::Error::custom)
    }
}

/// One value; a number or boolean where text is expected is taken as its text (`5` = `"5"`).
fn literal<T: DeserializeOwned>(v: Json) -> Result<T, String> {
    match serde_json::from_value::<T>(v.clone()) {
        Ok(t) => Ok(t),
        Err(e) => match v {
            Json::Number(_) | Json::Bool(_) => {
                serde_json::from_value::<T>(Json::String(v.to_string())).map_err(|_| e.to_string())
            }
            _ => Err(e.to_string()),
        },
    }
}

/// Anchored: a pattern describes the whole value.
fn regex_of(s: &str) -> Result<regex::Regex, String> {
    regex::Regex::new(&format!("^(?:{s})$")).map_err(|e| format!("bad pattern {s:?}: {e}"))
}

/// `node: x` compared with a node name: whether the expectation accepts it.
impl PartialEq<String> for Expected<String> {
    fn eq(&self, other: &String) -> bool {
        self.matches_str(other)
    }
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
        let five: Expected<String> = serde_saphyr::from_str("5").unwrap();
        assert!(five.matches_str("5"));
    }

    #[test]
    fn a_bad_enum_value_lists_the_allowed_ones() {
        #[derive(Debug, serde::Deserialize, PartialEq)]
        enum Phase {
            Pending,
            Running,
        }
        let e = serde_saphyr::from_str::<Expected<Phase>>("running").unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains("unknown variant `running`, expected `Pending` or `Running`"),
            "{text}"
        );
        let e =
            serde_saphyr::from_str::<Expected<Phase>>("{oneOf: [Pending, Runing]}").unwrap_err();
        assert!(
            e.to_string().contains("in oneOf: unknown variant `Runing`"),
            "{e}"
        );
    }
}
