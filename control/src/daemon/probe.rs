//! DHCP for endpoints a front end makes in two steps (Docker with `uvlan.ipam=dhcp`):
//! Docker's CreateEndpoint wants the address in its answer, before Join makes the interface,
//! and DeleteEndpoint comes after Leave, when the interface has lost its address (Docker
//! moved it back out of its sandbox). Both exchanges therefore run on a *probe*: a port of
//! the network with the endpoint's MAC, whose TAP (`eth0`, up) sits in a namespace of its
//! own that has no name and nothing else in it; it is removed right after the exchange. The
//! frames go through the dataplane to the wire like the endpoint's own, with the same
//! identity (the endpoint's MAC, and the client identifier made from its ID), so the server
//! sees one client throughout. The namespace is held only by the daemon: it goes with the
//! probe, or with the process if the daemon dies meanwhile.

use uvlan_dataplane::fwd::Engine;
use uvlan_dataplane::wire::MacAddr;

use crate::dhcp;
use crate::ids;
use crate::ipam::EndpointAddrs;
use crate::netns::Netns;
use crate::store::EndpointRecord;

use super::dp::with_engine;
use super::endpoint;
use super::model::{Daemon, State};
use super::options;

/// The probe's interface name in its namespace.
const PROBE_IFNAME: &str = "eth0";

impl Daemon {
    /// Runs `f` on a probe of network `i` for endpoint `key` with `mac` (zero: the port's
    /// own, as ipvlan's) and the addresses `addrs` configured (with the driver's routes);
    /// `f` gets the namespace, the interface index and the port's MAC. The probe is gone when
    /// this returns, whatever `f` answered.
    fn with_probe<T>(
        &self,
        st: &State,
        i: usize,
        key: &str,
        mac: MacAddr,
        addrs: EndpointAddrs,
        f: impl FnOnce(&Netns, u32, MacAddr) -> Result<T, String>,
    ) -> Result<T, String> {
        let net = &st.nets[i];
        let Some(nid) = net.rt.as_ref().map(|r| r.nid) else {
            return Err(format!(
                "network {} is not set up in the dataplane",
                net.rec.name
            ));
        };
        if let Some(p) = &net.problem {
            return Err(format!("network {} is down: {p}", net.rec.name));
        }
        let driver = options::parse_driver(&net.rec.driver)?;
        let label = format!("dhcp:{}", ids::short_id(key));
        let rec = EndpointRecord {
            id: key.to_string(),
            sandbox_id: String::new(),
            name: label.clone(),
            netns_path: String::new(),
            netns_inode: 0,
            ifname: PROBE_IFNAME.to_string(),
            mac: mac.to_string(),
            addrs,
            req_ip: None,
            req_ip6: None,
            req_mac: None,
            created: String::new(),
            owns_netns: false,
            auto_remove: None,
            key: None,
            host_name: None,
            intent: None,
            host_interface: false,
            lease: None,
        };
        let (port, port_mac, mtu, link_local) =
            self.engine_add_port(nid, driver, &net.rec.driver_config, &rec, mac)?;
        let undo_port = |why: String| {
            let _ = with_engine(&*self.dp, move |e: &mut Engine| e.remove_port(port));
            why
        };
        let ns = Netns::create_private(&label).map_err(|e| undo_port(e.to_string()))?;
        // The namespace file as a path, for the TAP's creation: this process's descriptor.
        let path = std::path::PathBuf::from(format!(
            "/proc/self/fd/{}",
            std::os::fd::AsRawFd::as_raw_fd(&ns.fd())
        ));
        let plan = self.if_plan(
            net,
            driver,
            PROBE_IFNAME.to_string(),
            port_mac,
            mtu,
            &rec,
            link_local,
        );
        let tap = endpoint::create_interface(&ns, &path, &plan).map_err(undo_port)?;
        let ifindex = tap.ifindex();
        let rt = self.finish_endpoint(port, tap, ifindex, ns, true, &label, driver, false, None)?;
        let out = f(&rt.netns, ifindex, port_mac);
        self.teardown_endpoint(rt);
        out
    }

    /// Leases an address for endpoint `key` of the DHCP network `i` before its interface
    /// exists (Docker's CreateEndpoint): DISCOVER/OFFER/REQUEST/ACK on a probe with `mac`.
    pub(super) fn probe_lease(
        &self,
        st: &State,
        i: usize,
        key: &str,
        mac: MacAddr,
    ) -> Result<dhcp::Lease, String> {
        let lease = self.with_probe(
            st,
            i,
            key,
            mac,
            EndpointAddrs::default(),
            |ns, ifindex, m| {
                let client = dhcp::Client {
                    ifindex,
                    mac: m.octets(),
                    client_id: dhcp::client_id_for(key),
                    hostname: None,
                };
                dhcp::acquire(ns, &client, None).map_err(|e| e.to_string())
            },
        )?;
        (self.log)(&format!(
            "endpoint {}: DHCP lease {}/{} from {} for {}s",
            ids::short_id(key),
            lease.addr,
            lease.prefix_len,
            lease.server_id,
            lease.lease_secs
        ));
        Ok(lease)
    }

    /// Gives `lease` of endpoint `key` of network `i` back (RELEASE) from a probe with `mac`
    /// holding the leased address (Docker's DeleteEndpoint, once the endpoint's interface has
    /// left its sandbox). Failures are logged: the lease then expires at the server.
    pub(super) fn probe_release(
        &self,
        st: &State,
        i: usize,
        key: &str,
        mac: MacAddr,
        lease: &dhcp::Lease,
    ) {
        let addrs = EndpointAddrs {
            v4: dhcp::endpoint_addr(lease),
            v6: None,
        };
        let sent = self.with_probe(st, i, key, mac, addrs, |ns, _, m| {
            dhcp::release(ns, m.octets(), lease).map_err(|e| e.to_string())
        });
        match sent {
            Ok(()) => (self.log)(&format!(
                "endpoint {}: DHCP lease {} released",
                ids::short_id(key),
                lease.addr
            )),
            Err(e) => (self.log)(&format!(
                "endpoint {}: DHCP RELEASE of {}: {e} (the lease expires at the server)",
                ids::short_id(key),
                lease.addr
            )),
        }
    }
}
