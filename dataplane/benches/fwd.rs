//! Decisions per second of the pure engine (`cargo bench -p uvlan-dataplane --bench fwd`):
//! ipvlan L2 unicast, macvlan bridge unicast, ipvlan L3 routed (route stage included, its
//! answer scripted), each with 2 and 1,000 ports,
//! and a broadcast flooded to 64 ports. Figures are recorded in docs/performance.md.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use uvlan_dataplane::fwd::sample::{flat, port_ip, port_mac, PARENT_MAC as M};
use uvlan_dataplane::fwd::*;
use uvlan_dataplane::wire::{build, MacAddr};

fn unicast(c: &mut Criterion) {
    let mut g = c.benchmark_group("unicast");
    g.throughput(Throughput::Elements(1));
    let mut out = Outputs::with_capacity(4);
    // The route stage's answer as the datapath's cache gives it once warm.
    let mut routes = |_: ParentId, _: IpAddr| NextHop::Mac(MacAddr([2, 0, 0, 0, 0, 0xee]));
    for n in [2usize, 1000] {
        let s = flat(Driver::Ipvlan, IpvlanMode::L2, None, n).unwrap();
        let f = build::udp4(M, M, port_ip(0), port_ip(n - 1), (1, 2), &[0u8; 18]);
        g.bench_with_input(BenchmarkId::new("ipvlan_l2", n), &n, |b, _| {
            b.iter(|| {
                s.engine.decide(
                    black_box(&f),
                    Ingress::Port(s.ports[0]),
                    &mut routes,
                    &mut out,
                )
            })
        });
        let s = flat(Driver::Macvlan, IpvlanMode::L2, None, n).unwrap();
        let f = build::udp4(
            port_mac(n - 1),
            port_mac(0),
            port_ip(0),
            port_ip(n - 1),
            (1, 2),
            &[0u8; 18],
        );
        g.bench_with_input(BenchmarkId::new("macvlan_bridge", n), &n, |b, _| {
            b.iter(|| {
                s.engine.decide(
                    black_box(&f),
                    Ingress::Port(s.ports[0]),
                    &mut routes,
                    &mut out,
                )
            })
        });
        let s = flat(Driver::Ipvlan, IpvlanMode::L3, None, n).unwrap();
        let f = build::udp4(
            M,
            M,
            port_ip(0),
            Ipv4Addr::new(198, 51, 100, 1),
            (1, 2),
            &[0u8; 18],
        );
        g.bench_with_input(BenchmarkId::new("ipvlan_l3_routed", n), &n, |b, _| {
            b.iter(|| {
                s.engine.decide(
                    black_box(&f),
                    Ingress::Port(s.ports[0]),
                    &mut routes,
                    &mut out,
                )
            })
        });
    }
    g.finish();
}

fn broadcast(c: &mut Criterion) {
    let mut g = c.benchmark_group("broadcast");
    g.throughput(Throughput::Elements(1));
    let mut routes = NoRoutes;
    for n in [65usize, 1000] {
        // 64 receiving ports within an n-port network: the other ports filter the group out
        let mut s = flat(Driver::Ipvlan, IpvlanMode::L2, None, n).unwrap();
        for port in s.ports.iter().skip(65) {
            s.engine
                .set_port_mc_filter(*port, McFilter::Groups(vec![]))
                .unwrap();
        }
        let group = MacAddr([1, 0, 0x5e, 0, 0, 1]);
        let f = build::udp4(
            group,
            M,
            port_ip(0),
            Ipv4Addr::new(224, 0, 0, 1),
            (1, 2),
            &[0u8; 18],
        );
        let mut out = Outputs::default();
        s.engine
            .decide(&f, Ingress::Port(s.ports[0]), &mut routes, &mut out)
            .unwrap();
        assert_eq!(out.len(), 65, "64 ports and the wire");
        g.bench_with_input(BenchmarkId::new("ipvlan_l2_to_64_ports", n), &n, |b, _| {
            b.iter(|| {
                s.engine.decide(
                    black_box(&f),
                    Ingress::Port(s.ports[0]),
                    &mut routes,
                    &mut out,
                )
            })
        });
    }
    g.finish();
}

criterion_group!(benches, unicast, broadcast);
criterion_main!(benches);
