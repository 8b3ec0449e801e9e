#![allow(clippy::indexing_slicing)]
//! Golden-byte tests and the no-panic property for the wire views.

use super::build;
use super::*;
use proptest::prelude::*;
use std::net::{Ipv4Addr, Ipv6Addr};

/// A broadcast ARP request from 02:00:00:00:00:01 / 192.0.2.1 for 192.0.2.2, byte by byte.
const ARP_REQ: [u8; 42] = [
    0xff, 0xff, 0xff, 0xff, 0xff, 0xff, // dst
    0x02, 0x00, 0x00, 0x00, 0x00, 0x01, // src
    0x08, 0x06, // ARP
    0x00, 0x01, 0x08, 0x00, 0x06, 0x04, 0x00, 0x01, // htype, ptype, hlen, plen, op=request
    0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 192, 0, 2, 1, // sha, spa
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 192, 0, 2, 2, // tha, tpa
];

/// An 802.1Q-tagged (VID 20, PCP 5) IPv4 ICMP echo 198.51.100.1 → 198.51.100.2, TTL 64.
const TAGGED_ICMP: [u8; 50] = [
    0x02, 0x00, 0x00, 0x00, 0x00, 0x02, 0x02, 0x00, 0x00, 0x00, 0x00, 0x01, // macs
    0x81, 0x00, 0xa0, 0x14, // TPID, TCI: pcp 5, dei 0, vid 20
    0x08, 0x00, // IPv4
    0x45, 0x00, 0x00, 0x20, 0x00, 0x01, 0x00, 0x00, 0x40, 0x01, 0x00, 0x00, // ver/ihl..proto
    198, 51, 100, 1, 198, 51, 100, 2, // src, dst
    0x08, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x01, // icmp echo
    1, 2, 3, 4, // payload
];

/// A DAD neighbour solicitation: :: → ff02::1:ff00:5 for 2001:db8::5.
fn dad_ns() -> Vec<u8> {
    let mut f = vec![
        0x33, 0x33, 0xff, 0x00, 0x00, 0x05, // dst
        0x02, 0x00, 0x00, 0x00, 0x00, 0x05, // src
        0x86, 0xdd, // IPv6
        0x60, 0x00, 0x00, 0x00, 0x00, 0x18, 0x3a, 0xff, // ver, len 24, ICMPv6, hop 255
    ];
    f.extend_from_slice(&[0u8; 16]); // src ::
    f.extend_from_slice(&[0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0xff, 0, 0, 5]);
    f.extend_from_slice(&[135, 0, 0, 0, 0, 0, 0, 0]); // NS, code, csum, reserved
    f.extend_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 5]);
    f
}

#[test]
fn ethernet_golden() {
    let e = EthView::parse(&ARP_REQ).unwrap();
    assert_eq!(e.dst, MacAddr::BROADCAST);
    assert_eq!(e.src, MacAddr([2, 0, 0, 0, 0, 1]));
    assert_eq!(e.ethertype, ethertype::ARP);
    assert_eq!(e.payload.len(), 28);
    assert!(e.untag().unwrap().is_none());
    assert_eq!(e.header_len(), 14);
}

#[test]
fn arp_golden() {
    let a = ArpView::parse(&ARP_REQ[14..]).unwrap();
    assert_eq!(a.op, ArpOp::Request);
    assert!(a.is_ether_ipv4());
    assert_eq!(a.sha, MacAddr([2, 0, 0, 0, 0, 1]));
    assert_eq!(a.spa, Ipv4Addr::new(192, 0, 2, 1));
    assert_eq!(a.tha, MacAddr::ZERO);
    assert_eq!(a.tpa, Ipv4Addr::new(192, 0, 2, 2));
    assert_eq!(
        ArpView::target_ip(&ARP_REQ[14..]).unwrap(),
        Ipv4Addr::new(192, 0, 2, 2)
    );
    assert_eq!(
        ArpView::sender_ip(&ARP_REQ[14..]).unwrap(),
        Ipv4Addr::new(192, 0, 2, 1)
    );
    // The builder writes the same bytes.
    let built = build::arp_request(
        MacAddr([2, 0, 0, 0, 0, 1]),
        Ipv4Addr::new(192, 0, 2, 1),
        Ipv4Addr::new(192, 0, 2, 2),
    );
    assert_eq!(built, ARP_REQ.to_vec());
    // 27 bytes are not enough (arp_hdr_len of an Ethernet device is 28).
    assert!(matches!(
        ArpView::parse(&ARP_REQ[14..41]),
        Err(WireError::Truncated {
            need: 28,
            have: 27,
            ..
        })
    ));
}

#[test]
fn vlan_and_ipv4_golden() {
    let e = EthView::parse(&TAGGED_ICMP).unwrap();
    assert_eq!(e.ethertype, ethertype::VLAN);
    let (tag, inner) = e.untag().unwrap().unwrap();
    assert_eq!(
        tag,
        VlanTag {
            pcp: 5,
            dei: false,
            vid: 20
        }
    );
    assert_eq!(tag.tci(), 0xa014);
    assert_eq!(VlanTag::from_tci(0xa014), tag);
    assert_eq!(inner.ethertype, ethertype::IPV4);
    assert_eq!(inner.header_len(), 18);
    let ip = Ipv4View::parse(inner.payload).unwrap();
    assert_eq!(ip.src, Ipv4Addr::new(198, 51, 100, 1));
    assert_eq!(ip.dst, Ipv4Addr::new(198, 51, 100, 2));
    assert_eq!(ip.protocol, ipproto::ICMP);
    assert_eq!(ip.ttl, 64);
    assert_eq!(ip.header_len, 20);
    assert_eq!(ip.total_len, 32);
    assert_eq!(ip.payload, &TAGGED_ICMP[38..50]);
    assert!(!ip.is_fragment);
    // pop and push are inverses
    let mut untagged = Vec::new();
    pop_tag(&TAGGED_ICMP, &mut untagged);
    assert_eq!(untagged.len(), TAGGED_ICMP.len() - 4);
    assert_eq!(&untagged[12..14], &[0x08, 0x00]);
    let mut again = Vec::new();
    push_tag(&untagged, tag, &mut again);
    assert_eq!(again, TAGGED_ICMP.to_vec());
}

#[test]
fn inner_tags_are_payload() {
    // QinQ-ish: 0x8100 inside 0x8100: only the outer tag is read.
    let inner = build::tagged(&TAGGED_ICMP[..], 30);
    let e = EthView::parse(&inner).unwrap();
    let (tag, v) = e.untag().unwrap().unwrap();
    assert_eq!(tag.vid, 30);
    assert_eq!(v.ethertype, ethertype::VLAN);
}

#[test]
fn ipv4_kernel_checks() {
    let ip = &TAGGED_ICMP[18..];
    // version 6 in an IPv4 header
    let mut b = ip.to_vec();
    b[0] = 0x65;
    assert!(matches!(
        Ipv4View::parse(&b),
        Err(WireError::Malformed { .. })
    ));
    // ihl 4
    b[0] = 0x44;
    assert!(Ipv4View::parse(&b).is_err());
    // total length beyond the buffer
    let mut b = ip.to_vec();
    b[3] = 0x40;
    assert!(matches!(
        Ipv4View::parse(&b),
        Err(WireError::Malformed {
            what: "total length beyond the frame",
            ..
        })
    ));
    // total length below the header
    let mut b = ip.to_vec();
    b[3] = 0x10;
    assert!(matches!(
        Ipv4View::parse(&b),
        Err(WireError::Malformed {
            what: "total length below the header length",
            ..
        })
    ));
    // trailing bytes after total length are fine (Ethernet padding)
    let mut b = ip.to_vec();
    b.extend_from_slice(&[0; 10]);
    assert_eq!(Ipv4View::parse(&b).unwrap().payload.len(), 12);
    // 19 bytes
    assert!(matches!(
        Ipv4View::parse(&ip[..19]),
        Err(WireError::Truncated { .. })
    ));
}

#[test]
fn ipv6_icmpv6_ns_golden() {
    let f = dad_ns();
    let e = EthView::parse(&f).unwrap();
    assert_eq!(e.dst, MacAddr([0x33, 0x33, 0xff, 0, 0, 5]));
    assert_eq!(e.ethertype, ethertype::IPV6);
    let ip = Ipv6View::parse(e.payload).unwrap();
    assert!(ip.src.is_unspecified());
    assert_eq!(ip.dst, "ff02::1:ff00:5".parse::<Ipv6Addr>().unwrap());
    assert_eq!(ip.next_header, ipproto::ICMPV6);
    assert_eq!(ip.payload_len, 24);
    let icmp = ip.icmpv6().unwrap();
    assert_eq!(icmp.icmp_type, 135);
    let target: Ipv6Addr = "2001:db8::5".parse().unwrap();
    assert_eq!(icmp.ns_target(), Some(target));
    assert_eq!(icmp.nd(), Some(NdMessage::NeighborSolicitation { target }));
    // The builder produces an equivalent DAD NS (checksum filled in).
    let built = build::ns(MacAddr([2, 0, 0, 0, 0, 5]), Ipv6Addr::UNSPECIFIED, target);
    assert_eq!(built.len(), f.len());
    assert_eq!(&built[..56], &f[..56]);
    assert_eq!(&built[58..], &f[58..]);
}

#[test]
fn nd_messages_from_builders() {
    let mac = MacAddr([2, 0, 0, 0, 0, 9]);
    let a: Ipv6Addr = "2001:db8::9".parse().unwrap();
    let b: Ipv6Addr = "2001:db8::a".parse().unwrap();
    let ll: Ipv6Addr = "fe80::9".parse().unwrap();
    let cases: [(Vec<u8>, NdMessage); 4] = [
        (
            build::ns(mac, a, b),
            NdMessage::NeighborSolicitation { target: b },
        ),
        (
            build::na(mac, mac, a, b, a),
            NdMessage::NeighborAdvertisement { target: a },
        ),
        (build::rs(mac, ll), NdMessage::RouterSolicitation),
        (build::ra(mac, ll), NdMessage::RouterAdvertisement),
    ];
    for (f, want) in cases {
        let e = EthView::parse(&f).unwrap();
        let ip = Ipv6View::parse(e.payload).unwrap();
        assert_eq!(ip.icmpv6().unwrap().nd(), Some(want));
    }
    // An NS truncated before its target: no target, no ND message.
    let f = build::ns(mac, a, b);
    let e = EthView::parse(&f[..14 + 40 + 20]).unwrap();
    let ip = Ipv6View::parse(e.payload).unwrap();
    let icmp = ip.icmpv6().unwrap();
    assert_eq!(icmp.ns_target(), None);
    assert_eq!(icmp.nd(), None);
    // solicited-node mapping
    assert_eq!(
        build::solicited_node(b),
        "ff02::1:ff00:a".parse::<Ipv6Addr>().unwrap()
    );
    assert_eq!(
        build::ipv6_mcast_mac(build::solicited_node(b)),
        MacAddr([0x33, 0x33, 0xff, 0, 0, 0x0a])
    );
}

#[test]
fn mac_parse_and_bits() {
    let m: MacAddr = "02:42:c0:00:02:0a".parse().unwrap();
    assert_eq!(m.0, [0x02, 0x42, 0xc0, 0, 2, 0x0a]);
    assert_eq!(m.to_string(), "02:42:c0:00:02:0a");
    assert!(m.is_local_admin() && m.is_valid_unicast());
    assert!("01:00:5e:00:00:01"
        .parse::<MacAddr>()
        .unwrap()
        .is_multicast());
    assert!(!MacAddr::ZERO.is_valid_unicast());
    for bad in [
        "",
        "02:42:c0:00:02",
        "02:42:c0:00:02:0a:0b",
        "zz:42:c0:00:02:0a",
        "002:42:c0:00:02:0a",
    ] {
        assert!(bad.parse::<MacAddr>().is_err(), "{bad}");
    }
}

#[test]
fn truncated_everything() {
    assert!(EthView::parse(&[0u8; 13]).is_err());
    let mut f = ARP_REQ[..14].to_vec();
    f[12] = 0x81;
    f[13] = 0x00;
    f.extend_from_slice(&[0, 20, 8]); // 3 bytes of tag: truncated
    assert!(EthView::parse(&f).unwrap().untag().is_err());
    assert!(Ipv6View::parse(&[0x60; 39]).is_err());
    assert!(Icmpv6View::parse(&[135; 7]).is_err());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 10_000, ..ProptestConfig::default() })]

    /// No view panics on any byte string, and every view stays inside its input.
    #[test]
    fn no_view_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        if let Ok(e) = EthView::parse(&bytes) {
            prop_assert!(e.payload.len() + 14 == bytes.len());
            if let Ok(Some((_, inner))) = e.untag() {
                prop_assert!(inner.payload.len() + 18 == bytes.len());
            }
        }
        let _ = ArpView::parse(&bytes);
        if let Ok(ip) = Ipv4View::parse(&bytes) {
            prop_assert!(ip.total_len <= bytes.len() && ip.header_len >= 20);
        }
        if let Ok(ip) = Ipv6View::parse(&bytes) {
            if let Ok(icmp) = ip.icmpv6() {
                let _ = icmp.nd();
                let _ = icmp.ns_target();
            }
        }
        if let Ok(icmp) = Icmpv6View::parse(&bytes) {
            let _ = icmp.nd();
        }
        let mut out = Vec::new();
        pop_tag(&bytes, &mut out);
        push_tag(&bytes, VlanTag { pcp: 1, dei: true, vid: 4094 }, &mut out);
    }
}
