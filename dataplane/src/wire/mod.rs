//! Checked views over raw frames: Ethernet II, one 802.1Q tag, ARP, IPv4, IPv6 and the ICMPv6
//! neighbour-discovery messages (NS, NA, RS, RA).
//!
//! Every constructor takes an untrusted `&[u8]` and returns `Err(WireError)` instead of
//! panicking, whatever the bytes are (a proptest over arbitrary byte strings and a `cargo fuzz`
//! target hold it to that). `etherparse` does the parsing where it fits (Ethernet, 802.1Q, IPv4,
//! IPv6, ICMPv6 and its ND payloads); this module adds what it lacks:
//!
//! * the kernel's own acceptance rules for IPv4 (`ipvlan_get_L3_hdr`: `ihl ≥ 5`, version 4, total
//!   length within the buffer and not below the header length),
//! * ARP read at the fixed Ethernet/IPv4 offsets the kernel's `ipvlan_addr_lookup` uses (it does
//!   not check the hardware or protocol type, so neither does [`ArpView`]),
//! * small `Copy` result types so the forwarding engine can hold them without lifetimes.
//!
//! Views are values: they copy the few header fields they expose (MACs, addresses, types) and
//! keep the payload as a sub-slice.
#![forbid(unsafe_code)]
#![deny(clippy::indexing_slicing)]

mod arp;
pub mod build;
mod eth;
mod ip;
mod mac;
mod pkt_type;

pub use arp::{ArpOp, ArpView, ARP_LEN};
pub use eth::{pop_tag, push_tag, EthView, VlanTag};
pub use ip::{Icmpv6View, Ipv4View, Ipv6View, NdMessage};
pub use mac::{MacAddr, ParseMacError};
pub use pkt_type::PacketType;

/// EtherType values the dataplane cares about.
pub mod ethertype {
    /// IPv4.
    pub const IPV4: u16 = 0x0800;
    /// ARP.
    pub const ARP: u16 = 0x0806;
    /// 802.1Q customer VLAN tag.
    pub const VLAN: u16 = 0x8100;
    /// 802.1ad service VLAN tag (treated as an ordinary, non-IP EtherType: uvlan reads one
    /// 802.1Q tag only).
    pub const QINQ: u16 = 0x88a8;
    /// IPv6.
    pub const IPV6: u16 = 0x86dd;
    /// MAC control (PAUSE) frames, never flooded by either driver.
    pub const PAUSE: u16 = 0x8808;
}

/// IP protocol numbers used here.
pub mod ipproto {
    /// ICMPv6 (`NEXTHDR_ICMP`).
    pub const ICMPV6: u8 = 58;
    /// TCP.
    pub const TCP: u8 = 6;
    /// UDP.
    pub const UDP: u8 = 17;
    /// ICMP.
    pub const ICMP: u8 = 1;
}

/// Length of an Ethernet II header.
pub const ETH_HLEN: usize = 14;
/// Length of one 802.1Q tag.
pub const VLAN_HLEN: usize = 4;

/// Why a view could not be built over some bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// Fewer bytes than the header needs.
    #[error("{layer} truncated: need {need} bytes, have {have}")]
    Truncated {
        /// Which header.
        layer: &'static str,
        /// Bytes needed.
        need: usize,
        /// Bytes present.
        have: usize,
    },
    /// A header field holds a value the kernel would reject (version, length fields).
    #[error("{layer} malformed: {what}")]
    Malformed {
        /// Which header.
        layer: &'static str,
        /// What is wrong.
        what: &'static str,
    },
    /// The frame is not of the type the view was asked for.
    #[error("not {0}")]
    WrongType(&'static str),
}

pub(crate) fn need(layer: &'static str, bytes: &[u8], n: usize) -> Result<(), WireError> {
    if bytes.len() < n {
        Err(WireError::Truncated {
            layer,
            need: n,
            have: bytes.len(),
        })
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests;
