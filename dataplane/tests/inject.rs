//! Root test for the host-stack injector (`port::inject`), in a namespace of its own
//! (`uvj-<pid>`) with a veth parent `uvj0` (192.0.2.1/24): frames written to the injector
//! reach a UDP socket bound on the parent's address, with a full or a partial checksum, and
//! as a UDP GSO super-frame (one datagram per segment); a
//! wrong full checksum is refused by the host as on any receive path; uvlan's own packet
//! socket on the parent does not take injected frames back, while a plain packet socket sees
//! them. It also prints the injection rate next to plain TAP writes (a measurement, never
//! asserted; `bench/inject_throughput.sh` runs it in release).

use std::fs::File;
use std::net::{Ipv4Addr, UdpSocket};
use std::os::fd::AsRawFd;
use std::process::Command;
use std::time::{Duration, Instant};

use uvlan_dataplane::port::afpacket::{AfPacketOptions, AfPacketSocket};
use uvlan_dataplane::port::inject::HostInjector;
use uvlan_dataplane::port::tap::{Tap, TapOptions, VnetHdr};
use uvlan_dataplane::port::WireIo;
use uvlan_dataplane::wire::{build, MacAddr};

const PARENT: &str = "uvj0";
const HOST: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
const PEER: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 5);
const PEER_MAC: MacAddr = MacAddr([2, 0, 0, 0, 0, 5]);
const PORT: u16 = 9999;

fn ip(args: &[&str]) {
    let o = Command::new("ip").args(args).output().expect("ip");
    assert!(
        o.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// The namespace with its veth pair; deleted on drop (with everything in it).
struct Ns(String);

impl Ns {
    fn new() -> Ns {
        let name = format!("uvj-{}", std::process::id());
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        ip(&["netns", "add", &name]);
        let ns = Ns(name);
        let n = ns.0.as_str();
        ip(&["-n", n, "link", "set", "lo", "up"]);
        ip(&[
            "-n", n, "link", "add", PARENT, "type", "veth", "peer", "name", "uvj1",
        ]);
        ip(&["-n", n, "addr", "add", "192.0.2.1/24", "dev", PARENT]);
        ip(&["-n", n, "link", "set", PARENT, "up"]);
        ip(&["-n", n, "link", "set", "uvj1", "up"]);
        ns
    }

    /// Moves the calling thread into the namespace.
    fn enter(&self) {
        let f = File::open(format!("/run/netns/{}", self.0)).expect("open netns");
        // SAFETY: `f` is an open namespace file; setns changes only this thread.
        let r = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(r, 0, "setns: {}", std::io::Error::last_os_error());
    }
}

impl Drop for Ns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).output();
    }
}

fn parent_ifindex() -> u32 {
    // SAFETY: a NUL-terminated name; if_nametoindex only reads it.
    unsafe { libc::if_nametoindex(c"uvj0".as_ptr()) }
}

fn frame(payload: &[u8], parent_mac: MacAddr) -> Vec<u8> {
    build::udp4(parent_mac, PEER_MAC, PEER, HOST, (1234, PORT), payload)
}

/// Puts the UDP pseudo-header sum (PEER → HOST) in the checksum field of `f`, one of
/// [`frame`]'s, as a port with checksum offload writes a partial checksum.
fn put_pseudo_header_sum(f: &mut [u8]) {
    let ulen = (f.len() - 34) as u32;
    let mut s: u32 = 17 + ulen;
    for w in [PEER.octets(), HOST.octets()] {
        s += u32::from(u16::from_be_bytes([w[0], w[1]]));
        s += u32::from(u16::from_be_bytes([w[2], w[3]]));
    }
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    f[40..42].copy_from_slice(&(s as u16).to_be_bytes());
}

/// True for one of this test's UDP frames (the veth pair sends IPv6 chatter of its own).
fn ours(f: &[u8]) -> bool {
    f.get(12..14) == Some(&[8, 0][..]) && f.get(36..38) == Some(&PORT.to_be_bytes()[..])
}

/// Receives everything the socket holds now; counts this test's frames.
fn drain(s: &mut AfPacketSocket) -> usize {
    let mut n = 0;
    while let Ok(k) = WireIo::recv_batch(s, 64, &mut |fr| n += usize::from(ours(fr.data))) {
        if k == 0 {
            break;
        }
    }
    n
}

#[test]
fn injected_frames_reach_the_host_and_not_uvlans_sockets() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: needs root");
        return;
    }
    let ns = Ns::new();
    std::thread::scope(|sc| {
        sc.spawn(|| {
            ns.enter();
            let idx = parent_ifindex();
            assert_ne!(idx, 0, "uvj0 not found in the namespace");
            let inj = HostInjector::open(PARENT, idx).expect("open the injector");
            let mac = parent_mac();
            let sock = UdpSocket::bind((HOST, PORT)).expect("bind");
            sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            let mut ours = AfPacketSocket::open(PARENT, &AfPacketOptions::default()).expect("ours");
            let plain = plain_packet_socket(idx);
            let mut buf = [0u8; 2048];

            // A full checksum.
            inj.inject(&VnetHdr::default(), &frame(b"full", mac))
                .unwrap();
            let (n, from) = sock.recv_from(&mut buf).expect("the host received nothing");
            assert_eq!((&buf[..n], from.ip()), (&b"full"[..], PEER.into()));

            // A partial checksum, as a port with checksum offload writes it: the pseudo-header
            // sum in place, NEEDS_CSUM in the header.
            let mut f = frame(b"partial", mac);
            put_pseudo_header_sum(&mut f);
            let h = VnetHdr {
                flags: VnetHdr::F_NEEDS_CSUM,
                csum_start: 34,
                csum_offset: 6,
                ..VnetHdr::default()
            };
            inj.inject(&h, &f).unwrap();
            let (n, _) = sock
                .recv_from(&mut buf)
                .expect("partial checksum not received");
            assert_eq!(&buf[..n], b"partial");

            // A UDP GSO super-frame (USO, as a port with UDP segmentation offload writes it):
            // the host's socket (no UDP_GRO) gets one datagram per gso_size bytes.
            let payload: Vec<u8> = (0..3000u32).map(|i| (i % 251) as u8).collect();
            let mut g = frame(&payload, mac);
            put_pseudo_header_sum(&mut g);
            let gh = VnetHdr {
                flags: VnetHdr::F_NEEDS_CSUM,
                gso_type: VnetHdr::GSO_UDP_L4,
                hdr_len: 42,
                gso_size: 1000,
                csum_start: 34,
                csum_offset: 6,
                ..VnetHdr::default()
            };
            inj.inject(&gh, &g).unwrap();
            for k in 0..3 {
                let (n, _) = sock.recv_from(&mut buf).expect("USO segment not received");
                assert_eq!(&buf[..n], &payload[k * 1000..(k + 1) * 1000], "segment {k}");
            }

            // A wrong full checksum: the host verifies it and drops the datagram.
            let mut bad = frame(b"bad", mac);
            bad[40] ^= 0x55;
            inj.inject(&VnetHdr::default(), &bad).unwrap();
            sock.set_read_timeout(Some(Duration::from_millis(300)))
                .unwrap();
            assert!(
                sock.recv_from(&mut buf).is_err(),
                "a bad checksum was delivered"
            );

            // Packet taps on the parent saw the three frames; uvlan's socket took none.
            std::thread::sleep(Duration::from_millis(100));
            assert_eq!(
                drain(&mut ours),
                0,
                "uvlan's packet socket took injected frames back"
            );
            assert_eq!(
                plain_count(plain),
                4,
                "a plain packet socket sees injected frames"
            );

            rate(&inj, &sock, mac);
        });
    });
}

fn parent_mac() -> MacAddr {
    // In the namespace, via ioctl: /sys/class/net belongs to the test's own namespace.
    // SAFETY: an all-zero ifreq is valid.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in req.ifr_name.iter_mut().zip(PARENT.bytes()) {
        *d = s as libc::c_char;
    }
    // SAFETY: plain socket(2), closed below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0) };
    // SAFETY: `req` is a live ifreq with a NUL-terminated name.
    let r = unsafe { libc::ioctl(fd, libc::SIOCGIFHWADDR, &mut req) };
    // SAFETY: ours.
    unsafe { libc::close(fd) };
    assert_eq!(r, 0);
    // SAFETY: SIOCGIFHWADDR filled `ifru_hwaddr`.
    let sa = unsafe { req.ifr_ifru.ifru_hwaddr };
    let mut m = [0u8; 6];
    for (d, s) in m.iter_mut().zip(sa.sa_data.iter()) {
        *d = *s as u8;
    }
    MacAddr(m)
}

fn plain_packet_socket(ifindex: u32) -> i32 {
    // SAFETY: plain socket(2); checked.
    let fd = unsafe {
        libc::socket(
            libc::AF_PACKET,
            libc::SOCK_RAW | libc::SOCK_NONBLOCK,
            i32::from((libc::ETH_P_ALL as u16).to_be()),
        )
    };
    assert!(fd >= 0);
    // SAFETY: all-zero sockaddr_ll is valid.
    let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sll.sll_family = libc::AF_PACKET as u16;
    sll.sll_protocol = (libc::ETH_P_ALL as u16).to_be();
    sll.sll_ifindex = ifindex as i32;
    // SAFETY: `sll` is a live sockaddr_ll of the size given.
    let r = unsafe {
        libc::bind(
            fd,
            (&sll as *const libc::sockaddr_ll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as u32,
        )
    };
    assert_eq!(r, 0);
    fd
}

/// This test's frames waiting on a plain packet socket (then closes it).
fn plain_count(fd: i32) -> usize {
    let mut buf = [0u8; 2048];
    let mut n = 0;
    loop {
        // SAFETY: `buf` is live and writable for its length; `fd` is ours.
        let r = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), 0) };
        let Ok(len) = usize::try_from(r) else { break };
        n += usize::from(ours(&buf[..len]));
    }
    // SAFETY: ours, closed once.
    unsafe { libc::close(fd) };
    n
}

/// Frames per second through the injector into the host's socket, next to plain writes to a
/// TAP without a program (the frame ends in the TAP's own stack, which drops it).
fn rate(inj: &HostInjector, sock: &UdpSocket, mac: MacAddr) {
    let n: u32 = std::env::var("UVLAN_BENCH_FRAMES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let f = frame(b"rate", mac);
    let h = VnetHdr::default();
    sock.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 2048];
    let mut got = 0u64;
    let t = Instant::now();
    for _ in 0..n {
        let _ = inj.inject(&h, &f);
        while sock.recv_from(&mut buf).is_ok() {
            got += 1;
        }
    }
    let inject_s = t.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_millis(100));
    while sock.recv_from(&mut buf).is_ok() {
        got += 1;
    }
    let tap = Tap::create(&TapOptions {
        name: Some("uvjtap%d".into()),
        ..TapOptions::default()
    })
    .expect("plain TAP");
    let t = Instant::now();
    for _ in 0..n {
        let _ = tap.write_frame(&h, &f);
    }
    let plain_s = t.elapsed().as_secs_f64();
    let (a, b) = (f64::from(n) / inject_s, f64::from(n) / plain_s);
    println!(
        "inject: {a:.0} frames/s into the host's socket ({got} of {n} received, 64 B UDP); \
         plain TAP write: {b:.0} frames/s; ratio {:.2}",
        a / b
    );
}
