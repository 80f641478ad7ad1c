//! Errors of the dashboard, classified so the caller can act on them.

use polis_broker::LogError;

#[derive(Debug, thiserror::Error)]
pub enum DashboardError {
    /// The configuration is invalid; every problem names its key. A user error: fix the config.
    #[error("invalid dashboard configuration: {}", .0.join("; "))]
    Config(Vec<String>),
    /// The `metrics` topic cannot be read (for example it does not exist yet).
    #[error("the dashboard cannot read the `metrics` topic: {0}")]
    Log(#[from] LogError),
    /// A message for viewers could not be encoded as JSON (an internal error).
    #[error("could not encode a dashboard message: {0}")]
    Encode(#[source] serde_json::Error),
    /// A chart or report could not be drawn or encoded (an internal error, or an empty period).
    #[error("could not render {0}")]
    Render(String),
    /// The HTTP server stopped with an I/O error.
    #[error("the dashboard HTTP server failed: {0}")]
    Serve(#[source] std::io::Error),
}
