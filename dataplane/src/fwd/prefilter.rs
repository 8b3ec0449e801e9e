//! Drops the engine decides from a frame's Ethernet header alone, for one sending port.
//!
//! Some ports drop whole classes of frames whatever else the frame holds: an ipvlan L2 port
//! on a network with no wire drops every unicast frame it does not switch locally, an ipvlan
//! L3 port every frame that is neither ARP nor IP. [`Engine::port_prefilter`] names such a
//! class for a port, as a [`Prefilter`]; the dataplane hands it to the kernel (a socket
//! filter on the port's TAP, `port::tap_filter`) so that those frames are dropped in the
//! sender's own context and never cost the dataplane a read. A prefilter drops a frame only
//! when [`Engine::decide`] would drop it for the same [`DropReason`] with the engine in its
//! present state; the dataplane asks again after every change of the engine. The agreement
//! of the kernel program with the engine is tested frame by frame (`port::tap_filter`).

use super::config::{Engine, Master, Port};
use super::types::{Driver, IpvlanFlag, IpvlanMode, MacvlanMode, NetworkId, PortId};
use super::verdict::DropReason;
use crate::wire::MacAddr;

/// A class of frames one port's transmit path always drops, decidable from the Ethernet
/// header (destination, source, EtherType, and whether a VLAN tag is present).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Prefilter {
    /// ipvlan L2 on a network with no wire (`ipvlan_xmit_mode_l2`): a unicast frame whose
    /// destination MAC is not its source MAC (any unicast frame with the `vepa` flag) goes to
    /// `dev_queue_xmit(phy_dev)`, and there is no wire: [`DropReason::NoWire`]. Group frames
    /// are flooded and a frame to its own source MAC is looked up locally: both pass.
    IpvlanL2NoWire {
        /// The network has the `vepa` flag (no local switching by destination MAC).
        vepa: bool,
    },
    /// ipvlan L3/L3S (`ipvlan_xmit_mode_l3` → `ipvlan_process_outbound`): a frame whose
    /// EtherType is none of ARP, IPv4 and IPv6 (a tagged frame included) has no L3 key, is
    /// not switched, and is dropped: [`DropReason::L3Multicast`] with a group destination,
    /// [`DropReason::L3NonIp`] otherwise.
    IpvlanL3NonIp,
    /// A macvlan port not in bridge mode on a network with no wire (`macvlan_queue_xmit`):
    /// every frame goes to the lower device (`xmit_world`), and there is none:
    /// [`DropReason::NoWire`].
    MacvlanNoWire,
    /// A macvlan port in bridge mode on a network with no wire (`macvlan_queue_xmit`): a
    /// unicast frame whose destination is not one of the network's bridge-mode ports
    /// ([`Engine::bridge_macs`]; `macvlan_hash_lookup` misses, or finds a port in another
    /// mode) goes to the lower device, and there is none: [`DropReason::NoWire`]. Group
    /// frames are flooded: they pass.
    MacvlanBridgeNoWire {
        /// The network, whose bridge-mode MACs the filter looks up.
        network: NetworkId,
    },
}

/// The reasons a [`Prefilter`] drops for, in the order of their counters.
pub const PREFILTER_REASONS: [DropReason; 3] = [
    DropReason::NoWire,
    DropReason::L3NonIp,
    DropReason::L3Multicast,
];

/// Everything of a network (and its master) a port's [`Prefilter`] depends on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct NetFilterKey {
    master_up: bool,
    no_wire: bool,
    driver: Driver,
    ipvlan_mode: IpvlanMode,
    ipvlan_flag: IpvlanFlag,
}

/// The prefilter of port `p` on a network with key `k` (see [`Engine::port_prefilter`]).
fn prefilter_with(p: &Port, k: NetFilterKey) -> Option<Prefilter> {
    if !p.up || !k.master_up {
        return None;
    }
    match k.driver {
        Driver::Ipvlan => match k.ipvlan_mode {
            IpvlanMode::L2 if k.no_wire => Some(Prefilter::IpvlanL2NoWire {
                vepa: k.ipvlan_flag == IpvlanFlag::Vepa,
            }),
            IpvlanMode::L2 => None,
            IpvlanMode::L3 | IpvlanMode::L3s => Some(Prefilter::IpvlanL3NonIp),
        },
        Driver::Macvlan if k.no_wire && p.macvlan_mode != MacvlanMode::Bridge => {
            Some(Prefilter::MacvlanNoWire)
        }
        Driver::Macvlan if k.no_wire => Some(Prefilter::MacvlanBridgeNoWire { network: p.network }),
        Driver::Macvlan => None,
    }
}

impl Engine {
    /// The class of frames `port` sends that the engine drops whatever else they hold, if
    /// there is one now (see the module docs). `None` when the port or its network is
    /// unknown, the port is down (then the engine drops everything as
    /// [`DropReason::PortDown`]), the network's master is down ([`DropReason::ParentDown`]),
    /// or nothing can be told from the header alone (macvlan bridge, which looks the
    /// destination up; ipvlan L2 on a network with a wire, which sends unicast there).
    pub fn port_prefilter(&self, port: PortId) -> Option<Prefilter> {
        let p = self.port(port)?;
        prefilter_with(p, self.net_filter_key(p.network)?)
    }

    /// What [`Engine::port_prefilter`] reads of a network: the same port with the same key
    /// has the same prefilter, so a caller that kept both may skip asking again.
    pub(crate) fn net_filter_key(&self, id: NetworkId) -> Option<NetFilterKey> {
        let net = self.network(id)?;
        Some(NetFilterKey {
            master_up: self.master_up(net),
            no_wire: match net.master {
                Master::Parent { wire, .. } => !wire,
                Master::Isolated { .. } => true,
            },
            driver: net.driver,
            ipvlan_mode: net.ipvlan_mode,
            ipvlan_flag: net.ipvlan_flag,
        })
    }

    /// The destination MACs a bridge-mode macvlan port of `network` reaches locally
    /// (`macvlan_hash_lookup` finds a port in bridge mode): every MAC the
    /// [`Prefilter::MacvlanBridgeNoWire`] filter must pass. Empty for an unknown network.
    pub fn bridge_macs(&self, network: NetworkId) -> Vec<MacAddr> {
        let Some(net) = self.network(network) else {
            return Vec::new();
        };
        net.macs
            .iter()
            .filter(|(_, p)| {
                self.port(**p)
                    .is_some_and(|p| p.macvlan_mode == MacvlanMode::Bridge)
            })
            .map(|(m, _)| *m)
            .collect()
    }

    /// The networks with no wire that have a macvlan port (those a
    /// [`Prefilter::MacvlanBridgeNoWire`] may name).
    pub fn bridge_prefilter_networks(&self) -> Vec<NetworkId> {
        self.network_ids()
            .into_iter()
            .filter(|n| {
                self.network(*n).is_some_and(|net| {
                    net.driver == Driver::Macvlan
                        && match net.master {
                            Master::Parent { wire, .. } => !wire,
                            Master::Isolated { .. } => true,
                        }
                })
            })
            .collect()
    }
}
