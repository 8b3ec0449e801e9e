//! Opening `/dev/net/tun` and `TUNSETIFF`, in the calling thread's network namespace or on
//! a short-lived thread that joined another; interface-name checks and `ifreq` helpers.

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use super::{TapError, MAX_IFNAME_LEN};

/// What the namespace thread returns.
pub(super) struct Opened {
    pub(super) fd: OwnedFd,
    pub(super) ifindex: u32,
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Mode {
    Create,
    Attach,
}

pub(super) fn zeroed_ifreq() -> libc::ifreq {
    // SAFETY: ifreq is a plain C struct/union of integers, arrays and pointers; all-zero is
    // a valid value for it.
    unsafe { std::mem::zeroed() }
}

pub(super) fn ifreq_name(ifr: &libc::ifreq) -> String {
    let bytes: Vec<u8> = ifr
        .ifr_name
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c as u8)
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

pub(super) fn check_name(name: &str) -> Result<(), TapError> {
    let bad = |reason| {
        Err(TapError::InvalidName {
            name: name.to_string(),
            reason,
        })
    };
    if name.is_empty() {
        return bad("it is empty");
    }
    if name.len() > MAX_IFNAME_LEN {
        return bad("it is longer than 15 bytes");
    }
    if name == "." || name == ".." {
        return bad("\".\" and \"..\" are not interface names");
    }
    if name
        .bytes()
        .any(|b| b == b'/' || b == b':' || b.is_ascii_whitespace() || b == 0)
    {
        return bad("it contains '/', ':', a space or a NUL byte");
    }
    Ok(())
}

fn if_index(name: &str) -> Option<u32> {
    let c = CString::new(name).ok()?;
    // SAFETY: c is a valid NUL-terminated string for the duration of the call.
    let idx = unsafe { libc::if_nametoindex(c.as_ptr()) };
    (idx != 0).then_some(idx)
}

/// Opens `/dev/net/tun` and runs `TUNSETIFF` in the calling thread's network namespace.
pub(super) fn open_tap(name: &str, multi_queue: bool, mode: Mode) -> Result<Opened, TapError> {
    check_name(name)?;
    if mode == Mode::Attach && if_index(name).is_none() {
        return Err(TapError::NotFound {
            name: name.to_string(),
        });
    }
    let file = File::options()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open("/dev/net/tun")
        .map_err(|source| TapError::TunUnavailable { source })?;
    let fd: OwnedFd = file.into();

    let mut ifr = zeroed_ifreq();
    for (dst, src) in ifr.ifr_name.iter_mut().zip(name.bytes()) {
        *dst = src as libc::c_char;
    }
    let mut flags = libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_VNET_HDR;
    if multi_queue {
        flags |= libc::IFF_MULTI_QUEUE;
    }
    if mode == Mode::Create {
        flags |= libc::IFF_TUN_EXCL;
    }
    ifr.ifr_ifru.ifru_flags = flags as libc::c_short;
    // SAFETY: TUNSETIFF reads and writes a struct ifreq through the pointer, which points to
    // a valid, aligned, exclusively borrowed ifreq.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNSETIFF, &mut ifr) };
    if r < 0 {
        let source = io::Error::last_os_error();
        let name = name.to_string();
        return Err(match (mode, source.raw_os_error()) {
            (Mode::Create, Some(libc::EBUSY)) => TapError::AlreadyExists { name },
            (Mode::Attach, Some(libc::EBUSY)) => TapError::Busy { name },
            (_, Some(libc::EINVAL)) => TapError::FlagsMismatch { name, multi_queue },
            _ => TapError::Ioctl {
                op: "TUNSETIFF",
                name,
                source,
            },
        });
    }
    let actual = ifreq_name(&ifr);
    let ifindex = if_index(&actual).ok_or_else(|| TapError::Ioctl {
        op: "if_nametoindex",
        name: actual.clone(),
        source: io::Error::last_os_error(),
    })?;
    Ok(Opened { fd, ifindex })
}

pub(super) fn open_netns_file(path: &Path) -> Result<OwnedFd, TapError> {
    File::open(path)
        .map(OwnedFd::from)
        .map_err(|source| TapError::Netns {
            path: path.to_path_buf(),
            source,
        })
}

/// Runs `f` on a new thread that first joins the network namespace `ns`. The calling
/// thread's namespace is never changed.
pub(super) fn in_netns<T: Send>(
    ns: &OwnedFd,
    path: &Path,
    f: impl FnOnce() -> Result<T, TapError> + Send,
) -> Result<T, TapError> {
    let raw = ns.as_raw_fd();
    std::thread::scope(|s| {
        let handle = std::thread::Builder::new()
            .name("uvlan-tap-netns".into())
            .spawn_scoped(s, move || {
                // SAFETY: raw is an open namespace fd borrowed from `ns`, which outlives this
                // scoped thread; setns only changes this (short-lived) thread's namespace.
                if unsafe { libc::setns(raw, libc::CLONE_NEWNET) } != 0 {
                    return Err(TapError::Netns {
                        path: path.to_path_buf(),
                        source: io::Error::last_os_error(),
                    });
                }
                f()
            })
            .map_err(|source| TapError::Thread { source })?;
        match handle.join() {
            Ok(r) => r,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        assert!(check_name("eth0").is_ok());
        assert!(check_name("tap%d").is_ok());
        assert!(matches!(
            check_name("0123456789abcdef"),
            Err(TapError::InvalidName { .. })
        ));
        assert!(check_name("").is_err());
        assert!(check_name("a/b").is_err());
        assert!(check_name("a b").is_err());
    }
}
