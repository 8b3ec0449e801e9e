//! A **VLAN access port** made of two small tc (tcx) programs, for hosts that must sit on one
//! VLAN untagged while the kernel has no 802.1Q devices (no `CONFIG_VLAN_8021Q`, no
//! `act_vlan`, no bridge VLAN filtering).
//!
//! Attached to an interface `IF` with VLAN id `VID`, it behaves like a switch port in access
//! mode, seen from the host that owns `IF`:
//!
//! - **ingress** (frames arriving on `IF`): a frame tagged `VID` (TPID 0x8100) loses its tag
//!   and goes up the stack untagged; every other frame (untagged, another VID, an 802.1ad
//!   outer tag) is dropped, so the host only ever hears its VLAN.
//! - **egress** (frames the host sends on `IF`): an untagged frame gets the tag `VID`
//!   (priority 0); a frame that already carries a tag is dropped (an access port never emits
//!   double tags).
//!
//! ```text
//!   trunk (tags 20, 30, ...) ──► IF ──ingress: pop 20, drop the rest──► host stack
//!   trunk  ◄── tag 20 pushed ─── IF ◄──egress: push 20─────────────────  host stack
//! ```
//!
//! uvlan's labs put one on an upstream gateway's veth so that a gateway on "VLAN 20" talks
//! to uvlan networks on `parent=eth0.20` through a plain (non-VLAN-filtering) Linux bridge.
//!
//! # Kernel facts relied on
//! - `bpf_skb_vlan_push` (helper 18) and `bpf_skb_vlan_pop` (helper 19), neither GPL-only.
//!   `push` puts the tag into skb metadata (`__vlan_hwaccel_put_tag`); the device's TX path
//!   writes it into the frame unless the device offloads tag insertion (veth does by
//!   default, and then the tag travels as metadata to the peer). `pop` removes the metadata
//!   tag, or the tag in the packet data when there is none in metadata.
//! - At tcx ingress the core receive path has already moved an outer 802.1Q/802.1ad tag into
//!   metadata (`skb_vlan_untag`), so `__sk_buff.vlan_present/vlan_tci/vlan_proto` (offsets
//!   20/24/28) describe it. A tag still in the data (as under `BPF_PROG_TEST_RUN`, which
//!   builds the skb without untagging) is parsed from the packet instead.
//! - `__sk_buff.data`/`data_end` at 76/80; `TCX_NEXT` = -1, `TC_ACT_SHOT` = 2;
//!   `BPF_TCX_INGRESS`/`BPF_TCX_EGRESS` links need kernel ≥ 6.6. A link is an fd: dropping
//!   [`VlanAccess`] (or the process dying) detaches both programs.
//!
//! **Talking to a uvlan parent on a veth:** with the kernel's default TX VLAN offload on the
//! access port's device, the pushed tag leaves as skb metadata, and a veth hands metadata to
//! its peer as it is. uvlan's XDP filter on a parent sees only the packet data, so such a
//! frame looks untagged to it and is missed. Turn the offload off on the device (`ethtool -K
//! IF txvlan off`, and on every veth between it and the parent, e.g. bridge ports) so the tag
//! is written into the frame, as on a physical wire; `uvlan lab` does this for every veth it
//! creates.
//!
//! The egress program checks its own work: after the push it re-reads the skb's tag and
//! drops the frame unless the tag is `VID`, so a frame never leaves untagged by accident.
//! That check is also what makes the push observable under `BPF_PROG_TEST_RUN`, whose output
//! is the packet data only (a metadata tag is not written back).

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use super::bpf::{
    Alu, Asm, AsmError, AttachType, BpfError, Insn, Jmp, Link, Prog, ProgType, Reg, Size,
};
use super::ethtool::if_index;

/// Helper id of `bpf_skb_vlan_push(skb, vlan_proto, vlan_tci)`.
const HELPER_SKB_VLAN_PUSH: i32 = 18;
/// Helper id of `bpf_skb_vlan_pop(skb)`.
const HELPER_SKB_VLAN_POP: i32 = 19;

const SKB_VLAN_PRESENT: i16 = 20;
const SKB_VLAN_TCI: i16 = 24;
const SKB_VLAN_PROTO: i16 = 28;
const SKB_DATA: i16 = 76;
const SKB_DATA_END: i16 = 80;

/// `TCX_NEXT`: let the next program (or the default: pass) decide.
pub const TCX_NEXT: i32 = -1;
/// `TC_ACT_SHOT`: drop.
pub const TC_ACT_SHOT: i32 = 2;

const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88a8;

/// Errors of the VLAN access port.
#[derive(Debug, thiserror::Error)]
pub enum VlanAccessError {
    /// The VLAN id cannot be used on an access port.
    #[error("VLAN id {0} cannot be used on an access port: use 1..=4094")]
    BadVid(u16),
    /// The network namespace file could not be opened or joined.
    #[error("cannot enter network namespace {path}: {source} (is it a netns file such as /run/netns/NAME or /proc/PID/ns/net?)")]
    Netns {
        /// The namespace file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The interface does not exist in that namespace.
    #[error("no interface {ifname:?} in network namespace {netns}: {source}")]
    NoInterface {
        /// The interface name.
        ifname: String,
        /// The namespace file.
        netns: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// Loading or attaching a program failed.
    #[error("VLAN access port {ifname} (VID {vid}): {source}")]
    Bpf {
        /// The interface.
        ifname: String,
        /// The VLAN id.
        vid: u16,
        /// The `bpf(2)` error (with the verifier log when it refused a program).
        #[source]
        source: BpfError,
    },
    /// A program could not be assembled (a bug in this module).
    #[error("VLAN access port program: {0}")]
    Assemble(#[from] AsmError),
    /// The helper thread that enters the namespace could not be started.
    #[error("cannot start a thread to enter the network namespace: {0}")]
    Thread(#[source] io::Error),
}

fn check_vid(vid: u16) -> Result<(), VlanAccessError> {
    if vid == 0 || vid > 4094 {
        return Err(VlanAccessError::BadVid(vid));
    }
    Ok(())
}

/// Assemble the ingress program: pop tag `vid`, drop everything else.
///
/// Registers: r6 = ctx, r7/r8 = packet start/end (data path only).
pub fn assemble_ingress(vid: u16) -> Result<Vec<Insn>, VlanAccessError> {
    use Reg::*;
    check_vid(vid)?;
    let mut a = Asm::new();
    let drop = a.label();
    let in_data = a.label();
    let pop = a.label();
    a.mov_reg(R6, R1)
        .ldx(Size::W, R2, R6, SKB_VLAN_PRESENT)
        .jmp_imm(Jmp::Eq, R2, 0, in_data)
        // Tag in metadata: it must be 802.1Q with our VID.
        .ldx(Size::W, R2, R6, SKB_VLAN_PROTO)
        .jmp_imm(Jmp::Ne, R2, i32::from(ETH_P_8021Q.to_be()), drop)
        .ldx(Size::W, R2, R6, SKB_VLAN_TCI)
        .alu_imm(Alu::And, R2, 0x0fff)
        .jmp_imm(Jmp::Ne, R2, i32::from(vid), drop)
        .ja(pop);
    // Tag still in the packet data.
    a.bind(in_data)
        .ldx(Size::W, R7, R6, SKB_DATA)
        .ldx(Size::W, R8, R6, SKB_DATA_END)
        .mov_reg(R2, R7)
        .alu_imm(Alu::Add, R2, 18)
        .jmp_reg(Jmp::Gt, R2, R8, drop)
        .ldx(Size::H, R3, R7, 12)
        .be(R3, 16)
        .jmp_imm(Jmp::Ne, R3, i32::from(ETH_P_8021Q), drop)
        .ldx(Size::H, R3, R7, 14)
        .be(R3, 16)
        .alu_imm(Alu::And, R3, 0x0fff)
        .jmp_imm(Jmp::Ne, R3, i32::from(vid), drop);
    a.bind(pop)
        .mov_reg(R1, R6)
        .call(HELPER_SKB_VLAN_POP)
        .jmp_imm(Jmp::Ne, R0, 0, drop)
        .mov_imm(R0, TCX_NEXT)
        .exit();
    a.bind(drop).mov_imm(R0, TC_ACT_SHOT).exit();
    Ok(a.finish()?)
}

/// Assemble the egress program: push tag `vid` on untagged frames, drop tagged ones.
pub fn assemble_egress(vid: u16) -> Result<Vec<Insn>, VlanAccessError> {
    use Reg::*;
    check_vid(vid)?;
    let mut a = Asm::new();
    let drop = a.label();
    a.mov_reg(R6, R1)
        .ldx(Size::W, R2, R6, SKB_VLAN_PRESENT)
        .jmp_imm(Jmp::Ne, R2, 0, drop)
        .ldx(Size::W, R7, R6, SKB_DATA)
        .ldx(Size::W, R8, R6, SKB_DATA_END)
        .mov_reg(R2, R7)
        .alu_imm(Alu::Add, R2, 14)
        .jmp_reg(Jmp::Gt, R2, R8, drop)
        .ldx(Size::H, R3, R7, 12)
        .be(R3, 16)
        .jmp_imm(Jmp::Eq, R3, i32::from(ETH_P_8021Q), drop)
        .jmp_imm(Jmp::Eq, R3, i32::from(ETH_P_8021AD), drop)
        .mov_reg(R1, R6)
        .mov_imm(R2, i32::from(ETH_P_8021Q.to_be()))
        .mov_imm(R3, i32::from(vid))
        .call(HELPER_SKB_VLAN_PUSH)
        .jmp_imm(Jmp::Ne, R0, 0, drop)
        // Verify: the skb now carries exactly our tag.
        .ldx(Size::W, R2, R6, SKB_VLAN_PRESENT)
        .jmp_imm(Jmp::Eq, R2, 0, drop)
        .ldx(Size::W, R2, R6, SKB_VLAN_TCI)
        .alu_imm(Alu::And, R2, 0x0fff)
        .jmp_imm(Jmp::Ne, R2, i32::from(vid), drop)
        .mov_imm(R0, TCX_NEXT)
        .exit();
    a.bind(drop).mov_imm(R0, TC_ACT_SHOT).exit();
    Ok(a.finish()?)
}

/// The two loaded (not yet attached) programs of an access port.
#[derive(Debug)]
pub struct VlanAccessProgs {
    ingress: Prog,
    egress: Prog,
    vid: u16,
}

impl VlanAccessProgs {
    /// Assemble and load both programs for VLAN `vid` (1..=4094).
    pub fn load(vid: u16) -> Result<VlanAccessProgs, VlanAccessError> {
        let bpf = |source| VlanAccessError::Bpf {
            ifname: String::new(),
            vid,
            source,
        };
        let ingress = Prog::load(
            ProgType::SchedCls,
            &assemble_ingress(vid)?,
            "uvlan_vacc_in",
            Some(AttachType::TcxIngress),
        )
        .map_err(bpf)?;
        let egress = Prog::load(
            ProgType::SchedCls,
            &assemble_egress(vid)?,
            "uvlan_vacc_out",
            Some(AttachType::TcxEgress),
        )
        .map_err(bpf)?;
        Ok(VlanAccessProgs {
            ingress,
            egress,
            vid,
        })
    }

    /// The ingress (pop) program.
    pub fn ingress(&self) -> &Prog {
        &self.ingress
    }

    /// The egress (push) program.
    pub fn egress(&self) -> &Prog {
        &self.egress
    }

    /// The VLAN id.
    pub fn vid(&self) -> u16 {
        self.vid
    }
}

/// An attached VLAN access port: holds the two tcx links. Dropping it detaches both
/// programs (so does the death of the process).
#[derive(Debug)]
pub struct VlanAccess {
    _progs: VlanAccessProgs,
    ingress: Link,
    egress: Link,
    ifname: String,
    netns: PathBuf,
    vid: u16,
}

impl VlanAccess {
    /// Make interface `ifname` of the network namespace `netns` (a netns file:
    /// `/run/netns/NAME` or `/proc/PID/ns/net`) an access port of VLAN `vid` (1..=4094).
    /// The calling thread's namespace is not changed (a short-lived thread enters `netns`).
    pub fn attach_in_netns(
        netns: &Path,
        ifname: &str,
        vid: u16,
    ) -> Result<VlanAccess, VlanAccessError> {
        check_vid(vid)?;
        let ns: OwnedFd =
            File::open(netns)
                .map(OwnedFd::from)
                .map_err(|source| VlanAccessError::Netns {
                    path: netns.to_path_buf(),
                    source,
                })?;
        let raw = ns.as_raw_fd();
        let (progs, ingress, egress) = std::thread::scope(|s| {
            let h = std::thread::Builder::new()
                .name("uvlan-vacc-netns".into())
                .spawn_scoped(s, move || -> Result<_, VlanAccessError> {
                    // SAFETY: `raw` is an open namespace fd borrowed from `ns`, which outlives
                    // this scoped thread; setns only changes this short-lived thread's
                    // network namespace.
                    if unsafe { libc::setns(raw, libc::CLONE_NEWNET) } != 0 {
                        return Err(VlanAccessError::Netns {
                            path: netns.to_path_buf(),
                            source: io::Error::last_os_error(),
                        });
                    }
                    let ifindex =
                        if_index(ifname).map_err(|source| VlanAccessError::NoInterface {
                            ifname: ifname.to_string(),
                            netns: netns.to_path_buf(),
                            source,
                        })?;
                    let bpf = |source| VlanAccessError::Bpf {
                        ifname: ifname.to_string(),
                        vid,
                        source,
                    };
                    let progs = VlanAccessProgs::load(vid).map_err(|e| match e {
                        VlanAccessError::Bpf { source, .. } => bpf(source),
                        other => other,
                    })?;
                    let ingress = Link::tcx_ingress(&progs.ingress, ifindex).map_err(bpf)?;
                    let egress = Link::create(&progs.egress, ifindex, AttachType::TcxEgress, 0)
                        .map_err(bpf)?;
                    Ok((progs, ingress, egress))
                })
                .map_err(VlanAccessError::Thread)?;
            match h.join() {
                Ok(r) => r,
                Err(panic) => std::panic::resume_unwind(panic),
            }
        })?;
        Ok(VlanAccess {
            _progs: progs,
            ingress,
            egress,
            ifname: ifname.to_string(),
            netns: netns.to_path_buf(),
            vid,
        })
    }

    /// The interface name.
    pub fn ifname(&self) -> &str {
        &self.ifname
    }

    /// The namespace file it was attached in.
    pub fn netns(&self) -> &Path {
        &self.netns
    }

    /// The VLAN id.
    pub fn vid(&self) -> u16 {
        self.vid
    }

    /// The interface index (in its namespace).
    pub fn ifindex(&self) -> u32 {
        self.ingress.ifindex()
    }

    /// The ingress link.
    pub fn ingress_link(&self) -> &Link {
        &self.ingress
    }

    /// The egress link.
    pub fn egress_link(&self) -> &Link {
        &self.egress
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::{Command, Stdio};

    const DST: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
    const SRC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];

    /// An Ethernet frame with an optional 802.1Q tag (`tpid`, `tci`) and `payload`.
    fn frame(tag: Option<(u16, u16)>, ethertype: u16, payload: &[u8]) -> Vec<u8> {
        let mut f = Vec::new();
        f.extend_from_slice(&DST);
        f.extend_from_slice(&SRC);
        if let Some((tpid, tci)) = tag {
            f.extend_from_slice(&tpid.to_be_bytes());
            f.extend_from_slice(&tci.to_be_bytes());
        }
        f.extend_from_slice(&ethertype.to_be_bytes());
        f.extend_from_slice(payload);
        f
    }

    fn ipv4_payload() -> Vec<u8> {
        let mut p = vec![0x45, 0, 0, 28, 0, 0, 0, 0, 64, 1, 0, 0];
        p.extend_from_slice(&[192, 0, 2, 1, 192, 0, 2, 2]);
        p.extend_from_slice(&[8, 0, 0xf7, 0xff, 0, 0, 0, 0]);
        p
    }

    fn arp_payload() -> Vec<u8> {
        let mut p = vec![0, 1, 8, 0, 6, 4, 0, 1];
        p.extend_from_slice(&SRC);
        p.extend_from_slice(&[192, 0, 2, 2, 0, 0, 0, 0, 0, 0, 192, 0, 2, 1]);
        p
    }

    fn ret(r: &crate::port::bpf::TestRun) -> i32 {
        r.retval as i32
    }

    #[test]
    fn ingress_pops_its_vid_and_drops_everything_else() {
        let p = VlanAccessProgs::load(20).unwrap();
        assert_eq!(p.vid(), 20);
        for (ethertype, payload) in [(0x0800, ipv4_payload()), (0x0806, arp_payload())] {
            let tagged = frame(Some((0x8100, 20)), ethertype, &payload);
            let r = p.ingress().test_run(&tagged, 1).unwrap();
            assert_eq!(ret(&r), TCX_NEXT);
            assert_eq!(r.data_out, frame(None, ethertype, &payload), "tag removed");
        }
        // PCP and DEI bits do not belong to the VLAN id.
        let r = p
            .ingress()
            .test_run(
                &frame(Some((0x8100, 0xf000 | 20)), 0x0800, &ipv4_payload()),
                1,
            )
            .unwrap();
        assert_eq!(ret(&r), TCX_NEXT);
        assert_eq!(r.data_out, frame(None, 0x0800, &ipv4_payload()));
        // Another VLAN, untagged, priority-tagged, 802.1ad: dropped.
        for f in [
            frame(Some((0x8100, 30)), 0x0800, &ipv4_payload()),
            // VID 276 shares its low byte with 20: the whole 12-bit id is compared.
            frame(Some((0x8100, 0x100 | 20)), 0x0800, &ipv4_payload()),
            frame(None, 0x0800, &ipv4_payload()),
            frame(None, 0x0806, &arp_payload()),
            frame(Some((0x8100, 0)), 0x0800, &ipv4_payload()),
            frame(Some((0x88a8, 20)), 0x0800, &ipv4_payload()),
        ] {
            let r = p.ingress().test_run(&f, 1).unwrap();
            assert_eq!(ret(&r), TC_ACT_SHOT, "{f:02x?}");
        }
    }

    #[test]
    fn ingress_drops_a_tpid_without_room_for_the_tag() {
        let p = VlanAccessProgs::load(20).unwrap();
        // 14-byte header with TPID 0x8100 but no TCI: too short to be tagged.
        let mut f = Vec::new();
        f.extend_from_slice(&DST);
        f.extend_from_slice(&SRC);
        f.extend_from_slice(&0x8100u16.to_be_bytes());
        let r = p.ingress().test_run(&f, 1).unwrap();
        assert_eq!(ret(&r), TC_ACT_SHOT);
        f.extend_from_slice(&20u16.to_be_bytes());
        let r = p.ingress().test_run(&f, 1).unwrap();
        assert_eq!(ret(&r), TC_ACT_SHOT, "16 bytes: no inner ethertype");
    }

    #[test]
    fn egress_pushes_its_vid_and_refuses_tagged_frames() {
        let p = VlanAccessProgs::load(20).unwrap();
        for (ethertype, payload) in [(0x0800, ipv4_payload()), (0x0806, arp_payload())] {
            let f = frame(None, ethertype, &payload);
            let r = p.egress().test_run(&f, 1).unwrap();
            // TCX_NEXT is returned only after the program re-read the skb's tag and found
            // VID 20 there (the tag lives in metadata; the data is unchanged).
            assert_eq!(ret(&r), TCX_NEXT);
            assert_eq!(r.data_out, f);
        }
        for f in [
            frame(Some((0x8100, 20)), 0x0800, &ipv4_payload()),
            frame(Some((0x8100, 30)), 0x0800, &ipv4_payload()),
            frame(Some((0x88a8, 20)), 0x0800, &ipv4_payload()),
        ] {
            let r = p.egress().test_run(&f, 1).unwrap();
            assert_eq!(ret(&r), TC_ACT_SHOT, "{f:02x?}");
        }
    }

    #[test]
    fn programs_differ_only_by_vid_and_bad_vids_are_refused() {
        assert_ne!(assemble_ingress(20).unwrap(), assemble_ingress(30).unwrap());
        assert_ne!(assemble_egress(20).unwrap(), assemble_egress(30).unwrap());
        assert_eq!(
            assemble_ingress(20).unwrap().len(),
            assemble_ingress(4094).unwrap().len()
        );
        for bad in [0u16, 4095, 5000] {
            assert!(matches!(
                VlanAccessProgs::load(bad),
                Err(VlanAccessError::BadVid(v)) if v == bad
            ));
            let e =
                VlanAccess::attach_in_netns(Path::new("/proc/self/ns/net"), "lo", bad).unwrap_err();
            assert!(e.to_string().contains("1..=4094"), "{e}");
        }
        // VID 20 accepted, VID 30 refused by the VID-20 program; and vice versa.
        let p30 = VlanAccessProgs::load(30).unwrap();
        let f20 = frame(Some((0x8100, 20)), 0x0800, &ipv4_payload());
        let f30 = frame(Some((0x8100, 30)), 0x0800, &ipv4_payload());
        assert_eq!(ret(&p30.ingress().test_run(&f20, 1).unwrap()), TC_ACT_SHOT);
        assert_eq!(ret(&p30.ingress().test_run(&f30, 1).unwrap()), TCX_NEXT);
    }

    #[test]
    fn attach_errors_name_the_namespace_and_interface() {
        let e = VlanAccess::attach_in_netns(Path::new("/run/netns/uvt-no-such-ns"), "p0", 20)
            .unwrap_err();
        assert!(matches!(e, VlanAccessError::Netns { .. }), "{e}");
        assert!(e.to_string().contains("uvt-no-such-ns"), "{e}");
        let e = VlanAccess::attach_in_netns(Path::new("/proc/self/ns/net"), "uvt-no-such-if", 20)
            .unwrap_err();
        assert!(matches!(e, VlanAccessError::NoInterface { .. }), "{e}");
        assert!(e.to_string().contains("uvt-no-such-if"), "{e}");
    }

    /// Two namespaces joined by a veth pair, deleted on drop.
    struct Pair {
        a: String,
        b: String,
    }

    fn ip(args: &[&str]) {
        let st = Command::new("ip")
            .args(args)
            .stdin(Stdio::null())
            .status()
            .expect("run ip");
        assert!(st.success(), "ip {args:?} failed");
    }

    impl Pair {
        fn new(tag: &str) -> Pair {
            let id = std::process::id() % 100_000;
            let p = Pair {
                a: format!("uvt{id}{tag}a"),
                b: format!("uvt{id}{tag}b"),
            };
            ip(&["netns", "add", &p.a]);
            ip(&["netns", "add", &p.b]);
            ip(&[
                "link", "add", "p0", "netns", &p.a, "type", "veth", "peer", "name", "p0", "netns",
                &p.b,
            ]);
            for (ns, addr) in [(&p.a, "192.0.2.1/24"), (&p.b, "192.0.2.2/24")] {
                ip(&["-n", ns, "addr", "add", addr, "dev", "p0"]);
                ip(&["-n", ns, "link", "set", "p0", "up"]);
            }
            p
        }
        fn path(ns: &str) -> PathBuf {
            Path::new("/run/netns").join(ns)
        }
        fn ping(&self) -> bool {
            Command::new("ip")
                .args(["netns", "exec", &self.a, "ping", "-n", "-q", "-c", "1"])
                .args(["-i", "0.2", "-w", "2", "192.0.2.2"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .expect("run ping")
                .success()
        }
    }

    impl Drop for Pair {
        fn drop(&mut self) {
            for ns in [&self.a, &self.b] {
                let _ = Command::new("ip")
                    .args(["netns", "delete", ns])
                    .stderr(Stdio::null())
                    .status();
            }
        }
    }

    #[test]
    fn access_ports_on_both_ends_of_a_veth_talk_only_on_the_same_vlan() {
        let pair = Pair::new("v");
        assert!(
            pair.ping(),
            "plain veth pair must work before any port is attached"
        );
        // Only one end tags: the other (a host without VLAN devices) ignores tagged frames.
        let a20 = VlanAccess::attach_in_netns(&Pair::path(&pair.a), "p0", 20).unwrap();
        assert_eq!((a20.ifname(), a20.vid()), ("p0", 20));
        assert!(a20.ifindex() > 0);
        assert!(
            !pair.ping(),
            "tagged frames must not reach an untagged host"
        );
        // Both ends on VLAN 20: the tags are pushed and popped, the ping works.
        let b20 = VlanAccess::attach_in_netns(&Pair::path(&pair.b), "p0", 20).unwrap();
        assert!(pair.ping(), "same VLAN on both ends");
        // VLAN 20 against VLAN 30: nothing gets through.
        drop(b20);
        let b30 = VlanAccess::attach_in_netns(&Pair::path(&pair.b), "p0", 30).unwrap();
        assert!(!pair.ping(), "VLAN 20 and VLAN 30 must not talk");
        // Dropping the guards detaches the programs: plain traffic again.
        drop(b30);
        drop(a20);
        assert!(pair.ping(), "detached on drop");
    }
}
