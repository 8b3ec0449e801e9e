//! Explains one frame's fate stage by stage, naming the kernel rule each step emulates.
//!
//! [`trace`] runs the engine's own decision code ([`Engine::decide_traced`]) with a recorder
//! attached, so the explanation and the datapath's verdict come from the same code and cannot
//! disagree. Routed egress (ipvlan L3/L3S) includes the route stage: give [`trace`] the
//! [`Routes`] the datapath uses (`DataplaneHandle::trace` does) and it names what the host's
//! routing and neighbour tables answered, and the fate that follows.

use crate::fwd::observe::{Detail, L3Kind, Recorder, Stage, Step};
use crate::fwd::{
    Engine, Ingress, NextHop, Output, Outputs, Owner, PacketType, Routes, Target, Verdict, VlanOp,
};
use crate::fwd::{NetworkId, ParentId, PortId};
use std::fmt;

/// One explained step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceStep {
    /// The stage (parse, VLAN demux, lookup, flag check, output, drop).
    pub stage: Stage,
    /// The kernel function whose rule the step emulates.
    pub kernel: &'static str,
    /// What happened, in words.
    pub text: String,
}

/// The explanation of one decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trace {
    /// The steps in order.
    pub steps: Vec<TraceStep>,
    /// The verdict (identical to what the datapath decides for the same frame).
    pub verdict: Verdict,
    /// The verdict in words.
    pub summary: String,
}

/// Decides `frame` from `ingress` and explains every step; `routes` answers the route stage
/// (pass the datapath's own to see what it would do).
pub fn trace<R: Routes + ?Sized>(
    engine: &Engine,
    frame: &[u8],
    ingress: Ingress,
    routes: &mut R,
) -> Trace {
    let mut rec = Recorder::default();
    let mut out = Outputs::default();
    let verdict = match engine.decide_traced(frame, ingress, routes, &mut out, &mut rec) {
        Ok(()) => Verdict::Forward(out.as_slice().to_vec()),
        Err(r) => Verdict::Drop(r),
    };
    let names = Names(engine);
    let steps = rec
        .steps
        .iter()
        .map(|s| TraceStep {
            stage: s.stage,
            kernel: s.kernel,
            text: names.detail(s),
        })
        .collect();
    let summary = match &verdict {
        Verdict::Drop(r) => format!("DROP ({}): rule of {}", r.as_str(), r.kernel_rule()),
        Verdict::Forward(outs) => outs
            .iter()
            .map(|o| names.output(o))
            .collect::<Vec<_>>()
            .join("; "),
    };
    Trace {
        steps,
        verdict,
        summary,
    }
}

/// The word for a stage.
pub fn stage_name(s: Stage) -> &'static str {
    match s {
        Stage::Parse => "parse",
        Stage::VlanDemux => "vlan-demux",
        Stage::Lookup => "lookup",
        Stage::FlagCheck => "flag-check",
        Stage::Route => "route",
        Stage::Output => "output",
        Stage::Drop => "drop",
    }
}

struct Names<'a>(&'a Engine);

impl Names<'_> {
    fn port(&self, p: PortId) -> String {
        match self.0.port_info(p) {
            Some(i) => format!("port {}", i.name),
            None => format!("{p}"),
        }
    }

    fn network(&self, n: NetworkId) -> String {
        match self.0.network_info(n) {
            Some(i) => {
                let mode = match (i.ipvlan_mode, i.ipvlan_flag) {
                    (Some(m), Some(f)) => format!(" {} {}", m.as_str(), f.as_str()),
                    _ => String::new(),
                };
                format!("network {} ({}{mode})", i.name, i.driver.as_str())
            }
            None => format!("{n}"),
        }
    }

    fn parent(&self, p: ParentId) -> String {
        match self.0.parent_info(p) {
            Some(i) => format!("parent {}", i.name),
            None => format!("{p}"),
        }
    }

    fn pkt(t: PacketType) -> &'static str {
        match t {
            PacketType::OtherHost => "PACKET_OTHERHOST (its stack discards it)",
            PacketType::Outgoing => "outgoing",
            other => other.kernel_name(),
        }
    }

    fn output(&self, o: &Output) -> String {
        let vlan = match o.vlan {
            VlanOp::Keep => String::new(),
            VlanOp::Push(v) => format!(", push 802.1Q tag {v}"),
            VlanOp::Pop => ", pop the 802.1Q tag".to_string(),
        };
        match o.target {
            Target::Port(p) => format!("deliver to {} ({}{vlan})", self.port(p), Self::pkt(o.pkt_type)),
            Target::Wire(p) => format!("send on the wire of {}{vlan}", self.parent(p)),
            Target::HostStack(p) => format!("pass to the host stack of {} ({})", self.parent(p), Self::pkt(o.pkt_type)),
            Target::Routed { parent, dst, next_hop } => format!(
                "route {dst} out of {} to next hop {next_hop} (src MAC = parent MAC, TTL unchanged{vlan})",
                self.parent(parent)
            ),
        }
    }

    fn detail(&self, s: &Step) -> String {
        match s.detail {
            Detail::Ingress(Ingress::Port(p)) => format!("frame sent by {}", self.port(p)),
            Detail::Ingress(Ingress::Wire(p)) => format!("frame received on {}", self.parent(p)),
            Detail::Ingress(Ingress::WireLoopback(p)) => {
                format!("looped-back copy of a frame sent by {}", self.parent(p))
            }
            Detail::Frame {
                dst,
                src,
                ethertype,
                len,
            } => {
                format!("{src} > {dst}, ethertype {ethertype:#06x}, {len} bytes")
            }
            Detail::Tag { tag, network } => {
                let t = match tag {
                    Some(t) => format!("802.1Q VID {}", t.vid),
                    None => "untagged".to_string(),
                };
                match network {
                    Some(n) => format!("{t} → {}", self.network(n)),
                    None => format!("{t} → no uvlan network"),
                }
            }
            Detail::Network(n) => self.network(n),
            Detail::L3 { kind, dst, src } => {
                let k = match kind {
                    L3Kind::Arp => "ARP",
                    L3Kind::Ipv4 => "IPv4",
                    L3Kind::Ipv6 => "IPv6",
                    L3Kind::Icmpv6Unspec => "ICMPv6 from :: (only an NS target is a key)",
                    L3Kind::None => "no L3 key (not ARP/IPv4/IPv6, or a bad header)",
                };
                match (dst, src) {
                    (Some(d), Some(s)) => format!("{k}: dst key {d}, src key {s}"),
                    _ => k.to_string(),
                }
            }
            Detail::Addr {
                key,
                use_dest,
                owner,
            } => {
                let which = if use_dest { "destination" } else { "source" };
                let who = match owner {
                    Some(Owner::Port(p)) => format!("owned by {}", self.port(p)),
                    Some(Owner::Host) => "one of the parent's own addresses".to_string(),
                    None => "no up port owns it".to_string(),
                };
                format!("{which} {key}: {who}")
            }
            Detail::Mac { mac, port } => match port {
                Some(p) => format!("{mac} is {}", self.port(p)),
                None => format!("{mac} belongs to no up macvlan"),
            },
            Detail::Check { what, holds } => {
                format!("{what}: {}", if holds { "yes" } else { "no" })
            }
            Detail::Route {
                parent,
                dst,
                answer,
            } => format!(
                "the host's tables for {dst} out of {}: {}",
                self.parent(parent),
                answer.describe()
            ),
            Detail::Neighbour(NextHop::Mac(m)) => format!("next hop {m}"),
            Detail::Neighbour(_) => {
                "no usable neighbour entry yet: the host is resolving it; the kernel would \
                 queue the packet, uvlan drops it"
                    .to_string()
            }
            Detail::NotJoined { port, group } => format!(
                "{} skipped: its multicast filter does not hold {group} (not joined)",
                self.port(port)
            ),
            Detail::Note(n) => n.to_string(),
            Detail::Suppressed(r) => format!("no output here ({})", r.as_str()),
            Detail::Out(o) => self.output(&o),
            Detail::Dropped(r) => format!("dropped: {}", r.as_str()),
        }
    }
}

impl fmt::Display for Trace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, s) in self.steps.iter().enumerate() {
            writeln!(
                f,
                "{:>2}. {:<10} {:<44} {}",
                i + 1,
                stage_name(s.stage),
                s.kernel,
                s.text
            )?;
        }
        write!(f, "verdict: {}", self.summary)
    }
}
