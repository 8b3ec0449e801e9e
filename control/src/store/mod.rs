//! Persistent daemon state under the root directory (`/var/lib/uvlan` by default).
//!
//! # Layout (record version 2)
//! ```text
//! ROOT/host.json                          the host ID (seeds the IPv6 ULA default pool, as
//!                                         Docker's)
//! ROOT/networks/<NID>.json                one network: its request, allocation and driver
//!                                         config (no endpoints)
//! ROOT/endpoints/<NID>/                   that network's endpoints; exists exactly as long
//!                                         as the network's file
//! ROOT/endpoints/<NID>/<EID>.json         one endpoint (with its intent while an operation
//!                                         on it is under way)
//! ROOT/endpoints/<NID>/reserved.<KEY>.json  one endpoint a front end declared but has not
//!                                         attached (Docker's CreateEndpoint, or after Leave)
//! ROOT/daemon.lock                        flock(2)ed by the running daemon: one daemon per
//!                                         root
//! ```
//! A request writes in proportion to its change: connecting or disconnecting an endpoint
//! writes or removes that endpoint's file only, never the network's or another endpoint's.
//! Everything needed to rebuild the daemon after a restart is in these files.
//!
//! # Version 1, migrated on load
//! Version 1 kept a network's endpoints and reservations inside `networks/<NID>.json`. Such a
//! file is still read; on load the daemon writes each of its endpoints and reservations to
//! its own file, then rewrites the network's file as version 2 (without them), logging it. A
//! crash in between is harmless: the version 1 file still lists everything and the migration
//! runs again (files it wrote already are overwritten with the same content). A version 1
//! daemon refuses version 2 files (their version is unknown to it), so a downgrade cannot
//! silently lose endpoints.
//!
//! # Atomicity and durability
//! Every file is replaced atomically: written to `NAME.tmp` in the same directory, renamed
//! over `NAME`. A crash leaves either the old or the new file, never a torn one; a leftover
//! `*.tmp` is the trace of an interrupted write (its rename never happened) and is removed,
//! with a log line, when the store is loaded. Settled records are made durable (the file and
//! its directory fsynced) before the request answers. Intents (below) are not fsynced: they
//! guard against the daemon dying, and a power loss takes every TAP and namespace with it.
//!
//! # Intents: crash-consistent endpoints
//! An operation that touches the kernel first writes the endpoint's record with its intent
//! ([`Intent`]): `create` before the TAP is made, `remove` before it is destroyed, `park`
//! before Docker's Leave takes it out of the engine. The operation clears the intent (or
//! removes the file) when it is done. The daemon's next start rolls back every `create` and
//! finishes every `remove` and `park` (see `daemon/recover.rs`), so a `kill -9` at any point
//! leaves each endpoint either complete or without a trace.
//!
//! A reservation of a DHCP network plays the same part for Docker's CreateEndpoint, whose
//! lease is taken before any interface exists: it is written with the offer it asks the
//! server for ([`ReservedEndpoint::offered`]) before each REQUEST, and with its lease once
//! the ACK is in. The next start gives back the address of every reservation that still
//! holds an offer and drops it (`Daemon::drop_interrupted_offers`).
//!
//! # Corruption and missing files
//! A file that cannot be read or parsed, or whose content contradicts its name, is a
//! [`StoreError::Corrupt`] naming the file; a file or directory that must be there and is
//! not is a [`StoreError::Missing`]. Both say how to get out. Nothing is ever dropped
//! silently: the daemon refuses to start until the state is repaired. In particular:
//! - `host.json` missing while networks exist (a new host ID would move the IPv6 default
//!   pool);
//! - `networks/` missing while `host.json` exists (every endpoint's TAP would be orphaned);
//! - a network's `endpoints/<NID>/` missing (its endpoints' records are lost);
//! - endpoint records of a network without a file, an endpoint ID used twice (in one network
//!   or across networks), a key used twice, two endpoints in one namespace.
//!
//! Leftovers of an interrupted network create or remove (an empty `endpoints/<NID>/` without
//! `networks/<NID>.json`) are removed with a log line.

mod records;

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::Serialize;

pub use records::{
    AutoRemove, DriverConfig, EndpointRecord, HostRecord, Intent, Managed, NetworkRecord,
    ParentRef, ReservedEndpoint, RECORD_VERSION, RECORD_VERSION_V1,
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
    /// A state file or directory that must exist does not.
    #[error("state {path} is missing: {detail} (nothing was changed)")]
    Missing {
        /// The file or directory.
        path: PathBuf,
        /// What it means, and the way out.
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

/// Writes `bytes` to `path` atomically and durably: temp file in the same directory, fsync,
/// rename, fsync of the directory. The file gets mode 0600.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    write_file(path, bytes, true)
}

/// Writes `bytes` to `path` atomically (temp file, rename); with `durable`, the file and then
/// the directory are fsynced too.
fn write_file(path: &Path, bytes: &[u8], durable: bool) -> Result<(), StoreError> {
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
        if durable {
            f.sync_all().map_err(io_err("fsync", &tmp))?;
        }
    }
    fs::rename(&tmp, path).map_err(|e| {
        let _ = fs::remove_file(&tmp);
        StoreError::Io {
            op: "rename a temporary file onto",
            path: path.to_path_buf(),
            source: e,
        }
    })?;
    if durable {
        sync_dir(dir)?;
    }
    Ok(())
}

fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("fsync directory", dir))
}

/// Serializes `value` as pretty JSON and writes it with [`write_atomic`].
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), StoreError> {
    write_json_file(path, value, true)
}

fn write_json_file<T: Serialize>(path: &Path, value: &T, durable: bool) -> Result<(), StoreError> {
    let mut bytes = serde_json::to_vec_pretty(value).map_err(|e| StoreError::Io {
        op: "serialize state for",
        path: path.to_path_buf(),
        source: io::Error::other(e),
    })?;
    bytes.push(b'\n');
    write_file(path, &bytes, durable)
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
    /// Opens the state directory `root`, creating it (mode 0700) with its `networks/` and
    /// `endpoints/` directories when it is new. A root that was used (it has `host.json`) but
    /// lost its `networks/` directory is refused: starting empty would orphan every TAP.
    pub fn open(root: &Path) -> Result<Store, StoreError> {
        let mkdir = |d: &Path| {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(d)
                .map_err(io_err("create the state directory", d))
        };
        mkdir(root)?;
        let store = Store {
            root: root.to_path_buf(),
        };
        let nets = store.networks_dir();
        if store.host_path().exists() && !nets.is_dir() {
            return Err(StoreError::Missing {
                path: nets,
                detail: format!(
                    "{} exists, so this daemon ran before and kept its networks there; \
                     starting without them would forget every network and orphan every \
                     endpoint's interface. Restore the directory from a backup; or, to start \
                     with no networks at all, create it empty (mkdir -m 700 {})",
                    store.host_path().display(),
                    root.join("networks").display()
                ),
            });
        }
        // networks/ before host.json (written at the first start): a root with host.json
        // and without networks/ is then never a fresh one.
        mkdir(&nets)?;
        mkdir(&store.endpoints_root())?;
        Ok(store)
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn host_path(&self) -> PathBuf {
        self.root.join("host.json")
    }

    fn networks_dir(&self) -> PathBuf {
        self.root.join("networks")
    }

    fn endpoints_root(&self) -> PathBuf {
        self.root.join("endpoints")
    }

    /// `ROOT/endpoints/<NID>`: the directory of a network's endpoints.
    pub fn endpoints_dir(&self, net_id: &str) -> PathBuf {
        self.endpoints_root().join(net_id)
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
        self.networks_dir().join(format!("{id}.json"))
    }

    fn endpoint_path(&self, net_id: &str, ep_id: &str) -> PathBuf {
        self.endpoints_dir(net_id).join(format!("{ep_id}.json"))
    }

    fn reserved_path(&self, net_id: &str, key: &str) -> PathBuf {
        self.endpoints_dir(net_id)
            .join(format!("{RESERVED_PREFIX}{key}.json"))
    }

    /// Reads the host record, creating it with `make()` the first time. A missing
    /// `host.json` beside stored networks is refused: a new host ID would change the IPv6
    /// default pool the existing networks were given addresses from.
    pub fn load_or_init_host(
        &self,
        make: impl FnOnce() -> io::Result<HostRecord>,
    ) -> Result<HostRecord, StoreError> {
        let path = self.host_path();
        if path.exists() {
            let rec: HostRecord = read_json(&path)?;
            rec.check().map_err(|detail| StoreError::Corrupt {
                path: path.clone(),
                detail,
            })?;
            return Ok(rec);
        }
        let dir = self.networks_dir();
        let used = fs::read_dir(&dir)
            .map_err(io_err("list", &dir))?
            .flatten()
            .any(|e| e.file_name().to_string_lossy().ends_with(".json"));
        if used {
            return Err(StoreError::Missing {
                path,
                detail: format!(
                    "networks are stored in {}, so this daemon ran before; its host ID seeds \
                     the IPv6 default pool, and a new one would not match the stored \
                     networks. Restore host.json from a backup; or write a new one by hand \
                     ({{\"host_id\": \"<64 hex characters>\"}}): stored networks keep \
                     their subnets, new default IPv6 subnets come from the new ID",
                    dir.display()
                ),
            });
        }
        let rec = make().map_err(io_err("generate a host ID for", &path))?;
        write_json(&path, &rec)?;
        Ok(rec)
    }

    /// Every stored network with its endpoints and reservations, sorted by creation sequence
    /// (endpoints in connection order). Version 1 files are migrated (see the module docs),
    /// leftover `*.tmp` files and directories of interrupted network creations or removals
    /// are removed (with `log`); any unreadable, inconsistent or missing file is an error
    /// naming it. Endpoints keep their intents: the caller resolves them.
    pub fn load_networks(
        &self,
        log: &mut dyn FnMut(String),
    ) -> Result<Vec<NetworkRecord>, StoreError> {
        let dir = self.networks_dir();
        let mut out: Vec<NetworkRecord> = Vec::new();
        for (path, name) in list_dir(&dir, log)? {
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
        for rec in &mut out {
            if rec.version == RECORD_VERSION_V1 {
                self.migrate_v1(rec, log)?;
            } else {
                self.load_endpoints(rec, log)?;
            }
        }
        self.check_endpoint_dirs(&out, log)?;
        // An endpoint ID names one endpoint on the whole host.
        let mut owner: std::collections::HashMap<&str, &str> = std::collections::HashMap::new();
        for rec in &out {
            for ep in &rec.endpoints {
                if let Some(first) = owner.insert(&ep.id, &rec.id) {
                    return Err(StoreError::Corrupt {
                        path: self.endpoint_path(&rec.id, &ep.id),
                        detail: format!(
                            "endpoint ID {} is also used in network {first} ({}): one of the \
                             two records is a stray copy; remove it",
                            ep.id,
                            self.endpoint_path(first, &ep.id).display()
                        ),
                    });
                }
            }
        }
        out.sort_by(|a, b| (a.seq, &a.id).cmp(&(b.seq, &b.id)));
        Ok(out)
    }

    /// Reads a version 2 network's endpoint and reservation files into `rec`.
    fn load_endpoints(
        &self,
        rec: &mut NetworkRecord,
        log: &mut dyn FnMut(String),
    ) -> Result<(), StoreError> {
        let dir = self.endpoints_dir(&rec.id);
        if !dir.is_dir() {
            return Err(StoreError::Missing {
                path: dir.clone(),
                detail: format!(
                    "network {} ({}) keeps its endpoints' records there; without them its \
                     endpoints would be forgotten while their interfaces live on. Restore \
                     the directory from a backup; or, to keep the network without \
                     endpoints, create it empty (mkdir -m 700 {}) and remove the \
                     endpoints' interfaces by hand",
                    rec.name,
                    self.network_path(&rec.id).display(),
                    dir.display()
                ),
            });
        }
        let mut eps = Vec::new();
        let mut reserved = Vec::new();
        for (path, name) in list_dir(&dir, log)? {
            let corrupt = |detail: String| StoreError::Corrupt {
                path: path.clone(),
                detail,
            };
            if let Some(key) = name
                .strip_prefix(RESERVED_PREFIX)
                .and_then(|n| n.strip_suffix(".json"))
            {
                let r: ReservedEndpoint = read_json(&path)?;
                if r.key != key {
                    return Err(corrupt(format!(
                        "it holds the reservation of key {:?} but is named after key {key:?}",
                        r.key
                    )));
                }
                reserved.push(r);
                continue;
            }
            let Some(stem) = name.strip_suffix(".json") else {
                return Err(corrupt(
                    "unexpected file in an endpoints directory (only <ID>.json and \
                     reserved.<KEY>.json files belong there)"
                        .to_string(),
                ));
            };
            let ep: EndpointRecord = read_json(&path)?;
            ep.check().map_err(corrupt)?;
            if ep.id != stem {
                return Err(corrupt(format!(
                    "it holds endpoint ID {} but is named after ID {stem}",
                    ep.id
                )));
            }
            eps.push(ep);
        }
        if !reserved.is_empty() && rec.managed.is_none() {
            return Err(StoreError::Corrupt {
                path: dir,
                detail: format!(
                    "it holds reservations, but network {} is not managed by a front end \
                     (only Docker's networks have them): remove the reserved.* files",
                    rec.name
                ),
            });
        }
        // A reservation beside its settled endpoint: an attach that made the endpoint and
        // was interrupted before it removed the reservation. Finished here.
        let settled: std::collections::HashSet<&str> = eps
            .iter()
            .filter(|e| e.intent.is_none())
            .filter_map(|e| e.key.as_deref())
            .collect();
        let mut stale = Vec::new();
        reserved.retain(|r| {
            let keep = !settled.contains(r.key.as_str());
            if !keep {
                stale.push(r.key.clone());
            }
            keep
        });
        for key in stale {
            let path = self.reserved_path(&rec.id, &key);
            log(format!(
                "removing {}: endpoint {key} of network {} is attached (an interrupted \
                 attach had not removed its reservation yet)",
                path.display(),
                rec.name
            ));
            remove_file(&path)?;
        }
        eps.sort_by(|a, b| (&a.created, &a.id).cmp(&(&b.created, &b.id)));
        reserved.sort_by(|a, b| (&a.created, &a.key).cmp(&(&b.created, &b.key)));
        rec.endpoints = eps;
        if let Some(m) = rec.managed.as_mut() {
            m.reserved = reserved;
        }
        rec.check_endpoints().map_err(|detail| StoreError::Corrupt {
            path: self.endpoints_dir(&rec.id),
            detail,
        })
    }

    /// Moves a version 1 network's endpoints and reservations to their own files and
    /// rewrites its file as version 2 (see the module docs).
    fn migrate_v1(
        &self,
        rec: &mut NetworkRecord,
        log: &mut dyn FnMut(String),
    ) -> Result<(), StoreError> {
        let dir = self.endpoints_dir(&rec.id);
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(io_err("create", &dir))?;
        for ep in &rec.endpoints {
            write_json(&self.endpoint_path(&rec.id, &ep.id), ep)?;
        }
        for r in rec.managed.iter().flat_map(|m| m.reserved.iter()) {
            if !ReservedEndpoint::key_is_storable(&r.key) {
                return Err(StoreError::Corrupt {
                    path: self.network_path(&rec.id),
                    detail: format!(
                        "reservation key {:?} cannot name a file; remove the reservation",
                        r.key
                    ),
                });
            }
            write_json(&self.reserved_path(&rec.id, &r.key), r)?;
        }
        rec.version = RECORD_VERSION;
        write_json(&self.network_path(&rec.id), rec)?;
        log(format!(
            "network {}: migrated {} from record version {RECORD_VERSION_V1} to \
             {RECORD_VERSION}: its {} endpoint(s) and {} reservation(s) now have their own \
             files in {}",
            rec.name,
            self.network_path(&rec.id).display(),
            rec.endpoints.len(),
            rec.managed.as_ref().map_or(0, |m| m.reserved.len()),
            dir.display()
        ));
        // Files a newer daemon wrote beside a version 1 file cannot exist; the list in the
        // file was the truth, and now the directory holds exactly it.
        Ok(())
    }

    /// Every directory in `endpoints/` belongs to a stored network; an empty one without
    /// its network is the leftover of an interrupted create or remove, and goes.
    fn check_endpoint_dirs(
        &self,
        nets: &[NetworkRecord],
        log: &mut dyn FnMut(String),
    ) -> Result<(), StoreError> {
        let root = self.endpoints_root();
        for (path, name) in list_dir(&root, log)? {
            if nets.iter().any(|n| n.id == name) {
                continue;
            }
            if !path.is_dir() {
                return Err(StoreError::Corrupt {
                    path,
                    detail: "unexpected file in the endpoints directory (only one directory \
                             per network belongs there)"
                        .to_string(),
                });
            }
            let left = list_dir(&path, log)?;
            if left.is_empty() {
                log(format!(
                    "removing {}: left over from an interrupted network create or remove",
                    path.display()
                ));
                fs::remove_dir(&path).map_err(io_err("remove", &path))?;
                continue;
            }
            return Err(StoreError::Missing {
                path: self.network_path(&name),
                detail: format!(
                    "{} holds {} endpoint record(s) of that network; restore the network's \
                     file from a backup, or remove the directory to forget those endpoints \
                     (and remove their interfaces by hand)",
                    path.display(),
                    left.len()
                ),
            });
        }
        Ok(())
    }

    /// Creates a network: its endpoints directory, then its file.
    pub fn create_network(&self, rec: &NetworkRecord) -> Result<(), StoreError> {
        let dir = self.endpoints_dir(&rec.id);
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .or_else(|e| match e.kind() {
                io::ErrorKind::AlreadyExists => Ok(()),
                _ => Err(e),
            })
            .map_err(io_err("create", &dir))?;
        self.save_network(rec)
    }

    /// Writes (replaces) a network's file atomically and durably; its endpoints and
    /// reservations are not written (they have files of their own).
    pub fn save_network(&self, rec: &NetworkRecord) -> Result<(), StoreError> {
        write_json(&self.network_path(&rec.id), rec)
    }

    /// Deletes a network's file, then its (empty) endpoints directory, fsyncing each
    /// directory. Missing files are not an error.
    pub fn delete_network(&self, id: &str) -> Result<(), StoreError> {
        remove_file(&self.network_path(id))?;
        let dir = self.endpoints_dir(id);
        match fs::remove_dir(&dir) {
            Ok(()) => sync_dir(&self.endpoints_root()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err("remove", &dir)(e)),
        }
    }

    /// Writes (creates or replaces) an endpoint's file atomically. A settled record (no
    /// intent) is made durable; an intent is not fsynced (see the module docs).
    pub fn save_endpoint(&self, net_id: &str, ep: &EndpointRecord) -> Result<(), StoreError> {
        write_json_file(&self.endpoint_path(net_id, &ep.id), ep, ep.intent.is_none())
    }

    /// Deletes an endpoint's file (and fsyncs the directory). A missing file is not an error.
    pub fn delete_endpoint(&self, net_id: &str, ep_id: &str) -> Result<(), StoreError> {
        remove_file(&self.endpoint_path(net_id, ep_id))
    }

    /// Writes (creates or replaces) a reservation's file atomically and durably. Its key
    /// must be storable ([`ReservedEndpoint::key_is_storable`]).
    pub fn save_reserved(&self, net_id: &str, r: &ReservedEndpoint) -> Result<(), StoreError> {
        let path = self.reserved_path(net_id, &r.key);
        if !ReservedEndpoint::key_is_storable(&r.key) {
            return Err(StoreError::Io {
                op: "store the reservation as",
                path,
                source: io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("the key {:?} cannot name a file", r.key),
                ),
            });
        }
        write_json(&path, r)
    }

    /// Deletes a reservation's file. A missing file is not an error.
    pub fn delete_reserved(&self, net_id: &str, key: &str) -> Result<(), StoreError> {
        if !ReservedEndpoint::key_is_storable(key) {
            return Ok(());
        }
        remove_file(&self.reserved_path(net_id, key))
    }
}

/// The prefix of a reservation's file name in an endpoints directory.
const RESERVED_PREFIX: &str = "reserved.";

/// Removes `path` and fsyncs its directory; a missing file is not an error.
fn remove_file(path: &Path) -> Result<(), StoreError> {
    match fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_err("remove", path)(e)),
    }
    sync_dir(path.parent().unwrap_or(Path::new(".")))
}

/// The entries of `dir` as (path, name), sorted by name; leftover `*.tmp` files are removed
/// (logged).
fn list_dir(dir: &Path, log: &mut dyn FnMut(String)) -> Result<Vec<(PathBuf, String)>, StoreError> {
    let rd = fs::read_dir(dir).map_err(io_err("list", dir))?;
    let mut out = Vec::new();
    for entry in rd {
        let entry = entry.map_err(io_err("list", dir))?;
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
        out.push((path, name));
    }
    out.sort_by(|a, b| a.1.cmp(&b.1));
    Ok(out)
}

#[cfg(test)]
mod tests;
