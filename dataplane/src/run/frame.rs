//! Frame edits of the run loop: VLAN push/pop with the matching `virtio_net_hdr` offsets,
//! and the new Ethernet header of a routed packet. Pure code with checked indexing; the
//! output goes into a caller-owned scratch buffer that is reused.

use crate::offload::VnetHdr;
use crate::wire::{ethertype, pop_tag, push_tag, MacAddr, VlanTag, ETH_HLEN};

/// Moves the offsets of `hdr` that count from the frame start by `delta` bytes (a tag
/// inserted: +4, removed: −4). `hdr_len` is a hint and moves only when set; `csum_start`
/// only when the header asks for a checksum. `None` when an offset would leave 0..=65535.
pub(crate) fn shift_hdr(hdr: &VnetHdr, delta: i32) -> Option<VnetHdr> {
    let mv = |v: u16| -> Option<u16> { u16::try_from(i32::from(v) + delta).ok() };
    let mut h = *hdr;
    if h.needs_csum() {
        h.csum_start = mv(h.csum_start)?;
    }
    if h.hdr_len != 0 {
        h.hdr_len = mv(h.hdr_len)?;
    }
    Some(h)
}

/// `frame` with an 802.1Q tag (VID `vid`, priority 0) after the MACs, written into `buf`.
/// `None` for a frame shorter than an Ethernet header.
pub(crate) fn push_vlan<'b>(buf: &'b mut Vec<u8>, frame: &[u8], vid: u16) -> Option<&'b [u8]> {
    if frame.len() < ETH_HLEN {
        return None;
    }
    let tag = VlanTag {
        pcp: 0,
        dei: false,
        vid: vid & 0x0fff,
    };
    push_tag(frame, tag, buf);
    Some(buf.as_slice())
}

/// `frame` without its outer 802.1Q tag, written into `buf`. `None` when the frame carries
/// no 802.1Q tag (nothing to pop).
pub(crate) fn pop_vlan<'b>(buf: &'b mut Vec<u8>, frame: &[u8]) -> Option<&'b [u8]> {
    let tagged = frame.len() >= ETH_HLEN + 4
        && frame.get(12..14) == Some(&ethertype::VLAN.to_be_bytes()[..]);
    if !tagged {
        return None;
    }
    pop_tag(frame, buf);
    Some(buf.as_slice())
}

/// The packet of an untagged Ethernet `frame` (sent by an ipvlan L3 port) re-framed for the
/// wire: dst = `dst` (the next hop), src = `src` (the parent), an 802.1Q tag when `vid` is
/// set, and the EtherType of the IP version found in the packet. Returns the new frame
/// and the change in header length (0 or 4) for [`shift_hdr`]. `None` when the frame holds
/// no IPv4/IPv6 packet.
pub(crate) fn reframe_routed<'b>(
    buf: &'b mut Vec<u8>,
    frame: &[u8],
    dst: MacAddr,
    src: MacAddr,
    vid: Option<u16>,
) -> Option<(&'b [u8], i32)> {
    let packet = frame.get(ETH_HLEN..)?;
    let etype = match packet.first()? >> 4 {
        4 => ethertype::IPV4,
        6 => ethertype::IPV6,
        _ => return None,
    };
    buf.clear();
    buf.extend_from_slice(&dst.0);
    buf.extend_from_slice(&src.0);
    let mut delta = 0;
    if let Some(v) = vid {
        buf.extend_from_slice(&ethertype::VLAN.to_be_bytes());
        buf.extend_from_slice(&(v & 0x0fff).to_be_bytes());
        delta = 4;
    }
    buf.extend_from_slice(&etype.to_be_bytes());
    buf.extend_from_slice(packet);
    Some((buf.as_slice(), delta))
}

/// Length of the L2 header: Ethernet plus any 802.1Q/802.1ad tags. `None` when truncated.
pub(crate) fn l2_len(frame: &[u8]) -> Option<usize> {
    let mut off = 12;
    loop {
        let t = frame.get(off..off + 2)?;
        let t = u16::from_be_bytes([t[0], t[1]]);
        if t == ethertype::VLAN || t == ethertype::QINQ {
            off += 4;
        } else {
            return Some(off + 2);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: MacAddr = MacAddr([2, 0, 0, 0, 0, 0xa]);
    const B: MacAddr = MacAddr([2, 0, 0, 0, 0, 0xb]);

    fn frame(etype: u16, payload: &[u8]) -> Vec<u8> {
        let mut f = Vec::new();
        f.extend_from_slice(&B.0);
        f.extend_from_slice(&A.0);
        f.extend_from_slice(&etype.to_be_bytes());
        f.extend_from_slice(payload);
        f
    }

    #[test]
    fn push_then_pop_round_trips() {
        let f = frame(0x0800, &[0x45, 1, 2, 3]);
        let mut buf = Vec::new();
        let t = push_vlan(&mut buf, &f, 20).unwrap().to_vec();
        assert_eq!(&t[12..18], &[0x81, 0x00, 0x00, 20, 0x08, 0x00]);
        assert_eq!(&t[..12], &f[..12]);
        assert_eq!(l2_len(&t), Some(18));
        let mut buf2 = Vec::new();
        assert_eq!(pop_vlan(&mut buf2, &t).unwrap(), &f[..]);
        // Nothing to pop on an untagged frame; nothing to push on a runt.
        assert!(pop_vlan(&mut buf2, &f).is_none());
        assert!(push_vlan(&mut buf, &f[..13], 20).is_none());
        // VIDs keep to 12 bits.
        let t = push_vlan(&mut buf, &f, 0xf014).unwrap();
        assert_eq!(&t[14..16], &[0x00, 0x14]);
    }

    #[test]
    fn header_offsets_follow_the_tag() {
        let h = VnetHdr {
            flags: VnetHdr::F_NEEDS_CSUM,
            gso_type: VnetHdr::GSO_TCPV4,
            hdr_len: 66,
            gso_size: 1448,
            csum_start: 34,
            csum_offset: 16,
            num_buffers: 0,
        };
        let p = shift_hdr(&h, 4).unwrap();
        assert_eq!((p.csum_start, p.hdr_len, p.csum_offset), (38, 70, 16));
        let q = shift_hdr(&p, -4).unwrap();
        assert_eq!(q, h);
        // No checksum requested: csum_start is not an offset and is left alone.
        let plain = VnetHdr {
            csum_start: 7,
            ..VnetHdr::default()
        };
        assert_eq!(shift_hdr(&plain, 4).unwrap(), plain);
        let bad = VnetHdr {
            flags: VnetHdr::F_NEEDS_CSUM,
            csum_start: 2,
            ..VnetHdr::default()
        };
        assert!(shift_hdr(&bad, -4).is_none());
    }

    #[test]
    fn routed_frames_get_new_macs_and_the_ip_ethertype() {
        let mut buf = Vec::new();
        let v4 = frame(0x0800, &[0x45, 0, 0, 20]);
        let (f, d) = reframe_routed(&mut buf, &v4, B, A, None).unwrap();
        assert_eq!(d, 0);
        assert_eq!(&f[..6], &B.0);
        assert_eq!(&f[6..12], &A.0);
        assert_eq!(&f[12..], &[0x08, 0x00, 0x45, 0, 0, 20]);
        // The EtherType comes from the IP version, whatever the port wrote.
        let v6 = frame(0x1234, &[0x60, 0, 0, 0]);
        let (f, d) = reframe_routed(&mut buf, &v6, B, A, Some(30)).unwrap();
        assert_eq!(d, 4);
        assert_eq!(&f[12..], &[0x81, 0x00, 0x00, 30, 0x86, 0xdd, 0x60, 0, 0, 0]);
        assert!(reframe_routed(&mut buf, &frame(0x0800, &[0x15]), B, A, None).is_none());
        assert!(reframe_routed(&mut buf, &frame(0x0800, &[]), B, A, None).is_none());
        assert!(reframe_routed(&mut buf, &[0u8; 10], B, A, None).is_none());
    }

    #[test]
    fn l2_len_counts_tags_and_refuses_runts() {
        assert_eq!(l2_len(&frame(0x0800, &[])), Some(14));
        let mut qinq = frame(0x88a8, &[0, 10, 0x81, 0, 0, 20, 0x08, 0]);
        assert_eq!(l2_len(&qinq), Some(22));
        qinq.truncate(19);
        assert_eq!(l2_len(&qinq), None);
        assert_eq!(l2_len(&[0u8; 13]), None);
    }
}
