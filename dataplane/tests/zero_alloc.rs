//! Proves that the engine allocates nothing per unicast decision (and nothing per flood once
//! the output list has grown), with a counting global allocator.

use std::alloc::{GlobalAlloc, Layout, System};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicUsize, Ordering};
use uvlan_dataplane::fwd::sample::{flat, port_ip as ip, port_mac as mac, PARENT_MAC as M};
use uvlan_dataplane::fwd::*;
use uvlan_dataplane::wire::{build, MacAddr};

struct Counting;
static ALLOCS: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// Only allocations made by the measuring thread count (the test harness's own threads
    /// allocate whenever they like).
    static COUNTING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

fn note_alloc() {
    if COUNTING.with(|c| c.get()) {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
    }
}

// SAFETY: every method forwards to the system allocator unchanged, so its guarantees hold;
// counting touches only an atomic and a thread-local flag and never allocates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        note_alloc();
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        note_alloc();
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.realloc(p, l, n) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// The counter is process-wide: tests that count run one at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

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
