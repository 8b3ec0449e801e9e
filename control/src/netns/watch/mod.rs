//! Netlink watchers: the addresses and up/down state of one link ([`AddrWatcher`]: the same
//! notifications ipvlan's address notifiers listen to, `ipvlan_main.c`) and changes of
//! routes or links in a namespace ([`ChangeWatcher`]). Process exits
//! ([`ExitWatcher`](super::ExitWatcher), `netns/exit.rs`) share the same hub and rules.
//!
//! # One thread and one socket for all of them
//! Every watcher is served by the watcher hub (`netns/hub.rs`): one process-wide thread,
//! started with the first watcher, that waits in `epoll_wait` without a timeout. All
//! watchers of the same kind of notifications share one netlink socket, whatever namespace
//! they watch: it hears every watched namespace at once (`NETLINK_LISTEN_ALL_NSID`, see
//! `watch/listen.rs`), so the kernel's cost of a notification does not grow with the number
//! of watched namespaces. The hub reads it and hands each address or link notification to
//! the watchers of that namespace and interface index only. The socket closes with its
//! last watcher. Nothing wakes up while nothing happens.
//!
//! # Callbacks
//! Callbacks (after the initial report of [`AddrWatcher::start`]) run on the hub thread, one
//! at a time: a slow callback delays every other watcher's. Meanwhile notifications wait in
//! the socket buffers (enlarged to 8 MiB where allowed); if one overflows anyway
//! (`ENOBUFS`), every watcher of that socket re-reads the state and reports the difference,
//! as before. Keep callbacks short. A callback may start and drop watchers, its own
//! included; a panic in a callback stops that watcher only.
//!
//! # Dropping, and which locks a callback may take
//! Dropping a watcher never waits for the hub thread (no command round trip, no poll
//! timeout): it marks the watcher stopped under the watcher's own lock, which the hub holds
//! while it calls that watcher's callback. So once drop returns the callback is never called
//! again, and drop waits only for a call of **this watcher's** callback that is already
//! running. Called from inside its own callback (on the hub thread), drop returns at once
//! and the callback is released when it returns.
//!
//! Hence a thread may drop a watcher while holding a lock that *other* watchers' callbacks
//! take: the daemon drops endpoint watchers under its state lock while the host link
//! watcher's callback may be waiting for that same lock, and that cannot deadlock. What
//! deadlocks, as with any handle that stops its callback on drop, is dropping a watcher
//! while holding a lock that **its own** callback takes. (The daemon's endpoint watchers
//! only talk to the dataplane thread, which never waits for the daemon's lock.)

use std::net::IpAddr;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};

use netlink_packet_route::RouteNetlinkMessage;

use super::hub::{self, lock, take_locked, Hub};
use super::nl::McNote;
use super::{AddrInfo, Netns, NetnsError, Result, Rtnl};

/// `RTMGRP_LINK | RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR`.
const GROUPS: u32 = 0x1 | 0x10 | 0x100;
/// `RTMGRP_NEIGH | RTMGRP_IPV4_ROUTE | RTMGRP_IPV6_ROUTE`.
const ROUTE_GROUPS: u32 = 0x4 | 0x40 | 0x400;
/// `RTMGRP_LINK | RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR` (shared with the address
/// watchers).
const LINK_GROUPS: u32 = GROUPS;

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
    /// The link's MTU changed (not reported for the state found at start: the consumer
    /// reads that itself).
    LinkMtu {
        /// The watched interface.
        ifindex: u32,
        /// The new MTU.
        mtu: u32,
    },
    /// The multicast groups the link accepts, reported at start and after every change
    /// (only by a watcher started with [`AddrWatcher::start_with_multicast`], and only on a
    /// kernel that announces group changes: Linux 6.11 and later).
    Multicast {
        /// The watched interface.
        ifindex: u32,
        /// Promiscuous or all-multicast: every group passes.
        all: bool,
        /// The IPv4 and IPv6 groups its stacks joined, sorted.
        groups: Vec<IpAddr>,
    },
}

/// What a shared notification socket delivers to the watchers of one interface.
#[derive(Clone, Debug)]
enum Note {
    Rt(RouteNetlinkMessage),
    Mc(McNote),
}

// ---- per-watcher slots ---------------------------------------------------------------------

type OnEvent = Box<dyn FnMut(AddrEvent) + Send>;
type OnChange = Box<dyn FnMut() + Send>;

/// One [`AddrWatcher`] as the hub sees it.
struct AddrSlot {
    ifindex: u32,
    /// Multicast groups are watched (asked for, and the socket is subscribed to them); set
    /// once the socket is known, before the initial read.
    multicast: AtomicBool,
    /// Cleared by drop, a fatal socket error, a failed re-read or a panicking callback.
    running: AtomicBool,
    /// Held while the callback runs (see the module documentation).
    inner: Mutex<AddrInner>,
}

struct AddrInner {
    /// `Some` until `start` has reported the initial state: notifications wait here.
    starting: Option<Starting>,
    state: State,
    on_event: Option<OnEvent>,
}

#[derive(Default)]
struct Starting {
    pending: Vec<Note>,
    /// Notifications were lost (`ENOBUFS`) while starting: read the state again.
    lost: bool,
}

/// Runs `f` on `state` with an emitter that calls `on_event` while `running`; a panicking
/// callback stops the watcher. Once the watcher has stopped, the callback is dropped here,
/// under the watcher's lock, so a drop waiting for that lock returns after it is gone.
fn run_events(
    running: &AtomicBool,
    state: &mut State,
    on_event: &mut Option<OnEvent>,
    f: impl FnOnce(&mut State, &mut dyn FnMut(AddrEvent)),
) {
    if let Some(cb) = on_event.as_mut() {
        let mut emit = |ev: AddrEvent| {
            if running.load(Ordering::SeqCst) && catch_unwind(AssertUnwindSafe(|| cb(ev))).is_err()
            {
                running.store(false, Ordering::SeqCst);
            }
        };
        f(state, &mut emit);
    }
    if !running.load(Ordering::SeqCst) {
        *on_event = None;
    }
}

impl AddrSlot {
    /// One notification about this watcher's interface (hub thread).
    fn deliver(&self, msg: &Note) {
        if matches!(msg, Note::Mc(_)) && !self.multicast.load(Ordering::SeqCst) {
            return;
        }
        let mut g = lock(&self.inner);
        let g = &mut *g;
        if let Some(st) = g.starting.as_mut() {
            st.pending.push(msg.clone());
            return;
        }
        run_events(&self.running, &mut g.state, &mut g.on_event, |s, emit| {
            s.handle(msg, emit)
        });
    }

    /// Stops the watcher after a failure (hub thread).
    fn stop(&self) {
        self.running.store(false, Ordering::SeqCst);
        lock(&self.inner).on_event = None;
    }

    /// Notifications were lost: re-read the link and report the difference (hub thread).
    fn resync(&self, rtnl: &Mutex<Rtnl>) {
        if !self.running.load(Ordering::SeqCst) {
            return;
        }
        if let Some(st) = lock(&self.inner).starting.as_mut() {
            st.lost = true;
            st.pending.clear();
            return;
        }
        let snap = read_link(rtnl, self.ifindex, self.multicast.load(Ordering::SeqCst));
        let mut g = lock(&self.inner);
        let g = &mut *g;
        match snap {
            Ok(snap) => run_events(&self.running, &mut g.state, &mut g.on_event, |s, emit| {
                s.apply(snap, emit)
            }),
            Err(_) => {
                self.running.store(false, Ordering::SeqCst);
                g.on_event = None;
            }
        }
    }

    /// Reports the initial state `first` (read after subscribing), then what arrived
    /// meanwhile, and hands the watcher over to the hub (caller's thread).
    fn finish_start(&self, rtnl: &Mutex<Rtnl>, first: Snap) -> Result<()> {
        let mut snap = first;
        loop {
            {
                let mut g = lock(&self.inner);
                let g = &mut *g;
                let st = g.starting.get_or_insert_with(Starting::default);
                if !std::mem::take(&mut st.lost) {
                    let pending = std::mem::take(&mut st.pending);
                    g.starting = None;
                    run_events(&self.running, &mut g.state, &mut g.on_event, |s, emit| {
                        s.apply(snap, emit);
                        for m in &pending {
                            s.handle(m, emit);
                        }
                    });
                    return Ok(());
                }
                // Part of what arrived meanwhile is missing: read again.
                st.pending.clear();
            }
            snap = read_link(rtnl, self.ifindex, self.multicast.load(Ordering::SeqCst))?;
        }
    }
}

/// One [`ChangeWatcher`] as the hub sees it.
struct ChangeSlot {
    running: AtomicBool,
    on_change: Mutex<Option<OnChange>>,
}

impl ChangeSlot {
    /// Calls the callback (hub thread); drops it, as [`run_events`] does, once stopped.
    fn fire(&self) {
        let mut g = lock(&self.on_change);
        if let Some(cb) = g.as_mut() {
            if self.running.load(Ordering::SeqCst) && catch_unwind(AssertUnwindSafe(cb)).is_err() {
                self.running.store(false, Ordering::SeqCst);
            }
        }
        if !self.running.load(Ordering::SeqCst) {
            *g = None;
        }
    }
}

// ---- AddrWatcher -----------------------------------------------------------------------------

/// Watches one link's addresses and up/down state until dropped.
///
/// On start it reports the current state (one `LinkUp`/`LinkDown`, then one `AddrAdded`
/// per address), then every change. Events are de-duplicated against the mirrored state,
/// so the consumer sees a consistent sequence; if the kernel drops notifications
/// (`ENOBUFS`), the watcher re-reads the state and reports the difference.
///
/// All watchers share the watcher hub's thread and one netlink socket (see
/// the module documentation for what callbacks may do and what drop waits for).
pub struct AddrWatcher {
    ifindex: u32,
    chan: Arc<NsChan>,
    slot: Arc<AddrSlot>,
}

impl std::fmt::Debug for AddrWatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AddrWatcher")
            .field("ifindex", &self.ifindex)
            .finish()
    }
}

impl AddrWatcher {
    /// Starts watching link `ifindex` in `ns`, calling `on_event` for the initial state
    /// (in the caller's thread, before this returns) and for every later change (on the
    /// watcher hub's thread).
    pub fn start(
        ns: &Netns,
        ifindex: u32,
        on_event: impl FnMut(AddrEvent) + Send + 'static,
    ) -> Result<AddrWatcher> {
        Self::start_opts(ns, ifindex, false, Box::new(on_event))
    }

    /// Like [`AddrWatcher::start`], and also reports the link's multicast groups
    /// ([`AddrEvent::Multicast`]: once at start, then after every change) where the kernel
    /// announces group changes; elsewhere it reports none.
    pub fn start_with_multicast(
        ns: &Netns,
        ifindex: u32,
        on_event: impl FnMut(AddrEvent) + Send + 'static,
    ) -> Result<AddrWatcher> {
        Self::start_opts(ns, ifindex, true, Box::new(on_event))
    }

    fn start_opts(
        ns: &Netns,
        ifindex: u32,
        multicast: bool,
        on_event: OnEvent,
    ) -> Result<AddrWatcher> {
        let slot = Arc::new(AddrSlot {
            ifindex,
            multicast: AtomicBool::new(false),
            running: AtomicBool::new(true),
            inner: Mutex::new(AddrInner {
                starting: Some(Starting::default()),
                state: State::new(ifindex),
                on_event: Some(on_event),
            }),
        });
        // Subscribe first, then read: nothing is missed, and duplicates are filtered.
        let chan = NsChan::join(ns, GROUPS, &Member::Addr(slot.clone()))?;
        slot.multicast
            .store(multicast && chan.listener.multicast, Ordering::SeqCst);
        // From here on, dropping `w` undoes the subscription.
        let w = AddrWatcher {
            ifindex,
            chan,
            slot,
        };
        // The initial read uses a request socket of its own, closed once started (so a
        // watched namespace costs one descriptor: the handle that keeps it and its id).
        let rtnl = Mutex::new(Rtnl::open(ns)?);
        let first = match read_link(&rtnl, ifindex, w.slot.multicast.load(Ordering::SeqCst))? {
            // The initial read must find the link: report a bad ifindex to the caller.
            Snap::Gone => {
                return Err(NetnsError::LinkNotFound {
                    link: format!("index {ifindex}"),
                    ns: ns.label().to_string(),
                })
            }
            s => s,
        };
        w.slot.finish_start(&rtnl, first)?;
        Ok(w)
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

    /// True while the watcher delivers events (it stops only on drop, a fatal socket error,
    /// a failed re-read or a panic in its callback).
    pub fn is_running(&self) -> bool {
        self.slot.running.load(Ordering::SeqCst) && hub::get().is_some_and(Hub::is_alive)
    }
}

impl Drop for AddrWatcher {
    /// Stops the watcher: `on_event` is not called again once this returns. Waits only for
    /// a call of this watcher's callback already under way (not at all from inside it).
    fn drop(&mut self) {
        self.slot.running.store(false, Ordering::SeqCst);
        let released = take_locked(&self.slot.inner, |g| g.on_event.take()).flatten();
        self.chan.leave(&Member::Addr(self.slot.clone()));
        drop(released);
    }
}

// ---- ChangeWatcher ---------------------------------------------------------------------------

/// Calls a function whenever something of one kind changes in a namespace: routes and
/// neighbours ([`ChangeWatcher::routes`]: the daemon drops its cached next hops, so routed L3
/// egress follows the host's tables at once) or links and addresses
/// ([`ChangeWatcher::links`]: the daemon re-reads its parents, whose state, MAC, MTU and
/// addresses the slaves follow). Runs on the watcher hub until dropped (see the module
/// documentation).
pub struct ChangeWatcher {
    chan: Arc<NsChan>,
    slot: Arc<ChangeSlot>,
}

/// The route and neighbour watcher.
pub type RouteWatcher = ChangeWatcher;

impl std::fmt::Debug for ChangeWatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChangeWatcher").finish()
    }
}

impl ChangeWatcher {
    /// Watches routes and neighbours in `ns`; `on_change` runs on the watcher hub's thread,
    /// once per burst of notifications (and once when notifications were lost).
    pub fn routes(ns: &Netns, on_change: impl FnMut() + Send + 'static) -> Result<ChangeWatcher> {
        Self::start(ns, ROUTE_GROUPS, on_change)
    }

    /// Watches links and addresses in `ns`, like [`ChangeWatcher::routes`].
    pub fn links(ns: &Netns, on_change: impl FnMut() + Send + 'static) -> Result<ChangeWatcher> {
        Self::start(ns, LINK_GROUPS, on_change)
    }

    fn start(
        ns: &Netns,
        groups: u32,
        on_change: impl FnMut() + Send + 'static,
    ) -> Result<ChangeWatcher> {
        let slot = Arc::new(ChangeSlot {
            running: AtomicBool::new(true),
            on_change: Mutex::new(Some(Box::new(on_change))),
        });
        let chan = NsChan::join(ns, groups, &Member::Change(slot.clone()))?;
        Ok(ChangeWatcher { chan, slot })
    }

    /// True while the watcher delivers changes (it stops only on drop, a fatal socket error
    /// or a panic in its callback).
    pub fn is_running(&self) -> bool {
        self.slot.running.load(Ordering::SeqCst) && hub::get().is_some_and(Hub::is_alive)
    }
}

impl Drop for ChangeWatcher {
    /// Stops the watcher, like [`AddrWatcher`]'s drop.
    fn drop(&mut self) {
        self.slot.running.store(false, Ordering::SeqCst);
        let released = take_locked(&self.slot.on_change, Option::take).flatten();
        self.chan.leave(&Member::Change(self.slot.clone()));
        drop(released);
    }
}

mod listen;
mod state;
use listen::{Member, NsChan};
use state::{message_ifindex, read_link, Snap, State};

#[cfg(test)]
mod tests;
