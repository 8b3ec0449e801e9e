//! Persistent daemon state under the root directory (`/var/lib/uvlan` by default).
//!
//! # Layout
//! ```text
//! ROOT/host.json              the host ID (seeds the IPv6 ULA default pool, as Docker's)
//! ROOT/networks/<ID>.json     one network: its request, allocation, driver config and
//!                             endpoints (everything needed to rebuild it after a restart)
//! ROOT/daemon.lock            flock(2)ed by the running daemon: one daemon per root
//! ```
//!
//! # Atomicity
//! Every file is replaced atomically: written to `NAME.tmp` in the same directory, fsynced,
//! renamed over `NAME`, and the directory fsynced. A crash leaves either the old or the new
//! file, never a torn one; a leftover `*.tmp` is the trace of an interrupted write (its
//! rename never happened) and is removed, with a log line, when the store is loaded.
//!
//! # Corruption
//! A file that cannot be read or parsed, or whose content contradicts its name, is a
//! [`StoreError::Corrupt`] naming the file. Nothing is ever dropped silently: the daemon
//! refuses to start until the file is repaired or removed.

mod records;

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::Serialize;

pub use records::{
    AutoRemove, DriverConfig, EndpointRecord, HostRecord, Managed, NetworkRecord, ParentRef,
    ReservedEndpoint, RECORD_VERSION,
};

/// Errors of the state store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A state file exists but cannot be used.
    #[error(
        "state file {path} is corrupt: {detail}; repair it or move it away, then start the \
         daemon again (nothing was changed)"
    )]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        detail: String,
    },
    /// An I/O operation on the state directory failed.
    #[error("cannot {op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// Another daemon holds the root directory.
    #[error(
        "another uvlan daemon already uses the state directory {root} (it holds {lock}): stop \
         it first, or give this one its own --root"
    )]
    Locked {
        /// The root directory.
        root: PathBuf,
        /// The lock file.
        lock: PathBuf,
    },
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> StoreError + 'a {
    move |source| StoreError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// Writes `bytes` to `path` atomically: temp file in the same directory, fsync, rename,
/// fsync of the directory. The file gets mode 0600.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
    tmp_name.push(".tmp");
    let tmp = dir.join(tmp_name);
    {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io_err("create", &tmp))?;
        f.write_all(bytes).map_err(io_err("write", &tmp))?;
        f.sync_all().map_err(io_err("fsync", &tmp))?;
    }
    fs::rename(&tmp, path).map_err(|e| {
        let _ = fs::remove_file(&tmp);
        StoreError::Io {
            op: "rename a temporary file onto",
            path: path.to_path_buf(),
            source: e,
        }
    })?;
    sync_dir(dir)
}

fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("fsync directory", dir))
}

/// Serializes `value` as pretty JSON and writes it with [`write_atomic`].
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), StoreError> {
    let mut bytes = serde_json::to_vec_pretty(value).map_err(|e| StoreError::Io {
        op: "serialize state for",
        path: path.to_path_buf(),
        source: io::Error::other(e),
    })?;
    bytes.push(b'\n');
    write_atomic(path, &bytes)
}

/// Reads and parses a JSON state file; any failure is [`StoreError::Corrupt`] naming it.
pub fn read_json<T: DeserializeOwned>(path: &Path) -> Result<T, StoreError> {
    let bytes = fs::read(path).map_err(|e| StoreError::Corrupt {
        path: path.to_path_buf(),
        detail: format!("cannot read it: {e}"),
    })?;
    serde_json::from_slice(&bytes).map_err(|e| StoreError::Corrupt {
        path: path.to_path_buf(),
        detail: format!("invalid JSON for this record: {e}"),
    })
}

/// The state directory of one daemon.
#[derive(Debug)]
pub struct Store {
    root: PathBuf,
}

/// Holds the root directory's lock until dropped.
#[derive(Debug)]
pub struct StoreLock {
    _file: File,
}

impl Store {
    /// Opens (creating if needed, mode 0700) the state directory `root`.
    pub fn open(root: &Path) -> Result<Store, StoreError> {
        let nets = root.join("networks");
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&nets)
            .map_err(io_err("create the state directory", &nets))?;
        Ok(Store {
            root: root.to_path_buf(),
        })
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Takes the exclusive lock on the root (`ROOT/daemon.lock`, `flock(LOCK_EX|LOCK_NB)`).
    pub fn lock(&self) -> Result<StoreLock, StoreError> {
        let path = self.root.join("daemon.lock");
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(io_err("open", &path))?;
        let locked = crate::sys::try_lock_exclusive(std::os::fd::AsFd::as_fd(&file));
        if !matches!(locked, Ok(true)) {
            let Err(e) = locked else {
                return Err(StoreError::Locked {
                    root: self.root.clone(),
                    lock: path,
                });
            };
            return Err(StoreError::Io {
                op: "lock",
                path,
                source: e,
            });
        }
        Ok(StoreLock { _file: file })
    }

    fn network_path(&self, id: &str) -> PathBuf {
        self.root.join("networks").join(format!("{id}.json"))
    }

    /// Reads the host record, creating it with `make()` the first time.
    pub fn load_or_init_host(
        &self,
        make: impl FnOnce() -> io::Result<HostRecord>,
    ) -> Result<HostRecord, StoreError> {
        let path = self.root.join("host.json");
        if path.exists() {
            let rec: HostRecord = read_json(&path)?;
            rec.check().map_err(|detail| StoreError::Corrupt {
                path: path.clone(),
                detail,
            })?;
            return Ok(rec);
        }
        let rec = make().map_err(io_err("generate a host ID for", &path))?;
        write_json(&path, &rec)?;
        Ok(rec)
    }

    /// Every stored network, sorted by creation sequence. Leftover `*.tmp` files are
    /// removed (with `log`); any unreadable or inconsistent file is an error naming it.
    pub fn load_networks(
        &self,
        log: &mut dyn FnMut(String),
    ) -> Result<Vec<NetworkRecord>, StoreError> {
        let dir = self.root.join("networks");
        let rd = fs::read_dir(&dir).map_err(io_err("list", &dir))?;
        let mut out: Vec<NetworkRecord> = Vec::new();
        for entry in rd {
            let entry = entry.map_err(io_err("list", &dir))?;
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.ends_with(".tmp") {
                log(format!(
                    "removing {}: left over from an interrupted write (the previous version \
                     of the file is intact)",
                    path.display()
                ));
                fs::remove_file(&path).map_err(io_err("remove", &path))?;
                continue;
            }
            let Some(stem) = name.strip_suffix(".json") else {
                return Err(StoreError::Corrupt {
                    path,
                    detail: "unexpected file in the networks directory (only <ID>.json \
                             files belong there)"
                        .to_string(),
                });
            };
            let rec: NetworkRecord = read_json(&path)?;
            let corrupt = |detail: String| StoreError::Corrupt {
                path: path.clone(),
                detail,
            };
            rec.check().map_err(corrupt)?;
            if rec.id != stem {
                return Err(corrupt(format!(
                    "it holds network ID {} but is named after ID {stem}",
                    rec.id
                )));
            }
            if let Some(other) = out.iter().find(|o| o.name == rec.name) {
                return Err(corrupt(format!(
                    "network name {:?} is also used by network {}",
                    rec.name, other.id
                )));
            }
            out.push(rec);
        }
        out.sort_by(|a, b| (a.seq, &a.id).cmp(&(b.seq, &b.id)));
        Ok(out)
    }

    /// Writes (creates or replaces) a network's file atomically.
    pub fn save_network(&self, rec: &NetworkRecord) -> Result<(), StoreError> {
        write_json(&self.network_path(&rec.id), rec)
    }

    /// Deletes a network's file (and fsyncs the directory). A missing file is not an error.
    pub fn delete_network(&self, id: &str) -> Result<(), StoreError> {
        let path = self.network_path(id);
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(io_err("remove", &path)(e)),
        }
        sync_dir(&self.root.join("networks"))
    }
}

#[cfg(test)]
mod tests;
