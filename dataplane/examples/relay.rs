//! The blind relay: the bound of this design for the benchmarks. The same dataplane (workers,
//! I/O paths, buffers, batching, offloads, counters) with the engine replaced by a fixed
//! pairing (`RunOptions::relay`): every frame from one side goes to the other, unchanged.
//!
//! ```text
//! relay --tap NS_A --tap NS_B                  TAP in NS_A ↔ TAP in NS_B
//! relay --tap NS_A --parent IF [--host NS_H]   TAP in NS_A ↔ the wire of IF (AF_XDP, else
//!                                              AF_PACKET), as a macvlan endpoint with --mac
//! options: --io auto|uring|plain   --workers N   --batch N   --ifname NAME (default eth0)
//!          --mac MAC (the endpoint's MAC, wire mode: the filter steers it to the relay)
//!          --wire-backend auto|af_xdp|af_packet   --report SECS (default 1)
//!          --coalesce MICROSECONDS (`RunOptions::coalesce`; 0: off)
//!          --busy-poll MICROSECONDS (`RunOptions::busy_poll`; default 0: off)
//! ```
//!
//! The TAPs are created (not addressed: the caller sets MAC, addresses and link state with
//! `ip`). Prints `relay: ready: <I/O path>` once running, then a counter line every
//! `--report` seconds (`frames_in=… frames_out=… syscalls=… wakeups=… turns=… batches=…`,
//! cumulative) until killed; the TAPs go with the process.

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use uvlan_dataplane::fwd::{
    Driver, IpvlanAttrs, IpvlanFlag, IpvlanMode, LinkRef, LinkType, MacvlanAttrs, MacvlanMode,
    Master, NetworkSpec, ParentSpec,
};
use uvlan_dataplane::port::tap::{Tap, TapOptions};
use uvlan_dataplane::run::{Dataplane, IoMode, NextHop, Resolver, RunOptions, Stats, WireBackend};
use uvlan_dataplane::wire::MacAddr;

struct NoRoutes;

impl Resolver for NoRoutes {
    fn resolve(&mut self, _: u32, _: IpAddr) -> NextHop {
        NextHop::Unreachable
    }
}

#[derive(Default)]
struct Args {
    taps: Vec<String>,
    parent: Option<String>,
    host: Option<String>,
    mac: Option<MacAddr>,
    ifname: String,
    io: IoMode,
    workers: usize,
    batch: usize,
    wire: WireBackend,
    report: u64,
    coalesce: Option<u64>,
    busy_poll: u64,
}

fn usage(e: &str) -> ! {
    eprintln!(
        "relay: {e}\nusage: relay --tap NS --tap NS | --tap NS --parent IF [--host NS] \
         [--mac MAC] [--io auto|uring|plain] [--workers N] [--batch N] [--ifname NAME] \
         [--wire-backend auto|af_xdp|af_packet] [--report SECS] [--coalesce US] [--busy-poll US]"
    );
    std::process::exit(2)
}

fn parse() -> Args {
    let mut a = Args {
        ifname: "eth0".into(),
        workers: 1,
        batch: 64,
        report: 1,
        ..Args::default()
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let mut v = || {
            it.next()
                .unwrap_or_else(|| usage(&format!("{k} needs a value")))
        };
        match k.as_str() {
            "--tap" => a.taps.push(v()),
            "--parent" => a.parent = Some(v()),
            "--host" => a.host = Some(v()),
            "--mac" => a.mac = Some(v().parse().unwrap_or_else(|_| usage("bad --mac"))),
            "--ifname" => a.ifname = v(),
            "--io" => {
                a.io = match v().as_str() {
                    "auto" => IoMode::Auto,
                    "uring" => IoMode::Uring,
                    "plain" => IoMode::Plain,
                    _ => usage("--io is auto, uring or plain"),
                }
            }
            "--workers" => a.workers = v().parse().unwrap_or_else(|_| usage("bad --workers")),
            "--batch" => a.batch = v().parse().unwrap_or_else(|_| usage("bad --batch")),
            "--report" => a.report = v().parse().unwrap_or_else(|_| usage("bad --report")),
            "--coalesce" => {
                a.coalesce = Some(v().parse().unwrap_or_else(|_| usage("bad --coalesce")))
            }
            "--busy-poll" => a.busy_poll = v().parse().unwrap_or_else(|_| usage("bad --busy-poll")),
            "--wire-backend" => {
                a.wire = match v().as_str() {
                    "auto" => WireBackend::Auto,
                    "af_xdp" => WireBackend::AfXdp,
                    "af_packet" => WireBackend::AfPacket,
                    _ => usage("--wire-backend is auto, af_xdp or af_packet"),
                }
            }
            _ => usage(&format!("unknown argument {k}")),
        }
    }
    let ok = match &a.parent {
        None => a.taps.len() == 2,
        Some(_) => a.taps.len() == 1,
    };
    if !ok {
        usage("give two --tap, or one --tap and --parent");
    }
    a
}

fn ns_path(ns: &str) -> PathBuf {
    if ns.contains('/') {
        PathBuf::from(ns)
    } else {
        PathBuf::from(format!("/run/netns/{ns}"))
    }
}

fn tap(ns: &str, ifname: &str) -> Tap {
    Tap::create_in_netns(
        &ns_path(ns),
        &TapOptions {
            name: Some(ifname.to_string()),
            ..TapOptions::default()
        },
    )
    .unwrap_or_else(|e| {
        eprintln!("relay: TAP {ifname} in {ns}: {e}");
        std::process::exit(1)
    })
}

/// The parent's MAC and MTU, as `ip -j link show` gives them.
fn link_info(host: Option<&str>, ifname: &str) -> (MacAddr, u32) {
    let mut c = Command::new("ip");
    if let Some(ns) = host {
        c.args(["-n", ns]);
    }
    let out = c
        .args(["-j", "link", "show", ifname])
        .output()
        .unwrap_or_else(|e| usage(&format!("ip: {e}")));
    let s = String::from_utf8_lossy(&out.stdout);
    let field = |k: &str| -> Option<String> {
        let i = s.find(&format!("\"{k}\":"))? + k.len() + 3;
        let rest = s.get(i..)?.trim_start_matches('"');
        Some(rest.split(['"', ',', '}']).next()?.to_string())
    };
    let mac = field("address")
        .and_then(|m| m.parse().ok())
        .unwrap_or_else(|| usage(&format!("no interface {ifname}")));
    let mtu = field("mtu").and_then(|m| m.parse().ok()).unwrap_or(1500);
    (mac, mtu)
}

fn line(st: &Stats) -> String {
    let t = st.loop_total();
    format!(
        "relay: frames_in={} frames_out={} syscalls={} wakeups={} turns={} batches={} \
         batch_frames={} starved={} sync_writes={}",
        t.frames_in,
        t.frames_out,
        t.syscalls,
        t.wakeups,
        t.turns,
        t.batches,
        t.batch_frames,
        t.starved,
        t.sync_writes
    )
}

fn main() {
    let a = parse();
    let dp = Dataplane::spawn(
        RunOptions {
            io: a.io,
            workers: a.workers,
            batch: a.batch,
            wire_backend: a.wire,
            netns: a.host.as_deref().map(ns_path),
            relay: true,
            coalesce: match a.coalesce {
                Some(us) => Some(Duration::from_micros(us)),
                None => RunOptions::default().coalesce,
            },
            busy_poll: (a.busy_poll > 0).then(|| Duration::from_micros(a.busy_poll)),
            ..RunOptions::default()
        },
        Box::new(NoRoutes),
    )
    .unwrap_or_else(|e| {
        eprintln!("relay: cannot start the dataplane: {e}");
        std::process::exit(1)
    });
    let h = dp.handle();
    let io = dp.io_description().to_string();
    match &a.parent {
        None => {
            // Two ports on an isolated network: only so the dataplane accepts their TAPs.
            let ports = h
                .with_engine(|e| {
                    let n = e.add_network(NetworkSpec::new(
                        "relay",
                        Driver::Ipvlan,
                        Master::Isolated {
                            mac: MacAddr([2, 0, 0, 0, 0, 1]),
                            mtu: 1500,
                        },
                    ))?;
                    let attrs = IpvlanAttrs::new(IpvlanMode::L2, IpvlanFlag::Bridge);
                    let p0 = e.add_ipvlan_port(LinkRef::Network(n), "a", attrs)?;
                    let p1 = e.add_ipvlan_port(LinkRef::Network(n), "b", attrs)?;
                    Ok::<_, uvlan_dataplane::fwd::ConfigError>([p0, p1])
                })
                .expect("dataplane")
                .expect("engine");
            for (p, ns) in ports.iter().zip(&a.taps) {
                h.add_tap(*p, tap(ns, &a.ifname)).expect("add_tap");
            }
        }
        Some(parent) => {
            let (pmac, mtu) = link_info(a.host.as_deref(), parent);
            let mac = a.mac.unwrap_or(MacAddr([2, 0, 0, 0, 0x0a, 1]));
            let name = parent.clone();
            let (pid, port) = h
                .with_engine(move |e| {
                    let pid = e.add_parent(ParentSpec {
                        name,
                        mac: pmac,
                        mtu,
                        up: true,
                        link_type: LinkType::Ether,
                        addrs: Vec::new(),
                    })?;
                    // A macvlan endpoint: the filter steers frames for its MAC to the relay.
                    let n = e.add_network(NetworkSpec::new(
                        "relay",
                        Driver::Macvlan,
                        Master::Parent {
                            parent: pid,
                            vid: None,
                            wire: true,
                        },
                    ))?;
                    let p = e.add_macvlan_port(
                        LinkRef::Network(n),
                        "a",
                        MacvlanAttrs::new(MacvlanMode::Bridge, Some(mac)),
                    )?;
                    e.set_port_up(p, true)?;
                    Ok::<_, uvlan_dataplane::fwd::ConfigError>((pid, p))
                })
                .expect("dataplane")
                .expect("engine");
            let st = h.attach_parent(pid, parent).unwrap_or_else(|e| {
                eprintln!("relay: {e}");
                std::process::exit(1)
            });
            eprintln!("relay: wire on {parent}: {}", st.mode);
            h.add_tap(port, tap(&a.taps[0], &a.ifname))
                .expect("add_tap");
        }
    }
    println!("relay: ready: {io}");
    loop {
        std::thread::sleep(Duration::from_secs(a.report.max(1)));
        match h.stats() {
            Ok(st) => println!("{}", line(&st)),
            Err(e) => {
                eprintln!("relay: {e}");
                break;
            }
        }
    }
}
