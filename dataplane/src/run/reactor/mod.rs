//! How a worker waits, reads its TAPs and writes TAP frames: one of two backends behind the
//! same calls.
//!
//! - [`plain::Plain`]: `epoll` (level-triggered, descriptors added and removed as ports
//!   come and go), up to a budget of `readv`s per ready TAP, one `writev` per frame.
//! - [`uring::Uring`]: io_uring. One multishot read per TAP fills buffers of a
//!   provided-buffer ring; writes are queued as SQEs (a frame passed through unchanged is
//!   written from the buffer it was read into) and every SQE of a turn goes to the kernel in
//!   the one `io_uring_enter` that also waits for the next completions. Wire sockets and the
//!   eventfd are watched with multishot polls.
//!
//! Both report what happened as [`Event`]s; frames of a ready TAP are handed out by
//! [`Reactor::rx_tap`]; the per-frame outputs go through [`TapSink`].

pub(crate) mod plain;
pub(crate) mod uring;

use std::io;
use std::os::fd::RawFd;
use std::time::Duration;

use crate::offload::VnetHdr;
use crate::port::tap::Tap;

use super::LoopCounters;

/// Something a wait reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Event {
    /// The eventfd: commands or transferred frames are waiting.
    Bell,
    /// A TAP (by port index) has frames: readable (plain) or received into buffers (uring).
    Tap(u32),
    /// A TAP's fd failed (`errno`, 0 for `POLLERR`/`POLLHUP`): the device is gone.
    TapFailed(u32, i32),
    /// A parent's socket is readable.
    Wire(u32),
    /// A parent's socket reported `POLLERR`/`POLLHUP`.
    WireFailed(u32),
    /// A queued TAP write completed (uring): `res` is bytes written with the vnet header, or
    /// `-errno`.
    Written {
        port: u32,
        gen: u32,
        res: i32,
        gso: bool,
    },
}

/// One frame to write to a TAP.
pub(crate) struct TapWrite<'a> {
    /// The destination port index and its transmit entry's generation.
    pub(crate) port: u32,
    pub(crate) gen: u32,
    pub(crate) tap: &'a Tap,
    pub(crate) hdr: &'a VnetHdr,
    pub(crate) frame: &'a [u8],
    /// The frame is exactly what provided buffer `rx` holds after its header, and `hdr` is
    /// that header: the buffer itself may be written.
    pub(crate) rx: Option<u16>,
}

/// Where a worker's TAP outputs go.
pub(crate) trait TapSink {
    /// Writes the frame now (`Some(result)`) or queues it (`None`; its completion comes
    /// back as [`Event::Written`]).
    fn write(&mut self, w: &TapWrite<'_>) -> Option<io::Result<()>>;
}

/// What [`Reactor::rx_tap`] did.
pub(crate) struct RxDone {
    /// Frames handed out.
    pub(crate) frames: usize,
    /// Frames are left for the next turn (the budget was reached).
    pub(crate) more: bool,
    /// A read failed with this error before any frame (plain).
    pub(crate) error: Option<io::Error>,
}

/// A frame handler: `(sink, header, frame, provided buffer holding it)`.
pub(crate) type FrameFn<'f> = dyn FnMut(&mut dyn TapSink, &VnetHdr, &[u8], Option<u16>) + 'f;

/// The worker's I/O backend.
pub(crate) enum Reactor {
    Plain(Box<plain::Plain>),
    Uring(Box<uring::Uring>),
}

impl Reactor {
    /// Watches the worker's eventfd.
    pub(crate) fn add_bell(&mut self, fd: RawFd) -> io::Result<()> {
        match self {
            Reactor::Plain(p) => p.add(fd, plain::token(plain::BELL, 0)),
            Reactor::Uring(u) => {
                u.add_bell(fd);
                Ok(())
            }
        }
    }

    /// Starts reading port `port`'s TAP queue `fd`.
    pub(crate) fn add_tap(&mut self, port: u32, fd: RawFd) -> io::Result<()> {
        match self {
            Reactor::Plain(p) => p.add(fd, plain::token(plain::TAP, port)),
            Reactor::Uring(u) => {
                u.add_tap(port, fd);
                Ok(())
            }
        }
    }

    /// Stops reading port `port`'s TAP (`fd`): afterwards the kernel holds no request on it
    /// and frames already received from it are discarded.
    pub(crate) fn remove_tap(&mut self, port: u32, fd: RawFd) {
        match self {
            Reactor::Plain(p) => p.remove(fd),
            Reactor::Uring(u) => u.remove_tap(port),
        }
    }

    /// Pauses the reads of port `port`'s TAP (`fd`): its frames wait in the TAP's queue,
    /// frames already received are still handed out.
    pub(crate) fn pause_tap(&mut self, port: u32, fd: RawFd) {
        match self {
            Reactor::Plain(p) => p.remove(fd),
            Reactor::Uring(u) => u.pause_tap(port),
        }
    }

    /// Whether [`Reactor::rx_tap`] reads the TAP itself (the plain path), rather than
    /// handing out frames read already (io_uring's completions): a paused port's frames are
    /// then left in its TAP queue.
    pub(crate) fn reads_anew(&self) -> bool {
        matches!(self, Reactor::Plain(_))
    }

    /// Reads port `port`'s TAP (`fd`) again after [`Reactor::pause_tap`].
    pub(crate) fn resume_tap(&mut self, port: u32, fd: RawFd) {
        match self {
            Reactor::Plain(p) => {
                // Fails only if the descriptor is registered already: then it is read.
                let _ = p.add(fd, plain::token(plain::TAP, port));
            }
            Reactor::Uring(u) => u.resume_tap(port),
        }
    }

    /// Starts watching parent `parent`'s sockets.
    pub(crate) fn add_wire(&mut self, parent: u32, fds: &[RawFd]) -> io::Result<()> {
        match self {
            Reactor::Plain(p) => {
                for &fd in fds {
                    p.add(fd, plain::token(plain::WIRE, parent))?;
                }
                Ok(())
            }
            Reactor::Uring(u) => {
                u.add_wire(parent, fds);
                Ok(())
            }
        }
    }

    /// Stops watching parent `parent`'s sockets.
    pub(crate) fn remove_wire(&mut self, parent: u32, fds: &[RawFd]) {
        match self {
            Reactor::Plain(p) => {
                for &fd in fds {
                    p.remove(fd);
                }
            }
            Reactor::Uring(u) => u.remove_wire(parent),
        }
    }

    /// Waits for events (`block`: until there is one, or `timeout` has passed; else only
    /// collects what is there), after handing the kernel every write queued since the last
    /// wait.
    pub(crate) fn wait(&mut self, block: bool, timeout: Option<Duration>, events: &mut Vec<Event>) {
        match self {
            Reactor::Plain(p) => p.wait(block, timeout, events),
            Reactor::Uring(u) => u.wait(block, timeout, events),
        }
    }

    /// Hands out up to `budget` frames of port `port`'s TAP (`tap`) to `f`, in arrival order.
    pub(crate) fn rx_tap(
        &mut self,
        port: u32,
        tap: &Tap,
        budget: usize,
        f: &mut FrameFn<'_>,
    ) -> RxDone {
        match self {
            Reactor::Plain(p) => p.rx_tap(tap, budget, f),
            Reactor::Uring(u) => u.rx_tap(port, budget, f),
        }
    }

    /// Where TAP outputs go outside [`Reactor::rx_tap`] (wire ingress, GRO flushes).
    pub(crate) fn sink(&mut self) -> &mut dyn TapSink {
        match self {
            Reactor::Plain(p) => &mut p.tx,
            Reactor::Uring(u) => &mut **u,
        }
    }

    /// The end of a turn's I/O: buffers go back to the kernel, reads are re-armed.
    pub(crate) fn end_turn(&mut self) {
        if let Reactor::Uring(u) = self {
            u.end_turn();
        }
    }

    /// Before commands run (they may close fds): every queued write goes to the kernel now,
    /// while its fd is still the one it was queued for.
    pub(crate) fn before_commands(&mut self) {
        self.submit_now();
    }

    /// Every queued write goes to the kernel now (io_uring; the plain path writes at once).
    pub(crate) fn submit_now(&mut self) {
        if let Reactor::Uring(u) = self {
            u.submit_now();
        }
    }

    /// The system calls, wake-ups and frames counted here (the worker adds its own).
    pub(crate) fn counters(&self) -> LoopCounters {
        match self {
            Reactor::Plain(p) => p.counters(),
            Reactor::Uring(u) => u.counters(),
        }
    }

    /// Adds `n` system calls made on the reactor's behalf (eventfd reads).
    pub(crate) fn note_syscalls(&mut self, n: u64) {
        match self {
            Reactor::Plain(p) => p.lc.syscalls += n,
            Reactor::Uring(u) => u.lc.syscalls += n,
        }
    }
}
