//! Runs one kind of decision in a loop, for instruction-level profiling:
//! `valgrind --tool=callgrind target/release/examples/decide_loop macvlan 1000000`.
//! Kinds: ipvlan (L2 unicast to a sibling), macvlan (bridge unicast), l3 (routed egress).

use std::net::{IpAddr, Ipv4Addr};
use uvlan_dataplane::fwd::sample::{flat, port_ip, port_mac, PARENT_MAC as M};
use uvlan_dataplane::fwd::*;
use uvlan_dataplane::wire::{build, MacAddr};

fn main() {
    let mut args = std::env::args().skip(1);
    let kind = args.next().unwrap_or_else(|| "ipvlan".into());
    let n: u64 = args
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000);
    let (driver, mode) = match kind.as_str() {
        "macvlan" => (Driver::Macvlan, IpvlanMode::L2),
        "l3" => (Driver::Ipvlan, IpvlanMode::L3),
        _ => (Driver::Ipvlan, IpvlanMode::L2),
    };
    let s = flat(driver, mode, None, 2).expect("sample topology");
    let f = match kind.as_str() {
        "macvlan" => build::udp4(
            port_mac(1),
            port_mac(0),
            port_ip(0),
            port_ip(1),
            (1, 2),
            &[0; 18],
        ),
        "l3" => build::udp4(
            M,
            M,
            port_ip(0),
            Ipv4Addr::new(198, 51, 100, 1),
            (1, 2),
            &[0; 18],
        ),
        _ => build::udp4(M, M, port_ip(0), port_ip(1), (1, 2), &[0; 18]),
    };
    let mut out = Outputs::with_capacity(4);
    let mut routes = |_: ParentId, _: IpAddr| NextHop::Mac(MacAddr([2, 0, 0, 0, 0, 0xee]));
    let mut ok = 0u64;
    for _ in 0..n {
        if s.engine
            .decide(
                std::hint::black_box(&f),
                Ingress::Port(s.ports[0]),
                &mut routes,
                &mut out,
            )
            .is_ok()
        {
            ok += out.len() as u64;
        }
    }
    println!("{kind}: {ok} outputs in {n} decisions");
}
