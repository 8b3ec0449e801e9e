//! Packet capture: every frame at every port, with the engine's decision about it.
//!
//! - [`tap`]: the data path. The dataplane thread records frames into a bounded, lossy
//!   buffer per capture ([`CaptureTap`], [`TapSession`]); a control thread takes them out
//!   ([`CaptureReader`]). It costs one length check per frame while nobody captures.
//! - [`decision`]: the decision a record carries ([`Decision`]: forward/drop, the
//!   [`DropReason`](crate::fwd::DropReason), the kernel function), a small `Copy` value
//!   filled by a tracer that watches only a decision's outputs ([`CaptureTracer`]).
//! - [`pcapng`]: a pcapng writer (interfaces named, direction flags, comments, statistics).
//! - [`read`]: a checked pcap/pcapng reader, for replaying captures and for reading the
//!   capture stream back.
//! - [`mod@feed`]: what the run loop records for one frame, without I/O.
//! - [`summary`]: one line about a frame, like tcpdump's.
//!
//! # The run loop's hook
//! The loop owns one [`CaptureTap`] per thread that forwards frames, and calls:
//!
//! ```text
//! // A capture starts (DataplaneHandle::start_capture, run as a command on the thread):
//! let (session, reader) = capture::open(filter);   // control thread
//! tap.attach(session);                               // dataplane thread (clone per worker)
//!
//! // Each frame read from a TAP or a wire:
//! if tap.is_idle() {
//!     r = engine.decide(frame, ingress, routes, &mut out);
//! } else {
//!     r = engine.decide_traced(frame, ingress, routes, &mut out, &mut tracer);
//!     d = tracer.decision(r, &out);
//!     tap.record(capture::ingress_point(ingress), Direction::Inbound, frame, d);
//! }
//! // Each copy written to a TAP or queued on a wire (after VLAN push/pop, the routed
//! // header, segmentation), only when !tap.is_idle():
//! tap.record(point_of_output, Direction::Outbound, bytes, tracer.output(d, o.target));
//! // A copy the I/O layer could not deliver (IoDrop):
//! tap.record(point_of_output, Direction::Outbound, bytes, tracer.output(d, o.target)
//!                                                            .not_delivered(io.as_str()));
//! // Once per loop iteration:
//! tap.end_batch();
//! ```
//!
//! [`feed()`] is exactly this, without I/O.
//!
//! # Why not the `pcap-file` crate
//! `pcap-file` 2.0.0 (the current release; 3.0 is a release candidate) was evaluated for
//! both halves and not taken: its Enhanced Packet Block reader and writer take timestamps
//! as nanoseconds whatever the interface's `if_tsresol` says (the pcapng default is
//! microseconds, so files from tcpdump and dumpcap read wrongly), a Simple Packet Block's
//! data includes its padding, its parsers `unwrap` after their own length checks and its
//! streaming reader grows its buffer to whatever length a block announces (no bound), and it
//! would bring `thiserror` 1 and a proc-macro crate into the dataplane. What uvlan needs is
//! small: the writer is five block types, the reader seven, each field read through a
//! checked accessor (`#![forbid(unsafe_code)]`, `#![deny(clippy::indexing_slicing)]`) and
//! fuzzed (`dataplane/fuzz/fuzz_targets/capture_read.rs`); the files are checked against a
//! real reader (tshark) in the control plane's tests.
#![forbid(unsafe_code)]
#![deny(clippy::indexing_slicing)]

pub mod decision;
pub mod feed;
pub mod pcapng;
pub mod read;
pub mod summary;
pub mod tap;

pub use decision::{CaptureTracer, Decision, Fate, Point};
pub use feed::{feed, ingress_point, output_point};
pub use pcapng::{InterfaceSpec, PacketSpec, PcapngWriter, StatisticsSpec};
pub use read::{Decoder, Event, Interface, Packet, ReadError, Reader};
pub use tap::{
    open, Batch, CaptureCounts, CaptureFilter, CaptureReader, CaptureTap, End, Record, Stopper,
    TapSession, WireFilter,
};

/// Which way a frame went at the point where it was seen (pcapng `epb_flags` bits 0-1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// It entered uvlan there: sent by the endpoint, or received from the wire.
    Inbound,
    /// uvlan wrote it there: delivered to the endpoint, or sent to the wire.
    Outbound,
}

#[cfg(test)]
mod tests;
