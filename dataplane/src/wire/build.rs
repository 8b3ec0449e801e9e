//! Frame builders for tests, benchmarks, `uvlan trace` and the labs.
//!
//! Built with `etherparse::PacketBuilder` (checksums included); ARP is written at its fixed
//! Ethernet/IPv4 layout.

use super::{ethertype, push_tag, MacAddr, VlanTag};
use etherparse::{
    icmpv6::{NeighborAdvertisementHeader, RouterAdvertisementHeader},
    Icmpv6Type, PacketBuilder,
};
use std::net::{Ipv4Addr, Ipv6Addr};

/// An Ethernet II frame.
pub fn ethernet(dst: MacAddr, src: MacAddr, ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(14 + payload.len());
    f.extend_from_slice(&dst.0);
    f.extend_from_slice(&src.0);
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// The same frame with one 802.1Q tag (VID `vid`, priority 0) after the MACs.
pub fn tagged(frame: &[u8], vid: u16) -> Vec<u8> {
    let mut out = Vec::new();
    push_tag(
        frame,
        VlanTag {
            pcp: 0,
            dei: false,
            vid,
        },
        &mut out,
    );
    out
}

/// A 28-byte Ethernet/IPv4 ARP packet (op 1 request, 2 reply).
pub fn arp_packet(op: u16, sha: MacAddr, spa: Ipv4Addr, tha: MacAddr, tpa: Ipv4Addr) -> [u8; 28] {
    let mut p = [0u8; 28];
    p[0..2].copy_from_slice(&1u16.to_be_bytes());
    p[2..4].copy_from_slice(&ethertype::IPV4.to_be_bytes());
    p[4] = 6;
    p[5] = 4;
    p[6..8].copy_from_slice(&op.to_be_bytes());
    p[8..14].copy_from_slice(&sha.0);
    p[14..18].copy_from_slice(&spa.octets());
    p[18..24].copy_from_slice(&tha.0);
    p[24..28].copy_from_slice(&tpa.octets());
    p
}

/// A broadcast ARP request "who has `tpa`, tell `spa`".
pub fn arp_request(sha: MacAddr, spa: Ipv4Addr, tpa: Ipv4Addr) -> Vec<u8> {
    let p = arp_packet(1, sha, spa, MacAddr::ZERO, tpa);
    ethernet(MacAddr::BROADCAST, sha, ethertype::ARP, &p)
}

/// A unicast ARP reply "`spa` is at `sha`" to `tha`/`tpa`.
pub fn arp_reply(sha: MacAddr, spa: Ipv4Addr, tha: MacAddr, tpa: Ipv4Addr) -> Vec<u8> {
    let p = arp_packet(2, sha, spa, tha, tpa);
    ethernet(tha, sha, ethertype::ARP, &p)
}

/// An IPv4 UDP datagram in a frame.
pub fn udp4(
    dst_mac: MacAddr,
    src_mac: MacAddr,
    src: Ipv4Addr,
    dst: Ipv4Addr,
    ports: (u16, u16),
    payload: &[u8],
) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(src_mac.0, dst_mac.0)
        .ipv4(src.octets(), dst.octets(), 64)
        .udp(ports.0, ports.1);
    let mut v = Vec::with_capacity(b.size(payload.len()));
    // Writing into a Vec cannot fail for these header values.
    let _ = b.write(&mut v, payload);
    v
}

/// An ICMP echo request in a frame (32 bytes of data).
pub fn icmp4_echo(
    dst_mac: MacAddr,
    src_mac: MacAddr,
    src: Ipv4Addr,
    dst: Ipv4Addr,
    seq: u16,
) -> Vec<u8> {
    icmp4_echo_data(dst_mac, src_mac, src, dst, seq, &[0x55u8; 32])
}

/// An ICMP echo request in a frame, carrying `data`.
pub fn icmp4_echo_data(
    dst_mac: MacAddr,
    src_mac: MacAddr,
    src: Ipv4Addr,
    dst: Ipv4Addr,
    seq: u16,
    data: &[u8],
) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(src_mac.0, dst_mac.0)
        .ipv4(src.octets(), dst.octets(), 64)
        .icmpv4_echo_request(0x7576, seq);
    let mut v = Vec::with_capacity(b.size(data.len()));
    let _ = b.write(&mut v, data);
    v
}

/// An IPv6 UDP datagram in a frame.
pub fn udp6(
    dst_mac: MacAddr,
    src_mac: MacAddr,
    src: Ipv6Addr,
    dst: Ipv6Addr,
    ports: (u16, u16),
    payload: &[u8],
) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(src_mac.0, dst_mac.0)
        .ipv6(src.octets(), dst.octets(), 64)
        .udp(ports.0, ports.1);
    let mut v = Vec::with_capacity(b.size(payload.len()));
    let _ = b.write(&mut v, payload);
    v
}

fn icmp6(
    dst_mac: MacAddr,
    src_mac: MacAddr,
    src: Ipv6Addr,
    dst: Ipv6Addr,
    t: Icmpv6Type,
    payload: &[u8],
) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(src_mac.0, dst_mac.0)
        .ipv6(src.octets(), dst.octets(), 255)
        .icmpv6(t);
    let mut v = Vec::with_capacity(b.size(payload.len()));
    let _ = b.write(&mut v, payload);
    v
}

/// An ICMPv6 echo request in a frame (32 bytes of data).
pub fn icmp6_echo(
    dst_mac: MacAddr,
    src_mac: MacAddr,
    src: Ipv6Addr,
    dst: Ipv6Addr,
    seq: u16,
) -> Vec<u8> {
    icmp6_echo_data(dst_mac, src_mac, src, dst, seq, &[0x55u8; 32])
}

/// An ICMPv6 echo request in a frame, carrying `data`.
pub fn icmp6_echo_data(
    dst_mac: MacAddr,
    src_mac: MacAddr,
    src: Ipv6Addr,
    dst: Ipv6Addr,
    seq: u16,
    data: &[u8],
) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(src_mac.0, dst_mac.0)
        .ipv6(src.octets(), dst.octets(), 64)
        .icmpv6_echo_request(0x7576, seq);
    let mut v = Vec::with_capacity(b.size(data.len()));
    let _ = b.write(&mut v, data);
    v
}

/// The solicited-node multicast address of `a`: ff02::1:ff00:0/104 plus its low 24 bits.
pub fn solicited_node(a: Ipv6Addr) -> Ipv6Addr {
    let o = a.octets();
    Ipv6Addr::new(
        0xff02,
        0,
        0,
        0,
        0,
        1,
        0xff00 | u16::from(o[13]),
        u16::from_be_bytes([o[14], o[15]]),
    )
}

/// The Ethernet multicast MAC of an IPv6 multicast address (33:33 + low 32 bits).
pub fn ipv6_mcast_mac(a: Ipv6Addr) -> MacAddr {
    let o = a.octets();
    MacAddr([0x33, 0x33, o[12], o[13], o[14], o[15]])
}

/// A neighbour solicitation for `target` from `src` (use `::` for DAD) to its solicited-node
/// group, with a source link-layer option unless `src` is `::`.
pub fn ns(src_mac: MacAddr, src: Ipv6Addr, target: Ipv6Addr) -> Vec<u8> {
    let dst = solicited_node(target);
    let mut payload = target.octets().to_vec();
    if !src.is_unspecified() {
        payload.extend_from_slice(&[1, 1]);
        payload.extend_from_slice(&src_mac.0);
    }
    icmp6(
        ipv6_mcast_mac(dst),
        src_mac,
        src,
        dst,
        Icmpv6Type::NeighborSolicitation,
        &payload,
    )
}

/// A solicited neighbour advertisement for `target` to `dst` with a target link-layer option.
pub fn na(
    dst_mac: MacAddr,
    src_mac: MacAddr,
    src: Ipv6Addr,
    dst: Ipv6Addr,
    target: Ipv6Addr,
) -> Vec<u8> {
    let mut payload = target.octets().to_vec();
    payload.extend_from_slice(&[2, 1]);
    payload.extend_from_slice(&src_mac.0);
    let h = NeighborAdvertisementHeader {
        router: false,
        solicited: true,
        r#override: true,
    };
    icmp6(
        dst_mac,
        src_mac,
        src,
        dst,
        Icmpv6Type::NeighborAdvertisement(h),
        &payload,
    )
}

/// A router solicitation to ff02::2.
pub fn rs(src_mac: MacAddr, src: Ipv6Addr) -> Vec<u8> {
    let dst: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 2);
    icmp6(
        ipv6_mcast_mac(dst),
        src_mac,
        src,
        dst,
        Icmpv6Type::RouterSolicitation,
        &[0, 0, 0, 0],
    )
}

/// A router advertisement to ff02::1 (no options).
pub fn ra(src_mac: MacAddr, src: Ipv6Addr) -> Vec<u8> {
    let dst: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
    let h = RouterAdvertisementHeader {
        cur_hop_limit: 64,
        managed_address_config: false,
        other_config: false,
        router_lifetime: 1800,
    };
    icmp6(
        ipv6_mcast_mac(dst),
        src_mac,
        src,
        dst,
        Icmpv6Type::RouterAdvertisement(h),
        &[0u8; 8],
    )
}
