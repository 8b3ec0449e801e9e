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

    // ---- ipvlan ------------------------------------------------------------------------

    /// `ipvlan_process_multicast` for one frame: a clone to every UP port whose filter matches,
    /// except the sender of a TX frame.
    fn ipvlan_flood(&mut self, dst: MacAddr) {
        let pt = group_type(dst);
        for &p in &self.net.ports {
            if Some(p) == self.sender {
                continue;
            }
            let Some(port) = self.e.port(p) else { continue };
            if !port.up || !port.mc.accepts(&dst) {
                continue;
            }
            self.emit_port(p, pt, "ipvlan_process_multicast");
        }
    }

    /// `ipvlan_xmit_mode_l2`.
    fn ipvlan_xmit_l2(&mut self, eth: &EthView<'_>) -> Result<(), DropReason> {
        const K: &str = "ipvlan_xmit_mode_l2";
        let flag = self.net.ipvlan_flag;
        let vepa = self.check(K, "vepa flag set", flag == IpvlanFlag::Vepa);
        if !vepa && self.check(K, "dst MAC == src MAC", eth.dst == eth.src) {
            let h = self.l3_hdr(eth.ethertype, eth.payload);
            if let Some(Owner::Port(t)) = self.lookup(h.dst, true) {
                // Switched to the sibling unless private (consume_skb, tx_drop).
                if self.check(K, "private flag set", flag == IpvlanFlag::Private) {
                    return Err(DropReason::PrivateFlag);
                }
                let me = self.port(t).map(|p| p.mac).unwrap_or(self.m);
                self.emit_port(t, pkt_type(eth.dst, me), "ipvlan_rcv_frame (local)");
                return Ok(());
            }
            // "Packet definitely does not belong to any of the virtual devices, but the dest
            // is local": dev_forward_skb(phy_dev) → the master's rx_handler passes it up.
            self.emit_host(eth.dst, "dev_forward_skb(phy_dev)");
            return Ok(());
        }
        if self.check(K, "dst MAC is multicast/broadcast", eth.dst.is_multicast()) {
            // ipvlan_multicast_enqueue drops PAUSE: the whole frame is lost, wire copy too.
            if self.check(
                "ipvlan_multicast_enqueue",
                "ETH_P_PAUSE",
                eth.ethertype == ethertype::PAUSE,
            ) {
                return Err(DropReason::Pause);
            }
            // No private or vepa test here (C17): clones to other up ports, then the wire.
            self.ipvlan_flood(eth.dst);
            self.emit_wire("ipvlan_process_multicast (tx_pkt: dev_queue_xmit)");
            return Ok(());
        }
        self.emit_wire("dev_queue_xmit(phy_dev)");
        Ok(())
    }

    /// `ipvlan_xmit_mode_l3` and `ipvlan_process_outbound` (L3 and L3S transmit alike).
    #[inline]
    fn ipvlan_xmit_l3(&mut self, eth: &EthView<'_>) -> Result<(), DropReason> {
        const K: &str = "ipvlan_xmit_mode_l3";
        let flag = self.net.ipvlan_flag;
        let h = self.l3_hdr(eth.ethertype, eth.payload);
        let mut seen = None;
        if h.kind != L3Kind::None && !self.check(K, "vepa flag set", flag == IpvlanFlag::Vepa) {
            let owner = self.lookup(h.dst, true);
            seen = h.dst.map(|k| (k, owner));
            if let Some(Owner::Port(t)) = owner {
                if self.check(K, "private flag set", flag == IpvlanFlag::Private) {
                    return Err(DropReason::PrivateFlag);
                }
                // Switched whatever the dst MAC; T's eth_type_trans decides what its stack
                // keeps (C27).
                let me = self.port(t).map(|p| p.mac).unwrap_or(self.m);
                self.emit_port(t, pkt_type(eth.dst, me), "ipvlan_rcv_frame (local)");
                return Ok(());
            }
        }
        self.ipvlan_outbound(eth, &h, seen)
    }

    /// `ipvlan_process_outbound`: route in the master's namespace. `seen` is the table
    /// lookup `ipvlan_xmit_mode_l3` already made (key, owner), reused for the local check.
    #[inline(always)]
    fn ipvlan_outbound(
        &mut self,
        eth: &EthView<'_>,
        h: &L3Hdr,
        seen: Option<(IpAddr, Option<Owner>)>,
    ) -> Result<(), DropReason> {
        const K: &str = "ipvlan_process_outbound";
        if self.check(K, "dst MAC is multicast/broadcast", eth.dst.is_multicast()) {
            return Err(DropReason::L3Multicast);
        }
        match eth.ethertype {
            ethertype::IPV4 => {
                // ipvlan_get_L3_hdr already validated the header (same checks): reuse it.
                let (L3Kind::Ipv4, Some(IpAddr::V4(dst))) = (h.kind, h.dst) else {
                    return Err(DropReason::L3BadHeader);
                };
                const K4: &str = "ipvlan_process_v4_outbound";
                // ip_route_output_flow(oif = master): a limited-broadcast or multicast
                // destination yields a route type that is neither unicast nor local.
                let bad_type = dst == Ipv4Addr::BROADCAST || dst.is_multicast();
                if self.check(K4, "route type is broadcast/multicast", bad_type) {
                    return Err(DropReason::L3RouteType);
                }
                self.route(IpAddr::V4(dst), eth.dst, K4, seen)
            }
            ethertype::IPV6 => {
                let dst = match (h.kind, h.dst) {
                    (L3Kind::Ipv6, Some(IpAddr::V6(d))) => d,
                    // ICMPv6 from `::`: the key was the NS target; the route key is daddr.
                    _ => match Ipv6View::parse(eth.payload) {
                        Ok(ip) => ip.dst,
                        Err(_) => return Err(DropReason::L3BadHeader),
                    },
                };
                self.route(IpAddr::V6(dst), eth.dst, "ipvlan_process_v6_outbound", seen)
            }
            _ => Err(DropReason::L3NonIp),
        }
    }

    /// The routing step: a destination that is one of the parent's own addresses is
    /// `RTN_LOCAL` and reaches the host stack (C37); anything else goes to the route stage,
    /// which asks the host's tables.
    #[inline(always)]
    fn route(
        &mut self,
        dst: IpAddr,
        dst_mac: MacAddr,
        kernel: &'static str,
        seen: Option<(IpAddr, Option<Owner>)>,
    ) -> Result<(), DropReason> {
        let owner = match seen {
            Some((k, o)) if k == dst => o,
            _ => self.net.addrs.get(dst),
        };
        let local = owner == Some(Owner::Host) || dst.is_unspecified();
        if self.check(
            kernel,
            "destination is the parent's own address (RTN_LOCAL)",
            local,
        ) {
            self.emit_host_local(dst_mac, "ip_local_out → RTN_LOCAL");
            Ok(())
        } else {
            self.emit_routed(dst, dst_mac, kernel)
        }
    }

    /// `ipvlan_external_frame`: a group frame from the wire is ours (looped back from a port)
    /// if its source MAC is M and its L3 source belongs to a port.
    fn ipvlan_external(&mut self, eth: &EthView<'_>) -> bool {
        const K: &str = "ipvlan_external_frame";
        let external = if eth.src == self.m {
            let h = self.l3_hdr(eth.ethertype, eth.payload);
            h.kind == L3Kind::None || !matches!(self.lookup(h.src, false), Some(Owner::Port(_)))
        } else {
            true
        };
        self.check(K, "external frame (not our own, hairpinned)", external)
    }

    /// `ipvlan_handle_mode_l3`: deliver by L3 key, whatever the dst MAC; else the master stack.
    fn ipvlan_rx_l3(&mut self, eth: &EthView<'_>) {
        let h = self.l3_hdr(eth.ethertype, eth.payload);
        match self.lookup(h.dst, true) {
            Some(Owner::Port(t)) => {
                // ipvlan_rcv_frame(local = false): pkt_type stays as the master computed it.
                self.emit_port(
                    t,
                    pkt_type(eth.dst, self.m),
                    "ipvlan_rcv_frame (RX_HANDLER_ANOTHER)",
                );
            }
            _ => self.emit_host(eth.dst, "ipvlan_handle_mode_l3 (RX_HANDLER_PASS)"),
        }
    }

    /// `ipvlan_handle_mode_l2`.
    fn ipvlan_rx_l2(&mut self, eth: &EthView<'_>, loopback: bool) {
        const K: &str = "ipvlan_handle_mode_l2";
        if self.check(K, "PACKET_LOOPBACK", loopback) {
            self.emit_host(eth.dst, "RX_HANDLER_PASS");
            return;
        }
        if self.check(K, "dst MAC is multicast/broadcast", eth.dst.is_multicast()) {
            if self.ipvlan_external(eth)
                && !self.check(
                    "ipvlan_multicast_enqueue",
                    "ETH_P_PAUSE",
                    eth.ethertype == ethertype::PAUSE,
                )
            {
                self.ipvlan_flood(eth.dst);
            }
            self.emit_host(eth.dst, "RX_HANDLER_PASS");
            return;
        }
        self.ipvlan_rx_l3(eth);
    }

    /// L3S receive: the rx_handler passes; `ipvlan_l3_rcv` (l3mdev) then steals IPv4/IPv6
    /// packets addressed to a port after the master's PREROUTING, and `ipvlan_nf_input` hands
    /// them over at LOCAL_IN. ARP stays with the master (C32).
    fn ipvlan_rx_l3s(&mut self, eth: &EthView<'_>) {
        const K: &str = "ipvlan_l3_rcv";
        let ip = matches!(eth.ethertype, ethertype::IPV4 | ethertype::IPV6);
        let pt = pkt_type(eth.dst, self.m);
        // ip_rcv / ipv6_rcv drop PACKET_OTHERHOST before l3mdev sees the packet.
        if self.check(
            K,
            "IP packet the master's stack accepts",
            ip && pt != PacketType::OtherHost,
        ) {
            let h = self.l3_hdr(eth.ethertype, eth.payload);
            if let Some(Owner::Port(t)) = self.lookup(h.dst, true) {
                self.emit_port(
                    t,
                    pt,
                    "ipvlan_nf_input (LOCAL_IN, after the master's netfilter)",
                );
                return;
            }
        }
        self.emit_host(eth.dst, "RX_HANDLER_PASS (l3s)");
    }

    // ---- macvlan -----------------------------------------------------------------------

    /// `macvlan_broadcast`: a clone to every up port whose mode is in `modes`, other than
    /// `except`, whose filter matches; PAUSE is never flooded.
    fn macvlan_broadcast(
        &mut self,
        dst: MacAddr,
        proto: u16,
        modes: &[MacvlanMode],
        except: Option<PortId>,
    ) {
        if proto == ethertype::PAUSE {
            step!(
                self.t,
                FlagCheck,
                "macvlan_broadcast",
                Detail::Check {
                    what: "ETH_P_PAUSE",
                    holds: true
                }
            );
            return;
        }
        let pt = group_type(dst);
        for &p in &self.net.ports {
            if Some(p) == except {
                continue;
            }
            let Some(port) = self.e.port(p) else { continue };
            if !port.up || !modes.contains(&port.macvlan_mode) || !port.mc.accepts(&dst) {
                continue;
            }
            self.emit_port(p, pt, "macvlan_broadcast");
        }
    }

    /// `macvlan_forward_source`: clones to up source-mode ports listing the source MAC.
    /// Returns true when an owner has NODST (the frame is consumed).
    fn macvlan_forward_source(&mut self, eth: &EthView<'_>, lower_mac: MacAddr) -> bool {
        if self.net.sources.is_empty() {
            return false; // no source-mode device on this lower: nothing to hash
        }
        let Some(owners) = self.net.sources.get(&eth.src) else {
            return false;
        };
        let mut consume = false;
        for &p in owners {
            let Some(port) = self.e.port(p) else { continue };
            if port.macvlan_flags & MACVLAN_FLAG_NODST != 0 {
                consume = true;
            }
            if !port.up {
                continue;
            }
            // macvlan_forward_source_one: HOST only when addressed to the device's MAC,
            // otherwise the lower's classification.
            let pt = if eth.dst == port.mac {
                PacketType::Host
            } else {
                pkt_type(eth.dst, lower_mac)
            };
            self.emit_port(p, pt, "macvlan_forward_source_one");
        }
        self.check(
            "macvlan_forward_source",
            "a matching source device has nodst",
            consume,
        )
    }

    #[inline]
    fn mac_lookup(&mut self, mac: MacAddr) -> Option<PortId> {
        let p = self.net.macs.get(&mac).copied();
        step!(
            self.t,
            Lookup,
            "macvlan_hash_lookup",
            Detail::Mac { mac, port: p }
        );
        p
    }

    /// `macvlan_handle_frame` (also reached by bridge-mode unicast re-entering the lower
    /// through `dev_forward_skb(lowerdev)`).
    fn macvlan_rx(
        &mut self,
        eth: &EthView<'_>,
        loopback: bool,
        dst_known: Option<PortId>,
    ) -> Result<(), DropReason> {
        const K: &str = "macvlan_handle_frame";
        if self.check(K, "PACKET_LOOPBACK", loopback) {
            self.emit_host(eth.dst, "RX_HANDLER_PASS");
            return Ok(());
        }
        let lower_mac = self.m;
        if self.check(K, "dst MAC is multicast/broadcast", eth.dst.is_multicast()) {
            // ip_check_defrag (C56) is not emulated: uvlan decides frame by frame.
            if self.macvlan_forward_source(eth, lower_mac) {
                return if self.out.is_empty() {
                    Err(DropReason::SourceNodst)
                } else {
                    Ok(())
                };
            }
            let src = self.mac_lookup(eth.src);
            let src_mode = src.and_then(|p| self.port(p)).map(|p| p.macvlan_mode);
            if let (Some(s), Some(mode)) = (src, src_mode) {
                if self.check(
                    K,
                    "source is a private/passthru/source macvlan",
                    !matches!(mode, MacvlanMode::Vepa | MacvlanMode::Bridge),
                ) {
                    // "forward to original port" only; the lower does not see it (C54).
                    self.emit_port(
                        s,
                        group_type(eth.dst),
                        "macvlan_broadcast_one (to the source port)",
                    );
                    return Ok(());
                }
            }
            use MacvlanMode::*;
            // macvlan_multicast_rx, as in 6.18 (C55).
            match src_mode {
                None => self.macvlan_broadcast(
                    eth.dst,
                    eth.ethertype,
                    &[Private, Vepa, Passthru, Bridge],
                    None,
                ),
                Some(Vepa) => self.macvlan_broadcast(eth.dst, eth.ethertype, &[Vepa, Bridge], src),
                Some(_) => self.macvlan_broadcast(eth.dst, eth.ethertype, &[Vepa], src),
            }
            self.emit_host(eth.dst, "RX_HANDLER_PASS");
            return Ok(());
        }
        if self.macvlan_forward_source(eth, lower_mac) {
            return if self.out.is_empty() {
                Err(DropReason::SourceNodst)
            } else {
                Ok(())
            };
        }
        let target = if self.check(K, "passthru lower", self.net.passthru) {
            let first = self.net.ports.first().copied();
            if let Some(p) = first {
                if !self.port(p).is_some_and(|p| p.up) {
                    return if self.out.is_empty() {
                        Err(DropReason::PassthruDown)
                    } else {
                        Ok(())
                    };
                }
            }
            first
        } else if let Some(d) = dst_known {
            // Re-entry from a bridge-mode sender: the lookup already happened there.
            step!(
                self.t,
                Lookup,
                "macvlan_hash_lookup",
                Detail::Mac {
                    mac: eth.dst,
                    port: Some(d)
                }
            );
            Some(d)
        } else {
            self.mac_lookup(eth.dst)
        };
        match target.and_then(|p| self.port(p).map(|port| (p, port.macvlan_mode))) {
            Some((p, mode)) if mode != MacvlanMode::Source => {
                self.emit_port(
                    p,
                    PacketType::Host,
                    "macvlan_handle_frame (RX_HANDLER_ANOTHER)",
                );
            }
            _ => self.emit_host(eth.dst, "RX_HANDLER_PASS"),
        }
        Ok(())
    }

    /// `macvlan_queue_xmit`.
    fn macvlan_xmit(&mut self, eth: &EthView<'_>, mode: MacvlanMode) -> Result<(), DropReason> {
        const K: &str = "macvlan_queue_xmit";
        if self.check(K, "sender is in bridge mode", mode == MacvlanMode::Bridge) {
            if self.check(K, "dst MAC is multicast/broadcast", eth.dst.is_multicast()) {
                self.macvlan_broadcast(eth.dst, eth.ethertype, &[MacvlanMode::Bridge], self.sender);
                self.emit_wire("xmit_world (dev_queue_xmit on the lower)");
                return Ok(());
            }
            if let Some(d) = self.mac_lookup(eth.dst) {
                let bridge = self
                    .port(d)
                    .is_some_and(|p| p.macvlan_mode == MacvlanMode::Bridge);
                if self.check(K, "destination is a bridge-mode sibling", bridge) {
                    // dev_forward_skb(lowerdev): back through the lower's rx_handler.
                    step!(
                        self.t,
                        Lookup,
                        "dev_forward_skb(lowerdev)",
                        Detail::Note("re-enters macvlan_handle_frame on the lower")
                    );
                    return self.macvlan_rx(eth, false, Some(d));
                }
            }
        }
        self.emit_wire("xmit_world (dev_queue_xmit on the lower)");
        Ok(())
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
