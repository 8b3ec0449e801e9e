//! TAP endpoints with `virtio_net_hdr` offloads, created inside a network namespace.
//!
//! This is a thin wrapper over the `/dev/net/tun` ioctls. No crate exposes the parts uvlan
//! needs (vnet header size, `TUNSETOFFLOAD`, multi-queue, netns placement, persistence).
//!
//! # Facts this module relies on (measured on Linux 6.18)
//! - The network namespace of a TAP is fixed when `/dev/net/tun` is **opened**, not at
//!   `TUNSETIFF`. [`Tap::create_in_netns`] therefore does `setns` + `open` + `TUNSETIFF` on a
//!   short-lived dedicated thread and hands the file descriptor back; the caller's threads
//!   never change namespace. The fd keeps working from any thread afterwards.
//! - `TUNSETOFFLOAD`: TSO4/TSO6 need CSUM; USO4 and USO6 are accepted only together. The
//!   offload flags say which frames *we* accept when *reading* (frames sent by the namespace's
//!   stack may then carry partial checksums and GSO super-frames). Frames we *write* may always
//!   carry `NEEDS_CSUM` or GSO metadata.
//! - A persistent TAP (`TUNSETPERSIST`) survives its fds; a new fd opened inside the same
//!   namespace re-attaches with `TUNSETIFF` and the same name and flags.
//! - MAC, MTU, addresses and link state are left to netlink (control plane): `SIOCSIFHWADDR`
//!   through the TAP fd is not reliable once namespaces are involved.
//!
//! # Header size
//! The vnet header is 12 bytes: `struct virtio_net_hdr_v1` (virtio 1.0), i.e. the 10-byte
//! legacy header plus `num_buffers`. The kernel ignores `num_buffers` on TAP writes and does
//! not promise to fill it on reads, so [`VnetHdr`] skips it. 12 keeps the layout identical to
//! what vhost/virtio 1.0 use (and to what was measured). The header is forced little-endian
//! with `TUNSETVNETLE`, so the byte order is the same on every host.
//!
//! Files: this one holds the errors, options and [`Tap`] itself; `offloads.rs` the
//! [`Offloads`] set; `batch.rs` the [`RxBatch`] buffers; `open.rs` opening the device
//! (in another namespace too).

mod batch;
mod offloads;
mod open;

pub use batch::RxBatch;
pub use offloads::Offloads;

use open::{ifreq_name, in_netns, open_netns_file, open_tap, zeroed_ifreq, Mode, Opened};

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Size in bytes of the vnet header prepended to every frame (`virtio_net_hdr_v1`).
pub const VNET_HDR_LEN: usize = 12;

/// A buffer of this size holds any frame the TAP can hand over, GSO super-frames included
/// (64 KiB GSO limit + Ethernet header + one VLAN tag).
pub const MAX_FRAME_LEN: usize = 65_536 + 14 + 4;

/// Longest interface name Linux accepts (`IFNAMSIZ` - 1).
pub const MAX_IFNAME_LEN: usize = 15;

/// Errors from creating, attaching or configuring a TAP.
#[derive(Debug, thiserror::Error)]
pub enum TapError {
    /// The interface name cannot be used.
    #[error("invalid TAP name {name:?}: {reason}")]
    InvalidName {
        /// The rejected name.
        name: String,
        /// Why it was rejected.
        reason: &'static str,
    },
    /// `/dev/net/tun` could not be opened.
    #[error(
        "cannot open /dev/net/tun: {source} (is the tun module loaded and are you root / \
         CAP_NET_ADMIN?)"
    )]
    TunUnavailable {
        /// The `open` error.
        source: io::Error,
    },
    /// The network namespace file could not be opened or entered.
    #[error(
        "cannot enter network namespace {path:?}: {source} (does the file exist, e.g. \
         /run/netns/NAME or /proc/PID/ns/net, and are you root?)"
    )]
    Netns {
        /// The namespace file.
        path: PathBuf,
        /// The `open`/`setns` error.
        source: io::Error,
    },
    /// `create` found an interface with that name already.
    #[error(
        "an interface named {name:?} already exists in this namespace: pick another name, or \
         use Tap::attach to re-attach to a persistent TAP"
    )]
    AlreadyExists {
        /// The interface name.
        name: String,
    },
    /// `attach` found no interface with that name.
    #[error(
        "no interface named {name:?} in this namespace: was the TAP persistent, and is this the \
         namespace it was created in?"
    )]
    NotFound {
        /// The interface name.
        name: String,
    },
    /// The TAP is single-queue and already has an fd attached.
    #[error(
        "TAP {name:?} is busy: a single-queue TAP accepts one fd at a time (close the other \
         one, or create the TAP with multi_queue)"
    )]
    Busy {
        /// The interface name.
        name: String,
    },
    /// The existing device was created with different flags (TUN vs TAP, multi-queue).
    #[error(
        "interface {name:?} exists but does not match the requested flags (TAP, multi_queue = \
         {multi_queue}): it is not a TAP, or it was created with a different multi-queue \
         setting"
    )]
    FlagsMismatch {
        /// The interface name.
        name: String,
        /// Whether multi-queue was requested.
        multi_queue: bool,
    },
    /// Another ioctl failed.
    #[error("{op} on TAP {name:?} failed: {source}")]
    Ioctl {
        /// The ioctl that failed.
        op: &'static str,
        /// The interface name (or the requested pattern).
        name: String,
        /// The OS error.
        source: io::Error,
    },
    /// The helper thread that enters the namespace could not be started.
    #[error("cannot start the namespace helper thread: {source}")]
    Thread {
        /// The spawn error.
        source: io::Error,
    },
}

/// How to create or attach a TAP.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TapOptions {
    /// Interface name for [`Tap::create`]: at most 15 bytes; may contain one `%d` for the
    /// kernel to fill in. `None` lets the kernel pick `tap%d`. Ignored by `attach`.
    pub name: Option<String>,
    /// Create (or attach to) a multi-queue TAP (`IFF_MULTI_QUEUE`).
    pub multi_queue: bool,
    /// Offloads to request; refused sets fall back (see [`Tap::set_offloads`]).
    pub offloads: Offloads,
    /// `true` sets `TUNSETPERSIST` so the device outlives its fds. `false` leaves the
    /// device's setting as it is (a new device is not persistent); use
    /// [`Tap::set_persist`] to clear it.
    pub persist: bool,
    /// Carrier state to set (`TUNSETCARRIER`).
    pub carrier: bool,
}

impl Default for TapOptions {
    fn default() -> Self {
        TapOptions {
            name: None,
            multi_queue: false,
            offloads: Offloads::DEFAULT,
            persist: false,
            carrier: true,
        }
    }
}

pub use crate::offload::VnetHdr;

/// An open TAP queue (one fd) with a 12-byte vnet header and non-blocking I/O.
#[derive(Debug)]
pub struct Tap {
    fd: OwnedFd,
    ifindex: u32,
    multi_queue: bool,
    offloads: Offloads,
}

impl Tap {
    /// Creates a new TAP in the calling thread's network namespace.
    ///
    /// Fails with [`TapError::AlreadyExists`] if the name is taken (`IFF_TUN_EXCL`).
    pub fn create(opts: &TapOptions) -> Result<Tap, TapError> {
        let name = opts.name.clone().unwrap_or_else(|| "tap%d".to_string());
        let opened = open_tap(&name, opts.multi_queue, Mode::Create)?;
        Tap::configure(opened, opts)
    }

    /// Attaches a new fd to an existing TAP (e.g. a persistent one after a daemon restart)
    /// in the calling thread's network namespace, with the same flags it was created with.
    pub fn attach(name: &str, opts: &TapOptions) -> Result<Tap, TapError> {
        let opened = open_tap(name, opts.multi_queue, Mode::Attach)?;
        Tap::configure(opened, opts)
    }

    /// Like [`Tap::create`], but inside the network namespace `netns_file`
    /// (`/run/netns/NAME`, `/proc/PID/ns/net`). A short-lived thread enters the namespace,
    /// opens `/dev/net/tun` and creates the device; the calling thread never switches.
    pub fn create_in_netns(netns_file: &Path, opts: &TapOptions) -> Result<Tap, TapError> {
        let name = opts.name.clone().unwrap_or_else(|| "tap%d".to_string());
        let ns = open_netns_file(netns_file)?;
        let opened = in_netns(&ns, netns_file, || {
            open_tap(&name, opts.multi_queue, Mode::Create)
        })?;
        Tap::configure(opened, opts)
    }

    /// Like [`Tap::attach`], but inside the network namespace `netns_file`.
    pub fn attach_in_netns(
        netns_file: &Path,
        name: &str,
        opts: &TapOptions,
    ) -> Result<Tap, TapError> {
        let ns = open_netns_file(netns_file)?;
        let opened = in_netns(&ns, netns_file, || {
            open_tap(name, opts.multi_queue, Mode::Attach)
        })?;
        Tap::configure(opened, opts)
    }

    /// Opens one more queue of this multi-queue TAP, in the namespace the TAP lives in
    /// (found with `TUNGETDEVNETNS`). Offloads and vnet header size are per device and are
    /// shared with this queue.
    pub fn open_queue(&self) -> Result<Tap, TapError> {
        let name = self.name()?;
        let ns = self.netns()?;
        let opened = in_netns(&ns, Path::new("<TUNGETDEVNETNS>"), || {
            open_tap(&name, self.multi_queue, Mode::Attach)
        })?;
        Ok(Tap {
            fd: opened.fd,
            ifindex: opened.ifindex,
            multi_queue: self.multi_queue,
            offloads: self.offloads,
        })
    }

    fn configure(opened: Opened, opts: &TapOptions) -> Result<Tap, TapError> {
        let mut tap = Tap {
            fd: opened.fd,
            ifindex: opened.ifindex,
            multi_queue: opts.multi_queue,
            offloads: Offloads::NONE,
        };
        let hdr_len = VNET_HDR_LEN as libc::c_int;
        // SAFETY: TUNSETVNETHDRSZ reads one int through its argument.
        unsafe { tap.ioctl_ptr("TUNSETVNETHDRSZ", libc::TUNSETVNETHDRSZ, &hdr_len) }?;
        let le: libc::c_int = 1;
        // SAFETY: TUNSETVNETLE reads one int through its argument.
        if let Err(e) = unsafe { tap.ioctl_ptr("TUNSETVNETLE", libc::TUNSETVNETLE, &le) } {
            // Little-endian hosts use LE headers anyway; only big-endian hosts need this.
            if cfg!(target_endian = "big") {
                return Err(e);
            }
        }
        tap.set_offloads(opts.offloads)?;
        if opts.persist {
            tap.set_persist(true)?;
        }
        tap.set_carrier(opts.carrier)?;
        Ok(tap)
    }

    /// The interface name now (read through the fd with `TUNGETIFF`, so renames show).
    pub fn name(&self) -> Result<String, TapError> {
        Ok(self.getiff()?.0)
    }

    /// The `IFF_*` flags of the device as `TUNGETIFF` reports them (e.g. `0x5002` for
    /// `IFF_TAP|IFF_NO_PI|IFF_VNET_HDR`).
    pub fn tun_flags(&self) -> Result<u16, TapError> {
        Ok(self.getiff()?.1)
    }

    /// Interface index in the TAP's namespace, as seen when this fd was opened.
    pub fn ifindex(&self) -> u32 {
        self.ifindex
    }

    /// True if the device is multi-queue.
    pub fn is_multi_queue(&self) -> bool {
        self.multi_queue
    }

    /// The offloads in force (after any fallback).
    pub fn offloads(&self) -> Offloads {
        self.offloads
    }

    /// Requests offloads; if the kernel refuses the set, tries without USO, then CSUM alone,
    /// then none. Returns (and remembers) the set in force.
    pub fn set_offloads(&mut self, want: Offloads) -> Result<Offloads, TapError> {
        let mut last_err = None;
        for step in want.fallback_ladder() {
            // SAFETY: TUNSETOFFLOAD takes its argument (the offload bits) by value.
            match unsafe {
                self.ioctl_val("TUNSETOFFLOAD", libc::TUNSETOFFLOAD, step.bits().into())
            } {
                Ok(()) => {
                    self.offloads = step;
                    return Ok(step);
                }
                Err(TapError::Ioctl { source, .. })
                    if source.raw_os_error() == Some(libc::EINVAL) =>
                {
                    last_err = Some(source);
                }
                Err(e) => return Err(e),
            }
        }
        Err(TapError::Ioctl {
            op: "TUNSETOFFLOAD",
            name: self.name_or_unknown(),
            source: last_err.unwrap_or_else(|| io::Error::from_raw_os_error(libc::EINVAL)),
        })
    }

    /// Sets or clears `TUNSETPERSIST`: a persistent TAP outlives its fds (and this process).
    pub fn set_persist(&self, persist: bool) -> Result<(), TapError> {
        // SAFETY: TUNSETPERSIST takes its argument (0 or 1) by value.
        unsafe { self.ioctl_val("TUNSETPERSIST", libc::TUNSETPERSIST, u64::from(persist)) }
    }

    /// Turns the carrier on or off (`TUNSETCARRIER`); off shows as `NO-CARRIER` inside.
    pub fn set_carrier(&self, on: bool) -> Result<(), TapError> {
        let v: libc::c_int = on.into();
        // SAFETY: TUNSETCARRIER reads one int through its argument.
        unsafe { self.ioctl_ptr("TUNSETCARRIER", libc::TUNSETCARRIER, &v) }
    }

    /// A handle on the network namespace the TAP lives in (`TUNGETDEVNETNS`).
    pub fn netns(&self) -> Result<OwnedFd, TapError> {
        // SAFETY: TUNGETDEVNETNS takes no argument and returns a new fd or -1; the fd we pass
        // is owned by self and open.
        let r = unsafe { libc::ioctl(self.fd.as_raw_fd(), libc::TUNGETDEVNETNS) };
        if r < 0 {
            return Err(self.ioctl_err("TUNGETDEVNETNS"));
        }
        // SAFETY: r is a fresh fd returned by the kernel and owned by nobody else.
        Ok(unsafe { OwnedFd::from_raw_fd(r) })
    }

    /// Reads one frame. Returns its header and the frame bytes (a prefix of `buf`).
    ///
    /// Non-blocking: `ErrorKind::WouldBlock` when no frame is queued. A frame longer than
    /// `buf` is truncated **silently** (measured: `readv` returns the truncated length), so
    /// size buffers with [`MAX_FRAME_LEN`] when GSO offloads are on, or MTU + 18 otherwise.
    pub fn read_frame<'a>(&self, buf: &'a mut [u8]) -> io::Result<(VnetHdr, &'a [u8])> {
        let (hdr, len) = self.read_into(buf)?;
        let frame = buf.get(..len).ok_or_else(|| truncated_read(len))?;
        Ok((hdr, frame))
    }

    fn read_into(&self, buf: &mut [u8]) -> io::Result<(VnetHdr, usize)> {
        let mut hdr = [0u8; VNET_HDR_LEN];
        let iov = [
            libc::iovec {
                iov_base: hdr.as_mut_ptr().cast(),
                iov_len: hdr.len(),
            },
            libc::iovec {
                iov_base: buf.as_mut_ptr().cast(),
                iov_len: buf.len(),
            },
        ];
        // SAFETY: both iovecs point into live, exclusively borrowed buffers of the stated
        // lengths; the kernel writes at most that many bytes into them.
        let n = unsafe { libc::readv(self.fd.as_raw_fd(), iov.as_ptr(), 2) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let n = n as usize;
        if n < VNET_HDR_LEN {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "TAP read returned {n} bytes, shorter than the {VNET_HDR_LEN}-byte vnet header"
                ),
            ));
        }
        Ok((VnetHdr::from_bytes(&hdr), n - VNET_HDR_LEN))
    }

    /// Reads frames until `batch` is full or none is queued; returns how many were read
    /// (0 if none: never `WouldBlock`). Other errors are returned only if no frame was read.
    pub fn read_batch(&self, batch: &mut RxBatch) -> io::Result<usize> {
        self.read_batch_max(batch, usize::MAX)
    }

    /// Like [`Tap::read_batch`], reading at most `max` frames (a per-turn budget).
    pub fn read_batch_max(&self, batch: &mut RxBatch, max: usize) -> io::Result<usize> {
        batch.count = 0;
        for i in 0..batch.bufs.len().min(max) {
            let Some(buf) = batch.bufs.get_mut(i) else {
                break;
            };
            match self.read_into(buf) {
                Ok((hdr, len)) => {
                    if let (Some(h), Some(l)) = (batch.hdrs.get_mut(i), batch.lens.get_mut(i)) {
                        *h = hdr;
                        *l = len;
                    }
                    batch.count = i + 1;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => break,
                Err(e) => {
                    if batch.count == 0 {
                        return Err(e);
                    }
                    break;
                }
            }
        }
        Ok(batch.count)
    }

    /// Writes one frame with its header (one `writev`, no copy).
    ///
    /// `ErrorKind::WouldBlock` if the device queue is full; `EIO` if the interface is down;
    /// `EINVAL` if the header is inconsistent with the frame.
    pub fn write_frame(&self, hdr: &VnetHdr, frame: &[u8]) -> io::Result<()> {
        let hdr_bytes = hdr.to_bytes();
        let iov = [
            libc::iovec {
                iov_base: hdr_bytes.as_ptr() as *mut libc::c_void,
                iov_len: hdr_bytes.len(),
            },
            libc::iovec {
                iov_base: frame.as_ptr() as *mut libc::c_void,
                iov_len: frame.len(),
            },
        ];
        // SAFETY: the iovecs point into live buffers of the stated lengths; writev only
        // reads from them.
        let n = unsafe { libc::writev(self.fd.as_raw_fd(), iov.as_ptr(), 2) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let want = VNET_HDR_LEN + frame.len();
        if n as usize != want {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                format!("TAP accepted {n} of {want} bytes"),
            ));
        }
        Ok(())
    }

    /// Waits until a frame can be read, at most `timeout` (`None`: forever). Returns
    /// `false` on timeout.
    pub fn wait_readable(&self, timeout: Option<Duration>) -> io::Result<bool> {
        let ms: libc::c_int = match timeout {
            None => -1,
            Some(d) => d.as_millis().min(libc::c_int::MAX as u128) as libc::c_int,
        };
        let mut pfd = libc::pollfd {
            fd: self.fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        loop {
            // SAFETY: pfd is a valid pollfd array of length 1 for the duration of the call.
            let r = unsafe { libc::poll(&mut pfd, 1, ms) };
            if r < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            return Ok(r > 0 && pfd.revents & libc::POLLIN != 0);
        }
    }

    fn getiff(&self) -> Result<(String, u16), TapError> {
        let mut ifr = zeroed_ifreq();
        // SAFETY: TUNGETIFF writes a struct ifreq into the pointed-to, properly sized and
        // aligned value.
        let r = unsafe { libc::ioctl(self.fd.as_raw_fd(), libc::TUNGETIFF, &mut ifr) };
        if r < 0 {
            return Err(TapError::Ioctl {
                op: "TUNGETIFF",
                name: format!("fd {}", self.fd.as_raw_fd()),
                source: io::Error::last_os_error(),
            });
        }
        // SAFETY: TUNGETIFF fills ifru_flags; every bit pattern is a valid c_short.
        let flags = unsafe { ifr.ifr_ifru.ifru_flags } as u16;
        Ok((ifreq_name(&ifr), flags))
    }

    fn name_or_unknown(&self) -> String {
        self.name()
            .unwrap_or_else(|_| format!("fd {}", self.fd.as_raw_fd()))
    }

    fn ioctl_err(&self, op: &'static str) -> TapError {
        let source = io::Error::last_os_error();
        TapError::Ioctl {
            op,
            name: self.name_or_unknown(),
            source,
        }
    }

    /// `ioctl(fd, req, val)` with the argument passed by value.
    ///
    /// # Safety
    ///
    /// `req` must be a TUN ioctl that takes its argument by value (an unsigned long, such as
    /// `TUNSETOFFLOAD` or `TUNSETPERSIST`) and accesses no memory through it.
    unsafe fn ioctl_val(
        &self,
        op: &'static str,
        req: libc::Ioctl,
        val: u64,
    ) -> Result<(), TapError> {
        // SAFETY: `req` takes its argument by value (this function's contract), so no memory
        // is accessed through it.
        let r = unsafe { libc::ioctl(self.fd.as_raw_fd(), req, val as libc::c_ulong) };
        if r < 0 {
            return Err(self.ioctl_err(op));
        }
        Ok(())
    }

    /// `ioctl(fd, req, &val)` for a request that reads one `int`.
    ///
    /// # Safety
    ///
    /// `req` must be a TUN ioctl that reads exactly one `int` through its pointer argument
    /// and writes nothing (such as `TUNSETVNETHDRSZ`, `TUNSETVNETLE`, `TUNSETCARRIER`).
    unsafe fn ioctl_ptr(
        &self,
        op: &'static str,
        req: libc::Ioctl,
        val: &libc::c_int,
    ) -> Result<(), TapError> {
        // SAFETY: `req` reads one int through the pointer (this function's contract), which
        // is valid and aligned for the duration of the call.
        let r = unsafe { libc::ioctl(self.fd.as_raw_fd(), req, val as *const libc::c_int) };
        if r < 0 {
            return Err(self.ioctl_err(op));
        }
        Ok(())
    }
}

impl AsFd for Tap {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl AsRawFd for Tap {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

fn truncated_read(len: usize) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("TAP read reported {len} frame bytes, more than the buffer"),
    )
}
