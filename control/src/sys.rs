//! The control plane's system-call edge: small, safe wrappers over the few libc calls the
//! daemon, CLI, store and labs need (poll, resource limits, peer credentials, file locks,
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

/// Waits up to `timeout_ms` (−1: forever) until one of `fds` is readable (or hung up).
/// Returns which are; all `false` on timeout or when a signal interrupted the wait.
pub fn wait_any_readable(fds: &[BorrowedFd<'_>], timeout_ms: i32) -> io::Result<Vec<bool>> {
    let mut pfds: Vec<libc::pollfd> = fds
        .iter()
        .map(|fd| libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    let n = libc::nfds_t::try_from(pfds.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "too many fds"))?;
    // SAFETY: `pfds` is an array of `n` valid pollfds for the duration of the call, for fds
    // the caller keeps open (they are borrowed).
    let r = unsafe { libc::poll(pfds.as_mut_ptr(), n, timeout_ms) };
    if r < 0 {
        let e = io::Error::last_os_error();
        if e.kind() == io::ErrorKind::Interrupted {
            return Ok(vec![false; pfds.len()]);
        }
        return Err(e);
    }
    Ok(pfds.iter().map(|p| p.revents != 0).collect())
}

/// The process's open-file limit (`RLIMIT_NOFILE`): `(soft, hard)`.
pub fn nofile_limit() -> io::Result<(u64, u64)> {
    let mut rl = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `rl` is a writable rlimit for the call.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((rl.rlim_cur, rl.rlim_max))
}

/// Sets the soft open-file limit (`RLIMIT_NOFILE`) to `soft`, keeping the hard one. A process
/// may lower it, and raise it up to the hard limit.
pub fn set_nofile_soft_limit(soft: u64) -> io::Result<()> {
    let (_, hard) = nofile_limit()?;
    set_nofile_limits(soft, hard)
}

/// Sets both open-file limits (`RLIMIT_NOFILE`). Raising the hard limit needs
/// `CAP_SYS_RESOURCE`.
pub fn set_nofile_limits(soft: u64, hard: u64) -> io::Result<()> {
    let rl = libc::rlimit {
        rlim_cur: soft,
        rlim_max: hard,
    };
    // SAFETY: `rl` is a valid rlimit for the call.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &rl) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Raises the soft open-file limit to the hard limit; returns `(old soft, new soft)`.
pub fn raise_nofile_limit() -> io::Result<(u64, u64)> {
    let (soft, hard) = nofile_limit()?;
    if soft < hard {
        set_nofile_soft_limit(hard)?;
    }
    Ok((soft, hard.max(soft)))
}

/// How many file descriptors the process has open (entries of `/proc/self/fd`).
pub fn open_fds() -> io::Result<usize> {
    Ok(std::fs::read_dir("/proc/self/fd")?.count())
}

/// Whether `e` says the process (`EMFILE`) or the system (`ENFILE`) ran out of file
/// descriptors.
pub fn is_fd_exhaustion(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE))
}

/// Gives the heap's free memory at its top and in its free pages back to the kernel
/// (glibc's `malloc_trim(0)`; without glibc, nothing). Returns whether memory was released.
pub fn trim_heap() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: malloc_trim takes a pad size and only walks glibc's own heap under its
        // locks; it is safe to call from any thread at any time.
        unsafe { libc::malloc_trim(0) != 0 }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
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

/// Gives the calling process a mount namespace of its own (mounts no longer propagate back
/// to the host's) in which `/etc/resolv.conf` shows `content`: a file written under `tmp`,
/// bind-mounted over it and unlinked at once (the mount keeps it; nothing is left on the
/// host). Only for a single-threaded process (the CLI before it runs a command).
pub fn private_resolv_conf(content: &str, tmp: &std::path::Path) -> io::Result<()> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    // SAFETY: unshare takes a flag word; it changes only this (single-threaded) process.
    if unsafe { libc::unshare(libc::CLONE_NEWNS) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let root = c"/";
    // SAFETY: valid NUL-terminated path; null source, type and data are allowed for a
    // propagation change.
    let r = unsafe {
        libc::mount(
            std::ptr::null(),
            root.as_ptr(),
            std::ptr::null(),
            libc::MS_REC | libc::MS_SLAVE,
            std::ptr::null(),
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    let file = tmp.join(format!("uvlan-resolv-{}.conf", std::process::id()));
    std::fs::write(&file, content)?;
    let src = CString::new(file.as_os_str().as_bytes())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let dst = c"/etc/resolv.conf";
    // SAFETY: both paths are valid NUL-terminated strings for the call's duration; null
    // type and data are allowed for a bind mount.
    let r = unsafe {
        libc::mount(
            src.as_ptr(),
            dst.as_ptr(),
            std::ptr::null(),
            libc::MS_BIND,
            std::ptr::null(),
        )
    };
    let err = (r != 0).then(io::Error::last_os_error);
    let _ = std::fs::remove_file(&file);
    match err {
        Some(e) => Err(e),
        None => Ok(()),
    }
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
        let (c, d) = UnixStream::pair().unwrap();
        assert_eq!(
            wait_any_readable(&[c.as_fd(), a.as_fd()], 1000).unwrap(),
            [false, true]
        );
        drop(d); // end of file: readable
        assert_eq!(
            wait_any_readable(&[c.as_fd(), a.as_fd()], 0).unwrap(),
            [true, true]
        );
    }

    #[test]
    fn open_file_limits_read_and_raise() {
        let (soft, hard) = nofile_limit().unwrap();
        assert!(soft <= hard);
        let (_, now) = raise_nofile_limit().unwrap();
        assert_eq!(now, hard);
        assert_eq!(nofile_limit().unwrap().0, hard);
        set_nofile_soft_limit(soft).unwrap();
        assert_eq!(nofile_limit().unwrap(), (soft, hard));
        assert!(open_fds().unwrap() >= 3);
        assert!(is_fd_exhaustion(&io::Error::from_raw_os_error(
            libc::EMFILE
        )));
        assert!(!is_fd_exhaustion(&io::Error::from_raw_os_error(
            libc::ENOENT
        )));
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
}
