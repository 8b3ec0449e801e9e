//! Capture and replay through the daemon, the API's streaming mode and the CLI's reading
//! side, on the configuration-only dataplane fed synthetic frames (no root, no loop): the
//! pcapng the daemon writes is read back by tshark.

use std::collections::HashMap;
use std::io::Write;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use uvlan_dataplane::capture::{self, CaptureFilter, CaptureTap, WireFilter};
use uvlan_dataplane::fwd::sample::{flat, port_ip, PARENT_MAC};
use uvlan_dataplane::fwd::{
    Driver, DropReason, Ingress, IpvlanAttrs, IpvlanFlag, IpvlanMode, NoRoutes,
};
use uvlan_dataplane::wire::{build, MacAddr};
use uvlan_system_tests::capture::tshark;

use super::capture::{stream_capture, CapturePlan};
use super::dp::EngineOnly;
use super::host::{HostLink, HostNet};
use super::options::HostIf;
use super::Daemon;
use crate::api::stream::{pump, replay_frames};
use crate::api::{
    self, CaptureInterface, CaptureRequest, CaptureStart, ClientStream, CreateNetwork,
    ReplayRequest, ReplayStart, Request, Response,
};
use crate::ipam::{IpamConfig, Prefix};
use crate::store::Store;

struct Host;

impl HostNet for Host {
    fn link(&mut self, name: &str) -> Result<Option<HostLink>, String> {
        Ok((name == "eth0").then(|| HostLink {
            index: 2,
            name: "eth0".into(),
            mac: Some(PARENT_MAC),
            mtu: 1500,
            up: true,
            kind: HostIf::Ether,
            addrs: Vec::new(),
        }))
    }
    fn reserved_prefixes(&mut self) -> Vec<Prefix> {
        Vec::new()
    }
}

struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!(
            "uvlan-cap-{}-{tag}-{}",
            std::process::id(),
            crate::ids::random_hex(4).unwrap()
        ));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// tshark's interface name and description of every frame, one frame per line.
fn tshark_interfaces(file: &Path) -> String {
    let out = Command::new("tshark")
        .arg("-r")
        .arg(file)
        .args([
            "-T",
            "fields",
            "-e",
            "frame.interface_name",
            "-e",
            "frame.interface_description",
        ])
        .output()
        .expect("tshark");
    String::from_utf8(out.stdout).unwrap()
}

/// The stream of a capture on two ports and a tagged wire, fed by the engine like the
/// loop, written by the daemon's writer and read by the CLI's reader; then by tshark.
#[test]
fn capture_stream_reads_back_in_tshark_with_names_directions_comments_and_drops() {
    let mut s = flat(Driver::Ipvlan, IpvlanMode::L2, Some(20), 3).unwrap();
    let (p0, p1) = (s.ports[0], s.ports[1]);
    let mut filter = CaptureFilter::new(
        vec![p0, p1],
        vec![WireFilter {
            parent: s.parent,
            vid: Some(20),
        }],
    );
    filter.drops = true;
    let plan = CapturePlan {
        network: "n1".into(),
        filter: filter.clone(),
        interfaces: vec![
            CaptureInterface {
                name: "c1".into(),
                description: "uvlan network n1: endpoint c1".into(),
            },
            CaptureInterface {
                name: "c2".into(),
                description: "uvlan network n1: endpoint c2".into(),
            },
            CaptureInterface {
                name: "wire eth0.20".into(),
                description: "uvlan network n1: the wire on eth0, 802.1Q VID 20".into(),
            },
        ],
        names: HashMap::from([(p0, "c1".to_string()), (p1, "c2".to_string())]),
        count: None,
    };
    let (session, reader) = capture::open(filter);
    let mut tap = CaptureTap::new();
    tap.attach(session);
    // c1 → c2, and c1 → the wire; then the private flag drops c1 → c2.
    let to_c2 = build::icmp4_echo(PARENT_MAC, PARENT_MAC, port_ip(0), port_ip(1), 1);
    let out = build::udp4(
        MacAddr([0, 0, 0x5e, 0, 0x53, 2]),
        PARENT_MAC,
        port_ip(0),
        "198.51.100.9".parse().unwrap(),
        (5000, 53),
        b"q",
    );
    capture::feed(
        &s.engine,
        &mut NoRoutes,
        &mut tap,
        &to_c2,
        Ingress::Port(p0),
    )
    .unwrap();
    capture::feed(&s.engine, &mut NoRoutes, &mut tap, &out, Ingress::Port(p0)).unwrap();
    s.engine
        .ipvlan_changelink(p0, IpvlanAttrs::new(IpvlanMode::L2, IpvlanFlag::Private))
        .unwrap();
    let _ = capture::feed(
        &s.engine,
        &mut NoRoutes,
        &mut tap,
        &to_c2,
        Ingress::Port(p0),
    );
    drop(tap); // the dataplane lets go: the stream ends after these records

    let (server, client) = UnixStream::pair().unwrap();
    let server_read = std::io::BufReader::new(server.try_clone().unwrap());
    let writer = std::thread::spawn(move || stream_capture(&plan, reader, server_read, server));
    let mut conn = ClientStream {
        reader: std::io::BufReader::new(client.try_clone().unwrap()),
        stream: client,
    };
    let mut raw: Vec<u8> = Vec::new();
    let tally = pump(&mut conn, Some(&mut raw), None, &|| false).unwrap();
    let summary = writer.join().unwrap().unwrap();
    assert_eq!((summary.written, summary.lost), (5, 0));
    assert_eq!((tally.frames, tally.lost, tally.statistics), (5, 0, 3));

    let dir = TempDir::new("stream");
    let file = dir.0.join("c.pcapng");
    std::fs::File::create(&file)
        .unwrap()
        .write_all(&raw)
        .unwrap();
    let rows = tshark(
        &file,
        &[
            "frame.interface_name",
            "frame.packet_flags_direction",
            "frame.comment",
            "vlan.id",
        ],
    );
    // epb_flags: 1 inbound, 2 outbound.
    let (inb, outb) = ("0x00000001", "0x00000002");
    let want: Vec<(&str, &str, String, &str)> = vec![
        (
            "c1",
            inb,
            "verdict: forward to c2; kernel: ipvlan_rcv_frame (local)".into(),
            "",
        ),
        (
            "c2",
            outb,
            "verdict: forward to c2; kernel: ipvlan_rcv_frame (local)".into(),
            "",
        ),
        (
            "c1",
            inb,
            "verdict: forward to the wire; kernel: dev_queue_xmit(phy_dev)".into(),
            "",
        ),
        (
            "wire eth0.20",
            outb,
            "verdict: forward to the wire; kernel: dev_queue_xmit(phy_dev)".into(),
            "20",
        ),
        (
            "c1",
            inb,
            format!(
                "verdict: drop (private_flag); kernel: {}",
                DropReason::PrivateFlag.kernel_rule()
            ),
            "",
        ),
    ];
    let got: Vec<(&str, &str, String, &str)> = rows
        .iter()
        .map(|r| (r[0].as_str(), r[1].as_str(), r[2].clone(), r[3].as_str()))
        .collect();
    assert_eq!(got, want, "tshark's view of {}", file.display());
    let descr = tshark_interfaces(&file);
    assert!(
        descr.contains("wire eth0.20\tuvlan network n1: the wire on eth0, 802.1Q VID 20"),
        "{descr}"
    );
}

/// A daemon with the configuration-only dataplane, its API served on a socket pair.
struct Rig {
    _dir: TempDir,
    daemon: Arc<Daemon>,
    dp: Arc<EngineOnly>,
}

impl Rig {
    fn new(tag: &str) -> Rig {
        let dir = TempDir::new(tag);
        let dp = Arc::new(EngineOnly::new());
        let daemon = Daemon::start(
            Store::open(&dir.0.join("root")).unwrap(),
            Box::new(Host),
            dp.clone(),
            Arc::new(|_m: &str| {}),
            false,
        )
        .unwrap();
        let create = Request::NetworkCreate(CreateNetwork {
            name: "n1".into(),
            driver: "ipvlan".into(),
            options: [
                ("parent".to_string(), "eth0.20".to_string()),
                ("ipvlan_mode".to_string(), "l3".to_string()),
            ]
            .into(),
            ipam: vec![IpamConfig {
                subnet: "192.0.2.0/24".into(),
                ..IpamConfig::default()
            }],
            ipv4: None,
            ipv6: false,
            internal: false,
            ipam_driver: None,
        });
        match daemon.handle(create) {
            Response::Ok { .. } => {}
            Response::Error { message } => panic!("{message}"),
        }
        Rig {
            _dir: dir,
            daemon,
            dp,
        }
    }

    /// Opens a streaming request on a socket pair served by the daemon.
    fn open<T: serde::de::DeserializeOwned>(
        &self,
        req: &Request,
    ) -> Result<(T, ClientStream), api::ClientError> {
        let (server, client) = UnixStream::pair().unwrap();
        let d = self.daemon.clone();
        std::thread::spawn(move || api::serve_trusted(server, &*d));
        api::start_stream(Path::new("(socket pair)"), client, req)
    }
}

fn wire_frame(vid: u16, dst: [u8; 4], len: Option<usize>) -> Vec<u8> {
    let f = build::tagged(
        &build::udp4(
            PARENT_MAC,
            MacAddr([0, 0, 0x5e, 0, 0x53, 1]),
            "192.0.2.200".parse().unwrap(),
            dst.into(),
            (1, 2),
            b"x",
        ),
        vid,
    );
    match len {
        Some(n) => f[..n].to_vec(),
        None => f,
    }
}

#[test]
fn daemon_streams_a_wire_capture_until_count_and_reports_statistics() {
    let rig = Rig::new("count");
    // Errors are answered before any stream.
    let err = rig
        .open::<CaptureStart>(&Request::Capture(CaptureRequest {
            network: "nope".into(),
            ..CaptureRequest::default()
        }))
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "Error response from daemon: network nope not found"
    );
    let err = rig
        .open::<CaptureStart>(&Request::Capture(CaptureRequest {
            network: "n1".into(),
            ..CaptureRequest::default()
        }))
        .unwrap_err();
    assert!(
        err.to_string().contains("has no endpoint to capture"),
        "{err}"
    );

    let (start, mut conn) = rig
        .open::<CaptureStart>(&Request::Capture(CaptureRequest {
            network: "n1".into(),
            wire: true,
            drops: true,
            count: Some(3),
            ..CaptureRequest::default()
        }))
        .unwrap();
    assert_eq!(start.network, "n1");
    assert_eq!(start.interfaces.len(), 1);
    assert_eq!(start.interfaces[0].name, "wire eth0.20");
    assert_eq!(rig.dp.capture_sessions(), 1);
    let eth0 = rig.daemon.lock().nets[0]
        .rt
        .as_ref()
        .unwrap()
        .parent
        .unwrap();
    // For the host (no endpoint owns the address); another VID (not recorded); a frame cut
    // inside its tag (dropped: too short); and two more (the count stops at three).
    let verdicts: Vec<_> = [
        wire_frame(20, [192, 0, 2, 9], None),
        wire_frame(30, [192, 0, 2, 9], None),
        wire_frame(20, [192, 0, 2, 9], Some(16)),
        wire_frame(20, [192, 0, 2, 10], None),
        wire_frame(20, [192, 0, 2, 11], None),
    ]
    .iter()
    .map(|f| rig.dp.inject(f, Ingress::Wire(eth0)).unwrap())
    .collect();
    assert_eq!(
        verdicts,
        [Ok(()), Ok(()), Err(DropReason::TooShort), Ok(()), Ok(())]
    );
    let mut lines: Vec<u8> = Vec::new();
    let tally = pump(&mut conn, None, Some(&mut lines), &|| false).unwrap();
    assert_eq!((tally.frames, tally.lost, tally.statistics), (3, 0, 1));
    let text = String::from_utf8(lines).unwrap();
    let rows: Vec<&str> = text.lines().collect();
    assert_eq!(rows.len(), 3, "{text}");
    assert!(rows[0].contains(" wire eth0.20 In  "), "{text}");
    assert!(
        rows[0].contains("802.1Q vlan 20, IPv4 192.0.2.200.1 > 192.0.2.9.2: UDP"),
        "{text}"
    );
    assert!(
        rows[0].ends_with(
            "| verdict: forward to the host's stack; kernel: ipvlan_handle_mode_l3 \
             (RX_HANDLER_PASS)"
        ),
        "{text}"
    );
    assert!(rows[1].contains("| verdict: drop (too_short)"), "{text}");
    assert!(rows[2].contains("192.0.2.10"), "{text}");
    // The reader went away: the dataplane forgets the capture at its next frame.
    assert_eq!(
        rig.dp
            .inject(&wire_frame(20, [192, 0, 2, 9], None), Ingress::Wire(eth0))
            .unwrap(),
        Ok(())
    );
    assert_eq!(rig.dp.capture_sessions(), 0);
}

#[test]
fn the_client_shutting_down_ends_the_capture() {
    let rig = Rig::new("stop");
    let (_, mut conn) = rig
        .open::<CaptureStart>(&Request::Capture(CaptureRequest {
            network: "n1".into(),
            wire: true,
            ..CaptureRequest::default()
        }))
        .unwrap();
    let eth0 = rig.daemon.lock().nets[0]
        .rt
        .as_ref()
        .unwrap()
        .parent
        .unwrap();
    assert_eq!(
        rig.dp
            .inject(&wire_frame(20, [192, 0, 2, 9], None), Ingress::Wire(eth0))
            .unwrap(),
        Ok(())
    );
    let polls = std::sync::atomic::AtomicUsize::new(0);
    // Asks to stop on its second look (after the first frame could have arrived).
    let tally = pump(&mut conn, None, None, &|| {
        polls.fetch_add(1, std::sync::atomic::Ordering::SeqCst) >= 1
    })
    .unwrap();
    assert_eq!((tally.frames, tally.statistics), (1, 1));
}

#[test]
fn replay_decides_each_frame_where_the_capture_saw_it() {
    let rig = Rig::new("replay");
    // A capture file as uvlan capture writes it: a frame on the wire, one outbound there
    // (skipped), one on an interface that names no endpoint (from the wire too).
    let mut w = capture::PcapngWriter::new(Vec::new(), "test").unwrap();
    for name in ["wire eth0.20", "eth9"] {
        w.interface(&capture::InterfaceSpec {
            name,
            description: "",
            snaplen: 0,
        })
        .unwrap();
    }
    let f = wire_frame(20, [192, 0, 2, 9], None);
    for (iface, dir) in [
        (0, capture::Direction::Inbound),
        (0, capture::Direction::Outbound),
        (1, capture::Direction::Inbound),
    ] {
        w.packet(&capture::PacketSpec {
            interface: iface,
            ts_ns: 0,
            data: &f,
            orig_len: f.len() as u32,
            direction: Some(dir),
            comment: None,
        })
        .unwrap();
    }
    let bytes = w.into_inner();
    let (start, mut conn) = rig
        .open::<ReplayStart>(&Request::Replay(ReplayRequest {
            network: "n1".into(),
            from: None,
            verbose: true,
        }))
        .unwrap();
    assert_eq!(start.wire.as_deref(), Some("wire eth0.20"));
    let mut out: Vec<u8> = Vec::new();
    let t = replay_frames(&bytes, &mut conn, &mut out).unwrap();
    let text = String::from_utf8(out).unwrap();
    assert_eq!((t.forwarded, t.dropped, t.skipped), (2, 0, 1), "{text}");
    let first = text.lines().next().unwrap();
    assert!(first.starts_with("    1 wire eth0.20: "), "{text}");
    assert!(
        first.contains("pass to the host stack of parent eth0"),
        "{text}"
    );
    assert!(text.contains("    2 -: "), "{text}");
    assert!(text.contains("outbound where it was captured"), "{text}");
    assert!(
        text.contains("vlan_do_receive"),
        "--verbose prints the trace: {text}"
    );

    // --from an endpoint that does not exist, and --from wire.
    let err = rig
        .open::<ReplayStart>(&Request::Replay(ReplayRequest {
            network: "n1".into(),
            from: Some("c9".into()),
            verbose: false,
        }))
        .unwrap_err();
    assert!(err.to_string().contains("has no endpoint \"c9\""), "{err}");
}
