//! The daemon's data: its state under one lock (the IPAM address space, the networks with
//! their records and their presence in the engine, the live endpoints), and what a new
//! network or endpoint is made from. Every other part of the daemon works on these.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use uvlan_dataplane::fwd::{NetworkId, ParentId, PortId};
use uvlan_dataplane::port::tap::Tap;
use uvlan_dataplane::wire::MacAddr;

use crate::ipam::{AddressSpace, EndpointAddrs};
use crate::logger::Logger;
use crate::netns::{AddrWatcher, ExitWatcher, Netns};
use crate::store::{NetworkRecord, Store};

use super::dp::DataplaneApi;
use super::endpoint;
use super::host::HostNet;

/// File descriptors the daemon holds per endpoint: its TAP, its namespace, and the netlink
/// socket its namespace's watchers share.
pub(super) const FDS_PER_ENDPOINT: u64 = 3;
/// File descriptors the daemon holds per fast-path endpoint: those of [`FDS_PER_ENDPOINT`]
/// (the TAP is its slow path) and the `bpf_link`s of its two programs (on its TAP and on
/// the daemon's end of its veth). The cache's maps and programs add five once, while any
/// fast-path endpoint exists.
pub(super) const FDS_PER_FAST_ENDPOINT: u64 = FDS_PER_ENDPOINT + 2;
/// Descriptors an endpoint operation opens at most while it runs (namespace handles, netlink
/// sockets, the TAP device): with fewer than these left, a failure is blamed on the limit.
const FD_SLACK: u64 = 8;

/// How `strerror` names `EMFILE` and `ENFILE` ("... in system").
const EMFILE_TEXT: &str = "Too many open files";
/// The start of the error for running out of descriptors.
const FD_PREFIX: &str = "too many open files: raise LimitNOFILE";

/// Endpoint removals between two heap trims (a trim costs about a millisecond).
const TRIM_EVERY: usize = 64;

/// A network's presence in the engine.
pub(super) struct NetRt {
    pub(super) nid: NetworkId,
    pub(super) parent: Option<ParentId>,
    /// The wire mode when the network uses the wire (`attach_parent` done).
    pub(super) wire: Option<String>,
}

/// A live endpoint.
pub(crate) struct EpRt {
    pub(super) port: PortId,
    pub(super) ifindex: u32,
    pub(super) netns: Netns,
    pub(super) watcher: Option<AddrWatcher>,
    /// `run -d --rm`: removes the endpoint when its process exits (a pidfd on the watcher
    /// hub; dropped with the endpoint).
    pub(super) reaper: Option<ExitWatcher>,
    /// Told when the interface has left its namespace (a teardown waits for it).
    pub(super) gone: Arc<endpoint::Gone>,
    /// A fast-path endpoint (a veth): the ifindex of the daemon's end.
    pub(super) fast_veth: Option<u32>,
    /// A fast-path endpoint: the names of its TAP and of the daemon's end of its veth
    /// (reserved while a teardown deletes them after its command returned).
    pub(super) fast_names: Vec<String>,
}

pub(super) struct Net {
    pub(super) rec: NetworkRecord,
    pub(super) rt: Option<NetRt>,
    /// Why the network is not in the engine (restore failed).
    pub(super) problem: Option<String>,
    /// With a problem: the parent's ifindex at the failed attempt (`None`: it was missing).
    /// The daemon tries again when the parent appears or is replaced.
    pub(super) problem_ifindex: Option<u32>,
    pub(super) eps: HashMap<String, EpRt>,
    /// Managed networks: TAPs of endpoints a front end took out of their sandbox (Docker's
    /// Leave), by key, until the endpoint is forgotten (DeleteEndpoint).
    pub(super) parked: HashMap<String, Tap>,
    /// Managed DHCP networks: endpoints whose CreateEndpoint leases their address now,
    /// without the state lock (see `probe.rs`), by key, with the MAC they hold (zero on
    /// ipvlan). Only in memory: a crash meanwhile leaves no trace of them.
    pub(super) pending: HashMap<String, MacAddr>,
    /// Managed DHCP networks: reservations whose DeleteEndpoint gives their lease back now,
    /// without the state lock; the reservation stays until it is done.
    pub(super) releasing: std::collections::HashSet<String>,
}

pub(super) struct State {
    pub(super) host: Box<dyn HostNet>,
    pub(super) space: AddressSpace,
    pub(super) nets: Vec<Net>,
    pub(super) next_seq: u64,
    /// The ifindex each parent in use had when last seen (see `parents.rs`).
    pub(super) parent_ifindex: HashMap<String, u32>,
    /// Endpoints removed since the heap was last trimmed.
    pub(super) freed_since_trim: usize,
}

/// The daemon: state, store, dataplane.
pub struct Daemon {
    pub(super) store: Store,
    /// The host part of the mark on every endpoint interface this daemon makes (see
    /// [`endpoint::mark`]).
    pub(super) host_tag: String,
    pub(super) dp: Arc<dyn DataplaneApi>,
    pub(super) log: Logger,
    st: Mutex<State>,
    pub(super) me: Weak<Daemon>,
    /// New endpoints of `network connect` are veth endpoints with the fast path
    /// (`uvlan daemon --fast-path`).
    pub(super) fast_path: std::sync::atomic::AtomicBool,
    /// The DHCP renewal thread's timer (`renew.rs`).
    pub(super) renew: RenewShared,
    /// The client MACs of the DHCP acquisitions (DISCOVER to ACK) running now.
    pub(super) dhcp_busy: DhcpBusy,
}

/// The running DHCP acquisitions' MACs, and their wake-up.
pub(super) type DhcpBusy = (Mutex<Vec<[u8; 6]>>, std::sync::Condvar);

/// How many DHCP acquisitions the daemon runs at once; more wait for a turn (without the
/// state lock), and their bound starts with it. dnsmasq pings each address for 3 s before it
/// offers it, one DISCOVER at a time, and a REQUEST waits behind the DISCOVERs before it:
/// of two exchanges at once the second should be answered some 6 to 7 s into its bound of
/// 10 s; with three, one connect of eight ran out of its bound on a loaded machine.
/// Acquisitions from one MAC (ipvlan endpoints share the parent's) take turns: a server
/// that picks the address to offer from the MAC, as dnsmasq does, would offer them all the
/// same one.
pub(super) const DHCP_SLOTS: usize = 2;

/// A turn for one DHCP acquisition, given back on drop.
pub(super) struct DhcpTurn<'a>(&'a DhcpBusy, [u8; 6]);

impl Drop for DhcpTurn<'_> {
    fn drop(&mut self) {
        let (m, cv) = self.0;
        let mut busy = m.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(i) = busy.iter().position(|b| *b == self.1) {
            busy.swap_remove(i);
        }
        cv.notify_all();
    }
}

/// The DHCP renewal thread's shared state (`renew.rs`).
#[derive(Default)]
pub(super) struct RenewTimer {
    pub(super) started: bool,
    /// Bumped by every change the thread must look at.
    pub(super) generation: u64,
    /// Endpoint ID → when to try again after a silent RENEW or REBIND.
    pub(super) retry: HashMap<String, u64>,
    /// Endpoint ID → when to confirm its stored lease with INIT-REBOOT (after a restart).
    pub(super) reboot: HashMap<String, u64>,
    /// The endpoints whose exchange runs now (on a `uvlan-dhcp-job` thread).
    pub(super) busy: std::collections::HashSet<String>,
    /// The daemon is gone: the thread ends.
    pub(super) stop: bool,
}

/// The renewal timer and its wake-up.
pub(super) type RenewShared = Arc<(Mutex<RenewTimer>, std::sync::Condvar)>;

impl Drop for Daemon {
    fn drop(&mut self) {
        let (m, cv) = &*self.renew;
        m.lock().unwrap_or_else(|e| e.into_inner()).stop = true;
        cv.notify_all();
    }
}

/// A network to create: from the CLI (own IPAM) or a front end (external IPAM).
pub(super) struct NewNetwork {
    /// A given ID (Docker's), else a new one.
    pub(super) id: Option<String>,
    pub(super) name: String,
    pub(super) driver: String,
    pub(super) options: std::collections::BTreeMap<String, String>,
    pub(super) ipam: NewIpam,
    /// False for an IPv6-only network (`--ipv4=false`).
    pub(super) ipv4: bool,
    pub(super) ipv6: bool,
    pub(super) internal: bool,
    pub(super) managed: Option<crate::store::Managed>,
    /// The parent to use when the options name none (CNI's default-route `master`).
    pub(super) default_parent: Option<String>,
}

/// Where a new network's addresses come from.
pub(super) enum NewIpam {
    /// uvlan's IPAM, from the grouped CLI flags.
    Own(Vec<crate::ipam::IpamConfig>),
    /// The front end's IPAM: subnets, gateways and aux addresses as given.
    External(Vec<crate::ipam::IpamConfig>),
    /// `--ipam-driver dhcp`: no subnet; each endpoint leases its address from the LAN.
    Dhcp,
}

/// Where an endpoint's addresses come from.
pub(super) enum EpAddrs {
    /// uvlan's IPAM: `--ip`/`--ip6` or dynamic.
    Allocate {
        ip: Option<String>,
        ip6: Option<String>,
    },
    /// The front end's IPAM.
    Given(EndpointAddrs),
}

/// How an endpoint's MAC is chosen.
pub(super) enum EpMac {
    /// ipvlan: none (the port's); macvlan: this one (checked) or a random unique one.
    Choose(Option<String>),
    /// Already chosen (a reserved endpoint's).
    Fixed(MacAddr),
}

/// Where and how an endpoint's interface is made.
pub(super) struct EpPlace {
    /// The namespace the interface ends up in.
    pub(super) ns: Netns,
    /// Inspect's `Name`.
    pub(super) name: String,
    /// The namespace file.
    pub(super) path: PathBuf,
    /// `uvlan run` made the namespace.
    pub(super) owns_netns: bool,
    /// The interface name inside (`None`: next free ethN).
    pub(super) ifname: Option<String>,
    /// Create the TAP in the daemon's namespace under this name, for the front end to move.
    pub(super) host_name: Option<String>,
    /// Routes replacing the driver's default routes.
    pub(super) routes: Option<Vec<endpoint::CustomRoute>>,
    /// MTU (≤ the port's).
    pub(super) mtu: Option<u32>,
    /// The front end's key.
    pub(super) key: Option<String>,
    /// `network connect --host`: the daemon's own namespace (see
    /// [`crate::store::EndpointRecord::host_interface`]).
    pub(super) host_interface: bool,
    /// On a DHCP network: the lease the endpoint's address came from, leased before the
    /// endpoint is made (Docker's CreateEndpoint, see `probe`); `None`: leased when made.
    pub(super) lease: Option<crate::dhcp::Lease>,
}

impl EpPlace {
    /// The CLI's placement: inside `ns`, next free ethN, the driver's routes.
    pub(super) fn simple(ns: Netns, name: &str, path: PathBuf, owns_netns: bool) -> EpPlace {
        EpPlace {
            ns,
            name: name.to_string(),
            path,
            owns_netns,
            ifname: None,
            host_name: None,
            routes: None,
            mtu: None,
            key: None,
            host_interface: false,
            lease: None,
        }
    }
}

impl Daemon {
    /// The daemon over `state` (nothing restored yet).
    pub(super) fn new(
        store: Store,
        host_tag: String,
        dp: Arc<dyn DataplaneApi>,
        log: Logger,
        state: State,
    ) -> Arc<Daemon> {
        Arc::new_cyclic(|me| Daemon {
            store,
            host_tag,
            dp,
            log,
            st: Mutex::new(state),
            me: me.clone(),
            fast_path: std::sync::atomic::AtomicBool::new(false),
            renew: RenewShared::default(),
            dhcp_busy: Default::default(),
        })
    }

    /// Waits for a turn to run a DHCP acquisition from `mac` (see [`DHCP_SLOTS`]).
    pub(super) fn dhcp_turn(&self, mac: [u8; 6]) -> DhcpTurn<'_> {
        let (m, cv) = &self.dhcp_busy;
        let mut busy = m.lock().unwrap_or_else(|e| e.into_inner());
        while busy.len() >= DHCP_SLOTS || busy.contains(&mac) {
            busy = cv.wait(busy).unwrap_or_else(|e| e.into_inner());
        }
        busy.push(mac);
        DhcpTurn(&self.dhcp_busy, mac)
    }

    /// Makes new `network connect` endpoints veth endpoints with the fast path (`on`), or
    /// TAP endpoints (`off`, the default). Existing endpoints keep their kind.
    pub fn set_fast_path(&self, on: bool) {
        self.fast_path
            .store(on, std::sync::atomic::Ordering::SeqCst);
    }

    /// Whether new endpoints use the fast path.
    pub fn fast_path(&self) -> bool {
        self.fast_path.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// `e`, or what it means when the process has run out of file descriptors: failures
    /// deep in the endpoint path (opening `/dev/net/tun`, a netlink socket, a namespace
    /// file, or a socket `if_nametoindex` opens) surface under other names ("No such
    /// file"), so the count of open descriptors is checked against the limit too.
    pub(super) fn fd_hint(&self, e: String) -> String {
        let said = e.contains(EMFILE_TEXT);
        let near = match (crate::sys::open_fds(), crate::sys::nofile_limit()) {
            (Ok(n), Ok((soft, _))) => (n as u64).saturating_add(FD_SLACK) >= soft,
            (Err(err), _) => crate::sys::is_fd_exhaustion(&err),
            _ => false,
        };
        if !said && !near {
            return e;
        }
        Self::fd_text(e)
    }

    /// `e`, explained when it says the process or the system ran out of descriptors
    /// (`EMFILE`, `ENFILE`): for errors of any step of an endpoint request.
    pub(super) fn fd_said(e: String) -> String {
        if e.contains(EMFILE_TEXT) && !e.starts_with(FD_PREFIX) {
            Self::fd_text(e)
        } else {
            e
        }
    }

    fn fd_text(e: String) -> String {
        if e.starts_with(FD_PREFIX) {
            return e;
        }
        let (open, limit) = (
            crate::sys::open_fds().map_or("?".to_string(), |n| n.to_string()),
            crate::sys::nofile_limit().map_or("?".to_string(), |(s, _)| s.to_string()),
        );
        format!(
            "{FD_PREFIX} (the daemon uses about {FDS_PER_ENDPOINT} descriptors per endpoint, \
             {FDS_PER_FAST_ENDPOINT} per fast-path endpoint; {open} are open, the limit is \
             {limit}) ({e})"
        )
    }

    /// An endpoint was removed: every [`TRIM_EVERY`] removals, and when the last endpoint
    /// goes, the heap's free memory is given back to the kernel (glibc keeps it otherwise).
    pub(super) fn freed_endpoint(&self, st: &mut State) {
        st.freed_since_trim += 1;
        let none_left = st.nets.iter().all(|n| n.eps.is_empty());
        if st.freed_since_trim >= TRIM_EVERY || none_left {
            crate::sys::trim_heap();
            st.freed_since_trim = 0;
        }
    }

    /// The mark of endpoint `ep_id`'s interface.
    pub(super) fn mark(&self, ep_id: &str) -> String {
        endpoint::mark(ep_id, &self.host_tag)
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock must not wedge the daemon: the state is only
        // changed at commit points, so the last committed state is usable.
        self.st.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The one-line description of the dataplane in use.
    pub fn dataplane_description(&self) -> String {
        self.dp.describe()
    }

    pub(super) fn find(st: &State, key: &str) -> Result<usize, String> {
        if let Some(i) = st.nets.iter().position(|n| n.rec.name == key) {
            return Ok(i);
        }
        if let Some(i) = st.nets.iter().position(|n| n.rec.id == key) {
            return Ok(i);
        }
        let hex = !key.is_empty() && key.bytes().all(|b| b.is_ascii_hexdigit());
        let hits: Vec<usize> = if hex {
            (0..st.nets.len())
                .filter(|i| st.nets[*i].rec.id.starts_with(key))
                .collect()
        } else {
            Vec::new()
        };
        match hits.as_slice() {
            [one] => Ok(*one),
            [] => Err(format!("network {key} not found")),
            many => Err(format!(
                "{} matches found based on ID prefix: {key}",
                many.len()
            )),
        }
    }
}
