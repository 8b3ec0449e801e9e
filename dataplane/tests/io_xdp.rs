//! Root tests of the parent-NIC I/O layer on veth pairs in namespaces the tests create.
//!
//! Each test builds `uvt-<pid>-<n>h` (the "host" side, where the parent backend runs) and
//! `uvt-<pid>-<n>p` (the peer, which sends and receives with `ping` and a raw AF_PACKET
//! socket), joined by a veth pair. Addresses are documentation ranges only. The host side
//! owns 192.0.2.1 and .3, 2001:db8::1 and ::3; the filter steers .1/::1 to the dataplane, so
//! a ping to .1 must *not* be answered (the host never sees it) while .3 must be.
//! The test thread enters a namespace with `setns` only to open sockets (they stay bound to
//! their namespace) and returns to its own namespace at once. A Drop guard deletes both
//! namespaces (and with them the veth pair) even when an assertion fails.

use std::fs::File;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::os::fd::AsRawFd;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use uvlan_dataplane::offload::{kernel_gso_header, VnetHdr};
use uvlan_dataplane::port::afpacket::{
    AfPacketOptions, AfPacketParent, AfPacketSocket, GsoTxSocket,
};
use uvlan_dataplane::port::xsk::{BindMode, XdpAttach, XdpError, XdpMode, XdpOptions, XdpParent};
use uvlan_dataplane::port::{RxFrame, Steering, WireIo, WireMode};
use uvlan_dataplane::wire::PacketType;

const HOST_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0a];
const PEER_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0b];
const EP_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
const EP4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
const PEER4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);
const HOST4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 3);
const EP6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);
const NS6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 5);

static SEQ: AtomicU32 = AtomicU32::new(0);

fn sh(args: &[&str]) -> Output {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {args:?}: {e}"));
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Two namespaces joined by a veth pair; deleted on drop.
struct Topo {
    host: String,
    peer: String,
    hif: String,
    pif: String,
}

impl Drop for Topo {
    fn drop(&mut self) {
        for ns in [&self.host, &self.peer] {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
    }
}

impl Topo {
    fn new(queues: Option<u32>) -> Topo {
        let n = SEQ.fetch_add(1, Ordering::SeqCst);
        let pid = std::process::id();
        let t = Topo {
            host: format!("uvt-{pid}-{n}h"),
            peer: format!("uvt-{pid}-{n}p"),
            hif: format!("uvt{n}h"),
            pif: format!("uvt{n}p"),
        };
        let (h, p, hif, pif) = (&t.host, &t.peer, &t.hif, &t.pif);
        sh(&["ip", "netns", "add", h]);
        sh(&["ip", "netns", "add", p]);
        let mut add = vec![
            "ip", "link", "add", hif, "netns", h, "type", "veth", "peer", "name", pif, "netns", p,
        ];
        let q = queues.map(|q| q.to_string());
        if let Some(q) = &q {
            // Queue counts of both ends: `numrxqueues`/`numtxqueues` go before `type`.
            add = vec![
                "ip",
                "link",
                "add",
                hif,
                "netns",
                h,
                "numrxqueues",
                q,
                "numtxqueues",
                q,
                "type",
                "veth",
                "peer",
                "name",
                pif,
                "netns",
                p,
                "numrxqueues",
                q,
                "numtxqueues",
                q,
            ];
        }
        sh(&add);
        let hm = mac_str(HOST_MAC);
        let pm = mac_str(PEER_MAC);
        sh(&["ip", "-n", h, "link", "set", hif, "address", &hm]);
        sh(&["ip", "-n", p, "link", "set", pif, "address", &pm]);
        if let Some(q) = &q {
            sh(&[
                "ip", "netns", "exec", h, "ethtool", "-L", hif, "rx", q, "tx", q,
            ]);
            sh(&[
                "ip", "netns", "exec", p, "ethtool", "-L", pif, "rx", q, "tx", q,
            ]);
        }
        for (ns, ifn) in [(h, hif), (p, pif)] {
            sh(&["ip", "-n", ns, "link", "set", "lo", "up"]);
            sh(&["ip", "-n", ns, "link", "set", ifn, "up"]);
        }
        for a in ["192.0.2.1/24", "192.0.2.3/24"] {
            sh(&["ip", "-n", h, "addr", "add", a, "dev", hif]);
        }
        for a in ["2001:db8::1/64", "2001:db8::3/64"] {
            sh(&["ip", "-n", h, "addr", "add", a, "dev", hif, "nodad"]);
        }
        sh(&["ip", "-n", p, "addr", "add", "192.0.2.2/24", "dev", pif]);
        sh(&[
            "ip",
            "-n",
            p,
            "addr",
            "add",
            "2001:db8::2/64",
            "dev",
            pif,
            "nodad",
        ]);
        // Frames from a local stack carry partial checksums: finish them on the sender.
        sh(&["ip", "netns", "exec", p, "ethtool", "-K", pif, "tx", "off"]);
        // Static neighbours so pings to steered addresses go out without ARP/NS.
        for a in ["192.0.2.1", "192.0.2.3", "2001:db8::1", "2001:db8::3"] {
            sh(&[
                "ip", "-n", p, "neigh", "replace", a, "lladdr", &hm, "dev", pif,
            ]);
        }
        t
    }

    /// Run `f` with the calling thread inside namespace `ns`, then come back.
    fn within<T>(&self, ns: &str, f: impl FnOnce() -> T) -> T {
        let orig = File::open("/proc/thread-self/ns/net").unwrap();
        let target = File::open(format!("/run/netns/{ns}")).unwrap();
        assert_eq!(
            // SAFETY: setns on an open netns fd only changes this thread's network namespace.
            unsafe { libc::setns(target.as_raw_fd(), libc::CLONE_NEWNET) },
            0
        );
        struct Back(File);
        impl Drop for Back {
            fn drop(&mut self) {
                // SAFETY: as above; returns the thread to the namespace it started in.
                unsafe { libc::setns(self.0.as_raw_fd(), libc::CLONE_NEWNET) };
            }
        }
        let _back = Back(orig);
        f()
    }

    /// Opens the parent (`hif`) in the host namespace with rings of 64 and `attach`.
    fn open_xdp(&self, attach: XdpAttach) -> Result<XdpParent, XdpError> {
        let opts = XdpOptions {
            ring_size: 64,
            attach,
            ..Default::default()
        };
        self.within(&self.host, || XdpParent::open(&self.hif, &opts))
    }

    /// Runs `ping ARGS` (split on whitespace) in the peer namespace while `pump` drains the
    /// test's sockets; how many answers it got, and its output.
    fn ping_pumping(&self, args: &str, pump: impl FnMut()) -> (u32, String) {
        let mut argv = vec!["ping"];
        argv.extend(args.split_whitespace());
        let out = run_pumping(self.peer_cmd(&argv), pump);
        (received(&out), out)
    }

    fn peer_cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.peer]).args(args);
        c.stdout(Stdio::piped()).stderr(Stdio::piped());
        c
    }
}

fn mac_str(m: [u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Collected frames from one receiver.
#[derive(Default, Debug)]
struct Seen {
    frames: Vec<(Vec<u8>, Option<PacketType>, bool, u32)>,
}

impl Seen {
    fn take(&mut self, f: RxFrame<'_>) {
        self.frames
            .push((f.data.to_vec(), f.pkt_type, f.vlan_restored, f.queue));
    }
    fn count(&self, pred: impl Fn(&[u8]) -> bool) -> usize {
        self.frames.iter().filter(|(d, ..)| pred(d)).count()
    }
    fn clear(&mut self) {
        self.frames.clear();
    }
    /// The frames that carry `marker`.
    fn marked(&self, marker: &'static [u8]) -> Vec<&(Vec<u8>, Option<PacketType>, bool, u32)> {
        self.frames
            .iter()
            .filter(|(d, ..)| has_marker(marker)(d))
            .collect()
    }
    /// The ARP replies to the peer that give `ip`'s MAC (its sender address).
    fn arp_replies_for(&self, ip: Ipv4Addr) -> usize {
        self.count(|f| arp_for(PEER4, 2)(f) && f[28..32] == ip.octets())
    }
}

/// Run `cmd` to completion while pumping `pump` (receive loops), then pump a little longer.
fn run_pumping(mut cmd: Command, mut pump: impl FnMut()) -> String {
    let child = cmd.spawn().expect("spawn");
    let mut child = child;
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        pump();
        std::thread::sleep(Duration::from_millis(2));
        assert!(Instant::now() < deadline, "command timed out");
    }
    pump_for(Duration::from_millis(100), &mut pump);
    let out = child.wait_with_output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn pump_for(d: Duration, pump: &mut impl FnMut()) {
    let end = Instant::now() + d;
    while Instant::now() < end {
        pump();
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn received(ping_out: &str) -> u32 {
    // "3 packets transmitted, 0 received, ..."
    ping_out
        .split(',')
        .find(|s| s.contains(" received"))
        .and_then(|s| s.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no ping summary in {ping_out:?}"))
}

// ---- frame builders and predicates -------------------------------------------------------

fn eth(dst: [u8; 6], vid: Option<u16>, ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&dst);
    f.extend_from_slice(&PEER_MAC);
    if let Some(v) = vid {
        f.extend_from_slice(&[0x81, 0x00]);
        f.extend_from_slice(&v.to_be_bytes());
    }
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

fn csum_add(mut sum: u32, data: &[u8]) -> u32 {
    for c in data.chunks(2) {
        let w = if c.len() == 2 {
            u16::from_be_bytes([c[0], c[1]])
        } else {
            u16::from_be_bytes([c[0], 0])
        };
        sum += w as u32;
    }
    sum
}

fn csum_fold(mut sum: u32) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

/// IPv4/UDP packet; `udp_csum`: fill the full UDP checksum, or leave the pseudo-header sum
/// (CHECKSUM_PARTIAL convention) for the kernel to finish.
fn ipv4_udp(src: Ipv4Addr, dst: Ipv4Addr, sport: u16, payload: &[u8], full_csum: bool) -> Vec<u8> {
    let ulen = 8 + payload.len() as u16;
    let tlen = 20 + ulen;
    let mut p = vec![0x45, 0, 0, 0, 0, 1, 0x40, 0, 64, 17, 0, 0];
    p[2..4].copy_from_slice(&tlen.to_be_bytes());
    p.extend_from_slice(&src.octets());
    p.extend_from_slice(&dst.octets());
    let hc = !csum_fold(csum_add(0, &p));
    p[10..12].copy_from_slice(&hc.to_be_bytes());
    let mut pseudo = Vec::new();
    pseudo.extend_from_slice(&src.octets());
    pseudo.extend_from_slice(&dst.octets());
    pseudo.extend_from_slice(&[0, 17]);
    pseudo.extend_from_slice(&ulen.to_be_bytes());
    let mut u = Vec::new();
    u.extend_from_slice(&sport.to_be_bytes());
    u.extend_from_slice(&9u16.to_be_bytes());
    u.extend_from_slice(&ulen.to_be_bytes());
    u.extend_from_slice(&[0, 0]);
    u.extend_from_slice(payload);
    let c = if full_csum {
        !csum_fold(csum_add(csum_add(0, &pseudo), &u))
    } else {
        csum_fold(csum_add(0, &pseudo))
    };
    u[6..8].copy_from_slice(&c.to_be_bytes());
    p.extend_from_slice(&u);
    p
}

fn udp_csum_ok(frame: &[u8]) -> bool {
    let ip = &frame[14..];
    let ulen = u16::from_be_bytes([ip[24], ip[25]]);
    let mut pseudo = Vec::new();
    pseudo.extend_from_slice(&ip[12..20]);
    pseudo.extend_from_slice(&[0, 17]);
    pseudo.extend_from_slice(&ulen.to_be_bytes());
    csum_fold(csum_add(csum_add(0, &pseudo), &ip[20..20 + ulen as usize])) == 0xffff
}

fn arp_request(tpa: Ipv4Addr) -> Vec<u8> {
    let mut p = vec![0, 1, 8, 0, 6, 4, 0, 1];
    p.extend_from_slice(&PEER_MAC);
    p.extend_from_slice(&PEER4.octets());
    p.extend_from_slice(&[0; 6]);
    p.extend_from_slice(&tpa.octets());
    eth([0xff; 6], None, 0x0806, &p)
}

fn ethertype(f: &[u8]) -> u16 {
    u16::from_be_bytes([f[12], f[13]])
}

fn icmp4_echo_to(dst: Ipv4Addr) -> impl Fn(&[u8]) -> bool {
    move |f| {
        f.len() >= 35
            && ethertype(f) == 0x0800
            && f[23] == 1
            && f[30..34] == dst.octets()
            && f[34] == 8
    }
}

fn icmp6_to(dst: Ipv6Addr, typ: u8) -> impl Fn(&[u8]) -> bool {
    move |f| {
        f.len() >= 55
            && ethertype(f) == 0x86dd
            && f[20] == 58
            && f[38..54] == dst.octets()
            && f[54] == typ
    }
}

fn ns_for(target: Ipv6Addr) -> impl Fn(&[u8]) -> bool {
    move |f| {
        f.len() >= 78
            && ethertype(f) == 0x86dd
            && f[20] == 58
            && f[54] == 135
            && f[62..78] == target.octets()
    }
}

fn arp_for(tpa: Ipv4Addr, op: u8) -> impl Fn(&[u8]) -> bool {
    move |f| f.len() >= 42 && ethertype(f) == 0x0806 && f[21] == op && f[38..42] == tpa.octets()
}

fn has_marker(marker: &'static [u8]) -> impl Fn(&[u8]) -> bool {
    move |f| f.windows(marker.len()).any(|w| w == marker)
}

fn send_all(s: &mut AfPacketSocket, frames: &[Vec<u8>]) {
    for f in frames {
        assert!(s.send(f).unwrap());
    }
    s.flush().unwrap();
}

/// Sends three UDP frames tagged with VID 20 (marked `uvt-vid20`), then three with VID 30
/// (`uvt-vid30`), from `peer`; returns both sets.
fn send_vid_20_and_30(peer: &mut AfPacketSocket) -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
    let v20: Vec<_> = (0..3)
        .map(|i| tagged_udp(20, 1000 + i, b"uvt-vid20"))
        .collect();
    let v30: Vec<_> = (0..3)
        .map(|i| tagged_udp(30, 2000 + i, b"uvt-vid30"))
        .collect();
    send_all(peer, &v20);
    send_all(peer, &v30);
    (v20, v30)
}

fn tagged_udp(vid: u16, sport: u16, marker: &[u8]) -> Vec<u8> {
    eth(
        HOST_MAC,
        Some(vid),
        0x0800,
        &ipv4_udp(PEER4, EP4, sport, marker, true),
    )
}

// ---- AF_XDP scenario --------------------------------------------------------------------

fn xdp_scenario(attach: XdpAttach, expect: XdpMode) {
    let t = Topo::new(None);
    let opts = XdpOptions {
        attach,
        ring_size: 512,
        ..Default::default()
    };
    let (mut parent, mut copy) = t.within(&t.host, || {
        (
            XdpParent::open(&t.hif, &opts).expect("XdpParent::open"),
            AfPacketSocket::open(&t.hif, &AfPacketOptions::default()).unwrap(),
        )
    });
    let mut peer = t.within(&t.peer, || {
        AfPacketSocket::open(&t.pif, &AfPacketOptions::default()).unwrap()
    });
    assert_eq!(parent.xdp_mode(), expect);
    assert_eq!(parent.bind_mode(), BindMode::Copy);
    assert_eq!(parent.queues(), 1);
    assert_eq!(
        WireIo::mode(&parent),
        WireMode::AfXdp {
            xdp: expect,
            bind: BindMode::Copy,
            queues: 1
        }
    );
    eprintln!("mode: {}", WireIo::mode(&parent));
    let maps = parent.filter_maps().try_clone().unwrap();
    maps.add_ipv4(0, EP4).unwrap();
    maps.add_ipv6(0, EP6).unwrap();
    maps.add_ipv6(0, NS6).unwrap();
    maps.add_ipv4(20, EP4).unwrap();
    maps.add_mac(0, EP_MAC).unwrap();

    let mut xsk = Seen::default();
    let mut cp = Seen::default();
    let mut pr = Seen::default();
    macro_rules! pump {
        () => {
            || {
                parent.recv_batch(64, &mut |f| xsk.take(f));
                copy.recv_batch(64, &mut |f| cp.take(f)).unwrap();
                peer.recv_batch(64, &mut |f| pr.take(f)).unwrap();
            }
        };
    }

    // IPv4 to a steered address: the XSK gets it, the host never answers.
    let (answers, out) = t.ping_pumping("-c 3 -i 0.2 -W 1 192.0.2.1", pump!());
    assert_eq!(answers, 0, "host answered a steered ping: {out}");
    assert_eq!(xsk.count(icmp4_echo_to(EP4)), 3, "{xsk:?}");
    assert_eq!(
        cp.count(icmp4_echo_to(EP4)),
        0,
        "AF_PACKET saw a redirected frame"
    );
    // IPv4 to the host's own address is passed and answered.
    let (answers, out) = t.ping_pumping("-c 2 -i 0.2 -W 1 192.0.2.3", pump!());
    assert_eq!(answers, 2, "host traffic broken: {out}");
    assert_eq!(xsk.count(icmp4_echo_to(HOST4)), 0);
    assert_eq!(cp.count(icmp4_echo_to(HOST4)), 2);

    // Broadcast ARP request for the endpoint: redirected, no reply; for the host: replied.
    pr.clear();
    send_all(&mut peer, &[arp_request(EP4), arp_request(HOST4)]);
    pump_for(Duration::from_millis(300), &mut pump!());
    assert_eq!(xsk.count(arp_for(EP4, 1)), 1);
    assert_eq!(cp.count(arp_for(EP4, 1)), 0);
    assert_eq!(cp.count(arp_for(HOST4, 1)), 1);
    assert_eq!(pr.arp_replies_for(EP4), 0);
    assert_eq!(pr.arp_replies_for(HOST4), 1);

    // IPv6 to the endpoint (static neighbour) and NS for another endpoint address.
    let (answers, out) = t.ping_pumping("-6 -c 2 -i 0.2 -W 1 2001:db8::1", pump!());
    assert_eq!(answers, 0, "{out}");
    assert_eq!(xsk.count(icmp6_to(EP6, 128)), 2);
    let (answers, out) = t.ping_pumping("-6 -c 1 -W 1 2001:db8::5", pump!());
    assert_eq!(answers, 0, "{out}");
    assert!(xsk.count(ns_for(NS6)) >= 1, "NS for ::5 not redirected");
    assert_eq!(cp.count(ns_for(NS6)), 0);
    let (answers, out) = t.ping_pumping("-6 -c 2 -i 0.2 -W 1 2001:db8::3", pump!());
    assert_eq!(answers, 2, "{out}");

    // 802.1Q: vid 20 is steered (the tag is in the frame the XSK gets), vid 30 is passed.
    let (v20, v30) = send_vid_20_and_30(&mut peer);
    pump_for(Duration::from_millis(300), &mut pump!());
    let got20 = xsk.marked(b"uvt-vid20");
    assert_eq!(got20.len(), 3);
    for (d, ..) in &got20 {
        assert_eq!(
            &d[12..16],
            &[0x81, 0x00, 0x00, 20],
            "XSK frame lost its tag"
        );
        assert!(v20.contains(d));
    }
    assert_eq!(xsk.count(has_marker(b"uvt-vid30")), 0);
    let got30 = cp.marked(b"uvt-vid30");
    assert_eq!(got30.len(), 3);
    for (d, _, restored, _) in &got30 {
        eprintln!("AF_PACKET vid-30 frame: tag restored from auxdata = {restored}");
        assert!(
            v30.contains(d),
            "AF_PACKET frame differs from the wire frame"
        );
    }
    assert_eq!(cp.count(has_marker(b"uvt-vid20")), 0);

    // Unknown ethertype to a steered MAC.
    send_all(
        &mut peer,
        &[eth(
            EP_MAC,
            None,
            0x88b5,
            b"uvt-mac-steered-0123456789012345678901234567890",
        )],
    );
    pump_for(Duration::from_millis(200), &mut pump!());
    assert_eq!(xsk.count(has_marker(b"uvt-mac-steered")), 1);
    assert_eq!(cp.count(has_marker(b"uvt-mac-steered")), 0);

    // Transmit through the XSK: the peer receives the frames unchanged.
    pr.clear();
    let tx: Vec<_> = (0..5u8)
        .map(|i| {
            eth(
                PEER_MAC,
                None,
                0x88b5,
                &[b"uvt-xsk-tx-".as_slice(), &[i; 40]].concat(),
            )
        })
        .map(|mut f| {
            f[6..12].copy_from_slice(&EP_MAC);
            f
        })
        .collect();
    for f in &tx {
        assert!(parent.send(f).unwrap());
    }
    parent.flush().unwrap();
    pump_for(Duration::from_millis(300), &mut pump!());
    let rx: Vec<_> = pr
        .frames
        .iter()
        .filter(|(d, ..)| has_marker(b"uvt-xsk-tx-")(d))
        .map(|(d, ..)| d.clone())
        .collect();
    assert_eq!(rx, tx, "peer did not get the XSK transmissions in order");
    assert_eq!(
        cp.count(has_marker(b"uvt-xsk-tx-")),
        0,
        "own transmission seen as ingress"
    );

    // Transmit with a checksum request: the kernel completes the UDP checksum.
    assert!(
        parent.tx_checksum_enabled(),
        "TX metadata should work on this kernel"
    );
    let mut f = eth(
        PEER_MAC,
        None,
        0x0800,
        &ipv4_udp(EP4, PEER4, 4242, b"uvt-csum-request", false),
    );
    f[6..12].copy_from_slice(&EP_MAC);
    assert!(!udp_csum_ok(&f));
    assert!(parent.transmit_with_csum(&f, 34, 6).unwrap());
    parent.flush().unwrap();
    pump_for(Duration::from_millis(300), &mut pump!());
    let got = pr.marked(b"uvt-csum-request");
    assert_eq!(got.len(), 1);
    assert!(
        udp_csum_ok(&got[0].0),
        "checksum not completed by the kernel"
    );

    let st = parent.stats().unwrap();
    eprintln!("{st:?}");
    assert_eq!(st.filter.no_socket, 0);
    // 3 pings to .1, 1 ARP, 2 pings to ::1, >= 1 NS, 3 vid-20 frames, 1 MAC-keyed frame.
    assert!(st.filter.redirected >= 11, "{st:?}");
    assert!(st.filter.hit_arp >= 1 && st.filter.hit_ns >= 1 && st.filter.hit_mac >= 1);
    assert_eq!(st.queues[0].tx_frames, 6);
    assert!(st.queues[0].rx_frames as usize >= xsk.frames.len());
    assert_eq!(st.queues[0].kernel.rx_dropped, 0);

    // Removing the key hands .1 back to the host.
    maps.remove_ipv4(0, EP4).unwrap();
    let (answers, out) = t.ping_pumping("-c 2 -i 0.2 -W 1 192.0.2.1", pump!());
    assert_eq!(answers, 2, "{out}");
    drop(parent);
    drop(copy);
    drop(peer);
}

#[test]
fn xdp_native_steers_endpoint_frames_and_passes_host_traffic() {
    xdp_scenario(XdpAttach::Native, XdpMode::Native);
}

#[test]
fn xdp_generic_steers_endpoint_frames_and_passes_host_traffic() {
    xdp_scenario(XdpAttach::Generic, XdpMode::Generic);
}

#[test]
fn xdp_auto_prefers_native_on_veth_and_falls_back_when_mtu_too_big() {
    let t = Topo::new(None);
    let p = t.open_xdp(XdpAttach::Auto).unwrap();
    assert_eq!(p.xdp_mode(), XdpMode::Native);
    drop(p);
    // Native XDP on veth needs the peer MTU <= 3506: ERANGE, then generic.
    sh(&["ip", "-n", &t.peer, "link", "set", &t.pif, "mtu", "4000"]);
    let p = t.open_xdp(XdpAttach::Auto).unwrap();
    assert_eq!(p.xdp_mode(), XdpMode::Generic);
    // A second attach while ours holds the hook is refused with a clear error.
    let e = t.open_xdp(XdpAttach::Generic).unwrap_err();
    assert!(e.to_string().contains("already holds this hook"), "{e}");
    drop(p);
    // After drop the link is gone: attaching again works.
    let p = t.open_xdp(XdpAttach::Auto).unwrap();
    let out = sh(&["ip", "-n", &t.host, "-d", "link", "show", &t.hif]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("xdpgeneric"));
    drop(p);
    let out = sh(&["ip", "-n", &t.host, "-d", "link", "show", &t.hif]);
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("xdp"),
        "program left attached"
    );
}

#[test]
fn xdp_zero_copy_request_falls_back_to_copy_on_veth() {
    let t = Topo::new(None);
    let o = XdpOptions {
        ring_size: 64,
        zero_copy: true,
        attach: XdpAttach::Native,
        ..Default::default()
    };
    let mut p = t.within(&t.host, || XdpParent::open(&t.hif, &o).unwrap());
    assert_eq!(p.bind_mode(), BindMode::Copy);
    // Frames larger than a UMEM frame (minus TX metadata) are refused and counted.
    assert!(!p.send(&[0u8; 4096]).unwrap());
    assert!(p.send(&[0u8; 4096 - 24]).unwrap());
    p.flush().unwrap();
    let st = p.stats().unwrap();
    assert_eq!((st.queues[0].tx_oversize, st.queues[0].tx_frames), (1, 1));
    // A checksum field beyond the frame is refused.
    assert!(p.transmit_with_csum(&[0u8; 60], 50, 10).is_err());
}

#[test]
fn xdp_binds_every_rx_queue() {
    let t = Topo::new(Some(2));
    let opts = XdpOptions {
        attach: XdpAttach::Native,
        ring_size: 256,
        ..Default::default()
    };
    let mut parent = t.within(&t.host, || XdpParent::open(&t.hif, &opts).unwrap());
    let mut peer = t.within(&t.peer, || {
        AfPacketSocket::open(&t.pif, &AfPacketOptions::default()).unwrap()
    });
    assert_eq!(parent.queues(), 2);
    assert_eq!(parent.poll_fds().len(), 2);
    parent.filter_maps().add_ipv4(0, EP4).unwrap();
    let frames: Vec<_> = (0..64u16)
        .map(|i| {
            eth(
                HOST_MAC,
                None,
                0x0800,
                &ipv4_udp(PEER4, EP4, 10_000 + i * 7, b"uvt-mq", true),
            )
        })
        .collect();
    send_all(&mut peer, &frames);
    let mut per_queue = [0usize; 2];
    pump_for(Duration::from_millis(500), &mut || {
        parent.recv_batch(64, &mut |f| {
            if has_marker(b"uvt-mq")(f.data) {
                per_queue[f.queue as usize] += 1;
            }
        });
    });
    eprintln!("per-queue XSK frames: {per_queue:?}");
    let st = parent.stats().unwrap();
    assert_eq!(per_queue[0] + per_queue[1], 64, "{st:?}");
    assert_eq!(st.filter.no_socket, 0);
    assert!(
        per_queue[0] > 0 && per_queue[1] > 0,
        "flows were not spread: {per_queue:?}"
    );
}

// ---- AF_PACKET + tcx fallback -----------------------------------------------------------

#[test]
fn afpacket_fallback_hides_endpoint_frames_from_the_host() {
    let t = Topo::new(None);
    let mut parent = t.within(&t.host, || {
        AfPacketParent::open(&t.hif, &AfPacketOptions::default()).unwrap()
    });
    let mut peer = t.within(&t.peer, || {
        AfPacketSocket::open(&t.pif, &AfPacketOptions::default()).unwrap()
    });
    assert_eq!(
        WireIo::mode(&parent),
        WireMode::AfPacket {
            steering: Steering::TcxIngress
        }
    );
    let maps = WireIo::filter_maps(&parent).unwrap().try_clone().unwrap();
    maps.add_ipv4(0, EP4).unwrap();
    maps.add_ipv4(20, EP4).unwrap();
    maps.add_ipv6(0, EP6).unwrap();

    let mut got = Seen::default();
    let mut pr = Seen::default();
    macro_rules! pump {
        () => {
            || {
                WireIo::recv_batch(&mut parent, 64, &mut |f| got.take(f)).unwrap();
                peer.recv_batch(64, &mut |f| pr.take(f)).unwrap();
            }
        };
    }
    let (answers, out) = t.ping_pumping("-c 3 -i 0.2 -W 1 192.0.2.1", pump!());
    assert_eq!(answers, 0, "host answered a steered ping: {out}");
    assert_eq!(got.count(icmp4_echo_to(EP4)), 3);
    let (answers, out) = t.ping_pumping("-c 2 -i 0.2 -W 1 192.0.2.3", pump!());
    assert_eq!(answers, 2, "{out}");
    let (answers, out) = t.ping_pumping("-6 -c 2 -i 0.2 -W 1 2001:db8::1", pump!());
    assert_eq!(answers, 0, "{out}");
    assert_eq!(got.count(icmp6_to(EP6, 128)), 2);

    // ARP for the endpoint is dropped from the host (no reply) but delivered to us.
    pr.clear();
    send_all(&mut peer, &[arp_request(EP4), arp_request(HOST4)]);
    pump_for(Duration::from_millis(300), &mut pump!());
    assert_eq!(got.count(arp_for(EP4, 1)), 1);
    assert_eq!(pr.arp_replies_for(EP4), 0);
    assert_eq!(pr.arp_replies_for(HOST4), 1);

    // VLAN: at tc ingress the tag is in skb metadata; vid 20 is stolen, vid 30 passed.
    let before = parent.filter_stats().unwrap();
    let (v20, v30) = send_vid_20_and_30(&mut peer);
    pump_for(Duration::from_millis(300), &mut pump!());
    let after = parent.filter_stats().unwrap();
    assert_eq!(after.hit_ipv4 - before.hit_ipv4, 3, "{before:?} {after:?}");
    assert_eq!(after.passed - before.passed, 3, "{before:?} {after:?}");
    for (marker, sent) in [(b"uvt-vid20", &v20), (b"uvt-vid30", &v30)] {
        let seen = got.marked(marker);
        assert_eq!(seen.len(), 3);
        for (d, _, restored, _) in seen {
            assert!(restored, "AF_PACKET should need auxdata to see the tag");
            assert!(sent.contains(d), "frame differs from the wire frame");
        }
    }

    // Transmit through the fallback backend.
    pr.clear();
    let mut f = eth(
        PEER_MAC,
        None,
        0x88b5,
        b"uvt-afp-tx-0123456789012345678901234567890123",
    );
    f[6..12].copy_from_slice(&EP_MAC);
    assert!(WireIo::send(&mut parent, &f).unwrap());
    WireIo::flush(&mut parent).unwrap();
    pump_for(Duration::from_millis(300), &mut pump!());
    assert_eq!(pr.count(|d| d == f.as_slice()), 1);
    assert_eq!(
        got.count(has_marker(b"uvt-afp-tx-")),
        0,
        "own transmission seen as ingress"
    );
    let st = parent.socket().stats().unwrap();
    eprintln!("{st:?}");
    assert_eq!(st.tx_frames, 1);
    assert!(st.rx_vlan_restored >= 6);

    // Dropping the parent detaches the tc program: the host answers .1 again.
    drop(parent);
    let (answers, out) = t.ping_pumping("-c 2 -i 0.2 -W 1 192.0.2.1", || {});
    assert_eq!(answers, 2, "{out}");
}

#[test]
fn afpacket_copy_socket_reports_pkttypes_and_ignores_own_sends() {
    let t = Topo::new(None);
    let mut host = t.within(&t.host, || {
        AfPacketSocket::open(&t.hif, &AfPacketOptions::default()).unwrap()
    });
    let mut peer = t.within(&t.peer, || {
        AfPacketSocket::open(&t.pif, &AfPacketOptions::default()).unwrap()
    });
    assert!(host.ignores_outgoing());
    assert_eq!(
        WireIo::mode(&host),
        WireMode::AfPacket {
            steering: Steering::None
        }
    );
    let bcast = eth(
        [0xff; 6],
        None,
        0x88b5,
        b"uvt-bcast-01234567890123456789012345678901234",
    );
    let mcast = eth(
        [0x01, 0x00, 0x5e, 0, 0, 1],
        None,
        0x88b5,
        b"uvt-mcast-01234567890123456789012345678901234",
    );
    let host_u = eth(
        HOST_MAC,
        None,
        0x88b5,
        b"uvt-host-012345678901234567890123456789012345",
    );
    let other = eth(
        EP_MAC,
        None,
        0x88b5,
        b"uvt-other-01234567890123456789012345678901234",
    );
    send_all(
        &mut peer,
        &[bcast.clone(), mcast.clone(), host_u.clone(), other.clone()],
    );
    let mut seen = Seen::default();
    let mut ps = Seen::default();
    pump_for(Duration::from_millis(300), &mut || {
        host.recv_batch(64, &mut |f| seen.take(f)).unwrap();
        peer.recv_batch(64, &mut |f| ps.take(f)).unwrap();
    });
    let kind = |f: &Vec<u8>| {
        seen.frames
            .iter()
            .find(|(d, ..)| d == f)
            .map(|(_, k, ..)| *k)
    };
    assert_eq!(kind(&bcast), Some(Some(PacketType::Broadcast)));
    assert_eq!(kind(&mcast), Some(Some(PacketType::Multicast)));
    assert_eq!(kind(&host_u), Some(Some(PacketType::Host)));
    assert_eq!(kind(&other), Some(Some(PacketType::OtherHost)));
    assert_eq!(
        ps.count(has_marker(b"uvt-")),
        0,
        "the sender saw its own frames"
    );
    // Memberships can be taken and dropped (unicast filter entry, promiscuous).
    host.add_membership(uvlan_dataplane::port::afpacket::Membership::Unicast(EP_MAC))
        .unwrap();
    host.drop_membership(uvlan_dataplane::port::afpacket::Membership::Unicast(EP_MAC))
        .unwrap();
    host.add_membership(uvlan_dataplane::port::afpacket::Membership::Promisc)
        .unwrap();
    let st = host.stats().unwrap();
    assert!(st.rx_frames >= 4);
    assert_eq!(seen.count(has_marker(b"uvt-")), 4);

    // A group-only copy socket gets the broadcast and multicast, not the unicast.
    let mut group = t.within(&t.host, || {
        AfPacketSocket::open(
            &t.hif,
            &AfPacketOptions {
                group_only: true,
                ..Default::default()
            },
        )
        .unwrap()
    });
    let tagged_bcast = eth(
        [0xff; 6],
        Some(20),
        0x88b5,
        b"uvt-tbcast-0123456789012345678901234567890123",
    );
    send_all(
        &mut peer,
        &[
            bcast.clone(),
            mcast.clone(),
            host_u.clone(),
            other.clone(),
            tagged_bcast.clone(),
        ],
    );
    let mut g = Seen::default();
    pump_for(Duration::from_millis(300), &mut || {
        group.recv_batch(64, &mut |f| g.take(f)).unwrap();
    });
    let mine: Vec<_> = g
        .frames
        .iter()
        .filter(|(d, ..)| has_marker(b"uvt-")(d))
        .map(|(d, ..)| d.clone())
        .collect();
    assert_eq!(mine, vec![bcast, mcast, tagged_bcast]);
    assert!(st.kernel_packets >= 4);
}

// ---- VLAN tags carried in skb metadata (hardware-accelerated tags) -----------------------

/// tcx-egress program for the peer: `bpf_skb_vlan_push(skb, 0x8100, vid)` puts the tag in
/// skb metadata (veth advertises tx-vlan offload, so it stays there across the pair).
fn vlan_push_prog(vid: i32) -> uvlan_dataplane::port::bpf::Prog {
    use uvlan_dataplane::port::bpf::{Asm, Prog, ProgType, Reg};
    const SKB_VLAN_PUSH: i32 = 18;
    let mut a = Asm::new();
    a.mov_reg(Reg::R6, Reg::R1)
        .mov_imm(Reg::R2, u16::from_ne_bytes(0x8100u16.to_be_bytes()) as i32)
        .mov_imm(Reg::R3, vid)
        .call(SKB_VLAN_PUSH)
        .mov_imm(Reg::R0, -1)
        .exit();
    Prog::load(ProgType::SchedCls, &a.finish().unwrap(), "uvt_vpush", None).unwrap()
}

fn metadata_tag_scenario(attach: XdpAttach) -> (usize, usize, bool) {
    use uvlan_dataplane::port::bpf::{AttachType, Link};
    let t = Topo::new(None);
    let opts = XdpOptions {
        attach,
        ring_size: 64,
        ..Default::default()
    };
    let (mut parent, mut copy) = t.within(&t.host, || {
        (
            XdpParent::open(&t.hif, &opts).unwrap(),
            AfPacketSocket::open(&t.hif, &AfPacketOptions::default()).unwrap(),
        )
    });
    let (mut peer, _push) = t.within(&t.peer, || {
        let s = AfPacketSocket::open(&t.pif, &AfPacketOptions::default()).unwrap();
        let p = vlan_push_prog(20);
        let idx = uvlan_dataplane::port::ethtool::if_index(&t.pif).unwrap();
        let l = Link::create(&p, idx, AttachType::TcxEgress, 0).unwrap();
        (s, (p, l))
    });
    parent.filter_maps().add_ipv4(20, EP4).unwrap();
    let f = eth(
        HOST_MAC,
        None,
        0x0800,
        &ipv4_udp(PEER4, EP4, 7, b"uvt-meta-tag", true),
    );
    send_all(&mut peer, &[f.clone(), f.clone(), f]);
    let (mut on_xsk, mut on_copy, mut restored) = (0, 0, false);
    pump_for(Duration::from_millis(300), &mut || {
        parent.recv_batch(64, &mut |fr| {
            if has_marker(b"uvt-meta-tag")(fr.data) {
                on_xsk += 1;
            }
        });
        copy.recv_batch(64, &mut |fr| {
            if has_marker(b"uvt-meta-tag")(fr.data) {
                on_copy += 1;
                restored |= fr.vlan_restored && fr.data[12..16] == [0x81, 0, 0, 20];
            }
        })
        .unwrap();
    });
    (on_xsk, on_copy, restored)
}

/// Measured: when the 802.1Q tag travels in skb metadata (as after NIC rx-vlan offload),
/// neither native nor generic XDP sees it in the packet data, so the filter classifies the
/// frame as untagged and a vid-20 key does not match; AF_PACKET still reports the tag.
#[test]
fn xdp_does_not_see_tags_held_in_skb_metadata() {
    for attach in [XdpAttach::Native, XdpAttach::Generic] {
        let (on_xsk, on_copy, restored) = metadata_tag_scenario(attach);
        eprintln!("{attach:?}: metadata-tagged vid-20 frames on XSK {on_xsk}, on AF_PACKET {on_copy}, tag restored {restored}");
        assert_eq!(on_xsk, 0, "{attach:?}");
        assert_eq!(on_copy, 3, "{attach:?}");
        assert!(restored);
    }
}

#[test]
fn rx_vlan_offload_can_be_read_and_toggled() {
    use uvlan_dataplane::port::ethtool::{rx_vlan_offload, set_rx_vlan_offload};
    let t = Topo::new(None);
    t.within(&t.host, || {
        let before = rx_vlan_offload(&t.hif).unwrap();
        set_rx_vlan_offload(&t.hif, !before).unwrap();
        assert_eq!(rx_vlan_offload(&t.hif).unwrap(), !before);
        set_rx_vlan_offload(&t.hif, before).unwrap();
        assert_eq!(rx_vlan_offload(&t.hif).unwrap(), before);
        let p = XdpParent::open(
            &t.hif,
            &XdpOptions {
                ring_size: 64,
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(p.rx_vlan_offload(), Some(before));
    });
}

// ---- GSO TX socket -------------------------------------------------------------------------

/// A TCP super-frame from HOST to PEER as a TAP hands it over: partial checksum (the
/// pseudo-header sum), and its virtio header asking for segments of `mss` bytes.
fn tcp_super_frame(v6: bool, vid: Option<u16>, payload: &[u8], mss: u16) -> (VnetHdr, Vec<u8>) {
    let l4_len = 20 + payload.len();
    let mut tcp = Vec::new();
    tcp.extend_from_slice(&40000u16.to_be_bytes());
    tcp.extend_from_slice(&7u16.to_be_bytes());
    tcp.extend_from_slice(&1_000u32.to_be_bytes());
    tcp.extend_from_slice(&1u32.to_be_bytes());
    tcp.extend_from_slice(&[0x50, 0x18, 0x01, 0xf6, 0, 0, 0, 0]);
    tcp.extend_from_slice(payload);
    let (ip, ethertype, pseudo) = if v6 {
        let (src, dst) = (
            "2001:db8::1".parse::<Ipv6Addr>().unwrap().octets(),
            "2001:db8::2".parse::<Ipv6Addr>().unwrap().octets(),
        );
        let mut ip = vec![0x60, 0, 0, 0];
        ip.extend_from_slice(&(l4_len as u16).to_be_bytes());
        ip.extend_from_slice(&[6, 64]);
        ip.extend_from_slice(&src);
        ip.extend_from_slice(&dst);
        let mut ps = Vec::new();
        ps.extend_from_slice(&src);
        ps.extend_from_slice(&dst);
        ps.extend_from_slice(&(l4_len as u32).to_be_bytes());
        ps.extend_from_slice(&[0, 0, 0, 6]);
        (ip, 0x86dd, ps)
    } else {
        let mut ip = vec![0x45, 0, 0, 0, 0x12, 0x34, 0x40, 0, 64, 6, 0, 0];
        ip[2..4].copy_from_slice(&((20 + l4_len) as u16).to_be_bytes());
        ip.extend_from_slice(&EP4.octets());
        ip.extend_from_slice(&PEER4.octets());
        let hc = !csum_fold(csum_add(0, &ip));
        ip[10..12].copy_from_slice(&hc.to_be_bytes());
        let mut ps = Vec::new();
        ps.extend_from_slice(&EP4.octets());
        ps.extend_from_slice(&PEER4.octets());
        ps.extend_from_slice(&[0, 6]);
        ps.extend_from_slice(&(l4_len as u16).to_be_bytes());
        (ip, 0x0800, ps)
    };
    let partial = csum_fold(csum_add(0, &pseudo));
    tcp[16..18].copy_from_slice(&partial.to_be_bytes());
    let mut body = ip;
    body.extend_from_slice(&tcp);
    let mut f = eth(PEER_MAC, vid, ethertype, &body);
    f[6..12].copy_from_slice(&HOST_MAC);
    let l4 = f.len() - l4_len;
    let hdr = VnetHdr {
        flags: VnetHdr::F_NEEDS_CSUM,
        gso_type: if v6 {
            VnetHdr::GSO_TCPV6
        } else {
            VnetHdr::GSO_TCPV4
        },
        hdr_len: 0,
        gso_size: mss,
        csum_start: l4 as u16,
        csum_offset: 16,
        num_buffers: 0,
    };
    (hdr, f)
}

#[test]
fn gso_tx_socket_hands_super_frames_to_the_kernel() {
    let t = Topo::new(None);
    let mut gso = t.within(&t.host, || GsoTxSocket::open(&t.hif).unwrap());
    let mut peer = t.within(&t.peer, || {
        AfPacketSocket::open(&t.pif, &AfPacketOptions::default()).unwrap()
    });
    let payload: Vec<u8> = (0..6000u32).map(|i| (i * 7 % 251) as u8).collect();
    for (v6, vid) in [
        (false, None),
        (false, Some(20)),
        (true, None),
        (true, Some(30)),
    ] {
        let (h, f) = tcp_super_frame(v6, vid, &payload, 1448);
        let kh = kernel_gso_header(&h, &f, 1500).unwrap();
        assert!(gso.send(&kh, &f).unwrap(), "{v6} {vid:?}");
        // The peer sees the data whole (one super-frame over veth, or segments), tagged
        // as it was sent.
        let hdrs = f.len() - payload.len();
        let l3 = if vid.is_some() { 18 } else { 14 };
        let mut got = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(5);
        while got.len() < payload.len() && Instant::now() < deadline {
            peer.recv_batch(64, &mut |fr| {
                let d = fr.data;
                if d.len() > hdrs
                    && d[..l3] == f[..l3]
                    && d[hdrs - 20..hdrs - 16] == f[hdrs - 20..hdrs - 16]
                {
                    got.extend_from_slice(&d[hdrs..]);
                }
            })
            .unwrap();
            std::thread::sleep(Duration::from_millis(2));
        }
        assert_eq!(got, payload, "v6 {v6} vid {vid:?}");
    }
    // A parent that went down: the frame is reported as not sent, apart from errors.
    sh(&["ip", "-n", &t.host, "link", "set", &t.hif, "down"]);
    let (h, f) = tcp_super_frame(false, None, &payload, 1448);
    let kh = kernel_gso_header(&h, &f, 1500).unwrap();
    let e = gso.send(&kh, &f).unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::NotConnected, "{e}");
    let s = gso.stats();
    assert_eq!((s.frames, s.full, s.refused, s.down), (4, 0, 0, 1), "{s:?}");
    assert_eq!(gso.ifname(), t.hif);
}

/// Copy mode transmits at most one batch (32 frames) per `sendto` and answers `EAGAIN` when
/// more is left: a flush must keep kicking while the kernel takes frames, or a burst leaves
/// a backlog in the TX ring that only later frames push out, 32 at a time (a ping sent after
/// a flood then waited behind it for good). One burst of a full ring and one flush: every
/// frame reaches the peer, with no frame sent after it.
#[test]
fn xdp_copy_mode_flush_sends_a_whole_burst() {
    let t = Topo::new(None);
    let o = XdpOptions {
        ring_size: 1024,
        attach: XdpAttach::Native,
        ..Default::default()
    };
    let mut p = t.within(&t.host, || XdpParent::open(&t.hif, &o).unwrap());
    assert_eq!(p.bind_mode(), BindMode::Copy);
    // IPv4 datagrams the peer's stack received (`Ip: InReceives`): the interface's own
    // packet count would also count the host end's IPv6 start-up traffic (router
    // solicitations, MLD reports), which may arrive during the burst.
    let rx = || -> u64 {
        let out = sh(&["ip", "netns", "exec", &t.peer, "cat", "/proc/net/snmp"]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let mut ip = text.lines().filter(|l| l.starts_with("Ip: "));
        let (names, values) = (ip.next().unwrap(), ip.next().unwrap());
        let i = names
            .split_whitespace()
            .position(|n| n == "InReceives")
            .unwrap();
        values.split_whitespace().nth(i).unwrap().parse().unwrap()
    };
    let before = rx();
    let frame = eth(
        PEER_MAC,
        None,
        0x0800,
        &ipv4_udp(EP4, PEER4, 9, b"uvt-burst", true),
    );
    let mut queued = 0u64;
    for _ in 0..1000 {
        if p.send(&frame).unwrap() {
            queued += 1;
        }
    }
    p.flush().unwrap();
    assert!(queued >= 900, "{queued} of 1000 frames queued");
    assert_eq!(
        rx() - before,
        queued,
        "every queued frame left with the flush (nothing sent after it)"
    );
}
