//! From raw `network create` flags to a validated IPAM configuration, in Docker's order:
//! first the CLI's grouping of subnets, ranges, gateways and aux addresses
//! (docker/cli `createIPAMConfig`), then the daemon's `ValidateIPAM`.

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use super::addr::{
    go_parse_cidr, go_parse_ip, netip_parse_addr, netip_parse_prefix, Family, Prefix,
};
use super::error::IpamError;

/// The IPAM part of `uvlan network create`, as the raw flag values.
///
/// Each element is one flag occurrence (`--subnet A --subnet B` gives two). The CLI front end
/// splits `--aux-address name=ip` at the first `=` (a value without `=` is `(name, "")`).
/// The default request has IPv4 on and IPv6 off, as `network create` without flags.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpamRequest {
    /// `--subnet` values, in order. `0.0.0.0/N` / `::/N` ask for a /N from the default pools.
    pub subnets: Vec<String>,
    /// `--gateway` values.
    pub gateways: Vec<String>,
    /// `--ip-range` values.
    pub ip_ranges: Vec<String>,
    /// `--aux-address` values as `(name, address)`; a repeated name keeps the last address.
    pub aux: Vec<(String, String)>,
    /// `--ipv4` (default true): allocate IPv4 (`--ipv4=false`: no IPv4 subnet, none given).
    #[serde(default = "crate::ipam::request::yes")]
    pub ipv4: bool,
    /// `--ipv6`: allocate IPv6 (v6 subnets are ignored without it).
    pub ipv6: bool,
    /// Whether the network wants a gateway chosen automatically when `--gateway` is absent.
    /// A gateway given with `--gateway` is reserved either way (every Docker version does).
    pub want_gateway: bool,
}

impl Default for IpamRequest {
    fn default() -> Self {
        IpamRequest {
            subnets: Vec::new(),
            gateways: Vec::new(),
            ip_ranges: Vec::new(),
            aux: Vec::new(),
            ipv4: true,
            ipv6: false,
            want_gateway: false,
        }
    }
}

/// `true`, for `#[serde(default = ...)]` of fields that default to on.
pub(crate) fn yes() -> bool {
    true
}

/// One `IPAM.Config[]` entry in Docker's API shape. The CLI grouping produces these (with
/// the user's strings), `docker network inspect` prints them, and an API-level caller (a
/// Docker remote driver) can pass them directly. Empty fields are omitted from JSON.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpamConfig {
    /// The subnet, in CIDR notation.
    #[serde(rename = "Subnet", default, skip_serializing_if = "String::is_empty")]
    pub subnet: String,
    /// The range dynamic addresses come from, if narrower than the subnet.
    #[serde(rename = "IPRange", default, skip_serializing_if = "Option::is_none")]
    pub ip_range: Option<String>,
    /// The gateway address.
    #[serde(rename = "Gateway", default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
    /// Reserved auxiliary addresses by name.
    #[serde(
        rename = "AuxiliaryAddresses",
        default,
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub aux: BTreeMap<String, String>,
}

/// Go's `subnetMatches` from docker/cli: does `subnet` (CIDR text) contain `data` (an address,
/// or the address part of CIDR text)? Unparsable `data` without a `/` simply does not match.
fn subnet_matches(subnet: &str, data: &str) -> Result<bool, IpamError> {
    let (_, net) =
        go_parse_cidr(subnet).ok_or_else(|| IpamError::CliInvalidSubnet(subnet.to_string()))?;
    let ip = if data.contains('/') {
        go_parse_cidr(data)
            .ok_or_else(|| IpamError::CliInvalidCidr(data.to_string()))?
            .0
    } else {
        match go_parse_ip(data) {
            Some(ip) => ip,
            None => return Ok(false),
        }
    };
    Ok(net.contains_go(ip))
}

/// The CLI's grouping (docker/cli `createIPAMConfig`, Docker ≤ 27): checks counts, overlap
/// between subnets, and attaches each range, gateway and aux address to the subnet that
/// contains it. Entries come out in `--subnet` order (Docker's CLI uses a Go map, so its
/// order is random; uvlan keeps the user's order). Aux addresses are matched in name order.
pub fn group_cli(req: &IpamRequest) -> Result<Vec<IpamConfig>, IpamError> {
    if req.subnets.len() < req.ip_ranges.len() || req.subnets.len() < req.gateways.len() {
        return Err(IpamError::RangeOrGatewayWithoutSubnet);
    }
    let mut entries: Vec<IpamConfig> = Vec::with_capacity(req.subnets.len());
    for s in &req.subnets {
        for k in &entries {
            let ok1 = subnet_matches(s, &k.subnet)?;
            let ok2 = subnet_matches(&k.subnet, s)?;
            if ok1 || ok2 {
                return Err(IpamError::OverlappingSubnets);
            }
        }
        entries.push(IpamConfig {
            subnet: s.clone(),
            ..IpamConfig::default()
        });
    }

    for r in &req.ip_ranges {
        let mut matched = false;
        for entry in entries.iter_mut() {
            if go_parse_cidr(r).is_none() {
                return Err(IpamError::CliInvalidCidr(r.clone()));
            }
            if !subnet_matches(&entry.subnet, r)? {
                continue;
            }
            if let Some(existing) = &entry.ip_range {
                return Err(IpamError::MultipleRanges {
                    range: r.clone(),
                    existing: existing.clone(),
                    subnet: entry.subnet.clone(),
                });
            }
            entry.ip_range = Some(r.clone());
            matched = true;
        }
        if !matched {
            return Err(IpamError::NoSubnetForRange(r.clone()));
        }
    }

    for g in &req.gateways {
        let mut matched = false;
        for entry in entries.iter_mut() {
            if !subnet_matches(&entry.subnet, g)? {
                continue;
            }
            if let Some(existing) = &entry.gateway {
                return Err(IpamError::MultipleGateways {
                    gateway: g.clone(),
                    existing: existing.clone(),
                    subnet: entry.subnet.clone(),
                });
            }
            entry.gateway = Some(g.clone());
            matched = true;
        }
        if !matched {
            return Err(IpamError::NoSubnetForGateway(g.clone()));
        }
    }

    let aux: BTreeMap<&str, &str> = req
        .aux
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    for (name, addr) in aux {
        let mut matched = false;
        for entry in entries.iter_mut() {
            if !subnet_matches(&entry.subnet, addr)? {
                continue;
            }
            entry.aux.insert(name.to_string(), addr.to_string());
            matched = true;
        }
        if !matched {
            return Err(IpamError::NoSubnetForAux(addr.to_string()));
        }
    }
    Ok(entries)
}

/// How a subnet is obtained.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SubnetReq {
    /// This exact (masked) subnet.
    Static(Prefix),
    /// A subnet from the default pools; `size` overrides the pool's subnet length.
    Dynamic { family: Family, size: Option<u8> },
}

/// One validated, parsed configuration entry. The user's strings are kept for error texts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ValidEntry {
    pub(crate) subnet: SubnetReq,
    pub(crate) subnet_text: String,
    pub(crate) range: Option<(Prefix, String)>,
    pub(crate) gateway: Option<(IpAddr, String)>,
    pub(crate) aux: BTreeMap<String, (IpAddr, String)>,
}

impl ValidEntry {
    /// An entry asking for a default-pool subnet of the pool's usual size.
    pub(crate) fn default_dynamic(family: Family) -> ValidEntry {
        ValidEntry {
            subnet: SubnetReq::Dynamic { family, size: None },
            subnet_text: String::new(),
            range: None,
            gateway: None,
            aux: BTreeMap::new(),
        }
    }
}

/// A configuration that passed the daemon's validation, split by family (IPv4 entries then
/// IPv6 entries, each in the given order). IPv4 entries are present only with IPv4 on (the
/// default), IPv6 entries only with `--ipv6`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ValidatedConfig {
    pub(crate) v4: Vec<ValidEntry>,
    pub(crate) v6: Vec<ValidEntry>,
    pub(crate) ipv4: bool,
    pub(crate) ipv6: bool,
}

impl ValidatedConfig {
    /// Whether IPv4 is enabled for the network (false with `--ipv4=false`).
    pub fn ipv4(&self) -> bool {
        self.ipv4
    }

    /// Whether IPv6 is enabled for the network.
    pub fn ipv6(&self) -> bool {
        self.ipv6
    }
}

/// Go's `validateAddress`: the parsed address, or why it is not acceptable in `subnet`.
fn address_problem(text: &str, subnet: &Prefix) -> Result<IpAddr, String> {
    let addr = netip_parse_addr(text).ok_or_else(|| "invalid address".to_string())?;
    if Family::of(addr) != subnet.family() {
        return Err(format!("parent subnet is an {} block", subnet.family()));
    }
    if !subnet.contains(addr) {
        return Err(format!(
            "parent subnet {subnet} doesn't contain this address"
        ));
    }
    Ok(addr)
}

/// The daemon's validation (Docker ≤ 27 `ValidateIPAM`): every problem of every entry is
/// collected and reported together under `invalid network config:`. IPv6 entries are
/// skipped (neither checked nor allocated) unless `ipv6` is set. Without `ipv4`
/// (`--ipv4=false`, Docker 28) the network needs `ipv6` and takes no IPv4 entry.
pub fn validate_config(
    entries: &[IpamConfig],
    ipv4: bool,
    ipv6: bool,
) -> Result<ValidatedConfig, IpamError> {
    if !ipv4 && !ipv6 {
        return Err(IpamError::NoAddressFamily);
    }
    let mut errs: Vec<String> = Vec::new();
    let mut v4 = Vec::new();
    let mut v6 = Vec::new();
    for cfg in entries {
        let Some(subnet) = netip_parse_prefix(&cfg.subnet) else {
            errs.push(format!(
                "invalid subnet {}: invalid CIDR block notation",
                cfg.subnet
            ));
            continue;
        };
        let family = subnet.family();
        if family == Family::V6 && !ipv6 {
            continue;
        }
        if family == Family::V4 && !ipv4 {
            return Err(IpamError::Ipv4Disabled(cfg.subnet.clone()));
        }
        let before = errs.len();
        if !subnet.is_masked() {
            errs.push(format!(
                "invalid subnet {subnet}: it should be {}",
                subnet.masked()
            ));
        }

        let mut range = None;
        if let Some(r) = cfg.ip_range.as_deref().filter(|r| !r.is_empty()) {
            match netip_parse_prefix(r) {
                None => errs.push(format!("invalid ip-range {r}: invalid CIDR block notation")),
                Some(rp) if rp.family() != family => errs.push(format!(
                    "invalid ip-range {r}: parent subnet is an {family} block"
                )),
                Some(rp) => {
                    if rp.bits() < subnet.bits() {
                        errs.push(format!(
                            "invalid ip-range {r}: CIDR block is bigger than its parent subnet {subnet}"
                        ));
                    }
                    if !rp.is_masked() {
                        errs.push(format!(
                            "invalid ip-range {rp}: it should be {}",
                            rp.masked()
                        ));
                    }
                    if !subnet.overlaps(&rp) {
                        errs.push(format!(
                            "invalid ip-range {r}: parent subnet {subnet} doesn't contain ip-range"
                        ));
                    }
                    range = Some((rp.masked(), r.to_string()));
                }
            }
        }

        let mut gateway = None;
        if let Some(g) = cfg.gateway.as_deref().filter(|g| !g.is_empty()) {
            match address_problem(g, &subnet) {
                Ok(addr) => gateway = Some((addr, g.to_string())),
                Err(why) => errs.push(format!("invalid gateway {g}: {why}")),
            }
        }

        let mut aux = BTreeMap::new();
        for (name, text) in &cfg.aux {
            match address_problem(text, &subnet) {
                Ok(addr) => {
                    aux.insert(name.clone(), (addr, text.clone()));
                }
                Err(why) => errs.push(format!("invalid auxiliary address {name}: {why}")),
            }
        }

        if errs.len() != before {
            continue;
        }
        let masked = subnet.masked();
        let req = if masked.addr().is_unspecified() {
            SubnetReq::Dynamic {
                family,
                size: Some(masked.bits()),
            }
        } else {
            SubnetReq::Static(masked)
        };
        let entry = ValidEntry {
            subnet: req,
            subnet_text: cfg.subnet.clone(),
            range,
            gateway,
            aux,
        };
        match family {
            Family::V4 => v4.push(entry),
            Family::V6 => v6.push(entry),
        }
    }
    if !errs.is_empty() {
        return Err(IpamError::InvalidNetworkConfig(errs));
    }
    Ok(ValidatedConfig { v4, v6, ipv4, ipv6 })
}
