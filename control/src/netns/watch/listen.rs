//! The shared notification sockets of the watchers: one netlink socket per set of groups for
//! every watched namespace together, so the number of sockets the kernel visits for each
//! rtnetlink notification of the machine does not grow with the number of endpoints.
//!
//! # How one socket hears many namespaces
//! Each socket lives in a private, empty namespace of its own (its *home*, made with the
//! socket and gone with it) and is opened with `NETLINK_LISTEN_ALL_NSID`. Such a socket
//! receives the notifications of every namespace that has an id (an nsid) in its home, each
//! with a control message naming that id (`netlink_recvmsg` → `netlink_cmsg_listen_all_nsid`
//! in `af_netlink.c`). uvlan gives a namespace an id in the home when a watcher of that socket
//! starts watching it (`RTM_NEWNSID`, ids counted up from 1 and never given twice), so a
//! socket hears exactly the namespaces its watchers watch: no other process assigns ids in
//! the home, and the kernel assigns them only for links that cross into it, and none does.
//! (A namespace keeps its id while it lives: once unwatched, it is heard and ignored until
//! the socket closes with its last watcher.)
//!
//! # No notification from before a watcher started
//! A socket of its own, opened when its watcher starts, holds only what happens after that.
//! A shared socket may still hold notifications of the same namespace from before: those of
//! an earlier watcher there, not yet read by the hub (an interface still down before its
//! `link set up`). Delivered to the new watcher after its initial read, they would briefly
//! undo what that read found. So every join is an *epoch*: under the listener's read lock,
//! the joining thread reads whatever the socket holds into a backlog for the hub (tagged
//! with the epoch that ends), starts the next epoch, and adds its watcher with it. The hub
//! reads the backlog before the socket, under the same lock, so the order of notifications
//! is kept, and hands a notification only to the watchers whose epoch is not later than
//! the notification's.
//!
//! Per namespace and group set a [`NsChan`] holds the watchers and a handle on the
//! namespace, which keeps it (and so its id) alive while it is watched, as the namespace's
//! own socket did before.
//!
//! Why: the kernel walks every subscribed `NETLINK_ROUTE` socket of the machine for each
//! notification anywhere (`netlink_broadcast_filtered`). With one socket per watched
//! namespace, each of the twenty-odd notifications of an endpoint connect visited 1,000
//! sockets at 1,000 endpoints (3.8 % of all samples in a profile of connects at that scale).

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex};

use netlink_packet_core::NetlinkPayload;
use netlink_packet_route::nsid::{NsidAttribute, NsidMessage};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_sys::Socket;

use super::super::hub::{self, lock, Hub, Source, Token};
use super::super::nl::{
    open_socket, parse_mc_notes, parse_messages, set_sockopt_int, MCADDR_GROUPS,
};
use super::super::{Netns, NetnsError, Result, Rtnl};
use super::{message_ifindex, AddrSlot, ChangeSlot, Note, GROUPS};

/// Receive buffer of a shared notification socket: room for the notifications of every
/// watched namespace that pile up while the hub runs callbacks.
const RCVBUF: libc::c_int = 8 << 20;
/// Datagrams read from one socket per wake-up before the hub serves the others (the epoll
/// set is level-triggered: the rest is read on the next round).
const BURST: usize = 256;
/// After `ENOBUFS`, datagrams discarded at most before re-reading the state.
const DRAIN_MAX: usize = 64 * BURST;
/// Receive buffer for one datagram.
const RECV_BUF: usize = 64 * 1024;

/// The epoch of a watcher, or of a notification (see the module documentation).
type Epoch = u64;

/// The shared notification sockets, by groups.
static LISTENERS: LazyLock<Mutex<HashMap<u32, Arc<Listener>>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));
/// How many times a shared socket reported lost notifications (`ENOBUFS`).
pub(super) static RESYNCS: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// The receive buffer of the hub thread (and of a thread that joins, for its drain).
    static RECV: RefCell<Vec<u8>> = RefCell::new(vec![0; RECV_BUF]);
}

// ---- the home namespace ----------------------------------------------------------------------

/// The private namespace a listener lives in, and a request socket in it that gives the
/// watched namespaces their ids there.
struct Home {
    ns: Netns,
    rtnl: Mutex<Rtnl>,
    /// The next id to give (ids are never given twice, so a stale notification of a
    /// namespace that is gone never reaches the watchers of a new one).
    next: AtomicI32,
}

fn nsid_msg(ns: &Netns, id: Option<i32>) -> NsidMessage {
    let mut m = NsidMessage::default();
    m.attributes
        .push(NsidAttribute::Fd(ns.fd().as_raw_fd() as u32));
    if let Some(id) = id {
        m.attributes.push(NsidAttribute::Id(id));
    }
    m
}

impl Home {
    fn new() -> Result<Home> {
        let ns = Netns::create_private("(uvlan watcher namespace)")?;
        let rtnl = Mutex::new(Rtnl::open(&ns)?);
        Ok(Home {
            ns,
            rtnl,
            next: AtomicI32::new(1),
        })
    }

    /// The id of `ns` in the home, given now if it has none.
    fn nsid_of(&self, ns: &Netns) -> Result<i32> {
        let mut rtnl = lock(&self.rtnl);
        loop {
            let replies = rtnl.get(
                "read a watched namespace's id (RTM_GETNSID)",
                RouteNetlinkMessage::GetNsId(nsid_msg(ns, None)),
            )?;
            let id = replies.iter().find_map(|r| match r {
                RouteNetlinkMessage::NewNsId(m) => m.attributes.iter().find_map(|a| match a {
                    NsidAttribute::Id(id) => Some(*id),
                    _ => None,
                }),
                _ => None,
            });
            if let Some(id) = id.filter(|id| *id >= 0) {
                return Ok(id);
            }
            let id = self
                .next
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                    Some(n.checked_add(1).unwrap_or(1))
                })
                .unwrap_or(1);
            match rtnl.ack(
                "give a watched namespace an id (RTM_NEWNSID)",
                RouteNetlinkMessage::NewNsId(nsid_msg(ns, Some(id))),
                0,
            ) {
                Ok(()) => return Ok(id),
                // The id is taken (after 2^31 ids), or the namespace got one meanwhile:
                // read again and go on.
                Err(NetnsError::Netlink { source, .. })
                    if matches!(source.raw_os_error(), Some(libc::ENOSPC | libc::EEXIST)) => {}
                Err(e) => return Err(e),
            }
        }
    }
}

// ---- who is listening --------------------------------------------------------------------------

/// A watcher as a namespace channel holds it.
pub(super) enum Member {
    Addr(Arc<AddrSlot>),
    Change(Arc<ChangeSlot>),
}

/// The watchers of one namespace, each with the epoch it joined in.
#[derive(Default)]
pub(super) struct Members {
    pub(super) addr: HashMap<u32, Vec<(Epoch, Arc<AddrSlot>)>>,
    pub(super) change: Vec<(Epoch, Arc<ChangeSlot>)>,
}

impl Members {
    fn add(&mut self, m: &Member, since: Epoch) {
        match m {
            Member::Addr(s) => self
                .addr
                .entry(s.ifindex)
                .or_default()
                .push((since, s.clone())),
            Member::Change(c) => self.change.push((since, c.clone())),
        }
    }

    fn remove(&mut self, m: &Member) {
        match m {
            Member::Addr(s) => {
                if let Some(v) = self.addr.get_mut(&s.ifindex) {
                    v.retain(|(_, x)| !Arc::ptr_eq(x, s));
                    if v.is_empty() {
                        self.addr.remove(&s.ifindex);
                    }
                }
            }
            Member::Change(c) => self.change.retain(|(_, x)| !Arc::ptr_eq(x, c)),
        }
    }

    fn is_empty(&self) -> bool {
        self.addr.is_empty() && self.change.is_empty()
    }

    fn stop_all(&self) {
        for (_, s) in self.addr.values().flatten() {
            s.running.store(false, Ordering::SeqCst);
        }
        for (_, c) in &self.change {
            c.running.store(false, Ordering::SeqCst);
        }
    }
}

/// The watchers of one namespace on one [`Listener`].
pub(super) struct NsChan {
    nsid: i32,
    /// Keeps the namespace, and so its id, alive while it is watched.
    ns: Netns,
    pub(super) listener: Arc<Listener>,
    members: Mutex<Members>,
}

/// One netlink socket subscribed to `groups` for every watched namespace, in a home of its
/// own: a namespace has an id there only while some watcher of these groups watches it, so
/// the socket hears nothing of the namespaces only other kinds of watchers watch (the
/// route watcher of the daemon's namespace does not hear every endpoint's neighbours).
pub(super) struct Listener {
    home: Home,
    groups: u32,
    token: Token,
    pub(super) sock: Socket,
    /// Subscribed to multicast group changes ([`MCADDR_GROUPS`]).
    pub(super) multicast: bool,
    chans: Mutex<HashMap<i32, Arc<NsChan>>>,
    /// Taken to read the socket (the hub) or to start an epoch (a join).
    read: Mutex<ReadState>,
}

/// What the listener's read lock guards.
#[derive(Default)]
struct ReadState {
    /// The current epoch: the number of joins so far.
    epoch: Epoch,
    /// What joins read from the socket before the hub did, oldest first.
    backlog: VecDeque<Drained>,
}

/// One read of the socket by a join, kept for the hub.
enum Drained {
    /// A datagram, the id of the namespace it is about, and the epoch it was read in.
    Data(Vec<u8>, Option<i32>, Epoch),
    /// Notifications were lost (`ENOBUFS`).
    Lost,
}

/// What one read of a socket (or of its backlog) gave.
enum Recv {
    /// The channel of the namespace (if it is watched), its notifications, and the epoch
    /// they were read in.
    Data(Option<Arc<NsChan>>, Vec<Note>, Epoch),
    Lost,
    Empty,
    Fatal,
}

pub(super) fn set_rcvbuf(fd: RawFd, opt: libc::c_int, bytes: libc::c_int) -> io::Result<()> {
    set_sockopt_int(fd, libc::SOL_SOCKET, opt, bytes)
}

fn watch_err(op: &'static str) -> impl FnOnce(io::Error) -> NetnsError {
    move |source| NetnsError::Watch { op, source }
}

impl NsChan {
    /// Adds `member` to the channel of `(ns, groups)`, opening the socket of `groups` if
    /// there is none.
    pub(super) fn join(ns: &Netns, groups: u32, member: &Member) -> Result<Arc<NsChan>> {
        let hub = hub::hub()?;
        let mut listeners = lock(&LISTENERS);
        let listener = match listeners.get(&groups) {
            Some(l) => l.clone(),
            None => {
                let l = Arc::new(Listener::open(hub, groups)?);
                hub.add(l.token, l.sock.as_raw_fd(), l.clone())
                    .map_err(watch_err(
                        "register a netlink socket with the watcher hub (epoll_ctl)",
                    ))?;
                listeners.insert(groups, l.clone());
                l
            }
        };
        let nsid = listener.home.nsid_of(ns)?;
        // Made before the read lock, so nothing fails once the backlog may hold something.
        let handle = ns.try_clone()?;
        // A new epoch, under the read lock: what the socket holds now (from before this
        // watcher started) is read into the backlog and never reaches this watcher.
        let mut read = lock(&listener.read);
        let drained = listener.drain(&mut read);
        read.epoch += 1;
        let since = read.epoch;
        let mut chans = lock(&listener.chans);
        let chan = match chans.get(&nsid) {
            Some(c) => c.clone(),
            None => {
                let c = Arc::new(NsChan {
                    nsid,
                    ns: handle,
                    listener: listener.clone(),
                    members: Mutex::new(Members::default()),
                });
                chans.insert(nsid, c.clone());
                c
            }
        };
        lock(&chan.members).add(member, since);
        drop(chans);
        drop(read);
        if drained {
            // The socket may have nothing left to wake the hub for: ask it to read the
            // backlog.
            hub.defer(listener.clone());
        }
        Ok(chan)
    }

    /// Removes `member`; the last one out removes the channel, and the last channel of a
    /// socket closes it (at once, or when a read of it on the hub thread ends).
    pub(super) fn leave(&self, member: &Member) {
        let removed = {
            let mut listeners = lock(&LISTENERS);
            let mut chans = lock(&self.listener.chans);
            {
                let mut m = lock(&self.members);
                m.remove(member);
                if !m.is_empty() {
                    return;
                }
            }
            let chan = match chans.get(&self.nsid) {
                Some(c) if std::ptr::eq(Arc::as_ptr(c), self) => chans.remove(&self.nsid),
                _ => None,
            };
            let listener = if chans.is_empty() {
                if let Some(h) = hub::get() {
                    h.remove(self.listener.token);
                }
                match listeners.get(&self.listener.groups) {
                    Some(l) if Arc::ptr_eq(l, &self.listener) => {
                        listeners.remove(&self.listener.groups)
                    }
                    _ => None,
                }
            } else {
                None
            };
            (chan, listener)
        };
        // Dropped outside the locks (this may close the socket and the namespace handle).
        drop(removed);
    }

    /// Hands `msg`, read in `epoch`, to the address watchers of its interface that joined
    /// no later.
    fn dispatch(&self, msg: &Note, epoch: Epoch) {
        let Some(ifindex) = message_ifindex(msg) else {
            return;
        };
        let slots = lock(&self.members).addr.get(&ifindex).cloned();
        for (since, s) in slots.into_iter().flatten() {
            if since <= epoch {
                s.deliver(msg);
            }
        }
    }

    /// Notifications were lost: every address watcher reads its link again.
    fn resync(&self) {
        let slots: Vec<Arc<AddrSlot>> = lock(&self.members)
            .addr
            .values()
            .flatten()
            .map(|(_, s)| s.clone())
            .collect();
        if slots.is_empty() {
            return;
        }
        // A request socket for the re-read, opened in the watched namespace (no descriptor
        // is kept for it between losses, which are rare).
        match Rtnl::open(&self.ns) {
            Ok(r) => {
                let r = Mutex::new(r);
                for s in slots {
                    s.resync(&r);
                }
            }
            Err(_) => {
                for s in slots {
                    s.stop();
                }
            }
        }
    }

    /// Calls the change watchers that joined no later than `epoch`.
    fn fire_changes(&self, epoch: Epoch) {
        let slots = lock(&self.members).change.clone();
        for (since, c) in slots {
            if since <= epoch {
                c.fire();
            }
        }
    }
}

impl Listener {
    fn open(hub: &Hub, groups: u32) -> Result<Listener> {
        let home = Home::new()?;
        let sock = open_socket(&home.ns, groups)?;
        let fd = sock.as_raw_fd();
        set_sockopt_int(fd, libc::SOL_NETLINK, libc::NETLINK_LISTEN_ALL_NSID, 1).map_err(
            watch_err("hear every watched namespace on one socket (NETLINK_LISTEN_ALL_NSID)"),
        )?;
        // Best effort: SO_RCVBUFFORCE needs CAP_NET_ADMIN; SO_RCVBUF is capped by
        // net.core.rmem_max.
        if set_rcvbuf(fd, libc::SO_RCVBUFFORCE, RCVBUF).is_err() {
            let _ = set_rcvbuf(fd, libc::SO_RCVBUF, RCVBUF);
        }
        // The address watchers' socket also hears multicast group changes where the kernel
        // announces them (6.11 and later; an older one refuses the groups).
        let multicast = groups == GROUPS
            && MCADDR_GROUPS.iter().all(|g| {
                set_sockopt_int(
                    fd,
                    libc::SOL_NETLINK,
                    libc::NETLINK_ADD_MEMBERSHIP,
                    *g as i32,
                )
                .is_ok()
            });
        Ok(Listener {
            home,
            groups,
            token: hub.token(),
            sock,
            multicast,
            chans: Mutex::new(HashMap::new()),
            read: Mutex::new(ReadState::default()),
        })
    }

    /// A fatal socket error: every watcher of it stops, and the next one opens a fresh
    /// socket.
    fn fail(&self) {
        let chans: Vec<Arc<NsChan>> = lock(&self.chans).values().cloned().collect();
        for c in &chans {
            lock(&c.members).stop_all();
        }
        let removed = {
            let mut listeners = lock(&LISTENERS);
            match listeners.get(&self.groups) {
                Some(l) if std::ptr::eq(Arc::as_ptr(l), self) => listeners.remove(&self.groups),
                _ => None,
            }
        };
        if let Some(h) = hub::get() {
            h.remove(self.token);
        }
        drop(removed);
    }

    /// Reads what the socket holds into the backlog (a join, under the read lock); true if
    /// anything was read. After [`DRAIN_MAX`] datagrams (notifications arriving as fast as
    /// they are read) the rest counts as lost: every watcher then reads its state again,
    /// which is right whatever epoch the rest belongs to.
    fn drain(&self, read: &mut ReadState) -> bool {
        RECV.with(|b| {
            let mut buf = b.borrow_mut();
            let mut reads = 0usize;
            loop {
                if reads >= DRAIN_MAX {
                    read.backlog.push_back(Drained::Lost);
                    return true;
                }
                match recv_with_nsid(self.sock.as_raw_fd(), &mut buf) {
                    Ok((len, nsid)) => {
                        read.backlog
                            .push_back(Drained::Data(buf[..len].to_vec(), nsid, read.epoch))
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                        read.backlog.push_back(Drained::Lost)
                    }
                    // Empty, or an error the hub meets on its next read.
                    Err(_) => return reads > 0,
                }
                reads += 1;
            }
        })
    }

    /// The next datagram: from the backlog first, then from the socket (hub thread); true
    /// if it came from the backlog.
    fn recv(&self) -> (Recv, bool) {
        RECV.with(|b| {
            let mut buf = b.borrow_mut();
            let (drained, len, nsid, epoch) = {
                let mut read = lock(&self.read);
                match read.backlog.pop_front() {
                    Some(Drained::Data(bytes, nsid, epoch)) => (Some(bytes), 0, nsid, epoch),
                    Some(Drained::Lost) => return (Recv::Lost, true),
                    None => loop {
                        match recv_with_nsid(self.sock.as_raw_fd(), &mut buf) {
                            Ok((len, nsid)) => break (None, len, nsid, read.epoch),
                            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                                return (Recv::Empty, false)
                            }
                            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                            Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                                return (Recv::Lost, false)
                            }
                            Err(_) => return (Recv::Fatal, false),
                        }
                    },
                }
            };
            let from_backlog = drained.is_some();
            let chan = nsid.and_then(|id| lock(&self.chans).get(&id).cloned());
            let Some(chan) = chan else {
                // A namespace nobody watches any more (or the home's own `lo`).
                return (Recv::Data(None, Vec::new(), epoch), from_backlog);
            };
            let buf = drained.as_deref().unwrap_or(&buf[..len]);
            (Recv::Data(Some(chan), self.notes(buf), epoch), from_backlog)
        })
    }

    /// The notifications of one datagram. A malformed datagram gives none (it still counts
    /// as a change).
    fn notes(&self, buf: &[u8]) -> Vec<Note> {
        let msgs = parse_messages(buf).unwrap_or_default();
        let mut notes: Vec<Note> = msgs
            .into_iter()
            .filter_map(|m| match m.payload {
                NetlinkPayload::InnerMessage(inner) => Some(Note::Rt(inner)),
                _ => None,
            })
            .collect();
        if self.multicast {
            notes.extend(parse_mc_notes(buf).into_iter().map(Note::Mc));
        }
        notes
    }
}

/// One datagram into `buf` and the id of the namespace it is about (`None` without one:
/// the socket's own namespace).
fn recv_with_nsid(fd: RawFd, buf: &mut [u8]) -> io::Result<(usize, Option<i32>)> {
    // Room for one control message carrying an int (CMSG_SPACE(4) is 24 on 64-bit Linux).
    let mut cbuf = [0u64; 8];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: an all-zero msghdr is a valid value of this plain C struct.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cbuf.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&cbuf) as _;
    // SAFETY: `msg` points at `iov` (describing `buf`) and `cbuf`, all valid and writable
    // for the call; `fd` is kept open by the caller.
    let n = unsafe { libc::recvmsg(fd, &mut msg, libc::MSG_DONTWAIT) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut nsid = None;
    // SAFETY: CMSG_LEN only computes a length.
    let need = unsafe { libc::CMSG_LEN(4) } as usize;
    // SAFETY: `msg` was filled by recvmsg; CMSG_FIRSTHDR/CMSG_NXTHDR stay within
    // `msg_control`/`msg_controllen`, and a header they return is readable.
    let mut c = unsafe { libc::CMSG_FIRSTHDR(&msg) };
    while !c.is_null() {
        // SAFETY: `c` is a control message header inside `cbuf` (see above).
        let h = unsafe { &*c };
        if h.cmsg_level == libc::SOL_NETLINK
            && h.cmsg_type == libc::NETLINK_LISTEN_ALL_NSID
            && h.cmsg_len as usize >= need
        {
            // SAFETY: the message holds at least 4 data bytes (checked above); they may be
            // unaligned for an i32, hence read_unaligned.
            nsid = Some(unsafe { std::ptr::read_unaligned(libc::CMSG_DATA(c).cast::<i32>()) });
        }
        // SAFETY: as for CMSG_FIRSTHDR above.
        c = unsafe { libc::CMSG_NXTHDR(&msg, c) };
    }
    Ok(((n as usize).min(buf.len()), nsid))
}

impl Source for Listener {
    fn ready(&self) {
        // The channels that changed, each with the latest epoch a change was read in.
        let mut changed: Vec<(Arc<NsChan>, Epoch)> = Vec::new();
        let mut lost = false;
        let mut reads = 0usize;
        loop {
            let (recv, from_backlog) = self.recv();
            match recv {
                Recv::Data(Some(chan), msgs, epoch) => {
                    // After a loss the re-read below supersedes what is still queued.
                    if !lost {
                        // Multicast group changes alone are no change for the change
                        // watchers (a malformed datagram, with no message, still counts).
                        let change =
                            msgs.is_empty() || msgs.iter().any(|m| matches!(m, Note::Rt(_)));
                        if change {
                            match changed.iter_mut().find(|(c, _)| Arc::ptr_eq(c, &chan)) {
                                Some((_, e)) => *e = (*e).max(epoch),
                                None => changed.push((chan.clone(), epoch)),
                            }
                        }
                        for m in &msgs {
                            chan.dispatch(m, epoch);
                        }
                    }
                }
                Recv::Data(None, ..) => {}
                Recv::Lost => lost = true,
                Recv::Empty => break,
                Recv::Fatal => {
                    self.fail();
                    return;
                }
            }
            // The backlog is always read to its end (nothing else would wake the hub for
            // it); the socket's readiness brings the hub back for what it still holds.
            if !from_backlog {
                reads += 1;
            }
            if reads >= if lost { DRAIN_MAX } else { BURST } {
                break;
            }
        }
        if lost {
            RESYNCS.fetch_add(1, Ordering::Relaxed);
            // Which namespace lost what is unknown: every watcher reads again, and every
            // change watcher is called.
            changed = lock(&self.chans)
                .values()
                .map(|c| (c.clone(), Epoch::MAX))
                .collect();
            for (c, _) in &changed {
                c.resync();
            }
        }
        for (c, epoch) in changed {
            c.fire_changes(epoch);
        }
    }
}

/// The channel of `ns` for `groups`, if one is open (tests).
#[cfg(test)]
pub(super) fn chan_of(ns: &Netns, groups: u32) -> Option<Arc<NsChan>> {
    let l = lock(&LISTENERS).get(&groups).cloned()?;
    let nsid = l.home.nsid_of(ns).ok()?;
    let c = lock(&l.chans).get(&nsid).cloned();
    c
}

/// The socket of `groups`, if one is open (tests).
#[cfg(test)]
pub(super) fn listener_of(groups: u32) -> Option<Arc<Listener>> {
    lock(&LISTENERS).get(&groups).cloned()
}
