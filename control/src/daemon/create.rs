//! Creating a network, shared by the CLI's `network create` and a front end's ensure: name
//! check, IPAM (uvlan's own, on a copy, or taken as the front end gives it), driver options,
//! parent, engine, store.

use std::collections::HashMap;

use crate::ids;
use crate::store::{DriverConfig, NetworkRecord, ParentRef, RECORD_VERSION};

use super::connect::HOST_INTERFACE_OPTION;
use super::external;
use super::model::{Daemon, EpAddrs, Net, NewIpam, NewNetwork, State};
use super::options::{self, HostIf};

impl Daemon {
    /// Creates a network under the lock: name check, IPAM (own, on a copy, or taken as the
    /// front end gives it), driver options, parent, engine, store. Nothing changes on error.
    pub(super) fn create_locked(&self, st: &mut State, req: NewNetwork) -> Result<String, String> {
        if req.name.is_empty() {
            return Err("invalid name: name is empty".to_string());
        }
        if st.nets.iter().any(|n| n.rec.name == req.name) {
            return Err(format!("network with name {} already exists", req.name));
        }
        let driver = options::parse_driver(&req.driver)?;
        if req.managed.is_none() && req.options.contains_key(options::IPAM_OPT) {
            return Err(format!(
                "-o {} is Docker's spelling (docker network create --ipam-driver null -o {}=dhcp): \
                 uvlan network create takes --ipam-driver dhcp",
                options::IPAM_OPT,
                options::IPAM_OPT
            ));
        }
        let id = match &req.id {
            Some(id) => id.clone(),
            None => ids::new_id().map_err(|e| format!("cannot generate a network ID: {e}"))?,
        };
        if st.nets.iter().any(|n| n.rec.id == id) {
            return Err(format!("network with ID {id} already exists"));
        }

        // IPAM first, as Docker does, on a copy: nothing is reserved unless all succeeds.
        let mut space = st.space.clone();
        let (ipam, ipam_config) = match &req.ipam {
            NewIpam::Own(cfg) => (
                space
                    .create_network_from_config(&id, &req.name, cfg, req.ipv4, req.ipv6, true)
                    .map_err(|e| e.to_string())?,
                cfg.clone(),
            ),
            NewIpam::External(cfg) => (
                external::external_ipam(cfg, req.ipv4, req.ipv6)?,
                cfg.clone(),
            ),
            NewIpam::Dhcp => (Default::default(), Vec::new()),
        };
        let dhcp = matches!(req.ipam, NewIpam::Dhcp);

        let opts = options::parse_driver_opts(driver, &req.options)?;
        let given_parent = opts.parent.clone().or(req.default_parent.clone());
        if dhcp {
            if given_parent.is_none() || req.internal {
                return Err(
                    "--ipam-driver dhcp needs a parent (-o parent=IF) and no --internal: the \
                     DHCP server is on the parent's LAN"
                        .to_string(),
                );
            }
            if opts.ipvlan_mode.is_some_and(|m| m.is_l3()) {
                return Err(
                    "--ipam-driver dhcp needs ipvlan_mode=l2: in l3 and l3s an endpoint \
                     receives no broadcast, so no DHCP reply reaches it"
                        .to_string(),
                );
            }
        }
        let parent = match &given_parent {
            None => None,
            Some(given) => {
                let mut lookup_err = None;
                let host = &mut st.host;
                let mut probe = |name: &str| match host.link(name) {
                    Ok(Some(l)) => l.kind,
                    Ok(None) => HostIf::Missing,
                    Err(e) => {
                        lookup_err = Some(e);
                        HostIf::Missing
                    }
                };
                let resolved = options::resolve_parent(driver, given, &mut probe);
                if let Some(e) = lookup_err {
                    return Err(format!("cannot look up parent {given} on the host: {e}"));
                }
                let resolved = resolved?;
                Some(ParentRef {
                    given: given.clone(),
                    ifname: resolved.ifname,
                    vid: resolved.vid,
                })
            }
        };
        if let Some(p) = &parent {
            let holder = st.nets.iter().find(|n| {
                n.rec
                    .driver_config
                    .parent
                    .as_ref()
                    .is_some_and(|q| q.ifname == p.ifname && q.vid == p.vid)
            });
            // Docker's text (`network X is already using parent interface P`), with the
            // holder's name where Docker prints an ID-derived one.
            if let Some(h) = holder {
                return Err(format!(
                    "network {} is already using parent interface {}",
                    h.rec.name, p.given
                ));
            }
        }
        let isolated_mac = match parent {
            None => Some(
                ids::random_mac()
                    .map_err(|e| format!("cannot generate a MAC: {e}"))?
                    .to_string(),
            ),
            Some(_) => None,
        };
        let rec = NetworkRecord {
            version: RECORD_VERSION,
            seq: st.next_seq,
            id: id.clone(),
            name: req.name.clone(),
            created: ids::now_rfc3339(),
            driver: driver.as_str().to_string(),
            options: req.options.clone(),
            internal: req.internal,
            ipv4: req.ipv4,
            ipv6: req.ipv6,
            ipam_config,
            ipam,
            driver_config: DriverConfig {
                parent,
                ipvlan_mode: opts.ipvlan_mode.map(|m| m.as_str().to_string()),
                ipvlan_flag: opts.ipvlan_flag.map(|f| f.as_str().to_string()),
                macvlan_mode: opts.macvlan_mode.map(|m| m.as_str().to_string()),
                isolated_mac,
            },
            endpoints: Vec::new(),
            managed: req.managed,
            dhcp,
        };
        let rt = self.engine_add_network(st, &rec)?;
        if let Err(e) = self.store.create_network(&rec) {
            self.engine_remove_network(&rt);
            return Err(e.to_string());
        }
        st.space = space;
        st.next_seq += 1;
        st.nets.push(Net {
            rec,
            rt: Some(rt),
            problem: None,
            problem_ifindex: None,
            eps: HashMap::new(),
            parked: HashMap::new(),
            pending: HashMap::new(),
            releasing: Default::default(),
        });
        // A parent the engine already had may have changed since it was read.
        self.reconcile_locked(st);
        Ok(id)
    }
}

impl Daemon {
    /// Applies the [`HOST_INTERFACE_OPTION`] of the network just created (`id`): its
    /// addresses from the network's own IPAM, or, on a network whose addresses a front end
    /// manages (Docker), given, and then only one of the network's auxiliary addresses, so
    /// that the front end's IPAM never hands it to a container. On error the network is
    /// removed again.
    pub(super) fn host_interface_option(&self, st: &mut State, id: &str) -> Result<(), String> {
        let Some(i) = st.nets.iter().position(|n| n.rec.id == id) else {
            return Ok(());
        };
        let Some(value) = st.nets[i].rec.options.get(HOST_INTERFACE_OPTION).cloned() else {
            return Ok(());
        };
        let made = Self::host_option_addrs(&st.nets[i].rec, &value)
            .and_then(|addrs| self.make_host_interface(st, i, addrs, None, None));
        match made {
            Ok(_) => Ok(()),
            Err(e) => {
                if let Err(undo) = self.remove_locked(st, i) {
                    (self.log)(&format!("removing network {id} again: {undo}"));
                }
                Err(format!("{}={value}: {e}", HOST_INTERFACE_OPTION))
            }
        }
    }

    fn host_option_addrs(rec: &NetworkRecord, value: &str) -> Result<EpAddrs, String> {
        let mut v4 = None;
        let mut v6 = None;
        for text in value.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            let a: std::net::IpAddr = text
                .parse()
                .map_err(|_| format!("{text:?} is not an IP address"))?;
            let slot = if a.is_ipv4() { &mut v4 } else { &mut v6 };
            if slot.replace(a).is_some() {
                return Err("one address per IP family".to_string());
            }
        }
        if v4.is_none() && v6.is_none() {
            return Err("give the host interface's address (IP, or IP,IP6)".to_string());
        }
        if rec.managed.is_none() {
            return Ok(EpAddrs::Allocate {
                ip: v4.map(|a| a.to_string()),
                ip6: v6.map(|a| a.to_string()),
            });
        }
        let one =
            |a: Option<std::net::IpAddr>| -> Result<Option<crate::ipam::EndpointAddr>, String> {
                let Some(a) = a else { return Ok(None) };
                let s = rec
                    .ipam
                    .subnet_for(a)
                    .ok_or_else(|| format!("{a} is in none of the network's subnets"))?;
                if !s.aux.values().any(|x| *x == a) {
                    return Err(format!(
                        "reserve {a} with --aux-address host={a} so that the IPAM never gives it \
                     to a container"
                    ));
                }
                Ok(Some(crate::ipam::EndpointAddr {
                    addr: a,
                    subnet: s.subnet,
                    gateway: s.gateway,
                }))
            };
        Ok(EpAddrs::Given(crate::ipam::EndpointAddrs {
            v4: one(v4)?,
            v6: one(v6)?,
        }))
    }
}
