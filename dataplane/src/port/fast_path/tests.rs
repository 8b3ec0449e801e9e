//! `BPF_PROG_TEST_RUN` over hand-made and random frames (root, no interfaces), and the
//! engine/cache agreement property: whenever the program redirects, the engine forwards
//! the same frame to the same port and nowhere else.
//!
//! Under `BPF_PROG_TEST_RUN` the frame arrives on `lo` (ifindex 1), so keys use ifindex 1;
//! no partner is registered for it unless a test says so, so a miss is `TC_ACT_SHOT` and a
//! hit is `TC_ACT_REDIRECT`.

use super::*;
use crate::fwd::sample::{self, PARENT_MAC};
use crate::fwd::{
    Driver, Engine, Ingress, IpvlanAttrs, IpvlanFlag, IpvlanMode, MacvlanAttrs, MacvlanMode,
    NoRoutes, Outputs, Target, VlanOp,
};
use crate::test_rng::Rng;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

const LO: u32 = 1;
const A: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0a];
const B: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0b];

impl FastPath {
    /// Registers a port without attaching programs (the program is run by test-run only).
    fn register(&self, port: PortId, veth: u32, kind: KeyKind) {
        self.state().ports.insert(
            port,
            Attached {
                veth,
                tap: 0,
                kind,
                links: Vec::new(),
            },
        );
    }

    /// Registers a parent's wire cache without attaching the wire program.
    fn register_wire(&self, parent: u32, map: &Map) {
        self.state().wires.insert(
            parent,
            WireCache {
                map: map.try_clone().unwrap(),
                _link: None,
            },
        );
    }
}

/// The parent ifindex of port → wire entries (the egress redirect is not followed under
/// test-run: a hit is `TC_ACT_REDIRECT` whatever the target).
const WIRE: u32 = 7;

fn eth(dst: [u8; 6], src: [u8; 6], etype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&etype.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

fn ipv4(dst: Ipv4Addr, extra: usize) -> Vec<u8> {
    let tot = (20 + extra) as u16;
    let mut p = vec![0x45, 0];
    p.extend_from_slice(&tot.to_be_bytes());
    p.extend_from_slice(&[0, 0, 0x40, 0, 64, 17, 0, 0, 192, 0, 2, 200]);
    p.extend_from_slice(&dst.octets());
    p.resize(20 + extra, 0x5a);
    p
}

fn ipv6(dst: Ipv6Addr, extra: usize) -> Vec<u8> {
    let mut p = vec![0x60, 0, 0, 0];
    p.extend_from_slice(&(extra as u16).to_be_bytes());
    p.extend_from_slice(&[17, 64]);
    p.extend_from_slice(&Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0xc8).octets());
    p.extend_from_slice(&dst.octets());
    p.resize(40 + extra, 0x5a);
    p
}

fn run(fp: &FastPath, frame: &[u8]) -> u32 {
    try_run(fp, frame).unwrap_or_else(|| panic!("test-run refused {frame:02x?}"))
}

/// `None` when `BPF_PROG_TEST_RUN` refuses the frame (`EINVAL`: it refuses an IPv4 or IPv6
/// EtherType whose header is truncated, before the program runs).
fn try_run(fp: &FastPath, frame: &[u8]) -> Option<u32> {
    match fp.veth_prog().test_run(frame, 1) {
        Ok(r) => Some(r.retval),
        Err(BpfError::Syscall { source, .. }) if source.raw_os_error() == Some(libc::EINVAL) => {
            None
        }
        Err(e) => panic!("{e} on {} bytes {frame:02x?}", frame.len()),
    }
}

#[test]
fn programs_load_and_are_small() {
    let fp = FastPath::load(16).unwrap();
    let veth = assemble_veth(&fp.cache, &fp.links, &fp.stats).unwrap();
    let tap = assemble_tap(&fp.links, &fp.stats).unwrap();
    assert!(veth.len() < 160, "{} instructions", veth.len());
    assert!(tap.len() < 40, "{} instructions", tap.len());
}

#[test]
fn mac_key_hits_and_counts_per_entry() {
    let fp = FastPath::load(16).unwrap();
    let f = eth(B, A, 0x0800, &ipv4(Ipv4Addr::new(192, 0, 2, 2), 26));
    let key = cache_key(&f, LO, KeyKind::Mac).unwrap();
    assert_eq!(
        run(&fp, &f),
        TC_ACT_SHOT,
        "a miss without a partner is dropped"
    );
    fp.insert_raw(&key, 42).unwrap();
    for _ in 0..3 {
        assert_eq!(run(&fp, &f), TC_ACT_REDIRECT);
    }
    let c = fp.entry(&key).unwrap();
    assert_eq!(c.frames, 3);
    assert_eq!(c.bytes, 3 * f.len() as u64);
    // Any EtherType: macvlan decides by MAC.
    let arp = eth(B, A, 0x0806, &[0u8; 28]);
    assert_eq!(run(&fp, &arp), TC_ACT_REDIRECT);
    // Another source MAC is another key.
    let other = eth(B, [0x02, 0, 0, 0, 0, 0x0c], 0x0800, &[0u8; 46]);
    assert_eq!(run(&fp, &other), TC_ACT_SHOT);
    let s = fp.stats().unwrap();
    assert_eq!(s.hits, 4);
    assert_eq!(s.no_link, 2);
}

#[test]
fn group_destinations_never_hit() {
    let fp = FastPath::load(16).unwrap();
    for dst in [
        [0xff; 6],
        [0x33, 0x33, 0, 0, 0, 1],
        [0x01, 0, 0x5e, 0, 0, 1],
    ] {
        let f = eth(dst, A, 0x0800, &[0u8; 46]);
        assert_eq!(cache_key(&f, LO, KeyKind::Mac), None);
        // Even with an entry whose bytes match, the program does not look it up.
        let mut key = [0u8; KEY_LEN];
        key[..4].copy_from_slice(&LO.to_ne_bytes());
        key[8..20].copy_from_slice(&f[..12]);
        fp.insert_raw(&key, 42).unwrap();
        assert_eq!(run(&fp, &f), TC_ACT_SHOT);
    }
}

#[test]
fn misses_go_to_the_partner() {
    let fp = FastPath::load(16).unwrap();
    fp.pair(LO, 77).unwrap();
    let f = eth(B, A, 0x0800, &[0u8; 46]);
    assert_eq!(run(&fp, &f), TC_ACT_REDIRECT);
    let s = fp.stats().unwrap();
    assert_eq!((s.misses, s.hits, s.no_link), (1, 0, 0));
    let tap = fp.tap_prog().test_run(&f, 1).unwrap().retval;
    assert_eq!(tap, TC_ACT_REDIRECT);
    assert_eq!(fp.stats().unwrap().slow_out, 1);
}

#[test]
fn l3_keys_check_the_headers_ipvlan_checks() {
    let fp = FastPath::load(16).unwrap();
    let dst = Ipv4Addr::new(192, 0, 2, 2);
    let good = eth(PARENT_MAC.0, PARENT_MAC.0, 0x0800, &ipv4(dst, 10));
    let key = cache_key(&good, LO, KeyKind::L3).unwrap();
    fp.insert_raw(&key, 42).unwrap();
    assert_eq!(run(&fp, &good), TC_ACT_REDIRECT);
    let mut bad = Vec::new();
    // IHL 4, version 5, total length beyond the frame, total length below the header.
    for (i, b) in [(14, 0x44u8), (14, 0x55)] {
        let mut f = good.clone();
        f[i] = b;
        bad.push(f);
    }
    let mut f = good.clone();
    f[16..18].copy_from_slice(&200u16.to_be_bytes());
    bad.push(f);
    let mut f = good.clone();
    f[16..18].copy_from_slice(&19u16.to_be_bytes());
    bad.push(f);
    for f in &bad {
        assert_eq!(cache_key(f, LO, KeyKind::L3), None);
        assert_eq!(run(&fp, f), TC_ACT_SHOT, "{f:02x?}");
    }
    // IPv6.
    let d6 = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2);
    let f6 = eth(PARENT_MAC.0, PARENT_MAC.0, 0x86dd, &ipv6(d6, 8));
    let k6 = cache_key(&f6, LO, KeyKind::L3).unwrap();
    assert_eq!(run(&fp, &f6), TC_ACT_SHOT);
    fp.insert_raw(&k6, 43).unwrap();
    assert_eq!(run(&fp, &f6), TC_ACT_REDIRECT);
    let mut v5 = f6.clone();
    v5[14] = 0x50;
    assert_eq!(cache_key(&v5, LO, KeyKind::L3), None);
    assert_eq!(run(&fp, &v5), TC_ACT_SHOT);
    // From `::`: ipvlan looks an ICMPv6 neighbour solicitation up by its target, not by its
    // destination (`ipvlan_get_L3_hdr`, IPVL_ICMPV6), so an entry learned for the
    // destination must not serve it, and it must not teach one (a unicast NS from `::` to
    // d6 for another endpoint's target would otherwise send later frames to d6 there).
    let mut ns = f6.clone();
    ns[14 + 6] = 58;
    ns[14 + 8..14 + 24].fill(0);
    ns[54] = 135;
    assert_eq!(cache_key(&ns, LO, KeyKind::L3), None);
    assert_eq!(run(&fp, &ns), TC_ACT_SHOT);
    // Any frame from `::` takes the slow path (only DAD sends them: rare).
    let mut udp = f6.clone();
    udp[14 + 8..14 + 24].fill(0);
    assert_eq!(cache_key(&udp, LO, KeyKind::L3), None);
    assert_eq!(run(&fp, &udp), TC_ACT_SHOT);
    // One non-zero byte in the source address anywhere keys it again.
    for i in 0..16 {
        let mut f = udp.clone();
        f[14 + 8 + i] = 1;
        assert!(cache_key(&f, LO, KeyKind::L3).is_some(), "{i}");
        assert_eq!(run(&fp, &f), TC_ACT_REDIRECT, "{i}");
    }
}

#[test]
fn truncated_headers_have_no_key() {
    let v4 = eth(
        PARENT_MAC.0,
        PARENT_MAC.0,
        0x0800,
        &ipv4(Ipv4Addr::new(192, 0, 2, 2), 0),
    );
    let v6 = eth(
        PARENT_MAC.0,
        PARENT_MAC.0,
        0x86dd,
        &ipv6(Ipv6Addr::LOCALHOST, 0),
    );
    for f in [v4, v6] {
        assert!(cache_key(&f, LO, KeyKind::L3).is_some());
        for n in 0..f.len() {
            assert_eq!(cache_key(&f[..n], LO, KeyKind::L3), None, "{n}");
        }
    }
    assert_eq!(cache_key(&[0u8; 13], LO, KeyKind::Mac), None);
}

#[test]
fn flush_removes_every_entry_and_keeps_the_counters() {
    let fp = FastPath::load(16).unwrap();
    let (p, q) = (PortId(0), PortId(1));
    fp.register(p, LO, KeyKind::Mac);
    fp.register(q, 9, KeyKind::Mac);
    let f = eth(B, A, 0x0800, &[0u8; 46]);
    assert!(fp.learn(p, q, &f));
    assert!(!fp.learn(p, q, &f), "learned once");
    assert!(!fp.learn(p, PortId(7), &f), "the target has no veth");
    assert_eq!(run(&fp, &f), TC_ACT_REDIRECT);
    fp.flush();
    assert!(fp.is_empty());
    assert_eq!(run(&fp, &f), TC_ACT_SHOT, "the very next frame misses");
    let c = fp.port_counters();
    let tx = c.iter().find(|(x, _, _)| *x == p).unwrap().1;
    let rx = c.iter().find(|(x, _, _)| *x == q).unwrap().2;
    assert_eq!((tx.frames, rx.frames), (1, 1));
    assert_eq!(tx.bytes, f.len() as u64);
}

#[test]
fn take_leaves_the_programs_forwarding_nothing() {
    let fp = FastPath::load(16).unwrap();
    let (p, q) = (PortId(0), PortId(1));
    fp.register(p, LO, KeyKind::Mac);
    fp.register(q, 9, KeyKind::Mac);
    fp.pair(LO, 77).unwrap();
    let f = eth(B, A, 0x0800, &[0u8; 46]);
    assert!(fp.learn(p, q, &f));
    assert!(fp.learn(q, p, &eth(A, B, 0x0800, &[0u8; 46])));
    assert_eq!(run(&fp, &f), TC_ACT_REDIRECT);
    let links = fp.take(p).expect("p had a veth");
    assert!(links.is_empty(), "registered without programs");
    assert!(fp.is_empty(), "the cache is empty, in both directions");
    assert!(!fp.has(p));
    // The program still hanging on p's veth: no entry, no partner: dropped.
    assert_eq!(run(&fp, &f), TC_ACT_SHOT);
    assert_eq!(fp.stats().unwrap().no_link, 1);
    assert!(
        !fp.learn(q, p, &eth(A, B, 0x0800, &[0u8; 46])),
        "nothing is learned toward p"
    );
    assert!(fp.take(p).is_none());
}

// ---- the agreement property -------------------------------------------------------------

fn v6_of(i: usize) -> Ipv6Addr {
    Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x10 + i as u16)
}

/// A random frame from `port_macs[from]`: destinations and addresses mostly the siblings',
/// headers mostly valid, sometimes bent.
fn random_frame(r: &mut Rng, macs: &[[u8; 6]], from: usize, n: usize) -> Vec<u8> {
    let mut dsts: Vec<[u8; 6]> = macs.to_vec();
    dsts.extend([
        PARENT_MAC.0,
        [0xff; 6],
        [0x33, 0x33, 0, 0, 0, 1],
        [0x02, 9, 9, 9, 9, 9],
    ]);
    let dst = r.pick(&dsts);
    let src = match r.index(4) {
        0 => [0x02, 8, 8, 8, 8, 8],
        1 => PARENT_MAC.0,
        _ => macs[from],
    };
    let etype = r.pick(&[
        0x0800u16, 0x0800, 0x0800, 0x86dd, 0x86dd, 0x0806, 0x8100, 0x88b5,
    ]);
    let mut payload = match etype {
        0x0800 => {
            let dst = if r.index(5) == 0 {
                Ipv4Addr::new(203, 0, 113, r.index(4) as u8)
            } else {
                sample::port_ip(r.index(n))
            };
            let mut p = ipv4(dst, r.index(40));
            if r.index(6) == 0 {
                p[0] = r.next() as u8;
            }
            if r.index(6) == 0 {
                p[2..4].copy_from_slice(&(r.index(120) as u16).to_be_bytes());
            }
            p
        }
        0x86dd => {
            let dst = if r.index(5) == 0 {
                Ipv6Addr::new(0x2001, 0xdb8, 9, 0, 0, 0, 0, 1)
            } else {
                v6_of(r.index(n))
            };
            let mut p = ipv6(dst, r.index(40));
            if r.index(6) == 0 {
                p[0] = r.next() as u8;
            }
            p
        }
        _ => (0..r.index(60)).map(|_| r.next() as u8).collect(),
    };
    if r.index(8) == 0 {
        payload.truncate(r.index(payload.len() + 1));
    }
    eth(dst, src, etype, &payload)
}

/// The MACs of `ports`, in order.
fn port_macs(engine: &Engine, ports: &[PortId]) -> Vec<[u8; 6]> {
    ports
        .iter()
        .map(|p| engine.port_info(*p).unwrap().mac.0)
        .collect()
}

/// The veth ifindex the agreement runs register port `i` with.
fn veth_of(i: usize) -> u32 {
    100 + i as u32
}

/// What an agreement run learned and checked.
#[derive(Debug, Default)]
struct Agreed {
    /// Entries learned for a sibling port.
    to_port: usize,
    /// Entries learned for the wire.
    to_wire: usize,
    /// Redirects compared with the engine.
    checked: usize,
}

/// Learns from the engine's decisions on random frames from each port (as the datapath
/// does: one sibling port or the wire, no tag operation), then replays fresh random frames
/// through the program: every redirect must be the engine's decision.
fn agreement(engine: &Engine, ports: &[PortId], kind: KeyKind, seed: u64) -> Agreed {
    let n = ports.len();
    let macs = port_macs(engine, ports);
    let mut out = Outputs::default();
    let mut r = Rng(seed);
    let mut agreed = Agreed::default();
    for from in 0..n {
        let fp = FastPath::load(256).unwrap();
        for (i, p) in ports.iter().enumerate() {
            // The sender arrives on lo under test-run.
            fp.register(*p, if i == from { LO } else { veth_of(i) }, kind);
        }
        let p = ports[from];
        for _ in 0..600 {
            let f = random_frame(&mut r, &macs, from, n);
            if engine
                .decide(&f, Ingress::Port(p), &mut NoRoutes, &mut out)
                .is_ok()
            {
                match out.as_slice() {
                    [o] if o.vlan == VlanOp::Keep => match o.target {
                        Target::Port(q) => agreed.to_port += usize::from(fp.learn(p, q, &f)),
                        Target::Wire(_) => {
                            agreed.to_wire += usize::from(fp.learn_to_wire(p, WIRE, &f));
                        }
                        _ => {}
                    },
                    _ => {}
                }
            }
        }
        let keys: Vec<([u8; KEY_LEN], Option<PortId>)> =
            fp.state().learned.iter().map(|(k, l)| (*k, l.to)).collect();
        for _ in 0..600 {
            let f = random_frame(&mut r, &macs, from, n);
            if f.len() < 14 {
                continue;
            }
            let before: Vec<u64> = keys
                .iter()
                .map(|(k, _)| fp.entry(k).unwrap().frames)
                .collect();
            let Some(ret) = try_run(&fp, &f) else {
                // The program's own bounds checks send such frames to the slow path, and
                // the key function agrees (checked in `truncated_headers_have_no_key`).
                continue;
            };
            let decided = engine.decide(&f, Ingress::Port(p), &mut NoRoutes, &mut out);
            if ret != TC_ACT_REDIRECT {
                assert_eq!(ret, TC_ACT_SHOT);
                continue;
            }
            let hit: Vec<Option<PortId>> = keys
                .iter()
                .zip(&before)
                .filter(|((k, _), b)| fp.entry(k).unwrap().frames != **b)
                .map(|((_, q), _)| *q)
                .collect();
            let [q] = hit[..] else {
                panic!("one redirect moved {} entries", hit.len());
            };
            assert!(decided.is_ok(), "cache hit but the engine drops {f:02x?}");
            let outs = out.as_slice();
            assert!(
                matches!(outs, [o] if o.vlan == VlanOp::Keep && match q {
                    Some(q) => o.target == Target::Port(q),
                    None => matches!(o.target, Target::Wire(_)),
                }),
                "cache sent {f:02x?} to {q:?} (None: the wire), the engine says {outs:?}"
            );
            agreed.checked += 1;
        }
    }
    agreed
}

/// A parent's filter as the datapath loads it with the wire cache: the XDP filter (AF_XDP
/// wire), or the tc filter with the wire socket's filter (AF_PACKET wire).
struct WireRig {
    filter: crate::port::xdp_filter::Filter,
    /// `Some`: the AF_PACKET wire's socket filter.
    sock: Option<Prog>,
}

/// What a wire's programs did with one frame: the veth they handed it to (`None`: to the
/// slow path), and the frame as the redirect takes it.
struct WireRun {
    handed: Option<u32>,
    frame: Vec<u8>,
}

/// Length of `struct __sk_buff` (Linux 6.18) for test-run contexts.
const SKB_CTX_LEN: usize = 192;

impl WireRig {
    fn new(hook: WireHook) -> WireRig {
        use crate::port::xdp_filter::{Filter, FilterMaps};
        let maps = FilterMaps::create(64).unwrap();
        match hook {
            WireHook::XdpMetadata => WireRig {
                filter: Filter::load_xdp(maps, 1, true).unwrap(),
                sock: None,
            },
            WireHook::SocketMark => {
                let filter = Filter::load_tc(maps, true).unwrap();
                let insns = assemble_wire_socket(
                    filter.wire_cache().unwrap(),
                    crate::port::inject::INJECT_MARK,
                )
                .unwrap();
                let sock = Prog::load(ProgType::SocketFilter, &insns, "uvt_fp_sock", None).unwrap();
                WireRig {
                    filter,
                    sock: Some(sock),
                }
            }
        }
    }

    fn cache(&self) -> &Map {
        self.filter.wire_cache().unwrap()
    }

    /// Runs `f` through the programs as the parent receives it. `Ok(None)`: the kernel
    /// refuses such a frame under test-run.
    fn run(&self, f: &[u8]) -> Result<Option<WireRun>, BpfError> {
        let refused = |e: &BpfError| matches!(e, BpfError::Syscall { source, .. } if source.raw_os_error() == Some(libc::EINVAL));
        let Some(sock) = &self.sock else {
            let run = match self.filter.prog().test_run(f, 1) {
                Ok(run) => run,
                Err(e) if refused(&e) => return Ok(None),
                Err(e) => return Err(e),
            };
            if run.data_out.get(..4) != Some(&META_MAGIC.to_ne_bytes()[..]) {
                return Ok(Some(WireRun {
                    handed: None,
                    frame: run.data_out,
                }));
            }
            assert_eq!(run.retval, 2, "a hit is XDP_PASS");
            let mut veth = [0u8; 4];
            veth.copy_from_slice(&run.data_out[4..8]);
            return Ok(Some(WireRun {
                handed: Some(u32::from_ne_bytes(veth)),
                frame: run.data_out[8..].to_vec(),
            }));
        };
        // A socket filter sees the frame from skb->data, which test-run puts behind a
        // 14-byte Ethernet header it consumes: give it one, so the filter sees the frame
        // whole, as on a SOCK_RAW packet socket.
        let mut wrapped = vec![0u8; 12];
        wrapped.extend_from_slice(&0x0800u16.to_be_bytes());
        wrapped.extend_from_slice(f);
        let mut ctx = [0u8; SKB_CTX_LEN];
        let run = match sock.test_run_ctx(&wrapped, 1, Some(&mut ctx)) {
            Ok(run) => run,
            Err(e) if refused(&e) => return Ok(None),
            Err(e) => return Err(e),
        };
        let word =
            |c: &[u8], at: usize| u32::from_ne_bytes([c[at], c[at + 1], c[at + 2], c[at + 3]]);
        let marked = word(&ctx, 48) == META_MAGIC;
        match run.retval {
            0 => assert!(
                marked,
                "the socket filter dropped an unmarked frame {f:02x?}"
            ),
            u32::MAX => assert!(!marked, "a frame both delivered and marked {f:02x?}"),
            r => panic!("socket filter returned {r} for {f:02x?}"),
        }
        let handed = marked.then(|| word(&ctx, 52));
        // The tc filter gets the skb with the filter's cb (the kernel keeps it in between).
        let mut tc_ctx = [0u8; SKB_CTX_LEN];
        tc_ctx[48..56].copy_from_slice(&ctx[48..56]);
        let run = match self.filter.prog().test_run_ctx(f, 1, Some(&mut tc_ctx)) {
            Ok(run) => run,
            Err(e) if refused(&e) => return Ok(None),
            Err(e) => return Err(e),
        };
        assert_eq!(
            run.retval == TC_ACT_REDIRECT,
            marked,
            "tc redirects exactly the marked frames: {f:02x?}"
        );
        if !marked {
            // A forged marker (stale cb) never redirects a frame the cache does not hold.
            let mut forged = [0u8; SKB_CTX_LEN];
            forged[48..52].copy_from_slice(&META_MAGIC.to_ne_bytes());
            forged[52..56].copy_from_slice(&veth_of(0).to_ne_bytes());
            let again = self.filter.prog().test_run_ctx(f, 1, Some(&mut forged))?;
            assert_ne!(
                again.retval, TC_ACT_REDIRECT,
                "a forged marker moved {f:02x?}"
            );
        }
        Ok(Some(WireRun {
            handed,
            frame: run.data_out,
        }))
    }
}

/// The wire → endpoint half: learns from the engine's decisions on random frames received
/// on the parent (as the datapath does: one port, no tag operation, addressed to that
/// port's MAC), then replays fresh random frames through the parent's real programs as the
/// wire `hook` loads them (the XDP filter with its fast-path prologue; or the AF_PACKET
/// socket's filter, then the tc filter with its prologue): every frame they hand to the
/// fast path must be the engine's decision, go to the target's veth and be unchanged.
/// Returns (entries learned, hits checked).
fn wire_agreement(
    engine: &Engine,
    parent: crate::fwd::ParentId,
    ports: &[PortId],
    kind: KeyKind,
    seed: u64,
    hook: WireHook,
) -> (usize, usize) {
    let n = ports.len();
    let macs = port_macs(engine, ports);
    let rig = WireRig::new(hook);
    let cache = rig.cache();
    let fp = FastPath::load(256).unwrap();
    for (i, p) in ports.iter().enumerate() {
        fp.register(*p, veth_of(i), kind);
    }
    // Under test-run a frame arrives on lo.
    fp.register_wire(LO, cache);
    let mut out = Outputs::default();
    let mut r = Rng(seed);
    let mut learned = 0;
    for _ in 0..2000 {
        let from = r.index(n);
        let f = random_frame(&mut r, &macs, from, n);
        if engine
            .decide(&f, Ingress::Wire(parent), &mut NoRoutes, &mut out)
            .is_err()
        {
            continue;
        }
        if let [o] = out.as_slice() {
            if let (Target::Port(q), VlanOp::Keep) = (o.target, o.vlan) {
                let mac = engine.port_info(q).unwrap().mac.0;
                if f.get(..6) == Some(&mac[..]) {
                    learned += usize::from(fp.learn_from_wire(LO, cache, hook, q, &f));
                }
            }
        }
    }
    let keys: Vec<([u8; KEY_LEN], PortId)> = fp
        .state()
        .learned
        .iter()
        .map(|(k, l)| (*k, l.to.unwrap()))
        .collect();
    let count = |k: &[u8; KEY_LEN]| entry_in(cache, k).unwrap().frames;
    let mut checked = 0;
    for _ in 0..2000 {
        let from = r.index(n);
        let f = random_frame(&mut r, &macs, from, n);
        if f.len() < 14 {
            continue;
        }
        let before: Vec<u64> = keys.iter().map(|(k, _)| count(k)).collect();
        let Some(run) = rig.run(&f).unwrap_or_else(|e| panic!("{e} on {f:02x?}")) else {
            continue;
        };
        let hit: Vec<PortId> = keys
            .iter()
            .zip(&before)
            .filter(|((k, _), b)| count(k) != **b)
            .map(|((_, q), _)| *q)
            .collect();
        let decided = engine.decide(&f, Ingress::Wire(parent), &mut NoRoutes, &mut out);
        match hit[..] {
            [] => assert_eq!(run.handed, None, "handed over without a hit: {f:02x?}"),
            [q] => {
                let i = ports.iter().position(|p| *p == q).unwrap();
                assert_eq!(run.handed, Some(veth_of(i)), "target of {f:02x?}");
                assert_eq!(run.frame, f, "the frame is unchanged");
                assert!(decided.is_ok(), "cache hit but the engine drops {f:02x?}");
                let outs = out.as_slice();
                assert!(
                    matches!(outs, [o] if o.target == Target::Port(q) && o.vlan == VlanOp::Keep),
                    "cache sent {f:02x?} to {q}, the engine says {outs:?}"
                );
                checked += 1;
            }
            _ => panic!("one frame moved {} entries", hit.len()),
        }
    }
    (learned, checked)
}

fn with_v6(mut flat: sample::Flat) -> sample::Flat {
    for (i, p) in flat.ports.clone().iter().enumerate() {
        flat.engine.add_port_addr(*p, IpAddr::V6(v6_of(i))).unwrap();
    }
    flat
}

#[test]
fn cache_agrees_with_the_engine_macvlan_bridge() {
    let flat = sample::flat(Driver::Macvlan, IpvlanMode::L2, None, 4).unwrap();
    let a = agreement(&flat.engine, &flat.ports, KeyKind::Mac, 1);
    assert!(
        a.to_port >= 4 && a.to_wire >= 4 && a.checked >= 200,
        "{a:?}"
    );
}

#[test]
fn cache_agrees_with_the_engine_ipvlan_l2_and_l3_bridge() {
    for (mode, seed) in [
        (IpvlanMode::L2, 2),
        (IpvlanMode::L3, 3),
        (IpvlanMode::L3s, 4),
    ] {
        let flat = with_v6(sample::flat(Driver::Ipvlan, mode, None, 4).unwrap());
        let a = agreement(&flat.engine, &flat.ports, KeyKind::L3, seed);
        // L3 and L3S route what leaves for the wire (the host's tables): nothing to learn.
        let to_wire = if mode == IpvlanMode::L2 { 4 } else { 0 };
        assert!(
            a.to_port >= 4 && a.to_wire >= to_wire && a.checked >= 100,
            "{mode:?}: {a:?}"
        );
        if mode != IpvlanMode::L2 {
            assert_eq!(a.to_wire, 0, "{mode:?}");
        }
    }
}

/// True where the kernel lets XDP programs call `bpf_xdp_adjust_meta`, which the XDP
/// prologue needs. Elsewhere it checks the fallback instead (an AF_XDP parent's filter
/// comes without the wire cache, so wire → endpoint frames take the slow path) and says
/// that the XDP half of the calling test cannot run on this kernel.
fn xdp_prologue_here() -> bool {
    use crate::port::xdp_filter::{Filter, FilterMaps};
    if crate::port::probe::xdp_metadata() {
        return true;
    }
    let f = Filter::load_xdp(FilterMaps::create(16).unwrap(), 1, true).unwrap();
    assert!(
        f.wire_cache().is_none(),
        "a wire cache without bpf_xdp_adjust_meta"
    );
    eprintln!(
        "this kernel refuses bpf_xdp_adjust_meta to XDP programs: the XDP prologue cannot \
         run here; checked that the AF_XDP filter comes without the wire cache instead"
    );
    false
}

#[test]
fn tagged_networks_agree_too() {
    let flat = sample::flat(Driver::Macvlan, IpvlanMode::L2, Some(20), 3).unwrap();
    let a = agreement(&flat.engine, &flat.ports, KeyKind::Mac, 5);
    assert!(a.to_port >= 3 && a.checked >= 100, "{a:?}");
    // Every frame for the wire of `eth0.20` gets a tag: none is learned.
    assert_eq!(a.to_wire, 0);
    let flat = with_v6(sample::flat(Driver::Ipvlan, IpvlanMode::L2, Some(20), 3).unwrap());
    let a = agreement(&flat.engine, &flat.ports, KeyKind::L3, 6);
    assert!(a.to_port >= 3 && a.checked >= 50, "{a:?}");
    assert_eq!(a.to_wire, 0);
    // From the wire, such a network's frames are tagged: none is learned either (through
    // the AF_PACKET wire's programs where the XDP prologue cannot run).
    let hook = if xdp_prologue_here() {
        WireHook::XdpMetadata
    } else {
        WireHook::SocketMark
    };
    let (learned, _) = wire_agreement(&flat.engine, flat.parent, &flat.ports, KeyKind::L3, 7, hook);
    assert_eq!(learned, 0);
}

fn wire_entries_agree(hook: WireHook) {
    let flat = sample::flat(Driver::Macvlan, IpvlanMode::L2, None, 4).unwrap();
    let (learned, checked) = wire_agreement(
        &flat.engine,
        flat.parent,
        &flat.ports,
        KeyKind::Mac,
        11,
        hook,
    );
    assert!(
        learned >= 4 && checked >= 200,
        "macvlan: {learned} {checked}"
    );
    for (mode, seed) in [
        (IpvlanMode::L2, 12),
        (IpvlanMode::L3, 13),
        (IpvlanMode::L3s, 14),
    ] {
        let flat = with_v6(sample::flat(Driver::Ipvlan, mode, None, 4).unwrap());
        let (learned, checked) = wire_agreement(
            &flat.engine,
            flat.parent,
            &flat.ports,
            KeyKind::L3,
            seed,
            hook,
        );
        assert!(
            learned >= 4 && checked >= 100,
            "{mode:?}: {learned} {checked}"
        );
    }
}

#[test]
fn wire_to_endpoint_entries_agree_with_the_engine() {
    if xdp_prologue_here() {
        wire_entries_agree(WireHook::XdpMetadata);
    }
}

#[test]
fn af_packet_wire_entries_agree_with_the_engine() {
    wire_entries_agree(WireHook::SocketMark);
}

#[test]
fn the_wire_socket_filter_drops_injected_frames() {
    let rig = WireRig::new(WireHook::SocketMark);
    let f = eth(B, A, 0x0800, &ipv4(Ipv4Addr::new(192, 0, 2, 2), 26));
    let mut wrapped = vec![0u8; 12];
    wrapped.extend_from_slice(&0x0800u16.to_be_bytes());
    wrapped.extend_from_slice(&f);
    let sock = rig.sock.as_ref().unwrap();
    let mut ctx = [0u8; SKB_CTX_LEN];
    assert_eq!(
        sock.test_run_ctx(&wrapped, 1, Some(&mut ctx))
            .unwrap()
            .retval,
        u32::MAX
    );
    let mut ctx = [0u8; SKB_CTX_LEN];
    ctx[8..12].copy_from_slice(&crate::port::inject::INJECT_MARK.to_ne_bytes());
    assert_eq!(
        sock.test_run_ctx(&wrapped, 1, Some(&mut ctx))
            .unwrap()
            .retval,
        0
    );
}

#[test]
fn private_and_vepa_decisions_are_learned_only_for_the_wire() {
    for (mode, seed) in [(MacvlanMode::Private, 7), (MacvlanMode::Vepa, 8)] {
        let mut flat = sample::flat(Driver::Macvlan, IpvlanMode::L2, None, 3).unwrap();
        for p in flat.ports.clone() {
            flat.engine
                .macvlan_changelink(p, MacvlanAttrs::new(mode, None))
                .unwrap();
        }
        let a = agreement(&flat.engine, &flat.ports, KeyKind::Mac, seed);
        assert_eq!(a.to_port, 0, "{mode:?}");
        assert!(a.to_wire >= 3 && a.checked >= 50, "{mode:?}: {a:?}");
    }
    for (flag, seed) in [(IpvlanFlag::Private, 9), (IpvlanFlag::Vepa, 10)] {
        for mode in [IpvlanMode::L2, IpvlanMode::L3] {
            let mut flat = with_v6(sample::flat(Driver::Ipvlan, mode, None, 3).unwrap());
            let p0 = flat.ports[0];
            flat.engine
                .ipvlan_changelink(p0, IpvlanAttrs::new(mode, flag))
                .unwrap();
            let a = agreement(&flat.engine, &flat.ports, KeyKind::L3, seed);
            assert_eq!(a.to_port, 0, "{mode:?} {flag:?}");
        }
    }
}

#[test]
fn wire_entries_count_per_parent_and_keep_their_counters_across_a_flush() {
    use crate::port::xdp_filter::{Filter, FilterMaps};
    if !xdp_prologue_here() {
        return;
    }
    let filter = Filter::load_xdp(FilterMaps::create(16).unwrap(), 1, true).unwrap();
    let cache = filter.wire_cache().unwrap();
    let fp = FastPath::load(16).unwrap();
    let q = PortId(3);
    fp.register(q, 100, KeyKind::Mac);
    fp.register(PortId(4), LO, KeyKind::Mac);
    fp.register_wire(LO, cache);
    let from_wire = eth(B, A, 0x0800, &ipv4(Ipv4Addr::new(192, 0, 2, 2), 26));
    assert!(fp.learn_from_wire(LO, cache, WireHook::XdpMetadata, q, &from_wire));
    // A frame to the wire from port 4 (its veth is lo under test-run).
    let to_wire = eth(A, B, 0x0800, &ipv4(Ipv4Addr::new(192, 0, 2, 9), 26));
    assert!(fp.learn_to_wire(PortId(4), WIRE, &to_wire));
    for _ in 0..3 {
        assert_eq!(filter.prog().test_run(&from_wire, 1).unwrap().retval, 2);
    }
    assert_eq!(run(&fp, &to_wire), TC_ACT_REDIRECT);
    let sum = |v: Vec<(u32, EntryCounters, EntryCounters)>| -> Vec<(u32, u64, u64)> {
        v.into_iter()
            .map(|(p, t, r)| (p, t.frames, r.frames))
            .collect()
    };
    assert_eq!(sum(fp.wire_counters()), vec![(LO, 0, 3), (WIRE, 1, 0)]);
    fp.flush();
    assert_eq!(
        sum(fp.wire_counters()),
        vec![(LO, 0, 3), (WIRE, 1, 0)],
        "kept across a flush"
    );
    // The port's own totals carry them too.
    let ports = fp.port_counters();
    let of = |p: PortId| {
        ports
            .iter()
            .find(|(x, _, _)| *x == p)
            .map(|(_, t, r)| (t.frames, r.frames))
    };
    assert_eq!(of(q), Some((0, 3)));
    assert_eq!(of(PortId(4)), Some((1, 0)));
    // A wire dropped (closed or reopened) starts afresh.
    assert!(fp.drop_wire(LO));
    assert_eq!(sum(fp.wire_counters()), vec![(WIRE, 1, 0)]);
}
