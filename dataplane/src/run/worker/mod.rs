//! A dataplane worker: its turn loop, and how the leader (worker 0, which runs every
//! command) reaches the others.
//!
//! ```text
//! loop {                                       // one turn
//!     wait (block unless work was left over)   // epoll_wait / io_uring_enter: ONE call,
//!                                              //   which also submits last turn's writes
//!     events: bell, TAPs with frames, wires readable, write completions, failures
//!     for each ready TAP:  ≤ budget frames → Core::forward (decide → outputs)
//!     for each ready wire: ≤ budget frames → Core::forward
//!     frames other workers decided for wires this worker owns → transmit
//!     flush: GRO super-frames, one flush per wire, bells of workers we queued frames for
//!     end of turn: buffers back to the kernel, multishots re-armed
//!     bell rang? → queued writes submitted, then commands
//! }
//! ```

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Instant;

use crate::fwd::{DropReason, ParentId, PortId};
use crate::port::fast_path::{FastLinks, FastPath, KeyKind};
use crate::port::tap::Tap;

use super::datapath::{account_write, Core, PortTap, TxPort};
use super::flood::{storm_pause, FloodGuard, Paused, FLOOD_PAUSE};
use super::parent::{open_backend, ParentSlot, RxSource};
use super::reactor::{Event, Reactor};
use super::resolve::ParentView;
use super::xfer::XferIn;
use super::{Cmd, IoDrop, LoopCounters, PortCounters, RunOptions};

mod commands;
mod prefilter;

use prefilter::FilterState;
pub(crate) use prefilter::SharedFilters;

/// Capacity of the fast-path cache (entries; one per sender and destination key).
const FAST_PATH_ENTRIES: u32 = 65536;

/// A TAP queue this worker reads.
pub(crate) struct RxPort {
    pub(crate) tap: Arc<PortTap>,
    pub(crate) queue: usize,
    /// Receive counters (the `rx_*` fields).
    pub(crate) c: PortCounters,
    /// Whether the port floods (its reads are paused now and then).
    flood: FloodGuard,
    /// The TAP's prefilter (kept by the reader of queue 0).
    filter: FilterState,
    /// What that filter was last made for (`prefilter.rs`): unchanged, the sync skips it.
    synced: Option<prefilter::SyncStamp>,
}

impl RxPort {
    fn fd(&self) -> Option<RawFd> {
        self.tap.queues.get(self.queue).map(AsRawFd::as_raw_fd)
    }
}

/// How the leader reaches a worker.
pub(crate) struct Mailbox {
    pub(crate) tx: mpsc::Sender<Cmd>,
    pub(crate) bell: Arc<OwnedFd>,
}

/// What every worker shares: the options, the I/O description, every worker's mailbox.
pub(crate) struct Shared {
    pub(crate) opts: RunOptions,
    pub(crate) io: String,
    pub(crate) mail: Vec<Mailbox>,
    /// The TAP prefilters' counter map and last error.
    pub(crate) filters: SharedFilters,
}

/// Wire frames of one receive call, copied out of the backend's buffers so they can be
/// decided with the whole worker state at hand. Grows once, then reused.
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

/// Ports or wires ready in a turn, without duplicates.
#[derive(Default)]
struct ReadySet {
    list: Vec<u32>,
    /// The turn in which each index was last added.
    stamp: Vec<u64>,
}

impl ReadySet {
    fn add(&mut self, i: u32, turn: u64) {
        let k = i as usize;
        if self.stamp.len() <= k {
            self.stamp.resize(k + 1, 0);
        }
        if let Some(s) = self.stamp.get_mut(k) {
            if *s != turn {
                *s = turn;
                self.list.push(i);
            }
        }
    }
}

/// One dataplane worker thread's state.
pub(crate) struct Worker {
    pub(crate) id: usize,
    pub(crate) core: Core,
    pub(crate) reactor: Reactor,
    /// TAP queues this worker reads, by port index.
    pub(crate) rx: Vec<Option<RxPort>>,
    events: Vec<Event>,
    ports: ReadySet,
    wires: ReadySet,
    /// Ready sources left with frames after their budget (handled first next turn).
    carry_ports: Vec<u32>,
    carry_wires: Vec<u32>,
    /// Ports whose reads are paused because they flood (`run/flood.rs`).
    paused: Paused,
    arena: Arena,
    pub(crate) xin: XferIn,
    cmds: mpsc::Receiver<Cmd>,
    bell: Arc<OwnedFd>,
    pub(crate) stop: bool,
    /// A capture holds this worker's TAP prefilters off (see `prefilter.rs`).
    filters_held: bool,
    pub(crate) lc: LoopCounters,
    pub(crate) commands: u64,
    pub(crate) shared: Arc<Shared>,
    next_gen: u32,
    /// System calls of wire backends this worker closed (their own counters are gone).
    pub(crate) retired_wire_syscalls: u64,
}

pub(crate) fn set_at<T>(v: &mut Vec<Option<T>>, i: usize, t: T) {
    while v.len() <= i {
        v.push(None);
    }
    if let Some(slot) = v.get_mut(i) {
        *slot = Some(t);
    }
}

impl Worker {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        id: usize,
        core: Core,
        reactor: Reactor,
        xin: XferIn,
        cmds: mpsc::Receiver<Cmd>,
        bell: Arc<OwnedFd>,
        shared: Arc<Shared>,
    ) -> io::Result<Worker> {
        let mut w = Worker {
            id,
            core,
            reactor,
            rx: Vec::new(),
            events: Vec::with_capacity(256),
            ports: ReadySet::default(),
            wires: ReadySet::default(),
            carry_ports: Vec::new(),
            carry_wires: Vec::new(),
            paused: Paused::default(),
            arena: Arena::default(),
            xin,
            cmds,
            bell,
            stop: false,
            filters_held: false,
            lc: LoopCounters::default(),
            commands: 0,
            shared,
            next_gen: 0,
            retired_wire_syscalls: 0,
        };
        let fd = w.bell.as_raw_fd();
        w.reactor.add_bell(fd)?;
        Ok(w)
    }

    fn budget(&self) -> usize {
        self.shared.opts.batch
    }

    pub(crate) fn gen(&mut self) -> u32 {
        self.next_gen = self.next_gen.wrapping_add(1);
        self.next_gen
    }

    /// Runs turns until a command sets `stop` (or every handle is gone).
    pub(crate) fn run(&mut self) {
        while !self.stop {
            self.turn();
        }
    }

    /// One turn of the loop (see the module docs).
    pub(crate) fn turn(&mut self) {
        let block = self.carry_ports.is_empty() && self.carry_wires.is_empty();
        self.events.clear();
        let timeout = self.paused.timeout(Instant::now());
        self.reactor.wait(block, timeout, &mut self.events);
        self.lc.turns += 1;
        let turn = self.lc.turns;
        let now = Instant::now();
        self.core.io.now = now;
        // Paused ports whose pause is over are read again (their frames come as one batch).
        while let Some(p) = self.paused.pop_due(now) {
            if let Some(Some(rxp)) = self.rx.get_mut(p as usize) {
                rxp.flood.resume();
                if let Some(fd) = rxp.fd() {
                    self.reactor.resume_tap(p, fd);
                }
            }
        }
        self.ports.list.clear();
        self.wires.list.clear();
        // (By index and then cleared: the vectors keep their capacity, nothing allocates.)
        for i in 0..self.carry_ports.len() {
            if let Some(&p) = self.carry_ports.get(i) {
                self.ports.add(p, turn);
            }
        }
        self.carry_ports.clear();
        for i in 0..self.carry_wires.len() {
            if let Some(&p) = self.carry_wires.get(i) {
                self.wires.add(p, turn);
            }
        }
        self.carry_wires.clear();
        let mut woken = false;
        for i in 0..self.events.len() {
            let Some(&ev) = self.events.get(i) else {
                break;
            };
            match ev {
                Event::Bell => woken = true,
                Event::Tap(p) => self.ports.add(p, turn),
                Event::Wire(p) => self.wires.add(p, turn),
                Event::TapFailed(p, errno) => self.tap_failed(PortId(p), errno),
                Event::WireFailed(p) => self.wire_failed(ParentId(p)),
                Event::Written {
                    port,
                    gen,
                    res,
                    gso,
                } => self.written(port, gen, res, gso),
            }
        }
        for i in 0..self.ports.list.len() {
            if let Some(&p) = self.ports.list.get(i) {
                self.tap_rx(PortId(p));
            }
        }
        for i in 0..self.wires.list.len() {
            if let Some(&p) = self.wires.list.get(i) {
                self.wire_rx(ParentId(p));
            }
        }
        if woken {
            self.drain_bell();
        }
        self.xfer_rx();
        let Worker { core, reactor, .. } = self;
        core.io.flush_gros(reactor.sink());
        core.io.flush_wires();
        let rung = core.io.xfer.ring();
        core.io.lc.syscalls += rung;
        // Capture readers with new records are woken once per turn.
        core.io.rec.tap.end_batch();
        if self.filters_held && self.core.io.rec.tap.is_idle() {
            // The last capture ended: the prefilters go back on.
            self.sync_tap_filters();
        }
        // Reads held back for want of buffers need no extra turn: the buffers are either in a
        // FIFO (carried over) or held by submitted writes, whose completions end the wait.
        self.reactor.end_turn();
        if woken {
            self.reactor.before_commands();
            self.run_commands();
        }
    }

    fn drain_bell(&mut self) {
        let mut v: u64 = 0;
        // SAFETY: reads 8 bytes into a live u64 from the eventfd this worker holds.
        unsafe {
            libc::read(
                self.bell.as_raw_fd(),
                (&mut v as *mut u64).cast(),
                std::mem::size_of::<u64>(),
            );
        }
        self.reactor.note_syscalls(1);
    }

    fn run_commands(&mut self) {
        loop {
            match self.cmds.try_recv() {
                Ok(cmd) => {
                    cmd(self);
                    self.commands += 1;
                }
                Err(mpsc::TryRecvError::Empty) => break,
                Err(mpsc::TryRecvError::Disconnected) => {
                    // Every handle is gone: the dataplane stops (the leader stops the rest).
                    if self.id == 0 {
                        self.on_peers(|w| w.stop = true);
                    }
                    self.stop = true;
                    break;
                }
            }
        }
    }

    fn tap_rx(&mut self, p: PortId) {
        let budget = self.budget();
        let Worker {
            core, reactor, rx, ..
        } = self;
        let Some(Some(rxp)) = rx.get_mut(p.index()) else {
            return;
        };
        let RxPort {
            tap,
            queue,
            c,
            flood,
            ..
        } = rxp;
        let Some(q) = tap.queues.get(*queue) else {
            return;
        };
        let mut deferrable = 0;
        // Storm control: while the port floods, what its batches cost sets its next pause.
        // The writes other ports queued before go out first, so they are not charged to it.
        let t0 = flood.measuring().then(|| {
            reactor.submit_now();
            Instant::now()
        });
        let done = reactor.rx_tap(p.0, q, budget, &mut |sink, h, f, bid| {
            if core.ingress_port(sink, p, c, h, f, bid) {
                deferrable += 1;
            }
        });
        flood.note_others(self.lc.frames_in, done.frames);
        // Behind: frames were left unread, or the batch was full (io_uring keeps no more
        // than a batch read ahead, so a full one says as much).
        let behind = done.more || done.frames >= budget;
        if flood.after_batch(core.io.now, done.frames, deferrable, behind) && !flood.is_paused() {
            // It floods: its reads pause, its frames wait in its own TAP queue.
            reactor.pause_tap(p.0, q.as_raw_fd());
            flood.pause();
            c.rx_flood_pauses += 1;
            self.lc.flood_pauses += 1;
        }
        let paused = flood.is_paused();
        if paused {
            let until = match t0 {
                Some(t0) => {
                    // What the batch cost: its decisions and its writes (the receivers'
                    // stacks run in them), added to what its earlier ones since the last
                    // pause cost.
                    reactor.submit_now();
                    let t1 = Instant::now();
                    let spent = flood.charge(t1.saturating_duration_since(t0));
                    t1 + storm_pause(spent, flood.share(self.shared.opts.storm_share))
                }
                None => core.io.now + FLOOD_PAUSE,
            };
            self.paused.add(p.0, until);
        }
        self.lc.note_batch(done.frames);
        // A paused port is served on only while frames already read wait (io_uring's
        // completions hold buffers); the plain path would read its TAP anew.
        if done.more && !(paused && reactor.reads_anew()) {
            self.carry_ports.push(p.0);
        }
        if let Some(e) = done.error {
            self.core.io.io_errors += 1;
            if let Some(Some(rxp)) = self.rx.get_mut(p.index()) {
                rxp.c.rx_errors += 1;
            }
            // The device is gone (namespace deleted, TAP removed): stop reading it.
            if matches!(
                e.raw_os_error(),
                Some(libc::EBADFD) | Some(libc::ENODEV) | Some(libc::EPIPE)
            ) {
                self.mark_broken(p);
            }
        }
    }

    fn mark_broken(&mut self, p: PortId) {
        let Some(Some(rxp)) = self.rx.get(p.index()) else {
            return;
        };
        rxp.tap.broken.store(true, Ordering::Relaxed);
        if let Some(fd) = rxp.fd() {
            self.reactor.remove_tap(p.0, fd);
        }
    }

    fn tap_failed(&mut self, p: PortId, _errno: i32) {
        if let Some(Some(rxp)) = self.rx.get_mut(p.index()) {
            rxp.c.rx_errors += 1;
            self.core.io.io_errors += 1;
            self.mark_broken(p);
        }
    }

    fn written(&mut self, port: u32, gen: u32, res: i32, gso: bool) {
        let io = &mut self.core.io;
        let Some(Some(tx)) = io.ports.get_mut(port as usize) else {
            return;
        };
        if tx.gen & crate::port::uring::Tag::GEN_MASK != gen {
            return;
        }
        let r = if res >= 0 {
            Ok((res as usize).saturating_sub(crate::port::tap::VNET_HDR_LEN))
        } else {
            Err(-res)
        };
        account_write(&mut tx.c, &mut io.io_drops, &mut io.io_errors, r, gso);
    }

    /// A wire socket polled with an error. An interface that went down (packet sockets
    /// report `ENETDOWN` once) keeps its sockets: they receive again when it comes back up.
    /// One that is gone, or replaced by another under its name, is not watched any more.
    fn wire_failed(&mut self, p: ParentId) {
        let mut disarm = None;
        if let Some(Some(slot)) = self.core.io.parents.get_mut(p.index()) {
            slot.c.io_errors += 1;
            let errors = slot.backend.take_errors();
            let same =
                crate::port::ethtool::if_index(&slot.ifname).is_ok_and(|i| i == slot.ifindex);
            let why = errors
                .iter()
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
                .join("; ");
            if same && !errors.is_empty() {
                slot.last_error = Some(format!("socket error: {why}"));
            } else {
                slot.broken = true;
                slot.broken_flag.store(true, Ordering::Relaxed);
                slot.last_error = Some(format!(
                    "a socket reported POLLERR/POLLHUP ({why}); interface {} gone or replaced",
                    slot.ifname
                ));
                disarm = Some(slot.raw_fds());
            }
        }
        if let Some(fds) = disarm {
            self.reactor.remove_wire(p.0, &fds);
        }
        self.core.io.io_errors += 1;
    }

    fn wire_rx(&mut self, p: ParentId) {
        let budget = self.budget();
        let Some(Some(slot)) = self.core.io.parents.get_mut(p.index()) else {
            return;
        };
        if slot.broken {
            return;
        }
        self.arena.clear();
        let arena = &mut self.arena;
        let r = slot
            .backend
            .recv(budget, &mut |src, f| arena.push(src, f.data));
        if r.is_err() {
            slot.c.io_errors += 1;
            self.core.io.io_errors += 1;
        }
        let n = self.arena.items.len();
        self.lc.note_batch(n);
        if n >= budget {
            self.carry_wires.push(p.0);
        }
        let Worker {
            core,
            reactor,
            arena,
            ..
        } = self;
        let sink = reactor.sink();
        for i in 0..n {
            if let Some((src, f)) = arena.get(i) {
                core.ingress_wire(sink, p, src, f);
            }
        }
    }

    /// Frames other workers decided for wires this worker owns.
    fn xfer_rx(&mut self) {
        let Worker { core, xin, .. } = self;
        xin.drain(&mut |x| core.io.xfer_in(x.parent, x.target, &x.hdr, &x.data, x.cap));
    }

    // ---- reaching the other workers ----------------------------------------------------------

    /// Runs `f` on every other worker (between two of its turns) and waits for all of them;
    /// their results in worker order. A panic in `f` on a worker is re-raised here.
    pub(crate) fn on_peers<R: Send + 'static>(
        &self,
        f: impl Fn(&mut Worker) -> R + Send + Sync + 'static,
    ) -> Vec<R> {
        if self.shared.mail.len() <= 1 {
            return Vec::new();
        }
        let f = Arc::new(f);
        let (tx, rx) = mpsc::channel();
        let mut sent = 0;
        for (i, m) in self.shared.mail.iter().enumerate() {
            if i == self.id {
                continue;
            }
            let f = Arc::clone(&f);
            let tx = tx.clone();
            let cmd: Cmd = Box::new(move |w: &mut Worker| {
                let r = catch_unwind(AssertUnwindSafe(|| f(w)));
                let _ = tx.send((i, r));
            });
            if m.tx.send(cmd).is_ok() {
                let _ = super::ring_bell(&m.bell);
                sent += 1;
            }
        }
        drop(tx);
        let mut got: Vec<(usize, std::thread::Result<R>)> = rx.iter().take(sent).collect();
        got.sort_by_key(|(i, _)| *i);
        got.into_iter()
            .map(|(_, r)| r.unwrap_or_else(|p| resume_unwind(p)))
            .collect()
    }

    /// Runs `f` here and on every other worker; results in worker order.
    pub(crate) fn on_all<R: Send + 'static>(
        &mut self,
        f: impl Fn(&mut Worker) -> R + Send + Sync + Clone + 'static,
    ) -> Vec<R> {
        let mut out = self.on_peers(f.clone());
        let mine = f(self);
        out.insert(self.id.min(out.len()), mine);
        out
    }

    /// Runs `f` on worker `w` (here when it is this one).
    pub(crate) fn on_worker<R: Send + 'static>(
        &mut self,
        w: usize,
        f: impl FnOnce(&mut Worker) -> R + Send + 'static,
    ) -> R {
        if w == self.id || w >= self.shared.mail.len() {
            return f(self);
        }
        let (tx, rx) = mpsc::sync_channel(1);
        let cmd: Cmd = Box::new(move |wk: &mut Worker| {
            let r = catch_unwind(AssertUnwindSafe(|| f(wk)));
            let _ = tx.send(r);
        });
        let Some(m) = self.shared.mail.get(w) else {
            unreachable_worker()
        };
        if m.tx.send(cmd).is_err() {
            unreachable_worker()
        }
        let _ = super::ring_bell(&m.bell);
        match rx.recv() {
            Ok(Ok(r)) => r,
            Ok(Err(p)) => resume_unwind(p),
            Err(_) => unreachable_worker(),
        }
    }

    // ---- per-worker pieces of the commands ---------------------------------------------------

    /// Starts reading queue `queue` of a port's TAP here.
    pub(crate) fn add_rx(
        &mut self,
        port: PortId,
        tap: Arc<PortTap>,
        queue: usize,
    ) -> io::Result<()> {
        let Some(fd) = tap.queues.get(queue).map(AsRawFd::as_raw_fd) else {
            return Ok(());
        };
        self.reactor.add_tap(port.0, fd)?;
        set_at(
            &mut self.rx,
            port.index(),
            RxPort {
                tap,
                queue,
                c: PortCounters::default(),
                flood: FloodGuard::default(),
                filter: FilterState::Unknown,
                synced: None,
            },
        );
        self.paused.reserve(self.rx.len());
        self.start_tap_filter(port);
        Ok(())
    }

    /// Lets this worker write to a port's TAP (through `queue`).
    pub(crate) fn add_tx(&mut self, port: PortId, tap: Arc<PortTap>, queue: usize) {
        let gen = self.gen();
        set_at(
            &mut self.core.io.ports,
            port.index(),
            TxPort::new(tap, queue, gen),
        );
    }

    /// Forgets a port here: stops reading it, drops its transmit entry.
    pub(crate) fn drop_port(&mut self, port: PortId) {
        self.stop_tap_filter(port);
        self.paused.remove(port.0);
        if let Some(slot) = self.rx.get_mut(port.index()) {
            if let Some(rxp) = slot.take() {
                if let Some(fd) = rxp.fd() {
                    self.reactor.remove_tap(port.0, fd);
                }
            }
        }
        if let Some(slot) = self.core.io.ports.get_mut(port.index()) {
            *slot = None;
        }
    }

    /// Receive ports this worker reads (for placing new ones).
    pub(crate) fn load(&self) -> usize {
        self.rx.iter().flatten().count() + 4 * self.core.io.parents.iter().flatten().count()
    }

    /// Opens a parent's wire here (this worker becomes its owner).
    pub(crate) fn open_wire(
        &mut self,
        parent: ParentId,
        ifname: &str,
        engine_name: String,
        mac: crate::wire::MacAddr,
        mtu: usize,
    ) -> Result<(super::WireStatus, ParentView), super::RunError> {
        let opts = &self.shared.opts;
        let (backend, fallback) = open_backend(ifname, opts.wire_backend, &opts.xdp, opts.batch)
            .map_err(|reason| super::RunError::Wire {
                ifname: ifname.to_string(),
                reason,
            })?;
        // Without it, GSO frames are segmented in software: slower, never wrong.
        let (gso, gso_error) = if opts.kernel_gso {
            match crate::port::afpacket::GsoTxSocket::open(ifname) {
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
            engine_name,
            fallback,
            opts.manage_rx_vlan_offload,
            gso,
        );
        slot.last_error = gso_error;
        match crate::port::inject::HostInjector::open(ifname, slot.ifindex) {
            Ok(i) => {
                slot.c
                    .mode
                    .push_str(&format!(" + host injection via {}", i.ifname()));
                slot.inject = Some(i);
            }
            Err(e) => slot.inject_error = Some(e.to_string()),
        }
        slot.mac = mac;
        slot.mtu = mtu;
        slot.sync_keys(&self.core.engine.wire_keys(parent));
        let fds = slot.raw_fds();
        self.reactor
            .add_wire(parent.0, &fds)
            .map_err(super::RunError::Io)?;
        let st = slot.status();
        let view = ParentView {
            ifindex: slot.ifindex,
            broken: Arc::clone(&slot.broken_flag),
            owner: self.id,
        };
        // A fresh filter has an empty wire cache: no registration of an earlier wire on
        // the same interface may outlive it.
        if let Some(fp) = &self.core.fast {
            fp.drop_wire(slot.ifindex);
        }
        set_at(&mut self.core.io.parents, parent.index(), slot);
        Ok((st, view))
    }

    /// Closes a parent's wire owned here.
    pub(crate) fn close_wire(&mut self, parent: ParentId) {
        let Some(entry) = self.core.io.parents.get_mut(parent.index()) else {
            return;
        };
        if let Some(slot) = entry.take() {
            // Its wire cache goes with its XDP filter: forget the entries and detach the
            // wire program before the filter closes.
            if let Some(fp) = &self.core.fast {
                fp.drop_wire(slot.ifindex);
            }
            self.retired_wire_syscalls += slot.backend.syscalls();
            self.reactor.remove_wire(parent.0, &slot.raw_fds());
        }
    }

    /// Re-derives this worker's state from its engine after a change: transmit entries and
    /// reads of ports that are gone, wires of parents that are gone (closed, if owned here),
    /// filter keys and memberships of the wires owned here.
    pub(crate) fn resync(&mut self) {
        let engine = Arc::clone(&self.core.engine);
        let n = self.core.io.ports.len().max(self.rx.len());
        for i in 0..n {
            let keep = match self.core.io.ports.get_mut(i).and_then(Option::as_mut) {
                None => true,
                Some(t) => match engine.port_arc(PortId(i as u32)) {
                    None => false,
                    // The very port the TAP was last matched with (name and network are the
                    // same): no string to compare, whatever the number of ports.
                    Some(a) if std::ptr::eq(t.engine_port.as_ptr(), Arc::as_ptr(a)) => true,
                    Some(a) => {
                        let same = a.name == t.tap.name && a.network == t.tap.network;
                        if same {
                            t.engine_port = Arc::downgrade(a);
                        }
                        same
                    }
                },
            };
            if !keep {
                // The port is gone: forget its TAP (a persistent TAP stays in its namespace).
                self.drop_port(PortId(i as u32));
            }
        }
        for i in 0..self.core.io.parents.len() {
            let pid = ParentId(i as u32);
            let Some(Some(slot)) = self.core.io.parents.get_mut(i) else {
                continue;
            };
            match engine.parent_info(pid) {
                Some(info) if info.name == slot.engine_name => {
                    slot.mac = info.mac;
                    slot.mtu = info.mtu as usize;
                    slot.sync_keys(&engine.wire_keys(pid));
                }
                _ => {
                    // The parent left the engine: its wire closes whatever the references.
                    let ifindex = slot.ifindex;
                    self.core.io.nh.forget_ifindex(ifindex);
                    self.close_wire(pid);
                }
            }
        }
        for i in 0..self.core.io.views.len() {
            let pid = ParentId(i as u32);
            let gone = match self.core.io.views.get(i).and_then(Option::as_ref) {
                None => false,
                Some(v) => {
                    v.owner == self.id && !matches!(self.core.io.parents.get(i), Some(Some(_)))
                        || engine.parent_info(pid).is_none()
                }
            };
            if gone {
                if let Some(Some(v)) = self.core.io.views.get(i) {
                    let ifindex = v.ifindex;
                    self.core.io.nh.forget_ifindex(ifindex);
                }
                if let Some(v) = self.core.io.views.get_mut(i) {
                    *v = None;
                }
            }
        }
        // A change of the engine may change what a port's TAP may drop by itself.
        self.sync_tap_filters();
    }

    /// This worker's counters: (port index, rx part, tx part), drops, its loop counters.
    pub(crate) fn local_stats(&mut self) -> LocalStats {
        let mut ports = Vec::new();
        let mut drops = self.core.io.drops;
        let n = self.core.io.ports.len().max(self.rx.len());
        for i in 0..n {
            let rx = self.rx.get(i).and_then(Option::as_ref).map(|r| {
                let mut c = r.c;
                if r.queue == 0 {
                    self.add_filter_counts(PortId(i as u32), &mut c, &mut drops);
                }
                c
            });
            let tx = self
                .core
                .io
                .ports
                .get(i)
                .and_then(Option::as_ref)
                .map(|t| t.c);
            if rx.is_some() || tx.is_some() {
                ports.push((PortId(i as u32), rx, tx));
            }
        }
        let parents = self
            .core
            .io
            .parents
            .iter_mut()
            .enumerate()
            .filter_map(|(i, p)| {
                p.as_mut()
                    .map(|p| (ParentId(i as u32), p.counters(), p.ifindex))
            })
            .collect::<Vec<_>>();
        let wire_fast = self
            .core
            .fast
            .as_ref()
            .map(|fp| fp.wire_counters())
            .unwrap_or_default();
        let parents = parents
            .into_iter()
            .map(|(id, mut c, ifindex)| {
                if let Some((_, tx, rx)) = wire_fast.iter().find(|(i, _, _)| *i == ifindex) {
                    c.fast_tx_frames = tx.frames;
                    c.fast_tx_bytes = tx.bytes;
                    c.fast_rx_frames = rx.frames;
                    c.fast_rx_bytes = rx.bytes;
                }
                (id, c)
            })
            .collect();
        let mut lc = self.lc;
        lc.add(&self.reactor.counters());
        lc.add(&self.core.io.lc);
        lc.syscalls += self.retired_wire_syscalls
            + self
                .core
                .io
                .parents
                .iter()
                .flatten()
                .map(|p| p.backend.syscalls())
                .sum::<u64>();
        let mut io_errors = self.core.io.io_errors;
        if let Reactor::Uring(u) = &self.reactor {
            io_errors += u.errors;
        }
        LocalStats {
            ports,
            parents,
            drops,
            tap_filters_on: self.tap_filters_on(),
            io_drops: self.core.io.io_drops,
            io_errors,
            lc,
            commands: self.commands,
        }
    }
}

fn unreachable_worker() -> ! {
    // A worker thread is gone (it panicked outside a command): nothing can run there.
    panic!("a dataplane worker thread has stopped")
}

/// One worker's share of [`super::Stats`].
pub(crate) struct LocalStats {
    pub(crate) ports: Vec<(PortId, Option<PortCounters>, Option<PortCounters>)>,
    pub(crate) parents: Vec<(ParentId, super::ParentCounters)>,
    pub(crate) drops: [u64; DropReason::COUNT],
    /// Ports whose TAP carries a prefilter (read here).
    pub(crate) tap_filters_on: usize,
    pub(crate) io_drops: [u64; IoDrop::COUNT],
    pub(crate) io_errors: u64,
    pub(crate) lc: LoopCounters,
    pub(crate) commands: u64,
}
