//! Software segmentation: GSO super-frames and partial checksums in, complete frames no
//! larger than the MTU out.
#![deny(clippy::indexing_slicing)]

use super::csum::{complete_partial_csum, fix_ipv4_header_csum, ones_complement_sum};
use super::parse::{self, put16, put32, IpFrame, PROTO_TCP, PROTO_UDP};
use super::vnet::{GsoKind, VnetHdr};
use super::OffloadError;

const TCP_FIN: u8 = 0x01;
const TCP_PSH: u8 = 0x08;
const TCP_CWR: u8 = 0x80;
const IPV4_DF: u16 = 0x4000;
const IPV4_MF: u16 = 0x2000;

/// Turns frames read from a TAP (virtio_net_hdr + frame) into complete frames that fit the
/// egress MTU, for a parent path without offloads (AF_XDP, AF_PACKET).
///
/// Holds one scratch buffer, reused for every segment (no allocation in steady state once it
/// has grown to one segment), and the identification counter for IPv6 fragments.
#[derive(Debug, Clone)]
pub struct Segmenter {
    pub(super) buf: Vec<u8>,
    frag_id: u32,
}

impl Default for Segmenter {
    fn default() -> Self {
        Self::new()
    }
}

impl Segmenter {
    /// A segmenter whose IPv6 fragment identifications start at 1.
    pub fn new() -> Segmenter {
        Self::with_frag_id_seed(1)
    }

    /// A segmenter whose IPv6 fragment identifications (UFO over IPv6 only) start at `seed`.
    /// Seed it randomly when several segmenters send for the same address pair.
    pub fn with_frag_id_seed(seed: u32) -> Segmenter {
        Segmenter {
            buf: Vec::with_capacity(2048),
            frag_id: seed,
        }
    }

    /// Makes `frame` (as read from a TAP, after its `hdr`) ready for a wire without offloads
    /// and hands each resulting frame to `out`, in order. Returns the number of frames given
    /// to `out`.
    ///
    /// * Not GSO, not `NEEDS_CSUM`: passed through unchanged (if it fits the MTU).
    /// * Not GSO, `NEEDS_CSUM`: the checksum at `csum_start + csum_offset` is completed.
    /// * TSO (`TCPV4`/`TCPV6`): the payload is split in segments of `gso_size` bytes, or
    ///   fewer if the MTU demands it (TCP is a byte stream, so smaller segments are legal).
    ///   Per segment: IPv4 total length, identification (+1 per segment), header checksum;
    ///   IPv6 payload length; TCP sequence number advanced; FIN and PSH kept only on the
    ///   last segment, CWR only on the first; the TCP checksum computed in full.
    /// * USO (`UDP_L4`): the payload is split in datagrams of `gso_size` bytes, each with its
    ///   own UDP length and full checksum, IPv4 identification +1 per datagram. Datagram
    ///   boundaries are the application's, so a datagram over the MTU is an error.
    /// * UFO (`UDP`, legacy): the one datagram gets its full UDP checksum and is split by IP
    ///   fragmentation (IPv4: MF/offset, DF cleared, identification kept; IPv6: a fragment
    ///   header with an identification from this segmenter's counter). IPv4 options and IPv6
    ///   extension headers are not supported with UFO.
    ///
    /// `mtu` is the L3 MTU (largest IP packet). Ethernet padding after the IP packet is not
    /// copied into segments. The `hdr_len` and `csum_start` of GSO frames are not trusted:
    /// headers are parsed from the frame. On error nothing has been given to `out`.
    pub fn segment(
        &mut self,
        hdr: &VnetHdr,
        frame: &[u8],
        mtu: usize,
        out: &mut impl FnMut(&[u8]),
    ) -> Result<usize, OffloadError> {
        let gso = match hdr.gso()? {
            GsoKind::None => return self.no_gso(hdr, frame, mtu, out),
            gso => gso,
        };
        if hdr.gso_size == 0 {
            return Err(OffloadError::ZeroGsoSize);
        }
        let p = parse::ip(frame)?;
        let mismatch = || OffloadError::GsoMismatch {
            gso_type: hdr.gso_type,
            ip_version: p.ip_version(),
            proto: p.proto,
        };
        let gso_size = usize::from(hdr.gso_size);
        match gso {
            GsoKind::TcpV4 | GsoKind::TcpV6 => {
                if p.proto != PROTO_TCP || p.v6 != (gso == GsoKind::TcpV6) {
                    return Err(mismatch());
                }
                self.tso(frame, &p, gso_size, mtu, out)
            }
            GsoKind::UdpL4 if p.proto == PROTO_UDP => self.uso(frame, &p, gso_size, mtu, out),
            GsoKind::Ufo if p.proto == PROTO_UDP => self.ufo(frame, &p, mtu, out),
            _ => Err(mismatch()),
        }
    }

    /// A frame that is not GSO: checked against the MTU, its partial checksum completed.
    fn no_gso(
        &mut self,
        hdr: &VnetHdr,
        frame: &[u8],
        mtu: usize,
        out: &mut impl FnMut(&[u8]),
    ) -> Result<usize, OffloadError> {
        let (l2, _) = parse::l2(frame)?;
        let len = frame.len() - l2;
        if len > mtu {
            return Err(OffloadError::ExceedsMtu { len, mtu });
        }
        if hdr.needs_csum() {
            check_csum_start(hdr, frame)?;
            self.buf.clear();
            self.buf.extend_from_slice(frame);
            complete_partial_csum(
                &mut self.buf,
                usize::from(hdr.csum_start),
                usize::from(hdr.csum_offset),
            )?;
            out(&self.buf);
        } else {
            out(frame);
        }
        Ok(1)
    }

    /// Copies `frame[..hdrs]` then `chunk` into the scratch buffer and fixes the IP length
    /// fields (for IPv4 also the identification `id` and the header checksum).
    fn start_segment(&mut self, frame: &[u8], p: &IpFrame, hdrs: usize, chunk: &[u8], id: u16) {
        self.buf.clear();
        // The callers checked hdrs ≤ end ≤ frame.len().
        self.buf
            .extend_from_slice(frame.get(..hdrs).unwrap_or_default());
        self.buf.extend_from_slice(chunk);
        let ip_len = self.buf.len() - p.l3;
        if p.v6 {
            put16(&mut self.buf, p.l3 + 4, (ip_len - 40) as u16);
        } else {
            put16(&mut self.buf, p.l3 + 2, ip_len as u16);
            put16(&mut self.buf, p.l3 + 4, id);
            // Cannot fail: the header was parsed from the same bytes.
            let _ = fix_ipv4_header_csum(&mut self.buf, p.l3);
        }
    }

    /// Stores the full L4 checksum (field at `l4 + field`) over `buf[l4..]`.
    fn finish_l4_csum(&mut self, p: &IpFrame, field: usize, udp: bool) {
        let l4_len = self.buf.len() - p.l4;
        put16(&mut self.buf, p.l4 + field, 0);
        let pseudo = parse::pseudo_sum(&self.buf, p, p.proto, l4_len);
        let mut csum = !ones_complement_sum(self.buf.get(p.l4..).unwrap_or_default(), pseudo);
        if udp && csum == 0 {
            csum = 0xffff;
        }
        put16(&mut self.buf, p.l4 + field, csum);
    }

    fn ipv4_id(frame: &[u8], p: &IpFrame) -> u16 {
        if p.v6 {
            0
        } else {
            parse::be16(frame, p.l3 + 4).unwrap_or(0)
        }
    }

    fn tso(
        &mut self,
        frame: &[u8],
        p: &IpFrame,
        gso_size: usize,
        mtu: usize,
        out: &mut impl FnMut(&[u8]),
    ) -> Result<usize, OffloadError> {
        let th = p.l4;
        let off_byte = *frame
            .get(th + 12)
            .filter(|_| th + 20 <= p.end)
            .ok_or(parse::truncated("TCP header", th + 20, p.end))?;
        let thl = usize::from(off_byte >> 4) * 4;
        if thl < 20 {
            return Err(OffloadError::Malformed {
                what: "TCP data offset below 20 bytes",
            });
        }
        let hdrs = th + thl;
        if hdrs > p.end {
            return Err(parse::truncated("TCP header with options", hdrs, p.end));
        }
        let l3_hdrs = hdrs - p.l3;
        if l3_hdrs >= mtu {
            return Err(OffloadError::ExceedsMtu {
                len: l3_hdrs + 1,
                mtu,
            });
        }
        let mss = gso_size.min(mtu - l3_hdrs);
        let payload =
            frame
                .get(hdrs..p.end)
                .ok_or(parse::truncated("TCP payload", p.end, frame.len()))?;
        let seq0 = parse::be32(frame, th + 4).unwrap_or(0);
        let flags0 =
            *frame
                .get(th + 13)
                .ok_or(parse::truncated("TCP header", th + 20, frame.len()))?;
        let id0 = Self::ipv4_id(frame, p);
        let nseg = payload.len().div_ceil(mss).max(1);
        for i in 0..nseg {
            let start = i * mss;
            let chunk = payload
                .get(start..(start + mss).min(payload.len()))
                .unwrap_or_default();
            self.start_segment(frame, p, hdrs, chunk, id0.wrapping_add(i as u16));
            put32(&mut self.buf, th + 4, seq0.wrapping_add(start as u32));
            let mut flags = flags0;
            if i + 1 < nseg {
                flags &= !(TCP_FIN | TCP_PSH);
            }
            if i > 0 {
                flags &= !TCP_CWR;
            }
            if let Some(f) = self.buf.get_mut(th + 13) {
                *f = flags;
            }
            self.finish_l4_csum(p, 16, false);
            out(&self.buf);
        }
        Ok(nseg)
    }

    fn uso(
        &mut self,
        frame: &[u8],
        p: &IpFrame,
        gso_size: usize,
        mtu: usize,
        out: &mut impl FnMut(&[u8]),
    ) -> Result<usize, OffloadError> {
        let hdrs = p.l4 + 8;
        if hdrs > p.end {
            return Err(parse::truncated("UDP header", hdrs, p.end));
        }
        let payload =
            frame
                .get(hdrs..p.end)
                .ok_or(parse::truncated("UDP payload", p.end, frame.len()))?;
        let largest = hdrs - p.l3 + gso_size.min(payload.len());
        if largest > mtu {
            return Err(OffloadError::ExceedsMtu { len: largest, mtu });
        }
        let id0 = Self::ipv4_id(frame, p);
        let nseg = payload.len().div_ceil(gso_size).max(1);
        for i in 0..nseg {
            let start = i * gso_size;
            let chunk = payload
                .get(start..(start + gso_size).min(payload.len()))
                .unwrap_or_default();
            self.start_segment(frame, p, hdrs, chunk, id0.wrapping_add(i as u16));
            put16(&mut self.buf, p.l4 + 4, (8 + chunk.len()) as u16);
            self.finish_l4_csum(p, 6, true);
            out(&self.buf);
        }
        Ok(nseg)
    }

    fn ufo(
        &mut self,
        frame: &[u8],
        p: &IpFrame,
        mtu: usize,
        out: &mut impl FnMut(&[u8]),
    ) -> Result<usize, OffloadError> {
        let l4 = p.l4;
        if l4 + 8 > p.end {
            return Err(parse::truncated("UDP header", l4 + 8, p.end));
        }
        let udp_len = p.end - l4;
        if udp_len > usize::from(u16::MAX) {
            return Err(OffloadError::Malformed {
                what: "UDP datagram longer than 65535 bytes",
            });
        }
        // The datagram's checksum, over all of it, with the length field set.
        let mut udp_hdr = [0u8; 8];
        let ports =
            frame
                .get(l4..l4 + 4)
                .ok_or(parse::truncated("UDP header", l4 + 8, frame.len()))?;
        udp_hdr[..4].copy_from_slice(ports);
        udp_hdr[4..6].copy_from_slice(&(udp_len as u16).to_be_bytes());
        let pseudo = parse::pseudo_sum(frame, p, PROTO_UDP, udp_len);
        let data =
            frame
                .get(l4..p.end)
                .ok_or(parse::truncated("UDP datagram", p.end, frame.len()))?;
        let sum = ones_complement_sum(
            data.get(8..).unwrap_or_default(),
            ones_complement_sum(&udp_hdr, pseudo),
        );
        let csum = match !sum {
            0 => 0xffff,
            c => c,
        };
        udp_hdr[6..8].copy_from_slice(&csum.to_be_bytes());

        if p.end - p.l3 <= mtu {
            self.buf.clear();
            self.buf
                .extend_from_slice(frame.get(..p.end).unwrap_or_default());
            if let Some(h) = self.buf.get_mut(l4..l4 + 8) {
                h.copy_from_slice(&udp_hdr);
            }
            out(&self.buf);
            return Ok(1);
        }
        let l3_hdr = l4 - p.l3;
        let (fixed, unit) = if p.v6 {
            if l3_hdr != 40 {
                return Err(OffloadError::Unsupported {
                    what: "UFO over IPv6 with extension headers",
                });
            }
            (48, mtu.saturating_sub(48) / 8 * 8)
        } else {
            if l3_hdr != 20 {
                return Err(OffloadError::Unsupported {
                    what: "UFO over IPv4 with IP options",
                });
            }
            (20, mtu.saturating_sub(20) / 8 * 8)
        };
        if unit == 0 {
            return Err(OffloadError::ExceedsMtu {
                len: fixed + 8,
                mtu,
            });
        }
        let nfrag = data.len().div_ceil(unit);
        let ident = self.frag_id;
        if p.v6 {
            self.frag_id = self.frag_id.wrapping_add(1);
        }
        for i in 0..nfrag {
            let start = i * unit;
            let chunk = data
                .get(start..(start + unit).min(data.len()))
                .unwrap_or_default();
            let more = if i + 1 < nfrag { 1u16 } else { 0 };
            self.buf.clear();
            self.buf
                .extend_from_slice(frame.get(..l4).unwrap_or_default());
            if p.v6 {
                if let Some(next) = self.buf.get_mut(p.l3 + 6) {
                    *next = 44;
                }
                put16(&mut self.buf, p.l3 + 4, (8 + chunk.len()) as u16);
                self.buf.extend_from_slice(&[PROTO_UDP, 0]);
                self.buf
                    .extend_from_slice(&((start as u16) | more).to_be_bytes());
                self.buf.extend_from_slice(&ident.to_be_bytes());
            } else {
                put16(&mut self.buf, p.l3 + 2, (20 + chunk.len()) as u16);
                let frag = ((start / 8) as u16) | if more == 1 { IPV4_MF } else { 0 };
                put16(&mut self.buf, p.l3 + 6, frag & !IPV4_DF);
                let _ = fix_ipv4_header_csum(&mut self.buf, p.l3);
            }
            let at = self.buf.len();
            self.buf.extend_from_slice(chunk);
            if i == 0 {
                if let Some(h) = self.buf.get_mut(at..at + 8) {
                    h.copy_from_slice(&udp_hdr);
                }
            }
            out(&self.buf);
        }
        Ok(nfrag)
    }
}

/// Checks that the partial checksum (`NEEDS_CSUM`) of `frame` starts after its L2 header:
/// the Ethernet header and every 802.1Q/802.1ad tag. Completing a checksum writes 16 bits
/// at `csum_start + csum_offset`, computed over bytes the sender chose; starting any earlier
/// the sender could write into the addresses or, worse, into a VLAN tag uvlan inserted for
/// the network (and so send into another VLAN). Every path that completes a partial checksum
/// of a frame from an endpoint — in software ([`Segmenter::segment`] does this check) or by
/// the NIC through AF_XDP TX metadata — must check it first. Frames without `NEEDS_CSUM`
/// pass.
pub fn check_csum_start(hdr: &VnetHdr, frame: &[u8]) -> Result<(), OffloadError> {
    if !hdr.needs_csum() {
        return Ok(());
    }
    let mut l2 = 12;
    while let Some(t) = parse::be16(frame, l2) {
        if t != 0x8100 && t != 0x88a8 {
            break;
        }
        l2 += 4;
    }
    let l2 = l2 + 2;
    if usize::from(hdr.csum_start) < l2 {
        return Err(OffloadError::Malformed {
            what: "csum_start points into the Ethernet header or a VLAN tag",
        });
    }
    Ok(())
}

/// Checks a TCP (TSO) or UDP (USO) GSO super-frame for a kernel that segments it itself — a
/// packet socket with `PACKET_VNET_HDR`, which hands it on as a GSO skb, as the kernel's
/// upper devices do with theirs — and returns the header to send with it: `NEEDS_CSUM` at the
/// L4 checksum, `hdr_len` the exact header length (Ethernet to the end of the L4 header),
/// `gso_type`/`gso_size` as given, and `gso_size` lowered if a segment would not fit `mtu`.
///
/// Errors for anything else (not GSO, UFO, no partial checksum, inconsistent headers): such
/// frames take [`Segmenter::segment`] instead.
pub fn kernel_gso_header(hdr: &VnetHdr, frame: &[u8], mtu: usize) -> Result<VnetHdr, OffloadError> {
    let kind = hdr.gso()?;
    if hdr.gso_size == 0 {
        return Err(OffloadError::ZeroGsoSize);
    }
    if !hdr.needs_csum() {
        return Err(OffloadError::Unsupported {
            what: "GSO frame without a partial checksum",
        });
    }
    let p = parse::ip(frame)?;
    let mismatch = OffloadError::GsoMismatch {
        gso_type: hdr.gso_type,
        ip_version: p.ip_version(),
        proto: p.proto,
    };
    let (l4_len, csum_offset) = match kind {
        GsoKind::TcpV4 | GsoKind::TcpV6 => {
            if p.proto != PROTO_TCP || p.v6 != (kind == GsoKind::TcpV6) {
                return Err(mismatch);
            }
            let doff = frame.get(p.l4 + 12).copied().unwrap_or(0) >> 4;
            let len = usize::from(doff) * 4;
            if len < 20 {
                return Err(OffloadError::Malformed {
                    what: "TCP data offset below 20 bytes",
                });
            }
            (len, 16)
        }
        GsoKind::UdpL4 if p.proto == PROTO_UDP => (8, 6),
        GsoKind::None => {
            return Err(OffloadError::Unsupported {
                what: "not a GSO frame",
            })
        }
        GsoKind::Ufo => {
            return Err(OffloadError::Unsupported {
                what: "UFO is segmented in software",
            })
        }
        GsoKind::UdpL4 => return Err(mismatch),
    };
    let hdr_end = p.l4 + l4_len;
    if hdr_end > p.end {
        return Err(parse::truncated("L4 header", hdr_end, p.end));
    }
    if usize::from(hdr.csum_start) != p.l4 || usize::from(hdr.csum_offset) != csum_offset {
        return Err(OffloadError::Malformed {
            what: "csum_start/csum_offset do not point at the L4 checksum",
        });
    }
    let headers = hdr_end - p.l3;
    if mtu <= headers {
        return Err(OffloadError::ExceedsMtu {
            len: headers + 1,
            mtu,
        });
    }
    let room = mtu - headers;
    let mut gso_size = usize::from(hdr.gso_size);
    if gso_size > room {
        if kind == GsoKind::UdpL4 {
            // Datagram boundaries are the sender's: they cannot be cut smaller.
            return Err(OffloadError::ExceedsMtu {
                len: headers + gso_size,
                mtu,
            });
        }
        gso_size = room;
    }
    Ok(VnetHdr {
        flags: VnetHdr::F_NEEDS_CSUM,
        gso_type: hdr.gso_type,
        hdr_len: u16::try_from(hdr_end).unwrap_or(u16::MAX),
        gso_size: u16::try_from(gso_size).unwrap_or(u16::MAX),
        csum_start: hdr.csum_start,
        csum_offset: hdr.csum_offset,
        num_buffers: 0,
    })
}
