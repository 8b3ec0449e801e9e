//! The two fast-path programs, assembled instruction by instruction (see the module docs of
//! `port::fast_path` for what they do and why).

use std::os::fd::{AsFd, BorrowedFd};

use super::{FLAG_EGRESS, META_MAGIC, STAT_HIT, STAT_MISS, STAT_NO_LINK, STAT_SLOW_OUT};
use crate::port::bpf::{helper, Alu, Asm, BpfError, Insn, Jmp, Label, Map, Reg, Size};

// `__sk_buff` offsets.
const SKB_LEN: i16 = 0;
const SKB_MARK: i16 = 8;
const SKB_VLAN_PRESENT: i16 = 20;
const SKB_IFINDEX: i16 = 40;
const SKB_CB0: i16 = 48;
const SKB_CB1: i16 = 52;
const SKB_DATA: i16 = 76;
const SKB_DATA_END: i16 = 80;
const SKB_DATA_META: i16 = 140;
// `xdp_md` offsets.
const XDP_DATA: i16 = 0;
const XDP_DATA_END: i16 = 4;
const XDP_DATA_META: i16 = 8;
const XDP_INGRESS_IFINDEX: i16 = 12;

const TC_ACT_SHOT: i32 = 2;
const TCX_NEXT: i32 = -1;
const XDP_PASS: i32 = 2;

// Stack layout (offsets from r10). The key is KEY_LEN (36) bytes:
// ifindex:4 etype:2 pad:2 dst_mac:6 src_mac:6 addr:16.
const K: i16 = -40;
const S_IDX: i16 = -44;
const S_STAT: i16 = -48;
/// The socket filter's copy of the frame's first [`SOCK_COPY`] bytes (it has no direct
/// packet access): `r10 - 106 .. r10 - 52`, so the copy sits 2 bytes past an 8-byte
/// boundary as a received packet does (`NET_IP_ALIGN`) and the key's loads are aligned (the
/// verifier checks stack alignment). `r10 - 112 .. r10 - 48` is zeroed first.
const S_BUF: i16 = -106;
const S_BUF_ZERO: i16 = -112;
const SOCK_COPY: i32 = 54;

fn count(a: &mut Asm, stats: &Map, idx: u32) {
    a.st_imm(Size::W, Reg::R10, S_STAT, idx as i32)
        .count_percpu(stats.as_fd(), S_STAT);
}

/// Go to `fail` unless `r7 + n <= data_end (r8)`.
fn need(a: &mut Asm, n: i32, fail: Label) {
    a.mov_reg(Reg::R2, Reg::R7)
        .alu_imm(Alu::Add, Reg::R2, n)
        .jmp_reg(Jmp::Gt, Reg::R2, Reg::R8, fail);
}

/// Go to `fail` when the frame at r7 (14 bytes present) has a group destination or an
/// 802.1Q/802.1ad tag in its data: such frames are never cached. Clobbers r3, r4.
fn untagged_unicast(a: &mut Asm, fail: Label) {
    use Reg::*;
    a.ldx(Size::B, R3, R7, 0)
        .jmp_imm(Jmp::Set, R3, 1, fail)
        .ldx(Size::H, R4, R7, 12)
        .be(R4, 16)
        .jmp_imm(Jmp::Eq, R4, 0x8100, fail)
        .jmp_imm(Jmp::Eq, R4, 0x88a8, fail);
}

/// Go to `fail` unless the frame has `n` bytes: against `data_end` where the program reads
/// the packet directly, against `skb->len` where it reads its copy on the stack.
fn need_in(a: &mut Asm, ctx: KeyCtx, n: i32, fail: Label) {
    match ctx {
        KeyCtx::Skb | KeyCtx::Xdp => need(a, n, fail),
        KeyCtx::Sock => {
            a.ldx(Size::W, Reg::R2, Reg::R6, SKB_LEN)
                .jmp_imm(Jmp::Lt, Reg::R2, n, fail);
        }
    }
}

/// Hand the frame to the partner interface of the one it arrived on (`links` map):
/// `bpf_redirect(partner, 0)`, counted in `stat`; no partner: dropped, counted in
/// `no_link`. Expects r6 = ctx.
fn to_partner(a: &mut Asm, links: &Map, stats: &Map, stat: u32) {
    let no_link = a.label();
    a.ldx(Size::W, Reg::R2, Reg::R6, SKB_IFINDEX)
        .stx(Size::W, Reg::R10, S_IDX, Reg::R2);
    a.map_lookup(links.as_fd(), S_IDX);
    a.jmp_imm(Jmp::Eq, Reg::R0, 0, no_link)
        .ldx(Size::W, Reg::R9, Reg::R0, 0);
    count(a, stats, stat);
    a.mov_reg(Reg::R1, Reg::R9)
        .mov_imm(Reg::R2, 0)
        .call(helper::REDIRECT)
        .exit()
        .bind(no_link);
    count(a, stats, STAT_NO_LINK);
    a.mov_imm(Reg::R0, TC_ACT_SHOT).exit();
}

/// The program on the dataplane's end of an endpoint veth (tcx ingress): a cache hit goes
/// to the target's peer with `bpf_redirect_peer`, everything else to the port's TAP.
///
/// Registers: r6 = ctx, r7 = packet start, r8 = packet end, r9 = the entry (on a hit).
pub fn assemble_veth(cache: &Map, links: &Map, stats: &Map) -> Result<Vec<Insn>, BpfError> {
    use Reg::*;
    let mut a = Asm::new();
    let miss = a.label();
    let hit = a.label();

    a.mov_reg(R6, R1)
        .ldx(Size::W, R7, R6, SKB_DATA)
        .ldx(Size::W, R8, R6, SKB_DATA_END);
    need(&mut a, 14, miss);
    // A tag in metadata: the engine would see a tagged frame; group destination: never cached.
    a.ldx(Size::W, R3, R6, SKB_VLAN_PRESENT)
        .jmp_imm(Jmp::Ne, R3, 0, miss)
        .ldx(Size::B, R3, R7, 0)
        .jmp_imm(Jmp::Set, R3, 1, miss);
    key_lookup(&mut a, cache.as_fd(), KeyCtx::Skb, hit, miss);

    // Hit: per-entry counters, then to the target's peer.
    a.bind(hit)
        .mov_reg(R9, R0)
        .mov_imm(R1, 1)
        .atomic_add(Size::DW, R9, 8, R1)
        .ldx(Size::W, R1, R6, SKB_LEN)
        .atomic_add(Size::DW, R9, 16, R1);
    count(&mut a, stats, STAT_HIT);
    // An entry learned from a decision for the wire sends the frame out of the parent
    // (`bpf_redirect` to its egress); one for a sibling into the sibling's `eth0`.
    let egress = a.label();
    a.ldx(Size::W, R1, R9, 0)
        .mov_imm(R2, 0)
        .ldx(Size::W, R3, R9, 4)
        .jmp_imm(Jmp::Set, R3, FLAG_EGRESS as i32, egress)
        .call(helper::REDIRECT_PEER)
        .exit()
        .bind(egress)
        .call(helper::REDIRECT)
        .exit();

    a.bind(miss);
    to_partner(&mut a, links, stats, STAT_MISS);
    Ok(a.finish()?)
}

/// Where the key's fields come from: an skb (tc), an `xdp_md` (XDP) or an skb seen by a
/// socket filter.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum KeyCtx {
    /// `__sk_buff`: ifindex and length from the context.
    Skb,
    /// `xdp_md`: the ingress ifindex from the context, the length is `data_end - data`.
    Xdp,
    /// `__sk_buff` in a socket filter: ifindex and length from the context, the frame's
    /// first bytes copied to the stack at r7 (zeros past its end).
    Sock,
}

/// Builds the cache key of the frame at r7 (..r8, or `skb->len` long for
/// [`KeyCtx::Sock`]) on the stack at `K` and looks it up in
/// `cache`: first the macvlan form (ifindex, 0, MACs, zero address), then, for IPv4 and
/// IPv6, the ipvlan form ([`super::cache_key`] is the same computation in Rust). Jumps to
/// `hit` with r0 = the entry, or to `miss`. Expects r6 = ctx, r7 = packet start, r8 =
/// packet end, 14 bytes present, the destination unicast and no tag; clobbers r0–r5.
fn key_lookup(a: &mut Asm, cache: BorrowedFd<'_>, ctx: KeyCtx, hit: Label, miss: Label) {
    use Reg::*;
    let v4 = a.label();
    let v6 = a.label();
    let ifindex = match ctx {
        KeyCtx::Skb | KeyCtx::Sock => SKB_IFINDEX,
        KeyCtx::Xdp => XDP_INGRESS_IFINDEX,
    };
    a.ldx(Size::W, R3, R6, ifindex)
        .stx(Size::W, R10, K, R3)
        .st_imm(Size::H, R10, K + 4, 0)
        .st_imm(Size::H, R10, K + 6, 0);
    for off in (0..12).step_by(2) {
        a.ldx(Size::H, R2, R7, off)
            .stx(Size::H, R10, K + 8 + off, R2);
    }
    for off in (20..36).step_by(4) {
        a.st_imm(Size::W, R10, K + off, 0);
    }
    a.map_lookup(cache, K);
    a.jmp_imm(Jmp::Ne, R0, 0, hit)
        .ldx(Size::H, R4, R7, 12)
        .be(R4, 16)
        .jmp_imm(Jmp::Eq, R4, 0x0800, v4)
        .jmp_imm(Jmp::Eq, R4, 0x86dd, v6)
        .ja(miss);

    // IPv4: the checks of ipvlan_get_L3_hdr, then the destination address.
    a.bind(v4);
    need_in(a, ctx, 34, miss);
    a.ldx(Size::B, R2, R7, 14)
        .mov_reg(R3, R2)
        .alu_imm(Alu::Rsh, R3, 4)
        .jmp_imm(Jmp::Ne, R3, 4, miss)
        .alu_imm(Alu::And, R2, 0xf)
        .jmp_imm(Jmp::Lt, R2, 5, miss)
        .alu_imm(Alu::Lsh, R2, 2)
        .ldx(Size::H, R3, R7, 16)
        .be(R3, 16)
        .jmp_reg(Jmp::Lt, R3, R2, miss);
    match ctx {
        KeyCtx::Skb | KeyCtx::Sock => a.ldx(Size::W, R5, R6, SKB_LEN),
        KeyCtx::Xdp => a.mov_reg(R5, R8).alu_reg(Alu::Sub, R5, R7),
    };
    a.alu_imm(Alu::Sub, R5, 14)
        .jmp_reg(Jmp::Gt, R3, R5, miss)
        .st_imm(Size::H, R10, K + 4, 0x0800)
        .ldx(Size::W, R2, R7, 30)
        .stx(Size::W, R10, K + 20, R2);
    a.map_lookup(cache, K);
    a.jmp_imm(Jmp::Ne, R0, 0, hit).ja(miss);

    // IPv6: version 6, a source other than `::` (from `::` ipvlan keys an NS by its
    // target, not its destination: the slow path decides), then the destination address.
    a.bind(v6);
    need_in(a, ctx, 54, miss);
    a.ldx(Size::B, R2, R7, 14)
        .alu_imm(Alu::Rsh, R2, 4)
        .jmp_imm(Jmp::Ne, R2, 6, miss)
        .ldx(Size::W, R2, R7, 22);
    for off in [26, 30, 34] {
        a.ldx(Size::W, R3, R7, off).alu_reg(Alu::Or, R2, R3);
    }
    a.jmp_imm(Jmp::Eq, R2, 0, miss)
        .st_imm(Size::H, R10, K + 4, 0x86dd);
    for i in 0..4 {
        a.ldx(Size::W, R2, R7, 38 + 4 * i)
            .stx(Size::W, R10, K + 20 + 4 * i, R2);
    }
    a.map_lookup(cache, K);
    a.jmp_imm(Jmp::Ne, R0, 0, hit).ja(miss);
}

/// The fast-path block the parent's XDP filter program starts with (see
/// `port::xdp_filter`): an untagged unicast frame whose key is in `wire_cache` (the
/// entries learned from the engine's wire → endpoint decisions) is counted in its entry,
/// gets 8 bytes of XDP metadata ([`META_MAGIC`], the target veth's ifindex) and is passed
/// (`XDP_PASS`) to the parent's tcx-ingress program ([`assemble_wire`]), which redirects
/// it into the endpoint. Everything else, and a frame whose metadata cannot be added,
/// continues at `next` with r6 = ctx and nothing else assumed.
///
/// The key uses the stack at `r10 - 40 .. r10 - 4`; the caller writes its own stack slots
/// after `next` before it reads them.
pub(crate) fn xdp_prologue(a: &mut Asm, wire_cache: BorrowedFd<'_>, next: Label) {
    use Reg::*;
    let hit = a.label();
    a.mov_reg(R6, R1)
        .ldx(Size::W, R7, R6, XDP_DATA)
        .ldx(Size::W, R8, R6, XDP_DATA_END);
    need(a, 14, next);
    // Tags in the data: generic XDP runs before the tag is moved to metadata.
    untagged_unicast(a, next);
    key_lookup(a, wire_cache, KeyCtx::Xdp, hit, next);

    a.bind(hit)
        .mov_reg(R9, R0)
        .mov_imm(R1, 1)
        .atomic_add(Size::DW, R9, 8, R1)
        .mov_reg(R1, R8)
        .alu_reg(Alu::Sub, R1, R7)
        .atomic_add(Size::DW, R9, 16, R1)
        .ldx(Size::W, R9, R9, 0)
        .mov_reg(R1, R6)
        .mov_imm(R2, -8)
        .call(helper::XDP_ADJUST_META)
        .jmp_imm(Jmp::Ne, R0, 0, next)
        .ldx(Size::W, R2, R6, XDP_DATA_META)
        .ldx(Size::W, R3, R6, XDP_DATA)
        .mov_reg(R4, R2)
        .alu_imm(Alu::Add, R4, 8)
        .jmp_reg(Jmp::Gt, R4, R3, next)
        .st_imm(Size::W, R2, 0, META_MAGIC as i32)
        .stx(Size::W, R2, 4, R9)
        .mov_imm(R0, XDP_PASS)
        .exit();
}

/// The program on the parent (tcx ingress) that finishes what `xdp_prologue` decided: a
/// frame carrying the fast path's metadata goes to the target veth's peer with
/// `bpf_redirect_peer`; any other frame continues (`TCX_NEXT`).
pub fn assemble_wire() -> Result<Vec<Insn>, BpfError> {
    use Reg::*;
    let mut a = Asm::new();
    let next = a.label();
    a.ldx(Size::W, R2, R1, SKB_DATA_META)
        .ldx(Size::W, R3, R1, SKB_DATA)
        .mov_reg(R4, R2)
        .alu_imm(Alu::Add, R4, 8)
        .jmp_reg(Jmp::Gt, R4, R3, next)
        .ldx(Size::W, R4, R2, 0)
        .jmp_imm(Jmp::Ne, R4, META_MAGIC as i32, next)
        .ldx(Size::W, R1, R2, 4)
        .mov_imm(R2, 0)
        .call(helper::REDIRECT_PEER)
        .exit()
        .bind(next)
        .mov_imm(R0, TCX_NEXT)
        .exit();
    Ok(a.finish()?)
}

/// The fast-path block the AF_PACKET parent's tcx filter program (`port::xdp_filter`,
/// tc flavour) starts with: a frame that carries the marker the wire socket filter
/// ([`assemble_wire_socket`]) left on a hit, whose own key lookup in `wire_cache` hits too
/// with the marker's target, is counted in the entry and goes to the target veth's peer
/// (`bpf_redirect_peer`); everything else continues at `next` with r6 = ctx and nothing
/// else assumed.
///
/// The key uses the stack at `r10 - 40 .. r10 - 4`; the caller writes its own stack slots
/// after `next` before it reads them.
pub(crate) fn tc_prologue(a: &mut Asm, wire_cache: BorrowedFd<'_>, next: Label) {
    use Reg::*;
    let hit = a.label();
    a.mov_reg(R6, R1)
        .ldx(Size::W, R2, R6, SKB_CB0)
        .jmp_imm(Jmp::Ne, R2, META_MAGIC as i32, next)
        .ldx(Size::W, R7, R6, SKB_DATA)
        .ldx(Size::W, R8, R6, SKB_DATA_END);
    need(a, 14, next);
    a.ldx(Size::W, R3, R6, SKB_VLAN_PRESENT)
        .jmp_imm(Jmp::Ne, R3, 0, next);
    untagged_unicast(a, next);
    key_lookup(a, wire_cache, KeyCtx::Skb, hit, next);
    a.bind(hit)
        .mov_reg(R9, R0)
        .ldx(Size::W, R2, R9, 0)
        .ldx(Size::W, R3, R6, SKB_CB1)
        .jmp_reg(Jmp::Ne, R2, R3, next)
        .mov_imm(R2, 0)
        .stx(Size::W, R6, SKB_CB0, R2)
        .mov_imm(R1, 1)
        .atomic_add(Size::DW, R9, 8, R1)
        .ldx(Size::W, R1, R6, SKB_LEN)
        .atomic_add(Size::DW, R9, 16, R1)
        .ldx(Size::W, R1, R9, 0)
        .mov_imm(R2, 0)
        .call(helper::REDIRECT_PEER)
        .exit();
}

/// The socket filter (`SO_ATTACH_BPF`) of the AF_PACKET wire's socket when the fast path
/// caches that wire's decisions. Packet taps run before tc ingress, so a frame the cache
/// forwards must not reach the socket too:
/// - a frame carrying [`INJECT_MARK`](crate::port::inject::INJECT_MARK) (uvlan handed it to
///   the host itself) is dropped, as the classic filter does;
/// - an untagged unicast frame whose key is in `wire_cache` is dropped from the socket and
///   marked in `skb->cb` ([`META_MAGIC`], the entry's target veth): the parent's tcx
///   program (`tc_prologue`) redirects a marked frame when its own lookup agrees;
/// - everything else is delivered whole.
///
/// The kernel clears `cb` before it runs a filter that touches it
/// (`bpf_prog_run_clear_cb`), so an unmarked frame never carries an old marker; a frame is
/// then delivered once: to the socket, or (marked, and still a hit at tc) by the cache. An
/// entry deleted between the two lookups loses that one frame (it is neither delivered nor
/// redirected); one added between them is not used for the frame (no marker).
///
/// A socket filter cannot read the packet directly: it copies the frame's first 54 bytes
/// (fewer for a shorter frame, zeros after) to the stack with `bpf_skb_load_bytes`. On a
/// `SOCK_RAW` packet socket `skb->data` is the MAC header and `skb->len` the frame's length.
pub fn assemble_wire_socket(wire_cache: &Map, inject_mark: u32) -> Result<Vec<Insn>, BpfError> {
    use Reg::*;
    let mut a = Asm::new();
    let accept = a.label();
    let drop = a.label();
    let hit = a.label();
    let copy = a.label();
    a.mov_reg(R6, R1)
        .ldx(Size::W, R2, R6, SKB_MARK)
        .jmp_imm(Jmp::Eq, R2, inject_mark as i32, drop)
        .ldx(Size::W, R2, R6, SKB_LEN)
        .jmp_imm(Jmp::Lt, R2, 14, accept)
        .ldx(Size::W, R3, R6, SKB_VLAN_PRESENT)
        .jmp_imm(Jmp::Ne, R3, 0, accept);
    for off in (S_BUF_ZERO..-48).step_by(8) {
        a.st_imm(Size::DW, R10, off, 0);
    }
    a.mov_reg(R4, R2)
        .jmp_imm(Jmp::Le, R4, SOCK_COPY, copy)
        .mov_imm(R4, SOCK_COPY)
        .bind(copy)
        .mov_reg(R1, R6)
        .mov_imm(R2, 0)
        .mov_reg(R3, R10)
        .alu_imm(Alu::Add, R3, S_BUF as i32)
        .call(helper::SKB_LOAD_BYTES)
        .jmp_imm(Jmp::Ne, R0, 0, accept)
        .mov_reg(R7, R10)
        .alu_imm(Alu::Add, R7, S_BUF as i32);
    untagged_unicast(&mut a, accept);
    key_lookup(&mut a, wire_cache.as_fd(), KeyCtx::Sock, hit, accept);
    a.bind(hit)
        .mov_imm(R2, META_MAGIC as i32)
        .stx(Size::W, R6, SKB_CB0, R2)
        .ldx(Size::W, R2, R0, 0)
        .stx(Size::W, R6, SKB_CB1, R2)
        .bind(drop)
        .mov_imm(R0, 0)
        .exit()
        .bind(accept)
        .mov_imm(R0, -1)
        .exit();
    Ok(a.finish()?)
}

/// The program on an endpoint's TAP (tcx ingress): every frame the dataplane wrote goes out
/// through the port's veth end (`bpf_redirect` to its egress: the peer `eth0` receives it).
pub fn assemble_tap(links: &Map, stats: &Map) -> Result<Vec<Insn>, BpfError> {
    let mut a = Asm::new();
    a.mov_reg(Reg::R6, Reg::R1);
    to_partner(&mut a, links, stats, STAT_SLOW_OUT);
    Ok(a.finish()?)
}
