//! The plain backend: `epoll` for readiness, `readv`/`writev` for TAP frames. For kernels or
//! sandboxes without io_uring. Level-triggered: a TAP left with frames after its budget
//! is reported again by the next wait.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use crate::port::tap::{RxBatch, Tap, MAX_FRAME_LEN};

use super::{Event, FrameFn, RxDone, TapSink, TapWrite};
use crate::run::LoopCounters;

/// Token kinds (the top byte of `epoll_event.u64`).
pub(crate) const BELL: u64 = 1;
pub(crate) const TAP: u64 = 2;
pub(crate) const WIRE: u64 = 3;

/// The `epoll_event.u64` of a source.
pub(crate) fn token(kind: u64, index: u32) -> u64 {
    kind << 56 | u64::from(index)
}

/// Immediate TAP writes, one `writev` each.
#[derive(Default)]
pub(crate) struct PlainTx {
    syscalls: u64,
    frames: u64,
}

impl TapSink for PlainTx {
    fn write(&mut self, w: &TapWrite<'_>) -> Option<io::Result<()>> {
        self.syscalls += 1;
        let r = w.tap.write_frame(w.hdr, w.frame);
        if r.is_ok() {
            self.frames += 1;
        }
        Some(r)
    }
}

/// The plain backend of one worker.
pub(crate) struct Plain {
    ep: OwnedFd,
    evs: Vec<libc::epoll_event>,
    rx: RxBatch,
    pub(crate) tx: PlainTx,
    pub(crate) lc: LoopCounters,
    busy: Option<Duration>,
}

impl Plain {
    /// An epoll instance and receive buffers for `batch` frames.
    pub(crate) fn new(batch: usize, busy: Option<Duration>) -> io::Result<Plain> {
        // SAFETY: plain epoll_create1 call; the result is checked.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Plain {
            // SAFETY: `fd` is a fresh descriptor owned by nobody else.
            ep: unsafe { OwnedFd::from_raw_fd(fd) },
            evs: vec![libc::epoll_event { events: 0, u64: 0 }; 256],
            rx: RxBatch::new(batch, MAX_FRAME_LEN),
            tx: PlainTx::default(),
            lc: LoopCounters::default(),
            busy,
        })
    }

    pub(crate) fn add(&mut self, fd: RawFd, token: u64) -> io::Result<()> {
        let mut ev = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: token,
        };
        // SAFETY: `ev` is a live epoll_event; `fd` is a descriptor the worker owns.
        let r = unsafe { libc::epoll_ctl(self.ep.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut ev) };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    pub(crate) fn remove(&mut self, fd: RawFd) {
        let mut ev = libc::epoll_event { events: 0, u64: 0 };
        // SAFETY: as in `add`; a descriptor that is not registered just fails (ENOENT).
        unsafe { libc::epoll_ctl(self.ep.as_raw_fd(), libc::EPOLL_CTL_DEL, fd, &mut ev) };
    }

    fn epoll_wait(&mut self, timeout: libc::c_int) -> usize {
        self.lc.syscalls += 1;
        // SAFETY: `evs` is a live, writable array of `len` events.
        let n = unsafe {
            libc::epoll_wait(
                self.ep.as_raw_fd(),
                self.evs.as_mut_ptr(),
                self.evs.len() as libc::c_int,
                timeout,
            )
        };
        // EINTR: nothing to report (a signal); other errors cannot happen with valid
        // arguments.
        usize::try_from(n).unwrap_or(0)
    }

    pub(crate) fn wait(&mut self, block: bool, timeout: Option<Duration>, events: &mut Vec<Event>) {
        let mut n = 0;
        if block {
            if let Some(d) = self.busy {
                let end = Instant::now() + d;
                while n == 0 && Instant::now() < end {
                    n = self.epoll_wait(0);
                }
            }
            if n == 0 {
                // Milliseconds, rounded up (a paused port is read again no earlier than due).
                let ms = timeout.map_or(-1, |t| {
                    libc::c_int::try_from(t.as_micros().div_ceil(1000)).unwrap_or(libc::c_int::MAX)
                });
                n = self.epoll_wait(ms);
                self.lc.wakeups += 1;
            }
        } else {
            n = self.epoll_wait(0);
        }
        for ev in self.evs.iter().take(n) {
            let (bits, tok) = (ev.events, ev.u64);
            let index = tok as u32;
            let readable = bits & libc::EPOLLIN as u32 != 0;
            let failed = bits & (libc::EPOLLERR | libc::EPOLLHUP) as u32 != 0;
            match tok >> 56 {
                BELL => events.push(Event::Bell),
                TAP if readable => events.push(Event::Tap(index)),
                TAP if failed => events.push(Event::TapFailed(index, 0)),
                WIRE if readable => events.push(Event::Wire(index)),
                WIRE if failed => events.push(Event::WireFailed(index)),
                _ => {}
            }
        }
    }

    pub(crate) fn rx_tap(&mut self, tap: &Tap, budget: usize, f: &mut FrameFn<'_>) -> RxDone {
        let cap = budget.min(self.rx.capacity());
        let r = tap.read_batch_max(&mut self.rx, cap);
        let (n, error) = match r {
            Ok(n) => (n, None),
            Err(e) => (0, Some(e)),
        };
        // One readv per frame, plus the one that found the queue empty (or failed).
        self.lc.syscalls += n as u64 + u64::from(n < cap);
        for i in 0..n {
            if let Some((h, fr)) = self.rx.get(i) {
                f(&mut self.tx, h, fr, None);
            }
        }
        RxDone {
            frames: n,
            more: n == cap,
            error,
        }
    }

    pub(crate) fn counters(&self) -> LoopCounters {
        let mut c = self.lc;
        c.syscalls += self.tx.syscalls;
        c.frames_out += self.tx.frames;
        c
    }
}
