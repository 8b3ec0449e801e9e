//! Ethernet II and one 802.1Q tag.

use super::{ethertype, need, MacAddr, WireError, ETH_HLEN, VLAN_HLEN};
use etherparse::{Ethernet2HeaderSlice, SingleVlanHeaderSlice};

/// One 802.1Q tag (TCI split into its fields).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct VlanTag {
    /// Priority code point (3 bits).
    pub pcp: u8,
    /// Drop-eligible indicator.
    pub dei: bool,
    /// VLAN id (12 bits; 0 = priority tag only).
    pub vid: u16,
}

impl VlanTag {
    /// The 16-bit TCI.
    pub fn tci(&self) -> u16 {
        (u16::from(self.pcp & 7) << 13) | (u16::from(self.dei) << 12) | (self.vid & 0x0fff)
    }

    /// Splits a TCI.
    pub fn from_tci(tci: u16) -> VlanTag {
        VlanTag {
            pcp: (tci >> 13) as u8,
            dei: tci & 0x1000 != 0,
            vid: tci & 0x0fff,
        }
    }
}

/// An Ethernet II frame: addresses, the EtherType right after them, and the bytes after that.
///
/// A view over a frame with an 802.1Q tag reports `ethertype == 0x8100` and the tag in
/// `payload`; call [`EthView::untag`] to look inside the tag (uvlan reads the outer tag only;
/// further tags are payload).
#[derive(Debug, Clone, Copy)]
pub struct EthView<'a> {
    /// Destination MAC.
    pub dst: MacAddr,
    /// Source MAC.
    pub src: MacAddr,
    /// The EtherType (or TPID) following the source address.
    pub ethertype: u16,
    /// Bytes after the EtherType.
    pub payload: &'a [u8],
    /// The whole frame.
    pub frame: &'a [u8],
}

impl<'a> EthView<'a> {
    /// Parses the 14-byte Ethernet II header.
    #[inline]
    pub fn parse(frame: &'a [u8]) -> Result<EthView<'a>, WireError> {
        let h = Ethernet2HeaderSlice::from_slice(frame).map_err(|_| WireError::Truncated {
            layer: "ethernet",
            need: ETH_HLEN,
            have: frame.len(),
        })?;
        Ok(EthView {
            dst: MacAddr(h.destination()),
            src: MacAddr(h.source()),
            ethertype: h.ether_type().0,
            payload: frame.get(ETH_HLEN..).unwrap_or(&[]),
            frame,
        })
    }

    /// If the frame carries an 802.1Q tag (TPID 0x8100), returns the tag and a view whose
    /// `ethertype`/`payload` are those inside the tag. `Ok(None)` for an untagged frame.
    #[inline]
    pub fn untag(&self) -> Result<Option<(VlanTag, EthView<'a>)>, WireError> {
        if self.ethertype != ethertype::VLAN {
            return Ok(None);
        }
        need("802.1Q tag", self.payload, VLAN_HLEN)?;
        let t =
            SingleVlanHeaderSlice::from_slice(self.payload).map_err(|_| WireError::Truncated {
                layer: "802.1Q tag",
                need: VLAN_HLEN,
                have: self.payload.len(),
            })?;
        let tag = VlanTag {
            pcp: t.priority_code_point().value(),
            dei: t.drop_eligible_indicator(),
            vid: t.vlan_identifier().value(),
        };
        Ok(Some((
            tag,
            EthView {
                dst: self.dst,
                src: self.src,
                ethertype: t.ether_type().0,
                payload: self.payload.get(VLAN_HLEN..).unwrap_or(&[]),
                frame: self.frame,
            },
        )))
    }

    /// Length of the headers before `payload`.
    pub fn header_len(&self) -> usize {
        self.frame.len() - self.payload.len()
    }
}

/// Writes `frame` with one 802.1Q tag inserted after the MAC addresses into `out`
/// (cleared first). Frames shorter than 12 bytes are copied unchanged.
pub fn push_tag(frame: &[u8], tag: VlanTag, out: &mut Vec<u8>) {
    out.clear();
    match frame.get(..12) {
        Some(macs) => {
            out.reserve(frame.len() + VLAN_HLEN);
            out.extend_from_slice(macs);
            out.extend_from_slice(&ethertype::VLAN.to_be_bytes());
            out.extend_from_slice(&tag.tci().to_be_bytes());
            out.extend_from_slice(frame.get(12..).unwrap_or(&[]));
        }
        None => out.extend_from_slice(frame),
    }
}

/// Writes `frame` without its outer 802.1Q tag into `out` (cleared first); an untagged frame is
/// copied unchanged.
pub fn pop_tag(frame: &[u8], out: &mut Vec<u8>) {
    out.clear();
    let tagged = frame.len() >= ETH_HLEN + VLAN_HLEN
        && frame.get(12..14) == Some(&ethertype::VLAN.to_be_bytes()[..]);
    if tagged {
        out.extend_from_slice(frame.get(..12).unwrap_or(&[]));
        out.extend_from_slice(frame.get(16..).unwrap_or(&[]));
    } else {
        out.extend_from_slice(frame);
    }
}
