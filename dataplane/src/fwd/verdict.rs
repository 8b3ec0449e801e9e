//! What the engine decides: outputs or a drop reason.

use super::closed_set;
use super::{ParentId, PortId};
use crate::wire::MacAddr;
use std::net::IpAddr;

/// Where an output goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Target {
    /// Into a port (a TAP endpoint): the frame is written as it is (after the VLAN op).
    Port(PortId),
    /// Onto the parent's wire (`dev_queue_xmit` on the master), byte for byte.
    Wire(ParentId),
    /// Into the parent's own protocol stack (`RX_HANDLER_PASS` or `dev_forward_skb(master)`).
    /// For frames that came from the wire this means "not ours: leave it to the host".
    HostStack(ParentId),
    /// ipvlan L3/L3S egress: the L2 header is stripped and the packet routed in the parent's
    /// namespace with `oif = parent`, like `ipvlan_process_v4_outbound` /
    /// `ipvlan_process_v6_outbound`; the route stage (`fwd::route`) has asked the host's
    /// routing and neighbour tables for the next hop. The I/O layer sends it with a new
    /// Ethernet header (src MAC = parent MAC, dst MAC = `next_hop`), TTL unchanged (C29, C31).
    Routed {
        /// The parent to send on.
        parent: ParentId,
        /// The packet's destination address (the route lookup key).
        dst: IpAddr,
        /// The next hop's MAC, as the host's neighbour table resolved it.
        next_hop: MacAddr,
    },
}

/// What to do with an outer 802.1Q tag on the way out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum VlanOp {
    /// Leave the frame as it is.
    Keep,
    /// Insert a tag with this VID (a network on parent `IF.VID` sending to the wire).
    Push(u16),
    /// Remove the outer tag (a tagged wire frame delivered to a port).
    Pop,
}

/// The `pkt_type` the receiving stack sees (`eth_type_trans` on the target, or what the master
/// computed for redirected wire frames): the kernel's `skb->pkt_type`, shared with the AF_PACKET
/// edge (`port`), which reads the same value from `sll_pkttype`.
pub use crate::wire::PacketType;

/// One output of a decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Output {
    /// Where it goes.
    pub target: Target,
    /// Tag handling.
    pub vlan: VlanOp,
    /// What the receiver sees.
    pub pkt_type: PacketType,
}

closed_set! {
    /// Why a frame went nowhere. A closed set: counters are indexed by it and the trace prints
    /// it. Each row: the variant, its counter name, the kernel function whose rule it is.
    pub enum DropReason {
        /// Shorter than an Ethernet header (`ipvlan_queue_xmit`, `eth_type_trans`).
        TooShort = "too_short", "ipvlan_queue_xmit / eth_type_trans";
        /// The ingress port does not exist (removed while frames were in flight).
        UnknownIngress = "unknown_ingress", "uvlan";
        /// The ingress port is administratively down: a down device transmits nothing.
        PortDown = "port_down", "__dev_queue_xmit (device down)";
        /// The parent is down; the ports' carrier follows it (C62).
        ParentDown = "parent_down", "netif_carrier_off via *_device_event";
        /// ipvlan `private`: port-to-port traffic is consumed (`ipvlan_xmit_mode_l2`/`_l3`,
        /// C19, C27).
        PrivateFlag = "private_flag", "ipvlan_xmit_mode_l2 / ipvlan_xmit_mode_l3";
        /// ipvlan L3/L3S: a broadcast or multicast destination MAC not matched to a sibling
        /// (`ipvlan_process_outbound`, C28).
        L3Multicast = "l3_multicast", "ipvlan_process_outbound";
        /// ipvlan L3/L3S: an outbound frame that is neither IPv4 nor IPv6
        /// (`ipvlan_process_outbound` "Dropped outbound packet type", C30).
        L3NonIp = "l3_non_ip", "ipvlan_process_outbound";
        /// ipvlan L3/L3S: an IPv4/IPv6 frame whose header fails validation (uvlan drops it; the
        /// kernel would route it by whatever its address field holds).
        L3BadHeader = "l3_bad_header", "ipvlan_get_L3_hdr";
        /// ipvlan L3/L3S: the route type is neither `RTN_UNICAST` nor `RTN_LOCAL`
        /// (`ipvlan_process_v4_outbound`, C29): an IPv4 limited-broadcast or multicast
        /// destination, or a route the host's tables give another type.
        L3RouteType = "l3_route_type", "ipvlan_process_v4_outbound";
        /// ipvlan L3/L3S: the host's tables have no route for the destination out of the
        /// parent (`ip_route_output_flow` / `ip6_route_output` failed: the kernel drops it
        /// and counts `tx_errors`).
        RouteUnreachable = "route_unreachable", "ip_route_output_flow / ip6_route_output";
        /// ipvlan L3/L3S: the next hop has no usable neighbour entry yet and the host is
        /// resolving it. The kernel queues the packet until resolution ends
        /// (`__neigh_event_send`, `unres_qlen`); uvlan drops it.
        NeighbourPending = "neighbour_pending", "neigh_output / __neigh_event_send";
        /// The network has no wire (no parent, or `--internal`): what the kernel would hand to
        /// the (dummy) master is discarded, and nothing reaches a host stack.
        NoWire = "no_wire", "dummy master (uvlan: no wire)";
        /// The only destination is the sender itself; uvlan never loops a frame back to its
        /// port.
        LoopToSender = "loop_to_sender", "uvlan (no loop to sender)";
        /// `ETH_P_PAUSE` is never distributed (`ipvlan_multicast_enqueue`, `macvlan_broadcast`,
        /// C22); on ipvlan TX the wire copy is lost too.
        Pause = "pause", "ipvlan_multicast_enqueue / macvlan_broadcast";
        /// Consumed by a macvlan `source` device with `nodst` that is down (C57).
        SourceNodst = "source_nodst", "macvlan_forward_source";
        /// The passthru macvlan is down (`macvlan_handle_frame`).
        PassthruDown = "passthru_down", "macvlan_handle_frame";
        /// A flood whose filters matched nobody.
        NoReceiver = "no_receiver", "ipvlan_process_multicast / macvlan_broadcast";
        /// Port to port: longer than the receiving port's MTU + its Ethernet header + one VLAN
        /// tag, and not a GSO super-frame. `dev_forward_skb` refuses it (`is_skb_forwardable`)
        /// and the receiver counts `rx_dropped` (C66).
        MtuExceeded = "mtu_exceeded", "is_skb_forwardable (dev_forward_skb)";
        /// Port to wire: longer than the parent's MTU + its Ethernet header + one VLAN tag, and
        /// not a GSO super-frame: the lower device cannot send it (`packet_snd` fails with
        /// `EMSGSIZE`; a veth lower drops it in `is_skb_forwardable`) (C67).
        WireMtuExceeded = "wire_mtu_exceeded", "packet_snd (EMSGSIZE) / is_skb_forwardable on the lower device";
    }
}

/// A reusable output list: the datapath keeps one and the engine clears and refills it for
/// every frame, so no decision allocates once its capacity has grown to the largest flood.
#[derive(Debug, Default, Clone)]
pub struct Outputs {
    list: Vec<Output>,
}

impl Outputs {
    /// An empty list with room for `n` outputs.
    pub fn with_capacity(n: usize) -> Outputs {
        Outputs {
            list: Vec::with_capacity(n),
        }
    }

    /// The outputs of the last decision.
    #[inline]
    pub fn as_slice(&self) -> &[Output] {
        &self.list
    }

    /// Number of outputs.
    #[inline]
    pub fn len(&self) -> usize {
        self.list.len()
    }

    /// No outputs.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    #[inline]
    pub(crate) fn clear(&mut self) {
        self.list.clear();
    }

    #[inline]
    pub(crate) fn push(&mut self, o: Output) {
        self.list.push(o);
    }
}

/// The fate of one frame: the list of outputs, or a drop with its reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Deliver to each output (never empty).
    Forward(Vec<Output>),
    /// Nowhere.
    Drop(DropReason),
}

impl Verdict {
    /// The outputs (empty for a drop).
    pub fn outputs(&self) -> &[Output] {
        match self {
            Verdict::Forward(o) => o,
            Verdict::Drop(_) => &[],
        }
    }

    /// The drop reason, if dropped.
    pub fn drop_reason(&self) -> Option<DropReason> {
        match self {
            Verdict::Forward(_) => None,
            Verdict::Drop(r) => Some(*r),
        }
    }

    /// Ports that receive the frame, in output order.
    pub fn ports(&self) -> Vec<PortId> {
        self.outputs()
            .iter()
            .filter_map(|o| match o.target {
                Target::Port(p) => Some(p),
                _ => None,
            })
            .collect()
    }

    /// Whether any output goes to the wire (plain or routed).
    pub fn reaches_wire(&self) -> bool {
        self.outputs()
            .iter()
            .any(|o| matches!(o.target, Target::Wire(_) | Target::Routed { .. }))
    }

    /// Whether any output goes to the parent's stack.
    pub fn reaches_host(&self) -> bool {
        self.outputs()
            .iter()
            .any(|o| matches!(o.target, Target::HostStack(_)))
    }
}
