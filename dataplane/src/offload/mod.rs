//! Software offloads for the I/O edge: checksum completion, segmentation (TSO/USO/UFO) and
//! receive coalescing (GRO). Pure code: no I/O, no `unsafe`, no clock; the only allocations
//! are caller-owned scratch buffers that are reused from frame to frame.
//!
//! Why it exists: uvlan's endpoints are TAPs opened with `IFF_VNET_HDR` and the offloads
//! `CSUM|TSO4|TSO6|USO4|USO6`. Frames read from such a TAP start with a [`VnetHdr`] and may
//! carry a partial checksum (`NEEDS_CSUM`) or be GSO super-frames of up to 64 KiB. TAP→TAP they
//! pass through unchanged, but the parent NIC path (AF_XDP, AF_PACKET) has no offloads, so:
//!
//! * TAP → wire: [`kernel_gso_header`] checks a TCP/UDP super-frame for a kernel that
//!   segments it itself (an AF_PACKET socket with `PACKET_VNET_HDR`); otherwise
//!   [`Segmenter::segment`] turns every frame into complete, MTU-sized frames.
//! * wire → TAP: [`Gro`] coalesces consecutive in-order TCP segments of one flow into a GSO
//!   super-frame with a `NEEDS_CSUM` virtio header, so TCP is not bound to one `write(2)` per
//!   1,500 bytes.
//!
//! # The one `VnetHdr`
//!
//! [`VnetHdr`] is the canonical virtio_net_hdr type of the crate. The TAP wrapper
//! (`port::tap`) must use it (`crate::offload::VnetHdr`) rather than define its own: it opens
//! the TAP with `TUNSETVNETHDRSZ` = [`VnetHdr::LEN`] (12), parses what `read(2)` returns with
//! [`VnetHdr::parse`] and writes [`VnetHdr::to_bytes`] in front of each frame (`writev`).
//!
//! # Offsets and MTU
//!
//! All offsets (`csum_start`, `hdr_len`) count from the first byte of the Ethernet header,
//! as the kernel's do, so frames with one or two 802.1Q/802.1ad tags work unchanged. The
//! `mtu` taken by [`Segmenter::segment`] is an L3 MTU, like a Linux interface MTU: the
//! largest IP packet, not counting the Ethernet header and VLAN tags.
#![forbid(unsafe_code)]

mod csum;
mod gro;
mod parse;
mod segment;
mod vnet;

pub use csum::{
    complete_l4_csum, complete_partial_csum, fix_ipv4_header_csum, internet_checksum,
    ones_complement_add, ones_complement_sum, pseudo_header_sum_v4, pseudo_header_sum_v6,
};
pub use gro::{Gro, GroStats};
pub use segment::{check_csum_start, kernel_gso_header, Segmenter};
pub use vnet::{GsoKind, VnetHdr};

/// Why a frame could not be segmented, checksummed or parsed. The caller drops the frame and
/// counts the error; nothing has been emitted for that frame when an error is returned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OffloadError {
    /// The buffer read from the TAP is shorter than a virtio_net_hdr.
    #[error(
        "virtio_net_hdr needs {need} bytes but the buffer has {have}; open the TAP with \
         IFF_VNET_HDR and TUNSETVNETHDRSZ {need}, and read whole frames"
    )]
    ShortVnetHdr {
        /// Bytes available.
        have: usize,
        /// Bytes needed.
        need: usize,
    },
    /// A header runs past the end of the frame (or of the IP packet).
    #[error("truncated frame: the {what} needs {need} bytes but only {have} are there; drop it")]
    Truncated {
        /// Which header was being read.
        what: &'static str,
        /// Bytes needed, counted from the frame start.
        need: usize,
        /// Bytes available.
        have: usize,
    },
    /// Segmentation needs IPv4 or IPv6 but the frame carries something else.
    #[error(
        "ethertype {ethertype:#06x} is neither IPv4 nor IPv6, so it cannot be segmented; drop it"
    )]
    NotIp {
        /// The innermost ethertype.
        ethertype: u16,
    },
    /// A header field is inconsistent (lengths, version).
    #[error("malformed frame: {what}; drop it")]
    Malformed {
        /// What is wrong.
        what: &'static str,
    },
    /// Well-formed, but a case this module does not handle.
    #[error("unsupported frame: {what}; drop it and count it")]
    Unsupported {
        /// What is not supported.
        what: &'static str,
    },
    /// The virtio_net_hdr names a GSO type this module does not know.
    #[error(
        "unknown virtio_net_hdr gso_type {gso_type:#04x} (known: 1 TCPV4, 3 UDP, 4 TCPV6, \
         5 UDP_L4, plus ECN 0x80); the TAP offloads and this code disagree"
    )]
    UnknownGsoType {
        /// The raw gso_type byte.
        gso_type: u8,
    },
    /// A GSO frame with gso_size 0 cannot be split.
    #[error("GSO frame with gso_size 0 cannot be segmented; drop it")]
    ZeroGsoSize,
    /// The GSO type does not match the frame's IP version or L4 protocol.
    #[error(
        "virtio_net_hdr gso_type {gso_type:#04x} does not match the frame (IPv{ip_version}, \
         L4 protocol {proto}); drop it"
    )]
    GsoMismatch {
        /// The raw gso_type byte.
        gso_type: u8,
        /// The frame's IP version.
        ip_version: u8,
        /// The frame's L4 protocol number.
        proto: u8,
    },
    /// `csum_start + csum_offset + 2` lies beyond the frame.
    #[error(
        "checksum field at csum_start {start} + csum_offset {offset} does not fit in the \
         {len}-byte frame; drop it"
    )]
    CsumOutOfBounds {
        /// csum_start.
        start: usize,
        /// csum_offset.
        offset: usize,
        /// Frame length.
        len: usize,
    },
    /// The packet (or a datagram that must not be split) is larger than the MTU.
    #[error(
        "{len}-byte IP packet exceeds the egress MTU {mtu} and may not be split further; \
         drop it (or raise the parent MTU)"
    )]
    ExceedsMtu {
        /// L3 length that would have to be sent.
        len: usize,
        /// The L3 MTU given.
        mtu: usize,
    },
}

#[cfg(test)]
mod tests;
