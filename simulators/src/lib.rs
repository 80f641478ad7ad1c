//! Polis simulators: the traffic counters, electricity meters and buses of a fictional city, and
//! the MQTT load generator that runs them.
//!
//! This crate owns the city model ([`city`]: districts and transit routes), one model per device
//! kind ([`traffic`], [`energy`], [`transport`]) and the load generator ([`run`]). Nothing enters
//! it but a [`SimulatorConfig`] and the clock. Data leaves it in one way: each device opens its own
//! MQTT 3.1.1 connection (client id = device id) and publishes FIWARE JSON payloads to
//! `city/{district}/{kind}/{device_id}` once per interval. [`fleet`] builds the same devices
//! without any network, for tests and tools that only need payloads.
//!
//! Every model is deterministic for a given seed and sequence of observation times, and every
//! payload it produces passes [`polis_telemetry::Validator`].

pub mod city;
mod config;
pub mod energy;
mod error;
mod fleet;
pub mod geo;
mod run;
mod stats;
pub mod traffic;
pub mod transport;

mod backoff;
mod daily;
mod link;
mod sample;

pub use config::SimulatorConfig;
pub use error::SimulatorError;
pub use fleet::{Device, fleet};
pub use run::run;
pub use stats::SimulationStats;
