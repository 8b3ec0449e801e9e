//! ipvlan's rules (`ipvlan_core.c`): multicast flooding, transmit in L2 and L3, the route
//! stage of L3/L3S, receive from the wire.

use super::*;

impl<T: Tracer, R: Routes + ?Sized> Cx<'_, T, R> {
    /// `ipvlan_process_multicast` for one frame: a clone to every UP port whose filter matches,
    /// except the sender of a TX frame.
    pub(super) fn ipvlan_flood(&mut self, dst: MacAddr) {
        let pt = group_type(dst);
        for &p in &self.net.ports {
            if Some(p) == self.sender {
                continue;
            }
            let Some(port) = self.e.port(p) else { continue };
            if !port.up {
                continue;
            }
            let joined = port.mc.accepts(&dst);
            if !self.joined("ipvlan_process_multicast", p, dst, joined) {
                continue;
            }
            self.emit_port(p, pt, "ipvlan_process_multicast");
        }
    }

    /// `ipvlan_xmit_mode_l2`.
    pub(super) fn ipvlan_xmit_l2(&mut self, eth: &EthView<'_>) -> Result<(), DropReason> {
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
    pub(super) fn ipvlan_xmit_l3(&mut self, eth: &EthView<'_>) -> Result<(), DropReason> {
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
    pub(super) fn ipvlan_outbound(
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
    pub(super) fn route(
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
    pub(super) fn ipvlan_external(&mut self, eth: &EthView<'_>) -> bool {
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
    pub(super) fn ipvlan_rx_l3(&mut self, eth: &EthView<'_>) {
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
    pub(super) fn ipvlan_rx_l2(&mut self, eth: &EthView<'_>, loopback: bool) {
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
    pub(super) fn ipvlan_rx_l3s(&mut self, eth: &EthView<'_>) {
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
}
