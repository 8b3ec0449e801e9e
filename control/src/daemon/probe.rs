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
//!
//! The probe is made and removed under the state lock, but the exchange runs without it
//! (other requests and plugin calls go on meanwhile): an acquisition takes a turn and a
//! random pause as `network connect`'s does ([`Daemon::in_dhcp_turn`]), and a RELEASE may
//! wait up to a second for the server's next hop. Nothing of a probe is written to the
//! store: its port lives in the daemon's engine, its TAP in its namespace, so a daemon
//! killed during the exchange leaves neither. CreateEndpoint writes the reservation before
//! each REQUEST with the offer it asks for, and with its lease once it is ACKed: a start that
//! finds a reservation still holding an offer gives that address back and drops it.

use uvlan_dataplane::fwd::Engine;
use uvlan_dataplane::wire::MacAddr;

use crate::dhcp;
use crate::ids;
use crate::ipam::EndpointAddrs;
use crate::netns::Netns;
use crate::store::EndpointRecord;

use super::dp::with_engine;
use super::endpoint;
use super::model::{Daemon, EpRt, State};
use super::options;

/// The probe's interface name in its namespace.
const PROBE_IFNAME: &str = "eth0";

/// A probe of a DHCP network (see the module docs): made under the state lock, used without
/// it, removed under it ([`Daemon::drop_probe`]).
pub(super) struct Probe {
    rt: EpRt,
    /// Its interface in its namespace.
    ifindex: u32,
    /// The port's MAC: the endpoint's (macvlan) or the parent's (ipvlan).
    mac: MacAddr,
    /// The endpoint's key (its client identifier is made from it).
    key: String,
}

impl Daemon {
    /// Makes a probe of network `i` for endpoint `key` with `mac` (zero: the port's own, as
    /// ipvlan's) and the addresses `addrs` configured (with the driver's routes). Nothing is
    /// left on error.
    pub(super) fn make_probe(
        &self,
        st: &State,
        i: usize,
        key: &str,
        mac: MacAddr,
        addrs: EndpointAddrs,
    ) -> Result<Probe, String> {
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
        Ok(Probe {
            rt,
            ifindex,
            mac: port_mac,
            key: key.to_string(),
        })
    }

    /// Removes a probe: its port, its TAP and with its descriptor its namespace.
    pub(super) fn drop_probe(&self, p: Probe) {
        self.teardown_endpoint(p.rt);
    }

    /// Leases an address for the probe's endpoint before its interface exists (Docker's
    /// CreateEndpoint): DISCOVER/OFFER/REQUEST/ACK, in a turn ([`Daemon::in_dhcp_turn`]),
    /// with `note` told each offer before its REQUEST (see [`dhcp::acquire_noting`]).
    /// Called without the state lock.
    pub(super) fn probe_lease(
        &self,
        p: &Probe,
        note: dhcp::OfferNote<'_>,
    ) -> Result<dhcp::Lease, String> {
        let client = dhcp::Client {
            ifindex: p.ifindex,
            mac: p.mac.octets(),
            client_id: dhcp::client_id_for(&p.key),
            hostname: None,
        };
        let lease = self.in_dhcp_turn(p.mac.octets(), || {
            dhcp::acquire_noting(&p.rt.netns, &client, None, note).map_err(|e| e.to_string())
        })?;
        (self.log)(&format!(
            "endpoint {}: DHCP lease {}/{} from {} for {}s",
            ids::short_id(&p.key),
            lease.addr,
            lease.prefix_len,
            lease.server_id,
            lease.lease_secs
        ));
        Ok(lease)
    }

    /// Gives `lease` back (RELEASE) from a probe holding the leased address (Docker's
    /// DeleteEndpoint, once the endpoint's interface has left its sandbox; or a reservation
    /// that could not be recorded). May be called without the state lock (it can wait up to
    /// a second for the server's next hop). Failures are logged: the lease then expires at
    /// the server.
    pub(super) fn probe_release(&self, p: &Probe, lease: &dhcp::Lease) {
        let port = p.rt.port;
        let sent =
            dhcp::release_observed(&p.rt.netns, p.mac.octets(), lease, || self.port_read(port));
        if let Ok(Some(before)) = sent {
            // The probe goes right after: not before the dataplane has the RELEASE.
            self.wait_port_read(port, before);
        }
        match sent {
            Ok(_) => (self.log)(&format!(
                "endpoint {}: DHCP lease {} released",
                ids::short_id(&p.key),
                lease.addr
            )),
            Err(e) => (self.log)(&format!(
                "endpoint {}: DHCP RELEASE of {}: {e} (the lease expires at the server)",
                ids::short_id(&p.key),
                lease.addr
            )),
        }
    }
}
