//! The virtio_net_hdr that a TAP opened with `IFF_VNET_HDR` puts before every frame.
#![deny(clippy::indexing_slicing)]

use super::OffloadError;

/// A 12-byte `virtio_net_hdr` (virtio 1.0 layout, with `num_buffers`), as read from and
/// written to a TAP opened with `IFF_VNET_HDR` and `TUNSETVNETHDRSZ` 12.
///
/// Multi-byte fields are little-endian on the wire. The kernel uses little-endian when the
/// host is little-endian (every target uvlan supports) or when `TUNSETVNETLE` is set; a
/// big-endian host must set `TUNSETVNETLE` on the TAP.
///
/// This is the crate's only virtio_net_hdr type: the TAP wrapper uses it too.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct VnetHdr {
    /// [`VnetHdr::F_NEEDS_CSUM`], [`VnetHdr::F_DATA_VALID`], [`VnetHdr::F_RSC_INFO`].
    pub flags: u8,
    /// One of the `GSO_*` constants, optionally or'ed with [`VnetHdr::GSO_ECN`].
    pub gso_type: u8,
    /// Length of the headers (Ethernet to end of L4 header). The kernel fills it with the
    /// linear length of its buffer, so it is a hint only; this module never trusts it.
    pub hdr_len: u16,
    /// GSO: payload bytes per segment (the MSS for TCP, the datagram payload for USO).
    pub gso_size: u16,
    /// With `NEEDS_CSUM`: where checksumming starts, from the frame start (Ethernet header).
    pub csum_start: u16,
    /// With `NEEDS_CSUM`: where the 16-bit checksum goes, from `csum_start`.
    pub csum_offset: u16,
    /// Mergeable RX buffers count; unused by TAPs, written as 0.
    pub num_buffers: u16,
}

/// The GSO type of a frame, decoded from [`VnetHdr::gso_type`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GsoKind {
    /// Not a GSO frame.
    None,
    /// TCP over IPv4 (TSO4).
    TcpV4,
    /// TCP over IPv6 (TSO6).
    TcpV6,
    /// UDP segmentation offload (USO): one UDP datagram per `gso_size` bytes of payload.
    UdpL4,
    /// Legacy UDP fragmentation offload (UFO): one datagram, split by IP fragmentation.
    Ufo,
}

impl VnetHdr {
    /// Size of the header as configured with `TUNSETVNETHDRSZ`.
    pub const LEN: usize = 12;
    /// Flag: the checksum is partial; finish it from `csum_start` to the end of the frame
    /// and store it at `csum_start + csum_offset`.
    pub const F_NEEDS_CSUM: u8 = 1;
    /// Flag: the checksum was verified (receive side hint).
    pub const F_DATA_VALID: u8 = 2;
    /// Flag: RSC coalescing information present (not used by TAPs).
    pub const F_RSC_INFO: u8 = 4;
    /// gso_type: not a GSO frame.
    pub const GSO_NONE: u8 = 0;
    /// gso_type: TCP over IPv4.
    pub const GSO_TCPV4: u8 = 1;
    /// gso_type: legacy UFO (IP fragmentation of one UDP datagram).
    pub const GSO_UDP: u8 = 3;
    /// gso_type: TCP over IPv6.
    pub const GSO_TCPV6: u8 = 4;
    /// gso_type: UDP segmentation (USO).
    pub const GSO_UDP_L4: u8 = 5;
    /// gso_type bit: the TCP frame carries CWR (ECN); only the first segment keeps it.
    pub const GSO_ECN: u8 = 0x80;

    /// Splits a buffer read from a TAP into its header and the frame that follows.
    pub fn parse(buf: &[u8]) -> Result<(VnetHdr, &[u8]), OffloadError> {
        let Some((head, frame)) = buf.split_first_chunk::<{ VnetHdr::LEN }>() else {
            return Err(OffloadError::ShortVnetHdr {
                have: buf.len(),
                need: Self::LEN,
            });
        };
        Ok((Self::from_bytes(head), frame))
    }

    /// Decodes the 12 header bytes.
    pub fn from_bytes(b: &[u8; VnetHdr::LEN]) -> VnetHdr {
        let [flags, gso_type, h0, h1, g0, g1, s0, s1, o0, o1, n0, n1] = *b;
        VnetHdr {
            flags,
            gso_type,
            hdr_len: u16::from_le_bytes([h0, h1]),
            gso_size: u16::from_le_bytes([g0, g1]),
            csum_start: u16::from_le_bytes([s0, s1]),
            csum_offset: u16::from_le_bytes([o0, o1]),
            num_buffers: u16::from_le_bytes([n0, n1]),
        }
    }

    /// Encodes the header, ready to be written before a frame.
    pub fn to_bytes(&self) -> [u8; VnetHdr::LEN] {
        let mut b = [0u8; Self::LEN];
        b[0] = self.flags;
        b[1] = self.gso_type;
        b[2..4].copy_from_slice(&self.hdr_len.to_le_bytes());
        b[4..6].copy_from_slice(&self.gso_size.to_le_bytes());
        b[6..8].copy_from_slice(&self.csum_start.to_le_bytes());
        b[8..10].copy_from_slice(&self.csum_offset.to_le_bytes());
        b[10..12].copy_from_slice(&self.num_buffers.to_le_bytes());
        b
    }

    /// True when the frame's L4 checksum is partial (`NEEDS_CSUM`).
    pub fn needs_csum(&self) -> bool {
        self.flags & Self::F_NEEDS_CSUM != 0
    }

    /// True when the ECN bit of `gso_type` is set.
    pub fn ecn(&self) -> bool {
        self.gso_type & Self::GSO_ECN != 0
    }

    /// Decodes `gso_type` (ignoring the ECN bit).
    pub fn gso(&self) -> Result<GsoKind, OffloadError> {
        match self.gso_type & !Self::GSO_ECN {
            Self::GSO_NONE => Ok(GsoKind::None),
            Self::GSO_TCPV4 => Ok(GsoKind::TcpV4),
            Self::GSO_TCPV6 => Ok(GsoKind::TcpV6),
            Self::GSO_UDP_L4 => Ok(GsoKind::UdpL4),
            Self::GSO_UDP => Ok(GsoKind::Ufo),
            _ => Err(OffloadError::UnknownGsoType {
                gso_type: self.gso_type,
            }),
        }
    }
}
