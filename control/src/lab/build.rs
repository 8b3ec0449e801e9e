//! Building a testbed inside an [`Env`]: namespaces, veth links, bridges, VLAN access ports,
//! setup commands (hosts first), one daemon per host, then the networks and endpoints in file
//! order. Every step names itself when it fails; the environment tears down what was built.

use super::env::Env;
use super::{interrupted, split_dev, uvlan_args, LabError, Testbed};
use crate::nsutil::{in_netns, run, veth};

impl Env {
    /// Builds the testbed: namespaces, veth links, bridges, VLAN access ports, setup commands
    /// (hosts first), one daemon per host, then the networks and endpoints in file order.
    pub(super) fn build(
        &mut self,
        tb: &Testbed,
        log: &mut dyn FnMut(&str),
    ) -> Result<(), LabError> {
        let hosts = tb.host_names();
        self.add_namespaces(tb, &hosts)?;
        self.add_links(tb)?;
        self.add_bridges(tb, log)?;
        self.add_vlan_access(tb, log)?;
        self.run_setup(tb)?;
        self.start_dhcp_servers(tb, log)?;
        self.start_daemons(&hosts)?;
        self.create_networks(tb, &hosts, log)?;
        self.connect_endpoints(tb, &hosts, log)
    }

    /// The namespaces: hosts, other namespaces, endpoints.
    fn add_namespaces(&mut self, tb: &Testbed, hosts: &[&str]) -> Result<(), LabError> {
        for h in hosts {
            self.add_ns(h)?;
        }
        for n in &tb.namespace {
            if !hosts.contains(&n.name.as_str()) {
                self.add_ns(&n.name)?;
            }
        }
        for e in &tb.endpoint {
            self.add_ns(&e.name)?;
        }
        Ok(())
    }

    /// The veth pairs, up (TX VLAN offload off unless the testbed keeps it).
    fn add_links(&self, tb: &Testbed) -> Result<(), LabError> {
        for l in &tb.link {
            interrupted()?;
            let (an, ai) = split_dev(&l.a).unwrap_or(("", ""));
            let (bn, bi) = split_dev(&l.b).unwrap_or(("", ""));
            let (ans, bns) = (self.ns(an), self.ns(bn));
            run(
                &mut veth(&ans, ai, &bns, bi),
                &format!("veth {} <-> {}", l.a, l.b),
            )?;
            for (ns, ifn) in [(an, ai), (bn, bi)] {
                if !tb.veth_tx_vlan_offload {
                    run(
                        in_netns(&self.ns(ns), "ethtool").args(["-K", ifn, "txvlan", "off"]),
                        &format!("[{ns}] ethtool -K {ifn} txvlan off"),
                    )?;
                }
                self.ip(ns, &["link", "set", ifn, "up"])?;
            }
        }
        Ok(())
    }

    /// The bridges, their ports and hairpin ports, up.
    fn add_bridges(&self, tb: &Testbed, log: &mut dyn FnMut(&str)) -> Result<(), LabError> {
        for b in &tb.bridge {
            self.ip(
                &b.ns,
                &[
                    "link",
                    "add",
                    &b.name,
                    "type",
                    "bridge",
                    "stp_state",
                    "0",
                    "mcast_snooping",
                    "0",
                ],
            )?;
            for p in &b.ports {
                self.ip(&b.ns, &["link", "set", p, "master", &b.name])?;
            }
            for p in &b.hairpin {
                self.ip(
                    &b.ns,
                    &[
                        "link",
                        "set",
                        "dev",
                        p,
                        "type",
                        "bridge_slave",
                        "hairpin",
                        "on",
                    ],
                )?;
            }
            self.ip(&b.ns, &["link", "set", &b.name, "up"])?;
            log(&format!(
                "  bridge {}/{}: {}{}",
                b.ns,
                b.name,
                b.ports.join(", "),
                if b.hairpin.is_empty() {
                    String::new()
                } else {
                    format!(" (hairpin: {})", b.hairpin.join(", "))
                }
            ));
        }
        Ok(())
    }

    /// The VLAN access programs.
    fn add_vlan_access(&mut self, tb: &Testbed, log: &mut dyn FnMut(&str)) -> Result<(), LabError> {
        for v in &tb.vlan_access {
            self.attach_vlan_access(&v.dev, v.vid)?;
            log(&format!("  vlan access {}: VID {} untagged", v.dev, v.vid));
        }
        Ok(())
    }

    /// The setup commands: hosts first, then the other namespaces.
    fn run_setup(&self, tb: &Testbed) -> Result<(), LabError> {
        for h in &tb.host {
            for c in &h.setup {
                interrupted()?;
                self.sh(&h.name, c)?;
            }
        }
        for n in &tb.namespace {
            for c in &n.setup {
                interrupted()?;
                self.sh(&n.name, c)?;
            }
        }
        Ok(())
    }

    /// The DHCP servers (dnsmasq), each serving before this returns.
    fn start_dhcp_servers(
        &mut self,
        tb: &Testbed,
        log: &mut dyn FnMut(&str),
    ) -> Result<(), LabError> {
        for (n, d) in tb.dhcp_server.iter().enumerate() {
            interrupted()?;
            self.start_dhcp_server(d, n)?;
            log(&format!(
                "  dhcp server on {}: {} - {}",
                d.dev, d.range[0], d.range[1]
            ));
        }
        Ok(())
    }

    /// One daemon per host.
    fn start_daemons(&mut self, hosts: &[&str]) -> Result<(), LabError> {
        for h in hosts {
            self.start_daemon(h)?;
        }
        Ok(())
    }

    /// The networks, in file order.
    fn create_networks(
        &self,
        tb: &Testbed,
        hosts: &[&str],
        log: &mut dyn FnMut(&str),
    ) -> Result<(), LabError> {
        for n in &tb.network {
            interrupted()?;
            let host = tb
                .default_host(&n.host)
                .map_err(|m| LabError::Invalid(tb.name.clone(), m))?;
            let args = uvlan_args(&n.create).map_err(|m| LabError::Invalid(tb.name.clone(), m))?;
            self.uvlan(&host, &args)?;
            if hosts.len() > 1 {
                log(&format!("  [{host}] uvlan {}", args.join(" ")));
            } else {
                log(&format!("  uvlan {}", args.join(" ")));
            }
        }
        Ok(())
    }

    /// The endpoints, connected in file order, then their setup commands.
    fn connect_endpoints(
        &self,
        tb: &Testbed,
        hosts: &[&str],
        log: &mut dyn FnMut(&str),
    ) -> Result<(), LabError> {
        for e in &tb.endpoint {
            interrupted()?;
            let host = tb
                .host_of_network(&e.network, e.host.as_deref())
                .map_err(|m| LabError::Invalid(tb.name.clone(), m))?;
            let ns = self.ns(&e.name);
            let mut args: Vec<String> = vec!["network".into(), "connect".into()];
            if let Some(ip) = &e.ip {
                args.extend(["--ip".into(), ip.clone()]);
            }
            if let Some(ip) = &e.ip6 {
                args.extend(["--ip6".into(), ip.clone()]);
            }
            if let Some(m) = &e.mac {
                args.extend(["--mac-address".into(), m.clone()]);
            }
            args.extend([e.network.clone(), ns]);
            self.uvlan(&host, &args)?;
            for c in &e.setup {
                self.sh(&e.name, c)?;
            }
            let shown: Vec<&str> = [e.ip.as_deref(), e.ip6.as_deref()]
                .into_iter()
                .flatten()
                .collect();
            log(&format!(
                "  endpoint {} on {}{}{}",
                e.name,
                e.network,
                if hosts.len() > 1 {
                    format!(" ({host})")
                } else {
                    String::new()
                },
                if shown.is_empty() {
                    String::new()
                } else {
                    format!(" [{}]", shown.join(", "))
                }
            ));
        }
        Ok(())
    }
}
