//! The mirrored state of one watched link (up/down, MTU, addresses, multicast groups), the
//! fresh reads that resynchronise it, and the events its changes produce.

use std::collections::{BTreeSet, HashSet};
use std::net::IpAddr;
use std::sync::Mutex;

use netlink_packet_route::link::LinkAttribute;
use netlink_packet_route::RouteNetlinkMessage;

use super::super::{AddrInfo, NetnsError, Result, Rtnl};
use super::hub::lock;
use super::{AddrEvent, Note};

pub(super) struct State {
    ifindex: u32,
    up: Option<bool>,
    mtu: Option<u32>,
    gone: bool,
    addrs: HashSet<(IpAddr, u8)>,
    /// The multicast state, when it is watched and known: promiscuous or all-multicast,
    /// and the joined groups.
    mc: Option<(bool, BTreeSet<IpAddr>)>,
    /// The last [`AddrEvent::Multicast`] reported.
    mc_told: Option<(bool, BTreeSet<IpAddr>)>,
}

/// A fresh read of one link.
pub(super) enum Snap {
    Gone,
    Present {
        up: bool,
        mtu: u32,
        addrs: Vec<AddrInfo>,
        /// Promiscuous or all-multicast, and the joined groups (when they are watched and
        /// the kernel can dump them).
        mc: Option<(bool, Vec<IpAddr>)>,
    },
}

/// Reads link `ifindex` and its addresses (and its multicast groups if `mc`).
pub(super) fn read_link(rtnl: &Mutex<Rtnl>, ifindex: u32, mc: bool) -> Result<Snap> {
    let mut rtnl = lock(rtnl);
    let link = match rtnl.link_get_by_index(ifindex) {
        Ok(l) => l,
        Err(NetnsError::LinkNotFound { .. }) => return Ok(Snap::Gone),
        Err(e) => return Err(e),
    };
    let addrs = rtnl.addr_list(Some(ifindex))?;
    let mc = if mc {
        rtnl.multicast_groups(ifindex)?
            .map(|g| (link.all_multicast, g))
    } else {
        None
    };
    Ok(Snap::Present {
        up: link.is_up(),
        mtu: link.mtu,
        addrs,
        mc,
    })
}

impl State {
    pub(super) fn new(ifindex: u32) -> State {
        State {
            ifindex,
            up: None,
            mtu: None,
            gone: false,
            addrs: HashSet::new(),
            mc: None,
            mc_told: None,
        }
    }

    /// Reports the multicast state if it is known and differs from the last report.
    fn tell_mc(&mut self, emit: &mut dyn FnMut(AddrEvent)) {
        if self.mc.is_some() && self.mc != self.mc_told {
            self.mc_told = self.mc.clone();
            if let Some((all, groups)) = &self.mc {
                emit(AddrEvent::Multicast {
                    ifindex: self.ifindex,
                    all: *all,
                    groups: groups.iter().copied().collect(),
                });
            }
        }
    }

    fn set_up(&mut self, up: bool, emit: &mut dyn FnMut(AddrEvent)) {
        if self.up != Some(up) {
            self.up = Some(up);
            let ifindex = self.ifindex;
            emit(if up {
                AddrEvent::LinkUp { ifindex }
            } else {
                AddrEvent::LinkDown { ifindex }
            });
        }
    }

    /// Reports an MTU that differs from the last one seen (the first one silently).
    fn set_mtu(&mut self, mtu: u32, emit: &mut dyn FnMut(AddrEvent)) {
        if mtu == 0 {
            return;
        }
        let before = self.mtu.replace(mtu);
        if before.is_some_and(|m| m != mtu) {
            emit(AddrEvent::LinkMtu {
                ifindex: self.ifindex,
                mtu,
            });
        }
    }

    fn add(&mut self, a: AddrInfo, emit: &mut dyn FnMut(AddrEvent)) {
        if self.addrs.insert((a.addr, a.prefix_len)) {
            emit(AddrEvent::AddrAdded(a));
        }
    }

    fn remove(&mut self, a: AddrInfo, emit: &mut dyn FnMut(AddrEvent)) {
        if self.addrs.remove(&(a.addr, a.prefix_len)) {
            emit(AddrEvent::AddrRemoved(a));
        }
    }

    /// Reports the differences between the mirrored state and a fresh read.
    pub(super) fn apply(&mut self, snap: Snap, emit: &mut dyn FnMut(AddrEvent)) {
        let (up, now) = match snap {
            Snap::Gone => {
                self.link_gone(emit);
                return;
            }
            Snap::Present { up, mtu, addrs, mc } => {
                self.set_mtu(mtu, emit);
                if let Some((all, groups)) = mc {
                    self.mc = Some((all, groups.into_iter().collect()));
                }
                (up, addrs)
            }
        };
        self.gone = false;
        self.set_up(up, emit);
        let keys: HashSet<(IpAddr, u8)> = now.iter().map(|a| (a.addr, a.prefix_len)).collect();
        let stale: Vec<(IpAddr, u8)> = self.addrs.difference(&keys).cloned().collect();
        for (addr, prefix_len) in stale {
            self.remove(
                AddrInfo {
                    ifindex: self.ifindex,
                    addr,
                    prefix_len,
                    scope: 0,
                    flags: Default::default(),
                },
                emit,
            );
        }
        for a in now {
            self.add(a, emit);
        }
        self.tell_mc(emit);
    }

    fn link_gone(&mut self, emit: &mut dyn FnMut(AddrEvent)) {
        if !self.gone {
            self.gone = true;
            self.up = None;
            self.addrs.clear();
            if let Some((_, groups)) = self.mc.as_mut() {
                groups.clear();
            }
            emit(AddrEvent::LinkRemoved {
                ifindex: self.ifindex,
            });
        }
    }

    pub(super) fn handle(&mut self, note: &Note, emit: &mut dyn FnMut(AddrEvent)) {
        let msg = match note {
            Note::Rt(msg) => msg,
            Note::Mc(n) => {
                if n.ifindex == self.ifindex {
                    if let Some((_, groups)) = self.mc.as_mut() {
                        if n.joined {
                            groups.insert(n.group);
                        } else {
                            groups.remove(&n.group);
                        }
                    }
                    self.tell_mc(emit);
                }
                return;
            }
        };
        match msg {
            RouteNetlinkMessage::NewAddress(m) if m.header.index == self.ifindex => {
                if let Some(a) = AddrInfo::from_message(m) {
                    self.add(a, emit);
                }
            }
            RouteNetlinkMessage::DelAddress(m) if m.header.index == self.ifindex => {
                if let Some(a) = AddrInfo::from_message(m) {
                    self.remove(a, emit);
                }
            }
            RouteNetlinkMessage::NewLink(m) if m.header.index == self.ifindex => {
                self.gone = false;
                let up = m.header.flags.bits() & libc::IFF_UP as u32 != 0;
                for a in &m.attributes {
                    if let LinkAttribute::Mtu(mtu) = a {
                        self.set_mtu(*mtu, emit);
                    }
                }
                self.set_up(up, emit);
                if let Some((all, _)) = self.mc.as_mut() {
                    *all = super::super::LinkInfo::from_message(m).all_multicast;
                    self.tell_mc(emit);
                }
            }
            RouteNetlinkMessage::DelLink(m) if m.header.index == self.ifindex => {
                self.link_gone(emit);
            }
            _ => {}
        }
    }
}

/// The interface a link, address or multicast notification is about.
pub(super) fn message_ifindex(note: &Note) -> Option<u32> {
    let msg = match note {
        Note::Rt(msg) => msg,
        Note::Mc(n) => return Some(n.ifindex),
    };
    match msg {
        RouteNetlinkMessage::NewAddress(m) | RouteNetlinkMessage::DelAddress(m) => {
            Some(m.header.index)
        }
        RouteNetlinkMessage::NewLink(m) | RouteNetlinkMessage::DelLink(m) => Some(m.header.index),
        _ => None,
    }
}
