//! Observing uvlan from outside, with real tools: `/metrics` read by curl and validated by
//! `promtool check metrics`, counters growing with pings; a tcpdump capture replayed with
//! `uvlan trace --pcap` through an ipvlan l3 network, bridge then private; and `uvlan
//! capture` on the real dataplane while endpoints ping, read back by tshark.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use uvlan_control::nsutil;
use uvlan_system_tests::capture::tshark;
use uvlan_system_tests::World;

/// The exposition from inside the daemon's namespace, in the Prometheus text format.
fn scrape(w: &World, url: &str) -> String {
    let o = w.exec("host", &format!("curl -sS --max-time 5 {url}"));
    assert!(
        o.status.success(),
        "curl {url}: {}\n--- daemon log ---\n{}",
        String::from_utf8_lossy(&o.stderr),
        w.daemon_log()
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn promtool_check(text: &str) {
    use std::io::Write;
    let mut child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (scripts/deps.sh --test installs the prometheus package)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The value of one sample line `name{labels} value` (exact name and labels).
fn sample(text: &str, series: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map(|v| v as u64)
        .unwrap_or_else(|| panic!("no sample {series} in\n{text}"))
}

#[test]
fn metrics_pass_promtool_and_grow_with_traffic() {
    // The dataplane's own counters (batches) must see the pings: no fast path.
    let mut w = World::with_daemon_args(&["--metrics", "127.0.0.1:9464", "--fast-path", "off"]);
    let (a, b) = (w.netns("a"), w.netns("b"));
    w.create("-d ipvlan --subnet 192.0.2.0/24 -o ipvlan_mode=l2 m1");
    w.uvlan_ok(&["network", "connect", "--ip", "192.0.2.10", "m1", &a]);
    w.uvlan_ok(&["network", "connect", "--ip", "192.0.2.11", "m1", &b]);
    assert!(w.ping("a", "192.0.2.11", 4));

    let url = "http://127.0.0.1:9464/metrics";
    let first = scrape(&w, url);
    promtool_check(&first);
    assert_eq!(sample(&first, "uvlan_networks"), 1);
    assert_eq!(sample(&first, "uvlan_endpoints{network=\"m1\"}"), 2);
    let tx = format!("uvlan_endpoint_tx_packets_total{{network=\"m1\",endpoint=\"{a}\"}}");
    let rx = format!("uvlan_endpoint_rx_bytes_total{{network=\"m1\",endpoint=\"{b}\"}}");
    let (tx0, rx0) = (sample(&first, &tx), sample(&first, &rx));
    assert!(tx0 >= 1 && rx0 >= 1, "{first}");
    assert!(
        first.contains("uvlan_dropped_packets_total{layer=\"engine\",reason=\"private_flag\"} 0")
    );

    let o = w.exec("a", "ping -c 5 -i 0.2 -W 1 -q 192.0.2.11");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stdout));
    let second = scrape(&w, url);
    assert!(sample(&second, &tx) >= tx0 + 5, "{second}");
    assert!(sample(&second, &rx) >= rx0 + 5 * 98, "{second}");
    assert!(
        sample(&second, "uvlan_dataplane_loop_iterations_total")
            > sample(&first, "uvlan_dataplane_loop_iterations_total")
    );
    // Batch sizes: a histogram per worker whose +Inf bucket is its count; the ten frames
    // of the five pings (requests and replies, 0.2 s apart) come in at least ten batches.
    let total = |text: &str, suffix: &str| -> u64 {
        let mut n = 0;
        for l in text.lines() {
            let Some(rest) = l.strip_prefix(&format!("uvlan_dataplane_batch_size_{suffix}{{"))
            else {
                continue;
            };
            let worker = rest.split('"').nth(1).unwrap_or_default();
            let v = sample(text, l.rsplit_once(' ').unwrap().0);
            if suffix == "count" {
                let inf =
                    format!("uvlan_dataplane_batch_size_bucket{{worker=\"{worker}\",le=\"+Inf\"}}");
                assert_eq!(sample(text, &inf), v, "{text}");
            }
            n += v;
        }
        n
    };
    assert!(
        total(&second, "count") >= total(&first, "count") + 10,
        "{second}"
    );
    assert!(
        total(&second, "sum") >= total(&first, "sum") + 10,
        "{second}"
    );

    // OpenMetrics when asked for, with its terminator.
    let om = w.exec(
        "host",
        &format!("curl -sS --max-time 5 -H 'Accept: application/openmetrics-text' {url}"),
    );
    let om = String::from_utf8_lossy(&om.stdout);
    assert!(om.ends_with("# EOF\n"), "{om}");
    assert!(om.contains("# UNIT uvlan_endpoint_rx_bytes bytes"), "{om}");

    // A non-loopback address is refused unless asked for explicitly.
    let other = w.dir.join("other");
    let o = w.uvlan(&[
        "daemon",
        "--root",
        &other.display().to_string(),
        "--socket",
        &w.dir.join("other.sock").display().to_string(),
        "--metrics",
        "0.0.0.0:9464",
    ]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("--metrics-allow-remote"), "{err}");
    assert!(!other.exists(), "refused before anything was made");
}

/// Runs `tcpdump -w FILE` on eth0 of `ns` (outgoing ICMP only) while `f` runs, from the
/// moment tcpdump says it listens (a fixed pause was too short on a loaded machine).
fn tcpdump_while(w: &World, ns: &str, file: &Path, f: impl FnOnce()) {
    let file = file.display().to_string();
    let t = nsutil::Tcpdump::start(
        &w.ns(ns),
        "eth0",
        &["-Q", "out", "-U", "-n", "-w", &file, "icmp"],
        std::fs::File::create("/dev/null").expect("/dev/null"),
        "tcpdump -w",
        Duration::from_secs(20),
        &|| false,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    f();
    std::thread::sleep(Duration::from_millis(300));
    t.stop();
}

#[test]
fn a_tcpdump_capture_replays_through_l3_bridge_then_private() {
    let mut w = World::new();
    let (a, b) = (w.netns("a"), w.netns("b"));
    let make = |w: &World, flag: &str| {
        w.create(&format!(
            "-d ipvlan --subnet 192.0.2.0/24 -o ipvlan_mode=l3 -o ipvlan_flag={flag} l3net"
        ));
        w.uvlan_ok(&["network", "connect", "--ip", "192.0.2.10", "l3net", &a]);
        w.uvlan_ok(&["network", "connect", "--ip", "192.0.2.11", "l3net", &b]);
    };
    make(&w, "bridge");
    let file = w.dir.join("a.pcap");
    tcpdump_while(&w, "a", &file, || {
        let o = w.exec("a", "ping -c 3 -i 0.2 -W 1 -q 192.0.2.11");
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stdout));
    });
    let pcap = file.display().to_string();

    // Through the bridge network: a's echo requests are delivered to b.
    let out = w.uvlan_ok(&["trace", "l3net", "--pcap", &pcap, "--from", &a]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 4, "{out}");
    for l in &lines[..3] {
        assert!(l.contains(&format!("{a}: ")), "{out}");
        assert!(
            l.contains("IPv4 192.0.2.10 > 192.0.2.11: ICMP echo request"),
            "{out}"
        );
        assert!(l.contains(&format!("deliver to port {b}")), "{out}");
        assert!(l.contains("[ipvlan_rcv_frame"), "{out}");
    }
    assert!(
        lines[3].ends_with(
            "3 frames replayed through network l3net: 3 forwarded, 0 dropped, 0 not replayed"
        ),
        "{out}"
    );

    // The same traffic through an l3 private network: every frame dropped by the rule of
    // ipvlan_xmit_mode_l3 (C27).
    w.uvlan_ok(&["network", "disconnect", "l3net", &a]);
    w.uvlan_ok(&["network", "disconnect", "l3net", &b]);
    w.uvlan_ok(&["network", "rm", "l3net"]);
    make(&w, "private");
    let out = w.uvlan_ok(&["trace", "l3net", "--pcap", &pcap, "--from", &a, "--verbose"]);
    assert_eq!(out.matches("→ DROP (private_flag)").count(), 3, "{out}");
    assert!(
        out.contains("ipvlan_xmit_mode_l2 / ipvlan_xmit_mode_l3"),
        "{out}"
    );
    assert!(
        out.contains("private flag set: yes"),
        "--verbose shows the steps: {out}"
    );
    assert!(
        out.trim_end().ends_with(
            "3 frames replayed through network l3net: 0 forwarded, 3 dropped, 0 not replayed"
        ),
        "{out}"
    );
    // Without --from, classic pcap names no interface: the frames would come from the
    // wire, which this parent-less network does not have.
    let out = w.uvlan_ok(&["trace", "l3net", "--pcap", &pcap]);
    assert_eq!(out.matches("not replayed").count(), 3 + 1, "{out}");
    // Nothing was delivered: b's counters did not move during the replays.
    let stats = w.uvlan_ok(&["stats", "--format", "json", "l3net"]);
    let v: serde_json::Value = serde_json::from_str(&stats).unwrap();
    assert_eq!(
        v["networks"][0]["endpoints"].as_array().unwrap().len(),
        2,
        "{v:#}"
    );
    for e in v["networks"][0]["endpoints"].as_array().unwrap() {
        assert_eq!(e["received_frames"], 0, "replay delivered something: {v:#}");
    }
}

/// Runs `uvlan capture ARGS -w -` (standard output to `file`) while `f` runs, and waits for
/// it to end by itself (`-c`). Returns its standard error (the end-of-capture summary).
fn uvlan_capture_while(w: &World, args: &[&str], file: &Path, f: impl FnOnce()) -> String {
    let out = std::fs::File::create(file).unwrap();
    let err_path = file.with_extension("err");
    let err = std::fs::File::create(&err_path).unwrap();
    let mut child = Command::new(uvlan_system_tests::uvlan_bin())
        .arg("capture")
        .args(args)
        .args(["-w", "-"])
        .env("UVLAN_SOCKET", w.socket())
        .env("UVLAN_ROOT", w.dir.join("root"))
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .expect("uvlan capture");
    // The interface blocks arrive once the dataplane records.
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::fs::metadata(file).map_or(0, |m| m.len()) == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    f();
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break Some(st);
        }
        if Instant::now() > deadline {
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    if status.is_none() {
        nsutil::stop(&mut child, libc::SIGINT, Duration::from_secs(5));
    }
    let stderr = std::fs::read_to_string(&err_path).unwrap_or_default();
    let status = status.unwrap_or_else(|| {
        panic!(
            "uvlan capture {args:?} did not stop by itself (-c): {stderr}\n--- daemon log ---\n{}",
            w.daemon_log()
        )
    });
    assert!(status.success(), "uvlan capture {args:?}: {stderr}");
    stderr
}

#[test]
fn live_capture_on_the_real_dataplane_reads_back_in_tshark() {
    // Two workers: a and b are read by different ones, and each records what it decides.
    let mut w = World::with_daemon_args(&["--workers", "2"]);
    let (a, b) = (w.netns("a"), w.netns("b"));
    // IPv4 only: no router solicitation or MLD report among the counted records.
    let v4_only = |w: &World, ns: &str| {
        let o = w.exec(
            ns,
            "sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1",
        );
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    };
    v4_only(&w, "a");
    v4_only(&w, "b");
    w.create("-d ipvlan --subnet 192.0.2.0/24 -o ipvlan_mode=l2 capnet");
    w.uvlan_ok(&["network", "connect", "--ip", "192.0.2.10", "capnet", &a]);
    w.uvlan_ok(&["network", "connect", "--ip", "192.0.2.11", "capnet", &b]);
    // Neighbours resolved first: the capture then sees ICMP only.
    assert!(w.ping("a", "192.0.2.11", 4));

    // Every endpoint, 12 records: three echo requests and replies, each seen inbound at
    // the sender and outbound at the receiver. -c stops the capture.
    let file = w.dir.join("all.pcapng");
    let summary = uvlan_capture_while(&w, &["capnet", "-c", "12"], &file, || {
        let o = w.exec("a", "ping -c 3 -i 0.2 -W 1 -q 192.0.2.11");
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stdout));
    });
    assert!(summary.contains("12 frames captured"), "{summary}");
    let rows = tshark(
        &file,
        &[
            "frame.interface_name",
            "frame.packet_flags_direction",
            "frame.comment",
            "icmp.type",
        ],
    );
    assert_eq!(rows.len(), 12, "{rows:?}");
    let count = |ifname: &str, dir: &str, icmp: &str| {
        rows.iter()
            .filter(|r| r[0] == ifname && r[1] == dir && r[3] == icmp)
            .count()
    };
    // 0x1 inbound (sent by the endpoint into uvlan), 0x2 outbound (uvlan delivered it).
    let (inb, outb) = ("0x00000001", "0x00000002");
    assert_eq!(count(&a, inb, "8"), 3, "a's requests in: {rows:?}");
    assert_eq!(count(&b, outb, "8"), 3, "delivered to b: {rows:?}");
    assert_eq!(count(&b, inb, "0"), 3, "b's replies in: {rows:?}");
    assert_eq!(count(&a, outb, "0"), 3, "delivered to a: {rows:?}");
    for r in &rows {
        // Requests go to b, replies to a; the comment names the receiver both where the
        // frame entered and where it was delivered.
        let want = if r[3] == "8" { &b } else { &a };
        assert!(
            r[2].starts_with(&format!("verdict: forward to {want}")),
            "{rows:?}"
        );
        assert!(
            r[2].ends_with("; kernel: ipvlan_rcv_frame (local)"),
            "{rows:?}"
        );
    }

    // A second network, ipvlan l3 private: c's pings to d are dropped by the engine. Only
    // endpoint c is captured, with --drops: every record is c's, inbound, with the reason.
    let (c, d) = (w.netns("c"), w.netns("d"));
    v4_only(&w, "c");
    v4_only(&w, "d");
    w.create("-d ipvlan --subnet 198.51.100.0/24 -o ipvlan_mode=l3 -o ipvlan_flag=private privnet");
    w.uvlan_ok(&["network", "connect", "--ip", "198.51.100.10", "privnet", &c]);
    w.uvlan_ok(&["network", "connect", "--ip", "198.51.100.11", "privnet", &d]);
    let file = w.dir.join("drops.pcapng");
    uvlan_capture_while(&w, &["privnet", &c, "--drops", "-c", "3"], &file, || {
        // d pings c meanwhile: d's frames are not captured (another endpoint).
        let o = w.exec("d", "ping -c 3 -i 0.2 -W 1 -q 198.51.100.10");
        assert!(!o.status.success(), "private: no answer");
        let o = w.exec("c", "ping -c 3 -i 0.2 -W 1 -q 198.51.100.11");
        assert!(!o.status.success(), "private: no answer");
    });
    let rows = tshark(
        &file,
        &[
            "frame.interface_name",
            "frame.packet_flags_direction",
            "frame.comment",
            "ip.dst",
        ],
    );
    assert_eq!(rows.len(), 3, "{rows:?}");
    for r in &rows {
        assert_eq!(r[0], c, "only endpoint {c}: {rows:?}");
        assert_eq!(r[1], "0x00000001", "{rows:?}");
        assert_eq!(r[3], "198.51.100.11", "{rows:?}");
        assert!(
            r[2].starts_with("verdict: drop (private_flag); kernel: ipvlan_xmit_mode_l"),
            "{rows:?}"
        );
    }
    let stats = w.uvlan_ok(&["stats", "--format", "json", "privnet"]);
    assert!(stats.contains("private_flag"), "{stats}");
}

/// The wire: an ipvlan l2 network on VLAN 20 of a veth parent, an external host on the other
/// end. The wire's interface is named with its VID; the frames uvlan sent there carry the tag
/// it pushed, the endpoint's copies do not.
#[test]
fn live_capture_of_the_wire_names_the_vid_and_shows_the_tag_af_xdp() {
    live_capture_of_the_wire(uvlan_system_tests::Backend::AfXdp, 1);
}

/// Two workers: the wire belongs to one, the endpoint is read by the other, so the frames to
/// the wire cross between workers and are recorded by the wire's owner.
#[test]
fn live_capture_of_the_wire_names_the_vid_and_shows_the_tag_af_packet_two_workers() {
    live_capture_of_the_wire(uvlan_system_tests::Backend::AfPacket, 2);
}

fn live_capture_of_the_wire(backend: uvlan_system_tests::Backend, workers: u16) {
    use uvlan_system_tests::net::{cable, ip_in};
    let mut w = World::with_daemon_args(&[
        "--wire-backend",
        backend.arg(),
        "--workers",
        &workers.to_string(),
    ]);
    let (host, ext) = (w.ns("host"), w.netns("ext"));
    let c1 = w.netns("c1");
    cable(&host, "up0", None, &ext, "eth0");
    // VLAN 20 on ext's end, in userspace (this kernel may lack 8021q).
    let _trunk = uvlan_system_tests::VlanTrunk::start(&ext, "eth0", &[(20, "v20")]);
    ip_in(&ext, "addr add 198.51.100.9/24 dev v20");
    ip_in(&ext, "link set v20 up");
    for ns in ["c1", "ext"] {
        let o = w.exec(
            ns,
            "sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1",
        );
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    w.create("-d ipvlan --subnet 198.51.100.0/24 -o ipvlan_mode=l2 -o parent=up0.20 wnet");
    w.uvlan_ok(&["network", "connect", "--ip", "198.51.100.10", "wnet", &c1]);
    assert!(w.ping("c1", "198.51.100.9", 4), "{}", w.daemon_log());

    let file = w.dir.join("wire.pcapng");
    uvlan_capture_while(&w, &["wnet", "--wire", "-c", "8"], &file, || {
        let o = w.exec("c1", "ping -c 2 -i 0.2 -W 1 -q 198.51.100.9");
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stdout));
    });
    let rows = tshark(
        &file,
        &[
            "frame.interface_name",
            "frame.packet_flags_direction",
            "vlan.id",
            "icmp.type",
            "frame.comment",
        ],
    );
    assert_eq!(rows.len(), 8, "{backend:?}: {rows:?}");
    let count = |ifname: &str, dir: &str, vid: &str, icmp: &str| {
        rows.iter()
            .filter(|r| r[0] == ifname && r[1] == dir && r[2] == vid && r[3] == icmp)
            .count()
    };
    let (inb, outb) = ("0x00000001", "0x00000002");
    assert_eq!(count(&c1, inb, "", "8"), 2, "{rows:?}");
    assert_eq!(count("wire up0.20", outb, "20", "8"), 2, "{rows:?}");
    assert_eq!(count("wire up0.20", inb, "20", "0"), 2, "{rows:?}");
    assert_eq!(count(&c1, outb, "", "0"), 2, "{rows:?}");
    for r in rows.iter().filter(|r| r[3] == "8") {
        assert_eq!(
            r[4], "verdict: forward to the wire; kernel: dev_queue_xmit(phy_dev)",
            "{rows:?}"
        );
    }
    if workers > 1 {
        // The endpoint's worker wrote nothing itself: its wire frames went to the owner.
        let stats = w.uvlan_ok(&["stats", "--format", "json"]);
        let v: serde_json::Value = serde_json::from_str(&stats).unwrap();
        let ws = v["dataplane"]["workers"].as_array().unwrap();
        assert_eq!(ws.len(), 2, "{v:#}");
        assert!(
            ws.iter()
                .any(|x| x["frames_in"].as_u64() > Some(0) && x["frames_out"] == 0),
            "{v:#}"
        );
    }
    for r in rows.iter().filter(|r| r[3] == "0") {
        assert!(
            r[4].starts_with(&format!("verdict: forward to {c1}; kernel: ipvlan_")),
            "{rows:?}"
        );
    }
}
