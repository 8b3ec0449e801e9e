//! Ready-made topologies for benchmarks, examples and tests: one parent, one network on it,
//! `n` ports, all up, each with one IPv4 address from 198.18.0.0/15 (RFC 2544's benchmarking
//! range). No I/O: these are engine states only.

use super::*;
use crate::wire::MacAddr;
use std::net::{IpAddr, Ipv4Addr};

/// The parent's MAC (M).
pub const PARENT_MAC: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 0xaa]);

/// Port `i`'s MAC on a macvlan network.
pub fn port_mac(i: usize) -> MacAddr {
    MacAddr([0x02, 0, 0, 1, (i >> 8) as u8, i as u8])
}

/// Port `i`'s IPv4 address.
pub fn port_ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::from(0xc612_0001 + i as u32)
}

/// An up Ethernet parent `eth0` with MTU 1500, MAC `mac` and the host addresses `addrs`.
pub fn eth0(mac: MacAddr, addrs: Vec<IpAddr>) -> ParentSpec {
    ParentSpec {
        name: "eth0".into(),
        mac,
        mtu: 1500,
        up: true,
        link_type: LinkType::Ether,
        addrs,
    }
}

/// An engine with one network.
#[derive(Debug, Clone)]
pub struct Flat {
    /// The engine.
    pub engine: Engine,
    /// Its parent (`eth0`, MAC [`PARENT_MAC`], MTU 1500).
    pub parent: ParentId,
    /// The network.
    pub network: NetworkId,
    /// The ports, in creation order.
    pub ports: Vec<PortId>,
}

/// `n` up ports on one network on `eth0` (tagged `vid` if given): ipvlan in `mode` with the
/// bridge flag, or macvlan bridge when `driver` is macvlan.
pub fn flat(
    driver: Driver,
    mode: IpvlanMode,
    vid: Option<u16>,
    n: usize,
) -> Result<Flat, ConfigError> {
    let mut engine = Engine::new();
    let parent = engine.add_parent(eth0(PARENT_MAC, vec![]))?;
    let network = engine.add_network(NetworkSpec::new(
        "sample",
        driver,
        Master::Parent {
            parent,
            vid,
            wire: true,
        },
    ))?;
    let mut ports = Vec::with_capacity(n);
    for i in 0..n {
        let name = format!("p{i}");
        let p = match driver {
            Driver::Ipvlan => engine.add_ipvlan_port(
                LinkRef::Network(network),
                name,
                IpvlanAttrs::new(mode, IpvlanFlag::Bridge),
            )?,
            Driver::Macvlan => engine.add_macvlan_port(
                LinkRef::Network(network),
                name,
                MacvlanAttrs::new(MacvlanMode::Bridge, Some(port_mac(i))),
            )?,
        };
        engine.add_port_addr(p, IpAddr::V4(port_ip(i)))?;
        engine.set_port_up(p, true)?;
        ports.push(p);
    }
    Ok(Flat {
        engine,
        parent,
        network,
        ports,
    })
}
