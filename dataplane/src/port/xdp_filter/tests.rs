//! `BPF_PROG_TEST_RUN` over hand-made frames (root, no interfaces).
use super::program::{TCX_NEXT, TC_ACT_SHOT, XDP_PASS};
use super::*;
use std::net::{Ipv4Addr, Ipv6Addr};

const EP_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
const PEER_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0b];
const BCAST: [u8; 6] = [0xff; 6];
const EP4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
const HOST4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 3);
const OTHER4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 99);
const PEER4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);
const EP6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);
const OTHER6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x99);
const PEER6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2);

fn eth(dst: [u8; 6], vid: Option<u16>, ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&dst);
    f.extend_from_slice(&PEER_MAC);
    if let Some(v) = vid {
        f.extend_from_slice(&0x8100u16.to_be_bytes());
        f.extend_from_slice(&v.to_be_bytes());
    }
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

fn ipv4(dst: Ipv4Addr) -> Vec<u8> {
    let mut p = vec![0x45, 0, 0, 28, 0, 0, 0x40, 0, 64, 17, 0, 0];
    p.extend_from_slice(&PEER4.octets());
    p.extend_from_slice(&dst.octets());
    p.extend_from_slice(&[0x30, 0x39, 0x30, 0x39, 0, 8, 0, 0]);
    p
}

fn arp_request(tpa: Ipv4Addr) -> Vec<u8> {
    let mut p = vec![0, 1, 8, 0, 6, 4, 0, 1];
    p.extend_from_slice(&PEER_MAC);
    p.extend_from_slice(&PEER4.octets());
    p.extend_from_slice(&[0; 6]);
    p.extend_from_slice(&tpa.octets());
    p
}

fn ipv6(dst: Ipv6Addr, next: u8, l4: &[u8]) -> Vec<u8> {
    let mut p = vec![0x60, 0, 0, 0];
    p.extend_from_slice(&(l4.len() as u16).to_be_bytes());
    p.push(next);
    p.push(255);
    p.extend_from_slice(&PEER6.octets());
    p.extend_from_slice(&dst.octets());
    p.extend_from_slice(l4);
    p
}

fn ns(target: Ipv6Addr) -> Vec<u8> {
    let o = target.octets();
    let snm = Ipv6Addr::new(
        0xff02,
        0,
        0,
        0,
        0,
        1,
        0xff00 | o[13] as u16,
        u16::from_be_bytes([o[14], o[15]]),
    );
    let mut l4 = vec![135, 0, 0, 0, 0, 0, 0, 0];
    l4.extend_from_slice(&o);
    l4.extend_from_slice(&[1, 1]);
    l4.extend_from_slice(&PEER_MAC);
    ipv6(snm, 58, &l4)
}

fn snm_mac(target: Ipv6Addr) -> [u8; 6] {
    let o = target.octets();
    [0x33, 0x33, 0xff, o[13], o[14], o[15]]
}

struct Rig {
    xdp: Filter,
    tc: Filter,
}

impl Rig {
    fn new() -> Rig {
        let maps = FilterMaps::create(64).unwrap();
        let tc_maps = maps.try_clone().unwrap();
        Rig {
            xdp: Filter::load_xdp(maps, 4, true).unwrap(),
            tc: Filter::load_tc(tc_maps, false).unwrap(),
        }
    }
    fn maps(&self) -> &FilterMaps {
        self.xdp.maps()
    }
    /// Run the XDP flavour; return (retval, stats delta).
    fn run(&self, frame: &[u8]) -> (u32, FilterStats) {
        let before = self.maps().stats().unwrap();
        let r = self.xdp.prog().test_run(frame, 1).unwrap();
        (r.retval, delta(before, self.maps().stats().unwrap()))
    }
    fn run_tc(&self, frame: &[u8]) -> (i32, FilterStats) {
        let before = self.maps().stats().unwrap();
        let r = self.tc.prog().test_run(frame, 1).unwrap();
        (r.retval as i32, delta(before, self.maps().stats().unwrap()))
    }
    /// Assert that the XDP flavour steers `frame` (branch `hit`) and the tc flavour drops it.
    fn keyed(&self, frame: &[u8], hit: fn(&FilterStats) -> u64) {
        let (ret, d) = self.run(frame);
        assert_eq!(ret, XDP_PASS as u32, "empty XSKMAP falls back to XDP_PASS");
        assert_eq!((d.no_socket, d.passed, hit(&d)), (1, 0, 1), "{d:?}");
        let (ret, d) = self.run_tc(frame);
        assert_eq!(ret, TC_ACT_SHOT);
        assert_eq!((d.redirected, d.passed, hit(&d)), (1, 0, 1), "{d:?}");
    }
    fn passed(&self, frame: &[u8]) {
        self.passed_xdp(frame);
        let (ret, d) = self.run_tc(frame);
        assert_eq!(ret, TCX_NEXT);
        assert_eq!(
            d,
            FilterStats {
                passed: 1,
                ..Default::default()
            }
        );
    }
}

impl Rig {
    fn passed_xdp(&self, frame: &[u8]) {
        let (ret, d) = self.run(frame);
        assert_eq!(ret, XDP_PASS as u32);
        assert_eq!(
            d,
            FilterStats {
                passed: 1,
                ..Default::default()
            }
        );
    }
    /// Truncated IP headers: the skb test runner itself refuses them (EINVAL) before the
    /// program runs; if a kernel accepts them, the tc flavour must pass them.
    fn passed_xdp_tc_refused(&self, frame: &[u8]) {
        self.passed_xdp(frame);
        match self.tc.prog().test_run(frame, 1) {
            Err(BpfError::Syscall { source, .. }) => {
                assert_eq!(source.raw_os_error(), Some(libc::EINVAL))
            }
            Ok(r) => assert_eq!(r.retval as i32, TCX_NEXT),
            Err(e) => panic!("{e}"),
        }
    }
}

fn delta(a: FilterStats, b: FilterStats) -> FilterStats {
    FilterStats {
        redirected: b.redirected - a.redirected,
        passed: b.passed - a.passed,
        no_socket: b.no_socket - a.no_socket,
        hit_mac: b.hit_mac - a.hit_mac,
        hit_ipv4: b.hit_ipv4 - a.hit_ipv4,
        hit_arp: b.hit_arp - a.hit_arp,
        hit_ipv6: b.hit_ipv6 - a.hit_ipv6,
        hit_ns: b.hit_ns - a.hit_ns,
        hit_src_mac: b.hit_src_mac - a.hit_src_mac,
        hit_all_unicast: b.hit_all_unicast - a.hit_all_unicast,
    }
}

fn host_mac() -> [u8; 6] {
    [0x02, 0, 0, 0, 0, 0x0a]
}

#[test]
fn program_is_small_and_loads() {
    let maps = FilterMaps::create(8).unwrap();
    let xsks = Map::create(MapType::XskMap, 4, 4, 1, "uvt_x").unwrap();
    let n = assemble(Flavor::Xdp, &maps, Some(xsks.as_fd()), None)
        .unwrap()
        .len();
    assert!(n > 50 && n < 300, "{n} insns");
    let t = assemble(Flavor::TcIngress, &maps, None, None)
        .unwrap()
        .len();
    assert!(t > 50 && t < 300, "{t} insns");
    eprintln!("filter program: XDP {n} insns, tc {t} insns");
    assert!(matches!(
        assemble(Flavor::Xdp, &maps, None, None),
        Err(FilterError::NoXskMap)
    ));
    let _ = Rig::new();
}

#[test]
fn arp_requests_for_endpoints_are_steered_even_when_broadcast() {
    let r = Rig::new();
    r.maps().add_ipv4(0, EP4).unwrap();
    r.keyed(&eth(BCAST, None, 0x0806, &arp_request(EP4)), |d| d.hit_arp);
    r.keyed(&eth(host_mac(), None, 0x0806, &arp_request(EP4)), |d| {
        d.hit_arp
    });
    r.passed(&eth(BCAST, None, 0x0806, &arp_request(OTHER4)));
    // Not Ethernet/IPv4 ARP (plen 16): passed.
    let mut odd = arp_request(EP4);
    odd[5] = 16;
    r.passed(&eth(BCAST, None, 0x0806, &odd));
}

#[test]
fn ipv4_destination_is_steered_only_for_unicast_mac() {
    let r = Rig::new();
    r.maps().add_ipv4(0, EP4).unwrap();
    r.keyed(&eth(host_mac(), None, 0x0800, &ipv4(EP4)), |d| d.hit_ipv4);
    r.keyed(&eth([0x02, 9, 9, 9, 9, 9], None, 0x0800, &ipv4(EP4)), |d| {
        d.hit_ipv4
    });
    r.passed(&eth(host_mac(), None, 0x0800, &ipv4(HOST4)));
    r.passed(&eth(BCAST, None, 0x0800, &ipv4(EP4)));
    r.passed(&eth(
        BCAST,
        None,
        0x0800,
        &ipv4(Ipv4Addr::new(192, 0, 2, 255)),
    ));
    r.passed(&eth([0x01, 0, 0x5e, 0, 0, 1], None, 0x0800, &ipv4(EP4)));
}

#[test]
fn ipv6_destination_and_ns_target() {
    let r = Rig::new();
    r.maps().add_ipv6(0, EP6).unwrap();
    r.keyed(
        &eth(host_mac(), None, 0x86dd, &ipv6(EP6, 17, &[0; 8])),
        |d| d.hit_ipv6,
    );
    r.keyed(&eth(snm_mac(EP6), None, 0x86dd, &ns(EP6)), |d| d.hit_ns);
    r.passed(&eth(snm_mac(OTHER6), None, 0x86dd, &ns(OTHER6)));
    // Multicast MAC + IPv6 to the endpoint address but not an NS: passed.
    r.passed(&eth(
        [0x33, 0x33, 0, 0, 0, 1],
        None,
        0x86dd,
        &ipv6(EP6, 17, &[0; 24]),
    ));
    r.passed(&eth(host_mac(), None, 0x86dd, &ipv6(OTHER6, 17, &[0; 8])));
}

#[test]
fn destination_mac_is_steered_for_any_ethertype_but_never_broadcast() {
    let r = Rig::new();
    r.maps().add_mac(0, EP_MAC).unwrap();
    r.keyed(&eth(EP_MAC, None, 0x88b5, &[0xab; 46]), |d| d.hit_mac);
    r.keyed(&eth(EP_MAC, None, 0x0800, &ipv4(OTHER4)), |d| d.hit_mac);
    r.passed(&eth(BCAST, None, 0x88b5, &[0xab; 46]));
    r.passed(&eth(host_mac(), None, 0x88b5, &[0xab; 46]));
    // A broadcast MAC can never be keyed.
    r.maps().add_mac(0, BCAST).unwrap();
    r.passed(&eth(BCAST, None, 0x88b5, &[0xab; 46]));
}

#[test]
fn keys_are_per_vlan() {
    let r = Rig::new();
    r.maps().add_ipv4(20, EP4).unwrap();
    r.maps().add_mac(20, EP_MAC).unwrap();
    r.maps().add_ipv6(20, EP6).unwrap();
    r.keyed(&eth(host_mac(), Some(20), 0x0800, &ipv4(EP4)), |d| {
        d.hit_ipv4
    });
    r.keyed(&eth(BCAST, Some(20), 0x0806, &arp_request(EP4)), |d| {
        d.hit_arp
    });
    r.keyed(&eth(EP_MAC, Some(20), 0x88b5, &[1; 46]), |d| d.hit_mac);
    r.keyed(&eth(snm_mac(EP6), Some(20), 0x86dd, &ns(EP6)), |d| d.hit_ns);
    // The PCP and DEI bits are not part of the VLAN id.
    r.keyed(
        &eth(host_mac(), Some(0xe000 | 20), 0x0800, &ipv4(EP4)),
        |d| d.hit_ipv4,
    );
    r.passed(&eth(host_mac(), Some(30), 0x0800, &ipv4(EP4)));
    r.passed(&eth(host_mac(), None, 0x0800, &ipv4(EP4)));
    r.passed(&eth(BCAST, Some(30), 0x0806, &arp_request(EP4)));
    r.passed(&eth(EP_MAC, None, 0x88b5, &[1; 46]));
    r.passed(&eth(EP_MAC, Some(30), 0x88b5, &[1; 46]));
    // Untagged keys do not match tagged frames.
    r.maps().add_ipv4(0, HOST4).unwrap();
    r.passed(&eth(host_mac(), Some(20), 0x0800, &ipv4(HOST4)));
    r.keyed(&eth(host_mac(), None, 0x0800, &ipv4(HOST4)), |d| d.hit_ipv4);
}

#[test]
fn removing_keys_stops_steering() {
    let r = Rig::new();
    let m = r.maps();
    m.add_ipv4(0, EP4).unwrap();
    m.add_ipv6(7, EP6).unwrap();
    m.add_mac(0, EP_MAC).unwrap();
    assert!(m.has_ipv4(0, EP4).unwrap() && m.has_ipv6(7, EP6).unwrap());
    assert!(m.has_mac(0, EP_MAC).unwrap());
    assert!(m.remove_ipv4(0, EP4).unwrap());
    assert!(!m.remove_ipv4(0, EP4).unwrap());
    assert!(m.remove_ipv6(7, EP6).unwrap());
    assert!(m.remove_mac(0, EP_MAC).unwrap());
    assert!(!m.has_ipv4(0, EP4).unwrap());
    r.passed(&eth(host_mac(), None, 0x0800, &ipv4(EP4)));
    r.passed(&eth(snm_mac(EP6), Some(7), 0x86dd, &ns(EP6)));
    r.passed(&eth(EP_MAC, None, 0x88b5, &[0; 46]));
}

/// A frame from `src` (instead of the usual peer MAC).
fn from(src: [u8; 6], mut f: Vec<u8>) -> Vec<u8> {
    f[6..12].copy_from_slice(&src);
    f
}

#[test]
fn source_mac_steers_unicast_only_per_vlan() {
    let r = Rig::new();
    let client = [0x02, 0x11, 0x22, 0x33, 0x44, 0x55];
    r.maps().add_src_mac(0, client).unwrap();
    r.maps().add_src_mac(20, client).unwrap();
    assert!(r.maps().has_src_mac(0, client).unwrap());
    // Any ethertype, any unicast destination (even the host's MAC).
    r.keyed(
        &from(client, eth(host_mac(), None, 0x0800, &ipv4(HOST4))),
        |d| d.hit_src_mac,
    );
    r.keyed(&from(client, eth(PEER_MAC, None, 0x88b5, &[7; 46])), |d| {
        d.hit_src_mac
    });
    r.keyed(
        &from(client, eth(host_mac(), Some(20), 0x88b5, &[7; 46])),
        |d| d.hit_src_mac,
    );
    // Not on VLAN 30, not from another sender, never for group destinations.
    r.passed(&from(client, eth(host_mac(), Some(30), 0x88b5, &[7; 46])));
    r.passed(&eth(host_mac(), None, 0x88b5, &[7; 46]));
    r.passed(&from(client, eth(BCAST, None, 0x88b5, &[7; 46])));
    r.passed(&from(
        client,
        eth([0x01, 0, 0x5e, 0, 0, 1], None, 0x0800, &ipv4(HOST4)),
    ));
    // Only the last byte differs: the whole MAC is compared.
    let mut near = client;
    near[5] ^= 1;
    r.passed(&from(near, eth(host_mac(), None, 0x88b5, &[7; 46])));
    near = client;
    near[0] ^= 2;
    r.passed(&from(near, eth(host_mac(), None, 0x88b5, &[7; 46])));
    assert!(r.maps().remove_src_mac(0, client).unwrap());
    assert!(!r.maps().remove_src_mac(0, client).unwrap());
    r.passed(&from(client, eth(host_mac(), None, 0x88b5, &[7; 46])));
}

#[test]
fn all_unicast_flag_takes_a_whole_vlan_but_no_group_frames() {
    let r = Rig::new();
    assert!(!r.maps().set_all_unicast(20, true).unwrap());
    assert!(r.maps().set_all_unicast(20, true).unwrap());
    assert!(r.maps().has_all_unicast(20).unwrap());
    assert!(!r.maps().has_all_unicast(0).unwrap());
    r.keyed(&eth(host_mac(), Some(20), 0x0800, &ipv4(HOST4)), |d| {
        d.hit_all_unicast
    });
    r.keyed(&eth(PEER_MAC, Some(20), 0x88b5, &[3; 46]), |d| {
        d.hit_all_unicast
    });
    r.passed(&eth(host_mac(), None, 0x0800, &ipv4(HOST4)));
    r.passed(&eth(host_mac(), Some(21), 0x0800, &ipv4(HOST4)));
    r.passed(&eth(BCAST, Some(20), 0x0806, &arp_request(OTHER4)));
    r.passed(&eth(
        [0x33, 0x33, 0, 0, 0, 1],
        Some(20),
        0x86dd,
        &ipv6(OTHER6, 17, &[0; 8]),
    ));
    assert!(r.maps().set_all_unicast(20, false).unwrap());
    r.passed(&eth(host_mac(), Some(20), 0x0800, &ipv4(HOST4)));
    assert!(matches!(
        r.maps().set_all_unicast(4095, true),
        Err(FilterError::BadVid(4095))
    ));
}

#[test]
fn bad_vlan_ids_are_refused() {
    let m = FilterMaps::create(4).unwrap();
    assert!(matches!(
        m.add_ipv4(4095, EP4),
        Err(FilterError::BadVid(4095))
    ));
    assert!(matches!(
        m.add_mac(5000, EP_MAC),
        Err(FilterError::BadVid(5000))
    ));
    m.add_ipv6(4094, EP6).unwrap();
}

#[test]
fn runts_and_truncated_headers_are_passed() {
    let r = Rig::new();
    r.maps().add_ipv4(0, EP4).unwrap();
    r.maps().add_ipv4(20, EP4).unwrap();
    r.maps().add_ipv6(0, EP6).unwrap();
    // Exactly an Ethernet header with a VLAN TPID but no tag.
    r.passed(&eth(host_mac(), None, 0x8100, &[]));
    // Tag present, IPv4 header cut short.
    r.passed(&eth(host_mac(), Some(20), 0x0800, &ipv4(EP4)[..19]));
    r.passed_xdp_tc_refused(&eth(host_mac(), None, 0x0800, &ipv4(EP4)[..19]));
    r.passed(&eth(BCAST, None, 0x0806, &arp_request(EP4)[..27]));
    r.passed_xdp_tc_refused(&eth(host_mac(), None, 0x86dd, &ipv6(EP6, 17, &[])[..39]));
    r.passed(&eth(snm_mac(EP6), None, 0x86dd, &ns(EP6)[..63]));
    // Frames shorter than an Ethernet header are refused by PROG_TEST_RUN itself.
    let e = r.xdp.prog().test_run(&[0u8; 10], 1).unwrap_err();
    assert!(matches!(e, BpfError::Syscall { .. }), "{e}");
}

#[test]
fn classification_takes_well_under_a_microsecond() {
    let r = Rig::new();
    r.maps().add_ipv4(0, EP4).unwrap();
    let run = r
        .xdp
        .prog()
        .test_run(&eth(host_mac(), None, 0x0800, &ipv4(EP4)), 1000)
        .unwrap();
    assert_eq!(run.retval, XDP_PASS as u32);
    assert!(run.duration_ns < 5_000, "{} ns per run", run.duration_ns);
    eprintln!("keyed IPv4 frame: {} ns per run", run.duration_ns);
}
