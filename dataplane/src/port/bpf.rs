//! Thin, typed wrappers over the `bpf(2)` system call and a tiny eBPF assembler.
//!
//! uvlan needs no libbpf, no clang and no ELF: programs are assembled in Rust ([`Asm`]),
//! loaded with `BPF_PROG_LOAD` (the verifier log is returned on failure) and attached with
//! `BPF_LINK_CREATE`. Every kernel object is an owned file descriptor that is closed on drop;
//! a dropped [`Link`] detaches its program, even when the process is killed.
//!
//! Kernel facts relied on (measured on 6.18, see `research/io-feasibility.md`, appendix B):
//! - `union bpf_attr` is written by offset into a zeroed 144-byte buffer (the kernel accepts
//!   a shorter attr than its own and treats the tail as zero):
//!   `MAP_CREATE` type@0 key@4 value@8 max@12 name@28; `MAP_*_ELEM` fd@0 key@8 value@16
//!   flags@24; `PROG_LOAD` type@0 insn_cnt@4 insns@8 license@16 log_level@24 log_size@28
//!   log_buf@32 prog_flags@44 name@48 expected_attach_type@68; `LINK_CREATE` prog_fd@0
//!   ifindex@4 attach_type@8 flags@12; `PROG_TEST_RUN` prog_fd@0 retval@4 size_in@8
//!   size_out@12 data_in@16 data_out@24 repeat@32 duration@36.
//! - `bpf_link` for XDP needs 5.9; `BPF_TCX_INGRESS` (46) needs 6.6.
//! - A map fd is loaded with the two-slot `ld_imm64` with `src_reg = 1` (`BPF_PSEUDO_MAP_FD`).
//! - Per-CPU map values are `round_up(value_size, 8)` bytes per *possible* CPU.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

/// Errors from `bpf(2)` and from the assembler.
#[derive(Debug, thiserror::Error)]
pub enum BpfError {
    /// A `bpf(2)` command failed.
    #[error("bpf({cmd}) failed: {source}{}", hint(.source))]
    Syscall {
        /// The `bpf(2)` command that failed.
        cmd: &'static str,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The verifier refused a program; `log` is the verifier's own explanation.
    #[error("the kernel verifier rejected BPF program `{name}` ({source}); verifier log:\n{log}")]
    Verifier {
        /// Program name.
        name: String,
        /// The OS error returned by `BPF_PROG_LOAD`.
        #[source]
        source: io::Error,
        /// The verifier log (may be truncated).
        log: String,
    },
    /// A key or value had the wrong length for the map.
    #[error(
        "{what} is {got} bytes but map `{map}` expects {expected}: this is a bug in the caller"
    )]
    Size {
        /// Which argument: "key" or "value".
        what: &'static str,
        /// The map's name.
        map: String,
        /// Expected length.
        expected: usize,
        /// Given length.
        got: usize,
    },
    /// The program could not be assembled.
    #[error("BPF assembler: {0}")]
    Asm(#[from] AsmError),
}

fn hint(e: &io::Error) -> &'static str {
    match e.raw_os_error() {
        Some(libc::EPERM) | Some(libc::EACCES) => {
            " (run as root, or with CAP_BPF + CAP_NET_ADMIN; check kernel.unprivileged_bpf_disabled)"
        }
        Some(libc::ENOSYS) => " (the kernel was built without CONFIG_BPF_SYSCALL)",
        Some(libc::E2BIG) => " (map is full: raise its capacity)",
        Some(libc::EEXIST) | Some(libc::EBUSY) => {
            " (another XDP/tc program already holds this hook; detach it or use the AF_PACKET fallback)"
        }
        _ => "",
    }
}

// bpf(2) commands.
const BPF_MAP_CREATE: u32 = 0;
const BPF_MAP_LOOKUP_ELEM: u32 = 1;
const BPF_MAP_UPDATE_ELEM: u32 = 2;
const BPF_MAP_DELETE_ELEM: u32 = 3;
const BPF_PROG_LOAD: u32 = 5;
const BPF_PROG_TEST_RUN: u32 = 10;
const BPF_LINK_CREATE: u32 = 28;

/// Size of the attribute buffer handed to the kernel.
const ATTR_SIZE: usize = 144;

#[repr(C, align(8))]
struct Attr([u8; ATTR_SIZE]);

impl Attr {
    fn new() -> Self {
        Attr([0; ATTR_SIZE])
    }
    fn u32(&mut self, off: usize, v: u32) -> &mut Self {
        self.0[off..off + 4].copy_from_slice(&v.to_ne_bytes());
        self
    }
    fn u64(&mut self, off: usize, v: u64) -> &mut Self {
        self.0[off..off + 8].copy_from_slice(&v.to_ne_bytes());
        self
    }
    fn ptr<T>(&mut self, off: usize, p: *const T) -> &mut Self {
        self.u64(off, p as usize as u64)
    }
    fn name(&mut self, off: usize, name: &str) -> &mut Self {
        // BPF_OBJ_NAME_LEN is 16 including the NUL; the kernel accepts [A-Za-z0-9_.] only.
        let valid = name
            .bytes()
            .filter(|b| b.is_ascii_alphanumeric() || *b == b'_' || *b == b'.')
            .take(15);
        for (n, b) in valid.enumerate() {
            self.0[off + n] = b;
        }
        self
    }
    fn get_u32(&self, off: usize) -> u32 {
        let mut b = [0u8; 4];
        b.copy_from_slice(&self.0[off..off + 4]);
        u32::from_ne_bytes(b)
    }
}

fn sys_bpf(cmd: u32, attr: &mut Attr) -> io::Result<libc::c_long> {
    // SAFETY: `attr` is a valid, writable buffer of ATTR_SIZE bytes that outlives the call;
    // every pointer stored in it was set by the caller to memory that also outlives the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd as libc::c_long,
            attr.0.as_mut_ptr(),
            ATTR_SIZE as libc::c_long,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

fn fd_from(r: libc::c_long) -> OwnedFd {
    // SAFETY: a successful bpf(2) call that creates an object returns a new fd owned by us.
    unsafe { OwnedFd::from_raw_fd(r as RawFd) }
}

/// The BPF map types uvlan uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MapType {
    /// `BPF_MAP_TYPE_HASH`.
    Hash = 1,
    /// `BPF_MAP_TYPE_ARRAY`.
    Array = 2,
    /// `BPF_MAP_TYPE_PERCPU_ARRAY`: one value per possible CPU.
    PercpuArray = 6,
    /// `BPF_MAP_TYPE_XSKMAP`: queue index → AF_XDP socket fd.
    XskMap = 17,
}

/// Flags for [`Map::update`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpdateFlags {
    /// `BPF_ANY`: create or overwrite.
    Any = 0,
    /// `BPF_NOEXIST`: create only.
    NoExist = 1,
    /// `BPF_EXIST`: overwrite only.
    Exist = 2,
}

/// Number of possible CPUs (the per-CPU value count), from
/// `/sys/devices/system/cpu/possible` (e.g. `0-1`), at least 1.
pub fn possible_cpus() -> io::Result<usize> {
    let s = std::fs::read_to_string("/sys/devices/system/cpu/possible")?;
    parse_cpu_list(s.trim()).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("cannot parse /sys/devices/system/cpu/possible: {s:?}"),
        )
    })
}

fn parse_cpu_list(s: &str) -> Option<usize> {
    let mut max = None;
    for part in s.split(',') {
        let hi = match part.split_once('-') {
            Some((_, hi)) => hi.trim().parse::<usize>().ok()?,
            None => part.trim().parse::<usize>().ok()?,
        };
        max = Some(max.map_or(hi, |m: usize| m.max(hi)));
    }
    max.map(|m| m + 1)
}

/// An owned BPF map.
#[derive(Debug)]
pub struct Map {
    fd: OwnedFd,
    map_type: MapType,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    name: String,
    ncpus: usize,
}

impl Map {
    /// `BPF_MAP_CREATE`. `name` is truncated to 15 characters of `[A-Za-z0-9_.]`.
    pub fn create(
        map_type: MapType,
        key_size: u32,
        value_size: u32,
        max_entries: u32,
        name: &str,
    ) -> Result<Map, BpfError> {
        let ncpus = if map_type == MapType::PercpuArray {
            possible_cpus().map_err(|source| BpfError::Syscall {
                cmd: "MAP_CREATE (reading possible CPUs)",
                source,
            })?
        } else {
            1
        };
        let mut a = Attr::new();
        a.u32(0, map_type as u32)
            .u32(4, key_size)
            .u32(8, value_size)
            .u32(12, max_entries)
            .name(28, name);
        let r = sys_bpf(BPF_MAP_CREATE, &mut a).map_err(|source| BpfError::Syscall {
            cmd: "MAP_CREATE",
            source,
        })?;
        Ok(Map {
            fd: fd_from(r),
            map_type,
            key_size,
            value_size,
            max_entries,
            name: name.to_string(),
            ncpus,
        })
    }

    /// The map type.
    pub fn map_type(&self) -> MapType {
        self.map_type
    }

    /// Maximum number of entries.
    pub fn max_entries(&self) -> u32 {
        self.max_entries
    }

    /// Length of the buffer that [`Map::lookup`] fills: `value_size`, or for per-CPU maps
    /// `round_up(value_size, 8) * possible_cpus`.
    pub fn value_buf_len(&self) -> usize {
        if self.map_type == MapType::PercpuArray {
            (self.value_size as usize).div_ceil(8) * 8 * self.ncpus
        } else {
            self.value_size as usize
        }
    }

    /// Number of possible CPUs (values per key) for per-CPU maps, 1 otherwise.
    pub fn cpus(&self) -> usize {
        self.ncpus
    }

    fn check(&self, what: &'static str, expected: usize, got: usize) -> Result<(), BpfError> {
        if expected != got {
            return Err(BpfError::Size {
                what,
                map: self.name.clone(),
                expected,
                got,
            });
        }
        Ok(())
    }

    /// `BPF_MAP_UPDATE_ELEM`. For per-CPU maps `value` holds all CPUs' values.
    pub fn update(&self, key: &[u8], value: &[u8], flags: UpdateFlags) -> Result<(), BpfError> {
        self.check("key", self.key_size as usize, key.len())?;
        self.check("value", self.value_buf_len(), value.len())?;
        let mut a = Attr::new();
        a.u32(0, self.fd.as_raw_fd() as u32)
            .ptr(8, key.as_ptr())
            .ptr(16, value.as_ptr())
            .u64(24, flags as u64);
        sys_bpf(BPF_MAP_UPDATE_ELEM, &mut a).map_err(|source| BpfError::Syscall {
            cmd: "MAP_UPDATE_ELEM",
            source,
        })?;
        Ok(())
    }

    /// `BPF_MAP_DELETE_ELEM`. Returns `false` if the key was absent.
    pub fn delete(&self, key: &[u8]) -> Result<bool, BpfError> {
        self.check("key", self.key_size as usize, key.len())?;
        let mut a = Attr::new();
        a.u32(0, self.fd.as_raw_fd() as u32).ptr(8, key.as_ptr());
        match sys_bpf(BPF_MAP_DELETE_ELEM, &mut a) {
            Ok(_) => Ok(true),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(false),
            Err(source) => Err(BpfError::Syscall {
                cmd: "MAP_DELETE_ELEM",
                source,
            }),
        }
    }

    /// `BPF_MAP_LOOKUP_ELEM` into `value` (length [`Map::value_buf_len`]). Returns `false`
    /// if the key is absent.
    pub fn lookup(&self, key: &[u8], value: &mut [u8]) -> Result<bool, BpfError> {
        self.check("key", self.key_size as usize, key.len())?;
        self.check("value", self.value_buf_len(), value.len())?;
        let mut a = Attr::new();
        a.u32(0, self.fd.as_raw_fd() as u32)
            .ptr(8, key.as_ptr())
            .ptr(16, value.as_mut_ptr());
        match sys_bpf(BPF_MAP_LOOKUP_ELEM, &mut a) {
            Ok(_) => Ok(true),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(false),
            Err(source) => Err(BpfError::Syscall {
                cmd: "MAP_LOOKUP_ELEM",
                source,
            }),
        }
    }

    /// Duplicate the fd (another handle on the same kernel map).
    pub fn try_clone(&self) -> io::Result<Map> {
        Ok(Map {
            fd: self.fd.try_clone()?,
            map_type: self.map_type,
            key_size: self.key_size,
            value_size: self.value_size,
            max_entries: self.max_entries,
            name: self.name.clone(),
            ncpus: self.ncpus,
        })
    }
}

impl AsFd for Map {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// The BPF program types uvlan loads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProgType {
    /// `BPF_PROG_TYPE_SCHED_CLS` (tc / tcx).
    SchedCls = 3,
    /// `BPF_PROG_TYPE_XDP`.
    Xdp = 6,
}

/// Attach types for [`Link::create`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttachType {
    /// `BPF_XDP` (37).
    Xdp = 37,
    /// `BPF_TCX_INGRESS` (46, kernel ≥ 6.6).
    TcxIngress = 46,
    /// `BPF_TCX_EGRESS` (47, kernel ≥ 6.6).
    TcxEgress = 47,
}

/// `XDP_FLAGS_SKB_MODE`: generic XDP in the core receive path.
pub const XDP_FLAGS_SKB_MODE: u32 = 1 << 1;
/// `XDP_FLAGS_DRV_MODE`: native XDP in the driver.
pub const XDP_FLAGS_DRV_MODE: u32 = 1 << 2;

/// Result of `BPF_PROG_TEST_RUN`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestRun {
    /// The program's return value.
    pub retval: u32,
    /// Average run time in nanoseconds as reported by the kernel.
    pub duration_ns: u32,
    /// The packet after the run (up to the length of the input).
    pub data_out: Vec<u8>,
}

/// License string given to the kernel. The programs call no GPL-only helper.
const LICENSE: &[u8] = b"Apache-2.0\0";

/// An owned, verified BPF program.
#[derive(Debug)]
pub struct Prog {
    fd: OwnedFd,
    prog_type: ProgType,
    name: String,
}

impl Prog {
    /// `BPF_PROG_LOAD`. On failure the program is loaded again with the verifier log enabled
    /// and the log is returned in [`BpfError::Verifier`].
    pub fn load(
        prog_type: ProgType,
        insns: &[Insn],
        name: &str,
        expected_attach: Option<AttachType>,
    ) -> Result<Prog, BpfError> {
        match Self::load_inner(prog_type, insns, name, expected_attach, None) {
            Ok(fd) => Ok(Prog {
                fd,
                prog_type,
                name: name.to_string(),
            }),
            Err(first) => {
                let mut log = vec![0u8; 1 << 20];
                let source =
                    match Self::load_inner(prog_type, insns, name, expected_attach, Some(&mut log))
                    {
                        // Loading with a log succeeded where the quiet load failed: report the
                        // first error with the (successful) log for diagnosis.
                        Ok(_) => first,
                        // The log did not fit (it is truncated): keep the verifier's verdict.
                        Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => first,
                        Err(e) => e,
                    };
                let end = log.iter().position(|b| *b == 0).unwrap_or(log.len());
                Err(BpfError::Verifier {
                    name: name.to_string(),
                    source,
                    log: String::from_utf8_lossy(log.get(..end).unwrap_or_default()).into_owned(),
                })
            }
        }
    }

    fn load_inner(
        prog_type: ProgType,
        insns: &[Insn],
        name: &str,
        expected_attach: Option<AttachType>,
        log: Option<&mut [u8]>,
    ) -> io::Result<OwnedFd> {
        let mut a = Attr::new();
        a.u32(0, prog_type as u32)
            .u32(4, insns.len() as u32)
            .ptr(8, insns.as_ptr())
            .ptr(16, LICENSE.as_ptr())
            .name(48, name);
        if let Some(t) = expected_attach {
            a.u32(68, t as u32);
        }
        if let Some(buf) = log {
            a.u32(24, 1)
                .u32(28, buf.len() as u32)
                .ptr(32, buf.as_mut_ptr());
        }
        sys_bpf(BPF_PROG_LOAD, &mut a).map(fd_from)
    }

    /// The program type.
    pub fn prog_type(&self) -> ProgType {
        self.prog_type
    }

    /// The program name given at load time.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `BPF_PROG_TEST_RUN`: run the program `repeat` times (≥ 1) over `data`. XDP and
    /// SCHED_CLS need `data.len() >= 14`.
    pub fn test_run(&self, data: &[u8], repeat: u32) -> Result<TestRun, BpfError> {
        // The kernel may grow the packet (e.g. adjust_head); leave headroom for the output.
        let mut out = vec![0u8; data.len() + 256];
        let mut a = Attr::new();
        a.u32(0, self.fd.as_raw_fd() as u32)
            .u32(8, data.len() as u32)
            .u32(12, out.len() as u32)
            .ptr(16, data.as_ptr())
            .ptr(24, out.as_mut_ptr())
            .u32(32, repeat.max(1));
        sys_bpf(BPF_PROG_TEST_RUN, &mut a).map_err(|source| BpfError::Syscall {
            cmd: "PROG_TEST_RUN",
            source,
        })?;
        let size_out = (a.get_u32(12) as usize).min(out.len());
        out.truncate(size_out);
        Ok(TestRun {
            retval: a.get_u32(4),
            duration_ns: a.get_u32(36),
            data_out: out,
        })
    }
}

impl AsFd for Prog {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// An owned `bpf_link`. Dropping it (or the process dying) detaches the program.
#[derive(Debug)]
pub struct Link {
    fd: OwnedFd,
    attach: AttachType,
    ifindex: u32,
}

impl Link {
    /// `BPF_LINK_CREATE` of `prog` on interface `ifindex` (in the calling thread's netns).
    pub fn create(
        prog: &Prog,
        ifindex: u32,
        attach: AttachType,
        flags: u32,
    ) -> Result<Link, BpfError> {
        let mut a = Attr::new();
        a.u32(0, prog.fd.as_raw_fd() as u32)
            .u32(4, ifindex)
            .u32(8, attach as u32)
            .u32(12, flags);
        let r = sys_bpf(BPF_LINK_CREATE, &mut a).map_err(|source| BpfError::Syscall {
            cmd: "LINK_CREATE",
            source,
        })?;
        Ok(Link {
            fd: fd_from(r),
            attach,
            ifindex,
        })
    }

    /// Attach an XDP program; `flags` is [`XDP_FLAGS_DRV_MODE`] or [`XDP_FLAGS_SKB_MODE`].
    pub fn xdp(prog: &Prog, ifindex: u32, flags: u32) -> Result<Link, BpfError> {
        Self::create(prog, ifindex, AttachType::Xdp, flags)
    }

    /// Attach a SCHED_CLS program at tcx ingress (kernel ≥ 6.6; no qdisc needed).
    pub fn tcx_ingress(prog: &Prog, ifindex: u32) -> Result<Link, BpfError> {
        Self::create(prog, ifindex, AttachType::TcxIngress, 0)
    }

    /// The attach type.
    pub fn attach_type(&self) -> AttachType {
        self.attach
    }

    /// The interface index the link is attached to.
    pub fn ifindex(&self) -> u32 {
        self.ifindex
    }
}

impl AsFd for Link {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

// ---------------------------------------------------------------------------------------
// Assembler
// ---------------------------------------------------------------------------------------

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
    /// `bpf_redirect_map(map, key, flags)`; the low bits of `flags` are the fallback action.
    pub const REDIRECT_MAP: i32 = 51;
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

/// An interface name as a C string (shared by the sibling I/O modules).
pub(crate) fn cstring(name: &str) -> io::Result<CString> {
    CString::new(name).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("interface name {name:?} contains a NUL byte"),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn parses_cpu_lists() {
        assert_eq!(parse_cpu_list("0"), Some(1));
        assert_eq!(parse_cpu_list("0-1"), Some(2));
        assert_eq!(parse_cpu_list("0-3,8-11"), Some(12));
        assert_eq!(parse_cpu_list("x"), None);
    }

    // Root: real kernel objects.

    #[test]
    fn hash_map_update_lookup_delete() {
        let m = Map::create(MapType::Hash, 4, 8, 16, "uvt_hash").unwrap();
        let k = 7u32.to_ne_bytes();
        let mut v = [0u8; 8];
        assert!(!m.lookup(&k, &mut v).unwrap());
        m.update(&k, &42u64.to_ne_bytes(), UpdateFlags::NoExist)
            .unwrap();
        assert!(m.lookup(&k, &mut v).unwrap());
        assert_eq!(u64::from_ne_bytes(v), 42);
        let e = m
            .update(&k, &1u64.to_ne_bytes(), UpdateFlags::NoExist)
            .unwrap_err();
        assert!(matches!(e, BpfError::Syscall { .. }), "{e}");
        assert!(m.delete(&k).unwrap());
        assert!(!m.delete(&k).unwrap());
        assert!(matches!(
            m.lookup(&[0; 3], &mut v),
            Err(BpfError::Size { .. })
        ));
    }

    #[test]
    fn percpu_array_value_len_covers_all_cpus() {
        let m = Map::create(MapType::PercpuArray, 4, 8, 2, "uvt_pcpu").unwrap();
        assert_eq!(m.value_buf_len(), 8 * possible_cpus().unwrap());
        let mut v = vec![0u8; m.value_buf_len()];
        assert!(m.lookup(&1u32.to_ne_bytes(), &mut v).unwrap());
        assert!(v.iter().all(|b| *b == 0));
    }

    #[test]
    fn xskmap_and_array_create() {
        let x = Map::create(MapType::XskMap, 4, 4, 8, "uvt_xsks").unwrap();
        assert_eq!(x.map_type(), MapType::XskMap);
        let a = Map::create(MapType::Array, 4, 4, 8, "uvt_arr").unwrap();
        assert_eq!(a.max_entries(), 8);
    }

    #[test]
    fn load_and_test_run_xdp_and_tc() {
        let mut a = Asm::new();
        a.mov_imm(Reg::R0, 1).exit(); // XDP_DROP
        let p = Prog::load(
            ProgType::Xdp,
            &a.finish().unwrap(),
            "uvt_drop",
            Some(AttachType::Xdp),
        )
        .unwrap();
        let r = p.test_run(&[0u8; 60], 3).unwrap();
        assert_eq!(r.retval, 1);
        let mut t = Asm::new();
        t.mov_imm(Reg::R0, 2).exit(); // TC_ACT_SHOT
        let p = Prog::load(ProgType::SchedCls, &t.finish().unwrap(), "uvt_shot", None).unwrap();
        assert_eq!(p.test_run(&[0u8; 60], 1).unwrap().retval, 2);
    }

    #[test]
    fn verifier_rejection_returns_the_log() {
        // Reads r2 before it is written: the verifier says "R2 !read_ok".
        let mut a = Asm::new();
        a.mov_reg(Reg::R0, Reg::R2).exit();
        let e = Prog::load(ProgType::Xdp, &a.finish().unwrap(), "uvt_bad", None).unwrap_err();
        match e {
            BpfError::Verifier { log, .. } => assert!(log.contains("R2 !read_ok"), "{log}"),
            other => panic!("expected a verifier error, got {other}"),
        }
    }
}
