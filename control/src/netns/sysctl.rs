//! Per-namespace sysctls under `/proc/sys`, written from a thread inside the namespace.
//!
//! # Writes through a procfs of their own
//! The kernel keeps one dentry per namespace for each per-namespace directory of
//! `/proc/sys` (`net/ipv4`, `net/ipv6`, ...), all under the same parent and name, so the
//! first lookup in a new namespace walks a hash chain as long as the number of namespaces
//! that ever looked there: milliseconds each with a thousand endpoint namespaces. Writes
//! therefore go through one long-lived worker thread that has a mount namespace of its own
//! and mounts a fresh procfs (a new superblock, so an empty dentry cache) for each write,
//! entering the target network namespace for it and leaving it again afterwards. The
//! worker waits on a channel (no timeout) when there is nothing to write. Where it cannot
//! be set up (no privilege for a mount namespace), writes fall back to a short-lived thread
//! in the namespace and the shared `/proc`.

use std::fs;
use std::io::{self, Write};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Mutex, OnceLock};

use super::link::check_ifname;
use super::{Netns, NetnsError, Result};

fn sysctl_path(key: &str) -> Result<PathBuf> {
    let bad = key.is_empty()
        || key.starts_with('/')
        || key
            .split('/')
            .any(|c| c.is_empty() || c == "." || c == "..");
    if bad {
        return Err(NetnsError::InvalidArgument(format!(
            "sysctl key {key:?}: use a relative path below /proc/sys such as \
             \"net/ipv6/conf/eth0/disable_ipv6\""
        )));
    }
    Ok(PathBuf::from("/proc/sys").join(key))
}

/// Writes `value` to `/proc/sys/KEY` inside `ns` (KEY like `net/ipv4/conf/eth0/arp_notify`).
///
/// The file is opened and written on a thread that entered `ns`: net sysctls resolve
/// against the opening thread's namespace.
pub fn sysctl_write(ns: &Netns, key: &str, value: &str) -> Result<()> {
    let path = sysctl_path(key)?;
    let err = |source| NetnsError::Sysctl {
        key: key.to_string(),
        ns: ns.label().to_string(),
        source,
    };
    if let Some(w) = worker() {
        if let Some(r) = w.write(ns, &path, value) {
            return r.map_err(err);
        }
    }
    let value = value.to_string();
    ns.run(move || -> std::io::Result<()> {
        let mut f = fs::OpenOptions::new().write(true).open(&path)?;
        f.write_all(value.as_bytes())
    })?
    .map_err(err)
}

/// One write for the worker.
struct Job {
    /// The target namespace's fd, kept open by the caller until the reply (it waits).
    netns: RawFd,
    path: PathBuf,
    value: String,
    reply: mpsc::Sender<io::Result<()>>,
}

/// The sysctl worker (see the module docs).
struct Worker {
    jobs: Mutex<mpsc::Sender<Job>>,
}

static WORKER: OnceLock<Option<Worker>> = OnceLock::new();

/// The worker, started on first use; `None` where it cannot be set up.
fn worker() -> Option<&'static Worker> {
    WORKER.get_or_init(|| Worker::start().ok()).as_ref()
}

fn last_err() -> io::Error {
    io::Error::last_os_error()
}

/// `mount(2)` of a fresh procfs on `/proc` (in the worker's own mount namespace).
fn mount_proc() -> io::Result<()> {
    let flags = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
    // SAFETY: valid NUL-terminated strings and a null data pointer, as mount(2) allows.
    let r = unsafe {
        libc::mount(
            c"proc".as_ptr(),
            c"/proc".as_ptr(),
            c"proc".as_ptr(),
            flags,
            std::ptr::null(),
        )
    };
    if r != 0 {
        return Err(last_err());
    }
    Ok(())
}

/// Detaches the procfs mounted on `/proc` by [`mount_proc`].
fn umount_proc() -> io::Result<()> {
    // SAFETY: a valid NUL-terminated path; MNT_DETACH only affects this mount namespace.
    if unsafe { libc::umount2(c"/proc".as_ptr(), libc::MNT_DETACH) } != 0 {
        return Err(last_err());
    }
    Ok(())
}

/// `setns(fd, CLONE_NEWNET)` for the calling thread.
fn enter(fd: RawFd) -> io::Result<()> {
    // SAFETY: setns on an fd the caller keeps open; it changes only this thread's
    // network namespace.
    if unsafe { libc::setns(fd, libc::CLONE_NEWNET) } != 0 {
        return Err(last_err());
    }
    Ok(())
}

impl Worker {
    fn start() -> io::Result<Worker> {
        let (tx, rx) = mpsc::channel::<Job>();
        let (ready_tx, ready_rx) = mpsc::channel::<io::Result<()>>();
        std::thread::Builder::new()
            .name("uvlan-sysctl".to_string())
            .spawn(move || {
                let ready = Worker::setup();
                let ok = ready.is_ok();
                let _ = ready_tx.send(ready);
                if !ok {
                    return;
                }
                for job in rx {
                    let r = Worker::run(&job);
                    let _ = job.reply.send(r);
                }
            })?;
        ready_rx
            .recv()
            .map_err(|_| io::Error::other("the sysctl worker ended at start"))??;
        Ok(Worker {
            jobs: Mutex::new(tx),
        })
    }

    /// On the worker thread: a mount namespace of its own (its mounts private, so nothing
    /// it mounts is seen elsewhere).
    fn setup() -> io::Result<()> {
        // SAFETY: unshare(2) with flags only; CLONE_FS and CLONE_NEWNS affect only this
        // thread (its own fs_struct and mount namespace from here on).
        if unsafe { libc::unshare(libc::CLONE_FS | libc::CLONE_NEWNS) } != 0 {
            return Err(last_err());
        }
        // SAFETY: valid NUL-terminated path; null source, type and data are allowed for a
        // propagation change, which only affects this thread's new mount namespace.
        let r = unsafe {
            libc::mount(
                std::ptr::null(),
                c"/".as_ptr(),
                std::ptr::null(),
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null(),
            )
        };
        if r != 0 {
            return Err(last_err());
        }
        // Check once that a procfs can be mounted here.
        mount_proc()?;
        umount_proc()
    }

    /// On the worker thread: one write in `job.netns`, through a fresh procfs.
    fn run(job: &Job) -> io::Result<()> {
        enter(job.netns)?;
        let r = mount_proc().and_then(|()| {
            let w = fs::OpenOptions::new()
                .write(true)
                .open(&job.path)
                .and_then(|mut f| f.write_all(job.value.as_bytes()));
            let u = umount_proc();
            w.and(u)
        });
        // Back to the process's namespace (its main thread's; no descriptor is kept for
        // it): the worker must not keep the target namespace alive.
        let home: OwnedFd = fs::File::open("/proc/self/ns/net")?.into();
        enter(home.as_raw_fd())?;
        r
    }

    /// Writes through the worker; `None` if the worker is gone (the caller falls back).
    fn write(&self, ns: &Netns, path: &Path, value: &str) -> Option<io::Result<()>> {
        let (tx, rx) = mpsc::channel();
        let job = Job {
            netns: ns.fd.as_raw_fd(),
            path: path.to_path_buf(),
            value: value.to_string(),
            reply: tx,
        };
        let sent = self
            .jobs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .send(job);
        sent.ok()?;
        // `ns` (and so its fd) outlives this wait.
        rx.recv().ok()
    }
}

/// Reads `/proc/sys/KEY` inside `ns` (trailing newline removed).
pub fn sysctl_read(ns: &Netns, key: &str) -> Result<String> {
    let path = sysctl_path(key)?;
    ns.run(move || fs::read_to_string(&path))?
        .map(|s| s.trim_end().to_string())
        .map_err(|source| NetnsError::Sysctl {
            key: key.to_string(),
            ns: ns.label().to_string(),
            source,
        })
}

/// `net.ipv6.conf.IF.disable_ipv6` inside `ns`.
pub fn set_ipv6_disabled(ns: &Netns, ifname: &str, disabled: bool) -> Result<()> {
    check_ifname(ifname)?;
    let v = if disabled { "1" } else { "0" };
    sysctl_write(ns, &format!("net/ipv6/conf/{ifname}/disable_ipv6"), v)
}

/// `net.ipv6.conf.IF.accept_dad` inside `ns` (0 = no DAD, 1 = DAD, 2 = DAD and disable
/// IPv6 on a duplicate link-local).
pub fn set_accept_dad(ns: &Netns, ifname: &str, value: u8) -> Result<()> {
    check_ifname(ifname)?;
    if value > 2 {
        return Err(NetnsError::InvalidArgument(format!(
            "accept_dad {value}: use 0, 1 or 2"
        )));
    }
    sysctl_write(
        ns,
        &format!("net/ipv6/conf/{ifname}/accept_dad"),
        &value.to_string(),
    )
}

/// `net.ipv4.conf.IF.arp_notify` inside `ns` (gratuitous ARP when the link comes up or its
/// MAC changes; Docker sets it on endpoints).
pub fn set_arp_notify(ns: &Netns, ifname: &str, on: bool) -> Result<()> {
    check_ifname(ifname)?;
    let v = if on { "1" } else { "0" };
    sysctl_write(ns, &format!("net/ipv4/conf/{ifname}/arp_notify"), v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_cannot_escape_proc_sys() {
        for bad in ["", "/etc/passwd", "net/../../etc", "net//x", "./net"] {
            assert!(sysctl_path(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            sysctl_path("net/ipv4/ip_forward").unwrap(),
            PathBuf::from("/proc/sys/net/ipv4/ip_forward")
        );
    }
}
