//! Proves that the engine allocates nothing per unicast decision (and nothing per flood once
//! the output list has grown), and that the run loop's worker allocates nothing per frame on
//! either I/O path once its buffers have grown, with a counting global allocator.

use std::alloc::{GlobalAlloc, Layout, System};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicUsize, Ordering};
use uvlan_dataplane::fwd::sample::{flat, port_ip as ip, port_mac as mac, PARENT_MAC as M};
use uvlan_dataplane::fwd::*;
use uvlan_dataplane::wire::{build, MacAddr};

struct Counting;
static ALLOCS: AtomicUsize = AtomicUsize::new(0);
/// The size of the last allocation counted (new size for a `realloc`), to name the culprit.
static LAST_SIZE: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// Only allocations made by the measuring thread count (the test harness's own threads
    /// allocate whenever they like).
    static COUNTING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

fn note_alloc(size: usize) {
    if COUNTING.with(|c| c.get()) {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        LAST_SIZE.store(size, Ordering::Relaxed);
    }
}

// SAFETY: every method forwards to the system allocator unchanged, so its guarantees hold;
// counting touches only an atomic and a thread-local flag and never allocates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        note_alloc(l.size());
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        note_alloc(n);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.realloc(p, l, n) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// The counter is process-wide: tests that count run one at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Switches counting on or off for the calling thread (the run loop tests call it on the
/// dataplane worker).
fn count_flag(on: bool) {
    COUNTING.with(|c| c.set(on));
}

fn count(mut f: impl FnMut()) -> usize {
    let before = ALLOCS.load(Ordering::Relaxed);
    COUNTING.with(|c| c.set(true));
    f();
    COUNTING.with(|c| c.set(false));
    ALLOCS.load(Ordering::Relaxed) - before
}

#[test]
fn unicast_decisions_allocate_nothing() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    for (driver, mode) in [
        (Driver::Ipvlan, IpvlanMode::L2),
        (Driver::Ipvlan, IpvlanMode::L3),
        (Driver::Macvlan, IpvlanMode::L2),
    ] {
        let s = flat(driver, mode, Some(20), 1000).unwrap();
        let (e, parent, ports) = (&s.engine, s.parent, &s.ports);
        let (dst_mac, src_mac) = match driver {
            Driver::Ipvlan => (M, M),
            Driver::Macvlan => (mac(999), mac(0)),
        };
        let to_sibling = build::udp4(dst_mac, src_mac, ip(0), ip(999), (1, 2), b"payload");
        let routed = build::udp4(
            M,
            M,
            ip(0),
            Ipv4Addr::new(198, 51, 100, 1),
            (1, 2),
            b"payload",
        );
        let from_wire = build::tagged(
            &build::udp4(
                dst_mac,
                MacAddr([2, 9, 9, 9, 9, 9]),
                Ipv4Addr::new(198, 51, 100, 1),
                ip(500),
                (1, 2),
                b"x",
            ),
            20,
        );
        let mut out = Outputs::with_capacity(4);
        let mut routes = |_: ParentId, _: IpAddr| NextHop::Mac(MacAddr([2, 0, 0, 0, 0, 0xee]));
        let n = count(|| {
            for _ in 0..10_000 {
                assert!(e
                    .decide(&to_sibling, Ingress::Port(ports[0]), &mut routes, &mut out)
                    .is_ok());
                let _ = e.decide(&routed, Ingress::Port(ports[1]), &mut routes, &mut out);
                assert!(e
                    .decide(&from_wire, Ingress::Wire(parent), &mut routes, &mut out)
                    .is_ok());
            }
        });
        assert_eq!(
            n, 0,
            "{driver:?} {mode:?}: {n} allocations in 30,000 decisions"
        );
    }
}

#[test]
fn floods_allocate_nothing_once_the_output_list_has_grown() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let s = flat(Driver::Ipvlan, IpvlanMode::L2, None, 64).unwrap();
    let (e, ports) = (&s.engine, &s.ports);
    let bcast = build::udp4(
        MacAddr::BROADCAST,
        M,
        ip(0),
        Ipv4Addr::BROADCAST,
        (1, 2),
        b"x",
    );
    let mut out = Outputs::default();
    let mut routes = NoRoutes;
    e.decide(&bcast, Ingress::Port(ports[0]), &mut routes, &mut out)
        .unwrap();
    assert_eq!(out.len(), 64, "63 siblings and the wire");
    let n = count(|| {
        for _ in 0..1000 {
            e.decide(&bcast, Ingress::Port(ports[0]), &mut routes, &mut out)
                .unwrap();
        }
    });
    assert_eq!(n, 0);
}

/// The capture tap: recording (decisions traced, records copied into the buffer, a full
/// buffer losing records) and the batch-end wake-up allocate nothing; neither does an idle
/// tap.
#[test]
fn capture_records_allocate_nothing() {
    use uvlan_dataplane::capture::{
        self, CaptureFilter, CaptureTap, CaptureTracer, Direction, Point,
    };
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let s = flat(Driver::Ipvlan, IpvlanMode::L2, None, 4).unwrap();
    let (e, ports) = (&s.engine, &s.ports);
    let frame = build::udp4(M, M, ip(0), ip(1), (1, 2), b"payload");
    let mut out = Outputs::with_capacity(4);
    let mut routes = NoRoutes;
    let mut tracer = CaptureTracer::new();
    let mut idle = CaptureTap::new();
    let n = count(|| {
        for _ in 0..10_000 {
            assert!(!idle.watches(Point::Port(ports[0])));
            idle.end_batch();
        }
    });
    assert_eq!(n, 0, "an idle tap");

    let mut f = CaptureFilter::new(ports.clone(), vec![]);
    f.max_records = 1000;
    f.buffer_bytes = 1000 * 64;
    let (session, mut reader) = capture::open(f);
    let mut tap = CaptureTap::new();
    tap.attach(session);
    let n = count(|| {
        // 5,000 frames, each recorded in and out: 1,000 records fit, the rest are lost.
        for _ in 0..5_000 {
            let r = e.decide_traced(
                &frame,
                Ingress::Port(ports[0]),
                &mut routes,
                &mut out,
                &mut tracer,
            );
            let d = tracer.decision(r, &out);
            tap.record(Point::Port(ports[0]), Direction::Inbound, &frame, d);
            for o in out.as_slice() {
                if let Some(p) = capture::output_point(o.target) {
                    tap.record(p, Direction::Outbound, &frame, tracer.output(d, o.target));
                }
            }
            tap.end_batch();
        }
    });
    assert_eq!(n, 0, "{n} allocations while recording 10,000 records");
    let c = reader.counts();
    assert_eq!(c.captured.iter().sum::<u64>(), 1000);
    assert_eq!(c.lost.iter().sum::<u64>(), 9000);
    // Taking the records swaps buffers: no allocation either.
    let n = count(|| {
        let b = reader.try_take();
        assert_eq!(b.len(), 1000);
    });
    assert_eq!(n, 0);
}

// ---- the run loop ---------------------------------------------------------------------------
//
// TAP ↔ TAP through the dataplane worker, on each I/O path: after a warm-up (buffers,
// queues and output lists grow to their working size), a second identical burst of UDP
// and TCP (GSO super-frames) must not allocate on the worker thread. The counting flag is
// switched on and off *on the worker* by `read_engine` closures. Needs root (namespaces).

mod run_loop {
    use super::{count_flag, ALLOCS, LAST_SIZE, SERIAL};
    use std::fs::File;
    use std::io::{Read, Write};
    use std::net::{IpAddr, TcpListener, TcpStream, UdpSocket};
    use std::os::fd::AsRawFd;
    use std::process::Command;
    use std::sync::atomic::Ordering;
    use std::time::Duration;
    use uvlan_dataplane::fwd::{
        ConfigError, Driver, IpvlanAttrs, IpvlanFlag, IpvlanMode, LinkRef, Master, NetworkSpec,
    };
    use uvlan_dataplane::port::tap::{Tap, TapOptions};
    use uvlan_dataplane::run::{Dataplane, IoMode, NextHop, Resolver, RunOptions};
    use uvlan_dataplane::wire::MacAddr;

    struct NoRoutes;
    impl Resolver for NoRoutes {
        fn resolve(&mut self, _: u32, _: IpAddr) -> NextHop {
            NextHop::Unreachable
        }
    }

    fn sh(args: &[&str]) {
        let st = Command::new(args[0]).args(&args[1..]).status().unwrap();
        assert!(st.success(), "{args:?}");
    }

    /// Namespaces deleted on drop.
    struct Nss(Vec<String>);
    impl Drop for Nss {
        fn drop(&mut self) {
            for n in &self.0 {
                let _ = Command::new("ip").args(["netns", "del", n]).status();
            }
        }
    }

    fn in_ns<T: Send + 'static>(
        ns: &str,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> std::thread::JoinHandle<T> {
        let path = format!("/run/netns/{ns}");
        std::thread::spawn(move || {
            let file = File::open(&path).unwrap();
            // SAFETY: setns on an open namespace fd changes only this new thread's namespace.
            let r = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(r, 0);
            f()
        })
    }

    /// 20,000 UDP datagrams and 16 MB of TCP from `a` to `b` (192.0.2.2).
    fn burst(a: &str, b: &str) {
        let rx = in_ns(b, || {
            let u = UdpSocket::bind("0.0.0.0:5000").unwrap();
            u.set_read_timeout(Some(Duration::from_millis(300)))
                .unwrap();
            let l = TcpListener::bind("0.0.0.0:5001").unwrap();
            let t = std::thread::spawn(move || {
                let (mut s, _) = l.accept().unwrap();
                let mut buf = vec![0u8; 1 << 16];
                let mut n = 0;
                while let Ok(k) = s.read(&mut buf) {
                    if k == 0 {
                        break;
                    }
                    n += k;
                }
                n
            });
            let mut buf = [0u8; 64];
            while u.recv(&mut buf).is_ok() {}
            t.join().unwrap()
        });
        std::thread::sleep(Duration::from_millis(100));
        in_ns(a, || {
            let u = UdpSocket::bind("0.0.0.0:0").unwrap();
            u.connect("192.0.2.2:5000").unwrap();
            for _ in 0..20_000 {
                let _ = u.send(&[7u8; 32]);
            }
            let mut s = TcpStream::connect("192.0.2.2:5001").unwrap();
            let chunk = vec![1u8; 1 << 16];
            for _ in 0..256 {
                s.write_all(&chunk).unwrap();
            }
        })
        .join()
        .unwrap();
        let got = rx.join().unwrap();
        assert_eq!(got, 256 << 16, "TCP bytes received");
    }

    /// With `capture`, a capture of both ports (drops included) runs through the warm-up and
    /// the counted burst, its records taken by a reader thread: recording allocates
    /// nothing on the worker either.
    fn loop_allocates_nothing_per_frame(io: IoMode, capture: bool) {
        let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        let tag = match (io, capture) {
            (IoMode::Plain, false) => "p",
            (IoMode::Plain, true) => "pc",
            (_, false) => "u",
            (_, true) => "uc",
        };
        let (a, b) = (
            format!("uvz-{}-{tag}a", std::process::id()),
            format!("uvz-{}-{tag}b", std::process::id()),
        );
        let _nss = Nss(vec![a.clone(), b.clone()]);
        for n in [&a, &b] {
            let _ = Command::new("ip").args(["netns", "del", n]).status();
            sh(&["ip", "netns", "add", n]);
            sh(&["ip", "-n", n, "link", "set", "lo", "up"]);
        }
        let dp = Dataplane::spawn(
            RunOptions {
                io,
                ..RunOptions::default()
            },
            Box::new(NoRoutes),
        )
        .unwrap();
        let h = dp.handle();
        let mac = MacAddr([2, 0, 0, 0, 0x10, 1]);
        let ports = h
            .with_engine(move |e| {
                let n = e.add_network(NetworkSpec::new(
                    "z",
                    Driver::Ipvlan,
                    Master::Isolated { mac, mtu: 1500 },
                ))?;
                let mut v = Vec::new();
                for (name, addr) in [("a", "192.0.2.1"), ("b", "192.0.2.2")] {
                    let p = e.add_ipvlan_port(
                        LinkRef::Network(n),
                        name,
                        IpvlanAttrs::new(IpvlanMode::L2, IpvlanFlag::Bridge),
                    )?;
                    e.add_port_addr(p, addr.parse().unwrap())?;
                    e.set_port_up(p, true)?;
                    v.push(p);
                }
                Ok::<_, ConfigError>(v)
            })
            .unwrap()
            .unwrap();
        for (ns, p, cidr) in [
            (&a, ports[0], "192.0.2.1/24"),
            (&b, ports[1], "192.0.2.2/24"),
        ] {
            let tap = Tap::create_in_netns(
                std::path::Path::new(&format!("/run/netns/{ns}")),
                &TapOptions {
                    name: Some("eth0".into()),
                    ..TapOptions::default()
                },
            )
            .unwrap();
            sh(&[
                "ip",
                "-n",
                ns,
                "link",
                "set",
                "eth0",
                "address",
                &mac.to_string(),
            ]);
            sh(&["ip", "-n", ns, "addr", "add", cidr, "dev", "eth0"]);
            sh(&["ip", "-n", ns, "link", "set", "eth0", "up"]);
            h.add_tap(p, tap).unwrap();
        }
        let reader = capture.then(|| {
            let mut f = uvlan_dataplane::capture::CaptureFilter::new(ports.clone(), vec![]);
            f.drops = true;
            let mut r = h.start_capture(f).unwrap();
            std::thread::spawn(move || {
                let mut records = 0u64;
                loop {
                    let b = r.wait();
                    records += b.len() as u64;
                    if b.end.is_some() {
                        break;
                    }
                }
                (records, r.counts())
            })
        });
        // Warm-up: everything grows to its working size.
        burst(&a, &b);
        burst(&a, &b);
        let before = ALLOCS.load(Ordering::Relaxed);
        h.read_engine(|_| count_flag(true)).unwrap();
        burst(&a, &b);
        h.read_engine(|_| count_flag(false)).unwrap();
        let n = ALLOCS.load(Ordering::Relaxed) - before;
        let st = h.stats().unwrap();
        let frames = st.loop_total().frames_in;
        assert!(frames > 20_000, "{frames} frames forwarded");
        assert_eq!(
            n,
            0,
            "{io:?}, capture {capture}: the worker allocated {n} times during a burst (of \
             {frames} frames in all; the last one {} bytes)",
            LAST_SIZE.load(Ordering::Relaxed)
        );
        if let Some(t) = reader {
            drop(h);
            dp.shutdown();
            let (records, counts) = t.join().unwrap();
            let captured: u64 = counts.captured.iter().sum();
            assert_eq!(records, captured);
            // Each frame is recorded where it entered and where it was delivered.
            let lost: u64 = counts.lost.iter().sum();
            assert!(
                records + lost >= 2 * 20_000,
                "{records} records, {lost} lost"
            );
        }
    }

    #[test]
    fn the_loop_allocates_nothing_per_frame_uring() {
        loop_allocates_nothing_per_frame(IoMode::Uring, false);
    }

    #[test]
    fn the_loop_allocates_nothing_per_frame_plain() {
        loop_allocates_nothing_per_frame(IoMode::Plain, false);
    }

    #[test]
    fn the_loop_allocates_nothing_per_frame_while_capturing_uring() {
        loop_allocates_nothing_per_frame(IoMode::Uring, true);
    }

    #[test]
    fn the_loop_allocates_nothing_per_frame_while_capturing_plain() {
        loop_allocates_nothing_per_frame(IoMode::Plain, true);
    }
}
