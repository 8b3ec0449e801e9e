//! What the fuzz targets share: one engine with every driver, mode and a VLAN on a parent,
//! the route stage's answers, and the frame edits of the run loop (`run::frame`, which is
//! crate-private: mirrored here with the same public `wire` helpers it uses).
#![allow(dead_code)]

use std::net::{IpAddr, Ipv4Addr};
use std::sync::OnceLock;

use uvlan_dataplane::fwd::*;
use uvlan_dataplane::offload::VnetHdr;
use uvlan_dataplane::wire::{pop_tag, push_tag, MacAddr, VlanTag};

/// The engine, every ingress it has, and its parent.
pub struct Topology {
    pub engine: Engine,
    pub ingresses: Vec<Ingress>,
    pub ports: Vec<PortId>,
    pub parent: ParentId,
}

/// One parent `eth0` with four networks: ipvlan L2 untagged, ipvlan L3 on VLAN 20, ipvlan
/// L3S on VLAN 21, macvlan on VLAN 30 (bridge, VEPA and private ports); three ports each.
pub fn topology() -> &'static Topology {
    static T: OnceLock<Topology> = OnceLock::new();
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
        let mut ports = Vec::new();
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
                ports.push(p);
            }
        }
        Topology {
            engine: e,
            ingresses: ins,
            ports,
            parent,
        }
    })
}

/// The route stage's answer, picked by `pick`: a neighbour, pending, local, a bad route
/// type, or no route.
pub fn routes(pick: u8) -> impl FnMut(ParentId, IpAddr) -> NextHop {
    move |_, _| match pick % 5 {
        0 => NextHop::Mac(MacAddr([2, 0, 0, 0, 0, 0xee])),
        1 => NextHop::Pending,
        2 => NextHop::Local,
        3 => NextHop::BadRouteType,
        _ => NextHop::Unreachable,
    }
}

/// `run::frame::shift_hdr`: the header's frame-start offsets moved by `delta` bytes.
pub fn shift_hdr(hdr: &VnetHdr, delta: i32) -> Option<VnetHdr> {
    let mv = |v: u16| -> Option<u16> { u16::try_from(i32::from(v) + delta).ok() };
    let mut h = *hdr;
    if h.needs_csum() {
        h.csum_start = mv(h.csum_start)?;
    }
    if h.hdr_len != 0 {
        h.hdr_len = mv(h.hdr_len)?;
    }
    Some(h)
}

/// `run::frame::push_vlan`: `frame` with an 802.1Q tag; `None` below an Ethernet header.
pub fn push_vlan(buf: &mut Vec<u8>, frame: &[u8], vid: u16) -> Option<()> {
    if frame.len() < 14 {
        return None;
    }
    let tag = VlanTag {
        pcp: 0,
        dei: false,
        vid: vid & 0x0fff,
    };
    push_tag(frame, tag, buf);
    Some(())
}

/// `run::frame::pop_vlan`: `frame` without its outer 802.1Q tag; `None` when untagged.
pub fn pop_vlan(buf: &mut Vec<u8>, frame: &[u8]) -> Option<()> {
    let tagged = frame.len() >= 18 && frame.get(12..14) == Some(&[0x81, 0x00][..]);
    if !tagged {
        return None;
    }
    pop_tag(frame, buf);
    Some(())
}

/// The frame after the run loop's VLAN edit of an output, with its shifted header; `None`
/// when the run loop would drop it.
pub fn edit(op: VlanOp, hdr: &VnetHdr, frame: &[u8], buf: &mut Vec<u8>) -> Option<VnetHdr> {
    match op {
        VlanOp::Keep => {
            buf.clear();
            buf.extend_from_slice(frame);
            Some(*hdr)
        }
        VlanOp::Pop => {
            let h = shift_hdr(hdr, -4)?;
            pop_vlan(buf, frame)?;
            Some(h)
        }
        VlanOp::Push(vid) => {
            let h = shift_hdr(hdr, 4)?;
            push_vlan(buf, frame, vid)?;
            Some(h)
        }
    }
}

/// `run::frame::l2_len`: Ethernet header plus 802.1Q/802.1ad tags; `None` when truncated.
pub fn l2_len(frame: &[u8]) -> Option<usize> {
    let mut off = 12;
    loop {
        let t = frame.get(off..off + 2)?;
        let t = u16::from_be_bytes([t[0], t[1]]);
        if t == 0x8100 || t == 0x88a8 {
            off += 4;
        } else {
            return Some(off + 2);
        }
    }
}

/// `offload::parse::l2`'s length: Ethernet header plus up to two 802.1Q/802.1ad tags (what
/// the offloads count as L2 when they apply the MTU); `None` when truncated.
pub fn offload_l2_len(frame: &[u8]) -> Option<usize> {
    let mut off = 12;
    for _ in 0..2 {
        let t = frame.get(off..off + 2)?;
        if t != [0x81, 0x00] && t != [0x88, 0xa8] {
            break;
        }
        off += 4;
    }
    frame.get(off..off + 2)?;
    Some(off + 2)
}

/// `run::frame::reframe_routed`: the IP packet of an untagged frame with a new Ethernet
/// header (and a tag when `vid` is set); the change in header length, `None` when the frame
/// holds no IPv4/IPv6 packet.
pub fn reframe_routed(
    buf: &mut Vec<u8>,
    frame: &[u8],
    dst: MacAddr,
    src: MacAddr,
    vid: Option<u16>,
) -> Option<i32> {
    let packet = frame.get(14..)?;
    let etype: u16 = match packet.first()? >> 4 {
        4 => 0x0800,
        6 => 0x86dd,
        _ => return None,
    };
    buf.clear();
    buf.extend_from_slice(&dst.0);
    buf.extend_from_slice(&src.0);
    let mut delta = 0;
    if let Some(v) = vid {
        buf.extend_from_slice(&0x8100u16.to_be_bytes());
        buf.extend_from_slice(&(v & 0x0fff).to_be_bytes());
        delta = 4;
    }
    buf.extend_from_slice(&etype.to_be_bytes());
    buf.extend_from_slice(packet);
    Some(delta)
}
