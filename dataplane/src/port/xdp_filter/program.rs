//! The classifier program, assembled instruction by instruction for either flavour.

use std::os::fd::{AsFd, BorrowedFd};

use super::{FilterError, FilterMaps, Flavor};
use super::{
    STAT_HIT_ALL_UNICAST, STAT_HIT_ARP, STAT_HIT_IPV4, STAT_HIT_IPV6, STAT_HIT_MAC, STAT_HIT_NS,
    STAT_HIT_SRC_MAC, STAT_NO_SOCKET, STAT_PASSED, STAT_REDIRECTED,
};
use crate::port::bpf::{helper, Alu, Asm, BpfError, Insn, Jmp, Reg, Size};

// Context offsets.
const XDP_DATA: i16 = 0;
const XDP_DATA_END: i16 = 4;
const XDP_RX_QUEUE: i16 = 16;
const SKB_VLAN_PRESENT: i16 = 20;
const SKB_VLAN_TCI: i16 = 24;
const SKB_DATA: i16 = 76;
const SKB_DATA_END: i16 = 80;

pub(super) const XDP_PASS: i32 = 2;
pub(super) const XDP_REDIRECT: i32 = 4;
pub(super) const TC_ACT_SHOT: i32 = 2;
pub(super) const TCX_NEXT: i32 = -1;

// Stack layout (offsets from r10).
const K_MAC: i16 = -8; // vid:2 mac:6
const K_IP4: i16 = -16; // vid:2 pad:2 addr:4
const K_IP6: i16 = -40; // vid:2 pad:2 addr:16
const S_ETYPE: i16 = -44;
const S_STAT: i16 = -48;
const K_SRC: i16 = -56; // vid:2 mac:6
const K_ALLU: i16 = -60; // vid:2 pad:2

fn count(a: &mut Asm, stats: BorrowedFd<'_>, idx: u32) {
    a.st_imm(Size::W, Reg::R10, S_STAT, idx as i32)
        .count_percpu(stats, S_STAT);
}

/// Fail to `pass` unless `base + need <= data_end (r8)`.
fn need(a: &mut Asm, base: Reg, need: i32, pass: crate::port::bpf::Label) {
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

/// Assemble the classifier. `xsks` is required for [`Flavor::Xdp`]; with `wire_cache`
/// each frame is first offered to the fast path's wire → endpoint entries
/// (`port::fast_path`): the XDP flavour's prologue passes a hit to the parent's tcx
/// program, the tc flavour's redirects a frame the wire socket's filter marked as a hit.
///
/// Registers: r6 = ctx, r7 = packet start, r8 = packet end, r9 = L3 header.
pub fn assemble(
    flavor: Flavor,
    maps: &FilterMaps,
    xsks: Option<BorrowedFd<'_>>,
    wire_cache: Option<BorrowedFd<'_>>,
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

    if let Some(cache) = wire_cache {
        let classify = a.label();
        match flavor {
            Flavor::Xdp => crate::port::fast_path::xdp_prologue(&mut a, cache, classify),
            Flavor::TcIngress => crate::port::fast_path::tc_prologue(&mut a, cache, classify),
        }
        a.bind(classify).mov_reg(R1, R6);
    }
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
    a.map_lookup(maps.mac.as_fd(), K_MAC);
    a.jmp_imm(Jmp::Ne, R0, 0, hit_mac);
    // The whole VLAN's unicast (passthru), then the source MAC (source mode). The source MAC
    // is copied in 2-byte pieces so every packet and stack access stays naturally aligned.
    a.map_lookup(maps.allu.as_fd(), K_ALLU);
    a.jmp_imm(Jmp::Ne, R0, 0, hit_allu);
    for off in [6i16, 8, 10] {
        a.ldx(Size::H, R2, R7, off)
            .stx(Size::H, R10, K_SRC + 2 + (off - 6), R2);
    }
    a.map_lookup(maps.src.as_fd(), K_SRC);
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
    a.map_lookup(maps.ip4.as_fd(), K_IP4);
    a.jmp_imm(Jmp::Ne, R0, 0, hit_ipv4).ja(pass);

    // ARP target (Ethernet/IPv4 only).
    a.bind(l_arp);
    need(&mut a, R9, 28, pass);
    a.ldx(Size::W, R2, R9, 2)
        .be(R2, 32)
        .jmp_imm(Jmp::Ne, R2, 0x0800_0604, pass)
        .ldx(Size::W, R2, R9, 24)
        .stx(Size::W, R10, K_IP4 + 4, R2);
    a.map_lookup(maps.ip4.as_fd(), K_IP4);
    a.jmp_imm(Jmp::Ne, R0, 0, hit_arp).ja(pass);

    // IPv6 destination, then NS target.
    a.bind(l_ipv6);
    need(&mut a, R9, 40, pass);
    copy16(&mut a, 24, K_IP6 + 4);
    a.map_lookup(maps.ip6.as_fd(), K_IP6);
    a.jmp_imm(Jmp::Ne, R0, 0, hit_ipv6);
    a.bind(l_ns);
    need(&mut a, R9, 64, pass);
    a.ldx(Size::B, R2, R9, 6)
        .jmp_imm(Jmp::Ne, R2, 58, pass)
        .ldx(Size::B, R2, R9, 40)
        .jmp_imm(Jmp::Ne, R2, 135, pass);
    copy16(&mut a, 48, K_IP6 + 4);
    a.map_lookup(maps.ip6.as_fd(), K_IP6);
    a.jmp_imm(Jmp::Ne, R0, 0, hit_ns).ja(pass);

    // Each hit records which key matched, then shares one counting block.
    let count_hit = a.label();
    for (label, idx) in hits {
        a.bind(label)
            .st_imm(Size::W, R10, S_STAT, idx as i32)
            .ja(count_hit);
    }
    a.bind(count_hit);
    a.count_percpu(stats, S_STAT);

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
