//! The capture tap's data path: the dataplane thread(s) push records, a control thread reads
//! them.
//!
//! # Cost while nobody captures
//! The [`CaptureTap`] is owned by the dataplane thread (one per worker thread); a capture is
//! *attached* to it by a command run on that thread. With no capture attached,
//! [`CaptureTap::watches`] is one load of a plain `Vec` length: no atomic, no lock, no clock.
//!
//! # The ring: bounded, lossy, one short lock, no allocation per record
//! Each capture owns two preallocated buffers (record headers and frame bytes, each with a
//! fixed capacity). The dataplane appends to the *fill* buffer under a mutex held for a
//! `memcpy` of at most `snaplen` bytes; the reader swaps the whole fill buffer with its
//! empty spare under the same mutex (an O(1) pointer swap) and reads the records outside
//! it. When the fill buffer is full the record is **lost** and counted per interface; the
//! frame itself is forwarded as always. Nothing grows: memory is `2 × (buffer_bytes +
//! max_records × size_of::<record header>)` per capture.
//!
//! A single mutex rather than a lock-free queue keeps the module free of `unsafe`; it is
//! uncontended except for the reader's O(1) swap, and with several worker threads each
//! holds it only for its own copy.
//!
//! # Waking the reader
//! The reader sleeps on a condition variable. A push only notes that the reader sleeps; the
//! dataplane wakes it at most once per batch, in [`CaptureTap::end_batch`], so a burst costs one
//! wake-up. Nothing wakes periodically. The reader side's [`Stopper`] (e.g. a thread that
//! sees the client hang up) wakes it too.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use super::decision::{Decision, Point};
use super::Direction;
use crate::fwd::{ParentId, PortId};

/// The wire of one network: frames on `parent` whose outer 802.1Q VID is `vid` (`None`:
/// untagged or priority-tagged).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct WireFilter {
    /// The parent.
    pub parent: ParentId,
    /// The network's VID.
    pub vid: Option<u16>,
}

/// What a capture records. Interfaces are numbered `ports` first, then `wires`, in the
/// order given: record [`Record::interface`] and the pcapng interface index agree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaptureFilter {
    /// Ports (endpoints) whose frames are recorded, both directions.
    pub ports: Vec<PortId>,
    /// Wires whose frames are recorded, both directions.
    pub wires: Vec<WireFilter>,
    /// Also record frames that went nowhere (engine drops, copies the I/O layer could not
    /// deliver).
    pub drops: bool,
    /// Bytes kept per frame (the rest is cut; the record keeps the frame's length).
    pub snaplen: u32,
    /// Capacity of each of the two byte buffers.
    pub buffer_bytes: usize,
    /// Capacity of each of the two record-header buffers.
    pub max_records: usize,
}

/// Default [`CaptureFilter::snaplen`] (tcpdump's).
pub const DEFAULT_SNAPLEN: u32 = 262_144;
/// Default [`CaptureFilter::buffer_bytes`].
pub const DEFAULT_BUFFER_BYTES: usize = 4 << 20;
/// Default [`CaptureFilter::max_records`].
pub const DEFAULT_MAX_RECORDS: usize = 16_384;

impl CaptureFilter {
    /// Records `ports` and `wires`, drops left out, default sizes.
    pub fn new(ports: Vec<PortId>, wires: Vec<WireFilter>) -> CaptureFilter {
        CaptureFilter {
            ports,
            wires,
            drops: false,
            snaplen: DEFAULT_SNAPLEN,
            buffer_bytes: DEFAULT_BUFFER_BYTES,
            max_records: DEFAULT_MAX_RECORDS,
        }
    }

    /// Number of interfaces (ports, then wires).
    pub fn interfaces(&self) -> usize {
        self.ports.len() + self.wires.len()
    }
}

/// A record's header (the bytes are in the byte buffer).
#[derive(Debug, Clone, Copy)]
struct Meta {
    interface: u32,
    direction: Direction,
    ts_ns: u64,
    orig_len: u32,
    start: usize,
    len: usize,
    decision: Decision,
}

#[derive(Debug)]
struct Buffers {
    metas: Vec<Meta>,
    bytes: Vec<u8>,
}

impl Buffers {
    fn new(f: &CaptureFilter) -> Buffers {
        Buffers {
            metas: Vec::with_capacity(f.max_records.max(1)),
            bytes: Vec::with_capacity(f.buffer_bytes.max(1)),
        }
    }

    fn clear(&mut self) {
        self.metas.clear();
        self.bytes.clear();
    }
}

#[derive(Debug)]
struct State {
    fill: Buffers,
    /// Records accepted, per interface.
    captured: Box<[u64]>,
    /// Records lost (fill buffer full), per interface.
    lost: Box<[u64]>,
    /// The reader sleeps on the condition variable.
    waiting: bool,
    /// The reader side asked to stop.
    stop: bool,
    /// The dataplane side let the capture go.
    detached: bool,
}

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    cv: Condvar,
    /// The reader is gone: the dataplane drops the session at its next batch end.
    reader_gone: AtomicBool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves counters and buffers consistent (every
        // update is a plain store): keep using them.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Opens a capture: the dataplane's half (attach it to the [`CaptureTap`] of every thread that
/// forwards frames) and the reader's half.
pub fn open(filter: CaptureFilter) -> (TapSession, CaptureReader) {
    let n = filter.interfaces();
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            fill: Buffers::new(&filter),
            captured: vec![0; n].into_boxed_slice(),
            lost: vec![0; n].into_boxed_slice(),
            waiting: false,
            stop: false,
            detached: false,
        }),
        cv: Condvar::new(),
        reader_gone: AtomicBool::new(false),
    });
    let reader = CaptureReader {
        spare: Buffers::new(&filter),
        shared: Arc::clone(&shared),
        interfaces: n,
        pending_end: None,
    };
    let session = TapSession {
        inner: Arc::new(SessionInner { filter, shared }),
        wake: false,
    };
    (session, reader)
}

#[derive(Debug)]
struct SessionInner {
    filter: CaptureFilter,
    shared: Arc<Shared>,
}

impl Drop for SessionInner {
    fn drop(&mut self) {
        // The last dataplane thread let the capture go: tell the reader.
        let mut g = self.shared.lock();
        g.detached = true;
        drop(g);
        self.shared.cv.notify_all();
    }
}

/// The dataplane's half of one capture. Clone it for each worker thread's [`CaptureTap`]; the
/// reader learns the capture ended when the last clone is dropped.
#[derive(Debug)]
pub struct TapSession {
    inner: Arc<SessionInner>,
    /// A push found the reader asleep: wake it at the batch end.
    wake: bool,
}

impl Clone for TapSession {
    fn clone(&self) -> Self {
        TapSession {
            inner: Arc::clone(&self.inner),
            wake: false,
        }
    }
}

/// The outer VID of an Ethernet frame (`None`: untagged or priority-tagged).
#[inline]
fn outer_vid(frame: &[u8]) -> Option<u16> {
    match (frame.get(12..14), frame.get(14..16)) {
        (Some([0x81, 0x00]), Some(&[hi, lo])) => {
            let vid = u16::from_be_bytes([hi, lo]) & 0x0fff;
            (vid != 0).then_some(vid)
        }
        _ => None,
    }
}

impl TapSession {
    #[inline]
    fn watches(&self, point: Point) -> bool {
        let f = &self.inner.filter;
        match point {
            Point::Port(p) => f.ports.contains(&p),
            Point::Wire(w) => f.wires.iter().any(|x| x.parent == w),
        }
    }

    #[inline]
    fn interface(&self, point: Point, frame: &[u8]) -> Option<usize> {
        let f = &self.inner.filter;
        match point {
            Point::Port(p) => f.ports.iter().position(|q| *q == p),
            Point::Wire(w) => {
                let vid = outer_vid(frame);
                f.wires
                    .iter()
                    .position(|x| x.parent == w && x.vid == vid)
                    .map(|i| f.ports.len() + i)
            }
        }
    }

    fn push(&mut self, point: Point, direction: Direction, frame: &[u8], decision: Decision) {
        let f = &self.inner.filter;
        if decision.is_drop() && !f.drops {
            return;
        }
        let Some(interface) = self.interface(point, frame) else {
            return;
        };
        let keep = frame.len().min(f.snaplen as usize);
        let data = frame.get(..keep).unwrap_or(frame);
        let ts_ns = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
        let mut g = self.inner.shared.lock();
        let st = &mut *g;
        let fits = st.fill.metas.len() < st.fill.metas.capacity()
            && st.fill.bytes.capacity() - st.fill.bytes.len() >= data.len();
        if !fits {
            if let Some(n) = st.lost.get_mut(interface) {
                *n += 1;
            }
            return;
        }
        let start = st.fill.bytes.len();
        st.fill.bytes.extend_from_slice(data);
        st.fill.metas.push(Meta {
            interface: interface as u32,
            direction,
            ts_ns,
            orig_len: u32::try_from(frame.len()).unwrap_or(u32::MAX),
            start,
            len: data.len(),
            decision,
        });
        if let Some(n) = st.captured.get_mut(interface) {
            *n += 1;
        }
        if st.waiting {
            self.wake = true;
        }
    }

    fn end_batch(&mut self) {
        if std::mem::take(&mut self.wake) {
            self.inner.shared.cv.notify_one();
        }
    }

    fn reader_gone(&self) -> bool {
        self.inner.shared.reader_gone.load(Ordering::Relaxed)
    }
}

/// The captures attached to one dataplane thread (see the module docs).
#[derive(Debug, Default)]
pub struct CaptureTap {
    sessions: Vec<TapSession>,
}

impl CaptureTap {
    /// No capture attached.
    pub fn new() -> CaptureTap {
        CaptureTap::default()
    }

    /// Whether no capture is attached: then nothing else needs calling.
    #[inline]
    pub fn is_idle(&self) -> bool {
        self.sessions.is_empty()
    }

    /// Whether a capture records frames seen at `point`: decide the frame with a
    /// [`CaptureTracer`](super::CaptureTracer) and [`CaptureTap::record`] it. `false` at the cost
    /// of one length check while nobody captures.
    #[inline]
    pub fn watches(&self, point: Point) -> bool {
        !self.sessions.is_empty() && self.sessions.iter().any(|s| s.watches(point))
    }

    /// Records `frame` seen at `point` in `direction` (inbound: it entered uvlan there;
    /// outbound: uvlan wrote it there) with the decision about it. Copies at most the
    /// snap length; never allocates, never blocks for longer than another thread's copy.
    #[inline]
    pub fn record(&mut self, point: Point, direction: Direction, frame: &[u8], decision: Decision) {
        for s in &mut self.sessions {
            if s.watches(point) && !s.reader_gone() {
                s.push(point, direction, frame, decision);
            }
        }
    }

    /// Call once per batch (loop iteration) after the records of the batch: wakes readers
    /// that have new records and drops captures whose reader has gone.
    #[inline]
    pub fn end_batch(&mut self) {
        if self.sessions.is_empty() {
            return;
        }
        for s in &mut self.sessions {
            s.end_batch();
        }
        self.sessions.retain(|s| !s.reader_gone());
    }

    /// Attaches a capture (run on the dataplane thread, e.g. from a command).
    pub fn attach(&mut self, session: TapSession) {
        self.sessions.push(session);
    }

    /// Number of captures attached.
    pub fn sessions(&self) -> usize {
        self.sessions.len()
    }
}

/// Why a capture ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// The reader side asked ([`Stopper::stop`]).
    Stopped,
    /// The dataplane let the capture go (it stopped, or dropped the session).
    Detached,
}

/// One record, borrowed from the reader's buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record<'a> {
    /// Interface index (ports first, then wires, as in the [`CaptureFilter`]).
    pub interface: u32,
    /// Inbound (entered uvlan here) or outbound (uvlan wrote it here).
    pub direction: Direction,
    /// Nanoseconds since the epoch.
    pub ts_ns: u64,
    /// The frame's length.
    pub orig_len: u32,
    /// Its first `snaplen` bytes.
    pub data: &'a [u8],
    /// The decision about it.
    pub decision: Decision,
}

/// Records taken by one [`CaptureReader::wait`].
#[derive(Debug)]
pub struct Batch<'a> {
    buf: &'a Buffers,
    /// Set when the capture has ended (after these records, none will come).
    pub end: Option<End>,
}

impl<'a> Batch<'a> {
    /// Number of records.
    pub fn len(&self) -> usize {
        self.buf.metas.len()
    }

    /// No records.
    pub fn is_empty(&self) -> bool {
        self.buf.metas.is_empty()
    }

    /// The records, oldest first.
    pub fn records(&self) -> impl Iterator<Item = Record<'a>> + 'a {
        let buf: &'a Buffers = self.buf;
        buf.metas.iter().map(move |m| Record {
            interface: m.interface,
            direction: m.direction,
            ts_ns: m.ts_ns,
            orig_len: m.orig_len,
            data: buf.bytes.get(m.start..m.start + m.len).unwrap_or(&[]),
            decision: m.decision,
        })
    }
}

/// Counters of a capture, per interface.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CaptureCounts {
    /// Records taken into the buffer.
    pub captured: Vec<u64>,
    /// Records lost because the buffer was full (the reader was too slow).
    pub lost: Vec<u64>,
}

/// Stops a capture from any thread: the reader's [`CaptureReader::wait`] returns
/// [`End::Stopped`].
#[derive(Debug, Clone)]
pub struct Stopper {
    shared: Arc<Shared>,
}

impl Stopper {
    /// Asks the capture to end and wakes its reader.
    pub fn stop(&self) {
        self.shared.lock().stop = true;
        self.shared.cv.notify_all();
    }
}

/// The control plane's half of a capture. Dropping it ends the capture: the dataplane
/// forgets it at its next batch end.
#[derive(Debug)]
pub struct CaptureReader {
    shared: Arc<Shared>,
    spare: Buffers,
    interfaces: usize,
    pending_end: Option<End>,
}

impl CaptureReader {
    /// Waits until records arrive or the capture ends, and takes every record buffered.
    /// Records buffered before the end are returned before it is reported.
    pub fn wait(&mut self) -> Batch<'_> {
        self.take(true)
    }

    /// Takes the records buffered now, without waiting.
    pub fn try_take(&mut self) -> Batch<'_> {
        self.take(false)
    }

    fn take(&mut self, block: bool) -> Batch<'_> {
        self.spare.clear();
        if let Some(end) = self.pending_end {
            return Batch {
                buf: &self.spare,
                end: Some(end),
            };
        }
        let mut g = self.shared.lock();
        let end = loop {
            if !g.fill.metas.is_empty() {
                std::mem::swap(&mut g.fill, &mut self.spare);
                break None;
            }
            if g.stop {
                break Some(End::Stopped);
            }
            if g.detached {
                break Some(End::Detached);
            }
            if !block {
                break None;
            }
            g.waiting = true;
            g = self.shared.cv.wait(g).unwrap_or_else(|p| p.into_inner());
            g.waiting = false;
        };
        drop(g);
        self.pending_end = end;
        Batch {
            buf: &self.spare,
            end,
        }
    }

    /// A handle that ends the capture from another thread.
    pub fn stopper(&self) -> Stopper {
        Stopper {
            shared: Arc::clone(&self.shared),
        }
    }

    /// Number of interfaces.
    pub fn interfaces(&self) -> usize {
        self.interfaces
    }

    /// Records captured and lost so far, per interface.
    pub fn counts(&self) -> CaptureCounts {
        let g = self.shared.lock();
        CaptureCounts {
            captured: g.captured.to_vec(),
            lost: g.lost.to_vec(),
        }
    }
}

impl Drop for CaptureReader {
    fn drop(&mut self) {
        self.shared.reader_gone.store(true, Ordering::Relaxed);
    }
}
