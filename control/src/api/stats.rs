//! The counters' report: what `uvlan stats` prints and `/metrics` serves.

use super::*;

/// The answer to [`Request::Stats`]: the dataplane's counters since the daemon started.
/// `uvlan stats` and the daemon's `/metrics` endpoint read this same report.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatsReport {
    /// One entry per network asked for (every network when none was named).
    pub networks: Vec<NetworkStats>,
    /// The wires those networks use, each once (networks on one parent share its wire).
    #[serde(default)]
    pub wires: Vec<WireStats>,
    /// Frames the forwarding engine dropped, by reason (all networks; non-zero only).
    pub drops: BTreeMap<String, u64>,
    /// Frames the I/O layer could not deliver, by reason (all networks; non-zero only).
    pub io_drops: BTreeMap<String, u64>,
    /// The dataplane's I/O path and its workers' loop counters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dataplane: Option<LoopStats>,
}

/// How the dataplane moves frames, in a [`StatsReport`]: its I/O path and, per worker, what
/// its loop did (`uvlan_dataplane::run::LoopCounters`). System calls per forwarded frame:
/// `syscalls / frames_in`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoopStats {
    /// The I/O path and why (`Dataplane::io_description`).
    pub io: String,
    /// Loop passes of all workers together.
    #[serde(default)]
    pub iterations: u64,
    /// Commands the dataplane ran (configuration changes, queries).
    #[serde(default)]
    pub commands: u64,
    /// One entry per worker, worker 0 first.
    pub workers: Vec<WorkerStats>,
    /// Endpoints whose TAP carries a prefilter now (`uvlan daemon --tap-filter`).
    #[serde(default)]
    pub tap_filters: usize,
    /// The last prefilter failure, if any (those endpoints' frames are read and dropped by
    /// the engine as before).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tap_filter_error: Option<String>,
}

/// One dataplane worker's loop counters.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerStats {
    /// Returns from a blocking wait.
    pub wakeups: u64,
    /// Loop passes.
    pub turns: u64,
    /// System calls made by the loop.
    pub syscalls: u64,
    /// Frames received (TAPs and wires).
    pub frames_in: u64,
    /// Frames written to TAPs or queued on wires.
    pub frames_out: u64,
    /// Receive batches (one per source and turn with frames).
    pub batches: u64,
    /// Frames in those batches.
    pub batch_frames: u64,
    /// Batches by size: 1, 2–3, 4–7, …, 512–1023, 1024 and more.
    pub batch_hist: Vec<u64>,
    /// Times an endpoint's reads were paused because it flooded the loop with frames to
    /// group addresses or frames the engine dropped (flood deferral).
    #[serde(default)]
    pub flood_pauses: u64,
}

/// Counters of one network in a [`StatsReport`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkStats {
    /// Name.
    pub name: String,
    /// Its endpoints.
    pub endpoints: Vec<EndpointStats>,
    /// The parent whose wire it uses (its entry in [`StatsReport::wires`]), when it uses
    /// one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wire: Option<String>,
}

/// Counters of one endpoint, seen from the endpoint.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointStats {
    /// The endpoint's name (its namespace, as inspect shows it).
    pub name: String,
    /// Frames the endpoint sent (read from its TAP, dropped by its TAP's prefilter for the
    /// engine, or forwarded by the fast path's kernel cache; a GSO super-frame counts
    /// once).
    pub sent_frames: u64,
    /// Their bytes.
    pub sent_bytes: u64,
    /// Frames delivered to the endpoint (written to its TAP, or by the kernel cache).
    pub received_frames: u64,
    /// Their bytes.
    pub received_bytes: u64,
    /// Every frame of the endpoint lost on the way, in or out: the sum of
    /// [`tap_dropped`](EndpointStats::tap_dropped), [`engine_dropped`](EndpointStats::engine_dropped)
    /// and [`undelivered`](EndpointStats::undelivered).
    pub dropped: u64,
    /// Fast-path endpoints: of `sent_frames`, those the kernel cache forwarded (the
    /// dataplane never saw them).
    #[serde(default)]
    pub fast_sent_frames: u64,
    /// Their bytes.
    #[serde(default)]
    pub fast_sent_bytes: u64,
    /// Fast-path endpoints: of `received_frames`, those the kernel cache delivered.
    #[serde(default)]
    pub fast_received_frames: u64,
    /// Their bytes.
    #[serde(default)]
    pub fast_received_bytes: u64,
    /// The TAP device's own drops (`tx_dropped + rx_dropped` of its `IFLA_STATS64`): frames
    /// the endpoint sent that the TAP's queue had no room for before uvlan read them, and
    /// frames uvlan wrote that the endpoint's stack refused.
    #[serde(default)]
    pub tap_dropped: u64,
    /// Frames the endpoint sent that the forwarding engine dropped, by reason (the
    /// `DropReason` names `uvlan trace` prints; non-zero only). Includes
    /// [`prefiltered`](EndpointStats::prefiltered).
    #[serde(default)]
    pub engine_drops: BTreeMap<String, u64>,
    /// Of `engine_drops`, frames the TAP's prefilter dropped in the kernel for the engine
    /// before uvlan read them (`uvlan daemon --tap-filter`); counted in `sent_frames`, not
    /// in `sent_bytes`, and not in `tap_dropped`.
    #[serde(default)]
    pub prefiltered: u64,
    /// Frames for the endpoint that uvlan could not write (its queue full, interface down).
    #[serde(default)]
    pub undelivered: u64,
    /// Times the dataplane paused reading the endpoint's TAP because it flooded (broadcasts,
    /// multicasts or frames the engine drops, batch after batch; storm control, `uvlan
    /// daemon --storm-share`). What it sent meanwhile waited in its TAP queue; what did not
    /// fit is in [`tap_dropped`](EndpointStats::tap_dropped).
    #[serde(default)]
    pub flood_pauses: u64,
}

impl EndpointStats {
    /// Of [`dropped`](EndpointStats::dropped), the engine's drops, every reason together.
    pub fn engine_dropped(&self) -> u64 {
        self.engine_drops.values().sum()
    }
}

/// Counters of a parent's wire.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireStats {
    /// The host interface.
    pub parent: String,
    /// The networks (of the report) that use it.
    #[serde(default)]
    pub networks: Vec<String>,
    /// The backend in use.
    pub mode: String,
    /// Frames received from the wire (steered to uvlan, or copied; and those the fast path's
    /// cache took to an endpoint).
    pub received_frames: u64,
    /// Their bytes.
    pub received_bytes: u64,
    /// Frames sent to the wire (a GSO super-frame handed to the kernel counts once; the fast
    /// path's included).
    pub sent_frames: u64,
    /// Their bytes.
    pub sent_bytes: u64,
    /// Frames the backend could not send, or the kernel dropped on receive.
    pub dropped: u64,
    /// GSO super-frames handed to the kernel whole.
    pub gso_to_kernel: u64,
    /// GSO super-frames segmented in software.
    pub gso_segmented: u64,
    /// Frames handed to the host's own stack through the parent (injected: from
    /// endpoints, or steered away from the host), as the kernel's ipvlan hands them to its
    /// master.
    #[serde(default)]
    pub to_host_frames: u64,
    /// Of `sent_frames`: frames the fast path's cache sent from endpoints to the wire.
    #[serde(default)]
    pub fast_sent_frames: u64,
    /// Of `received_frames`: frames the fast path's cache took from the wire to endpoints.
    #[serde(default)]
    pub fast_received_frames: u64,
}
