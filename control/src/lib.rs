//! uvlan control plane: the Docker-shaped CLI, the daemon and its API, IPAM, persistent state,
//! namespace and netlink plumbing, and the Docker and CNI front ends.
//!
//! Dependencies point one way (a unit test checks that no module uses one that uses it back):
//! `cli` runs `uvlan daemon` through `service`, the service root, which starts the `daemon`
//! and its front ends and joins them (and `uvlan lab` through `lab`); the Docker driver
//! (`docker`) and the CNI plugin (`cni`) use narrow interfaces of the daemon (`api`
//! requests, `docker::DaemonApi`), and the daemon uses neither; `metrics` encodes the
//! daemon's stats report for `/metrics` (the service root hands it the report); below them
//! all are `api`, `store`, `ipam`, `inspect`, `netns`, `ids`, `logger` and `sys`.

pub mod api;
pub mod cli;
pub mod cni;
pub mod daemon;
pub mod dhcp;
pub mod docker;
pub mod doctor;
pub mod ids;
pub mod inspect;
pub mod ipam;
pub mod lab;
#[cfg(test)]
mod layering;
pub mod logger;
pub mod metrics;
pub mod netns;
pub mod nsutil;
pub mod service;
pub mod store;
pub mod sys;
