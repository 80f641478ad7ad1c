//! Replacing a small state file so that a crash leaves either the old or the new contents.

use std::fs::{self, File};
use std::io::Write;
use std::path::Path;

use crate::error::LogError;

/// Writes `bytes` to a temporary file beside `path`, fsyncs it, renames it over `path` and fsyncs
/// the directory.
pub(crate) fn replace(path: &Path, bytes: &[u8]) -> Result<(), LogError> {
    let tmp = path.with_extension("tmp");
    let mut file = File::create(&tmp).map_err(LogError::io(&tmp))?;
    file.write_all(bytes)
        .and_then(|_| file.sync_all())
        .map_err(LogError::io(&tmp))?;
    fs::rename(&tmp, path).map_err(LogError::io(path))?;
    let dir = path.parent().unwrap_or(Path::new("."));
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(LogError::io(dir))
}
