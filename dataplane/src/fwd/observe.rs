//! The hook through which the trace watches a decision.
//!
//! The decision code is generic over [`Tracer`]. The datapath runs it with [`NoTrace`], whose
//! `ENABLED = false` makes every `step` call vanish at compile time; `trace` runs the very same
//! code with a recorder. So trace, metrics and datapath cannot disagree.

use super::config::Owner;
use super::route::NextHop;
use super::verdict::{DropReason, Output};
use super::{Ingress, NetworkId, ParentId, PortId};
use crate::wire::{MacAddr, VlanTag};
use std::net::IpAddr;

/// The stage of a decision a step belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stage {
    /// Reading the frame (Ethernet, L3 header classification).
    Parse,
    /// Picking the network from the 802.1Q tag (wire ingress).
    VlanDemux,
    /// Address or MAC table lookups.
    Lookup,
    /// Mode, flag and state checks that choose a branch.
    FlagCheck,
    /// ipvlan L3/L3S egress: the host's routing and neighbour tables (`fwd::route`).
    Route,
    /// An output is emitted.
    Output,
    /// The frame is dropped.
    Drop,
}

/// How `ipvlan_get_L3_hdr` classified a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum L3Kind {
    /// `IPVL_ARP`.
    Arp,
    /// `IPVL_IPV4`.
    Ipv4,
    /// `IPVL_IPV6`.
    Ipv6,
    /// `IPVL_ICMPV6`: ICMPv6 with source `::` (only an NS is looked up, by target).
    Icmpv6Unspec,
    /// NULL: not ARP/IPv4/IPv6, or a header that fails validation.
    None,
}

/// What a step saw or did. Plain data (no allocation), turned into words by `trace`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Detail {
    /// Where the frame entered.
    Ingress(Ingress),
    /// The Ethernet header.
    Frame {
        /// Destination MAC.
        dst: MacAddr,
        /// Source MAC.
        src: MacAddr,
        /// EtherType after the MACs (after the tag on wire ingress).
        ethertype: u16,
        /// Frame length.
        len: usize,
    },
    /// VLAN demux result.
    Tag {
        /// The outer tag, if any.
        tag: Option<VlanTag>,
        /// The network it selects.
        network: Option<NetworkId>,
    },
    /// The network and the driver path taken.
    Network(NetworkId),
    /// L3 classification.
    L3 {
        /// Class.
        kind: L3Kind,
        /// Destination key (daddr, ARP tpa, NS target).
        dst: Option<IpAddr>,
        /// Source key (saddr, ARP spa, NS target).
        src: Option<IpAddr>,
    },
    /// An address-table lookup.
    Addr {
        /// The key.
        key: IpAddr,
        /// Destination (true) or source (false) lookup.
        use_dest: bool,
        /// Who owns it (only up ports and the host count).
        owner: Option<Owner>,
    },
    /// A MAC-table lookup.
    Mac {
        /// The key.
        mac: MacAddr,
        /// The up port holding it.
        port: Option<PortId>,
    },
    /// A yes/no check.
    Check {
        /// What was checked.
        what: &'static str,
        /// The answer.
        holds: bool,
    },
    /// The host's route lookup for a routed packet.
    Route {
        /// The parent it leaves through (`oif`).
        parent: ParentId,
        /// The destination address.
        dst: IpAddr,
        /// What the host's tables answered.
        answer: NextHop,
    },
    /// The next hop's neighbour entry (`Mac` or `Pending`).
    Neighbour(NextHop),
    /// An up port that a group frame skips: its multicast filter does not hold the group
    /// (`mac_filters`, `mc_filter`; the endpoint has not joined it).
    NotJoined {
        /// The port.
        port: PortId,
        /// The group.
        group: MacAddr,
    },
    /// A narrative note.
    Note(&'static str),
    /// An output that the network cannot have (no wire): discarded.
    Suppressed(DropReason),
    /// An output.
    Out(Output),
    /// The drop.
    Dropped(DropReason),
}

/// One step of a decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Step {
    /// Stage.
    pub stage: Stage,
    /// The kernel function whose rule this step emulates.
    pub kernel: &'static str,
    /// What happened.
    pub detail: Detail,
}

/// Receives the steps of a decision.
pub trait Tracer {
    /// `false` compiles every step away.
    const ENABLED: bool;
    /// Records a step.
    fn step(&mut self, step: Step);
}

/// The datapath's tracer: records nothing, costs nothing.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoTrace;

impl Tracer for NoTrace {
    const ENABLED: bool = false;
    #[inline(always)]
    fn step(&mut self, _step: Step) {}
}

/// Collects every step (used by `trace`).
#[derive(Debug, Default, Clone)]
pub struct Recorder {
    /// The steps in order.
    pub steps: Vec<Step>,
}

impl Tracer for Recorder {
    const ENABLED: bool = true;
    fn step(&mut self, step: Step) {
        self.steps.push(step);
    }
}

/// Records a step when tracing is on; the `Detail` expression is not even evaluated otherwise.
macro_rules! step {
    ($t:expr, $stage:ident, $kernel:expr, $detail:expr) => {
        if T::ENABLED {
            $t.step($crate::fwd::observe::Step {
                stage: $crate::fwd::observe::Stage::$stage,
                kernel: $kernel,
                detail: $detail,
            });
        }
    };
}
pub(crate) use step;
