//! The loop itself: poll, batch reads, per-frame decisions and outputs, commands.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Instant;

use crate::fwd::{
    DropReason, Engine, Ingress, NetworkId, Outputs, ParentId, PortId, Target, VlanOp,
};
use crate::offload::{kernel_gso_header, Gro, Segmenter, VnetHdr};
use crate::port::afpacket::GsoTxSocket;
use crate::port::ethtool;
use crate::port::tap::{RxBatch, Tap, MAX_FRAME_LEN};
use crate::trace::{trace, Trace};
use crate::wire::MacAddr;

use super::frame::{l2_len, pop_vlan, push_vlan, reframe_routed, shift_hdr};
use super::parent::{open_backend, ParentSlot, RxSource};
use super::resolve::{HostRoutes, NhCache};
use super::{Cmd, IoDrop, PortCounters, Resolver, RunError, RunOptions, Stats, WireStatus};

/// A port's TAP and what the loop keeps for it.
struct TapSlot {
    tap: Tap,
    /// Coalesces wire → TAP TCP segments within one receive batch.
    gro: Gro,
    c: PortCounters,
    /// The port's identity when the TAP was added (a port id reused by the engine for another
    /// port must not inherit the TAP).
    name: String,
    network: NetworkId,
    /// The fd reported an error (device gone): not polled, not written.
    broken: bool,
}

/// Where an ingress frame came from, for what `HostStack` means.
#[derive(Clone, Copy)]
enum Origin {
    Port,
    Wire(RxSource),
}

/// Everything the outputs touch, apart from the engine and its output list.
pub(crate) struct Io {
    taps: Vec<Option<TapSlot>>,
    parents: Vec<Option<ParentSlot>>,
    seg: Segmenter,
    scratch: Vec<u8>,
    pub(crate) nh: NhCache,
    resolver: Box<dyn Resolver>,
    drops: [u64; DropReason::COUNT],
    io_drops: [u64; IoDrop::COUNT],
    io_errors: u64,
    /// Ports whose GRO holds a super-frame (flushed at the end of each loop iteration).
    gro_holding: Vec<usize>,
    /// The time of the current loop iteration.
    now: Instant,
}

/// The engine, its reusable output list, and the I/O state.
pub(crate) struct Core {
    pub(crate) engine: Engine,
    out: Outputs,
    pub(crate) io: Io,
}

/// A poll entry's owner.
#[derive(Clone, Copy)]
enum Src {
    Wake,
    Tap(PortId),
    Wire(ParentId),
}

/// Wire frames of one receive call, copied out of the backend's buffers so they can be
/// decided with the whole loop state at hand. Grows once, then reused.
#[derive(Default)]
struct Arena {
    data: Vec<u8>,
    items: Vec<(usize, usize, RxSource)>,
}

impl Arena {
    fn clear(&mut self) {
        self.data.clear();
        self.items.clear();
    }
    fn push(&mut self, src: RxSource, frame: &[u8]) {
        let start = self.data.len();
        self.data.extend_from_slice(frame);
        self.items.push((start, frame.len(), src));
    }
    fn get(&self, i: usize) -> Option<(RxSource, &[u8])> {
        let &(start, len, src) = self.items.get(i)?;
        Some((src, self.data.get(start..start + len)?))
    }
}

/// The dataplane thread's state.
pub(crate) struct Loop {
    pub(crate) core: Core,
    rx: RxBatch,
    arena: Arena,
    wake: Arc<OwnedFd>,
    cmds: mpsc::Receiver<Cmd>,
    pfds: Vec<libc::pollfd>,
    srcs: Vec<Src>,
    ready: Vec<ParentId>,
    dirty: bool,
    pub(crate) stop: bool,
    opts: RunOptions,
    iterations: u64,
    commands: u64,
}

fn write_tap(
    tap: &Tap,
    c: &mut PortCounters,
    io_drops: &mut [u64; IoDrop::COUNT],
    io_errors: &mut u64,
    hdr: &VnetHdr,
    frame: &[u8],
) {
    match tap.write_frame(hdr, frame) {
        Ok(()) => {
            c.tx_frames += 1;
            c.tx_bytes += frame.len() as u64;
            if hdr.gso_type != VnetHdr::GSO_NONE {
                c.tx_gso_frames += 1;
            }
        }
        Err(e) => {
            c.tx_dropped += 1;
            let why = match e.raw_os_error() {
                Some(libc::EAGAIN) => IoDrop::TapFull,
                Some(libc::EIO) | Some(libc::EBADFD) | Some(libc::ENODEV) | Some(libc::ENXIO)
                | Some(libc::EPIPE) => IoDrop::TapDown,
                // The kernel refused the header (inconsistent offsets).
                Some(libc::EINVAL) => IoDrop::Offload,
                _ => {
                    *io_errors += 1;
                    IoDrop::TapDown
                }
            };
            io_drops[why.index()] += 1;
        }
    }
}

/// Queues one complete frame on a parent.
fn send_one(
    slot_backend: &mut super::parent::Backend,
    c: &mut super::ParentCounters,
    io_drops: &mut [u64; IoDrop::COUNT],
    io_errors: &mut u64,
    frame: &[u8],
) {
    match slot_backend.send(frame) {
        Ok(true) => {
            c.tx_frames += 1;
            c.tx_bytes += frame.len() as u64;
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
    match sock.send(&kh, frame) {
        Ok(true) => {
            slot.c.tx_frames += 1;
            slot.c.tx_bytes += frame.len() as u64;
            slot.c.tx_gso_kernel += 1;
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
    h: &VnetHdr,
    frame: &[u8],
) {
    let gso = h.gso_type & !VnetHdr::GSO_ECN != VnetHdr::GSO_NONE;
    if gso && transmit_kernel_gso(slot, io_drops, io_errors, h, frame) {
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
        send_one(backend, c, io_drops, io_errors, s)
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
    /// The datapath's [`Routes`](crate::fwd::Routes) for the engine's route stage: the
    /// resolver behind the next-hop cache, at this iteration's time.
    fn routes(&mut self) -> HostRoutes<'_> {
        HostRoutes {
            parents: &self.parents,
            nh: &mut self.nh,
            resolver: &mut *self.resolver,
            now: self.now,
        }
    }

    /// An output to a port. From a port the sender's header passes through; from the wire
    /// the frame goes through the port's GRO.
    fn out_port(&mut self, q: PortId, vlan: VlanOp, from: Origin, hdr: &VnetHdr, frame: &[u8]) {
        let Some(Some(slot)) = self.taps.get_mut(q.index()) else {
            self.io_drops[IoDrop::NoTap.index()] += 1;
            return;
        };
        if slot.broken {
            slot.c.tx_dropped += 1;
            self.io_drops[IoDrop::TapDown.index()] += 1;
            return;
        }
        let edited = match vlan {
            VlanOp::Keep => Some((*hdr, frame)),
            VlanOp::Pop => shift_hdr(hdr, -4).zip(pop_vlan(&mut self.scratch, frame)),
            VlanOp::Push(vid) => shift_hdr(hdr, 4).zip(push_vlan(&mut self.scratch, frame, vid)),
        };
        let Some((h, f)) = edited else {
            slot.c.tx_dropped += 1;
            self.io_drops[IoDrop::Offload.index()] += 1;
            return;
        };
        let (drops, errs) = (&mut self.io_drops, &mut self.io_errors);
        match from {
            Origin::Port => write_tap(&slot.tap, &mut slot.c, drops, errs, &h, f),
            Origin::Wire(_) => {
                let TapSlot { tap, gro, c, .. } = slot;
                gro.push(f, &mut |gh, gf| write_tap(tap, c, drops, errs, gh, gf));
                if gro.is_holding() && !self.gro_holding.contains(&q.index()) {
                    self.gro_holding.push(q.index());
                }
            }
        }
    }

    /// An output to a parent's wire.
    fn out_wire(&mut self, p: ParentId, vlan: VlanOp, hdr: &VnetHdr, frame: &[u8]) {
        let Some(Some(slot)) = self.parents.get_mut(p.index()) else {
            self.io_drops[IoDrop::NoWire.index()] += 1;
            return;
        };
        if slot.broken {
            self.io_drops[IoDrop::NoWire.index()] += 1;
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
            return;
        };
        transmit(
            slot,
            &mut self.seg,
            &mut self.io_drops,
            &mut self.io_errors,
            &h,
            f,
        );
    }

    /// An ipvlan L3/L3S packet routed out of a parent to the next hop the engine's route
    /// stage resolved (`mac`).
    fn out_routed(&mut self, p: ParentId, mac: MacAddr, vlan: VlanOp, hdr: &VnetHdr, frame: &[u8]) {
        let Some(Some(slot)) = self.parents.get_mut(p.index()) else {
            self.io_drops[IoDrop::NoWire.index()] += 1;
            return;
        };
        if slot.broken {
            self.io_drops[IoDrop::NoWire.index()] += 1;
            return;
        }
        let vid = match vlan {
            VlanOp::Push(v) => Some(v),
            _ => None,
        };
        let Some((f, delta)) = reframe_routed(&mut self.scratch, frame, mac, slot.mac, vid) else {
            slot.c.tx_offload_errors += 1;
            self.io_drops[IoDrop::Offload.index()] += 1;
            return;
        };
        let Some(h) = shift_hdr(hdr, delta) else {
            slot.c.tx_offload_errors += 1;
            self.io_drops[IoDrop::Offload.index()] += 1;
            return;
        };
        transmit(
            slot,
            &mut self.seg,
            &mut self.io_drops,
            &mut self.io_errors,
            &h,
            f,
        );
    }

    /// An output to the parent's own stack.
    fn out_host(&mut self, p: ParentId, from: Origin) {
        match from {
            Origin::Wire(RxSource::HostHadIt) => {
                if let Some(Some(slot)) = self.parents.get_mut(p.index()) {
                    slot.c.host_stack_kernel += 1;
                }
            }
            Origin::Port | Origin::Wire(RxSource::Steered) => {
                self.io_drops[IoDrop::HostStackUnreachable.index()] += 1;
            }
        }
    }

    /// Writes out every super-frame a GRO holds.
    fn flush_gros(&mut self) {
        for i in self.gro_holding.drain(..) {
            if let Some(Some(slot)) = self.taps.get_mut(i) {
                let TapSlot { tap, gro, c, .. } = slot;
                let (drops, errs) = (&mut self.io_drops, &mut self.io_errors);
                gro.flush(&mut |h, f| write_tap(tap, c, drops, errs, h, f));
            }
        }
    }

    /// One flush per parent: queued frames go to the kernel.
    fn flush_wires(&mut self) {
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
    fn forward(&mut self, ingress: Ingress, from: Origin, hdr: &VnetHdr, frame: &[u8]) {
        let decided = self
            .engine
            .decide(frame, ingress, &mut self.io.routes(), &mut self.out);
        if let Err(r) = decided {
            self.io.drops[r.index()] += 1;
            return;
        }
        for o in self.out.as_slice() {
            match o.target {
                Target::Port(q) => self.io.out_port(q, o.vlan, from, hdr, frame),
                Target::Wire(p) => self.io.out_wire(p, o.vlan, hdr, frame),
                Target::HostStack(p) => self.io.out_host(p, from),
                Target::Routed {
                    parent, next_hop, ..
                } => self.io.out_routed(parent, next_hop, o.vlan, hdr, frame),
            }
        }
    }

    /// What the datapath would do with `frame`, explained: the same decision, with the same
    /// route stage answers (cache and resolver), and no output performed.
    pub(crate) fn trace(&mut self, frame: &[u8], ingress: Ingress) -> Trace {
        trace(&self.engine, frame, ingress, &mut self.io.routes())
    }

    /// A frame read from port `p`'s TAP.
    fn ingress_port(&mut self, p: PortId, hdr: &VnetHdr, frame: &[u8]) {
        if let Some(Some(t)) = self.io.taps.get_mut(p.index()) {
            t.c.rx_frames += 1;
            t.c.rx_bytes += frame.len() as u64;
            if hdr.gso_type != VnetHdr::GSO_NONE {
                t.c.rx_gso_frames += 1;
            }
        }
        self.forward(Ingress::Port(p), Origin::Port, hdr, frame);
    }

    /// A frame received on parent `p`.
    fn ingress_wire(&mut self, p: ParentId, src: RxSource, frame: &[u8]) {
        if let Some(Some(s)) = self.io.parents.get_mut(p.index()) {
            match src {
                RxSource::Steered => s.c.rx_steered += 1,
                RxSource::HostHadIt => {
                    if matches!(s.backend, super::parent::Backend::Xdp { .. }) {
                        s.c.rx_copied += 1
                    } else {
                        s.c.rx_steered += 1
                    }
                }
            }
            s.c.rx_bytes += frame.len() as u64;
        }
        self.forward(
            Ingress::Wire(p),
            Origin::Wire(src),
            &VnetHdr::default(),
            frame,
        );
    }
}

fn put<T>(v: &mut Vec<Option<T>>, i: usize, t: T) {
    while v.len() <= i {
        v.push(None);
    }
    if let Some(slot) = v.get_mut(i) {
        *slot = Some(t);
    }
}

impl Loop {
    pub(crate) fn new(
        opts: RunOptions,
        resolver: Box<dyn Resolver>,
        cmds: mpsc::Receiver<Cmd>,
        wake: Arc<OwnedFd>,
    ) -> Loop {
        Loop {
            core: Core {
                engine: Engine::new(),
                out: Outputs::with_capacity(16),
                io: Io {
                    taps: Vec::new(),
                    parents: Vec::new(),
                    seg: Segmenter::new(),
                    scratch: Vec::with_capacity(2048),
                    nh: NhCache::default(),
                    resolver,
                    drops: [0; DropReason::COUNT],
                    io_drops: [0; IoDrop::COUNT],
                    io_errors: 0,
                    gro_holding: Vec::new(),
                    now: Instant::now(),
                },
            },
            rx: RxBatch::new(opts.batch, MAX_FRAME_LEN),
            arena: Arena::default(),
            wake,
            cmds,
            pfds: Vec::new(),
            srcs: Vec::new(),
            ready: Vec::new(),
            dirty: true,
            stop: false,
            opts,
            iterations: 0,
            commands: 0,
        }
    }

    fn add_poll(pfds: &mut Vec<libc::pollfd>, srcs: &mut Vec<Src>, fd: BorrowedFd<'_>, s: Src) {
        pfds.push(libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        });
        srcs.push(s);
    }

    fn rebuild_poll(&mut self) {
        self.pfds.clear();
        self.srcs.clear();
        Self::add_poll(&mut self.pfds, &mut self.srcs, self.wake.as_fd(), Src::Wake);
        for (i, t) in self.core.io.taps.iter().enumerate() {
            if let Some(t) = t {
                if !t.broken {
                    let s = Src::Tap(PortId(i as u32));
                    Self::add_poll(&mut self.pfds, &mut self.srcs, t.tap.as_fd(), s);
                }
            }
        }
        for (i, p) in self.core.io.parents.iter().enumerate() {
            if let Some(p) = p {
                if !p.broken {
                    for fd in p.backend.poll_fds() {
                        let s = Src::Wire(ParentId(i as u32));
                        Self::add_poll(&mut self.pfds, &mut self.srcs, fd, s);
                    }
                }
            }
        }
        self.dirty = false;
    }

    /// Runs until a command sets `stop` (or every handle is gone).
    pub(crate) fn run(&mut self) {
        while !self.stop {
            if self.dirty {
                self.rebuild_poll();
            }
            // SAFETY: `pfds` is a live array of `len` pollfds; every fd in it belongs to a
            // TAP, socket or eventfd this loop owns, and none is closed before the array is
            // rebuilt (commands, which may close them, set `dirty`).
            let n =
                unsafe { libc::poll(self.pfds.as_mut_ptr(), self.pfds.len() as libc::nfds_t, -1) };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::Interrupted {
                    self.core.io.io_errors += 1;
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                continue;
            }
            self.iterations += 1;
            self.core.io.now = Instant::now();
            let mut woken = false;
            self.ready.clear();
            for i in 0..self.pfds.len() {
                let (Some(pfd), Some(src)) = (self.pfds.get(i), self.srcs.get(i)) else {
                    break;
                };
                let (rev, src) = (pfd.revents, *src);
                if rev == 0 {
                    continue;
                }
                let readable = rev & libc::POLLIN != 0;
                let failed = rev & (libc::POLLERR | libc::POLLHUP | libc::POLLNVAL) != 0;
                match src {
                    Src::Wake => {
                        self.drain_wake();
                        woken = true;
                    }
                    Src::Tap(p) => {
                        if readable {
                            self.tap_rx(p);
                        } else if failed {
                            self.tap_failed(p);
                        }
                    }
                    Src::Wire(p) => {
                        if readable {
                            if !self.ready.contains(&p) {
                                self.ready.push(p);
                            }
                        } else if failed {
                            self.wire_failed(p);
                        }
                    }
                }
            }
            for i in 0..self.ready.len() {
                if let Some(&p) = self.ready.get(i) {
                    self.wire_rx(p);
                }
            }
            self.core.io.flush_gros();
            self.core.io.flush_wires();
            if woken {
                self.run_commands();
            }
        }
    }

    fn drain_wake(&mut self) {
        let mut v: u64 = 0;
        // SAFETY: reads 8 bytes into a live u64 from the eventfd this loop holds.
        unsafe {
            libc::read(
                self.wake.as_raw_fd(),
                (&mut v as *mut u64).cast(),
                std::mem::size_of::<u64>(),
            );
        }
    }

    fn run_commands(&mut self) {
        loop {
            match self.cmds.try_recv() {
                Ok(cmd) => {
                    cmd(self);
                    self.commands += 1;
                    self.dirty = true;
                }
                Err(mpsc::TryRecvError::Empty) => break,
                Err(mpsc::TryRecvError::Disconnected) => {
                    self.stop = true;
                    break;
                }
            }
        }
    }

    fn tap_rx(&mut self, p: PortId) {
        let Some(Some(slot)) = self.core.io.taps.get(p.index()) else {
            return;
        };
        match slot.tap.read_batch(&mut self.rx) {
            Ok(n) => {
                for i in 0..n {
                    if let Some((h, f)) = self.rx.get(i) {
                        self.core.ingress_port(p, h, f);
                    }
                }
            }
            Err(e) => {
                self.core.io.io_errors += 1;
                if let Some(Some(slot)) = self.core.io.taps.get_mut(p.index()) {
                    slot.c.rx_errors += 1;
                    // The device is gone (namespace deleted, TAP removed): stop polling it.
                    if matches!(
                        e.raw_os_error(),
                        Some(libc::EBADFD) | Some(libc::ENODEV) | Some(libc::EPIPE)
                    ) {
                        slot.broken = true;
                        self.dirty = true;
                    }
                }
            }
        }
    }

    fn tap_failed(&mut self, p: PortId) {
        if let Some(Some(slot)) = self.core.io.taps.get_mut(p.index()) {
            slot.broken = true;
            slot.c.rx_errors += 1;
        }
        self.core.io.io_errors += 1;
        self.dirty = true;
    }

    /// A wire socket polled with an error. An interface that went down (packet sockets
    /// report `ENETDOWN` once) keeps its sockets: they receive again when it comes back up.
    /// One that is gone, or replaced by another under its name, is not polled any more.
    fn wire_failed(&mut self, p: ParentId) {
        if let Some(Some(slot)) = self.core.io.parents.get_mut(p.index()) {
            slot.c.io_errors += 1;
            let errors = slot.backend.take_errors();
            let same = ethtool::if_index(&slot.ifname).is_ok_and(|i| i == slot.ifindex);
            let why = errors
                .iter()
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
                .join("; ");
            if same && !errors.is_empty() {
                slot.last_error = Some(format!("socket error: {why}"));
            } else {
                slot.broken = true;
                slot.last_error = Some(format!(
                    "a socket reported POLLERR/POLLHUP ({why}); interface {} gone or replaced",
                    slot.ifname
                ));
            }
        }
        self.core.io.io_errors += 1;
        self.dirty = true;
    }

    fn wire_rx(&mut self, p: ParentId) {
        let Some(Some(slot)) = self.core.io.parents.get_mut(p.index()) else {
            return;
        };
        self.arena.clear();
        let arena = &mut self.arena;
        if slot
            .backend
            .recv(self.opts.batch, &mut |src, f| arena.push(src, f.data))
            .is_err()
        {
            slot.c.io_errors += 1;
            self.core.io.io_errors += 1;
        }
        for i in 0..self.arena.items.len() {
            if let Some((src, f)) = self.arena.get(i) {
                self.core.ingress_wire(p, src, f);
            }
        }
    }

    // ---- commands --------------------------------------------------------------------------

    pub(crate) fn add_tap(&mut self, port: PortId, tap: Tap) -> Result<(), RunError> {
        let Some(info) = self.core.engine.port_info(port) else {
            return Err(RunError::NoSuchPort(port));
        };
        if let Some(Some(_)) = self.core.io.taps.get(port.index()) {
            return Err(RunError::PortBusy {
                port,
                tap: Box::new(tap),
            });
        }
        put(
            &mut self.core.io.taps,
            port.index(),
            TapSlot {
                tap,
                gro: Gro::new(),
                c: PortCounters::default(),
                name: info.name,
                network: info.network,
                broken: false,
            },
        );
        self.dirty = true;
        Ok(())
    }

    pub(crate) fn remove_tap(&mut self, port: PortId) -> Option<Tap> {
        self.dirty = true;
        let slot = self.core.io.taps.get_mut(port.index())?.take()?;
        Some(slot.tap)
    }

    pub(crate) fn attach_parent(
        &mut self,
        parent: ParentId,
        ifname: &str,
    ) -> Result<WireStatus, RunError> {
        let Some(info) = self.core.engine.parent_info(parent) else {
            return Err(RunError::NoSuchParent(parent));
        };
        if let Some(Some(slot)) = self.core.io.parents.get_mut(parent.index()) {
            if slot.ifname != ifname {
                return Err(RunError::ParentNameMismatch {
                    parent,
                    attached: slot.ifname.clone(),
                    requested: ifname.to_string(),
                });
            }
            slot.refs += 1;
            return Ok(slot.status());
        }
        let (backend, fallback) = open_backend(
            ifname,
            self.opts.wire_backend,
            &self.opts.xdp,
            self.opts.batch,
        )
        .map_err(|reason| RunError::Wire {
            ifname: ifname.to_string(),
            reason,
        })?;
        // Without it, GSO frames are segmented in software: slower, never wrong.
        let (gso, gso_error) = if self.opts.kernel_gso {
            match GsoTxSocket::open(ifname) {
                Ok(g) => (Some(g), None),
                Err(e) => (
                    None,
                    Some(format!("no GSO TX socket, segmenting in software: {e}")),
                ),
            }
        } else {
            (None, None)
        };
        let mut slot = ParentSlot::new(
            backend,
            ifname,
            info.name,
            fallback,
            self.opts.manage_rx_vlan_offload,
            gso,
        );
        slot.last_error = gso_error;
        slot.mac = info.mac;
        slot.mtu = info.mtu as usize;
        slot.sync_keys(&self.core.engine.wire_keys(parent));
        let st = slot.status();
        put(&mut self.core.io.parents, parent.index(), slot);
        self.dirty = true;
        Ok(st)
    }

    pub(crate) fn detach_parent(&mut self, parent: ParentId) -> Result<(), RunError> {
        let Some(entry) = self.core.io.parents.get_mut(parent.index()) else {
            return Err(RunError::NotAttached(parent));
        };
        let Some(slot) = entry.as_mut() else {
            return Err(RunError::NotAttached(parent));
        };
        slot.refs = slot.refs.saturating_sub(1);
        if slot.refs == 0 {
            if let Some(slot) = entry.take() {
                self.core.io.nh.forget_ifindex(slot.ifindex);
            }
            self.dirty = true;
        }
        Ok(())
    }

    pub(crate) fn wire_status(&self, parent: ParentId) -> Option<WireStatus> {
        self.core
            .io
            .parents
            .get(parent.index())?
            .as_ref()
            .map(ParentSlot::status)
    }

    /// Re-derives the loop's state from the engine after a change.
    pub(crate) fn resync(&mut self) {
        let Core { engine, io, .. } = &mut self.core;
        for (i, t) in io.taps.iter_mut().enumerate() {
            let keep = match (t.as_ref(), engine.port_info(PortId(i as u32))) {
                (None, _) => true,
                (Some(t), Some(info)) => info.name == t.name && info.network == t.network,
                (Some(_), None) => false,
            };
            if !keep {
                // The port is gone: close its TAP (a persistent TAP stays in its namespace).
                *t = None;
            }
        }
        for (i, p) in io.parents.iter_mut().enumerate() {
            let pid = ParentId(i as u32);
            let Some(slot) = p.as_mut() else { continue };
            match engine.parent_info(pid) {
                Some(info) if info.name == slot.engine_name => {
                    slot.mac = info.mac;
                    slot.mtu = info.mtu as usize;
                    slot.sync_keys(&engine.wire_keys(pid));
                }
                _ => {
                    // The parent left the engine: its wire closes whatever the references.
                    io.nh.forget_ifindex(slot.ifindex);
                    *p = None;
                }
            }
        }
        self.dirty = true;
    }

    pub(crate) fn stats(&mut self) -> Stats {
        let io = &mut self.core.io;
        Stats {
            ports: io
                .taps
                .iter()
                .enumerate()
                .filter_map(|(i, t)| t.as_ref().map(|t| (PortId(i as u32), t.c)))
                .collect(),
            drops: DropReason::ALL
                .iter()
                .map(|r| (*r, io.drops.get(r.index()).copied().unwrap_or(0)))
                .collect(),
            io_drops: IoDrop::ALL
                .iter()
                .map(|r| (*r, io.io_drops.get(r.index()).copied().unwrap_or(0)))
                .collect(),
            io_errors: io.io_errors,
            parents: io
                .parents
                .iter_mut()
                .enumerate()
                .filter_map(|(i, p)| p.as_mut().map(|p| (ParentId(i as u32), p.counters())))
                .collect(),
            iterations: self.iterations,
            commands: self.commands,
        }
    }
}
