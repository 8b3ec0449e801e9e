//! Root tests of the dataplane's workers and I/O paths (epoll, io_uring) under load: one
//! flow keeps its order (1 and 2 workers, single and multiqueue TAPs), an io_uring read
//! resumes after its buffer ring ran dry, a TAP removed with frames in flight is never
//! written again (not even through a reused fd) and loses no buffer, 1,000 idle TAPs do
//! not wake the loop, and a port flooding broadcasts is deferred (paused now and then, its
//! frames in order) while unicast never is.
//!
//! Each test makes its own `uvl-<pid>-<n>…` namespaces (deleted on drop, also on failure),
//! puts TAP endpoints in them and sends UDP from threads that enter those namespaces.
//! Addresses: 192.0.2.0/24 (documentation range).

use std::fs::File;
use std::net::{IpAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use uvlan_dataplane::fwd::{
    ConfigError, Driver, Engine, IpvlanAttrs, IpvlanFlag, IpvlanMode, LinkRef, Master, NetworkId,
    NetworkSpec, PortId,
};
use uvlan_dataplane::port::tap::{Tap, TapOptions};
use uvlan_dataplane::run::{Dataplane, DataplaneHandle, IoDrop, IoMode, RunOptions, Stats};
use uvlan_dataplane::wire::MacAddr;

mod common;
use common::{ip, run, Lab, NoRoutes};

fn ns_path(ns: &str) -> PathBuf {
    PathBuf::from(format!("/run/netns/{ns}"))
}

const ISO_MAC: MacAddr = MacAddr([0x02, 0, 0, 0, 0x10, 0x01]);

fn spawn(io: IoMode, workers: usize, rx_buffers: usize) -> Dataplane {
    spawn_with(RunOptions {
        io,
        workers,
        rx_buffers,
        ..RunOptions::default()
    })
}

fn spawn_with(opts: RunOptions) -> Dataplane {
    Dataplane::spawn(opts, Box::new(NoRoutes)).expect("Dataplane::spawn")
}

fn network(e: &mut Engine, name: &str) -> Result<NetworkId, ConfigError> {
    e.add_network(NetworkSpec::new(
        name,
        Driver::Ipvlan,
        Master::Isolated {
            mac: ISO_MAC,
            mtu: 1500,
        },
    ))
}

fn port(e: &mut Engine, net: NetworkId, name: &str, addr: &str) -> Result<PortId, ConfigError> {
    let p = e.add_ipvlan_port(
        LinkRef::Network(net),
        name,
        IpvlanAttrs::new(IpvlanMode::L2, IpvlanFlag::Bridge),
    )?;
    e.add_port_addr(p, IpAddr::V4(addr.parse().unwrap()))?;
    e.set_port_up(p, true)?;
    Ok(p)
}

/// A TAP `eth0` in `ns` with address `cidr`, up.
fn tap_in(ns: &str, cidr: &str, multi_queue: bool) -> Tap {
    let tap = Tap::create_in_netns(
        &ns_path(ns),
        &TapOptions {
            name: Some("eth0".into()),
            multi_queue,
            ..TapOptions::default()
        },
    )
    .expect("TAP in the namespace");
    ip(
        ns,
        &["link", "set", "eth0", "address", &ISO_MAC.to_string()],
    );
    ip(ns, &["addr", "add", cidr, "dev", "eth0"]);
    ip(ns, &["link", "set", "eth0", "up"]);
    tap
}

/// Two ports `a` (192.0.2.1) and `b` (.2) on one isolated network, TAPs in their namespaces.
fn pair(lab: &mut Lab, h: &DataplaneHandle, multi_queue: bool) -> (String, String, PortId, PortId) {
    let a = lab.ns("a");
    let b = lab.ns("b");
    let (pa, pb) = h
        .with_engine(|e| {
            let n = network(e, "iso")?;
            Ok::<_, ConfigError>((port(e, n, "a", "192.0.2.1")?, port(e, n, "b", "192.0.2.2")?))
        })
        .unwrap()
        .unwrap();
    h.add_tap(pa, tap_in(&a, "192.0.2.1/24", multi_queue))
        .unwrap();
    h.add_tap(pb, tap_in(&b, "192.0.2.2/24", multi_queue))
        .unwrap();
    assert!(ping(&a, "192.0.2.2", 3), "no connectivity a → b");
    (a, b, pa, pb)
}

fn ping(ns: &str, dst: &str, count: u32) -> bool {
    let c = count.to_string();
    run(&[
        "ip", "netns", "exec", ns, "ping", "-c", &c, "-i", "0.2", "-W", "1", dst,
    ])
    .is_ok()
}

/// Runs `f` on a new thread inside network namespace `ns`.
fn in_ns<T: Send + 'static>(
    ns: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> std::thread::JoinHandle<T> {
    let path = ns_path(ns);
    std::thread::spawn(move || {
        let file = File::open(&path).expect("open netns");
        // SAFETY: setns on an open namespace fd changes only this (new) thread's namespace.
        let r = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(r, 0, "setns: {}", std::io::Error::last_os_error());
        f()
    })
}

/// Sends `count` datagrams on each of `flows` flows (source ports) from `src_ns` to
/// `dst:5000`, each carrying (flow, sequence number); returns what the receiver in `dst_ns`
/// got, per flow, in arrival order.
fn flood(src_ns: &str, dst_ns: &str, dst: &str, flows: u16, count: u32) -> Vec<Vec<u32>> {
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let flows_n = usize::from(flows);
    let rx = in_ns(dst_ns, move || {
        let s = UdpSocket::bind("0.0.0.0:5000").expect("bind receiver");
        s.set_read_timeout(Some(Duration::from_millis(700)))
            .unwrap();
        ready_tx.send(()).unwrap();
        let mut got = vec![Vec::new(); flows_n];
        let mut buf = [0u8; 64];
        while let Ok(n) = s.recv(&mut buf) {
            if n >= 6 {
                let f = usize::from(u16::from_be_bytes([buf[0], buf[1]]));
                let q = u32::from_be_bytes([buf[2], buf[3], buf[4], buf[5]]);
                if let Some(v) = got.get_mut(f) {
                    v.push(q);
                }
            }
        }
        got
    });
    ready_rx.recv().unwrap();
    let dst = format!("{dst}:5000");
    let tx = in_ns(src_ns, move || {
        let socks: Vec<UdpSocket> = (0..flows)
            .map(|_| {
                let s = UdpSocket::bind("0.0.0.0:0").unwrap();
                s.connect(&dst).unwrap();
                s
            })
            .collect();
        let mut msg = [0u8; 32];
        for q in 0..count {
            for (f, s) in socks.iter().enumerate() {
                msg[0..2].copy_from_slice(&(f as u16).to_be_bytes());
                msg[2..6].copy_from_slice(&q.to_be_bytes());
                // A full queue drops a datagram: fine, order is what is checked.
                let _ = s.send(&msg);
            }
        }
    });
    tx.join().unwrap();
    rx.join().unwrap()
}

fn check_order(got: &[Vec<u32>], what: &str) -> usize {
    let mut total = 0;
    for (f, seqs) in got.iter().enumerate() {
        for w in seqs.windows(2) {
            assert!(
                w[0] < w[1],
                "{what}: flow {f} reordered: {} then {}",
                w[0],
                w[1]
            );
        }
        total += seqs.len();
    }
    total
}

/// Sends `count` UDP broadcasts (to 192.0.2.255:5000, each carrying its sequence number)
/// from `src_ns`; returns the sequence numbers the receiver in `dst_ns` got, in order.
fn broadcast_flood(src_ns: &str, dst_ns: &str, count: u32) -> Vec<u32> {
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let rx = in_ns(dst_ns, move || {
        let s = UdpSocket::bind("0.0.0.0:5000").expect("bind receiver");
        s.set_read_timeout(Some(Duration::from_millis(700)))
            .unwrap();
        ready_tx.send(()).unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 64];
        while let Ok(n) = s.recv(&mut buf) {
            if n >= 4 {
                got.push(u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]));
            }
        }
        got
    });
    ready_rx.recv().unwrap();
    in_ns(src_ns, move || {
        let s = UdpSocket::bind("0.0.0.0:0").unwrap();
        s.set_broadcast(true).unwrap();
        let mut msg = [0u8; 32];
        for q in 0..count {
            msg[0..4].copy_from_slice(&q.to_be_bytes());
            let _ = s.send_to(&msg, "192.0.2.255:5000");
        }
    })
    .join()
    .unwrap();
    rx.join().unwrap()
}

/// Flood deferral: a port flooding broadcasts is paused (its reads stop for a millisecond,
/// its frames wait in its TAP), its frames still arrive in order, and once the flood is
/// over its unicast is read at once again.
fn a_broadcast_flood_is_deferred_in_order(io: IoMode) {
    let mut lab = Lab::new("uvl");
    let dp = spawn(io, 1, 256);
    let h = dp.handle();
    let (a, b, pa, _pb) = pair(&mut lab, &h, false);
    let got = broadcast_flood(&a, &b, 40_000);
    let what = format!("{io:?}: broadcast flood");
    for w in got.windows(2) {
        assert!(w[0] < w[1], "{what}: reordered: {} then {}", w[0], w[1]);
    }
    let st = h.stats().unwrap();
    let pauses: u64 = st.workers.iter().map(|w| w.flood_pauses).sum();
    eprintln!(
        "{what}: {} of 40000 broadcasts arrived in order; {pauses} pauses; read from a: {}",
        got.len(),
        st.port(pa).unwrap().rx_frames
    );
    assert!(
        got.len() > 500,
        "{what}: only {} broadcasts arrived",
        got.len()
    );
    assert!(pauses > 0, "{what}: the flooding port was never paused");
    // Over: a's unicast goes through without waiting for anything.
    assert!(
        ping(&a, "192.0.2.2", 3),
        "{what}: no unicast after the flood"
    );
}

#[test]
fn a_broadcast_flood_is_deferred_in_order_uring() {
    a_broadcast_flood_is_deferred_in_order(IoMode::Uring);
}

#[test]
fn a_broadcast_flood_is_deferred_in_order_plain() {
    a_broadcast_flood_is_deferred_in_order(IoMode::Plain);
}

/// Storm control: while another port has frames to forward (b sends unicast all along),
/// the same broadcast flood from a port held to 1 % of the worker's time is read less than
/// from one held only by the fixed 1 ms pauses (100 %), and what is read still arrives in
/// order.
fn storm_control_holds_a_flooding_port_to_its_share(io: IoMode) {
    let read = |share: u8| {
        let mut lab = Lab::new("uvl");
        let dp = spawn_with(RunOptions {
            io,
            storm_share: share,
            ..RunOptions::default()
        });
        let h = dp.handle();
        let (a, b, pa, _pb) = pair(&mut lab, &h, false);
        // The other port's traffic: unicast from b to a, every 100 µs, during the flood.
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let other = {
            let stop = std::sync::Arc::clone(&stop);
            in_ns(&b, move || {
                let s = UdpSocket::bind("0.0.0.0:0").unwrap();
                while !stop.load(Ordering::Relaxed) {
                    let _ = s.send_to(b"other", "192.0.2.1:9");
                    std::thread::sleep(Duration::from_micros(100));
                }
            })
        };
        let got = broadcast_flood(&a, &b, 40_000);
        stop.store(true, Ordering::Relaxed);
        other.join().unwrap();
        let what = format!("{io:?}, storm share {share} %");
        for w in got.windows(2) {
            assert!(w[0] < w[1], "{what}: reordered: {} then {}", w[0], w[1]);
        }
        let read = h.stats().unwrap().port(pa).unwrap().rx_frames;
        eprintln!(
            "{what}: read {read} of 40000 broadcasts, {} arrived",
            got.len()
        );
        assert!(
            ping(&a, "192.0.2.2", 3),
            "{what}: no unicast after the flood"
        );
        read
    };
    let (held, free) = (read(1), read(100));
    assert!(
        held < free,
        "{io:?}: a port held to 1 % was read {held} times, one held to 100 % {free} times"
    );
}

#[test]
fn storm_control_holds_a_flooding_port_to_its_share_uring() {
    storm_control_holds_a_flooding_port_to_its_share(IoMode::Uring);
}

#[test]
fn storm_control_holds_a_flooding_port_to_its_share_plain() {
    storm_control_holds_a_flooding_port_to_its_share(IoMode::Plain);
}

fn one_flow_keeps_its_order(io: IoMode, workers: usize, multi_queue: bool) {
    let mut lab = Lab::new("uvl");
    let dp = spawn(io, workers, 256);
    let h = dp.handle();
    let (a, b, pa, _pb) = pair(&mut lab, &h, multi_queue);
    let flows = if multi_queue { 16 } else { 1 };
    let per_flow = 40_000 / u32::from(flows);
    let got = flood(&a, &b, "192.0.2.2", flows, per_flow);
    let what = format!("{io:?}, {workers} worker(s), multi_queue {multi_queue}");
    let total = check_order(&got, &what);
    let st = h.stats().unwrap();
    eprintln!(
        "{what}: {total} of {} datagrams arrived in order; per worker: {:?}",
        per_flow * u32::from(flows),
        st.workers
            .iter()
            .map(|w| (w.frames_in, w.frames_out, w.batches, w.syscalls))
            .collect::<Vec<_>>()
    );
    assert!(total > 1000, "{what}: only {total} datagrams arrived");
    assert!(st.port(pa).unwrap().rx_frames >= total as u64);
    assert_eq!(st.workers.len(), workers);
    // Unicast that is forwarded is never deferred, however fast it comes.
    let pauses: u64 = st.workers.iter().map(|w| w.flood_pauses).sum();
    assert_eq!(pauses, 0, "{what}: a unicast flow was paused as a flood");
    if multi_queue && workers > 1 {
        // 16 flows over 2 queues: both workers read some of them (each queue has its own).
        for (i, w) in st.workers.iter().enumerate() {
            assert!(
                w.frames_in > 0,
                "{what}: worker {i} read nothing: {:?}",
                st.workers
            );
        }
    }
}

#[test]
fn one_flow_keeps_its_order_uring() {
    one_flow_keeps_its_order(IoMode::Uring, 1, false);
}

#[test]
fn one_flow_keeps_its_order_plain() {
    one_flow_keeps_its_order(IoMode::Plain, 1, false);
}

#[test]
fn one_flow_keeps_its_order_uring_two_workers() {
    one_flow_keeps_its_order(IoMode::Uring, 2, false);
}

#[test]
fn flows_keep_their_order_on_multiqueue_taps_with_two_workers_uring() {
    one_flow_keeps_its_order(IoMode::Uring, 2, true);
}

#[test]
fn flows_keep_their_order_on_multiqueue_taps_with_two_workers_plain() {
    one_flow_keeps_its_order(IoMode::Plain, 2, true);
}

#[test]
fn a_multishot_read_resumes_after_the_buffer_ring_ran_dry() {
    let mut lab = Lab::new("uvl");
    // Two receive buffers: any burst empties the ring.
    let dp = spawn(IoMode::Uring, 1, 2);
    let h = dp.handle();
    let (a, b, pa, pb) = pair(&mut lab, &h, false);
    let got = flood(&a, &b, "192.0.2.2", 1, 20_000);
    let total = check_order(&got, "2 buffers");
    let st = h.stats().unwrap();
    let w = st.loop_total();
    eprintln!("2 buffers: {total} delivered, {w:?}");
    assert!(w.starved > 0, "the ring never ran dry: {w:?}");
    assert!(w.rearms >= w.starved, "{w:?}");
    assert!(total > 100, "only {total} datagrams arrived");
    // And the port still forwards afterwards, both ways.
    assert!(ping(&a, "192.0.2.2", 2));
    assert!(ping(&b, "192.0.2.1", 2));
    let st2 = h.stats().unwrap();
    assert!(st2.port(pa).unwrap().rx_frames > st.port(pa).unwrap().rx_frames);
    assert!(st2.port(pb).unwrap().tx_frames > st.port(pb).unwrap().tx_frames);
}

/// Interface counters of `eth0` in `ns`: (rx packets, tx packets).
fn link_packets(ns: &str) -> (u64, u64) {
    let v: serde_json::Value =
        serde_json::from_str(&ip(ns, &["-s", "-j", "link", "show", "eth0"])).unwrap();
    let s = &v[0]["stats64"];
    (
        s["rx"]["packets"].as_u64().unwrap_or(0),
        s["tx"]["packets"].as_u64().unwrap_or(0),
    )
}

fn a_port_removed_with_frames_in_flight(io: IoMode) {
    let mut lab = Lab::new("uvl");
    // Few buffers: a buffer lost per removal would stop the loop within the cycles below.
    let dp = spawn(io, 1, 16);
    let h = dp.handle();
    let (a, b, _pa, pb) = pair(&mut lab, &h, false);
    // Keep a → b and b → a busy while b's TAP goes away and comes back, 20 times.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut senders = Vec::new();
    for (from, to) in [(a.clone(), "192.0.2.2"), (b.clone(), "192.0.2.1")] {
        let stop = std::sync::Arc::clone(&stop);
        let to = format!("{to}:9");
        senders.push(in_ns(&from, move || {
            let s = UdpSocket::bind("0.0.0.0:0").unwrap();
            let _ = s.connect(&to);
            while !stop.load(Ordering::Relaxed) {
                for _ in 0..64 {
                    let _ = s.send(&[0u8; 200]);
                }
                std::thread::sleep(Duration::from_micros(200));
            }
        }));
    }
    for _ in 0..20 {
        std::thread::sleep(Duration::from_millis(40));
        let tap = h.remove_tap(pb).unwrap().expect("b had a TAP");
        std::thread::sleep(Duration::from_millis(10));
        h.add_tap(pb, tap).unwrap();
    }
    // Now b's TAP goes for good and its fd is closed; a new TAP, on another network and in
    // another namespace, most likely gets the same fd number. Nothing for b may reach it.
    let c = lab.ns("c");
    let pc = h
        .with_engine(|e| {
            let n = network(e, "other")?;
            port(e, n, "c", "192.0.2.3")
        })
        .unwrap()
        .unwrap();
    let old = h.remove_tap(pb).unwrap().expect("b had a TAP");
    let old_fd = old.as_raw_fd();
    drop(old);
    let tap_c = tap_in(&c, "192.0.2.3/24", false);
    eprintln!("b's old fd {old_fd}, c's fd {}", tap_c.as_raw_fd());
    // No neighbour discovery from c itself: its counters then show only what it was sent.
    ip(&c, &["link", "set", "eth0", "arp", "off"]);
    let before = link_packets(&c).0;
    h.add_tap(pc, tap_c).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);
    for s in senders {
        s.join().unwrap();
    }
    let after = link_packets(&c).0;
    let st = h.stats().unwrap();
    assert_eq!(after, before, "frames meant for b reached c's TAP");
    assert_eq!(st.port(pc).unwrap().tx_frames, 0);
    assert!(st.io_drop_count(IoDrop::NoTap) > 0, "{:?}", st.io_drops);
    // b back with a new TAP: everything still flows (no buffer was lost on the way).
    let b2 = lab.ns("b2");
    h.add_tap(pb, tap_in(&b2, "192.0.2.2/24", false)).unwrap();
    assert!(ping(&a, "192.0.2.2", 3), "a → b after the removals");
    assert!(ping(&b2, "192.0.2.1", 3), "b → a after the removals");
}

#[test]
fn a_port_removed_with_frames_in_flight_uring() {
    a_port_removed_with_frames_in_flight(IoMode::Uring);
}

#[test]
fn a_port_removed_with_frames_in_flight_plain() {
    a_port_removed_with_frames_in_flight(IoMode::Plain);
}

fn raise_fd_limit() {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read and write one live rlimit struct.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut r);
        r.rlim_cur = r.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &r);
    }
}

fn wakeups(st: &Stats) -> (u64, u64) {
    let t = st.loop_total();
    (t.wakeups, t.turns)
}

fn a_thousand_idle_taps_do_not_wake_the_loop(io: IoMode) {
    raise_fd_limit();
    let mut lab = Lab::new("uvl");
    let dp = spawn(io, 1, 256);
    let h = dp.handle();
    let ns = lab.ns("many");
    let ports = h
        .with_engine(|e| {
            let n = network(e, "many")?;
            let mut v = Vec::new();
            for i in 0..1000u32 {
                let a = format!("198.51.{}.{}", 100 + i / 250, 1 + i % 250);
                v.push(port(e, n, &format!("p{i}"), &a)?);
            }
            Ok::<_, ConfigError>(v)
        })
        .unwrap()
        .unwrap();
    let path = ns_path(&ns);
    for (i, p) in ports.iter().enumerate() {
        let tap = Tap::create_in_netns(
            &path,
            &TapOptions {
                name: Some(format!("t{i}")),
                // Persistent: closing the fds leaves the devices to the namespace's deletion,
                // which unregisters them in one batch (one by one costs an RCU sync each).
                persist: true,
                ..TapOptions::default()
            },
        )
        .expect("TAP");
        h.add_tap(*p, tap).unwrap();
    }
    let (w0, t0) = wakeups(&h.stats().unwrap());
    std::thread::sleep(Duration::from_secs(2));
    let st = h.stats().unwrap();
    let (w1, t1) = wakeups(&st);
    eprintln!(
        "{io:?}: 1,000 idle TAPs, 2 s: {} wake-ups, {} turns",
        w1 - w0,
        t1 - t0
    );
    // The stats call itself wakes the loop once; nothing else may.
    assert!(w1 - w0 <= 2, "{} wake-ups in 2 s", w1 - w0);
    assert!(t1 - t0 <= 4, "{} turns in 2 s", t1 - t0);
    assert_eq!(st.ports.len(), 1000);
    let t = Instant::now();
    let mut taps = Vec::with_capacity(ports.len());
    for p in ports {
        taps.push(h.remove_tap(p).unwrap().expect("the port had a TAP"));
    }
    eprintln!("{io:?}: 1,000 remove_tap in {:?}", t.elapsed());
}

#[test]
fn a_thousand_idle_taps_do_not_wake_the_loop_uring() {
    a_thousand_idle_taps_do_not_wake_the_loop(IoMode::Uring);
}

#[test]
fn a_thousand_idle_taps_do_not_wake_the_loop_plain() {
    a_thousand_idle_taps_do_not_wake_the_loop(IoMode::Plain);
}

/// Waits until the workers report `n` TAPs carrying a prefilter; the count at the deadline.
fn tap_filters(h: &DataplaneHandle, n: usize) -> usize {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let now = h.stats().unwrap().tap_filters;
        if now == n || Instant::now() > deadline {
            return now;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A publication re-examines only the ports it changed (`worker/prefilter.rs`, `SyncStamp`),
/// yet each TAP's prefilter still follows its own port: off while the port is down, back
/// when it is up, untouched by changes of other ports, on for a port that changed in other
/// ways.
fn a_taps_prefilter_follows_its_own_port(io: IoMode) {
    let mut lab = Lab::new("uvl");
    let dp = spawn(io, 1, 256);
    let h = dp.handle();
    let (a, _b, pa, pb) = pair(&mut lab, &h, false);
    assert_eq!(
        tap_filters(&h, 2),
        2,
        "both TAPs filter on an isolated L2 network"
    );
    let set_up = |p: PortId, up: bool| {
        h.with_engine(move |e| e.set_port_up(p, up))
            .unwrap()
            .unwrap()
    };
    set_up(pa, false);
    assert_eq!(
        tap_filters(&h, 1),
        1,
        "a's filter comes off while a is down"
    );
    // Ports that come and go (one slot, reused) change nothing for a and b.
    let net = h
        .with_engine(move |e| e.port_info(pb).map(|i| i.network))
        .unwrap()
        .unwrap();
    for i in 0..20 {
        h.with_engine(move |e| {
            let c = port(e, net, &format!("c{i}"), "192.0.2.50")?;
            e.remove_port(c)
        })
        .unwrap()
        .unwrap();
    }
    assert_eq!(
        tap_filters(&h, 1),
        1,
        "other ports' changes left a's filter off"
    );
    set_up(pa, true);
    assert_eq!(tap_filters(&h, 2), 2, "a's filter is back once a is up");
    h.with_engine(move |e| e.add_port_addr(pb, IpAddr::V4("192.0.2.3".parse().unwrap())))
        .unwrap()
        .unwrap();
    set_up(pb, false);
    assert_eq!(
        tap_filters(&h, 1),
        1,
        "b's filter follows b after b changed"
    );
    set_up(pb, true);
    assert_eq!(tap_filters(&h, 2), 2);
    assert!(ping(&a, "192.0.2.2", 2), "a and b still talk");
}

#[test]
fn a_taps_prefilter_follows_its_own_port_uring() {
    a_taps_prefilter_follows_its_own_port(IoMode::Uring);
}

#[test]
fn a_taps_prefilter_follows_its_own_port_plain() {
    a_taps_prefilter_follows_its_own_port(IoMode::Plain);
}
