//! The run loop's capture hook: what each worker records while a capture is attached.
//!
//! Every worker owns one [`CaptureTap`]; [`DataplaneHandle::start_capture`] attaches a clone
//! of the capture's session to the tap of every worker (see [`crate::capture`]). While no
//! capture is attached the per-frame cost is one branch on an empty `Vec`
//! (`CaptureTap::is_idle`): the frame is decided with `Engine::decide`, as before. While
//! one is attached, every frame is decided with `Engine::decide_traced` and a
//! [`CaptureTracer`](crate::capture::CaptureTracer): the same decision code, the same
//! outputs, plus the kernel function behind each output.
//!
//! What is recorded, and where:
//! - **inbound**, at the ingress point (the sender's TAP, or the parent's wire as read from
//!   the XSK or the AF_PACKET socket), with the decision: a forward, or a drop with its
//!   `DropReason` (drops are kept only when the capture asked for them);
//! - **outbound**, for each output written to a TAP or handed to a wire, as the I/O layer
//!   writes it: after the VLAN tag is pushed or popped, with a routed packet's new Ethernet
//!   header. A copy the I/O layer refused synchronously (no TAP, TAP down, the wire queue
//!   full, an offload error, no wire) is recorded as *not delivered* with its `IoDrop`
//!   name (a `--drops` record; a wire copy that never reached the wire carries the network's
//!   tag, so it is recorded on that network's wire interface); a TAP write queued on io_uring
//!   whose completion fails later is counted (`tap_full`, ...) but its record says it was
//!   forwarded.
//! - **GSO**: the frames the dataplane handled. A GSO super-frame from an endpoint is one
//!   inbound record (up to 64 KiB) and one outbound record per output, whether the kernel
//!   or the software segmenter cuts it for the wire afterwards; a wire frame going to an
//!   endpoint is recorded before the endpoint's GRO merges it with others. A frame whose
//!   checksum the sender left partial (`VIRTIO_NET_HDR_F_NEEDS_CSUM`) is recorded as read:
//!   its checksum field holds the pseudo-header sum, as tcpdump shows on a veth.
//! - A frame another worker decided for a wire this worker owns carries that decision in
//!   its transfer and is recorded here, when transmitted.
//!
//! Nothing is allocated per frame: records go into the capture's preallocated buffers, and a
//! full buffer loses the record (counted by the capture), never the frame.
//!
//! [`DataplaneHandle::start_capture`]: super::DataplaneHandle::start_capture

use crate::capture::{CaptureTap, Decision, Direction, Point};

use super::IoDrop;

/// One worker's capture tap, and the decision about the output being performed.
#[derive(Debug, Default)]
pub(crate) struct Recorder {
    /// The captures attached to this worker.
    pub(crate) tap: CaptureTap,
    /// The decision about the output being performed (`None`: it is not recorded).
    pub(crate) out: Option<Decision>,
    /// The I/O drop counters before that output.
    snap: [u64; IoDrop::COUNT],
}

impl Recorder {
    /// Whether no capture is attached.
    #[inline]
    pub(crate) fn is_idle(&self) -> bool {
        self.tap.is_idle()
    }

    /// Before an output is performed with the decision `d` (`None`: not recorded).
    #[inline]
    pub(crate) fn before(&mut self, d: Option<Decision>, io_drops: &[u64; IoDrop::COUNT]) {
        self.out = d;
        if d.is_some() {
            self.snap = *io_drops;
        }
    }

    /// After the output: records `frame` (as written) outbound at `point`, as not delivered
    /// when an I/O drop counter moved meanwhile.
    #[inline]
    pub(crate) fn after(&mut self, point: Point, frame: &[u8], io_drops: &[u64; IoDrop::COUNT]) {
        let Some(d) = self.out else {
            return;
        };
        if !self.tap.watches(point) {
            return;
        }
        let moved = IoDrop::ALL.iter().find(|r| {
            let i = r.index();
            io_drops.get(i) != self.snap.get(i)
        });
        let d = match moved {
            Some(r) => d.not_delivered(r.as_str()),
            None => d,
        };
        self.tap.record(point, Direction::Outbound, frame, d);
    }

    /// The output is done.
    #[inline]
    pub(crate) fn done(&mut self) {
        self.out = None;
    }
}
