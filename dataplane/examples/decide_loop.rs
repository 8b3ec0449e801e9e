//! Runs one kind of decision in a loop, for instruction-level profiling:
//! `valgrind --tool=callgrind target/release/examples/decide_loop macvlan 1000000`.
//! Kinds: ipvlan (L2 unicast to a sibling), macvlan (bridge unicast), l3 (routed egress).

use std::net::{IpAddr, Ipv4Addr};
use uvlan_dataplane::fwd::*;
use uvlan_dataplane::wire::{build, MacAddr};

const M: MacAddr = MacAddr([2, 0, 0, 0, 0, 0xaa]);

fn main() {
    let mut args = std::env::args().skip(1);
    let kind = args.next().unwrap_or_else(|| "ipvlan".into());
    let n: u64 = args
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000);
    let mut e = Engine::new();
    let parent = e
        .add_parent(ParentSpec {
            name: "eth0".into(),
            mac: M,
            mtu: 1500,
            up: true,
            link_type: LinkType::Ether,
            addrs: vec![],
        })
        .expect("parent");
    let driver = if kind == "macvlan" {
        Driver::Macvlan
    } else {
        Driver::Ipvlan
    };
    let net = e
        .add_network(NetworkSpec::new(
            "n",
            driver,
            Master::Parent {
                parent,
                vid: None,
                wire: true,
            },
        ))
        .expect("network");
    let mode = if kind == "l3" {
        IpvlanMode::L3
    } else {
        IpvlanMode::L2
    };
    let mac = |i: u8| MacAddr([2, 0, 0, 1, 0, i]);
    let mut ports = Vec::new();
    for i in 0..2u8 {
        let p = match driver {
            Driver::Ipvlan => e.add_ipvlan_port(
                LinkRef::Network(net),
                "p",
                IpvlanAttrs::new(mode, IpvlanFlag::Bridge),
            ),
            Driver::Macvlan => e.add_macvlan_port(
                LinkRef::Network(net),
                "p",
                MacvlanAttrs::new(MacvlanMode::Bridge, Some(mac(i))),
            ),
        }
        .expect("port");
        e.add_port_addr(p, IpAddr::V4(Ipv4Addr::new(10, 0, 0, i + 1)))
            .expect("addr");
        e.set_port_up(p, true).expect("up");
        ports.push(p);
    }
    let f = match kind.as_str() {
        "macvlan" => build::udp4(
            mac(1),
            mac(0),
            Ipv4Addr::new(10, 0, 0, 1),
            Ipv4Addr::new(10, 0, 0, 2),
            (1, 2),
            &[0; 18],
        ),
        "l3" => build::udp4(
            M,
            M,
            Ipv4Addr::new(10, 0, 0, 1),
            Ipv4Addr::new(198, 51, 100, 1),
            (1, 2),
            &[0; 18],
        ),
        _ => build::udp4(
            M,
            M,
            Ipv4Addr::new(10, 0, 0, 1),
            Ipv4Addr::new(10, 0, 0, 2),
            (1, 2),
            &[0; 18],
        ),
    };
    let mut out = Outputs::with_capacity(4);
    let mut ok = 0u64;
    for _ in 0..n {
        if e.decide(std::hint::black_box(&f), Ingress::Port(ports[0]), &mut out)
            .is_ok()
        {
            ok += out.len() as u64;
        }
    }
    println!("{kind}: {ok} outputs in {n} decisions");
}
