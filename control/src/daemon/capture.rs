//! `uvlan capture` and `uvlan trace --pcap`: the daemon's two streaming requests.
//!
//! **Capture.** The request names a network, some of its endpoints (none: all), whether
//! its wire and its drops are wanted. The daemon turns that into a
//! [`CaptureFilter`] (engine ports, `(parent, VID)` of the wire), asks the dataplane to
//! record ([`DataplaneApi::start_capture`](super::dp::DataplaneApi::start_capture)), answers
//! with the interfaces, and writes pcapng on the connection: one interface per endpoint
//! (`if_name` = the endpoint's name, as `network connect`/`run` took it) and one for the
//! wire (`wire PARENT` or `wire PARENT.VID`), one enhanced packet block per frame with its
//! direction and the engine's decision as its comment, and at the end one statistics block
//! per interface (frames seen, records lost). The capture ends after `count` frames, when
//! the client shuts its side down or closes (a thread waits for that in a blocking read:
//! nothing wakes periodically), or when the dataplane lets it go. At most
//! [`MAX_CAPTURES`] run at once (each holds two buffers of a few MiB).
//!
//! **Replay.** Each frame the client sends is decided by the live engine through
//! [`DataplaneApi::trace`](super::dp::DataplaneApi::trace) (the same decision, next-hop cache
//! and resolver as the datapath; nothing is delivered, no counter moves), and answered with
//! its verdict. Where a frame enters:
//! - `--from wire`: from the network's parent (`Ingress::Wire`); `--from ENDPOINT`: sent by
//!   that endpoint (`Ingress::Port`), for every frame;
//! - otherwise per frame: a frame marked outbound (pcapng `epb_flags`: uvlan or the host
//!   *sent* it there) is an output, not an input, and is skipped; a frame whose capture
//!   interface is named like an endpoint of the network (what `uvlan capture` writes) is sent
//!   by that endpoint; any other frame (another interface name, `wire ...`, or classic pcap,
//!   which names no interface) comes from the wire, and is skipped when the network has
//!   none.

use std::collections::HashMap;
use std::io::{self, BufRead, BufWriter};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use uvlan_dataplane::capture::{
    CaptureFilter, CaptureReader, InterfaceSpec, PacketSpec, PcapngWriter, StatisticsSpec,
    WireFilter,
};
use uvlan_dataplane::fwd::observe::Stage;
use uvlan_dataplane::fwd::{Ingress, ParentId, PortId};

use crate::api::{
    CaptureInterface, CaptureRequest, CaptureStart, ReplayFrame, ReplayRequest, ReplayStart,
    ReplayVerdict, Response, StreamConn,
};
use crate::store::EndpointRecord;

use super::model::{Daemon, Net};

/// Captures running at once, at most.
pub const MAX_CAPTURES: usize = 8;

static ACTIVE: AtomicUsize = AtomicUsize::new(0);

/// Holds one of the [`MAX_CAPTURES`] places.
struct Slot;

impl Slot {
    fn take() -> Result<Slot, String> {
        let prev = ACTIVE.fetch_add(1, Ordering::SeqCst);
        if prev >= MAX_CAPTURES {
            ACTIVE.fetch_sub(1, Ordering::SeqCst);
            return Err(format!(
                "{MAX_CAPTURES} captures are running already: stop one first"
            ));
        }
        Ok(Slot)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        ACTIVE.fetch_sub(1, Ordering::SeqCst);
    }
}

/// What a capture records and how its interfaces are named.
#[derive(Debug, Clone)]
pub struct CapturePlan {
    /// The network's name.
    pub network: String,
    /// For the dataplane.
    pub filter: CaptureFilter,
    /// pcapng interfaces, in the filter's order (ports, then wires).
    pub interfaces: Vec<CaptureInterface>,
    /// The endpoint name of each port of the network (for the comments).
    pub names: HashMap<PortId, String>,
    /// Stop after this many frames.
    pub count: Option<u64>,
}

/// The wire of a network: its parent in the engine, interface name and VID.
fn wire_of(net: &Net) -> Option<(ParentId, String, Option<u16>)> {
    let rt = net.rt.as_ref()?;
    rt.wire.as_ref()?;
    let parent = rt.parent?;
    let p = net.rec.driver_config.parent.as_ref()?;
    Some((parent, p.ifname.clone(), p.vid))
}

fn wire_name(ifname: &str, vid: Option<u16>) -> String {
    match vid {
        Some(v) => format!("wire {ifname}.{v}"),
        None => format!("wire {ifname}"),
    }
}

/// The live endpoints of a network with their ports, in connection order.
fn live_ports(net: &Net) -> Vec<(&EndpointRecord, PortId)> {
    net.rec
        .endpoints
        .iter()
        .filter_map(|e| net.eps.get(&e.id).map(|rt| (e, rt.port)))
        .collect()
}

/// An endpoint by name, or by a unique endpoint ID prefix.
fn find_endpoint<'a>(
    net: &str,
    ports: &[(&'a EndpointRecord, PortId)],
    key: &str,
) -> Result<(&'a EndpointRecord, PortId), String> {
    if let Some(hit) = ports.iter().find(|(e, _)| e.name == key) {
        return Ok(*hit);
    }
    let hits: Vec<_> = ports
        .iter()
        .filter(|(e, _)| !key.is_empty() && e.id.starts_with(key))
        .collect();
    match hits.as_slice() {
        [one] => Ok(**one),
        _ => Err(format!(
            "network {net} has no endpoint {key:?} (use the name shown by \"uvlan network \
             inspect\")"
        )),
    }
}

fn endpoint_description(net: &Net, e: &EndpointRecord) -> String {
    let addrs: Vec<String> = e.addrs.addrs().map(|a| a.to_string()).collect();
    let mode = match (
        &net.rec.driver_config.ipvlan_mode,
        &net.rec.driver_config.ipvlan_flag,
        &net.rec.driver_config.macvlan_mode,
    ) {
        (Some(m), Some(f), _) => format!("{m} {f}"),
        (_, _, Some(m)) => m.clone(),
        _ => String::new(),
    };
    format!(
        "uvlan network {} ({} {mode}): endpoint {} ({} in its namespace, MAC {}, {})",
        net.rec.name,
        net.rec.driver,
        e.name,
        e.ifname,
        e.mac,
        if addrs.is_empty() {
            "no address".to_string()
        } else {
            addrs.join(" ")
        }
    )
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// How a capture stream ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamSummary {
    /// Frames written.
    pub written: u64,
    /// Records lost, all interfaces.
    pub lost: u64,
}

/// Writes the capture's pcapng stream on `stream` until `plan.count` frames were written,
/// the client shuts its side of `client` down (or closes), or the dataplane lets the
/// capture go; then the statistics blocks, and closes the connection.
pub fn stream_capture(
    plan: &CapturePlan,
    mut reader: CaptureReader,
    mut client: impl BufRead + Send + 'static,
    stream: UnixStream,
) -> io::Result<StreamSummary> {
    let start = now_ns();
    let stop = reader.stopper();
    // The client sends nothing after its request: a read returning (EOF, an error) means
    // it hung up or asked to stop. Bytes it sends anyway are discarded.
    let watcher = std::thread::Builder::new()
        .name("uvlan-capture".into())
        .spawn(move || {
            let mut sink = [0u8; 512];
            while matches!(client.read(&mut sink), Ok(n) if n > 0) {}
            stop.stop();
        })?;
    let result = write_capture(plan, &mut reader, &stream, start);
    // The capture is over for the dataplane before the client sees the end of the stream.
    drop(reader);
    // Ends the watcher's read whatever happened.
    let _ = stream.shutdown(std::net::Shutdown::Both);
    let _ = watcher.join();
    result
}

fn write_capture(
    plan: &CapturePlan,
    reader: &mut CaptureReader,
    stream: &UnixStream,
    start: u64,
) -> io::Result<StreamSummary> {
    let app = format!("uvlan capture (network {})", plan.network);
    let mut w = PcapngWriter::new(BufWriter::with_capacity(1 << 16, stream), &app)?;
    for i in &plan.interfaces {
        w.interface(&InterfaceSpec {
            name: &i.name,
            description: &i.description,
            snaplen: plan.filter.snaplen,
        })?;
    }
    w.flush()?;
    let name = |p: PortId| plan.names.get(&p).cloned();
    let mut written = 0u64;
    let limit = plan.count.unwrap_or(u64::MAX);
    'outer: while written < limit {
        let batch = reader.wait();
        for r in batch.records() {
            let comment = r.decision.comment(&name);
            w.packet(&PacketSpec {
                interface: r.interface,
                ts_ns: r.ts_ns,
                data: r.data,
                orig_len: r.orig_len,
                direction: Some(r.direction),
                comment: Some(&comment),
            })?;
            written += 1;
            if written >= limit {
                break 'outer;
            }
        }
        w.flush()?;
        if batch.end.is_some() {
            break;
        }
    }
    let counts = reader.counts();
    let end = now_ns();
    let mut lost_total = 0;
    for (i, (captured, lost)) in counts.captured.iter().zip(&counts.lost).enumerate() {
        lost_total += lost;
        let comment = (*lost > 0).then(|| {
            format!(
                "{lost} records lost: the capture's reader was too slow (frames were forwarded)"
            )
        });
        w.statistics(&StatisticsSpec {
            interface: i as u32,
            start_ns: start,
            end_ns: end,
            received: captured + lost,
            dropped: *lost,
            comment: comment.as_deref(),
        })?;
    }
    w.flush()?;
    Ok(StreamSummary {
        written,
        lost: lost_total,
    })
}

/// What a replay needs to know about the network.
struct ReplayPlan {
    network: String,
    ports: Vec<(String, PortId)>,
    wire: Option<(ParentId, String)>,
    from: Option<(Ingress, String)>,
    verbose: bool,
}

fn skipped(index: u64, why: String) -> ReplayVerdict {
    ReplayVerdict {
        index,
        verdict: why,
        skipped: true,
        ..ReplayVerdict::default()
    }
}

impl Daemon {
    /// Resolves a capture request into a plan.
    pub(super) fn capture_plan(&self, req: &CaptureRequest) -> Result<CapturePlan, String> {
        let st = self.lock();
        let i = Self::find(&st, &req.network)?;
        let net = &st.nets[i];
        if net.rt.is_none() {
            return Err(format!(
                "network {} is down: {}",
                net.rec.name,
                net.problem.clone().unwrap_or_default()
            ));
        }
        let live = live_ports(net);
        let picked: Vec<(&EndpointRecord, PortId)> = if req.endpoints.is_empty() {
            live.clone()
        } else {
            let mut v = Vec::new();
            for key in &req.endpoints {
                let hit = find_endpoint(&net.rec.name, &live, key)?;
                if !v.iter().any(|(_, p)| *p == hit.1) {
                    v.push(hit);
                }
            }
            v
        };
        let mut interfaces: Vec<CaptureInterface> = picked
            .iter()
            .map(|(e, _)| CaptureInterface {
                name: e.name.clone(),
                description: endpoint_description(net, e),
            })
            .collect();
        let mut wires = Vec::new();
        if req.wire {
            let Some((parent, ifname, vid)) = wire_of(net) else {
                return Err(format!(
                    "network {} has no wire (no parent, or --internal): capture its \
                     endpoints only",
                    net.rec.name
                ));
            };
            interfaces.push(CaptureInterface {
                name: wire_name(&ifname, vid),
                description: format!(
                    "uvlan network {}: the wire on {ifname}{} (frames received from it and \
                     sent to it; this network's only)",
                    net.rec.name,
                    vid.map(|v| format!(", 802.1Q VID {v}")).unwrap_or_default()
                ),
            });
            wires.push(WireFilter { parent, vid });
        }
        if interfaces.is_empty() {
            return Err(format!(
                "network {} has no endpoint to capture: connect one, or add --wire",
                net.rec.name
            ));
        }
        let mut filter = CaptureFilter::new(picked.iter().map(|(_, p)| *p).collect(), wires);
        filter.drops = req.drops;
        if let Some(s) = req.snaplen {
            if s == 0 {
                return Err("the snap length must be at least 1 byte".to_string());
            }
            filter.snaplen = s.min(uvlan_dataplane::capture::tap::DEFAULT_SNAPLEN);
        }
        Ok(CapturePlan {
            network: net.rec.name.clone(),
            filter,
            interfaces,
            names: live.iter().map(|(e, p)| (*p, e.name.clone())).collect(),
            count: req.count,
        })
    }

    /// Serves `uvlan capture` (see the module docs).
    pub(super) fn serve_capture(&self, req: &CaptureRequest, mut conn: StreamConn) {
        let started = Slot::take().and_then(|slot| {
            let plan = self.capture_plan(req)?;
            let reader = self
                .dp
                .start_capture(plan.filter.clone())
                .map_err(|e| e.to_string())?;
            Ok((slot, plan, reader))
        });
        let (_slot, plan, reader) = match started {
            Ok(s) => s,
            Err(message) => {
                let _ = conn.answer(&Response::Error {
                    message: crate::api::one_line(&message),
                });
                return;
            }
        };
        let start = CaptureStart {
            network: plan.network.clone(),
            interfaces: plan.interfaces.clone(),
        };
        let answer = match serde_json::to_value(&start) {
            Ok(result) => Response::Ok { result },
            Err(e) => Response::Error {
                message: format!("internal error encoding the answer: {e}"),
            },
        };
        if conn.answer(&answer).is_err() || matches!(answer, Response::Error { .. }) {
            return;
        }
        let (client, stream) = conn.into_parts();
        match stream_capture(&plan, reader, client, stream) {
            Ok(s) if s.lost > 0 => (self.log)(&format!(
                "capture of network {}: {} frames written, {} records lost (slow reader)",
                plan.network, s.written, s.lost
            )),
            Ok(_) => {}
            // The client went away while frames were being written: nothing to report.
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {}
            Err(e) => (self.log)(&format!("capture of network {}: {e}", plan.network)),
        }
    }

    fn replay_plan(&self, req: &ReplayRequest) -> Result<ReplayPlan, String> {
        let st = self.lock();
        let i = Self::find(&st, &req.network)?;
        let net = &st.nets[i];
        if net.rt.is_none() {
            return Err(format!(
                "network {} is down: {}",
                net.rec.name,
                net.problem.clone().unwrap_or_default()
            ));
        }
        let live = live_ports(net);
        let wire = wire_of(net).map(|(p, ifname, vid)| (p, wire_name(&ifname, vid)));
        let from = match req.from.as_deref() {
            None => None,
            Some("wire") => match &wire {
                Some((p, label)) => Some((Ingress::Wire(*p), label.clone())),
                None => {
                    return Err(format!(
                        "network {} has no wire (no parent, or --internal), so no frame can \
                         come from it: use --from ENDPOINT",
                        net.rec.name
                    ))
                }
            },
            Some(key) => {
                let (e, p) = find_endpoint(&net.rec.name, &live, key)?;
                Some((Ingress::Port(p), e.name.clone()))
            }
        };
        Ok(ReplayPlan {
            network: net.rec.name.clone(),
            ports: live.iter().map(|(e, p)| (e.name.clone(), *p)).collect(),
            wire,
            from,
            verbose: req.verbose,
        })
    }

    fn replay_one(&self, plan: &ReplayPlan, f: &ReplayFrame) -> ReplayVerdict {
        let Some(frame) = crate::ids::unhex(&f.frame) else {
            return skipped(f.index, "not replayed: the frame is not hex".to_string());
        };
        let (ingress, label) = match &plan.from {
            Some(x) => x.clone(),
            None if f.direction.as_deref() == Some("out") => {
                return skipped(
                    f.index,
                    "not replayed: outbound where it was captured (an output, not an input)"
                        .to_string(),
                )
            }
            None => {
                let ep = f
                    .interface
                    .as_deref()
                    .and_then(|n| plan.ports.iter().find(|(name, _)| name == n));
                match (ep, &plan.wire) {
                    (Some((name, p)), _) => (Ingress::Port(*p), name.clone()),
                    (None, Some((p, label))) => (Ingress::Wire(*p), label.clone()),
                    (None, None) => {
                        return skipped(
                            f.index,
                            format!(
                                "not replayed: its interface ({}) is no endpoint of network \
                                 {}, which has no wire to receive it: use --from ENDPOINT",
                                f.interface.as_deref().unwrap_or("unnamed"),
                                plan.network
                            ),
                        )
                    }
                }
            }
        };
        match self.dp.trace(frame, ingress) {
            Ok(t) => {
                let decider = t
                    .steps
                    .iter()
                    .find(|s| matches!(s.stage, Stage::Output | Stage::Drop))
                    .map(|s| s.kernel.to_string())
                    .unwrap_or_default();
                ReplayVerdict {
                    index: f.index,
                    ingress: label,
                    verdict: t.summary.clone(),
                    drop: t.verdict.drop_reason().map(|r| r.as_str().to_string()),
                    kernel: decider,
                    skipped: false,
                    trace: plan.verbose.then(|| t.to_string()),
                }
            }
            Err(e) => skipped(f.index, format!("not replayed: {e}")),
        }
    }

    /// Serves `uvlan trace --pcap` (see the module docs).
    pub(super) fn serve_replay(&self, req: &ReplayRequest, mut conn: StreamConn) {
        let plan = match self.replay_plan(req) {
            Ok(p) => p,
            Err(message) => {
                let _ = conn.answer(&Response::Error {
                    message: crate::api::one_line(&message),
                });
                return;
            }
        };
        let start = ReplayStart {
            network: plan.network.clone(),
            endpoints: plan.ports.iter().map(|(n, _)| n.clone()).collect(),
            wire: plan.wire.as_ref().map(|(_, l)| l.clone()),
        };
        let answer = match serde_json::to_value(&start) {
            Ok(result) => Response::Ok { result },
            Err(e) => Response::Error {
                message: format!("internal error encoding the answer: {e}"),
            },
        };
        if conn.answer(&answer).is_err() {
            return;
        }
        loop {
            let (v, fatal) = match conn.read_line::<ReplayFrame>() {
                Ok(Some(f)) => (self.replay_one(&plan, &f), false),
                Ok(None) => return,
                Err(e) => (
                    skipped(0, format!("not replayed: a malformed frame line: {e}")),
                    true,
                ),
            };
            if conn.write_line(&v).is_err() || fatal {
                return;
            }
        }
    }
}
