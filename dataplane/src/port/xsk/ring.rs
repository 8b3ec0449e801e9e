//! The memory shared with the kernel: anonymous and socket mappings ([`Mmap`]) and the four
//! single-producer/single-consumer rings (fill, completion, RX, TX) mapped from an AF_XDP
//! socket.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::ptr;
use std::sync::atomic::{AtomicU32, Ordering};

pub(super) struct Mmap {
    pub(super) ptr: *mut u8,
    pub(super) len: usize,
}

impl Mmap {
    pub(super) fn new(len: usize, fd: Option<BorrowedFd<'_>>, pgoff: u64) -> io::Result<Mmap> {
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
pub(super) struct Ring<T> {
    /// Keeps the mapping alive; the pointers below point into it.
    _map: Mmap,
    producer: *const AtomicU32,
    consumer: *const AtomicU32,
    flags: *const AtomicU32,
    descs: *mut T,
    pub(super) size: u32,
    /// Our private head: the producer index for rings we produce, the consumer index for
    /// rings we consume.
    local: u32,
}

impl<T: Copy> Ring<T> {
    /// Map a ring; `produce` says whether userspace produces (fill, TX) or consumes
    /// (RX, completion) it, which decides which index `local` starts from.
    pub(super) fn map(
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

    pub(super) fn needs_wakeup(&self) -> bool {
        // SAFETY: as for `prod`.
        unsafe { &*self.flags }.load(Ordering::Relaxed) & libc::XDP_RING_NEED_WAKEUP != 0
    }

    fn slot(&self, idx: u32) -> *mut T {
        // SAFETY: `idx & (size - 1)` < size and the mapping holds `size` entries after `desc`.
        unsafe { self.descs.add((idx & (self.size - 1)) as usize) }
    }

    // --- rings we produce (fill, TX) ---

    /// Free slots.
    pub(super) fn free(&self) -> u32 {
        self.size - self.local.wrapping_sub(self.cons().load(Ordering::Acquire))
    }

    /// Write one entry at our head (not yet visible to the kernel).
    ///
    /// # Safety
    ///
    /// The ring must have a free slot: `free() > 0` right before this call (or, for a run of
    /// stages, no more entries staged than `free()` returned before the first). Otherwise
    /// the slot may still belong to the kernel, which can be reading it concurrently.
    pub(super) unsafe fn stage(&mut self, v: T) {
        // SAFETY: the caller guarantees a free slot, so the kernel does not own this one.
        unsafe { ptr::write(self.slot(self.local), v) };
        self.local = self.local.wrapping_add(1);
    }

    /// Publish staged entries.
    pub(super) fn publish(&self) {
        self.prod().store(self.local, Ordering::Release);
    }

    // --- rings we consume (RX, completion) ---

    pub(super) fn available(&self) -> u32 {
        self.prod().load(Ordering::Acquire).wrapping_sub(self.local)
    }

    /// Reads the `i`-th entry past our head.
    ///
    /// # Safety
    ///
    /// `i < available()`, counted since the last `release`: only then has the kernel
    /// published the slot, and it will not write it again until we release it.
    pub(super) unsafe fn read(&self, i: u32) -> T {
        // SAFETY: `i < available()` (this function's contract): the kernel published this
        // slot and will not touch it until we release it.
        unsafe { ptr::read(self.slot(self.local.wrapping_add(i))) }
    }

    pub(super) fn release(&mut self, n: u32) {
        self.local = self.local.wrapping_add(n);
        self.cons().store(self.local, Ordering::Release);
    }
}
