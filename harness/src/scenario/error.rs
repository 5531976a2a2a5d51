//! Scenario errors: `file:line:column: message`, then the offending lines with a caret.

use std::fmt;
use std::path::{Path, PathBuf};

/// A 1-based line and column in a scenario file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Span {
    pub line: u32,
    pub column: u32,
}

impl From<serde_saphyr::Location> for Span {
    fn from(l: serde_saphyr::Location) -> Self {
        Span {
            line: l.line() as u32,
            column: l.column() as u32,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScenarioError {
    pub file: PathBuf,
    /// Absent only when the file could not be read at all.
    pub span: Option<Span>,
    pub message: String,
    /// The lines around the error with a caret under the column (empty without a span).
    pub snippet: String,
    /// Every further problem found in the same pass, in file order.
    pub more: Vec<ScenarioError>,
}

impl std::error::Error for ScenarioError {}

impl fmt::Display for ScenarioError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.span {
            Some(s) => write!(
                f,
                "{}:{}:{}: {}",
                self.file.display(),
                s.line,
                s.column,
                self.message
            )?,
            None => write!(f, "{}: {}", self.file.display(), self.message)?,
        }
        if !self.snippet.is_empty() {
            write!(f, "\n{}", self.snippet)?;
        }
        for e in &self.more {
            write!(f, "\n{e}")?;
        }
        Ok(())
    }
}

impl ScenarioError {
    pub fn at(file: &Path, source: &str, span: Span, message: impl Into<String>) -> Self {
        ScenarioError {
            file: file.to_owned(),
            span: Some(span),
            message: message.into(),
            snippet: snippet(source, span),
            more: Vec::new(),
        }
    }

    /// Every problem of one file as one error: the first in file order, then the others.
    /// `None` for no problems.
    pub fn many(file: &Path, source: &str, mut problems: Vec<(Span, String)>) -> Option<Self> {
        problems.sort_by_key(|(s, _)| (s.line, s.column));
        problems.dedup();
        let mut all = problems
            .into_iter()
            .map(|(span, m)| Self::at(file, source, span, m));
        let mut first = all.next()?;
        first.more = all.collect();
        Some(first)
    }

    /// How many problems this error reports.
    pub fn count(&self) -> usize {
        1 + self.more.len()
    }

    /// An error about the file as a whole (no line to point at).
    pub fn whole_file(file: &Path, message: impl Into<String>) -> Self {
        ScenarioError {
            file: file.to_owned(),
            span: None,
            message: message.into(),
            snippet: String::new(),
            more: Vec::new(),
        }
    }

    pub fn io(file: &Path, e: &std::io::Error) -> Self {
        Self::whole_file(file, e.to_string())
    }

    /// Turns a YAML/serde error into ours, keeping its location and only its first line of text
    /// (saphyr's own rendering repeats the location and snippet, which we draw ourselves).
    pub fn from_yaml(file: &Path, source: &str, e: &serde_saphyr::Error) -> Self {
        let text = e.to_string();
        let first = text.lines().next().unwrap_or("invalid YAML").trim();
        let first = first.strip_prefix("error: ").unwrap_or(first);
        // Drop saphyr's own "line L column C: " prefix: the location is printed once, by us.
        let message = match first.split_once(": ") {
            Some((head, rest)) if head.starts_with("line ") && head.contains(" column ") => {
                rest.to_owned()
            }
            _ => first.to_owned(),
        };
        let message = with_hint(message);
        match e.location() {
            Some(loc) if loc.line() > 0 => Self::at(file, source, loc.into(), message),
            _ => Self::whole_file(file, message),
        }
    }
}

/// Adds what usually causes a YAML structure error: the parser sees a key where it expects a
/// value (or the reverse) almost always because of indentation or a missing `- `.
fn with_hint(message: String) -> String {
    const STRUCTURE: [&str; 6] = [
        "mapping values are not allowed",
        "did not find expected",
        "while parsing a block",
        "block sequence entries are not allowed",
        "could not find expected ':'",
        "invalid indentation",
    ];
    let lower = message.to_lowercase();
    if let Some(m) = suggest(&message) {
        return m;
    }
    if STRUCTURE.iter().any(|s| lower.contains(s)) {
        format!(
            "{message} (check the indentation here and on the lines above: items of a list start with `- ` \
             and keys of one mapping line up in the same column)"
        )
    } else {
        message
    }
}

/// serde's "unknown field `x`, expected one of a, b" (or "unknown variant"), plus the near
/// miss among the names it lists, if there is one.
fn suggest(message: &str) -> Option<String> {
    let rest = message
        .strip_prefix("unknown field `")
        .or_else(|| message.strip_prefix("unknown variant `"))?;
    let (name, rest) = rest.split_once('`')?;
    let list = rest.split_once("expected ")?.1;
    let list = list.trim_start_matches("one of ").replace('`', "");
    let known: Vec<&str> = list
        .split(", ")
        .flat_map(|p| p.split(" or "))
        .map(str::trim)
        .collect();
    let near = super::kubevirt_schema::did_you_mean(name, &known)?;
    Some(format!("{message} (did you mean `{near}`?)"))
}

/// Up to two lines before the error line, the line itself, and a caret under the column.
fn snippet(source: &str, span: Span) -> String {
    let lines: Vec<&str> = source.lines().collect();
    let idx = (span.line as usize).saturating_sub(1);
    if idx >= lines.len() {
        return String::new();
    }
    let width = (idx + 1).to_string().len();
    let mut out = String::new();
    for (i, line) in lines
        .iter()
        .enumerate()
        .take(idx + 1)
        .skip(idx.saturating_sub(2))
    {
        out.push_str(&format!("{:>width$} | {}\n", i + 1, line));
    }
    let caret_col = (span.column as usize).max(1) - 1;
    out.push_str(&format!("{:>width$} | {}^", "", " ".repeat(caret_col)));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_names_get_the_near_miss() {
        assert_eq!(
            with_hint("unknown variant `vfioBnd`, expected one of vfioBind, write".into()),
            "unknown variant `vfioBnd`, expected one of vfioBind, write (did you mean `vfioBind`?)"
        );
        assert_eq!(
            with_hint("unknown field `zzz`, expected `a` or `b`".into()),
            "unknown field `zzz`, expected `a` or `b`"
        );
    }

    #[test]
    fn snippet_points_at_the_column() {
        let s = snippet("a: 1\nb: 2\nc: x\n", Span { line: 3, column: 4 });
        assert_eq!(s, "1 | a: 1\n2 | b: 2\n3 | c: x\n  |    ^");
    }
}
