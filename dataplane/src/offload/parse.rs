//! Locating the L2/L3/L4 headers of a frame, with checked reads only.
#![deny(clippy::indexing_slicing)]

use super::OffloadError;

pub(crate) const ETHERTYPE_IPV4: u16 = 0x0800;
pub(crate) const ETHERTYPE_IPV6: u16 = 0x86dd;
const ETHERTYPE_VLAN: u16 = 0x8100;
const ETHERTYPE_QINQ: u16 = 0x88a8;
pub(crate) const PROTO_TCP: u8 = 6;
pub(crate) const PROTO_UDP: u8 = 17;

pub(crate) fn be16(b: &[u8], at: usize) -> Option<u16> {
    let s = b.get(at..at.checked_add(2)?)?.first_chunk::<2>()?;
    Some(u16::from_be_bytes(*s))
}

pub(crate) fn be32(b: &[u8], at: usize) -> Option<u32> {
    let s = b.get(at..at.checked_add(4)?)?.first_chunk::<4>()?;
    Some(u32::from_be_bytes(*s))
}

pub(crate) fn put16(b: &mut [u8], at: usize, v: u16) {
    if let Some(s) = b.get_mut(at..at + 2) {
        s.copy_from_slice(&v.to_be_bytes());
    }
}

pub(crate) fn put32(b: &mut [u8], at: usize, v: u32) {
    if let Some(s) = b.get_mut(at..at + 4) {
        s.copy_from_slice(&v.to_be_bytes());
    }
}

pub(crate) fn truncated(what: &'static str, need: usize, have: usize) -> OffloadError {
    OffloadError::Truncated { what, need, have }
}

/// Length of the Ethernet header including up to two VLAN tags, and the inner ethertype.
pub(crate) fn l2(frame: &[u8]) -> Result<(usize, u16), OffloadError> {
    let mut ethertype = be16(frame, 12).ok_or(truncated("Ethernet header", 14, frame.len()))?;
    let mut off = 14;
    for _ in 0..2 {
        if ethertype != ETHERTYPE_VLAN && ethertype != ETHERTYPE_QINQ {
            break;
        }
        ethertype = be16(frame, off + 2).ok_or(truncated("VLAN tag", off + 4, frame.len()))?;
        off += 4;
    }
    Ok((off, ethertype))
}

/// Where the headers of an IP frame are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct IpFrame {
    /// IPv6 (else IPv4).
    pub v6: bool,
    /// Offset of the IP header (= length of the L2 header).
    pub l3: usize,
    /// Offset of the L4 header.
    pub l4: usize,
    /// L4 protocol number.
    pub proto: u8,
    /// End of the IP packet in the frame (excludes Ethernet padding).
    pub end: usize,
}

impl IpFrame {
    pub fn ip_version(&self) -> u8 {
        if self.v6 {
            6
        } else {
            4
        }
    }
}

/// Parses Ethernet (+VLAN) and an unfragmented IPv4 or IPv6 header (IPv6 extension headers
/// hop-by-hop, routing and destination options are skipped).
pub(crate) fn ip(frame: &[u8]) -> Result<IpFrame, OffloadError> {
    let (l3, ethertype) = l2(frame)?;
    let have = frame.len();
    match ethertype {
        ETHERTYPE_IPV4 => {
            let b0 = *frame
                .get(l3)
                .ok_or(truncated("IPv4 header", l3 + 20, have))?;
            if b0 >> 4 != 4 {
                return Err(OffloadError::Malformed {
                    what: "ethertype IPv4 but IP version is not 4",
                });
            }
            let ihl = usize::from(b0 & 0x0f) * 4;
            if ihl < 20 {
                return Err(OffloadError::Malformed {
                    what: "IPv4 header length (IHL) below 20 bytes",
                });
            }
            if have < l3 + ihl {
                return Err(truncated("IPv4 header", l3 + ihl, have));
            }
            let total = usize::from(be16(frame, l3 + 2).unwrap_or(0));
            if total < ihl {
                return Err(OffloadError::Malformed {
                    what: "IPv4 total length smaller than its header",
                });
            }
            let end = l3 + total;
            if end > have {
                return Err(truncated("IPv4 packet (total length)", end, have));
            }
            let frag = be16(frame, l3 + 6).unwrap_or(0);
            if frag & 0x3fff != 0 {
                return Err(OffloadError::Unsupported {
                    what: "IPv4 fragment (MF set or fragment offset non-zero)",
                });
            }
            let proto = frame.get(l3 + 9).copied().unwrap_or(0);
            Ok(IpFrame {
                v6: false,
                l3,
                l4: l3 + ihl,
                proto,
                end,
            })
        }
        ETHERTYPE_IPV6 => {
            if have < l3 + 40 {
                return Err(truncated("IPv6 header", l3 + 40, have));
            }
            if frame.get(l3).copied().unwrap_or(0) >> 4 != 6 {
                return Err(OffloadError::Malformed {
                    what: "ethertype IPv6 but IP version is not 6",
                });
            }
            let plen = usize::from(be16(frame, l3 + 4).unwrap_or(0));
            if plen == 0 {
                return Err(OffloadError::Unsupported {
                    what: "IPv6 payload length 0 (jumbogram)",
                });
            }
            let end = l3 + 40 + plen;
            if end > have {
                return Err(truncated("IPv6 packet (payload length)", end, have));
            }
            let mut nh = frame.get(l3 + 6).copied().unwrap_or(0);
            let mut off = l3 + 40;
            // Each pass consumes at least 8 bytes of a packet of at most 64 KiB.
            loop {
                match nh {
                    0 | 43 | 60 => {
                        let len = usize::from(
                            *frame
                                .get(off + 1)
                                .filter(|_| off + 2 <= end)
                                .ok_or(truncated("IPv6 extension header", off + 2, end))?,
                        ) * 8
                            + 8;
                        if off + len > end {
                            return Err(truncated("IPv6 extension header", off + len, end));
                        }
                        nh = frame.get(off).copied().unwrap_or(0);
                        off += len;
                    }
                    44 => {
                        return Err(OffloadError::Unsupported {
                            what: "IPv6 fragment",
                        })
                    }
                    51 | 50 => {
                        return Err(OffloadError::Unsupported {
                            what: "IPv6 with IPsec (AH/ESP) header",
                        })
                    }
                    _ => break,
                }
            }
            Ok(IpFrame {
                v6: true,
                l3,
                l4: off,
                proto: nh,
                end,
            })
        }
        other => Err(OffloadError::NotIp { ethertype: other }),
    }
}

/// IP source and destination of the frame as a pseudo-header sum for `proto` and `l4_len`.
pub(crate) fn pseudo_sum(buf: &[u8], p: &IpFrame, proto: u8, l4_len: usize) -> u16 {
    if p.v6 {
        let mut src = [0u8; 16];
        let mut dst = [0u8; 16];
        if let (Some(s), Some(d)) = (buf.get(p.l3 + 8..p.l3 + 24), buf.get(p.l3 + 24..p.l3 + 40)) {
            src.copy_from_slice(s);
            dst.copy_from_slice(d);
        }
        super::pseudo_header_sum_v6(src, dst, proto, l4_len as u32)
    } else {
        let mut src = [0u8; 4];
        let mut dst = [0u8; 4];
        if let (Some(s), Some(d)) = (buf.get(p.l3 + 12..p.l3 + 16), buf.get(p.l3 + 16..p.l3 + 20)) {
            src.copy_from_slice(s);
            dst.copy_from_slice(d);
        }
        super::pseudo_header_sum_v4(src, dst, proto, l4_len as u16)
    }
}
