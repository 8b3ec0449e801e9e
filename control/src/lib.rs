//! uvlan control plane: the Docker-shaped CLI, the daemon and its API, IPAM, persistent state,
//! namespace and netlink plumbing, and the Docker and CNI front ends.

pub mod api;
pub mod cli;
pub mod cni;
pub mod daemon;
pub mod docker;
pub mod ids;
pub mod inspect;
pub mod ipam;
pub mod lab;
pub mod logger;
pub mod netns;
pub mod service;
pub mod store;
pub mod sys;
