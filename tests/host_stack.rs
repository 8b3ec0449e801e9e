//! The parent's own stack, with the real daemon (`uvlan_system_tests::net` LAN: parent `up0`
//! in the daemon's `host` namespace, a gateway behind a bridge). Where the kernel's ipvlan
//! hands a port's frame to its master's stack (C15 in L2, C37 in L3), uvlan injects it into
//! the parent's receive path: a UDP socket bound on the host's address receives it. Where
//! the kernel keeps the frame from the host (macvlan, C61), uvlan still does. Every scenario
//! runs with AF_XDP and with the AF_PACKET fallback.

use std::net::{SocketAddr, UdpSocket};
use std::sync::mpsc;
use std::time::Duration;

use uvlan_system_tests::net::{enter_netns, GW_IP, HOST_IP, HOST_MAC, HOST_PORT, PARENT};
use uvlan_system_tests::{Backend, Capture, LanOptions, World};

const PORT: u16 = 5555;

/// Binds a UDP socket on `HOST_IP:PORT` in the `host` namespace and returns what it
/// receives within `wait` (`None`: nothing), from a thread that entered the namespace.
fn host_listener(w: &World, wait: Duration) -> mpsc::Receiver<Option<(Vec<u8>, SocketAddr)>> {
    let host = w.ns("host");
    let (ready_tx, ready_rx) = mpsc::channel();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        enter_netns(&host).expect("enter host namespace");
        let s = UdpSocket::bind((HOST_IP, PORT)).expect("bind on the host's address");
        s.set_read_timeout(Some(wait)).expect("timeout");
        let _ = ready_tx.send(());
        let mut buf = [0u8; 2048];
        let got = s
            .recv_from(&mut buf)
            .ok()
            .map(|(n, a)| (buf[..n].to_vec(), a));
        let _ = tx.send(got);
    });
    ready_rx.recv().expect("listener ready");
    rx
}

/// Sends one UDP datagram from namespace `from` to `HOST_IP:PORT`, a few times (the first
/// may wait for a neighbour).
fn send_from(from: &str, payload: &'static [u8]) {
    let from = from.to_string();
    std::thread::spawn(move || {
        enter_netns(&from).expect("enter endpoint namespace");
        let s = UdpSocket::bind("0.0.0.0:0").expect("bind");
        for _ in 0..3 {
            let _ = s.send_to(payload, (HOST_IP, PORT));
            std::thread::sleep(Duration::from_millis(100));
        }
    })
    .join()
    .expect("sender");
}

/// The LAN and a network of `driver` on the parent (192.0.2.0/24, gateway [`GW_IP`]) with
/// endpoint `e1` (192.0.2.10), whose neighbour for the host's address is the host's MAC;
/// sends `payload` from it to the host while the host listens for `wait`. What the host's
/// socket received, and the lines of what the parent sent into the switch.
fn send_to_the_host(
    w: &mut World,
    driver: &str,
    payload: &'static [u8],
    wait: Duration,
) -> (Option<(Vec<u8>, SocketAddr)>, Vec<String>) {
    let lan = w.lan(LanOptions::default());
    w.create(&format!(
        "-d {driver} --subnet 192.0.2.0/24 --gateway {GW_IP} -o parent={PARENT} net"
    ));
    let e1 = w.connect("net", "e1", &["--ip", "192.0.2.10"]);
    w.ip(
        "e1",
        &format!("neigh replace {HOST_IP} lladdr {HOST_MAC} dev eth0 nud permanent"),
    );
    // What the parent sends, seen where it enters the switch.
    let cap = Capture::start(
        &lan.sw,
        HOST_PORT,
        &["-Q", "in"],
        &format!("udp port {PORT}"),
    );
    let got = host_listener(w, wait);
    send_from(&e1, payload);
    let got = got.recv().expect("listener");
    let lines = cap.stop().into_iter().filter(|l| !l.is_empty()).collect();
    (got, lines)
}

/// ipvlan L2 (C15): with a static neighbour for the host's address on the parent's MAC, an
/// endpoint's UDP reaches a socket bound on the host's address, and not the wire.
fn ipvlan_l2_reaches_the_host_socket(b: Backend) {
    let mut w = World::with_backend(b);
    let (got, lines) =
        send_to_the_host(&mut w, "ipvlan", b"to-the-host-l2", Duration::from_secs(5));
    let (data, from) = got.unwrap_or_else(|| {
        panic!(
            "the host's socket received nothing; stats:\n{}",
            w.uvlan_ok(&["stats"])
        )
    });
    assert_eq!(data, b"to-the-host-l2");
    assert_eq!(from.ip().to_string(), "192.0.2.10");
    assert!(
        lines.is_empty(),
        "C15: the frame went to the wire: {lines:#?}"
    );
    let stats = w.uvlan_ok(&["stats"]);
    assert!(
        !stats.contains("host_stack_unreachable"),
        "counted as unreachable:\n{stats}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&w.uvlan_ok(&["stats", "--format", "json"])).expect("stats json");
    assert!(
        json["wires"][0]["to_host_frames"].as_u64() >= Some(1),
        "the wire counts no frame to the host: {json}"
    );
}

/// ipvlan L3 (C37): an endpoint's UDP to the parent's own address is `RTN_LOCAL` and reaches
/// the host's socket.
fn ipvlan_l3_reaches_the_host_socket(b: Backend) {
    let mut w = World::with_backend(b);
    let _lan = w.lan(LanOptions::default());
    w.create(&format!(
        "-d ipvlan -o ipvlan_mode=l3 --subnet 198.51.100.0/24 -o parent={PARENT} l3"
    ));
    let e1 = w.connect("l3", "e1", &["--ip", "198.51.100.10"]);
    // The host's way back to the endpoints (reverse path), as an L3 setup has.
    w.ip("host", &format!("route add 198.51.100.0/24 dev {PARENT}"));
    let got = host_listener(&w, Duration::from_secs(5));
    send_from(&e1, b"to-the-host-l3");
    let (data, from) = got.recv().expect("listener").unwrap_or_else(|| {
        panic!(
            "the host's socket received nothing; stats:\n{}",
            w.uvlan_ok(&["stats"])
        )
    });
    assert_eq!(data, b"to-the-host-l3");
    assert_eq!(from.ip().to_string(), "198.51.100.10");
}

/// macvlan (C61): no mode hands a port's frame to the host stack; a frame to the host's MAC
/// leaves on the wire and the host's socket receives nothing.
fn macvlan_keeps_the_frame_from_the_host(b: Backend) {
    let mut w = World::with_backend(b);
    let (got, lines) =
        send_to_the_host(&mut w, "macvlan", b"to-the-host-mv", Duration::from_secs(2));
    assert!(
        got.is_none(),
        "the host received a macvlan port's frame: {got:?}"
    );
    assert!(
        !lines.is_empty(),
        "the frame should have left on the wire (macvlan_queue_xmit)"
    );
}

uvlan_system_tests::with_both_backends!(
    ipvlan_l2_reaches_the_host_socket,
    ipvlan_l3_reaches_the_host_socket,
    macvlan_keeps_the_frame_from_the_host,
);
