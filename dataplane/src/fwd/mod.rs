//! The pure forwarding engine.
//!
//! A parent (the kernel's lower/master device) carries networks: untagged, or one per 802.1Q
//! VID. A network is one kernel "port" (ipvlan `ipvl_port`, macvlan `macvlan_port`) with its
//! driver state; its ports are the slaves (TAP endpoints in uvlan). A network may also have no
//! parent, or be `--internal`: then it has no wire at all.
//!
//! [`Engine::decide`] takes one frame and where it came from ([`Ingress`]) and yields the
//! outputs (a port, the wire, the parent's own stack, or "route via the parent" to a resolved
//! next hop) with their VLAN push/pop, or a [`DropReason`]. Routed egress asks the host's
//! routing and neighbour tables through [`Routes`] (the route stage, `route.rs`), so one
//! decision covers a frame's whole fate, and the trace runs the same stage. It reproduces the decisions of
//! `ipvlan_core.c`, `ipvlan_l3s.c` and `macvlan.c` (statements C1–C67 of `docs/conformance.md`); every branch
//! names the kernel function it emulates, and `trace` prints those names.
//!
//! The engine never does I/O, reads no clock, and allocates nothing per frame: tables are
//! `ahash` maps keyed by address (ipvlan) or MAC (macvlan), and outputs go into a reusable
//! [`Outputs`] list.
#![forbid(unsafe_code)]

mod closed_set;
mod config;
mod decide;
pub mod observe;
mod prefilter;
mod route;
pub mod sample;
mod types;
mod verdict;

pub(crate) use config::Port;
pub use config::{
    ConfigError, Engine, Errno, IpvlanAttrs, LinkRef, LinkType, MacaddrMode, MacvlanAttrs, Master,
    NetworkInfo, NetworkSpec, Owner, ParentInfo, ParentSpec, PortInfo, WireKey,
    MACVLAN_DEFAULT_BC_QUEUE_LEN,
};
pub use decide::Ingress;
pub(crate) use prefilter::NetFilterKey;
pub use prefilter::{Prefilter, PREFILTER_REASONS};
pub use route::{NextHop, NoRoutes, Routes};
pub use types::{
    Driver, IpvlanFlag, IpvlanMode, MacvlanMode, McFilter, NetworkId, ParentId, PortId,
    MACVLAN_FLAG_NODST, MACVLAN_FLAG_NOPROMISC,
};
pub use verdict::{DropReason, Output, Outputs, PacketType, Target, Verdict, VlanOp};

pub(crate) use closed_set::closed_set;

#[cfg(test)]
mod tests;
