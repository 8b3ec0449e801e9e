//! Docker-compatible IP address management for uvlan: pure logic, no I/O, no netlink, no
//! clock.
//!
//! # Pipeline
//!
//! `network create` runs, in Docker's order:
//! 1. [`group_cli`]: the CLI's grouping of `--subnet`, `--ip-range`, `--gateway` and
//!    `--aux-address` (docker/cli `createIPAMConfig` as of Docker ≤ 27, with its error texts);
//! 2. [`validate_config`]: the daemon's `ValidateIPAM` (all problems reported together under
//!    `invalid network config:`);
//! 3. [`AddressSpace::create_validated`]: pools, gateways and aux addresses, as libnetwork's
//!    `ipamAllocate` and the default IPAM driver do.
//!
//! [`AddressSpace::create_network`] runs all three from an [`IpamRequest`].
//!
//! # Gateway rule
//!
//! uvlan follows Docker ≤ 27, the version the seed documents describe (`docs/README.md`,
//! "Options of network create"): every subnet of a network gets a gateway in IPAM.
//! - `--gateway G` given: G is reserved (it may lie outside `--ip-range`) and listed.
//! - `--gateway` absent and [`IpamRequest::want_gateway`] set, on a subnet larger than a /31
//!   (IPv6: larger than a /127): the lowest free address of the `--ip-range`, else of the
//!   subnet, is reserved and listed — normally the first usable address (`.1`, `::1`; `.128`
//!   for `--ip-range x.x.x.128/25`).
//! - `--gateway` absent on a point-to-point subnet (IPv4 /31 or /32, IPv6 /127 or /128): no
//!   gateway. Docker ≥ 23 reserves neither network nor broadcast address there (RFC 3021), and
//!   Docker 28 stopped reserving a gateway where the driver needs none (moby 38e76ebea9, made
//!   for internal /31 links; Docker 29 never picks one), so both addresses of a /31 are
//!   endpoints'. The gateway a Docker ≤ 27 would take there is the only thing uvlan's policy
//!   drops: without it, a /31 could hold one endpoint only.
//! - `want_gateway` unset: nothing is chosen automatically, so the first endpoint gets `.1`
//!   (Docker 28 for internal/parent-less/l3 networks, Docker 29 for all). A gateway given
//!   with `--gateway` is still reserved, as in every Docker version.
//!
//! Docker ≤ 27 allocated the gateway for every ipvlan/macvlan network: internal, parent-less
//! and l3/l3s ones included (moby 2f60d15ddf/8b13cde274 removed it for those only in 28.0).
//! Following that, the control plane passes `want_gateway = true` for every network and the
//! driver decides whether routes use the gateway (l2/macvlan: `default via`; l3/l3s:
//! `default dev eth0`; internal: none).
//!
//! # Shared pools
//!
//! Pools are per subnet, not per network (Docker's `addrSpace`). A subnet without
//! `--ip-range` must overlap no allocated subnet. A subnet with `--ip-range` skips the
//! overlap check: it joins an identical allocated subnet (sharing its used-address set) or
//! gets a pool of its own. A pool is freed when its last user leaves.
#![forbid(unsafe_code)]

mod addr;
mod addrset;
mod error;
mod pools;
mod request;
mod space;

#[cfg(test)]
mod tests;

pub use addr::{Family, Prefix, PrefixParseError};
pub use error::{AddrFailure, IpamError};
pub use pools::{derive_ula_base, DefaultPools, PoolSpec};
pub use request::{group_cli, validate_config, IpamConfig, IpamRequest, ValidatedConfig};
pub use space::{
    AddrRequest, AddressSpace, EndpointAddr, EndpointAddrs, NetworkIpam, StoredNetwork,
    SubnetAlloc, SubnetStatus,
};
