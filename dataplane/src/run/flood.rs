//! Flood deferral: a TAP port that floods the dataplane with frames that forward nowhere
//! cheaply is read in batches on a timer instead of frame by frame.
//!
//! The kernel's drivers never let one slave's broadcasts or garbage cost the others much:
//! a frame the driver drops is dropped in the sender's own context, and broadcast and
//! multicast frames go to a backlog that a work item drains in batches
//! (`ipvlan_multicast_enqueue` and `ipvlan_process_multicast` in `ipvlan_core.c`,
//! `macvlan_broadcast_enqueue` and `macvlan_process_broadcast` in `macvlan.c`; their
//! backlogs hold 1,000 frames, the rest is dropped). A userspace dataplane pays a wake-up
//! for every frame that arrives alone: a storm of such frames from one endpoint (each one
//! read, decided and dropped or flooded) turns the loop tens of thousands of times a second
//! and takes the CPU the other endpoints' traffic needs.
//!
//! So a port whose batches, [`FLOOD_AFTER`] times in a row and each within [`FLOOD_GAP`]
//! of the one before (or right after a full one or one that left frames unread), held only
//! such frames (frames the engine dropped, and frames to a group address) is *paused*: its
//! reads stop for [`FLOOD_PAUSE`], its frames wait in its own TAP queue (as the kernel's
//! backlog, bounded by the TAP's `txqueuelen`: what does not fit is dropped and counted on
//! that endpoint's TAP), and the next read takes them as one batch. A batch after a pause
//! that still holds only such frames, and more than one (or leaves some behind), pauses the
//! port again, as does a lone one followed quickly by another such batch; anything else (a
//! unicast frame forwarded, a lone frame and then quiet) ends the deferral at once. Unicast
//! traffic is never deferred, and a port's frames keep their order.
//!
//! Storm control: a paused port's share of its worker is bounded. The cost of each batch
//! it is read for after a pause (its decisions and its writes, which for a TAP include the
//! receivers' stacks: the kernel runs them in the writer's context) is measured, and its
//! next pause lasts `(100 − share) / share` times that cost (at least [`FLOOD_PAUSE`]), so
//! a flood gets at most `share` percent of the worker's time however much each of its
//! frames costs (a broadcast to 1,000 ports costs 1,000 writes). The kernel's drivers bound
//! a flood with their 1,000-frame backlogs and make the sender pay for the rest; here what
//! the port sends beyond its share waits, then is dropped, in its own TAP queue (counted
//! on that endpoint as `tap_dropped`), as the frames beyond a switch's storm-control level.
//! A pause lasts at most [`FLOOD_PAUSE_MAX`], so a port flooding a network of many ports
//! may take more than its share there. Storm control is work-conserving: it holds a flood
//! back only while other ports or wires have frames to forward (some were read since the
//! port's last pause ended); a flood alone (a multicast throughput test) keeps the minimum
//! pause.

use std::time::{Duration, Instant};

/// Batches in a row, each of frames to groups or dropped only, that make a flood.
pub(crate) const FLOOD_AFTER: u16 = 8;
/// Batches further apart than this do not continue a flood.
pub(crate) const FLOOD_GAP: Duration = Duration::from_micros(200);
/// How long a flooding port's reads stop, at least.
pub(crate) const FLOOD_PAUSE: Duration = Duration::from_millis(1);
/// How long they stop at most, whatever its last batch cost (so a port that floods a large
/// network still has its frames read ten times a second).
pub(crate) const FLOOD_PAUSE_MAX: Duration = Duration::from_millis(100);

/// The default share of a worker's time a flooding port may take, in percent
/// ([`crate::run::RunOptions::storm_share`]).
pub(crate) const STORM_SHARE: u8 = 10;

/// How long a flooding port pauses after a batch that cost `cost` of its worker's time, so
/// that it gets at most `share` percent (1..=100) of that time: `(100 − share) / share`
/// times the cost, between [`FLOOD_PAUSE`] and [`FLOOD_PAUSE_MAX`] (100: always
/// [`FLOOD_PAUSE`]).
pub(crate) fn storm_pause(cost: Duration, share: u8) -> Duration {
    let share = u32::from(share.clamp(1, 100));
    (cost.saturating_mul(100 - share) / share).clamp(FLOOD_PAUSE, FLOOD_PAUSE_MAX)
}

/// One TAP port's flood state.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct FloodGuard {
    /// Batches in a row of group-addressed or dropped frames only, quickly one after another.
    streak: u16,
    /// When the port's last batch was served.
    last: Option<Instant>,
    /// The port was paused and its first batch since has not been seen.
    resumed: bool,
    /// The last batch left frames behind (the port sends faster than it is read).
    behind: bool,
    /// Its reads are paused now (frames already read are still served: they hold buffers).
    paused: bool,
    /// What the batches served since its last pause ended (or began) cost the worker.
    spent: Duration,
    /// The worker's frames read (from every port and wire) when its last batch ended.
    seen: u64,
    /// Other ports or wires had frames read since its last pause ended.
    contended: bool,
}

impl FloodGuard {
    /// After a batch of `frames` frames read at `now`, of which `deferrable` went to a
    /// group address or were dropped, and which left frames behind or was full (`more`):
    /// whether the port is to be paused now.
    pub(crate) fn after_batch(
        &mut self,
        now: Instant,
        frames: usize,
        deferrable: usize,
        more: bool,
    ) -> bool {
        if frames == 0 {
            return false;
        }
        // Quick: soon after the last batch, or right after one that left frames behind
        // (however long deciding that one took).
        let quick = std::mem::replace(&mut self.behind, more)
            || self
                .last
                .is_some_and(|l| now.saturating_duration_since(l) < FLOOD_GAP);
        self.last = Some(now);
        let resumed = std::mem::take(&mut self.resumed);
        if deferrable < frames {
            self.streak = 0;
            return false;
        }
        if resumed {
            // The frames that waited during the pause: still a flood if there were several
            // (or more wait behind them).
            if frames > 1 || more {
                return true;
            }
            // A lone frame (the first completions after a pause may come one by one): the
            // flood goes on if the next batch follows quickly with such frames only.
            self.streak = FLOOD_AFTER - 1;
            return false;
        }
        self.streak = if quick {
            self.streak.saturating_add(1)
        } else {
            1
        };
        self.streak >= FLOOD_AFTER
    }

    /// Whether the cost of the port's next batch counts toward its next pause: it is paused
    /// (frames read before the pause are still served), or the batch is its first since.
    pub(crate) fn measuring(&self) -> bool {
        self.resumed || self.paused
    }

    /// Whether the port's reads are paused now.
    pub(crate) fn is_paused(&self) -> bool {
        self.paused
    }

    /// Its reads pause now.
    pub(crate) fn pause(&mut self) {
        self.paused = true;
    }

    /// Adds a batch's cost to what the port spent since its last pause ended; returns the
    /// sum (what its pause is measured by).
    pub(crate) fn charge(&mut self, cost: Duration) -> Duration {
        self.spent = self.spent.saturating_add(cost);
        self.spent
    }

    /// Before a batch of `frames` frames is counted: `total`, what the worker has read so
    /// far. Frames read since this port's last batch were someone else's.
    pub(crate) fn note_others(&mut self, total: u64, frames: usize) {
        if total > self.seen {
            self.contended = true;
        }
        self.seen = total.saturating_add(frames as u64);
    }

    /// The share of the worker the port may take now: `share` while others have frames to
    /// forward (some were read since its last pause ended); 100 % otherwise (storm control
    /// is work-conserving: a flood alone is held only by the minimum pause).
    pub(crate) fn share(&self, share: u8) -> u8 {
        if self.contended {
            share
        } else {
            100
        }
    }

    /// The port's reads start again (its pause is over).
    pub(crate) fn resume(&mut self) {
        self.resumed = true;
        self.paused = false;
        self.spent = Duration::ZERO;
        self.contended = false;
    }
}

/// The paused ports of one worker and when each pause ends.
#[derive(Debug, Default)]
pub(crate) struct Paused {
    list: Vec<(u32, Instant)>,
}

impl Paused {
    /// Room for `n` paused ports without allocating on the frame path.
    pub(crate) fn reserve(&mut self, n: usize) {
        self.list.reserve(n.saturating_sub(self.list.len()));
    }

    /// Port `port` is paused until `until`.
    pub(crate) fn add(&mut self, port: u32, until: Instant) {
        self.list.retain(|(p, _)| *p != port);
        self.list.push((port, until));
    }

    /// Forgets port `port` (it is gone).
    pub(crate) fn remove(&mut self, port: u32) {
        self.list.retain(|(p, _)| *p != port);
    }

    /// How long a wait may last before the first pause ends (`None`: nothing is paused).
    pub(crate) fn timeout(&self, now: Instant) -> Option<Duration> {
        self.list
            .iter()
            .map(|(_, t)| t.saturating_duration_since(now))
            .min()
    }

    /// Takes one port whose pause has ended by `now`.
    pub(crate) fn pop_due(&mut self, now: Instant) -> Option<u32> {
        let i = self.list.iter().position(|(_, t)| *t <= now)?;
        Some(self.list.swap_remove(i).0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(
        g: &mut FloodGuard,
        t0: Instant,
        step: Duration,
        batches: &[(usize, usize)],
    ) -> Vec<bool> {
        batches
            .iter()
            .enumerate()
            .map(|(i, &(n, d))| g.after_batch(t0 + step * i as u32, n, d, false))
            .collect()
    }

    #[test]
    fn a_quick_run_of_broadcasts_or_drops_pauses_after_flood_after_batches() {
        let mut g = FloodGuard::default();
        let t0 = Instant::now();
        let got = run(&mut g, t0, Duration::from_micros(30), &[(2, 2); 8]);
        assert_eq!(got, [false, false, false, false, false, false, false, true]);
    }

    #[test]
    fn unicast_slow_or_lone_batches_never_pause() {
        let t0 = Instant::now();
        // One forwarded unicast frame in each batch.
        let mut g = FloodGuard::default();
        assert!(!run(&mut g, t0, Duration::from_micros(30), &[(3, 2); 50]).contains(&true));
        // Broadcasts, but further apart than FLOOD_GAP (ARP now and then).
        let mut g = FloodGuard::default();
        assert!(!run(&mut g, t0, FLOOD_GAP * 2, &[(1, 1); 50]).contains(&true));
        // A unicast frame in between restarts the count.
        let mut g = FloodGuard::default();
        let mut b = vec![(1, 1); 7];
        b.push((1, 0));
        b.extend([(1, 1); 7]);
        assert!(!run(&mut g, t0, Duration::from_micros(30), &b).contains(&true));
    }

    #[test]
    fn batches_that_leave_frames_behind_continue_a_flood_however_slow() {
        let t0 = Instant::now();
        let mut g = FloodGuard::default();
        let slow = FLOOD_GAP * 3;
        let got: Vec<bool> = (0..8u32)
            .map(|i| g.after_batch(t0 + slow * i, 64, 64, true))
            .collect();
        assert_eq!(got.iter().filter(|p| **p).count(), 1);
        assert!(got[7]);
    }

    #[test]
    fn after_a_pause_a_batch_of_several_pauses_again_and_a_lone_frame_ends_it() {
        let t0 = Instant::now();
        let mut g = FloodGuard::default();
        assert!(run(&mut g, t0, Duration::from_micros(30), &[(2, 2); 8])[7]);
        g.resume();
        assert!(g.after_batch(t0 + FLOOD_PAUSE * 2, 40, 40, false));
        g.resume();
        assert!(!g.after_batch(t0 + FLOOD_PAUSE * 4, 1, 1, false));
        // Counting starts over.
        let got = run(
            &mut g,
            t0 + FLOOD_PAUSE * 5,
            Duration::from_micros(30),
            &[(2, 2); 8],
        );
        assert_eq!(got.iter().filter(|p| **p).count(), 1);
        // Unicast among the frames that waited: not a flood any more.
        g.resume();
        assert!(!g.after_batch(t0 + FLOOD_PAUSE * 9, 40, 39, false));
        // A lone frame that leaves others behind: still a flood.
        assert!(
            run(
                &mut g,
                t0 + FLOOD_PAUSE * 10,
                Duration::from_micros(30),
                &[(2, 2); 8]
            )[7]
        );
        g.resume();
        assert!(g.after_batch(t0 + FLOOD_PAUSE * 12, 1, 1, true));
        // A lone frame, then quickly another batch of such frames: still a flood.
        g.resume();
        let t = t0 + FLOOD_PAUSE * 14;
        assert!(!g.after_batch(t, 1, 1, false));
        assert!(g.after_batch(t + Duration::from_micros(30), 3, 3, false));
        // A lone frame, then quiet: over (the next quick run counts from one again).
        g.resume();
        let t = t0 + FLOOD_PAUSE * 16;
        assert!(!g.after_batch(t, 1, 1, false));
        let got = run(
            &mut g,
            t + FLOOD_GAP * 2,
            Duration::from_micros(30),
            &[(2, 2); 8],
        );
        assert_eq!(got, [false, false, false, false, false, false, false, true]);
    }

    #[test]
    fn a_flood_gets_at_most_its_share_of_the_worker() {
        let us = Duration::from_micros;
        // A cheap batch: the minimum pause.
        assert_eq!(storm_pause(us(10), 10), FLOOD_PAUSE);
        // 400 µs of writes at a 10 % share: 3.6 ms of pause, so 400 / (400 + 3,600) = 10 %.
        assert_eq!(storm_pause(us(400), 10), us(3_600));
        assert_eq!(storm_pause(us(400), 50), FLOOD_PAUSE);
        assert_eq!(storm_pause(us(2_000), 50), us(2_000));
        assert_eq!(storm_pause(us(2_000), 100), FLOOD_PAUSE);
        // Out of range: clamped, never a division by zero.
        assert_eq!(storm_pause(us(100), 0), us(9_900));
        assert_eq!(storm_pause(us(100), 200), FLOOD_PAUSE);
        assert_eq!(storm_pause(us(20_000), 10), FLOOD_PAUSE_MAX);
        assert_eq!(storm_pause(Duration::MAX, 10), FLOOD_PAUSE_MAX);
        // The guard says which batches' cost counts: those served while the port is
        // paused, and its first since; a pause ending starts the sum over.
        let mut g = FloodGuard::default();
        assert!(!g.measuring());
        g.pause();
        assert!(g.measuring() && g.is_paused());
        assert_eq!(g.charge(us(30)), us(30));
        assert_eq!(g.charge(us(50)), us(80));
        g.resume();
        assert!(g.measuring() && !g.is_paused());
        assert_eq!(g.charge(us(20)), us(20));
        g.after_batch(Instant::now(), 3, 3, false);
        assert!(!g.measuring());
    }

    #[test]
    fn storm_control_holds_a_flood_back_only_while_others_have_frames() {
        let mut g = FloodGuard::default();
        g.note_others(0, 64);
        g.pause();
        g.resume();
        // Only its own frames were read since: alone, the minimum pause.
        g.note_others(64, 64);
        assert_eq!(g.share(10), 100);
        g.note_others(128, 64);
        assert_eq!(g.share(10), 100);
        // Someone else's frame in between: its share, until the next pause ends.
        g.note_others(193, 64);
        assert_eq!(g.share(10), 10);
        g.note_others(257, 64);
        assert_eq!(g.share(10), 10);
        g.resume();
        assert_eq!(g.share(10), 100);
        g.note_others(321, 64);
        assert_eq!(g.share(10), 100);
    }

    #[test]
    fn paused_ports_end_in_deadline_order_and_give_the_wait_its_timeout() {
        let t0 = Instant::now();
        let mut p = Paused::default();
        assert_eq!(p.timeout(t0), None);
        p.add(3, t0 + Duration::from_millis(2));
        p.add(5, t0 + Duration::from_millis(1));
        assert_eq!(p.timeout(t0), Some(Duration::from_millis(1)));
        assert_eq!(p.pop_due(t0), None);
        assert_eq!(p.pop_due(t0 + Duration::from_millis(1)), Some(5));
        assert_eq!(p.pop_due(t0 + Duration::from_millis(1)), None);
        p.add(3, t0 + Duration::from_millis(9));
        assert_eq!(p.timeout(t0), Some(Duration::from_millis(9)));
        p.remove(3);
        assert_eq!(p.timeout(t0), None);
    }
}
