//! Conformance tests: one per kernel statement C1–C67 (`docs/conformance.md`) that the
//! engine can decide, named after the statement. `docs/conformance.md` maps every statement to its
//! test or says why the engine cannot decide it.

use super::*;
use crate::wire::build::{self, ipv6_mcast_mac, solicited_node};
use crate::wire::{ethertype, MacAddr};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The parent's MAC (M).
const M: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 0xaa]);
/// An external host's MAC (gateway / upstream).
const X: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 0xee]);
const HOST_IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 254);
const EXT_IP: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 7);

fn v4(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(192, 0, 2, 1 + i as u8)
}
fn v6(i: usize) -> Ipv6Addr {
    Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1 + i as u16)
}
fn mmac(i: usize) -> MacAddr {
    MacAddr([0x02, 0, 0, 0, 1, i as u8])
}

/// The host's tables as these tests assume them: every routed destination leaves through the
/// gateway X (the route stage's own cases are in `route_stage_*`).
fn gw() -> impl FnMut(ParentId, IpAddr) -> NextHop {
    |_, _| NextHop::Mac(X)
}

struct Lab {
    e: Engine,
    parent: ParentId,
    net: NetworkId,
    p: Vec<PortId>,
}

impl Lab {
    fn v(&self, frame: &[u8], from: usize) -> Verdict {
        self.e
            .verdict(frame, Ingress::Port(self.p[from]), &mut gw())
    }
    fn wire(&self, frame: &[u8]) -> Verdict {
        self.e.verdict(frame, Ingress::Wire(self.parent), &mut gw())
    }
    fn ports(&self, v: &Verdict) -> Vec<usize> {
        v.ports()
            .into_iter()
            .map(|p| self.p.iter().position(|x| *x == p).expect("known port"))
            .collect()
    }
}

/// A network's master: `parent` (its VLAN `vid`), with a wire.
fn on_wire(parent: ParentId, vid: Option<u16>) -> Master {
    Master::Parent {
        parent,
        vid,
        wire: true,
    }
}

fn parent_spec() -> ParentSpec {
    super::sample::eth0(M, vec![IpAddr::V4(HOST_IP)])
}

fn ipvlan_lab_on(master_vid: Option<u16>, mode: IpvlanMode, flag: IpvlanFlag, n: usize) -> Lab {
    let mut e = Engine::new();
    let parent = e.add_parent(parent_spec()).unwrap();
    let net = e
        .add_network(NetworkSpec::new(
            "ipv",
            Driver::Ipvlan,
            on_wire(parent, master_vid),
        ))
        .unwrap();
    let mut p = Vec::new();
    for i in 0..n {
        let id = e
            .add_ipvlan_port(
                LinkRef::Network(net),
                format!("s{i}"),
                IpvlanAttrs::new(mode, flag),
            )
            .unwrap();
        e.add_port_addr(id, IpAddr::V4(v4(i))).unwrap();
        e.add_port_addr(id, IpAddr::V6(v6(i))).unwrap();
        e.set_port_up(id, true).unwrap();
        p.push(id);
    }
    Lab { e, parent, net, p }
}

fn ipvlan_lab(mode: IpvlanMode, flag: IpvlanFlag, n: usize) -> Lab {
    ipvlan_lab_on(None, mode, flag, n)
}

fn macvlan_lab(modes: &[MacvlanMode]) -> Lab {
    let mut e = Engine::new();
    let parent = e.add_parent(parent_spec()).unwrap();
    let net = e
        .add_network(NetworkSpec::new(
            "mv",
            Driver::Macvlan,
            on_wire(parent, None),
        ))
        .unwrap();
    let mut p = Vec::new();
    for (i, m) in modes.iter().enumerate() {
        let id = e
            .add_macvlan_port(
                LinkRef::Network(net),
                format!("m{i}"),
                MacvlanAttrs::new(*m, Some(mmac(i))),
            )
            .unwrap();
        e.add_port_addr(id, IpAddr::V4(v4(i))).unwrap();
        e.set_port_up(id, true).unwrap();
        p.push(id);
    }
    Lab { e, parent, net, p }
}

use IpvlanFlag::{Bridge, Private, Vepa};
use IpvlanMode::{L3s, L2, L3};

fn udp(dst_mac: MacAddr, src_mac: MacAddr, src: Ipv4Addr, dst: Ipv4Addr) -> Vec<u8> {
    build::udp4(dst_mac, src_mac, src, dst, (4000, 5000), b"uvlan")
}

fn bcast_udp(src_mac: MacAddr, src: Ipv4Addr) -> Vec<u8> {
    udp(MacAddr::BROADCAST, src_mac, src, Ipv4Addr::BROADCAST)
}

fn only_wire(v: &Verdict) -> bool {
    v.outputs().len() == 1 && matches!(v.outputs()[0].target, Target::Wire(_))
}

fn only_host(v: &Verdict) -> bool {
    v.outputs().len() == 1 && matches!(v.outputs()[0].target, Target::HostStack(_))
}

// ---- ipvlan configuration ------------------------------------------------------------------

#[test]
fn c1_no_mode_attribute_sets_the_port_to_l3_and_flags_stay() {
    let mut l = ipvlan_lab(L2, Private, 2);
    // a new slave without IFLA_IPVLAN_MODE and without flags
    let s =
        l.e.add_ipvlan_port(LinkRef::Network(l.net), "s2", IpvlanAttrs::default())
            .unwrap();
    let info = l.e.network_info(l.net).unwrap();
    assert_eq!(info.ipvlan_mode, Some(L3), "every slave became L3");
    assert_eq!(info.ipvlan_flag, Some(Private), "flags unchanged");
    assert!(l.e.port_info(l.p[0]).unwrap().noarp && l.e.port_info(s).unwrap().noarp);
    // the first slave of a fresh master gets bridge
    let mut e = Engine::new();
    let n = e
        .add_network(NetworkSpec::new(
            "i",
            Driver::Ipvlan,
            Master::Isolated { mac: M, mtu: 1500 },
        ))
        .unwrap();
    e.add_ipvlan_port(LinkRef::Network(n), "a", IpvlanAttrs::default())
        .unwrap();
    let info = e.network_info(n).unwrap();
    assert_eq!(
        (info.ipvlan_mode, info.ipvlan_flag),
        (Some(L3), Some(Bridge))
    );
}

#[test]
fn c2_invalid_mode_or_flags_give_einval() {
    let mut l = ipvlan_lab(L2, Bridge, 1);
    for attrs in [
        IpvlanAttrs {
            mode: Some(3),
            ..Default::default()
        },
        IpvlanAttrs {
            mode: Some(0xffff),
            ..Default::default()
        },
        IpvlanAttrs {
            flags: Some(0x04),
            ..Default::default()
        },
        IpvlanAttrs {
            flags: Some(0x03),
            ..Default::default()
        },
    ] {
        let err =
            l.e.add_ipvlan_port(LinkRef::Network(l.net), "x", attrs)
                .unwrap_err();
        assert_eq!(err.errno, Errno::Einval, "{attrs:?}");
        assert_eq!(
            l.e.ipvlan_changelink(l.p[0], attrs).unwrap_err().errno,
            Errno::Einval
        );
    }
    assert_eq!(
        l.e.network_info(l.net).unwrap().ports.len(),
        1,
        "nothing half-made"
    );
    assert_eq!(l.e.network_info(l.net).unwrap().ipvlan_mode, Some(L2));
}

#[test]
fn c3_mode_and_flags_are_per_master_last_writer_wins() {
    let mut l = ipvlan_lab(L2, Bridge, 3);
    l.e.ipvlan_changelink(l.p[2], IpvlanAttrs::new(L3s, Vepa))
        .unwrap();
    let info = l.e.network_info(l.net).unwrap();
    assert_eq!(
        (info.ipvlan_mode, info.ipvlan_flag),
        (Some(L3s), Some(Vepa))
    );
    l.e.ipvlan_changelink(
        l.p[0],
        IpvlanAttrs {
            flags: Some(1),
            ..Default::default()
        },
    )
    .unwrap();
    let info = l.e.network_info(l.net).unwrap();
    assert_eq!(
        (info.ipvlan_mode, info.ipvlan_flag),
        (Some(L3s), Some(Private))
    );
    // behaviour follows: private now drops port to port
    let f = udp(M, M, v4(0), v4(1));
    assert_eq!(l.v(&f, 0).drop_reason(), Some(DropReason::PrivateFlag));
}

#[test]
fn c4_l3_slaves_are_noarp_and_a_mode_change_flips_all() {
    let mut l = ipvlan_lab(L2, Bridge, 2);
    assert!(!l.e.port_info(l.p[0]).unwrap().noarp);
    l.e.ipvlan_changelink(
        l.p[1],
        IpvlanAttrs {
            mode: Some(1),
            ..Default::default()
        },
    )
    .unwrap();
    assert!(l.p.iter().all(|p| l.e.port_info(*p).unwrap().noarp));
    l.e.ipvlan_changelink(
        l.p[0],
        IpvlanAttrs {
            mode: Some(0),
            ..Default::default()
        },
    )
    .unwrap();
    assert!(l.p.iter().all(|p| !l.e.port_info(*p).unwrap().noarp));
}

#[test]
fn c5_loopback_or_non_ether_parent_einval_and_busy_parent_ebusy() {
    let mut e = Engine::new();
    let lo = e
        .add_parent(ParentSpec {
            name: "lo".into(),
            link_type: LinkType::Loopback,
            ..parent_spec()
        })
        .unwrap();
    let ib = e
        .add_parent(ParentSpec {
            name: "ib0".into(),
            link_type: LinkType::Other(32),
            ..parent_spec()
        })
        .unwrap();
    for p in [lo, ib] {
        let err = e
            .add_network(NetworkSpec::new("n", Driver::Ipvlan, on_wire(p, None)))
            .unwrap_err();
        assert_eq!(err.errno, Errno::Einval);
    }
    let eth = e.add_parent(parent_spec()).unwrap();
    e.add_network(NetworkSpec::new("a", Driver::Macvlan, on_wire(eth, None)))
        .unwrap();
    let err = e
        .add_network(NetworkSpec::new("b", Driver::Ipvlan, on_wire(eth, None)))
        .unwrap_err();
    assert_eq!(err.errno, Errno::Ebusy);
    assert!(err.message.contains("Device is already in use"), "{err}");
    // a VLAN on the same parent is another device: fine
    e.add_network(NetworkSpec::new(
        "c",
        Driver::Ipvlan,
        on_wire(eth, Some(20)),
    ))
    .unwrap();
    assert_eq!(e.network_ids().len(), 2);
}

#[test]
fn c6_ipvlan_on_an_ipvlan_slave_attaches_to_the_slaves_master() {
    let mut l = ipvlan_lab(L2, Bridge, 1);
    let s =
        l.e.add_ipvlan_port(
            LinkRef::Port(l.p[0]),
            "stacked",
            IpvlanAttrs::new(L2, Bridge),
        )
        .unwrap();
    assert_eq!(l.e.port_info(s).unwrap().network, l.net);
    assert_eq!(l.e.network_info(l.net).unwrap().ports.len(), 2);
}

#[test]
fn c7_slave_mac_is_the_parents_and_follows_it() {
    let mut l = ipvlan_lab(L2, Bridge, 2);
    assert!(l.p.iter().all(|p| l.e.port_info(*p).unwrap().mac == M));
    let new = MacAddr([0x02, 0, 0, 0, 0, 0xbb]);
    l.e.set_parent_mac(l.parent, new).unwrap();
    assert!(l.p.iter().all(|p| l.e.port_info(*p).unwrap().mac == new));
    let err =
        l.e.set_port_mac(l.p[0], MacAddr([0x02, 1, 2, 3, 4, 5]))
            .unwrap_err();
    assert_eq!(err.errno, Errno::Eopnotsupp);
}

#[test]
fn c8_slaves_get_distinct_eui64_link_locals_from_dev_id() {
    let l = ipvlan_lab(L2, Bridge, 3);
    let ll: Vec<Ipv6Addr> =
        l.p.iter()
            .map(|p| l.e.port_link_local(*p).unwrap())
            .collect();
    assert_eq!(
        ll[0],
        "fe80::200:0:100:aa".parse::<Ipv6Addr>().unwrap(),
        "MAC[0..3] ‖ dev_id 1 ‖ MAC[3..6], u/l bit kept"
    );
    assert_eq!(ll[1], "fe80::200:0:200:aa".parse::<Ipv6Addr>().unwrap());
    assert!(ll[0] != ll[1] && ll[1] != ll[2] && ll[0] != ll[2]);
    // dev_ids are handed out round-robin: a freed id is not reused at once
    let mut e = l.e;
    e.remove_port(l.p[2]).unwrap();
    let s = e
        .add_ipvlan_port(LinkRef::Network(l.net), "n", IpvlanAttrs::new(L2, Bridge))
        .unwrap();
    assert_eq!(e.port_info(s).unwrap().dev_id, 4);
}

#[test]
fn c9_duplicate_address_on_a_sibling_is_eaddrinuse() {
    let mut l = ipvlan_lab(L2, Bridge, 2);
    for a in [IpAddr::V4(v4(0)), IpAddr::V6(v6(0))] {
        let err = l.e.add_port_addr(l.p[1], a).unwrap_err();
        assert_eq!(err.errno, Errno::Eaddrinuse);
        assert!(err
            .message
            .contains("Address already assigned to an ipvlan device"));
    }
    // also against a down sibling (the validator walks every slave)
    l.e.set_port_up(l.p[0], false).unwrap();
    assert_eq!(
        l.e.add_port_addr(l.p[1], IpAddr::V4(v4(0)))
            .unwrap_err()
            .errno,
        Errno::Eaddrinuse
    );
}

#[test]
fn c10_parent_addresses_on_a_slave_only_when_allowed() {
    // uvlan's default (docs/conformance.md, deviations): refused, and frames for the parent's IP go to the host.
    let mut l = ipvlan_lab(L2, Bridge, 1);
    assert_eq!(
        l.e.add_port_addr(l.p[0], IpAddr::V4(HOST_IP))
            .unwrap_err()
            .errno,
        Errno::Eaddrinuse
    );
    let f = udp(M, X, EXT_IP, HOST_IP);
    assert!(only_host(&l.wire(&f)));
    // Kernel behaviour (opt-in): accepted, and the slave wins the lookup.
    let mut e = Engine::new();
    let parent = e.add_parent(parent_spec()).unwrap();
    let net = e
        .add_network(NetworkSpec {
            allow_parent_addrs: true,
            ..NetworkSpec::new("k", Driver::Ipvlan, on_wire(parent, None))
        })
        .unwrap();
    let s = e
        .add_ipvlan_port(LinkRef::Network(net), "s", IpvlanAttrs::new(L2, Bridge))
        .unwrap();
    e.add_port_addr(s, IpAddr::V4(HOST_IP)).unwrap();
    e.set_port_up(s, true).unwrap();
    assert_eq!(
        e.verdict(&f, Ingress::Wire(parent), &mut gw()).ports(),
        vec![s]
    );
    // removing it hands the address back to the host
    e.del_port_addr(s, IpAddr::V4(HOST_IP)).unwrap();
    assert!(only_host(&e.verdict(&f, Ingress::Wire(parent), &mut gw())));
}

#[test]
fn c11_random_add_del_never_leaves_an_address_with_two_owners() {
    // The engine is single-writer (&mut); replay a long pseudo-random add/del sequence over many
    // ports and check after every step that each address is owned by at most one port and that
    // the lookup agrees with the ports' own lists.
    let mut l = ipvlan_lab(L2, Bridge, 8);
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for _ in 0..5000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let port = l.p[(x % 8) as usize];
        let a = IpAddr::V6(Ipv6Addr::new(
            0x2001,
            0xdb8,
            1,
            0,
            0,
            0,
            0,
            ((x >> 8) % 16) as u16,
        ));
        if x & 0x100 == 0 {
            let _ = l.e.add_port_addr(port, a);
        } else {
            let _ = l.e.del_port_addr(port, a);
        }
        let mut owners = std::collections::HashMap::new();
        for p in &l.p {
            for addr in l.e.port_info(*p).unwrap().addrs {
                assert!(owners.insert(addr, *p).is_none(), "{addr} owned twice");
            }
        }
        let f = build::udp6(
            M,
            X,
            "2001:db8::99".parse().unwrap(),
            match a {
                IpAddr::V6(a) => a,
                _ => unreachable!(),
            },
            (1, 2),
            b"",
        );
        let want = owners.get(&a).copied();
        assert_eq!(l.wire(&f).ports().first().copied(), want);
    }
}

#[test]
fn c12_down_slave_unicast_goes_to_the_parent_stack_and_is_not_switched() {
    let mut l = ipvlan_lab(L2, Bridge, 2);
    l.e.set_port_up(l.p[1], false).unwrap();
    let from_wire = udp(M, X, EXT_IP, v4(1));
    assert!(only_host(&l.wire(&from_wire)));
    let from_sibling = udp(M, M, v4(0), v4(1));
    let v = l.v(&from_sibling, 0);
    assert!(l.ports(&v).is_empty() && v.reaches_host());
    // and a down port sends nothing
    assert_eq!(
        l.v(&from_sibling, 1).drop_reason(),
        Some(DropReason::PortDown)
    );
}

// ---- ipvlan L2 -----------------------------------------------------------------------------

#[test]
fn c13_l2_bridge_unicast_to_a_sibling_reaches_it_only() {
    let l = ipvlan_lab(L2, Bridge, 3);
    let v = l.v(&udp(M, M, v4(0), v4(2)), 0);
    assert_eq!(l.ports(&v), vec![2]);
    assert!(!v.reaches_wire() && !v.reaches_host());
    assert_eq!(v.outputs()[0].pkt_type, PacketType::Host);
}

#[test]
fn c14_arp_reply_is_switched_by_target_ip_not_mac() {
    let l = ipvlan_lab(L2, Bridge, 3);
    let reply = build::arp_reply(M, v4(2), M, v4(0));
    assert_eq!(l.ports(&l.v(&reply, 2)), vec![0]);
    let reply_to_1 = build::arp_reply(M, v4(2), M, v4(1));
    assert_eq!(l.ports(&l.v(&reply_to_1, 2)), vec![1]);
}

#[test]
fn c15_dst_eq_src_to_a_non_slave_ip_goes_to_the_parent_stack_not_the_wire() {
    for flag in [Bridge, Private] {
        let l = ipvlan_lab(L2, flag, 2);
        for dst in [HOST_IP, EXT_IP] {
            let v = l.v(&udp(M, M, v4(0), dst), 0);
            assert!(only_host(&v), "{flag:?} {dst}: {v:?}");
        }
        // non-IP with dst == src too
        let f = build::ethernet(M, M, 0x88b5, &[0; 46]);
        assert!(only_host(&l.v(&f, 0)));
    }
}

#[test]
fn c16_dst_ne_src_goes_to_the_wire_unchanged_whatever_the_flag() {
    for flag in [Bridge, Private, Vepa] {
        let l = ipvlan_lab(L2, flag, 2);
        // even with a sibling's IP and a spoofed source IP
        let v = l.v(&udp(X, M, Ipv4Addr::new(203, 0, 113, 9), v4(1)), 0);
        assert!(only_wire(&v), "{flag:?}");
        assert_eq!(v.outputs()[0].vlan, VlanOp::Keep);
    }
}

#[test]
fn c17_ipvlan_l2_broadcast_reaches_other_ports_and_wire() {
    for flag in [Bridge, Private, Vepa] {
        let l = ipvlan_lab(L2, flag, 3);
        let v = l.v(&bcast_udp(M, v4(1)), 1);
        assert_eq!(l.ports(&v), vec![0, 2], "{flag:?}");
        assert!(v.reaches_wire());
        assert!(!v.reaches_host(), "the parent stack gets no copy");
    }
}

#[test]
fn c18_multicast_reaches_members_and_promisc_siblings_plus_wire() {
    let mut l = ipvlan_lab(L2, Bridge, 4);
    let group = MacAddr([0x01, 0x00, 0x5e, 0, 0, 0xfb]);
    let other = MacAddr([0x01, 0x00, 0x5e, 0, 0, 0x01]);
    l.e.set_port_mc_filter(l.p[1], McFilter::Groups(vec![group]))
        .unwrap();
    l.e.set_port_mc_filter(l.p[2], McFilter::Groups(vec![other]))
        .unwrap();
    // p3 keeps McFilter::All (promisc/allmulti)
    let f = udp(group, M, v4(0), Ipv4Addr::new(224, 0, 0, 251));
    let v = l.v(&f, 0);
    assert_eq!(l.ports(&v), vec![1, 3]);
    assert!(v.reaches_wire());
    // The trace names the port the group skipped, and why.
    let t = crate::trace::trace(&l.e, &f, Ingress::Port(l.p[0]), &mut gw());
    let skipped: Vec<&str> = t
        .steps
        .iter()
        .filter(|s| s.text.contains("skipped"))
        .map(|s| s.text.as_str())
        .collect();
    assert_eq!(skipped.len(), 1, "{t}");
    assert!(
        skipped[0].contains("does not hold 01:00:5e:00:00:fb (not joined)"),
        "{t}"
    );
}

#[test]
fn c19_private_unicast_to_a_sibling_is_dropped() {
    let l = ipvlan_lab(L2, Private, 2);
    assert_eq!(
        l.v(&udp(M, M, v4(0), v4(1)), 0),
        Verdict::Drop(DropReason::PrivateFlag)
    );
}

#[test]
fn c20_vepa_unicast_to_a_sibling_leaves_on_the_wire_only() {
    let l = ipvlan_lab(L2, Vepa, 2);
    let f = udp(M, M, v4(0), v4(1));
    let v = l.v(&f, 0);
    assert!(only_wire(&v), "{v:?}");
}

#[test]
fn c21_broadcast_copies_are_broadcast_other_groups_multicast() {
    let l = ipvlan_lab(L2, Bridge, 2);
    let v = l.v(&bcast_udp(M, v4(0)), 0);
    assert_eq!(v.outputs()[0].pkt_type, PacketType::Broadcast);
    let v = l.v(
        &udp(
            MacAddr([0x01, 0, 0x5e, 1, 2, 3]),
            M,
            v4(0),
            Ipv4Addr::new(239, 1, 2, 3),
        ),
        0,
    );
    assert_eq!(v.outputs()[0].pkt_type, PacketType::Multicast);
    // same from the wire
    let v = l.wire(&bcast_udp(X, EXT_IP));
    assert!(v
        .outputs()
        .iter()
        .filter(|o| matches!(o.target, Target::Port(_)))
        .all(|o| o.pkt_type == PacketType::Broadcast));
}

#[test]
fn c22_pause_frames_are_never_distributed() {
    let l = ipvlan_lab(L2, Bridge, 3);
    let pause = build::ethernet(
        MacAddr([0x01, 0x80, 0xc2, 0, 0, 1]),
        M,
        ethertype::PAUSE,
        &[0, 1, 0xff, 0xff],
    );
    // TX: the whole frame is lost, wire copy included
    assert_eq!(l.v(&pause, 0), Verdict::Drop(DropReason::Pause));
    // RX: only the parent stack
    let pause_in = build::ethernet(
        MacAddr([0x01, 0x80, 0xc2, 0, 0, 1]),
        X,
        ethertype::PAUSE,
        &[0, 1, 0xff, 0xff],
    );
    assert!(only_host(&l.wire(&pause_in)));
}

#[test]
fn c23_wire_unicast_by_dst_ip_arp_target_or_dad_target() {
    let l = ipvlan_lab(L2, Bridge, 3);
    assert_eq!(l.ports(&l.wire(&udp(M, X, EXT_IP, v4(1)))), vec![1]);
    assert_eq!(
        l.ports(&l.wire(&build::arp_reply(X, EXT_IP, M, v4(2)))),
        vec![2]
    );
    assert_eq!(
        l.ports(&l.wire(&build::udp6(
            M,
            X,
            "2001:db8::99".parse().unwrap(),
            v6(0),
            (1, 2),
            b""
        ))),
        vec![0]
    );
    // anything else: the parent stack
    assert!(only_host(&l.wire(&udp(
        M,
        X,
        EXT_IP,
        Ipv4Addr::new(192, 0, 2, 77)
    ))));
    // DAD NS (multicast dst MAC) from the wire is a group frame in L2: flooded, see C24;
    // a unicast DAD probe for a slave's address is delivered by its target
    let mut dad = build::ns(X, Ipv6Addr::UNSPECIFIED, v6(2));
    dad[0..6].copy_from_slice(&M.0);
    assert_eq!(l.ports(&l.wire(&dad)), vec![2]);
}

#[test]
fn c24_wire_group_frames_go_to_the_parent_stack_and_matching_slaves() {
    let mut l = ipvlan_lab(L2, Bridge, 3);
    let group = MacAddr([0x01, 0x00, 0x5e, 0, 0, 0xfb]);
    l.e.set_port_mc_filter(l.p[2], McFilter::Groups(vec![]))
        .unwrap();
    let v = l.wire(&bcast_udp(X, EXT_IP));
    assert_eq!(l.ports(&v), vec![0, 1, 2], "broadcast passes every filter");
    assert!(v.reaches_host());
    let v = l.wire(&udp(group, X, EXT_IP, Ipv4Addr::new(224, 0, 0, 251)));
    assert_eq!(l.ports(&v), vec![0, 1]);
    assert!(v.reaches_host());
}

#[test]
fn c25_hairpinned_slave_broadcast_goes_to_the_parent_stack_only() {
    let l = ipvlan_lab(L2, Bridge, 3);
    // S's own broadcast reflected by the switch: src MAC M, L3 source owned by a slave
    let v = l.wire(&bcast_udp(M, v4(1)));
    assert!(only_host(&v), "{v:?}");
    // ARP from a slave reflected: same (source lookup uses the ARP sender IP)
    let v = l.wire(&build::arp_request(M, v4(0), EXT_IP));
    assert!(only_host(&v));
    // src MAC M but a source IP nobody owns: external
    let v = l.wire(&bcast_udp(M, EXT_IP));
    assert_eq!(l.ports(&v), vec![0, 1, 2]);
}

#[test]
fn c26_parent_loopback_copies_go_to_the_parent_stack_only() {
    let l = ipvlan_lab(L2, Bridge, 2);
    let v = l.e.verdict(
        &bcast_udp(M, HOST_IP),
        Ingress::WireLoopback(l.parent),
        &mut gw(),
    );
    assert!(only_host(&v));
    // The same frame reflected by a switch is external (HOST_IP is no slave's): slaves get it.
    let v = l.wire(&bcast_udp(M, HOST_IP));
    assert_eq!(l.ports(&v), vec![0, 1]);
    // There is no ingress for the parent's own transmit path: it never reaches a slave.
}

// ---- ipvlan L3 / L3S -----------------------------------------------------------------------

#[test]
fn c27_l3_unicast_switched_whatever_dst_mac_private_drops_vepa_routes() {
    for mode in [L3, L3s] {
        let l = ipvlan_lab(mode, Bridge, 2);
        let v = l.v(&udp(M, M, v4(0), v4(1)), 0);
        assert_eq!(
            (l.ports(&v), v.outputs()[0].pkt_type),
            (vec![1], PacketType::Host)
        );
        let v = l.v(&udp(X, M, v4(0), v4(1)), 0);
        assert_eq!(
            (l.ports(&v), v.outputs()[0].pkt_type),
            (vec![1], PacketType::OtherHost),
            "T's stack discards it"
        );
        let v = l.v(&udp(MacAddr::BROADCAST, M, v4(0), v4(1)), 0);
        assert_eq!(
            (l.ports(&v), v.outputs()[0].pkt_type),
            (vec![1], PacketType::Broadcast)
        );
        let l = ipvlan_lab(mode, Private, 2);
        assert_eq!(
            l.v(&udp(M, M, v4(0), v4(1)), 0),
            Verdict::Drop(DropReason::PrivateFlag)
        );
        let l = ipvlan_lab(mode, Vepa, 2);
        let v = l.v(&udp(M, M, v4(0), v4(1)), 0);
        assert_eq!(v.outputs().len(), 1);
        assert_eq!(
            v.outputs()[0].target,
            Target::Routed {
                parent: l.parent,
                dst: IpAddr::V4(v4(1)),
                next_hop: X
            }
        );
    }
}

#[test]
fn c28_l3_group_dst_mac_not_matched_is_dropped() {
    for mode in [L3, L3s] {
        for flag in [Bridge, Private, Vepa] {
            let l = ipvlan_lab(mode, flag, 3);
            assert_eq!(
                l.v(&bcast_udp(M, v4(0)), 0),
                Verdict::Drop(DropReason::L3Multicast)
            );
            let mc = udp(
                MacAddr([0x01, 0, 0x5e, 0, 0, 1]),
                M,
                v4(0),
                Ipv4Addr::new(224, 0, 0, 1),
            );
            assert_eq!(l.v(&mc, 0), Verdict::Drop(DropReason::L3Multicast));
            assert_eq!(
                l.v(&build::rs(M, "fe80::1".parse().unwrap()), 0),
                Verdict::Drop(DropReason::L3Multicast)
            );
        }
    }
}

#[test]
fn c29_l3_routed_unless_route_type_is_broadcast_or_multicast() {
    let l = ipvlan_lab(L3, Bridge, 1);
    let v = l.v(&udp(M, M, v4(0), EXT_IP), 0);
    assert_eq!(
        v.outputs()[0].target,
        Target::Routed {
            parent: l.parent,
            dst: IpAddr::V4(EXT_IP),
            next_hop: X
        }
    );
    // NOARP: a broadcast IPv4 destination gets the unicast MAC M, then dies on route type
    assert_eq!(
        l.v(&udp(M, M, v4(0), Ipv4Addr::BROADCAST), 0),
        Verdict::Drop(DropReason::L3RouteType)
    );
    assert_eq!(
        l.v(&udp(M, M, v4(0), Ipv4Addr::new(239, 0, 0, 1)), 0),
        Verdict::Drop(DropReason::L3RouteType)
    );
    // IPv6 has no route-type filter
    let f = build::udp6(
        M,
        M,
        v6(0),
        "2001:db8:ffff::1".parse().unwrap(),
        (1, 2),
        b"",
    );
    assert!(matches!(
        l.v(&f, 0).outputs()[0].target,
        Target::Routed { .. }
    ));
}

#[test]
fn c30_l3_non_ip_dropped_except_arp_to_a_sibling_with_bridge() {
    for mode in [L3, L3s] {
        let l = ipvlan_lab(mode, Bridge, 2);
        assert_eq!(
            l.v(&build::ethernet(M, M, 0x88cc, &[0; 46]), 0),
            Verdict::Drop(DropReason::L3NonIp)
        );
        let arp = build::arp_reply(M, v4(0), M, v4(1));
        assert_eq!(l.ports(&l.v(&arp, 0)), vec![1]);
        let arp_out = build::arp_reply(M, v4(0), X, EXT_IP);
        assert_eq!(l.v(&arp_out, 0), Verdict::Drop(DropReason::L3NonIp));
        let l = ipvlan_lab(mode, Private, 2);
        assert_eq!(l.v(&arp, 0), Verdict::Drop(DropReason::PrivateFlag));
        let l = ipvlan_lab(mode, Vepa, 2);
        assert_eq!(l.v(&arp, 0), Verdict::Drop(DropReason::L3NonIp));
    }
}

#[test]
fn c31_l3_external_egress_is_routed_via_the_parent_ttl_unchanged() {
    let l = ipvlan_lab_on(Some(20), L3, Bridge, 1);
    // a spoofed source IP is not validated
    let f = udp(M, M, Ipv4Addr::new(203, 0, 113, 1), EXT_IP);
    let v = l.v(&f, 0);
    assert_eq!(
        v.outputs(),
        &[Output {
            target: Target::Routed {
                parent: l.parent,
                dst: IpAddr::V4(EXT_IP),
                next_hop: X
            },
            vlan: VlanOp::Push(20),
            pkt_type: PacketType::Outgoing
        }]
    );
    // the engine never edits the frame: TTL and addresses are the I/O layer's to keep
}

#[test]
fn c32_l3_arp_for_a_slave_is_stolen_l3s_leaves_it_to_the_parent() {
    let l = ipvlan_lab(L3, Bridge, 2);
    let req = build::arp_request(X, EXT_IP, v4(1));
    let v = l.wire(&req);
    assert_eq!(l.ports(&v), vec![1], "stolen; the NOARP slave discards it");
    assert!(!v.reaches_host());
    assert!(l.e.port_info(l.p[1]).unwrap().noarp);
    let l = ipvlan_lab(L3s, Bridge, 2);
    assert!(only_host(&l.wire(&req)));
}

#[test]
fn c33_l3_wire_multicast_and_broadcast_ip_never_reach_slaves() {
    for mode in [L3, L3s] {
        let l = ipvlan_lab(mode, Bridge, 2);
        assert!(only_host(&l.wire(&bcast_udp(X, EXT_IP))));
        assert!(only_host(&l.wire(&udp(
            MacAddr([1, 0, 0x5e, 0, 0, 1]),
            X,
            EXT_IP,
            Ipv4Addr::new(224, 0, 0, 1)
        ))));
        assert!(only_host(
            &l.wire(&build::ra(X, "fe80::1".parse().unwrap()))
        ));
    }
}

#[test]
fn c34_l3s_inbound_for_a_slave_reaches_it_after_the_parent_hooks() {
    // The netfilter hooks themselves are the host's; the engine decides delivery only.
    let l = ipvlan_lab(L3s, Bridge, 2);
    let v = l.wire(&udp(M, X, EXT_IP, v4(1)));
    assert_eq!(l.ports(&v), vec![1]);
    // ip_rcv drops PACKET_OTHERHOST before l3mdev sees it
    assert!(only_host(&l.wire(&udp(X, X, EXT_IP, v4(1)))));
    let l = ipvlan_lab(L3, Bridge, 2);
    assert_eq!(
        l.ports(&l.wire(&udp(X, X, EXT_IP, v4(1)))),
        vec![1],
        "L3 steals in the rx_handler"
    );
}

#[test]
fn c35_l3_resolution_ns_and_ra_never_reach_slaves_dad_ns_does() {
    let l = ipvlan_lab(L3, Bridge, 2);
    assert!(only_host(&l.wire(&build::ns(
        X,
        "2001:db8::99".parse().unwrap(),
        v6(1)
    ))));
    assert!(only_host(
        &l.wire(&build::ra(X, "fe80::1".parse().unwrap()))
    ));
    let dad = build::ns(X, Ipv6Addr::UNSPECIFIED, v6(1));
    assert_eq!(l.ports(&l.wire(&dad)), vec![1]);
    // the solicited-node MAC does not matter in L3: the key is the target
    assert_eq!(&dad[0..6], &ipv6_mcast_mac(solicited_node(v6(1))).0);
}

// ---- reachability --------------------------------------------------------------------------

#[test]
fn c36_the_parent_cannot_reach_a_slave_ip() {
    // The engine has no transmit hook on the parent: what the host sends (its ARP for a slave
    // IP, its unicast) leaves on the wire. The only host frames the engine sees are the
    // looped-back copies of its own broadcast/multicast, and they reach no slave in any mode.
    for mode in [L2, L3, L3s] {
        let l = ipvlan_lab(mode, Bridge, 2);
        for f in [
            bcast_udp(M, HOST_IP),
            udp(
                MacAddr([1, 0, 0x5e, 0, 0, 1]),
                M,
                HOST_IP,
                Ipv4Addr::new(224, 0, 0, 1),
            ),
        ] {
            let v = l.e.verdict(&f, Ingress::WireLoopback(l.parent), &mut gw());
            assert!(only_host(&v), "{mode:?}: {v:?}");
        }
    }
}

#[test]
fn c37_l3_echo_to_the_parents_ip_reaches_the_parent_stack() {
    let l = ipvlan_lab(L3, Bridge, 1);
    let v = l.v(&build::icmp4_echo(M, M, v4(0), HOST_IP, 1), 0);
    assert!(only_host(&v), "RTN_LOCAL: the parent gets the request");
    // its reply leaves on the parent's transmit path: no ingress, so it never reaches S
}

#[test]
fn c38_host_side_slave_with_the_host_ip_talks_both_ways() {
    for mode in [L2, L3] {
        let mut e = Engine::new();
        let parent = e.add_parent(parent_spec()).unwrap();
        let net = e
            .add_network(NetworkSpec {
                allow_parent_addrs: true,
                ..NetworkSpec::new("k", Driver::Ipvlan, on_wire(parent, None))
            })
            .unwrap();
        let h = e
            .add_ipvlan_port(
                LinkRef::Network(net),
                "shim",
                IpvlanAttrs::new(mode, Bridge),
            )
            .unwrap();
        let s = e
            .add_ipvlan_port(LinkRef::Network(net), "s", IpvlanAttrs::new(mode, Bridge))
            .unwrap();
        e.add_port_addr(h, IpAddr::V4(HOST_IP)).unwrap();
        e.add_port_addr(s, IpAddr::V4(v4(0))).unwrap();
        e.set_port_up(h, true).unwrap();
        e.set_port_up(s, true).unwrap();
        assert_eq!(
            e.verdict(&udp(M, M, HOST_IP, v4(0)), Ingress::Port(h), &mut gw())
                .ports(),
            vec![s]
        );
        assert_eq!(
            e.verdict(&udp(M, M, v4(0), HOST_IP), Ingress::Port(s), &mut gw())
                .ports(),
            vec![h]
        );
    }
}

// ---- macvlan configuration -----------------------------------------------------------------

#[test]
fn c39_no_mode_attribute_gives_vepa_with_a_random_mac() {
    let mut l = macvlan_lab(&[]);
    let a =
        l.e.add_macvlan_port(LinkRef::Network(l.net), "a", MacvlanAttrs::default())
            .unwrap();
    let b =
        l.e.add_macvlan_port(LinkRef::Network(l.net), "b", MacvlanAttrs::default())
            .unwrap();
    let (ia, ib) = (l.e.port_info(a).unwrap(), l.e.port_info(b).unwrap());
    assert_eq!(ia.macvlan_mode, Some(MacvlanMode::Vepa));
    assert!(ia.mac.is_valid_unicast() && ia.mac.is_local_admin());
    assert_ne!(ia.mac, ib.mac);
}

#[test]
fn c40_invalid_mode_or_flags_einval_bad_mac_eaddrnotavail() {
    let mut l = macvlan_lab(&[MacvlanMode::Bridge]);
    let cases: Vec<(MacvlanAttrs, Errno)> = vec![
        (
            MacvlanAttrs {
                mode: Some(3),
                ..Default::default()
            },
            Errno::Einval,
        ),
        (
            MacvlanAttrs {
                mode: Some(32),
                ..Default::default()
            },
            Errno::Einval,
        ),
        (
            MacvlanAttrs {
                flags: Some(4),
                ..Default::default()
            },
            Errno::Einval,
        ),
        (
            MacvlanAttrs {
                address: Some(vec![1, 0, 0x5e, 0, 0, 1]),
                ..Default::default()
            },
            Errno::Eaddrnotavail,
        ),
        (
            MacvlanAttrs {
                address: Some(vec![0; 6]),
                ..Default::default()
            },
            Errno::Eaddrnotavail,
        ),
        (
            MacvlanAttrs {
                address: Some(vec![2, 0, 0]),
                ..Default::default()
            },
            Errno::Einval,
        ),
        (
            MacvlanAttrs {
                macaddr_count: Some(1),
                mode: Some(16),
                ..Default::default()
            },
            Errno::Einval,
        ),
        (
            MacvlanAttrs {
                macaddr_mode: Some(9),
                mode: Some(16),
                ..Default::default()
            },
            Errno::Einval,
        ),
    ];
    for (attrs, errno) in cases {
        assert_eq!(
            l.e.add_macvlan_port(LinkRef::Network(l.net), "x", attrs.clone())
                .unwrap_err()
                .errno,
            errno,
            "{attrs:?}"
        );
    }
    assert_eq!(l.e.network_info(l.net).unwrap().ports.len(), 1);
}

#[test]
fn c41_up_or_mac_change_fails_eaddrinuse_against_lower_or_up_sibling() {
    let mut l = macvlan_lab(&[MacvlanMode::Bridge]);
    // creating with a duplicate MAC succeeds ...
    let dup =
        l.e.add_macvlan_port(
            LinkRef::Network(l.net),
            "dup",
            MacvlanAttrs::new(MacvlanMode::Bridge, Some(mmac(0))),
        )
        .unwrap();
    // ... bringing it up fails
    assert_eq!(
        l.e.set_port_up(dup, true).unwrap_err().errno,
        Errno::Eaddrinuse
    );
    // the lower's own MAC
    let low =
        l.e.add_macvlan_port(
            LinkRef::Network(l.net),
            "low",
            MacvlanAttrs::new(MacvlanMode::Bridge, Some(M)),
        )
        .unwrap();
    assert_eq!(
        l.e.set_port_up(low, true).unwrap_err().errno,
        Errno::Eaddrinuse
    );
    // setting a MAC (the device down) to an up sibling's: refused
    assert_eq!(
        l.e.set_port_mac(low, mmac(0)).unwrap_err().errno,
        Errno::Eaddrinuse
    );
    // a down macvlan's MAC is not reserved
    l.e.set_port_up(l.p[0], false).unwrap();
    l.e.set_port_up(dup, true).unwrap();
    // changing the lower's own MAC is not checked
    l.e.set_parent_mac(l.parent, mmac(0)).unwrap();
}

#[test]
fn c42_passthru_needs_an_empty_lower_and_cannot_be_toggled() {
    let mut l = macvlan_lab(&[MacvlanMode::Bridge]);
    let err =
        l.e.add_macvlan_port(
            LinkRef::Network(l.net),
            "pt",
            MacvlanAttrs::new(MacvlanMode::Passthru, None),
        )
        .unwrap_err();
    assert_eq!(err.errno, Errno::Einval);
    let mut p = macvlan_lab(&[MacvlanMode::Passthru]);
    assert_eq!(
        p.e.add_macvlan_port(
            LinkRef::Network(p.net),
            "x",
            MacvlanAttrs::new(MacvlanMode::Bridge, Some(mmac(5)))
        )
        .unwrap_err()
        .errno,
        Errno::Einval
    );
    assert_eq!(
        p.e.macvlan_changelink(
            p.p[0],
            MacvlanAttrs {
                mode: Some(4),
                ..Default::default()
            }
        )
        .unwrap_err()
        .errno,
        Errno::Einval
    );
    assert_eq!(
        l.e.macvlan_changelink(
            l.p[0],
            MacvlanAttrs {
                mode: Some(8),
                ..Default::default()
            }
        )
        .unwrap_err()
        .errno,
        Errno::Einval
    );
}

#[test]
fn c43_passthru_shares_the_lower_mac_promisc_and_restores_on_delete() {
    let mut e = Engine::new();
    let parent = e.add_parent(parent_spec()).unwrap();
    let net = e
        .add_network(NetworkSpec::new(
            "pt",
            Driver::Macvlan,
            on_wire(parent, None),
        ))
        .unwrap();
    let p = e
        .add_macvlan_port(
            LinkRef::Network(net),
            "pt",
            MacvlanAttrs::new(MacvlanMode::Passthru, None),
        )
        .unwrap();
    assert_eq!(e.port_info(p).unwrap().mac, M);
    assert!(e.parent_info(parent).unwrap().promisc);
    let new = MacAddr([0x02, 9, 9, 9, 9, 9]);
    e.set_port_mac(p, new).unwrap();
    assert_eq!(
        e.parent_info(parent).unwrap().mac,
        new,
        "a MAC change on passthru changes the lower"
    );
    e.remove_port(p).unwrap();
    let info = e.parent_info(parent).unwrap();
    assert_eq!((info.mac, info.promisc), (M, false));
    // nopromisc keeps the lower out of promiscuous mode
    let attrs = MacvlanAttrs {
        flags: Some(MACVLAN_FLAG_NOPROMISC),
        ..MacvlanAttrs::new(MacvlanMode::Passthru, None)
    };
    e.add_macvlan_port(LinkRef::Network(net), "pt2", attrs)
        .unwrap();
    assert!(!e.parent_info(parent).unwrap().promisc);
}

#[test]
fn c44_macvlan_on_macvlan_attaches_to_the_lower_and_drivers_do_not_mix() {
    let mut l = macvlan_lab(&[MacvlanMode::Bridge]);
    let s =
        l.e.add_macvlan_port(
            LinkRef::Port(l.p[0]),
            "stacked",
            MacvlanAttrs::new(MacvlanMode::Bridge, Some(mmac(7))),
        )
        .unwrap();
    assert_eq!(l.e.port_info(s).unwrap().network, l.net);
    assert_eq!(
        l.e.add_ipvlan_port(LinkRef::Network(l.net), "i", IpvlanAttrs::new(L2, Bridge))
            .unwrap_err()
            .errno,
        Errno::Ebusy
    );
    let mut i = ipvlan_lab(L2, Bridge, 1);
    assert_eq!(
        i.e.add_macvlan_port(LinkRef::Network(i.net), "m", MacvlanAttrs::default())
            .unwrap_err()
            .errno,
        Errno::Ebusy
    );
}

#[test]
fn c45_mtu_above_lower_einval_and_lower_shrink_clamps_larger_only() {
    let mut l = macvlan_lab(&[MacvlanMode::Bridge, MacvlanMode::Bridge]);
    let attrs = MacvlanAttrs {
        mtu: Some(1501),
        ..MacvlanAttrs::new(MacvlanMode::Bridge, Some(mmac(9)))
    };
    assert_eq!(
        l.e.add_macvlan_port(LinkRef::Network(l.net), "big", attrs)
            .unwrap_err()
            .errno,
        Errno::Einval
    );
    assert_eq!(
        l.e.set_port_mtu(l.p[0], 9000).unwrap_err().errno,
        Errno::Einval
    );
    l.e.set_port_mtu(l.p[1], 1200).unwrap();
    l.e.set_parent_mtu(l.parent, 1400).unwrap();
    assert_eq!(l.e.port_info(l.p[0]).unwrap().mtu, 1400);
    assert_eq!(l.e.port_info(l.p[1]).unwrap().mtu, 1200);
    l.e.set_parent_mtu(l.parent, 9000).unwrap();
    assert_eq!(
        l.e.port_info(l.p[0]).unwrap().mtu,
        1400,
        "growth never raises them"
    );
}

// ---- macvlan data path ---------------------------------------------------------------------

use MacvlanMode::{Bridge as MB, Passthru as MP, Private as MPriv, Source as MS, Vepa as MV};

#[test]
fn c46_bridge_to_bridge_unicast_is_local_and_absent_from_the_wire() {
    let l = macvlan_lab(&[MB, MB]);
    let v = l.v(&udp(mmac(1), mmac(0), v4(0), v4(1)), 0);
    assert_eq!(l.ports(&v), vec![1]);
    assert!(!v.reaches_wire() && !v.reaches_host());
    assert_eq!(v.outputs()[0].pkt_type, PacketType::Host);
}

#[test]
fn c47_bridge_to_non_bridge_sibling_or_lower_mac_goes_to_the_wire() {
    let l = macvlan_lab(&[MB, MV, MPriv]);
    for dst in [mmac(1), mmac(2), M, X] {
        assert!(
            only_wire(&l.v(&udp(dst, mmac(0), v4(0), v4(1)), 0)),
            "{dst}"
        );
    }
}

#[test]
fn c48_bridge_broadcast_reaches_other_bridge_ports_and_the_wire_only() {
    let l = macvlan_lab(&[MB, MB, MV, MPriv, MB]);
    let v = l.v(&bcast_udp(mmac(0), v4(0)), 0);
    assert_eq!(l.ports(&v), vec![1, 4]);
    assert!(v.reaches_wire() && !v.reaches_host());
}

#[test]
fn c49_vepa_private_passthru_source_never_deliver_locally() {
    let l = macvlan_lab(&[MV, MPriv, MS, MB]);
    for from in 0..3 {
        for f in [
            udp(mmac(3), mmac(from), v4(from), v4(3)),
            bcast_udp(mmac(from), v4(from)),
        ] {
            assert!(only_wire(&l.v(&f, from)), "from {from}");
        }
    }
    let p = macvlan_lab(&[MP]);
    assert!(only_wire(&p.v(&bcast_udp(M, v4(0)), 0)));
}

#[test]
fn c50_external_unicast_to_a_macvlan_mac_is_host_typed_unknown_goes_to_lower() {
    let l = macvlan_lab(&[MB, MV]);
    let v = l.wire(&udp(mmac(1), X, EXT_IP, v4(1)));
    assert_eq!(l.ports(&v), vec![1]);
    assert_eq!(v.outputs()[0].pkt_type, PacketType::Host);
    assert!(!v.reaches_host());
    assert!(only_host(&l.wire(&udp(
        MacAddr([2, 7, 7, 7, 7, 7]),
        X,
        EXT_IP,
        v4(1)
    ))));
    assert!(only_host(&l.wire(&udp(M, X, EXT_IP, HOST_IP))));
}

#[test]
fn c51_passthru_gets_every_unicast_frame() {
    let l = macvlan_lab(&[MP]);
    for dst in [M, X, MacAddr([2, 7, 7, 7, 7, 7])] {
        let v = l.wire(&udp(dst, X, EXT_IP, v4(0)));
        assert_eq!(l.ports(&v), vec![0]);
        assert_eq!(v.outputs()[0].pkt_type, PacketType::Host);
    }
    let mut l = l;
    l.e.set_port_up(l.p[0], false).unwrap();
    assert_eq!(
        l.wire(&udp(M, X, EXT_IP, v4(0))),
        Verdict::Drop(DropReason::PassthruDown)
    );
}

#[test]
fn c52_external_broadcast_reaches_every_non_source_macvlan_and_the_lower() {
    let mut l = macvlan_lab(&[MB, MV, MPriv, MS]);
    let v = l.wire(&bcast_udp(X, EXT_IP));
    assert_eq!(l.ports(&v), vec![0, 1, 2]);
    assert!(v.reaches_host());
    let group = MacAddr([0x33, 0x33, 0, 0, 0, 1]);
    l.e.set_port_mc_filter(l.p[1], McFilter::Groups(vec![]))
        .unwrap();
    let v = l.wire(&build::ra(X, "fe80::1".parse().unwrap()));
    assert_eq!(&build::ra(X, "fe80::1".parse().unwrap())[0..6], &group.0);
    assert_eq!(l.ports(&v), vec![0, 2]);
}

#[test]
fn macvlan_group_frames_skip_bridge_ports_that_did_not_join_and_the_trace_says_so() {
    let mut l = macvlan_lab(&[MB, MB, MB]);
    let group = MacAddr([0x33, 0x33, 0xff, 0, 0, 0x77]);
    l.e.set_port_mc_filter(l.p[2], McFilter::from_ip_groups(false, &[]))
        .unwrap();
    let f = udp(group, mmac(0), v4(0), v4(1));
    let v = l.v(&f, 0);
    assert_eq!(l.ports(&v), vec![1], "{v:?}");
    // A broadcast still reaches it (both drivers always accept broadcast).
    assert_eq!(l.ports(&l.v(&bcast_udp(mmac(0), v4(0)), 0)), vec![1, 2]);
    let t = crate::trace::trace(&l.e, &f, Ingress::Port(l.p[0]), &mut gw());
    assert!(
        format!("{t}").contains("does not hold 33:33:ff:00:00:77 (not joined)"),
        "{t}"
    );
}

#[test]
fn c53_hairpinned_vepa_broadcast_reaches_vepa_and_bridge_except_the_source() {
    let l = macvlan_lab(&[MV, MV, MB, MPriv]);
    let v = l.wire(&bcast_udp(mmac(0), v4(0)));
    assert_eq!(l.ports(&v), vec![1, 2]);
    assert!(v.reaches_host());
}

#[test]
fn c54_hairpinned_private_broadcast_reaches_its_source_only() {
    let l = macvlan_lab(&[MPriv, MV, MB]);
    let v = l.wire(&bcast_udp(mmac(0), v4(0)));
    assert_eq!(l.ports(&v), vec![0]);
    assert!(!v.reaches_host());
}

#[test]
fn c55_broadcast_with_a_bridge_ports_mac_reaches_vepa_and_lower_only_as_on_6_18() {
    let l = macvlan_lab(&[MB, MB, MV, MPriv]);
    let v = l.wire(&bcast_udp(mmac(0), v4(0)));
    assert_eq!(l.ports(&v), vec![2]);
    assert!(v.reaches_host());
    // a source-mode owner gets it alone (the C54 rule)
    let mut s = macvlan_lab(&[MS, MV]);
    s.e.set_port_up(s.p[0], true).unwrap();
    assert_eq!(s.ports(&s.wire(&bcast_udp(mmac(0), v4(0)))), vec![0]);
}

#[test]
fn c57_source_mode_clones_by_source_mac_and_nodst_consumes() {
    let remote = MacAddr([0x02, 0x0a, 0, 0, 0, 1]);
    let mut l = macvlan_lab(&[MB]);
    let add = MacvlanAttrs {
        macaddr_mode: Some(0),
        macaddrs: vec![remote.0.to_vec()],
        ..MacvlanAttrs::new(MS, Some(mmac(5)))
    };
    let s =
        l.e.add_macvlan_port(LinkRef::Network(l.net), "src", add)
            .unwrap();
    l.e.set_port_up(s, true).unwrap();
    // unicast from the listed source to the bridge port: clone to src (OTHERHOST classification
    // of the lower), then normal delivery
    let f = udp(mmac(0), remote, EXT_IP, v4(0));
    let v = l.wire(&f);
    assert_eq!(v.ports(), vec![s, l.p[0]]);
    assert_eq!(v.outputs()[0].pkt_type, PacketType::OtherHost);
    // addressed to the source device's own MAC: HOST for the clone, then the lower (C58)
    let v = l.wire(&udp(mmac(5), remote, EXT_IP, v4(0)));
    assert_eq!(v.ports(), vec![s]);
    assert_eq!(v.outputs()[0].pkt_type, PacketType::Host);
    assert!(v.reaches_host());
    // nodst: consumed after the clone
    l.e.macvlan_changelink(
        s,
        MacvlanAttrs {
            flags: Some(MACVLAN_FLAG_NODST),
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(l.wire(&f).ports(), vec![s]);
    assert!(!l.wire(&f).reaches_host());
    assert_eq!(l.wire(&bcast_udp(remote, EXT_IP)).ports(), vec![s]);
    // nodst while down: nobody gets it
    l.e.set_port_up(s, false).unwrap();
    assert_eq!(l.wire(&f), Verdict::Drop(DropReason::SourceNodst));
    // other sources are unaffected
    assert_eq!(l.ports(&l.wire(&udp(mmac(0), X, EXT_IP, v4(0)))), vec![0]);
}

#[test]
fn c58_unicast_to_a_source_mode_macvlans_own_mac_goes_to_the_lower() {
    let l = macvlan_lab(&[MS, MB]);
    assert!(only_host(&l.wire(&udp(mmac(0), X, EXT_IP, v4(0)))));
}

#[test]
fn c59_source_lists_only_in_source_mode_and_flushed_on_leaving_it() {
    let mut l = macvlan_lab(&[MB]);
    let list = MacvlanAttrs {
        macaddr_mode: Some(0),
        macaddrs: vec![vec![2, 0xa, 0, 0, 0, 1]],
        ..Default::default()
    };
    assert_eq!(
        l.e.macvlan_changelink(l.p[0], list.clone())
            .unwrap_err()
            .errno,
        Errno::Einval
    );
    let s =
        l.e.add_macvlan_port(
            LinkRef::Network(l.net),
            "s",
            MacvlanAttrs {
                mode: Some(16),
                address: Some(mmac(6).0.to_vec()),
                ..list.clone()
            },
        )
        .unwrap();
    assert_eq!(l.e.port_info(s).unwrap().sources.len(), 1);
    // SET replaces, DEL removes, FLUSH empties
    let set = MacvlanAttrs {
        macaddr_mode: Some(3),
        macaddrs: vec![vec![2, 0xb, 0, 0, 0, 1], vec![2, 0xb, 0, 0, 0, 2]],
        ..Default::default()
    };
    l.e.macvlan_changelink(s, set).unwrap();
    assert_eq!(l.e.port_info(s).unwrap().sources.len(), 2);
    l.e.macvlan_changelink(
        s,
        MacvlanAttrs {
            macaddr_mode: Some(1),
            macaddrs: vec![vec![2, 0xb, 0, 0, 0, 1]],
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(
        l.e.port_info(s).unwrap().sources,
        vec![MacAddr([2, 0xb, 0, 0, 0, 2])]
    );
    l.e.macvlan_changelink(
        s,
        MacvlanAttrs {
            mode: Some(4),
            ..Default::default()
        },
    )
    .unwrap();
    assert!(
        l.e.port_info(s).unwrap().sources.is_empty(),
        "leaving source mode flushes"
    );
}

#[test]
fn c60_broadcast_queue_length_is_the_max_of_requests_default_1000() {
    let mut l = macvlan_lab(&[MB]);
    assert_eq!(l.e.network_info(l.net).unwrap().bc_queue_len, 1000);
    l.e.add_macvlan_port(
        LinkRef::Network(l.net),
        "q",
        MacvlanAttrs {
            bc_queue_len: Some(4000),
            ..MacvlanAttrs::new(MB, Some(mmac(8)))
        },
    )
    .unwrap();
    l.e.macvlan_changelink(
        l.p[0],
        MacvlanAttrs {
            bc_queue_len: Some(200),
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(l.e.network_info(l.net).unwrap().bc_queue_len, 4000);
}

#[test]
fn c61_no_macvlan_mode_lets_host_and_macvlan_talk_without_a_hairpin() {
    for mode in [MB, MV, MPriv, MS] {
        let l = macvlan_lab(&[mode]);
        // macvlan → lower's MAC: the wire, never the host stack
        let v = l.v(&udp(M, mmac(0), v4(0), HOST_IP), 0);
        assert!(only_wire(&v), "{mode:?}");
        // the host's own frame to the macvlan: no transmit hook; its looped-back copy is
        // passed only
        let v = l.e.verdict(
            &bcast_udp(M, HOST_IP),
            Ingress::WireLoopback(l.parent),
            &mut gw(),
        );
        assert!(only_host(&v));
    }
    // with a hairpinning switch: the frame comes back with dst = the lower's MAC → the host,
    // and with dst = V's MAC → V
    let l = macvlan_lab(&[MB]);
    assert!(only_host(&l.wire(&udp(M, mmac(0), v4(0), HOST_IP))));
    assert_eq!(l.ports(&l.wire(&udp(mmac(0), M, HOST_IP, v4(0)))), vec![0]);
}

// ---- shared lifecycle ----------------------------------------------------------------------

#[test]
fn c62_deleting_the_parent_deletes_slaves_and_operstate_follows_it() {
    let mut l = ipvlan_lab_on(Some(20), L2, Bridge, 2);
    l.e.set_parent_up(l.parent, false).unwrap();
    assert!(!l.e.port_info(l.p[0]).unwrap().oper_up);
    assert_eq!(
        l.v(&udp(M, M, v4(0), v4(1)), 0),
        Verdict::Drop(DropReason::ParentDown)
    );
    assert_eq!(
        l.wire(&udp(M, X, EXT_IP, v4(1))),
        Verdict::Drop(DropReason::ParentDown)
    );
    l.e.set_parent_up(l.parent, true).unwrap();
    assert!(l.e.port_info(l.p[0]).unwrap().oper_up);
    let (nets, ports) = l.e.remove_parent(l.parent).unwrap();
    assert_eq!((nets.len(), ports.len()), (1, 2));
    assert!(l.e.port_info(l.p[0]).is_none() && l.e.network_info(l.net).is_none());
}

#[test]
fn c63_ipvlan_mtu_resets_to_the_parents_on_every_change() {
    let mut l = ipvlan_lab(L2, Bridge, 2);
    l.e.set_port_mtu(l.p[0], 9000).unwrap();
    assert_eq!(
        l.e.port_info(l.p[0]).unwrap().mtu,
        9000,
        "a slave may exceed the parent"
    );
    l.e.set_parent_mtu(l.parent, 1400).unwrap();
    assert!(l.p.iter().all(|p| l.e.port_info(*p).unwrap().mtu == 1400));
    l.e.set_parent_mtu(l.parent, 1500).unwrap();
    assert!(l.p.iter().all(|p| l.e.port_info(*p).unwrap().mtu == 1500));
}

/// A UDP frame of `len` bytes (Ethernet header included) from port `from` to `to`.
fn udp_of_len(
    dst_mac: MacAddr,
    src_mac: MacAddr,
    from: usize,
    to: Ipv4Addr,
    len: usize,
) -> Vec<u8> {
    // Ethernet 14 + IPv4 20 + UDP 8 around the payload.
    build::udp4(
        dst_mac,
        src_mac,
        v4(from),
        to,
        (4000, 5000),
        &vec![0x55; len - 42],
    )
}

#[test]
fn c66_port_to_port_longer_than_the_receivers_mtu_is_dropped_gso_exempt() {
    // is_skb_forwardable: len <= mtu + hard_header_len (14) + VLAN_HLEN (4).
    for mut l in [ipvlan_lab(L2, Bridge, 3), macvlan_lab(&[MB, MB, MB])] {
        let macvlan = l.e.port_info(l.p[0]).unwrap().macvlan_mode.is_some();
        let mac = |i: usize| if macvlan { mmac(i) } else { M };
        l.e.set_port_mtu(l.p[1], 1280).unwrap();
        let fits = udp_of_len(mac(1), mac(0), 0, v4(1), 1280 + 18);
        assert_eq!(l.ports(&l.v(&fits, 0)), vec![1]);
        let long = udp_of_len(mac(1), mac(0), 0, v4(1), 1280 + 19);
        assert_eq!(
            l.v(&long, 0),
            Verdict::Drop(DropReason::MtuExceeded),
            "the receiver's MTU"
        );
        // The sender's own MTU does not matter, the receiver's does: 1514 bytes fit port 2.
        let full = udp_of_len(mac(2), mac(0), 0, v4(2), 1514);
        assert_eq!(l.ports(&l.v(&full, 0)), vec![2]);
        // A GSO super-frame passes whatever its length (skb_is_gso).
        let mut out = Outputs::default();
        l.e.decide_gso(&long, true, Ingress::Port(l.p[0]), &mut gw(), &mut out)
            .unwrap();
        assert_eq!(out.as_slice()[0].target, Target::Port(l.p[1]));
        // A flood reaches the ports it fits.
        let mut b = bcast_udp(mac(0), v4(0));
        let pad = 1300 - b.len();
        b.extend(std::iter::repeat_n(0u8, pad));
        let v = l.v(&b, 0);
        assert!(
            l.ports(&v).contains(&2) && !l.ports(&v).contains(&1),
            "{v:?}"
        );
        // The trace names the rule.
        let t = crate::trace::trace(&l.e, &long, Ingress::Port(l.p[0]), &mut gw());
        assert!(format!("{t}").contains("is_skb_forwardable"), "{t}");
    }
}

#[test]
fn c66_from_the_wire_no_mtu_rule_applies() {
    // RX_HANDLER_ANOTHER / netif_rx: the drivers do not judge the slave's MTU from the wire.
    let mut l = ipvlan_lab(L2, Bridge, 2);
    l.e.set_port_mtu(l.p[1], 1280).unwrap();
    let f = udp_of_len(M, X, 0, v4(1), 1514);
    assert_eq!(l.ports(&l.wire(&f)), vec![1]);
}

#[test]
fn c67_port_to_wire_longer_than_the_parents_mtu_is_dropped() {
    // ipvlan lets a slave exceed the parent's MTU (C63); what it sends above it cannot leave.
    let mut l = ipvlan_lab(L2, Bridge, 2);
    l.e.set_port_mtu(l.p[0], 9000).unwrap();
    let f = udp_of_len(X, M, 0, EXT_IP, 4000);
    assert_eq!(l.v(&f, 0), Verdict::Drop(DropReason::WireMtuExceeded));
    let f = udp_of_len(X, M, 0, EXT_IP, 1518);
    assert!(only_wire(&l.v(&f, 0)));
    // GSO super-frames go whole (the kernel segments them, or uvlan does).
    let f = udp_of_len(X, M, 0, EXT_IP, 4000);
    let mut out = Outputs::default();
    l.e.decide_gso(&f, true, Ingress::Port(l.p[0]), &mut gw(), &mut out)
        .unwrap();
    assert!(matches!(out.as_slice()[0].target, Target::Wire(_)));
}

#[test]
fn c64_tagged_frames_from_an_ipvlan_port_are_not_ip() {
    // ipvlan slaves are VLAN_CHALLENGED: a tagged frame is just a non-IP EtherType to them.
    let l = ipvlan_lab(L2, Bridge, 2);
    let inner = udp(M, M, v4(0), v4(1));
    let tagged = build::tagged(&inner, 5);
    assert!(
        only_host(&l.v(&tagged, 0)),
        "dst == src, no L3 key → parent stack"
    );
    let l3 = ipvlan_lab(L3, Bridge, 2);
    assert_eq!(l3.v(&tagged, 0), Verdict::Drop(DropReason::L3NonIp));
    // macvlan carries a VLAN on top: the tagged frame is switched by MAC like any other
    let m = macvlan_lab(&[MB, MB]);
    let tagged = build::tagged(&udp(mmac(1), mmac(0), v4(0), v4(1)), 5);
    assert_eq!(m.ports(&m.v(&tagged, 0)), vec![1]);
}

// ---- 802.1Q, wire-less networks, invariants the issue names --------------------------------

#[test]
fn vlan_parent_tags_egress_and_accepts_only_its_vid() {
    let mut e = Engine::new();
    let parent = e.add_parent(parent_spec()).unwrap();
    let n20 = e
        .add_network(NetworkSpec::new(
            "v20",
            Driver::Macvlan,
            on_wire(parent, Some(20)),
        ))
        .unwrap();
    let n30 = e
        .add_network(NetworkSpec::new(
            "v30",
            Driver::Macvlan,
            on_wire(parent, Some(30)),
        ))
        .unwrap();
    let nun = e
        .add_network(NetworkSpec::new(
            "untagged",
            Driver::Macvlan,
            on_wire(parent, None),
        ))
        .unwrap();
    let mut ports = Vec::new();
    for (i, n) in [n20, n30, nun].into_iter().enumerate() {
        let p = e
            .add_macvlan_port(
                LinkRef::Network(n),
                format!("p{i}"),
                MacvlanAttrs::new(MB, Some(mmac(i))),
            )
            .unwrap();
        e.set_port_up(p, true).unwrap();
        ports.push(p);
    }
    let out = e.verdict(
        &udp(X, mmac(0), v4(0), EXT_IP),
        Ingress::Port(ports[0]),
        &mut gw(),
    );
    assert_eq!(out.outputs()[0].vlan, VlanOp::Push(20));
    let out = e.verdict(
        &udp(X, mmac(2), v4(0), EXT_IP),
        Ingress::Port(ports[2]),
        &mut gw(),
    );
    assert_eq!(out.outputs()[0].vlan, VlanOp::Keep);
    // VID 20 frame for p0's MAC: delivered untagged
    let f = build::tagged(&udp(mmac(0), X, EXT_IP, v4(0)), 20);
    let v = e.verdict(&f, Ingress::Wire(parent), &mut gw());
    assert_eq!(v.ports(), vec![ports[0]]);
    assert_eq!(v.outputs()[0].vlan, VlanOp::Pop);
    // the same MAC on VID 30 is not p0's
    let f = build::tagged(&udp(mmac(0), X, EXT_IP, v4(0)), 30);
    assert!(e
        .verdict(&f, Ingress::Wire(parent), &mut gw())
        .ports()
        .is_empty());
    // an unknown VID stays with the host
    let f = build::tagged(&udp(mmac(0), X, EXT_IP, v4(0)), 99);
    assert!(only_host(&e.verdict(&f, Ingress::Wire(parent), &mut gw())));
    // priority-tagged (VID 0) frames belong to the untagged network
    let f = build::tagged(&udp(mmac(2), X, EXT_IP, v4(0)), 0);
    assert_eq!(
        e.verdict(&f, Ingress::Wire(parent), &mut gw()).ports(),
        vec![ports[2]]
    );
    // a broadcast on VID 30 floods VID 30 only
    let f = build::tagged(&bcast_udp(X, EXT_IP), 30);
    assert_eq!(
        e.verdict(&f, Ingress::Wire(parent), &mut gw()).ports(),
        vec![ports[1]]
    );
}

#[test]
fn isolated_and_internal_networks_never_touch_wire_or_host() {
    for master in [
        Master::Isolated { mac: M, mtu: 1500 },
        Master::Parent {
            parent: ParentId(0),
            vid: None,
            wire: false,
        },
    ] {
        let mut e = Engine::new();
        let parent = e.add_parent(parent_spec()).unwrap();
        let net = e
            .add_network(NetworkSpec::new("iso", Driver::Ipvlan, master))
            .unwrap();
        let a = e
            .add_ipvlan_port(LinkRef::Network(net), "a", IpvlanAttrs::new(L2, Bridge))
            .unwrap();
        let b = e
            .add_ipvlan_port(LinkRef::Network(net), "b", IpvlanAttrs::new(L2, Bridge))
            .unwrap();
        e.add_port_addr(a, IpAddr::V4(v4(0))).unwrap();
        e.add_port_addr(b, IpAddr::V4(v4(1))).unwrap();
        e.set_port_up(a, true).unwrap();
        e.set_port_up(b, true).unwrap();
        assert_eq!(
            e.verdict(&udp(M, M, v4(0), v4(1)), Ingress::Port(a), &mut gw())
                .ports(),
            vec![b]
        );
        let v = e.verdict(&bcast_udp(M, v4(0)), Ingress::Port(a), &mut gw());
        assert_eq!(v.ports(), vec![b]);
        assert!(!v.reaches_wire());
        assert_eq!(
            e.verdict(&udp(X, M, v4(0), EXT_IP), Ingress::Port(a), &mut gw()),
            Verdict::Drop(DropReason::NoWire)
        );
        assert_eq!(
            e.verdict(&udp(M, M, v4(0), EXT_IP), Ingress::Port(a), &mut gw()),
            Verdict::Drop(DropReason::NoWire)
        );
        // the wire does not feed an internal network: its frames are the host's
        assert!(only_host(&e.verdict(
            &udp(M, X, EXT_IP, v4(0)),
            Ingress::Wire(parent),
            &mut gw()
        )));
        assert!(e.wire_keys(parent).is_empty());
    }
}

#[test]
fn l3_routes_between_subnets_sharing_a_master() {
    let mut l = ipvlan_lab(L3, Bridge, 1);
    let other =
        l.e.add_ipvlan_port(LinkRef::Network(l.net), "b", IpvlanAttrs::new(L3, Bridge))
            .unwrap();
    l.e.add_port_addr(other, IpAddr::V4(Ipv4Addr::new(198, 51, 100, 10)))
        .unwrap();
    l.e.set_port_up(other, true).unwrap();
    let v = l.v(&udp(M, M, v4(0), Ipv4Addr::new(198, 51, 100, 10)), 0);
    assert_eq!(v.ports(), vec![other]);
}

#[test]
fn no_loop_back_to_the_sender() {
    let l = ipvlan_lab(L2, Bridge, 2);
    assert_eq!(
        l.v(&udp(M, M, v4(0), v4(0)), 0),
        Verdict::Drop(DropReason::LoopToSender)
    );
    let m = macvlan_lab(&[MB, MB]);
    assert_eq!(
        m.v(&udp(mmac(0), mmac(0), v4(0), v4(0)), 0),
        Verdict::Drop(DropReason::LoopToSender)
    );
}

#[test]
fn wire_keys_follow_port_state() {
    let mut l = ipvlan_lab_on(Some(20), L2, Bridge, 2);
    let keys = l.e.wire_keys(l.parent);
    assert_eq!(keys.len(), 4);
    assert!(keys.contains(&WireKey::Ip {
        vid: 20,
        addr: IpAddr::V4(v4(1))
    }));
    l.e.set_port_up(l.p[1], false).unwrap();
    assert_eq!(l.e.wire_keys(l.parent).len(), 2);
    let m = macvlan_lab(&[MB, MS]);
    assert_eq!(
        m.e.wire_keys(m.parent),
        vec![WireKey::DstMac {
            vid: 0,
            mac: mmac(0)
        }]
    );
    let p = macvlan_lab(&[MP]);
    assert_eq!(
        p.e.wire_keys(p.parent),
        vec![WireKey::AllUnicast { vid: 0 }]
    );
}

#[test]
fn malformed_and_short_frames() {
    let l = ipvlan_lab(L2, Bridge, 2);
    assert_eq!(l.v(&[0u8; 13], 0), Verdict::Drop(DropReason::TooShort));
    assert_eq!(l.wire(&[0u8; 5]), Verdict::Drop(DropReason::TooShort));
    let mut bad = build::tagged(&udp(M, X, EXT_IP, v4(1)), 20);
    bad.truncate(16);
    assert_eq!(l.wire(&bad), Verdict::Drop(DropReason::TooShort));
    let l3 = ipvlan_lab(L3, Bridge, 1);
    let mut f = udp(M, M, v4(0), EXT_IP);
    f[14] = 0x44; // ihl 4
    assert_eq!(l3.v(&f, 0), Verdict::Drop(DropReason::L3BadHeader));
    assert_eq!(
        l3.e.verdict(&f, Ingress::Port(PortId(99)), &mut gw()),
        Verdict::Drop(DropReason::UnknownIngress)
    );
}

mod properties;
mod reasons;
mod route;
