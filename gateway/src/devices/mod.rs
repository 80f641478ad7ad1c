//! The device registry: which devices may connect, and with which secret.
//!
//! Devices live in one JSON file, `{data_dir}/devices.json` ([`DeviceRegistry`]), replaced
//! atomically under an exclusive lock so that concurrent `polis devices` commands never lose an
//! update and a crash never leaves half a file. Secrets are never stored, only their Argon2id
//! hashes ([`secret`]). The running gateway reads the file through [`LiveDevices`], which keeps
//! an in-memory copy and re-reads the file only when it has changed.

mod device;
mod error;
mod import;
mod live;
mod registry;
pub mod secret;
mod table;

pub use device::{Device, NewDevice};
pub use error::{ImportProblem, RegistryError};
pub use live::LiveDevices;
pub use registry::{DeviceRegistry, Provisioned};
pub use table::render_table;
