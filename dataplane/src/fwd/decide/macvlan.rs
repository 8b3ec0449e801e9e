//! macvlan's rules (`macvlan.c`): broadcast, source mode, receive, transmit.

use super::*;

impl<T: Tracer, R: Routes + ?Sized> Cx<'_, T, R> {
    /// `macvlan_broadcast`: a clone to every up port whose mode is in `modes`, other than
    /// `except`, whose filter matches; PAUSE is never flooded.
    pub(super) fn macvlan_broadcast(
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
            if !port.up || !modes.contains(&port.macvlan_mode) {
                continue;
            }
            let joined = port.mc.accepts(&dst);
            if !self.joined("macvlan_broadcast", p, dst, joined) {
                continue;
            }
            self.emit_port(p, pt, "macvlan_broadcast");
        }
    }

    /// `macvlan_forward_source`: clones to up source-mode ports listing the source MAC.
    /// Returns true when an owner has NODST (the frame is consumed).
    pub(super) fn macvlan_forward_source(&mut self, eth: &EthView<'_>, lower_mac: MacAddr) -> bool {
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
    pub(super) fn mac_lookup(&mut self, mac: MacAddr) -> Option<PortId> {
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
    pub(super) fn macvlan_rx(
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
    pub(super) fn macvlan_xmit(
        &mut self,
        eth: &EthView<'_>,
        mode: MacvlanMode,
    ) -> Result<(), DropReason> {
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
