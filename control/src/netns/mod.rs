//! Network namespace and netlink plumbing for the control plane.
//!
//! Everything here is blocking and simple; the daemon calls it from its own threads. The
//! watchers ([`AddrWatcher`], [`ChangeWatcher`], [`ExitWatcher`]) are the exception: they all
//! share one process-wide thread, the watcher hub, that sleeps until something happens.
//!
//! # Threads and namespaces
//! A thread's network namespace decides where sockets, TAPs and `/proc/sys/net` files it
//! opens live, and that choice is fixed when the socket/file is opened. So:
//! - [`Netns::run`] runs a closure on a short-lived dedicated thread that has `setns`'d
//!   into the namespace; the caller's thread never changes namespace.
//! - [`Rtnl::open`] creates the `NETLINK_ROUTE` socket on such a thread and hands it back:
//!   all later requests on it act in that namespace, from any thread.
//!
//! # Sysctls inside a namespace
//! `/proc/sys/net/...` resolves against the network namespace of the **thread** that opens
//! the file (the net sysctl tables are looked up through `current->nsproxy`), not the one
//! that mounted `/proc`; so [`sysctl_write`] opens and writes the file on a thread that
//! entered the namespace. (Unlike `/sys/class/net`, which shows the namespace of whoever
//! mounted sysfs, and `/proc/net`, which follows the thread-group leader.) Measured by the
//! tests in `control/tests/netns.rs`. IPv6 per-device settings have no netlink setter
//! (`IFLA_INET6_CONF` is read-only) except `addr_gen_mode`, which goes through netlink
//! ([`Rtnl::link_set_addr_gen_mode`]).

mod addr;
mod exit;
mod hub;
mod link;
mod nl;
mod route;
mod sysctl;
mod watch;

use std::ffi::CString;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

pub use addr::{AddrFlags, AddrInfo, AddrOptions};
pub use exit::ExitWatcher;
pub use link::{AddrGenMode, LinkDrops, LinkInfo, OperState, IPV4_DEVCONF_ARP_NOTIFY};
pub use nl::{multicast_filter_support, Rtnl};
pub use route::{NeighState, Neighbour, Route, RouteKind, RouteLookup};
pub use sysctl::{set_accept_dad, set_arp_notify, set_ipv6_disabled, sysctl_read, sysctl_write};
pub use watch::{AddrEvent, AddrWatcher, ChangeWatcher, RouteWatcher};

/// Where named network namespaces live (as with `ip netns`).
pub const NETNS_RUN_DIR: &str = "/run/netns";

/// Errors from namespace and netlink operations.
#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    /// A namespace name that `ip netns` would not accept either.
    #[error("invalid network namespace name {name:?}: {reason}")]
    InvalidName {
        /// The rejected name.
        name: String,
        /// Why.
        reason: &'static str,
    },
    /// No namespace with that name under /run/netns.
    #[error(
        "network namespace {name:?} not found: is it under {NETNS_RUN_DIR}? (create it with \
         \"ip netns add {name}\")"
    )]
    NotFound {
        /// The name looked up.
        name: String,
    },
    /// A namespace file path that cannot be opened.
    #[error(
        "cannot open network namespace file {path:?}: {source} (expected {NETNS_RUN_DIR}/NAME \
         or /proc/PID/ns/net of a running process)"
    )]
    OpenPath {
        /// The path.
        path: PathBuf,
        /// The open error.
        source: io::Error,
    },
    /// The file is not a network namespace.
    #[error(
        "{path:?} is not a network namespace file (expected {NETNS_RUN_DIR}/NAME or \
         /proc/PID/ns/net)"
    )]
    NotANetns {
        /// The path.
        path: PathBuf,
    },
    /// `create` found the name taken.
    #[error(
        "network namespace {name:?} already exists: pick another name or delete it with \
         \"ip netns del {name}\""
    )]
    Exists {
        /// The name.
        name: String,
    },
    /// A step of namespace creation failed.
    #[error("cannot create network namespace {name:?}: {step}: {source} (are you root?)")]
    Create {
        /// The name.
        name: String,
        /// What was being done.
        step: &'static str,
        /// The OS error.
        source: io::Error,
    },
    /// A step of namespace deletion failed.
    #[error("cannot delete network namespace {name:?}: {step}: {source}")]
    Delete {
        /// The name.
        name: String,
        /// What was being done.
        step: &'static str,
        /// The OS error.
        source: io::Error,
    },
    /// `setns` into the namespace failed.
    #[error("cannot enter network namespace {ns}: {source} (are you root / CAP_SYS_ADMIN?)")]
    Enter {
        /// The namespace label.
        ns: String,
        /// The OS error.
        source: io::Error,
    },
    /// A helper thread could not be started.
    #[error("cannot start a namespace helper thread: {source}")]
    Thread {
        /// The spawn error.
        source: io::Error,
    },
    /// The netlink socket could not be set up.
    #[error("cannot open a netlink socket in network namespace {ns}: {source}")]
    Socket {
        /// The namespace label.
        ns: String,
        /// The OS error.
        source: io::Error,
    },
    /// No link with that name or index.
    #[error(
        "no network interface {link} in network namespace {ns} (check \"ip -n NS link\" or the \
         namespace you passed)"
    )]
    LinkNotFound {
        /// The name or `index N`.
        link: String,
        /// The namespace label.
        ns: String,
    },
    /// The kernel refused a netlink request.
    #[error("{op} in network namespace {ns} failed: {source}{hint}")]
    Netlink {
        /// What was asked.
        op: String,
        /// The namespace label.
        ns: String,
        /// The kernel's error.
        source: io::Error,
        /// An explanation of common causes (may be empty).
        hint: &'static str,
    },
    /// A netlink reply could not be decoded.
    #[error("{op} in network namespace {ns}: malformed netlink reply: {detail}")]
    Decode {
        /// What was asked.
        op: String,
        /// The namespace label.
        ns: String,
        /// The decoder's message.
        detail: String,
    },
    /// A sysctl could not be read or written.
    #[error(
        "sysctl {key} in network namespace {ns}: {source} (does the interface exist in that \
         namespace, and is IPv6 enabled for IPv6 keys?)"
    )]
    Sysctl {
        /// The key below /proc/sys.
        key: String,
        /// The namespace label.
        ns: String,
        /// The OS error.
        source: io::Error,
    },
    /// The watcher hub (see [`AddrWatcher`]) could not set something up.
    #[error("cannot {op}: {source}")]
    Watch {
        /// What was being done.
        op: &'static str,
        /// The OS error.
        source: io::Error,
    },
    /// An argument that cannot be used.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
}

/// Result alias for this module.
pub type Result<T, E = NetnsError> = std::result::Result<T, E>;

/// An open handle on a network namespace (an fd on its nsfs file).
///
/// Holding it keeps the namespace alive. Create with [`Netns::current`], [`Netns::open`],
/// [`Netns::open_name`], [`Netns::open_path`] or [`Netns::create`].
#[derive(Debug)]
pub struct Netns {
    fd: OwnedFd,
    label: String,
    name: Option<String>,
    inode: u64,
}

impl Netns {
    /// The namespace's file descriptor (for `IFLA_NET_NS_FD`).
    pub fn fd(&self) -> std::os::fd::BorrowedFd<'_> {
        use std::os::fd::AsFd;
        self.fd.as_fd()
    }

    /// A second handle on the same namespace.
    pub fn try_clone(&self) -> Result<Netns> {
        let fd = self.fd.try_clone().map_err(|source| NetnsError::Enter {
            ns: self.label.clone(),
            source,
        })?;
        Ok(Netns {
            fd,
            label: self.label.clone(),
            name: self.name.clone(),
            inode: self.inode,
        })
    }

    /// The network namespace of the calling thread.
    pub fn current() -> Result<Netns> {
        let path = Path::new("/proc/thread-self/ns/net");
        let mut ns = Netns::open_path(path)?;
        ns.label = "(current)".to_string();
        Ok(ns)
    }

    /// Opens `spec`: a path if it contains `/`, else a name under [`NETNS_RUN_DIR`].
    pub fn open(spec: &str) -> Result<Netns> {
        if spec.contains('/') {
            Netns::open_path(Path::new(spec))
        } else {
            Netns::open_name(spec)
        }
    }

    /// Opens the named namespace `/run/netns/NAME`.
    pub fn open_name(name: &str) -> Result<Netns> {
        check_name(name)?;
        let path = Path::new(NETNS_RUN_DIR).join(name);
        match Netns::open_path(&path) {
            Err(NetnsError::OpenPath { source, .. })
                if source.kind() == io::ErrorKind::NotFound =>
            {
                Err(NetnsError::NotFound {
                    name: name.to_string(),
                })
            }
            // A leftover file that is no longer a bind mount is "not found" too.
            Err(NetnsError::NotANetns { .. }) => Err(NetnsError::NotFound {
                name: name.to_string(),
            }),
            Ok(mut ns) => {
                ns.label = format!("{name:?}");
                ns.name = Some(name.to_string());
                Ok(ns)
            }
            Err(e) => Err(e),
        }
    }

    /// Opens a namespace file by path (`/run/netns/NAME`, `/proc/PID/ns/net`, ...).
    pub fn open_path(path: &Path) -> Result<Netns> {
        let file = File::options()
            .read(true)
            .custom_flags(libc::O_CLOEXEC)
            .open(path)
            .map_err(|source| NetnsError::OpenPath {
                path: path.to_path_buf(),
                source,
            })?;
        let meta = file.metadata().map_err(|source| NetnsError::OpenPath {
            path: path.to_path_buf(),
            source,
        })?;
        let fd: OwnedFd = file.into();
        if !is_netns_fd(&fd) {
            return Err(NetnsError::NotANetns {
                path: path.to_path_buf(),
            });
        }
        Ok(Netns {
            fd,
            label: path.display().to_string(),
            name: None,
            inode: meta.ino(),
        })
    }

    /// Creates the named namespace like `ip netns add NAME`: makes [`NETNS_RUN_DIR`] a shared
    /// mount point, creates `/run/netns/NAME`, and bind-mounts the namespace of a freshly
    /// unshared helper thread onto it. The new namespace has only a down `lo`.
    pub fn create(name: &str) -> Result<Netns> {
        check_name(name)?;
        let cerr = |step, source| NetnsError::Create {
            name: name.to_string(),
            step,
            source,
        };
        prepare_run_dir().map_err(|(step, e)| cerr(step, e))?;
        let path = Path::new(NETNS_RUN_DIR).join(name);
        match OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o000)
            .open(&path)
        {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                return Err(NetnsError::Exists {
                    name: name.to_string(),
                })
            }
            Err(e) => return Err(cerr("create the mount point file", e)),
        }
        let target = path_cstring(&path).map_err(|e| cerr("encode the path", e))?;
        let made = spawn_scoped("uvlan-netns-add", || {
            // SAFETY: unshare only affects this helper thread, which exits right after.
            if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
                return Err(("unshare(CLONE_NEWNET)", io::Error::last_os_error()));
            }
            let src = c"/proc/thread-self/ns/net";
            // SAFETY: all pointers are valid NUL-terminated strings (or null for data) for
            // the duration of the call.
            let r = unsafe {
                libc::mount(
                    src.as_ptr(),
                    target.as_ptr(),
                    c"none".as_ptr(),
                    libc::MS_BIND,
                    std::ptr::null(),
                )
            };
            if r != 0 {
                return Err(("bind-mount the namespace", io::Error::last_os_error()));
            }
            Ok(())
        });
        match made {
            Ok(Ok(())) => {}
            Ok(Err((step, e))) => {
                let _ = fs::remove_file(&path);
                return Err(cerr(step, e));
            }
            Err(e) => {
                let _ = fs::remove_file(&path);
                return Err(e);
            }
        }
        Netns::open_name(name)
    }

    /// Creates a namespace without a name: only the returned handle holds it (it goes, with
    /// every interface in it, when the handle is dropped and nothing else uses it, even if
    /// the process dies). The new namespace has only a down `lo`.
    pub fn create_private(label: &str) -> Result<Netns> {
        let made = spawn_scoped("uvlan-netns-new", || {
            // SAFETY: unshare only affects this helper thread, which exits right after.
            if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
                return Err(NetnsError::Create {
                    name: label.to_string(),
                    step: "unshare(CLONE_NEWNET)",
                    source: io::Error::last_os_error(),
                });
            }
            Netns::open_path(Path::new("/proc/thread-self/ns/net"))
        })?;
        let mut ns = made?;
        ns.label = label.to_string();
        Ok(ns)
    }

    /// Deletes the named namespace like `ip netns del NAME`: lazy unmount and unlink. The
    /// namespace itself disappears once no process, fd or mount holds it any more.
    pub fn delete(name: &str) -> Result<()> {
        check_name(name)?;
        let path = Path::new(NETNS_RUN_DIR).join(name);
        if fs::symlink_metadata(&path).is_err() {
            return Err(NetnsError::NotFound {
                name: name.to_string(),
            });
        }
        let derr = |step, source| NetnsError::Delete {
            name: name.to_string(),
            step,
            source,
        };
        let c = path_cstring(&path).map_err(|e| derr("encode the path", e))?;
        // SAFETY: c is a valid NUL-terminated path for the duration of the call.
        if unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) } != 0 {
            let e = io::Error::last_os_error();
            // EINVAL: not a mount point (a leftover file); remove it anyway.
            if e.raw_os_error() != Some(libc::EINVAL) {
                return Err(derr("unmount", e));
            }
        }
        fs::remove_file(&path).map_err(|e| derr("remove the file", e))
    }

    /// True if `/run/netns/NAME` exists and is a network namespace.
    pub fn exists(name: &str) -> bool {
        Netns::open_name(name).is_ok()
    }

    /// Names of the namespaces under [`NETNS_RUN_DIR`], sorted.
    pub fn list() -> Result<Vec<String>> {
        let rd = match fs::read_dir(NETNS_RUN_DIR) {
            Ok(rd) => rd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => {
                return Err(NetnsError::OpenPath {
                    path: NETNS_RUN_DIR.into(),
                    source,
                })
            }
        };
        let mut names: Vec<String> = rd
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| Netns::exists(n))
            .collect();
        names.sort();
        Ok(names)
    }

    /// A human label for messages: the quoted name, the path, or `(current)`.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// The name under [`NETNS_RUN_DIR`], if opened or created by name.
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    /// The nsfs inode number: two handles with the same inode are the same namespace.
    pub fn inode(&self) -> u64 {
        self.inode
    }

    /// Runs `f` on a dedicated thread inside this namespace and returns its result. The
    /// calling thread never changes namespace. A panic in `f` is resumed in the caller.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> Result<T> {
        let fd = self.fd.as_raw_fd();
        let label = &self.label;
        spawn_scoped("uvlan-netns", move || {
            // SAFETY: fd is a namespace fd owned by self, which outlives this scoped thread;
            // setns only changes this short-lived thread's namespace.
            if unsafe { libc::setns(fd, libc::CLONE_NEWNET) } != 0 {
                return Err(NetnsError::Enter {
                    ns: label.clone(),
                    source: io::Error::last_os_error(),
                });
            }
            Ok(f())
        })?
    }
}

/// Runs `f` on a dedicated thread inside `ns` (see [`Netns::run`]).
pub fn run_in_netns<T: Send>(ns: &Netns, f: impl FnOnce() -> T + Send) -> Result<T> {
    ns.run(f)
}

fn spawn_scoped<T: Send>(name: &str, f: impl FnOnce() -> T + Send) -> Result<T> {
    std::thread::scope(|s| {
        let h = std::thread::Builder::new()
            .name(name.to_string())
            .spawn_scoped(s, f)
            .map_err(|source| NetnsError::Thread { source })?;
        match h.join() {
            Ok(v) => Ok(v),
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })
}

fn check_name(name: &str) -> Result<()> {
    let bad = |reason| {
        Err(NetnsError::InvalidName {
            name: name.to_string(),
            reason,
        })
    };
    if name.is_empty() {
        return bad("it is empty");
    }
    if name.contains('/') || name.contains('\0') {
        return bad("it contains '/' or a NUL byte");
    }
    if name == "." || name == ".." {
        return bad("\".\" and \"..\" are not names");
    }
    if name.len() > 255 {
        return bad("it is longer than 255 bytes");
    }
    Ok(())
}

fn path_cstring(path: &Path) -> io::Result<CString> {
    use std::os::unix::ffi::OsStrExt;
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"))
}

/// NS_GET_NSTYPE (`_IO(0xb7, 0x3)`): which kind of namespace an nsfs fd refers to.
const NS_GET_NSTYPE: libc::Ioctl = 0xb703;

fn is_netns_fd(fd: &OwnedFd) -> bool {
    // SAFETY: NS_GET_NSTYPE takes no argument; on a non-nsfs fd it fails with ENOTTY.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), NS_GET_NSTYPE) };
    r == libc::CLONE_NEWNET
}

/// Makes /run/netns exist and be a shared mount point, as iproute2 does, so that a later
/// unmount in one mount namespace propagates to the others.
fn prepare_run_dir() -> std::result::Result<(), (&'static str, io::Error)> {
    fs::create_dir_all(NETNS_RUN_DIR).map_err(|e| ("create /run/netns", e))?;
    let dir = path_cstring(Path::new(NETNS_RUN_DIR)).map_err(|e| ("encode /run/netns", e))?;
    let mut made_mount = false;
    loop {
        // SAFETY: valid NUL-terminated strings; null data is allowed for MS_SHARED.
        let r = unsafe {
            libc::mount(
                c"".as_ptr(),
                dir.as_ptr(),
                c"none".as_ptr(),
                libc::MS_SHARED | libc::MS_REC,
                std::ptr::null(),
            )
        };
        if r == 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINVAL) || made_mount {
            return Err(("make /run/netns a shared mount", e));
        }
        // Not a mount point yet: bind it onto itself, then retry.
        // SAFETY: valid NUL-terminated strings; null data is allowed for MS_BIND.
        let r = unsafe {
            libc::mount(
                dir.as_ptr(),
                dir.as_ptr(),
                c"none".as_ptr(),
                libc::MS_BIND | libc::MS_REC,
                std::ptr::null(),
            )
        };
        if r != 0 {
            return Err((
                "bind-mount /run/netns onto itself",
                io::Error::last_os_error(),
            ));
        }
        made_mount = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked_like_iproute2() {
        assert!(check_name("uvt-1").is_ok());
        for bad in ["", ".", "..", "a/b", "a\0b"] {
            assert!(
                matches!(check_name(bad), Err(NetnsError::InvalidName { .. })),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn not_found_message_is_actionable() {
        let e = NetnsError::NotFound { name: "foo".into() };
        assert_eq!(
            e.to_string(),
            "network namespace \"foo\" not found: is it under /run/netns? (create it with \
             \"ip netns add foo\")"
        );
    }
}
