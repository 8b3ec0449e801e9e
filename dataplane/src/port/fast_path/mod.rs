//! The **fast path**: an exact-match cache, in the kernel, of the engine's own unicast
//! decisions (port → port, port → wire, wire → port), for endpoints whose interface is a
//! veth.
//!
//! # Shape of a fast-path endpoint
//! ```text
//!  endpoint namespace          │ dataplane namespace
//!  eth0 (veth) ────────────────┼── uvf end (veth) ─ tcx ingress: program `veth`
//!                              │        hit: bpf_redirect_peer(target uvf end) ─► other eth0
//!                              │        miss: bpf_redirect(TAP) ─► the TAP's fd ─► engine
//!                              │        hit for the wire: bpf_redirect(parent) ─► its egress
//!                              │   TAP ─ tcx ingress: program `tap`
//!                              │        frames the dataplane wrote: bpf_redirect(uvf end)
//!                              │        (veth transmit: the peer eth0 receives them)
//!                              │
//!                              │   parent (AF_XDP wire) ─ XDP filter, prologue first:
//!                              │        hit in the wire cache: 8 bytes of metadata
//!                              │        (META_MAGIC, target uvf end), XDP_PASS
//!                              │      ─ tcx ingress: program `wire`
//!                              │        metadata: bpf_redirect_peer(target) ─► its eth0
//!                              │        none: TCX_NEXT (the host's own frames)
//!                              │
//!                              │   parent (AF_PACKET wire) ─ the wire socket's filter:
//!                              │        hit in the wire cache: kept from the socket,
//!                              │        marked in skb->cb (META_MAGIC, target uvf end)
//!                              │      ─ tcx ingress: the wire's tc filter, prologue first:
//!                              │        marked and a hit here too, same target:
//!                              │        bpf_redirect_peer(target) ─► its eth0
//! ```
//! The slow path stays the TAP the run loop already reads and writes (io_uring, batches,
//! `virtio_net_hdr` GSO pass-through); the TAP simply sits in the dataplane's namespace and
//! two redirects join it to the veth. Reading the veth end with AF_PACKET instead would need
//! a second port kind with its own batching and offload handling, and `TC_ACT_OK` would hand
//! every miss to the dataplane namespace's own stack as well; a redirect hands it to nobody
//! else. Frames the dataplane writes reach `eth0` through the veth's transmit path
//! (`veth_xmit` → `__dev_forward_skb` → `eth_type_trans` on `eth0`), which computes
//! `pkt_type` from the destination MAC exactly as the TAP endpoint does.
//!
//! # What is cached
//! Only what the engine decided and what is safe to repeat without it: a unicast frame
//! that the engine sent to exactly one place, without VLAN operation:
//! - from port P to a sibling port Q, both with a veth ([`FastPath::learn`]). The engine only
//!   decides `Port(Q)` from a port when no wire hop is needed (macvlan bridge, ipvlan bridge
//!   l2/l3).
//! - from port P onto the wire of its parent, byte for byte ([`FastPath::learn_to_wire`]):
//!   macvlan in every mode that sends to the lower device (`macvlan_queue_xmit`), ipvlan l2
//!   (`ipvlan_xmit_mode_l2`). The entry carries [`FLAG_EGRESS`]: a hit is `bpf_redirect`ed
//!   to the parent's egress, `dev_queue_xmit` on the lower device as the drivers do. ipvlan
//!   l3/l3s route such frames through the host's tables (`Target::Routed`): never learned.
//!   Networks on `eth0.N` tag them (`VlanOp::Push`): never learned.
//! - from the wire of an AF_XDP parent to port Q ([`FastPath::learn_from_wire`]), when the
//!   frame is addressed to Q's own MAC and carries no tag in its data. The entry lives in
//!   that parent's XDP filter (`port::xdp_filter`), whose prologue (`xdp_prologue`) looks
//!   every untagged unicast frame up before anything else; a hit leaves the filter with
//!   `XDP_PASS` and the target in its XDP metadata, and the `wire` program on the parent's
//!   tcx ingress `bpf_redirect_peer`s it into Q's `eth0` (`macvlan_handle_frame` and
//!   `ipvlan_handle_frame` decide by the destination MAC, resp. the L3 destination, both in
//!   the key).
//! - from the wire of an AF_PACKET parent to port Q, under the same conditions. Packet taps
//!   run before tc ingress, so the wire socket would receive a frame the cache forwards:
//!   its eBPF socket filter ([`assemble_wire_socket`]) looks every untagged unicast frame up
//!   in the wire cache (here the cache of the wire's tc filter), keeps a hit from the socket
//!   and marks it in `skb->cb`; the tc filter's prologue redirects a marked frame into Q's
//!   `eth0` when its own lookup hits with the same target. The kernel clears `cb` before a
//!   filter that uses it runs, so a frame is either delivered to the socket (unmarked) or
//!   forwarded by the cache (marked, and still a hit at tc), never both; an entry deleted
//!   between the two lookups loses that one frame.
//!
//! The run loop learns from the decision it just made. Keys ([`cache_key`]) are exact and
//! per ingress interface (a port's veth end, or the parent):
//!
//! | port kind | key                                                             |
//! |-----------|-----------------------------------------------------------------|
//! | macvlan   | ingress ifindex, 0, destination MAC, source MAC                 |
//! | ipvlan    | ingress ifindex, EtherType (0x0800/0x86dd), destination MAC, source MAC, destination address |
//!
//! `macvlan_queue_xmit` (bridge mode) decides by destination MAC alone; `ipvlan_xmit_mode_l2`
//! by destination MAC = source MAC and the L3 destination, `ipvlan_xmit_mode_l3` by the L3
//! destination alone: each key holds at least what the kernel looks at, so a hit repeats the
//! decision. The program also refuses (sends to the slow path) what the engine would judge
//! differently: group destinations, a tag in skb metadata, an IPv4 header whose version,
//! IHL or total length `ipvlan_get_L3_hdr` would refuse, an IPv6 header whose version is
//! not 6, an IPv6 frame from `::` (`ipvlan_get_L3_hdr` keys an ICMPv6 neighbour
//! solicitation from `::` by its target, not its destination), and headers not in the
//! linear area. The ipvlan key holds the whole IPv6 destination, so IPv6-only endpoints are
//! served like IPv4 ones.
//!
//! A hit counts the frame and its bytes in the entry (atomic adds) and calls
//! `bpf_redirect_peer` to the target's uvf end: the frame enters the target's `eth0` with
//! `pkt_type = PACKET_HOST` (`skb_scrub_packet`), which is what `eth_type_trans` gives for a
//! unicast frame to the endpoint's own MAC (macvlan: the key's destination MAC is the
//! target's; ipvlan: every endpoint has the parent's MAC; from the wire: only frames to the
//! target's MAC are learned). Like the slow path (a TAP write), it does not check the
//! target's MTU, so the run loop only learns where the sender's MTU (the wire's: the
//! parent's) is not above the receiver's.
//!
//! # Invalidation
//! [`FastPath::flush`] deletes every entry, in the veth cache and in every wire cache (and
//! keeps their counters): the run loop calls it after any engine change and whenever a port's TAP or veth comes or goes, on the
//! dataplane thread, after every worker switched to the new engine and before the command
//! returns. No worker can insert an entry decided with the old engine afterwards (learning
//! happens inside a batch; the switch happens between batches). A port leaving the fast
//! path ([`FastPath::take`]) loses its cache entries and its partner entries at once, so its
//! programs forward nothing even while their links are still open; the daemon closes the
//! links after deleting the interfaces, when the close costs no RCU grace period. The
//! programs are attached with `bpf_link`: when the process dies the links close and the uvf
//! ends forward nothing. A wire's cache and its `wire` program go with the wire
//! ([`FastPath::drop_wire`], called when the dataplane closes or reopens it) or with the
//! fast path (dropping [`FastPath`] flushes first); the parent's XDP filter and its cache
//! are the wire's own (`bpf_link` too).
//!
//! Kernel facts relied on (Linux 6.18): `__sk_buff` len@0, vlan_present@20, ifindex@40,
//! data@76, data_end@80, data_meta@140; `xdp_md` data@0, data_end@4, data_meta@8,
//! ingress_ifindex@12; `bpf_xdp_adjust_meta` (54) and the metadata surviving `XDP_PASS`
//! into the skb (native and generic XDP) up to tc ingress; helpers `bpf_redirect` (23) and
//! `bpf_redirect_peer` (155) return `TC_ACT_REDIRECT` (7); `bpf_redirect_peer` needs a veth whose peer is up and in another
//! namespace (else the frame is dropped); `BPF_ATOMIC | BPF_ADD` on map values.
//!
//! Files: this one holds keys, maps and the [`FastPath`] object; `program.rs` the programs'
//! assembly (the key lookup shared by the `veth` program and the XDP prologue).

mod program;

pub use program::{assemble_tap, assemble_veth, assemble_wire, assemble_wire_socket};
pub(crate) use program::{tc_prologue, xdp_prologue};

use std::collections::HashMap;
use std::sync::Mutex;

use crate::fwd::PortId;
use crate::port::bpf::{AttachType, BpfError, Link, Map, MapType, Prog, ProgType, UpdateFlags};

/// Length of a cache key.
pub const KEY_LEN: usize = 36;
/// Length of a cache value: target ifindex u32, flags u32, packets u64, bytes u64.
pub const VALUE_LEN: usize = 24;
/// Value flag: the target is the parent (`bpf_redirect` to its egress), not a veth whose
/// peer receives the frame.
pub const FLAG_EGRESS: u32 = 1;
/// First word of the XDP metadata the parent's XDP program leaves on a wire → endpoint hit
/// for the parent's tcx program (the second word is the target veth's ifindex).
pub const META_MAGIC: u32 = 0x7576_6c66;

/// `TC_ACT_SHOT`.
pub const TC_ACT_SHOT: u32 = 2;
/// `TC_ACT_REDIRECT`.
pub const TC_ACT_REDIRECT: u32 = 7;

/// Stats slot: frames the cache forwarded.
pub const STAT_HIT: u32 = 0;
/// Stats slot: frames sent to the slow path (the TAP).
pub const STAT_MISS: u32 = 1;
/// Stats slot: frames the dataplane wrote, handed to the veth.
pub const STAT_SLOW_OUT: u32 = 2;
/// Stats slot: frames dropped because their interface had no partner (not registered).
pub const STAT_NO_LINK: u32 = 3;
/// Number of stats slots.
pub const STAT_COUNT: u32 = 4;

/// How a parent's wire cache hands its hits over (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WireHook {
    /// AF_XDP wire: the XDP filter's prologue passes a hit with metadata; the fast path's
    /// own `wire` program on the parent's tcx ingress redirects it.
    XdpMetadata,
    /// AF_PACKET wire: the socket's filter keeps a hit from the socket and marks it; the
    /// wire's own tc filter redirects it (nothing more to attach).
    SocketMark,
}

/// Which kind of key a port's decisions are learned under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    /// macvlan: destination and source MAC.
    Mac,
    /// ipvlan: MACs plus the L3 destination.
    L3,
}

fn u16_at(f: &[u8], i: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*f.get(i)?, *f.get(i + 1)?]))
}

/// The cache key the `veth` program computes for `frame` arriving on `ifindex`, when the
/// port's decisions are learned as `kind`; `None` when the program never looks such a frame
/// up (it goes to the slow path). `frame` is the whole frame (a GSO super-frame whole, as
/// `skb->len` counts it).
pub fn cache_key(frame: &[u8], ifindex: u32, kind: KeyKind) -> Option<[u8; KEY_LEN]> {
    let macs = frame.get(..12)?;
    if frame.len() < 14 || macs.first()? & 1 != 0 {
        return None;
    }
    let mut k = [0u8; KEY_LEN];
    k.get_mut(..4)?.copy_from_slice(&ifindex.to_ne_bytes());
    k.get_mut(8..20)?.copy_from_slice(macs);
    if kind == KeyKind::Mac {
        return Some(k);
    }
    let etype = u16_at(frame, 12)?;
    match etype {
        0x0800 => {
            let ip = frame.get(14..34)?;
            let v = *ip.first()?;
            let ihl = usize::from(v & 0xf) * 4;
            let tot = usize::from(u16_at(ip, 2)?);
            if v >> 4 != 4 || ihl < 20 || tot < ihl || tot > frame.len() - 14 {
                return None;
            }
            k.get_mut(20..24)?.copy_from_slice(ip.get(16..20)?);
        }
        0x86dd => {
            let ip = frame.get(14..54)?;
            // From `::`, ipvlan keys an ICMPv6 neighbour solicitation by its target, not by
            // the destination (`ipvlan_get_L3_hdr`, IPVL_ICMPV6): no frame from `::` is
            // keyed (only DAD sends them).
            if ip.first()? >> 4 != 6 || ip.get(8..24)?.iter().all(|b| *b == 0) {
                return None;
            }
            k.get_mut(20..36)?.copy_from_slice(ip.get(24..40)?);
        }
        _ => return None,
    }
    k.get_mut(4..6)?.copy_from_slice(&etype.to_ne_bytes());
    Some(k)
}

/// Errors of the fast path.
#[derive(Debug, thiserror::Error)]
pub enum FastPathError {
    /// A `bpf(2)` operation failed.
    #[error(transparent)]
    Bpf(#[from] BpfError),
    /// The port already has a veth registered.
    #[error("{0} already has a fast-path veth")]
    Busy(PortId),
}

/// Counters of one cache entry, or summed per port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct EntryCounters {
    /// Frames forwarded by the entry.
    pub frames: u64,
    /// Bytes forwarded by the entry.
    pub bytes: u64,
}

/// The program counters (summed over CPUs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FastStats {
    /// Frames the cache forwarded.
    pub hits: u64,
    /// Frames sent to the slow path.
    pub misses: u64,
    /// Frames the dataplane wrote that went out through a veth.
    pub slow_out: u64,
    /// Frames dropped for want of a registered partner interface.
    pub no_link: u64,
}

/// One fast-path port: its veth end and TAP (ifindexes in the dataplane's namespace).
#[derive(Debug)]
struct Attached {
    veth: u32,
    tap: u32,
    kind: KeyKind,
    links: Vec<Link>,
}

/// The program links of a port taken out of the fast path ([`FastPath::take`]): dropping
/// them detaches the programs from whatever interfaces still exist.
#[derive(Debug)]
pub struct FastLinks(Vec<Link>);

impl FastLinks {
    /// Number of links (two for a port: its veth's and its TAP's).
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when there is none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// What was learned: the entry's ports, to account its counters when it goes, and the map
/// it lives in.
#[derive(Debug, Clone, Copy)]
struct Learned {
    /// The sending port; `None`: the wire.
    from: Option<PortId>,
    /// The receiving port; `None`: the wire.
    to: Option<PortId>,
    /// `Some(parent ifindex)`: in that parent's wire cache; `None`: in the veth cache.
    wire: Option<u32>,
    /// The parent whose wire is the entry's other end (to or from it), if any.
    parent: Option<u32>,
}

/// A parent whose wire → endpoint decisions are cached: its XDP filter's cache (another
/// handle on the map) and the tcx-ingress link of the program that finishes the redirect.
#[derive(Debug)]
struct WireCache {
    map: Map,
    /// `None` only in unit tests, which run the programs with `BPF_PROG_TEST_RUN`.
    _link: Option<Link>,
}

#[derive(Debug, Default)]
struct State {
    ports: HashMap<PortId, Attached>,
    learned: HashMap<[u8; KEY_LEN], Learned>,
    wires: HashMap<u32, WireCache>,
    /// Counters of entries already flushed: per sending port and per receiving port.
    gone_tx: HashMap<PortId, EntryCounters>,
    gone_rx: HashMap<PortId, EntryCounters>,
    /// Counters of flushed entries per parent: (sent to its wire, received from it).
    gone_wire: HashMap<u32, (EntryCounters, EntryCounters)>,
}

/// The cache, its programs and the ports that use it; shared by the dataplane workers.
#[derive(Debug)]
pub struct FastPath {
    cache: Map,
    links: Map,
    stats: Map,
    veth_prog: Prog,
    tap_prog: Prog,
    wire_prog: Prog,
    capacity: u32,
    state: Mutex<State>,
}

/// The counters of the entry under `key` in `map` (`None`: no entry).
fn entry_in(map: &Map, key: &[u8; KEY_LEN]) -> Option<EntryCounters> {
    let mut v = [0u8; VALUE_LEN];
    match map.lookup(key, &mut v) {
        Ok(true) => {
            let mut f = [0u8; 8];
            let mut b = [0u8; 8];
            f.copy_from_slice(&v[8..16]);
            b.copy_from_slice(&v[16..24]);
            Some(EntryCounters {
                frames: u64::from_ne_bytes(f),
                bytes: u64::from_ne_bytes(b),
            })
        }
        _ => None,
    }
}

/// Moves the counters `c` of a deleted entry to its ports' flushed totals.
fn account_gone(st: &mut State, l: Learned, c: EntryCounters) {
    if let Some(from) = l.from {
        let tx = st.gone_tx.entry(from).or_default();
        tx.frames += c.frames;
        tx.bytes += c.bytes;
    }
    if let Some(to) = l.to {
        let rx = st.gone_rx.entry(to).or_default();
        rx.frames += c.frames;
        rx.bytes += c.bytes;
    }
    if let Some(p) = l.parent {
        add_wire(st.gone_wire.entry(p).or_default(), &l, c);
    }
}

/// Adds an entry's counters `c` to its parent's (sent to the wire, received from it).
fn add_wire(w: &mut (EntryCounters, EntryCounters), l: &Learned, c: EntryCounters) {
    let side = if l.to.is_none() { &mut w.0 } else { &mut w.1 };
    side.frames += c.frames;
    side.bytes += c.bytes;
}

fn sum_percpu(buf: &[u8]) -> u64 {
    buf.chunks_exact(8)
        .map(|c| {
            let mut b = [0u8; 8];
            b.copy_from_slice(c);
            u64::from_ne_bytes(b)
        })
        .sum()
}

impl FastPath {
    /// Creates the maps (a cache of `capacity` entries) and loads both programs.
    pub fn load(capacity: u32) -> Result<FastPath, FastPathError> {
        let capacity = capacity.max(1);
        let cache = Map::create(
            MapType::Hash,
            KEY_LEN as u32,
            VALUE_LEN as u32,
            capacity,
            "uvlan_fp_cache",
        )?;
        let links = Map::create(MapType::Hash, 4, 4, 65536, "uvlan_fp_links")?;
        let stats = Map::create(MapType::PercpuArray, 4, 8, STAT_COUNT, "uvlan_fp_stats")?;
        let veth = assemble_veth(&cache, &links, &stats)?;
        let veth_prog = Prog::load(
            ProgType::SchedCls,
            &veth,
            "uvlan_fp_veth",
            Some(AttachType::TcxIngress),
        )?;
        let tap = assemble_tap(&links, &stats)?;
        let tap_prog = Prog::load(
            ProgType::SchedCls,
            &tap,
            "uvlan_fp_tap",
            Some(AttachType::TcxIngress),
        )?;
        let wire_prog = Prog::load(
            ProgType::SchedCls,
            &assemble_wire()?,
            "uvlan_fp_wire",
            Some(AttachType::TcxIngress),
        )?;
        Ok(FastPath {
            cache,
            links,
            stats,
            veth_prog,
            tap_prog,
            wire_prog,
            capacity,
            state: Mutex::new(State::default()),
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The program on the dataplane's end of an endpoint veth (for `BPF_PROG_TEST_RUN`).
    pub fn veth_prog(&self) -> &Prog {
        &self.veth_prog
    }

    /// The program on an endpoint's TAP.
    pub fn tap_prog(&self) -> &Prog {
        &self.tap_prog
    }

    /// The program on a parent whose wire decisions are cached.
    pub fn wire_prog(&self) -> &Prog {
        &self.wire_prog
    }

    /// Registers `veth ↔ tap` in the partner map without attaching anything (for tests of
    /// the programs). [`FastPath::attach`] does this too.
    pub fn pair(&self, veth: u32, tap: u32) -> Result<(), FastPathError> {
        self.links
            .update(&veth.to_ne_bytes(), &tap.to_ne_bytes(), UpdateFlags::Any)?;
        self.links
            .update(&tap.to_ne_bytes(), &veth.to_ne_bytes(), UpdateFlags::Any)?;
        Ok(())
    }

    /// Makes `port` a fast-path port: its veth end `veth` and its TAP `tap` (ifindexes in
    /// the calling thread's namespace) get their tcx-ingress programs, and its decisions
    /// are learned as `kind`. Flushes the cache. On failure nothing stays attached.
    pub fn attach(
        &self,
        port: PortId,
        veth: u32,
        tap: u32,
        kind: KeyKind,
    ) -> Result<(), FastPathError> {
        if self.state().ports.contains_key(&port) {
            return Err(FastPathError::Busy(port));
        }
        self.pair(veth, tap)?;
        let links = Link::tcx_ingress(&self.tap_prog, tap)
            .and_then(|a| Ok(vec![a, Link::tcx_ingress(&self.veth_prog, veth)?]));
        let links = match links {
            Ok(l) => l,
            Err(e) => {
                let _ = self.links.delete(&veth.to_ne_bytes());
                let _ = self.links.delete(&tap.to_ne_bytes());
                return Err(e.into());
            }
        };
        self.flush();
        self.state().ports.insert(
            port,
            Attached {
                veth,
                tap,
                kind,
                links,
            },
        );
        Ok(())
    }

    /// Detaches `port`'s programs (frames on its veth then reach nobody) and flushes the
    /// cache. Returns whether it was attached.
    pub fn detach(&self, port: PortId) -> bool {
        // Closing a link on a live interface waits for an RCU grace period under RTNL.
        self.take(port).is_some()
    }

    /// Like [`FastPath::detach`], but hands `port`'s two program links to the caller
    /// instead of closing them. When this returns, the cache is empty and the partner
    /// entries of the port's veth and TAP are gone: the programs still hanging on them
    /// forward nothing (a frame on the veth finds no cache entry and no partner, and is
    /// dropped; no other port's frame can reach it through the cache). The links only keep
    /// the programs on the two interfaces: closed after the interfaces are deleted, they
    /// cost nothing (the kernel detached them with the interface); closed while an
    /// interface lives, each waits for an RCU grace period under RTNL. `None`: `port` had
    /// no veth.
    pub fn take(&self, port: PortId) -> Option<FastLinks> {
        let a = self.state().ports.remove(&port)?;
        self.flush();
        let _ = self.links.delete(&a.veth.to_ne_bytes());
        let _ = self.links.delete(&a.tap.to_ne_bytes());
        Some(FastLinks(a.links))
    }

    /// The ports with a veth.
    pub fn ports(&self) -> Vec<PortId> {
        let mut v: Vec<PortId> = self.state().ports.keys().copied().collect();
        v.sort();
        v
    }

    /// Whether `port` has a veth.
    pub fn has(&self, port: PortId) -> bool {
        self.state().ports.contains_key(&port)
    }

    /// The veth ifindex of `port`.
    pub fn veth_of(&self, port: PortId) -> Option<u32> {
        self.state().ports.get(&port).map(|a| a.veth)
    }

    /// Learns the engine's decision that `frame` from `from` goes to exactly `to` (and
    /// nowhere else, without VLAN operation). Does nothing unless both ports are fast-path
    /// ports and the frame is one the program looks up; a key already learned is not
    /// written again. Returns whether an entry was added.
    pub fn learn(&self, from: PortId, to: PortId, frame: &[u8]) -> bool {
        let mut st = self.state();
        let (Some(a), Some(b)) = (st.ports.get(&from), st.ports.get(&to)) else {
            return false;
        };
        let Some(key) = cache_key(frame, a.veth, a.kind) else {
            return false;
        };
        let target = b.veth;
        self.insert_learned(
            &mut st,
            key,
            target,
            0,
            Learned {
                from: Some(from),
                to: Some(to),
                wire: None,
                parent: None,
            },
        )
    }

    /// Learns the engine's decision that `frame` from port `from` goes onto the wire of the
    /// parent `parent` (ifindex in the dataplane's namespace) and nowhere else, byte for
    /// byte: a hit then leaves through the parent's egress (`bpf_redirect`), as
    /// `dev_queue_xmit` on the lower device would send it. Returns whether an entry was
    /// added.
    pub fn learn_to_wire(&self, from: PortId, parent: u32, frame: &[u8]) -> bool {
        let mut st = self.state();
        let Some(a) = st.ports.get(&from) else {
            return false;
        };
        let Some(key) = cache_key(frame, a.veth, a.kind) else {
            return false;
        };
        self.insert_learned(
            &mut st,
            key,
            parent,
            FLAG_EGRESS,
            Learned {
                from: Some(from),
                to: None,
                wire: None,
                parent: Some(parent),
            },
        )
    }

    /// Learns the engine's decision that `frame`, received on the wire of `parent` (ifindex
    /// in the dataplane's namespace), goes to port `to` and nowhere else, unchanged, into
    /// `wire_cache`: the cache of that parent's filter. With [`WireHook::XdpMetadata`] the
    /// XDP filter then passes every hit with metadata to the wire program
    /// ([`assemble_wire`]) on the parent: the first entry for a parent attaches that
    /// program (tcx ingress); it stays until [`FastPath::drop_wire`] or until the fast path
    /// goes. With [`WireHook::SocketMark`] the wire's own tc filter redirects the hits. Frames carrying an 802.1Q or 802.1ad tag in their data
    /// are never learned (the XDP prologue does not look them up). Returns whether an entry
    /// was added.
    pub fn learn_from_wire(
        &self,
        parent: u32,
        wire_cache: &Map,
        hook: WireHook,
        to: PortId,
        frame: &[u8],
    ) -> bool {
        let mut st = self.state();
        let Some(b) = st.ports.get(&to) else {
            return false;
        };
        if matches!(u16_at(frame, 12), Some(0x8100 | 0x88a8)) {
            return false;
        }
        let Some(key) = cache_key(frame, parent, b.kind) else {
            return false;
        };
        let target = b.veth;
        if let std::collections::hash_map::Entry::Vacant(slot) = st.wires.entry(parent) {
            let Ok(map) = wire_cache.try_clone() else {
                return false;
            };
            // Attached before the first entry exists: no frame is passed with metadata
            // that nothing on the parent would redirect.
            let link = match hook {
                WireHook::XdpMetadata => match Link::tcx_ingress(&self.wire_prog, parent) {
                    Ok(link) => Some(link),
                    Err(_) => return false,
                },
                WireHook::SocketMark => None,
            };
            slot.insert(WireCache { map, _link: link });
        }
        self.insert_learned(
            &mut st,
            key,
            target,
            0,
            Learned {
                from: None,
                to: Some(to),
                wire: Some(parent),
                parent: Some(parent),
            },
        )
    }

    /// Writes a learned entry into its map (the veth cache, or the wire cache of
    /// `learned.wire`) unless the key is known; returns whether it was added.
    fn insert_learned(
        &self,
        st: &mut State,
        key: [u8; KEY_LEN],
        target: u32,
        flags: u32,
        learned: Learned,
    ) -> bool {
        if st.learned.contains_key(&key) {
            return false;
        }
        let map = match learned.wire {
            None => &self.cache,
            Some(p) => match st.wires.get(&p) {
                Some(w) => &w.map,
                None => return false,
            },
        };
        let mut v = [0u8; VALUE_LEN];
        v[..4].copy_from_slice(&target.to_ne_bytes());
        v[4..8].copy_from_slice(&flags.to_ne_bytes());
        if map.update(&key, &v, UpdateFlags::Any).is_err() {
            // Full (or the kernel refused): the slow path keeps serving the key.
            return false;
        }
        st.learned.insert(key, learned);
        true
    }

    /// Forgets the parent `parent` (its wire closes or is replaced): its learned entries go
    /// (counted like a flush) and its wire program is detached. Returns whether it had any.
    pub fn drop_wire(&self, parent: u32) -> bool {
        let mut st = self.state();
        if !st.wires.contains_key(&parent) {
            return false;
        }
        let keys: Vec<[u8; KEY_LEN]> = st
            .learned
            .iter()
            .filter(|(_, l)| l.wire == Some(parent))
            .map(|(k, _)| *k)
            .collect();
        for k in keys {
            if let Some(l) = st.learned.remove(&k) {
                self.delete_learned(&mut st, &k, l);
            }
        }
        st.wires.remove(&parent);
        // The next wire on this interface starts its counters afresh, as its row does.
        st.gone_wire.remove(&parent);
        true
    }

    /// The parents whose wire decisions are cached (ifindexes).
    pub fn wires(&self) -> Vec<u32> {
        let mut v: Vec<u32> = self.state().wires.keys().copied().collect();
        v.sort();
        v
    }

    /// Inserts an entry directly (tests of the program: the run loop only uses
    /// [`FastPath::learn`]).
    pub fn insert_raw(&self, key: &[u8; KEY_LEN], target: u32) -> Result<(), FastPathError> {
        let mut v = [0u8; VALUE_LEN];
        v[..4].copy_from_slice(&target.to_ne_bytes());
        self.cache.update(key, &v, UpdateFlags::Any)?;
        Ok(())
    }

    /// The counters of the veth-cache entry under `key` (`None`: no entry).
    pub fn entry(&self, key: &[u8; KEY_LEN]) -> Option<EntryCounters> {
        entry_in(&self.cache, key)
    }

    /// The counters of a learned entry, wherever it lives.
    fn learned_counters(&self, st: &State, key: &[u8; KEY_LEN], l: &Learned) -> EntryCounters {
        let map = match l.wire {
            None => Some(&self.cache),
            Some(p) => st.wires.get(&p).map(|w| &w.map),
        };
        map.and_then(|m| entry_in(m, key)).unwrap_or_default()
    }

    /// Number of learned entries.
    pub fn len(&self) -> usize {
        self.state().learned.len()
    }

    /// True when nothing is learned.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Cache capacity.
    pub fn capacity(&self) -> u32 {
        self.capacity
    }

    /// Deletes every learned entry; their counters move to the per-port totals.
    pub fn flush(&self) {
        let mut st = self.state();
        let learned = std::mem::take(&mut st.learned);
        for (key, l) in learned {
            self.delete_learned(&mut st, &key, l);
        }
    }

    /// Deletes the entry of a learned key (already taken out of `learned`) from its map and
    /// moves its counters to the flushed totals.
    fn delete_learned(&self, st: &mut State, key: &[u8; KEY_LEN], l: Learned) {
        let c = self.learned_counters(st, key, &l);
        match l.wire {
            None => {
                let _ = self.cache.delete(key);
            }
            Some(p) => {
                if let Some(w) = st.wires.get(&p) {
                    let _ = w.map.delete(key);
                }
            }
        }
        account_gone(st, l, c);
    }

    /// Frames and bytes the cache forwarded, per port: (sent by it, delivered to it), live
    /// entries and flushed ones together.
    pub fn port_counters(&self) -> Vec<(PortId, EntryCounters, EntryCounters)> {
        let st = self.state();
        let mut out: HashMap<PortId, (EntryCounters, EntryCounters)> = HashMap::new();
        for p in st.ports.keys() {
            out.entry(*p).or_default();
        }
        for (p, c) in &st.gone_tx {
            let e = &mut out.entry(*p).or_default().0;
            e.frames += c.frames;
            e.bytes += c.bytes;
        }
        for (p, c) in &st.gone_rx {
            let e = &mut out.entry(*p).or_default().1;
            e.frames += c.frames;
            e.bytes += c.bytes;
        }
        for (key, l) in &st.learned {
            let c = self.learned_counters(&st, key, l);
            if let Some(from) = l.from {
                let e = &mut out.entry(from).or_default().0;
                e.frames += c.frames;
                e.bytes += c.bytes;
            }
            if let Some(to) = l.to {
                let e = &mut out.entry(to).or_default().1;
                e.frames += c.frames;
                e.bytes += c.bytes;
            }
        }
        let mut v: Vec<_> = out.into_iter().map(|(p, (t, r))| (p, t, r)).collect();
        v.sort_by_key(|(p, _, _)| *p);
        v
    }

    /// Frames and bytes the cache forwarded per parent (ifindex): (sent to its wire,
    /// received from it), live entries and flushed ones together.
    pub fn wire_counters(&self) -> Vec<(u32, EntryCounters, EntryCounters)> {
        let st = self.state();
        let mut out: HashMap<u32, (EntryCounters, EntryCounters)> = st.gone_wire.clone();
        for (key, l) in &st.learned {
            if let Some(p) = l.parent {
                let c = self.learned_counters(&st, key, l);
                add_wire(out.entry(p).or_default(), l, c);
            }
        }
        let mut v: Vec<_> = out.into_iter().map(|(p, (t, r))| (p, t, r)).collect();
        v.sort_by_key(|(p, _, _)| *p);
        v
    }

    /// Forgets the flushed counters of a port that left the engine.
    pub fn forget(&self, port: PortId) {
        let mut st = self.state();
        st.gone_tx.remove(&port);
        st.gone_rx.remove(&port);
    }

    /// The programs' counters, summed over CPUs.
    pub fn stats(&self) -> Result<FastStats, FastPathError> {
        let mut vals = [0u64; STAT_COUNT as usize];
        let mut buf = vec![0u8; self.stats.value_buf_len()];
        for (i, slot) in vals.iter_mut().enumerate() {
            self.stats.lookup(&(i as u32).to_ne_bytes(), &mut buf)?;
            *slot = sum_percpu(&buf);
        }
        let [hits, misses, slow_out, no_link] = vals;
        Ok(FastStats {
            hits,
            misses,
            slow_out,
            no_link,
        })
    }
}

impl Drop for FastPath {
    /// Deletes the wire caches' entries before the wire programs' links close: the parents'
    /// XDP filters (which outlive the fast path) then pass nothing with metadata that no
    /// program would redirect.
    fn drop(&mut self) {
        self.flush();
    }
}

#[cfg(test)]
mod tests;
