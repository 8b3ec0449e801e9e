//! The route stage (`fwd/route.rs`): what the host's tables answer decides a routed frame's
//! fate, and only frames that the kernel would route ask them.

use super::super::*;
use super::{ipvlan_lab, ipvlan_lab_on, udp, v4, v6, EXT_IP, HOST_IP, M, X};
use crate::trace::trace;
use crate::wire::{build, MacAddr};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use IpvlanFlag::*;
use IpvlanMode::*;

/// Answers `answer` and records every question.
struct Host {
    answer: NextHop,
    asked: Vec<(ParentId, IpAddr)>,
}

impl Host {
    fn new(answer: NextHop) -> Host {
        Host {
            answer,
            asked: Vec::new(),
        }
    }
}

impl Routes for Host {
    fn next_hop(&mut self, parent: ParentId, dst: IpAddr) -> NextHop {
        self.asked.push((parent, dst));
        self.answer
    }
}

#[test]
fn route_stage_answers_decide_the_fate() {
    for mode in [L3, L3s] {
        let l = ipvlan_lab_on(Some(20), mode, Bridge, 2);
        let f = udp(M, M, v4(0), EXT_IP);
        let cases = [
            (
                NextHop::Mac(X),
                Ok(Output {
                    target: Target::Routed {
                        parent: l.parent,
                        dst: IpAddr::V4(EXT_IP),
                        next_hop: X,
                    },
                    vlan: VlanOp::Push(20),
                    pkt_type: PacketType::Outgoing,
                }),
            ),
            // RTN_LOCAL from the host's tables: the parent's own stack, as for its own
            // addresses (C37).
            (
                NextHop::Local,
                Ok(Output {
                    target: Target::HostStack(l.parent),
                    vlan: VlanOp::Keep,
                    pkt_type: PacketType::Host,
                }),
            ),
            (NextHop::Pending, Err(DropReason::NeighbourPending)),
            (NextHop::BadRouteType, Err(DropReason::L3RouteType)),
            (NextHop::Unreachable, Err(DropReason::RouteUnreachable)),
        ];
        for (answer, want) in cases {
            let mut host = Host::new(answer);
            let v = l.e.verdict(&f, Ingress::Port(l.p[0]), &mut host);
            let want = match want {
                Ok(o) => Verdict::Forward(vec![o]),
                Err(r) => Verdict::Drop(r),
            };
            assert_eq!(v, want, "{mode:?} {answer:?}");
            assert_eq!(host.asked, vec![(l.parent, IpAddr::V4(EXT_IP))]);
        }
        // IPv6 asks by its destination too.
        let ext6: Ipv6Addr = "2001:db8:ffff::1".parse().unwrap();
        let f6 = build::udp6(M, M, v6(0), ext6, (1, 2), b"");
        let mut host = Host::new(NextHop::Unreachable);
        assert_eq!(
            l.e.verdict(&f6, Ingress::Port(l.p[0]), &mut host),
            Verdict::Drop(DropReason::RouteUnreachable)
        );
        assert_eq!(host.asked, vec![(l.parent, IpAddr::V6(ext6))]);
    }
}

#[test]
fn route_stage_is_asked_only_for_frames_the_kernel_routes() {
    let l = ipvlan_lab(L3, Bridge, 2);
    let mut host = Host::new(NextHop::Unreachable);
    // Switched to a sibling, the parent's own address (the engine's table says RTN_LOCAL),
    // a broadcast or multicast IPv4 destination (route type, C29), a group dst MAC (C28).
    let sibling =
        l.e.verdict(&udp(M, M, v4(0), v4(1)), Ingress::Port(l.p[0]), &mut host);
    assert_eq!(l.ports(&sibling), vec![1]);
    let own =
        l.e.verdict(&udp(M, M, v4(0), HOST_IP), Ingress::Port(l.p[0]), &mut host);
    assert!(own.reaches_host() && own.outputs().len() == 1, "{own:?}");
    for dst in [Ipv4Addr::BROADCAST, Ipv4Addr::new(239, 0, 0, 1)] {
        assert_eq!(
            l.e.verdict(&udp(M, M, v4(0), dst), Ingress::Port(l.p[0]), &mut host),
            Verdict::Drop(DropReason::L3RouteType)
        );
    }
    assert_eq!(
        l.e.verdict(
            &udp(MacAddr::BROADCAST, M, v4(0), EXT_IP),
            Ingress::Port(l.p[0]),
            &mut host
        ),
        Verdict::Drop(DropReason::L3Multicast)
    );
    // Wire ingress never routes.
    let from_wire = udp(M, X, EXT_IP, v4(1));
    assert_eq!(
        l.ports(&l.e.verdict(&from_wire, Ingress::Wire(l.parent), &mut host)),
        vec![1]
    );
    assert!(host.asked.is_empty(), "{:?}", host.asked);
    // A network without a wire has nothing to route through: no question either.
    let mut e = Engine::new();
    let n = e
        .add_network(NetworkSpec::new(
            "iso",
            Driver::Ipvlan,
            Master::Isolated { mac: M, mtu: 1500 },
        ))
        .unwrap();
    let p = e
        .add_ipvlan_port(LinkRef::Network(n), "a", IpvlanAttrs::new(L3, Bridge))
        .unwrap();
    e.set_port_up(p, true).unwrap();
    assert_eq!(
        e.verdict(&udp(M, M, v4(0), EXT_IP), Ingress::Port(p), &mut host),
        Verdict::Drop(DropReason::NoWire)
    );
    assert!(host.asked.is_empty(), "{:?}", host.asked);
}

#[test]
fn route_stage_is_traced_with_the_hosts_answer() {
    let l = ipvlan_lab(L3, Bridge, 1);
    let f = udp(M, M, v4(0), EXT_IP);
    let t = trace(
        &l.e,
        &f,
        Ingress::Port(l.p[0]),
        &mut Host::new(NextHop::Mac(X)),
    );
    let route: Vec<_> = t
        .steps
        .iter()
        .filter(|s| s.stage == observe::Stage::Route)
        .collect();
    assert_eq!(route.len(), 2, "{t}");
    assert_eq!(route[0].kernel, "ip_route_output_flow");
    assert!(
        route[0].text.contains("198.51.100.7") && route[0].text.contains("unicast"),
        "{t}"
    );
    assert_eq!(route[1].kernel, "neigh_output");
    assert!(route[1].text.contains(&X.to_string()), "{t}");
    assert!(t.to_string().contains(&format!(
        "verdict: route 198.51.100.7 out of parent eth0 to next hop {X}"
    )));
    let t = trace(
        &l.e,
        &f,
        Ingress::Port(l.p[0]),
        &mut Host::new(NextHop::Unreachable),
    );
    assert_eq!(t.verdict, Verdict::Drop(DropReason::RouteUnreachable));
    assert!(t.to_string().contains("no route"), "{t}");
    assert!(
        t.summary.starts_with("DROP (route_unreachable)"),
        "{}",
        t.summary
    );
    let t = trace(
        &l.e,
        &f,
        Ingress::Port(l.p[0]),
        &mut Host::new(NextHop::Pending),
    );
    assert_eq!(t.verdict, Verdict::Drop(DropReason::NeighbourPending));
    assert_eq!(
        t.steps
            .iter()
            .filter(|s| s.stage == observe::Stage::Route)
            .map(|s| s.kernel)
            .collect::<Vec<_>>(),
        vec!["ip_route_output_flow", "neigh_output"]
    );
}
