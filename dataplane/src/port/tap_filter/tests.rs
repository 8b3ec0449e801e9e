//! The TAP prefilter against the engine (root: `BPF_PROG_TEST_RUN`, no interfaces): every
//! frame the program drops, the engine drops for the reason the program counted; every frame
//! it passes, it passes whole. Random frames, for every rule and the configurations that
//! give it.

use super::*;
use crate::fwd::{
    Driver, Engine, Ingress, IpvlanAttrs, IpvlanFlag, IpvlanMode, LinkRef, MacvlanAttrs,
    MacvlanMode, Master, NetworkSpec, NoRoutes, Outputs, PortId,
};
use crate::test_rng::Rng;
use crate::wire::MacAddr;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

const M: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 0xaa]);

fn mac(i: u8) -> MacAddr {
    MacAddr([0x02, 0, 0, 1, 0, i])
}

fn v4(i: u8) -> Ipv4Addr {
    Ipv4Addr::new(192, 0, 2, 10 + i)
}

fn v6(i: u8) -> Ipv6Addr {
    Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 10 + i as u16)
}

/// A network with three up ports, each with an IPv4 and an IPv6 address.
struct Net {
    engine: Engine,
    ports: Vec<PortId>,
}

#[derive(Clone, Copy, Debug)]
enum Kind {
    Ipvlan(IpvlanMode, IpvlanFlag),
    /// One port per mode, in this order.
    Macvlan([MacvlanMode; 3]),
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Where {
    Isolated,
    /// A parent, `--internal` (`wire: false`).
    Internal,
    /// A parent whose wire the network uses.
    Wire,
}

fn net(kind: Kind, at: Where) -> Net {
    let mut engine = Engine::new();
    let parent = engine
        .add_parent(crate::fwd::sample::eth0(M, vec![]))
        .unwrap();
    let master = match at {
        Where::Isolated => Master::Isolated { mac: M, mtu: 1500 },
        Where::Internal | Where::Wire => Master::Parent {
            parent,
            vid: None,
            wire: at == Where::Wire,
        },
    };
    let driver = match kind {
        Kind::Ipvlan(..) => Driver::Ipvlan,
        Kind::Macvlan(_) => Driver::Macvlan,
    };
    let n = engine
        .add_network(NetworkSpec::new("n", driver, master))
        .unwrap();
    let mut ports = Vec::new();
    for i in 0..3u8 {
        let p = match kind {
            Kind::Ipvlan(mode, flag) => engine
                .add_ipvlan_port(
                    LinkRef::Network(n),
                    format!("p{i}"),
                    IpvlanAttrs::new(mode, flag),
                )
                .unwrap(),
            Kind::Macvlan(modes) => engine
                .add_macvlan_port(
                    LinkRef::Network(n),
                    format!("p{i}"),
                    MacvlanAttrs::new(modes[i as usize], Some(mac(i))),
                )
                .unwrap(),
        };
        engine.add_port_addr(p, IpAddr::V4(v4(i))).unwrap();
        engine.add_port_addr(p, IpAddr::V6(v6(i))).unwrap();
        engine.set_port_up(p, true).unwrap();
        ports.push(p);
    }
    Net { engine, ports }
}

/// Random frames for the agreement tests.
trait Frames {
    fn mac(&mut self, own: MacAddr, peers: &[MacAddr]) -> [u8; 6];
    fn frame(&mut self, own: MacAddr, peers: &[MacAddr]) -> Vec<u8>;
}

impl Frames for Rng {
    fn mac(&mut self, own: MacAddr, peers: &[MacAddr]) -> [u8; 6] {
        match self.below(7) {
            0 => own.0,
            1 => peers[self.below(peers.len() as u64) as usize].0,
            2 => [0xff; 6],
            3 => [0x33, 0x33, 0xff, 0, 0, self.next() as u8],
            4 => M.0,
            5 => {
                let mut m = self.bytes(6);
                m[0] &= 0xfe;
                [m[0], m[1], m[2], m[3], m[4], m[5]]
            }
            _ => {
                let m = self.bytes(6);
                [m[0], m[1], m[2], m[3], m[4], m[5]]
            }
        }
    }

    /// A frame from a port whose MAC is `own`: destinations and sources among the
    /// network's MACs, group and random ones; EtherTypes the rules look at and random ones;
    /// L3 headers addressed to siblings, and random payloads of any length.
    fn frame(&mut self, own: MacAddr, peers: &[MacAddr]) -> Vec<u8> {
        let dst = self.mac(own, peers);
        let src = if self.below(4) == 0 {
            dst
        } else {
            self.mac(own, peers)
        };
        let etype: u16 = match self.below(8) {
            0 | 1 => 0x0800,
            2 => 0x86dd,
            3 => 0x0806,
            4 => 0x8100,
            5 => 0x88a8,
            6 => 0x8808,
            _ => self.next() as u16,
        };
        let mut f = Vec::new();
        f.extend_from_slice(&dst);
        f.extend_from_slice(&src);
        f.extend_from_slice(&etype.to_be_bytes());
        let sib = self.below(3) as u8;
        match (etype, self.below(3)) {
            (0x0800, 0) => {
                f.extend_from_slice(&[0x45, 0, 0, 28, 0, 0, 0x40, 0, 64, 17, 0, 0]);
                f.extend_from_slice(&v4(3).octets());
                f.extend_from_slice(&v4(sib).octets());
                f.extend_from_slice(&[0; 8]);
            }
            (0x86dd, 0) => {
                f.extend_from_slice(&[0x60, 0, 0, 0, 0, 8, 17, 64]);
                f.extend_from_slice(&v6(3).octets());
                f.extend_from_slice(&v6(sib).octets());
                f.extend_from_slice(&[0; 8]);
            }
            (0x0806, 0) => {
                f.extend_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
                f.extend_from_slice(&own.0);
                f.extend_from_slice(&v4(3).octets());
                f.extend_from_slice(&[0; 6]);
                f.extend_from_slice(&v4(sib).octets());
            }
            _ => {
                let n = self.below(80) as usize;
                f.extend(self.bytes(n));
            }
        }
        f
    }
}

/// Runs `frame` through `prog` as `tun_net_xmit` would (the filter sees `skb->data` at the
/// MAC header): test-run consumes a 14-byte Ethernet header in front of the data, so one is
/// put there (with an EtherType test-run gives no meaning). Returns the program's verdict.
fn run(prog: &Prog, frame: &[u8]) -> u32 {
    let mut wrapped = vec![0u8; 12];
    wrapped.extend_from_slice(&0x88b5u16.to_be_bytes());
    wrapped.extend_from_slice(frame);
    prog.test_run(&wrapped, 1)
        .unwrap_or_else(|e| panic!("{e} on {frame:02x?}"))
        .retval
}

/// The agreement on `frames` random frames from each port; returns the drops by reason.
fn agree(n: &Net, filters: &TapFilters, seed: u64, frames: usize) -> [u64; 3] {
    let mut rng = Rng(seed | 1);
    let mut out = Outputs::default();
    filters.sync_bridge_macs(&std::sync::Arc::new(n.engine.clone()));
    let mut dropped = [0u64; 3];
    for (slot, &p) in n.ports.iter().enumerate() {
        let Some(rule) = n.engine.port_prefilter(p) else {
            continue;
        };
        let slot = slot as u32;
        filters.reset(slot);
        let prog = filters.load(rule, slot).unwrap().unwrap();
        let info = n.engine.port_info(p).unwrap();
        let peers: Vec<MacAddr> = n
            .ports
            .iter()
            .map(|q| n.engine.port_info(*q).unwrap().mac)
            .collect();
        for _ in 0..frames {
            let f = rng.frame(info.mac, &peers);
            let before = filters.counts(slot);
            let verdict = run(&prog, &f);
            let after = filters.counts(slot);
            let engine = n
                .engine
                .decide(&f, Ingress::Port(p), &mut NoRoutes, &mut out);
            if verdict == 0 {
                let counted: Vec<usize> = (0..3).filter(|&i| after[i] != before[i]).collect();
                assert_eq!(counted.len(), 1, "{rule:?}: one counter per drop, {f:02x?}");
                let reason = PREFILTER_REASONS[counted[0]];
                assert_eq!(
                    engine,
                    Err(reason),
                    "{rule:?} dropped {f:02x?} as {reason:?}; the engine decides otherwise"
                );
                dropped[counted[0]] += 1;
            } else {
                assert_eq!(verdict as usize, f.len(), "{rule:?} passes {f:02x?} whole");
                assert_eq!(before, after, "{rule:?} counted a frame it passed");
            }
        }
    }
    dropped
}

#[test]
fn reason_indexes_follow_the_table() {
    for (i, r) in PREFILTER_REASONS.iter().enumerate() {
        assert_eq!(reason_index(*r) as usize, i, "{r:?}");
    }
}

#[test]
fn ipvlan_l2_without_a_wire_drops_what_goes_to_the_wire() {
    let filters = TapFilters::new().unwrap();
    for flag in [IpvlanFlag::Bridge, IpvlanFlag::Private, IpvlanFlag::Vepa] {
        for at in [Where::Isolated, Where::Internal] {
            let n = net(Kind::Ipvlan(IpvlanMode::L2, flag), at);
            let rule = n.engine.port_prefilter(n.ports[0]);
            assert_eq!(
                rule,
                Some(Prefilter::IpvlanL2NoWire {
                    vepa: flag == IpvlanFlag::Vepa
                })
            );
            let d = agree(&n, &filters, 0x5eed ^ flag as u64, 3000);
            assert!(d[0] > 500, "{flag:?} {at:?}: only {} no_wire drops", d[0]);
        }
        // With a wire, unicast goes there: nothing to drop from the header.
        let n = net(Kind::Ipvlan(IpvlanMode::L2, flag), Where::Wire);
        assert_eq!(n.engine.port_prefilter(n.ports[0]), None);
    }
}

#[test]
fn ipvlan_l3_drops_what_is_not_arp_or_ip() {
    let filters = TapFilters::new().unwrap();
    for mode in [IpvlanMode::L3, IpvlanMode::L3s] {
        for flag in [IpvlanFlag::Bridge, IpvlanFlag::Private, IpvlanFlag::Vepa] {
            for at in [Where::Isolated, Where::Internal, Where::Wire] {
                let n = net(Kind::Ipvlan(mode, flag), at);
                assert_eq!(
                    n.engine.port_prefilter(n.ports[1]),
                    Some(Prefilter::IpvlanL3NonIp)
                );
                let d = agree(
                    &n,
                    &filters,
                    0xab ^ ((mode as u64) << 8) ^ flag as u64,
                    2000,
                );
                assert!(d[1] > 100 && d[2] > 50, "{mode:?} {flag:?} {at:?}: {d:?}");
            }
        }
    }
}

#[test]
fn macvlan_without_a_wire_drops_everything_but_bridge_mode() {
    use MacvlanMode::*;
    let filters = TapFilters::new().unwrap();
    for at in [Where::Isolated, Where::Internal] {
        let n = net(Kind::Macvlan([Private, Vepa, Bridge]), at);
        assert_eq!(
            n.engine.port_prefilter(n.ports[0]),
            Some(Prefilter::MacvlanNoWire)
        );
        assert_eq!(
            n.engine.port_prefilter(n.ports[1]),
            Some(Prefilter::MacvlanNoWire)
        );
        // Bridge mode looks the destination up in the network's bridge-mode MACs.
        let net = n.engine.port_info(n.ports[2]).unwrap().network;
        assert_eq!(
            n.engine.port_prefilter(n.ports[2]),
            Some(Prefilter::MacvlanBridgeNoWire { network: net })
        );
        assert_eq!(n.engine.bridge_macs(net), vec![mac(2)]);
        let d = agree(&n, &filters, 0x77, 2000);
        assert!(d[0] > 4000, "{at:?}: {d:?}");
    }
    let n = net(Kind::Macvlan([Private, Vepa, Bridge]), Where::Wire);
    assert!(n
        .ports
        .iter()
        .all(|p| n.engine.port_prefilter(*p).is_none()));
}

/// A bridge-mode port's filter follows the network's bridge-mode MACs: a sibling added is
/// reached once the map is synced with the engine that has it, one removed is dropped again.
#[test]
fn macvlan_bridge_filters_follow_the_siblings() {
    use MacvlanMode::Bridge;
    let filters = TapFilters::new().unwrap();
    let mut n = net(Kind::Macvlan([Bridge, Bridge, Bridge]), Where::Isolated);
    let d = agree(&n, &filters, 0x99, 2000);
    assert!(d[0] > 1000, "{d:?}");
    let net = n.engine.port_info(n.ports[0]).unwrap().network;
    let rule = n.engine.port_prefilter(n.ports[0]).unwrap();
    let sync = |e: &Engine| filters.sync_bridge_macs(&std::sync::Arc::new(e.clone()));
    sync(&n.engine);
    let prog = filters.load(rule, 0).unwrap().unwrap();
    let to = |m: MacAddr| {
        let mut f = m.0.to_vec();
        f.extend_from_slice(&mac(0).0);
        f.extend_from_slice(&[0x08, 0x00]);
        f.extend_from_slice(&[0u8; 46]);
        f
    };
    let newcomer = MacAddr([0x02, 0, 0, 2, 0, 7]);
    assert_eq!(run(&prog, &to(mac(1))) as usize, 60, "a sibling is reached");
    assert_eq!(run(&prog, &to(newcomer)), 0, "nobody has it yet");
    let c = n
        .engine
        .add_macvlan_port(
            LinkRef::Network(net),
            "p3",
            MacvlanAttrs::new(Bridge, Some(newcomer)),
        )
        .unwrap();
    n.engine.set_port_up(c, true).unwrap();
    sync(&n.engine);
    assert_eq!(run(&prog, &to(newcomer)) as usize, 60, "synced: reached");
    n.engine.remove_port(c).unwrap();
    sync(&n.engine);
    assert_eq!(run(&prog, &to(newcomer)), 0, "removed: no_wire again");
    let mut out = Outputs::default();
    assert_eq!(
        n.engine.decide(
            &to(newcomer),
            Ingress::Port(n.ports[0]),
            &mut NoRoutes,
            &mut out
        ),
        Err(DropReason::NoWire)
    );
    // A network that goes has no map: its rule is not usable.
    n.engine.remove_port(n.ports[0]).unwrap();
    n.engine.remove_port(n.ports[1]).unwrap();
    n.engine.remove_port(n.ports[2]).unwrap();
    n.engine.remove_network(net).unwrap();
    sync(&n.engine);
    assert!(!filters.usable(rule));
    assert!(filters.load(rule, 0).unwrap().is_none());
}

#[test]
fn no_prefilter_while_the_port_or_its_parent_is_down() {
    let mut n = net(
        Kind::Ipvlan(IpvlanMode::L2, IpvlanFlag::Bridge),
        Where::Internal,
    );
    n.engine.set_port_up(n.ports[0], false).unwrap();
    assert_eq!(n.engine.port_prefilter(n.ports[0]), None);
    assert!(n.engine.port_prefilter(n.ports[1]).is_some());
    n.engine
        .set_parent_up(crate::fwd::ParentId(0), false)
        .unwrap();
    assert_eq!(n.engine.port_prefilter(n.ports[1]), None);
}

#[test]
fn programs_are_small_and_slots_past_the_map_get_none() {
    let filters = TapFilters::new().unwrap();
    for rule in [
        Prefilter::IpvlanL2NoWire { vepa: false },
        Prefilter::IpvlanL2NoWire { vepa: true },
        Prefilter::IpvlanL3NonIp,
        Prefilter::MacvlanNoWire,
    ] {
        let insns = filters.assemble(rule, SLOTS - 1).unwrap();
        assert!(insns.len() < 64, "{rule:?}: {} instructions", insns.len());
        assert!(filters.load(rule, SLOTS - 1).unwrap().is_some());
        assert!(filters.load(rule, SLOTS).unwrap().is_none());
    }
}
