//! `uvlan stats [NETWORK...] [--format json]`: the dataplane's counters.

use clap::Args;

use crate::api::{self, Request, StatsReport};

use super::{socket, Failure};

/// `uvlan stats`.
#[derive(Args, Debug)]
pub struct StatsArgs {
    /// Networks (names or IDs); default: all.
    pub networks: Vec<String>,
    /// `json`: the whole report as one JSON object (for scripts).
    #[arg(long, value_name = "FORMAT")]
    pub format: Option<String>,
}

/// Columns padded to their widest cell plus three spaces, as docker's tables.
fn table(rows: &[Vec<String>]) -> String {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
                + 3
        })
        .collect();
    let mut out = String::new();
    for r in rows {
        let last = r.len().saturating_sub(1);
        for (c, cell) in r.iter().enumerate() {
            if c == last {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<w$}", w = widths[c]));
            }
        }
        out.push('\n');
    }
    out
}

/// The report as tables: endpoints, wires (each parent once, with the networks sharing it),
/// drop reasons.
pub fn render(r: &StatsReport) -> String {
    let mut out = String::new();
    let mut eps = vec![[
        "NETWORK",
        "ENDPOINT",
        "SENT",
        "SENT BYTES",
        "RECEIVED",
        "RECEIVED BYTES",
        "DROPPED",
    ]
    .map(String::from)
    .to_vec()];
    for n in &r.networks {
        for e in &n.endpoints {
            eps.push(vec![
                n.name.clone(),
                e.name.clone(),
                e.sent_frames.to_string(),
                e.sent_bytes.to_string(),
                e.received_frames.to_string(),
                e.received_bytes.to_string(),
                e.dropped.to_string(),
            ]);
        }
    }
    out.push_str(&table(&eps));
    let mut fast = vec![[
        "NETWORK",
        "ENDPOINT",
        "SENT VIA CACHE",
        "SENT BYTES",
        "RECEIVED VIA CACHE",
        "RECEIVED BYTES",
    ]
    .map(String::from)
    .to_vec()];
    for n in &r.networks {
        for e in &n.endpoints {
            if e.fast_sent_frames + e.fast_received_frames > 0 {
                fast.push(vec![
                    n.name.clone(),
                    e.name.clone(),
                    e.fast_sent_frames.to_string(),
                    e.fast_sent_bytes.to_string(),
                    e.fast_received_frames.to_string(),
                    e.fast_received_bytes.to_string(),
                ]);
            }
        }
    }
    if fast.len() > 1 {
        out.push_str("\nfast path (kernel cache of the engine's decisions):\n");
        out.push_str(&table(&fast));
    }
    let mut why = vec![["NETWORK", "ENDPOINT", "DROPPED WHERE", "FRAMES"]
        .map(String::from)
        .to_vec()];
    for n in &r.networks {
        for e in &n.endpoints {
            let mut row = |what: String, v: u64| {
                if v > 0 {
                    why.push(vec![n.name.clone(), e.name.clone(), what, v.to_string()]);
                }
            };
            row(
                "tap queue (the TAP device's own drops)".into(),
                e.tap_dropped,
            );
            for (reason, v) in &e.engine_drops {
                row(format!("engine: {reason}"), *v);
            }
            row(
                "  of which by its TAP's prefilter, unread".into(),
                e.prefiltered,
            );
            row(
                "undelivered (its TAP refused the write)".into(),
                e.undelivered,
            );
        }
    }
    if why.len() > 1 {
        out.push('\n');
        out.push_str(&table(&why));
    }
    let mut storm = vec![["NETWORK", "ENDPOINT", "PAUSED AS A FLOOD"]
        .map(String::from)
        .to_vec()];
    for n in &r.networks {
        for e in n.endpoints.iter().filter(|e| e.flood_pauses > 0) {
            storm.push(vec![
                n.name.clone(),
                e.name.clone(),
                format!("{} time(s)", e.flood_pauses),
            ]);
        }
    }
    if storm.len() > 1 {
        out.push_str(
            "\nstorm control (reads paused while an endpoint floods; what did not fit its TAP \
             queue meanwhile is in its tap queue drops; uvlan daemon --storm-share):\n",
        );
        out.push_str(&table(&storm));
    }
    let mut wires = vec![[
        "PARENT",
        "NETWORKS",
        "FROM WIRE",
        "FROM WIRE BYTES",
        "TO WIRE",
        "TO WIRE BYTES",
        "DROPPED",
        "GSO TO KERNEL",
        "GSO SEGMENTED",
        "TO HOST",
        "MODE",
    ]
    .map(String::from)
    .to_vec()];
    for w in &r.wires {
        wires.push(vec![
            w.parent.clone(),
            w.networks.join(","),
            w.received_frames.to_string(),
            w.received_bytes.to_string(),
            w.sent_frames.to_string(),
            w.sent_bytes.to_string(),
            w.dropped.to_string(),
            w.gso_to_kernel.to_string(),
            w.gso_segmented.to_string(),
            w.to_host_frames.to_string(),
            w.mode.clone(),
        ]);
    }
    if wires.len() > 1 {
        out.push('\n');
        out.push_str(&table(&wires));
    }
    if let Some(d) = &r.dataplane {
        out.push('\n');
        out.push_str(&format!("dataplane: {}\n", d.io));
        for (i, w) in d.workers.iter().enumerate() {
            let per = |n: u64| {
                if w.frames_in == 0 {
                    "-".to_string()
                } else {
                    format!("{:.3}", n as f64 / w.frames_in as f64)
                }
            };
            let mean = if w.batches == 0 {
                0.0
            } else {
                w.batch_frames as f64 / w.batches as f64
            };
            out.push_str(&format!(
                "worker {i}: {} frames in, {} out; {} wake-ups, {} turns, {} system calls \
                 ({} per frame in); mean batch {mean:.1}\n",
                w.frames_in,
                w.frames_out,
                w.wakeups,
                w.turns,
                w.syscalls,
                per(w.syscalls),
            ));
        }
        out.push_str(&format!("TAP prefilters: {} endpoint(s)\n", d.tap_filters));
        if let Some(e) = &d.tap_filter_error {
            out.push_str(&format!("TAP prefilter error: {e}\n"));
        }
    }
    out.push('\n');
    if r.drops.is_empty() && r.io_drops.is_empty() {
        out.push_str("no frame dropped\n");
    } else {
        let mut d = vec![vec![
            "DROP REASON (all networks)".to_string(),
            "FRAMES".to_string(),
        ]];
        for (k, v) in r.drops.iter().chain(r.io_drops.iter()) {
            d.push(vec![k.clone(), v.to_string()]);
        }
        out.push_str(&table(&d));
    }
    out
}

/// Runs `uvlan stats`.
pub fn stats(a: StatsArgs) -> Result<i32, Failure> {
    let report: StatsReport = api::call_typed(
        &socket(),
        &Request::Stats {
            networks: a.networks,
        },
    )?;
    match a.format.as_deref() {
        Some("json") => {
            let s = serde_json::to_string(&report)
                .map_err(|e| Failure::msg(format!("cannot print the report: {e}")))?;
            println!("{s}");
        }
        Some("table") | None => print!("{}", render(&report)),
        Some(other) => {
            return Err(Failure::msg(format!(
                "unknown --format {other:?}: use json (or table)"
            )))
        }
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{EndpointStats, NetworkStats, WireStats};

    #[test]
    fn tables_list_endpoints_wires_once_and_drop_reasons() {
        let mut r = StatsReport::default();
        assert!(render(&r).ends_with("no frame dropped\n"));
        for (net, ep) in [("net1", "c1"), ("net2", "c2")] {
            r.networks.push(NetworkStats {
                name: net.into(),
                endpoints: vec![EndpointStats {
                    name: ep.into(),
                    sent_frames: 3,
                    sent_bytes: 300,
                    received_frames: 2,
                    received_bytes: 200,
                    dropped: 1,
                    ..EndpointStats::default()
                }],
                wire: Some("eth0".into()),
            });
        }
        r.wires.push(WireStats {
            parent: "eth0".into(),
            networks: vec!["net1".into(), "net2".into()],
            mode: "af_xdp".into(),
            sent_frames: 7,
            ..WireStats::default()
        });
        r.drops.insert("l3_group_dst".into(), 4);
        let t = render(&r);
        let lines: Vec<&str> = t.lines().collect();
        assert!(lines[0].starts_with("NETWORK   ENDPOINT   SENT   "), "{t}");
        assert!(
            lines[1].starts_with("net1      c1         3      300"),
            "{t}"
        );
        let wire_rows: Vec<&&str> = lines.iter().filter(|l| l.starts_with("eth0")).collect();
        assert_eq!(wire_rows.len(), 1, "one row per parent: {t}");
        assert!(wire_rows[0].contains("net1,net2"), "{t}");
        assert!(wire_rows[0].ends_with("af_xdp"), "{t}");
        assert!(t.lines().last().unwrap().starts_with("l3_group_dst"), "{t}");
        // JSON: networks name their wire; the wire's counters appear once.
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["networks"][1]["wire"], "eth0");
        assert_eq!(v["wires"].as_array().unwrap().len(), 1);
        assert_eq!(v["wires"][0]["sent_frames"], 7);
        assert!(!t.contains("dataplane:"), "{t}");
        r.dataplane = Some(crate::api::LoopStats {
            io: "io_uring (…), 1 worker".into(),
            iterations: 12,
            commands: 3,
            workers: vec![crate::api::WorkerStats {
                frames_in: 1000,
                frames_out: 990,
                syscalls: 50,
                batches: 10,
                batch_frames: 1000,
                ..Default::default()
            }],
            tap_filters: 2,
            tap_filter_error: None,
        });
        let t = render(&r);
        assert!(t.contains("dataplane: io_uring (…), 1 worker\n"), "{t}");
        assert!(t.contains("worker 0: 1000 frames in, 990 out;"), "{t}");
        assert!(t.contains("TAP prefilters: 2 endpoint(s)\n"), "{t}");
        assert!(
            t.contains("50 system calls (0.050 per frame in); mean batch 100.0"),
            "{t}"
        );
        assert!(t.lines().last().unwrap().starts_with("l3_group_dst"), "{t}");
        // Storm control: only endpoints that were paused are listed.
        assert!(!t.contains("storm control"), "{t}");
        r.networks[1].endpoints[0].flood_pauses = 5;
        let t = render(&r);
        assert!(t.contains("\nstorm control (reads paused"), "{t}");
        let rows: Vec<&str> = t.lines().filter(|l| l.contains("time(s)")).collect();
        assert_eq!(rows.len(), 1, "{t}");
        assert!(rows[0].starts_with("net2      c2         5 time(s)"), "{t}");
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["networks"][1]["endpoints"][0]["flood_pauses"], 5);
    }
}
