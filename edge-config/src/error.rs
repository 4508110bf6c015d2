//! The one error a config load can end in: a list of problems, each with the path of the
//! key at fault, so an operator fixes them all in one edit instead of one per restart.

use std::fmt;

/// A config that could not be read, parsed or validated.
///
/// The fault is always the operator's config (or the file system under it): retrying with
/// the same input gives the same answer. `Display` prints every problem, one per line, as
/// `path: message`; callers add which file they were loading.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", render(.problems))]
#[non_exhaustive]
pub struct ConfigError {
    /// Every problem found, in the order of the keys they concern. Never empty.
    pub problems: Vec<Problem>,
}

/// One thing wrong with a config.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Problem {
    /// Where: a dotted key path (`store.segment_bytes`), a position in the text for
    /// syntax errors (`line 4, column 17`), or a file path when it could not be read.
    pub path: String,
    /// What is wrong and, where it helps, what would be accepted.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

fn render(problems: &[Problem]) -> String {
    let lines: Vec<String> = problems.iter().map(Problem::to_string).collect();
    lines.join("\n")
}

impl ConfigError {
    /// An error holding a single problem.
    pub(crate) fn single(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            problems: vec![Problem {
                path: path.into(),
                message: message.into(),
            }],
        }
    }

    /// Turns a TOML syntax or shape error into a problem located by line and column.
    ///
    /// Serde stops at the first such error, so this is the one case that reports a single
    /// problem; everything after parsing is collected by [`Problems`].
    pub(crate) fn from_toml(text: &str, error: &toml::de::Error) -> Self {
        let path = error
            .span()
            .and_then(|span| line_column(text, span.start))
            .map_or_else(
                || "config".to_owned(),
                |(line, column)| format!("line {line}, column {column}"),
            );
        Self::single(path, error.message().trim_end())
    }
}

/// 1-based line and column (in characters) of byte `offset`, or `None` if it is not a
/// character boundary of `text`.
fn line_column(text: &str, offset: usize) -> Option<(usize, usize)> {
    let before = text.get(..offset)?;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let line = before.matches('\n').count() + 1;
    let column = before.get(line_start..)?.chars().count() + 1;
    Some((line, column))
}

/// Collects problems while a raw config is compiled, so that all of them are reported.
#[derive(Debug, Default)]
pub(crate) struct Problems {
    problems: Vec<Problem>,
}

impl Problems {
    pub(crate) fn push(&mut self, path: &str, message: impl Into<String>) {
        self.problems.push(Problem {
            path: path.to_owned(),
            message: message.into(),
        });
    }

    /// `value` if nothing was pushed, else every problem pushed.
    pub(crate) fn finish<T>(self, value: T) -> Result<T, ConfigError> {
        if self.problems.is_empty() {
            Ok(value)
        } else {
            Err(ConfigError {
                problems: self.problems,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_lists_every_problem_on_its_own_line() {
        let mut problems = Problems::default();
        problems.push("store.segment_bytes", "512 is below the minimum of 65536");
        problems.push("listen", "port 70000 out of range");
        let error = problems.finish(()).expect_err("two problems were pushed");
        assert_eq!(
            error.to_string(),
            "store.segment_bytes: 512 is below the minimum of 65536\nlisten: port 70000 out of range"
        );
    }

    #[test]
    fn no_problems_is_ok() {
        assert_eq!(Problems::default().finish(7), Ok(7));
    }

    #[test]
    fn line_column_counts_characters_from_one() {
        let text = "a = 1\nbé = 2\n";
        assert_eq!(line_column(text, 0), Some((1, 1)));
        assert_eq!(line_column(text, 6), Some((2, 1)));
        // "é" is two bytes but one column.
        assert_eq!(line_column(text, 9), Some((2, 3)));
        assert_eq!(line_column(text, 8), None, "inside a character");
        assert_eq!(line_column(text, 100), None, "past the end");
    }
}
