//! IPAM errors. `Display` is exactly Docker's text wherever Docker has one, because those
//! texts are what users search for.

use std::net::IpAddr;

use super::addr::{Family, Prefix};

/// Joins several error texts the way Docker's `multierror.Join` does: one error is printed
/// as it is; several are printed as `* e1\n* e2`, continuation lines indented by a tab.
pub(crate) fn join_errors(errs: &[String]) -> String {
    match errs {
        [one] => one.trim().to_string(),
        _ => {
            let items: Vec<String> = errs.iter().map(|e| e.replace('\n', "\n\t")).collect();
            format!("* {}", items.join("\n* "))
        }
    }
}

/// Why the IPAM could not reserve one address (Docker's `ipamapi` error texts).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AddrFailure {
    /// The address is already taken in the shared pool.
    #[error("Address already in use")]
    InUse,
    /// The pool (or the network's ip-range) has no free address left.
    #[error("no available addresses on this pool")]
    Exhausted,
    /// The address is not inside the pool's subnet.
    #[error("requested address is out of range")]
    OutOfRange,
}

/// Every error the IPAM reports.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum IpamError {
    // ---- CLI grouping (docker/cli `createIPAMConfig`), raised before any allocation ----
    /// More `--ip-range` or `--gateway` values than `--subnet` values.
    #[error("every ip-range or gateway must have a corresponding subnet")]
    RangeOrGatewayWithoutSubnet,
    /// Two `--subnet` values where one contains the other's address.
    #[error("multiple overlapping subnet configuration is not supported")]
    OverlappingSubnets,
    /// A `--subnet` value that is not CIDR text, found while matching it against another value.
    #[error("invalid subnet: invalid CIDR address: {0}")]
    CliInvalidSubnet(String),
    /// An `--ip-range`, `--gateway`, `--aux-address` or `--subnet` value with a `/` that is not
    /// CIDR text (Go's `net.ParseCIDR` error).
    #[error("invalid CIDR address: {0}")]
    CliInvalidCidr(String),
    /// Two `--ip-range` values inside one subnet.
    #[error(
        "cannot configure multiple ranges ({range}, {existing}) on the same subnet ({subnet})"
    )]
    MultipleRanges {
        /// The range being added.
        range: String,
        /// The range already attached to the subnet.
        existing: String,
        /// The subnet, as given.
        subnet: String,
    },
    /// An `--ip-range` inside no `--subnet`.
    #[error("no matching subnet for range {0}")]
    NoSubnetForRange(String),
    /// Two `--gateway` values inside one subnet.
    #[error(
        "cannot configure multiple gateways ({gateway}, {existing}) for the same subnet ({subnet})"
    )]
    MultipleGateways {
        /// The gateway being added.
        gateway: String,
        /// The gateway already attached to the subnet.
        existing: String,
        /// The subnet, as given.
        subnet: String,
    },
    /// A `--gateway` inside no `--subnet` (or not an address at all).
    #[error("no matching subnet for gateway {0}")]
    NoSubnetForGateway(String),
    /// An `--aux-address` inside no `--subnet` (or not an address at all).
    #[error("no matching subnet for aux-address {0}")]
    NoSubnetForAux(String),

    // ---- Daemon validation (`ValidateIPAM`) ----
    /// `--ipv4=false` without `--ipv6`: a network with no address family (the text of
    /// Docker's bridge driver; its macvlan and ipvlan drivers make such a network with no
    /// address at all, which uvlan refuses).
    #[error("IPv4 or IPv6 must be enabled")]
    NoAddressFamily,
    /// An IPv4 `--subnet` (with its `--ip-range`, `--gateway` and `--aux-address`) on a
    /// network created with `--ipv4=false` (Docker ignores it; uvlan refuses rather than drop
    /// the user's subnet).
    #[error("invalid network config: IPv4 is disabled (--ipv4=false) but subnet {0} is IPv4: drop the IPv4 --subnet (and its --ip-range, --gateway and --aux-address), or enable IPv4")]
    Ipv4Disabled(String),
    /// One or more problems in the grouped IPAM configuration.
    #[error("invalid network config:\n{}", join_errors(.0))]
    InvalidNetworkConfig(Vec<String>),

    // ---- Allocation at network create ----
    /// The subnet overlaps a subnet already allocated by some network (without `--ip-range`),
    /// or the identical subnet and range are already in use.
    #[error("invalid pool request: Pool overlaps with other one on this address space")]
    PoolOverlap,
    /// The gateway could not be reserved. `gateway` is empty when it was chosen automatically.
    #[error("failed to allocate gateway ({gateway}): {cause}")]
    Gateway {
        /// The requested gateway, as given (empty for an automatic one).
        gateway: String,
        /// Why it failed.
        cause: AddrFailure,
    },
    /// An auxiliary address could not be reserved.
    #[error("failed to allocate secondary ip address ({name}:{addr}): {cause}")]
    AuxAddress {
        /// The aux-address name.
        name: String,
        /// The address, as given.
        addr: String,
        /// Why it failed.
        cause: AddrFailure,
    },
    /// An auxiliary address outside the subnet that was actually allocated (only possible for
    /// a subnet taken from the default pools with `0.0.0.0/N` or `::/N`).
    #[error("auxiliary address: ({name}:{addr}) must belong to the master pool: {pool}")]
    AuxOutsidePool {
        /// The aux-address name.
        name: String,
        /// The address, as given.
        addr: String,
        /// The allocated subnet.
        pool: Prefix,
    },
    /// An `--ip-range` on a subnet requested as `0.0.0.0/N` or `::/N`, whose place is only
    /// known once it is taken from the default pools.
    #[error("invalid ip-range {range}: the subnet {subnet} is chosen from the default address pools, so an ip-range cannot be placed in it; give the subnet explicitly")]
    RangeOnDynamicSubnet {
        /// The range, as given.
        range: String,
        /// The subnet request, as given.
        subnet: String,
    },
    /// No default pool has room left for another subnet.
    #[error("all predefined address pools have been fully subnetted")]
    PoolsExhausted,

    // ---- Endpoint addresses ----
    /// Bad `--ip` / `--ip6` values (wrong family, unparsable, or in no allocated subnet).
    #[error("invalid endpoint settings:\n{}", join_errors(.0))]
    InvalidEndpointSettings(Vec<String>),
    /// A requested `--ip` / `--ip6` is already taken (gateway, aux address, another endpoint,
    /// or another network sharing the pool).
    #[error("Address already in use")]
    AddressInUse,
    /// No free dynamic address in any of the network's subnets of that family.
    #[error("no available IPv{} addresses on this network's address pools: {name} ({id})", .family.number())]
    NoAvailableAddresses {
        /// The family that ran out.
        family: Family,
        /// Network name.
        name: String,
        /// Network ID.
        id: String,
    },

    // ---- State handling ----
    /// The network ID is not known to the IPAM.
    #[error("network {0} not found in the IPAM state")]
    UnknownNetwork(String),
    /// A network with this ID already holds addresses.
    #[error("network {0} already exists in the IPAM state; remove it before creating it again")]
    NetworkExists(String),
    /// `remove_network` while endpoints still hold addresses.
    #[error("network {name} ({id}) still has {count} endpoint address(es) allocated; disconnect its endpoints before removing it")]
    ActiveEndpoints {
        /// Network name.
        name: String,
        /// Network ID.
        id: String,
        /// Number of endpoint addresses still held.
        count: usize,
    },
    /// `release` of an address this network's endpoints do not hold.
    #[error("address {addr} is not allocated to an endpoint of network {name} ({id}); nothing was released")]
    NotAllocated {
        /// The address.
        addr: IpAddr,
        /// Network name.
        name: String,
        /// Network ID.
        id: String,
    },
    /// Stored IPAM state that cannot be replayed (overlapping pools, doubly used addresses,
    /// malformed records). Nothing is dropped silently: the store must be repaired.
    #[error(
        "stored IPAM state is inconsistent: {0}; repair or remove the offending network record"
    )]
    CorruptState(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn join_formats_like_moby_multierror() {
        assert_eq!(join_errors(&["a ".into()]), "a");
        assert_eq!(join_errors(&["a".into(), "b\nc".into()]), "* a\n* b\n\tc");
    }
}
