//! Counters of the dataplane thread.

use crate::fwd::{DropReason, ParentId, PortId};
use crate::port::xdp_filter::FilterStats;

crate::fwd::closed_set! {
    /// Why the I/O layer (not the engine) dropped a frame or an output. A closed set, like
    /// [`DropReason`]: counters are indexed by it and `uvlan` prints every one. (What the
    /// host's routing and neighbour tables answer is the engine's route stage: those drops
    /// are [`DropReason`]s.)
    pub enum IoDrop {
        /// The verdict wants the parent's own stack for a frame the host did not receive (sent
        /// by a port, or steered away from the host by the filter), and the parent has no
        /// injector (it could not be opened: tcx needs Linux 6.6), or the frame was steered
        /// by a generic XDP filter, which would steer it again.
        HostStackUnreachable = "host_stack_unreachable";
        /// The target port has no TAP attached (yet).
        NoTap = "no_tap";
        /// The TAP's queue was full (`EAGAIN`).
        TapFull = "tap_full";
        /// The TAP refused the frame because its interface is down (`EIO`) or gone.
        TapDown = "tap_down";
        /// The verdict wants a parent's wire that is not attached.
        NoWire = "wire_not_attached";
        /// The parent's transmit queue was full, or the frame was larger than a TX buffer.
        WireFull = "wire_full";
        /// The frame could not be segmented or checksummed (bad headers, or a packet over the
        /// parent MTU that may not be split).
        Offload = "offload_error";
    }
}

/// Counters of one port's TAP.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PortCounters {
    /// Frames read from the TAP (sent by the endpoint).
    pub rx_frames: u64,
    /// Bytes read (frames, without the vnet header).
    pub rx_bytes: u64,
    /// Of `rx_frames`, GSO super-frames.
    pub rx_gso_frames: u64,
    /// Read errors other than "nothing queued".
    pub rx_errors: u64,
    /// Frames written to the TAP (received by the endpoint).
    pub tx_frames: u64,
    /// Bytes written.
    pub tx_bytes: u64,
    /// Of `tx_frames`, GSO super-frames (passed through or built by GRO).
    pub tx_gso_frames: u64,
    /// Frames that could not be written (queue full, interface down, errors).
    pub tx_dropped: u64,
    /// Frames read from this TAP that the engine dropped, by [`DropReason`] (indexed by
    /// [`DropReason::index`]; the same drops are in [`Stats::drops`], all ports together),
    /// and those the TAP's prefilter dropped for the engine before they were read
    /// ([`PortCounters::rx_filtered`]).
    pub drops: [u64; DropReason::COUNT],
    /// Of `drops`, frames the TAP's prefilter ([`crate::port::tap_filter`]) dropped in the
    /// kernel, for the reason the engine would have: never read, so not in `rx_frames`.
    pub rx_filtered: u64,
    /// Times this TAP's reads were paused because it flooded the dataplane (flood
    /// deferral and storm control, `RunOptions::storm_share`): what it sent meanwhile
    /// waited in its TAP queue, and what did not fit there is in the TAP's own drops.
    pub rx_flood_pauses: u64,
}

impl PortCounters {
    /// Frames read from this TAP that the engine dropped, every reason together.
    pub fn dropped(&self) -> u64 {
        self.drops.iter().sum()
    }

    /// The nonzero engine drops of this port's frames, by reason, in counter order.
    pub fn drop_reasons(&self) -> impl Iterator<Item = (DropReason, u64)> + '_ {
        DropReason::ALL
            .iter()
            .zip(self.drops.iter())
            .filter(|(_, n)| **n > 0)
            .map(|(r, n)| (*r, *n))
    }
}

/// Counters of one parent's wire.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ParentCounters {
    /// Interface name.
    pub ifname: String,
    /// Backend in use (as [`super::WireStatus::mode`]).
    pub mode: String,
    /// Frames received from the XSKs (AF_XDP) or the fallback socket (every frame).
    pub rx_steered: u64,
    /// Frames received from the group-only copy socket (AF_XDP mode).
    pub rx_copied: u64,
    /// Bytes received (both).
    pub rx_bytes: u64,
    /// Frames queued for transmission (after segmentation).
    pub tx_frames: u64,
    /// Bytes queued.
    pub tx_bytes: u64,
    /// Frames the backend refused (ring/queue full, too large).
    pub tx_dropped: u64,
    /// GSO super-frames segmented in software.
    pub tx_segmented: u64,
    /// GSO super-frames handed to the kernel whole (AF_PACKET GSO TX socket).
    pub tx_gso_kernel: u64,
    /// Super-frames the GSO TX socket dropped because its queue was full.
    pub tx_gso_full: u64,
    /// Super-frames the kernel refused on the GSO TX socket (then segmented in software).
    pub tx_gso_refused: u64,
    /// Partial checksums handed to the kernel through XSK TX metadata.
    pub tx_csum_offloaded: u64,
    /// Frames that could not be segmented or checksummed.
    pub tx_offload_errors: u64,
    /// `HostStack` verdicts for wire frames the host received itself (nothing to do).
    pub host_stack_kernel: u64,
    /// Frames injected into the parent's own receive path (`HostStack` verdicts for frames
    /// the host had not received: from ports, or steered away from it).
    pub host_injected: u64,
    /// Kernel-side receive drops of the backend: XSK `rx_dropped + rx_ring_full +
    /// rx_fill_ring_empty_descs` summed over queues, or AF_PACKET `tp_drops`, plus the copy
    /// socket's `tp_drops`.
    pub backend_rx_drops: u64,
    /// Filter key or membership updates that failed (retried after every command).
    pub key_errors: u64,
    /// Receive or transmit system calls that failed.
    pub io_errors: u64,
    /// The filter program's counters.
    pub filter: Option<FilterStats>,
    /// Frames the fast path's cache sent from endpoints to this wire (never seen by the
    /// dataplane, so not in `tx_frames`).
    pub fast_tx_frames: u64,
    /// Their bytes.
    pub fast_tx_bytes: u64,
    /// Frames the fast path's cache took from this wire to endpoints (not in `rx_steered`).
    pub fast_rx_frames: u64,
    /// Their bytes.
    pub fast_rx_bytes: u64,
}

/// Number of buckets of [`LoopCounters::batch_hist`]: sizes 1, 2–3, 4–7, …, 512–1023,
/// 1024 and more.
pub const BATCH_BUCKETS: usize = 11;

/// What one dataplane worker's loop did: the figures the benchmarks divide by.
///
/// A *wake-up* is a return from a blocking wait (`epoll_wait` or `io_uring_enter` with a
/// wait); a *turn* is one pass of the loop (a turn that found work left over from the last
/// one does not wait). *System calls* are every call the loop makes on the frame path,
/// counted where it makes them: the wait, TAP `readv`/`writev` (plain I/O),
/// `io_uring_enter` (submissions and waits), eventfd reads and writes, and the wire
/// backends' receive and transmit calls (`recvmmsg`/`sendmmsg`, AF_XDP wake-ups, the GSO
/// socket's `sendmsg`). Commands and statistics are not counted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LoopCounters {
    /// Returns from a blocking wait.
    pub wakeups: u64,
    /// Loop passes.
    pub turns: u64,
    /// System calls made by the loop (see above).
    pub syscalls: u64,
    /// Frames received (TAPs and wires).
    pub frames_in: u64,
    /// Frames written to TAPs or queued on wires (after segmentation).
    pub frames_out: u64,
    /// Receive batches: one per port or wire that delivered at least one frame in a turn.
    pub batches: u64,
    /// Frames in those batches (`batch_frames / batches` is the mean batch size).
    pub batch_frames: u64,
    /// Batch sizes by power of two: bucket `i` counts batches of `2^i ..= 2^(i+1) - 1`
    /// frames (the last bucket: 1024 and more).
    pub batch_hist: [u64; BATCH_BUCKETS],
    /// Frames handed to another worker's queue (its parent owns the wire).
    pub xfer_out: u64,
    /// Frames taken from other workers' queues.
    pub xfer_in: u64,
    /// io_uring: multishot TAP reads re-armed after the kernel ended them.
    pub rearms: u64,
    /// io_uring: of those, reads ended because the provided-buffer ring was empty
    /// (`-ENOBUFS`): frames waited in the TAP's queue for buffers.
    pub starved: u64,
    /// io_uring: TAP writes made at once with `writev` because every transmit buffer was
    /// in flight.
    pub sync_writes: u64,
    /// Times a TAP port's reads were paused because it flooded the dataplane with frames to
    /// group addresses or frames the engine dropped (flood deferral).
    pub flood_pauses: u64,
}

impl LoopCounters {
    /// Counts one receive batch of `n` frames (nothing for `n == 0`).
    pub fn note_batch(&mut self, n: usize) {
        if n == 0 {
            return;
        }
        self.batches += 1;
        self.batch_frames += n as u64;
        self.frames_in += n as u64;
        let b = (usize::BITS - 1 - n.leading_zeros()) as usize;
        if let Some(slot) = self.batch_hist.get_mut(b.min(BATCH_BUCKETS - 1)) {
            *slot += 1;
        }
    }

    /// Adds `o`'s counts to these.
    pub fn add(&mut self, o: &LoopCounters) {
        self.wakeups += o.wakeups;
        self.turns += o.turns;
        self.syscalls += o.syscalls;
        self.frames_in += o.frames_in;
        self.frames_out += o.frames_out;
        self.batches += o.batches;
        self.batch_frames += o.batch_frames;
        for (a, b) in self.batch_hist.iter_mut().zip(o.batch_hist.iter()) {
            *a += b;
        }
        self.xfer_out += o.xfer_out;
        self.xfer_in += o.xfer_in;
        self.rearms += o.rearms;
        self.starved += o.starved;
        self.sync_writes += o.sync_writes;
        self.flood_pauses += o.flood_pauses;
    }
}

/// A snapshot of every counter.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Per port with a TAP.
    pub ports: Vec<(PortId, PortCounters)>,
    /// Per engine [`DropReason`], all of them listed (zeros included), in counter order.
    pub drops: Vec<(DropReason, u64)>,
    /// Per [`IoDrop`], all of them listed, in counter order.
    pub io_drops: Vec<(IoDrop, u64)>,
    /// System calls that failed (poll, reads, writes, sends), all sources together.
    pub io_errors: u64,
    /// Per attached parent.
    pub parents: Vec<(ParentId, ParentCounters)>,
    /// Loop iterations so far (turns of every worker).
    pub iterations: u64,
    /// Commands run so far.
    pub commands: u64,
    /// The I/O path in use and why (as [`super::Dataplane::io_description`]).
    pub io: String,
    /// Each worker's loop counters, worker 0 first.
    pub workers: Vec<LoopCounters>,
    /// The fast path's counters, once a port has a veth.
    pub fast_path: Option<FastPathReport>,
    /// Ports whose TAP carries a prefilter now ([`crate::port::tap_filter`]).
    pub tap_filters: usize,
    /// The last prefilter failure (making its counter map, loading or attaching a program),
    /// if any: those ports' frames are read and dropped by the engine as before.
    pub tap_filter_error: Option<String>,
}

/// Counters of the fast path (see [`crate::port::fast_path`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FastPathReport {
    /// The programs' own counters: hits, misses to the slow path, slow-path frames out.
    pub programs: crate::port::fast_path::FastStats,
    /// Entries in the cache now.
    pub entries: usize,
    /// Per port with a veth (or that had one): frames and bytes the cache forwarded from
    /// it, then to it.
    pub ports: Vec<(
        PortId,
        crate::port::fast_path::EntryCounters,
        crate::port::fast_path::EntryCounters,
    )>,
}

impl Stats {
    /// The counter of one engine drop reason.
    pub fn drop_count(&self, r: DropReason) -> u64 {
        self.drops
            .iter()
            .find(|(d, _)| *d == r)
            .map_or(0, |(_, n)| *n)
    }

    /// The counter of one I/O drop reason.
    pub fn io_drop_count(&self, r: IoDrop) -> u64 {
        self.io_drops
            .iter()
            .find(|(d, _)| *d == r)
            .map_or(0, |(_, n)| *n)
    }

    /// The counters of a port, if it has a TAP.
    pub fn port(&self, p: PortId) -> Option<&PortCounters> {
        self.ports.iter().find(|(q, _)| *q == p).map(|(_, c)| c)
    }

    /// The counters of a parent, if attached.
    pub fn parent(&self, p: ParentId) -> Option<&ParentCounters> {
        self.parents.iter().find(|(q, _)| *q == p).map(|(_, c)| c)
    }

    /// Every worker's loop counters added up.
    pub fn loop_total(&self) -> LoopCounters {
        let mut t = LoopCounters::default();
        for w in &self.workers {
            t.add(w);
        }
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_drop_names_are_unique_and_indexed_in_order() {
        assert_eq!(IoDrop::ALL.len(), IoDrop::COUNT);
        for (i, d) in IoDrop::ALL.iter().enumerate() {
            assert_eq!(d.index(), i);
        }
        let mut names: Vec<_> = IoDrop::ALL.iter().map(|d| d.as_str()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), IoDrop::COUNT);
    }

    #[test]
    fn batches_land_in_power_of_two_buckets() {
        let mut c = LoopCounters::default();
        for n in [0, 1, 2, 3, 4, 64, 100, 5000] {
            c.note_batch(n);
        }
        assert_eq!(c.batches, 7);
        assert_eq!(c.batch_frames, 1 + 2 + 3 + 4 + 64 + 100 + 5000);
        assert_eq!(c.frames_in, c.batch_frames);
        assert_eq!(c.batch_hist, [1, 2, 1, 0, 0, 0, 2, 0, 0, 0, 1]);
        let mut t = LoopCounters::default();
        t.add(&c);
        t.add(&c);
        assert_eq!(t.batches, 14);
        assert_eq!(t.batch_hist[6], 4);
    }

    #[test]
    fn a_ports_engine_drops_add_up_by_reason() {
        let mut c = PortCounters::default();
        assert_eq!(c.dropped(), 0);
        assert_eq!(c.drop_reasons().count(), 0);
        c.drops[DropReason::MtuExceeded.index()] += 3;
        c.drops[DropReason::NoWire.index()] += 2;
        c.drops[DropReason::TooShort.index()] += 1;
        assert_eq!(c.dropped(), 6);
        // Counter order (the declaration's), non-zero reasons only.
        let got: Vec<_> = c.drop_reasons().collect();
        assert_eq!(
            got,
            vec![
                (DropReason::TooShort, 1),
                (DropReason::NoWire, 2),
                (DropReason::MtuExceeded, 3)
            ]
        );
    }

    #[test]
    fn lookups_find_counters() {
        let s = Stats {
            drops: vec![(DropReason::NoWire, 3)],
            io_drops: vec![(IoDrop::TapFull, 2)],
            ports: vec![(
                PortId(4),
                PortCounters {
                    rx_frames: 9,
                    ..Default::default()
                },
            )],
            ..Default::default()
        };
        assert_eq!(s.drop_count(DropReason::NoWire), 3);
        assert_eq!(s.drop_count(DropReason::Pause), 0);
        assert_eq!(s.io_drop_count(IoDrop::TapFull), 2);
        assert_eq!(s.port(PortId(4)).map(|c| c.rx_frames), Some(9));
        assert!(s.port(PortId(5)).is_none());
        assert!(s.parent(ParentId(0)).is_none());
    }
}
