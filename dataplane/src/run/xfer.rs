//! Frames crossing workers. A parent's wire belongs to one worker; a frame another worker
//! decides for it is copied into a pooled buffer and pushed on a bounded lock-free queue
//! (one per ordered pair of workers), and the owner's eventfd is rung once per turn. The
//! owner transmits it in its next turn and hands the buffer back through the pair's return
//! queue, so the steady state allocates nothing. A full queue drops the frame as `wire_full`.

use std::os::fd::OwnedFd;
use std::sync::Arc;

use crossbeam_queue::ArrayQueue;

use crate::capture::Decision;
use crate::fwd::{ParentId, VlanOp};
use crate::offload::VnetHdr;
use crate::wire::MacAddr;

use super::ring_bell;

/// Frames in flight from one worker to another at most.
pub(crate) const LANE_FRAMES: usize = 256;

/// What the owner does with a transferred frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum XferTarget {
    /// `Target::Wire` with this VLAN operation.
    Wire(VlanOp),
    /// `Target::Routed` to this next hop, with this VLAN operation.
    Routed(MacAddr, VlanOp),
    /// `Target::HostStack` for a frame the host never saw, with this VLAN operation.
    Host(VlanOp),
}

/// One transferred frame (the buffer is reused).
pub(crate) struct Xfer {
    pub(crate) parent: ParentId,
    pub(crate) target: XferTarget,
    pub(crate) hdr: VnetHdr,
    pub(crate) data: Vec<u8>,
    /// The decision about it, when the deciding worker was capturing.
    pub(crate) cap: Option<Decision>,
}

/// One direction between two workers: frames to send, and emptied buffers coming back.
pub(crate) struct Lane {
    full: ArrayQueue<Xfer>,
    empty: ArrayQueue<Xfer>,
}

impl Lane {
    pub(crate) fn new() -> Lane {
        Lane {
            full: ArrayQueue::new(LANE_FRAMES),
            empty: ArrayQueue::new(LANE_FRAMES),
        }
    }
}

/// An outgoing lane: destination worker, the lane, the destination's eventfd.
pub(crate) type LaneOut = (usize, Arc<Lane>, Arc<OwnedFd>);

/// A worker's outgoing lanes, by destination worker.
#[derive(Default)]
pub(crate) struct XferOut {
    lanes: Vec<Option<(Arc<Lane>, Arc<OwnedFd>)>>,
    /// Buffers this worker made per lane (at most `LANE_FRAMES`).
    made: Vec<usize>,
    /// Lanes pushed to this turn (their owner's bell rings at the end of it).
    rung: Vec<bool>,
}

impl XferOut {
    /// Lanes to every other worker: `(destination, lane, its bell)`.
    pub(crate) fn new(lanes: Vec<LaneOut>) -> XferOut {
        let n = lanes.iter().map(|(d, _, _)| d + 1).max().unwrap_or(0);
        let mut out = XferOut {
            lanes: (0..n).map(|_| None).collect(),
            made: vec![0; n],
            rung: vec![false; n],
        };
        for (d, lane, bell) in lanes {
            if let Some(slot) = out.lanes.get_mut(d) {
                *slot = Some((lane, bell));
            }
        }
        out
    }

    /// Copies `frame` into a buffer for worker `owner`. False when the lane is full (or there
    /// is no such worker).
    pub(crate) fn push(
        &mut self,
        owner: usize,
        parent: ParentId,
        target: XferTarget,
        hdr: &VnetHdr,
        frame: &[u8],
        cap: Option<Decision>,
    ) -> bool {
        let (Some(Some((lane, _))), Some(made)) = (self.lanes.get(owner), self.made.get_mut(owner))
        else {
            return false;
        };
        let mut x = match lane.empty.pop() {
            Some(x) => x,
            None if *made < LANE_FRAMES => {
                *made += 1;
                Xfer {
                    parent,
                    target,
                    hdr: *hdr,
                    data: Vec::with_capacity(frame.len().max(2048)),
                    cap,
                }
            }
            None => return false,
        };
        x.parent = parent;
        x.target = target;
        x.hdr = *hdr;
        x.cap = cap;
        x.data.clear();
        x.data.extend_from_slice(frame);
        match lane.full.push(x) {
            Ok(()) => {
                if let Some(r) = self.rung.get_mut(owner) {
                    *r = true;
                }
                true
            }
            // Cannot happen (a lane holds as many frames as buffers exist); keep the buffer.
            Err(x) => {
                let _ = lane.empty.push(x);
                false
            }
        }
    }

    /// Rings the bell of every worker that got frames this turn; returns the number of
    /// system calls made.
    pub(crate) fn ring(&mut self) -> u64 {
        let mut n = 0;
        for (i, r) in self.rung.iter_mut().enumerate() {
            if std::mem::take(r) {
                if let Some(Some((_, bell))) = self.lanes.get(i) {
                    let _ = ring_bell(bell);
                    n += 1;
                }
            }
        }
        n
    }
}

/// A worker's incoming lanes.
#[derive(Default)]
pub(crate) struct XferIn {
    lanes: Vec<Arc<Lane>>,
}

impl XferIn {
    pub(crate) fn new(lanes: Vec<Arc<Lane>>) -> XferIn {
        XferIn { lanes }
    }

    /// Hands every waiting frame to `f`, then its buffer back to the sender.
    pub(crate) fn drain(&self, f: &mut dyn FnMut(&Xfer)) {
        for lane in &self.lanes {
            while let Some(x) = lane.full.pop() {
                f(&x);
                let _ = lane.empty.push(x);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_cross_in_order_and_buffers_come_back() {
        let lane = Arc::new(Lane::new());
        let bell = Arc::new(super::super::eventfd().unwrap());
        let mut out = XferOut::new(vec![(1, Arc::clone(&lane), bell)]);
        let inn = XferIn::new(vec![Arc::clone(&lane)]);
        let h = VnetHdr::default();
        for i in 0..LANE_FRAMES {
            assert!(out.push(
                1,
                ParentId(3),
                XferTarget::Wire(VlanOp::Keep),
                &h,
                &[i as u8],
                None
            ));
        }
        assert!(!out.push(
            1,
            ParentId(3),
            XferTarget::Wire(VlanOp::Keep),
            &h,
            &[0],
            None
        ));
        assert!(!out.push(
            0,
            ParentId(3),
            XferTarget::Wire(VlanOp::Keep),
            &h,
            &[0],
            None
        ));
        assert_eq!(out.ring(), 1);
        assert_eq!(out.ring(), 0);
        let mut seen = Vec::new();
        inn.drain(&mut |x| {
            assert_eq!(x.parent, ParentId(3));
            seen.push(x.data[0]);
        });
        assert_eq!(seen, (0..LANE_FRAMES).map(|i| i as u8).collect::<Vec<_>>());
        // The buffers are reused: no more are made.
        assert!(out.push(
            1,
            ParentId(4),
            XferTarget::Wire(VlanOp::Pop),
            &h,
            &[9, 9],
            None
        ));
        assert_eq!(out.made[1], LANE_FRAMES);
    }
}
