//! AF_XDP on the parent NIC: one socket per RX queue behind the XDP filter.
//!
//! [`XdpParent::open`] loads the filter ([`super::xdp_filter`]), attaches it with a
//! `bpf_link` (native first, generic when the driver refuses), creates one [`Xsk`] per RX
//! queue (`ETHTOOL_GCHANNELS`), and registers each in the XSKMAP. Dropping the parent (or the
//! process dying, even by SIGKILL) detaches the program.
//!
//! Each socket owns its UMEM: `2 × ring_size` frames of `frame_size` bytes. The first half
//! cycles between the fill ring and the RX ring, the second half between a free list, the TX
//! ring and the completion ring, so RX and TX never compete for buffers.
//!
//! Kernel facts relied on (measured on 6.18, `research/io-feasibility.md` §1.6, §2):
//! - Setup order: socket → `XDP_UMEM_REG` → ring sizes → `XDP_MMAP_OFFSETS` → mmap rings at
//!   page offsets RX 0, TX 0x80000000, FILL 0x100000000, COMPLETION 0x180000000 → pre-fill
//!   → `bind` with `XDP_USE_NEED_WAKEUP | XDP_COPY` (or `XDP_ZEROCOPY`) → XSKMAP update.
//! - Ring indices are free-running `u32`s; the peer's index is read with Acquire and ours is
//!   published with Release after the descriptors are written.
//! - In copy mode the TX ring asks for a wakeup on every batch: one
//!   `sendto(fd, NULL, 0, MSG_DONTWAIT)` per flush. The fill ring flag was never seen set,
//!   but is honoured (`recvfrom` kick).
//! - Zero-copy on veth: `EOPNOTSUPP`; uvlan then binds in copy mode. Generic XDP only works
//!   with copy mode.
//! - Native XDP on veth needs the peer MTU ≤ 3506; `bpf_link` then fails with `ERANGE`
//!   (drivers without native XDP give `EOPNOTSUPP`/`EINVAL`): uvlan falls back to generic.
//! - A frame is only delivered to the XSK bound to its own (ifindex, queue): with a queue
//!   left unbound, keyed frames on it would fall through to the host (counted as
//!   `no_socket` by the filter).
//! - TX checksum offload: a UMEM registered with `XDP_UMEM_TX_SW_CSUM |
//!   XDP_UMEM_TX_METADATA_LEN` and `tx_metadata_len = 24` accepts a `struct
//!   xsk_tx_metadata` (flags u64 = `XDP_TXMD_FLAGS_CHECKSUM`, csum_start u16, csum_offset u16)
//!   in the 24 bytes before the frame when the descriptor carries `XDP_TX_METADATA`; the
//!   kernel then completes the checksum in software in copy mode (6.11+).
//! - Closing an XSK releases its (ifindex, queue) from a kernel work item, so a bind right
//!   after a close can fail with `EBUSY` for a moment: [`XdpParent::open`] retries for ≤ 1 s.
//! - Generic XDP runs before `skb_vlan_untag`, so an 802.1Q tag carried in the frame data is
//!   visible to the program and stays in the frame the XSK receives. NICs that strip tags in
//!   hardware (`rxvlan` on) hide them from native XDP: see [`super::ethtool::rx_vlan_offload`].

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::ptr;
use std::sync::atomic::{AtomicU32, Ordering};

use super::bpf::{BpfError, Link, XDP_FLAGS_DRV_MODE, XDP_FLAGS_SKB_MODE};
use super::ethtool;
use super::xdp_filter::{Filter, FilterError, FilterMaps, FilterStats};
use super::{RxFrame, WireIo, WireMode};

/// Where the XDP program runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XdpMode {
    /// In the driver (`XDP_FLAGS_DRV_MODE`, shown as `xdp` by `ip link`).
    Native,
    /// In the core receive path on skbs (`XDP_FLAGS_SKB_MODE`, `xdpgeneric`).
    Generic,
}

/// How the AF_XDP sockets are bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BindMode {
    /// `XDP_COPY`: frames are copied between the driver and the UMEM.
    Copy,
    /// `XDP_ZEROCOPY`: the driver DMAs into the UMEM.
    ZeroCopy,
}

/// Which XDP attach mode to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XdpAttach {
    /// Native first; generic when the driver refuses (ERANGE, EOPNOTSUPP, EINVAL).
    Auto,
    /// Native only.
    Native,
    /// Generic only.
    Generic,
}

/// Options for [`XdpParent::open`].
///
/// Memory: each RX queue gets its own UMEM of `2 × ring_size × frame_size` bytes (16 MiB with
/// the defaults), locked in RAM. In copy mode the kernel leaves 256 bytes of XDP headroom in
/// each frame, so the largest frame is `frame_size − 256` (3840 with 4096-byte frames);
/// larger frames are dropped by the kernel (`rx_dropped`).
#[derive(Debug, Clone)]
pub struct XdpOptions {
    /// Attach mode policy.
    pub attach: XdpAttach,
    /// Try `XDP_ZEROCOPY` (native mode only); falls back to copy on `EOPNOTSUPP`.
    pub zero_copy: bool,
    /// Entries in each of the four rings (power of two, 64..=16384).
    pub ring_size: u32,
    /// UMEM frame size: 2048 or 4096.
    pub frame_size: u32,
    /// Register TX metadata so [`XdpParent::transmit_with_csum`] works (needs 6.11+; silently
    /// disabled when the kernel refuses, see [`XdpParent::tx_checksum_enabled`]).
    pub tx_checksum: bool,
    /// Capacity of each filter key map.
    pub map_capacity: u32,
    /// Override the number of RX queues (default: `ETHTOOL_GCHANNELS`).
    pub queues: Option<u32>,
}

impl Default for XdpOptions {
    fn default() -> Self {
        XdpOptions {
            attach: XdpAttach::Auto,
            zero_copy: false,
            ring_size: 2048,
            frame_size: 4096,
            tx_checksum: true,
            map_capacity: 4096,
            queues: None,
        }
    }
}

/// Errors opening or running an [`XdpParent`].
#[derive(Debug, thiserror::Error)]
pub enum XdpError {
    /// Interface lookup or channel query failed.
    #[error("interface {ifname}: {source}")]
    Interface {
        /// Interface name.
        ifname: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// Filter program or map failure.
    #[error(transparent)]
    Filter(#[from] FilterError),
    /// `BPF_LINK_CREATE` failed.
    #[error("cannot attach the XDP filter to {ifname} ({mode}): {source}")]
    Attach {
        /// Interface name.
        ifname: String,
        /// Mode(s) tried.
        mode: &'static str,
        /// The failure.
        #[source]
        source: BpfError,
    },
    /// Creating or binding an AF_XDP socket failed.
    #[error("AF_XDP socket on {ifname} queue {queue}: {step} failed: {source}{}", xsk_hint(.source))]
    Socket {
        /// Interface name.
        ifname: String,
        /// RX queue.
        queue: u32,
        /// The setup step that failed.
        step: &'static str,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// Bad options.
    #[error("invalid AF_XDP option: {0}")]
    Options(String),
}

fn xsk_hint(e: &io::Error) -> &'static str {
    match e.raw_os_error() {
        Some(libc::EAFNOSUPPORT) => {
            " (kernel without CONFIG_XDP_SOCKETS: use the AF_PACKET fallback)"
        }
        Some(libc::EINVAL) => " (queue id beyond the interface's active RX channels?)",
        Some(libc::ENOMEM) | Some(libc::ENOBUFS) => " (lower ring_size or raise RLIMIT_MEMLOCK)",
        Some(libc::EBUSY) => " (another AF_XDP socket is bound to this queue)",
        _ => "",
    }
}

/// Kernel `XDP_STATISTICS` of one socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct XskKernelStats {
    /// Frames dropped for reasons other than invalid descriptors (e.g. too large).
    pub rx_dropped: u64,
    /// Invalid RX descriptors.
    pub rx_invalid_descs: u64,
    /// Invalid TX descriptors.
    pub tx_invalid_descs: u64,
    /// Frames dropped because the RX ring was full.
    pub rx_ring_full: u64,
    /// Frames dropped because the fill ring was empty.
    pub rx_fill_ring_empty_descs: u64,
    /// Times the TX ring was found empty.
    pub tx_ring_empty_descs: u64,
}

/// Counters of one socket: the kernel's and uvlan's own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct XskStats {
    /// RX queue.
    pub queue: u32,
    /// `XDP_STATISTICS`.
    pub kernel: XskKernelStats,
    /// Frames delivered to the caller.
    pub rx_frames: u64,
    /// Bytes delivered to the caller.
    pub rx_bytes: u64,
    /// RX descriptors pointing outside the UMEM (skipped).
    pub rx_bad_desc: u64,
    /// Frames queued for TX.
    pub tx_frames: u64,
    /// Bytes queued for TX.
    pub tx_bytes: u64,
    /// Frames refused because no TX buffer or ring slot was free.
    pub tx_no_room: u64,
    /// Frames refused because they exceed a UMEM frame.
    pub tx_oversize: u64,
    /// `sendto` kicks issued.
    pub tx_kicks: u64,
    /// `recvfrom` kicks issued for the fill ring.
    pub fill_kicks: u64,
}

/// Statistics of an [`XdpParent`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct XdpParentStats {
    /// Per-socket counters.
    pub queues: Vec<XskStats>,
    /// Filter program counters.
    pub filter: FilterStats,
}

struct Mmap {
    ptr: *mut u8,
    len: usize,
}

impl Mmap {
    fn new(len: usize, fd: Option<BorrowedFd<'_>>, pgoff: u64) -> io::Result<Mmap> {
        let (flags, raw) = match fd {
            Some(fd) => (libc::MAP_SHARED | libc::MAP_POPULATE, fd.as_raw_fd()),
            None => (
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_POPULATE,
                -1,
            ),
        };
        // SAFETY: a fresh mapping at a kernel-chosen address; nothing aliases it yet.
        let p = unsafe {
            libc::mmap(
                ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                flags,
                raw,
                pgoff as libc::off_t,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Mmap { ptr: p.cast(), len })
    }
}

impl Drop for Mmap {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` describe a mapping created by `Mmap::new` and unmapped only here.
        unsafe {
            libc::munmap(self.ptr.cast(), self.len);
        }
    }
}

/// One of the four shared rings. `T` is `u64` (fill/completion) or `xdp_desc` (RX/TX).
struct Ring<T> {
    /// Keeps the mapping alive; the pointers below point into it.
    _map: Mmap,
    producer: *const AtomicU32,
    consumer: *const AtomicU32,
    flags: *const AtomicU32,
    descs: *mut T,
    size: u32,
    /// Our private head: the producer index for rings we produce, the consumer index for
    /// rings we consume.
    local: u32,
}

impl<T: Copy> Ring<T> {
    /// Map a ring; `produce` says whether userspace produces (fill, TX) or consumes
    /// (RX, completion) it, which decides which index `local` starts from.
    fn map(
        fd: BorrowedFd<'_>,
        off: &libc::xdp_ring_offset,
        size: u32,
        pgoff: u64,
        produce: bool,
    ) -> io::Result<Ring<T>> {
        let len = off.desc as usize + size as usize * std::mem::size_of::<T>();
        let map = Mmap::new(len, Some(fd), pgoff)?;
        let at = |o: u64| -> io::Result<*mut u8> {
            if o as usize + 4 > len {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "kernel ring offsets lie outside the ring mapping",
                ));
            }
            // SAFETY: `o` is within the mapping (checked above).
            Ok(unsafe { map.ptr.add(o as usize) })
        };
        let producer = at(off.producer)?.cast::<AtomicU32>();
        let consumer = at(off.consumer)?.cast::<AtomicU32>();
        let flags = at(off.flags)?.cast::<AtomicU32>();
        let descs = at(off.desc)?.cast::<T>();
        let mut r = Ring {
            _map: map,
            producer,
            consumer,
            flags,
            descs,
            size,
            local: 0,
        };
        r.local = if produce {
            r.prod().load(Ordering::Relaxed)
        } else {
            r.cons().load(Ordering::Relaxed)
        };
        Ok(r)
    }

    fn prod(&self) -> &AtomicU32 {
        // SAFETY: `producer` points at a 4-byte aligned u32 inside `self.map`, which lives as
        // long as `self`; the kernel only accesses it atomically.
        unsafe { &*self.producer }
    }

    fn cons(&self) -> &AtomicU32 {
        // SAFETY: as for `prod`.
        unsafe { &*self.consumer }
    }

    fn needs_wakeup(&self) -> bool {
        // SAFETY: as for `prod`.
        unsafe { &*self.flags }.load(Ordering::Relaxed) & libc::XDP_RING_NEED_WAKEUP != 0
    }

    fn slot(&self, idx: u32) -> *mut T {
        // SAFETY: `idx & (size - 1)` < size and the mapping holds `size` entries after `desc`.
        unsafe { self.descs.add((idx & (self.size - 1)) as usize) }
    }

    // --- rings we produce (fill, TX) ---

    /// Free slots.
    fn free(&self) -> u32 {
        self.size - self.local.wrapping_sub(self.cons().load(Ordering::Acquire))
    }

    /// Write one entry at our head (not yet visible to the kernel).
    fn stage(&mut self, v: T) {
        // SAFETY: the caller checked `free() > 0`, so the kernel does not own this slot.
        unsafe { ptr::write(self.slot(self.local), v) };
        self.local = self.local.wrapping_add(1);
    }

    /// Publish staged entries.
    fn publish(&self) {
        self.prod().store(self.local, Ordering::Release);
    }

    // --- rings we consume (RX, completion) ---

    fn available(&self) -> u32 {
        self.prod().load(Ordering::Acquire).wrapping_sub(self.local)
    }

    fn read(&self, i: u32) -> T {
        // SAFETY: `i < available()`: the kernel published this slot and will not touch it
        // until we release it.
        unsafe { ptr::read(self.slot(self.local.wrapping_add(i))) }
    }

    fn release(&mut self, n: u32) {
        self.local = self.local.wrapping_add(n);
        self.cons().store(self.local, Ordering::Release);
    }
}

const TX_META_LEN: u32 = 24;
const XDP_TXMD_FLAGS_CHECKSUM: u64 = 1 << 1;

/// Settings for one [`Xsk`].
#[derive(Debug, Clone, Copy)]
pub struct XskConfig {
    /// Ring entries (power of two).
    pub ring_size: u32,
    /// UMEM frame size (2048 or 4096).
    pub frame_size: u32,
    /// Request `XDP_ZEROCOPY` instead of `XDP_COPY`.
    pub zero_copy: bool,
    /// Register 24 bytes of TX metadata with software checksum.
    pub tx_metadata: bool,
}

/// One AF_XDP socket with its own UMEM, bound to one RX queue.
pub struct Xsk {
    // Rings and UMEM are unmapped before the socket closes (field order).
    rx: Ring<libc::xdp_desc>,
    tx: Ring<libc::xdp_desc>,
    fill: Ring<u64>,
    comp: Ring<u64>,
    umem: Mmap,
    fd: OwnedFd,
    queue: u32,
    frame_size: u32,
    meta_len: u32,
    zero_copy: bool,
    tx_free: Vec<u64>,
    fill_pending: Vec<u64>,
    tx_staged: u32,
    stats: XskStats,
}

// SAFETY: an Xsk exclusively owns its mappings and socket; the raw pointers are only
// dereferenced through `&self`/`&mut self`, and the kernel side is synchronised by the ring
// atomics. Moving it to another thread is therefore sound.
unsafe impl Send for Xsk {}

impl std::fmt::Debug for Xsk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Xsk")
            .field("fd", &self.fd)
            .field("queue", &self.queue)
            .field("zero_copy", &self.zero_copy)
            .finish()
    }
}

fn setsockopt<T>(fd: BorrowedFd<'_>, opt: libc::c_int, v: &T) -> io::Result<()> {
    // SAFETY: `v` is a valid T for the duration of the call and its size is passed.
    let r = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_XDP,
            opt,
            (v as *const T).cast(),
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn getsockopt<T: Copy>(fd: BorrowedFd<'_>, opt: libc::c_int, v: &mut T) -> io::Result<usize> {
    let mut len = std::mem::size_of::<T>() as libc::socklen_t;
    // SAFETY: `v` is a valid, writable T and `len` its size; the kernel writes at most `len`.
    let r = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_XDP,
            opt,
            (v as *mut T).cast(),
            &mut len,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(len as usize)
}

impl Xsk {
    /// Create, map, pre-fill and bind a socket on (`ifindex`, `queue`). On error, the step
    /// that failed is returned with the OS error.
    pub fn open(
        ifindex: u32,
        queue: u32,
        cfg: XskConfig,
    ) -> Result<Xsk, (&'static str, io::Error)> {
        let e = |step: &'static str| move |err: io::Error| (step, err);
        if !cfg.ring_size.is_power_of_two() || !(cfg.frame_size == 2048 || cfg.frame_size == 4096) {
            return Err((
                "checking options",
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "ring_size must be a power of two and frame_size 2048 or 4096",
                ),
            ));
        }
        // SAFETY: plain socket(2) call; the result is checked.
        let raw = unsafe { libc::socket(libc::AF_XDP, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        if raw < 0 {
            return Err(("socket(AF_XDP)", io::Error::last_os_error()));
        }
        // SAFETY: `raw` is a fresh fd owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let frames = 2 * cfg.ring_size as u64;
        let umem_len = (frames * cfg.frame_size as u64) as usize;
        let umem = Mmap::new(umem_len, None, 0).map_err(e("mmap(UMEM)"))?;
        let meta_len = if cfg.tx_metadata { TX_META_LEN } else { 0 };
        let reg = libc::xdp_umem_reg {
            addr: umem.ptr as u64,
            len: umem_len as u64,
            chunk_size: cfg.frame_size,
            headroom: 0,
            flags: if cfg.tx_metadata {
                libc::XDP_UMEM_TX_SW_CSUM | libc::XDP_UMEM_TX_METADATA_LEN
            } else {
                0
            },
            tx_metadata_len: meta_len,
        };
        setsockopt(fd.as_fd(), libc::XDP_UMEM_REG, &reg).map_err(e("XDP_UMEM_REG"))?;
        for opt in [
            libc::XDP_UMEM_FILL_RING,
            libc::XDP_UMEM_COMPLETION_RING,
            libc::XDP_RX_RING,
            libc::XDP_TX_RING,
        ] {
            setsockopt(fd.as_fd(), opt, &cfg.ring_size).map_err(e("setting ring sizes"))?;
        }
        // SAFETY: xdp_mmap_offsets is plain old data; all-zero is a valid value.
        let mut off: libc::xdp_mmap_offsets = unsafe { std::mem::zeroed() };
        let got = getsockopt(fd.as_fd(), libc::XDP_MMAP_OFFSETS, &mut off)
            .map_err(e("XDP_MMAP_OFFSETS"))?;
        if got != std::mem::size_of::<libc::xdp_mmap_offsets>() {
            return Err((
                "XDP_MMAP_OFFSETS",
                io::Error::new(io::ErrorKind::Unsupported, "kernel too old (no ring flags)"),
            ));
        }
        let rx = Ring::map(
            fd.as_fd(),
            &off.rx,
            cfg.ring_size,
            libc::XDP_PGOFF_RX_RING as u64,
            false,
        )
        .map_err(e("mmap(RX ring)"))?;
        let tx = Ring::map(
            fd.as_fd(),
            &off.tx,
            cfg.ring_size,
            libc::XDP_PGOFF_TX_RING as u64,
            true,
        )
        .map_err(e("mmap(TX ring)"))?;
        let mut fill = Ring::map(
            fd.as_fd(),
            &off.fr,
            cfg.ring_size,
            libc::XDP_UMEM_PGOFF_FILL_RING,
            true,
        )
        .map_err(e("mmap(fill ring)"))?;
        let comp = Ring::map(
            fd.as_fd(),
            &off.cr,
            cfg.ring_size,
            libc::XDP_UMEM_PGOFF_COMPLETION_RING,
            false,
        )
        .map_err(e("mmap(completion ring)"))?;
        for i in 0..cfg.ring_size as u64 {
            fill.stage(i * cfg.frame_size as u64);
        }
        fill.publish();
        let tx_free = (cfg.ring_size as u64..frames)
            .map(|i| i * cfg.frame_size as u64)
            .collect();
        // SAFETY: sockaddr_xdp is plain old data; all-zero is valid.
        let mut sa: libc::sockaddr_xdp = unsafe { std::mem::zeroed() };
        sa.sxdp_family = libc::AF_XDP as libc::sa_family_t;
        sa.sxdp_flags = libc::XDP_USE_NEED_WAKEUP
            | if cfg.zero_copy {
                libc::XDP_ZEROCOPY
            } else {
                libc::XDP_COPY
            };
        sa.sxdp_ifindex = ifindex;
        sa.sxdp_queue_id = queue;
        // SAFETY: `sa` is a valid sockaddr_xdp and its exact size is passed.
        let r = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&sa as *const libc::sockaddr_xdp).cast(),
                std::mem::size_of::<libc::sockaddr_xdp>() as libc::socklen_t,
            )
        };
        if r < 0 {
            return Err(("bind", io::Error::last_os_error()));
        }
        let mut opts = libc::xdp_options { flags: 0 };
        getsockopt(fd.as_fd(), libc::XDP_OPTIONS, &mut opts).map_err(e("XDP_OPTIONS"))?;
        Ok(Xsk {
            rx,
            tx,
            fill,
            comp,
            umem,
            fd,
            queue,
            frame_size: cfg.frame_size,
            meta_len,
            zero_copy: opts.flags & libc::XDP_OPTIONS_ZEROCOPY != 0,
            tx_free,
            fill_pending: Vec::new(),
            tx_staged: 0,
            stats: XskStats {
                queue,
                ..Default::default()
            },
        })
    }

    /// The RX queue this socket is bound to.
    pub fn queue(&self) -> u32 {
        self.queue
    }

    /// Whether the kernel bound it in zero-copy mode (`XDP_OPTIONS`).
    pub fn is_zero_copy(&self) -> bool {
        self.zero_copy
    }

    /// Whether TX metadata (checksum requests) is registered.
    pub fn has_tx_metadata(&self) -> bool {
        self.meta_len > 0
    }

    fn frame_base(&self, addr: u64) -> u64 {
        addr & !(self.frame_size as u64 - 1)
    }

    fn kick_fill(&mut self) {
        self.stats.fill_kicks += 1;
        // SAFETY: a zero-length recvfrom with null buffers is the documented AF_XDP wakeup.
        unsafe {
            libc::recvfrom(
                self.fd.as_raw_fd(),
                ptr::null_mut(),
                0,
                libc::MSG_DONTWAIT,
                ptr::null_mut(),
                ptr::null_mut(),
            );
        }
    }

    fn refill(&mut self) {
        let room = self.fill.free() as usize;
        let n = room.min(self.fill_pending.len());
        if n == 0 {
            return;
        }
        for _ in 0..n {
            if let Some(a) = self.fill_pending.pop() {
                self.fill.stage(a);
            }
        }
        self.fill.publish();
        if self.fill.needs_wakeup() {
            self.kick_fill();
        }
    }

    /// Deliver up to `max` received frames to `f`, then return their buffers to the fill ring.
    pub fn recv(&mut self, max: usize, f: &mut dyn FnMut(RxFrame<'_>)) -> usize {
        let n = self.rx.available().min(max.min(u32::MAX as usize) as u32);
        for i in 0..n {
            let d = self.rx.read(i);
            let (addr, len) = (d.addr as usize, d.len as usize);
            if addr.checked_add(len).is_none_or(|end| end > self.umem.len) {
                self.stats.rx_bad_desc += 1;
            } else {
                // SAFETY: [addr, addr+len) lies inside the UMEM (checked above), and the
                // kernel does not write this frame until we put it back on the fill ring,
                // which happens after the callback returns.
                let data = unsafe { std::slice::from_raw_parts(self.umem.ptr.add(addr), len) };
                self.stats.rx_frames += 1;
                self.stats.rx_bytes += len as u64;
                f(RxFrame {
                    data,
                    queue: self.queue,
                    pkt_type: None,
                    vlan_restored: false,
                });
            }
            let base = self.frame_base(d.addr);
            self.fill_pending.push(base);
        }
        if n > 0 {
            self.rx.release(n);
        }
        self.refill();
        n as usize
    }

    /// Reclaim completed TX buffers.
    fn reclaim(&mut self) {
        let n = self.comp.available();
        for i in 0..n {
            let a = self.comp.read(i);
            let base = self.frame_base(a);
            self.tx_free.push(base);
        }
        if n > 0 {
            self.comp.release(n);
        }
    }

    /// Copy `frame` into a free TX buffer and stage it; `csum` = (csum_start, csum_offset)
    /// requests a checksum via TX metadata. Returns false when not queued (counted).
    pub fn stage_tx(&mut self, frame: &[u8], csum: Option<(u16, u16)>) -> io::Result<bool> {
        if csum.is_some() && self.meta_len == 0 {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "TX checksum metadata is not registered on this socket",
            ));
        }
        if frame.len() + self.meta_len as usize > self.frame_size as usize {
            self.stats.tx_oversize += 1;
            return Ok(false);
        }
        if self.tx_free.is_empty() || self.tx.free() == 0 {
            self.flush()?;
            self.reclaim();
        }
        if self.tx.free() == 0 {
            self.stats.tx_no_room += 1;
            return Ok(false);
        }
        let Some(base) = self.tx_free.pop() else {
            self.stats.tx_no_room += 1;
            return Ok(false);
        };
        let data_addr = base + self.meta_len as u64;
        // SAFETY: `base` is a TX frame owned by us (from the free list), inside the UMEM, and
        // `meta_len + frame.len() <= frame_size` was checked; the kernel does not read it
        // before the descriptor is published.
        unsafe {
            let dst = self.umem.ptr.add(data_addr as usize);
            ptr::copy_nonoverlapping(frame.as_ptr(), dst, frame.len());
            if self.meta_len > 0 {
                let m = self.umem.ptr.add(base as usize);
                ptr::write_bytes(m, 0, self.meta_len as usize);
                if let Some((start, off)) = csum {
                    ptr::copy_nonoverlapping(XDP_TXMD_FLAGS_CHECKSUM.to_ne_bytes().as_ptr(), m, 8);
                    ptr::copy_nonoverlapping(start.to_ne_bytes().as_ptr(), m.add(8), 2);
                    ptr::copy_nonoverlapping(off.to_ne_bytes().as_ptr(), m.add(10), 2);
                }
            }
        }
        self.tx.stage(libc::xdp_desc {
            addr: data_addr,
            len: frame.len() as u32,
            options: if csum.is_some() {
                libc::XDP_TX_METADATA
            } else {
                0
            },
        });
        self.tx_staged += 1;
        self.stats.tx_frames += 1;
        self.stats.tx_bytes += frame.len() as u64;
        Ok(true)
    }

    /// Publish staged TX descriptors, kick the kernel when it asks, reclaim completions.
    pub fn flush(&mut self) -> io::Result<()> {
        if self.tx_staged > 0 {
            self.tx.publish();
            self.tx_staged = 0;
        }
        if self.tx.needs_wakeup() && self.tx.free() < self.tx.size {
            self.kick()?;
        }
        self.reclaim();
        Ok(())
    }

    /// Like [`Xsk::flush`], and in copy mode kicks until the kernel has taken every queued
    /// frame (each kick transmits at most one batch, synchronously), so that a frame sent
    /// next by another socket leaves after them. In zero-copy mode the driver transmits
    /// asynchronously: one kick, no guarantee.
    pub fn drain_tx(&mut self) -> io::Result<()> {
        self.flush()?;
        if self.zero_copy {
            return Ok(());
        }
        for _ in 0..64 {
            if self.tx.free() == self.tx.size {
                break;
            }
            self.kick()?;
        }
        self.reclaim();
        Ok(())
    }

    /// One TX wakeup (`sendto` with no data), then completions are reclaimed.
    fn kick(&mut self) -> io::Result<()> {
        self.stats.tx_kicks += 1;
        // SAFETY: a zero-length sendto with a null buffer is the documented AF_XDP TX kick.
        let r = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                ptr::null(),
                0,
                libc::MSG_DONTWAIT,
                ptr::null(),
                0,
            )
        };
        if r < 0 {
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                // Transient: the frames stay in the ring for the next kick.
                Some(libc::EAGAIN) | Some(libc::EBUSY) | Some(libc::ENOBUFS)
                | Some(libc::ENETDOWN) => {}
                _ => return Err(e),
            }
        }
        self.reclaim();
        Ok(())
    }

    /// Kernel and own counters.
    pub fn stats(&self) -> io::Result<XskStats> {
        // SAFETY: xdp_statistics is plain old data; all-zero is valid.
        let mut k: libc::xdp_statistics = unsafe { std::mem::zeroed() };
        getsockopt(self.fd.as_fd(), libc::XDP_STATISTICS, &mut k)?;
        let mut s = self.stats;
        s.kernel = XskKernelStats {
            rx_dropped: k.rx_dropped,
            rx_invalid_descs: k.rx_invalid_descs,
            tx_invalid_descs: k.tx_invalid_descs,
            rx_ring_full: k.rx_ring_full,
            rx_fill_ring_empty_descs: k.rx_fill_ring_empty_descs,
            tx_ring_empty_descs: k.tx_ring_empty_descs,
        };
        Ok(s)
    }
}

impl AsFd for Xsk {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// The parent NIC driven through AF_XDP: filter program + one [`Xsk`] per RX queue.
#[derive(Debug)]
pub struct XdpParent {
    // Field order is drop order: detach the program first, then close the sockets.
    link: Link,
    filter: Filter,
    socks: Vec<Xsk>,
    ifname: String,
    ifindex: u32,
    xdp_mode: XdpMode,
    bind_mode: BindMode,
    tx_csum: bool,
    rx_vlan_offload: Option<bool>,
    /// Queue that the next `recv_batch` starts with (round robin, so no queue starves).
    rx_next: usize,
}

fn attach_fallback(e: &BpfError) -> bool {
    matches!(e, BpfError::Syscall { source, .. }
        if matches!(source.raw_os_error(), Some(libc::ERANGE) | Some(libc::EOPNOTSUPP) | Some(libc::EINVAL)))
}

impl XdpParent {
    /// Load the filter, attach it to `ifname` (in the calling thread's netns), and bind one
    /// AF_XDP socket per RX queue.
    pub fn open(ifname: &str, opts: &XdpOptions) -> Result<XdpParent, XdpError> {
        let iferr = |source| XdpError::Interface {
            ifname: ifname.to_string(),
            source,
        };
        if !(64..=16384).contains(&opts.ring_size) || !opts.ring_size.is_power_of_two() {
            return Err(XdpError::Options(format!(
                "ring_size {} must be a power of two in 64..=16384",
                opts.ring_size
            )));
        }
        if opts.frame_size != 2048 && opts.frame_size != 4096 {
            return Err(XdpError::Options(format!(
                "frame_size {} must be 2048 or 4096",
                opts.frame_size
            )));
        }
        let ifindex = ethtool::if_index(ifname).map_err(iferr)?;
        let queues = match opts.queues {
            Some(q) if q >= 1 => q,
            Some(_) => return Err(XdpError::Options("queues must be at least 1".into())),
            None => ethtool::rx_queue_count(ifname).map_err(iferr)?,
        };
        let filter = Filter::load_xdp(FilterMaps::create(opts.map_capacity)?, queues)?;
        let attach_err = |mode, source| XdpError::Attach {
            ifname: ifname.to_string(),
            mode,
            source,
        };
        let (link, xdp_mode) = match opts.attach {
            XdpAttach::Native => (
                Link::xdp(filter.prog(), ifindex, XDP_FLAGS_DRV_MODE)
                    .map_err(|e| attach_err("native", e))?,
                XdpMode::Native,
            ),
            XdpAttach::Generic => (
                Link::xdp(filter.prog(), ifindex, XDP_FLAGS_SKB_MODE)
                    .map_err(|e| attach_err("generic", e))?,
                XdpMode::Generic,
            ),
            XdpAttach::Auto => match Link::xdp(filter.prog(), ifindex, XDP_FLAGS_DRV_MODE) {
                Ok(l) => (l, XdpMode::Native),
                Err(e) if attach_fallback(&e) => (
                    Link::xdp(filter.prog(), ifindex, XDP_FLAGS_SKB_MODE)
                        .map_err(|e| attach_err("native refused, then generic", e))?,
                    XdpMode::Generic,
                ),
                Err(e) => return Err(attach_err("native", e)),
            },
        };
        let mut cfg = XskConfig {
            ring_size: opts.ring_size,
            frame_size: opts.frame_size,
            zero_copy: opts.zero_copy && xdp_mode == XdpMode::Native,
            tx_metadata: opts.tx_checksum,
        };
        let mut socks = Vec::with_capacity(queues as usize);
        for q in 0..queues {
            let mut busy_retries = 0;
            let xsk = loop {
                match Xsk::open(ifindex, q, cfg) {
                    Ok(x) => break x,
                    // A socket closed just before (e.g. a restart) releases its queue from a
                    // kernel work item: wait for it, for at most a second.
                    Err(("bind", e))
                        if e.raw_os_error() == Some(libc::EBUSY) && busy_retries < 50 =>
                    {
                        busy_retries += 1;
                        std::thread::sleep(std::time::Duration::from_millis(20));
                    }
                    Err(("bind", e))
                        if cfg.zero_copy && e.raw_os_error() == Some(libc::EOPNOTSUPP) =>
                    {
                        cfg.zero_copy = false;
                    }
                    Err(("XDP_UMEM_REG", e))
                        if cfg.tx_metadata && e.raw_os_error() == Some(libc::EINVAL) =>
                    {
                        // Kernel without TX metadata: run without checksum requests.
                        cfg.tx_metadata = false;
                    }
                    Err((step, source)) => {
                        return Err(XdpError::Socket {
                            ifname: ifname.to_string(),
                            queue: q,
                            step,
                            source,
                        })
                    }
                }
            };
            filter.set_xsk(q, xsk.as_fd())?;
            socks.push(xsk);
        }
        let bind_mode = if socks.iter().all(Xsk::is_zero_copy) {
            BindMode::ZeroCopy
        } else {
            BindMode::Copy
        };
        Ok(XdpParent {
            link,
            filter,
            socks,
            ifname: ifname.to_string(),
            ifindex,
            xdp_mode,
            bind_mode,
            tx_csum: cfg.tx_metadata,
            rx_next: 0,
            rx_vlan_offload: ethtool::rx_vlan_offload(ifname).ok(),
        })
    }

    /// The interface name.
    pub fn ifname(&self) -> &str {
        &self.ifname
    }

    /// The interface index (in the netns it was opened in).
    pub fn ifindex(&self) -> u32 {
        self.ifindex
    }

    /// Where the XDP program runs.
    pub fn xdp_mode(&self) -> XdpMode {
        self.xdp_mode
    }

    /// How the sockets are bound.
    pub fn bind_mode(&self) -> BindMode {
        self.bind_mode
    }

    /// Number of RX queues (= sockets).
    pub fn queues(&self) -> u32 {
        self.socks.len() as u32
    }

    /// Whether [`XdpParent::transmit_with_csum`] is available.
    pub fn tx_checksum_enabled(&self) -> bool {
        self.tx_csum
    }

    /// The steering maps.
    pub fn filter_maps(&self) -> &FilterMaps {
        self.filter.maps()
    }

    /// The parent's RX VLAN offload flag as read at open time (`None`: not reported).
    /// When it is on, a hardware NIC strips 802.1Q tags into metadata that XDP cannot see,
    /// so VLAN-keyed steering would miss; see [`ethtool::set_rx_vlan_offload`]. (veth
    /// reports it on but never strips: its tags arrive in the data unless the sender put
    /// them in skb metadata.)
    pub fn rx_vlan_offload(&self) -> Option<bool> {
        self.rx_vlan_offload
    }

    /// The attached link (e.g. to check the attach type).
    pub fn link(&self) -> &Link {
        &self.link
    }

    /// Receive up to `max` frames over all queues (see [`WireIo::recv_batch`]).
    pub fn recv_batch(&mut self, max: usize, f: &mut dyn FnMut(RxFrame<'_>)) -> usize {
        let mut n = 0;
        let count = self.socks.len();
        for i in 0..count {
            if n >= max {
                break;
            }
            if let Some(s) = self.socks.get_mut((self.rx_next + i) % count) {
                n += s.recv(max - n, f);
            }
        }
        if count > 0 {
            self.rx_next = (self.rx_next + 1) % count;
        }
        n
    }

    /// Queue `frame` for transmission on queue 0's socket (see [`WireIo::send`]).
    pub fn send(&mut self, frame: &[u8]) -> io::Result<bool> {
        match self.socks.first_mut() {
            Some(s) => s.stage_tx(frame, None),
            None => Ok(false),
        }
    }

    /// Queue `frame` and ask the kernel to fill in the checksum: it sums from `csum_start`
    /// (offset from the frame start) to the end and stores the result at
    /// `csum_start + csum_offset` (the virtio/skb `CHECKSUM_PARTIAL` convention; the field
    /// must already hold the pseudo-header sum). Needs [`XdpParent::tx_checksum_enabled`].
    pub fn transmit_with_csum(
        &mut self,
        frame: &[u8],
        csum_start: u16,
        csum_offset: u16,
    ) -> io::Result<bool> {
        if !self.tx_csum {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "TX checksum metadata is not available on this kernel/socket",
            ));
        }
        if csum_start as usize + csum_offset as usize + 2 > frame.len() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "checksum field lies beyond the end of the frame",
            ));
        }
        match self.socks.first_mut() {
            Some(s) => s.stage_tx(frame, Some((csum_start, csum_offset))),
            None => Ok(false),
        }
    }

    /// Publish queued frames and kick the kernel (see [`WireIo::flush`]).
    pub fn flush(&mut self) -> io::Result<()> {
        for s in &mut self.socks {
            s.flush()?;
        }
        Ok(())
    }

    /// Publish queued frames and, in copy mode, wait until the kernel has sent them all
    /// (see [`Xsk::drain_tx`]).
    pub fn drain_tx(&mut self) -> io::Result<()> {
        for s in &mut self.socks {
            s.drain_tx()?;
        }
        Ok(())
    }

    /// The socket fds to poll for POLLIN.
    pub fn poll_fds(&self) -> Vec<BorrowedFd<'_>> {
        self.socks.iter().map(|s| s.as_fd()).collect()
    }

    /// Per-socket and filter counters.
    pub fn stats(&self) -> Result<XdpParentStats, XdpError> {
        let mut queues = Vec::with_capacity(self.socks.len());
        for s in &self.socks {
            queues.push(s.stats().map_err(|source| XdpError::Socket {
                ifname: self.ifname.clone(),
                queue: s.queue,
                step: "XDP_STATISTICS",
                source,
            })?);
        }
        Ok(XdpParentStats {
            queues,
            filter: self.filter.maps().stats()?,
        })
    }
}

impl WireIo for XdpParent {
    fn recv_batch(&mut self, max: usize, f: &mut dyn FnMut(RxFrame<'_>)) -> io::Result<usize> {
        Ok(XdpParent::recv_batch(self, max, f))
    }
    fn send(&mut self, frame: &[u8]) -> io::Result<bool> {
        XdpParent::send(self, frame)
    }
    fn flush(&mut self) -> io::Result<()> {
        XdpParent::flush(self)
    }
    fn poll_fds(&self) -> Vec<BorrowedFd<'_>> {
        XdpParent::poll_fds(self)
    }
    fn mode(&self) -> WireMode {
        WireMode::AfXdp {
            xdp: self.xdp_mode,
            bind: self.bind_mode,
            queues: self.queues(),
        }
    }
    fn filter_maps(&self) -> Option<&FilterMaps> {
        Some(self.filter.maps())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_options_are_refused_before_touching_the_kernel() {
        let o = XdpOptions {
            ring_size: 100,
            ..Default::default()
        };
        assert!(matches!(
            XdpParent::open("lo", &o),
            Err(XdpError::Options(_))
        ));
        let o = XdpOptions {
            frame_size: 1000,
            ..Default::default()
        };
        assert!(matches!(
            XdpParent::open("lo", &o),
            Err(XdpError::Options(_))
        ));
        let o = XdpOptions {
            queues: Some(0),
            ..Default::default()
        };
        assert!(matches!(
            XdpParent::open("lo", &o),
            Err(XdpError::Options(_))
        ));
        let e = XdpParent::open("uvt-nonexist", &XdpOptions::default()).unwrap_err();
        assert!(matches!(e, XdpError::Interface { .. }), "{e}");
    }

    #[test]
    fn parent_and_socket_can_move_to_a_worker_thread() {
        fn assert_send<T: Send>() {}
        assert_send::<Xsk>();
        assert_send::<XdpParent>();
        assert_send::<super::super::afpacket::AfPacketParent>();
        assert_send::<super::super::afpacket::AfPacketSocket>();
    }

    #[test]
    fn xsk_config_is_checked() {
        let cfg = XskConfig {
            ring_size: 48,
            frame_size: 4096,
            zero_copy: false,
            tx_metadata: false,
        };
        assert_eq!(Xsk::open(1, 0, cfg).unwrap_err().0, "checking options");
    }
}
