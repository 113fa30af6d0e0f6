//! Errors in a configuration file, placed at their line and column.

use std::fmt;

/// One problem in a configuration file, located where possible.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub line: Option<usize>,
    pub column: Option<usize>,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.line, self.column) {
            (Some(l), Some(c)) => write!(f, "line {l}, column {c}: {}", self.message),
            _ => f.write_str(&self.message),
        }
    }
}

pub(super) fn line_and_column(text: &str, offset: usize) -> (Option<usize>, Option<usize>) {
    let mut end = offset.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let before = &text[..end];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (Some(line), Some(column))
}

/// An error about `section.key`, placed at the key's line when the file sets it.
pub(super) fn located(text: &str, section: &str, key: &str, message: &str) -> ConfigError {
    let mut current = "";
    let mut offset = 0;
    let mut found = None;
    for line in text.split_inclusive('\n') {
        let trimmed = line.trim();
        if let Some(name) = trimmed.strip_prefix('[').and_then(|t| t.strip_suffix(']')) {
            current = name.trim();
        } else if let Some((k, _)) = trimmed.split_once('=') {
            let k = k.trim();
            let dotted = format!("{section}.{key}");
            if (current == section && k == key) || (current.is_empty() && k == dotted) {
                found = Some(offset + (line.len() - line.trim_start().len()));
            }
        }
        offset += line.len();
    }
    let (line, column) = found.map_or((None, None), |o| line_and_column(text, o));
    ConfigError {
        line,
        column,
        message: message.to_owned(),
    }
}
