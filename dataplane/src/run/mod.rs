//! The dataplane thread: TAP endpoints ↔ forwarding engine ↔ parent wire.
//!
//! [`Dataplane::spawn`] starts **one** thread that owns the [`Engine`], every endpoint TAP
//! and every parent backend. It waits in `poll(2)` on all their file descriptors plus an
//! eventfd that [`DataplaneHandle`] uses to hand it commands:
//!
//! ```text
//! loop {
//!     poll(eventfd, taps, XSK sockets, AF_PACKET sockets)
//!     for each readable TAP:    read_batch → engine.decide(Ingress::Port) → outputs
//!     for each readable parent: recv_batch (XSK + copy socket, or the AF_PACKET fallback)
//!                               → engine.decide(Ingress::Wire) → outputs; GRO per TAP
//!     flush the GRO of every TAP that holds a super-frame; one flush per parent wire
//!     run queued commands (engine changes, TAPs, parents), then re-derive the filter keys
//! }
//! ```
//!
//! # What each output becomes
//! - [`Target::Port`](crate::fwd::Target::Port): written to the port's TAP. TAP → TAP the
//!   sender's `virtio_net_hdr` is passed through unchanged, so GSO super-frames and partial
//!   checksums survive (measured: ×5.6 for TCP). Wire → TAP frames go through one
//!   [`Gro`](crate::offload::Gro) per TAP and batch. `VlanOp::Pop` removes the outer tag (and
//!   moves `csum_start` back by 4). A write that would block is dropped and counted.
//! - [`Target::Wire`](crate::fwd::Target::Wire): `VlanOp::Push` inserts the tag (`csum_start`
//!   +4); a TCP/UDP GSO super-frame goes to the kernel whole through the parent's AF_PACKET
//!   GSO TX socket (`PACKET_VNET_HDR`; the kernel segments it, or a veth/TSO NIC takes it
//!   as is), after the frames already queued on the backend; without that socket, or for a
//!   frame the kernel refuses (and for UFO), it is segmented to the parent MTU in software.
//!   A partial checksum is completed, by the kernel through XSK TX metadata when the socket
//!   has it, else in software; then the frame is queued on the parent.
//! - [`Target::HostStack`](crate::fwd::Target::HostStack): for a frame that came from the
//!   wire and that the host also received (AF_PACKET copy socket, AF_PACKET fallback) nothing
//!   is left to do; it is counted per parent (`host_stack_kernel`). A frame steered away
//!   from the host (XSK) or sent by a port is injected into the parent's own receive path
//!   by the worker that owns the parent, through the parent's injection TAP
//!   ([`crate::port::inject`]: a tcx program redirects it with `BPF_F_INGRESS`), with its
//!   virtio_net_hdr (partial checksum, GSO) as the port wrote it and the network's tag
//!   pushed for a network on `IF.VID`; counted per parent (`host_injected`). Where the
//!   injector could not be opened (tcx needs Linux 6.6), or for a steered frame under a
//!   generic XDP filter (which would steer the injected frame again), it is counted as
//!   [`IoDrop::HostStackUnreachable`] and dropped.
//! - [`Target::Routed`](crate::fwd::Target::Routed): a new Ethernet header (src = parent MAC,
//!   dst = the next hop the engine's route stage resolved, EtherType from the IP version, tag
//!   if the network has a VID, TTL untouched), then as for the wire. The route stage asks the
//!   loop's [`Routes`](crate::fwd::Routes): the [`Resolver`] behind a cache on this thread
//!   (a MAC for 30 s, `Pending` for 250 ms, the negative answers for 1 s). A parent whose
//!   wire is not attached (or whose interface is gone) has no interface to route out of: its
//!   answer is `Unreachable`. Unresolved, unroutable and bad-type destinations are engine
//!   drops (`neighbour_pending`, `route_unreachable`, `l3_route_type`), and an `RTN_LOCAL`
//!   answer is a `HostStack` output; [`DataplaneHandle::trace`] runs the same stage with the
//!   same cache and resolver.
//!
//! # Wire ingress
//! With AF_XDP the XDP filter redirects frames keyed to endpoints to the XSKs and passes the
//! rest to the host; a group-only AF_PACKET copy socket hands the dataplane the broadcast and
//! multicast that the host received (XDP cannot clone). Both are `Ingress::Wire`. With the
//! AF_PACKET fallback one socket sees every frame of the parent, host unicast included, and
//! the tcx filter drops the endpoint-keyed ones from the host path; every frame is decided
//! (the engine returns `HostStack` for the host's own frames).
//!
//! A broadcast ARP request or NS whose target is an endpoint address is redirected by the
//! filter and never reaches the host; the engine's verdict for it may include `HostStack`,
//! and the frame is injected into the host's receive path as the kernel's slave would pass
//! it up (the host does not own the address and ignores it). The same holds for unicast
//! frames steered by a macvlan `source` allowlist that are addressed to the host: see
//! `port::xdp_filter`.
//!
//! # Filter maps
//! After every command the loop recomputes [`Engine::wire_keys`] for each attached parent
//! and applies the difference to the parent's `FilterMaps`. MACs of macvlan ports are also
//! added to the parent's unicast filter (`PACKET_MR_UNICAST` on the AF_PACKET socket, as the
//! kernel macvlan driver does with `dev_uc_add`), and a passthru network puts the parent in
//! promiscuous mode. When a tagged network uses AF_XDP and the parent strips tags in
//! hardware (`rxvlan` on), RX VLAN offload is turned off on that parent (only on the
//! interface named in [`DataplaneHandle::attach_parent`]) and turned back on when the last
//! user detaches.
//!
//! # Limits (documented, not hidden)
//! - Under a generic XDP filter (drivers without native XDP), frames the filter steered and
//!   the engine gives to the host stack (macvlan `source` allowlists, broadcast ARP/NS for
//!   an endpoint) are counted as unreachable, not injected (they would be steered again).
//! - With the AF_PACKET fallback, `HostStack` verdicts are counted as `host_stack_kernel`
//!   even for the few group frames the tcx filter kept from the host (ARP requests and NSs
//!   whose target is an endpoint address); the host does not own those addresses.
//! - macvlan `source` mode: unicast frames from an allowlisted MAC are steered to the
//!   dataplane, so those addressed to the host itself no longer reach it (XDP cannot clone).
//! - macvlan `passthru`: the parent is put in promiscuous mode even with `nopromisc`, and a
//!   MAC given to the passthru port is not set on the real NIC (that is netlink, the control
//!   plane's job; the engine already records it, C43).
//! - Parent MTU above what one UMEM frame holds (3840 bytes of frame with 4096-byte frames)
//!   needs multi-buffer AF_XDP, which is not implemented: such frames are dropped by the
//!   kernel (`backend_rx_drops`) or refused on transmit (`wire_full`).
//!
//! - An open TAP fd keeps its network namespace alive (measured: after `ip netns del` the
//!   device still exists and still forwards). The control plane must call
//!   [`DataplaneHandle::remove_tap`] when an endpoint goes away. A TAP whose device is
//!   deleted (its fd reports `POLLERR`) is no longer polled; frames for it are counted as
//!   `tap_down` until the TAP is removed.
//!
//! # Capture
//! [`DataplaneHandle::start_capture`] attaches a capture to every worker: frames are decided
//! with a tracer and recorded inbound where they entered and outbound where each copy is
//! written (see `record.rs` for what exactly, GSO included). With no capture attached, one
//! branch per frame.
//!
//! # Allocation
//! Nothing is allocated per frame once buffers have grown: one [`Outputs`](crate::fwd::Outputs),
//! one TAP receive batch, one wire staging arena, one scratch frame, one segmenter and one GRO
//! per TAP are reused. Commands and statistics allocate (they are rare).
//!
//! # Threading
//! Control threads never touch TAP fds, sockets or the engine: every [`DataplaneHandle`]
//! method is a closure run on the dataplane thread between two batches, answered through a
//! one-shot channel. Do not call a handle from inside a [`DataplaneHandle::with_engine`]
//! closure: it runs on the dataplane thread, and such a call is refused with
//! [`RunError::Reentrant`] rather than deadlocking.

mod datapath;
mod flood;
mod frame;
mod parent;
mod reactor;
mod record;
mod resolve;
mod stats;
mod worker;
mod xfer;

use std::fs::File;
use std::io;
use std::net::IpAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::{JoinHandle, ThreadId};
use std::time::Duration;

use crate::fwd::{Engine, Ingress, ParentId, PortId};
use crate::port::fast_path::FastLinks;
use crate::port::tap::Tap;
use crate::port::xsk::XdpOptions;
use crate::trace::Trace;

pub use stats::{
    FastPathReport, IoDrop, LoopCounters, ParentCounters, PortCounters, Stats, BATCH_BUCKETS,
};

/// How to reach a routed destination; defined by the engine's route stage (`fwd`), kept here
/// for the [`Resolver`] implementations.
pub use crate::fwd::NextHop;

use self::datapath::{Core, Decider, Io};
use self::reactor::{plain::Plain, uring::Uring, Reactor};
use self::worker::{Mailbox, Shared, SharedFilters, Worker};
use self::xfer::{Lane, LaneOut, XferIn, XferOut};

/// Looks up next hops in the host's routing and neighbour tables (the control plane
/// implements it with netlink in the parent's namespace).
///
/// Called on the dataplane thread; the run loop puts a cache in front of it (a MAC for 30 s,
/// `Pending` for 250 ms, `Local`/`BadRouteType`/`Unreachable` for 1 s), so it is not called
/// per packet. It should return quickly: the loop forwards nothing while it runs. The cache
/// and the resolver together are the engine's [`Routes`](crate::fwd::Routes) for the route
/// stage, in the datapath and in [`DataplaneHandle::trace`] alike.
pub trait Resolver: Send + 'static {
    /// The next hop for `dst` leaving through the interface `parent_ifindex` (the index in
    /// the namespace the dataplane opened the parent in).
    fn resolve(&mut self, parent_ifindex: u32, dst: IpAddr) -> NextHop;
}

/// Which parent backend [`DataplaneHandle::attach_parent`] opens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WireBackend {
    /// AF_XDP behind the XDP filter; when that cannot attach (no `CONFIG_XDP_SOCKETS`, the
    /// XDP hook taken), AF_PACKET with the tcx-ingress filter.
    #[default]
    Auto,
    /// AF_XDP only: attaching fails when it cannot be opened.
    AfXdp,
    /// AF_PACKET + tcx only.
    AfPacket,
}

/// Which I/O path the workers use for TAPs and waiting (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IoMode {
    /// io_uring when this kernel and sandbox allow it (probed at spawn), else plain.
    #[default]
    Auto,
    /// io_uring only: spawning fails when it cannot be set up.
    Uring,
    /// epoll, `readv`, `writev`: for kernels or sandboxes without io_uring.
    Plain,
}

impl IoMode {
    /// `auto`, `uring` or `plain`.
    pub fn as_str(self) -> &'static str {
        match self {
            IoMode::Auto => "auto",
            IoMode::Uring => "uring",
            IoMode::Plain => "plain",
        }
    }
}

/// Options of [`Dataplane::spawn`]. Build with `RunOptions { .., ..Default::default() }`.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Frames read per TAP or parent per turn: the per-port budget (1..=1024; default 64).
    pub batch: usize,
    /// Which parent backend to open (default [`WireBackend::Auto`]).
    pub wire_backend: WireBackend,
    /// Run the dataplane threads inside this network namespace (`/run/netns/NAME`,
    /// `/proc/PID/ns/net`): parents are looked up and opened there. For tests and labs that
    /// keep the "host" side of a topology in a namespace; `None` (the default) keeps the
    /// namespace of the process. TAPs are independent of it (their fds work from anywhere).
    pub netns: Option<PathBuf>,
    /// AF_XDP settings (attach mode, ring sizes, TX checksum metadata).
    pub xdp: XdpOptions,
    /// Turn a parent's RX VLAN offload off while a tagged network uses it through AF_XDP
    /// (restored on the last detach). Default true.
    pub manage_rx_vlan_offload: bool,
    /// Hand GSO super-frames from endpoints to the kernel whole, through an AF_PACKET
    /// socket with `PACKET_VNET_HDR` on the parent, which segments them as it does for the
    /// kernel drivers (NIC TSO or software GSO). Default true; off, or when that socket
    /// cannot be opened, the dataplane segments them itself and sends each segment through
    /// the backend.
    pub kernel_gso: bool,
    /// The dataplane threads' nice value (-20..=19), set when they start; `None` leaves the
    /// process's. Default -10: the kernel forwards in softirq context, ahead of every
    /// process, and a dataplane thread that has to compete with the senders it serves loses
    /// most of a small-packet flood (measured in docs/performance.md). Raising the priority
    /// needs `CAP_SYS_NICE`; without it the threads keep the process's and say nothing.
    pub nice: Option<i32>,
    /// The I/O path (default [`IoMode::Auto`]).
    pub io: IoMode,
    /// Worker threads (1..=64; default 1). Ports are spread over them (each TAP queue is read
    /// by one worker; a multiqueue TAP gets one queue per worker), each parent's wire belongs
    /// to one, frames for another worker's wire cross through a lock-free queue.
    pub workers: usize,
    /// Provided receive buffers per worker for io_uring TAP reads (a power of two,
    /// 2..=32768; default 256). Each holds a vnet header and the largest frame (65 KiB of
    /// address space, faulted in as used).
    pub rx_buffers: usize,
    /// Before sleeping, spin this long looking for completions (io_uring) or readiness
    /// (epoll). Default `None`: sleep at once. On shared CPUs spinning takes time from the
    /// senders and receivers the dataplane serves (see docs/performance.md).
    pub busy_poll: Option<Duration>,
    /// While small frames (≤ 256 bytes) arrive faster than one per this interval, a worker's
    /// wait lingers up to this long for a batch of frames (half of `batch`) instead of
    /// returning for the first one: fewer wake-ups and system calls per frame under a flood,
    /// at most this much latency added then; a larger frame (TCP's GSO super-frames) or a
    /// slow wait ends it at once, and a lone frame (a ping) never waits. io_uring only
    /// (`epoll_wait` counts in milliseconds). Default 100 µs; `None` or zero: never linger.
    pub coalesce: Option<Duration>,
    /// Give each TAP a prefilter ([`crate::port::tap_filter`]): frames the engine would drop
    /// whatever else they hold (a port's unicast to nowhere on an internal ipvlan L2 or
    /// macvlan network, non-IP on ipvlan L3) are dropped by the kernel in the sender's
    /// context, counted as the engine's drops, instead of being read and decided. Off while
    /// a capture runs, and in the blind relay. Default true.
    pub tap_filter: bool,
    /// Storm control: the share of its worker's time, in percent (1..=100), that a TAP port
    /// may take while it floods (only group-addressed frames or frames the engine drops,
    /// batch after batch: see flood deferral in `docs/reliability.md`). After each batch
    /// read from such a port, its reads pause for `(100 − share) / share` times what the
    /// batch cost (1–100 ms); what it sends meanwhile waits, then is dropped, in its own TAP
    /// queue. Work-conserving: only while other ports or wires have frames read meanwhile.
    /// 100 keeps only the fixed 1 ms pause. Default 10.
    pub storm_share: u8,
    /// The blind relay instead of the engine (the benchmark's bound for this design):
    /// every frame from a port goes to every other port with a TAP and every attached wire,
    /// every frame from a wire to every port with a TAP, unchanged. Ports and parents must
    /// still exist in the engine to be added. Default false.
    pub relay: bool,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            batch: 64,
            wire_backend: WireBackend::Auto,
            netns: None,
            xdp: XdpOptions::default(),
            manage_rx_vlan_offload: true,
            kernel_gso: true,
            nice: Some(-10),
            io: IoMode::Auto,
            workers: 1,
            rx_buffers: 256,
            busy_poll: None,
            coalesce: Some(Duration::from_micros(100)),
            tap_filter: true,
            storm_share: flood::STORM_SHARE,
            relay: false,
        }
    }
}

/// The state of a parent's wire, as [`DataplaneHandle::attach_parent`] and
/// [`DataplaneHandle::wire_status`] report it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireStatus {
    /// The backend in use, e.g. `"af_xdp (native xdp, copy, 1 queue(s))"` or
    /// `"af_packet (tcx ingress filter)"`.
    pub mode: String,
    /// The interface.
    pub ifname: String,
    /// Its index in the dataplane's namespace.
    pub ifindex: u32,
    /// How many attaches hold it.
    pub refs: u32,
    /// An AF_PACKET copy socket receives the group frames passed to the host (AF_XDP mode).
    pub copy_socket: bool,
    /// Why AF_XDP was not used, when [`WireBackend::Auto`] fell back to AF_PACKET.
    pub fallback_reason: Option<String>,
    /// RX VLAN offload was turned off by uvlan and will be restored on the last detach.
    pub rx_vlan_offload_disabled: bool,
    /// Filter keys installed.
    pub keys: usize,
    /// The last error while installing filter keys or memberships (retried after every
    /// command), if any.
    pub last_error: Option<String>,
    /// The TAP that injects frames into the parent's own receive path (for the host stack),
    /// when it could be opened: its name and interface index.
    pub host_injector: Option<(String, u32)>,
    /// Why there is no injector: frames for the host stack are then counted as
    /// `host_stack_unreachable`.
    pub host_inject_error: Option<String>,
}

/// Errors of the dataplane handle.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The dataplane thread is gone (shut down, or it failed).
    #[error("the dataplane thread has stopped; restart the daemon")]
    Stopped,
    /// A handle method was called from the dataplane thread itself (inside a
    /// `with_engine` closure).
    #[error(
        "a DataplaneHandle method was called on the dataplane thread (from inside a \
         with_engine/read_engine closure): return a value and call it afterwards"
    )]
    Reentrant,
    /// A system call failed.
    #[error("dataplane I/O error: {0}")]
    Io(#[from] io::Error),
    /// The parent's wire could not be opened.
    #[error("cannot open the wire on {ifname}: {reason}")]
    Wire {
        /// The interface.
        ifname: String,
        /// What went wrong, with the backends' own errors.
        reason: String,
    },
    /// The engine has no such port.
    #[error("{0} does not exist in the engine: add the port before its TAP")]
    NoSuchPort(PortId),
    /// The engine has no such parent.
    #[error("{0} does not exist in the engine: register the parent before attaching it")]
    NoSuchParent(ParentId),
    /// The parent is already attached under another interface name.
    #[error("{parent} is attached as {attached}, not {requested}")]
    ParentNameMismatch {
        /// The parent.
        parent: ParentId,
        /// The interface it is attached on.
        attached: String,
        /// The interface requested now.
        requested: String,
    },
    /// `detach_parent` without a matching attach.
    #[error("{0} is not attached")]
    NotAttached(ParentId),
    /// `add_tap` refused the TAP; it is handed back unchanged.
    #[error("{port} already has a TAP; remove_tap it first (the new TAP is returned)")]
    PortBusy {
        /// The port.
        port: PortId,
        /// The refused TAP, returned so the caller can keep or close it.
        tap: Box<Tap>,
    },
    /// `add_fast_port` before `add_tap`.
    #[error("{0} has no TAP: add the TAP (the slow path) before the fast-path veth")]
    NoTap(PortId),
    /// The fast path could not be set up.
    #[error("fast path: {0}")]
    FastPath(#[from] crate::port::fast_path::FastPathError),
    /// A command closure panicked on the dataplane thread (the loop keeps running).
    #[error("a dataplane command panicked: {0}")]
    Panicked(String),
    /// A capture was asked of the blind relay, which makes no decisions.
    #[error("the blind relay (RunOptions::relay) decides nothing to capture; run the engine")]
    CaptureInRelay,
}

/// A command run on a worker.
type Cmd = Box<dyn FnOnce(&mut Worker) + Send>;

/// The dataplane's worker threads. Dropping it shuts them down (as [`Dataplane::shutdown`]).
#[derive(Debug)]
pub struct Dataplane {
    handle: DataplaneHandle,
    threads: Vec<JoinHandle<()>>,
    io: String,
}

/// A cloneable, thread-safe way to talk to the dataplane.
#[derive(Clone, Debug)]
pub struct DataplaneHandle {
    tx: mpsc::Sender<Cmd>,
    wake: Arc<OwnedFd>,
    threads: Arc<[ThreadId]>,
}

/// Sets the calling thread's nice value (Linux: `PRIO_PROCESS` with a thread id applies to
/// that thread only). Best effort: an unprivileged caller keeps its priority.
fn set_thread_nice(nice: i32) {
    let nice = nice.clamp(-20, 19);
    // SAFETY: gettid has no preconditions; setpriority only reads its integer arguments.
    unsafe {
        let tid = libc::gettid();
        libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, nice);
    }
}

pub(crate) fn eventfd() -> io::Result<OwnedFd> {
    // SAFETY: plain eventfd(2) call; the result is checked.
    let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Adds 1 to an eventfd (wakes the worker waiting on it).
pub(crate) fn ring_bell(fd: &OwnedFd) -> io::Result<()> {
    let one: u64 = 1;
    // SAFETY: writing 8 bytes from a live u64 to an eventfd we hold.
    let n = unsafe {
        libc::write(
            fd.as_raw_fd(),
            (&one as *const u64).cast(),
            std::mem::size_of::<u64>(),
        )
    };
    if n < 0 {
        let e = io::Error::last_os_error();
        // EAGAIN: the counter is saturated, the worker is being woken anyway.
        if e.kind() != io::ErrorKind::WouldBlock {
            return Err(e);
        }
    }
    Ok(())
}

fn enter_netns(path: &std::path::Path) -> io::Result<()> {
    let f = File::open(path).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("cannot open network namespace {}: {e}", path.display()),
        )
    })?;
    // SAFETY: setns on an open namespace fd changes only the calling thread's network
    // namespace; this is a dataplane thread, which stays there for its whole life.
    if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(
            e.kind(),
            format!("cannot enter network namespace {}: {e}", path.display()),
        ));
    }
    Ok(())
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg)
}

/// Which path the workers take, and the sentence that says so.
fn choose_io(opts: &RunOptions) -> io::Result<(bool, String)> {
    let mut workers = if opts.workers == 1 {
        "1 worker".to_string()
    } else {
        format!("{} workers", opts.workers)
    };
    if let Some(d) = opts.busy_poll {
        workers.push_str(&format!(
            ", spinning {} µs before each sleep",
            d.as_micros()
        ));
    }
    let uring = format!(
        "io_uring (multishot TAP reads into {} provided buffers per worker, batched writes, \
         one io_uring_enter per turn), {workers}",
        opts.rx_buffers
    );
    match opts.io {
        IoMode::Plain => Ok((
            false,
            format!("epoll + readv/writev (--io plain), {workers}"),
        )),
        IoMode::Uring => match crate::port::uring::probe() {
            Ok(()) => Ok((true, uring)),
            Err(e) => Err(io::Error::new(
                io::ErrorKind::Unsupported,
                format!("io_uring was asked for and cannot be used: {e}"),
            )),
        },
        IoMode::Auto => match crate::port::uring::probe() {
            Ok(()) => Ok((true, uring)),
            Err(e) => Ok((
                false,
                format!("epoll + readv/writev (io_uring not used: {e}), {workers}"),
            )),
        },
    }
}

impl Dataplane {
    /// Starts the worker threads with an empty engine. Fails when the options are invalid,
    /// io_uring was asked for and cannot be used, an eventfd cannot be created, or a thread
    /// cannot enter `opts.netns`.
    pub fn spawn(opts: RunOptions, resolver: Box<dyn Resolver>) -> io::Result<Dataplane> {
        if !(1..=1024).contains(&opts.batch) {
            return Err(invalid(format!(
                "RunOptions.batch {} must be in 1..=1024",
                opts.batch
            )));
        }
        if !(1..=64).contains(&opts.workers) {
            return Err(invalid(format!(
                "RunOptions.workers {} must be in 1..=64",
                opts.workers
            )));
        }
        if !(1..=100).contains(&opts.storm_share) {
            return Err(invalid(format!(
                "RunOptions.storm_share {} must be a percentage in 1..=100",
                opts.storm_share
            )));
        }
        if !(2..=32768).contains(&opts.rx_buffers) || !opts.rx_buffers.is_power_of_two() {
            return Err(invalid(format!(
                "RunOptions.rx_buffers {} must be a power of two in 2..=32768",
                opts.rx_buffers
            )));
        }
        let (use_uring, io_text) = choose_io(&opts)?;
        let n = opts.workers;
        let mut bells = Vec::with_capacity(n);
        let mut txs = Vec::with_capacity(n);
        let mut rxs = Vec::with_capacity(n);
        for _ in 0..n {
            bells.push(Arc::new(eventfd()?));
            let (tx, rx) = mpsc::channel::<Cmd>();
            txs.push(tx);
            rxs.push(rx);
        }
        // One lane per ordered pair of workers.
        let mut outs: Vec<Vec<LaneOut>> = (0..n).map(|_| Vec::new()).collect();
        let mut ins: Vec<Vec<Arc<Lane>>> = (0..n).map(|_| Vec::new()).collect();
        for (j, out) in outs.iter_mut().enumerate() {
            for (k, inn) in ins.iter_mut().enumerate() {
                if j != k {
                    let lane = Arc::new(Lane::new());
                    out.push((k, Arc::clone(&lane), Arc::clone(&bells[k])));
                    inn.push(lane);
                }
            }
        }
        let shared = Arc::new(Shared {
            opts: opts.clone(),
            io: io_text.clone(),
            filters: SharedFilters::default(),
            mail: txs
                .iter()
                .zip(bells.iter())
                .map(|(tx, bell)| Mailbox {
                    tx: tx.clone(),
                    bell: Arc::clone(bell),
                })
                .collect(),
        });
        let resolver = Arc::new(Mutex::new(resolver));
        let engine = Arc::new(Engine::new());
        let decider = if opts.relay {
            Decider::Relay
        } else {
            Decider::Engine
        };
        let (ready_tx, ready_rx) = mpsc::channel::<(usize, io::Result<()>)>();
        let mut threads = Vec::with_capacity(n);
        let mut ids = Vec::with_capacity(n);
        for (id, ((rx, out), inn)) in rxs.into_iter().zip(outs).zip(ins).enumerate() {
            let shared = Arc::clone(&shared);
            let bell = Arc::clone(&bells[id]);
            let resolver = Arc::clone(&resolver);
            let engine = Arc::clone(&engine);
            let ready = ready_tx.clone();
            let opts = opts.clone();
            let t = std::thread::Builder::new()
                .name("uvlan-dataplane".into())
                .spawn(move || {
                    if let Some(nv) = opts.nice {
                        set_thread_nice(nv);
                    }
                    if let Some(ns) = &opts.netns {
                        if let Err(e) = enter_netns(ns) {
                            let _ = ready.send((id, Err(e)));
                            return;
                        }
                    }
                    let reactor = if use_uring {
                        Uring::new(
                            opts.batch,
                            opts.rx_buffers as u16,
                            opts.busy_poll,
                            opts.coalesce,
                        )
                        .map(|u| Reactor::Uring(Box::new(u)))
                        .map_err(|e| io::Error::other(format!("io_uring: {e}")))
                    } else {
                        Plain::new(opts.batch, opts.busy_poll).map(|p| Reactor::Plain(Box::new(p)))
                    };
                    let reactor = match reactor {
                        Ok(r) => r,
                        Err(e) => {
                            let _ = ready.send((id, Err(e)));
                            return;
                        }
                    };
                    let mut io = Io::new(id, resolver);
                    io.xfer = XferOut::new(out);
                    let core = Core::new(engine, io, decider);
                    let w = Worker::new(id, core, reactor, XferIn::new(inn), rx, bell, shared);
                    let mut w = match w {
                        Ok(w) => w,
                        Err(e) => {
                            let _ = ready.send((id, Err(e)));
                            return;
                        }
                    };
                    let _ = ready.send((id, Ok(())));
                    w.run();
                })?;
            ids.push(t.thread().id());
            threads.push(t);
        }
        drop(ready_tx);
        let mut first_err = None;
        for _ in 0..n {
            match ready_rx.recv() {
                Ok((_, Ok(()))) => {}
                Ok((_, Err(e))) => {
                    first_err.get_or_insert(e);
                }
                Err(_) => {
                    first_err
                        .get_or_insert(io::Error::other("a dataplane thread died while starting"));
                    break;
                }
            }
        }
        if let Some(e) = first_err {
            // Stop the workers that did start.
            for m in &shared.mail {
                let stop: Cmd = Box::new(|w: &mut Worker| w.stop = true);
                if m.tx.send(stop).is_ok() {
                    let _ = ring_bell(&m.bell);
                }
            }
            drop(shared);
            for t in threads {
                let _ = t.join();
            }
            return Err(e);
        }
        let tx = txs.swap_remove(0);
        Ok(Dataplane {
            handle: DataplaneHandle {
                tx,
                wake: Arc::clone(&bells[0]),
                threads: ids.into(),
            },
            threads,
            io: io_text,
        })
    }

    /// A handle for other threads.
    pub fn handle(&self) -> DataplaneHandle {
        self.handle.clone()
    }

    /// The I/O path in use and why, e.g. `"io_uring (multishot TAP reads …), 1 worker"` or
    /// `"epoll + readv/writev (io_uring not used: io_uring_setup failed: …), 1 worker"`.
    pub fn io_description(&self) -> &str {
        &self.io
    }

    /// Stops the threads and waits for them. TAP fds are closed (persistent TAPs stay),
    /// parent programs are detached and RX VLAN offload is restored. Handles then return
    /// [`RunError::Stopped`].
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        if self.threads.is_empty() {
            return;
        }
        let _ = self.handle.call(|w| {
            w.on_peers(|p| p.stop = true);
            w.stop = true;
            Ok(())
        });
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for Dataplane {
    fn drop(&mut self) {
        self.stop();
    }
}

fn panic_text(p: Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "(non-string panic payload)".to_string()
    }
}

impl DataplaneHandle {
    /// Runs `f` on worker 0 (the leader) and waits for its answer.
    fn call<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Worker) -> Result<R, RunError> + Send + 'static,
    ) -> Result<R, RunError> {
        let me = std::thread::current().id();
        if self.threads.contains(&me) {
            return Err(RunError::Reentrant);
        }
        let (tx, rx) = mpsc::sync_channel::<Result<R, RunError>>(1);
        let cmd: Cmd = Box::new(move |w: &mut Worker| {
            let r = catch_unwind(AssertUnwindSafe(|| f(w)))
                .unwrap_or_else(|p| Err(RunError::Panicked(panic_text(p))));
            let _ = tx.send(r);
        });
        self.tx.send(cmd).map_err(|_| RunError::Stopped)?;
        ring_bell(&self.wake)?;
        rx.recv().map_err(|_| RunError::Stopped)?
    }

    /// Runs `f` between two batches with exclusive access to the engine, and returns its
    /// result. When it returns, every worker decides with the new state (with several
    /// workers, `f` runs on worker 0's copy and the others switch to it before this
    /// returns). Afterwards the workers re-derive their own state from the engine: filter
    /// keys (`Engine::wire_keys`), unicast memberships, TAPs of ports that no longer exist
    /// (closed) and wires of parents that no longer exist (closed).
    pub fn with_engine<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Engine) -> R + Send + 'static,
    ) -> Result<R, RunError> {
        self.call(move |w| {
            let r = catch_unwind(AssertUnwindSafe(|| f(Arc::make_mut(&mut w.core.engine))));
            w.cmd_publish_engine();
            r.map_err(|p| RunError::Panicked(panic_text(p)))
        })
    }

    /// Reads the engine without changing it (same thread hop, no resync).
    pub fn read_engine<R: Send + 'static>(
        &self,
        f: impl FnOnce(&Engine) -> R + Send + 'static,
    ) -> Result<R, RunError> {
        self.call(move |w| Ok(f(&w.core.engine)))
    }

    /// Hands a TAP to the dataplane for an engine port (the port must exist in the engine).
    /// A port that already has a TAP refuses it with [`RunError::PortBusy`], which returns
    /// it. A multiqueue TAP (`TapOptions::multi_queue`) with several workers gets one more
    /// queue opened per worker, each read by its own worker.
    pub fn add_tap(&self, port: PortId, tap: Tap) -> Result<(), RunError> {
        self.call(move |w| w.cmd_add_tap(port, tap))
    }

    /// Takes a port's TAP back out (e.g. before the port is removed from the engine).
    /// `None` if the port had no TAP. When it returns no worker reads or writes the TAP any
    /// more and the kernel holds no request on it.
    pub fn remove_tap(&self, port: PortId) -> Result<Option<Tap>, RunError> {
        self.call(move |w| Ok(w.cmd_remove_tap(port)))
    }

    /// Opens the wire on a parent registered in the engine (AF_XDP with the filter, else
    /// AF_PACKET + tcx; plus the AF_PACKET copy socket for group frames). Reference counted:
    /// attach once per network using it; the last detach closes it. `ifname` is looked up in
    /// the dataplane's namespace.
    pub fn attach_parent(&self, parent: ParentId, ifname: &str) -> Result<WireStatus, RunError> {
        let ifname = ifname.to_string();
        self.call(move |w| w.cmd_attach_parent(parent, &ifname))
    }

    /// Drops one reference to a parent's wire; the last one closes it (the program is
    /// detached, RX VLAN offload restored).
    pub fn detach_parent(&self, parent: ParentId) -> Result<(), RunError> {
        self.call(move |w| w.cmd_detach_parent(parent))
    }

    /// The wire state of a parent (`None`: not attached).
    pub fn wire_status(&self, parent: ParentId) -> Result<Option<WireStatus>, RunError> {
        self.call(move |w| Ok(w.cmd_wire_status(parent)))
    }

    /// Explains what the datapath does with `frame` from `ingress`, stage by stage
    /// ([`crate::trace::trace`]), on the worker that decides frames from that ingress, with
    /// its next-hop cache and the [`Resolver`]: a routed frame gets the answer the datapath
    /// would get (and an answer the trace fetched serves the datapath). Like sending it,
    /// tracing a routed frame may ask the resolver, which may start neighbour resolution on
    /// the host; nothing is sent and no counter moves.
    pub fn trace(&self, frame: Vec<u8>, ingress: Ingress) -> Result<Trace, RunError> {
        self.call(move |w| {
            let at = w.decider_of(ingress);
            Ok(w.on_worker(at, move |x| x.core.trace(&frame, ingress)))
        })
    }

    /// Counters: per port, per parent, drops by engine reason and by I/O reason, and each
    /// worker's loop counters.
    pub fn stats(&self) -> Result<Stats, RunError> {
        self.call(|w| Ok(w.cmd_stats()))
    }

    /// Starts a capture: every worker records the frames `filter` selects (see
    /// [`crate::capture`] and the `record` module: inbound at the ingress, outbound at each
    /// output as written, drops with their reason when `filter.drops`), until the returned
    /// reader is dropped (each worker lets the session go at the end of its next turn) or
    /// the dataplane stops (the reader then sees [`End::Detached`](crate::capture::End)).
    /// While no capture is attached the datapath pays one branch per frame. While one is,
    /// fast-path endpoints forward through the slow path (the cache is emptied and learns
    /// nothing), so the capture sees every frame.
    pub fn start_capture(
        &self,
        filter: crate::capture::CaptureFilter,
    ) -> Result<crate::capture::CaptureReader, RunError> {
        let (session, reader) = crate::capture::open(filter);
        self.call(move |w| {
            if w.core.decider == Decider::Relay {
                return Err(RunError::CaptureInRelay);
            }
            // Every frame must reach the dataplane: the TAPs' prefilters come off.
            w.on_all(move |x| {
                x.core.io.rec.tap.attach(session.clone());
                x.sync_tap_filters();
            });
            // Every frame must be seen with its verdict: while a capture is attached the
            // workers learn nothing into the fast-path cache (`Core::forward`), and the
            // entries learned before are dropped now, after every worker has attached, so
            // each port's traffic takes the slow path until the capture ends.
            if let Some(fp) = &w.core.fast {
                fp.flush();
            }
            Ok(())
        })?;
        Ok(reader)
    }

    /// Makes `port` a fast-path endpoint (see [`crate::port::fast_path`]): `veth` is the
    /// ifindex, in the dataplane's namespace, of the dataplane's end of the endpoint's veth
    /// pair (the other end is the endpoint's interface, in another namespace). The port's
    /// TAP, already added and in the same namespace, becomes its slow path. The programs are
    /// loaded on first use and attached with `bpf_link` (they go when the process does).
    /// The cache is flushed.
    pub fn add_fast_port(&self, port: PortId, veth: u32) -> Result<(), RunError> {
        self.call(move |w| w.cmd_add_fast_port(port, veth))
    }

    /// Detaches `port`'s veth programs and flushes the cache (also done by `remove_tap` and
    /// by removing the port from the engine). Returns whether it had a veth.
    pub fn remove_fast_port(&self, port: PortId) -> Result<bool, RunError> {
        self.call(move |w| Ok(w.cmd_remove_fast_port(port)))
    }

    /// Takes `port` out of the fast path like [`DataplaneHandle::remove_fast_port`], but
    /// returns its program links instead of closing them (see
    /// [`crate::port::fast_path::FastPath::take`]): the cache is empty and the port's veth
    /// forwards nothing when this returns; the caller closes the links after deleting the
    /// interfaces, off the command's path. `None`: it had no veth.
    pub fn take_fast_port(&self, port: PortId) -> Result<Option<FastLinks>, RunError> {
        self.call(move |w| Ok(w.cmd_take_fast_port(port)))
    }

    /// Forgets every cached next hop (e.g. after the host's routes or neighbours changed).
    pub fn flush_route_cache(&self) -> Result<(), RunError> {
        self.call(|w| {
            w.on_all(|x| x.core.io.nh.clear());
            Ok(())
        })
    }
}
