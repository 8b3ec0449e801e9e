//! What the run loop records for one frame, done without I/O: a reference for the loop's
//! hook, and the synthetic feed of dataplanes that move no frames (the control plane's
//! configuration-only dataplane and its tests).

use std::net::IpAddr;

use super::{CaptureTap, CaptureTracer, Direction, Point};
use crate::fwd::{DropReason, Engine, Ingress, Outputs, Routes, Target, VlanOp};
use crate::wire::{ethertype, pop_tag, push_tag, EthView, VlanTag};

/// The capture point of an ingress.
pub fn ingress_point(ingress: Ingress) -> Point {
    match ingress {
        Ingress::Port(p) => Point::Port(p),
        Ingress::Wire(p) | Ingress::WireLoopback(p) => Point::Wire(p),
    }
}

/// The capture point of an output (`None`: the parent's own stack, where nothing is
/// written).
pub fn output_point(target: Target) -> Option<Point> {
    match target {
        Target::Port(q) => Some(Point::Port(q)),
        Target::Wire(p) | Target::Routed { parent: p, .. } => Some(Point::Wire(p)),
        Target::HostStack(_) => None,
    }
}

/// Decides `frame` from `ingress` and records on `tap` what the run loop records: the frame
/// inbound at its ingress, then each copy outbound where it is written, as the I/O layer
/// would write it (VLAN tag pushed or popped; a routed packet with its new Ethernet header:
/// the next hop's MAC, the parent's MAC). Ends the batch. Allocates (for the copies):
/// for tests and configuration-only dataplanes, not the datapath.
pub fn feed<R: Routes + ?Sized>(
    engine: &Engine,
    routes: &mut R,
    tap: &mut CaptureTap,
    frame: &[u8],
    ingress: Ingress,
) -> Result<(), DropReason> {
    let mut tracer = CaptureTracer::new();
    let mut out = Outputs::default();
    let r = engine.decide_traced(frame, ingress, routes, &mut out, &mut tracer);
    let d = tracer.decision(r, &out);
    tap.record(ingress_point(ingress), Direction::Inbound, frame, d);
    let mut copy = Vec::new();
    for o in out.as_slice() {
        let Some(point) = output_point(o.target) else {
            continue;
        };
        let base: Vec<u8> = match o.target {
            Target::Routed {
                parent,
                dst,
                next_hop,
            } => {
                let Some(src) = engine.parent_info(parent).map(|p| p.mac) else {
                    continue;
                };
                let payload = EthView::parse(frame)
                    .ok()
                    .map(|e| match e.untag() {
                        Ok(Some((_, inner))) => inner.payload,
                        _ => e.payload,
                    })
                    .unwrap_or(&[]);
                let et = match dst {
                    IpAddr::V4(_) => ethertype::IPV4,
                    IpAddr::V6(_) => ethertype::IPV6,
                };
                crate::wire::build::ethernet(next_hop, src, et, payload)
            }
            _ => frame.to_vec(),
        };
        match o.vlan {
            VlanOp::Keep => copy = base,
            VlanOp::Pop => pop_tag(&base, &mut copy),
            VlanOp::Push(vid) => push_tag(
                &base,
                VlanTag {
                    pcp: 0,
                    dei: false,
                    vid,
                },
                &mut copy,
            ),
        }
        tap.record(
            point,
            Direction::Outbound,
            &copy,
            tracer.output(d, o.target),
        );
    }
    tap.end_batch();
    r
}
