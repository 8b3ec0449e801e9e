//! AF_PACKET on the parent NIC, in two roles:
//!
//! - [`AfPacketSocket`]: a raw socket bound to one interface. Next to an [`super::xsk::XdpParent`]
//!   it is the **copy socket** that receives the broadcast/multicast the XDP filter passed to
//!   the host (XDP cannot clone; AF_PACKET never sees frames redirected to an XSK).
//! - [`AfPacketParent`]: the **fallback parent backend** when AF_XDP cannot attach: the same
//!   socket for RX/TX plus the filter program in its tcx-ingress flavour, which drops frames
//!   keyed to endpoints from the host path (`TC_ACT_SHOT`). AF_PACKET taps run before tc
//!   ingress, so the socket still receives them.
//!
//! Receive and transmit are batched with `recvmmsg`/`sendmmsg` (one syscall per batch).
//!
//! Kernel facts relied on:
//! - The socket is created with protocol 0 (receives nothing) and then bound with
//!   `ETH_P_ALL` to one ifindex, so it never sees another interface's frames.
//! - The core receive path moves an outer 802.1Q/802.1ad tag into skb metadata
//!   (`skb_vlan_untag`) before taps run, so a tagged frame reaches AF_PACKET *without* its
//!   tag; `PACKET_AUXDATA` reports it (`tp_vlan_tci` with `TP_STATUS_VLAN_VALID`, the TPID with
//!   `TP_STATUS_VLAN_TPID_VALID`). This module re-inserts the tag so callers always get the
//!   frame as it was on the wire (each buffer keeps 4 bytes of headroom for that).
//! - `PACKET_IGNORE_OUTGOING` (4.20+) hides the host's own transmissions (including uvlan's
//!   own AF_PACKET and AF_XDP sends); frames with pkttype `PACKET_OUTGOING` or
//!   `PACKET_LOOPBACK` that still arrive are counted and not delivered.
//! - Every socket's filter drops frames carrying `INJECT_MARK` (`port::inject`): the frames
//!   uvlan itself hands to the host's receive path through the parent (see
//!   [`super::inject`]), which packet taps see too. The filter is classic BPF, except on an
//!   [`AfPacketParent`] opened with [`AfPacketOptions::wire_cache`]: there it is the fast
//!   path's eBPF socket filter, which also keeps the frames the cache forwards from the
//!   socket (`port::fast_path`).
//! - A frame sent on this host (a veth peer with TX checksum offload on) can arrive with its
//!   TCP or UDP checksum left to the device; `PACKET_AUXDATA` flags it
//!   (`TP_STATUS_CSUMNOTREADY`) and the socket completes the checksum before handing the
//!   frame on.
//! - `PACKET_STATISTICS` resets the kernel counters on every read; they are accumulated here.
//! - `PACKET_ADD_MEMBERSHIP` with `PACKET_MR_UNICAST` adds a MAC to the NIC's unicast filter
//!   (as the kernel macvlan driver does); memberships are dropped when the socket closes.
//! - tcx (`BPF_TCX_INGRESS` via `bpf_link`) needs kernel 6.6.
//!
//! Files: this one holds the errors, options, the shared socket setup and
//! [`AfPacketParent`]; `socket.rs` the RX/TX socket ([`AfPacketSocket`]); `gso.rs` the GSO
//! transmit socket ([`GsoTxSocket`]).

mod gso;
mod socket;

pub use gso::{GsoTxSocket, GsoTxStats};
pub use socket::{AfPacketSocket, AfPacketStats, Membership};

use std::io;
use std::mem::{size_of, zeroed};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use super::bpf::{BpfError, Link, Prog, ProgType};
use super::ethtool;
use super::fast_path;
use super::inject::INJECT_MARK;
use super::xdp_filter::{Filter, FilterError, FilterMaps, FilterStats};
use super::{RxFrame, Steering, WireIo, WireMode};

/// Errors opening an AF_PACKET socket or parent.
#[derive(Debug, thiserror::Error)]
pub enum AfPacketError {
    /// Interface lookup failed.
    #[error("interface {ifname}: {source}")]
    Interface {
        /// Interface name.
        ifname: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// A socket call failed.
    #[error("AF_PACKET socket on {ifname}: {step} failed: {source}")]
    Socket {
        /// Interface name.
        ifname: String,
        /// The failing step.
        step: &'static str,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// Filter program or maps.
    #[error(transparent)]
    Filter(#[from] FilterError),
    /// The tcx link could not be created.
    #[error(
        "cannot attach the tc-ingress filter to {ifname} with tcx (needs Linux 6.6+): {source}"
    )]
    Attach {
        /// Interface name.
        ifname: String,
        /// The failure.
        #[source]
        source: BpfError,
    },
    /// Bad options.
    #[error("invalid AF_PACKET option: {0}")]
    Options(String),
}

/// Options for [`AfPacketSocket::open`] and [`AfPacketParent::open`].
#[derive(Debug, Clone)]
pub struct AfPacketOptions {
    /// Messages per `recvmmsg`/`sendmmsg` call (1..=1024).
    pub batch: usize,
    /// Largest frame received or sent; bigger received frames (e.g. GRO super-frames) are
    /// counted as truncated and dropped.
    pub buf_size: usize,
    /// Capacity of each filter key map ([`AfPacketParent`] only).
    pub map_capacity: u32,
    /// Deliver only frames with a group (broadcast/multicast) destination MAC, filtered in
    /// the kernel by a classic BPF socket filter attached before `bind`. This
    /// is the copy socket next to an [`super::xsk::XdpParent`]: unicast that the XDP filter
    /// passed belongs to the host and is never copied to userspace.
    pub group_only: bool,
    /// With `group_only`: also deliver frames that carry an 802.1Q tag. The kernel holds tags
    /// in skb metadata when the sender or the NIC offloaded them (a veth peer with `txvlan`
    /// on, a NIC with `rxvlan` on); XDP cannot see such a tag, so the XDP filter passes
    /// VLAN-keyed unicast to the host, and this socket (which sees the tag in auxdata) picks
    /// it up. Tagged frames XDP redirected never reach the socket.
    pub with_tagged: bool,
    /// [`AfPacketParent`] only: give the tc filter the fast path's wire → endpoint cache
    /// and the socket the eBPF filter that keeps the cache's frames from it
    /// (`port::fast_path::assemble_wire_socket`), so the fast path can learn this wire's
    /// decisions (see [`AfPacketParent::wire_cache`]).
    pub wire_cache: bool,
}

impl Default for AfPacketOptions {
    fn default() -> Self {
        AfPacketOptions {
            batch: 32,
            buf_size: 65536,
            map_capacity: 4096,
            group_only: false,
            with_tagged: false,
            wire_cache: false,
        }
    }
}

/// A raw, non-blocking packet socket bound to `ifname` with protocol `proto` (host order;
/// 0 receives nothing). `configure` runs between `socket(2)` and `bind(2)` (options that
/// must precede the bind, such as a socket filter) and names the step that failed.
/// Returns the socket and the interface index.
pub(super) fn open_bound(
    ifname: &str,
    proto: u16,
    configure: impl FnOnce(BorrowedFd<'_>) -> Result<(), (&'static str, io::Error)>,
) -> Result<(OwnedFd, u32), AfPacketError> {
    let ifindex = ethtool::if_index(ifname).map_err(|source| AfPacketError::Interface {
        ifname: ifname.to_string(),
        source,
    })?;
    let err = |step: &'static str, source: io::Error| AfPacketError::Socket {
        ifname: ifname.to_string(),
        step,
        source,
    };
    // SAFETY: plain socket(2) call; the result is checked.
    let raw = unsafe {
        libc::socket(
            libc::AF_PACKET,
            libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        )
    };
    if raw < 0 {
        return Err(err("socket(AF_PACKET)", io::Error::last_os_error()));
    }
    // SAFETY: `raw` is a fresh fd owned by nobody else.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    configure(fd.as_fd()).map_err(|(step, e)| err(step, e))?;
    // SAFETY: sockaddr_ll is plain old data; all-zero is valid.
    let mut sll: libc::sockaddr_ll = unsafe { zeroed() };
    sll.sll_family = libc::AF_PACKET as u16;
    sll.sll_protocol = proto.to_be();
    sll.sll_ifindex = ifindex as i32;
    // SAFETY: `sll` is a valid sockaddr_ll and its exact size is passed.
    let r = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&sll as *const libc::sockaddr_ll).cast(),
            size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    };
    if r < 0 {
        return Err(err("bind", io::Error::last_os_error()));
    }
    Ok((fd, ifindex))
}

pub(super) fn set_int(
    fd: BorrowedFd<'_>,
    level: libc::c_int,
    opt: libc::c_int,
    v: libc::c_int,
) -> io::Result<()> {
    // SAFETY: `v` is a valid c_int for the duration of the call and its size is passed.
    let r = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            opt,
            (&v as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The fallback parent backend: AF_PACKET RX/TX plus a tcx-ingress program that drops frames
/// keyed to endpoints from the host path.
#[derive(Debug)]
pub struct AfPacketParent {
    // Field order is drop order: detach the tc program before closing the socket, so the
    // host never drops endpoint frames that nobody receives.
    link: Link,
    filter: Filter,
    sock: AfPacketSocket,
}

impl AfPacketParent {
    /// Open the socket on `ifname`, then load and attach the tcx-ingress filter (with
    /// `opts.wire_cache`, after giving the socket the fast path's filter).
    pub fn open(ifname: &str, opts: &AfPacketOptions) -> Result<AfPacketParent, AfPacketError> {
        let sock = AfPacketSocket::open(ifname, opts)?;
        let filter = Filter::load_tc(FilterMaps::create(opts.map_capacity)?, opts.wire_cache)?;
        if let Some(cache) = filter.wire_cache() {
            let insns =
                fast_path::assemble_wire_socket(cache, INJECT_MARK).map_err(FilterError::from)?;
            let prog = Prog::load(ProgType::SocketFilter, &insns, "uvlan_fp_sock", None)
                .map_err(FilterError::from)?;
            sock.attach_program(&prog)
                .map_err(|source| AfPacketError::Socket {
                    ifname: ifname.to_string(),
                    step: "SO_ATTACH_BPF",
                    source,
                })?;
        }
        let link = Link::tcx_ingress(filter.prog(), sock.ifindex()).map_err(|source| {
            AfPacketError::Attach {
                ifname: ifname.to_string(),
                source,
            }
        })?;
        Ok(AfPacketParent { link, filter, sock })
    }

    /// The steering maps.
    pub fn filter_maps(&self) -> &FilterMaps {
        self.filter.maps()
    }

    /// The tc program's counters (`redirected` = frames dropped from the host path).
    pub fn filter_stats(&self) -> Result<FilterStats, FilterError> {
        self.filter.maps().stats()
    }

    /// The underlying socket (memberships, statistics).
    pub fn socket(&mut self) -> &mut AfPacketSocket {
        &mut self.sock
    }

    /// The underlying socket, read-only.
    pub fn socket_ref(&self) -> &AfPacketSocket {
        &self.sock
    }

    /// The fast path's wire → endpoint cache (with [`AfPacketOptions::wire_cache`]): an
    /// entry's frames are kept from the socket and redirected by the tc filter.
    pub fn wire_cache(&self) -> Option<&super::bpf::Map> {
        self.filter.wire_cache()
    }

    /// The tcx link.
    pub fn link(&self) -> &Link {
        &self.link
    }
}

impl WireIo for AfPacketParent {
    fn recv_batch(&mut self, max: usize, f: &mut dyn FnMut(RxFrame<'_>)) -> io::Result<usize> {
        self.sock.recv_batch(max, f)
    }
    fn send(&mut self, frame: &[u8]) -> io::Result<bool> {
        self.sock.send(frame)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.sock.flush()
    }
    fn poll_fds(&self) -> Vec<BorrowedFd<'_>> {
        vec![self.sock.as_fd()]
    }
    fn mode(&self) -> WireMode {
        WireMode::AfPacket {
            steering: Steering::TcxIngress,
        }
    }
    fn filter_maps(&self) -> Option<&FilterMaps> {
        Some(self.filter.maps())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::port::PacketType;

    #[test]
    fn packet_types_map_from_raw() {
        assert_eq!(PacketType::from_raw(0), PacketType::Host);
        assert_eq!(PacketType::from_raw(1), PacketType::Broadcast);
        assert_eq!(PacketType::from_raw(4), PacketType::Outgoing);
        assert_eq!(PacketType::from_raw(5), PacketType::Loopback);
        assert_eq!(PacketType::from_raw(9), PacketType::Other(9));
    }

    #[test]
    fn options_are_checked() {
        let o = AfPacketOptions {
            batch: 0,
            ..Default::default()
        };
        assert!(matches!(
            AfPacketSocket::open("lo", &o),
            Err(AfPacketError::Options(_))
        ));
        let e = AfPacketSocket::open("uvt-nonexist", &AfPacketOptions::default()).unwrap_err();
        assert!(matches!(e, AfPacketError::Interface { .. }));
    }
}
