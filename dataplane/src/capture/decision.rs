//! What a capture record says about the engine's decision: a small `Copy` value, built by a
//! tracer that watches only the outputs of a decision, and worded by the control plane.

use std::fmt::Write as _;

use crate::fwd::observe::{Detail, Step, Tracer};
use crate::fwd::{DropReason, Outputs, ParentId, PortId, Target};

/// Where a frame was seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Point {
    /// A port's TAP (an endpoint).
    Port(PortId),
    /// A parent's wire (the tap matches the frame's 802.1Q tag to a network's VID).
    Wire(ParentId),
}

/// How a frame ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    /// The engine forwarded it (to the outputs counted in the [`Decision`]).
    Forward,
    /// The engine dropped it.
    Drop(DropReason),
    /// The engine forwarded it but the I/O layer could not deliver this copy; the
    /// `IoDrop` counter name (`tap_full`, `wire_full`, ...).
    NotDelivered(&'static str),
}

/// The engine's decision about a frame, as a capture record carries it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// Forwarded, dropped, or not delivered.
    pub fate: Fate,
    /// The kernel function whose rule decided: for a forward, the one that emitted the
    /// output (the first one, on an inbound record); for a drop, the reason's rule.
    pub kernel: &'static str,
    /// Port outputs.
    pub ports: u16,
    /// Wire outputs (plain or routed).
    pub wire: u16,
    /// Outputs to the parent's own stack.
    pub host: u16,
    /// The first port output, named in the comment.
    pub first_port: Option<PortId>,
}

impl Decision {
    /// A drop by the engine.
    pub fn drop(reason: DropReason) -> Decision {
        Decision {
            fate: Fate::Drop(reason),
            kernel: reason.kernel_rule(),
            ports: 0,
            wire: 0,
            host: 0,
            first_port: None,
        }
    }

    /// This forward, for a copy the I/O layer could not deliver (`io_drop`: the `IoDrop`
    /// counter name).
    pub fn not_delivered(self, io_drop: &'static str) -> Decision {
        Decision {
            fate: Fate::NotDelivered(io_drop),
            ..self
        }
    }

    /// Whether the record shows a frame (or a copy) that went nowhere: `--drops` ones.
    pub fn is_drop(&self) -> bool {
        !matches!(self.fate, Fate::Forward)
    }

    /// The record's comment: the verdict, the kernel function, and for drops the reason.
    /// `name` gives the name of a port (its endpoint), when it has one.
    pub fn comment(&self, name: &dyn Fn(PortId) -> Option<String>) -> String {
        let mut s = String::new();
        match self.fate {
            Fate::Forward => {
                s.push_str("verdict: forward to ");
                let mut parts: Vec<String> = Vec::new();
                if let Some(p) = self.first_port {
                    parts.push(name(p).unwrap_or_else(|| p.to_string()));
                    if self.ports > 1 {
                        let more = self.ports - 1;
                        parts.push(format!(
                            "{more} more port{}",
                            if more == 1 { "" } else { "s" }
                        ));
                    }
                }
                if self.wire > 0 {
                    parts.push("the wire".into());
                }
                if self.host > 0 {
                    parts.push("the host's stack".into());
                }
                if parts.is_empty() {
                    parts.push("nowhere".into());
                }
                s.push_str(&parts.join(", "));
            }
            Fate::Drop(r) => {
                let _ = write!(s, "verdict: drop ({r})");
            }
            Fate::NotDelivered(io) => {
                let _ = write!(s, "verdict: forward, not delivered ({io})");
            }
        }
        if !self.kernel.is_empty() {
            let _ = write!(s, "; kernel: {}", self.kernel);
        }
        s
    }
}

/// How many outputs the tracer remembers the kernel function of.
const TRACKED: usize = 8;

/// A [`Tracer`] that keeps only what a capture record needs: the kernel function behind each
/// output (the first eight of them). No allocation. Run the decision with it
/// (`Engine::decide_traced`) when [`super::CaptureTap::watches`] the ingress point, then call
/// [`CaptureTracer::decision`] for the inbound record and [`CaptureTracer::output`] for each
/// copy written out. The next decision traced starts it afresh.
#[derive(Debug, Clone)]
pub struct CaptureTracer {
    outs: [(Option<Target>, &'static str); TRACKED],
    n: usize,
    first: &'static str,
    /// `decision` was called: the next step starts a new decision.
    done: bool,
}

impl Default for CaptureTracer {
    fn default() -> Self {
        CaptureTracer::new()
    }
}

impl Tracer for CaptureTracer {
    const ENABLED: bool = true;

    #[inline]
    fn step(&mut self, step: Step) {
        if self.done {
            self.forget();
        }
        if let Detail::Out(o) = step.detail {
            if self.first.is_empty() {
                self.first = step.kernel;
            }
            if let Some(slot) = self.outs.get_mut(self.n) {
                *slot = (Some(o.target), step.kernel);
                self.n += 1;
            }
        }
    }
}

impl CaptureTracer {
    /// An empty tracer.
    pub fn new() -> CaptureTracer {
        CaptureTracer {
            outs: [(None, ""); TRACKED],
            n: 0,
            first: "",
            done: false,
        }
    }

    fn forget(&mut self) {
        self.n = 0;
        self.first = "";
        self.done = false;
    }

    /// Summarises the decision just traced (`result` and `out` as `decide_traced` left
    /// them): the value for the inbound record.
    pub fn decision(&mut self, result: Result<(), DropReason>, out: &Outputs) -> Decision {
        if self.done {
            // Nothing was traced since the last call.
            self.forget();
        }
        self.done = true;
        if let Err(reason) = result {
            return Decision::drop(reason);
        }
        let mut d = Decision {
            fate: Fate::Forward,
            kernel: self.first,
            ports: 0,
            wire: 0,
            host: 0,
            first_port: None,
        };
        for o in out.as_slice() {
            match o.target {
                Target::Port(p) => {
                    d.ports = d.ports.saturating_add(1);
                    d.first_port.get_or_insert(p);
                }
                Target::Wire(_) | Target::Routed { .. } => d.wire = d.wire.saturating_add(1),
                Target::HostStack(_) => d.host = d.host.saturating_add(1),
            }
        }
        d
    }

    /// The decision `d` (from [`CaptureTracer::decision`]) for the copy sent to `target`:
    /// the kernel function is the one that emitted that output.
    pub fn output(&self, d: Decision, target: Target) -> Decision {
        let kernel = self
            .outs
            .iter()
            .take(self.n)
            .find(|(t, _)| *t == Some(target))
            .map_or(d.kernel, |(_, k)| *k);
        Decision { kernel, ..d }
    }
}
