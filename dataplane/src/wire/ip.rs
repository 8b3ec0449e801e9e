//! IPv4, IPv6 and ICMPv6 neighbour discovery.

use super::{ipproto, need, WireError};
use etherparse::{Icmpv6Slice, Icmpv6Type, Ipv4HeaderSlice, Ipv6HeaderSlice};
use std::net::{Ipv4Addr, Ipv6Addr};

/// An IPv4 header that passes the kernel's checks in `ipvlan_get_L3_hdr`: at least 20 bytes,
/// version 4, `ihl ≥ 5`, total length not larger than the bytes present and not smaller than
/// the header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4View<'a> {
    /// Source address.
    pub src: Ipv4Addr,
    /// Destination address.
    pub dst: Ipv4Addr,
    /// Protocol number.
    pub protocol: u8,
    /// Time to live.
    pub ttl: u8,
    /// Header length in bytes.
    pub header_len: usize,
    /// Total length field.
    pub total_len: usize,
    /// More-fragments flag or a non-zero fragment offset.
    pub is_fragment: bool,
    /// The bytes after the header, up to the total length.
    pub payload: &'a [u8],
}

impl<'a> Ipv4View<'a> {
    /// Parses and validates an IPv4 header at the start of `b`.
    #[inline]
    pub fn parse(b: &'a [u8]) -> Result<Ipv4View<'a>, WireError> {
        let h = Ipv4HeaderSlice::from_slice(b).map_err(|e| match e {
            etherparse::err::ipv4::HeaderSliceError::Len(l) => WireError::Truncated {
                layer: "ipv4",
                need: l.required_len,
                have: b.len(),
            },
            etherparse::err::ipv4::HeaderSliceError::Content(_) => WireError::Malformed {
                layer: "ipv4",
                what: "version is not 4 or ihl < 5",
            },
        })?;
        let header_len = usize::from(h.ihl()) * 4;
        let total_len = usize::from(h.total_len());
        if total_len > b.len() {
            return Err(WireError::Malformed {
                layer: "ipv4",
                what: "total length beyond the frame",
            });
        }
        if total_len < header_len {
            return Err(WireError::Malformed {
                layer: "ipv4",
                what: "total length below the header length",
            });
        }
        Ok(Ipv4View {
            src: h.source_addr(),
            dst: h.destination_addr(),
            protocol: h.protocol().0,
            ttl: h.ttl(),
            header_len,
            total_len,
            is_fragment: h.more_fragments() || h.fragments_offset().value() != 0,
            payload: b.get(header_len..total_len).unwrap_or(&[]),
        })
    }
}

/// An IPv6 fixed header (40 bytes, version 6). Extension headers are not walked, as in the
/// kernel's `ipvlan_get_L3_hdr`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv6View<'a> {
    /// Source address.
    pub src: Ipv6Addr,
    /// Destination address.
    pub dst: Ipv6Addr,
    /// Next header.
    pub next_header: u8,
    /// Hop limit.
    pub hop_limit: u8,
    /// Payload length field.
    pub payload_len: usize,
    /// The bytes after the fixed header (up to the end of the buffer).
    pub payload: &'a [u8],
}

impl<'a> Ipv6View<'a> {
    /// Parses an IPv6 fixed header at the start of `b`.
    #[inline]
    pub fn parse(b: &'a [u8]) -> Result<Ipv6View<'a>, WireError> {
        need("ipv6", b, 40)?;
        let h = Ipv6HeaderSlice::from_slice(b).map_err(|_| WireError::Malformed {
            layer: "ipv6",
            what: "version is not 6",
        })?;
        Ok(Ipv6View {
            src: h.source_addr(),
            dst: h.destination_addr(),
            next_header: h.next_header().0,
            hop_limit: h.hop_limit(),
            payload_len: usize::from(h.payload_length()),
            payload: b.get(40..).unwrap_or(&[]),
        })
    }

    /// The ICMPv6 message, if the next header is ICMPv6 and at least 8 bytes follow.
    pub fn icmpv6(&self) -> Result<Icmpv6View<'a>, WireError> {
        if self.next_header != ipproto::ICMPV6 {
            return Err(WireError::WrongType("icmpv6"));
        }
        Icmpv6View::parse(self.payload)
    }
}

/// The neighbour-discovery messages uvlan looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NdMessage {
    /// Router solicitation (133).
    RouterSolicitation,
    /// Router advertisement (134).
    RouterAdvertisement,
    /// Neighbour solicitation (135) with its target.
    NeighborSolicitation {
        /// The address being resolved or checked (DAD).
        target: Ipv6Addr,
    },
    /// Neighbour advertisement (136) with its target.
    NeighborAdvertisement {
        /// The address advertised.
        target: Ipv6Addr,
    },
}

/// An ICMPv6 message: type, code and the bytes after the 8-byte header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Icmpv6View<'a> {
    /// ICMPv6 type.
    pub icmp_type: u8,
    /// ICMPv6 code.
    pub code: u8,
    /// The whole ICMPv6 message.
    pub message: &'a [u8],
}

impl<'a> Icmpv6View<'a> {
    /// ICMPv6 type of a neighbour solicitation.
    pub const NS: u8 = 135;

    /// Parses the 8-byte ICMPv6 header at the start of `b`.
    #[inline]
    pub fn parse(b: &'a [u8]) -> Result<Icmpv6View<'a>, WireError> {
        need("icmpv6", b, 8)?;
        let s = Icmpv6Slice::from_slice(b).map_err(|_| WireError::Truncated {
            layer: "icmpv6",
            need: 8,
            have: b.len(),
        })?;
        Ok(Icmpv6View {
            icmp_type: s.type_u8(),
            code: s.code_u8(),
            message: b,
        })
    }

    /// The NS target read the way `ipvlan_addr_lookup` reads it: the 16 bytes after the
    /// 8-byte header, for type 135, whatever the code. `None` for other types or when the
    /// message is shorter than 24 bytes.
    #[inline]
    pub fn ns_target(&self) -> Option<Ipv6Addr> {
        if self.icmp_type != Self::NS {
            return None;
        }
        let t: [u8; 16] = self.message.get(8..24)?.try_into().ok()?;
        Some(Ipv6Addr::from(t))
    }

    /// The neighbour-discovery message, if this is a well-formed RS/RA/NS/NA (code 0 and the
    /// fixed part present, as RFC 4861 requires).
    pub fn nd(&self) -> Option<NdMessage> {
        let s = Icmpv6Slice::from_slice(self.message).ok()?;
        match s.icmp_type() {
            Icmpv6Type::RouterSolicitation => Some(NdMessage::RouterSolicitation),
            Icmpv6Type::RouterAdvertisement(_) => Some(NdMessage::RouterAdvertisement),
            Icmpv6Type::NeighborSolicitation => match s.payload_slice().ok()? {
                etherparse::icmpv6::Icmpv6PayloadSlice::NeighborSolicitation(p) => {
                    Some(NdMessage::NeighborSolicitation {
                        target: p.target_address(),
                    })
                }
                _ => None,
            },
            Icmpv6Type::NeighborAdvertisement(_) => match s.payload_slice().ok()? {
                etherparse::icmpv6::Icmpv6PayloadSlice::NeighborAdvertisement(p) => {
                    Some(NdMessage::NeighborAdvertisement {
                        target: p.target_address(),
                    })
                }
                _ => None,
            },
            _ => None,
        }
    }
}
