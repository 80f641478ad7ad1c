//! Registry errors: what was wrong, and what would be right.

use std::fmt;
use std::path::PathBuf;

use super::secret::{MAX_SECRET_LEN, MIN_SECRET_LEN};

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error(
        "{what} `{value}` is not valid: use 1-64 characters of A-Z, a-z, 0-9, '-' or '_' (it becomes part of MQTT topics)"
    )]
    InvalidName { what: &'static str, value: String },
    #[error(
        "a secret of {len} characters is not accepted: use {MIN_SECRET_LEN} to {MAX_SECRET_LEN} characters, or let Polis generate one"
    )]
    SecretLength { len: usize },
    #[error(
        "device `{0}` is already registered: remove it first (`polis devices remove {0}`) or choose another id"
    )]
    Duplicate(String),
    #[error("no device `{0}` is registered: `polis devices list` shows the registered ones")]
    Unknown(String),
    #[error("nothing was imported from {path}: {} bad row(s)\n{}", .problems.len(), Lines(.problems))]
    Import {
        path: PathBuf,
        problems: Vec<ImportProblem>,
    },
    #[error("cannot {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{path} is not a valid devices file ({reason}): restore it from a backup, or move it away to start with no devices"
    )]
    Corrupt { path: PathBuf, reason: String },
    #[error("cannot hash the secret: {0}")]
    Hash(String),
}

/// One bad row of an imported CSV file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportProblem {
    /// 1-based line number in the file.
    pub line: u64,
    pub message: String,
}

impl fmt::Display for ImportProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

/// Problems one per line, indented.
struct Lines<'a>(&'a [ImportProblem]);

impl fmt::Display for Lines<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let lines: Vec<String> = self.0.iter().map(|p| format!("  - {p}")).collect();
        f.write_str(&lines.join("\n"))
    }
}
