//! What can stop the simulators from starting.

/// Why [`crate::run`] refused to start. Once running, connection failures are retried per device
/// and counted in [`crate::SimulationStats::errors`], never returned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SimulatorError {
    /// The configuration has problems; each entry names its key and what would be right.
    #[error("invalid [simulate] configuration: {}", .0.join("; "))]
    InvalidConfig(Vec<String>),
}
