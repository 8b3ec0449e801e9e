//! The kernel's packet type (`skb->pkt_type`, `PACKET_*` in `linux/if_packet.h`).

/// How the kernel classifies a frame for one device (`skb->pkt_type`).
///
/// One concept, read in two places: the engine computes it for each receiver as
/// `eth_type_trans` would (what the receiving stack sees, [`crate::fwd::Output::pkt_type`]),
/// and an AF_PACKET socket reports the kernel's own classification of a received frame
/// (`sll_pkttype`, which is `skb->pkt_type` copied out). The engine produces only the first
/// five variants; `Loopback` and `Other` are values a socket can report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PacketType {
    /// `PACKET_HOST` (0): unicast to the receiver's own MAC.
    Host,
    /// `PACKET_BROADCAST` (1).
    Broadcast,
    /// `PACKET_MULTICAST` (2).
    Multicast,
    /// `PACKET_OTHERHOST` (3): a unicast MAC that is not the receiver's; its stack discards
    /// it (a socket sees these in promiscuous mode).
    OtherHost,
    /// `PACKET_OUTGOING` (4): leaving the host (the engine's wire and routed outputs; a
    /// socket's copy of what this host sent).
    Outgoing,
    /// `PACKET_LOOPBACK` (5): the host's own group frame looped back to it.
    Loopback,
    /// Any other value a socket reports.
    Other(u8),
}

impl PacketType {
    /// From the kernel's value (`sll_pkttype`).
    pub fn from_raw(v: u8) -> PacketType {
        match v {
            0 => PacketType::Host,
            1 => PacketType::Broadcast,
            2 => PacketType::Multicast,
            3 => PacketType::OtherHost,
            4 => PacketType::Outgoing,
            5 => PacketType::Loopback,
            o => PacketType::Other(o),
        }
    }

    /// The kernel's value.
    pub fn raw(self) -> u8 {
        match self {
            PacketType::Host => 0,
            PacketType::Broadcast => 1,
            PacketType::Multicast => 2,
            PacketType::OtherHost => 3,
            PacketType::Outgoing => 4,
            PacketType::Loopback => 5,
            PacketType::Other(o) => o,
        }
    }

    /// The kernel's name (`PACKET_HOST`, ...).
    pub fn kernel_name(self) -> &'static str {
        match self {
            PacketType::Host => "PACKET_HOST",
            PacketType::Broadcast => "PACKET_BROADCAST",
            PacketType::Multicast => "PACKET_MULTICAST",
            PacketType::OtherHost => "PACKET_OTHERHOST",
            PacketType::Outgoing => "PACKET_OUTGOING",
            PacketType::Loopback => "PACKET_LOOPBACK",
            PacketType::Other(_) => "PACKET_(unknown)",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::PacketType;

    #[test]
    fn raw_values_round_trip() {
        for v in 0..=u8::MAX {
            assert_eq!(PacketType::from_raw(v).raw(), v);
        }
        assert_eq!(PacketType::from_raw(3), PacketType::OtherHost);
        assert_eq!(PacketType::from_raw(7), PacketType::Other(7));
    }
}
