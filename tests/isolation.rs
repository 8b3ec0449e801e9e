//! Isolation between endpoints, with real stacks in namespaces (issue 14): the kernel's MTU
//! rule (`is_skb_forwardable`: a frame longer than the receiver's MTU is dropped and counted
//! under its own reason), counters that add up per endpoint (the TAP's own drops and the
//! engine's drops of the endpoint's frames, by reason), and a storm from one endpoint that
//! does not stop the others' traffic. Throughput under a storm is `bench/storm.sh`'s job:
//! nothing here is timed.

use serde_json::Value;
use uvlan_system_tests::capture::LiveCapture;
use uvlan_system_tests::World;

/// `tests/flood.py` (AF_PACKET, qdisc bypassed) run inside namespace `name`.
fn flood(w: &World, name: &str, kind: &str, how: &str) -> String {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/flood.py");
    let o = w.exec(name, &format!("python3 {script} eth0 {kind} {how}"));
    assert!(
        o.status.success(),
        "flood.py: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The JSON counters of the endpoint in namespace `name` (the only network `net`).
fn ep_stats(w: &World, net: &str, name: &str) -> Value {
    let s = w.uvlan_ok(&["stats", "--format", "json", net]);
    let v: Value = serde_json::from_str(&s).unwrap();
    let full = w.ns(name);
    v["networks"][0]["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"].as_str().is_some_and(|n| n.contains(&full)))
        .unwrap_or_else(|| panic!("no endpoint {full} in {v:#}"))
        .clone()
}

fn n(v: &Value, key: &str) -> u64 {
    v[key].as_u64().unwrap_or(0)
}

fn engine_drop(v: &Value, reason: &str) -> u64 {
    v["engine_drops"][reason].as_u64().unwrap_or(0)
}

/// `ip -s -j link show eth0` in `name`: the TAP's own (tx_dropped, rx_dropped).
fn tap_own_drops(w: &World, name: &str) -> (u64, u64) {
    let o = w.exec(name, "ip -s -j link show dev eth0");
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    let s = &v[0]["stats64"];
    (
        s["tx"]["dropped"].as_u64().unwrap(),
        s["rx"]["dropped"].as_u64().unwrap(),
    )
}

fn create(w: &World, driver: &str, net: &str) {
    let mut args = vec!["network", "create", "-d", driver, "--internal"];
    if driver == "ipvlan" {
        args.extend(["-o", "ipvlan_mode=l2"]);
    } else {
        args.extend(["-o", "macvlan_mode=bridge"]);
    }
    args.extend(["--subnet", "192.0.2.0/24", net]);
    w.uvlan_ok(&args);
}

/// Pings `addr` from `name` with DF set and `size` bytes of ICMP payload: `count` probes,
/// true when any answer came back.
fn ping_df(w: &World, name: &str, addr: &str, size: u32, count: u32) -> bool {
    w.exec(
        name,
        &format!("ping -4 -n -q -M do -s {size} -c {count} -i 0.2 -W 1 {addr}"),
    )
    .status
    .success()
}

#[test]
fn frames_longer_than_the_receivers_mtu_are_dropped_and_counted() {
    for driver in ["ipvlan", "macvlan"] {
        let mut w = World::new();
        let (a, b) = (w.netns("a"), w.netns("b"));
        create(&w, driver, "mtu");
        w.uvlan_ok(&["network", "connect", "--ip", "192.0.2.10", "mtu", &a]);
        w.uvlan_ok(&["network", "connect", "--ip", "192.0.2.11", "mtu", &b]);
        assert!(
            w.ping("a", "192.0.2.11", 4),
            "{driver}: no basic reachability"
        );
        // b's MTU goes down to 1280; a's stays 1500 and a sends full-size frames with DF.
        let o = w.exec("b", "ip link set dev eth0 mtu 1280");
        assert!(o.status.success());
        // 1252 + 8 + 20 = 1280 bytes of IPv4: fits b.
        assert!(
            ping_df(&w, "a", "192.0.2.11", 1252, 3),
            "{driver}: a 1280-byte packet must reach an MTU 1280 receiver\n{}",
            w.daemon_log()
        );
        let before = engine_drop(&ep_stats(&w, "mtu", "a"), "mtu_exceeded");
        // 1472 + 28 = 1500 bytes: longer than b's MTU (+ 14 + 4), dropped; nothing answers.
        assert!(
            !ping_df(&w, "a", "192.0.2.11", 1472, 3),
            "{driver}: a 1500-byte packet reached an MTU 1280 receiver"
        );
        let st = ep_stats(&w, "mtu", "a");
        assert!(
            engine_drop(&st, "mtu_exceeded") >= before + 3,
            "{driver}: the sender's drops name the rule: {st:#}"
        );
        assert!(
            n(&st, "dropped") >= engine_drop(&st, "mtu_exceeded"),
            "{st:#}"
        );
        // The trace says why, naming the kernel function.
        let t = w.uvlan_ok(&[
            "trace",
            "mtu",
            "--from",
            &a,
            "--to",
            "192.0.2.11",
            "--size",
            "1514",
        ]);
        assert!(t.contains("is_skb_forwardable"), "{driver}: {t}");
        // b back to 1500: full-size frames pass again.
        assert!(w
            .exec("b", "ip link set dev eth0 mtu 1500")
            .status
            .success());
        assert!(
            (0..10).any(|_| ping_df(&w, "a", "192.0.2.11", 1472, 1)),
            "{driver}: b's MTU 1500 was not followed"
        );
        // An MTU above the parent's (here the internal network's 1500): ipvlan takes it
        // (C63), a macvlan refuses it (C45): uvlan keeps the port at 1500 and says so. Either
        // way b (MTU 1500) never receives a longer frame.
        assert!(w
            .exec("a", "ip link set dev eth0 mtu 9000")
            .status
            .success());
        assert!(!ping_df(&w, "a", "192.0.2.11", 4000, 3), "{driver}");
        let st = ep_stats(&w, "mtu", "a");
        assert!(
            engine_drop(&st, "mtu_exceeded") >= before + 6,
            "{driver}: {st:#}"
        );
        if driver == "macvlan" {
            let log = w.daemon_log();
            assert!(
                log.contains("its MTU was set to 9000") && log.contains("macvlan refuses"),
                "{log}"
            );
        }
    }
}

/// With `--tap-filter off`: the TAP's prefilter would drop these frames (unicast nobody has,
/// on an internal network) before they are queued; without it the flood fills the queue, and
/// the dataplane reads and drops the rest.
#[test]
fn a_flood_overflowing_a_tap_queue_shows_in_the_endpoints_counters() {
    let mut w = World::with_daemon_args(&["--tap-filter", "off"]);
    let (a, b) = (w.netns("a"), w.netns("b"));
    create(&w, "ipvlan", "cnt");
    w.uvlan_ok(&["network", "connect", "--ip", "192.0.2.10", "cnt", &a]);
    w.uvlan_ok(&["network", "connect", "--ip", "192.0.2.11", "cnt", &b]);
    assert!(w.ping("a", "192.0.2.11", 4));
    // A TAP queue of 4 frames: the flood outruns uvlan's reads and the TAP drops the rest.
    assert!(w
        .exec("a", "ip link set dev eth0 txqueuelen 4")
        .status
        .success());
    let before = ep_stats(&w, "cnt", "a");
    let (tx0, rx0) = tap_own_drops(&w, "a");
    const N: u64 = 200_000;
    let out = flood(&w, "a", "nowhere", &format!("--count {N}"));
    // "sent N frames in S s (R frames/s), E refused": a frame the full TAP queue drops is
    // refused to the sender (ENOBUFS), so both count as frames the endpoint sent.
    let words: Vec<&str> = out.split_whitespace().collect();
    let num = |i: usize| -> u64 {
        words
            .get(i)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("flood.py said {out:?}"))
    };
    let sent = num(1) + num(words.len() - 2);
    assert_eq!(sent, N, "{out}");
    std::thread::sleep(std::time::Duration::from_millis(300));
    let after = ep_stats(&w, "cnt", "a");
    let (tx1, rx1) = tap_own_drops(&w, "a");
    let tap = n(&after, "tap_dropped") - n(&before, "tap_dropped");
    let read = n(&after, "sent_frames") - n(&before, "sent_frames");
    let no_wire = engine_drop(&after, "no_wire") - engine_drop(&before, "no_wire");
    eprintln!("flood: {out}; uvlan read {read}, the TAP dropped {tap}, no_wire {no_wire}");
    assert!(
        tap > 0,
        "the flood did not overflow the TAP queue: {after:#}"
    );
    // The same numbers the kernel reports for the TAP.
    assert_eq!(tap, (tx1 - tx0) + (rx1 - rx0), "{after:#}");
    // Every frame the endpoint sent is accounted for: read by uvlan, or dropped by the TAP
    // (a few more: the endpoint's own IPv6 and ARP chatter).
    assert!(read + tap >= sent, "read {read} + tap {tap} < sent {sent}");
    assert!(
        read + tap <= sent + 50,
        "read {read} + tap {tap} > sent {sent}"
    );
    // An internal network has no wire: uvlan dropped what it read, and says so for a.
    assert!(no_wire + 50 >= read && no_wire <= read, "{after:#}");
    assert_eq!(
        n(&after, "dropped"),
        n(&after, "tap_dropped")
            + after["engine_drops"]
                .as_object()
                .unwrap()
                .values()
                .map(|v| v.as_u64().unwrap())
                .sum::<u64>()
            + n(&after, "undelivered"),
        "{after:#}"
    );
    // The table shows where; no prefilter took part.
    assert_eq!(n(&after, "prefiltered"), 0, "{after:#}");
    let t = w.uvlan_ok(&["stats", "cnt"]);
    assert!(
        t.contains("tap queue") && t.contains("engine: no_wire"),
        "{t}"
    );
    assert!(t.contains("TAP prefilters: 0 endpoint(s)"), "{t}");
    // b saw none of it, and still answers.
    assert!(w.ping("a", "192.0.2.11", 4));
    let _ = b;
}

#[test]
fn a_storm_from_one_endpoint_does_not_stop_the_others() {
    let mut w = World::new();
    let names = ["s", "x", "y"];
    for (i, name) in names.iter().enumerate() {
        let full = w.netns(name);
        if i == 0 {
            create(&w, "ipvlan", "storm");
        }
        let ip = format!("192.0.2.{}", 10 + i);
        w.uvlan_ok(&["network", "connect", "--ip", &ip, "storm", &full]);
    }
    assert!(w.ping("x", "192.0.2.12", 4));
    // Garbage and broadcasts from s, for 4 s each, in the background; x and y keep talking.
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/flood.py");
    let storm = w.exec(
        "s",
        &format!(
            "(python3 {script} eth0 garbage --seconds 4; python3 {script} eth0 broadcast \
             --seconds 4) >/dev/null 2>&1 & echo $!; sleep 1"
        ),
    );
    assert!(storm.status.success());
    let pid = String::from_utf8_lossy(&storm.stdout).trim().to_string();
    let mut answered = 0;
    for _ in 0..4 {
        if w.ping("x", "192.0.2.12", 1) {
            answered += 1;
        }
    }
    assert!(
        answered >= 3,
        "x reached y {answered} times out of 4 during the storm"
    );
    let st = ep_stats(&w, "storm", "s");
    assert!(n(&st, "sent_frames") > 0, "{st:#}");
    // Wait for the storm to end before the namespaces go.
    let _ = w.exec(
        "s",
        &format!("while kill -0 {pid} 2>/dev/null; do sleep 0.2; done"),
    );
    assert!(w.ping("y", "192.0.2.11", 4));
    // The broadcasts made s a flood (its reads were paused); x and y never were.
    let st = ep_stats(&w, "storm", "s");
    assert!(
        n(&st, "flood_pauses") > 0,
        "{st:#} {}",
        w.uvlan_ok(&["stats", "--format", "json"])
    );
    for quiet in ["x", "y"] {
        let st = ep_stats(&w, "storm", quiet);
        assert_eq!(n(&st, "flood_pauses"), 0, "{quiet}: {st:#}");
    }
    let t = w.uvlan_ok(&["stats", "storm"]);
    assert!(t.contains("storm control (reads paused"), "{t}");
}

/// `flood.py nowhere --count total` from `name`: (frames sent, frames refused), which add up.
fn flood_counts(w: &World, name: &str, total: u64) -> (u64, u64) {
    let out = flood(w, name, "nowhere", &format!("--count {total}"));
    let words: Vec<&str> = out.split_whitespace().collect();
    let num = |i: usize| -> u64 {
        words
            .get(i)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("flood.py said {out:?}"))
    };
    let (sent, refused) = (num(1), num(words.len() - 2));
    assert_eq!(sent + refused, total, "{out}");
    (sent, refused)
}

/// `uvlan stats --format json`'s loop counters: frames the dataplane read, all workers.
fn frames_in(w: &World, net: &str) -> u64 {
    let s = w.uvlan_ok(&["stats", "--format", "json", net]);
    let v: Value = serde_json::from_str(&s).unwrap();
    v["dataplane"]["workers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| n(x, "frames_in"))
        .sum()
}

/// The TAP's prefilter (`uvlan daemon --tap-filter`, on by default): on an internal ipvlan L2
/// or macvlan bridge network, unicast an endpoint sends to a MAC no endpoint has goes nowhere
/// (no wire), so the kernel drops it in the sender's context before the TAP queues it. It is
/// counted as the engine's `no_wire` and as `prefiltered`, never as the TAP queue's, and the
/// dataplane reads none of it; the endpoints' own traffic passes. While a capture runs the
/// filters come off and every frame reaches the dataplane (and the capture, with its
/// verdict); after it they are back.
#[test]
fn a_taps_prefilter_drops_for_the_engine_and_steps_aside_for_a_capture() {
    for driver in ["macvlan", "ipvlan"] {
        prefilter_round(driver);
    }
}

/// `flood_counts` from endpoint `name` of network `net`, with its stats read before and
/// 300 ms after (the dataplane has caught up): (before, (sent, refused), after).
fn flood_between_stats(w: &World, net: &str, name: &str, total: u64) -> (Value, (u64, u64), Value) {
    let before = ep_stats(w, net, name);
    let counts = flood_counts(w, name, total);
    std::thread::sleep(std::time::Duration::from_millis(300));
    (before, counts, ep_stats(w, net, name))
}

fn prefilter_round(driver: &str) {
    let mut w = World::new();
    let (a, b) = (w.netns("a"), w.netns("b"));
    create(&w, driver, "pre");
    w.uvlan_ok(&["network", "connect", "--ip", "192.0.2.10", "pre", &a]);
    w.uvlan_ok(&["network", "connect", "--ip", "192.0.2.11", "pre", &b]);
    assert!(w.ping("a", "192.0.2.11", 4), "{}", w.daemon_log());
    let t = w.uvlan_ok(&["stats", "pre"]);
    assert!(t.contains("TAP prefilters: 2 endpoint(s)"), "{driver}: {t}");

    const N: u64 = 5_000;
    let read0 = frames_in(&w, "pre");
    let (tx0, _) = tap_own_drops(&w, "a");
    // A frame the filter drops is refused to the sender (ENOBUFS: the qdisc is bypassed),
    // as one a full queue drops.
    let (before, (_, refused), after) = flood_between_stats(&w, "pre", "a", N);
    assert_eq!(refused, N, "the TAP refused every frame");
    let (tx1, _) = tap_own_drops(&w, "a");
    let pre = n(&after, "prefiltered") - n(&before, "prefiltered");
    let no_wire = engine_drop(&after, "no_wire") - engine_drop(&before, "no_wire");
    let read = frames_in(&w, "pre") - read0;
    eprintln!("prefilter: {pre} of {N}, no_wire {no_wire}, read {read}");
    assert_eq!(pre, N, "the prefilter dropped every frame: {after:#}");
    assert_eq!(no_wire, N, "as the engine's no_wire: {after:#}");
    assert!(
        read < 100,
        "the dataplane read {read} frames of a prefiltered flood"
    );
    // The TAP counts them in its tx_dropped; uvlan does not call them queue drops.
    assert!(tx1 - tx0 >= N, "the TAP's own counter: {}", tx1 - tx0);
    assert_eq!(
        n(&after, "tap_dropped"),
        n(&before, "tap_dropped"),
        "{after:#}"
    );
    assert!(
        n(&after, "sent_frames") - n(&before, "sent_frames") >= N,
        "{after:#}"
    );
    let t = w.uvlan_ok(&["stats", "pre"]);
    assert!(t.contains("of which by its TAP's prefilter"), "{t}");
    assert!(w.ping("a", "192.0.2.11", 2), "{driver}: a and b still talk");
    if driver != "ipvlan" {
        return;
    }

    // A capture with --drops sees every frame with its verdict: the filters step aside.
    let cap = LiveCapture::start(&w.socket(), &["pre", "--drops"]);
    const C: u64 = 300;
    let (mid, (sent, _), during) = flood_between_stats(&w, "pre", "a", C);
    assert_eq!(sent, C, "the TAP queued every frame while the capture ran");
    let captured = cap.stop().frames;
    assert_eq!(
        n(&during, "prefiltered"),
        n(&mid, "prefiltered"),
        "no prefilter while the capture ran: {during:#}"
    );
    assert!(
        engine_drop(&during, "no_wire") - engine_drop(&mid, "no_wire") >= C,
        "the engine read and dropped them: {during:#}"
    );
    assert!(
        captured >= C,
        "the capture saw {captured} of {C} dropped frames"
    );

    // The capture is over: a turn of the loop (a ping) puts the filters back.
    assert!(w.ping("a", "192.0.2.11", 2));
    let (last, (_, refused), end) = flood_between_stats(&w, "pre", "a", N);
    assert_eq!(refused, N);
    assert_eq!(
        n(&end, "prefiltered") - n(&last, "prefiltered"),
        N,
        "the prefilter is back after the capture: {end:#}"
    );
    // The global counters keep a's drops after a goes (counters only grow).
    let global = |w: &World| -> u64 {
        let s = w.uvlan_ok(&["stats", "--format", "json"]);
        let v: Value = serde_json::from_str(&s).unwrap();
        v["drops"]["no_wire"].as_u64().unwrap_or(0)
    };
    let total = global(&w);
    assert!(total >= engine_drop(&end, "no_wire"), "{total}");
    w.uvlan_ok(&["network", "disconnect", "pre", &a]);
    assert!(global(&w) >= total, "no_wire fell from {total} when a left");
}
