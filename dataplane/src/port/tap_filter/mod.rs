//! The TAP prefilter: the engine's header-only drops ([`Prefilter`]) as an eBPF socket filter
//! on a port's TAP (`TUNSETFILTEREBPF`), so that the kernel drops those frames in the
//! sender's own context before they are queued for the dataplane.
//!
//! Why: a frame the engine drops still costs the dataplane its read (a copy out of the TAP's
//! queue) and a decision. One endpoint sending frames that go nowhere (garbage to unknown
//! destinations on an internal network, non-IP frames on an ipvlan L3 network) thereby
//! takes the dataplane's time from the others (issue "fair forwarding under storms"). The
//! kernel runs a TAP's filter in `tun_net_xmit` for every frame the endpoint's stack sends
//! (and every frame a fast-path veth hands to its TAP); a filter returning 0 drops the frame
//! there (the TAP counts it in its `tx_dropped`).
//!
//! Exactness: the filter drops a frame only when [`crate::fwd::Engine::decide`] would drop it
//! for the same reason in the engine's present state ([`crate::fwd::Engine::port_prefilter`]
//! says which class of frames that is; the dataplane asks again after every change of the
//! engine and re-attaches or detaches). Everything else passes whole. The agreement is
//! tested by running random frames through the program (`BPF_PROG_TEST_RUN`) and the engine
//! (`tests.rs`).
//!
//! A bridge-mode macvlan port's filter looks the destination up in its network's map of
//! bridge-mode MACs ([`TapFilters::sync_bridge_macs`], kept equal to the engine's after every
//! change). A map an update failed on is not used: those ports get no filter.
//!
//! Visibility: every drop is counted by reason in a shared counter map, per port slot
//! ([`TapFilters::counts`]); the dataplane adds the counts to the port's engine drops, so
//! `uvlan stats` and the metrics show them as the engine's own. While a capture runs, the
//! dataplane detaches every filter, so the capture sees every frame with its verdict.
//!
//! The program (one per port; the TAP holds it, uvlan keeps no descriptor):
//!
//! ```text
//! len < 14, or bpf_skb_load_bytes(skb, 0, hdr, 14) fails   → pass (the engine decides)
//! IpvlanL2NoWire:  group dst → pass; !vepa and dst == src → pass; else drop no_wire
//! IpvlanL3NonIp:   untagged ARP/IPv4/IPv6 → pass; else drop l3_multicast (group dst)
//!                  or l3_non_ip
//! MacvlanNoWire:   drop no_wire
//! MacvlanBridgeNoWire: group dst → pass; dst in the network's bridge-mode MAC map → pass;
//!                  else drop no_wire
//! drop: counters[slot * 3 + reason] += 1; return 0.  pass: return skb->len
//! ```

#[cfg(test)]
mod tests;

use std::collections::{HashMap, HashSet};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::sync::{Arc, Mutex};

use crate::fwd::{DropReason, Engine, NetworkId, Prefilter, PREFILTER_REASONS};
use crate::port::bpf::{helper, Alu, Asm, BpfError, Insn, Jmp, Label, Map, MapType, Prog};
use crate::port::bpf::{ProgType, Reg, Size, UpdateFlags, BPF_F_NO_PREALLOC};
use crate::wire::MacAddr;

/// Port slots ([`crate::fwd::PortId::index`]) the counter map has room for; a port with a
/// higher slot gets no filter (the engine drops its frames as before).
pub const SLOTS: u32 = 4096;

const NREASONS: u32 = PREFILTER_REASONS.len() as u32;

// `__sk_buff` offsets.
const SKB_LEN: i16 = 0;
const SKB_VLAN_PRESENT: i16 = 20;
// Stack: the 14-byte header at r10-16 (each field loaded below is aligned, as the verifier
// demands on the stack), a bridge-MAC key at r10-24 (8 bytes), the counter key at r10-28.
const HDR: i16 = -16;
const MKEY: i16 = -24;
const KEY: i16 = -28;

/// Bridge-mode MACs one network's map holds at most.
const BRIDGE_MACS: u32 = 65_536;

/// The lookup key of a bridge-mode MAC: the MAC and two zero bytes.
fn mac_key(m: MacAddr) -> [u8; 8] {
    let [a, b, c, d, e, f] = m.0;
    [a, b, c, d, e, f, 0, 0]
}

/// One network's bridge-mode MACs, in a hash map the filters of its bridge-mode ports look
/// destinations up in, and the same set as uvlan last wrote it.
#[derive(Debug)]
struct BridgeMacs {
    map: Map,
    written: HashSet<MacAddr>,
    /// An update failed: the map may miss a MAC, so no filter may use it.
    broken: bool,
}

#[derive(Debug, Default)]
struct Nets {
    maps: HashMap<NetworkId, BridgeMacs>,
    /// The engine the maps were last made equal to (held, so its address is not reused).
    engine: Option<Arc<Engine>>,
}

/// The counter index of a prefilter's drop reason: its place in [`PREFILTER_REASONS`]
/// (every reason a [`Prefilter`] drops for is there; `tests.rs` checks the table).
fn reason_index(reason: DropReason) -> u32 {
    match reason {
        DropReason::L3NonIp => 1,
        DropReason::L3Multicast => 2,
        _ => 0,
    }
}

/// The counter map every port's filter counts its drops in, the networks' bridge-mode MAC
/// maps, and the programs' factory.
#[derive(Debug)]
pub struct TapFilters {
    counters: Map,
    nets: Mutex<Nets>,
}

impl TapFilters {
    /// Creates the counter map (`SLOTS` × 3 `u64`, 96 KiB of kernel memory).
    pub fn new() -> Result<TapFilters, BpfError> {
        Ok(TapFilters {
            counters: Map::create(MapType::Array, 4, 8, SLOTS * NREASONS, "uvlan_tapfilt")?,
            nets: Mutex::new(Nets::default()),
        })
    }

    fn nets(&self) -> std::sync::MutexGuard<'_, Nets> {
        self.nets.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Makes every network's bridge-mode MAC map equal to `engine`'s
    /// ([`Engine::bridge_macs`]): MACs are added before stale ones go. Nothing to do when
    /// `engine` is the one last synced (every worker calls this after a change).
    pub fn sync_bridge_macs(&self, engine: &Arc<Engine>) {
        let mut nets = self.nets();
        if nets.engine.as_ref().is_some_and(|e| Arc::ptr_eq(e, engine)) {
            return;
        }
        nets.engine = Some(Arc::clone(engine));
        let wanted = engine.bridge_prefilter_networks();
        nets.maps.retain(|n, _| wanted.contains(n));
        for n in wanted {
            let macs: HashSet<MacAddr> = engine.bridge_macs(n).into_iter().collect();
            let entry = match nets.maps.entry(n) {
                std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::hash_map::Entry::Vacant(v) => {
                    match Map::create_with_flags(
                        MapType::Hash,
                        8,
                        4,
                        BRIDGE_MACS,
                        BPF_F_NO_PREALLOC,
                        "uvlan_tapbrmac",
                    ) {
                        Ok(map) => v.insert(BridgeMacs {
                            map,
                            written: HashSet::new(),
                            broken: false,
                        }),
                        Err(_) => continue,
                    }
                }
            };
            for m in macs.difference(&entry.written) {
                if entry
                    .map
                    .update(&mac_key(*m), &[1, 0, 0, 0], UpdateFlags::Any)
                    .is_err()
                {
                    entry.broken = true;
                }
            }
            for m in entry.written.difference(&macs) {
                let _ = entry.map.delete(&mac_key(*m));
            }
            entry.written = macs;
        }
    }

    /// Whether a filter for `rule` can be made now (a bridge-mode rule needs its network's
    /// map, complete).
    pub fn usable(&self, rule: Prefilter) -> bool {
        match rule {
            Prefilter::MacvlanBridgeNoWire { network } => {
                self.nets().maps.get(&network).is_some_and(|b| !b.broken)
            }
            _ => true,
        }
    }

    /// Assembles the filter of the port in `slot` for `rule`.
    pub fn assemble(&self, rule: Prefilter, slot: u32) -> Result<Vec<Insn>, BpfError> {
        use Reg::*;
        let mut a = Asm::new();
        let pass = a.label();
        a.mov_reg(R6, R1)
            .ldx(Size::W, R2, R6, SKB_LEN)
            .jmp_imm(Jmp::Lt, R2, 14, pass)
            .mov_reg(R1, R6)
            .mov_imm(R2, 0)
            .mov_reg(R3, R10)
            .alu_imm(Alu::Add, R3, HDR as i32)
            .mov_imm(R4, 14)
            .call(helper::SKB_LOAD_BYTES)
            .jmp_imm(Jmp::Ne, R0, 0, pass);
        match rule {
            Prefilter::IpvlanL2NoWire { vepa } => {
                let no_wire = a.label();
                // A group destination is flooded (`ipvlan_multicast_enqueue`).
                a.ldx(Size::B, R3, R10, HDR).jmp_imm(Jmp::Set, R3, 1, pass);
                if !vepa {
                    // dst == src: looked up locally by L3 address.
                    for off in [0, 2, 4] {
                        a.ldx(Size::H, R3, R10, HDR + off)
                            .ldx(Size::H, R4, R10, HDR + 6 + off)
                            .jmp_reg(Jmp::Ne, R3, R4, no_wire);
                    }
                    a.ja(pass);
                }
                a.bind(no_wire);
                self.drop(&mut a, slot, DropReason::NoWire);
            }
            Prefilter::IpvlanL3NonIp => {
                let non_ip = a.label();
                let group = a.label();
                // A tag in the skb's metadata: the dataplane reads the frame tagged, and a
                // tagged frame has no L3 key.
                a.ldx(Size::W, R3, R6, SKB_VLAN_PRESENT)
                    .jmp_imm(Jmp::Ne, R3, 0, non_ip)
                    .ldx(Size::H, R4, R10, HDR + 12)
                    .be(R4, 16);
                for etype in [0x0806, 0x0800, 0x86dd] {
                    a.jmp_imm(Jmp::Eq, R4, etype, pass);
                }
                a.bind(non_ip)
                    .ldx(Size::B, R3, R10, HDR)
                    .jmp_imm(Jmp::Set, R3, 1, group);
                self.drop(&mut a, slot, DropReason::L3NonIp);
                a.bind(group);
                self.drop(&mut a, slot, DropReason::L3Multicast);
            }
            Prefilter::MacvlanNoWire => {
                self.drop(&mut a, slot, DropReason::NoWire);
            }
            Prefilter::MacvlanBridgeNoWire { network } => {
                let nets = self.nets();
                let Some(macs) = nets.maps.get(&network).filter(|b| !b.broken) else {
                    return Err(BpfError::Size {
                        what: "bridge-mode MAC map",
                        map: format!("network {network}"),
                        expected: 1,
                        got: 0,
                    });
                };
                // A group destination is flooded (`macvlan_broadcast`).
                a.ldx(Size::B, R3, R10, HDR).jmp_imm(Jmp::Set, R3, 1, pass);
                for off in [0, 2, 4] {
                    a.ldx(Size::H, R3, R10, HDR + off)
                        .stx(Size::H, R10, MKEY + off, R3);
                }
                a.st_imm(Size::H, R10, MKEY + 6, 0)
                    .map_lookup(macs.map.as_fd(), MKEY)
                    .jmp_imm(Jmp::Ne, R0, 0, pass);
                drop(nets);
                self.drop(&mut a, slot, DropReason::NoWire);
            }
        }
        a.bind(pass).ldx(Size::W, R0, R6, SKB_LEN).exit();
        Ok(a.finish()?)
    }

    /// Counts a drop for `reason` in the port's slot and returns 0 (the TAP drops it).
    fn drop(&self, a: &mut Asm, slot: u32, reason: DropReason) {
        let idx = reason_index(reason);
        let done: Label = a.label();
        a.st_imm(Size::W, Reg::R10, KEY, (slot * NREASONS + idx) as i32)
            .map_lookup(self.counters.as_fd(), KEY)
            .jmp_imm(Jmp::Eq, Reg::R0, 0, done)
            .mov_imm(Reg::R1, 1)
            .atomic_add(Size::DW, Reg::R0, 0, Reg::R1)
            .bind(done)
            .mov_imm(Reg::R0, 0)
            .exit();
    }

    /// Loads the filter of the port in `slot` for `rule` (`None` when `slot` is past
    /// [`SLOTS`], or `rule` is not [`usable`](TapFilters::usable)).
    pub fn load(&self, rule: Prefilter, slot: u32) -> Result<Option<Prog>, BpfError> {
        if slot >= SLOTS || !self.usable(rule) {
            return Ok(None);
        }
        let insns = self.assemble(rule, slot)?;
        Prog::load(ProgType::SocketFilter, &insns, "uvlan_tapfilt", None).map(Some)
    }

    /// The drops counted in `slot` since [`TapFilters::reset`], by reason (in
    /// [`PREFILTER_REASONS`] order).
    pub fn counts(&self, slot: u32) -> [u64; PREFILTER_REASONS.len()] {
        let mut out = [0u64; PREFILTER_REASONS.len()];
        if slot >= SLOTS {
            return out;
        }
        for (i, n) in out.iter_mut().enumerate() {
            let key = slot * NREASONS + i as u32;
            let mut v = [0u8; 8];
            if let Ok(true) = self.counters.lookup(&key.to_ne_bytes(), &mut v) {
                *n = u64::from_ne_bytes(v);
            }
        }
        out
    }

    /// Zeroes `slot`'s counters (a new port in a reused slot).
    pub fn reset(&self, slot: u32) {
        if slot >= SLOTS {
            return;
        }
        for i in 0..NREASONS {
            let key = slot * NREASONS + i;
            let _ = self
                .counters
                .update(&key.to_ne_bytes(), &0u64.to_ne_bytes(), UpdateFlags::Any);
        }
    }
}

/// Attaches `prog` as the TAP's filter (`TUNSETFILTEREBPF`), replacing any; `None` detaches.
/// The TAP keeps its own reference to the program: the caller may drop `prog` afterwards.
/// The filter applies to the whole device (every queue).
pub fn set_tap_filter(tap: BorrowedFd<'_>, prog: Option<&Prog>) -> io::Result<()> {
    let fd: libc::c_int = prog.map_or(-1, |p| p.as_fd().as_raw_fd());
    // SAFETY: TUNSETFILTEREBPF reads one int (a program fd, or -1) through its pointer
    // argument, which points at a live, aligned c_int for the duration of the call; `tap`
    // is a TUN descriptor the caller holds.
    let r = unsafe {
        libc::ioctl(
            tap.as_raw_fd(),
            libc::TUNSETFILTEREBPF,
            &fd as *const libc::c_int,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
