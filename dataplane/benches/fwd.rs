//! Decisions per second of the pure engine (`cargo bench -p uvlan-dataplane --bench fwd`):
//! ipvlan L2 unicast, macvlan bridge unicast, ipvlan L3 routed, each with 2 and 1,000 ports,
//! and a broadcast flooded to 64 ports. Figures are recorded in docs/performance.md.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use uvlan_dataplane::fwd::*;
use uvlan_dataplane::wire::{build, MacAddr};

const M: MacAddr = MacAddr([2, 0, 0, 0, 0, 0xaa]);

fn mac(i: usize) -> MacAddr {
    MacAddr([2, 0, 0, 1, (i >> 8) as u8, i as u8])
}
fn ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::from(0x0a00_0001 + i as u32)
}

fn engine(driver: Driver, mode: IpvlanMode, n: usize) -> (Engine, Vec<PortId>) {
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
        .unwrap();
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
        .unwrap();
    let mut ports = Vec::new();
    for i in 0..n {
        let p = match driver {
            Driver::Ipvlan => e
                .add_ipvlan_port(
                    LinkRef::Network(net),
                    format!("p{i}"),
                    IpvlanAttrs::new(mode, IpvlanFlag::Bridge),
                )
                .unwrap(),
            Driver::Macvlan => e
                .add_macvlan_port(
                    LinkRef::Network(net),
                    format!("p{i}"),
                    MacvlanAttrs::new(MacvlanMode::Bridge, Some(mac(i))),
                )
                .unwrap(),
        };
        e.add_port_addr(p, IpAddr::V4(ip(i))).unwrap();
        e.set_port_up(p, true).unwrap();
        ports.push(p);
    }
    (e, ports)
}

fn unicast(c: &mut Criterion) {
    let mut g = c.benchmark_group("unicast");
    g.throughput(Throughput::Elements(1));
    for n in [2usize, 1000] {
        let (e, p) = engine(Driver::Ipvlan, IpvlanMode::L2, n);
        let f = build::udp4(M, M, ip(0), ip(n - 1), (1, 2), &[0u8; 18]);
        let mut out = Outputs::with_capacity(4);
        g.bench_with_input(BenchmarkId::new("ipvlan_l2", n), &n, |b, _| {
            b.iter(|| e.decide(black_box(&f), Ingress::Port(p[0]), &mut out))
        });
        let (e, p) = engine(Driver::Macvlan, IpvlanMode::L2, n);
        let f = build::udp4(mac(n - 1), mac(0), ip(0), ip(n - 1), (1, 2), &[0u8; 18]);
        g.bench_with_input(BenchmarkId::new("macvlan_bridge", n), &n, |b, _| {
            b.iter(|| e.decide(black_box(&f), Ingress::Port(p[0]), &mut out))
        });
        let (e, p) = engine(Driver::Ipvlan, IpvlanMode::L3, n);
        let f = build::udp4(
            M,
            M,
            ip(0),
            Ipv4Addr::new(198, 51, 100, 1),
            (1, 2),
            &[0u8; 18],
        );
        g.bench_with_input(BenchmarkId::new("ipvlan_l3_routed", n), &n, |b, _| {
            b.iter(|| e.decide(black_box(&f), Ingress::Port(p[0]), &mut out))
        });
    }
    g.finish();
}

fn broadcast(c: &mut Criterion) {
    let mut g = c.benchmark_group("broadcast");
    g.throughput(Throughput::Elements(1));
    for n in [2usize, 1000] {
        // 64 receiving ports within an n-port network: the other ports filter the group out
        let (mut e, p) = engine(Driver::Ipvlan, IpvlanMode::L2, n.max(65));
        for (i, port) in p.iter().enumerate().skip(65) {
            let _ = i;
            e.set_port_mc_filter(*port, McFilter::Groups(vec![]))
                .unwrap();
        }
        let group = MacAddr([1, 0, 0x5e, 0, 0, 1]);
        let f = build::udp4(
            group,
            M,
            ip(0),
            Ipv4Addr::new(224, 0, 0, 1),
            (1, 2),
            &[0u8; 18],
        );
        let mut out = Outputs::default();
        e.decide(&f, Ingress::Port(p[0]), &mut out).unwrap();
        assert_eq!(out.len(), 65, "64 ports and the wire");
        g.bench_with_input(
            BenchmarkId::new("ipvlan_l2_to_64_ports", n.max(65)),
            &n,
            |b, _| b.iter(|| e.decide(black_box(&f), Ingress::Port(p[0]), &mut out)),
        );
    }
    g.finish();
}

criterion_group!(benches, unicast, broadcast);
criterion_main!(benches);
