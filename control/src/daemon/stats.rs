//! `uvlan stats` and the daemon's `/metrics`: the dataplane's counters, per network and
//! endpoint, per wire (each parent once, with the networks sharing it), and the engine's
//! drop reasons (the same [`uvlan_dataplane::fwd::DropReason`] values `uvlan trace` names,
//! counted by the code that decides every frame). One function builds the report for both.

use std::collections::BTreeMap;

use crate::api::{EndpointStats, NetworkStats, StatsReport, WireStats};

use super::model::Daemon;
use crate::netns::{Netns, Rtnl};

/// The TAP device's own drops (`tx_dropped + rx_dropped`), read by netlink in the endpoint's
/// namespace; 0 when they cannot be read (the interface is gone, the namespace unreachable).
fn tap_drops(ns: &Netns, ifindex: u32) -> u64 {
    Rtnl::open(ns)
        .and_then(|mut r| r.link_get_by_index(ifindex))
        .ok()
        .and_then(|l| l.drops)
        .map_or(0, |d| d.rx_dropped + d.tx_dropped)
}

impl Daemon {
    /// Counters of `names` (all networks when empty): the report `uvlan stats` prints and
    /// `/metrics` encodes.
    pub fn stats(&self, names: &[String]) -> Result<StatsReport, String> {
        let st = self.lock();
        let picked: Vec<usize> = if names.is_empty() {
            (0..st.nets.len()).collect()
        } else {
            names
                .iter()
                .map(|n| Self::find(&st, n))
                .collect::<Result<_, _>>()?
        };
        let Some(s) = self.dp.stats().map_err(|e| e.to_string())? else {
            return Err(format!(
                "{} keeps no counters",
                self.dataplane_description()
            ));
        };
        let mut report = StatsReport::default();
        for i in picked {
            let net = &st.nets[i];
            let mut ns = NetworkStats {
                name: net.rec.name.clone(),
                ..NetworkStats::default()
            };
            for ep in &net.rec.endpoints {
                let rt = net.eps.get(&ep.id);
                let c = rt
                    .and_then(|rt| s.port(rt.port))
                    .copied()
                    .unwrap_or_default();
                let fast = net.eps.get(&ep.id).and_then(|rt| {
                    s.fast_path
                        .as_ref()?
                        .ports
                        .iter()
                        .find(|(p, _, _)| *p == rt.port)
                        .map(|(_, tx, rx)| (*tx, *rx))
                });
                let (ftx, frx) = fast.unwrap_or_default();
                // The TAP counts its prefilter's drops in its tx_dropped: they are the
                // engine's (in `c.drops`), not the queue's.
                let tap = rt
                    .map(|rt| tap_drops(&rt.netns, rt.ifindex))
                    .unwrap_or(0)
                    .saturating_sub(c.rx_filtered);
                let engine_drops: BTreeMap<String, u64> = c
                    .drop_reasons()
                    .map(|(r, n)| (r.as_str().to_string(), n))
                    .collect();
                // What the endpoint sent and received through uvlan: the dataplane's frames
                // and the cache's (which the dataplane never sees) together.
                ns.endpoints.push(EndpointStats {
                    name: ep.name.clone(),
                    sent_frames: c
                        .rx_frames
                        .saturating_add(c.rx_filtered)
                        .saturating_add(ftx.frames),
                    sent_bytes: c.rx_bytes.saturating_add(ftx.bytes),
                    received_frames: c.tx_frames.saturating_add(frx.frames),
                    received_bytes: c.tx_bytes.saturating_add(frx.bytes),
                    dropped: tap + c.dropped() + c.tx_dropped,
                    tap_dropped: tap,
                    engine_drops,
                    prefiltered: c.rx_filtered,
                    flood_pauses: c.rx_flood_pauses,
                    undelivered: c.tx_dropped,
                    fast_sent_frames: ftx.frames,
                    fast_sent_bytes: ftx.bytes,
                    fast_received_frames: frx.frames,
                    fast_received_bytes: frx.bytes,
                });
            }
            ns.endpoints.sort_by(|a, b| a.name.cmp(&b.name));
            let wire = net
                .rt
                .as_ref()
                .filter(|rt| rt.wire.is_some())
                .and_then(|rt| rt.parent)
                .and_then(|pid| s.parent(pid));
            if let Some(w) = wire {
                ns.wire = Some(w.ifname.clone());
                match report.wires.iter_mut().find(|x| x.parent == w.ifname) {
                    Some(known) => known.networks.push(net.rec.name.clone()),
                    None => report.wires.push(WireStats {
                        parent: w.ifname.clone(),
                        networks: vec![net.rec.name.clone()],
                        mode: w.mode.clone(),
                        received_frames: w.rx_steered + w.rx_copied + w.fast_rx_frames,
                        received_bytes: w.rx_bytes + w.fast_rx_bytes,
                        sent_frames: w.tx_frames + w.fast_tx_frames,
                        sent_bytes: w.tx_bytes + w.fast_tx_bytes,
                        dropped: w.tx_dropped + w.backend_rx_drops,
                        gso_to_kernel: w.tx_gso_kernel,
                        gso_segmented: w.tx_segmented,
                        to_host_frames: w.host_injected,
                        fast_sent_frames: w.fast_tx_frames,
                        fast_received_frames: w.fast_rx_frames,
                    }),
                }
            }
            report.networks.push(ns);
        }
        report.wires.sort_by(|a, b| a.parent.cmp(&b.parent));
        let nonzero = |v: Vec<(String, u64)>| -> BTreeMap<String, u64> {
            v.into_iter().filter(|(_, n)| *n > 0).collect()
        };
        report.drops = nonzero(
            s.drops
                .iter()
                .map(|(r, n)| (r.as_str().to_string(), *n))
                .collect(),
        );
        report.io_drops = nonzero(
            s.io_drops
                .iter()
                .map(|(r, n)| (r.as_str().to_string(), *n))
                .collect(),
        );
        report.dataplane = Some(crate::api::LoopStats {
            io: s.io.clone(),
            iterations: s.iterations,
            commands: s.commands,
            workers: s
                .workers
                .iter()
                .map(|w| crate::api::WorkerStats {
                    wakeups: w.wakeups,
                    turns: w.turns,
                    syscalls: w.syscalls,
                    frames_in: w.frames_in,
                    frames_out: w.frames_out,
                    batches: w.batches,
                    batch_frames: w.batch_frames,
                    batch_hist: w.batch_hist.to_vec(),
                    flood_pauses: w.flood_pauses,
                })
                .collect(),
            tap_filters: s.tap_filters,
            tap_filter_error: s.tap_filter_error.clone(),
        });
        Ok(report)
    }
}
