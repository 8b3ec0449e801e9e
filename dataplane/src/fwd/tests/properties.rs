//! Isolation properties over random topologies and frames (proptest, 10,000 cases each), and
//! the check that trace and datapath decide alike.

use super::super::*;
use crate::trace::trace;
use crate::wire::build;
use crate::wire::MacAddr;
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

const M: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 0xaa]);
const VIDS: [Option<u16>; 3] = [None, Some(20), Some(30)];
/// The gateway every routed destination leaves through, unless a test scripts the answers.
const GW: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 0xee]);

fn gw() -> impl FnMut(ParentId, IpAddr) -> NextHop {
    |_, _| NextHop::Mac(GW)
}

/// A random topology: three networks on one parent (untagged, VID 20, VID 30), each with a
/// driver, mode and flag, 1–4 ports with random up state, macvlan modes per port.
/// (ipvlan?, mode, flag, ports as (up, macvlan mode)).
type NetSpec = (bool, u8, u8, Vec<(bool, u8)>);

#[derive(Debug, Clone)]
struct Topo {
    nets: Vec<NetSpec>,
}

struct Built {
    e: Engine,
    parent: ParentId,
    nets: Vec<NetworkId>,
    ports: Vec<(PortId, usize)>, // port, network index
}

fn port_mac(n: usize, i: usize) -> MacAddr {
    MacAddr([0x02, 0, 0, 1, n as u8, i as u8])
}
fn port_v4(n: usize, i: usize) -> Ipv4Addr {
    Ipv4Addr::new(192, 0, 2, (n * 16 + i + 1) as u8)
}
fn port_v6(n: usize, i: usize) -> Ipv6Addr {
    Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, n as u16, i as u16 + 1)
}

fn build_topo(t: &Topo) -> Built {
    let mut e = Engine::new();
    let parent = e
        .add_parent(crate::fwd::sample::eth0(
            M,
            vec![IpAddr::V4(Ipv4Addr::new(192, 0, 2, 254))],
        ))
        .unwrap();
    let mut nets = Vec::new();
    let mut ports = Vec::new();
    for (n, (ipvlan, mode, flag, ps)) in t.nets.iter().enumerate() {
        let driver = if *ipvlan {
            Driver::Ipvlan
        } else {
            Driver::Macvlan
        };
        let net = e
            .add_network(NetworkSpec::new(
                format!("n{n}"),
                driver,
                Master::Parent {
                    parent,
                    vid: VIDS[n],
                    wire: true,
                },
            ))
            .unwrap();
        nets.push(net);
        for (i, (up, mmode)) in ps.iter().enumerate() {
            let p = if *ipvlan {
                let m = [IpvlanMode::L2, IpvlanMode::L3, IpvlanMode::L3s][*mode as usize % 3];
                let f =
                    [IpvlanFlag::Bridge, IpvlanFlag::Private, IpvlanFlag::Vepa][*flag as usize % 3];
                e.add_ipvlan_port(
                    LinkRef::Network(net),
                    format!("p{n}{i}"),
                    IpvlanAttrs::new(m, f),
                )
                .unwrap()
            } else {
                let m = [
                    MacvlanMode::Bridge,
                    MacvlanMode::Vepa,
                    MacvlanMode::Private,
                    MacvlanMode::Source,
                ][*mmode as usize % 4];
                let mut attrs = MacvlanAttrs::new(m, Some(port_mac(n, i)));
                if m == MacvlanMode::Source {
                    attrs.macaddr_mode = Some(0);
                    attrs.macaddrs = vec![
                        port_mac((n + 1) % 3, 0).0.to_vec(),
                        vec![2, 0, 0, 0, 0, 0xee],
                    ];
                }
                e.add_macvlan_port(LinkRef::Network(net), format!("p{n}{i}"), attrs)
                    .unwrap()
            };
            e.add_port_addr(p, IpAddr::V4(port_v4(n, i))).unwrap();
            e.add_port_addr(p, IpAddr::V6(port_v6(n, i))).unwrap();
            if *up {
                e.set_port_up(p, true).unwrap();
            }
            ports.push((p, n));
        }
    }
    Built {
        e,
        parent,
        nets,
        ports,
    }
}

fn topo() -> impl Strategy<Value = Topo> {
    prop::collection::vec(
        (
            any::<bool>(),
            0u8..3,
            0u8..3,
            prop::collection::vec((prop::bool::weighted(0.85), 0u8..4), 1..5),
        ),
        3,
    )
    .prop_map(|nets| Topo { nets })
}

/// A frame drawn from realistic templates over the topology's addresses, or raw bytes.
fn frame() -> impl Strategy<Value = (u8, u8, u8, u8, u8, u8, Vec<u8>)> {
    (
        0u8..10,
        0u8..8,
        0u8..8,
        0u8..8,
        0u8..8,
        0u8..5,
        prop::collection::vec(any::<u8>(), 0..80),
    )
}

fn pick_mac(k: u8) -> MacAddr {
    match k {
        0 => M,
        1 => MacAddr::BROADCAST,
        2 => MacAddr([0x01, 0, 0x5e, 0, 0, 1]),
        3 => MacAddr([0x33, 0x33, 0xff, 0, 0, 1]),
        4 => MacAddr([2, 0, 0, 0, 0, 0xee]),
        n => port_mac((n as usize) % 3, (n as usize) % 2),
    }
}

fn pick_v4(k: u8) -> Ipv4Addr {
    match k {
        0 => Ipv4Addr::new(192, 0, 2, 254),
        1 => Ipv4Addr::BROADCAST,
        2 => Ipv4Addr::new(198, 51, 100, 7),
        3 => Ipv4Addr::new(224, 0, 0, 1),
        n => port_v4((n as usize) % 3, (n as usize) % 2),
    }
}

fn make_frame(f: &(u8, u8, u8, u8, u8, u8, Vec<u8>)) -> Vec<u8> {
    let (kind, dmac, smac, dip, sip, tag, raw) = f;
    let (d, s) = (pick_mac(*dmac), pick_mac(*smac));
    let base = match kind {
        0 => build::udp4(d, s, pick_v4(*sip), pick_v4(*dip), (1, 2), b"x"),
        1 => build::arp_request(s, pick_v4(*sip), pick_v4(*dip)),
        2 => build::arp_reply(s, pick_v4(*sip), d, pick_v4(*dip)),
        3 => build::udp6(
            d,
            s,
            port_v6(*sip as usize % 3, 0),
            port_v6(*dip as usize % 3, *dip as usize % 2),
            (1, 2),
            b"x",
        ),
        4 => build::ns(
            s,
            Ipv6Addr::UNSPECIFIED,
            port_v6(*dip as usize % 3, *dip as usize % 2),
        ),
        5 => build::ns(
            s,
            port_v6(*sip as usize % 3, 0),
            port_v6(*dip as usize % 3, 1),
        ),
        6 => build::ra(s, "fe80::1".parse().unwrap()),
        7 => build::ethernet(d, s, 0x8808, &[0, 1, 0, 0]),
        8 => {
            let mut v = build::udp4(d, s, pick_v4(*sip), pick_v4(*dip), (1, 2), b"x");
            let n = raw.len().min(v.len());
            v.truncate(14 + n.saturating_sub(14));
            v
        }
        _ => raw.clone(),
    };
    match tag {
        1 => build::tagged(&base, 20),
        2 => build::tagged(&base, 30),
        3 => build::tagged(&base, 99),
        _ => base,
    }
}

fn ingresses(b: &Built) -> Vec<Ingress> {
    let mut v: Vec<Ingress> = b.ports.iter().map(|(p, _)| Ingress::Port(*p)).collect();
    v.push(Ingress::Wire(b.parent));
    v.push(Ingress::WireLoopback(b.parent));
    v
}

fn net_of(b: &Built, p: PortId) -> usize {
    b.ports
        .iter()
        .find(|(x, _)| *x == p)
        .map(|(_, n)| *n)
        .expect("port of the topology")
}

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 10_000,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config())]

    /// ipvlan `private`: a frame sent by a port never reaches another port.
    #[test]
    fn private_never_delivers_port_to_port(t in topo(), f in frame(), which in any::<prop::sample::Index>()) {
        let mut t = t;
        for n in &mut t.nets { if n.0 { n.2 = 1; } } // every ipvlan network private
        let b = build_topo(&t);
        let frame = make_frame(&f);
        let ins: Vec<PortId> = b.ports.iter().filter(|(_, n)| t.nets[*n].0).map(|(p, _)| *p).collect();
        if ins.is_empty() { return Ok(()); }
        let from = ins[which.index(ins.len())];
        let v = b.e.verdict(&frame, Ingress::Port(from), &mut gw());
        // broadcast/multicast in L2 ignore the private flag (C17): only unicast is private
        let group = frame.len() >= 6 && frame[0] & 1 == 1;
        if !group {
            prop_assert!(v.ports().is_empty(), "{v:?}");
        }
    }

    /// L3/L3S never floods: a group-addressed frame from an L3 port reaches neither the wire
    /// nor more than the one sibling owning its L3 destination; from the wire, at most one port.
    #[test]
    fn l3_never_emits_broadcast_or_multicast(t in topo(), f in frame(), which in any::<prop::sample::Index>()) {
        let mut t = t;
        for n in &mut t.nets { n.0 = true; n.1 = 1 + n.1 % 2; } // ipvlan L3 or L3S everywhere
        let b = build_topo(&t);
        let frame = make_frame(&f);
        if frame.len() < 6 || frame[0] & 1 == 0 { return Ok(()); }
        let ins = ingresses(&b);
        let ing = ins[which.index(ins.len())];
        let v = b.e.verdict(&frame, ing, &mut gw());
        if let Ingress::Port(_) = ing {
            prop_assert!(!v.reaches_wire(), "{v:?}");
        }
        prop_assert!(v.ports().len() <= 1, "{v:?}");
    }

    /// A frame tagged VID A never reaches a network on VID B, and untagged frames only reach
    /// the untagged network.
    #[test]
    fn vid_a_never_reaches_vid_b(t in topo(), f in frame()) {
        let b = build_topo(&t);
        let frame = make_frame(&f);
        let v = b.e.verdict(&frame, Ingress::Wire(b.parent), &mut gw());
        let want = match f.5 { 1 => Some(1), 2 => Some(2), 3 => None, _ => Some(0) };
        for p in v.ports() {
            prop_assert_eq!(Some(net_of(&b, p)), want, "{:?}", v);
        }
        // and egress from a port of network n carries n's tag
        for o in v.outputs() {
            if let Target::Port(_) = o.target {
                prop_assert_eq!(o.vlan, if want == Some(0) { VlanOp::Keep } else { VlanOp::Pop });
            }
        }
    }

    /// No verdict ever sends a frame back to the port it came from, and port-to-port delivery
    /// never crosses networks.
    #[test]
    fn never_back_to_the_sender(t in topo(), f in frame(), which in any::<prop::sample::Index>()) {
        let b = build_topo(&t);
        let frame = make_frame(&f);
        let ins = ingresses(&b);
        let ing = ins[which.index(ins.len())];
        let v = b.e.verdict(&frame, ing, &mut gw());
        if let Ingress::Port(from) = ing {
            prop_assert!(!v.ports().contains(&from), "{v:?}");
            let n = net_of(&b, from);
            for p in v.ports() { prop_assert_eq!(net_of(&b, p), n); }
            for o in v.outputs() {
                if let Target::Wire(_) | Target::Routed { .. } = o.target {
                    prop_assert_eq!(o.vlan, match VIDS[n] { Some(vid) => VlanOp::Push(vid), None => VlanOp::Keep });
                }
            }
        }
        let _ = &b.nets;
    }
}

/// The host's tables for one frame: a scripted answer, counting the questions. Both runs (the
/// datapath's `decide` and the trace) ask the same object.
struct Script {
    answer: NextHop,
    asked: Vec<(ParentId, IpAddr)>,
}

impl Routes for Script {
    fn next_hop(&mut self, parent: ParentId, dst: IpAddr) -> NextHop {
        self.asked.push((parent, dst));
        self.answer
    }
}

fn scripted(k: u8) -> NextHop {
    match k % 5 {
        0 => NextHop::Mac(MacAddr([0x02, 0, 0, 0, 0x77, k])),
        1 => NextHop::Pending,
        2 => NextHop::Local,
        3 => NextHop::BadRouteType,
        _ => NextHop::Unreachable,
    }
}

/// Runs one frame through the datapath (`decide`) and the trace with the same scripted host:
/// identical verdicts and questions, one trace output step per output, one route step per
/// question, and a fate that follows the host's answer. Returns whether the route stage ran.
fn agree(b: &Built, frame: &[u8], ing: Ingress, k: u8, out: &mut Outputs) -> bool {
    let mut host = Script {
        answer: scripted(k),
        asked: Vec::new(),
    };
    let fast = match b.e.decide(frame, ing, &mut host, out) {
        Ok(()) => Verdict::Forward(out.as_slice().to_vec()),
        Err(r) => Verdict::Drop(r),
    };
    let asked = std::mem::take(&mut host.asked);
    let tr = trace(&b.e, frame, ing, &mut host);
    assert_eq!(tr.verdict, fast, "{tr}");
    assert_eq!(
        host.asked, asked,
        "the trace asks the host what the datapath asks\n{tr}"
    );
    let outs = tr
        .steps
        .iter()
        .filter(|s| {
            s.stage == observe::Stage::Output
                && s.text.starts_with(|c: char| c.is_lowercase())
                && !s.text.starts_with("no output")
        })
        .count();
    assert_eq!(outs, fast.outputs().len(), "{tr}");
    assert!(!tr.steps.is_empty() && !tr.summary.is_empty());
    let route_steps = tr
        .steps
        .iter()
        .filter(|s| {
            s.stage == observe::Stage::Route
                && matches!(s.kernel, "ip_route_output_flow" | "ip6_route_output")
        })
        .count();
    assert_eq!(route_steps, asked.len(), "{tr}");
    let Some(&(parent, dst)) = asked.first() else {
        return false;
    };
    assert_eq!((parent, asked.len()), (b.parent, 1), "{tr}");
    // The fate follows the answer.
    let want = match host.answer {
        NextHop::Mac(next_hop) => Ok(Target::Routed {
            parent,
            dst,
            next_hop,
        }),
        NextHop::Local => Ok(Target::HostStack(parent)),
        NextHop::Pending => Err(DropReason::NeighbourPending),
        NextHop::BadRouteType => Err(DropReason::L3RouteType),
        NextHop::Unreachable => Err(DropReason::RouteUnreachable),
    };
    let got = match &fast {
        Verdict::Forward(o) if o.len() == 1 => Ok(o[0].target),
        Verdict::Forward(o) => panic!("a routed frame with {} outputs\n{tr}", o.len()),
        Verdict::Drop(r) => Err(*r),
    };
    assert_eq!(got, want, "{tr}");
    true
}

/// 1,000 random frames through the datapath (`decide`) and the trace, then 1,000 more sent by
/// ports of ipvlan L3/L3S networks (most of them routed), with random answers of the host's
/// tables: identical verdicts and identical questions to the host, and the trace's last step
/// is the drop or the last output.
#[test]
fn trace_and_datapath_agree_on_1000_random_frames() {
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let strat = (topo(), frame(), any::<prop::sample::Index>(), any::<u8>());
    let mut out = Outputs::default();
    // Frames that reached the route stage, per scripted answer.
    let mut routed = [0u32; 5];
    for l3 in [false, true] {
        for _ in 0..1000 {
            let (mut t, f, which, k) = strat.new_tree(&mut runner).expect("strategy").current();
            if l3 {
                for n in &mut t.nets {
                    n.0 = true;
                    n.1 = 1 + n.1 % 2;
                }
            }
            let b = build_topo(&t);
            let (dip, sip) = (f.3, f.4);
            let frame = match (l3, f.0 % 3) {
                // Unicast IP to M from a port's address: switched, local or routed.
                (true, 0) => build::udp4(M, M, port_v4(0, 0), pick_v4(dip), (1, 2), b"x"),
                (true, 1) => {
                    let dst = if dip % 2 == 0 {
                        Ipv6Addr::new(0x2001, 0xdb8, 0xffff, 0, 0, 0, 0, u16::from(dip))
                    } else {
                        port_v6(dip as usize % 3, sip as usize % 2)
                    };
                    build::udp6(M, M, port_v6(0, 0), dst, (1, 2), b"x")
                }
                _ => make_frame(&f),
            };
            let ins = ingresses(&b);
            let ing = if l3 {
                Ingress::Port(b.ports[which.index(b.ports.len())].0)
            } else {
                ins[which.index(ins.len())]
            };
            if agree(&b, &frame, ing, k, &mut out) {
                routed[usize::from(k % 5)] += 1;
            }
        }
    }
    // Every answer of the host was exercised.
    assert!(routed.iter().all(|&n| n >= 50), "{routed:?}");
}
