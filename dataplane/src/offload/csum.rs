//! The Internet checksum (RFC 1071): ones' complement sums, pseudo-headers, completion of
//! partial checksums and the IPv4 header checksum.
//!
//! Sums are returned *folded* to 16 bits and *not* complemented, in the numeric value a
//! big-endian reader would see. A checksum field holds the complement of the folded sum.
#![deny(clippy::indexing_slicing)]

use super::OffloadError;

/// Adds `data` into a 64-bit accumulator, reading little-endian 32-bit words and adding each
/// into a 64-bit lane. The result is the ones' complement sum of the byte-swapped 16-bit
/// words, which [`fold_le`] turns back into network order. Because 2^16 ≡ 1 (mod 0xffff),
/// any grouping of the bytes into wider little-endian words gives the same residue, so this
/// may read 4 bytes at a time; LLVM vectorizes the zero-extending adds.
#[inline]
fn sum_le(data: &[u8]) -> u64 {
    if data.len() <= MAX_BLOCK {
        return sum_le_block(data);
    }
    // Only for absurdly large inputs: fold per block so the accumulator can never overflow.
    data.chunks(MAX_BLOCK)
        .fold(0u64, |acc, b| u64::from(fold16(acc)) + sum_le_block(b))
}

/// Block size whose 32-bit word sum cannot overflow a u64 (2^28 words of < 2^32 each).
const MAX_BLOCK: usize = 1 << 30;

#[inline]
fn sum_le_block(data: &[u8]) -> u64 {
    let mut acc: u64 = 0;
    let mut chunks = data.chunks_exact(4);
    for c in &mut chunks {
        let mut w = [0u8; 4];
        w.copy_from_slice(c);
        acc += u64::from(u32::from_le_bytes(w));
    }
    let rem = chunks.remainder();
    if !rem.is_empty() {
        // Zero padding at the end: an odd trailing byte becomes the high (first) byte of a
        // big-endian 16-bit word, as RFC 1071 requires.
        let mut w = [0u8; 4];
        for (d, s) in w.iter_mut().zip(rem) {
            *d = *s;
        }
        acc += u64::from(u32::from_le_bytes(w));
    }
    acc
}

/// Folds an accumulator to 16 bits with end-around carries (no byte swap).
#[inline]
fn fold16(acc: u64) -> u16 {
    let mut s = (acc & 0xffff_ffff) + (acc >> 32);
    s = (s & 0xffff_ffff) + (s >> 32);
    s = (s & 0xffff) + (s >> 16);
    s = (s & 0xffff) + (s >> 16);
    s as u16
}

/// Folds a little-endian-read accumulator to 16 bits and returns it in network order.
#[inline]
fn fold_le(acc: u64) -> u16 {
    fold16(acc).swap_bytes()
}

/// Ones' complement addition of two folded 16-bit sums.
#[inline]
pub fn ones_complement_add(a: u16, b: u16) -> u16 {
    let s = u32::from(a) + u32::from(b);
    ((s & 0xffff) + (s >> 16)) as u16
}

/// The folded ones' complement sum of `data` (read as big-endian 16-bit words, an odd last
/// byte padded with zero), added to `initial`. `data` is taken to start at an even offset of
/// the checksummed region.
#[inline]
pub fn ones_complement_sum(data: &[u8], initial: u16) -> u16 {
    ones_complement_add(fold_le(sum_le(data)), initial)
}

/// The Internet checksum of `data`: the complement of its ones' complement sum. A region
/// that contains a correct checksum field has `internet_checksum == 0`.
#[inline]
pub fn internet_checksum(data: &[u8]) -> u16 {
    !ones_complement_sum(data, 0)
}

/// Folded sum of the IPv4 pseudo-header (RFC 793/768): source, destination, protocol and
/// L4 length (header plus payload).
pub fn pseudo_header_sum_v4(src: [u8; 4], dst: [u8; 4], proto: u8, l4_len: u16) -> u16 {
    let mut b = [0u8; 12];
    b[0..4].copy_from_slice(&src);
    b[4..8].copy_from_slice(&dst);
    b[9] = proto;
    b[10..12].copy_from_slice(&l4_len.to_be_bytes());
    ones_complement_sum(&b, 0)
}

/// Folded sum of the IPv6 pseudo-header (RFC 8200 §8.1): source, destination, 32-bit
/// upper-layer length and next header.
pub fn pseudo_header_sum_v6(src: [u8; 16], dst: [u8; 16], proto: u8, l4_len: u32) -> u16 {
    let mut b = [0u8; 40];
    b[0..16].copy_from_slice(&src);
    b[16..32].copy_from_slice(&dst);
    b[32..36].copy_from_slice(&l4_len.to_be_bytes());
    b[39] = proto;
    ones_complement_sum(&b, 0)
}

/// Finishes a `CHECKSUM_PARTIAL` checksum in place, as the kernel's `skb_checksum_help`
/// does: the 16-bit field at `csum_start + csum_offset` holds the (uncomplemented) pseudo
/// header sum; the bytes from `csum_start` to the end of `frame` (field included) are summed,
/// and the complement is stored there. A result of 0 is stored as 0xffff (the same value in
/// ones' complement, and mandatory for UDP, where 0 means "no checksum").
///
/// Offsets count from the frame start, so a VLAN tag before the IP header needs nothing
/// special. Returns the stored checksum.
pub fn complete_partial_csum(
    frame: &mut [u8],
    csum_start: usize,
    csum_offset: usize,
) -> Result<u16, OffloadError> {
    let len = frame.len();
    let oob = || OffloadError::CsumOutOfBounds {
        start: csum_start,
        offset: csum_offset,
        len,
    };
    let field = csum_start.checked_add(csum_offset).ok_or_else(oob)?;
    let field_end = field.checked_add(2).ok_or_else(oob)?;
    if field_end > frame.len() {
        return Err(oob());
    }
    let region = frame.get(csum_start..).ok_or_else(oob)?;
    let mut csum = !ones_complement_sum(region, 0);
    if csum == 0 {
        csum = 0xffff;
    }
    frame
        .get_mut(field..field_end)
        .ok_or_else(oob)?
        .copy_from_slice(&csum.to_be_bytes());
    Ok(csum)
}

/// Completes the TCP or UDP checksum of a frame whose sender left it to the device
/// (`CHECKSUM_PARTIAL`: the field holds the pseudo-header sum), as `skb_checksum_help` does,
/// when only a flag says so (an AF_PACKET socket's `TP_STATUS_CSUMNOTREADY`, which comes
/// without `csum_start`): the checksum starts at the L4 header found by parsing (Ethernet,
/// VLAN tags, IPv4, or IPv6 and its extension headers) and ends at the IP packet's end
/// (Ethernet padding excluded). Returns false, frame unchanged, for anything else (another
/// protocol, a fragment, a header that does not parse).
pub fn complete_l4_csum(frame: &mut [u8]) -> bool {
    let Ok(ip) = super::parse::ip(frame) else {
        return false;
    };
    let offset = match ip.proto {
        super::parse::PROTO_TCP => 16,
        super::parse::PROTO_UDP => 6,
        _ => return false,
    };
    frame
        .get_mut(..ip.end)
        .is_some_and(|f| complete_partial_csum(f, ip.l4, offset).is_ok())
}

/// Recomputes the IPv4 header checksum of the header starting at `frame[l3]` (its length
/// taken from IHL) and stores it. Returns the stored checksum.
pub fn fix_ipv4_header_csum(frame: &mut [u8], l3: usize) -> Result<u16, OffloadError> {
    let first = *frame.get(l3).ok_or(OffloadError::Truncated {
        what: "IPv4 header",
        need: l3.saturating_add(20),
        have: frame.len(),
    })?;
    if first >> 4 != 4 {
        return Err(OffloadError::Malformed {
            what: "IP version is not 4 where an IPv4 header was expected",
        });
    }
    let ihl = usize::from(first & 0x0f) * 4;
    if ihl < 20 {
        return Err(OffloadError::Malformed {
            what: "IPv4 header length (IHL) below 20 bytes",
        });
    }
    let have = frame.len();
    let hdr = frame.get_mut(l3..l3 + ihl).ok_or(OffloadError::Truncated {
        what: "IPv4 header",
        need: l3 + ihl,
        have,
    })?;
    // `ihl` ≥ 20, so the checksum field (bytes 10..12) is inside `hdr`.
    if let Some(field) = hdr.get_mut(10..12) {
        field.fill(0);
    }
    let csum = internet_checksum(hdr);
    if let Some(field) = hdr.get_mut(10..12) {
        field.copy_from_slice(&csum.to_be_bytes());
    }
    Ok(csum)
}
