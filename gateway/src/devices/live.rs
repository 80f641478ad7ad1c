//! The registry as the running gateway sees it: an in-memory copy, re-read when the file changed.
//!
//! Each look-up checks the file's metadata (one `stat`, no read) and re-reads the file only when
//! its inode, size or modification time differ from the copy's. The CLI replaces the file by
//! renaming a new one over it, so every change gives it a new inode: a device added by
//! `polis devices add` can connect at once, and a removed one is refused at its next CONNECT.

use std::fs;
use std::io::ErrorKind;
use std::os::unix::fs::MetadataExt;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use super::device::Device;
use super::error::RegistryError;
use super::registry::{DeviceRegistry, Devices};

/// What identifies one version of the devices file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Fingerprint {
    inode: u64,
    len: u64,
    modified: SystemTime,
}

struct Snapshot {
    /// `None` when the file did not exist.
    fingerprint: Option<Fingerprint>,
    devices: Arc<Devices>,
}

pub struct LiveDevices {
    registry: DeviceRegistry,
    snapshot: Mutex<Snapshot>,
}

impl LiveDevices {
    /// Reads the registry once; a registry that cannot be read is an error here, at start-up.
    pub fn open(registry: DeviceRegistry) -> Result<LiveDevices, RegistryError> {
        let fingerprint = fingerprint(&registry)?;
        let devices = Arc::new(registry.read()?);
        Ok(LiveDevices {
            registry,
            snapshot: Mutex::new(Snapshot {
                fingerprint,
                devices,
            }),
        })
    }

    /// How many devices the current copy holds.
    pub fn len(&self) -> usize {
        self.current().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The device registered as `id`, if any.
    pub fn get(&self, id: &str) -> Option<Device> {
        self.current().get(id).cloned()
    }

    /// The current copy, re-read first if the file changed. A file that has become unreadable
    /// is logged once per version and the previous copy kept, so a bad hand edit does not lock
    /// every device out.
    fn current(&self) -> Arc<Devices> {
        let mut snapshot = self.snapshot.lock().expect("registry snapshot lock");
        let now = match fingerprint(&self.registry) {
            Ok(now) => now,
            Err(e) => {
                tracing::error!(error = %e, "cannot check the devices file; using the devices read before");
                return snapshot.devices.clone();
            }
        };
        if now != snapshot.fingerprint {
            snapshot.fingerprint = now;
            match self.registry.read() {
                Ok(devices) => {
                    tracing::info!(devices = devices.len(), path = %self.registry.path().display(), "device registry reloaded");
                    snapshot.devices = Arc::new(devices);
                }
                Err(e) => {
                    tracing::error!(error = %e, "cannot reload the devices file; using the devices read before");
                }
            }
        }
        snapshot.devices.clone()
    }
}

fn fingerprint(registry: &DeviceRegistry) -> Result<Option<Fingerprint>, RegistryError> {
    match fs::metadata(registry.path()) {
        Ok(meta) => Ok(Some(Fingerprint {
            inode: meta.ino(),
            len: meta.len(),
            modified: meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
        })),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(source) => Err(RegistryError::Io {
            action: "check",
            path: registry.path().to_path_buf(),
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use polis_telemetry::DeviceKind;

    use super::*;
    use crate::devices::NewDevice;

    fn new(id: &str) -> NewDevice {
        NewDevice {
            id: id.into(),
            kind: DeviceKind::Transport,
            district: "old-town".into(),
            secret: "a-secret-of-enough-length".into(),
        }
    }

    #[test]
    fn sees_devices_added_and_removed_after_it_opened() {
        let dir = tempfile::tempdir().unwrap();
        let registry = DeviceRegistry::in_data_dir(dir.path());
        let live = LiveDevices::open(registry.clone()).unwrap();
        assert!(live.is_empty());
        registry.add(new("bus-1")).unwrap();
        assert_eq!(live.get("bus-1").unwrap().kind, DeviceKind::Transport);
        registry.add(new("bus-2")).unwrap();
        registry.remove("bus-1").unwrap();
        assert!(live.get("bus-1").is_none());
        assert_eq!(live.len(), 1);
    }

    #[test]
    fn keeps_the_last_good_copy_when_the_file_goes_bad() {
        let dir = tempfile::tempdir().unwrap();
        let registry = DeviceRegistry::in_data_dir(dir.path());
        registry.add(new("bus-1")).unwrap();
        let live = LiveDevices::open(registry.clone()).unwrap();
        let tmp = dir.path().join("replacement");
        fs::write(&tmp, b"{ broken").unwrap();
        fs::rename(&tmp, registry.path()).unwrap();
        assert!(live.get("bus-1").is_some());
        assert!(
            LiveDevices::open(registry).is_err(),
            "but a bad file stops a start"
        );
    }
}
