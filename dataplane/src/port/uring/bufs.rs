//! Buffer memory shared with the kernel: an anonymous mapping ([`Region`]), the
//! provided-buffer ring multishot reads pick from ([`BufRing`]), and transmit buffers
//! ([`TxPool`]). See the module docs of `port::uring` for who owns a buffer when.

use std::io;
use std::ptr;
use std::sync::atomic::{AtomicU16, Ordering};

use io_uring::types::BufRingEntry;
use io_uring::IoUring;

use super::UringError;

const PAGE: usize = 4096;

fn round_up(n: usize, to: usize) -> usize {
    n.div_ceil(to) * to
}

/// An anonymous private mapping, unmapped on drop. Its address never changes, which is what
/// lets SQEs and buffer rings point into it.
#[derive(Debug)]
pub struct Region {
    ptr: *mut u8,
    len: usize,
}

// SAFETY: a Region is plain memory owned by one value; the raw pointer is only an address.
// Whoever shares it across threads synchronises access the usual way (&/&mut).
unsafe impl Send for Region {}

impl Region {
    /// Maps `len` bytes (rounded up to whole pages), zero-filled. Pages are faulted in when
    /// first touched (by the kernel or by us), so unused buffers cost no memory.
    pub fn new(len: usize) -> Result<Region, UringError> {
        let len = round_up(len.max(1), PAGE);
        // SAFETY: a fresh anonymous mapping at a kernel-chosen address; nothing aliases it.
        let p = unsafe {
            libc::mmap(
                ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(UringError::Map {
                bytes: len,
                source: io::Error::last_os_error(),
            });
        }
        Ok(Region { ptr: p.cast(), len })
    }

    /// The first byte.
    pub fn as_ptr(&self) -> *mut u8 {
        self.ptr
    }

    /// The mapped length.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Never true (a region has at least one page); for clippy's `len_without_is_empty`.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` describe the mapping made in `Region::new`, unmapped only here.
        unsafe {
            libc::munmap(self.ptr.cast(), self.len);
        }
    }
}

/// A provided-buffer ring (`IORING_REGISTER_PBUF_RING`): `count` buffers of `buf_len` bytes
/// (each starting on a page boundary) that the kernel picks from for multishot reads of
/// buffer group `bgid`. A completion names the buffer it filled (`IORING_CQE_F_BUFFER`); the
/// loop reads it with [`BufRing::bytes`] and hands it back with [`BufRing::give_back`] and
/// [`BufRing::publish`].
#[derive(Debug)]
pub struct BufRing {
    /// The ring of `io_uring_buf` entries the kernel reads.
    entries: Region,
    /// The buffers.
    data: Region,
    count: u16,
    stride: usize,
    buf_len: u32,
    bgid: u16,
    /// Our tail: entries up to here are written; the kernel sees them after `publish`.
    tail: u16,
    /// Buffers currently given to the kernel (published or staged).
    given: u32,
}

// SAFETY: the pointers inside are addresses of the two regions this value owns.
unsafe impl Send for BufRing {}

impl BufRing {
    /// Maps `count` (a power of two, at most 32768) buffers of `buf_len` bytes, registers
    /// them as group `bgid` on `ring`, and gives every buffer to the kernel.
    ///
    /// The ring must be dropped (or the group unregistered) before this value: the kernel
    /// keeps pointers into its memory.
    pub fn new(ring: &IoUring, bgid: u16, count: u16, buf_len: usize) -> Result<Self, UringError> {
        if !count.is_power_of_two() || count > 32768 {
            return Err(UringError::BufRing(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{count} buffers: the count must be a power of two up to 32768"),
            )));
        }
        let stride = round_up(buf_len, PAGE);
        let entries = Region::new(usize::from(count) * std::mem::size_of::<BufRingEntry>())?;
        let data = Region::new(usize::from(count) * stride)?;
        let mut r = BufRing {
            entries,
            data,
            count,
            stride,
            buf_len: u32::try_from(buf_len).unwrap_or(u32::MAX),
            bgid,
            tail: 0,
            given: 0,
        };
        // SAFETY: `entries` is a page-aligned mapping of `count` ring entries owned by `r`; the
        // caller keeps `r` alive until the ring is gone or the group unregistered (see above).
        unsafe {
            ring.submitter()
                .register_buf_ring_with_flags(r.entries.as_ptr() as u64, count, bgid, 0)
        }
        .map_err(UringError::BufRing)?;
        for bid in 0..count {
            r.give_back(bid);
        }
        r.publish();
        Ok(r)
    }

    /// The buffer group id.
    pub fn bgid(&self) -> u16 {
        self.bgid
    }

    /// Number of buffers.
    pub fn count(&self) -> u16 {
        self.count
    }

    /// Size of each buffer.
    pub fn buf_len(&self) -> usize {
        self.buf_len as usize
    }

    /// Buffers the kernel holds now (given back and not yet used by a read).
    pub fn given(&self) -> u32 {
        self.given
    }

    /// Notes that the kernel used one buffer (a read completion named it).
    pub fn taken_by_kernel(&mut self) {
        self.given = self.given.saturating_sub(1);
    }

    /// The address of buffer `bid`'s first byte (for a write SQE of its contents).
    pub fn addr(&self, bid: u16) -> *const u8 {
        let i = usize::from(bid % self.count);
        // SAFETY: i < count, so the offset stays inside `data` (count * stride bytes).
        unsafe { self.data.as_ptr().add(i * self.stride) }
    }

    /// The first `len` bytes of buffer `bid` (clamped to the buffer).
    ///
    /// # Safety
    ///
    /// The kernel must have handed `bid` to the caller (a read completion selected it) and the
    /// caller must not have given it back since: only then does nobody write to it.
    pub unsafe fn bytes(&self, bid: u16, len: usize) -> &[u8] {
        let len = len.min(self.buf_len as usize);
        // SAFETY: the buffer lies inside `data` and is `buf_len` long; by the caller's contract
        // the kernel does not write to it while this shared borrow lives (it is ours until
        // `give_back`, which takes `&mut self` and so ends the borrow).
        unsafe { std::slice::from_raw_parts(self.addr(bid), len) }
    }

    /// Stages buffer `bid` for the kernel again; it sees it after [`BufRing::publish`].
    pub fn give_back(&mut self, bid: u16) {
        let mask = self.count - 1;
        let slot = usize::from(self.tail & mask);
        let addr = self.addr(bid) as u64;
        // SAFETY: slot < count, so the entry lies inside `entries`; the kernel reads entries
        // only between its head and the published tail, and this slot is past the published
        // tail (the ring holds `count` entries and at most `count` buffers exist).
        unsafe {
            let e = &mut *self.entries.as_ptr().cast::<BufRingEntry>().add(slot);
            e.set_addr(addr);
            e.set_len(self.buf_len);
            e.set_bid(bid);
        }
        self.tail = self.tail.wrapping_add(1);
        self.given += 1;
    }

    /// Makes every staged buffer visible to the kernel (a release store of the tail).
    pub fn publish(&mut self) {
        // SAFETY: the tail field overlays the first entry's `resv` (see `BufRingEntry::tail`);
        // it is aligned for u16 and lives as long as `entries`.
        unsafe {
            let tail = BufRingEntry::tail(self.entries.as_ptr().cast::<BufRingEntry>());
            AtomicU16::from_ptr(tail.cast_mut()).store(self.tail, Ordering::Release);
        }
    }
}

/// Transmit buffers for frames the loop builds or edits (VLAN push/pop, wire → TAP, GRO
/// output): `count` buffers of `buf_len` bytes, each on its own pages. A buffer is the loop's
/// between [`TxPool::take`] and the submission of the write that sends it, and again after
/// that write's completion, when the loop [`TxPool::put`]s it back.
#[derive(Debug)]
pub struct TxPool {
    data: Region,
    stride: usize,
    buf_len: usize,
    free: Vec<u16>,
    /// Whether each buffer is in `free` (so a double `put` is ignored).
    is_free: Vec<bool>,
    count: u16,
}

// SAFETY: the pool's memory is owned by it; the raw pointer is only an address.
unsafe impl Send for TxPool {}

impl TxPool {
    /// Maps `count` buffers of `buf_len` bytes.
    pub fn new(count: u16, buf_len: usize) -> Result<TxPool, UringError> {
        let stride = round_up(buf_len, PAGE);
        let data = Region::new(usize::from(count) * stride)?;
        Ok(TxPool {
            data,
            stride,
            buf_len,
            free: (0..count).rev().collect(),
            is_free: vec![true; usize::from(count)],
            count,
        })
    }

    /// A free buffer, or `None` when all are in flight.
    pub fn take(&mut self) -> Option<u16> {
        let i = self.free.pop()?;
        if let Some(f) = self.is_free.get_mut(usize::from(i)) {
            *f = false;
        }
        Some(i)
    }

    /// Returns buffer `i` (its write completed, or it was never submitted).
    pub fn put(&mut self, i: u16) {
        if let Some(f) = self.is_free.get_mut(usize::from(i)) {
            if !*f {
                *f = true;
                self.free.push(i);
            }
        }
    }

    /// Buffers free now.
    pub fn free(&self) -> usize {
        self.free.len()
    }

    /// Size of each buffer.
    pub fn buf_len(&self) -> usize {
        self.buf_len
    }

    /// The address of buffer `i`.
    pub fn addr(&self, i: u16) -> *const u8 {
        let i = usize::from(i % self.count.max(1));
        // SAFETY: i < count, so the offset stays inside `data`.
        unsafe { self.data.as_ptr().add(i * self.stride) }
    }

    /// Copies `parts` one after the other into buffer `i`; returns the length written, or
    /// `None` when they do not fit.
    ///
    /// # Safety
    ///
    /// `i` must have been [`take`](TxPool::take)n and not yet submitted: no write in flight
    /// reads it.
    pub unsafe fn fill(&mut self, i: u16, parts: &[&[u8]]) -> Option<usize> {
        let total: usize = parts.iter().map(|p| p.len()).sum();
        if total > self.buf_len || i >= self.count {
            return None;
        }
        // SAFETY: buffer `i` lies inside `data` and is `buf_len >= total` long; by the
        // caller's contract nothing else reads or writes it now.
        let dst = unsafe { std::slice::from_raw_parts_mut(self.addr(i).cast_mut(), total) };
        let mut at = 0;
        for p in parts {
            dst.get_mut(at..at + p.len())?.copy_from_slice(p);
            at += p.len();
        }
        Some(total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tx_pool_hands_out_each_buffer_once() {
        let mut p = TxPool::new(4, 100).unwrap();
        let mut got: Vec<u16> = (0..4).filter_map(|_| p.take()).collect();
        assert!(p.take().is_none());
        got.sort();
        assert_eq!(got, [0, 1, 2, 3]);
        // SAFETY: buffer 2 was taken and is not in flight.
        let n = unsafe { p.fill(2, &[b"ab", b"cde"]) };
        assert_eq!(n, Some(5));
        // SAFETY: as above; nothing reads the buffer concurrently.
        let back = unsafe { std::slice::from_raw_parts(p.addr(2), 5) };
        assert_eq!(back, b"abcde");
        // SAFETY: as above.
        assert_eq!(unsafe { p.fill(2, &[&[0u8; 101]]) }, None);
        p.put(2);
        p.put(2);
        p.put(9);
        assert_eq!(
            p.free(),
            1,
            "a double put or a foreign id does not grow the pool"
        );
        assert_eq!(p.take(), Some(2));
        assert_eq!(p.addr(1) as usize - p.addr(0) as usize, PAGE);
    }

    #[test]
    fn regions_are_page_rounded_and_zeroed() {
        let r = Region::new(10).unwrap();
        assert_eq!(r.len(), PAGE);
        assert!(!r.is_empty());
        // SAFETY: the region is PAGE bytes long and owned here.
        let b = unsafe { std::slice::from_raw_parts(r.as_ptr(), r.len()) };
        assert!(b.iter().all(|&x| x == 0));
    }
}
