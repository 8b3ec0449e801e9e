//! The records the daemon persists.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::ids;
use crate::ipam::{EndpointAddrs, IpamConfig, NetworkIpam};
use uvlan_dataplane::fwd::{IpvlanFlag, IpvlanMode, MacvlanMode};
use uvlan_dataplane::wire::MacAddr;

/// The record format version written by this build: 2, where a network's file holds no
/// endpoints (each has its own file, see the module docs of [`crate::store`]).
pub const RECORD_VERSION: u32 = 2;
/// The format of version 1, still read (and migrated on load): the network's file holds its
/// endpoints and reservations.
pub const RECORD_VERSION_V1: u32 = 1;

/// Per-host facts kept across restarts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostRecord {
    /// A random ID generated on the first start; seeds the IPv6 ULA default pool exactly as
    /// Docker derives it from its host ID.
    pub host_id: String,
}

impl HostRecord {
    pub(crate) fn check(&self) -> Result<(), String> {
        if self.host_id.is_empty() {
            return Err("empty host_id".to_string());
        }
        Ok(())
    }
}

/// Where a network's parent is: the host interface and the VID uvlan tags with.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParentRef {
    /// The `-o parent=` value as the user gave it (`eth0.20`).
    pub given: String,
    /// The host interface frames go out on (`eth0`).
    pub ifname: String,
    /// The 802.1Q VID uvlan pushes and pops (`20`), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vid: Option<u16>,
}

/// The driver part of a network (what Docker's driver stores), in parsed form.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DriverConfig {
    /// The parent, if one was given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<ParentRef>,
    /// ipvlan mode (`l2`, `l3`, `l3s`); ipvlan networks only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipvlan_mode: Option<String>,
    /// ipvlan flag (`bridge`, `private`, `vepa`); ipvlan networks only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipvlan_flag: Option<String>,
    /// macvlan mode; macvlan networks only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub macvlan_mode: Option<String>,
    /// For a network without a parent: the fixed random MAC its ipvlan ports carry (the MAC
    /// Docker's dummy link would have had).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub isolated_mac: Option<String>,
}

impl DriverConfig {
    /// The ipvlan mode, parsed.
    pub fn ipvlan_mode(&self) -> Option<IpvlanMode> {
        self.ipvlan_mode.as_deref().and_then(IpvlanMode::parse)
    }

    /// The ipvlan flag, parsed.
    pub fn ipvlan_flag(&self) -> Option<IpvlanFlag> {
        self.ipvlan_flag.as_deref().and_then(IpvlanFlag::parse)
    }

    /// The macvlan mode, parsed.
    pub fn macvlan_mode(&self) -> Option<MacvlanMode> {
        self.macvlan_mode.as_deref().and_then(MacvlanMode::parse)
    }

    /// The isolated network's MAC, parsed.
    pub fn isolated_mac(&self) -> Option<MacAddr> {
        self.isolated_mac.as_deref().and_then(|m| m.parse().ok())
    }
}

/// `uvlan run -d --rm`: the daemon removes the endpoint and its namespace when this process
/// exits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AutoRemove {
    /// The process.
    pub pid: i32,
    /// Its start time (field 22 of `/proc/PID/stat`), so a reused PID is not mistaken for it.
    pub start_time: u64,
}

/// An operation on an endpoint that was under way when its record was written: the kernel
/// may hold any part of it. The next start finishes it or rolls it back (see the module docs
/// of [`crate::store`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Intent {
    /// Being made (connect, run, a front end's attach): rolled back.
    Create,
    /// Being removed (disconnect, `run --rm`, a front end's detach): finished.
    Remove {
        /// Also delete the namespace (`uvlan run --rm`).
        #[serde(default)]
        delete_netns: bool,
    },
    /// Going back to a reservation with its TAP kept (Docker's Leave; the reservation is
    /// written first): finished by deleting the endpoint record.
    Park,
}

/// One endpoint: a TAP inside a network namespace.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointRecord {
    /// Endpoint ID (64 hex).
    pub id: String,
    /// The "container" ID shown as the key of inspect's `Containers` (64 hex, one per
    /// namespace attachment).
    pub sandbox_id: String,
    /// The namespace as the user named it (`NAME` or a path); shown as `Name`.
    pub name: String,
    /// The namespace file (`/run/netns/NAME` or the given path).
    pub netns_path: String,
    /// The namespace's nsfs inode when the endpoint was made (detects a namespace replaced
    /// by another one under the same name).
    pub netns_inode: u64,
    /// The interface name inside the namespace (`eth0`).
    pub ifname: String,
    /// The interface's MAC.
    pub mac: String,
    /// The addresses IPAM gave it.
    pub addrs: EndpointAddrs,
    /// `--ip` as given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub req_ip: Option<String>,
    /// `--ip6` as given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub req_ip6: Option<String>,
    /// `--mac-address` as given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub req_mac: Option<String>,
    /// Creation time.
    pub created: String,
    /// The namespace was created by `uvlan run` (and is deleted with the endpoint by
    /// `--rm`).
    #[serde(default)]
    pub owns_netns: bool,
    /// `run -d --rm`: remove when this process exits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_remove: Option<AutoRemove>,
    /// Endpoints of managed networks: the front end's key (Docker's endpoint ID, CNI's
    /// `CONTAINERID/IFNAME`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// Endpoints a front end moves into the sandbox itself (Docker): the TAP's name in the
    /// daemon's namespace before the move (the name Docker renames it back to on leave).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_name: Option<String>,
    /// An operation under way (only ever on disk, between its steps; `None` in a settled
    /// record).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub intent: Option<Intent>,
    /// `uvlan network connect --host`: the interface sits in the daemon's own namespace
    /// (`netns_path` is `/proc/self/ns/net`), with host-scoped addresses (/32, /128) and a
    /// route to each other endpoint of the network instead of the driver's routes.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub host_interface: bool,
    /// Endpoints of a network with DHCP IPAM: the lease its address came from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease: Option<crate::dhcp::Lease>,
}

impl EndpointRecord {
    /// The MAC, parsed.
    pub fn mac(&self) -> Option<MacAddr> {
        self.mac.parse().ok()
    }

    /// Structural checks of one endpoint, done when it is loaded.
    pub(crate) fn check(&self) -> Result<(), String> {
        if !ids::is_valid_id(&self.id) || !ids::is_valid_id(&self.sandbox_id) {
            return Err(format!("endpoint {:?} has a malformed ID", self.name));
        }
        if self.mac().is_none_or(|m| !m.is_valid_unicast()) {
            return Err(format!(
                "endpoint {:?} has a bad MAC {:?}",
                self.name, self.mac
            ));
        }
        if !Path::new(&self.netns_path).is_absolute() || self.ifname.is_empty() {
            return Err(format!(
                "endpoint {:?} has a bad namespace path {:?} or interface {:?}",
                self.name, self.netns_path, self.ifname
            ));
        }
        Ok(())
    }
}

/// An endpoint a front end declared (Docker's `CreateEndpoint`) but has not placed in a
/// sandbox yet (or took out of it again with `Leave`): its addresses and MAC are held.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReservedEndpoint {
    /// The front end's key (Docker's endpoint ID).
    pub key: String,
    /// The addresses the front end's IPAM gave it.
    pub addrs: EndpointAddrs,
    /// The MAC (macvlan: requested or chosen; ipvlan: empty, the port gets the parent's).
    #[serde(default)]
    pub mac: String,
    /// The MAC as requested (Docker's `--mac-address`), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub req_mac: Option<String>,
    /// Creation time.
    pub created: String,
    /// After a Leave: the TAP's name in the daemon's namespace (Docker moves it back there
    /// under this name), so DeleteEndpoint can delete it even after a daemon restart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_name: Option<String>,
    /// After a Leave: the endpoint ID the kept TAP is marked with, so a start knows the TAP
    /// is this reservation's and keeps it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint_id: Option<String>,
    /// On a Docker network with `uvlan.ipam=dhcp`: the lease leased at CreateEndpoint (its
    /// address is `addrs`), given back (RELEASE) when the reservation goes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease: Option<crate::dhcp::Lease>,
    /// While CreateEndpoint's DHCP exchange runs: the offer it is asking the server to
    /// confirm (written before the REQUEST is sent). A reservation that still has it at start
    /// was interrupted: the daemon gives that address back (RELEASE) and drops the
    /// reservation, so the server keeps no lease the daemon does not know about.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offered: Option<crate::dhcp::Lease>,
}

impl ReservedEndpoint {
    /// The reservation an attached endpoint goes back to on Docker's Leave: its key,
    /// addresses, MAC (macvlan only; ipvlan ports take the parent's), lease, and with
    /// `parked` its endpoint ID (the kept endpoint it names).
    pub fn of_endpoint(ep: &EndpointRecord, macvlan: bool, parked: bool) -> ReservedEndpoint {
        ReservedEndpoint {
            key: ep.key.clone().unwrap_or_default(),
            addrs: ep.addrs,
            mac: if macvlan {
                ep.mac.clone()
            } else {
                String::new()
            },
            req_mac: ep.req_mac.clone(),
            created: ep.created.clone(),
            host_name: ep.host_name.clone(),
            endpoint_id: parked.then(|| ep.id.clone()),
            lease: ep.lease.clone(),
            offered: None,
        }
    }

    /// Whether `key` can name a reservation's file (Docker's endpoint IDs can): 1 to 200
    /// characters of `[A-Za-z0-9_.:-]`, not starting with a dot.
    pub fn key_is_storable(key: &str) -> bool {
        !key.is_empty()
            && key.len() <= 200
            && !key.starts_with('.')
            && key
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-'))
    }
}

/// A network managed by a front end that does its own IPAM (Docker, CNI): uvlan allocates
/// no address for it, and the uvlan CLI does not remove it or attach to it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Managed {
    /// `docker` or `cni`.
    pub owner: String,
    /// Endpoints declared but not attached (see [`ReservedEndpoint`]). Each has its own file
    /// (version 2): read from the network's file only in version 1, never written to it.
    #[serde(default, skip_serializing)]
    pub reserved: Vec<ReservedEndpoint>,
}

/// `true`, the serde default of [`NetworkRecord::ipv4`].
fn yes() -> bool {
    true
}

/// Whether [`NetworkRecord::ipv4`] has its default (it is then not written).
fn is_true(b: &bool) -> bool {
    *b
}

/// One network and its endpoints.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkRecord {
    /// Format version ([`RECORD_VERSION`]).
    pub version: u32,
    /// Creation order (IPAM replays networks in this order).
    pub seq: u64,
    /// Network ID (64 hex).
    pub id: String,
    /// Name.
    pub name: String,
    /// Creation time (RFC 3339, UTC).
    pub created: String,
    /// `ipvlan` or `macvlan`.
    pub driver: String,
    /// Exactly the `-o` map.
    #[serde(default)]
    pub options: BTreeMap<String, String>,
    /// `--internal`.
    #[serde(default)]
    pub internal: bool,
    /// IPv4 enabled: false for an IPv6-only network (`--ipv4=false`). Records written
    /// before the flag existed have no field and are dual-stack or IPv4-only: true.
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub ipv4: bool,
    /// `--ipv6`.
    #[serde(default)]
    pub ipv6: bool,
    /// The IPAM configuration as requested (grouped by the CLI).
    #[serde(default)]
    pub ipam_config: Vec<IpamConfig>,
    /// What IPAM allocated.
    pub ipam: NetworkIpam,
    /// The parsed driver options.
    pub driver_config: DriverConfig,
    /// Endpoints, in connection order. Each has its own file (version 2): read from the
    /// network's file only in version 1, never written to it.
    #[serde(default, skip_serializing)]
    pub endpoints: Vec<EndpointRecord>,
    /// Set when a front end (Docker, CNI) manages the network and its addresses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub managed: Option<Managed>,
    /// `--ipam-driver dhcp`: each endpoint's address comes from the LAN's DHCP server, the
    /// network has no subnet of its own and is not in uvlan's address space.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dhcp: bool,
}

impl NetworkRecord {
    /// uvlan's own IPAM allocates this network's addresses (not a front end's, not DHCP).
    pub fn own_ipam(&self) -> bool {
        self.managed.is_none() && !self.dhcp
    }

    /// Structural checks done when the record is loaded.
    pub(crate) fn check(&self) -> Result<(), String> {
        if self.version != RECORD_VERSION && self.version != RECORD_VERSION_V1 {
            return Err(format!(
                "record version {} is not supported by this uvlan (it reads versions \
                 {RECORD_VERSION_V1} and {RECORD_VERSION})",
                self.version
            ));
        }
        if !ids::is_valid_id(&self.id) {
            return Err(format!("network ID {:?} is not 64 hex characters", self.id));
        }
        if self.name.is_empty() {
            return Err("empty network name".to_string());
        }
        let dc = &self.driver_config;
        match self.driver.as_str() {
            "ipvlan" => {
                if dc.ipvlan_mode().is_none() || dc.ipvlan_flag().is_none() {
                    return Err(format!(
                        "ipvlan network with bad ipvlan_mode {:?} / ipvlan_flag {:?}",
                        dc.ipvlan_mode, dc.ipvlan_flag
                    ));
                }
            }
            "macvlan" => {
                if dc.macvlan_mode().is_none() {
                    return Err(format!(
                        "macvlan network with bad macvlan_mode {:?}",
                        dc.macvlan_mode
                    ));
                }
            }
            other => return Err(format!("unknown driver {other:?}")),
        }
        match &dc.parent {
            Some(p) => {
                if p.ifname.is_empty() || p.vid.is_some_and(|v| !(1..=4094).contains(&v)) {
                    return Err(format!("bad parent {p:?}"));
                }
            }
            None => {
                if dc.isolated_mac().is_none_or(|m| !m.is_valid_unicast()) {
                    return Err(format!(
                        "network without a parent needs a valid isolated_mac, found {:?}",
                        dc.isolated_mac
                    ));
                }
            }
        }
        self.check_endpoints()
    }

    /// Checks the endpoints and reservations together: each is well formed, no key appears
    /// twice, no two endpoints share an ID or a namespace.
    pub(crate) fn check_endpoints(&self) -> Result<(), String> {
        let mut keys = std::collections::BTreeSet::new();
        let reserved = self.managed.iter().flat_map(|m| m.reserved.iter());
        // An endpoint with an intent may share its key with its reservation (an attach or
        // a Leave under way): the start resolves it.
        let all_keys = self
            .endpoints
            .iter()
            .filter(|e| e.intent.is_none())
            .filter_map(|e| e.key.as_deref())
            .chain(reserved.map(|r| r.key.as_str()));
        for k in all_keys {
            if !keys.insert(k) {
                return Err(format!("endpoint key {k:?} appears twice"));
            }
        }
        let mut seen = std::collections::BTreeSet::new();
        let mut ids = std::collections::BTreeSet::new();
        for ep in &self.endpoints {
            ep.check()?;
            if !ids.insert(ep.id.as_str()) {
                return Err(format!("endpoint ID {} appears twice", ep.id));
            }
            // Inode 0: a TAP a front end is still moving into its sandbox.
            if ep.netns_inode != 0 && !seen.insert(ep.netns_inode) {
                return Err(format!(
                    "two endpoints in the same network namespace ({:?})",
                    ep.name
                ));
            }
        }
        Ok(())
    }
}
