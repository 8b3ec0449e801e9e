//! One AF_XDP socket ([`Xsk`]) with its own UMEM and rings, bound to one RX queue: setup,
//! RX, TX with optional checksum metadata, kicks and counters.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::ptr;

use super::ring::{Mmap, Ring};
use super::{XskKernelStats, XskStats};
use crate::port::RxFrame;

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

/// `getsockopt(SOL_XDP, opt)` into `v`; returns the length the kernel wrote.
///
/// # Safety
///
/// `T` must be the plain-old-data structure the kernel writes for `opt` (or a prefix of it):
/// every bit pattern the kernel may write must be a valid `T`.
unsafe fn getsockopt<T: Copy>(
    fd: BorrowedFd<'_>,
    opt: libc::c_int,
    v: &mut T,
) -> io::Result<usize> {
    let mut len = std::mem::size_of::<T>() as libc::socklen_t;
    // SAFETY: `v` is a valid, writable T and `len` its size; the kernel writes at most `len`
    // bytes, and any bytes it writes form a valid T (this function's contract).
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
        // SAFETY: `xdp_mmap_offsets` is the plain-old-data answer to XDP_MMAP_OFFSETS.
        let got = unsafe { getsockopt(fd.as_fd(), libc::XDP_MMAP_OFFSETS, &mut off) }
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
            // SAFETY: the fill ring was just mapped and is empty: all `ring_size` slots are
            // free, and this stages exactly that many.
            unsafe { fill.stage(i * cfg.frame_size as u64) };
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
        // SAFETY: `xdp_options` is the plain-old-data answer to XDP_OPTIONS.
        unsafe { getsockopt(fd.as_fd(), libc::XDP_OPTIONS, &mut opts) }
            .map_err(e("XDP_OPTIONS"))?;
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
                // SAFETY: at most `room` (= `free()` before the loop) entries are staged.
                unsafe { self.fill.stage(a) };
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
            // SAFETY: `i < n <= available()`, and nothing was released since.
            let d = unsafe { self.rx.read(i) };
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
            // SAFETY: `i < n == available()`, and nothing was released since.
            let a = unsafe { self.comp.read(i) };
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
        // SAFETY: `self.tx.free() > 0` was checked above and nothing was staged since.
        unsafe {
            self.tx.stage(libc::xdp_desc {
                addr: data_addr,
                len: frame.len() as u32,
                options: if csum.is_some() {
                    libc::XDP_TX_METADATA
                } else {
                    0
                },
            });
        }
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
            if !self.zero_copy {
                self.kick_while_taken()?;
            }
        }
        self.reclaim();
        Ok(())
    }

    /// Copy mode: one `sendto` transmits at most one batch (`TX_BATCH_SIZE`, 32 frames in
    /// Linux 6.18) and answers `EAGAIN` when more is left. Frames left in the ring would only
    /// move with the next flush, 32 per later frame: after a burst, a backlog of up to a
    /// ring's worth would sit in front of every frame sent after it (a ping behind it never
    /// left). So kick again while the kernel takes descriptors, until the ring is empty; a
    /// kick that takes nothing (the device is busy) ends it, and the next flush tries again.
    fn kick_while_taken(&mut self) -> io::Result<()> {
        // Each kick that makes progress takes at least one descriptor; the bound is never
        // reached unless the kernel takes them one at a time.
        let mut left = self.tx.size;
        while left > 0 && self.tx.free() < self.tx.size {
            let before = self.tx.free();
            self.kick()?;
            if self.tx.free() == before {
                break;
            }
            left -= 1;
        }
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
    /// Wake-up system calls made so far (fill and TX kicks; no system call to read it).
    pub fn syscalls(&self) -> u64 {
        self.stats.fill_kicks + self.stats.tx_kicks
    }

    pub fn stats(&self) -> io::Result<XskStats> {
        // SAFETY: xdp_statistics is plain old data; all-zero is valid.
        let mut k: libc::xdp_statistics = unsafe { std::mem::zeroed() };
        // SAFETY: `xdp_statistics` is the plain-old-data answer to XDP_STATISTICS.
        unsafe { getsockopt(self.fd.as_fd(), libc::XDP_STATISTICS, &mut k) }?;
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
