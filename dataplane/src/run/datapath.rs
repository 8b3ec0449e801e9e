//! One worker's forwarding state: the engine it decides with, its output list, and what the
//! outputs touch (TAPs to write, parents' wires, GRO, the segmenter, the next-hop cache,
//! counters). [`Core::forward`] is the per-frame path:
//!
//! ```text
//! forward(frame)
//!   ├─ decide (engine, or the relay's fixed pairing)      → a drop reason, counted; or
//!   └─ for each output: emit(output)                        ← the per-output hook point
//!        ├─ Port:     VLAN edit? → TAP sink (pass-through buffer, or copy) / GRO (from wire)
//!        ├─ Wire:     VLAN edit → kernel GSO / checksum / segment → backend queue
//!        │            (or, when another worker owns the parent, its transfer queue)
//!        ├─ Routed:   new Ethernet header → as Wire
//!        └─ HostStack: from the wire, counted; otherwise injected into the parent's receive path
//! ```
//!
//! The MTU rule is the engine's (`is_skb_forwardable`, so `uvlan trace` shows it): the frame's
//! GSO flag goes into the decision ([`Engine::decide_gso`]). An engine drop of a frame a port
//! sent is counted twice: under its reason globally and in that port's counters.
//!
//! Later per-output hooks belong in [`Core::emit`]: one call per output, after the decision,
//! with the ingress, the output and the frame at hand. The fast-path cache learns in
//! `Core::forward`, which sees the whole output list (only a decision with exactly one
//! sibling port is learned; see `port::fast_path`).
//!
//! The capture hook (`super::record`): while a capture is attached, `forward` decides with
//! a [`CaptureTracer`] and records the frame inbound; `emit` hands each output's decision
//! to the I/O side, which records the copy outbound where it is written (`out_port`,
//! `out_wire`, `out_routed`, or the owner's `xfer_in`). While none is attached, one branch.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use crate::capture::{ingress_point, CaptureTracer, Direction, Point};
use crate::fwd::{DropReason, Engine, Ingress, NetworkId, Output, Outputs, ParentId, PortId};
use crate::fwd::{Target, VlanOp};
use crate::offload::{kernel_gso_header, Gro, Segmenter, VnetHdr};
use crate::port::fast_path::FastPath;
use crate::port::tap::Tap;
use crate::trace::{trace, Trace};
use crate::wire::{MacAddr, ETH_HLEN};

use super::frame::{l2_len, pop_vlan, push_vlan, reframe_routed, shift_hdr};
use super::parent::{Backend, ParentSlot, RxSource};
use super::reactor::{TapSink, TapWrite};
use super::record::Recorder;
use super::resolve::{HostRoutes, NhCache, ParentView};
use super::xfer::{XferOut, XferTarget};
use super::{IoDrop, LoopCounters, PortCounters, Resolver};

/// A port's TAP, shared by every worker: any worker writes to it, one worker reads each
/// queue. Queue 0 is the TAP handed to `add_tap`; a multiqueue TAP gets one queue per
/// worker that reads it.
#[derive(Debug)]
pub(crate) struct PortTap {
    pub(crate) queues: Vec<Tap>,
    /// A read reported the device gone: writes are counted as `tap_down`, not attempted.
    pub(crate) broken: AtomicBool,
    /// The port's identity when the TAP was added (a port id reused by the engine for
    /// another port must not inherit the TAP).
    pub(crate) name: String,
    pub(crate) network: NetworkId,
    /// The worker that reads each queue.
    pub(crate) readers: Vec<usize>,
}

impl PortTap {
    pub(crate) fn is_broken(&self) -> bool {
        self.broken.load(Ordering::Relaxed)
    }
}

/// What one worker keeps to write to a port: the shared TAP, which queue to write, its GRO
/// and its transmit counters.
pub(crate) struct TxPort {
    pub(crate) tap: Arc<PortTap>,
    /// The queue this worker writes (its own read queue when it has one).
    pub(crate) queue: usize,
    /// Distinguishes this entry from a later one for the same port (io_uring write tags).
    pub(crate) gen: u32,
    /// Coalesces wire → TAP TCP segments within one turn.
    gro: Gro,
    /// Transmit counters (the `tx_*` fields).
    pub(crate) c: PortCounters,
    /// The engine's port this TAP was last found to belong to (`Worker::resync`); a `Weak`
    /// keeps its address from being reused, so an equal address is the same, unchanged port.
    pub(crate) engine_port: std::sync::Weak<crate::fwd::Port>,
}

impl TxPort {
    pub(crate) fn new(tap: Arc<PortTap>, queue: usize, gen: u32) -> TxPort {
        TxPort {
            tap,
            queue,
            gen,
            gro: Gro::new(),
            c: PortCounters::default(),
            engine_port: std::sync::Weak::new(),
        }
    }

    /// The queue to write and what else a write needs, with the GRO borrowed apart.
    fn split(&mut self, port: PortId) -> Option<(Dest<'_>, &mut Gro)> {
        let TxPort {
            tap,
            queue,
            gen,
            gro,
            c,
            ..
        } = self;
        let t = tap.queues.get(*queue).or_else(|| tap.queues.first())?;
        Some((
            Dest {
                port,
                tap: t,
                gen: *gen,
                c,
            },
            gro,
        ))
    }
}

/// Where an ingress frame came from, for what `HostStack` means and for pass-through.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Origin {
    /// A port's TAP; `Some(bid)`: the frame sits in provided buffer `bid` right after its
    /// vnet header, as read (io_uring), so an unchanged copy can be written from there.
    Port(Option<u16>),
    /// A parent's wire.
    Wire(RxSource),
}

/// How frames are decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Decider {
    /// The forwarding engine.
    Engine,
    /// The blind relay (the benchmark's bound): from a port to every other port and every
    /// wire, from a wire to every port.
    Relay,
}

/// Everything the outputs touch, apart from the engine and its output list.
pub(crate) struct Io {
    /// Every port with a TAP, by port index: this worker's transmit side.
    pub(crate) ports: Vec<Option<TxPort>>,
    /// Parents whose wire this worker owns, by parent index.
    pub(crate) parents: Vec<Option<ParentSlot>>,
    /// Every attached parent, by index, whichever worker owns it (route stage, routing of
    /// wire outputs).
    pub(crate) views: Vec<Option<ParentView>>,
    /// Frames for wires other workers own.
    pub(crate) xfer: XferOut,
    /// This worker's index.
    pub(crate) worker: usize,
    seg: Segmenter,
    scratch: Vec<u8>,
    pub(crate) nh: NhCache,
    resolver: Arc<std::sync::Mutex<Box<dyn Resolver>>>,
    pub(crate) drops: [u64; DropReason::COUNT],
    pub(crate) io_drops: [u64; IoDrop::COUNT],
    pub(crate) io_errors: u64,
    /// Ports whose GRO holds a super-frame (flushed at the end of each turn).
    gro_holding: Vec<usize>,
    /// The time of the current turn.
    pub(crate) now: Instant,
    /// Frames out and wire system calls made by outputs.
    pub(crate) lc: LoopCounters,
    /// The capture tap and the decision about the output being performed.
    pub(crate) rec: Recorder,
}

/// The engine, its reusable output list, and the I/O state.
pub(crate) struct Core {
    /// Shared with the other workers; changed only by `with_engine` (copy-on-write when
    /// another worker holds it).
    pub(crate) engine: Arc<Engine>,
    out: Outputs,
    pub(crate) io: Io,
    pub(crate) decider: Decider,
    /// Used only while a capture is attached.
    tracer: CaptureTracer,
    /// The fast-path cache that port → port decisions are learned into (once a port has a
    /// veth; see `port::fast_path`).
    pub(crate) fast: Option<Arc<FastPath>>,
}

/// Counts the result of one TAP write: `Ok(bytes of frame)` or `Err(errno)`.
pub(crate) fn account_write(
    c: &mut PortCounters,
    io_drops: &mut [u64; IoDrop::COUNT],
    io_errors: &mut u64,
    r: Result<usize, i32>,
    gso: bool,
) {
    match r {
        Ok(len) => {
            c.tx_frames += 1;
            c.tx_bytes += len as u64;
            if gso {
                c.tx_gso_frames += 1;
            }
        }
        Err(errno) => {
            c.tx_dropped += 1;
            let why = match errno {
                libc::EAGAIN => IoDrop::TapFull,
                libc::EIO | libc::EBADFD | libc::ENODEV | libc::ENXIO | libc::EPIPE => {
                    IoDrop::TapDown
                }
                // The kernel refused the header (inconsistent offsets).
                libc::EINVAL => IoDrop::Offload,
                _ => {
                    *io_errors += 1;
                    IoDrop::TapDown
                }
            };
            if let Some(d) = io_drops.get_mut(why.index()) {
                *d += 1;
            }
        }
    }
}

fn errno_of(e: &io::Error) -> i32 {
    e.raw_os_error().unwrap_or(libc::EIO)
}

/// The parts of a [`TxPort`] a write needs, borrowed apart from its GRO.
struct Dest<'a> {
    port: PortId,
    tap: &'a Tap,
    gen: u32,
    c: &'a mut PortCounters,
}

/// Writes (or queues, with io_uring) one frame to a port through `sink`; an immediate result
/// is counted now, a queued one when its completion arrives.
fn write_port(
    sink: &mut dyn TapSink,
    d: &mut Dest<'_>,
    io_drops: &mut [u64; IoDrop::COUNT],
    io_errors: &mut u64,
    hdr: &VnetHdr,
    frame: &[u8],
    rx: Option<u16>,
) {
    let w = TapWrite {
        port: d.port.0,
        gen: d.gen,
        tap: d.tap,
        hdr,
        frame,
        rx,
    };
    let gso = hdr.gso_type != VnetHdr::GSO_NONE;
    if let Some(r) = sink.write(&w) {
        let r = r.map(|()| frame.len()).map_err(|e| errno_of(&e));
        account_write(d.c, io_drops, io_errors, r, gso);
    }
}

/// Queues one complete frame on a parent.
fn send_one(
    backend: &mut Backend,
    c: &mut super::ParentCounters,
    io_drops: &mut [u64; IoDrop::COUNT],
    io_errors: &mut u64,
    lc: &mut LoopCounters,
    frame: &[u8],
) {
    match backend.send(frame) {
        Ok(true) => {
            c.tx_frames += 1;
            c.tx_bytes += frame.len() as u64;
            lc.frames_out += 1;
        }
        Ok(false) => {
            c.tx_dropped += 1;
            io_drops[IoDrop::WireFull.index()] += 1;
        }
        Err(_) => {
            c.tx_dropped += 1;
            c.io_errors += 1;
            *io_errors += 1;
        }
    }
}

/// Hands a GSO super-frame to the kernel whole. Returns false when the caller must segment
/// it in software (no GSO socket, a frame the kernel would not take).
fn transmit_kernel_gso(
    slot: &mut ParentSlot,
    io_drops: &mut [u64; IoDrop::COUNT],
    io_errors: &mut u64,
    lc: &mut LoopCounters,
    h: &VnetHdr,
    frame: &[u8],
) -> bool {
    let Some(sock) = slot.gso.as_mut() else {
        return false;
    };
    let Ok(kh) = kernel_gso_header(h, frame, slot.mtu) else {
        return false;
    };
    // Frames queued on the backend go first, so one flow's frames keep their order (on a
    // single-queue parent; see `Backend::drain`).
    if slot.backend.drain().is_err() {
        slot.c.io_errors += 1;
        *io_errors += 1;
    }
    lc.syscalls += 1;
    match sock.send(&kh, frame) {
        Ok(true) => {
            slot.c.tx_frames += 1;
            slot.c.tx_bytes += frame.len() as u64;
            slot.c.tx_gso_kernel += 1;
            lc.frames_out += 1;
            true
        }
        Ok(false) => {
            slot.c.tx_dropped += 1;
            io_drops[IoDrop::WireFull.index()] += 1;
            true
        }
        Err(e) if e.kind() == io::ErrorKind::InvalidInput => false,
        // The parent went down or away before the engine heard of it: a drop, not an error.
        Err(e) if e.kind() == io::ErrorKind::NotConnected => {
            slot.c.tx_dropped += 1;
            io_drops[IoDrop::NoWire.index()] += 1;
            true
        }
        Err(_) => {
            slot.c.tx_dropped += 1;
            slot.c.io_errors += 1;
            *io_errors += 1;
            true
        }
    }
}

/// Makes `frame` (with the offload metadata `h`) fit the parent and queues it: GSO frames
/// go to the kernel whole or are segmented; a partial checksum is left to the kernel (XSK TX
/// metadata) or completed.
fn transmit(
    slot: &mut ParentSlot,
    seg: &mut Segmenter,
    io_drops: &mut [u64; IoDrop::COUNT],
    io_errors: &mut u64,
    lc: &mut LoopCounters,
    h: &VnetHdr,
    frame: &[u8],
) {
    let gso = h.gso_type & !VnetHdr::GSO_ECN != VnetHdr::GSO_NONE;
    if gso && transmit_kernel_gso(slot, io_drops, io_errors, lc, h, frame) {
        return;
    }
    if !gso && h.needs_csum() && slot.backend.tx_csum() {
        let fits = l2_len(frame).is_some_and(|l2| frame.len() - l2 <= slot.mtu);
        if !fits {
            slot.c.tx_offload_errors += 1;
            io_drops[IoDrop::Offload.index()] += 1;
            return;
        }
        match slot.backend.send_csum(frame, h.csum_start, h.csum_offset) {
            Ok(true) => {
                slot.c.tx_frames += 1;
                slot.c.tx_bytes += frame.len() as u64;
                slot.c.tx_csum_offloaded += 1;
                lc.frames_out += 1;
            }
            Ok(false) => {
                slot.c.tx_dropped += 1;
                io_drops[IoDrop::WireFull.index()] += 1;
            }
            Err(e) if e.kind() == io::ErrorKind::InvalidInput => {
                slot.c.tx_offload_errors += 1;
                io_drops[IoDrop::Offload.index()] += 1;
            }
            Err(_) => {
                slot.c.tx_dropped += 1;
                slot.c.io_errors += 1;
                *io_errors += 1;
            }
        }
        return;
    }
    let mtu = slot.mtu;
    let ParentSlot { backend, c, .. } = slot;
    let r = seg.segment(h, frame, mtu, &mut |s| {
        send_one(backend, c, io_drops, io_errors, lc, s)
    });
    match r {
        Ok(_) => {
            if gso {
                c.tx_segmented += 1;
            }
        }
        Err(_) => {
            c.tx_offload_errors += 1;
            io_drops[IoDrop::Offload.index()] += 1;
        }
    }
}

impl Io {
    pub(crate) fn new(worker: usize, resolver: Arc<std::sync::Mutex<Box<dyn Resolver>>>) -> Io {
        Io {
            ports: Vec::new(),
            parents: Vec::new(),
            views: Vec::new(),
            xfer: XferOut::default(),
            worker,
            seg: Segmenter::new(),
            scratch: Vec::with_capacity(2048),
            nh: NhCache::default(),
            resolver,
            drops: [0; DropReason::COUNT],
            io_drops: [0; IoDrop::COUNT],
            io_errors: 0,
            gro_holding: Vec::new(),
            now: Instant::now(),
            lc: LoopCounters::default(),
            rec: Recorder::default(),
        }
    }

    /// The datapath's [`Routes`](crate::fwd::Routes) for the engine's route stage: the
    /// resolver behind the next-hop cache, at this turn's time.
    fn routes(&mut self) -> HostRoutes<'_> {
        HostRoutes {
            parents: &self.views,
            nh: &mut self.nh,
            resolver: &self.resolver,
            now: self.now,
        }
    }

    fn drop_io(&mut self, why: IoDrop) {
        if let Some(d) = self.io_drops.get_mut(why.index()) {
            *d += 1;
        }
    }

    /// An output to a port. From a port the sender's header passes through (from its
    /// receive buffer when it is still there unchanged); from the wire the frame goes
    /// through the port's GRO.
    #[allow(clippy::too_many_arguments)]
    fn out_port(
        &mut self,
        sink: &mut dyn TapSink,
        q: PortId,
        vlan: VlanOp,
        from: Origin,
        hdr: &VnetHdr,
        frame: &[u8],
    ) {
        let at = Point::Port(q);
        let Some(Some(tx)) = self.ports.get_mut(q.index()) else {
            self.drop_io(IoDrop::NoTap);
            self.rec.after(at, frame, &self.io_drops);
            return;
        };
        if tx.tap.is_broken() {
            tx.c.tx_dropped += 1;
            self.io_drops[IoDrop::TapDown.index()] += 1;
            self.rec.after(at, frame, &self.io_drops);
            return;
        }
        let edited = match vlan {
            VlanOp::Keep => Some((*hdr, frame)),
            VlanOp::Pop => shift_hdr(hdr, -4).zip(pop_vlan(&mut self.scratch, frame)),
            VlanOp::Push(vid) => shift_hdr(hdr, 4).zip(push_vlan(&mut self.scratch, frame, vid)),
        };
        let Some((h, f)) = edited else {
            tx.c.tx_dropped += 1;
            self.io_drops[IoDrop::Offload.index()] += 1;
            self.rec.after(at, frame, &self.io_drops);
            return;
        };
        let (drops, errs) = (&mut self.io_drops, &mut self.io_errors);
        let Some((mut d, gro)) = tx.split(q) else {
            drops[IoDrop::TapDown.index()] += 1;
            self.rec.after(at, f, &self.io_drops);
            return;
        };
        match from {
            Origin::Port(rx) => {
                // Unchanged: write the receive buffer itself (io_uring), header and all.
                let rx = if vlan == VlanOp::Keep { rx } else { None };
                write_port(sink, &mut d, drops, errs, &h, f, rx);
            }
            Origin::Wire(_) => {
                gro.push(f, &mut |gh, gf| {
                    write_port(sink, &mut d, drops, errs, gh, gf, None)
                });
                if gro.is_holding() && !self.gro_holding.contains(&q.index()) {
                    self.gro_holding.push(q.index());
                }
            }
        }
        self.rec.after(at, f, &self.io_drops);
    }

    /// An output to a parent's wire (through the owner's transfer queue when another worker
    /// owns it).
    fn out_wire(&mut self, p: ParentId, vlan: VlanOp, hdr: &VnetHdr, frame: &[u8]) {
        if !matches!(self.parents.get(p.index()), Some(Some(_))) {
            self.hand_over(p, XferTarget::Wire(vlan), hdr, frame);
            return;
        }
        let at = Point::Wire(p);
        let Some(Some(slot)) = self.parents.get_mut(p.index()) else {
            return;
        };
        if slot.broken {
            self.io_drops[IoDrop::NoWire.index()] += 1;
            self.rec_wire_lost(p, XferTarget::Wire(vlan), frame);
            return;
        }
        let edited = match vlan {
            VlanOp::Keep => Some((*hdr, frame)),
            VlanOp::Push(vid) => shift_hdr(hdr, 4).zip(push_vlan(&mut self.scratch, frame, vid)),
            VlanOp::Pop => shift_hdr(hdr, -4).zip(pop_vlan(&mut self.scratch, frame)),
        };
        let Some((h, f)) = edited else {
            slot.c.tx_offload_errors += 1;
            self.io_drops[IoDrop::Offload.index()] += 1;
            self.rec.after(at, frame, &self.io_drops);
            return;
        };
        transmit(
            slot,
            &mut self.seg,
            &mut self.io_drops,
            &mut self.io_errors,
            &mut self.lc,
            &h,
            f,
        );
        self.rec.after(at, f, &self.io_drops);
    }

    /// An ipvlan L3/L3S packet routed out of a parent to the next hop the engine's route
    /// stage resolved (`mac`).
    fn out_routed(&mut self, p: ParentId, mac: MacAddr, vlan: VlanOp, hdr: &VnetHdr, frame: &[u8]) {
        if !matches!(self.parents.get(p.index()), Some(Some(_))) {
            self.hand_over(p, XferTarget::Routed(mac, vlan), hdr, frame);
            return;
        }
        let at = Point::Wire(p);
        let Some(Some(slot)) = self.parents.get_mut(p.index()) else {
            return;
        };
        if slot.broken {
            self.io_drops[IoDrop::NoWire.index()] += 1;
            self.rec_wire_lost(p, XferTarget::Routed(mac, vlan), frame);
            return;
        }
        let vid = match vlan {
            VlanOp::Push(v) => Some(v),
            _ => None,
        };
        let Some((f, delta)) = reframe_routed(&mut self.scratch, frame, mac, slot.mac, vid) else {
            slot.c.tx_offload_errors += 1;
            self.io_drops[IoDrop::Offload.index()] += 1;
            self.rec.after(at, frame, &self.io_drops);
            return;
        };
        let Some(h) = shift_hdr(hdr, delta) else {
            slot.c.tx_offload_errors += 1;
            self.io_drops[IoDrop::Offload.index()] += 1;
            self.rec.after(at, f, &self.io_drops);
            return;
        };
        transmit(
            slot,
            &mut self.seg,
            &mut self.io_drops,
            &mut self.io_errors,
            &mut self.lc,
            &h,
            f,
        );
        self.rec.after(at, f, &self.io_drops);
    }

    /// A wire output for a parent this worker does not own: copied into the owner's transfer
    /// queue (the owner transmits it, and records it when a capture watches), or dropped
    /// when no worker owns it.
    fn hand_over(&mut self, p: ParentId, t: XferTarget, hdr: &VnetHdr, frame: &[u8]) {
        let owner = match self.views.get(p.index()) {
            Some(Some(v)) if !v.broken.load(Ordering::Relaxed) => v.owner,
            _ => {
                self.drop_io(IoDrop::NoWire);
                self.rec_wire_lost(p, t, frame);
                return;
            }
        };
        if owner == self.worker {
            // Owned here but not open (gone between two commands): no wire.
            self.drop_io(IoDrop::NoWire);
            self.rec_wire_lost(p, t, frame);
            return;
        }
        if self.xfer.push(owner, p, t, hdr, frame, self.rec.out) {
            self.lc.xfer_out += 1;
        } else {
            self.drop_io(IoDrop::WireFull);
            self.rec_wire_lost(p, t, frame);
        }
    }

    /// Records a wire copy that never reached the wire (while a capture watches), with the
    /// network's tag pushed so that it lands on the network's wire interface (a routed
    /// packet keeps the endpoint's Ethernet header).
    fn rec_wire_lost(&mut self, p: ParentId, t: XferTarget, frame: &[u8]) {
        if self.rec.out.is_none() {
            return;
        }
        let f = match t {
            XferTarget::Wire(VlanOp::Push(vid)) | XferTarget::Routed(_, VlanOp::Push(vid)) => {
                push_vlan(&mut self.scratch, frame, vid).unwrap_or(frame)
            }
            _ => frame,
        };
        self.rec.after(Point::Wire(p), f, &self.io_drops);
    }

    /// A frame another worker decided for a parent this worker owns (`cap`: the decision
    /// about it, when that worker was capturing).
    pub(crate) fn xfer_in(
        &mut self,
        p: ParentId,
        t: XferTarget,
        hdr: &VnetHdr,
        frame: &[u8],
        cap: Option<crate::capture::Decision>,
    ) {
        self.lc.xfer_in += 1;
        let cap = cap.filter(|_| !self.rec.is_idle());
        self.rec.before(cap, &self.io_drops);
        match t {
            XferTarget::Wire(vlan) => self.out_wire(p, vlan, hdr, frame),
            XferTarget::Routed(mac, vlan) => self.out_routed(p, mac, vlan, hdr, frame),
            XferTarget::Host(vlan) => self.inject(p, vlan, false, hdr, frame),
        }
        self.rec.done();
    }

    /// An output to the parent's own stack. A wire frame the host received itself needs
    /// nothing; any other frame is injected into the parent's receive path (see
    /// [`crate::port::inject`]), by the worker that owns the parent.
    fn out_host(&mut self, p: ParentId, vlan: VlanOp, from: Origin, hdr: &VnetHdr, frame: &[u8]) {
        if from == Origin::Wire(RxSource::HostHadIt) {
            if let Some(Some(slot)) = self.parents.get_mut(p.index()) {
                slot.c.host_stack_kernel += 1;
            }
            return;
        }
        if !matches!(self.parents.get(p.index()), Some(Some(_))) {
            self.hand_over(p, XferTarget::Host(vlan), hdr, frame);
            return;
        }
        let steered = from == Origin::Wire(RxSource::Steered);
        self.inject(p, vlan, steered, hdr, frame);
    }

    /// Writes one frame into the parent's receive path through its injector.
    fn inject(&mut self, p: ParentId, vlan: VlanOp, steered: bool, hdr: &VnetHdr, frame: &[u8]) {
        let Some(Some(slot)) = self.parents.get_mut(p.index()) else {
            return;
        };
        // A steered frame re-injected under a generic XDP filter would meet the filter again
        // and be steered back: an endless loop. It stays unreachable there.
        let usable = slot
            .inject
            .as_ref()
            .filter(|_| !(steered && slot.backend.filter_sees_injected()));
        let Some(inj) = usable else {
            self.io_drops[IoDrop::HostStackUnreachable.index()] += 1;
            return;
        };
        let edited = match vlan {
            VlanOp::Keep => Some((*hdr, frame)),
            VlanOp::Push(vid) => shift_hdr(hdr, 4).zip(push_vlan(&mut self.scratch, frame, vid)),
            VlanOp::Pop => shift_hdr(hdr, -4).zip(pop_vlan(&mut self.scratch, frame)),
        };
        let Some((h, f)) = edited else {
            slot.c.tx_offload_errors += 1;
            self.io_drops[IoDrop::Offload.index()] += 1;
            return;
        };
        match inj.inject(&h, f) {
            Ok(()) => slot.c.host_injected += 1,
            Err(_) => {
                slot.c.io_errors += 1;
                self.io_errors += 1;
            }
        }
    }

    /// Writes out every super-frame a GRO holds.
    pub(crate) fn flush_gros(&mut self, sink: &mut dyn TapSink) {
        let (drops, errs) = (&mut self.io_drops, &mut self.io_errors);
        for i in self.gro_holding.drain(..) {
            if let Some(Some(tx)) = self.ports.get_mut(i) {
                if let Some((mut d, gro)) = tx.split(PortId(i as u32)) {
                    gro.flush(&mut |h, f| write_port(sink, &mut d, drops, errs, h, f, None));
                }
            }
        }
    }

    /// One flush per owned parent: queued frames go to the kernel.
    pub(crate) fn flush_wires(&mut self) {
        for slot in self.parents.iter_mut().flatten() {
            if slot.broken {
                continue;
            }
            if slot.backend.flush().is_err() {
                slot.c.io_errors += 1;
                self.io_errors += 1;
            }
        }
    }
}

impl Core {
    pub(crate) fn new(engine: Arc<Engine>, io: Io, decider: Decider) -> Core {
        Core {
            engine,
            out: Outputs::with_capacity(16),
            io,
            decider,
            tracer: CaptureTracer::new(),
            fast: None,
        }
    }

    /// Decides one frame and performs its outputs; returns the engine's drop reason, if it
    /// dropped the frame (already counted in the global counters).
    fn forward(
        &mut self,
        sink: &mut dyn TapSink,
        ingress: Ingress,
        from: Origin,
        hdr: &VnetHdr,
        frame: &[u8],
    ) -> Option<DropReason> {
        match self.decider {
            Decider::Engine if self.io.rec.is_idle() => {
                let gso = hdr.gso_type != VnetHdr::GSO_NONE;
                let decided = self.engine.decide_gso(
                    frame,
                    gso,
                    ingress,
                    &mut self.io.routes(),
                    &mut self.out,
                );
                if let Err(r) = decided {
                    self.io.drops[r.index()] += 1;
                    return Some(r);
                }
                if let (Some(fp), [o]) = (&self.fast, self.out.as_slice()) {
                    if o.vlan == VlanOp::Keep {
                        self.learn(fp, ingress, o.target, frame);
                    }
                }
                for i in 0..self.out.len() {
                    if let Some(&o) = self.out.as_slice().get(i) {
                        self.emit(sink, o, from, hdr, frame);
                    }
                }
                None
            }
            Decider::Engine => self.forward_captured(sink, ingress, from, hdr, frame),
            Decider::Relay => self.relay(sink, ingress, from, hdr, frame),
        }
    }

    /// Offers the engine's decision that `frame` from `ingress` goes to exactly `target`
    /// (and nowhere else, without tag operation) to the fast-path cache, when it is one the
    /// cache may repeat (`FastPath` checks the frame and the ports): port → sibling port,
    /// port → wire, wire → port. The cache does not apply the MTU rule
    /// (`is_skb_forwardable`), so only a pair where nothing the sender can send is too long
    /// for the receiver is learned: sender MTU ≤ receiver MTU (an MTU change is an engine
    /// change: it empties the cache). A frame from the wire is only learned when it is
    /// addressed to the receiving port's own MAC: the redirect delivers it as
    /// `PACKET_HOST`, which is what the endpoint's `eth_type_trans` gives such a frame.
    fn learn(&self, fp: &FastPath, ingress: Ingress, target: Target, frame: &[u8]) {
        let mtu = |x| self.engine.port_mtu(x);
        match (ingress, target) {
            (Ingress::Port(p), Target::Port(q)) => {
                if matches!((mtu(p), mtu(q)), (Some(a), Some(b)) if a <= b) {
                    fp.learn(p, q, frame);
                }
            }
            (Ingress::Port(p), Target::Wire(w)) => {
                let (Some(parent), Some(Some(view))) =
                    (self.engine.parent(w), self.io.views.get(w.index()))
                else {
                    return;
                };
                if matches!(mtu(p), Some(a) if a <= parent.mtu) {
                    fp.learn_to_wire(p, view.ifindex, frame);
                }
            }
            (Ingress::Wire(w), Target::Port(q)) => {
                let (Some(Some(slot)), Some(port)) =
                    (self.io.parents.get(w.index()), self.engine.port(q))
                else {
                    return;
                };
                let Some((cache, hook)) = slot.backend.wire_cache() else {
                    return;
                };
                if slot.mtu <= port.mtu as usize && frame.get(..6) == Some(&port.mac.0[..]) {
                    fp.learn_from_wire(slot.ifindex, cache, hook, q, frame);
                }
            }
            _ => {}
        }
    }

    /// [`Core::forward`] while a capture is attached: the same decision, traced, and the
    /// frame recorded inbound at its ingress and outbound at each output.
    #[inline(never)]
    fn forward_captured(
        &mut self,
        sink: &mut dyn TapSink,
        ingress: Ingress,
        from: Origin,
        hdr: &VnetHdr,
        frame: &[u8],
    ) -> Option<DropReason> {
        let Core {
            engine,
            out,
            io,
            tracer,
            ..
        } = self;
        let mut routes = HostRoutes {
            parents: &io.views,
            nh: &mut io.nh,
            resolver: &io.resolver,
            now: io.now,
        };
        let gso = hdr.gso_type != VnetHdr::GSO_NONE;
        let decided = engine.decide_frame(frame, gso, ingress, &mut routes, out, tracer);
        let d = tracer.decision(decided, out);
        io.rec
            .tap
            .record(ingress_point(ingress), Direction::Inbound, frame, d);
        if let Err(r) = decided {
            self.io.drops[r.index()] += 1;
            return Some(r);
        }
        for i in 0..self.out.len() {
            if let Some(&o) = self.out.as_slice().get(i) {
                let od = self.tracer.output(d, o.target);
                self.io.rec.before(Some(od), &self.io.io_drops);
                self.emit(sink, o, from, hdr, frame);
                self.io.rec.done();
            }
        }
        None
    }

    /// One output of a decision. The per-output hook point (see the module docs).
    #[inline]
    fn emit(
        &mut self,
        sink: &mut dyn TapSink,
        o: Output,
        from: Origin,
        hdr: &VnetHdr,
        frame: &[u8],
    ) {
        match o.target {
            Target::Port(q) => self.io.out_port(sink, q, o.vlan, from, hdr, frame),
            Target::Wire(p) => self.io.out_wire(p, o.vlan, hdr, frame),
            Target::HostStack(p) => self.io.out_host(p, o.vlan, from, hdr, frame),
            Target::Routed {
                parent, next_hop, ..
            } => self.io.out_routed(parent, next_hop, o.vlan, hdr, frame),
        }
    }

    /// The blind relay: no engine, the same outputs. From a port: every other port with a
    /// TAP and every attached wire; from a wire: every port with a TAP.
    fn relay(
        &mut self,
        sink: &mut dyn TapSink,
        ingress: Ingress,
        from: Origin,
        hdr: &VnetHdr,
        frame: &[u8],
    ) -> Option<DropReason> {
        if frame.len() < ETH_HLEN {
            self.io.drops[DropReason::TooShort.index()] += 1;
            return Some(DropReason::TooShort);
        }
        for i in 0..self.io.ports.len() {
            let q = PortId(i as u32);
            if ingress != Ingress::Port(q) && matches!(self.io.ports.get(i), Some(Some(_))) {
                self.io.out_port(sink, q, VlanOp::Keep, from, hdr, frame);
            }
        }
        if let Ingress::Port(_) = ingress {
            for i in 0..self.io.views.len() {
                if matches!(self.io.views.get(i), Some(Some(_))) {
                    self.io
                        .out_wire(ParentId(i as u32), VlanOp::Keep, hdr, frame);
                }
            }
        }
        None
    }

    /// What the datapath would do with `frame`, explained: the same decision, with the same
    /// route stage answers (cache and resolver), and no output performed.
    pub(crate) fn trace(&mut self, frame: &[u8], ingress: Ingress) -> Trace {
        trace(&self.engine, frame, ingress, &mut self.io.routes())
    }

    /// A frame read from port `p`'s TAP, with the counters of the queue it came from.
    /// Whether the frame was dropped or went to a group address (what flood deferral
    /// counts: see `run/flood.rs`).
    pub(crate) fn ingress_port(
        &mut self,
        sink: &mut dyn TapSink,
        p: PortId,
        c: &mut PortCounters,
        hdr: &VnetHdr,
        frame: &[u8],
        rx: Option<u16>,
    ) -> bool {
        c.rx_frames += 1;
        c.rx_bytes += frame.len() as u64;
        if hdr.gso_type != VnetHdr::GSO_NONE {
            c.rx_gso_frames += 1;
        }
        if let Some(r) = self.forward(sink, Ingress::Port(p), Origin::Port(rx), hdr, frame) {
            if let Some(n) = c.drops.get_mut(r.index()) {
                *n += 1;
            }
            return true;
        }
        // A group address (the I/G bit of the destination): the kernel's broadcast path.
        frame.first().is_some_and(|b| b & 1 == 1)
    }

    /// A frame received on parent `p`.
    pub(crate) fn ingress_wire(
        &mut self,
        sink: &mut dyn TapSink,
        p: ParentId,
        src: RxSource,
        frame: &[u8],
    ) {
        if let Some(Some(s)) = self.io.parents.get_mut(p.index()) {
            match src {
                RxSource::Steered => s.c.rx_steered += 1,
                RxSource::HostHadIt => {
                    if matches!(s.backend, Backend::Xdp { .. }) {
                        s.c.rx_copied += 1
                    } else {
                        s.c.rx_steered += 1
                    }
                }
            }
            s.c.rx_bytes += frame.len() as u64;
        }
        self.forward(
            sink,
            Ingress::Wire(p),
            Origin::Wire(src),
            &VnetHdr::default(),
            frame,
        );
    }
}
