//! Root tests for the TAP wrapper: each test makes its own `uvt-<pid>-<tag>` namespaces with
//! `ip netns add`, creates TAPs inside them, exchanges real frames with the namespace's
//! stack, and deletes everything on drop (also when a test panics).

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

mod common;
use common::{must, run};

use uvlan_dataplane::port::tap::{
    Offloads, RxBatch, Tap, TapError, TapOptions, VnetHdr, MAX_FRAME_LEN,
};

const OUR_MAC: [u8; 6] = [0x02, 0x00, 0x00, 0x00, 0x00, 0x02];
const NS_IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
const OUR_IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);

/// A network namespace owned by the test; deleted on drop.
struct TestNs {
    name: String,
}

impl TestNs {
    fn new(tag: &str) -> TestNs {
        let name = format!("uvt-{}-{tag}", std::process::id());
        assert!(name.len() <= 15, "namespace name {name} too long");
        let _ = run(&["ip", "netns", "del", &name]);
        must(&["ip", "netns", "add", &name]);
        must(&["ip", "-n", &name, "link", "set", "lo", "up"]);
        TestNs { name }
    }

    fn path(&self) -> PathBuf {
        PathBuf::from(format!("/run/netns/{}", self.name))
    }

    fn ip(&self, args: &[&str]) -> String {
        let mut cmd = vec!["ip", "-n", &self.name];
        cmd.extend_from_slice(args);
        must(&cmd)
    }

    fn try_ip(&self, args: &[&str]) -> Result<String, String> {
        let mut cmd = vec!["ip", "-n", &self.name];
        cmd.extend_from_slice(args);
        run(&cmd)
    }

    fn exec(&self, args: &[&str]) -> String {
        let mut cmd = vec!["ip", "netns", "exec", &self.name];
        cmd.extend_from_slice(args);
        must(&cmd)
    }
}

impl Drop for TestNs {
    fn drop(&mut self) {
        // Devices inside (TAPs, persistent or not) are destroyed with the namespace.
        let _ = run(&["ip", "netns", "del", &self.name]);
    }
}

/// Kills a child process on drop.
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    for chunk in data.chunks(2) {
        let word = match chunk {
            [a, b] => u16::from_be_bytes([*a, *b]),
            [a] => u16::from_be_bytes([*a, 0]),
            _ => 0,
        };
        sum += u32::from(word);
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

fn eth(dst: [u8; 6], ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(14 + payload.len());
    f.extend_from_slice(&dst);
    f.extend_from_slice(&OUR_MAC);
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

fn arp(op: u16, tha: [u8; 6], tpa: Ipv4Addr) -> Vec<u8> {
    let mut p = vec![0, 1, 0x08, 0, 6, 4];
    p.extend_from_slice(&op.to_be_bytes());
    p.extend_from_slice(&OUR_MAC);
    p.extend_from_slice(&OUR_IP.octets());
    p.extend_from_slice(&tha);
    p.extend_from_slice(&tpa.octets());
    p
}

fn icmp_echo_request(dst_mac: [u8; 6], id: u16, seq: u16, payload: &[u8]) -> Vec<u8> {
    let mut icmp = vec![8, 0, 0, 0];
    icmp.extend_from_slice(&id.to_be_bytes());
    icmp.extend_from_slice(&seq.to_be_bytes());
    icmp.extend_from_slice(payload);
    let c = checksum(&icmp);
    icmp[2..4].copy_from_slice(&c.to_be_bytes());
    let total = (20 + icmp.len()) as u16;
    let mut ip = vec![0x45, 0];
    ip.extend_from_slice(&total.to_be_bytes());
    ip.extend_from_slice(&[0, 0, 0x40, 0, 64, 1, 0, 0]);
    ip.extend_from_slice(&OUR_IP.octets());
    ip.extend_from_slice(&NS_IP.octets());
    let c = checksum(&ip);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    ip.extend_from_slice(&icmp);
    eth(dst_mac, 0x0800, &ip)
}

fn mac_at(f: &[u8], off: usize) -> Option<[u8; 6]> {
    f.get(off..off + 6)?.try_into().ok()
}

fn be16(f: &[u8], off: usize) -> Option<u16> {
    Some(u16::from_be_bytes(f.get(off..off + 2)?.try_into().ok()?))
}

/// If `f` is an ARP request for OUR_IP, answers it through `tap`.
fn answer_arp(tap: &Tap, f: &[u8]) -> bool {
    if be16(f, 12) == Some(0x0806)
        && be16(f, 20) == Some(1)
        && f.get(38..42) == Some(&OUR_IP.octets()[..])
    {
        let (Some(sha), Some(spa)) = (mac_at(f, 22), f.get(28..32)) else {
            return false;
        };
        let spa = Ipv4Addr::new(spa[0], spa[1], spa[2], spa[3]);
        tap.write_frame(&VnetHdr::default(), &eth(sha, 0x0806, &arp(2, sha, spa)))
            .expect("write ARP reply");
        return true;
    }
    false
}

/// Sends `frame` through `tap` and reads frames (answering ARP requests for OUR_IP) until
/// `want` accepts one. Like a real host, it re-sends every 250 ms: right after a carrier
/// change the namespace drops what it transmits until linkwatch re-activates the qdisc.
fn send_and_wait<T>(
    tap: &Tap,
    frame: &[u8],
    mut want: impl FnMut(&VnetHdr, &[u8]) -> Option<T>,
) -> T {
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut buf = vec![0u8; MAX_FRAME_LEN];
    let mut next_send = Instant::now();
    while Instant::now() < deadline {
        if Instant::now() >= next_send {
            tap.write_frame(&VnetHdr::default(), frame)
                .expect("write frame");
            next_send = Instant::now() + Duration::from_millis(250);
        }
        if !tap
            .wait_readable(Some(Duration::from_millis(50)))
            .expect("poll")
        {
            continue;
        }
        let (hdr, got) = match tap.read_frame(&mut buf) {
            Ok(x) => x,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) => panic!("read_frame: {e}"),
        };
        if let Some(t) = want(&hdr, got) {
            return t;
        }
        answer_arp(tap, got);
    }
    panic!("no expected frame within 5 s");
}

/// ARP for NS_IP, then ping it; returns the namespace interface's MAC.
fn arp_and_ping(tap: &Tap, seq: u16) -> [u8; 6] {
    let bcast = [0xff; 6];
    let request = eth(bcast, 0x0806, &arp(1, [0; 6], NS_IP));
    let ns_mac = send_and_wait(tap, &request, |_, f| {
        (be16(f, 12) == Some(0x0806)
            && be16(f, 20) == Some(2)
            && f.get(28..32) == Some(&NS_IP.octets()[..])
            && mac_at(f, 0) == Some(OUR_MAC))
        .then(|| mac_at(f, 22))
        .flatten()
    });
    let payload = b"uvlan tap test payload";
    let echo = icmp_echo_request(ns_mac, 0x4242, seq, payload);
    send_and_wait(tap, &echo, |_, f| {
        let is_reply = be16(f, 12) == Some(0x0800)
            && f.get(23) == Some(&1)
            && f.get(26..30) == Some(&NS_IP.octets()[..])
            && f.get(34) == Some(&0)
            && be16(f, 38) == Some(0x4242)
            && be16(f, 40) == Some(seq);
        if !is_reply {
            return None;
        }
        assert_eq!(f.get(42..), Some(&payload[..]), "echo payload");
        assert_eq!(checksum(f.get(14..34)?), 0, "IPv4 header checksum");
        assert_eq!(checksum(f.get(34..)?), 0, "ICMP checksum");
        Some(())
    });
    ns_mac
}

fn configure_ns_side(ns: &TestNs, dev: &str, addr: &str) {
    ns.ip(&["addr", "add", addr, "dev", dev]);
    ns.ip(&["link", "set", dev, "up"]);
}

#[test]
fn tap_in_netns_answers_arp_and_ping() {
    let ns = TestNs::new("ta");
    let opts = TapOptions {
        name: Some("uvt0".into()),
        ..TapOptions::default()
    };
    let tap = Tap::create_in_netns(&ns.path(), &opts).expect("create TAP in netns");
    assert_eq!(tap.name().unwrap(), "uvt0");
    assert_eq!(
        tap.tun_flags().unwrap() & 0x5002,
        0x5002,
        "TAP|NO_PI|VNET_HDR"
    );
    // The device exists in the namespace, and not in ours.
    let link = ns.ip(&["-o", "link", "show", "uvt0"]);
    assert!(
        link.starts_with(&format!("{}:", tap.ifindex())),
        "ifindex {} vs {link}",
        tap.ifindex()
    );
    assert!(run(&["ip", "link", "show", "uvt0"]).is_err());

    configure_ns_side(&ns, "uvt0", "192.0.2.1/24");
    let ns_mac = arp_and_ping(&tap, 1);
    assert!(ns.ip(&["link", "show", "uvt0"]).contains(&fmt_mac(ns_mac)));

    // Carrier off shows inside; on again restores traffic.
    tap.set_carrier(false).unwrap();
    assert!(ns.ip(&["link", "show", "uvt0"]).contains("NO-CARRIER"));
    tap.set_carrier(true).unwrap();
    arp_and_ping(&tap, 2);

    // A second create with the same name is refused.
    let again = Tap::create_in_netns(&ns.path(), &opts);
    assert!(
        matches!(again, Err(TapError::AlreadyExists { ref name }) if name == "uvt0"),
        "{again:?}"
    );
    // A non-persistent TAP vanishes with its fd.
    drop(tap);
    assert!(ns.try_ip(&["link", "show", "uvt0"]).is_err());
}

fn fmt_mac(m: [u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

#[test]
fn persistent_tap_survives_and_reattaches() {
    let ns = TestNs::new("tp");
    let opts = TapOptions {
        name: Some("uvtp".into()),
        persist: true,
        ..TapOptions::default()
    };
    let tap = Tap::create_in_netns(&ns.path(), &opts).expect("create persistent TAP");
    let ifindex = tap.ifindex();
    configure_ns_side(&ns, "uvtp", "192.0.2.1/24");
    arp_and_ping(&tap, 1);
    // Single queue: a second fd is refused while the first is attached.
    let busy = Tap::attach_in_netns(&ns.path(), "uvtp", &TapOptions::default());
    assert!(matches!(busy, Err(TapError::Busy { .. })), "{busy:?}");
    drop(tap);

    let link = ns.ip(&["-o", "link", "show", "uvtp"]);
    assert!(link.contains("uvtp"), "persistent TAP kept: {link}");
    // Without an fd the TAP has no carrier.
    assert!(link.contains("NO-CARRIER"), "{link}");

    let missing = Tap::attach_in_netns(&ns.path(), "uvtnone", &TapOptions::default());
    assert!(
        matches!(missing, Err(TapError::NotFound { .. })),
        "{missing:?}"
    );
    let wrong = Tap::attach_in_netns(
        &ns.path(),
        "uvtp",
        &TapOptions {
            multi_queue: true,
            ..TapOptions::default()
        },
    );
    assert!(
        matches!(wrong, Err(TapError::FlagsMismatch { .. })),
        "{wrong:?}"
    );

    let tap = Tap::attach_in_netns(&ns.path(), "uvtp", &TapOptions::default())
        .expect("re-attach persistent TAP");
    assert_eq!(tap.ifindex(), ifindex);
    assert_ne!(
        tap.tun_flags().unwrap() & 0x0800,
        0,
        "IFF_PERSIST still set"
    );
    arp_and_ping(&tap, 2);

    tap.set_persist(false).unwrap();
    assert_eq!(tap.tun_flags().unwrap() & 0x0800, 0);
    drop(tap);
    assert!(ns.try_ip(&["link", "show", "uvtp"]).is_err());
}

fn ethtool_features(ns: &TestNs, dev: &str) -> String {
    ns.exec(&["ethtool", "-k", dev])
}

fn feature_on(out: &str, name: &str) -> bool {
    out.lines()
        .any(|l| l.trim_start().starts_with(&format!("{name}: on")))
}

#[test]
fn offloads_show_in_ethtool_and_fall_back() {
    let ns = TestNs::new("to");
    let mut tap = Tap::create_in_netns(
        &ns.path(),
        &TapOptions {
            name: Some("uvto".into()),
            ..TapOptions::default()
        },
    )
    .expect("create TAP");
    assert_eq!(tap.offloads(), Offloads::DEFAULT, "kernel 6.2+ takes USO");
    let k = ethtool_features(&ns, "uvto");
    assert!(feature_on(&k, "tx-checksumming"), "{k}");
    assert!(feature_on(&k, "tcp-segmentation-offload"), "{k}");
    assert!(feature_on(&k, "tx-udp-segmentation"), "{k}");

    // USO4 alone is refused by the kernel: falls back to CSUM.
    let got = tap.set_offloads(Offloads::CSUM | Offloads::USO4).unwrap();
    assert_eq!(got, Offloads::CSUM);
    let k = ethtool_features(&ns, "uvto");
    assert!(feature_on(&k, "tx-checksumming"), "{k}");
    assert!(!feature_on(&k, "tcp-segmentation-offload"), "{k}");
    assert!(!feature_on(&k, "tx-udp-segmentation"), "{k}");

    let got = tap.set_offloads(Offloads::NONE).unwrap();
    assert_eq!(got, Offloads::NONE);
    let k = ethtool_features(&ns, "uvto");
    assert!(!feature_on(&k, "tx-checksumming"), "{k}");
}

#[test]
fn multi_queue_tap_opens_more_queues() {
    let ns = TestNs::new("tm");
    let opts = TapOptions {
        name: Some("uvtm".into()),
        multi_queue: true,
        ..TapOptions::default()
    };
    let q0 = Tap::create_in_netns(&ns.path(), &opts).expect("create multi-queue TAP");
    let q1 = q0.open_queue().expect("second queue");
    assert!(q1.is_multi_queue());
    assert_eq!(q1.ifindex(), q0.ifindex());
    assert_ne!(q1.tun_flags().unwrap() & 0x0100, 0, "IFF_MULTI_QUEUE");
    configure_ns_side(&ns, "uvtm", "192.0.2.1/24");
    // Frames written on queue 1 reach the stack; replies come on one of the queues.
    let request = eth([0xff; 6], 0x0806, &arp(1, [0; 6], NS_IP));
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut buf = vec![0u8; MAX_FRAME_LEN];
    let mut got = false;
    let mut next_send = Instant::now();
    while !got && Instant::now() < deadline {
        if Instant::now() >= next_send {
            q1.write_frame(&VnetHdr::default(), &request).unwrap();
            next_send = Instant::now() + Duration::from_millis(250);
        }
        for q in [&q0, &q1] {
            while let Ok((_, f)) = q.read_frame(&mut buf) {
                got |= be16(f, 12) == Some(0x0806) && be16(f, 20) == Some(2);
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(got, "ARP reply on one of the queues");
}

/// Two namespaces joined by a userspace "wire" that copies frames and vnet headers between
/// their TAPs: TCP through it must work with TSO super-frames and partial checksums passing
/// through untouched.
#[test]
fn gso_frames_pass_between_two_taps() {
    let a = TestNs::new("ga");
    let b = TestNs::new("gb");
    let opts = |n: &str| TapOptions {
        name: Some(n.into()),
        ..TapOptions::default()
    };
    let ta = Arc::new(Tap::create_in_netns(&a.path(), &opts("uvga")).expect("TAP a"));
    let tb = Arc::new(Tap::create_in_netns(&b.path(), &opts("uvgb")).expect("TAP b"));
    configure_ns_side(&a, "uvga", "192.0.2.1/24");
    configure_ns_side(&b, "uvgb", "192.0.2.2/24");

    let stop = Arc::new(AtomicBool::new(false));
    let gso = Arc::new(AtomicU64::new(0));
    let partial = Arc::new(AtomicU64::new(0));
    let mut workers = Vec::new();
    for (from, to) in [(ta.clone(), tb.clone()), (tb.clone(), ta.clone())] {
        let (stop, gso, partial) = (stop.clone(), gso.clone(), partial.clone());
        workers.push(std::thread::spawn(move || {
            let mut batch = RxBatch::new(32, MAX_FRAME_LEN);
            while !stop.load(Ordering::Relaxed) {
                if !from.wait_readable(Some(Duration::from_millis(50))).unwrap() {
                    continue;
                }
                from.read_batch(&mut batch).unwrap();
                for (hdr, frame) in batch.iter() {
                    if hdr.gso_type & !VnetHdr::GSO_ECN == VnetHdr::GSO_TCPV4 {
                        assert!(hdr.gso_size > 0 && hdr.hdr_len > 0, "{hdr:?}");
                        gso.fetch_add(1, Ordering::Relaxed);
                    }
                    if hdr.needs_csum() {
                        partial.fetch_add(1, Ordering::Relaxed);
                    }
                    // A full queue or a down link just drops, as a wire would.
                    let _ = to.write_frame(hdr, frame);
                }
            }
        }));
    }
    struct StopOnDrop(Arc<AtomicBool>);
    impl Drop for StopOnDrop {
        fn drop(&mut self) {
            self.0.store(true, Ordering::Relaxed);
        }
    }
    let _stop_guard = StopOnDrop(stop.clone());

    let server = ChildGuard(
        Command::new("ip")
            .args([
                "netns",
                "exec",
                &b.name,
                "iperf3",
                "-s",
                "-1",
                "-B",
                "192.0.2.2",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("iperf3 server"),
    );
    let mut ok = false;
    let mut last = String::new();
    for _ in 0..50 {
        std::thread::sleep(Duration::from_millis(100));
        match run(&[
            "timeout",
            "20",
            "ip",
            "netns",
            "exec",
            &a.name,
            "iperf3",
            "-c",
            "192.0.2.2",
            "-t",
            "1",
            "-l",
            "64K",
        ]) {
            Ok(out) => {
                last = out;
                ok = true;
                break;
            }
            Err(e) => last = e,
        }
    }
    drop(server);
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.join().expect("forwarder thread");
    }
    assert!(ok, "iperf3 through the TAP wire failed: {last}");
    eprintln!(
        "TAP wire: {} TSO super-frames, {} partial-checksum frames",
        gso.load(Ordering::Relaxed),
        partial.load(Ordering::Relaxed)
    );
    assert!(
        gso.load(Ordering::Relaxed) > 0,
        "no TSO super-frame seen; iperf3: {last}"
    );
    assert!(
        partial.load(Ordering::Relaxed) > 0,
        "no partial checksum seen"
    );
}
