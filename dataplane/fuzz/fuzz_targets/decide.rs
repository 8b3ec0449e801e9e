//! Arbitrary bytes through every wire view and through the engine from every ingress of a
//! topology with all drivers, modes and a VLAN: nothing may panic.
//! Run: `cd dataplane/fuzz && cargo +nightly fuzz run decide`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::OnceLock;
use uvlan_dataplane::fwd::*;
use uvlan_dataplane::wire::*;

fn topology() -> &'static (Engine, Vec<Ingress>) {
    static T: OnceLock<(Engine, Vec<Ingress>)> = OnceLock::new();
    T.get_or_init(|| {
        let mut e = Engine::new();
        let parent = e
            .add_parent(ParentSpec {
                name: "eth0".into(),
                mac: MacAddr([2, 0, 0, 0, 0, 0xaa]),
                mtu: 1500,
                up: true,
                link_type: LinkType::Ether,
                addrs: vec![IpAddr::V4(Ipv4Addr::new(192, 0, 2, 254))],
            })
            .unwrap();
        let mut ins = vec![Ingress::Wire(parent), Ingress::WireLoopback(parent)];
        let nets = [
            (Driver::Ipvlan, IpvlanMode::L2, None),
            (Driver::Ipvlan, IpvlanMode::L3, Some(20)),
            (Driver::Ipvlan, IpvlanMode::L3s, Some(21)),
            (Driver::Macvlan, IpvlanMode::L2, Some(30)),
        ];
        for (n, (driver, mode, vid)) in nets.into_iter().enumerate() {
            let net = e
                .add_network(NetworkSpec::new(
                    format!("n{n}"),
                    driver,
                    Master::Parent {
                        parent,
                        vid,
                        wire: true,
                    },
                ))
                .unwrap();
            for i in 0..3u8 {
                let p = match driver {
                    Driver::Ipvlan => e.add_ipvlan_port(
                        LinkRef::Network(net),
                        "p",
                        IpvlanAttrs::new(mode, IpvlanFlag::Bridge),
                    ),
                    Driver::Macvlan => {
                        let m = [MacvlanMode::Bridge, MacvlanMode::Vepa, MacvlanMode::Private]
                            [i as usize];
                        e.add_macvlan_port(
                            LinkRef::Network(net),
                            "p",
                            MacvlanAttrs::new(m, Some(MacAddr([2, 0, 0, 1, n as u8, i]))),
                        )
                    }
                }
                .unwrap();
                e.add_port_addr(p, IpAddr::V4(Ipv4Addr::new(192, 0, 2, 10 * n as u8 + i)))
                    .unwrap();
                e.set_port_up(p, true).unwrap();
                ins.push(Ingress::Port(p));
            }
        }
        (e, ins)
    })
}

fuzz_target!(|data: &[u8]| {
    let (e, ins) = topology();
    let mut out = Outputs::default();
    for ing in ins {
        let _ = e.decide(data, *ing, &mut NoRoutes, &mut out);
        let mut gw = |_: ParentId, _: IpAddr| NextHop::Mac(MacAddr([2, 0, 0, 0, 0, 0xee]));
        let _ = e.decide(data, *ing, &mut gw, &mut out);
    }
    if let Ok(eth) = EthView::parse(data) {
        let _ = eth.untag();
        let _ = ArpView::parse(eth.payload);
        if let Ok(ip) = Ipv6View::parse(eth.payload) {
            if let Ok(i) = ip.icmpv6() {
                let _ = i.nd();
            }
        }
        let _ = Ipv4View::parse(eth.payload);
    }
    let _ = uvlan_dataplane::trace::trace(e, data, ins[0], &mut NoRoutes);
});
