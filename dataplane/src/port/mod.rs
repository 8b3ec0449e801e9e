//! The I/O edge: TAP endpoints ([`tap`], with `IFF_VNET_HDR` offloads) and the parent NIC: AF_XDP with an XDP filter ([`xsk`]), and AF_PACKET
//! ([`afpacket`]) both as a broadcast/multicast copy socket and as the fallback parent backend
//! with a tcx-ingress drop filter. Everything is our own thin code over `libc` and `bpf(2)`
//! ([`bpf`]); the filter program is assembled in Rust ([`xdp_filter`]).
//!
//! The run loop drives either parent backend through [`WireIo`]:
//!
//! ```text
//! loop {
//!     poll(wire.poll_fds() + taps, POLLIN)
//!     wire.recv_batch(64, &mut |frame| engine.ingress(frame.data))   // frames borrowed
//!     for each verdict to the wire: wire.send(bytes)?                  // copied, queued
//!     wire.flush()?                                                    // one kick per batch
//! }
//! ```
//!
//! Which backend: try [`xsk::XdpParent::open`]; when it fails (no `CONFIG_XDP_SOCKETS`,
//! another program owns the XDP hook: EEXIST/EBUSY) fall back to
//! [`afpacket::AfPacketParent::open`]. In AF_XDP mode, also open an
//! [`afpacket::AfPacketSocket`] on the parent to get copies of the broadcast/multicast that
//! the filter passed to the host (XDP cannot clone). Keys steering frames to endpoints are
//! maintained through [`WireIo::filter_maps`].
//!
//! [`probe`] tries each of these for real in a scratch namespace (and io_uring), for
//! `uvlan doctor`.

pub mod afpacket;
pub mod bpf;
pub mod ethtool;
pub mod fast_path;
pub mod inject;
pub mod probe;
pub mod tap;
pub mod tap_filter;
pub mod uring;
pub mod vlan_access;
pub mod xdp_filter;
pub mod xsk;

use std::fmt;
use std::io;
use std::os::fd::BorrowedFd;

use xdp_filter::FilterMaps;
use xsk::{BindMode, XdpMode};

/// How the kernel classified a frame received on an AF_PACKET socket (`sll_pkttype`): the same
/// `skb->pkt_type` the engine computes for its receivers, hence the same type.
pub use crate::wire::PacketType;

/// A frame received from the wire, borrowed from the backend for the duration of the
/// [`WireIo::recv_batch`] callback. `data` is the full Ethernet frame, with its 802.1Q tag in
/// place (AF_PACKET re-inserts a tag the kernel moved into metadata).
#[derive(Debug, Clone, Copy)]
pub struct RxFrame<'a> {
    /// The Ethernet frame (no FCS).
    pub data: &'a [u8],
    /// RX queue it arrived on (AF_XDP), 0 for AF_PACKET.
    pub queue: u32,
    /// Kernel packet type (AF_PACKET only).
    pub pkt_type: Option<PacketType>,
    /// True when the 802.1Q tag was rebuilt from `PACKET_AUXDATA` metadata.
    pub vlan_restored: bool,
}

/// How an AF_PACKET parent keeps endpoint frames away from the host stack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Steering {
    /// No steering: a copy socket; the host stack also processes everything.
    None,
    /// A tcx-ingress program drops frames keyed to endpoints from the host path.
    TcxIngress,
}

/// The parent backend actually in use, for the control plane to show.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WireMode {
    /// AF_XDP sockets on every RX queue behind the XDP filter.
    AfXdp {
        /// Where the XDP program runs.
        xdp: XdpMode,
        /// How the sockets are bound.
        bind: BindMode,
        /// Number of RX queues (one socket each).
        queues: u32,
    },
    /// An AF_PACKET socket.
    AfPacket {
        /// How endpoint frames are hidden from the host.
        steering: Steering,
    },
}

impl fmt::Display for WireMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WireMode::AfXdp { xdp, bind, queues } => {
                let x = match xdp {
                    XdpMode::Native => "native",
                    XdpMode::Generic => "generic",
                };
                let b = match bind {
                    BindMode::Copy => "copy",
                    BindMode::ZeroCopy => "zero-copy",
                };
                write!(f, "af_xdp ({x} xdp, {b}, {queues} queue(s))")
            }
            WireMode::AfPacket {
                steering: Steering::TcxIngress,
            } => write!(f, "af_packet (tcx ingress filter)"),
            WireMode::AfPacket {
                steering: Steering::None,
            } => write!(f, "af_packet (copy only)"),
        }
    }
}

/// The receive/transmit shape shared by the parent backends, so the run loop can use either.
///
/// All methods are non-blocking; wait for readability on [`WireIo::poll_fds`] (POLLIN).
pub trait WireIo {
    /// Receive up to `max` frames, calling `f` once per frame with the frame borrowed; the
    /// buffers are handed back to the kernel after `f` returns. Returns the number of frames
    /// delivered (0 when nothing is pending).
    fn recv_batch(&mut self, max: usize, f: &mut dyn FnMut(RxFrame<'_>)) -> io::Result<usize>;

    /// Copy `frame` (a full Ethernet frame, tag included) into the transmit queue. Returns
    /// `Ok(false)` when it was not queued (ring full or frame larger than a buffer; counted
    /// in the backend's statistics). Frames are only guaranteed to leave after
    /// [`WireIo::flush`].
    fn send(&mut self, frame: &[u8]) -> io::Result<bool>;

    /// Hand queued frames to the kernel (one syscall per batch) and reclaim finished buffers.
    fn flush(&mut self) -> io::Result<()>;

    /// File descriptors to poll for POLLIN.
    fn poll_fds(&self) -> Vec<BorrowedFd<'_>>;

    /// The backend and mode actually in use.
    fn mode(&self) -> WireMode;

    /// The steering maps, when the backend has a filter program.
    fn filter_maps(&self) -> Option<&FilterMaps>;
}
