//! `uvlan daemon --metrics ADDR:PORT`: the daemon's counters as OpenMetrics (or the
//! Prometheus text format 0.0.4, for clients that do not ask for OpenMetrics), encoded with
//! the `prometheus-client` crate from the same [`StatsReport`] that
//! `uvlan stats` prints, and served on `/metrics` by a small HTTP server ([`http`]).
//!
//! Each scrape asks the daemon for a fresh report and encodes it through a
//! `prometheus_client` collector of constant metrics: the counters
//! live in the dataplane, not in this module. Names follow the Prometheus conventions:
//! `uvlan_` prefix, base units (bytes), `_total` on counters. The full list is
//! [`METRICS`] (and the table in `docs/README.md`, "Metrics").

mod batch;
pub mod http;

use std::fmt;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};

use uvlan_dataplane::fwd::DropReason;
use uvlan_dataplane::run::IoDrop;

use crate::api::StatsReport;

/// Every metric family: name (without `uvlan_` and `_total`), type, labels, help.
pub const METRICS: &[(&str, &str, &str, &str)] = &[
    ("networks", "gauge", "", "Networks."),
    (
        "endpoints",
        "gauge",
        "network",
        "Live endpoints of a network.",
    ),
    (
        "endpoint_tx_packets",
        "counter",
        "network, endpoint",
        "Frames the endpoint sent (a GSO super-frame counts once).",
    ),
    (
        "endpoint_tx_bytes",
        "counter",
        "network, endpoint",
        "Bytes the endpoint sent.",
    ),
    (
        "endpoint_rx_packets",
        "counter",
        "network, endpoint",
        "Frames delivered to the endpoint.",
    ),
    (
        "endpoint_rx_bytes",
        "counter",
        "network, endpoint",
        "Bytes delivered to the endpoint.",
    ),
    (
        "endpoint_dropped_packets",
        "counter",
        "network, endpoint",
        "Frames of the endpoint lost on the way, in or out: the sum of \
         uvlan_endpoint_drops_packets_total over its layers and reasons.",
    ),
    (
        "endpoint_drops_packets",
        "counter",
        "network, endpoint, layer, reason",
        "An endpoint's lost frames by where they were lost: layer=\"tap\" (the TAP device's \
         own drops, before uvlan read them or after it wrote them), layer=\"engine\" (frames \
         it sent that the engine dropped, by DropReason; non-zero reasons only), layer=\"io\" \
         (reason=\"undelivered\": frames for it uvlan could not write).",
    ),
    (
        "endpoint_fast_path_tx_packets",
        "counter",
        "network, endpoint",
        "Of the frames the endpoint sent, those the fast path's kernel cache forwarded.",
    ),
    (
        "endpoint_fast_path_tx_bytes",
        "counter",
        "network, endpoint",
        "Bytes of those frames.",
    ),
    (
        "endpoint_fast_path_rx_packets",
        "counter",
        "network, endpoint",
        "Of the frames delivered to the endpoint, those the fast path's kernel cache delivered.",
    ),
    (
        "endpoint_fast_path_rx_bytes",
        "counter",
        "network, endpoint",
        "Bytes of those frames.",
    ),
    (
        "endpoint_flood_pauses",
        "counter",
        "network, endpoint",
        "Times the endpoint's reads were paused because it flooded the dataplane with \
         broadcasts, multicasts or frames the engine drops (flood deferral and storm control, \
         uvlan daemon --storm-share).",
    ),
    (
        "wire_info",
        "gauge",
        "parent, mode",
        "A parent's wire and its backend (always 1).",
    ),
    (
        "wire_rx_packets",
        "counter",
        "parent",
        "Frames received from the wire.",
    ),
    (
        "wire_rx_bytes",
        "counter",
        "parent",
        "Bytes received from the wire.",
    ),
    (
        "wire_tx_packets",
        "counter",
        "parent",
        "Frames sent to the wire.",
    ),
    (
        "wire_tx_bytes",
        "counter",
        "parent",
        "Bytes sent to the wire.",
    ),
    (
        "wire_dropped_packets",
        "counter",
        "parent",
        "Frames the backend could not send, or the kernel dropped on receive.",
    ),
    (
        "wire_tx_gso_kernel_packets",
        "counter",
        "parent",
        "GSO super-frames handed to the kernel whole.",
    ),
    (
        "wire_tx_gso_segmented_packets",
        "counter",
        "parent",
        "GSO super-frames segmented in software.",
    ),
    (
        "wire_to_host_packets",
        "counter",
        "parent",
        "Frames injected into the host's own stack through the parent.",
    ),
    (
        "dropped_packets",
        "counter",
        "layer, reason",
        "Frames dropped, by the engine (layer=\"engine\", the DropReason uvlan trace names) or \
         by the I/O layer (layer=\"io\").",
    ),
    (
        "dataplane_loop_iterations",
        "counter",
        "",
        "Passes of the dataplane workers' loops, all workers together.",
    ),
    (
        "dataplane_commands",
        "counter",
        "",
        "Commands the dataplane ran (configuration changes and queries).",
    ),
    (
        "dataplane_wakeups",
        "counter",
        "worker",
        "Returns of a dataplane worker from a blocking wait.",
    ),
    (
        "dataplane_flood_pauses",
        "counter",
        "worker",
        "Times an endpoint's reads were paused for a millisecond because it flooded the \
         dataplane with frames to group addresses or frames the engine dropped.",
    ),
    (
        "dataplane_syscalls",
        "counter",
        "worker",
        "System calls a dataplane worker's loop made (per forwarded frame: divide by \
         dataplane_frames_in).",
    ),
    (
        "dataplane_frames_in",
        "counter",
        "worker",
        "Frames a dataplane worker received from TAPs and wires.",
    ),
    (
        "dataplane_frames_out",
        "counter",
        "worker",
        "Frames a dataplane worker wrote to TAPs or queued on wires.",
    ),
    (
        "dataplane_batches",
        "counter",
        "worker",
        "Receive batches of a dataplane worker (one per source and turn with frames).",
    ),
    (
        batch::NAME,
        "histogram",
        "worker",
        "Frames per receive batch of a dataplane worker (buckets 1, 2-3, 4-7, ..., 512-1023, \
         1024 and more).",
    ),
];

fn help(name: &str) -> &'static str {
    METRICS.iter().find(|m| m.0 == name).map_or("", |m| m.3)
}

/// The report as constant metrics, encoded when the registry is.
#[derive(Debug)]
struct Snapshot(StatsReport);

type Labels<'a> = Vec<(&'static str, &'a str)>;

fn family<M: EncodeMetric>(
    enc: &mut DescriptorEncoder,
    name: &str,
    unit: Option<&Unit>,
    kind: MetricType,
    rows: &[(Labels<'_>, M)],
) -> fmt::Result {
    let mut f = enc.encode_descriptor(name, help(name), unit, kind)?;
    for (labels, m) in rows {
        let lv = f.encode_family(labels)?;
        m.encode(lv)?;
    }
    Ok(())
}

impl Collector for Snapshot {
    fn encode(&self, mut enc: DescriptorEncoder) -> fmt::Result {
        let r = &self.0;
        let c = |v: u64| ConstCounter::new(v);
        let g = |v: i64| ConstGauge::new(v);
        let n = i64::try_from(r.networks.len()).unwrap_or(i64::MAX);
        family(
            &mut enc,
            "networks",
            None,
            MetricType::Gauge,
            &[(vec![], g(n))],
        )?;
        let eps: Vec<_> = r
            .networks
            .iter()
            .map(|net| {
                let k = i64::try_from(net.endpoints.len()).unwrap_or(i64::MAX);
                (vec![("network", net.name.as_str())], g(k))
            })
            .collect();
        family(&mut enc, "endpoints", None, MetricType::Gauge, &eps)?;
        type Pick = fn(&crate::api::EndpointStats) -> u64;
        let per_ep: [(&str, Option<Unit>, Pick); 10] = [
            ("endpoint_tx_packets", None, |e| e.sent_frames),
            ("endpoint_tx", Some(Unit::Bytes), |e| e.sent_bytes),
            ("endpoint_rx_packets", None, |e| e.received_frames),
            ("endpoint_rx", Some(Unit::Bytes), |e| e.received_bytes),
            ("endpoint_dropped_packets", None, |e| e.dropped),
            ("endpoint_fast_path_tx_packets", None, |e| {
                e.fast_sent_frames
            }),
            ("endpoint_fast_path_tx", Some(Unit::Bytes), |e| {
                e.fast_sent_bytes
            }),
            ("endpoint_fast_path_rx_packets", None, |e| {
                e.fast_received_frames
            }),
            ("endpoint_fast_path_rx", Some(Unit::Bytes), |e| {
                e.fast_received_bytes
            }),
            ("endpoint_flood_pauses", None, |e| e.flood_pauses),
        ];
        for (name, unit, pick) in per_ep {
            let rows: Vec<_> = r
                .networks
                .iter()
                .flat_map(|net| {
                    net.endpoints.iter().map(move |e| {
                        (
                            vec![
                                ("network", net.name.as_str()),
                                ("endpoint", e.name.as_str()),
                            ],
                            c(pick(e)),
                        )
                    })
                })
                .collect();
            family_named(&mut enc, name, unit.as_ref(), &rows)?;
        }
        let mut why: Vec<(Labels<'_>, ConstCounter<u64>)> = Vec::new();
        for net in &r.networks {
            for e in &net.endpoints {
                let who = [
                    ("network", net.name.as_str()),
                    ("endpoint", e.name.as_str()),
                ];
                let mut row = |layer: &'static str, reason: &'static str, v: u64| {
                    let mut l = who.to_vec();
                    l.extend([("layer", layer), ("reason", reason)]);
                    why.push((l, c(v)));
                };
                row("tap", "tap_queue", e.tap_dropped);
                for d in DropReason::ALL {
                    if let Some(v) = e.engine_drops.get(d.as_str()) {
                        row("engine", d.as_str(), *v);
                    }
                }
                row("io", "undelivered", e.undelivered);
            }
        }
        family(
            &mut enc,
            "endpoint_drops_packets",
            None,
            MetricType::Counter,
            &why,
        )?;
        let info: Vec<_> = r
            .wires
            .iter()
            .map(|w| {
                (
                    vec![("parent", w.parent.as_str()), ("mode", w.mode.as_str())],
                    g(1),
                )
            })
            .collect();
        family(&mut enc, "wire_info", None, MetricType::Gauge, &info)?;
        type PickW = fn(&crate::api::WireStats) -> u64;
        let per_wire: [(&str, Option<Unit>, PickW); 8] = [
            ("wire_rx_packets", None, |w| w.received_frames),
            ("wire_rx", Some(Unit::Bytes), |w| w.received_bytes),
            ("wire_tx_packets", None, |w| w.sent_frames),
            ("wire_tx", Some(Unit::Bytes), |w| w.sent_bytes),
            ("wire_dropped_packets", None, |w| w.dropped),
            ("wire_tx_gso_kernel_packets", None, |w| w.gso_to_kernel),
            ("wire_tx_gso_segmented_packets", None, |w| w.gso_segmented),
            ("wire_to_host_packets", None, |w| w.to_host_frames),
        ];
        for (name, unit, pick) in per_wire {
            let rows: Vec<_> = r
                .wires
                .iter()
                .map(|w| (vec![("parent", w.parent.as_str())], c(pick(w))))
                .collect();
            family_named(&mut enc, name, unit.as_ref(), &rows)?;
        }
        // Every reason, zeros included, so rates start from zero. INTEGRATION (loop
        // rewrite): per-network drop counters add a `network` label here.
        let mut drops: Vec<_> = DropReason::ALL
            .iter()
            .map(|d| {
                let v = r.drops.get(d.as_str()).copied().unwrap_or(0);
                (vec![("layer", "engine"), ("reason", d.as_str())], c(v))
            })
            .collect();
        drops.extend(IoDrop::ALL.iter().map(|d| {
            let v = r.io_drops.get(d.as_str()).copied().unwrap_or(0);
            (vec![("layer", "io"), ("reason", d.as_str())], c(v))
        }));
        family(
            &mut enc,
            "dropped_packets",
            None,
            MetricType::Counter,
            &drops,
        )?;
        let lp = r.dataplane.clone().unwrap_or_default();
        family(
            &mut enc,
            "dataplane_loop_iterations",
            None,
            MetricType::Counter,
            &[(vec![], c(lp.iterations))],
        )?;
        family(
            &mut enc,
            "dataplane_commands",
            None,
            MetricType::Counter,
            &[(vec![], c(lp.commands))],
        )?;
        let ids: Vec<String> = (0..lp.workers.len()).map(|i| i.to_string()).collect();
        let per_worker =
            |f: fn(&crate::api::WorkerStats) -> u64| -> Vec<(Labels<'_>, ConstCounter)> {
                lp.workers
                    .iter()
                    .zip(&ids)
                    .map(|(w, id)| (vec![("worker", id.as_str())], c(f(w))))
                    .collect()
            };
        for (name, f) in [
            (
                "dataplane_wakeups",
                (|w| w.wakeups) as fn(&crate::api::WorkerStats) -> u64,
            ),
            ("dataplane_syscalls", |w| w.syscalls),
            ("dataplane_frames_in", |w| w.frames_in),
            ("dataplane_frames_out", |w| w.frames_out),
            ("dataplane_batches", |w| w.batches),
            ("dataplane_flood_pauses", |w| w.flood_pauses),
        ] {
            family(&mut enc, name, None, MetricType::Counter, &per_worker(f))?;
        }
        batch::encode(&mut enc, help(batch::NAME), &lp.workers)?;
        Ok(())
    }
}

/// A counter family whose help is found under its full name (`endpoint_tx` + bytes is
/// `endpoint_tx_bytes`).
fn family_named(
    enc: &mut DescriptorEncoder,
    name: &str,
    unit: Option<&Unit>,
    rows: &[(Labels<'_>, ConstCounter)],
) -> fmt::Result {
    let full = match unit {
        Some(Unit::Bytes) => format!("{name}_bytes"),
        _ => name.to_string(),
    };
    let mut f = enc.encode_descriptor(name, help(&full), unit, MetricType::Counter)?;
    for (labels, m) in rows {
        let lv = f.encode_family(labels)?;
        m.encode(lv)?;
    }
    Ok(())
}

fn registry(report: &StatsReport) -> Registry {
    let mut reg = Registry::with_prefix("uvlan");
    reg.register_collector(Box::new(Snapshot(report.clone())));
    reg
}

/// The report in the OpenMetrics text format (ends with `# EOF`).
pub fn openmetrics(report: &StatsReport) -> String {
    let mut out = String::new();
    // Writing to a String cannot fail.
    if prometheus_client::encoding::text::encode(&mut out, &registry(report)).is_err() {
        out.clear();
    }
    out
}

/// The report in the Prometheus text format 0.0.4, for scrapers and tools that do not take
/// OpenMetrics (the crate's own encoder: counters' `# HELP`/`# TYPE` name their `_total`
/// samples, no `# UNIT`/`# EOF`).
pub fn prometheus_text(report: &StatsReport) -> String {
    let mut out = String::new();
    if prometheus_client::encoding::prometheus_text::encode(&mut out, &registry(report)).is_err() {
        out.clear();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{EndpointStats, NetworkStats, WireStats};

    pub(crate) fn sample() -> StatsReport {
        let mut r = StatsReport::default();
        r.networks.push(NetworkStats {
            name: "n1".into(),
            endpoints: vec![EndpointStats {
                name: "c\"1".into(),
                sent_frames: 3,
                sent_bytes: 300,
                received_frames: 2,
                received_bytes: 200,
                dropped: 1 + 6 + 2,
                tap_dropped: 1,
                engine_drops: [("mtu_exceeded".to_string(), 6)].into(),
                undelivered: 2,
                ..EndpointStats::default()
            }],
            wire: Some("eth0".into()),
        });
        r.wires.push(WireStats {
            parent: "eth0".into(),
            networks: vec!["n1".into()],
            mode: "af_xdp".into(),
            received_frames: 9,
            ..WireStats::default()
        });
        r.drops.insert("private_flag".into(), 4);
        r.io_drops.insert("tap_full".into(), 5);
        r.dataplane = Some(crate::api::LoopStats {
            iterations: 77,
            workers: vec![crate::api::WorkerStats {
                syscalls: 12,
                ..Default::default()
            }],
            ..Default::default()
        });
        r
    }

    #[test]
    fn openmetrics_names_and_values() {
        let t = openmetrics(&sample());
        for want in [
            "# TYPE uvlan_networks gauge\nuvlan_networks 1\n",
            "uvlan_endpoints{network=\"n1\"} 1\n",
            "# TYPE uvlan_endpoint_tx_packets counter\n",
            "uvlan_endpoint_tx_packets_total{network=\"n1\",endpoint=\"c\\\"1\"} 3\n",
            "# UNIT uvlan_endpoint_rx_bytes bytes\n",
            "uvlan_endpoint_rx_bytes_total{network=\"n1\",endpoint=\"c\\\"1\"} 200\n",
            "uvlan_wire_info{parent=\"eth0\",mode=\"af_xdp\"} 1\n",
            "uvlan_wire_rx_packets_total{parent=\"eth0\"} 9\n",
            "uvlan_dropped_packets_total{layer=\"engine\",reason=\"private_flag\"} 4\n",
            "uvlan_dropped_packets_total{layer=\"engine\",reason=\"pause\"} 0\n",
            "uvlan_dropped_packets_total{layer=\"io\",reason=\"tap_full\"} 5\n",
            "uvlan_dataplane_loop_iterations_total 77\n",
            "uvlan_endpoint_dropped_packets_total{network=\"n1\",endpoint=\"c\\\"1\"} 9\n",
            "uvlan_endpoint_drops_packets_total{network=\"n1\",endpoint=\"c\\\"1\",layer=\"tap\",reason=\"tap_queue\"} 1\n",
            "uvlan_endpoint_drops_packets_total{network=\"n1\",endpoint=\"c\\\"1\",layer=\"engine\",reason=\"mtu_exceeded\"} 6\n",
            "uvlan_endpoint_drops_packets_total{network=\"n1\",endpoint=\"c\\\"1\",layer=\"io\",reason=\"undelivered\"} 2\n",
            "uvlan_dataplane_syscalls_total{worker=\"0\"} 12\n",
        ] {
            assert!(t.contains(want), "missing {want:?} in\n{t}");
        }
        assert!(t.ends_with("# EOF\n"), "{t}");
        // Every family in the table, and only those.
        let families: Vec<&str> = t
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE uvlan_"))
            .map(|l| l.split(' ').next().unwrap())
            .collect();
        let mut table: Vec<String> = METRICS.iter().map(|m| m.0.to_string()).collect();
        let mut seen: Vec<String> = families
            .iter()
            .map(|f| {
                if t.contains(&format!("# UNIT uvlan_{f} bytes")) {
                    format!("{f}_bytes").replace("_bytes_bytes", "_bytes")
                } else {
                    f.to_string()
                }
            })
            .collect();
        table.sort();
        seen.sort();
        assert_eq!(seen, table);
        for m in METRICS {
            assert!(!m.3.is_empty());
        }
    }

    #[test]
    fn prometheus_text_names_counters_by_their_samples() {
        let t = prometheus_text(&sample());
        assert!(
            t.contains("# HELP uvlan_endpoint_rx_bytes_total Bytes delivered"),
            "{t}"
        );
        assert!(
            t.contains("# TYPE uvlan_endpoint_rx_bytes_total counter\n"),
            "{t}"
        );
        assert!(t.contains("# TYPE uvlan_networks gauge\n"), "{t}");
        assert!(!t.contains("# UNIT") && !t.contains("# EOF"), "{t}");
    }

    /// `promtool check metrics` (Debian package `prometheus`; scripts/deps.sh --test)
    /// accepts the exposition: names, help texts, types, units in the names.
    #[test]
    fn promtool_accepts_the_exposition() {
        promtool_check(&prometheus_text(&sample()));
    }

    /// Panics unless `promtool check metrics` accepts `text`.
    pub(super) fn promtool_check(text: &str) {
        use std::io::Write;
        let mut child = std::process::Command::new("promtool")
            .args(["check", "metrics"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("promtool is needed (scripts/deps.sh --test installs it): {e}")
            });
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "promtool: {}{}\n{text}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
