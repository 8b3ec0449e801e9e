//! Root test: what Linux really produces on a TAP with TSO/USO, through our offload code.
//!
//! Two fresh namespaces `uvt-<pid>-a`/`-b`, each with a TAP opened with `IFF_VNET_HDR` and
//! `CSUM|TSO4|TSO6|USO4|USO6` (opened here with raw ioctls; the real TAP wrapper lives in
//! `port::tap`). A forwarder thread reads every frame from one TAP, runs
//! `Segmenter::segment` with a 1500-byte MTU (as for a wire without offloads), checks every
//! resulting segment's length and checksums with etherparse, then feeds the segments to a
//! `Gro` and writes what comes out (GSO super-frames with `NEEDS_CSUM` headers) to the other
//! TAP. Real TCP (IPv4, IPv6) and UDP GSO traffic then runs from `a` to `b`, with the data
//! checked byte for byte at the receiver. This proves that the segmenter handles what the
//! kernel emits and that the kernel accepts what the coalescer writes.
//!
//! Addresses: 192.0.2.0/24 and 2001:db8::/64 only, inside namespaces made here. Both
//! namespaces are deleted on exit, even on failure; non-persistent TAPs vanish with their fds.

use std::fs::File;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

use etherparse::{NetSlice, SlicedPacket, TransportSlice};
use uvlan_dataplane::offload::{Gro, OffloadError, Segmenter, VnetHdr};

const MTU: usize = 1500;

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip(8)");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Deletes the namespaces it names when dropped.
struct Namespaces(Vec<String>);

impl Namespaces {
    fn create(names: &[String]) -> Namespaces {
        let mut guard = Namespaces(Vec::new());
        for n in names {
            ip(&["netns", "add", n]);
            guard.0.push(n.clone());
        }
        guard
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for n in &self.0 {
            let _ = Command::new("ip").args(["netns", "del", n]).status();
        }
    }
}

/// Runs `f` on a new thread that has joined network namespace `ns`. Sockets and TAP fds
/// created there stay in that namespace when handed back.
fn in_netns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let path = format!("/run/netns/{ns}");
    thread::spawn(move || {
        let nsfile = File::open(&path).expect("open netns file");
        // SAFETY: setns on a valid namespace fd affects only this thread, which exists
        // solely to create objects inside that namespace.
        let rc = unsafe { libc::setns(nsfile.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
        f()
    })
    .join()
    .expect("netns thread")
}

/// Opens a TAP with vnet headers and TSO/USO in the calling thread's namespace.
fn open_tap(name: &str) -> OwnedFd {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun")
        .expect("open /dev/net/tun");
    let fd: OwnedFd = file.into();
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in ifr.ifr_name.iter_mut().zip(name.bytes()) {
        *dst = src as libc::c_char;
    }
    ifr.ifr_ifru.ifru_flags = (libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_VNET_HDR) as i16;
    // SAFETY: TUNSETIFF reads and writes a struct ifreq that lives across the call.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNSETIFF, &mut ifr) };
    assert_eq!(rc, 0, "TUNSETIFF: {}", std::io::Error::last_os_error());
    let sz: libc::c_int = VnetHdr::LEN as libc::c_int;
    // SAFETY: TUNSETVNETHDRSZ reads one int through the pointer, valid for the call.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNSETVNETHDRSZ, &sz) };
    assert_eq!(
        rc,
        0,
        "TUNSETVNETHDRSZ: {}",
        std::io::Error::last_os_error()
    );
    let offloads = libc::TUN_F_CSUM
        | libc::TUN_F_TSO4
        | libc::TUN_F_TSO6
        | libc::TUN_F_USO4
        | libc::TUN_F_USO6;
    // SAFETY: TUNSETOFFLOAD takes its argument by value.
    let rc = unsafe {
        libc::ioctl(
            fd.as_raw_fd(),
            libc::TUNSETOFFLOAD,
            offloads as libc::c_ulong,
        )
    };
    assert_eq!(rc, 0, "TUNSETOFFLOAD: {}", std::io::Error::last_os_error());
    // SAFETY: F_SETFL on an fd we own.
    let rc = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, libc::O_NONBLOCK) };
    assert_eq!(rc, 0);
    fd
}

/// What the forwarder saw.
#[derive(Debug, Default, Clone)]
struct Counts {
    read: u64,
    gso_tcp4: u64,
    gso_tcp6: u64,
    gso_udp_l4: u64,
    needs_csum: u64,
    segments: u64,
    tcp_checked: u64,
    udp_checked: u64,
    super_frames_written: u64,
    plain_written: u64,
    errors: Vec<String>,
}

/// Checks one segment bound for the wire: size and checksums, with etherparse.
fn check_segment(f: &[u8], c: &mut Counts) {
    if f.len() > 14 + MTU {
        c.errors
            .push(format!("{}-byte segment exceeds the MTU", f.len()));
        return;
    }
    let Ok(sp) = SlicedPacket::from_ethernet(f) else {
        return; // not something etherparse decodes fully (e.g. ARP is fine, checked below)
    };
    let (s4, d4, s6, d6) = match &sp.net {
        Some(NetSlice::Ipv4(v4)) => {
            let h = v4.header();
            if h.header_checksum() != h.to_header().calc_header_checksum() {
                c.errors.push("bad IPv4 header checksum".into());
            }
            (Some(h.source()), Some(h.destination()), None, None)
        }
        Some(NetSlice::Ipv6(v6)) => (
            None,
            None,
            Some(v6.header().source()),
            Some(v6.header().destination()),
        ),
        _ => return,
    };
    match &sp.transport {
        Some(TransportSlice::Tcp(t)) => {
            let want = match (s4, d4, s6, d6) {
                (Some(s), Some(d), _, _) => t.calc_checksum_ipv4(s, d).ok(),
                (_, _, Some(s), Some(d)) => t.calc_checksum_ipv6(s, d).ok(),
                _ => None,
            };
            let got = t.checksum();
            if want != Some(got) && !(got == 0xffff && want == Some(0)) {
                c.errors
                    .push(format!("bad TCP checksum {got:#06x}, want {want:04x?}"));
            }
            c.tcp_checked += 1;
        }
        Some(TransportSlice::Udp(u)) => {
            let h = u.to_header();
            let want = match (s4, d4, s6, d6) {
                (Some(s), Some(d), _, _) => h.calc_checksum_ipv4_raw(s, d, u.payload()).ok(),
                (_, _, Some(s), Some(d)) => h.calc_checksum_ipv6_raw(s, d, u.payload()).ok(),
                _ => None,
            };
            if want != Some(u.checksum()) {
                c.errors.push(format!(
                    "bad UDP checksum {:#06x}, want {want:04x?}",
                    u.checksum()
                ));
            }
            c.udp_checked += 1;
        }
        _ => {}
    }
}

fn write_frame(fd: RawFd, hdr: &VnetHdr, frame: &[u8]) -> std::io::Result<()> {
    let h = hdr.to_bytes();
    let iov = [
        libc::iovec {
            iov_base: h.as_ptr() as *mut libc::c_void,
            iov_len: h.len(),
        },
        libc::iovec {
            iov_base: frame.as_ptr() as *mut libc::c_void,
            iov_len: frame.len(),
        },
    ];
    // SAFETY: both iovecs point at live buffers of the stated lengths; writev only reads.
    let n = unsafe { libc::writev(fd, iov.as_ptr(), 2) };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    assert_eq!(n as usize, h.len() + frame.len(), "short write to TAP");
    Ok(())
}

/// One direction: everything readable on `from` now → segment → check → GRO → `to`.
fn pump(
    from: RawFd,
    to: RawFd,
    buf: &mut [u8],
    seg: &mut Segmenter,
    gro: &mut Gro,
    c: &mut Counts,
) {
    let mut segs: Vec<Vec<u8>> = Vec::new();
    let mut write_err: Option<std::io::Error> = None;
    for _ in 0..64 {
        // SAFETY: buf is a live, writable buffer of buf.len() bytes.
        let n = unsafe { libc::read(from, buf.as_mut_ptr().cast(), buf.len()) };
        if n <= 0 {
            break;
        }
        c.read += 1;
        let Ok((hdr, frame)) = VnetHdr::parse(&buf[..n as usize]) else {
            c.errors.push("short read".into());
            continue;
        };
        match hdr.gso_type & !VnetHdr::GSO_ECN {
            VnetHdr::GSO_TCPV4 => c.gso_tcp4 += 1,
            VnetHdr::GSO_TCPV6 => c.gso_tcp6 += 1,
            VnetHdr::GSO_UDP_L4 => c.gso_udp_l4 += 1,
            _ => {}
        }
        if hdr.needs_csum() {
            c.needs_csum += 1;
        }
        segs.clear();
        let r: Result<usize, OffloadError> =
            seg.segment(&hdr, frame, MTU, &mut |s: &[u8]| segs.push(s.to_vec()));
        if let Err(e) = r {
            c.errors.push(format!("segment {hdr:?}: {e}"));
            continue;
        }
        for s in &segs {
            c.segments += 1;
            check_segment(s, c);
            gro.push(s, &mut |h: &VnetHdr, f: &[u8]| {
                if let Err(e) = write_frame(to, h, f) {
                    write_err.get_or_insert(e);
                }
            });
        }
    }
    gro.flush(&mut |h: &VnetHdr, f: &[u8]| {
        if let Err(e) = write_frame(to, h, f) {
            write_err.get_or_insert(e);
        }
    });
    if let Some(e) = write_err {
        c.errors.push(format!("TAP write rejected: {e}"));
    }
}

fn forwarder(a: OwnedFd, b: OwnedFd, stop: Arc<AtomicBool>) -> thread::JoinHandle<Counts> {
    thread::spawn(move || {
        let mut c = Counts::default();
        let mut buf = vec![0u8; 70_000];
        let (mut seg_ab, mut seg_ba) = (Segmenter::new(), Segmenter::new());
        let (mut gro_ab, mut gro_ba) = (Gro::new(), Gro::new());
        while !stop.load(Ordering::Relaxed) {
            let mut fds = [
                libc::pollfd {
                    fd: a.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                },
                libc::pollfd {
                    fd: b.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                },
            ];
            // SAFETY: fds is a live array of 2 pollfd.
            let n = unsafe { libc::poll(fds.as_mut_ptr(), 2, 50) };
            if n <= 0 {
                continue;
            }
            if fds[0].revents & libc::POLLIN != 0 {
                pump(
                    a.as_raw_fd(),
                    b.as_raw_fd(),
                    &mut buf,
                    &mut seg_ab,
                    &mut gro_ab,
                    &mut c,
                );
            }
            if fds[1].revents & libc::POLLIN != 0 {
                pump(
                    b.as_raw_fd(),
                    a.as_raw_fd(),
                    &mut buf,
                    &mut seg_ba,
                    &mut gro_ba,
                    &mut c,
                );
            }
        }
        let (ab, ba) = (gro_ab.stats(), gro_ba.stats());
        c.super_frames_written = ab.coalesced + ba.coalesced;
        c.plain_written = (ab.frames_out - ab.coalesced) + (ba.frames_out - ba.coalesced);
        c
    })
}

/// A counter from the `Tcp:` lines of `/proc/net/snmp` in namespace `ns`.
fn tcp_snmp(ns: &str, name: &str) -> u64 {
    let out = Command::new("ip")
        .args(["netns", "exec", ns, "cat", "/proc/net/snmp"])
        .output()
        .expect("read /proc/net/snmp");
    let text = String::from_utf8_lossy(&out.stdout);
    let mut lines = text.lines().filter(|l| l.starts_with("Tcp:"));
    let (names, values) = (lines.next().unwrap_or(""), lines.next().unwrap_or(""));
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(n, _)| *n == name)
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or_else(|| panic!("no Tcp {name} in /proc/net/snmp of {ns}"))
}

fn data_byte(i: usize) -> u8 {
    (i.wrapping_mul(7) ^ (i >> 11)) as u8
}

/// Sends `len` bytes over TCP from namespace `a` to `dst` in namespace `b`; returns the
/// receiver's verdict. Gives up after 60 s (a healthy run takes a few seconds).
fn tcp_transfer(a: &str, b: &str, dst: SocketAddr, len: usize) -> Result<usize, String> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let listener = in_netns(b, move || TcpListener::bind(dst).expect("bind in b"));
    let receiver = thread::spawn(move || -> Result<usize, String> {
        let (mut s, _) = listener.accept().map_err(|e| e.to_string())?;
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .map_err(|e| e.to_string())?;
        let mut got = 0usize;
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let n = s
                .read(&mut buf)
                .map_err(|e| format!("read after {got}: {e}"))?;
            if n == 0 {
                return Ok(got);
            }
            if Instant::now() > deadline {
                return Err(format!("too slow: {got} bytes by the deadline"));
            }
            for (k, &x) in buf[..n].iter().enumerate() {
                if x != data_byte(got + k) {
                    return Err(format!("byte {} corrupted", got + k));
                }
            }
            got += n;
        }
    });
    let mut stream = in_netns(a, move || {
        TcpStream::connect_timeout(&dst, Duration::from_secs(5)).expect("connect from a")
    });
    stream
        .set_write_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let data: Vec<u8> = (0..len).map(data_byte).collect();
    for chunk in data.chunks(1 << 20) {
        if Instant::now() > deadline {
            break;
        }
        stream.write_all(chunk).map_err(|e| e.to_string())?;
    }
    drop(stream);
    receiver.join().expect("receiver thread")
}

fn udp_gso_transfer(a: &str, b: &str, sends: usize, seg: usize, per_send: usize) -> usize {
    let dst: SocketAddr = "192.0.2.2:5300".parse().unwrap();
    let rx = in_netns(b, move || UdpSocket::bind(dst).expect("bind udp in b"));
    rx.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
    let tx = in_netns(a, || UdpSocket::bind("192.0.2.1:0").expect("bind udp in a"));
    let size: libc::c_int = seg as libc::c_int;
    // SAFETY: UDP_SEGMENT reads one int through the pointer, valid for the call.
    let rc = unsafe {
        libc::setsockopt(
            tx.as_raw_fd(),
            libc::SOL_UDP,
            libc::UDP_SEGMENT,
            (&size as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "UDP_SEGMENT: {}", std::io::Error::last_os_error());
    let (done_tx, done_rx) = mpsc::channel::<usize>();
    let receiver = thread::spawn(move || {
        let mut ok = 0usize;
        let mut buf = vec![0u8; 65536];
        for s in 0..sends {
            for k in 0..per_send {
                let Ok(n) = rx.recv(&mut buf) else {
                    break;
                };
                let expect: Vec<u8> = (0..seg).map(|i| data_byte(i + k + s)).collect();
                if n == seg && buf[..n] == expect[..] {
                    ok += 1;
                }
            }
            let _ = done_tx.send(s);
        }
        ok
    });
    for s in 0..sends {
        let mut msg = Vec::with_capacity(seg * per_send);
        for k in 0..per_send {
            msg.extend((0..seg).map(|i| data_byte(i + k + s)));
        }
        tx.send_to(&msg, dst).expect("send GSO datagrams");
        // Pace: wait until the receiver has drained this burst (no loss to rcvbuf limits).
        let _ = done_rx.recv_timeout(Duration::from_secs(5));
    }
    receiver.join().expect("udp receiver")
}

#[test]
fn linux_tso_uso_frames_through_segment_and_gro() {
    let pid = std::process::id();
    let (na, nb) = (format!("uvt-{pid}-a"), format!("uvt-{pid}-b"));
    let _ns = Namespaces::create(&[na.clone(), nb.clone()]);
    let (ta, tb) = (format!("uvt{pid}a"), format!("uvt{pid}b"));
    let fa = {
        let t = ta.clone();
        in_netns(&na, move || open_tap(&t))
    };
    let fb = {
        let t = tb.clone();
        in_netns(&nb, move || open_tap(&t))
    };
    for (ns, tap, v4, v6) in [
        (&na, &ta, "192.0.2.1/24", "2001:db8::1/64"),
        (&nb, &tb, "192.0.2.2/24", "2001:db8::2/64"),
    ] {
        ip(&["-n", ns, "addr", "add", v4, "dev", tap]);
        ip(&["-n", ns, "addr", "add", v6, "dev", tap, "nodad"]);
        ip(&["-n", ns, "link", "set", tap, "mtu", "1500", "up"]);
    }

    let stop = Arc::new(AtomicBool::new(false));
    let fwd = forwarder(fa, fb, Arc::clone(&stop));
    let started = Instant::now();

    let v4 = tcp_transfer(&na, &nb, "192.0.2.2:5201".parse().unwrap(), 48 << 20);
    let v6 = tcp_transfer(&na, &nb, "[2001:db8::2]:5202".parse().unwrap(), 24 << 20);
    let udp = udp_gso_transfer(&na, &nb, 20, 1200, 40);
    let elapsed = started.elapsed();

    stop.store(true, Ordering::Relaxed);
    let c = fwd.join().expect("forwarder thread");
    eprintln!("forwarder counts after {elapsed:?}: {c:?}");
    let (csum_a, csum_b) = (tcp_snmp(&na, "InCsumErrors"), tcp_snmp(&nb, "InCsumErrors"));
    let (retrans, out_segs) = (tcp_snmp(&na, "RetransSegs"), tcp_snmp(&na, "OutSegs"));
    let in_segs_b = tcp_snmp(&nb, "InSegs");
    eprintln!(
        "a: OutSegs={out_segs} RetransSegs={retrans} InCsumErrors={csum_a}; \
         b: InSegs={in_segs_b} InCsumErrors={csum_b}"
    );

    assert_eq!(csum_a + csum_b, 0, "no TCP checksum errors in either stack");
    assert!(
        retrans * 100 <= out_segs,
        "retransmissions ({retrans} of {out_segs}) mean frames were lost or refused"
    );
    assert!(
        in_segs_b * 4 < out_segs,
        "b's TCP saw {in_segs_b} packets for {out_segs} sent: it received super-frames"
    );
    assert_eq!(v4, Ok(48 << 20), "IPv4 TCP transfer");
    assert_eq!(v6, Ok(24 << 20), "IPv6 TCP transfer");
    assert_eq!(udp, 20 * 40, "every UDP GSO segment arrived intact");
    assert!(
        c.errors.is_empty(),
        "errors: {:?}",
        &c.errors[..c.errors.len().min(10)]
    );
    assert!(c.gso_tcp4 > 0, "the kernel produced TSO4 super-frames");
    assert!(c.gso_tcp6 > 0, "the kernel produced TSO6 super-frames");
    assert!(c.gso_udp_l4 > 0, "the kernel produced USO super-frames");
    assert!(c.segments > c.read, "super-frames were split");
    assert!(c.tcp_checked > 30_000 && c.udp_checked >= 800);
    assert!(
        c.super_frames_written > 100,
        "the receiving TAP accepted GRO super-frames"
    );
}
