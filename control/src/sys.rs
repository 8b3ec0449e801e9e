//! The control plane's system-call edge: small, safe wrappers over the few libc calls the
//! daemon, CLI, store and labs need (signals, poll, pidfd, peer credentials, file locks,
//! `setns`). Together with `netns` (namespaces and netlink) this is where the control plane's
//! `unsafe` lives; every block says why it holds.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

/// Whether the process runs as root (effective uid 0).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Sends `sig` to process `pid`.
pub fn send_signal(pid: u32, sig: libc::c_int) -> io::Result<()> {
    let pid = libc::pid_t::try_from(pid)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "pid out of range"))?;
    // SAFETY: kill(2) takes plain integers; no memory is passed.
    if unsafe { libc::kill(pid, sig) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Installs `handler` for each of `sigs` (with `sigaction`, no flags, an empty mask). The
/// handler must be async-signal-safe (e.g. store to an atomic, or nothing at all).
pub fn on_signals(sigs: &[libc::c_int], handler: extern "C" fn(libc::c_int)) {
    for &sig in sigs {
        // SAFETY: the sigaction struct is fully initialised (zeroed, then the handler and an
        // empty mask set) for the call; callers pass async-signal-safe handlers.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = handler as usize;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(sig, &sa, std::ptr::null_mut());
        }
    }
}

/// Waits up to `timeout_ms` (−1: forever) for `fd` to become readable (or hang up).
/// `Ok(false)` on timeout or when a signal interrupted the wait.
pub fn wait_readable(fd: BorrowedFd<'_>, timeout_ms: i32) -> io::Result<bool> {
    let mut pfd = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: `pfd` is one valid pollfd for the duration of the call, for an fd the caller
    // keeps open (it is borrowed).
    let r = unsafe { libc::poll(&mut pfd, 1, timeout_ms) };
    if r < 0 {
        let e = io::Error::last_os_error();
        if e.kind() == io::ErrorKind::Interrupted {
            return Ok(false);
        }
        return Err(e);
    }
    Ok(r > 0)
}

/// `poll(2)` on `fds` for up to `timeout_ms` (−1: forever); fills each `revents`. Returns
/// how many are ready; `Ok(0)` on timeout or when a signal interrupted the wait.
pub fn poll(fds: &mut [libc::pollfd], timeout_ms: i32) -> io::Result<usize> {
    let n = libc::nfds_t::try_from(fds.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "too many fds to poll"))?;
    // SAFETY: `fds` is a valid, writable array of `n` pollfds for the duration of the call;
    // the caller keeps the fds open (it holds their owners).
    let r = unsafe { libc::poll(fds.as_mut_ptr(), n, timeout_ms) };
    if r < 0 {
        let e = io::Error::last_os_error();
        if e.kind() == io::ErrorKind::Interrupted {
            return Ok(0);
        }
        return Err(e);
    }
    Ok(r as usize)
}

/// Blocks until process `pid` exits (pidfd + poll). Returns at once if it is already gone.
pub fn wait_for_exit(pid: i32) {
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1; no memory is
    // passed.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    let Ok(fd) = libc::c_int::try_from(fd) else {
        return;
    };
    if fd < 0 {
        return; // ESRCH: already gone
    }
    // SAFETY: `fd` was just returned by pidfd_open and nothing else owns it.
    let owned = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    use std::os::fd::AsFd;
    loop {
        match wait_readable(owned.as_fd(), -1) {
            Ok(true) | Err(_) => break,
            Ok(false) => continue, // EINTR
        }
    }
}

/// The uid of the process at the other end of a unix socket (`SO_PEERCRED`).
pub fn peer_uid(fd: BorrowedFd<'_>) -> io::Result<u32> {
    let mut cred = libc::ucred {
        pid: 0,
        uid: u32::MAX,
        gid: u32::MAX,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: `cred` is a writable ucred and `len` holds its size, as SO_PEERCRED expects;
    // the fd is borrowed, so it stays open for the call.
    let r = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(cred.uid)
}

/// Takes an exclusive `flock` without waiting: `Ok(false)` when another process holds it. The
/// lock lasts as long as the file stays open.
pub fn try_lock_exclusive(fd: BorrowedFd<'_>) -> io::Result<bool> {
    // SAFETY: flock on a borrowed (open) fd; no memory is involved.
    let r = unsafe { libc::flock(fd.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if r == 0 {
        return Ok(true);
    }
    let e = io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
        Ok(false)
    } else {
        Err(e)
    }
}

/// Moves the calling thread into the network namespace `fd` refers to. Only for threads
/// that may change namespace (the CLI's single thread before it execs a command).
pub fn enter_netns(fd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: setns on a borrowed, open namespace fd; it changes only the calling thread's
    // network namespace.
    if unsafe { libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;
    use std::os::unix::net::UnixStream;

    #[test]
    fn peer_uid_is_our_uid_and_readability_is_seen() {
        let (a, b) = UnixStream::pair().unwrap();
        let me = std::fs::metadata("/proc/self")
            .map(|m| std::os::unix::fs::MetadataExt::uid(&m))
            .unwrap();
        assert_eq!(peer_uid(a.as_fd()).unwrap(), me);
        assert!(!wait_readable(a.as_fd(), 0).unwrap());
        std::io::Write::write_all(&mut &b, b"x").unwrap();
        assert!(wait_readable(a.as_fd(), 1000).unwrap());
    }

    #[test]
    fn locks_exclude_other_open_files() {
        let p = std::env::temp_dir().join(format!("uvlan-sys-lock-{}", std::process::id()));
        let f1 = std::fs::File::create(&p).unwrap();
        let f2 = std::fs::File::open(&p).unwrap();
        assert!(try_lock_exclusive(f1.as_fd()).unwrap());
        assert!(!try_lock_exclusive(f2.as_fd()).unwrap());
        drop(f1);
        assert!(try_lock_exclusive(f2.as_fd()).unwrap());
        let _ = std::fs::remove_file(p);
    }

    #[test]
    fn waiting_for_a_finished_process_returns() {
        let mut c = std::process::Command::new("true").spawn().unwrap();
        let pid = c.id() as i32;
        wait_for_exit(pid);
        c.wait().unwrap();
        wait_for_exit(i32::MAX); // no such process
    }
}
