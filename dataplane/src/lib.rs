//! uvlan dataplane: checked wire views, the pure ipvlan/macvlan forwarding engine, its trace,
//! and the I/O edge (TAP, AF_XDP, AF_PACKET).
//!
//! Arrows point one way: `run → port`, `run → fwd`, `run → capture`, `capture → fwd`,
//! `fwd → wire`, `trace → fwd`. The engine (`fwd`) never does I/O, never reads a clock and
//! never allocates per frame.
#![forbid(unsafe_op_in_unsafe_fn)]

pub mod capture;
pub mod fwd;
pub mod offload;
pub mod port;
pub mod run;
pub mod trace;
pub mod wire;

#[cfg(test)]
mod test_rng;
