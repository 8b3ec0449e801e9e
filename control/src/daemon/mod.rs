//! The uvlan daemon: owns the dataplane, every endpoint TAP, the IPAM and the state store,
//! and serves the API.
//!
//! Every mutating request runs under one lock, validates everything first, works on copies
//! (the IPAM address space is cloned), undoes its side effects on failure, writes the store,
//! and only then commits. A failed request leaves the state as it was.

mod attach;
mod connect;
pub mod dp;
pub mod endpoint;
mod external;
mod follow;
pub mod host;
mod managed;
mod model;
mod network;
pub mod options;
mod parents;
pub mod real;
mod state;
mod stats;
mod trace;

#[cfg(test)]
mod tests;

pub use model::Daemon;
pub use state::StartError;
