//! Arbitrary bytes through every wire view and through the engine from every ingress of a
//! topology with all drivers, modes and a VLAN: nothing may panic.
//! Run: `cd dataplane/fuzz && cargo +nightly fuzz run decide`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::net::IpAddr;
use uvlan_dataplane::fwd::*;
use uvlan_dataplane::wire::*;

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    let t = common::topology();
    let (e, ins) = (&t.engine, &t.ingresses);
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
