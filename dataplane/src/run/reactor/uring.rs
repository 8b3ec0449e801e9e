//! The io_uring backend of one worker.
//!
//! - **TAP reads**: one `IORING_OP_READ_MULTISHOT` per TAP, picking buffers from the
//!   worker's provided-buffer ring. Each completion is one frame, `[virtio_net_hdr | frame]`
//!   in one buffer; it goes into the port's FIFO and is handed out by [`Uring::rx_tap`], at
//!   most a budget per turn. A multishot that ends (no `IORING_CQE_F_MORE`: `-ENOBUFS` when
//!   the ring ran dry, or the kernel's own reasons) is re-armed at the end of the turn, once
//!   buffers are back and the port's FIFO is below its budget.
//! - **TAP writes**: `IORING_OP_WRITE` SQEs. A frame passed through unchanged is written from
//!   the buffer it was read into (header included: zero copies in userspace); the buffer
//!   goes back to the ring when the read's processing and every write of it are done
//!   (a reference count per buffer). Other frames are copied into a [`TxPool`] buffer. When
//!   the pool is exhausted a frame is written at once with `writev`. Writes to a TAP never
//!   block, so the kernel issues them inline, in submission order, during the submit.
//! - **Everything else** (wire sockets, the eventfd): `IORING_OP_POLL_ADD` with
//!   `IORING_POLL_ADD_MULTI`, re-armed when a completion comes without `F_MORE`.
//! - **One system call per turn**: the SQEs queued during a turn are submitted by the
//!   `io_uring_enter` that waits for the next completions.
//!
//! Completions carry a [`Tag`]: kind, slot (port or parent index) and the slot's generation,
//! so a completion for a TAP or wire that was removed (or removed and reused) is recognised
//! and only its buffer is recovered. Removing a TAP or wire cancels its requests
//! synchronously (`IORING_REGISTER_SYNC_CANCEL`): afterwards the kernel holds no reference
//! to its fd.

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::time::{Duration, Instant};

use io_uring::{cqueue, opcode, squeue, types, IoUring};

use crate::offload::VnetHdr;
use crate::port::tap::{MAX_FRAME_LEN, VNET_HDR_LEN};
use crate::port::uring::{setup, BufRing, Kind, Tag, TxPool, UringError};
use crate::run::LoopCounters;

use super::{Event, FrameFn, RxDone, TapSink, TapWrite};

/// Size of one receive or transmit buffer: a vnet header and the largest frame.
pub(crate) const BUF_LEN: usize = VNET_HDR_LEN + MAX_FRAME_LEN;
/// Transmit buffers per worker.
const TX_BUFS: u16 = 128;
/// Submission queue entries per ring.
const SQ_ENTRIES: u32 = 1024;
/// Frames up to this size (without the vnet header) count as small for coalescing.
const SMALL_FRAME: usize = 256;
/// Quick waits with only small frames before waits start to linger.
const HOT_AFTER: u32 = 4;

/// A TAP this worker reads.
#[derive(Default)]
struct TapRx {
    gen: u32,
    fd: RawFd,
    live: bool,
    /// A multishot read is in the kernel (or queued for it).
    armed: bool,
    /// Frames received, not yet handed out: (buffer id, bytes with the vnet header).
    fifo: VecDeque<(u16, u32)>,
    /// An `Event::Tap` was reported since the last `rx_tap`.
    reported: bool,
    /// Its reads are paused (flood deferral): the read is not re-armed.
    paused: bool,
}

/// A parent's sockets this worker watches.
#[derive(Default)]
struct WireReg {
    gen: u32,
    fds: Vec<RawFd>,
    live: bool,
}

/// The io_uring backend of one worker.
pub(crate) struct Uring {
    // Field order is drop order: the ring (and with it every request) goes before the
    // buffer memory its requests point into.
    ring: IoUring,
    bufs: BufRing,
    pool: TxPool,
    /// Holders of each provided buffer: the frame being processed, and writes in flight.
    refs: Vec<u16>,
    /// Provided buffers given back since the last publish.
    staged: bool,
    taps: Vec<TapRx>,
    wires: Vec<WireReg>,
    bell: Option<RawFd>,
    next_gen: u32,
    /// Ports whose read must be re-armed.
    to_arm: Vec<u32>,
    /// Wire polls to re-arm: (parent, fd index).
    wire_rearm: Vec<(u32, u16)>,
    bell_rearm: bool,
    /// Completions of the last wait, copied out of the CQ.
    cqes: Vec<(u64, i32, u32)>,
    /// Events of completions collected outside a wait (a full submission queue), reported
    /// by the next wait.
    spill: Vec<Event>,
    budget: usize,
    busy: Option<Duration>,
    /// Writes submitted (or queued) whose completion has not been collected.
    inflight: usize,
    /// The longest a wait lingers for more frames while traffic is flowing (`None`: never).
    coalesce: Option<Duration>,
    /// Small frames keep arriving faster than one per `coalesce`: the next wait lingers.
    hot: bool,
    /// Consecutive waits that brought only small frames, quickly.
    streak: u32,
    /// When the last wait returned.
    last_wake: Instant,
    /// Frames received by the completions of the last wait.
    frames_seen: usize,
    /// One of them was larger than `SMALL_FRAME` (bulk traffic: never linger).
    big_seen: bool,
    /// The largest `want` a wait may ask for (half the completion queue).
    max_want: usize,
    /// Completions one wait can hand over at most (the completion queue's size): the
    /// capacity of `cqes`, `spill` and the worker's event list, reserved before the first
    /// frame so no wait allocates, however many completions it collects.
    cap: usize,
    pub(crate) lc: LoopCounters,
    /// `io_uring_enter` calls that failed (other than `EINTR`/`EBUSY`).
    pub(crate) errors: u64,
}

fn is_live_gen(gen: u32, tag: u32) -> bool {
    gen & Tag::GEN_MASK == tag
}

impl Uring {
    /// A ring for the calling thread, `rx_buffers` provided receive buffers, `budget`
    /// frames per TAP and turn.
    pub(crate) fn new(
        budget: usize,
        rx_buffers: u16,
        busy: Option<Duration>,
        coalesce: Option<Duration>,
    ) -> Result<Uring, UringError> {
        let cq = (4 * (u32::from(rx_buffers) + u32::from(TX_BUFS))).max(4096);
        let ring = setup(SQ_ENTRIES, cq)?;
        let cap = ring.params().cq_entries() as usize;
        let max_want = cap / 2;
        let bufs = BufRing::new(&ring, 0, rx_buffers, BUF_LEN)?;
        let pool = TxPool::new(TX_BUFS, BUF_LEN)?;
        Ok(Uring {
            ring,
            refs: vec![0; usize::from(rx_buffers)],
            bufs,
            pool,
            staged: false,
            taps: Vec::new(),
            wires: Vec::new(),
            bell: None,
            next_gen: 1,
            to_arm: Vec::new(),
            wire_rearm: Vec::new(),
            bell_rearm: false,
            cqes: Vec::with_capacity(cap),
            spill: Vec::with_capacity(cap),
            budget: budget.max(1),
            busy,
            inflight: 0,
            coalesce: coalesce.filter(|d| !d.is_zero()),
            hot: false,
            streak: 0,
            last_wake: Instant::now(),
            frames_seen: 0,
            big_seen: false,
            max_want,
            cap,
            lc: LoopCounters::default(),
            errors: 0,
        })
    }

    fn gen(&mut self) -> u32 {
        self.next_gen = self.next_gen.wrapping_add(1) & Tag::GEN_MASK;
        self.next_gen
    }

    /// Queues one SQE; a full submission queue is submitted first.
    fn push(&mut self, e: &squeue::Entry) {
        loop {
            // SAFETY: every SQE the worker builds points only at memory that outlives the
            // request: provided and transmit buffers (mapped until the ring is gone, and not
            // reused before the request's completion: reference counts and the pool's free
            // list), or nothing (reads select their buffer, polls have none).
            if unsafe { self.ring.submission().push(e) }.is_ok() {
                return;
            }
            self.lc.syscalls += 1;
            if let Err(err) = self.ring.submit() {
                if err.raw_os_error() != Some(libc::EINTR) {
                    self.errors += 1;
                    if err.raw_os_error() != Some(libc::EBUSY) {
                        // The ring is unusable: drop the request rather than spin.
                        return;
                    }
                    // EBUSY: completions are backed up; collect them and retry.
                    self.harvest_into_pending();
                }
            }
        }
    }

    /// Submits queued SQEs now (one system call, none when the queue is empty).
    pub(crate) fn submit_now(&mut self) {
        if self.ring.submission().is_empty() {
            return;
        }
        self.lc.syscalls += 1;
        if let Err(e) = self.ring.submit() {
            if e.raw_os_error() != Some(libc::EINTR) {
                self.errors += 1;
            }
        }
    }

    fn arm_read(&mut self, port: u32) {
        let Some(t) = self.taps.get_mut(port as usize) else {
            return;
        };
        if !t.live || t.armed || t.paused {
            return;
        }
        t.armed = true;
        let e = opcode::ReadMulti::new(types::Fd(t.fd), 0, self.bufs.bgid())
            .build()
            .user_data(Tag::new(Kind::TapRead, port, t.gen).encode());
        self.push(&e);
    }

    fn arm_poll(&mut self, fd: RawFd, tag: Tag) {
        let e = opcode::PollAdd::new(types::Fd(fd), libc::POLLIN as u32)
            .multi(true)
            .build()
            .user_data(tag.encode());
        self.push(&e);
    }

    pub(crate) fn add_bell(&mut self, fd: RawFd) {
        self.bell = Some(fd);
        self.arm_poll(fd, Tag::new(Kind::Bell, 0, 0));
    }

    pub(crate) fn add_tap(&mut self, port: u32, fd: RawFd) {
        let gen = self.gen();
        let i = port as usize;
        while self.taps.len() <= i {
            self.taps.push(TapRx::default());
        }
        if let Some(t) = self.taps.get_mut(i) {
            t.gen = gen;
            t.fd = fd;
            t.live = true;
            t.armed = false;
            t.reported = false;
            t.paused = false;
            t.fifo.clear();
            // Every provided buffer can be queued here at once (a slow turn, a capture
            // running): room for all of them now, so the hot path never grows the queue.
            t.fifo.reserve(self.refs.len());
        }
        self.arm_read(port);
    }

    /// Cancels every request matching `tag` and waits until the kernel dropped them.
    fn cancel(&mut self, tag: Tag) {
        // Requests still in the submission queue cannot be cancelled: submit them first.
        self.submit_now();
        let _ = self
            .ring
            .submitter()
            .register_sync_cancel(None, types::CancelBuilder::user_data(tag.encode()).all());
    }

    /// Stops reading port `port` until [`Uring::resume_tap`]: its multishot read is
    /// cancelled and not re-armed; frames already received stay in its FIFO.
    pub(crate) fn pause_tap(&mut self, port: u32) {
        let Some(t) = self.taps.get_mut(port as usize) else {
            return;
        };
        if !t.live || t.paused {
            return;
        }
        t.paused = true;
        if t.armed {
            // Its last completion (-ECANCELED, or the end of the read) clears `armed`.
            let tag = Tag::new(Kind::TapRead, port, t.gen);
            self.cancel(tag);
        }
    }

    /// Reads port `port` again after [`Uring::pause_tap`] (re-armed at the end of the turn;
    /// frames queued meanwhile complete at once).
    pub(crate) fn resume_tap(&mut self, port: u32) {
        let Some(t) = self.taps.get_mut(port as usize) else {
            return;
        };
        if !t.live || !t.paused {
            return;
        }
        t.paused = false;
        if !t.armed {
            self.to_arm.push(port);
        }
        // Still armed: the cancelled read's last completion has not been collected; it
        // re-arms the read when it is (see `on_cqe`).
    }

    pub(crate) fn remove_tap(&mut self, port: u32) {
        let Some(t) = self.taps.get_mut(port as usize) else {
            return;
        };
        if !t.live {
            return;
        }
        t.live = false;
        let tag = Tag::new(Kind::TapRead, port, t.gen);
        let mut fifo = std::mem::take(&mut t.fifo);
        if t.armed {
            t.armed = false;
            self.cancel(tag);
        }
        // Frames received and not handed out: their buffers go back.
        for (bid, _) in fifo.drain(..) {
            self.release(bid);
        }
        if let Some(t) = self.taps.get_mut(port as usize) {
            t.fifo = fifo;
        }
    }

    pub(crate) fn add_wire(&mut self, parent: u32, fds: &[RawFd]) {
        let gen = self.gen();
        let i = parent as usize;
        while self.wires.len() <= i {
            self.wires.push(WireReg::default());
        }
        if let Some(w) = self.wires.get_mut(i) {
            w.gen = gen;
            w.fds.clear();
            w.fds.extend_from_slice(fds);
            w.live = true;
        }
        for (k, &fd) in fds.iter().enumerate() {
            let mut tag = Tag::new(Kind::WirePoll, parent, gen);
            tag.buf = k as u16;
            self.arm_poll(fd, tag);
        }
    }

    pub(crate) fn remove_wire(&mut self, parent: u32) {
        let Some(w) = self.wires.get_mut(parent as usize) else {
            return;
        };
        if !w.live {
            return;
        }
        w.live = false;
        let (gen, n) = (w.gen, w.fds.len());
        for k in 0..n {
            let mut tag = Tag::new(Kind::WirePoll, parent, gen);
            tag.buf = k as u16;
            self.cancel(tag);
        }
    }

    /// One holder of buffer `bid` is done; the last one gives it back to the kernel.
    fn release(&mut self, bid: u16) {
        let Some(r) = self.refs.get_mut(usize::from(bid)) else {
            return;
        };
        *r = r.saturating_sub(1);
        if *r == 0 {
            self.bufs.give_back(bid);
            self.staged = true;
        }
    }

    fn hold(&mut self, bid: u16) {
        if let Some(r) = self.refs.get_mut(usize::from(bid)) {
            *r += 1;
        }
    }

    /// Whether a completion is waiting (or deferred work would produce one).
    fn ready(&mut self) -> bool {
        let cq_ready = !self.ring.completion().is_empty();
        cq_ready || self.ring.submission().taskrun()
    }

    fn enter(&mut self, want: usize) {
        self.lc.syscalls += 1;
        if let Err(e) = self.ring.submit_and_wait(want) {
            match e.raw_os_error() {
                // A signal, or completions backed up (collected right after): not errors.
                Some(libc::EINTR) | Some(libc::EBUSY) | Some(libc::ETIME) => {}
                _ => self.errors += 1,
            }
        }
    }

    /// Submits and waits for `want` completions, at most `limit`.
    fn enter_for(&mut self, want: usize, limit: Duration) {
        self.lc.syscalls += 1;
        let ts = types::Timespec::from(limit);
        let args = types::SubmitArgs::new().timespec(&ts);
        if let Err(e) = self.ring.submitter().submit_with_args(want, &args) {
            match e.raw_os_error() {
                // A signal, or completions backed up (collected right after): not errors.
                Some(libc::EINTR) | Some(libc::EBUSY) | Some(libc::ETIME) => {}
                _ => self.errors += 1,
            }
        }
    }

    pub(crate) fn wait(&mut self, block: bool, timeout: Option<Duration>, events: &mut Vec<Event>) {
        if events.capacity() < self.cap {
            // Once, on the first wait (the worker's list is reused): room for every
            // completion the queue can hold, so a wait that collects many never allocates.
            events.reserve(self.cap - events.len());
        }
        let pending_sqes = !self.ring.submission().is_empty();
        let block = block && self.spill.is_empty();
        events.append(&mut self.spill);
        if block {
            let mut woke = false;
            if let Some(d) = self.busy {
                if pending_sqes {
                    self.submit_now();
                }
                let end = Instant::now() + d;
                while Instant::now() < end {
                    if self.ready() {
                        woke = true;
                        break;
                    }
                    std::hint::spin_loop();
                }
            }
            // Completions of this turn's writes (inline, during the submit) must not end the
            // wait: it waits for them and one event more (or, while traffic flows, for a
            // batch of frames, at most `coalesce` long).
            let writes = self.inflight.min(self.max_want / 2);
            if woke {
                // Deferred work is run only by an enter with GETEVENTS.
                if self.ring.submission().taskrun() {
                    self.enter(0);
                }
            } else {
                match (self.coalesce.filter(|_| self.hot), timeout) {
                    (Some(limit), t) => {
                        let batch = (self.budget / 2).clamp(1, self.max_want / 2);
                        self.enter_for(writes + batch, t.map_or(limit, |t| t.min(limit)));
                    }
                    (None, Some(t)) => self.enter_for(writes + 1, t),
                    (None, None) => self.enter(writes + 1),
                }
                self.lc.wakeups += 1;
            }
        } else if pending_sqes || self.ring.submission().taskrun() {
            self.enter(0);
        }
        let lingered = self.hot;
        self.frames_seen = 0;
        self.big_seen = false;
        self.harvest(events);
        if block {
            self.update_hot(lingered);
        }
    }

    /// Whether the next wait lingers. Only a flood of small frames makes it: `HOT_AFTER`
    /// waits in a row that came back sooner than `coalesce` with small frames only, then
    /// lingering waits that keep bringing more than one. A large frame (bulk TCP: GSO
    /// super-frames) ends it at once: the sender's frames wait in the TAP until they are
    /// read, and TCP small queues stop a sender whose frames are held back.
    fn update_hot(&mut self, lingered: bool) {
        let now = Instant::now();
        let gap = now.duration_since(self.last_wake);
        self.last_wake = now;
        let Some(limit) = self.coalesce else {
            return;
        };
        self.streak = if self.big_seen {
            0
        } else if lingered {
            if self.frames_seen >= 2 {
                self.streak
            } else {
                0
            }
        } else if self.frames_seen >= 1 && gap < limit {
            self.streak.saturating_add(1)
        } else {
            0
        };
        self.hot = self.streak >= HOT_AFTER;
    }

    /// Copies the completions out of the CQ, then handles them.
    fn harvest(&mut self, events: &mut Vec<Event>) {
        self.cqes.clear();
        for e in self.ring.completion() {
            self.cqes.push((e.user_data(), e.result(), e.flags()));
        }
        for i in 0..self.cqes.len() {
            if let Some(&(ud, res, flags)) = self.cqes.get(i) {
                self.on_cqe(ud, res, flags, events);
            }
        }
    }

    /// While submitting inside a turn: completions are handled now and their events kept
    /// for the next wait.
    fn harvest_into_pending(&mut self) {
        let mut spill = std::mem::take(&mut self.spill);
        self.harvest(&mut spill);
        self.spill = spill;
    }

    fn on_cqe(&mut self, ud: u64, res: i32, flags: u32, events: &mut Vec<Event>) {
        let Some(tag) = Tag::decode(ud) else {
            return;
        };
        let more = cqueue::more(flags);
        match tag.kind {
            Kind::TapRead => {
                let bid = cqueue::buffer_select(flags);
                if bid.is_some() {
                    self.bufs.taken_by_kernel();
                }
                let slot = tag.slot as usize;
                let live = self
                    .taps
                    .get(slot)
                    .is_some_and(|t| t.live && is_live_gen(t.gen, tag.gen));
                if !live {
                    if let Some(b) = bid {
                        self.bufs.give_back(b);
                        self.staged = true;
                    }
                    return;
                }
                let Some(t) = self.taps.get_mut(slot) else {
                    return;
                };
                match (res, bid) {
                    (r, Some(b)) if r > 0 => {
                        self.frames_seen += 1;
                        if r as usize > VNET_HDR_LEN + SMALL_FRAME {
                            self.big_seen = true;
                        }
                        t.fifo.push_back((b, r as u32));
                        if !t.reported {
                            t.reported = true;
                            events.push(Event::Tap(tag.slot));
                        }
                    }
                    (_, Some(b)) => {
                        self.bufs.give_back(b);
                        self.staged = true;
                    }
                    _ => {}
                }
                if !more {
                    let Some(t) = self.taps.get_mut(slot) else {
                        return;
                    };
                    t.armed = false;
                    match res {
                        r if r >= 0 => self.to_arm.push(tag.slot),
                        r if r == -libc::ENOBUFS => {
                            self.lc.starved += 1;
                            self.to_arm.push(tag.slot)
                        }
                        r if r == -libc::EAGAIN || r == -libc::EINTR => self.to_arm.push(tag.slot),
                        // Cancelled by a pause that is over already: read again.
                        r if r == -libc::ECANCELED && !t.paused => self.to_arm.push(tag.slot),
                        r if r == -libc::ECANCELED => {}
                        r => events.push(Event::TapFailed(tag.slot, -r)),
                    }
                }
            }
            Kind::TapWrite => {
                self.inflight = self.inflight.saturating_sub(1);
                if tag.pool {
                    self.pool.put(tag.buf);
                } else {
                    self.release(tag.buf);
                }
                events.push(Event::Written {
                    port: tag.slot,
                    gen: tag.gen,
                    res,
                    gso: tag.flag,
                });
            }
            Kind::WirePoll => {
                let live = self
                    .wires
                    .get(tag.slot as usize)
                    .is_some_and(|w| w.live && is_live_gen(w.gen, tag.gen));
                if !live {
                    return;
                }
                if res < 0 {
                    if res != -libc::ECANCELED {
                        events.push(Event::WireFailed(tag.slot));
                    }
                    return;
                }
                let rev = res as u32;
                if rev & (libc::POLLERR | libc::POLLHUP | libc::POLLNVAL) as u32 != 0 {
                    events.push(Event::WireFailed(tag.slot));
                } else if rev & libc::POLLIN as u32 != 0 {
                    events.push(Event::Wire(tag.slot));
                }
                if !more {
                    self.wire_rearm.push((tag.slot, tag.buf));
                }
            }
            Kind::Bell => {
                events.push(Event::Bell);
                if !more {
                    self.bell_rearm = true;
                }
            }
            Kind::Cancel => {}
        }
    }

    pub(crate) fn rx_tap(&mut self, port: u32, budget: usize, f: &mut FrameFn<'_>) -> RxDone {
        let slot = port as usize;
        match self.taps.get_mut(slot) {
            Some(t) if t.live => t.reported = false,
            _ => {
                return RxDone {
                    frames: 0,
                    more: false,
                    error: None,
                }
            }
        }
        let mut n = 0;
        while n < budget {
            let Some((bid, len)) = self.taps.get_mut(slot).and_then(|t| t.fifo.pop_front()) else {
                break;
            };
            n += 1;
            let len = (len as usize).min(self.bufs.buf_len());
            if len < VNET_HDR_LEN {
                self.bufs.give_back(bid);
                self.staged = true;
                continue;
            }
            self.hold(bid);
            // SAFETY: buffer `bid` was named by a read completion and has not been given
            // back: the kernel does not write to it until `release` below drops its last
            // holder (this frame's processing holds one, each write of it another). The
            // slice is not used after that `release`.
            let all: &[u8] = unsafe { std::slice::from_raw_parts(self.bufs.addr(bid), len) };
            let (h, frame) = all.split_at(VNET_HDR_LEN);
            let hdr = h
                .first_chunk::<VNET_HDR_LEN>()
                .map(VnetHdr::from_bytes)
                .unwrap_or_default();
            f(self, &hdr, frame, Some(bid));
            self.release(bid);
        }
        let more = self.taps.get(slot).is_some_and(|t| !t.fifo.is_empty());
        RxDone {
            frames: n,
            more,
            error: None,
        }
    }

    /// Buffers back to the kernel, multishots re-armed (reads: only with buffers to read into
    /// and while the port's FIFO is below its budget).
    pub(crate) fn end_turn(&mut self) {
        if self.staged {
            self.bufs.publish();
            self.staged = false;
        }
        let mut i = 0;
        while i < self.to_arm.len() {
            let port = self.to_arm.get(i).copied().unwrap_or(0);
            let (drop_it, arm) = match self.taps.get(port as usize) {
                Some(t) if t.live && !t.armed && !t.paused => {
                    let ok = t.fifo.len() < self.budget && self.bufs.given() > 0;
                    (ok, ok)
                }
                _ => (true, false),
            };
            if arm {
                self.lc.rearms += 1;
                self.arm_read(port);
            }
            if drop_it {
                self.to_arm.swap_remove(i);
            } else {
                i += 1;
            }
        }
        while let Some((parent, k)) = self.wire_rearm.pop() {
            let Some(w) = self.wires.get(parent as usize) else {
                continue;
            };
            if !w.live {
                continue;
            }
            if let Some(&fd) = w.fds.get(usize::from(k)) {
                let mut tag = Tag::new(Kind::WirePoll, parent, w.gen);
                tag.buf = k;
                self.arm_poll(fd, tag);
            }
        }
        if std::mem::take(&mut self.bell_rearm) {
            if let Some(fd) = self.bell {
                self.arm_poll(fd, Tag::new(Kind::Bell, 0, 0));
            }
        }
    }

    pub(crate) fn counters(&self) -> LoopCounters {
        self.lc
    }
}

impl TapSink for Uring {
    fn write(&mut self, w: &TapWrite<'_>) -> Option<io::Result<()>> {
        let fd = w.tap.as_raw_fd();
        let mut tag = Tag::new(Kind::TapWrite, w.port, w.gen);
        tag.flag = w.hdr.gso_type != VnetHdr::GSO_NONE;
        if let Some(bid) = w.rx {
            // The buffer holds [vnet header | frame] from its first byte, unchanged.
            let len = VNET_HDR_LEN + w.frame.len();
            self.hold(bid);
            tag.buf = bid;
            let e = opcode::Write::new(types::Fd(fd), self.bufs.addr(bid), len as u32)
                .offset(u64::MAX)
                .build()
                .user_data(tag.encode());
            self.push(&e);
            self.inflight += 1;
            self.lc.frames_out += 1;
            return None;
        }
        if let Some(i) = self.pool.take() {
            let hb = w.hdr.to_bytes();
            // SAFETY: `i` was just taken from the pool: no write in flight reads it.
            match unsafe { self.pool.fill(i, &[&hb, w.frame]) } {
                Some(len) => {
                    tag.buf = i;
                    tag.pool = true;
                    let e = opcode::Write::new(types::Fd(fd), self.pool.addr(i), len as u32)
                        .offset(u64::MAX)
                        .build()
                        .user_data(tag.encode());
                    self.push(&e);
                    self.inflight += 1;
                    self.lc.frames_out += 1;
                    return None;
                }
                None => self.pool.put(i),
            }
        }
        // No transmit buffer free: write it now.
        self.lc.sync_writes += 1;
        self.lc.syscalls += 1;
        let r = w.tap.write_frame(w.hdr, w.frame);
        if r.is_ok() {
            self.lc.frames_out += 1;
        }
        Some(r)
    }
}

impl Drop for Uring {
    fn drop(&mut self) {
        // Every request ends before the ring and then the buffers go (field order).
        self.submit_now();
        let _ = self
            .ring
            .submitter()
            .register_sync_cancel(None, types::CancelBuilder::any());
    }
}
