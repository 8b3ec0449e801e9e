//! The parent-NIC **filter** program, assembled in Rust, and the maps that steer it.
//!
//! One classifier, two flavours:
//! - [`Flavor::Xdp`]: frames keyed to an endpoint go to the AF_XDP socket of their RX queue
//!   (`bpf_redirect_map(xsks, ctx->rx_queue_index, XDP_PASS)`); everything else is
//!   `XDP_PASS`, so the host keeps its own traffic on the parent.
//! - [`Flavor::TcIngress`]: the AF_PACKET fallback. Frames keyed to an endpoint are dropped
//!   (`TC_ACT_SHOT`) so the host stack does not also process them (AF_PACKET taps run before
//!   tc ingress, so the dataplane's socket still has its copy); others return `TCX_NEXT`.
//!
//! # Keys (BPF hash maps kept in sync by [`FilterMaps`])
//! Every key starts with the VLAN id (`u16`, host byte order; 0 = untagged) so a network on
//! `eth0.20` and one on `eth0.30` never see each other's frames:
//!
//! | map    | key layout (bytes)                 | matched against                      |
//! |--------|------------------------------------|--------------------------------------|
//! | `mac`  | vid:2, mac:6                       | destination MAC (macvlan endpoints)  |
//! | `ip4`  | vid:2, pad:2, addr:4 (wire order)  | IPv4 destination, ARP target (tpa)   |
//! | `ip6`  | vid:2, pad:2, addr:16 (wire order) | IPv6 destination, NS target          |
//! | `src`  | vid:2, mac:6                       | source MAC (macvlan `source` mode)   |
//! | `allu` | vid:2, pad:2                       | every unicast frame (macvlan passthru) |
//!
//! The program parses one outer 802.1Q tag (TPID 0x8100) in the packet data. The tc flavour
//! first reads `__sk_buff.vlan_present/vlan_tci`, because the core receive path moves the
//! outer tag into skb metadata (`skb_vlan_untag`) before taps and tc ingress run; only when no
//! tag is in metadata does it parse the data. 802.1ad (0x88a8) outer tags are not parsed:
//! such frames have vid 0 and can only match by MAC.
//!
//! # Order of checks and the broadcast rule
//! 1. Destination MAC unicast: look up `mac`, then `allu` (the VLAN is taken whole by a
//!    passthru port), then `src` (the sender is on a source-mode allowlist); then by
//!    ethertype: IPv4 dst, ARP tpa, IPv6 dst, then ICMPv6 NS target.
//! 2. Destination MAC broadcast/multicast: **only** ARP tpa and ICMPv6 NS target are looked
//!    up. XDP cannot clone, so group-addressed frames that the host may also need (DHCP, RA,
//!    all-nodes, an IPv4 packet sent to the broadcast MAC) are always passed; the dataplane
//!    gets its copy from an AF_PACKET socket on the parent. An ARP request or NS *for an
//!    endpoint address* is redirected even though it is broadcast/multicast (as measured in
//!    the research): it names the endpoint, the host does not own the address and has no use
//!    for it. The dataplane must therefore treat broadcast frames arriving on the XSK as
//!    ordinary broadcast ingress for that VLAN.
//!
//! The `src` key steers *unicast* frames only (group frames are passed and copied like all
//! others). XDP cannot clone, so a unicast frame from an allowlisted source MAC that is
//! addressed to the host itself leaves the host's path: the kernel's source mode would hand
//! the host its copy too (unless the source device has `nodst`), so the dataplane injects it
//! back into the parent's receive path (`port::inject`) when the engine says so. A generic
//! (skb) XDP program would see the injected frame and steer it again; there the dataplane
//! counts such frames as host-stack-unreachable instead.
//!
//! ARP is only keyed when it is Ethernet/IPv4 (`ptype 0x0800, hlen 6, plen 4`). The NS test
//! needs the ICMPv6 header directly after the fixed IPv6 header (next header 58, type 135).
//!
//! # The fast path's prologue
//! With the fast path on (`XdpOptions::wire_cache`), the XDP flavour starts with the fast path's block (`port::fast_path::xdp_prologue`): an
//! untagged unicast frame whose key is in the filter's own wire cache ([`Filter::wire_cache`],
//! entries the dataplane learned from the engine's wire → endpoint decisions) leaves with
//! `XDP_PASS` and 8 bytes of XDP metadata for the fast path's tcx program on the parent;
//! every other frame is classified as below. The cache is empty unless fast-path endpoints
//! exist.
//!
//! The tc flavour (AF_PACKET wire) cannot take a frame away from the wire socket: packet
//! taps run before tc ingress. There the wire socket's own filter
//! (`port::fast_path::assemble_wire_socket`) looks every frame up in the cache first, keeps
//! a hit from the socket and marks it in `skb->cb`; the tc prologue
//! (`port::fast_path::tc_prologue`) redirects a marked frame into its endpoint when its
//! own lookup agrees. Unmarked frames are classified as below.
//!
//! # Statistics
//! A per-CPU array of [`STAT_COUNT`] `u64` counters, summed by [`FilterMaps::stats`]. With
//! an empty XSKMAP (as under `BPF_PROG_TEST_RUN`) a keyed frame falls back to `XDP_PASS`
//! and is counted in `no_socket`: that is how the redirect branch shows in unit tests.
//!
//! Kernel facts relied on: `xdp_md` data@0, data_end@4, rx_queue_index@16; `__sk_buff`
//! vlan_present@20, vlan_tci@24, data@76, data_end@80; helpers map_lookup_elem (1) and
//! redirect_map (51); `XDP_PASS` 2, `XDP_REDIRECT` 4, `TC_ACT_SHOT` 2, `TCX_NEXT` -1.
//! Packet loads are at offsets that are naturally aligned once `NET_IP_ALIGN` (2) is added,
//! so the program also verifies under strict alignment.
//! Frames whose headers are not in the skb's linear area (tc flavour) are passed: drivers
//! and veth keep headers linear.
//!
//! Files: this one holds the flavours, errors, counters and the loaded [`Filter`];
//! `maps.rs` the key maps ([`FilterMaps`]); `program.rs` the classifier's assembly
//! ([`assemble`]).

mod maps;
mod program;

pub use maps::FilterMaps;
pub use program::assemble;

use std::os::fd::{AsFd, BorrowedFd};

use super::bpf::{AttachType, BpfError, Map, MapType, Prog, ProgType, UpdateFlags};
use super::fast_path;

/// Which hook the classifier is assembled for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    /// XDP: redirect keyed frames to the XSKMAP entry of their RX queue.
    Xdp,
    /// tcx ingress: drop keyed frames from the host path (AF_PACKET fallback).
    TcIngress,
}

/// Errors of the filter layer.
#[derive(Debug, thiserror::Error)]
pub enum FilterError {
    /// A `bpf(2)` operation failed.
    #[error(transparent)]
    Bpf(#[from] BpfError),
    /// A VLAN id outside 0..=4094 was given.
    #[error("VLAN id {0} is out of range: use 0 for untagged or 1..=4094")]
    BadVid(u16),
    /// The XDP flavour needs an XSKMAP.
    #[error("the XDP filter needs an XSKMAP to redirect into")]
    NoXskMap,
}

/// Stats slot: keyed frames redirected to an XSK (XDP) or dropped from the host path (tc).
pub const STAT_REDIRECTED: u32 = 0;
/// Stats slot: frames not keyed to any endpoint, passed to the host.
pub const STAT_PASSED: u32 = 1;
/// Stats slot: keyed frames whose RX queue had no XSK (fell back to XDP_PASS).
pub const STAT_NO_SOCKET: u32 = 2;
/// Stats slot: matches on destination MAC.
pub const STAT_HIT_MAC: u32 = 3;
/// Stats slot: matches on IPv4 destination.
pub const STAT_HIT_IPV4: u32 = 4;
/// Stats slot: matches on ARP target address.
pub const STAT_HIT_ARP: u32 = 5;
/// Stats slot: matches on IPv6 destination.
pub const STAT_HIT_IPV6: u32 = 6;
/// Stats slot: matches on ICMPv6 Neighbour Solicitation target.
pub const STAT_HIT_NS: u32 = 7;
/// Stats slot: matches on source MAC (macvlan source mode).
pub const STAT_HIT_SRC_MAC: u32 = 8;
/// Stats slot: matches on the all-unicast flag of the VLAN (macvlan passthru).
pub const STAT_HIT_ALL_UNICAST: u32 = 9;
/// Number of stats slots.
pub const STAT_COUNT: u32 = 10;

/// Counters of the filter program, summed over CPUs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FilterStats {
    /// Keyed frames redirected to an XSK (XDP) or dropped from the host path (tc).
    pub redirected: u64,
    /// Frames passed to the host (not keyed).
    pub passed: u64,
    /// Keyed frames that fell back to `XDP_PASS` because their queue had no XSK.
    pub no_socket: u64,
    /// Matches on destination MAC.
    pub hit_mac: u64,
    /// Matches on IPv4 destination.
    pub hit_ipv4: u64,
    /// Matches on ARP target.
    pub hit_arp: u64,
    /// Matches on IPv6 destination.
    pub hit_ipv6: u64,
    /// Matches on NS target.
    pub hit_ns: u64,
    /// Matches on source MAC.
    pub hit_src_mac: u64,
    /// Matches on the all-unicast flag.
    pub hit_all_unicast: u64,
}
/// The fast path's wire → endpoint cache of a filter, as large as its key maps.
fn new_wire_cache(maps: &FilterMaps) -> Result<Map, BpfError> {
    Map::create(
        MapType::Hash,
        fast_path::KEY_LEN as u32,
        fast_path::VALUE_LEN as u32,
        maps.mac.max_entries(),
        "uvlan_fp_wire",
    )
}

/// A loaded filter program together with its maps (and the XSKMAP for the XDP flavour).
#[derive(Debug)]
pub struct Filter {
    prog: Prog,
    maps: FilterMaps,
    xsks: Option<Map>,
    /// The fast path's wire → endpoint entries (see `port::fast_path`).
    wire_cache: Option<Map>,
    flavor: Flavor,
}

impl Filter {
    /// Assemble and load the XDP flavour with an XSKMAP of `queues` entries and, with
    /// `wire_cache`, the fast path's wire cache looked up first (see the module docs).
    /// A kernel that refuses `bpf_xdp_adjust_meta` to XDP programs
    /// ([`crate::port::probe::xdp_metadata`]) gets the filter without the wire cache
    /// ([`Filter::wire_cache`] is `None`): wire → endpoint frames then take the slow path.
    pub fn load_xdp(
        maps: FilterMaps,
        queues: u32,
        wire_cache: bool,
    ) -> Result<Filter, FilterError> {
        let xsks = Map::create(MapType::XskMap, 4, 4, queues.max(1), "uvlan_xsks")?;
        let wire_cache = (wire_cache && crate::port::probe::xdp_metadata())
            .then(|| new_wire_cache(&maps))
            .transpose()?;
        let insns = assemble(
            Flavor::Xdp,
            &maps,
            Some(xsks.as_fd()),
            wire_cache.as_ref().map(|m| m.as_fd()),
        )?;
        let prog = Prog::load(ProgType::Xdp, &insns, "uvlan_xdp", Some(AttachType::Xdp))?;
        Ok(Filter {
            prog,
            maps,
            xsks: Some(xsks),
            wire_cache,
            flavor: Flavor::Xdp,
        })
    }

    /// Assemble and load the tcx-ingress flavour; with `wire_cache`, the fast path's wire
    /// cache and the prologue that redirects the frames the wire socket's filter marked
    /// (see the module docs).
    pub fn load_tc(maps: FilterMaps, wire_cache: bool) -> Result<Filter, FilterError> {
        let wire_cache = wire_cache.then(|| new_wire_cache(&maps)).transpose()?;
        let insns = assemble(
            Flavor::TcIngress,
            &maps,
            None,
            wire_cache.as_ref().map(|m| m.as_fd()),
        )?;
        let prog = Prog::load(ProgType::SchedCls, &insns, "uvlan_tc", None)?;
        Ok(Filter {
            prog,
            maps,
            xsks: None,
            wire_cache,
            flavor: Flavor::TcIngress,
        })
    }

    /// The loaded program.
    pub fn prog(&self) -> &Prog {
        &self.prog
    }

    /// The key and stats maps.
    pub fn maps(&self) -> &FilterMaps {
        &self.maps
    }

    /// The fast path's wire → endpoint cache the program looks frames up in first (`None`
    /// when loaded without it).
    pub fn wire_cache(&self) -> Option<&Map> {
        self.wire_cache.as_ref()
    }

    /// The flavour.
    pub fn flavor(&self) -> Flavor {
        self.flavor
    }

    /// Register the AF_XDP socket `xsk` for RX queue `queue` (XDP flavour only).
    pub fn set_xsk(&self, queue: u32, xsk: BorrowedFd<'_>) -> Result<(), FilterError> {
        use std::os::fd::AsRawFd;
        let m = self.xsks.as_ref().ok_or(FilterError::NoXskMap)?;
        m.update(
            &queue.to_ne_bytes(),
            &(xsk.as_raw_fd() as u32).to_ne_bytes(),
            UpdateFlags::Any,
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests;
