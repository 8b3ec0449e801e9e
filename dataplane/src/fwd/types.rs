//! Identifiers, modes and flags.

use std::fmt;

macro_rules! id_type {
    ($(#[$m:meta])* $name:ident, $prefix:literal) => {
        $(#[$m])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub u32);

        impl $name {
            /// The index into the engine's table.
            #[inline]
            pub fn index(self) -> usize {
                self.0 as usize
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!($prefix, "{}"), self.0)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(self, f)
            }
        }
    };
}

id_type!(
    /// A parent NIC (the kernel's lower/master device).
    ParentId,
    "parent#"
);
id_type!(
    /// A network: one master (a parent, a parent + VID, or nothing) with its driver state.
    NetworkId,
    "net#"
);
id_type!(
    /// A port: one ipvlan slave or macvlan device (a TAP endpoint in uvlan).
    PortId,
    "port#"
);

/// ipvlan mode (`IFLA_IPVLAN_MODE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IpvlanMode {
    /// `IPVLAN_MODE_L2` (0).
    L2,
    /// `IPVLAN_MODE_L3` (1): the kernel default.
    L3,
    /// `IPVLAN_MODE_L3S` (2).
    L3s,
}

impl IpvlanMode {
    /// The uapi value.
    pub fn raw(self) -> u16 {
        match self {
            IpvlanMode::L2 => 0,
            IpvlanMode::L3 => 1,
            IpvlanMode::L3s => 2,
        }
    }

    /// From the uapi value; `None` for values ≥ `IPVLAN_MODE_MAX` (3).
    pub fn from_raw(v: u16) -> Option<IpvlanMode> {
        match v {
            0 => Some(IpvlanMode::L2),
            1 => Some(IpvlanMode::L3),
            2 => Some(IpvlanMode::L3s),
            _ => None,
        }
    }

    /// The word Docker and iproute2 use (`l2`, `l3`, `l3s`).
    pub fn as_str(self) -> &'static str {
        match self {
            IpvlanMode::L2 => "l2",
            IpvlanMode::L3 => "l3",
            IpvlanMode::L3s => "l3s",
        }
    }

    /// From Docker's word (case-sensitive).
    pub fn parse(s: &str) -> Option<IpvlanMode> {
        match s {
            "l2" => Some(IpvlanMode::L2),
            "l3" => Some(IpvlanMode::L3),
            "l3s" => Some(IpvlanMode::L3s),
            _ => None,
        }
    }

    /// L3 and L3S slaves are `IFF_NOARP` (C4).
    pub fn is_l3(self) -> bool {
        !matches!(self, IpvlanMode::L2)
    }
}

/// ipvlan flag (`IFLA_IPVLAN_FLAGS`): bridge is neither bit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IpvlanFlag {
    /// No bit set.
    Bridge,
    /// `IPVLAN_F_PRIVATE` (0x01).
    Private,
    /// `IPVLAN_F_VEPA` (0x02).
    Vepa,
}

impl IpvlanFlag {
    /// `IPVLAN_F_PRIVATE`.
    pub const F_PRIVATE: u16 = 0x01;
    /// `IPVLAN_F_VEPA`.
    pub const F_VEPA: u16 = 0x02;

    /// The uapi bits.
    pub fn raw(self) -> u16 {
        match self {
            IpvlanFlag::Bridge => 0,
            IpvlanFlag::Private => Self::F_PRIVATE,
            IpvlanFlag::Vepa => Self::F_VEPA,
        }
    }

    /// From uapi bits; `None` for unknown bits or PRIVATE|VEPA together
    /// (`ipvlan_nl_validate`).
    pub fn from_raw(v: u16) -> Option<IpvlanFlag> {
        match v {
            0 => Some(IpvlanFlag::Bridge),
            Self::F_PRIVATE => Some(IpvlanFlag::Private),
            Self::F_VEPA => Some(IpvlanFlag::Vepa),
            _ => None,
        }
    }

    /// Docker's word.
    pub fn as_str(self) -> &'static str {
        match self {
            IpvlanFlag::Bridge => "bridge",
            IpvlanFlag::Private => "private",
            IpvlanFlag::Vepa => "vepa",
        }
    }

    /// From Docker's word (case-sensitive).
    pub fn parse(s: &str) -> Option<IpvlanFlag> {
        match s {
            "bridge" => Some(IpvlanFlag::Bridge),
            "private" => Some(IpvlanFlag::Private),
            "vepa" => Some(IpvlanFlag::Vepa),
            _ => None,
        }
    }
}

/// macvlan mode (`IFLA_MACVLAN_MODE`), per device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MacvlanMode {
    /// `MACVLAN_MODE_PRIVATE` (1).
    Private,
    /// `MACVLAN_MODE_VEPA` (2): the kernel default.
    Vepa,
    /// `MACVLAN_MODE_BRIDGE` (4).
    Bridge,
    /// `MACVLAN_MODE_PASSTHRU` (8).
    Passthru,
    /// `MACVLAN_MODE_SOURCE` (16).
    Source,
}

impl MacvlanMode {
    /// The uapi value.
    pub fn raw(self) -> u32 {
        match self {
            MacvlanMode::Private => 1,
            MacvlanMode::Vepa => 2,
            MacvlanMode::Bridge => 4,
            MacvlanMode::Passthru => 8,
            MacvlanMode::Source => 16,
        }
    }

    /// From the uapi value (`macvlan_validate` accepts exactly these five).
    pub fn from_raw(v: u32) -> Option<MacvlanMode> {
        match v {
            1 => Some(MacvlanMode::Private),
            2 => Some(MacvlanMode::Vepa),
            4 => Some(MacvlanMode::Bridge),
            8 => Some(MacvlanMode::Passthru),
            16 => Some(MacvlanMode::Source),
            _ => None,
        }
    }

    /// The word iproute2 and Docker use.
    pub fn as_str(self) -> &'static str {
        match self {
            MacvlanMode::Private => "private",
            MacvlanMode::Vepa => "vepa",
            MacvlanMode::Bridge => "bridge",
            MacvlanMode::Passthru => "passthru",
            MacvlanMode::Source => "source",
        }
    }

    /// From the word (case-sensitive).
    pub fn parse(s: &str) -> Option<MacvlanMode> {
        match s {
            "private" => Some(MacvlanMode::Private),
            "vepa" => Some(MacvlanMode::Vepa),
            "bridge" => Some(MacvlanMode::Bridge),
            "passthru" => Some(MacvlanMode::Passthru),
            "source" => Some(MacvlanMode::Source),
            _ => None,
        }
    }
}

/// `MACVLAN_FLAG_NOPROMISC`.
pub const MACVLAN_FLAG_NOPROMISC: u16 = 1;
/// `MACVLAN_FLAG_NODST`.
pub const MACVLAN_FLAG_NODST: u16 = 2;

/// Which driver a network emulates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Driver {
    /// ipvlan: one MAC (the master's) for every port, addresses switch.
    Ipvlan,
    /// macvlan: one MAC per port, MACs switch.
    Macvlan,
}

impl Driver {
    /// `ipvlan` or `macvlan`.
    pub fn as_str(self) -> &'static str {
        match self {
            Driver::Ipvlan => "ipvlan",
            Driver::Macvlan => "macvlan",
        }
    }
}

/// Which multicast destinations a port accepts (the kernel's per-device `mac_filters` /
/// `mc_filter`). Broadcast is always accepted (both drivers set its bit unconditionally).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum McFilter {
    /// Promiscuous or all-multicast: every group. The default for TAP endpoints, whose joined
    /// groups uvlan does not see unless it is told; their stacks discard unjoined groups.
    #[default]
    All,
    /// Exactly these group MACs (plus broadcast).
    Groups(Vec<crate::wire::MacAddr>),
    /// The groups an endpoint's IP stacks joined, as the daemon learns them from netlink
    /// (`RTM_NEWMULTICAST`): a group MAC in the ranges IP multicast maps to
    /// ([`MacAddr::is_ip_group`](crate::wire::MacAddr::is_ip_group)) passes only when it is
    /// listed; every other multicast passes, because a group joined at the link layer alone
    /// (`PACKET_ADD_MEMBERSHIP`, `ip maddr add`) is announced by no notification.
    IpJoined(Vec<crate::wire::MacAddr>),
}

impl McFilter {
    /// Whether a frame to `dst` (multicast or broadcast) passes.
    #[inline]
    pub fn accepts(&self, dst: &crate::wire::MacAddr) -> bool {
        match self {
            McFilter::All => true,
            McFilter::Groups(g) => dst.is_broadcast() || g.contains(dst),
            McFilter::IpJoined(g) => !dst.is_ip_group() || g.contains(dst),
        }
    }

    /// The filter of a device whose IP stacks joined `groups` (IPv4 and IPv6 multicast
    /// addresses; unicast ones are ignored), or [`McFilter::All`] when it is promiscuous or
    /// all-multicast (`ipvlan_set_multicast_mac_filter`, `macvlan_set_mac_lists`).
    pub fn from_ip_groups(all: bool, groups: &[std::net::IpAddr]) -> McFilter {
        if all {
            return McFilter::All;
        }
        let mut macs: Vec<crate::wire::MacAddr> = groups
            .iter()
            .filter_map(|g| crate::wire::MacAddr::for_ip_group(*g))
            .collect();
        macs.sort_unstable();
        macs.dedup();
        McFilter::IpJoined(macs)
    }
}

#[cfg(test)]
mod mc_filter_tests {
    use super::McFilter;
    use crate::wire::MacAddr;
    use std::net::IpAddr;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn ip_groups_map_as_the_kernel_maps_them() {
        // ipv6_eth_mc_map: 33:33 and the last four bytes.
        assert_eq!(
            MacAddr::for_ip_group(ip("ff02::1:ff00:5")),
            Some(MacAddr([0x33, 0x33, 0xff, 0x00, 0x00, 0x05]))
        );
        // ip_eth_mc_map: 01:00:5e and the low 23 bits (the top bit of the second byte goes).
        assert_eq!(
            MacAddr::for_ip_group(ip("239.129.2.3")),
            Some(MacAddr([0x01, 0x00, 0x5e, 0x01, 0x02, 0x03]))
        );
        assert_eq!(MacAddr::for_ip_group(ip("192.0.2.1")), None);
        assert_eq!(MacAddr::for_ip_group(ip("2001:db8::1")), None);
    }

    #[test]
    fn an_ip_joined_filter_passes_listed_groups_broadcast_and_non_ip_groups_only() {
        let f = McFilter::from_ip_groups(false, &[ip("ff02::1"), ip("224.0.0.1"), ip("ff01::1")]);
        assert_eq!(
            f,
            McFilter::IpJoined(vec![
                MacAddr([0x01, 0x00, 0x5e, 0, 0, 1]),
                MacAddr([0x33, 0x33, 0, 0, 0, 1]),
            ])
        );
        assert!(f.accepts(&MacAddr::BROADCAST));
        assert!(f.accepts(&MacAddr([0x33, 0x33, 0, 0, 0, 1])));
        assert!(f.accepts(&MacAddr([0x01, 0x00, 0x5e, 0, 0, 1])));
        // Unjoined IP groups do not pass.
        assert!(!f.accepts(&MacAddr([0x33, 0x33, 0xff, 0, 0, 5])));
        assert!(!f.accepts(&MacAddr([0x01, 0x00, 0x5e, 0, 0, 0xfb])));
        // Link-layer groups uvlan cannot see pass (LLDP, and 01:00:5e with the 25th bit set).
        assert!(f.accepts(&MacAddr([0x01, 0x80, 0xc2, 0, 0, 0x0e])));
        assert!(f.accepts(&MacAddr([0x01, 0x00, 0x5e, 0x80, 0, 1])));
        assert_eq!(McFilter::from_ip_groups(true, &[]), McFilter::All);
    }
}
