//! Probes of what this kernel and sandbox offer the I/O edge: each one does the real thing
//! (opens a TAP, loads and attaches a BPF program, opens a parent the way the dataplane would,
//! sets up an io_uring) and undoes it before returning, so that `uvlan doctor` reports facts
//! rather than guesses from version numbers, and a backend can choose what to use.
//!
//! Interfaces are only ever touched inside a scratch network namespace
//! ([`in_scratch_netns`]): a namespace private to one thread, which the kernel destroys with
//! everything in it when the thread ends. Nothing is named, mounted or left behind.

use std::fmt;
use std::io;

use super::afpacket::{AfPacketError, AfPacketOptions, AfPacketParent};
use super::bpf::{
    Asm, AsmError, AttachType, BpfError, Insn, Link, Prog, ProgType, Reg, XDP_FLAGS_DRV_MODE,
    XDP_FLAGS_SKB_MODE,
};
use super::ethtool;
use super::tap::{Offloads, Tap, TapError, TapOptions};
use super::xsk::{BindMode, XdpAttach, XdpError, XdpMode, XdpOptions, XdpParent};

/// Runs `f` on a new thread that first moves into a network namespace of its own
/// (`unshare(CLONE_NEWNET)`, which needs `CAP_SYS_ADMIN`). Sockets, TAPs and links `f`
/// creates live there; when `f` has returned and its file descriptors are closed, the
/// namespace and everything in it go away with the thread.
pub fn in_scratch_netns<T: Send>(f: impl FnOnce() -> T + Send) -> io::Result<T> {
    std::thread::scope(|s| {
        std::thread::Builder::new()
            .name("uvlan-probe".to_string())
            .spawn_scoped(s, || {
                // SAFETY: unshare(2) with CLONE_NEWNET only changes this thread's network
                // namespace (threads have their own nsproxy); it takes no pointers.
                if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(f())
            })?
            .join()
            .map_err(|_| io::Error::other("the probe thread panicked"))?
    })
}

/// What opening a TAP gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TapProbe {
    /// The offloads the kernel accepted of those uvlan asks for ([`Offloads::DEFAULT`]),
    /// after the fallback ladder. The TAP always has a vnet header (`IFF_VNET_HDR`).
    pub offloads: Offloads,
    /// Whether a TAP prefilter ([`super::tap_filter`]) loads and attaches
    /// (`TUNSETFILTEREBPF`), or why not.
    pub prefilter: Result<(), String>,
}

/// Creates a TAP (with a vnet header, uvlan's default offloads, not persistent) in the
/// calling thread's namespace and closes it again.
pub fn tap() -> Result<TapProbe, TapError> {
    let tap = Tap::create(&TapOptions {
        name: Some("uvprobe%d".to_string()),
        ..TapOptions::default()
    })?;
    Ok(TapProbe {
        offloads: tap.offloads(),
        prefilter: tap_prefilter(&tap).map_err(|e| e.to_string()),
    })
}

/// Loads a TAP prefilter, attaches it to `tap` and detaches it again.
fn tap_prefilter(tap: &Tap) -> Result<(), ProbeError> {
    use super::tap_filter::{set_tap_filter, TapFilters};
    use std::os::fd::AsFd;
    let filters = TapFilters::new()?;
    if let Some(prog) = filters.load(crate::fwd::Prefilter::IpvlanL3NonIp, 0)? {
        let attach = |p| set_tap_filter(tap.as_fd(), p).map_err(ProbeError::TapFilter);
        attach(Some(&prog))?;
        attach(None)?;
    }
    Ok(())
}

/// The smallest program that verifies: `r0 = ret; exit`.
fn pass(ret: i32) -> Result<Vec<Insn>, AsmError> {
    let mut a = Asm::new();
    a.mov_imm(Reg::R0, ret).exit();
    a.finish()
}

/// `XDP_PASS`.
const XDP_PASS: i32 = 2;
/// `TCX_NEXT`.
const TCX_NEXT: i32 = -1;

/// Errors of the BPF probes.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// The probe program could not be assembled (a bug).
    #[error("assembling the probe program: {0}")]
    Asm(#[from] AsmError),
    /// A `bpf(2)` step failed.
    #[error(transparent)]
    Bpf(#[from] BpfError),
    /// The fast-path programs could not be set up.
    #[error(transparent)]
    FastPath(#[from] super::fast_path::FastPathError),
    /// A wire filter program or its maps could not be set up.
    #[error(transparent)]
    Filter(#[from] super::xdp_filter::FilterError),
    /// `TUNSETFILTEREBPF` refused the prefilter.
    #[error("TUNSETFILTEREBPF: {0}")]
    TapFilter(#[source] io::Error),
    /// The interface could not be found.
    #[error("interface {ifname}: {source}")]
    Interface {
        /// Its name.
        ifname: String,
        /// The lookup error.
        source: io::Error,
    },
}

/// Whether this kernel lets XDP programs call `bpf_xdp_adjust_meta`, which the fast path's
/// XDP prologue needs to hand a cached frame's target to its tcx program on the parent
/// (asked once per process: loads a four-instruction XDP program calling it). Some kernels
/// refuse the helper to XDP programs ("program of this type cannot use helper
/// bpf_xdp_adjust_meta#54"); there an AF_XDP parent's filter is loaded without the wire
/// cache (`xdp_filter::Filter::load_xdp`) and wire → endpoint frames take the slow path.
pub fn xdp_metadata() -> bool {
    static SUPPORTED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *SUPPORTED.get_or_init(|| {
        let mut a = Asm::new();
        a.mov_imm(Reg::R2, -8)
            .call(crate::port::bpf::helper::XDP_ADJUST_META)
            .mov_imm(Reg::R0, XDP_PASS)
            .exit();
        a.finish().is_ok_and(|insns| {
            Prog::load(ProgType::Xdp, &insns, "uvlan_probe", Some(AttachType::Xdp)).is_ok()
        })
    })
}

/// Loads a trivial XDP program and a trivial tc program (`BPF_PROG_LOAD`) and unloads them.
pub fn bpf() -> Result<(), ProbeError> {
    Prog::load(ProgType::Xdp, &pass(XDP_PASS)?, "uvlan_probe", None)?;
    Prog::load(ProgType::SchedCls, &pass(TCX_NEXT)?, "uvlan_probe", None)?;
    Ok(())
}

fn ifindex(ifname: &str) -> Result<u32, ProbeError> {
    ethtool::if_index(ifname).map_err(|source| ProbeError::Interface {
        ifname: ifname.to_string(),
        source,
    })
}

/// Attaches a trivial XDP program to `ifname` (in the calling thread's namespace) in `mode`
/// with a `bpf_link`, and detaches it.
pub fn xdp_attach(ifname: &str, mode: XdpMode) -> Result<(), ProbeError> {
    let prog = Prog::load(ProgType::Xdp, &pass(XDP_PASS)?, "uvlan_probe", None)?;
    let flags = match mode {
        XdpMode::Native => XDP_FLAGS_DRV_MODE,
        XdpMode::Generic => XDP_FLAGS_SKB_MODE,
    };
    Link::xdp(&prog, ifindex(ifname)?, flags)?;
    Ok(())
}

/// Attaches a trivial program at tcx ingress of `ifname` and detaches it (kernel ≥ 6.6).
pub fn tcx(ifname: &str) -> Result<(), ProbeError> {
    let prog = Prog::load(
        ProgType::SchedCls,
        &pass(TCX_NEXT)?,
        "uvlan_probe",
        Some(AttachType::TcxIngress),
    )?;
    Link::tcx_ingress(&prog, ifindex(ifname)?)?;
    Ok(())
}

/// Loads the fast-path programs (`port::fast_path`: the verifier accepts
/// `bpf_redirect_peer` and atomic adds) and attaches the veth one at tcx ingress of `ifname`
/// (a veth), then detaches it. Also loads what the wires' caches add with the fast path on:
/// the AF_PACKET wire's tc filter with its prologue, and its socket filter
/// (`bpf_skb_load_bytes`, `skb->cb` writes).
pub fn fast_path(ifname: &str) -> Result<(), ProbeError> {
    use super::xdp_filter::{Filter, FilterMaps};
    let fp = super::fast_path::FastPath::load(4)?;
    Link::tcx_ingress(fp.veth_prog(), ifindex(ifname)?)?;
    let tc = Filter::load_tc(FilterMaps::create(4)?, true)?;
    if let Some(cache) = tc.wire_cache() {
        let insns = super::fast_path::assemble_wire_socket(cache, super::inject::INJECT_MARK)?;
        Prog::load(ProgType::SocketFilter, &insns, "uvlan_probe", None)?;
    }
    Ok(())
}

/// Opens `ifname` as an AF_XDP parent exactly as the dataplane does (the filter, XDP native
/// else generic, one socket on one queue, small rings), and closes it. Answers the XDP mode
/// and bind mode the kernel gave.
pub fn af_xdp(ifname: &str) -> Result<(XdpMode, BindMode), XdpError> {
    let opts = XdpOptions {
        attach: XdpAttach::Auto,
        zero_copy: true,
        ring_size: 64,
        frame_size: 2048,
        tx_checksum: true,
        map_capacity: 16,
        queues: Some(1),
        wire_cache: false,
    };
    let p = XdpParent::open(ifname, &opts)?;
    Ok((p.xdp_mode(), p.bind_mode()))
}

/// Opens `ifname` as the AF_PACKET fallback parent (the socket and the tcx-ingress filter),
/// and closes it.
pub fn af_packet(ifname: &str) -> Result<(), AfPacketError> {
    let opts = AfPacketOptions {
        batch: 4,
        buf_size: 2048,
        map_capacity: 16,
        ..AfPacketOptions::default()
    };
    AfPacketParent::open(ifname, &opts).map(drop)
}

/// What `io_uring_setup(2)` and `IORING_REGISTER_PROBE` said.
#[derive(Debug)]
pub struct IoUringProbe {
    /// The opcodes uvlan cares about, or why no ring could be set up.
    pub ring: Result<IoUringOps, io::Error>,
    /// `kernel.io_uring_disabled` (0 allowed, 1 only for `io_uring_group` members and
    /// `CAP_SYS_ADMIN`, 2 disabled); `None` before 6.6, which has no such sysctl.
    pub disabled_sysctl: Option<u8>,
    /// Whether a seccomp filter is active on this thread (`Seccomp: 2` in its status).
    pub seccomp_filter: bool,
}

/// Opcodes the kernel supports, of those an io_uring event loop needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IoUringOps {
    /// `IORING_OP_READ_MULTISHOT` (6.7): one submission reads a TAP again and again.
    pub read_multishot: bool,
    /// `IORING_OP_POLL_ADD`.
    pub poll_add: bool,
}

/// Why no ring could be set up, in words.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IoUringRefusal {
    /// `kernel.io_uring_disabled` = 2, or 1 without the privilege it asks for.
    DisabledBySysctl(u8),
    /// The call was refused while the sysctl allows it and a seccomp filter is active.
    Seccomp,
    /// `ENOSYS` without seccomp: the kernel has no io_uring (`CONFIG_IO_URING=n`).
    NotBuilt,
    /// Something else (the errno says what).
    Other,
}

impl fmt::Display for IoUringRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IoUringRefusal::DisabledBySysctl(v) => {
                write!(f, "disabled by kernel.io_uring_disabled = {v}")
            }
            IoUringRefusal::Seccomp => f.write_str("blocked by a seccomp filter"),
            IoUringRefusal::NotBuilt => f.write_str("not built into this kernel"),
            IoUringRefusal::Other => f.write_str("refused"),
        }
    }
}

impl IoUringProbe {
    /// Why setting up a ring failed, when it did.
    pub fn refusal(&self) -> Option<IoUringRefusal> {
        let e = self.ring.as_ref().err()?;
        let errno = e.raw_os_error();
        Some(match (errno, self.disabled_sysctl) {
            (Some(libc::EPERM), Some(v @ (1 | 2))) => IoUringRefusal::DisabledBySysctl(v),
            (Some(libc::EPERM | libc::ENOSYS | libc::EACCES), _) if self.seccomp_filter => {
                IoUringRefusal::Seccomp
            }
            (Some(libc::ENOSYS), _) => IoUringRefusal::NotBuilt,
            _ => IoUringRefusal::Other,
        })
    }
}

/// Sets up a small io_uring, asks which opcodes the kernel has, and tears it down.
pub fn io_uring() -> IoUringProbe {
    let disabled_sysctl = std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled")
        .ok()
        .and_then(|s| s.trim().parse().ok());
    let seccomp_filter = std::fs::read_to_string("/proc/thread-self/status")
        .map(|s| {
            s.lines()
                .any(|l| l.strip_prefix("Seccomp:").map(str::trim) == Some("2"))
        })
        .unwrap_or(false);
    let ring = io_uring::IoUring::new(4).and_then(|ring| {
        let mut probe = io_uring::Probe::new();
        ring.submitter().register_probe(&mut probe)?;
        Ok(IoUringOps {
            read_multishot: probe.is_supported(io_uring::opcode::ReadMulti::CODE),
            poll_add: probe.is_supported(io_uring::opcode::PollAdd::CODE),
        })
    });
    IoUringProbe {
        ring,
        disabled_sysctl,
        seccomp_filter,
    }
}

/// The soft and hard `RLIMIT_NOFILE` of this process.
pub fn open_file_limit() -> io::Result<(u64, u64)> {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit into the live, writable `r`.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((r.rlim_cur, r.rlim_max))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_programs_assemble() {
        assert_eq!(pass(XDP_PASS).unwrap().len(), 2);
        assert_eq!(pass(TCX_NEXT).unwrap().len(), 2);
    }

    #[test]
    fn io_uring_refusals_are_explained() {
        let p = |errno: i32, sysctl: Option<u8>, seccomp: bool| {
            IoUringProbe {
                ring: Err(io::Error::from_raw_os_error(errno)),
                disabled_sysctl: sysctl,
                seccomp_filter: seccomp,
            }
            .refusal()
        };
        assert_eq!(
            p(libc::EPERM, Some(2), false),
            Some(IoUringRefusal::DisabledBySysctl(2))
        );
        assert_eq!(
            p(libc::EPERM, Some(1), true),
            Some(IoUringRefusal::DisabledBySysctl(1))
        );
        assert_eq!(p(libc::EPERM, Some(0), true), Some(IoUringRefusal::Seccomp));
        assert_eq!(p(libc::ENOSYS, None, true), Some(IoUringRefusal::Seccomp));
        assert_eq!(p(libc::ENOSYS, None, false), Some(IoUringRefusal::NotBuilt));
        assert_eq!(p(libc::ENOMEM, Some(0), false), Some(IoUringRefusal::Other));
        let ok = IoUringProbe {
            ring: Ok(IoUringOps {
                read_multishot: true,
                poll_add: true,
            }),
            disabled_sysctl: Some(0),
            seccomp_filter: false,
        };
        assert_eq!(ok.refusal(), None);
        assert_eq!(
            IoUringRefusal::DisabledBySysctl(2).to_string(),
            "disabled by kernel.io_uring_disabled = 2"
        );
    }

    #[test]
    fn the_process_has_an_open_file_limit() {
        let (soft, hard) = open_file_limit().unwrap();
        assert!(soft >= 1 && soft <= hard, "{soft} {hard}");
    }

    #[test]
    fn io_uring_probe_answers_here() {
        // Whatever this machine allows, the probe answers without panicking, and an
        // available ring always has POLL_ADD (5.1).
        match io_uring().ring {
            Ok(ops) => assert!(ops.poll_add),
            Err(e) => assert!(e.raw_os_error().is_some(), "{e}"),
        }
    }
}
