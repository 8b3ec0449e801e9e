//! TAP endpoints with `virtio_net_hdr` offloads, created inside a network namespace.
//!
//! This is a thin wrapper over the `/dev/net/tun` ioctls. No crate exposes the parts uvlan
//! needs (vnet header size, `TUNSETOFFLOAD`, multi-queue, netns placement, persistence).
//!
//! # Facts this module relies on (measured on Linux 6.18, see research/io-feasibility.md §4)
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

use std::ffi::CString;
use std::fmt;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
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

/// Offload features accepted by our side of the TAP (`TUNSETOFFLOAD`).
///
/// Enabling a feature tells the namespace's stack that frames it sends through this TAP may
/// be left with partial checksums (`CSUM`) or as GSO super-frames (the others).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Offloads(u32);

impl Offloads {
    /// No offloads: every frame read is complete and checksummed.
    pub const NONE: Offloads = Offloads(0);
    /// Partial checksums (`TUN_F_CSUM`).
    pub const CSUM: Offloads = Offloads(libc::TUN_F_CSUM);
    /// TCP over IPv4 segmentation (`TUN_F_TSO4`); needs `CSUM`.
    pub const TSO4: Offloads = Offloads(libc::TUN_F_TSO4);
    /// TCP over IPv6 segmentation (`TUN_F_TSO6`); needs `CSUM`.
    pub const TSO6: Offloads = Offloads(libc::TUN_F_TSO6);
    /// TSO with ECN (CWR) bits (`TUN_F_TSO_ECN`); needs TSO4 or TSO6.
    pub const TSO_ECN: Offloads = Offloads(libc::TUN_F_TSO_ECN);
    /// UDP over IPv4 segmentation (`TUN_F_USO4`); the kernel wants it together with `USO6`.
    pub const USO4: Offloads = Offloads(libc::TUN_F_USO4);
    /// UDP over IPv6 segmentation (`TUN_F_USO6`); the kernel wants it together with `USO4`.
    pub const USO6: Offloads = Offloads(libc::TUN_F_USO6);
    /// What uvlan asks for by default: `CSUM|TSO4|TSO6|USO4|USO6`.
    pub const DEFAULT: Offloads =
        Offloads(libc::TUN_F_CSUM | libc::TUN_F_TSO4 | libc::TUN_F_TSO6 | Self::USO.0);
    const USO: Offloads = Offloads(libc::TUN_F_USO4 | libc::TUN_F_USO6);
    const TSO: Offloads = Offloads(libc::TUN_F_TSO4 | libc::TUN_F_TSO6 | libc::TUN_F_TSO_ECN);
    const NAMES: [(Offloads, &'static str); 6] = [
        (Self::CSUM, "csum"),
        (Self::TSO4, "tso4"),
        (Self::TSO6, "tso6"),
        (Self::TSO_ECN, "tso_ecn"),
        (Self::USO4, "uso4"),
        (Self::USO6, "uso6"),
    ];

    /// The raw `TUN_F_*` bits.
    pub const fn bits(self) -> u32 {
        self.0
    }

    /// Builds a set from raw `TUN_F_*` bits, dropping bits this module does not know.
    pub const fn from_bits_truncate(bits: u32) -> Offloads {
        Offloads(bits & (Self::DEFAULT.0 | libc::TUN_F_TSO_ECN))
    }

    /// True if every feature in `other` is in `self`.
    pub const fn contains(self, other: Offloads) -> bool {
        self.0 & other.0 == other.0
    }

    /// True if the set is empty.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// Features in both sets.
    pub const fn intersection(self, other: Offloads) -> Offloads {
        Offloads(self.0 & other.0)
    }

    /// Features in either set.
    pub const fn union(self, other: Offloads) -> Offloads {
        Offloads(self.0 | other.0)
    }

    /// The sets `TUNSETOFFLOAD` is tried with, best first, when `self` is requested: the
    /// request itself, then without USO, then CSUM alone, then nothing. Only subsets of the
    /// request are tried, and each step is made valid (no TSO without CSUM).
    fn fallback_ladder(self) -> Vec<Offloads> {
        let steps = [
            self,
            self.intersection(Offloads::CSUM.union(Offloads::TSO)),
            self.intersection(Offloads::CSUM),
            Offloads::NONE,
        ];
        let mut out: Vec<Offloads> = Vec::with_capacity(steps.len());
        for step in steps {
            // TSO without CSUM is refused by the kernel: drop it rather than try.
            let step = if step.contains(Offloads::CSUM) {
                step
            } else {
                Offloads::NONE
            };
            if !out.contains(&step) {
                out.push(step);
            }
        }
        out
    }
}

impl std::ops::BitOr for Offloads {
    type Output = Offloads;
    fn bitor(self, rhs: Offloads) -> Offloads {
        self.union(rhs)
    }
}

impl fmt::Display for Offloads {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return f.write_str("none");
        }
        let mut first = true;
        for (bit, name) in Self::NAMES {
            if self.contains(bit) {
                if !first {
                    f.write_str("|")?;
                }
                f.write_str(name)?;
                first = false;
            }
        }
        Ok(())
    }
}

impl fmt::Debug for Offloads {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Offloads({self})")
    }
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

/// A set of receive buffers filled by [`Tap::read_batch`].
pub struct RxBatch {
    bufs: Vec<Box<[u8]>>,
    hdrs: Vec<VnetHdr>,
    lens: Vec<usize>,
    count: usize,
}

impl RxBatch {
    /// `frames` buffers of `buf_len` bytes each ([`MAX_FRAME_LEN`] holds any frame).
    pub fn new(frames: usize, buf_len: usize) -> RxBatch {
        RxBatch {
            bufs: (0..frames)
                .map(|_| vec![0u8; buf_len].into_boxed_slice())
                .collect(),
            hdrs: vec![VnetHdr::default(); frames],
            lens: vec![0; frames],
            count: 0,
        }
    }

    /// Number of frames held since the last read.
    pub fn len(&self) -> usize {
        self.count
    }

    /// True if the last read returned no frame.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Capacity in frames.
    pub fn capacity(&self) -> usize {
        self.bufs.len()
    }

    /// Frame `i` of the last read, with its header.
    pub fn get(&self, i: usize) -> Option<(&VnetHdr, &[u8])> {
        if i >= self.count {
            return None;
        }
        let hdr = self.hdrs.get(i)?;
        let buf = self.bufs.get(i)?;
        let len = *self.lens.get(i)?;
        Some((hdr, buf.get(..len)?))
    }

    /// The frames of the last read, in arrival order.
    pub fn iter(&self) -> impl Iterator<Item = (&VnetHdr, &[u8])> {
        (0..self.count).filter_map(move |i| self.get(i))
    }
}

/// An open TAP queue (one fd) with a 12-byte vnet header and non-blocking I/O.
#[derive(Debug)]
pub struct Tap {
    fd: OwnedFd,
    ifindex: u32,
    multi_queue: bool,
    offloads: Offloads,
}

/// What the namespace thread returns.
struct Opened {
    fd: OwnedFd,
    ifindex: u32,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Create,
    Attach,
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
        batch.count = 0;
        for i in 0..batch.bufs.len() {
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

fn zeroed_ifreq() -> libc::ifreq {
    // SAFETY: ifreq is a plain C struct/union of integers, arrays and pointers; all-zero is
    // a valid value for it.
    unsafe { std::mem::zeroed() }
}

fn ifreq_name(ifr: &libc::ifreq) -> String {
    let bytes: Vec<u8> = ifr
        .ifr_name
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c as u8)
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

fn check_name(name: &str) -> Result<(), TapError> {
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
fn open_tap(name: &str, multi_queue: bool, mode: Mode) -> Result<Opened, TapError> {
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

fn open_netns_file(path: &Path) -> Result<OwnedFd, TapError> {
    File::open(path)
        .map(OwnedFd::from)
        .map_err(|source| TapError::Netns {
            path: path.to_path_buf(),
            source,
        })
}

/// Runs `f` on a new thread that first joins the network namespace `ns`. The calling
/// thread's namespace is never changed.
fn in_netns<T: Send>(
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
    fn offload_ladder_only_tries_valid_subsets() {
        assert_eq!(
            Offloads::DEFAULT.fallback_ladder(),
            vec![
                Offloads::DEFAULT,
                Offloads::CSUM | Offloads::TSO4 | Offloads::TSO6,
                Offloads::CSUM,
                Offloads::NONE
            ]
        );
        // TSO without CSUM is never tried.
        assert_eq!(Offloads::TSO4.fallback_ladder(), vec![Offloads::NONE]);
        assert_eq!(
            (Offloads::CSUM | Offloads::USO4).fallback_ladder(),
            vec![
                Offloads::CSUM | Offloads::USO4,
                Offloads::CSUM,
                Offloads::NONE
            ]
        );
        assert_eq!(Offloads::DEFAULT.to_string(), "csum|tso4|tso6|uso4|uso6");
        assert_eq!(Offloads::NONE.to_string(), "none");
    }

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

    #[test]
    fn rx_batch_get_is_bounded() {
        let b = RxBatch::new(2, 64);
        assert_eq!(b.capacity(), 2);
        assert!(b.is_empty());
        assert!(b.get(0).is_none());
        assert_eq!(b.iter().count(), 0);
    }
}
