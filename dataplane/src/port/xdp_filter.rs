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
//! addressed to the host itself no longer reaches the host: the kernel's source mode would
//! hand the host its copy too (unless the source device has `nodst`). The dataplane counts
//! such frames as host-stack-unreachable.
//!
//! ARP is only keyed when it is Ethernet/IPv4 (`ptype 0x0800, hlen 6, plen 4`). The NS test
//! needs the ICMPv6 header directly after the fixed IPv6 header (next header 58, type 135).
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

use std::net::{Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsFd, BorrowedFd};

use super::bpf::{
    helper, Alu, Asm, AttachType, BpfError, Insn, Jmp, Map, MapType, Prog, ProgType, Reg, Size,
    UpdateFlags,
};

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

/// Value stored for every key (reserved for an endpoint id; the program only tests presence).
const PRESENT: [u8; 4] = 1u32.to_ne_bytes();

/// The key maps and the stats map shared by the XDP and tc flavours.
#[derive(Debug)]
pub struct FilterMaps {
    mac: Map,
    ip4: Map,
    ip6: Map,
    src: Map,
    allu: Map,
    stats: Map,
}

fn check_vid(vid: u16) -> Result<(), FilterError> {
    if vid > 4094 {
        return Err(FilterError::BadVid(vid));
    }
    Ok(())
}

fn mac_key(vid: u16, mac: [u8; 6]) -> [u8; 8] {
    let mut k = [0u8; 8];
    k[..2].copy_from_slice(&vid.to_ne_bytes());
    k[2..].copy_from_slice(&mac);
    k
}

fn ip4_key(vid: u16, addr: Ipv4Addr) -> [u8; 8] {
    let mut k = [0u8; 8];
    k[..2].copy_from_slice(&vid.to_ne_bytes());
    k[4..].copy_from_slice(&addr.octets());
    k
}

fn vid_key(vid: u16) -> [u8; 4] {
    let mut k = [0u8; 4];
    k[..2].copy_from_slice(&vid.to_ne_bytes());
    k
}

fn ip6_key(vid: u16, addr: Ipv6Addr) -> [u8; 20] {
    let mut k = [0u8; 20];
    k[..2].copy_from_slice(&vid.to_ne_bytes());
    k[4..].copy_from_slice(&addr.octets());
    k
}

impl FilterMaps {
    /// Create empty maps holding up to `capacity` keys each.
    pub fn create(capacity: u32) -> Result<FilterMaps, FilterError> {
        let capacity = capacity.max(1);
        Ok(FilterMaps {
            mac: Map::create(MapType::Hash, 8, 4, capacity, "uvlan_mac")?,
            ip4: Map::create(MapType::Hash, 8, 4, capacity, "uvlan_ip4")?,
            ip6: Map::create(MapType::Hash, 20, 4, capacity, "uvlan_ip6")?,
            src: Map::create(MapType::Hash, 8, 4, capacity, "uvlan_src")?,
            // One flag per VLAN id at most (0..=4094).
            allu: Map::create(MapType::Hash, 4, 4, 4095, "uvlan_allu")?,
            stats: Map::create(MapType::PercpuArray, 4, 8, STAT_COUNT, "uvlan_stats")?,
        })
    }

    /// Another handle on the same kernel maps (e.g. for the control thread).
    pub fn try_clone(&self) -> std::io::Result<FilterMaps> {
        Ok(FilterMaps {
            mac: self.mac.try_clone()?,
            ip4: self.ip4.try_clone()?,
            ip6: self.ip6.try_clone()?,
            src: self.src.try_clone()?,
            allu: self.allu.try_clone()?,
            stats: self.stats.try_clone()?,
        })
    }

    /// Steer frames to destination `mac` on VLAN `vid` (0 = untagged) to the dataplane.
    pub fn add_mac(&self, vid: u16, mac: [u8; 6]) -> Result<(), FilterError> {
        check_vid(vid)?;
        Ok(self
            .mac
            .update(&mac_key(vid, mac), &PRESENT, UpdateFlags::Any)?)
    }

    /// Stop steering `mac` on `vid`. Returns `false` if it was not present.
    pub fn remove_mac(&self, vid: u16, mac: [u8; 6]) -> Result<bool, FilterError> {
        check_vid(vid)?;
        Ok(self.mac.delete(&mac_key(vid, mac))?)
    }

    /// Whether `mac` on `vid` is steered.
    pub fn has_mac(&self, vid: u16, mac: [u8; 6]) -> Result<bool, FilterError> {
        check_vid(vid)?;
        let mut v = [0u8; 4];
        Ok(self.mac.lookup(&mac_key(vid, mac), &mut v)?)
    }

    /// Steer IPv4 packets to `addr` and ARP packets whose target is `addr` on `vid`.
    pub fn add_ipv4(&self, vid: u16, addr: Ipv4Addr) -> Result<(), FilterError> {
        check_vid(vid)?;
        Ok(self
            .ip4
            .update(&ip4_key(vid, addr), &PRESENT, UpdateFlags::Any)?)
    }

    /// Stop steering `addr` on `vid`. Returns `false` if it was not present.
    pub fn remove_ipv4(&self, vid: u16, addr: Ipv4Addr) -> Result<bool, FilterError> {
        check_vid(vid)?;
        Ok(self.ip4.delete(&ip4_key(vid, addr))?)
    }

    /// Whether `addr` on `vid` is steered.
    pub fn has_ipv4(&self, vid: u16, addr: Ipv4Addr) -> Result<bool, FilterError> {
        check_vid(vid)?;
        let mut v = [0u8; 4];
        Ok(self.ip4.lookup(&ip4_key(vid, addr), &mut v)?)
    }

    /// Steer IPv6 packets to `addr` and Neighbour Solicitations for `addr` on `vid`.
    pub fn add_ipv6(&self, vid: u16, addr: Ipv6Addr) -> Result<(), FilterError> {
        check_vid(vid)?;
        Ok(self
            .ip6
            .update(&ip6_key(vid, addr), &PRESENT, UpdateFlags::Any)?)
    }

    /// Stop steering `addr` on `vid`. Returns `false` if it was not present.
    pub fn remove_ipv6(&self, vid: u16, addr: Ipv6Addr) -> Result<bool, FilterError> {
        check_vid(vid)?;
        Ok(self.ip6.delete(&ip6_key(vid, addr))?)
    }

    /// Whether `addr` on `vid` is steered.
    pub fn has_ipv6(&self, vid: u16, addr: Ipv6Addr) -> Result<bool, FilterError> {
        check_vid(vid)?;
        let mut v = [0u8; 4];
        Ok(self.ip6.lookup(&ip6_key(vid, addr), &mut v)?)
    }

    /// Steer unicast frames whose *source* MAC is `mac` on `vid` (a macvlan `source` device's
    /// allowlist). Group frames are never steered by source (see the module docs).
    pub fn add_src_mac(&self, vid: u16, mac: [u8; 6]) -> Result<(), FilterError> {
        check_vid(vid)?;
        Ok(self
            .src
            .update(&mac_key(vid, mac), &PRESENT, UpdateFlags::Any)?)
    }

    /// Stop steering source `mac` on `vid`. Returns `false` if it was not present.
    pub fn remove_src_mac(&self, vid: u16, mac: [u8; 6]) -> Result<bool, FilterError> {
        check_vid(vid)?;
        Ok(self.src.delete(&mac_key(vid, mac))?)
    }

    /// Whether source `mac` on `vid` is steered.
    pub fn has_src_mac(&self, vid: u16, mac: [u8; 6]) -> Result<bool, FilterError> {
        check_vid(vid)?;
        let mut v = [0u8; 4];
        Ok(self.src.lookup(&mac_key(vid, mac), &mut v)?)
    }

    /// Steer (`on`) or stop steering every unicast frame on `vid` (a macvlan `passthru`
    /// port takes the whole VLAN's unicast). Returns whether the flag was set before.
    pub fn set_all_unicast(&self, vid: u16, on: bool) -> Result<bool, FilterError> {
        check_vid(vid)?;
        let was = self.has_all_unicast(vid)?;
        if on {
            self.allu
                .update(&vid_key(vid), &PRESENT, UpdateFlags::Any)?;
        } else {
            self.allu.delete(&vid_key(vid))?;
        }
        Ok(was)
    }

    /// Whether every unicast frame on `vid` is steered.
    pub fn has_all_unicast(&self, vid: u16) -> Result<bool, FilterError> {
        check_vid(vid)?;
        let mut v = [0u8; 4];
        Ok(self.allu.lookup(&vid_key(vid), &mut v)?)
    }

    /// The program's counters, summed over CPUs.
    pub fn stats(&self) -> Result<FilterStats, FilterError> {
        let mut vals = [0u64; STAT_COUNT as usize];
        let mut buf = vec![0u8; self.stats.value_buf_len()];
        for (i, slot) in vals.iter_mut().enumerate() {
            self.stats.lookup(&(i as u32).to_ne_bytes(), &mut buf)?;
            *slot = buf
                .chunks_exact(8)
                .map(|c| {
                    let mut b = [0u8; 8];
                    b.copy_from_slice(c);
                    u64::from_ne_bytes(b)
                })
                .sum();
        }
        let [redirected, passed, no_socket, hit_mac, hit_ipv4, hit_arp, hit_ipv6, hit_ns, hit_src_mac, hit_all_unicast] =
            vals;
        Ok(FilterStats {
            redirected,
            passed,
            no_socket,
            hit_mac,
            hit_ipv4,
            hit_arp,
            hit_ipv6,
            hit_ns,
            hit_src_mac,
            hit_all_unicast,
        })
    }
}

/// A loaded filter program together with its maps (and the XSKMAP for the XDP flavour).
#[derive(Debug)]
pub struct Filter {
    prog: Prog,
    maps: FilterMaps,
    xsks: Option<Map>,
    flavor: Flavor,
}

impl Filter {
    /// Assemble and load the XDP flavour with an XSKMAP of `queues` entries.
    pub fn load_xdp(maps: FilterMaps, queues: u32) -> Result<Filter, FilterError> {
        let xsks = Map::create(MapType::XskMap, 4, 4, queues.max(1), "uvlan_xsks")?;
        let insns = assemble(Flavor::Xdp, &maps, Some(xsks.as_fd()))?;
        let prog = Prog::load(ProgType::Xdp, &insns, "uvlan_xdp", Some(AttachType::Xdp))?;
        Ok(Filter {
            prog,
            maps,
            xsks: Some(xsks),
            flavor: Flavor::Xdp,
        })
    }

    /// Assemble and load the tcx-ingress flavour.
    pub fn load_tc(maps: FilterMaps) -> Result<Filter, FilterError> {
        let insns = assemble(Flavor::TcIngress, &maps, None)?;
        let prog = Prog::load(ProgType::SchedCls, &insns, "uvlan_tc", None)?;
        Ok(Filter {
            prog,
            maps,
            xsks: None,
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

// Context offsets.
const XDP_DATA: i16 = 0;
const XDP_DATA_END: i16 = 4;
const XDP_RX_QUEUE: i16 = 16;
const SKB_VLAN_PRESENT: i16 = 20;
const SKB_VLAN_TCI: i16 = 24;
const SKB_DATA: i16 = 76;
const SKB_DATA_END: i16 = 80;

const XDP_PASS: i32 = 2;
const XDP_REDIRECT: i32 = 4;
const TC_ACT_SHOT: i32 = 2;
const TCX_NEXT: i32 = -1;

// Stack layout (offsets from r10).
const K_MAC: i16 = -8; // vid:2 mac:6
const K_IP4: i16 = -16; // vid:2 pad:2 addr:4
const K_IP6: i16 = -40; // vid:2 pad:2 addr:16
const S_ETYPE: i16 = -44;
const S_STAT: i16 = -48;
const K_SRC: i16 = -56; // vid:2 mac:6
const K_ALLU: i16 = -60; // vid:2 pad:2

fn count(a: &mut Asm, stats: BorrowedFd<'_>, idx: u32) {
    a.st_imm(Size::W, Reg::R10, S_STAT, idx as i32);
    count_stored(a, stats);
}

/// Increment the counter whose index is already stored at `r10 + S_STAT`.
fn count_stored(a: &mut Asm, stats: BorrowedFd<'_>) {
    let skip = a.label();
    a.ld_map_fd(Reg::R1, stats)
        .mov_reg(Reg::R2, Reg::R10)
        .alu_imm(Alu::Add, Reg::R2, S_STAT as i32)
        .call(helper::MAP_LOOKUP_ELEM)
        .jmp_imm(Jmp::Eq, Reg::R0, 0, skip)
        .ldx(Size::DW, Reg::R1, Reg::R0, 0)
        .alu_imm(Alu::Add, Reg::R1, 1)
        .stx(Size::DW, Reg::R0, 0, Reg::R1)
        .bind(skip);
}

/// `r0 = lookup(map, r10 + key_off)`.
fn lookup(a: &mut Asm, map: BorrowedFd<'_>, key_off: i16) {
    a.ld_map_fd(Reg::R1, map)
        .mov_reg(Reg::R2, Reg::R10)
        .alu_imm(Alu::Add, Reg::R2, key_off as i32)
        .call(helper::MAP_LOOKUP_ELEM);
}

/// Fail to `pass` unless `base + need <= data_end (r8)`.
fn need(a: &mut Asm, base: Reg, need: i32, pass: super::bpf::Label) {
    a.mov_reg(Reg::R2, base)
        .alu_imm(Alu::Add, Reg::R2, need)
        .jmp_reg(Jmp::Gt, Reg::R2, Reg::R8, pass);
}

/// Copy 16 bytes from `r9 + src_off` (packet) to `r10 + dst_off` (stack).
fn copy16(a: &mut Asm, src_off: i16, dst_off: i16) {
    for i in 0..4 {
        a.ldx(Size::W, Reg::R2, Reg::R9, src_off + 4 * i).stx(
            Size::W,
            Reg::R10,
            dst_off + 4 * i,
            Reg::R2,
        );
    }
}

/// Assemble the classifier. `xsks` is required for [`Flavor::Xdp`].
///
/// Registers: r6 = ctx, r7 = packet start, r8 = packet end, r9 = L3 header.
pub fn assemble(
    flavor: Flavor,
    maps: &FilterMaps,
    xsks: Option<BorrowedFd<'_>>,
) -> Result<Vec<Insn>, FilterError> {
    use Reg::*;
    let xsks = match (flavor, xsks) {
        (Flavor::Xdp, None) => return Err(FilterError::NoXskMap),
        (_, x) => x,
    };
    let stats = maps.stats.as_fd();
    let mut a = Asm::new();
    let pass = a.label();
    let matched = a.label();
    let parse_tag = a.label();
    let have_vid = a.label();
    let multicast = a.label();
    let l_ipv4 = a.label();
    let l_arp = a.label();
    let l_ipv6 = a.label();
    let l_ns = a.label();
    let hits = [
        (a.label(), STAT_HIT_MAC),
        (a.label(), STAT_HIT_IPV4),
        (a.label(), STAT_HIT_ARP),
        (a.label(), STAT_HIT_IPV6),
        (a.label(), STAT_HIT_NS),
        (a.label(), STAT_HIT_SRC_MAC),
        (a.label(), STAT_HIT_ALL_UNICAST),
    ];
    let [hit_mac, hit_ipv4, hit_arp, hit_ipv6, hit_ns, hit_src, hit_allu] = hits.map(|h| h.0);
    let (data, data_end) = match flavor {
        Flavor::Xdp => (XDP_DATA, XDP_DATA_END),
        Flavor::TcIngress => (SKB_DATA, SKB_DATA_END),
    };

    a.mov_reg(R6, R1)
        .ldx(Size::W, R7, R6, data)
        .ldx(Size::W, R8, R6, data_end);
    need(&mut a, R7, 14, pass);
    a.mov_reg(R9, R7)
        .alu_imm(Alu::Add, R9, 14)
        .ldx(Size::H, R4, R7, 12)
        .be(R4, 16)
        .mov_imm(R5, 0);
    if flavor == Flavor::TcIngress {
        // The outer tag is normally in skb metadata by the time tc runs.
        a.ldx(Size::W, R3, R6, SKB_VLAN_PRESENT)
            .jmp_imm(Jmp::Eq, R3, 0, parse_tag)
            .ldx(Size::W, R5, R6, SKB_VLAN_TCI)
            .alu_imm(Alu::And, R5, 0x0fff)
            .ja(have_vid);
    }
    a.bind(parse_tag).jmp_imm(Jmp::Ne, R4, 0x8100, have_vid);
    need(&mut a, R7, 18, pass);
    a.ldx(Size::H, R5, R7, 14)
        .be(R5, 16)
        .alu_imm(Alu::And, R5, 0x0fff)
        .ldx(Size::H, R4, R7, 16)
        .be(R4, 16)
        .alu_imm(Alu::Add, R9, 4);

    a.bind(have_vid)
        .stx(Size::H, R10, K_MAC, R5)
        .stx(Size::H, R10, K_IP4, R5)
        .st_imm(Size::H, R10, K_IP4 + 2, 0)
        .stx(Size::H, R10, K_IP6, R5)
        .st_imm(Size::H, R10, K_IP6 + 2, 0)
        .stx(Size::H, R10, K_SRC, R5)
        .stx(Size::H, R10, K_ALLU, R5)
        .st_imm(Size::H, R10, K_ALLU + 2, 0)
        .stx(Size::W, R10, S_ETYPE, R4)
        .ldx(Size::B, R3, R7, 0)
        .jmp_imm(Jmp::Set, R3, 1, multicast);

    // Unicast destination: MAC first, then by ethertype.
    a.ldx(Size::H, R2, R7, 0)
        .stx(Size::H, R10, K_MAC + 2, R2)
        .ldx(Size::W, R2, R7, 2)
        .stx(Size::W, R10, K_MAC + 4, R2);
    lookup(&mut a, maps.mac.as_fd(), K_MAC);
    a.jmp_imm(Jmp::Ne, R0, 0, hit_mac);
    // The whole VLAN's unicast (passthru), then the source MAC (source mode). The source MAC
    // is copied in 2-byte pieces so every packet and stack access stays naturally aligned.
    lookup(&mut a, maps.allu.as_fd(), K_ALLU);
    a.jmp_imm(Jmp::Ne, R0, 0, hit_allu);
    for off in [6i16, 8, 10] {
        a.ldx(Size::H, R2, R7, off)
            .stx(Size::H, R10, K_SRC + 2 + (off - 6), R2);
    }
    lookup(&mut a, maps.src.as_fd(), K_SRC);
    a.jmp_imm(Jmp::Ne, R0, 0, hit_src)
        .ldx(Size::W, R4, R10, S_ETYPE)
        .jmp_imm(Jmp::Eq, R4, 0x0800, l_ipv4)
        .jmp_imm(Jmp::Eq, R4, 0x0806, l_arp)
        .jmp_imm(Jmp::Eq, R4, 0x86dd, l_ipv6)
        .ja(pass);

    // Group destination: only ARP target and NS target can name an endpoint.
    a.bind(multicast)
        .jmp_imm(Jmp::Eq, R4, 0x0806, l_arp)
        .jmp_imm(Jmp::Eq, R4, 0x86dd, l_ns)
        .ja(pass);

    // IPv4 destination.
    a.bind(l_ipv4);
    need(&mut a, R9, 20, pass);
    a.ldx(Size::W, R2, R9, 16).stx(Size::W, R10, K_IP4 + 4, R2);
    lookup(&mut a, maps.ip4.as_fd(), K_IP4);
    a.jmp_imm(Jmp::Ne, R0, 0, hit_ipv4).ja(pass);

    // ARP target (Ethernet/IPv4 only).
    a.bind(l_arp);
    need(&mut a, R9, 28, pass);
    a.ldx(Size::W, R2, R9, 2)
        .be(R2, 32)
        .jmp_imm(Jmp::Ne, R2, 0x0800_0604, pass)
        .ldx(Size::W, R2, R9, 24)
        .stx(Size::W, R10, K_IP4 + 4, R2);
    lookup(&mut a, maps.ip4.as_fd(), K_IP4);
    a.jmp_imm(Jmp::Ne, R0, 0, hit_arp).ja(pass);

    // IPv6 destination, then NS target.
    a.bind(l_ipv6);
    need(&mut a, R9, 40, pass);
    copy16(&mut a, 24, K_IP6 + 4);
    lookup(&mut a, maps.ip6.as_fd(), K_IP6);
    a.jmp_imm(Jmp::Ne, R0, 0, hit_ipv6);
    a.bind(l_ns);
    need(&mut a, R9, 64, pass);
    a.ldx(Size::B, R2, R9, 6)
        .jmp_imm(Jmp::Ne, R2, 58, pass)
        .ldx(Size::B, R2, R9, 40)
        .jmp_imm(Jmp::Ne, R2, 135, pass);
    copy16(&mut a, 48, K_IP6 + 4);
    lookup(&mut a, maps.ip6.as_fd(), K_IP6);
    a.jmp_imm(Jmp::Ne, R0, 0, hit_ns).ja(pass);

    // Each hit records which key matched, then shares one counting block.
    let count_hit = a.label();
    for (label, idx) in hits {
        a.bind(label)
            .st_imm(Size::W, R10, S_STAT, idx as i32)
            .ja(count_hit);
    }
    a.bind(count_hit);
    count_stored(&mut a, stats);

    a.bind(matched);
    match (flavor, xsks) {
        (Flavor::Xdp, Some(xsks)) => {
            let no_socket = a.label();
            a.ldx(Size::W, R2, R6, XDP_RX_QUEUE)
                .ld_map_fd(R1, xsks)
                .mov_imm(R3, XDP_PASS)
                .call(helper::REDIRECT_MAP)
                .mov_reg(R7, R0)
                .jmp_imm(Jmp::Ne, R0, XDP_REDIRECT, no_socket);
            count(&mut a, stats, STAT_REDIRECTED);
            a.mov_reg(R0, R7).exit().bind(no_socket);
            count(&mut a, stats, STAT_NO_SOCKET);
            a.mov_reg(R0, R7).exit();
        }
        _ => {
            count(&mut a, stats, STAT_REDIRECTED);
            a.mov_imm(R0, TC_ACT_SHOT).exit();
        }
    }

    a.bind(pass);
    count(&mut a, stats, STAT_PASSED);
    a.mov_imm(
        R0,
        match flavor {
            Flavor::Xdp => XDP_PASS,
            Flavor::TcIngress => TCX_NEXT,
        },
    )
    .exit();
    Ok(a.finish().map_err(BpfError::from)?)
}

#[cfg(test)]
mod tests {
    //! `BPF_PROG_TEST_RUN` over hand-made frames (root, no interfaces).
    use super::*;

    const EP_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
    const PEER_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0b];
    const BCAST: [u8; 6] = [0xff; 6];
    const EP4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
    const HOST4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 3);
    const OTHER4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 99);
    const PEER4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);
    const EP6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);
    const OTHER6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x99);
    const PEER6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2);

    fn eth(dst: [u8; 6], vid: Option<u16>, ethertype: u16, payload: &[u8]) -> Vec<u8> {
        let mut f = Vec::new();
        f.extend_from_slice(&dst);
        f.extend_from_slice(&PEER_MAC);
        if let Some(v) = vid {
            f.extend_from_slice(&0x8100u16.to_be_bytes());
            f.extend_from_slice(&v.to_be_bytes());
        }
        f.extend_from_slice(&ethertype.to_be_bytes());
        f.extend_from_slice(payload);
        f
    }

    fn ipv4(dst: Ipv4Addr) -> Vec<u8> {
        let mut p = vec![0x45, 0, 0, 28, 0, 0, 0x40, 0, 64, 17, 0, 0];
        p.extend_from_slice(&PEER4.octets());
        p.extend_from_slice(&dst.octets());
        p.extend_from_slice(&[0x30, 0x39, 0x30, 0x39, 0, 8, 0, 0]);
        p
    }

    fn arp_request(tpa: Ipv4Addr) -> Vec<u8> {
        let mut p = vec![0, 1, 8, 0, 6, 4, 0, 1];
        p.extend_from_slice(&PEER_MAC);
        p.extend_from_slice(&PEER4.octets());
        p.extend_from_slice(&[0; 6]);
        p.extend_from_slice(&tpa.octets());
        p
    }

    fn ipv6(dst: Ipv6Addr, next: u8, l4: &[u8]) -> Vec<u8> {
        let mut p = vec![0x60, 0, 0, 0];
        p.extend_from_slice(&(l4.len() as u16).to_be_bytes());
        p.push(next);
        p.push(255);
        p.extend_from_slice(&PEER6.octets());
        p.extend_from_slice(&dst.octets());
        p.extend_from_slice(l4);
        p
    }

    fn ns(target: Ipv6Addr) -> Vec<u8> {
        let o = target.octets();
        let snm = Ipv6Addr::new(
            0xff02,
            0,
            0,
            0,
            0,
            1,
            0xff00 | o[13] as u16,
            u16::from_be_bytes([o[14], o[15]]),
        );
        let mut l4 = vec![135, 0, 0, 0, 0, 0, 0, 0];
        l4.extend_from_slice(&o);
        l4.extend_from_slice(&[1, 1]);
        l4.extend_from_slice(&PEER_MAC);
        ipv6(snm, 58, &l4)
    }

    fn snm_mac(target: Ipv6Addr) -> [u8; 6] {
        let o = target.octets();
        [0x33, 0x33, 0xff, o[13], o[14], o[15]]
    }

    struct Rig {
        xdp: Filter,
        tc: Filter,
    }

    impl Rig {
        fn new() -> Rig {
            let maps = FilterMaps::create(64).unwrap();
            let tc_maps = maps.try_clone().unwrap();
            Rig {
                xdp: Filter::load_xdp(maps, 4).unwrap(),
                tc: Filter::load_tc(tc_maps).unwrap(),
            }
        }
        fn maps(&self) -> &FilterMaps {
            self.xdp.maps()
        }
        /// Run the XDP flavour; return (retval, stats delta).
        fn run(&self, frame: &[u8]) -> (u32, FilterStats) {
            let before = self.maps().stats().unwrap();
            let r = self.xdp.prog().test_run(frame, 1).unwrap();
            (r.retval, delta(before, self.maps().stats().unwrap()))
        }
        fn run_tc(&self, frame: &[u8]) -> (i32, FilterStats) {
            let before = self.maps().stats().unwrap();
            let r = self.tc.prog().test_run(frame, 1).unwrap();
            (r.retval as i32, delta(before, self.maps().stats().unwrap()))
        }
        /// Assert that the XDP flavour steers `frame` (branch `hit`) and the tc flavour drops it.
        fn keyed(&self, frame: &[u8], hit: fn(&FilterStats) -> u64) {
            let (ret, d) = self.run(frame);
            assert_eq!(ret, XDP_PASS as u32, "empty XSKMAP falls back to XDP_PASS");
            assert_eq!((d.no_socket, d.passed, hit(&d)), (1, 0, 1), "{d:?}");
            let (ret, d) = self.run_tc(frame);
            assert_eq!(ret, TC_ACT_SHOT);
            assert_eq!((d.redirected, d.passed, hit(&d)), (1, 0, 1), "{d:?}");
        }
        fn passed(&self, frame: &[u8]) {
            self.passed_xdp(frame);
            let (ret, d) = self.run_tc(frame);
            assert_eq!(ret, TCX_NEXT);
            assert_eq!(
                d,
                FilterStats {
                    passed: 1,
                    ..Default::default()
                }
            );
        }
    }

    impl Rig {
        fn passed_xdp(&self, frame: &[u8]) {
            let (ret, d) = self.run(frame);
            assert_eq!(ret, XDP_PASS as u32);
            assert_eq!(
                d,
                FilterStats {
                    passed: 1,
                    ..Default::default()
                }
            );
        }
        /// Truncated IP headers: the skb test runner itself refuses them (EINVAL) before the
        /// program runs; if a kernel accepts them, the tc flavour must pass them.
        fn passed_xdp_tc_refused(&self, frame: &[u8]) {
            self.passed_xdp(frame);
            match self.tc.prog().test_run(frame, 1) {
                Err(BpfError::Syscall { source, .. }) => {
                    assert_eq!(source.raw_os_error(), Some(libc::EINVAL))
                }
                Ok(r) => assert_eq!(r.retval as i32, TCX_NEXT),
                Err(e) => panic!("{e}"),
            }
        }
    }

    fn delta(a: FilterStats, b: FilterStats) -> FilterStats {
        FilterStats {
            redirected: b.redirected - a.redirected,
            passed: b.passed - a.passed,
            no_socket: b.no_socket - a.no_socket,
            hit_mac: b.hit_mac - a.hit_mac,
            hit_ipv4: b.hit_ipv4 - a.hit_ipv4,
            hit_arp: b.hit_arp - a.hit_arp,
            hit_ipv6: b.hit_ipv6 - a.hit_ipv6,
            hit_ns: b.hit_ns - a.hit_ns,
            hit_src_mac: b.hit_src_mac - a.hit_src_mac,
            hit_all_unicast: b.hit_all_unicast - a.hit_all_unicast,
        }
    }

    fn host_mac() -> [u8; 6] {
        [0x02, 0, 0, 0, 0, 0x0a]
    }

    #[test]
    fn program_is_small_and_loads() {
        let maps = FilterMaps::create(8).unwrap();
        let xsks = Map::create(MapType::XskMap, 4, 4, 1, "uvt_x").unwrap();
        let n = assemble(Flavor::Xdp, &maps, Some(xsks.as_fd()))
            .unwrap()
            .len();
        assert!(n > 50 && n < 300, "{n} insns");
        let t = assemble(Flavor::TcIngress, &maps, None).unwrap().len();
        assert!(t > 50 && t < 300, "{t} insns");
        eprintln!("filter program: XDP {n} insns, tc {t} insns");
        assert!(matches!(
            assemble(Flavor::Xdp, &maps, None),
            Err(FilterError::NoXskMap)
        ));
        let _ = Rig::new();
    }

    #[test]
    fn arp_requests_for_endpoints_are_steered_even_when_broadcast() {
        let r = Rig::new();
        r.maps().add_ipv4(0, EP4).unwrap();
        r.keyed(&eth(BCAST, None, 0x0806, &arp_request(EP4)), |d| d.hit_arp);
        r.keyed(&eth(host_mac(), None, 0x0806, &arp_request(EP4)), |d| {
            d.hit_arp
        });
        r.passed(&eth(BCAST, None, 0x0806, &arp_request(OTHER4)));
        // Not Ethernet/IPv4 ARP (plen 16): passed.
        let mut odd = arp_request(EP4);
        odd[5] = 16;
        r.passed(&eth(BCAST, None, 0x0806, &odd));
    }

    #[test]
    fn ipv4_destination_is_steered_only_for_unicast_mac() {
        let r = Rig::new();
        r.maps().add_ipv4(0, EP4).unwrap();
        r.keyed(&eth(host_mac(), None, 0x0800, &ipv4(EP4)), |d| d.hit_ipv4);
        r.keyed(&eth([0x02, 9, 9, 9, 9, 9], None, 0x0800, &ipv4(EP4)), |d| {
            d.hit_ipv4
        });
        r.passed(&eth(host_mac(), None, 0x0800, &ipv4(HOST4)));
        r.passed(&eth(BCAST, None, 0x0800, &ipv4(EP4)));
        r.passed(&eth(
            BCAST,
            None,
            0x0800,
            &ipv4(Ipv4Addr::new(192, 0, 2, 255)),
        ));
        r.passed(&eth([0x01, 0, 0x5e, 0, 0, 1], None, 0x0800, &ipv4(EP4)));
    }

    #[test]
    fn ipv6_destination_and_ns_target() {
        let r = Rig::new();
        r.maps().add_ipv6(0, EP6).unwrap();
        r.keyed(
            &eth(host_mac(), None, 0x86dd, &ipv6(EP6, 17, &[0; 8])),
            |d| d.hit_ipv6,
        );
        r.keyed(&eth(snm_mac(EP6), None, 0x86dd, &ns(EP6)), |d| d.hit_ns);
        r.passed(&eth(snm_mac(OTHER6), None, 0x86dd, &ns(OTHER6)));
        // Multicast MAC + IPv6 to the endpoint address but not an NS: passed.
        r.passed(&eth(
            [0x33, 0x33, 0, 0, 0, 1],
            None,
            0x86dd,
            &ipv6(EP6, 17, &[0; 24]),
        ));
        r.passed(&eth(host_mac(), None, 0x86dd, &ipv6(OTHER6, 17, &[0; 8])));
    }

    #[test]
    fn destination_mac_is_steered_for_any_ethertype_but_never_broadcast() {
        let r = Rig::new();
        r.maps().add_mac(0, EP_MAC).unwrap();
        r.keyed(&eth(EP_MAC, None, 0x88b5, &[0xab; 46]), |d| d.hit_mac);
        r.keyed(&eth(EP_MAC, None, 0x0800, &ipv4(OTHER4)), |d| d.hit_mac);
        r.passed(&eth(BCAST, None, 0x88b5, &[0xab; 46]));
        r.passed(&eth(host_mac(), None, 0x88b5, &[0xab; 46]));
        // A broadcast MAC can never be keyed.
        r.maps().add_mac(0, BCAST).unwrap();
        r.passed(&eth(BCAST, None, 0x88b5, &[0xab; 46]));
    }

    #[test]
    fn keys_are_per_vlan() {
        let r = Rig::new();
        r.maps().add_ipv4(20, EP4).unwrap();
        r.maps().add_mac(20, EP_MAC).unwrap();
        r.maps().add_ipv6(20, EP6).unwrap();
        r.keyed(&eth(host_mac(), Some(20), 0x0800, &ipv4(EP4)), |d| {
            d.hit_ipv4
        });
        r.keyed(&eth(BCAST, Some(20), 0x0806, &arp_request(EP4)), |d| {
            d.hit_arp
        });
        r.keyed(&eth(EP_MAC, Some(20), 0x88b5, &[1; 46]), |d| d.hit_mac);
        r.keyed(&eth(snm_mac(EP6), Some(20), 0x86dd, &ns(EP6)), |d| d.hit_ns);
        // The PCP and DEI bits are not part of the VLAN id.
        r.keyed(
            &eth(host_mac(), Some(0xe000 | 20), 0x0800, &ipv4(EP4)),
            |d| d.hit_ipv4,
        );
        r.passed(&eth(host_mac(), Some(30), 0x0800, &ipv4(EP4)));
        r.passed(&eth(host_mac(), None, 0x0800, &ipv4(EP4)));
        r.passed(&eth(BCAST, Some(30), 0x0806, &arp_request(EP4)));
        r.passed(&eth(EP_MAC, None, 0x88b5, &[1; 46]));
        r.passed(&eth(EP_MAC, Some(30), 0x88b5, &[1; 46]));
        // Untagged keys do not match tagged frames.
        r.maps().add_ipv4(0, HOST4).unwrap();
        r.passed(&eth(host_mac(), Some(20), 0x0800, &ipv4(HOST4)));
        r.keyed(&eth(host_mac(), None, 0x0800, &ipv4(HOST4)), |d| d.hit_ipv4);
    }

    #[test]
    fn removing_keys_stops_steering() {
        let r = Rig::new();
        let m = r.maps();
        m.add_ipv4(0, EP4).unwrap();
        m.add_ipv6(7, EP6).unwrap();
        m.add_mac(0, EP_MAC).unwrap();
        assert!(m.has_ipv4(0, EP4).unwrap() && m.has_ipv6(7, EP6).unwrap());
        assert!(m.has_mac(0, EP_MAC).unwrap());
        assert!(m.remove_ipv4(0, EP4).unwrap());
        assert!(!m.remove_ipv4(0, EP4).unwrap());
        assert!(m.remove_ipv6(7, EP6).unwrap());
        assert!(m.remove_mac(0, EP_MAC).unwrap());
        assert!(!m.has_ipv4(0, EP4).unwrap());
        r.passed(&eth(host_mac(), None, 0x0800, &ipv4(EP4)));
        r.passed(&eth(snm_mac(EP6), Some(7), 0x86dd, &ns(EP6)));
        r.passed(&eth(EP_MAC, None, 0x88b5, &[0; 46]));
    }

    /// A frame from `src` (instead of the usual peer MAC).
    fn from(src: [u8; 6], mut f: Vec<u8>) -> Vec<u8> {
        f[6..12].copy_from_slice(&src);
        f
    }

    #[test]
    fn source_mac_steers_unicast_only_per_vlan() {
        let r = Rig::new();
        let client = [0x02, 0x11, 0x22, 0x33, 0x44, 0x55];
        r.maps().add_src_mac(0, client).unwrap();
        r.maps().add_src_mac(20, client).unwrap();
        assert!(r.maps().has_src_mac(0, client).unwrap());
        // Any ethertype, any unicast destination (even the host's MAC).
        r.keyed(
            &from(client, eth(host_mac(), None, 0x0800, &ipv4(HOST4))),
            |d| d.hit_src_mac,
        );
        r.keyed(&from(client, eth(PEER_MAC, None, 0x88b5, &[7; 46])), |d| {
            d.hit_src_mac
        });
        r.keyed(
            &from(client, eth(host_mac(), Some(20), 0x88b5, &[7; 46])),
            |d| d.hit_src_mac,
        );
        // Not on VLAN 30, not from another sender, never for group destinations.
        r.passed(&from(client, eth(host_mac(), Some(30), 0x88b5, &[7; 46])));
        r.passed(&eth(host_mac(), None, 0x88b5, &[7; 46]));
        r.passed(&from(client, eth(BCAST, None, 0x88b5, &[7; 46])));
        r.passed(&from(
            client,
            eth([0x01, 0, 0x5e, 0, 0, 1], None, 0x0800, &ipv4(HOST4)),
        ));
        // Only the last byte differs: the whole MAC is compared.
        let mut near = client;
        near[5] ^= 1;
        r.passed(&from(near, eth(host_mac(), None, 0x88b5, &[7; 46])));
        near = client;
        near[0] ^= 2;
        r.passed(&from(near, eth(host_mac(), None, 0x88b5, &[7; 46])));
        assert!(r.maps().remove_src_mac(0, client).unwrap());
        assert!(!r.maps().remove_src_mac(0, client).unwrap());
        r.passed(&from(client, eth(host_mac(), None, 0x88b5, &[7; 46])));
    }

    #[test]
    fn all_unicast_flag_takes_a_whole_vlan_but_no_group_frames() {
        let r = Rig::new();
        assert!(!r.maps().set_all_unicast(20, true).unwrap());
        assert!(r.maps().set_all_unicast(20, true).unwrap());
        assert!(r.maps().has_all_unicast(20).unwrap());
        assert!(!r.maps().has_all_unicast(0).unwrap());
        r.keyed(&eth(host_mac(), Some(20), 0x0800, &ipv4(HOST4)), |d| {
            d.hit_all_unicast
        });
        r.keyed(&eth(PEER_MAC, Some(20), 0x88b5, &[3; 46]), |d| {
            d.hit_all_unicast
        });
        r.passed(&eth(host_mac(), None, 0x0800, &ipv4(HOST4)));
        r.passed(&eth(host_mac(), Some(21), 0x0800, &ipv4(HOST4)));
        r.passed(&eth(BCAST, Some(20), 0x0806, &arp_request(OTHER4)));
        r.passed(&eth(
            [0x33, 0x33, 0, 0, 0, 1],
            Some(20),
            0x86dd,
            &ipv6(OTHER6, 17, &[0; 8]),
        ));
        assert!(r.maps().set_all_unicast(20, false).unwrap());
        r.passed(&eth(host_mac(), Some(20), 0x0800, &ipv4(HOST4)));
        assert!(matches!(
            r.maps().set_all_unicast(4095, true),
            Err(FilterError::BadVid(4095))
        ));
    }

    #[test]
    fn bad_vlan_ids_are_refused() {
        let m = FilterMaps::create(4).unwrap();
        assert!(matches!(
            m.add_ipv4(4095, EP4),
            Err(FilterError::BadVid(4095))
        ));
        assert!(matches!(
            m.add_mac(5000, EP_MAC),
            Err(FilterError::BadVid(5000))
        ));
        m.add_ipv6(4094, EP6).unwrap();
    }

    #[test]
    fn runts_and_truncated_headers_are_passed() {
        let r = Rig::new();
        r.maps().add_ipv4(0, EP4).unwrap();
        r.maps().add_ipv4(20, EP4).unwrap();
        r.maps().add_ipv6(0, EP6).unwrap();
        // Exactly an Ethernet header with a VLAN TPID but no tag.
        r.passed(&eth(host_mac(), None, 0x8100, &[]));
        // Tag present, IPv4 header cut short.
        r.passed(&eth(host_mac(), Some(20), 0x0800, &ipv4(EP4)[..19]));
        r.passed_xdp_tc_refused(&eth(host_mac(), None, 0x0800, &ipv4(EP4)[..19]));
        r.passed(&eth(BCAST, None, 0x0806, &arp_request(EP4)[..27]));
        r.passed_xdp_tc_refused(&eth(host_mac(), None, 0x86dd, &ipv6(EP6, 17, &[])[..39]));
        r.passed(&eth(snm_mac(EP6), None, 0x86dd, &ns(EP6)[..63]));
        // Frames shorter than an Ethernet header are refused by PROG_TEST_RUN itself.
        let e = r.xdp.prog().test_run(&[0u8; 10], 1).unwrap_err();
        assert!(matches!(e, BpfError::Syscall { .. }), "{e}");
    }

    #[test]
    fn classification_takes_well_under_a_microsecond() {
        let r = Rig::new();
        r.maps().add_ipv4(0, EP4).unwrap();
        let run = r
            .xdp
            .prog()
            .test_run(&eth(host_mac(), None, 0x0800, &ipv4(EP4)), 1000)
            .unwrap();
        assert_eq!(run.retval, XDP_PASS as u32);
        assert!(run.duration_ns < 5_000, "{} ns per run", run.duration_ns);
        eprintln!("keyed IPv4 frame: {} ns per run", run.duration_ns);
    }
}
