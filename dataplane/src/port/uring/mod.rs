//! io_uring for the run loop: a ring set up the way the loop uses it (and a probe that says
//! whether this kernel can), the provided-buffer ring that multishot TAP reads fill
//! ([`BufRing`]), a pool of transmit buffers ([`TxPool`]), and the `user_data` layout the
//! loop gives its requests ([`Tag`]).
//!
//! Built on the `io-uring` crate (0.7): it maps the rings and encodes the SQEs; this module
//! owns the memory the kernel reads and writes through those SQEs.
//!
//! # What the loop needs from the kernel (checked by [`setup`])
//! - `io_uring_setup` allowed (not `kernel.io_uring_disabled`, not filtered by seccomp);
//! - `IORING_OP_READ_MULTISHOT` (6.7), `IORING_OP_POLL_ADD` with `IORING_POLL_ADD_MULTI`
//!   (5.13), `IORING_OP_WRITE`, `IORING_OP_ASYNC_CANCEL`;
//! - provided-buffer rings (`IORING_REGISTER_PBUF_RING`, 5.19), registered as a test.
//!
//! The ring is created by the thread that uses it (`IORING_SETUP_SINGLE_ISSUER`), with
//! `IORING_SETUP_DEFER_TASKRUN` where the kernel has it: completions are produced only when
//! that thread enters the kernel to wait, so a busy sender does not interrupt the loop once
//! per frame, and a wait collects every completion that piled up meanwhile.
//!
//! # Buffer lifetimes (the argument behind every `unsafe` here)
//! A buffer handed to the kernel through an SQE, or given to a provided-buffer ring, must stay
//! mapped and must not be written by userspace until the kernel is done with it:
//! - All buffer memory is one anonymous mapping per pool ([`Region`]), created before the
//!   first request and unmapped only when the pool is dropped. Pools are never resized, so a
//!   buffer never moves.
//! - A provided buffer belongs to the kernel from [`BufRing::give_back`] (or registration)
//!   until a CQE names its buffer id; it then belongs to the loop until the loop gives it back.
//!   [`BufRing::bytes`] (unsafe) may only be called in that window.
//! - A [`TxPool`] buffer belongs to the loop from [`TxPool::take`] until the loop submits a
//!   write of it; from then on the kernel reads it until the write's CQE, after which the loop
//!   [`TxPool::put`]s it back. The loop writes into a buffer only between `take` and the SQE.
//! - The owner of the ring drops it (or cancels every request and reaps the cancellations)
//!   before it drops the pools; see the run loop's `Drop`.

mod bufs;

pub use bufs::{BufRing, Region, TxPool};

use std::io;

use io_uring::{opcode, IoUring, Probe};

/// Why the io_uring path cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum UringError {
    /// `io_uring_setup` failed (`EPERM`/`ENOSYS`: disabled by `kernel.io_uring_disabled` or a
    /// seccomp filter; `ENOMEM`: locked-memory limit).
    #[error("io_uring_setup failed: {0}")]
    Setup(io::Error),
    /// The kernel cannot tell which opcodes it supports (`IORING_REGISTER_PROBE`).
    #[error("io_uring opcode probe failed: {0}")]
    Probe(io::Error),
    /// An operation the loop needs is missing.
    #[error("this kernel's io_uring lacks {0}")]
    Missing(&'static str),
    /// The provided-buffer ring could not be registered.
    #[error("cannot register a provided-buffer ring (IORING_REGISTER_PBUF_RING): {0}")]
    BufRing(io::Error),
    /// Buffer memory could not be mapped.
    #[error("cannot map {bytes} bytes of io_uring buffers: {source}")]
    Map {
        /// The size asked for.
        bytes: usize,
        /// The `mmap` error.
        source: io::Error,
    },
}

/// Creates a ring for the calling thread with `entries` submission entries and a
/// completion queue of `cq_entries`, and checks that the opcodes the run loop uses are
/// there. Tries single-issuer + deferred task work first, then a plain ring.
pub fn setup(entries: u32, cq_entries: u32) -> Result<IoUring, UringError> {
    let fancy = IoUring::builder()
        .setup_cqsize(cq_entries)
        .setup_single_issuer()
        .setup_defer_taskrun()
        .setup_taskrun_flag()
        .setup_clamp()
        .build(entries);
    let ring = match fancy {
        Ok(r) => r,
        // Older kernels refuse the flags with EINVAL: the loop works without them.
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => IoUring::builder()
            .setup_cqsize(cq_entries)
            .setup_clamp()
            .build(entries)
            .map_err(UringError::Setup)?,
        Err(e) => return Err(UringError::Setup(e)),
    };
    let mut probe = Probe::new();
    ring.submitter()
        .register_probe(&mut probe)
        .map_err(UringError::Probe)?;
    for (code, name) in [
        (
            opcode::ReadMulti::CODE,
            "IORING_OP_READ_MULTISHOT (Linux 6.7)",
        ),
        (opcode::PollAdd::CODE, "IORING_OP_POLL_ADD"),
        (opcode::Write::CODE, "IORING_OP_WRITE"),
        (opcode::AsyncCancel::CODE, "IORING_OP_ASYNC_CANCEL"),
    ] {
        if !probe.is_supported(code) {
            return Err(UringError::Missing(name));
        }
    }
    Ok(ring)
}

/// Whether this kernel (and this process's sandbox) gives the run loop what it needs: a
/// ring as [`setup`] makes it, and a provided-buffer ring registered on it. `Err` says why
/// not. Costs one ring setup and teardown.
pub fn probe() -> Result<(), UringError> {
    let ring = setup(8, 16)?;
    let bufs = BufRing::new(&ring, 0, 2, 4096)?;
    // Unregister before the ring (and then the memory) goes away.
    let _ = ring.submitter().unregister_buf_ring(0);
    drop(ring);
    drop(bufs);
    Ok(())
}

/// What a request is for, in the top bits of its `user_data`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// A multishot read of a TAP.
    TapRead = 1,
    /// A write to a TAP.
    TapWrite = 2,
    /// A multishot poll of a wire socket.
    WirePoll = 3,
    /// The multishot poll of the loop's eventfd.
    Bell = 4,
    /// A cancellation request (its own CQE carries nothing the loop needs).
    Cancel = 5,
}

impl Kind {
    fn from_bits(b: u64) -> Option<Kind> {
        Some(match b {
            1 => Kind::TapRead,
            2 => Kind::TapWrite,
            3 => Kind::WirePoll,
            4 => Kind::Bell,
            5 => Kind::Cancel,
            _ => return None,
        })
    }
}

/// The `user_data` of one of the loop's requests: its kind, the slot it belongs to (a port
/// or parent index), that slot's generation (so a completion for a slot that was removed,
/// or removed and reused, is recognised), a buffer number and one flag bit.
///
/// Layout (bits): kind 63..60, flag 59, pool 58, buffer 57..42, generation 41..20, slot
/// 19..0. Slots and generations wrap at their widths; a generation is compared only with the
/// slot's current one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tag {
    /// What the request does.
    pub kind: Kind,
    /// Port or parent index (20 bits).
    pub slot: u32,
    /// The slot's generation when the request was made (22 bits).
    pub gen: u32,
    /// A buffer id (writes: the provided buffer or the transmit buffer written).
    pub buf: u16,
    /// Writes: the buffer is a [`TxPool`] buffer (else a provided buffer of the read ring).
    pub pool: bool,
    /// Writes: the frame was a GSO super-frame (counted on completion).
    pub flag: bool,
}

impl Tag {
    /// Bits kept of a slot number.
    pub const SLOT_MASK: u32 = (1 << 20) - 1;
    /// Bits kept of a generation.
    pub const GEN_MASK: u32 = (1 << 22) - 1;

    /// A tag with no buffer and no flags.
    pub fn new(kind: Kind, slot: u32, gen: u32) -> Tag {
        Tag {
            kind,
            slot,
            gen,
            buf: 0,
            pool: false,
            flag: false,
        }
    }

    /// The `user_data` value.
    pub fn encode(self) -> u64 {
        (self.kind as u64) << 60
            | u64::from(self.flag) << 59
            | u64::from(self.pool) << 58
            | u64::from(self.buf) << 42
            | u64::from(self.gen & Self::GEN_MASK) << 20
            | u64::from(self.slot & Self::SLOT_MASK)
    }

    /// The tag of a `user_data` value (`None`: not one of the loop's, e.g. 0).
    pub fn decode(v: u64) -> Option<Tag> {
        Some(Tag {
            kind: Kind::from_bits(v >> 60)?,
            flag: v >> 59 & 1 == 1,
            pool: v >> 58 & 1 == 1,
            buf: (v >> 42 & 0xffff) as u16,
            gen: (v >> 20) as u32 & Self::GEN_MASK,
            slot: v as u32 & Self::SLOT_MASK,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_round_trip_and_wrap_at_their_widths() {
        for t in [
            Tag::new(Kind::TapRead, 0, 0),
            Tag {
                kind: Kind::TapWrite,
                slot: Tag::SLOT_MASK,
                gen: Tag::GEN_MASK,
                buf: u16::MAX,
                pool: true,
                flag: true,
            },
            Tag {
                kind: Kind::WirePoll,
                slot: 7,
                gen: 9,
                buf: 300,
                pool: false,
                flag: true,
            },
            Tag::new(Kind::Bell, 1, 2),
            Tag::new(Kind::Cancel, 3, 4),
        ] {
            assert_eq!(Tag::decode(t.encode()), Some(t));
        }
        let wide = Tag::new(Kind::TapRead, Tag::SLOT_MASK + 2, Tag::GEN_MASK + 3);
        let back = Tag::decode(wide.encode()).unwrap();
        assert_eq!((back.slot, back.gen), (1, 2));
        assert_eq!(Tag::decode(0), None);
        assert_eq!(Tag::decode(15 << 60), None);
    }
}
