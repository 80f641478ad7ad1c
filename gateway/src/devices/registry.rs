//! The devices file: `{data_dir}/devices.json`, read freely, changed under a lock.
//!
//! Format: `{"version": 1, "devices": [{"id", "kind", "district", "secret_hash", "added_at"}]}`,
//! devices sorted by id. Every change takes an exclusive lock on `devices.json.lock`, reads the
//! file, writes the new content to `devices.json.tmp`, fsyncs it, renames it over
//! `devices.json` and fsyncs the folder: readers see the old file or the new one, never a mix.
//! Secrets are hashed before the lock is taken, so a large import does not hold it for long.

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File, OpenOptions};
use std::io::{BufWriter, ErrorKind, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use polis_telemetry::DeviceTopic;
use serde::{Deserialize, Serialize};

use super::device::{Device, NewDevice, check_name};
use super::error::{ImportProblem, RegistryError};
use super::{import, secret};

const FILE_NAME: &str = "devices.json";
const FORMAT_VERSION: u32 = 1;

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct DevicesFile {
    version: u32,
    devices: Vec<Device>,
}

/// Registered devices by id.
pub(crate) type Devices = BTreeMap<String, Device>;

/// What [`DeviceRegistry::provision`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Provisioned {
    /// Devices that were not registered.
    pub added: usize,
    /// Registered devices whose kind or secret differed, now given the shared secret.
    pub updated: usize,
    /// Registered devices that already had this kind and secret.
    pub unchanged: usize,
}

/// The devices file of one data dir.
#[derive(Debug, Clone)]
pub struct DeviceRegistry {
    path: PathBuf,
}

impl DeviceRegistry {
    /// The registry kept in `data_dir` (the file need not exist yet).
    pub fn in_data_dir(data_dir: &Path) -> DeviceRegistry {
        DeviceRegistry {
            path: data_dir.join(FILE_NAME),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Every registered device, sorted by id; none when the file does not exist.
    pub fn load(&self) -> Result<Vec<Device>, RegistryError> {
        Ok(self.read()?.into_values().collect())
    }

    /// Registers one device; fails if its id is taken.
    pub fn add(&self, new: NewDevice) -> Result<Device, RegistryError> {
        let device = prepare(new, Utc::now())?;
        self.update(|devices| {
            if devices.contains_key(&device.id) {
                return Err(RegistryError::Duplicate(device.id.clone()));
            }
            devices.insert(device.id.clone(), device.clone());
            Ok(device)
        })
    }

    /// Unregisters one device and returns it; the gateway refuses its next CONNECT.
    pub fn remove(&self, id: &str) -> Result<Device, RegistryError> {
        self.update(|devices| {
            devices
                .remove(id)
                .ok_or_else(|| RegistryError::Unknown(id.to_string()))
        })
    }

    /// Registers every device of a CSV file with the columns `id,kind,district,secret` (header
    /// line first) and returns how many. If any row is bad, or names a device that is already
    /// registered, nothing is registered and every bad row is reported with its line number.
    pub fn import_csv(&self, csv: &Path) -> Result<usize, RegistryError> {
        let bytes = fs::read(csv).map_err(|source| RegistryError::Io {
            action: "read",
            path: csv.to_path_buf(),
            source,
        })?;
        let refuse = |problems| RegistryError::Import {
            path: csv.to_path_buf(),
            problems,
        };
        let (rows, mut problems) = import::parse(&bytes);
        problems.extend(already_registered(&rows, &self.read()?));
        if !problems.is_empty() {
            problems.sort_by_key(|p| p.line);
            return Err(refuse(problems));
        }
        let now = Utc::now();
        let prepared = rows
            .into_iter()
            .map(|(line, new)| Ok((line, prepare(new, now)?)))
            .collect::<Result<Vec<_>, RegistryError>>()?;
        self.update(|devices| {
            let taken: Vec<ImportProblem> = prepared
                .iter()
                .filter(|(_, d)| devices.contains_key(&d.id))
                .map(|(line, d)| taken_problem(*line, &d.id))
                .collect();
            if !taken.is_empty() {
                return Err(refuse(taken));
            }
            let count = prepared.len();
            devices.extend(prepared.into_iter().map(|(_, d)| (d.id.clone(), d)));
            Ok(count)
        })
    }

    /// Makes sure every device of `devices` is registered with its kind and the one `secret`
    /// they share (a simulated fleet). The secret is hashed once for all of them.
    pub fn provision(
        &self,
        devices: &[DeviceTopic],
        secret: &str,
    ) -> Result<Provisioned, RegistryError> {
        for device in devices {
            check_name("device id", &device.device_id)?;
            check_name("district", &device.district)?;
        }
        let shared_hash = secret::hash(secret)?;
        let now = Utc::now();
        self.update(|registered| {
            let mut matches: HashMap<String, bool> = HashMap::new();
            let mut report = Provisioned::default();
            for topic in devices {
                let current = registered.get(&topic.device_id).map(|d| {
                    d.kind == topic.kind
                        && *matches
                            .entry(d.secret_hash.clone())
                            .or_insert_with(|| secret::verify(secret, &d.secret_hash))
                });
                match current {
                    Some(true) => {
                        report.unchanged += 1;
                        continue;
                    }
                    Some(false) => report.updated += 1,
                    None => report.added += 1,
                }
                registered.insert(
                    topic.device_id.clone(),
                    Device {
                        id: topic.device_id.clone(),
                        kind: topic.kind,
                        district: topic.district.clone(),
                        secret_hash: shared_hash.clone(),
                        added_at: now,
                    },
                );
            }
            Ok(report)
        })
    }

    /// The registered devices by id; none when the file does not exist.
    pub(crate) fn read(&self) -> Result<Devices, RegistryError> {
        let bytes = match fs::read(&self.path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Devices::new()),
            Err(source) => return Err(self.io("read", source)),
        };
        let corrupt = |reason: String| RegistryError::Corrupt {
            path: self.path.clone(),
            reason,
        };
        let file: DevicesFile =
            serde_json::from_slice(&bytes).map_err(|e| corrupt(e.to_string()))?;
        if file.version != FORMAT_VERSION {
            return Err(corrupt(format!(
                "format version {} is not the supported {FORMAT_VERSION}",
                file.version
            )));
        }
        let mut devices = Devices::new();
        for device in file.devices {
            if let Some(twice) = devices.insert(device.id.clone(), device) {
                return Err(corrupt(format!("device `{}` is listed twice", twice.id)));
            }
        }
        Ok(devices)
    }

    /// Applies `change` to the registered devices under the lock, and stores the result if it
    /// differs.
    fn update<T>(
        &self,
        change: impl FnOnce(&mut Devices) -> Result<T, RegistryError>,
    ) -> Result<T, RegistryError> {
        let dir = self.path.parent().unwrap_or(Path::new("."));
        fs::create_dir_all(dir).map_err(|source| RegistryError::Io {
            action: "create",
            path: dir.to_path_buf(),
            source,
        })?;
        let lock_path = self.path.with_extension("json.lock");
        let lock = File::create(&lock_path).map_err(|source| RegistryError::Io {
            action: "create",
            path: lock_path.clone(),
            source,
        })?;
        lock.lock().map_err(|source| RegistryError::Io {
            action: "lock",
            path: lock_path,
            source,
        })?;
        let mut devices = self.read()?;
        let before = devices.clone();
        let outcome = change(&mut devices)?;
        if devices != before {
            self.write(devices.into_values().collect(), dir)?;
        }
        Ok(outcome)
    }

    fn write(&self, devices: Vec<Device>, dir: &Path) -> Result<(), RegistryError> {
        let tmp = self.path.with_extension("json.tmp");
        let tmp_io = |action| {
            let tmp = tmp.clone();
            move |source| RegistryError::Io {
                action,
                path: tmp,
                source,
            }
        };
        // A temp file left by a crash may have other permissions: start from a new one.
        match fs::remove_file(&tmp) {
            Err(e) if e.kind() != ErrorKind::NotFound => return Err(tmp_io("remove")(e)),
            _ => {}
        }
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(tmp_io("create"))?;
        let mut out = BufWriter::new(file);
        let content = DevicesFile {
            version: FORMAT_VERSION,
            devices,
        };
        serde_json::to_writer_pretty(&mut out, &content)
            .map_err(std::io::Error::from)
            .and_then(|()| out.write_all(b"\n"))
            .map_err(tmp_io("write"))?;
        let file = out
            .into_inner()
            .map_err(|e| tmp_io("write")(e.into_error()))?;
        file.sync_all().map_err(tmp_io("fsync"))?;
        fs::rename(&tmp, &self.path).map_err(|source| self.io("replace", source))?;
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|source| RegistryError::Io {
                action: "fsync",
                path: dir.to_path_buf(),
                source,
            })
    }

    fn io(&self, action: &'static str, source: std::io::Error) -> RegistryError {
        RegistryError::Io {
            action,
            path: self.path.clone(),
            source,
        }
    }
}

/// Checks a new device's names and hashes its secret.
fn prepare(new: NewDevice, now: DateTime<Utc>) -> Result<Device, RegistryError> {
    check_name("device id", &new.id)?;
    check_name("district", &new.district)?;
    Ok(Device {
        secret_hash: secret::hash(&new.secret)?,
        id: new.id,
        kind: new.kind,
        district: new.district,
        added_at: now,
    })
}

fn already_registered(rows: &[(u64, NewDevice)], devices: &Devices) -> Vec<ImportProblem> {
    rows.iter()
        .filter(|(_, new)| devices.contains_key(&new.id))
        .map(|(line, new)| taken_problem(*line, &new.id))
        .collect()
}

fn taken_problem(line: u64, id: &str) -> ImportProblem {
    ImportProblem {
        line,
        message: format!("device `{id}` is already registered (`polis devices remove {id}` first)"),
    }
}

#[cfg(test)]
mod tests {
    use polis_telemetry::DeviceKind;

    use super::*;

    fn new(id: &str, secret: &str) -> NewDevice {
        NewDevice {
            id: id.into(),
            kind: DeviceKind::Energy,
            district: "harbour".into(),
            secret: secret.into(),
        }
    }

    #[test]
    fn devices_are_stored_with_a_hash_that_never_equals_the_secret() {
        let dir = tempfile::tempdir().unwrap();
        let registry = DeviceRegistry::in_data_dir(dir.path());
        assert_eq!(registry.load().unwrap(), vec![]);
        let secret = "a-secret-of-enough-length";
        let added = registry.add(new("em-1", secret)).unwrap();
        assert_ne!(added.secret_hash, secret);
        assert!(secret::verify(secret, &added.secret_hash));
        let text = fs::read_to_string(registry.path()).unwrap();
        assert!(!text.contains(secret), "{text}");
        assert_eq!(registry.load().unwrap(), vec![added]);
    }

    #[test]
    fn duplicates_and_unknown_ids_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let registry = DeviceRegistry::in_data_dir(dir.path());
        registry
            .add(new("em-1", "a-secret-of-enough-length"))
            .unwrap();
        let err = registry
            .add(new("em-1", "another-secret-long-enough"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("`em-1` is already registered"), "{err}");
        let err = registry.remove("em-2").unwrap_err().to_string();
        assert!(err.contains("no device `em-2`"), "{err}");
        assert_eq!(registry.remove("em-1").unwrap().id, "em-1");
        assert_eq!(registry.load().unwrap(), vec![]);
    }

    #[test]
    fn the_file_is_replaced_whole_and_a_leftover_temp_file_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let registry = DeviceRegistry::in_data_dir(dir.path());
        registry
            .add(new("em-1", "a-secret-of-enough-length"))
            .unwrap();
        let before = fs::metadata(registry.path()).unwrap();
        // A crash between writing the temp file and renaming it leaves only the temp file.
        fs::write(
            registry.path().with_extension("json.tmp"),
            b"{\"version\": 1, \"devi",
        )
        .unwrap();
        assert_eq!(registry.load().unwrap().len(), 1);
        registry
            .add(new("em-2", "a-secret-of-enough-length"))
            .unwrap();
        let after = fs::metadata(registry.path()).unwrap();
        assert_ne!(
            std::os::unix::fs::MetadataExt::ino(&before),
            std::os::unix::fs::MetadataExt::ino(&after),
            "a new file is renamed into place, never rewritten in place"
        );
        assert!(!registry.path().with_extension("json.tmp").exists());
        assert_eq!(registry.load().unwrap().len(), 2);
        let mode = std::os::unix::fs::PermissionsExt::mode(&after.permissions());
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn an_import_registers_every_row_or_none() {
        let dir = tempfile::tempdir().unwrap();
        let registry = DeviceRegistry::in_data_dir(dir.path());
        registry
            .add(new("em-1", "a-secret-of-enough-length"))
            .unwrap();
        let csv = dir.path().join("devices.csv");
        fs::write(
            &csv,
            "id,kind,district,secret\n\
             em-2,energy,harbour,secret-of-em-2-long\n\
             em-1,energy,harbour,secret-of-em-1-again\n\
             em-3,energy,harbour,short\n",
        )
        .unwrap();
        let err = registry.import_csv(&csv).unwrap_err();
        let RegistryError::Import { problems, .. } = &err else {
            panic!("{err}");
        };
        let lines: Vec<u64> = problems.iter().map(|p| p.line).collect();
        assert_eq!(lines, [3, 4], "{err}");
        assert!(err.to_string().contains("nothing was imported"), "{err}");
        assert_eq!(registry.load().unwrap().len(), 1, "nothing was registered");

        fs::write(
            &csv,
            "id,kind,district,secret\n\
             em-2,energy,harbour,secret-of-em-2-long\n\
             tc-3,traffic,old-town,secret-of-tc-3-long\n",
        )
        .unwrap();
        assert_eq!(registry.import_csv(&csv).unwrap(), 2);
        let ids: Vec<String> = registry.load().unwrap().into_iter().map(|d| d.id).collect();
        assert_eq!(ids, ["em-1", "em-2", "tc-3"]);
    }

    #[test]
    fn a_damaged_file_is_reported_and_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let registry = DeviceRegistry::in_data_dir(dir.path());
        fs::write(registry.path(), b"[not json").unwrap();
        let err = registry
            .add(new("em-1", "a-secret-of-enough-length"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("is not a valid devices file"), "{err}");
        assert_eq!(fs::read(registry.path()).unwrap(), b"[not json");
    }

    #[test]
    fn provisioning_a_fleet_is_idempotent_and_repairs_secrets() {
        let dir = tempfile::tempdir().unwrap();
        let registry = DeviceRegistry::in_data_dir(dir.path());
        let fleet: Vec<DeviceTopic> = (1..=3)
            .map(|i| DeviceTopic {
                district: "harbour".into(),
                kind: DeviceKind::Traffic,
                device_id: format!("tc-{i}"),
            })
            .collect();
        let secret = "the-demo-secret-for-all";
        let first = registry.provision(&fleet, secret).unwrap();
        assert_eq!((first.added, first.updated, first.unchanged), (3, 0, 0));
        let modified = fs::metadata(registry.path()).unwrap().modified().unwrap();
        let again = registry.provision(&fleet, secret).unwrap();
        assert_eq!((again.added, again.updated, again.unchanged), (0, 0, 3));
        assert_eq!(
            fs::metadata(registry.path()).unwrap().modified().unwrap(),
            modified,
            "an unchanged registry is not rewritten"
        );
        let other = registry
            .provision(&fleet[..1], "another-demo-secret")
            .unwrap();
        assert_eq!((other.added, other.updated, other.unchanged), (0, 1, 0));
        assert!(
            registry
                .load()
                .unwrap()
                .iter()
                .all(|d| secret::verify(secret, &d.secret_hash) != (d.id == "tc-1"))
        );
    }
}
