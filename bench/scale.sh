#!/usr/bin/env bash
# Benchmark (not a test: it prints figures and never asserts): the control plane and the
# dataplane with many endpoints on one internal, IPv6-only ipvlan l2 network
# (`--ipv4=false --ipv6 --subnet 2001:db8::/64`). For N = 2, 100 and 1,000
# endpoints (override with SCALE_NS="2 100 1000"):
#   - `uvlan network connect` and `network disconnect` time per operation (the CLI's process
#     included), and the 10th against the 1,000th connect (median of the 5 around each, and the
#     mean of #3..#102 against #901..#1000), and
#     the daemon's CPU time per operation less its dataplane thread's (the control plane's own
#     work, which other load on the machine inflates less than wall time);
#   - the daemon's RSS per endpoint, threads and file descriptors;
#   - the idle daemon's CPU use and context switches per second (all its threads, over
#     IDLE_SECS, default 10 s, from /proc/PID/stat and /proc/PID/task/*/status): right after
#     the last connect, and again once no endpoint has sent a frame for 3 s (the endpoints'
#     DAD and MLD reports, which their kernels repeat for a few seconds, have ended);
#   - with TIMES=FILE, every connect's time (ms, one per line, in order) written to FILE;
#   - TCP and 64-byte UDP over IPv6 (`iperf3 -6`, SECS each, default 3 s) and RTT p50/p99
#     (`ping -6 -i 0.01 -c 500`) between two of the endpoints;
# Each endpoint namespace gets `net.ipv6.conf.default.router_solicitations=0` before its
# eth0 exists (KERNEL_RS=1 keeps the kernel's default, -1: solicit forever with a backoff):
# an internal network has no router to answer. Since endpoints have the kernel's multicast
# filter, a solicitation (to ff02::2) reaches no other endpoint, but each is still a frame the
# dataplane reads, which is the kernel's IPv6 traffic, not uvlan's cost (docs/performance.md,
# "IPv6-only, 1,000 endpoints"). MLD reports are sent once per endpoint as it comes up
# either way.
# And at the largest N: disconnecting every endpoint and the RSS after that (memory given
# back), connecting them again, the daemon's stop time (SIGTERM to exit; endpoints stay), its
# restart time (until the API answers), and disconnecting every endpoint again.
#
#   sudo bench/scale.sh
#
# The release binary is used (or $UVLAN_BIN, to compare builds). Namespaces carry a unique
# prefix and are deleted on exit (also on failure or Ctrl-C). Addresses: 2001:db8::/64 only
# (documentation addresses; 1,000 endpoints do not fit in a documentation IPv4 /24, so the
# network has no IPv4 at all); the network is --internal, so nothing leaves the namespaces.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" -eq 0 ] || { echo "run as root (it creates namespaces)" >&2; exit 1; }
command -v iperf3 >/dev/null || scripts/deps.sh
if [ -n "${UVLAN_BIN:-}" ]; then
    UV=$UVLAN_BIN
else
    cargo build --release -q -p uvlan-control --bin uvlan
    UV=$PWD/target/release/uvlan
fi
p="usc$$"
dir=$(mktemp -d)
export UVLAN_ROOT=$dir/root UVLAN_SOCKET=$dir/sock UV p dir
cleanup() {
    if [ -f "$dir/daemon.pid" ]; then
        kill "$(cat "$dir/daemon.pid")" 2>/dev/null || true
        sleep 0.5
    fi
    ip netns list | awk '{print $1}' | grep "^$p-" | sed 's/^/netns del /' >"$dir/del" || true
    [ -s "$dir/del" ] && ip -force -batch "$dir/del" 2>/dev/null || true
    rm -rf "$dir"
}
trap cleanup EXIT INT TERM
ip netns add "$p-host"
python3 - <<'EOF'
import os, statistics, subprocess, sys, time

UV, P, DIR = os.environ["UV"], os.environ["p"], os.environ["dir"]
NS = [int(x) for x in os.environ.get("SCALE_NS", "2 100 1000").split()]
IDLE = float(os.environ.get("IDLE_SECS", "10"))
KERNEL_RS = os.environ.get("KERNEL_RS", "0") == "1"
SECS = os.environ.get("SECS", "3")
TICK = os.sysconf("SC_CLK_TCK")

def run(*a, check=True, **kw):
    return subprocess.run(a, check=check, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)

def uv(*a):
    return run(UV, *a)

def ns(i):
    return f"{P}-e{i}"

def start_daemon():
    log = open(f"{DIR}/daemon.log", "a")
    d = subprocess.Popen(["ip", "netns", "exec", f"{P}-host", UV, "daemon"], stdout=log, stderr=log)
    open(f"{DIR}/daemon.pid", "w").write(str(d.pid))
    t = time.perf_counter()
    while run(UV, "network", "ls", "-q", check=False).returncode != 0:
        time.sleep(0.01)
    return d, time.perf_counter() - t

def status(pid):
    out = {}
    for l in open(f"/proc/{pid}/status"):
        k, _, v = l.partition(":")
        out[k] = v.split()
    return out

def rss_kib(pid):
    return int(status(pid)["VmRSS"][0])

def threads(pid):
    return len(os.listdir(f"/proc/{pid}/task"))

def fds(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))

def cpu_ticks(pid):
    f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return int(f[11]) + int(f[12])

def cp_ticks(pid):
    # The daemon's CPU time (threads that ended included) less its dataplane thread's: the
    # control plane's own work, which load on the machine inflates less than wall time.
    dp = 0
    for t in os.listdir(f"/proc/{pid}/task"):
        try:
            st = open(f"/proc/{pid}/task/{t}/stat").read()
        except (FileNotFoundError, ProcessLookupError):  # a thread that just ended
            continue
        comm = st[st.index("(") + 1:st.rindex(")")]
        if comm == "uvlan-dataplane":
            f = st.rsplit(")", 1)[1].split()
            dp += int(f[11]) + int(f[12])
    return cpu_ticks(pid) - dp

def ctxt(pid):
    n = 0
    for t in os.listdir(f"/proc/{pid}/task"):
        try:
            s = status(f"{pid}/task/{t}")
            n += int(s["voluntary_ctxt_switches"][0]) + int(s["nonvoluntary_ctxt_switches"][0])
        except (FileNotFoundError, ProcessLookupError, KeyError):
            pass
    return n

def idle(pid):
    c0, x0, t0 = cpu_ticks(pid), ctxt(pid), time.perf_counter()
    time.sleep(IDLE)
    c1, x1, t1 = cpu_ticks(pid), ctxt(pid), time.perf_counter()
    return 100.0 * (c1 - c0) / TICK / (t1 - t0), (x1 - x0) / (t1 - t0)

def frames_read():
    # Frames the dataplane read from every endpoint so far (`uvlan stats`).
    import json
    r = json.loads(uv("stats", "--format", "json").stdout)
    return sum(e.get("sent_frames", 0) for n in r.get("networks", []) for e in n.get("endpoints", []))

def settle(limit=120.0):
    # Waits until the endpoints' own start-up traffic (DAD, MLD reports, which the kernel
    # repeats for a few seconds after each join) has ended: no frame read from any endpoint
    # for 3 s in a row. Returns (seconds waited, frames read meanwhile).
    t, f0 = time.perf_counter(), frames_read()
    last, quiet_since = f0, time.perf_counter()
    while time.perf_counter() - t < limit:
        time.sleep(1)
        f = frames_read()
        if f != last:
            last, quiet_since = f, time.perf_counter()
        elif time.perf_counter() - quiet_since >= 3:
            break
    return time.perf_counter() - t, last - f0

def make_ns(lo, hi):
    with open(f"{DIR}/add", "w") as f:
        for i in range(lo, hi):
            f.write(f"netns add {ns(i)}\n")
            if not KERNEL_RS:
                # No router solicitations from the endpoints (eth0 inherits `default`): an
                # internal network has no router, and each solicitation goes to every other
                # endpoint (see the header).
                f.write(f"netns exec {ns(i)} sysctl -qw "
                        "net.ipv6.conf.default.router_solicitations=0\n")
    run("ip", "-batch", f"{DIR}/add")

def ms(x):
    return f"{1000 * x:.2f} ms"

def addr(i):
    # The endpoint's global IPv6 address on eth0 (the IPAM's dynamic choice).
    out = run("ip", "netns", "exec", ns(i), "ip", "-6", "-o", "addr", "show", "dev", "eth0",
              "scope", "global").stdout.split()
    return out[out.index("inet6") + 1].split("/")[0]

def traffic(a, b):
    dst = addr(b)
    run("ip", "netns", "exec", ns(a), "ping", "-6", "-c", "3", "-i", "0.2", "-q", dst, check=False)
    p = run("ip", "netns", "exec", ns(a), "ping", "-6", "-n", "-i", "0.01", "-c", "500", dst, check=False).stdout
    rtts = sorted(float(l.split("time=")[1].split()[0]) for l in p.splitlines() if "time=" in l)
    q = lambda f: rtts[min(len(rtts) - 1, int(f * len(rtts)))] * 1000 if rtts else float("nan")
    srv = subprocess.Popen(["ip", "netns", "exec", ns(b), "iperf3", "-s", "-1", "-p", "5201"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.3)
    import json
    t = json.loads(run("ip", "netns", "exec", ns(a), "iperf3", "-6", "-c", dst, "-t", SECS, "-J", check=False).stdout or "{}")
    srv.wait()
    srv = subprocess.Popen(["ip", "netns", "exec", ns(b), "iperf3", "-s", "-1", "-p", "5201"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.3)
    u = json.loads(run("ip", "netns", "exec", ns(a), "iperf3", "-6", "-c", dst, "-t", SECS, "-u", "-l", "64", "-b", "0", "-J", check=False).stdout or "{}")
    srv.wait()
    try:
        tcp = t["end"]["sum_received"]["bits_per_second"] / 1e9
    except KeyError:
        tcp = float("nan")
    try:
        e = u["end"]["sum"]
        udp = (e["packets"] - e["lost_packets"]) / e["seconds"] / 1e3
    except KeyError:
        udp = float("nan")
    return tcp, udp, q(0.5), q(0.99), len(rtts)

d, _ = start_daemon()
pid = d.pid
uv("network", "create", "-d", "ipvlan", "-o", "ipvlan_mode=l2", "--internal",
   "--ipv4=false", "--ipv6", "--subnet", "2001:db8::/64", "scale")
rss0, thr0 = rss_kib(pid), threads(pid)
print(f"empty daemon: RSS {rss0} KiB, {thr0} threads, {fds(pid)} fds")
conn = []   # (index, seconds)
have = 0
for n in NS:
    make_ns(have, n)
    seg = []
    seg_cpu = []
    for i in range(have, n):
        c0 = cp_ticks(pid)
        t = time.perf_counter()
        uv("network", "connect", "scale", ns(i))
        dt = time.perf_counter() - t
        conn.append(dt)
        seg.append(dt)
        seg_cpu.append(cp_ticks(pid) - c0)
    have = n
    rss = rss_kib(pid)
    print(f"\nN = {n}")
    if seg:
        print(f"  connect #{n - len(seg) + 1}..#{n}: mean {ms(statistics.mean(seg))}, "
              f"median {ms(statistics.median(seg))}, max {ms(max(seg))}; control-plane CPU "
              f"{ms(sum(seg_cpu) / TICK / len(seg))} per connect")
    print(f"  daemon: RSS {rss} KiB ({(rss - rss0) / n:.1f} KiB per endpoint), "
          f"{threads(pid)} threads, {fds(pid)} fds ({(fds(pid)) / n:.2f} per endpoint)")
    cpu, cs = idle(pid)
    print(f"  idle over {IDLE:.0f} s right after the last connect: CPU {cpu:.2f} %, "
          f"{cs:.1f} context switches/s")
    waited, frames = settle()
    cpu, cs = idle(pid)
    print(f"  idle over {IDLE:.0f} s once nothing is sent ({frames} frames of the endpoints' "
          f"start-up traffic read in the {waited:.0f} s before): CPU {cpu:.2f} %, "
          f"{cs:.1f} context switches/s")
    tcp, udp, p50, p99, got = traffic(0, 1)
    print(f"  endpoint 0 -> 1 (IPv6): TCP {tcp:.2f} Gbit/s, UDP-64 {udp:.0f} kpps delivered, "
          f"RTT p50 {p50:.0f} us, p99 {p99:.0f} us ({got}/500 replies)")
    k = min(10, n - 1)
    ds = []
    c0 = cp_ticks(pid)
    for i in range(n - k, n):
        t = time.perf_counter()
        uv("network", "disconnect", "scale", ns(i))
        ds.append(time.perf_counter() - t)
    dcpu = (cp_ticks(pid) - c0) / TICK / k
    for i in range(n - k, n):
        uv("network", "connect", "scale", ns(i))
    print(f"  disconnect (last {k}): mean {ms(statistics.mean(ds))}, max {ms(max(ds))}; "
          f"control-plane CPU {ms(dcpu)} per disconnect")

def around(i):
    # The 5 connects centred on #i (conn[i - 1]); the last 5 when #i is one of the last two.
    start = max(0, min(i - 3, len(conn) - 5))
    w = conn[start:start + 5]
    return statistics.median(w) if w else float("nan")

if os.environ.get("TIMES"):
    # TIMES=FILE: every connect's time in ms, one per line, in order.
    with open(os.environ["TIMES"], "w") as f:
        f.writelines(f"{t * 1000:.3f}\n" for t in conn)

if len(conn) >= 1000:
    a, b = around(10), around(1000)
    print(f"\nconnect #10: {ms(a)}, #1000: {ms(b)} (median of 5 around each; ratio {b / a:.2f})")
    # The same question with less noise from single hiccups: the first hundred against the
    # last hundred (the first two connects, which start the daemon's machinery, left out).
    a, b = statistics.mean(conn[2:102]), statistics.mean(conn[900:1000])
    print(f"connect mean #3..#102: {ms(a)}, #901..#1000: {ms(b)} (ratio {b / a:.2f})")

def disconnect_all(label):
    ds = []
    t0 = time.perf_counter()
    for i in range(have):
        t = time.perf_counter()
        uv("network", "disconnect", "scale", ns(i))
        ds.append(time.perf_counter() - t)
    total = time.perf_counter() - t0
    print(f"disconnect all {have} ({label}): {total:.1f} s, mean {ms(statistics.mean(ds))}, "
          f"median {ms(statistics.median(ds))}, first {ms(ds[0])}, last {ms(ds[-1])}")
    time.sleep(1)
    print(f"  after disconnecting all: RSS {rss_kib(pid)} KiB, {threads(pid)} threads, {fds(pid)} fds")

# The daemon that grew to the largest N gives its memory back?
disconnect_all("the daemon that connected them")
for i in range(have):
    uv("network", "connect", "scale", ns(i))
print(f"connected all {have} again: RSS {rss_kib(pid)} KiB, {threads(pid)} threads")
print(f"\nstop with {have} endpoints:")
t = time.perf_counter()
d.terminate()
d.wait()
stop = time.perf_counter() - t
print(f"  daemon stop (SIGTERM to exit): {stop:.2f} s")
d, start = start_daemon()
pid = d.pid
print(f"  restart until the API answers: {start:.2f} s; RSS {rss_kib(pid)} KiB, {threads(pid)} threads")
lst = run(UV, "network", "inspect", "scale").stdout
print(f"  endpoints after the restart: {lst.count(P + '-e')}")
disconnect_all("after the restart")
d.terminate()
d.wait()
EOF
