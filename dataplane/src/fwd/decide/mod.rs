//! The decision function: one frame and where it came from in, a `Verdict` out.
//!
//! Every branch names the kernel function whose rule it reproduces; the comments state the
//! rule (the numbered statements and their kernel sources are in `docs/conformance.md`). No I/O, no clock, no allocation: outputs
//! go into a caller-owned [`Outputs`] list that is cleared first.

use super::config::{Engine, Master, Network, Owner, Port};
use super::observe::{step, Detail, L3Kind, NoTrace, Tracer};
use super::route::{self, NextHop, Routes};
use super::types::{Driver, IpvlanFlag, IpvlanMode, MacvlanMode, MACVLAN_FLAG_NODST};
use super::verdict::{DropReason, Output, Outputs, PacketType, Target, Verdict, VlanOp};
use super::{ParentId, PortId};
use crate::wire::{ethertype, ipproto, ArpView, EthView, Icmpv6View, Ipv4View, Ipv6View, MacAddr};
use std::net::{IpAddr, Ipv4Addr};

mod ipvlan;
mod macvlan;

/// Where a frame entered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Ingress {
    /// Sent by a port (read from its TAP): the slave's transmit path.
    Port(PortId),
    /// Received on a parent NIC: the master's receive path (`rx_handler`).
    Wire(ParentId),
    /// The parent's own looped-back broadcast/multicast (`PACKET_LOOPBACK`): the drivers pass
    /// it to the parent's stack only (C26).
    WireLoopback(ParentId),
}

/// What `ipvlan_get_L3_hdr` + `ipvlan_addr_lookup` extract from a frame.
#[derive(Debug, Clone, Copy)]
struct L3Hdr {
    kind: L3Kind,
    /// Key for `use_dest = true`.
    dst: Option<IpAddr>,
    /// Key for `use_dest = false`.
    src: Option<IpAddr>,
}

const NO_L3: L3Hdr = L3Hdr {
    kind: L3Kind::None,
    dst: None,
    src: None,
};

/// `ipvlan_get_L3_hdr` followed by the key choice of `ipvlan_addr_lookup`.
#[inline(always)]
fn get_l3_hdr(proto: u16, payload: &[u8]) -> L3Hdr {
    match proto {
        ethertype::ARP => match (ArpView::target_ip(payload), ArpView::sender_ip(payload)) {
            (Ok(t), Ok(s)) => L3Hdr {
                kind: L3Kind::Arp,
                dst: Some(IpAddr::V4(t)),
                src: Some(IpAddr::V4(s)),
            },
            _ => NO_L3,
        },
        ethertype::IPV4 => match Ipv4View::parse(payload) {
            Ok(h) => L3Hdr {
                kind: L3Kind::Ipv4,
                dst: Some(IpAddr::V4(h.dst)),
                src: Some(IpAddr::V4(h.src)),
            },
            Err(_) => NO_L3,
        },
        ethertype::IPV6 => match Ipv6View::parse(payload) {
            Ok(h) if h.src.is_unspecified() && h.next_header == ipproto::ICMPV6 => {
                // Any ICMPv6 from `::` is IPVL_ICMPV6; only an NS is then looked up, by its
                // target (DAD). It needs the 8-byte ICMPv6 header, and an NS its target too.
                match Icmpv6View::parse(h.payload) {
                    Ok(icmp) if icmp.icmp_type == Icmpv6View::NS => match icmp.ns_target() {
                        Some(t) => L3Hdr {
                            kind: L3Kind::Icmpv6Unspec,
                            dst: Some(IpAddr::V6(t)),
                            src: Some(IpAddr::V6(t)),
                        },
                        None => NO_L3,
                    },
                    Ok(_) => L3Hdr {
                        kind: L3Kind::Icmpv6Unspec,
                        dst: None,
                        src: None,
                    },
                    Err(_) => NO_L3,
                }
            }
            Ok(h) => L3Hdr {
                kind: L3Kind::Ipv6,
                dst: Some(IpAddr::V6(h.dst)),
                src: Some(IpAddr::V6(h.src)),
            },
            Err(_) => NO_L3,
        },
        _ => NO_L3,
    }
}

/// `eth_type_trans` on a receiver whose MAC is `me`.
#[inline]
fn pkt_type(dst: MacAddr, me: MacAddr) -> PacketType {
    if dst.is_multicast() {
        if dst.is_broadcast() {
            PacketType::Broadcast
        } else {
            PacketType::Multicast
        }
    } else if dst == me {
        PacketType::Host
    } else {
        PacketType::OtherHost
    }
}

#[inline]
fn group_type(dst: MacAddr) -> PacketType {
    if dst.is_broadcast() {
        PacketType::Broadcast
    } else {
        PacketType::Multicast
    }
}

/// The context of one decision inside one network.
struct Cx<'a, T: Tracer, R: Routes + ?Sized> {
    e: &'a Engine,
    net: &'a Network,
    /// The parent the network sits on, if it may use the wire (and the host stack).
    wire: Option<ParentId>,
    vid: Option<u16>,
    /// The frame came tagged from the wire: ports get it untagged.
    pop: bool,
    sender: Option<PortId>,
    /// The master's MAC (M).
    m: MacAddr,
    out: &'a mut Outputs,
    pending: Option<DropReason>,
    t: &'a mut T,
    /// The host's routing and neighbour tables (the route stage).
    routes: &'a mut R,
    /// The frame's length (Ethernet header included), for the MTU rule.
    len: usize,
    /// The frame is a GSO super-frame (`skb_is_gso`): no MTU rule applies to it.
    gso: bool,
}

/// `ETH_HLEN + VLAN_HLEN`: what `is_skb_forwardable` allows above the MTU (a TAP's
/// `hard_header_len` is the Ethernet header's 14 bytes, plus one 802.1Q tag).
const MTU_SLACK: usize = 14 + 4;

impl<T: Tracer, R: Routes + ?Sized> Cx<'_, T, R> {
    #[inline]
    fn port(&self, p: PortId) -> Option<&Port> {
        self.e.port(p)
    }

    #[inline]
    fn suppress(&mut self, reason: DropReason) {
        step!(
            self.t,
            Output,
            reason.kernel_rule(),
            Detail::Suppressed(reason)
        );
        if self.pending.is_none() {
            self.pending = Some(reason);
        }
    }

    #[inline]
    fn push(&mut self, o: Output, kernel: &'static str) {
        step!(self.t, Output, kernel, Detail::Out(o));
        self.out.push(o);
    }

    /// `is_skb_forwardable`: a frame longer than `mtu` + its Ethernet header + one VLAN
    /// tag does not fit, unless it is a GSO super-frame (`skb_is_gso`: it may be forwarded
    /// without being segmented first).
    #[inline]
    fn too_long(&self, mtu: u32) -> bool {
        !self.gso && self.len > mtu as usize + MTU_SLACK
    }

    #[inline]
    fn emit_port(&mut self, p: PortId, pkt_type: PacketType, kernel: &'static str) {
        if Some(p) == self.sender {
            self.suppress(DropReason::LoopToSender);
            return;
        }
        // Port to port is dev_forward_skb (macvlan_queue_xmit, macvlan_broadcast_one with
        // local, ipvlan_rcv_frame with local, ipvlan_process_multicast for tx_pkt), which
        // judges the receiver's MTU (C66). From the wire the drivers hand the frame on with
        // RX_HANDLER_ANOTHER or netif_rx: no MTU rule.
        if self.sender.is_some() {
            let mtu = self.port(p).map(|q| q.mtu).unwrap_or(0);
            if self.too_long(mtu) {
                self.suppress(DropReason::MtuExceeded);
                return;
            }
        }
        let vlan = if self.pop { VlanOp::Pop } else { VlanOp::Keep };
        self.push(
            Output {
                target: Target::Port(p),
                vlan,
                pkt_type,
            },
            kernel,
        );
    }

    #[inline]
    fn emit_wire(&mut self, kernel: &'static str) {
        match self.wire {
            Some(_) if self.sender.is_some() && self.too_long(self.e.master_mtu(self.net)) => {
                // dev_queue_xmit on the lower device: a frame longer than the parent's MTU
                // cannot leave (C67).
                self.suppress(DropReason::WireMtuExceeded)
            }
            Some(parent) => {
                let vlan = match self.vid {
                    Some(v) => VlanOp::Push(v),
                    None => VlanOp::Keep,
                };
                self.push(
                    Output {
                        target: Target::Wire(parent),
                        vlan,
                        pkt_type: PacketType::Outgoing,
                    },
                    kernel,
                );
            }
            None => self.suppress(DropReason::NoWire),
        }
    }

    /// The parent's own stack through its receive path (`dev_forward_skb(phy_dev)`,
    /// `RX_HANDLER_PASS`). A port's frame reaches the stack of its master: on a network on
    /// `IF.VID` that is the VLAN device's, which `vlan_do_receive` finds from the tag.
    #[inline]
    fn emit_host(&mut self, dst: MacAddr, kernel: &'static str) {
        let vlan = match (self.sender, self.vid) {
            (Some(_), Some(v)) => VlanOp::Push(v),
            _ => VlanOp::Keep,
        };
        self.emit_host_as(dst, vlan, kernel);
    }

    /// The parent's own stack for an `RTN_LOCAL` route: `ip_local_out` delivers through the
    /// loopback, whatever device the route lookup started from, so no tag.
    #[inline]
    fn emit_host_local(&mut self, dst: MacAddr, kernel: &'static str) {
        self.emit_host_as(dst, VlanOp::Keep, kernel);
    }

    #[inline]
    fn emit_host_as(&mut self, dst: MacAddr, vlan: VlanOp, kernel: &'static str) {
        match self.wire {
            Some(parent) => {
                let pt = pkt_type(dst, self.m);
                self.push(
                    Output {
                        target: Target::HostStack(parent),
                        vlan,
                        pkt_type: pt,
                    },
                    kernel,
                );
            }
            None => self.suppress(DropReason::NoWire),
        }
    }

    /// The route stage (`route.rs`): the host's tables turn "route `dst` out of the parent"
    /// into an output to the next hop, the parent's own stack (`RTN_LOCAL`), or a drop.
    /// `dst_mac` is the frame's destination MAC (for the host stack's `pkt_type`).
    #[inline]
    fn emit_routed(
        &mut self,
        dst: IpAddr,
        dst_mac: MacAddr,
        kernel: &'static str,
    ) -> Result<(), DropReason> {
        let Some(parent) = self.wire else {
            self.suppress(DropReason::NoWire);
            return Ok(());
        };
        match route::resolve(self.routes, self.t, parent, dst) {
            NextHop::Mac(next_hop) => {
                let vlan = match self.vid {
                    Some(v) => VlanOp::Push(v),
                    None => VlanOp::Keep,
                };
                self.push(
                    Output {
                        target: Target::Routed {
                            parent,
                            dst,
                            next_hop,
                        },
                        vlan,
                        pkt_type: PacketType::Outgoing,
                    },
                    kernel,
                );
                Ok(())
            }
            NextHop::Local => {
                // ip_local_out on an RTN_LOCAL route loops the packet back into the host's
                // own stack (C37), as for the parent's own addresses.
                self.emit_host_local(dst_mac, "ip_local_out → RTN_LOCAL (host's route table)");
                Ok(())
            }
            NextHop::BadRouteType => Err(DropReason::L3RouteType),
            NextHop::Pending => Err(DropReason::NeighbourPending),
            NextHop::Unreachable => Err(DropReason::RouteUnreachable),
        }
    }

    /// `ipvlan_addr_lookup`: exact match in the master's table; a port's entries count only
    /// while it is up (`ipvlan_open`/`ipvlan_stop` add and remove them).
    #[inline(always)]
    fn lookup(&mut self, key: Option<IpAddr>, use_dest: bool) -> Option<Owner> {
        let key = key?;
        let owner = self.net.addrs.get(key);
        let owner = match owner {
            Some(Owner::Port(p)) if !self.port(p).is_some_and(|p| p.up) => None,
            o => o,
        };
        step!(
            self.t,
            Lookup,
            "ipvlan_addr_lookup",
            Detail::Addr {
                key,
                use_dest,
                owner
            }
        );
        owner
    }

    #[inline(always)]
    fn l3_hdr(&mut self, proto: u16, payload: &[u8]) -> L3Hdr {
        let h = get_l3_hdr(proto, payload);
        step!(
            self.t,
            Parse,
            "ipvlan_get_L3_hdr",
            Detail::L3 {
                kind: h.kind,
                dst: h.dst,
                src: h.src
            }
        );
        h
    }

    #[inline]
    fn check(&mut self, kernel: &'static str, what: &'static str, holds: bool) -> bool {
        step!(self.t, FlagCheck, kernel, Detail::Check { what, holds });
        holds
    }

    /// Whether port `p`'s multicast filter holds `group` (`joined`); the trace names a port
    /// the group skips.
    #[inline]
    fn joined(&mut self, kernel: &'static str, p: PortId, group: MacAddr, joined: bool) -> bool {
        if !joined {
            step!(
                self.t,
                FlagCheck,
                kernel,
                Detail::NotJoined { port: p, group }
            );
        }
        joined
    }
}

impl Engine {
    /// Decides one frame: fills `out` (cleared first) and returns `Ok(())`, or returns the drop
    /// reason with `out` empty. `routes` answers the route stage (ipvlan L3/L3S egress asks the
    /// host's routing and neighbour tables through it; no other frame calls it). The
    /// datapath's entry point: no allocation once `out` has grown.
    #[inline]
    pub fn decide<R: Routes + ?Sized>(
        &self,
        frame: &[u8],
        ingress: Ingress,
        routes: &mut R,
        out: &mut Outputs,
    ) -> Result<(), DropReason> {
        self.decide_frame(frame, false, ingress, routes, out, &mut NoTrace)
    }

    /// [`decide`](Engine::decide) for a frame that may be a GSO super-frame (`gso`: its
    /// virtio-net header asks for segmentation, the kernel's `skb_is_gso`): such a frame is
    /// exempt from the MTU rule, as in `is_skb_forwardable`. The datapath's entry point.
    #[inline]
    pub fn decide_gso<R: Routes + ?Sized>(
        &self,
        frame: &[u8],
        gso: bool,
        ingress: Ingress,
        routes: &mut R,
        out: &mut Outputs,
    ) -> Result<(), DropReason> {
        self.decide_frame(frame, gso, ingress, routes, out, &mut NoTrace)
    }

    /// The same decision, returning an owned [`Verdict`] (allocates; for tests and tools).
    pub fn verdict<R: Routes + ?Sized>(
        &self,
        frame: &[u8],
        ingress: Ingress,
        routes: &mut R,
    ) -> Verdict {
        let mut out = Outputs::default();
        match self.decide(frame, ingress, routes, &mut out) {
            Ok(()) => Verdict::Forward(out.as_slice().to_vec()),
            Err(r) => Verdict::Drop(r),
        }
    }

    /// The decision with a tracer watching every step ([`NoTrace`] for the datapath).
    pub fn decide_traced<R: Routes + ?Sized, T: Tracer>(
        &self,
        frame: &[u8],
        ingress: Ingress,
        routes: &mut R,
        out: &mut Outputs,
        t: &mut T,
    ) -> Result<(), DropReason> {
        self.decide_frame(frame, false, ingress, routes, out, t)
    }

    /// The decision of a frame that may be a GSO super-frame, with a tracer.
    pub fn decide_frame<R: Routes + ?Sized, T: Tracer>(
        &self,
        frame: &[u8],
        gso: bool,
        ingress: Ingress,
        routes: &mut R,
        out: &mut Outputs,
        t: &mut T,
    ) -> Result<(), DropReason> {
        out.clear();
        step!(
            t,
            Parse,
            "netif_receive_skb / ndo_start_xmit",
            Detail::Ingress(ingress)
        );
        let r = match ingress {
            Ingress::Port(p) => self.port_ingress(frame, gso, p, out, t, routes),
            Ingress::Wire(parent) => self.wire_ingress(frame, parent, false, out, t, routes),
            Ingress::WireLoopback(parent) => self.wire_ingress(frame, parent, true, out, t, routes),
        };
        let r = match r {
            Ok(_) if !out.is_empty() => Ok(()),
            Ok(pending) => Err(pending.unwrap_or(DropReason::NoReceiver)),
            Err(e) => {
                out.clear();
                Err(e)
            }
        };
        if let Err(reason) = r {
            step!(t, Drop, reason.kernel_rule(), Detail::Dropped(reason));
        }
        r
    }

    #[allow(clippy::too_many_arguments)]
    fn cx<'a, T: Tracer, R: Routes + ?Sized>(
        &'a self,
        net: &'a Network,
        sender: Option<PortId>,
        pop: bool,
        out: &'a mut Outputs,
        t: &'a mut T,
        routes: &'a mut R,
        (len, gso): (usize, bool),
    ) -> Cx<'a, T, R> {
        let (wire, vid) = match net.master {
            Master::Parent { parent, vid, wire } => (wire.then_some(parent), vid),
            Master::Isolated { .. } => (None, None),
        };
        Cx {
            e: self,
            net,
            wire,
            vid,
            pop,
            sender,
            m: self.master_mac(net),
            out,
            pending: None,
            t,
            routes,
            len,
            gso,
        }
    }

    /// The transmit path of a port.
    fn port_ingress<T: Tracer, R: Routes + ?Sized>(
        &self,
        frame: &[u8],
        gso: bool,
        pid: PortId,
        out: &mut Outputs,
        t: &mut T,
        routes: &mut R,
    ) -> Result<Option<DropReason>, DropReason> {
        let Some(port) = self.port(pid) else {
            return Err(DropReason::UnknownIngress);
        };
        if !port.up {
            return Err(DropReason::PortDown);
        }
        let nid = port.network;
        let Some(net) = self.network(nid) else {
            return Err(DropReason::UnknownIngress);
        };
        if !self.master_up(net) {
            return Err(DropReason::ParentDown);
        }
        let Ok(eth) = EthView::parse(frame) else {
            return Err(DropReason::TooShort);
        };
        step!(
            t,
            Parse,
            "eth_hdr",
            Detail::Frame {
                dst: eth.dst,
                src: eth.src,
                ethertype: eth.ethertype,
                len: frame.len()
            }
        );
        let xmit = match net.driver {
            Driver::Ipvlan => "ipvlan_start_xmit",
            Driver::Macvlan => "macvlan_start_xmit",
        };
        step!(t, VlanDemux, xmit, Detail::Network(nid));
        let mode = port.macvlan_mode;
        let mut cx = self.cx(net, Some(pid), false, out, t, routes, (frame.len(), gso));
        match net.driver {
            Driver::Ipvlan => match net.ipvlan_mode {
                IpvlanMode::L2 => cx.ipvlan_xmit_l2(&eth)?,
                IpvlanMode::L3 | IpvlanMode::L3s => cx.ipvlan_xmit_l3(&eth)?,
            },
            Driver::Macvlan => cx.macvlan_xmit(&eth, mode)?,
        }
        Ok(cx.pending)
    }

    /// The receive path of a parent.
    fn wire_ingress<T: Tracer, R: Routes + ?Sized>(
        &self,
        frame: &[u8],
        pid: ParentId,
        loopback: bool,
        out: &mut Outputs,
        t: &mut T,
        routes: &mut R,
    ) -> Result<Option<DropReason>, DropReason> {
        let Some(parent) = self.parent(pid) else {
            return Err(DropReason::UnknownIngress);
        };
        if !parent.up {
            return Err(DropReason::ParentDown);
        }
        let Ok(outer) = EthView::parse(frame) else {
            return Err(DropReason::TooShort);
        };
        // vlan_do_receive: one outer 802.1Q tag selects the VLAN device (the network on
        // parent.VID); untagged and priority-tagged frames go to the parent itself.
        let Ok(untagged) = outer.untag() else {
            return Err(DropReason::TooShort);
        };
        let (tag, eth) = match untagged {
            Some((tag, inner)) if tag.vid != 0 => (Some(tag), inner),
            Some((_, inner)) => (None, inner),
            None => (None, outer),
        };
        let nid = match tag {
            Some(tag) => parent.tagged.get(&tag.vid).copied(),
            None => parent.untagged,
        };
        step!(
            t,
            Parse,
            "eth_type_trans",
            Detail::Frame {
                dst: eth.dst,
                src: eth.src,
                ethertype: eth.ethertype,
                len: frame.len()
            }
        );
        step!(
            t,
            VlanDemux,
            "vlan_do_receive",
            Detail::Tag { tag, network: nid }
        );
        let net = nid.and_then(|n| self.network(n).map(|net| (n, net)));
        let (nid, net) = match net {
            Some((n, net)) if matches!(net.master, Master::Parent { wire: true, .. }) => (n, net),
            _ => {
                // Not ours (no network on this VID, or an internal network): the host's.
                step!(
                    t,
                    Lookup,
                    "__netif_receive_skb_core",
                    Detail::Note("no uvlan network takes this frame: it stays with the host")
                );
                let o = Output {
                    target: Target::HostStack(pid),
                    vlan: VlanOp::Keep,
                    pkt_type: pkt_type(outer.dst, parent.mac),
                };
                step!(t, Output, "RX_HANDLER_PASS", Detail::Out(o));
                out.push(o);
                return Ok(None);
            }
        };
        step!(t, VlanDemux, "rx_handler", Detail::Network(nid));
        let mut cx = self.cx(
            net,
            None,
            tag.is_some(),
            out,
            t,
            routes,
            (frame.len(), false),
        );
        match net.driver {
            Driver::Ipvlan => match net.ipvlan_mode {
                IpvlanMode::L2 => cx.ipvlan_rx_l2(&eth, loopback),
                IpvlanMode::L3 => cx.ipvlan_rx_l3(&eth),
                IpvlanMode::L3s => cx.ipvlan_rx_l3s(&eth),
            },
            Driver::Macvlan => cx.macvlan_rx(&eth, loopback, None)?,
        }
        Ok(cx.pending)
    }
}
