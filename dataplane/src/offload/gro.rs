//! Receive coalescing (GRO) for the wire → TAP direction.
#![deny(clippy::indexing_slicing)]

use super::csum::{fix_ipv4_header_csum, ones_complement_sum};
use super::parse::{self, put16, IpFrame, PROTO_TCP};
use super::vnet::VnetHdr;

const TCP_FIN: u8 = 0x01;
const TCP_SYN: u8 = 0x02;
const TCP_RST: u8 = 0x04;
const TCP_PSH: u8 = 0x08;
const TCP_ACK: u8 = 0x10;
const TCP_URG: u8 = 0x20;
const TCP_CWR: u8 = 0x80;
const IPV4_DF: u16 = 0x4000;

/// Counters kept by a [`Gro`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GroStats {
    /// Frames given to [`Gro::push`].
    pub frames_in: u64,
    /// Frames handed to the output callback (plain and coalesced).
    pub frames_out: u64,
    /// Of `frames_out`, GSO super-frames made of two segments or more.
    pub coalesced: u64,
    /// Segments that went into those super-frames.
    pub coalesced_segments: u64,
    /// TCP segments with a bad IPv4 header or TCP checksum, passed on unmerged for the
    /// kernel to drop and count.
    pub bad_csum: u64,
}

/// The super-frame being built.
#[derive(Debug, Clone, Copy)]
struct Held {
    ip: IpFrame,
    /// End of the TCP header (with options).
    hdrs: usize,
    /// Payload bytes per segment: the first segment's payload length.
    mss: usize,
    segs: u32,
    next_seq: u32,
    last_id: u16,
}

/// A TCP segment that may be coalesced (verified checksums, ACK set, no SYN/RST/URG, no
/// options but NOP/EOL/timestamps, payload present).
#[derive(Debug, Clone, Copy)]
struct Seg {
    ip: IpFrame,
    hdrs: usize,
    seq: u32,
    flags: u8,
    id: u16,
}

impl Seg {
    fn payload_len(&self) -> usize {
        self.ip.end - self.hdrs
    }
}

/// Coalesces complete frames received from the wire into GSO super-frames for a TAP opened
/// with `IFF_VNET_HDR` and `TUNSETOFFLOAD` TSO4/TSO6 (one `Gro` per destination TAP).
///
/// Feed frames in arrival order with [`Gro::push`], then call [`Gro::flush`] at the end of
/// each receive batch. Every frame comes out exactly once, in order, with the virtio header
/// to write before it, either on its own or merged into a super-frame.
///
/// # What merges
///
/// One flow is held at a time. A frame joins the held super-frame when it is the next
/// in-order TCP segment of the same flow with nothing that a receiver would need to see on its
/// own, following the rules of Linux's `tcp_gro_receive`:
/// * identical Ethernet header (addresses, VLAN tags, ethertype);
/// * IPv4 without options and not fragmented, same TOS, TTL, addresses and DF, and an
///   identification one above the previous segment's unless DF is set; or IPv6 without
///   extension headers, same traffic class, flow label, hop limit and addresses;
/// * same ports, acknowledgment number, window, header length and option bytes (only NOP,
///   EOL and timestamps allowed, so timestamps must match); ACK set; no SYN, RST, URG; CWR
///   only on the first segment; ECE the same;
/// * sequence number = previous sequence + previous payload; payload no larger than the
///   first segment's (the MSS); the IP packet stays within 65,535 bytes;
/// * both checksums (IPv4 header, TCP) verified here.
///
/// A segment with PSH or FIN, or shorter than the MSS, is merged and ends the super-frame.
/// Anything else (other flows, pure ACKs, non-TCP, bad checksums) first flushes what is held,
/// then passes through unchanged with a plain header (`flags` 0, `GSO_NONE`), so the kernel
/// checks it as it checks any frame.
///
/// # The header of a super-frame
///
/// IPv4 total length / IPv6 payload length cover the super-frame, the IPv4 identification
/// is the first segment's, the IPv4 header checksum is recomputed, TCP flags are the first
/// segment's plus PSH/FIN of the last. The virtio header says `NEEDS_CSUM` with
/// `csum_start` = TCP header offset, `csum_offset` 16, and the TCP checksum field holds the
/// pseudo-header sum (CHECKSUM_PARTIAL), `gso_type` TCPV4/TCPV6 (+ECN if the first segment
/// has CWR), `gso_size` = MSS, `hdr_len` = Ethernet to end of TCP header.
///
/// Why `NEEDS_CSUM` and not `DATA_VALID`: it is what Linux's own GRO produces, the kernel's
/// `virtio_net_hdr_to_skb` accepts it for GSO (it checks `csum_offset` is 16 for TCP), and
/// the TAP write path ignores `DATA_VALID`, so a `DATA_VALID` super-frame would be verified
/// again in full by the receiving stack and would need a complete checksum over 64 KiB. Data
/// is not laundered: every segment's checksum is verified before it is merged. A super-frame
/// of one segment is written unchanged with a plain header.
#[derive(Debug, Clone)]
pub struct Gro {
    buf: Vec<u8>,
    held: Option<Held>,
    stats: GroStats,
}

impl Default for Gro {
    fn default() -> Self {
        Self::new()
    }
}

impl Gro {
    /// An empty coalescer; its buffer grows once to the largest super-frame (≈ 64 KiB).
    pub fn new() -> Gro {
        Gro {
            buf: Vec::new(),
            held: None,
            stats: GroStats::default(),
        }
    }

    /// Counters since creation.
    pub fn stats(&self) -> GroStats {
        self.stats
    }

    /// True when a super-frame is being held (call [`Gro::flush`] before sleeping).
    pub fn is_holding(&self) -> bool {
        self.held.is_some()
    }

    /// Feeds one complete frame (Ethernet header first). May emit the held super-frame and/or
    /// this frame through `out(header, frame)`; the caller writes `header.to_bytes()` then
    /// `frame` to the TAP in one `writev`.
    pub fn push(&mut self, frame: &[u8], out: &mut impl FnMut(&VnetHdr, &[u8])) {
        self.stats.frames_in += 1;
        let Some(seg) = self.candidate(frame) else {
            self.flush(out);
            self.emit_plain(frame, out);
            return;
        };
        if let Some(h) = self.held {
            if self.can_merge(&h, frame, &seg) {
                // `candidate` checked hdrs < end ≤ frame.len(): never empty by default.
                let payload = frame.get(seg.hdrs..seg.ip.end).unwrap_or_default();
                self.buf.extend_from_slice(payload);
                let th = h.ip.l4;
                if let Some(f) = self.buf.get_mut(th + 13) {
                    *f |= seg.flags & (TCP_PSH | TCP_FIN);
                }
                let h = Held {
                    segs: h.segs + 1,
                    next_seq: seg.seq.wrapping_add(payload.len() as u32),
                    last_id: seg.id,
                    ..h
                };
                self.held = Some(h);
                if seg.flags & (TCP_PSH | TCP_FIN) != 0 || payload.len() < h.mss {
                    self.flush(out);
                }
                return;
            }
            self.flush(out);
        }
        if seg.flags & (TCP_PSH | TCP_FIN) != 0 {
            self.emit_plain(frame, out);
            return;
        }
        let Some(head) = frame.get(..seg.ip.end) else {
            self.emit_plain(frame, out);
            return;
        };
        self.buf.clear();
        self.buf.extend_from_slice(head);
        self.held = Some(Held {
            ip: seg.ip,
            hdrs: seg.hdrs,
            mss: seg.payload_len(),
            segs: 1,
            next_seq: seg.seq.wrapping_add(seg.payload_len() as u32),
            last_id: seg.id,
        });
    }

    /// Feeds a batch of frames, then flushes.
    pub fn push_batch<'a>(
        &mut self,
        frames: impl IntoIterator<Item = &'a [u8]>,
        out: &mut impl FnMut(&VnetHdr, &[u8]),
    ) {
        for f in frames {
            self.push(f, out);
        }
        self.flush(out);
    }

    /// Emits the held super-frame, if any. Call at the end of every receive batch.
    pub fn flush(&mut self, out: &mut impl FnMut(&VnetHdr, &[u8])) {
        let Some(h) = self.held.take() else {
            return;
        };
        self.stats.frames_out += 1;
        if h.segs == 1 {
            out(&VnetHdr::default(), &self.buf);
            return;
        }
        let p = h.ip;
        let ip_len = self.buf.len() - p.l3;
        if p.v6 {
            put16(&mut self.buf, p.l3 + 4, (ip_len - 40) as u16);
        } else {
            put16(&mut self.buf, p.l3 + 2, ip_len as u16);
            let _ = fix_ipv4_header_csum(&mut self.buf, p.l3);
        }
        let l4_len = self.buf.len() - p.l4;
        let pseudo = parse::pseudo_sum(&self.buf, &p, PROTO_TCP, l4_len);
        put16(&mut self.buf, p.l4 + 16, pseudo);
        let cwr = self.buf.get(p.l4 + 13).is_some_and(|f| f & TCP_CWR != 0);
        let base = if p.v6 {
            VnetHdr::GSO_TCPV6
        } else {
            VnetHdr::GSO_TCPV4
        };
        let hdr = VnetHdr {
            flags: VnetHdr::F_NEEDS_CSUM,
            gso_type: base | if cwr { VnetHdr::GSO_ECN } else { 0 },
            hdr_len: h.hdrs as u16,
            gso_size: h.mss as u16,
            csum_start: p.l4 as u16,
            csum_offset: 16,
            num_buffers: 0,
        };
        self.stats.coalesced += 1;
        self.stats.coalesced_segments += u64::from(h.segs);
        out(&hdr, &self.buf);
    }

    fn emit_plain(&mut self, frame: &[u8], out: &mut impl FnMut(&VnetHdr, &[u8])) {
        self.stats.frames_out += 1;
        out(&VnetHdr::default(), frame);
    }

    /// Parses and verifies a TCP segment that could be held or merged.
    fn candidate(&mut self, frame: &[u8]) -> Option<Seg> {
        let ip = parse::ip(frame).ok()?;
        if ip.proto != PROTO_TCP {
            return None;
        }
        let id = if ip.v6 {
            if ip.l4 != ip.l3 + 40 {
                return None;
            }
            0
        } else {
            if ip.l4 != ip.l3 + 20 {
                return None;
            }
            parse::be16(frame, ip.l3 + 4)?
        };
        let th = ip.l4;
        if th + 20 > ip.end {
            return None;
        }
        let thl = usize::from(*frame.get(th + 12)? >> 4) * 4;
        let hdrs = th + thl;
        if thl < 20 || hdrs >= ip.end {
            return None;
        }
        let flags = *frame.get(th + 13)?;
        if flags & TCP_ACK == 0 || flags & (TCP_SYN | TCP_RST | TCP_URG) != 0 {
            return None;
        }
        if !options_mergeable(frame.get(th + 20..hdrs)?) {
            return None;
        }
        // Verify checksums: a corrupt segment must reach the kernel unmerged so it is dropped.
        let ip_ok = ip.v6 || ones_complement_sum(frame.get(ip.l3..ip.l4)?, 0) == 0xffff;
        let pseudo = parse::pseudo_sum(frame, &ip, PROTO_TCP, ip.end - th);
        let tcp_ok = ones_complement_sum(frame.get(th..ip.end)?, pseudo) == 0xffff;
        if !(ip_ok && tcp_ok) {
            self.stats.bad_csum += 1;
            return None;
        }
        Some(Seg {
            ip,
            hdrs,
            seq: parse::be32(frame, th + 4)?,
            flags,
            id,
        })
    }

    fn can_merge(&self, h: &Held, frame: &[u8], seg: &Seg) -> bool {
        let (p, q) = (&h.ip, &seg.ip);
        if p.v6 != q.v6 || p.l3 != q.l3 || p.l4 != q.l4 || h.hdrs != seg.hdrs {
            return false;
        }
        let held = &self.buf;
        let same = |a: usize, b: usize| held.get(a..b) == frame.get(a..b);
        let l3 = p.l3;
        let th = p.l4;
        // L2 header, including VLAN tags.
        if !same(0, l3) {
            return false;
        }
        if p.v6 {
            // Version/traffic class/flow label; next header, hop limit, addresses.
            if !same(l3, l3 + 4) || !same(l3 + 6, l3 + 40) {
                return false;
            }
        } else {
            let df = parse::be16(held, l3 + 6).unwrap_or(0) & IPV4_DF != 0;
            if !same(l3, l3 + 2)
                || !same(l3 + 6, l3 + 10)
                || !same(l3 + 12, l3 + 20)
                || (!df && seg.id != h.last_id.wrapping_add(1))
            {
                return false;
            }
        }
        // Ports; acknowledgment, header length, window; option bytes.
        if !same(th, th + 4) || !same(th + 8, th + 13) || !same(th + 14, th + 16) {
            return false;
        }
        if !same(th + 20, h.hdrs) {
            return false;
        }
        let held_flags = held.get(th + 13).copied().unwrap_or(0);
        if seg.flags & TCP_CWR != 0
            || (seg.flags ^ held_flags) & !(TCP_CWR | TCP_PSH | TCP_FIN) != 0
        {
            return false;
        }
        let payload = seg.payload_len();
        let max_ip = if p.v6 { 65535 + 40 } else { 65535 };
        seg.seq == h.next_seq && payload <= h.mss && held.len() + payload - l3 <= max_ip
    }
}

/// Only NOP, EOL and timestamp options may appear in segments that are merged.
fn options_mergeable(opts: &[u8]) -> bool {
    let mut i = 0;
    while let Some(&kind) = opts.get(i) {
        match kind {
            0 => return true,
            1 => i += 1,
            8 if opts.get(i + 1) == Some(&10) && i + 10 <= opts.len() => i += 10,
            _ => return false,
        }
    }
    true
}
