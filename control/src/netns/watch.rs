//! Address watcher: mirrors the addresses and up/down state of one link in a namespace
//! (spec kernel-semantics §5, option 2: the same notifications ipvlan listens to).

use std::collections::HashSet;
use std::io;
use std::net::IpAddr;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::Duration;

use netlink_packet_core::NetlinkPayload;
use netlink_packet_route::RouteNetlinkMessage;
use netlink_sys::Socket;

use super::nl::{open_socket, parse_messages};
use super::{AddrInfo, Netns, NetnsError, Result, Rtnl};

/// `RTMGRP_LINK | RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR`.
const GROUPS: u32 = 0x1 | 0x10 | 0x100;
/// How often the watcher thread checks whether it was dropped.
const STOP_POLL: Duration = Duration::from_millis(100);

/// A change seen on the watched link.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AddrEvent {
    /// An address appeared (including tentative IPv6 ones, as ipvlan's notifier sees them;
    /// check `flags`).
    AddrAdded(AddrInfo),
    /// An address went away.
    AddrRemoved(AddrInfo),
    /// The link is administratively up (`IFF_UP`).
    LinkUp {
        /// The watched interface.
        ifindex: u32,
    },
    /// The link is administratively down.
    LinkDown {
        /// The watched interface.
        ifindex: u32,
    },
    /// The link was deleted (or left the namespace).
    LinkRemoved {
        /// The watched interface.
        ifindex: u32,
    },
}

/// Watches one link's addresses and up/down state on its own thread until dropped.
///
/// On start it reports the current state (one `LinkUp`/`LinkDown`, then one `AddrAdded`
/// per address), then every change. Events are de-duplicated against the mirrored state,
/// so the consumer sees a consistent sequence; if the kernel drops notifications
/// (`ENOBUFS`), the watcher re-reads the state and reports the difference.
pub struct AddrWatcher {
    ifindex: u32,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for AddrWatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AddrWatcher")
            .field("ifindex", &self.ifindex)
            .finish()
    }
}

struct State {
    ifindex: u32,
    up: Option<bool>,
    gone: bool,
    addrs: HashSet<(IpAddr, u8)>,
}

impl State {
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

    /// Re-reads link and addresses and reports the differences.
    fn resync(&mut self, rtnl: &mut Rtnl, emit: &mut dyn FnMut(AddrEvent)) -> Result<()> {
        let link = match rtnl.link_get_by_index(self.ifindex) {
            Ok(l) => l,
            Err(NetnsError::LinkNotFound { .. }) => {
                self.link_gone(emit);
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        self.gone = false;
        self.set_up(link.is_up(), emit);
        let now = rtnl.addr_list(Some(self.ifindex))?;
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
        Ok(())
    }

    fn link_gone(&mut self, emit: &mut dyn FnMut(AddrEvent)) {
        if !self.gone {
            self.gone = true;
            self.up = None;
            self.addrs.clear();
            emit(AddrEvent::LinkRemoved {
                ifindex: self.ifindex,
            });
        }
    }

    fn handle(&mut self, msg: RouteNetlinkMessage, emit: &mut dyn FnMut(AddrEvent)) {
        match msg {
            RouteNetlinkMessage::NewAddress(m) if m.header.index == self.ifindex => {
                if let Some(a) = AddrInfo::from_message(&m) {
                    self.add(a, emit);
                }
            }
            RouteNetlinkMessage::DelAddress(m) if m.header.index == self.ifindex => {
                if let Some(a) = AddrInfo::from_message(&m) {
                    self.remove(a, emit);
                }
            }
            RouteNetlinkMessage::NewLink(m) if m.header.index == self.ifindex => {
                self.gone = false;
                let up = m.header.flags.bits() & libc::IFF_UP as u32 != 0;
                self.set_up(up, emit);
            }
            RouteNetlinkMessage::DelLink(m) if m.header.index == self.ifindex => {
                self.link_gone(emit);
            }
            _ => {}
        }
    }
}

impl AddrWatcher {
    /// Starts watching link `ifindex` in `ns`, calling `on_event` for the initial state
    /// (before this returns) and for every later change (on the watcher's thread).
    pub fn start(
        ns: &Netns,
        ifindex: u32,
        mut on_event: impl FnMut(AddrEvent) + Send + 'static,
    ) -> Result<AddrWatcher> {
        // Subscribe first, then dump: nothing is missed, and duplicates are filtered.
        let sock = open_socket(ns, GROUPS)?;
        let mut rtnl = Rtnl::open(ns)?;
        let mut state = State {
            ifindex,
            up: None,
            gone: false,
            addrs: HashSet::new(),
        };
        // The initial read must find the link: report a bad ifindex to the caller.
        rtnl.link_get_by_index(ifindex)?;
        state.resync(&mut rtnl, &mut on_event)?;
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let thread = std::thread::Builder::new()
            .name(format!("uvlan-addrwatch-{ifindex}"))
            .spawn(move || watch_loop(sock, rtnl, state, stop2, on_event))
            .map_err(|source| NetnsError::Thread { source })?;
        Ok(AddrWatcher {
            ifindex,
            stop,
            thread: Some(thread),
        })
    }

    /// Like [`AddrWatcher::start`], delivering events through a channel.
    pub fn channel(ns: &Netns, ifindex: u32) -> Result<(AddrWatcher, mpsc::Receiver<AddrEvent>)> {
        let (tx, rx) = mpsc::channel();
        let w = AddrWatcher::start(ns, ifindex, move |ev| {
            let _ = tx.send(ev);
        })?;
        Ok((w, rx))
    }

    /// The watched interface index.
    pub fn ifindex(&self) -> u32 {
        self.ifindex
    }

    /// True while the watcher thread runs (it stops only on drop or a fatal socket error).
    pub fn is_running(&self) -> bool {
        self.thread.as_ref().is_some_and(|t| !t.is_finished())
    }
}

impl Drop for AddrWatcher {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn watch_loop(
    sock: Socket,
    mut rtnl: Rtnl,
    mut state: State,
    stop: Arc<AtomicBool>,
    mut on_event: impl FnMut(AddrEvent),
) {
    let mut buf: Vec<u8> = Vec::with_capacity(64 * 1024);
    while !stop.load(Ordering::Relaxed) {
        if !poll_readable(&sock) {
            continue; // timeout or EINTR: re-check the stop flag
        }
        loop {
            buf.clear();
            buf.reserve(64 * 1024);
            match sock.recv(&mut buf, libc::MSG_DONTWAIT) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                    // Notifications were lost: re-read the state and report the diff.
                    if state.resync(&mut rtnl, &mut on_event).is_err() {
                        return;
                    }
                    continue;
                }
                Err(_) => return,
            }
            let Ok(msgs) = parse_messages(&buf) else {
                continue;
            };
            for m in msgs {
                if let NetlinkPayload::InnerMessage(inner) = m.payload {
                    state.handle(inner, &mut on_event);
                }
            }
        }
    }
}

/// `RTMGRP_NEIGH | RTMGRP_IPV4_ROUTE | RTMGRP_IPV6_ROUTE`.
const ROUTE_GROUPS: u32 = 0x4 | 0x40 | 0x400;
/// `RTMGRP_LINK | RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR`.
const LINK_GROUPS: u32 = 0x1 | 0x10 | 0x100;

/// Calls a function whenever something of one kind changes in a namespace: routes and
/// neighbours ([`ChangeWatcher::routes`]: the daemon drops its cached next hops, so routed L3
/// egress follows the host's tables at once) or links and addresses
/// ([`ChangeWatcher::links`]: the daemon re-reads its parents, whose state, MAC, MTU and
/// addresses the slaves follow). Runs on its own thread until dropped.
pub struct ChangeWatcher {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// The route and neighbour watcher.
pub type RouteWatcher = ChangeWatcher;

impl std::fmt::Debug for ChangeWatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChangeWatcher").finish()
    }
}

impl ChangeWatcher {
    /// Watches routes and neighbours in `ns`; `on_change` runs on the watcher's thread, once
    /// per burst of notifications (and once when notifications were lost).
    pub fn routes(ns: &Netns, on_change: impl FnMut() + Send + 'static) -> Result<ChangeWatcher> {
        Self::start(ns, ROUTE_GROUPS, "uvlan-routewatch", on_change)
    }

    /// Watches links and addresses in `ns`, like [`ChangeWatcher::routes`].
    pub fn links(ns: &Netns, on_change: impl FnMut() + Send + 'static) -> Result<ChangeWatcher> {
        Self::start(ns, LINK_GROUPS, "uvlan-linkwatch", on_change)
    }

    fn start(
        ns: &Netns,
        groups: u32,
        name: &str,
        mut on_change: impl FnMut() + Send + 'static,
    ) -> Result<ChangeWatcher> {
        let sock = open_socket(ns, groups)?;
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let thread = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                let mut buf: Vec<u8> = Vec::with_capacity(64 * 1024);
                while !stop2.load(Ordering::Relaxed) {
                    if !poll_readable(&sock) {
                        continue;
                    }
                    let mut changed = false;
                    loop {
                        buf.clear();
                        buf.reserve(64 * 1024);
                        match sock.recv(&mut buf, libc::MSG_DONTWAIT) {
                            Ok(_) => changed = true,
                            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                            Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => changed = true,
                            Err(_) => return,
                        }
                    }
                    if changed {
                        on_change();
                    }
                }
            })
            .map_err(|source| NetnsError::Thread { source })?;
        Ok(ChangeWatcher {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for ChangeWatcher {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Waits up to [`STOP_POLL`] for `sock` to become readable.
fn poll_readable(sock: &Socket) -> bool {
    let mut pfd = libc::pollfd {
        fd: sock.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: pfd is one valid pollfd for the duration of the call.
    let r = unsafe { libc::poll(&mut pfd, 1, STOP_POLL.as_millis() as libc::c_int) };
    r > 0
}
