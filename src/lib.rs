//! Polis, the binary's library half: configuration and the wiring of the tiers into one platform.
//!
//! No business logic lives here. [`config`] loads the layered configuration; [`platform`] opens
//! the embedded log (or connects to the Kafka cluster of `broker.external`), creates the topics
//! and starts the gateway, analytics and dashboard tiers, and shuts them down in data-flow order.

pub mod config;
pub mod platform;

pub use config::PolisConfig;
pub use platform::Platform;
