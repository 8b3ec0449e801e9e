//! ARP over Ethernet/IPv4, read at the kernel's fixed offsets.

use super::{need, MacAddr, WireError};
use std::net::Ipv4Addr;

/// ARP operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArpOp {
    /// 1: who-has.
    Request,
    /// 2: is-at.
    Reply,
    /// Anything else (RARP, InARP, garbage).
    Other(u16),
}

/// An Ethernet/IPv4 ARP packet (28 bytes).
///
/// The kernel's `ipvlan_addr_lookup` reads the sender IP at offset 8 + 6 and the target IP at
/// offset 8 + 6 + 4 + 6 of the ARP header without checking `ar_hrd`/`ar_pro`, once 28 bytes
/// are present (`arp_hdr_len` of an Ethernet device). This view does the same; the type fields
/// are exposed for callers that want to check them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArpView {
    /// Hardware type (1 = Ethernet).
    pub htype: u16,
    /// Protocol type (0x0800 = IPv4).
    pub ptype: u16,
    /// Hardware address length.
    pub hlen: u8,
    /// Protocol address length.
    pub plen: u8,
    /// Operation.
    pub op: ArpOp,
    /// Sender hardware address.
    pub sha: MacAddr,
    /// Sender protocol address.
    pub spa: Ipv4Addr,
    /// Target hardware address.
    pub tha: MacAddr,
    /// Target protocol address.
    pub tpa: Ipv4Addr,
}

/// Length of an Ethernet/IPv4 ARP packet.
pub const ARP_LEN: usize = 28;

fn ip4_at(b: &[u8], off: usize) -> Ipv4Addr {
    let mut a = [0u8; 4];
    if let Some(s) = b.get(off..off + 4) {
        a.copy_from_slice(s);
    }
    Ipv4Addr::from(a)
}

fn u16_at(b: &[u8], off: usize) -> u16 {
    match b.get(off..off + 2).and_then(<[u8]>::first_chunk::<2>) {
        Some(s) => u16::from_be_bytes(*s),
        None => 0,
    }
}

impl ArpView {
    /// Parses the first 28 bytes of `payload` (the bytes after the EtherType).
    #[inline]
    pub fn parse(payload: &[u8]) -> Result<ArpView, WireError> {
        need("arp", payload, ARP_LEN)?;
        let op = match u16_at(payload, 6) {
            1 => ArpOp::Request,
            2 => ArpOp::Reply,
            o => ArpOp::Other(o),
        };
        Ok(ArpView {
            htype: u16_at(payload, 0),
            ptype: u16_at(payload, 2),
            hlen: payload.get(4).copied().unwrap_or(0),
            plen: payload.get(5).copied().unwrap_or(0),
            op,
            sha: MacAddr::from_slice(payload.get(8..).unwrap_or(&[])).unwrap_or_default(),
            spa: ip4_at(payload, 14),
            tha: MacAddr::from_slice(payload.get(18..).unwrap_or(&[])).unwrap_or_default(),
            tpa: ip4_at(payload, 24),
        })
    }

    /// The sender IP only (what `ipvlan_addr_lookup(use_dest=false)` reads).
    #[inline]
    pub fn sender_ip(payload: &[u8]) -> Result<Ipv4Addr, WireError> {
        need("arp", payload, ARP_LEN)?;
        Ok(ip4_at(payload, 14))
    }

    /// The target IP only (what `ipvlan_addr_lookup(use_dest=true)` reads).
    #[inline]
    pub fn target_ip(payload: &[u8]) -> Result<Ipv4Addr, WireError> {
        need("arp", payload, ARP_LEN)?;
        Ok(ip4_at(payload, 24))
    }

    /// True for Ethernet/IPv4 ARP (`htype 1, ptype 0x0800, hlen 6, plen 4`).
    pub fn is_ether_ipv4(&self) -> bool {
        self.htype == 1 && self.ptype == 0x0800 && self.hlen == 6 && self.plen == 4
    }
}
