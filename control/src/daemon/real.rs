//! The real dataplane: `uvlan_dataplane::run` (one thread polling every TAP and parent),
//! behind [`DataplaneApi`], with a [`Resolver`] answering next-hop questions from the host's
//! routing and neighbour tables over netlink.

use std::any::Any;
use std::net::IpAddr;
use std::sync::Mutex;

use uvlan_dataplane::capture::{CaptureFilter, CaptureReader};
use uvlan_dataplane::fwd::{Ingress, ParentId, PortId};
use uvlan_dataplane::port::fast_path::FastLinks;
use uvlan_dataplane::port::tap::Tap;
use uvlan_dataplane::run::{Dataplane, DataplaneHandle, NextHop, Resolver, RunError, RunOptions};
use uvlan_dataplane::trace::Trace;

use crate::netns::{Netns, RouteWatcher, Rtnl};

use super::dp::{DataplaneApi, DpError, EngineJob};
use super::host::{resolve_next_hop, HopAnswer};

fn dp_err(e: RunError) -> DpError {
    match e {
        RunError::Stopped => DpError::Stopped,
        other => DpError::Failed(other.to_string()),
    }
}

/// Next hops from the daemon's namespace (`ip route get`, `ip neigh`).
pub struct HostResolver {
    rtnl: Rtnl,
}

impl HostResolver {
    /// A resolver with its own netlink socket in the caller's namespace.
    pub fn open() -> Result<HostResolver, String> {
        let ns = Netns::current().map_err(|e| e.to_string())?;
        let rtnl = Rtnl::open(&ns).map_err(|e| e.to_string())?;
        Ok(HostResolver { rtnl })
    }
}

impl Resolver for HostResolver {
    fn resolve(&mut self, parent_ifindex: u32, dst: IpAddr) -> NextHop {
        match resolve_next_hop(&mut self.rtnl, parent_ifindex, dst) {
            HopAnswer::Mac(m) => NextHop::Mac(m),
            HopAnswer::Pending => NextHop::Pending,
            HopAnswer::Local => NextHop::Local,
            HopAnswer::BadRouteType => NextHop::BadRouteType,
            HopAnswer::Unreachable => NextHop::Unreachable,
        }
    }
}

/// The dataplane thread, owned by the daemon.
pub struct RunDataplane {
    handle: DataplaneHandle,
    /// Drops the dataplane's cached next hops whenever a host route or neighbour changes, so
    /// routed egress follows the host's tables as the kernel's does (dropped before the
    /// thread).
    _routes: RouteWatcher,
    /// Kept so the thread lives as long as the daemon; shut down on drop.
    _thread: Mutex<Dataplane>,
    /// The I/O path in use (`Dataplane::io_description`).
    io: String,
}

impl RunDataplane {
    /// Starts the dataplane thread with default options.
    pub fn spawn() -> Result<RunDataplane, String> {
        RunDataplane::spawn_with(RunOptions::default())
    }

    /// Starts the dataplane thread with `opts` (e.g. a forced wire backend).
    pub fn spawn_with(opts: RunOptions) -> Result<RunDataplane, String> {
        let resolver = HostResolver::open()?;
        let dp = Dataplane::spawn(opts, Box::new(resolver)).map_err(|e| e.to_string())?;
        let h = dp.handle();
        let ns = Netns::current().map_err(|e| e.to_string())?;
        let routes = RouteWatcher::routes(&ns, move || {
            let _ = h.flush_route_cache();
        })
        .map_err(|e| format!("cannot watch the host's routes: {e}"))?;
        Ok(RunDataplane {
            handle: dp.handle(),
            _routes: routes,
            io: dp.io_description().to_string(),
            _thread: Mutex::new(dp),
        })
    }
}

impl DataplaneApi for RunDataplane {
    fn with_engine_boxed(&self, job: EngineJob) -> Result<Box<dyn Any + Send>, DpError> {
        self.handle.with_engine(job).map_err(dp_err)
    }

    fn trace(&self, frame: Vec<u8>, ingress: Ingress) -> Result<Trace, DpError> {
        self.handle.trace(frame, ingress).map_err(dp_err)
    }

    fn add_tap(&self, port: PortId, tap: Tap) -> Result<(), DpError> {
        self.handle.add_tap(port, tap).map_err(dp_err)
    }

    fn remove_tap(&self, port: PortId) -> Result<Option<Tap>, DpError> {
        self.handle.remove_tap(port).map_err(dp_err)
    }

    fn add_fast_port(&self, port: PortId, veth: u32) -> Result<(), DpError> {
        self.handle.add_fast_port(port, veth).map_err(dp_err)
    }

    fn take_fast_port(&self, port: PortId) -> Result<Option<FastLinks>, DpError> {
        self.handle.take_fast_port(port).map_err(dp_err)
    }

    fn attach_parent(&self, parent: ParentId, ifname: &str) -> Result<String, DpError> {
        let st = self.handle.attach_parent(parent, ifname).map_err(dp_err)?;
        let mut mode = match st.fallback_reason {
            Some(why) => format!("{} (AF_XDP not used: {why})", st.mode),
            None => st.mode,
        };
        match (&st.host_injector, &st.host_inject_error) {
            (Some((name, index)), _) => {
                // Marked like every interface uvlan makes, so `ip link` says whose it is.
                let alias = format!("{}{ifname}", uvlan_dataplane::port::inject::ALIAS_PREFIX);
                let marked = Netns::current()
                    .and_then(|ns| Rtnl::open(&ns))
                    .and_then(|mut r| r.link_set_alias(*index, &alias));
                if let Err(e) = marked {
                    mode.push_str(&format!(" ({name}: alias not set: {e})"));
                }
            }
            (None, Some(why)) => mode.push_str(&format!(" (no host-stack injection: {why})")),
            (None, None) => {}
        }
        Ok(mode)
    }

    fn detach_parent(&self, parent: ParentId) -> Result<(), DpError> {
        self.handle.detach_parent(parent).map_err(dp_err)
    }

    fn stats(&self) -> Result<Option<uvlan_dataplane::run::Stats>, DpError> {
        self.handle.stats().map(Some).map_err(dp_err)
    }

    fn start_capture(&self, filter: CaptureFilter) -> Result<CaptureReader, DpError> {
        self.handle.start_capture(filter).map_err(dp_err)
    }

    fn describe(&self) -> String {
        format!(
            "the uvlan dataplane (TAP endpoints; AF_XDP or AF_PACKET on parents; I/O: {})",
            self.io
        )
    }
}
