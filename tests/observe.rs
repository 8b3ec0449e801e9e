//! Observing uvlan from outside, with real tools: `/metrics` read by curl and validated by
//! `promtool check metrics`, counters growing with pings; and a tcpdump capture replayed with
//! `uvlan trace --pcap` through an ipvlan l3 network, bridge then private.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use uvlan_control::nsutil::{self, in_netns};
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
    let mut w = World::with_daemon_args(&["--metrics", "127.0.0.1:9464"]);
    let (a, b) = (w.netns("a"), w.netns("b"));
    w.uvlan_ok(&[
        "network",
        "create",
        "-d",
        "ipvlan",
        "--subnet",
        "192.0.2.0/24",
        "-o",
        "ipvlan_mode=l2",
        "m1",
    ]);
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

/// Runs `tcpdump -w FILE` on eth0 of `ns` (outgoing ICMP only) while `f` runs.
fn tcpdump_while(w: &World, ns: &str, file: &Path, f: impl FnOnce()) {
    let mut child = in_netns(&w.ns(ns), "tcpdump")
        .args(["-i", "eth0", "-Q", "out", "-U", "-n", "-w"])
        .arg(file)
        .arg("icmp")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("tcpdump");
    // tcpdump opens its socket within a moment; then the traffic.
    std::thread::sleep(Duration::from_millis(1500));
    f();
    std::thread::sleep(Duration::from_millis(300));
    nsutil::stop(&mut child, libc::SIGINT, Duration::from_secs(5));
}

#[test]
fn a_tcpdump_capture_replays_through_l3_bridge_then_private() {
    let mut w = World::new();
    let (a, b) = (w.netns("a"), w.netns("b"));
    let make = |w: &World, flag: &str| {
        w.uvlan_ok(&[
            "network",
            "create",
            "-d",
            "ipvlan",
            "--subnet",
            "192.0.2.0/24",
            "-o",
            "ipvlan_mode=l3",
            "-o",
            &format!("ipvlan_flag={flag}"),
            "l3net",
        ]);
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
