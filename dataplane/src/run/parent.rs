//! A parent's wire: opening the backend, keeping its filter keys and memberships in step
//! with the engine, and restoring what uvlan changed on the interface when it closes.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use crate::fwd::WireKey;
use crate::port::afpacket::{
    AfPacketOptions, AfPacketParent, AfPacketSocket, GsoTxSocket, Membership,
};
use crate::port::ethtool;
use crate::port::fast_path::WireHook;
use crate::port::inject::HostInjector;
use crate::port::xdp_filter::{FilterError, FilterMaps, FilterStats};
use crate::port::xsk::{XdpMode, XdpOptions, XdpParent};
use crate::port::{RxFrame, WireIo};
use crate::wire::MacAddr;

use super::{ParentCounters, WireBackend};

/// The backend of an attached parent.
pub(crate) enum Backend {
    /// AF_XDP sockets behind the XDP filter, plus the group-only copy socket.
    Xdp {
        /// The sockets and program.
        xdp: XdpParent,
        /// Broadcast/multicast passed to the host, copied to the dataplane.
        copy: AfPacketSocket,
    },
    /// The AF_PACKET fallback with the tcx-ingress filter.
    Packet(AfPacketParent),
}

/// Where a received wire frame came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RxSource {
    /// Steered away from the host (XSK): the host never saw it.
    Steered,
    /// The host received it too (copy socket, or the fallback socket).
    HostHadIt,
}

impl Backend {
    /// True when a frame injected into the parent's receive path meets the wire filter again
    /// (a generic XDP program runs on every skb the parent receives; native XDP runs in the
    /// driver only, and the fallback socket drops injected frames by their mark).
    pub(crate) fn filter_sees_injected(&self) -> bool {
        matches!(self, Backend::Xdp { xdp, .. } if xdp.xdp_mode() == XdpMode::Generic)
    }

    /// The fast path's wire → endpoint cache of the wire's filter, and how its hits are
    /// handed over (`None`: opened without the cache).
    pub(crate) fn wire_cache(&self) -> Option<(&crate::port::bpf::Map, WireHook)> {
        match self {
            Backend::Xdp { xdp, .. } => xdp.wire_cache().map(|m| (m, WireHook::XdpMetadata)),
            Backend::Packet(p) => p.wire_cache().map(|m| (m, WireHook::SocketMark)),
        }
    }

    fn maps(&self) -> &FilterMaps {
        match self {
            Backend::Xdp { xdp, .. } => xdp.filter_maps(),
            Backend::Packet(p) => p.filter_maps(),
        }
    }

    /// The AF_PACKET socket that holds memberships (unicast filter, allmulti, promisc).
    fn member_socket(&mut self) -> &mut AfPacketSocket {
        match self {
            Backend::Xdp { copy, .. } => copy,
            Backend::Packet(p) => p.socket(),
        }
    }

    /// Every fd to poll for POLLIN.
    pub(crate) fn poll_fds(&self) -> Vec<BorrowedFd<'_>> {
        match self {
            Backend::Xdp { xdp, copy } => {
                let mut v = xdp.poll_fds();
                v.extend(WireIo::poll_fds(copy));
                v
            }
            Backend::Packet(p) => WireIo::poll_fds(p),
        }
    }

    /// System calls the sockets made so far (receive, transmit, wake-ups).
    pub(crate) fn syscalls(&self) -> u64 {
        match self {
            Backend::Xdp { xdp, copy } => xdp.syscalls() + copy.syscalls(),
            Backend::Packet(p) => p.socket_ref().syscalls(),
        }
    }

    /// Reads and clears the pending error of every socket (`SO_ERROR`), as a `recv` would:
    /// a packet socket reports `ENETDOWN` once when its interface goes down, and polls with
    /// `POLLERR` until then. Returns the errors found.
    pub(crate) fn take_errors(&self) -> Vec<io::Error> {
        let mut found = Vec::new();
        for fd in self.poll_fds() {
            let mut v: libc::c_int = 0;
            let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
            // SAFETY: `v` and `len` are live, writable and sized for SO_ERROR's int.
            let r = unsafe {
                libc::getsockopt(
                    fd.as_raw_fd(),
                    libc::SOL_SOCKET,
                    libc::SO_ERROR,
                    (&mut v as *mut libc::c_int).cast(),
                    &mut len,
                )
            };
            if r == 0 && v != 0 {
                found.push(io::Error::from_raw_os_error(v));
            }
        }
        found
    }

    /// Receives up to `max` frames from each source.
    pub(crate) fn recv(
        &mut self,
        max: usize,
        f: &mut dyn FnMut(RxSource, RxFrame<'_>),
    ) -> io::Result<usize> {
        match self {
            Backend::Xdp { xdp, copy } => {
                let a = xdp.recv_batch(max, &mut |fr| f(RxSource::Steered, fr));
                let b = copy.recv_batch(max, &mut |fr| f(RxSource::HostHadIt, fr))?;
                Ok(a + b)
            }
            Backend::Packet(p) => p.recv_batch(max, &mut |fr| f(RxSource::HostHadIt, fr)),
        }
    }

    /// Queues one complete frame.
    pub(crate) fn send(&mut self, frame: &[u8]) -> io::Result<bool> {
        match self {
            Backend::Xdp { xdp, .. } => xdp.send(frame),
            Backend::Packet(p) => p.send(frame),
        }
    }

    /// Whether partial checksums can be left to the kernel (XSK TX metadata).
    pub(crate) fn tx_csum(&self) -> bool {
        matches!(self, Backend::Xdp { xdp, .. } if xdp.tx_checksum_enabled())
    }

    /// Queues a frame whose checksum the kernel completes (see [`Backend::tx_csum`]).
    pub(crate) fn send_csum(&mut self, frame: &[u8], start: u16, offset: u16) -> io::Result<bool> {
        match self {
            Backend::Xdp { xdp, .. } => xdp.transmit_with_csum(frame, start, offset),
            Backend::Packet(_) => Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "AF_PACKET has no checksum offload",
            )),
        }
    }

    /// Hands queued frames to the kernel.
    pub(crate) fn flush(&mut self) -> io::Result<()> {
        match self {
            Backend::Xdp { xdp, .. } => xdp.flush(),
            Backend::Packet(p) => p.flush(),
        }
    }

    /// Hands every queued frame to the kernel before the caller sends on another socket:
    /// AF_XDP in copy mode kicks until its TX ring is empty; `sendmmsg` is synchronous.
    pub(crate) fn drain(&mut self) -> io::Result<()> {
        match self {
            Backend::Xdp { xdp, .. } => xdp.drain_tx(),
            Backend::Packet(p) => p.flush(),
        }
    }

    fn mode(&self) -> String {
        match self {
            Backend::Xdp { xdp, .. } => WireIo::mode(xdp).to_string(),
            Backend::Packet(p) => WireIo::mode(p).to_string(),
        }
    }

    fn ifindex(&self) -> u32 {
        match self {
            Backend::Xdp { xdp, .. } => xdp.ifindex(),
            Backend::Packet(p) => p.link().ifindex(),
        }
    }
}

/// Opens the backend `want` on `ifname` (in the calling thread's namespace). Returns the
/// backend and, when `Auto` fell back, why AF_XDP was not used.
pub(crate) fn open_backend(
    ifname: &str,
    want: WireBackend,
    xdp_opts: &XdpOptions,
    batch: usize,
) -> Result<(Backend, Option<String>), String> {
    let pk_opts = AfPacketOptions {
        batch: batch.min(1024),
        ..AfPacketOptions::default()
    };
    let open_xdp = || -> Result<Backend, String> {
        let xdp = XdpParent::open(ifname, xdp_opts).map_err(|e| format!("AF_XDP: {e}"))?;
        let copy = AfPacketSocket::open(
            ifname,
            &AfPacketOptions {
                group_only: true,
                with_tagged: true,
                ..pk_opts.clone()
            },
        )
        .map_err(|e| format!("AF_PACKET copy socket: {e}"))?;
        // The NIC must accept the endpoints' groups even if the host joined none of them.
        copy.add_membership(Membership::AllMulti)
            .map_err(|e| format!("AF_PACKET copy socket: PACKET_MR_ALLMULTI: {e}"))?;
        Ok(Backend::Xdp { xdp, copy })
    };
    let open_packet = || -> Result<Backend, String> {
        // The fast path's wire cache, asked for in the XDP options, serves this backend too.
        let opts = AfPacketOptions {
            wire_cache: xdp_opts.wire_cache,
            ..pk_opts.clone()
        };
        let mut p =
            AfPacketParent::open(ifname, &opts).map_err(|e| format!("AF_PACKET + tcx: {e}"))?;
        p.socket()
            .add_membership(Membership::AllMulti)
            .map_err(|e| format!("AF_PACKET: PACKET_MR_ALLMULTI: {e}"))?;
        Ok(Backend::Packet(p))
    };
    match want {
        WireBackend::AfXdp => open_xdp().map(|b| (b, None)),
        WireBackend::AfPacket => open_packet().map(|b| (b, None)),
        WireBackend::Auto => match open_xdp() {
            Ok(b) => Ok((b, None)),
            Err(xdp_err) => match open_packet() {
                Ok(b) => Ok((b, Some(xdp_err))),
                Err(pk_err) => Err(format!("{xdp_err}; fallback {pk_err}")),
            },
        },
    }
}

/// An attached parent.
pub(crate) struct ParentSlot {
    pub(crate) backend: Backend,
    /// The way into the parent's own receive path (`None`: it could not be opened, see
    /// `inject_error`; frames for the host stack are then counted as unreachable).
    pub(crate) inject: Option<HostInjector>,
    /// Why `inject` is `None`.
    pub(crate) inject_error: Option<String>,
    /// Sends GSO super-frames for the kernel to segment (`None`: software segmentation).
    pub(crate) gso: Option<GsoTxSocket>,
    pub(crate) ifname: String,
    /// The parent's name in the engine when it was attached (a different name later means
    /// the id was reused for another parent).
    pub(crate) engine_name: String,
    pub(crate) ifindex: u32,
    pub(crate) refs: u32,
    /// Current MAC and MTU (from the engine, refreshed after every command).
    pub(crate) mac: MacAddr,
    pub(crate) mtu: usize,
    /// Keys installed in the filter maps (sorted).
    keys: Vec<WireKey>,
    /// MACs added to the NIC's unicast filter.
    members: Vec<MacAddr>,
    promisc: bool,
    rxvlan_disabled: bool,
    manage_rxvlan: bool,
    pub(crate) fallback_reason: Option<String>,
    pub(crate) last_error: Option<String>,
    /// Stop polling: the sockets reported an error (interface gone).
    pub(crate) broken: bool,
    /// `broken`, for the other workers' views of this parent.
    pub(crate) broken_flag: Arc<AtomicBool>,
    pub(crate) c: ParentCounters,
}

impl ParentSlot {
    pub(crate) fn new(
        backend: Backend,
        ifname: &str,
        engine_name: String,
        fallback_reason: Option<String>,
        manage_rxvlan: bool,
        gso: Option<GsoTxSocket>,
    ) -> ParentSlot {
        let mut mode = backend.mode();
        if gso.is_some() {
            mode.push_str(" + AF_PACKET GSO TX");
        }
        ParentSlot {
            ifindex: backend.ifindex(),
            backend,
            inject: None,
            inject_error: None,
            gso,
            ifname: ifname.to_string(),
            engine_name,
            refs: 1,
            mac: MacAddr::ZERO,
            mtu: 1500,
            keys: Vec::new(),
            members: Vec::new(),
            promisc: false,
            rxvlan_disabled: false,
            manage_rxvlan,
            fallback_reason,
            last_error: None,
            broken: false,
            broken_flag: Arc::new(AtomicBool::new(false)),
            c: ParentCounters {
                ifname: ifname.to_string(),
                mode,
                ..ParentCounters::default()
            },
        }
    }

    /// The sockets' descriptors, to watch for readability.
    pub(crate) fn raw_fds(&self) -> Vec<RawFd> {
        self.backend
            .poll_fds()
            .iter()
            .map(AsRawFd::as_raw_fd)
            .collect()
    }

    /// The status the handle reports.
    pub(crate) fn status(&self) -> super::WireStatus {
        super::WireStatus {
            mode: self.c.mode.clone(),
            ifname: self.ifname.clone(),
            ifindex: self.ifindex,
            refs: self.refs,
            copy_socket: matches!(self.backend, Backend::Xdp { .. }),
            fallback_reason: self.fallback_reason.clone(),
            rx_vlan_offload_disabled: self.rxvlan_disabled,
            keys: self.keys.len(),
            last_error: self.last_error.clone(),
            host_injector: self
                .inject
                .as_ref()
                .map(|i| (i.ifname().to_string(), i.ifindex())),
            host_inject_error: self.inject_error.clone(),
        }
    }

    /// Brings the filter maps, memberships and RX VLAN offload in line with `want` (the
    /// engine's `wire_keys`, sorted and deduplicated). Failed updates are left for the next
    /// call, counted, and the last error is kept.
    pub(crate) fn sync_keys(&mut self, want: &[WireKey]) {
        let mut errors: Vec<String> = Vec::new();
        // Removals first, so a full map makes room.
        let stale: Vec<WireKey> = self
            .keys
            .iter()
            .filter(|k| want.binary_search(k).is_err())
            .copied()
            .collect();
        for k in stale {
            match apply_key(self.backend.maps(), &k, false) {
                Ok(()) => {
                    if let Ok(i) = self.keys.binary_search(&k) {
                        self.keys.remove(i);
                    }
                }
                Err(e) => errors.push(format!("removing {k:?}: {e}")),
            }
        }
        for k in want {
            if let Err(i) = self.keys.binary_search(k) {
                match apply_key(self.backend.maps(), k, true) {
                    Ok(()) => self.keys.insert(i, *k),
                    Err(e) => errors.push(format!("adding {k:?}: {e}")),
                }
            }
        }
        // The NIC's unicast filter: every macvlan port MAC (any VLAN).
        let mut macs: Vec<MacAddr> = want
            .iter()
            .filter_map(|k| match k {
                WireKey::DstMac { mac, .. } => Some(*mac),
                _ => None,
            })
            .collect();
        macs.sort();
        macs.dedup();
        let sock = self.backend.member_socket();
        let mut members = std::mem::take(&mut self.members);
        members.retain(|m| {
            if macs.binary_search(m).is_ok() {
                return true;
            }
            match sock.drop_membership(Membership::Unicast(m.0)) {
                Ok(()) => false,
                Err(e) => {
                    errors.push(format!("dropping unicast filter entry {m}: {e}"));
                    true
                }
            }
        });
        for m in &macs {
            if let Err(i) = members.binary_search(m) {
                match sock.add_membership(Membership::Unicast(m.0)) {
                    Ok(()) => members.insert(i, *m),
                    Err(e) => errors.push(format!("adding unicast filter entry {m}: {e}")),
                }
            }
        }
        self.members = members;
        // Passthru takes every unicast frame: the NIC must not filter by MAC.
        let promisc = want.iter().any(|k| matches!(k, WireKey::AllUnicast { .. }));
        if promisc != self.promisc {
            let sock = self.backend.member_socket();
            let r = if promisc {
                sock.add_membership(Membership::Promisc)
            } else {
                sock.drop_membership(Membership::Promisc)
            };
            match r {
                Ok(()) => self.promisc = promisc,
                Err(e) => errors.push(format!("promiscuous mode {promisc}: {e}")),
            }
        }
        // Native XDP cannot see tags a NIC strips into metadata.
        let tagged = want.iter().any(|k| key_vid(k) != 0);
        if tagged
            && self.manage_rxvlan
            && !self.rxvlan_disabled
            && matches!(self.backend, Backend::Xdp { .. })
        {
            match ethtool::rx_vlan_offload(&self.ifname) {
                Ok(true) => match ethtool::set_rx_vlan_offload(&self.ifname, false) {
                    Ok(()) => self.rxvlan_disabled = true,
                    Err(e) => errors.push(format!(
                        "turning RX VLAN offload off (tagged frames may be missed): {e}"
                    )),
                },
                Ok(false) => {}
                // Drivers that do not report the flag do not strip tags either.
                Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => {}
                Err(e) => errors.push(format!("reading RX VLAN offload: {e}")),
            }
        }
        if !errors.is_empty() {
            self.c.key_errors += errors.len() as u64;
            self.last_error = errors.pop();
        }
    }

    /// Counters with the backend's own statistics folded in.
    pub(crate) fn counters(&mut self) -> ParentCounters {
        let mut c = self.c.clone();
        // Frames `sendmmsg` could not hand over at flush time (queue full, device down)
        // were counted as sent when staged.
        c.tx_dropped += match &mut self.backend {
            Backend::Xdp { .. } => 0,
            Backend::Packet(p) => p.socket().stats().map_or(0, |s| s.tx_lost_at_flush),
        };
        let (drops, filter): (u64, Option<FilterStats>) = match &mut self.backend {
            Backend::Xdp { xdp, copy } => {
                let mut d = copy.stats().map_or(0, |s| s.kernel_drops);
                let mut f = None;
                if let Ok(s) = xdp.stats() {
                    d += s
                        .queues
                        .iter()
                        .map(|q| {
                            q.kernel.rx_dropped
                                + q.kernel.rx_ring_full
                                + q.kernel.rx_fill_ring_empty_descs
                        })
                        .sum::<u64>();
                    f = Some(s.filter);
                }
                (d, f)
            }
            Backend::Packet(p) => (
                p.socket().stats().map_or(0, |s| s.kernel_drops),
                p.filter_stats().ok(),
            ),
        };
        c.backend_rx_drops = drops;
        if let Some(g) = &self.gso {
            let g = g.stats();
            c.tx_gso_full = g.full;
            c.tx_gso_refused = g.refused;
        }
        c.filter = filter;
        c
    }
}

impl Drop for ParentSlot {
    fn drop(&mut self) {
        if self.rxvlan_disabled {
            // Best effort: the interface may be gone already.
            let _ = ethtool::set_rx_vlan_offload(&self.ifname, true);
        }
    }
}

fn key_vid(k: &WireKey) -> u16 {
    match *k {
        WireKey::DstMac { vid, .. }
        | WireKey::Ip { vid, .. }
        | WireKey::SrcMac { vid, .. }
        | WireKey::AllUnicast { vid } => vid,
    }
}

fn apply_key(maps: &FilterMaps, k: &WireKey, add: bool) -> Result<(), FilterError> {
    use std::net::IpAddr;
    match *k {
        WireKey::DstMac { vid, mac } => {
            if add {
                maps.add_mac(vid, mac.0)
            } else {
                maps.remove_mac(vid, mac.0).map(drop)
            }
        }
        WireKey::Ip {
            vid,
            addr: IpAddr::V4(a),
        } => {
            if add {
                maps.add_ipv4(vid, a)
            } else {
                maps.remove_ipv4(vid, a).map(drop)
            }
        }
        WireKey::Ip {
            vid,
            addr: IpAddr::V6(a),
        } => {
            if add {
                maps.add_ipv6(vid, a)
            } else {
                maps.remove_ipv6(vid, a).map(drop)
            }
        }
        WireKey::SrcMac { vid, mac } => {
            if add {
                maps.add_src_mac(vid, mac.0)
            } else {
                maps.remove_src_mac(vid, mac.0).map(drop)
            }
        }
        WireKey::AllUnicast { vid } => maps.set_all_unicast(vid, add).map(drop),
    }
}
