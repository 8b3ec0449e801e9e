//! Thin, typed wrappers over the `bpf(2)` system call and a tiny eBPF assembler.
//!
//! uvlan needs no libbpf, no clang and no ELF: programs are assembled in Rust ([`Asm`]),
//! loaded with `BPF_PROG_LOAD` (the verifier log is returned on failure) and attached with
//! `BPF_LINK_CREATE`. Every kernel object is an owned file descriptor that is closed on drop;
//! a dropped [`Link`] detaches its program, even when the process is killed.
//!
//! Kernel facts relied on (measured on Linux 6.18):
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

mod asm;

pub use asm::{helper, Alu, Asm, AsmError, Insn, Jmp, Label, Reg, Size};

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

/// `bpf(cmd, attr, ATTR_SIZE)`.
///
/// # Safety
///
/// Every pointer stored in `attr` must point to memory that stays valid for the whole call
/// and is as large as the length the command takes from the attr (or from the object it
/// names, such as a map's key and value sizes); memory the command writes (lookup values,
/// the verifier log, test-run output) must be writable and not otherwise borrowed.
unsafe fn sys_bpf(cmd: u32, attr: &mut Attr) -> io::Result<libc::c_long> {
    // SAFETY: `attr` is a valid, writable buffer of ATTR_SIZE bytes that outlives the call;
    // the pointers stored in it are valid as this function's contract requires.
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

/// Takes ownership of the fd a `bpf(2)` command returned.
///
/// # Safety
///
/// `r` must be the result of a successful `bpf(2)` command that creates an object
/// (`MAP_CREATE`, `PROG_LOAD`, `LINK_CREATE`): a new fd that nothing else owns or closes.
unsafe fn fd_from(r: libc::c_long) -> OwnedFd {
    // SAFETY: `r` is a fresh fd owned by nobody else (this function's contract).
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

/// `BPF_F_NO_PREALLOC`: a hash map allocates its entries as they are added (for
/// [`Map::create_with_flags`]).
pub const BPF_F_NO_PREALLOC: u32 = 1;

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
        Self::create_with_flags(map_type, key_size, value_size, max_entries, 0, name)
    }

    /// [`Map::create`] with `map_flags` (e.g. [`BPF_F_NO_PREALLOC`]).
    pub fn create_with_flags(
        map_type: MapType,
        key_size: u32,
        value_size: u32,
        max_entries: u32,
        map_flags: u32,
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
            .u32(16, map_flags)
            .name(28, name);
        // SAFETY: MAP_CREATE stores no pointers in the attr.
        let r = unsafe { sys_bpf(BPF_MAP_CREATE, &mut a) }.map_err(|source| BpfError::Syscall {
            cmd: "MAP_CREATE",
            source,
        })?;
        // SAFETY: MAP_CREATE succeeded and returned a new map fd.
        let fd = unsafe { fd_from(r) };
        Ok(Map {
            fd,
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
        // SAFETY: the attr points at `key` and `value`, whose lengths were checked against
        // the map's key size and value buffer length; the kernel only reads them.
        unsafe { sys_bpf(BPF_MAP_UPDATE_ELEM, &mut a) }.map_err(|source| BpfError::Syscall {
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
        // SAFETY: the attr points at `key`, whose length was checked against the key size.
        match unsafe { sys_bpf(BPF_MAP_DELETE_ELEM, &mut a) } {
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
        // SAFETY: the attr points at `key` (read) and at `value` (written, exclusively
        // borrowed), whose lengths were checked against the key size and value buffer length.
        match unsafe { sys_bpf(BPF_MAP_LOOKUP_ELEM, &mut a) } {
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
    /// `BPF_PROG_TYPE_SOCKET_FILTER` (`SO_ATTACH_BPF`).
    SocketFilter = 1,
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
        // SAFETY: the attr points at `insns` (insn_cnt entries), the NUL-terminated LICENSE
        // and, with a log, at the exclusively borrowed `buf` of the stated size; all outlive
        // the call.
        let r = unsafe { sys_bpf(BPF_PROG_LOAD, &mut a) }?;
        // SAFETY: PROG_LOAD succeeded and returned a new program fd.
        Ok(unsafe { fd_from(r) })
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
        self.test_run_ctx(data, repeat, None)
    }

    /// [`Prog::test_run`] with a context: `ctx` (for skb programs a `struct __sk_buff`, of
    /// which the kernel takes mark, priority, ifindex, cb, tstamp and a few more, the rest
    /// zero) goes in, and comes back as the program left it (the kernel writes the fields it
    /// takes, `cb` included). A socket filter sees the frame from its network header: the
    /// kernel consumes the first 14 bytes as the Ethernet header.
    pub fn test_run_ctx(
        &self,
        data: &[u8],
        repeat: u32,
        ctx: Option<&mut [u8]>,
    ) -> Result<TestRun, BpfError> {
        // The kernel may grow the packet (e.g. adjust_head); leave headroom for the output.
        let mut out = vec![0u8; data.len() + 256];
        let mut a = Attr::new();
        a.u32(0, self.fd.as_raw_fd() as u32)
            .u32(8, data.len() as u32)
            .u32(12, out.len() as u32)
            .ptr(16, data.as_ptr())
            .ptr(24, out.as_mut_ptr())
            .u32(32, repeat.max(1));
        if let Some(c) = ctx {
            let p = c.as_mut_ptr();
            a.u32(40, c.len() as u32)
                .u32(44, c.len() as u32)
                .ptr(48, p)
                .ptr(56, p);
        }
        // SAFETY: the attr points at `data` (size_in bytes, read), at `out` (size_out bytes,
        // written, owned here) and, with a context, at the exclusively borrowed `ctx`, read
        // and written in place (ctx_size_in = ctx_size_out = its length); all outlive the
        // call.
        unsafe { sys_bpf(BPF_PROG_TEST_RUN, &mut a) }.map_err(|source| BpfError::Syscall {
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
        // SAFETY: LINK_CREATE stores no pointers in the attr.
        let r =
            unsafe { sys_bpf(BPF_LINK_CREATE, &mut a) }.map_err(|source| BpfError::Syscall {
                cmd: "LINK_CREATE",
                source,
            })?;
        // SAFETY: LINK_CREATE succeeded and returned a new link fd.
        let fd = unsafe { fd_from(r) };
        Ok(Link {
            fd,
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
