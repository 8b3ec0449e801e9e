//! A tiny eBPF assembler: instructions laid out as `struct bpf_insn`, registers, ALU and jump
//! operations, helper ids, and label resolution ([`Asm::finish`]).

use std::os::fd::{AsRawFd, BorrowedFd};

/// One eBPF instruction, laid out exactly as `struct bpf_insn`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Insn {
    /// Opcode.
    pub code: u8,
    /// `dst_reg` in the low nibble, `src_reg` in the high nibble.
    pub regs: u8,
    /// Signed offset (memory offset or jump distance).
    pub off: i16,
    /// Signed immediate.
    pub imm: i32,
}

impl Insn {
    fn new(code: u8, dst: Reg, src: Reg, off: i16, imm: i32) -> Insn {
        Insn {
            code,
            regs: (dst as u8) | ((src as u8) << 4),
            off,
            imm,
        }
    }

    /// The 8 bytes the kernel reads (little-endian host assumed for the bitfield order,
    /// as on every architecture uvlan targets).
    pub fn to_bytes(self) -> [u8; 8] {
        let mut b = [0u8; 8];
        b[0] = self.code;
        b[1] = self.regs;
        b[2..4].copy_from_slice(&self.off.to_ne_bytes());
        b[4..8].copy_from_slice(&self.imm.to_ne_bytes());
        b
    }
}

/// eBPF registers. `R10` is the read-only frame pointer.
#[allow(missing_docs)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Reg {
    R0 = 0,
    R1,
    R2,
    R3,
    R4,
    R5,
    R6,
    R7,
    R8,
    R9,
    R10,
}

/// Memory access sizes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Size {
    /// 1 byte.
    B,
    /// 2 bytes.
    H,
    /// 4 bytes.
    W,
    /// 8 bytes.
    DW,
}

impl Size {
    fn bits(self) -> u8 {
        match self {
            Size::W => 0x00,
            Size::H => 0x08,
            Size::B => 0x10,
            Size::DW => 0x18,
        }
    }
}

/// 64-bit ALU operations.
#[allow(missing_docs)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alu {
    Add = 0x00,
    Sub = 0x10,
    Mul = 0x20,
    Div = 0x30,
    Or = 0x40,
    And = 0x50,
    Lsh = 0x60,
    Rsh = 0x70,
    Mod = 0x90,
    Xor = 0xa0,
    Mov = 0xb0,
    Arsh = 0xc0,
}

/// Conditional jump operations (64-bit compare).
#[allow(missing_docs)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Jmp {
    Eq = 0x10,
    Gt = 0x20,
    Ge = 0x30,
    Set = 0x40,
    Ne = 0x50,
    Sgt = 0x60,
    Sge = 0x70,
    Lt = 0xa0,
    Le = 0xb0,
    Slt = 0xc0,
    Sle = 0xd0,
}

/// Helper function ids used by uvlan programs.
pub mod helper {
    /// `bpf_map_lookup_elem(map, key)`.
    pub const MAP_LOOKUP_ELEM: i32 = 1;
    /// `bpf_skb_load_bytes(skb, offset, to, len)`: copies `len` bytes of the packet from
    /// `offset` (relative to `skb->data`) to `to`; 0 on success.
    pub const SKB_LOAD_BYTES: i32 = 26;
    /// `bpf_redirect_map(map, key, flags)`; the low bits of `flags` are the fallback action.
    pub const REDIRECT_MAP: i32 = 51;
    /// `bpf_redirect(ifindex, flags)`: tc programs, to the egress of `ifindex` (flags 0).
    pub const REDIRECT: i32 = 23;
    /// `bpf_redirect_peer(ifindex, flags)`: tc ingress programs, to the ingress of the peer
    /// of the veth (or netkit) device `ifindex`, in the peer's namespace (kernel ≥ 5.10).
    pub const REDIRECT_PEER: i32 = 155;
    /// `bpf_xdp_adjust_meta(xdp_md, delta)`: grows (negative delta) the metadata area in
    /// front of the packet; 0 on success.
    pub const XDP_ADJUST_META: i32 = 54;
}

const CLASS_LD: u8 = 0x00;
const CLASS_LDX: u8 = 0x01;
const CLASS_ST: u8 = 0x02;
const CLASS_STX: u8 = 0x03;
const CLASS_ALU: u8 = 0x04;
const CLASS_JMP: u8 = 0x05;
const CLASS_ALU64: u8 = 0x07;
const MODE_IMM: u8 = 0x00;
const MODE_MEM: u8 = 0x60;
const MODE_ATOMIC: u8 = 0xc0;
const ATOMIC_ADD: i32 = 0x00;
const SRC_K: u8 = 0x00;
const SRC_X: u8 = 0x08;
const OP_END: u8 = 0xd0;
const TO_BE: u8 = 0x08;
const OP_JA: u8 = 0x00;
const OP_CALL: u8 = 0x80;
const OP_EXIT: u8 = 0x90;
const PSEUDO_MAP_FD: Reg = Reg::R1; // src_reg value 1

/// Assembler errors.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AsmError {
    /// A jump targets a label that was never bound.
    #[error("label {0} is used but never bound")]
    Unbound(usize),
    /// A label was bound twice.
    #[error("label {0} is bound twice")]
    Rebound(usize),
    /// A jump is longer than the 16-bit offset allows.
    #[error("jump from instruction {from} to label {label} does not fit in 16 bits")]
    TooFar {
        /// Instruction index of the jump.
        from: usize,
        /// The label id.
        label: usize,
    },
    /// The program is empty.
    #[error("the program is empty")]
    Empty,
}

/// A jump target created by [`Asm::label`] and placed by [`Asm::bind`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Label(usize);

/// A tiny eBPF assembler: emits instructions, resolves label jumps in [`Asm::finish`].
#[derive(Debug, Default)]
pub struct Asm {
    insns: Vec<Insn>,
    labels: Vec<Option<usize>>,
    fixups: Vec<(usize, Label)>,
    error: Option<AsmError>,
}

impl Asm {
    /// An empty program.
    pub fn new() -> Asm {
        Asm::default()
    }

    /// Number of instruction slots emitted so far.
    pub fn len(&self) -> usize {
        self.insns.len()
    }

    /// True when nothing was emitted.
    pub fn is_empty(&self) -> bool {
        self.insns.is_empty()
    }

    /// A new, unbound label.
    pub fn label(&mut self) -> Label {
        self.labels.push(None);
        Label(self.labels.len() - 1)
    }

    /// Bind `l` to the next instruction.
    pub fn bind(&mut self, l: Label) -> &mut Self {
        match self.labels.get_mut(l.0) {
            Some(slot @ None) => *slot = Some(self.insns.len()),
            _ => {
                self.error.get_or_insert(AsmError::Rebound(l.0));
            }
        }
        self
    }

    fn push(&mut self, i: Insn) -> &mut Self {
        self.insns.push(i);
        self
    }

    /// `dst = imm` (64-bit, sign-extended).
    pub fn mov_imm(&mut self, dst: Reg, imm: i32) -> &mut Self {
        self.alu_imm(Alu::Mov, dst, imm)
    }

    /// `dst = src`.
    pub fn mov_reg(&mut self, dst: Reg, src: Reg) -> &mut Self {
        self.alu_reg(Alu::Mov, dst, src)
    }

    /// `dst op= imm` (64-bit).
    pub fn alu_imm(&mut self, op: Alu, dst: Reg, imm: i32) -> &mut Self {
        self.push(Insn::new(
            CLASS_ALU64 | op as u8 | SRC_K,
            dst,
            Reg::R0,
            0,
            imm,
        ))
    }

    /// `dst op= src` (64-bit).
    pub fn alu_reg(&mut self, op: Alu, dst: Reg, src: Reg) -> &mut Self {
        self.push(Insn::new(CLASS_ALU64 | op as u8 | SRC_X, dst, src, 0, 0))
    }

    /// `dst = htobe{bits}(dst)`: converts a value loaded from network byte order to host
    /// order (a byte swap on little-endian hosts). `bits` is 16, 32 or 64.
    pub fn be(&mut self, dst: Reg, bits: i32) -> &mut Self {
        self.push(Insn::new(CLASS_ALU | OP_END | TO_BE, dst, Reg::R0, 0, bits))
    }

    /// `dst = *(size *)(src + off)`.
    pub fn ldx(&mut self, size: Size, dst: Reg, src: Reg, off: i16) -> &mut Self {
        self.push(Insn::new(
            CLASS_LDX | MODE_MEM | size.bits(),
            dst,
            src,
            off,
            0,
        ))
    }

    /// `*(size *)(dst + off) = src`.
    pub fn stx(&mut self, size: Size, dst: Reg, off: i16, src: Reg) -> &mut Self {
        self.push(Insn::new(
            CLASS_STX | MODE_MEM | size.bits(),
            dst,
            src,
            off,
            0,
        ))
    }

    /// `*(size *)(dst + off) = imm`.
    pub fn st_imm(&mut self, size: Size, dst: Reg, off: i16, imm: i32) -> &mut Self {
        self.push(Insn::new(
            CLASS_ST | MODE_MEM | size.bits(),
            dst,
            Reg::R0,
            off,
            imm,
        ))
    }

    /// `lock *(size *)(dst + off) += src` (`BPF_ATOMIC | BPF_ADD`; `size` is W or DW).
    pub fn atomic_add(&mut self, size: Size, dst: Reg, off: i16, src: Reg) -> &mut Self {
        self.push(Insn::new(
            CLASS_STX | MODE_ATOMIC | size.bits(),
            dst,
            src,
            off,
            ATOMIC_ADD,
        ))
    }

    /// `if dst op imm goto target`.
    pub fn jmp_imm(&mut self, op: Jmp, dst: Reg, imm: i32, target: Label) -> &mut Self {
        self.fixups.push((self.insns.len(), target));
        self.push(Insn::new(
            CLASS_JMP | op as u8 | SRC_K,
            dst,
            Reg::R0,
            0,
            imm,
        ))
    }

    /// `if dst op src goto target`.
    pub fn jmp_reg(&mut self, op: Jmp, dst: Reg, src: Reg, target: Label) -> &mut Self {
        self.fixups.push((self.insns.len(), target));
        self.push(Insn::new(CLASS_JMP | op as u8 | SRC_X, dst, src, 0, 0))
    }

    /// `goto target`.
    pub fn ja(&mut self, target: Label) -> &mut Self {
        self.fixups.push((self.insns.len(), target));
        self.push(Insn::new(CLASS_JMP | OP_JA, Reg::R0, Reg::R0, 0, 0))
    }

    /// Call helper `id` (see [`helper`]); arguments in r1–r5, result in r0, r1–r5 clobbered.
    pub fn call(&mut self, id: i32) -> &mut Self {
        self.push(Insn::new(CLASS_JMP | OP_CALL, Reg::R0, Reg::R0, 0, id))
    }

    /// `exit` (return r0).
    pub fn exit(&mut self) -> &mut Self {
        self.push(Insn::new(CLASS_JMP | OP_EXIT, Reg::R0, Reg::R0, 0, 0))
    }

    /// `dst = imm64` (two slots).
    pub fn ld_imm64(&mut self, dst: Reg, imm: u64) -> &mut Self {
        self.push(Insn::new(
            CLASS_LD | MODE_IMM | Size::DW.bits(),
            dst,
            Reg::R0,
            0,
            imm as u32 as i32,
        ));
        self.push(Insn::new(0, Reg::R0, Reg::R0, 0, (imm >> 32) as u32 as i32))
    }

    /// `dst = map` (two-slot `ld_imm64` with `BPF_PSEUDO_MAP_FD`; the kernel patches in the
    /// map address at load time). The fd must stay open until the program is loaded.
    pub fn ld_map_fd(&mut self, dst: Reg, map: BorrowedFd<'_>) -> &mut Self {
        self.push(Insn::new(
            CLASS_LD | MODE_IMM | Size::DW.bits(),
            dst,
            PSEUDO_MAP_FD,
            0,
            map.as_raw_fd(),
        ));
        self.push(Insn::new(0, Reg::R0, Reg::R0, 0, 0))
    }

    /// `r0 = bpf_map_lookup_elem(map, r10 + key_off)`: the value's address, or 0 when the
    /// key at `r10 + key_off` is not in `map` (r1–r5 clobbered).
    pub fn map_lookup(&mut self, map: BorrowedFd<'_>, key_off: i16) -> &mut Self {
        self.ld_map_fd(Reg::R1, map)
            .mov_reg(Reg::R2, Reg::R10)
            .alu_imm(Alu::Add, Reg::R2, key_off as i32)
            .call(helper::MAP_LOOKUP_ELEM)
    }

    /// Adds 1 to the `u64` counter a per-CPU array `map` holds at the index stored (as a
    /// `u32`) at `r10 + key_off`, when the index is in range. Not atomic: only this CPU writes
    /// its copy of a per-CPU value (r0–r5 clobbered).
    pub fn count_percpu(&mut self, map: BorrowedFd<'_>, key_off: i16) -> &mut Self {
        let skip = self.label();
        self.map_lookup(map, key_off)
            .jmp_imm(Jmp::Eq, Reg::R0, 0, skip)
            .ldx(Size::DW, Reg::R1, Reg::R0, 0)
            .alu_imm(Alu::Add, Reg::R1, 1)
            .stx(Size::DW, Reg::R0, 0, Reg::R1)
            .bind(skip)
    }

    /// Resolve labels and return the instructions.
    pub fn finish(self) -> Result<Vec<Insn>, AsmError> {
        if let Some(e) = self.error {
            return Err(e);
        }
        if self.insns.is_empty() {
            return Err(AsmError::Empty);
        }
        let mut insns = self.insns;
        for (at, label) in self.fixups {
            let target = self
                .labels
                .get(label.0)
                .copied()
                .flatten()
                .ok_or(AsmError::Unbound(label.0))?;
            let rel = target as i64 - (at as i64 + 1);
            let off = i16::try_from(rel).map_err(|_| AsmError::TooFar {
                from: at,
                label: label.0,
            })?;
            if let Some(i) = insns.get_mut(at) {
                i.off = off;
            }
        }
        Ok(insns)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn encodes_return_two() {
        let mut a = Asm::new();
        a.mov_imm(Reg::R0, 2).exit();
        let p = a.finish().unwrap();
        assert_eq!(p[0].to_bytes(), [0xb7, 0x00, 0, 0, 2, 0, 0, 0]);
        assert_eq!(p[1].to_bytes(), [0x95, 0, 0, 0, 0, 0, 0, 0]);
    }

    #[test]
    fn encodes_loads_stores_and_swaps() {
        let mut a = Asm::new();
        a.ldx(Size::W, Reg::R2, Reg::R1, 16)
            .stx(Size::H, Reg::R10, -8, Reg::R3)
            .st_imm(Size::W, Reg::R10, -4, 7)
            .be(Reg::R4, 16);
        let p = a.finish().unwrap();
        assert_eq!(p[0].to_bytes(), [0x61, 0x12, 16, 0, 0, 0, 0, 0]);
        assert_eq!(p[1].to_bytes(), [0x6b, 0x3a, 0xf8, 0xff, 0, 0, 0, 0]);
        assert_eq!(p[2].to_bytes(), [0x62, 0x0a, 0xfc, 0xff, 7, 0, 0, 0]);
        assert_eq!(p[3].to_bytes(), [0xdc, 0x04, 0, 0, 16, 0, 0, 0]);
    }

    #[test]
    fn encodes_atomic_add() {
        let mut a = Asm::new();
        a.atomic_add(Size::DW, Reg::R9, 8, Reg::R1);
        let p = a.finish().unwrap();
        // BPF_STX | BPF_ATOMIC | BPF_DW = 0xdb, dst r9, src r1, off 8, imm BPF_ADD.
        assert_eq!(p[0].to_bytes(), [0xdb, 0x19, 8, 0, 0, 0, 0, 0]);
    }

    #[test]
    fn resolves_forward_and_backward_labels() {
        let mut a = Asm::new();
        let fwd = a.label();
        let back = a.label();
        a.bind(back);
        a.mov_imm(Reg::R0, 0); // 0
        a.jmp_imm(Jmp::Eq, Reg::R0, 1, fwd); // 1 -> 4: off 2
        a.ja(back); // 2 -> 0: off -3
        a.mov_imm(Reg::R0, 1); // 3
        a.bind(fwd);
        a.exit(); // 4
        let p = a.finish().unwrap();
        assert_eq!(p[1].off, 2);
        assert_eq!(p[1].code, 0x15);
        assert_eq!(p[2].off, -3);
    }

    #[test]
    fn ld_imm64_takes_two_slots_and_marks_map_fd() {
        let f = std::fs::File::open("/dev/null").unwrap();
        let mut a = Asm::new();
        a.ld_map_fd(Reg::R1, f.as_fd())
            .ld_imm64(Reg::R2, 0x1122_3344_5566_7788);
        let p = a.finish().unwrap();
        assert_eq!(p.len(), 4);
        assert_eq!(p[0].code, 0x18);
        assert_eq!(p[0].regs, 0x11);
        assert_eq!(p[0].imm, f.as_raw_fd());
        assert_eq!(p[2].imm as u32, 0x5566_7788);
        assert_eq!(p[3].imm as u32, 0x1122_3344);
    }

    #[test]
    fn unbound_and_rebound_labels_are_errors() {
        let mut a = Asm::new();
        let l = a.label();
        a.ja(l).exit();
        assert_eq!(a.finish(), Err(AsmError::Unbound(0)));
        let mut b = Asm::new();
        let l = b.label();
        b.bind(l).exit().bind(l);
        assert_eq!(b.finish(), Err(AsmError::Rebound(0)));
        assert_eq!(Asm::new().finish(), Err(AsmError::Empty));
    }

    #[test]
    fn too_far_jump_is_an_error() {
        let mut a = Asm::new();
        let l = a.label();
        a.ja(l);
        for _ in 0..40_000 {
            a.mov_imm(Reg::R0, 0);
        }
        a.bind(l).exit();
        assert!(matches!(a.finish(), Err(AsmError::TooFar { .. })));
    }
}
