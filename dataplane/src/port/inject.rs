//! The way into a parent's own receive path: a daemon-owned TAP whose tcx-ingress program
//! redirects every frame written to it into the parent's ingress (`bpf_redirect` with
//! `BPF_F_INGRESS`). The host then receives the frame as if it had arrived on the parent: the
//! kernel's ipvlan hands such frames to its master with `dev_forward_skb` (C12, C15, C37).
//!
//! ```text
//!  dataplane ── write(vnet hdr + frame) ──► uviN (TAP, up, no addresses, IPv6 off)
//!                                             │ tcx ingress: mark = INJECT_MARK,
//!                                             │ bpf_redirect(parent, BPF_F_INGRESS)
//!                                             ▼
//!                            parent's receive path (__netif_receive_skb_core) ──► host stack
//! ```
//!
//! Kernel facts relied on (measured on Linux 6.18 with a veth parent):
//! - A frame written to a TAP fd runs the TAP's tcx ingress; `bpf_redirect(ifindex,
//!   BPF_F_INGRESS)` (helper 23) queues it to the parent's backlog (`__bpf_rx_skb` →
//!   `netif_rx`), and `eth_type_trans` on the parent sets `pkt_type` (`PACKET_HOST` when the
//!   destination is the parent's MAC). A UDP socket bound to the parent's address receives
//!   it.
//! - The virtio_net_hdr written with the frame is honoured as on any TAP write: with
//!   `NEEDS_CSUM` the skb is `CHECKSUM_PARTIAL` and the local stack accepts it unverified,
//!   as it does a partial-checksum skb from a veth; without it, the stack verifies the
//!   checksum (a wrong one is counted in `UdpInCsumErrors` and dropped). GSO headers make a
//!   GSO skb, as a veth hands its peer: the super-frame goes up whole, and a UDP GSO one
//!   reaches a socket without `UDP_GRO` as one datagram per segment (`udp_unexpected_gso`);
//!   the frame is therefore passed on with its header, neither segmented nor completed.
//! - The redirect stays in one namespace, so `skb->mark` survives; every packet tap on the
//!   parent (`ETH_P_ALL` AF_PACKET sockets, including uvlan's own copy and fallback sockets)
//!   sees the injected frame with `PACKET_HOST` or its group type. uvlan's sockets drop
//!   frames carrying [`INJECT_MARK`] in their classic BPF filter, so an injected frame is
//!   never taken back as wire traffic. The mark stays on the skb up the host stack (a host
//!   `fwmark` rule matching this value would see it).
//! - Native XDP on the parent never sees the injected skb (it runs in the driver); the tcx
//!   filter of the AF_PACKET fallback does, and passes it (no endpoint key matches a frame
//!   the engine gives to the host).
//! - The TAP is not persistent: it disappears with its file descriptor, so a killed daemon
//!   leaves none behind.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use super::bpf::{Asm, BpfError, Link, Prog, ProgType, Reg, Size};
use super::tap::{Offloads, Tap, TapError, TapOptions, VnetHdr};

/// The `skb->mark` every injected frame carries ("uvln" in ASCII), so that uvlan's own packet
/// sockets on the parent can drop it.
pub const INJECT_MARK: u32 = 0x7576_6c6e;

/// The alias prefix of an injection TAP (`ip link` shows `uvlan-inject:PARENT`). The daemon
/// sets it over netlink ([`HostInjector::open`] has no netlink of its own; `/sys/class/net`
/// shows the namespace sysfs was mounted in, not necessarily the calling thread's).
pub const ALIAS_PREFIX: &str = "uvlan-inject:";

/// `bpf_redirect(ifindex, flags)`.
const HELPER_REDIRECT: i32 = 23;
/// `BPF_F_INGRESS`: deliver to the target's receive path, not its transmit path.
const BPF_F_INGRESS: i32 = 1;
/// `offsetof(struct __sk_buff, mark)`.
const SKB_MARK: i16 = 8;

/// Errors opening an injector.
#[derive(Debug, thiserror::Error)]
pub enum InjectError {
    /// The TAP could not be made.
    #[error("host injection TAP: {0}")]
    Tap(#[from] TapError),
    /// Configuring the TAP failed.
    #[error("host injection TAP {ifname}: {what}: {source}")]
    Setup {
        /// The TAP's name.
        ifname: String,
        /// What failed.
        what: &'static str,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The redirect program could not be loaded or attached (tcx needs kernel 6.6).
    #[error("host injection program for {parent}: {source}")]
    Bpf {
        /// The parent's name.
        parent: String,
        /// The `bpf(2)` error.
        #[source]
        source: BpfError,
    },
}

/// A parent's injection TAP with its redirect program attached. Dropping it detaches the
/// program and deletes the TAP.
#[derive(Debug)]
pub struct HostInjector {
    tap: Tap,
    ifname: String,
    _link: Link,
    _prog: Prog,
}

impl HostInjector {
    /// Makes the TAP (`uvi%d`, in the calling thread's namespace, which must be the
    /// parent's), turns IPv6 off on it (no router solicitations of its own; `/proc/sys/net`
    /// follows the calling thread's namespace), brings it up and attaches the redirect
    /// program.
    pub fn open(parent: &str, parent_ifindex: u32) -> Result<HostInjector, InjectError> {
        let tap = Tap::create(&TapOptions {
            name: Some("uvi%d".to_string()),
            offloads: Offloads::DEFAULT,
            ..TapOptions::default()
        })?;
        let ifname = tap.name()?;
        let setup = |what: &'static str, source: io::Error| InjectError::Setup {
            ifname: ifname.clone(),
            what,
            source,
        };
        // A kernel without IPv6 has no such file: nothing to turn off then.
        match std::fs::write(
            format!("/proc/sys/net/ipv6/conf/{ifname}/disable_ipv6"),
            "1",
        ) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                return Err(setup("turning IPv6 off", e))
            }
            _ => {}
        }
        set_up(&ifname).map_err(|e| setup("bringing it up", e))?;
        let bpf = |source| InjectError::Bpf {
            parent: parent.to_string(),
            source,
        };
        let prog = Prog::load(
            ProgType::SchedCls,
            &program(parent_ifindex).map_err(|e| bpf(e.into()))?,
            "uvlan_inject",
            Some(super::bpf::AttachType::TcxIngress),
        )
        .map_err(bpf)?;
        let link = Link::tcx_ingress(&prog, tap.ifindex()).map_err(bpf)?;
        Ok(HostInjector {
            tap,
            ifname,
            _link: link,
            _prog: prog,
        })
    }

    /// The TAP's name.
    pub fn ifname(&self) -> &str {
        &self.ifname
    }

    /// The TAP's interface index.
    pub fn ifindex(&self) -> u32 {
        self.tap.ifindex()
    }

    /// Hands one frame (with its virtio_net_hdr: partial checksum and GSO as a TAP takes
    /// them) to the parent's receive path.
    pub fn inject(&self, hdr: &VnetHdr, frame: &[u8]) -> io::Result<()> {
        self.tap.write_frame(hdr, frame)
    }
}

/// `mark = INJECT_MARK; return bpf_redirect(parent, BPF_F_INGRESS)`.
fn program(parent_ifindex: u32) -> Result<Vec<super::bpf::Insn>, super::bpf::AsmError> {
    let mut a = Asm::new();
    a.st_imm(Size::W, Reg::R1, SKB_MARK, INJECT_MARK as i32)
        .mov_imm(Reg::R1, parent_ifindex as i32)
        .mov_imm(Reg::R2, BPF_F_INGRESS)
        .call(HELPER_REDIRECT)
        .exit();
    a.finish()
}

/// `SIOCSIFFLAGS` with `IFF_UP` added to the current flags.
fn set_up(ifname: &str) -> io::Result<()> {
    // SAFETY: an all-zero `ifreq` is a valid value of this plain C struct.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in req
        .ifr_name
        .iter_mut()
        .zip(ifname.bytes().take(libc::IFNAMSIZ - 1))
    {
        *d = s as libc::c_char;
    }
    // SAFETY: plain socket(2); the result is checked before use.
    let raw = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `raw` is a new descriptor nobody else owns.
    let sock = unsafe { OwnedFd::from_raw_fd(raw) };
    // SAFETY: `req` is a live `ifreq` with a NUL-terminated name; the kernel reads and writes
    // only inside it.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `ifru_flags` is the union member SIOCGIFFLAGS filled in.
    unsafe { req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short };
    // SAFETY: as for SIOCGIFFLAGS.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
