//! Endpoints follow their parent as the kernel's slaves follow their lower device (see
//! `parents.rs` for when the daemon looks): each endpoint's interface takes its port's MAC,
//! an MTU by the driver's rule, and the parent's carrier; a newly attached endpoint takes the
//! parent's current state.

use uvlan_dataplane::fwd::{Engine, Master, ParentId};
use uvlan_dataplane::wire::MacAddr;

use crate::netns::{Netns, Rtnl};

use super::dp::with_engine;
use super::model::{Daemon, EpRt, State};

/// What changed on one parent.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(super) struct Change {
    pub(super) up: Option<bool>,
    pub(super) mac: Option<MacAddr>,
    pub(super) mtu: Option<u32>,
    pub(super) addrs: bool,
}

impl Change {
    pub(super) fn endpoints_affected(&self) -> bool {
        self.up.is_some() || self.mac.is_some() || self.mtu.is_some()
    }

    pub(super) fn describe(&self) -> String {
        let mut v = Vec::new();
        if let Some(up) = self.up {
            v.push(if up { "up" } else { "down" }.to_string());
        }
        if let Some(m) = self.mac {
            v.push(format!("MAC {m}"));
        }
        if let Some(m) = self.mtu {
            v.push(format!("MTU {m}"));
        }
        if self.addrs {
            v.push("addresses changed".to_string());
        }
        v.join(", ")
    }
}

impl Daemon {
    /// Applies a parent's change to the interfaces of its endpoints.
    pub(super) fn follow_parent(&self, st: &State, pid: ParentId, c: &Change) {
        for net in &st.nets {
            let Some(rt) = &net.rt else { continue };
            if rt.parent != Some(pid) {
                continue;
            }
            let ipvlan = net.rec.driver == "ipvlan";
            for (name, ep) in &net.eps {
                if let Err(e) = self.follow_one(ep, ipvlan, c) {
                    (self.log)(&format!(
                        "network {}: endpoint {name}: cannot follow parent: {e}",
                        net.rec.name
                    ));
                }
            }
        }
    }

    fn follow_one(&self, ep: &EpRt, ipvlan: bool, c: &Change) -> Result<(), String> {
        let mtu = c.mtu.map(|mtu| -> MtuRule {
            // C63: ipvlan slaves are reset to the parent's MTU; C45: larger macvlans clamped.
            if ipvlan {
                MtuRule::Reset(mtu)
            } else {
                MtuRule::Clamp(mtu)
            }
        });
        self.apply_to_link(ep, c.mac.is_some(), mtu, c.up)
    }

    /// A newly attached (or re-attached) endpoint takes its parent's current state: its
    /// port's MAC (ipvlan and passthru: the parent's), an MTU no larger than its port's, and
    /// no carrier while the parent is down. This also catches up at restore with what the
    /// parent did while the daemon was down. Best effort: failures are logged.
    pub(super) fn follow_on_attach(&self, ep: &EpRt, label: &str) {
        let port = ep.port;
        let facts = with_engine(&*self.dp, move |e: &mut Engine| {
            let p = e.port_info(port)?;
            match e.network_info(p.network)?.master {
                Master::Parent { parent, .. } => e.parent_info(parent).map(|pi| (p.mtu, pi.up)),
                Master::Isolated { .. } => None,
            }
        });
        let Ok(Some((mtu, parent_up))) = facts else {
            return;
        };
        let carrier = (!parent_up).then_some(false);
        if let Err(e) = self.apply_to_link(ep, true, Some(MtuRule::Clamp(mtu)), carrier) {
            (self.log)(&format!(
                "endpoint {label}: cannot take its parent's state: {e}"
            ));
        }
    }

    /// Sets the endpoint's interface: the port's MAC (`mac`), its MTU by `mtu`, its carrier.
    fn apply_to_link(
        &self,
        ep: &EpRt,
        mac: bool,
        mtu: Option<MtuRule>,
        carrier: Option<bool>,
    ) -> Result<(), String> {
        let port = ep.port;
        let info = with_engine(&*self.dp, move |e: &mut Engine| e.port_info(port))
            .map_err(|e| e.to_string())?
            .ok_or("its port is gone from the engine")?;
        let mut rtnl = Rtnl::open(&ep.netns).map_err(|e| e.to_string())?;
        let link = rtnl
            .link_get_by_index(ep.ifindex)
            .map_err(|e| e.to_string())?;
        if mac && link.mac != Some(info.mac.0) {
            rtnl.link_set_mac(ep.ifindex, info.mac.0)
                .map_err(|e| e.to_string())?;
        }
        let target = match mtu {
            Some(MtuRule::Reset(m)) => m,
            Some(MtuRule::Clamp(m)) => link.mtu.min(m),
            None => link.mtu,
        };
        if target != link.mtu {
            rtnl.link_set_mtu(ep.ifindex, target)
                .map_err(|e| e.to_string())?;
        }
        match (carrier, ep.fast_veth) {
            (None, _) => {}
            (Some(on), None) => rtnl
                .link_set_carrier(ep.ifindex, on)
                .map_err(|e| e.to_string())?,
            // A veth has no carrier of its own to set: it has one while its peer is up
            // (`veth_open`/`veth_close`), so the daemon's end goes down and up.
            (Some(on), Some(veth)) => Netns::current()
                .and_then(|here| Rtnl::open(&here))
                .and_then(|mut r| r.link_set_up(veth, on))
                .map_err(|e| e.to_string())?,
        }
        Ok(())
    }
}

/// How an endpoint's MTU follows a new one.
#[derive(Debug, Clone, Copy)]
enum MtuRule {
    /// Set it (ipvlan, C63).
    Reset(u32),
    /// Lower it if larger (macvlan, C45; any endpoint at attach).
    Clamp(u32),
}
