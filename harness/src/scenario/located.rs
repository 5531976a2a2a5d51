//! A YAML document as a tree in which every key and value knows its line and column.
//!
//! Typed parsing stops at the first problem and loses the position of anything read as a plain
//! `serde_json::Value`; schema checks walk this tree instead, so each problem inside a KubeVirt
//! CR or a VMI manifest is reported at its own key.

use std::fmt;

use serde::Deserialize;
use serde::de::{self, MapAccess, SeqAccess, Visitor};
use serde_saphyr::Spanned;

use super::error::Span;

/// One YAML node and where it starts.
#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    pub at: Span,
    pub value: Value,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Seq(Vec<Node>),
    /// Entries in document order: (key, where the key is, value).
    Map(Vec<Entry>),
}

#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    pub key: String,
    pub key_at: Span,
    pub value: Node,
}

impl Node {
    /// The value under `key` of a mapping.
    pub fn get(&self, key: &str) -> Option<&Node> {
        match &self.value {
            Value::Map(entries) => entries.iter().find(|e| e.key == key).map(|e| &e.value),
            _ => None,
        }
    }
    /// The `i`th item of a sequence.
    pub fn item(&self, i: usize) -> Option<&Node> {
        match &self.value {
            Value::Seq(items) => items.get(i),
            _ => None,
        }
    }
    /// The JSON type name of the value, as schemas spell it.
    pub fn type_name(&self) -> &'static str {
        match self.value {
            Value::Null => "null",
            Value::Bool(_) => "boolean",
            Value::Int(_) => "integer",
            Value::Float(_) => "number",
            Value::Str(_) => "string",
            Value::Seq(_) => "array",
            Value::Map(_) => "object",
        }
    }
}

/// Parses a whole document into a located tree; `None` if it is not YAML (typed parsing
/// reports that error with its location).
pub fn parse(text: &str) -> Option<Node> {
    let mut root = serde_saphyr::from_str::<Spanned<Tree>>(text)
        .ok()
        .map(into_node)?;
    let lines: Vec<&str> = text.lines().collect();
    plain_words_are_text(&mut root, &lines);
    Some(root)
}

/// Untyped, saphyr reads YAML 1.1 words such as `n`, `y`, `yes` and `off` as booleans, but the
/// typed parse of the same file reads them as text (`name: n` is the name "n"). Only `true`
/// and `false` stay booleans here, so both parses see the same document.
fn plain_words_are_text(node: &mut Node, lines: &[&str]) {
    match &mut node.value {
        Value::Bool(_) => {
            let word = token_at(lines, node.at);
            if !matches!(word.to_ascii_lowercase().as_str(), "true" | "false") {
                node.value = Value::Str(word);
            }
        }
        Value::Seq(items) => items
            .iter_mut()
            .for_each(|n| plain_words_are_text(n, lines)),
        Value::Map(entries) => entries
            .iter_mut()
            .for_each(|e| plain_words_are_text(&mut e.value, lines)),
        _ => {}
    }
}

/// The plain scalar that starts at `at` (1-based line and character column).
fn token_at(lines: &[&str], at: Span) -> String {
    let line = lines
        .get((at.line as usize).saturating_sub(1))
        .unwrap_or(&"");
    line.chars()
        .skip((at.column as usize).saturating_sub(1))
        .take_while(|c| !matches!(c, ',' | '}' | ']' | '#') && !c.is_whitespace())
        .collect()
}

fn into_node(s: Spanned<Tree>) -> Node {
    Node {
        at: s.referenced.into(),
        value: s.value.0,
    }
}

/// The deserialisation form: children are `Spanned` so saphyr records where each starts.
struct Tree(Value);

impl<'de> Deserialize<'de> for Tree {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(TreeVisitor).map(Tree)
    }
}

struct TreeVisitor;

impl<'de> Visitor<'de> for TreeVisitor {
    type Value = Value;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any YAML value")
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_some<D: de::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(TreeVisitor)
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Int(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(i64::try_from(v).map_or(Value::Float(v as f64), Value::Int))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Value::Float(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::Str(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::Str(v))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<Spanned<Tree>>()? {
            items.push(into_node(item));
        }
        Ok(Value::Seq(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut entries = Vec::new();
        while let Some(key) = map.next_key::<Spanned<KeyText>>()? {
            let value = into_node(map.next_value::<Spanned<Tree>>()?);
            entries.push(Entry {
                key: key.value.0,
                key_at: key.referenced.into(),
                value,
            });
        }
        Ok(Value::Map(entries))
    }
}

/// A mapping key as text, whatever scalar it is (`1: x` has the key "1").
struct KeyText(String);

impl<'de> Deserialize<'de> for KeyText {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Tree::deserialize(d).map(|t| {
            KeyText(match t.0 {
                Value::Str(s) => s,
                Value::Int(i) => i.to_string(),
                Value::Float(f) => f.to_string(),
                Value::Bool(b) => b.to_string(),
                Value::Null => "null".into(),
                Value::Seq(_) | Value::Map(_) => "<complex key>".into(),
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_values_know_where_they_are() {
        let n = parse("a: 1\nb:\n  c: [x, {d: true}]\n").expect("yaml");
        let b = n.get("b").unwrap();
        let Value::Map(entries) = &b.value else {
            panic!("{b:?}")
        };
        assert_eq!(entries[0].key, "c");
        assert_eq!(entries[0].key_at, Span { line: 3, column: 3 });
        let d = n.get("b").unwrap().get("c").unwrap().item(1).unwrap();
        let Value::Map(entries) = &d.value else {
            panic!("{d:?}")
        };
        assert_eq!(
            entries[0].key_at,
            Span {
                line: 3,
                column: 11
            }
        );
        assert_eq!(entries[0].value.value, Value::Bool(true));
        assert_eq!(n.get("a").unwrap().value, Value::Int(1));
    }

    #[test]
    fn only_true_and_false_are_booleans() {
        let n = parse("a: [n, y, off, True, false]\nb: {c: yes}\n").expect("yaml");
        let words: Vec<Value> = match &n.get("a").unwrap().value {
            Value::Seq(items) => items.iter().map(|i| i.value.clone()).collect(),
            other => panic!("{other:?}"),
        };
        assert_eq!(
            words,
            vec![
                Value::Str("n".into()),
                Value::Str("y".into()),
                Value::Str("off".into()),
                Value::Bool(true),
                Value::Bool(false)
            ]
        );
        assert_eq!(
            n.get("b").unwrap().get("c").unwrap().value,
            Value::Str("yes".into())
        );
    }
}
