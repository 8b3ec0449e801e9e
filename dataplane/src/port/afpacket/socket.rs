//! The raw AF_PACKET socket ([`AfPacketSocket`]): batched RX with 802.1Q tag re-insertion
//! from auxdata, batched TX, memberships, the group-only socket filter, counters.

use std::io;
use std::mem::{size_of, zeroed};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::ptr;

use super::{open_bound, set_int, AfPacketError, AfPacketOptions};
use crate::port::inject::INJECT_MARK;
use crate::port::xdp_filter::FilterMaps;
use crate::port::{PacketType, RxFrame, Steering, WireIo, WireMode};

const PACKET_ADD_MEMBERSHIP: libc::c_int = 1;
const PACKET_DROP_MEMBERSHIP: libc::c_int = 2;
const PACKET_STATISTICS: libc::c_int = 6;
const PACKET_AUXDATA: libc::c_int = 8;
const PACKET_IGNORE_OUTGOING: libc::c_int = 23;
const PACKET_MR_PROMISC: u16 = 1;
const PACKET_MR_ALLMULTI: u16 = 2;
const PACKET_MR_UNICAST: u16 = 3;
const TP_STATUS_CSUMNOTREADY: u32 = 1 << 3;
const TP_STATUS_VLAN_VALID: u32 = 1 << 4;
const TP_STATUS_VLAN_TPID_VALID: u32 = 1 << 6;
const PKT_OUTGOING: u8 = 4;
const PKT_LOOPBACK: u8 = 5;

/// Bytes kept in front of each RX buffer to re-insert an 802.1Q tag without copying.
const HEADROOM: usize = 4;

#[repr(C)]
#[derive(Clone, Copy)]
struct TpacketAuxdata {
    tp_status: u32,
    tp_len: u32,
    tp_snaplen: u32,
    tp_mac: u16,
    tp_net: u16,
    tp_vlan_tci: u16,
    tp_vlan_tpid: u16,
}

#[repr(C)]
struct PacketMreq {
    mr_ifindex: libc::c_int,
    mr_type: u16,
    mr_alen: u16,
    mr_address: [u8; 8],
}

#[repr(C)]
#[derive(Default)]
struct TpacketStats {
    tp_packets: u32,
    tp_drops: u32,
}

/// Control buffer per message, 8-byte aligned, large enough for one auxdata cmsg.
type Ctrl = [u64; 8];

/// Counters of an [`AfPacketSocket`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AfPacketStats {
    /// Frames delivered to the caller.
    pub rx_frames: u64,
    /// Bytes delivered (after tag re-insertion).
    pub rx_bytes: u64,
    /// Frames whose 802.1Q tag was rebuilt from auxdata.
    pub rx_vlan_restored: u64,
    /// Frames larger than `buf_size` (dropped).
    pub rx_truncated: u64,
    /// Frames whose TCP or UDP checksum the sender had left to the device
    /// (`TP_STATUS_CSUMNOTREADY`), completed here.
    pub rx_csum_completed: u64,
    /// `PACKET_OUTGOING` frames seen and ignored.
    pub rx_outgoing_ignored: u64,
    /// `PACKET_LOOPBACK` frames seen and ignored.
    pub rx_loopback_ignored: u64,
    /// Kernel: frames that passed the socket (`tp_packets`, accumulated).
    pub kernel_packets: u64,
    /// Kernel: frames dropped because the socket buffer was full (`tp_drops`, accumulated).
    pub kernel_drops: u64,
    /// Frames handed to the kernel.
    pub tx_frames: u64,
    /// Bytes handed to the kernel.
    pub tx_bytes: u64,
    /// Frames not sent (too large, queue full, device errors).
    pub tx_dropped: u64,
    /// Of `tx_dropped`, frames accepted by [`AfPacketSocket::send`] that `sendmmsg` could
    /// not hand over at flush time.
    pub tx_lost_at_flush: u64,
}

/// A non-blocking raw AF_PACKET socket bound to one interface.
pub struct AfPacketSocket {
    fd: OwnedFd,
    ifname: String,
    ifindex: u32,
    batch: usize,
    buf_size: usize,
    rx_bufs: Vec<Vec<u8>>,
    rx_names: Vec<libc::sockaddr_ll>,
    rx_ctrl: Vec<Ctrl>,
    rx_iov: Vec<libc::iovec>,
    rx_hdrs: Vec<libc::mmsghdr>,
    tx_bufs: Vec<Vec<u8>>,
    tx_staged: usize,
    tx_iov: Vec<libc::iovec>,
    tx_hdrs: Vec<libc::mmsghdr>,
    ignore_outgoing: bool,
    stats: AfPacketStats,
    /// `recvmmsg`/`sendmmsg` calls made (for the run loop's system call count).
    syscalls: u64,
}

// SAFETY: the raw pointers inside the iovec/mmsghdr scratch arrays only ever point into
// buffers owned by this same struct and are rebuilt before every syscall; nothing is shared
// with another thread, so moving the socket between threads is sound.
unsafe impl Send for AfPacketSocket {}

impl std::fmt::Debug for AfPacketSocket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AfPacketSocket")
            .field("fd", &self.fd)
            .field("ifname", &self.ifname)
            .field("ifindex", &self.ifindex)
            .finish()
    }
}

/// `SKF_AD_OFF + SKF_AD_VLAN_TAG_PRESENT`: classic BPF's "the skb carries a VLAN tag".
const SKF_AD_VLAN_TAG_PRESENT: u32 = 0xffff_f000 + 48;

/// `SKF_AD_OFF + SKF_AD_MARK`: classic BPF's `skb->mark`.
const SKF_AD_MARK: u32 = 0xffff_f000 + 20;

/// Classic BPF socket filter, attached to every socket before `bind`: drop frames uvlan
/// injected into the host's receive path itself (`skb->mark` == [`INJECT_MARK`]); then, with
/// `group_only`, accept the frame iff the I/G bit of the destination MAC is set, or (with
/// `with_tagged`) iff the frame carries an 802.1Q tag; without it, accept everything.
fn attach_filter(fd: BorrowedFd<'_>, group_only: bool, with_tagged: bool) -> io::Result<()> {
    let ins = |code: u16, jt: u8, jf: u8, k: u32| libc::sock_filter { code, jt, jf, k };
    // A = skb->mark (ancillary load); if (A == INJECT_MARK) goto drop (patched below).
    let mut prog: Vec<libc::sock_filter> =
        vec![ins(0x20, 0, 0, SKF_AD_MARK), ins(0x15, 0, 0, INJECT_MARK)];
    if group_only {
        if with_tagged {
            // A = "has a VLAN tag"; if (A == 0) fall through to the group test, else accept.
            prog.push(ins(0x20, 0, 0, SKF_AD_VLAN_TAG_PRESENT));
            prog.push(ins(0x15, 0, 2, 0));
        }
        // A = pkt[0] (first byte of the destination MAC); if (A & 1) accept else drop.
        prog.push(ins(0x30, 0, 0, 0));
        prog.push(ins(0x45, 0, 1, 1));
    }
    // accept: whole frame; drop.
    prog.push(ins(0x06, 0, 0, u32::MAX));
    prog.push(ins(0x06, 0, 0, 0));
    let to_drop = prog.len() - 3;
    if let Some(j) = prog.get_mut(1) {
        j.jt = to_drop as u8;
    }
    let fprog = libc::sock_fprog {
        len: prog.len() as u16,
        filter: prog.as_mut_ptr(),
    };
    // SAFETY: `fprog` points at `prog`, both live for the duration of the call; the kernel
    // copies the program.
    let r = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_ATTACH_FILTER,
            (&fprog as *const libc::sock_fprog).cast(),
            size_of::<libc::sock_fprog>() as libc::socklen_t,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Re-insert an 802.1Q/802.1ad tag in front of the ethertype. `buf[HEADROOM..HEADROOM+len]`
/// holds the untagged frame; returns the tagged frame's range in `buf`.
fn reinsert_tag(buf: &mut [u8], len: usize, tpid: u16, tci: u16) -> Option<std::ops::Range<usize>> {
    if len < 12 || buf.len() < HEADROOM + len {
        return None;
    }
    buf.copy_within(HEADROOM..HEADROOM + 12, 0);
    buf.get_mut(12..14)?.copy_from_slice(&tpid.to_be_bytes());
    buf.get_mut(14..16)?.copy_from_slice(&tci.to_be_bytes());
    Some(0..len + HEADROOM)
}

/// A membership that [`AfPacketSocket::add_membership`] can hold on the interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Membership {
    /// Promiscuous mode (reference counted by the kernel).
    Promisc,
    /// Receive all multicast.
    AllMulti,
    /// Add a MAC to the NIC's unicast filter (what the kernel macvlan driver does).
    Unicast([u8; 6]),
}

impl AfPacketSocket {
    /// Open a socket bound to `ifname` (in the calling thread's netns).
    pub fn open(ifname: &str, opts: &AfPacketOptions) -> Result<AfPacketSocket, AfPacketError> {
        if !(1..=1024).contains(&opts.batch) {
            return Err(AfPacketError::Options(format!(
                "batch {} must be in 1..=1024",
                opts.batch
            )));
        }
        if !(64..=262_144).contains(&opts.buf_size) {
            return Err(AfPacketError::Options(format!(
                "buf_size {} must be in 64..=262144",
                opts.buf_size
            )));
        }
        let mut ignore_outgoing = true;
        let (fd, ifindex) = open_bound(ifname, libc::ETH_P_ALL as u16, |fd| {
            set_int(fd, libc::SOL_PACKET, PACKET_AUXDATA, 1).map_err(|e| ("PACKET_AUXDATA", e))?;
            match set_int(fd, libc::SOL_PACKET, PACKET_IGNORE_OUTGOING, 1) {
                Ok(()) => {}
                // Older kernels: outgoing frames are filtered by pkttype below.
                Err(e) if e.raw_os_error() == Some(libc::ENOPROTOOPT) => ignore_outgoing = false,
                Err(e) => return Err(("PACKET_IGNORE_OUTGOING", e)),
            }
            attach_filter(fd, opts.group_only, opts.with_tagged)
                .map_err(|e| ("SO_ATTACH_FILTER", e))?;
            Ok(())
        })?;
        let b = opts.batch;
        Ok(AfPacketSocket {
            fd,
            ifname: ifname.to_string(),
            ifindex,
            batch: b,
            buf_size: opts.buf_size,
            rx_bufs: vec![vec![0u8; HEADROOM + opts.buf_size]; b],
            // SAFETY: sockaddr_ll is plain old data; all-zero is valid.
            rx_names: vec![unsafe { zeroed() }; b],
            rx_ctrl: vec![[0u64; 8]; b],
            rx_iov: Vec::with_capacity(b),
            rx_hdrs: Vec::with_capacity(b),
            tx_bufs: (0..b).map(|_| Vec::with_capacity(1518)).collect(),
            tx_staged: 0,
            tx_iov: Vec::with_capacity(b),
            tx_hdrs: Vec::with_capacity(b),
            ignore_outgoing,
            stats: AfPacketStats::default(),
            syscalls: 0,
        })
    }

    /// The interface name.
    pub fn ifname(&self) -> &str {
        &self.ifname
    }

    /// The interface index (in the netns it was opened in).
    pub fn ifindex(&self) -> u32 {
        self.ifindex
    }

    /// Whether the kernel filters the host's own transmissions (`PACKET_IGNORE_OUTGOING`).
    pub fn ignores_outgoing(&self) -> bool {
        self.ignore_outgoing
    }

    /// Replaces the socket's filter with the eBPF socket filter `prog` (`SO_ATTACH_BPF`);
    /// the socket holds its own reference to the program.
    pub fn attach_program(&self, prog: &crate::port::bpf::Prog) -> io::Result<()> {
        let fd: libc::c_int = prog.as_fd().as_raw_fd();
        // SAFETY: `fd` lives on the stack for the duration of the call; the kernel reads an
        // int (the program's fd) from it.
        let r = unsafe {
            libc::setsockopt(
                self.fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_ATTACH_BPF,
                (&fd as *const libc::c_int).cast(),
                size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    fn membership(&self, m: Membership, opt: libc::c_int) -> io::Result<()> {
        let mut mr = PacketMreq {
            mr_ifindex: self.ifindex as libc::c_int,
            mr_type: 0,
            mr_alen: 0,
            mr_address: [0; 8],
        };
        match m {
            Membership::Promisc => mr.mr_type = PACKET_MR_PROMISC,
            Membership::AllMulti => mr.mr_type = PACKET_MR_ALLMULTI,
            Membership::Unicast(mac) => {
                mr.mr_type = PACKET_MR_UNICAST;
                mr.mr_alen = 6;
                mr.mr_address[..6].copy_from_slice(&mac);
            }
        }
        // SAFETY: `mr` is a valid packet_mreq for the duration of the call.
        let r = unsafe {
            libc::setsockopt(
                self.fd.as_raw_fd(),
                libc::SOL_PACKET,
                opt,
                (&mr as *const PacketMreq).cast(),
                size_of::<PacketMreq>() as libc::socklen_t,
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Hold a membership on the interface for as long as this socket lives.
    pub fn add_membership(&self, m: Membership) -> io::Result<()> {
        self.membership(m, PACKET_ADD_MEMBERSHIP)
    }

    /// Drop a membership added with [`AfPacketSocket::add_membership`].
    pub fn drop_membership(&self, m: Membership) -> io::Result<()> {
        self.membership(m, PACKET_DROP_MEMBERSHIP)
    }

    /// `recvmmsg` and `sendmmsg` calls made so far (no system call to read it).
    pub fn syscalls(&self) -> u64 {
        self.syscalls
    }

    /// Receive up to `max` frames (see [`WireIo::recv_batch`]). Tags moved into metadata
    /// by the kernel are re-inserted.
    pub fn recv_batch(&mut self, max: usize, f: &mut dyn FnMut(RxFrame<'_>)) -> io::Result<usize> {
        let mut delivered = 0;
        let mut budget = max;
        while budget > 0 {
            let n = budget.min(self.batch);
            self.rx_iov.clear();
            self.rx_hdrs.clear();
            for i in 0..n {
                let buf = &mut self.rx_bufs[i];
                self.rx_iov.push(libc::iovec {
                    // SAFETY: HEADROOM < buf.len(), so the pointer stays inside the buffer.
                    iov_base: unsafe { buf.as_mut_ptr().add(HEADROOM) }.cast(),
                    iov_len: buf.len() - HEADROOM,
                });
            }
            for i in 0..n {
                // SAFETY: msghdr is plain old data; all-zero is valid.
                let mut h: libc::mmsghdr = unsafe { zeroed() };
                h.msg_hdr.msg_name = (&mut self.rx_names[i] as *mut libc::sockaddr_ll).cast();
                h.msg_hdr.msg_namelen = size_of::<libc::sockaddr_ll>() as libc::socklen_t;
                h.msg_hdr.msg_iov = &mut self.rx_iov[i];
                h.msg_hdr.msg_iovlen = 1;
                h.msg_hdr.msg_control = self.rx_ctrl[i].as_mut_ptr().cast();
                h.msg_hdr.msg_controllen = size_of::<Ctrl>() as _;
                self.rx_hdrs.push(h);
            }
            self.syscalls += 1;
            // SAFETY: every header points at live buffers owned by `self` (names, iovecs,
            // control buffers, frame buffers), all sized as declared.
            let r = unsafe {
                libc::recvmmsg(
                    self.fd.as_raw_fd(),
                    self.rx_hdrs.as_mut_ptr(),
                    n as libc::c_uint,
                    libc::MSG_DONTWAIT,
                    ptr::null_mut(),
                )
            };
            if r < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::WouldBlock || e.kind() == io::ErrorKind::Interrupted {
                    break;
                }
                return Err(e);
            }
            let got = r as usize;
            for i in 0..got {
                delivered += self.deliver(i, f);
            }
            budget -= got;
            if got < n {
                break;
            }
        }
        Ok(delivered)
    }

    fn deliver(&mut self, i: usize, f: &mut dyn FnMut(RxFrame<'_>)) -> usize {
        let Some(h) = self.rx_hdrs.get(i) else {
            return 0;
        };
        let len = h.msg_len as usize;
        if h.msg_hdr.msg_flags & libc::MSG_TRUNC != 0 || len > self.buf_size {
            self.stats.rx_truncated += 1;
            return 0;
        }
        let pkttype = self.rx_names.get(i).map_or(0, |n| n.sll_pkttype);
        match pkttype {
            PKT_OUTGOING => {
                self.stats.rx_outgoing_ignored += 1;
                return 0;
            }
            PKT_LOOPBACK => {
                self.stats.rx_loopback_ignored += 1;
                return 0;
            }
            _ => {}
        }
        let mut aux: Option<TpacketAuxdata> = None;
        // SAFETY: the msghdr was filled in by recvmmsg; CMSG_FIRSTHDR/NXTHDR stay within
        // msg_control/msg_controllen, and the auxdata payload is read unaligned with its
        // length checked against cmsg_len.
        unsafe {
            let mut c = libc::CMSG_FIRSTHDR(&h.msg_hdr);
            while !c.is_null() {
                let hdr = &*c;
                if hdr.cmsg_level == libc::SOL_PACKET
                    && hdr.cmsg_type == PACKET_AUXDATA
                    && hdr.cmsg_len as usize
                        >= libc::CMSG_LEN(size_of::<TpacketAuxdata>() as u32) as usize
                {
                    aux = Some(ptr::read_unaligned(
                        libc::CMSG_DATA(c).cast::<TpacketAuxdata>(),
                    ));
                }
                c = libc::CMSG_NXTHDR(&h.msg_hdr, c);
            }
        }
        let buf = &mut self.rx_bufs[i];
        let mut restored = false;
        let range = match aux {
            Some(a) if a.tp_status & TP_STATUS_VLAN_VALID != 0 => {
                let tpid = if a.tp_status & TP_STATUS_VLAN_TPID_VALID != 0 {
                    a.tp_vlan_tpid
                } else {
                    0x8100
                };
                match reinsert_tag(buf, len, tpid, a.tp_vlan_tci) {
                    Some(r) => {
                        restored = true;
                        r
                    }
                    None => HEADROOM..HEADROOM + len,
                }
            }
            _ => HEADROOM..HEADROOM + len,
        };
        let Some(data) = buf.get_mut(range) else {
            return 0;
        };
        // A frame sent on this host (a veth peer with TX checksum offload on) can arrive with
        // its TCP or UDP checksum left to the device; nothing downstream would complete it.
        if aux.is_some_and(|a| a.tp_status & TP_STATUS_CSUMNOTREADY != 0)
            && crate::offload::complete_l4_csum(data)
        {
            self.stats.rx_csum_completed += 1;
        }
        let data = &*data;
        self.stats.rx_frames += 1;
        self.stats.rx_bytes += data.len() as u64;
        if restored {
            self.stats.rx_vlan_restored += 1;
        }
        f(RxFrame {
            data,
            queue: 0,
            pkt_type: Some(PacketType::from_raw(pkttype)),
            vlan_restored: restored,
        });
        1
    }

    /// Queue `frame` for transmission (see [`WireIo::send`]); sends the batch when full.
    pub fn send(&mut self, frame: &[u8]) -> io::Result<bool> {
        if frame.len() > self.buf_size || frame.len() < 14 {
            self.stats.tx_dropped += 1;
            return Ok(false);
        }
        if self.tx_staged == self.batch {
            self.flush()?;
        }
        let Some(b) = self.tx_bufs.get_mut(self.tx_staged) else {
            self.stats.tx_dropped += 1;
            return Ok(false);
        };
        b.clear();
        b.extend_from_slice(frame);
        self.tx_staged += 1;
        Ok(true)
    }

    /// Send all queued frames with `sendmmsg` (see [`WireIo::flush`]).
    pub fn flush(&mut self) -> io::Result<()> {
        let n = self.tx_staged;
        self.tx_staged = 0;
        if n == 0 {
            return Ok(());
        }
        self.tx_iov.clear();
        self.tx_hdrs.clear();
        for b in &mut self.tx_bufs[..n] {
            self.tx_iov.push(libc::iovec {
                iov_base: b.as_mut_ptr().cast(),
                iov_len: b.len(),
            });
        }
        for i in 0..n {
            // SAFETY: msghdr is plain old data; all-zero is valid.
            let mut h: libc::mmsghdr = unsafe { zeroed() };
            h.msg_hdr.msg_iov = &mut self.tx_iov[i];
            h.msg_hdr.msg_iovlen = 1;
            self.tx_hdrs.push(h);
        }
        let mut sent = 0;
        while sent < n {
            self.syscalls += 1;
            // SAFETY: headers [sent, n) point at live iovecs and buffers owned by `self`.
            let r = unsafe {
                libc::sendmmsg(
                    self.fd.as_raw_fd(),
                    self.tx_hdrs.as_mut_ptr().add(sent),
                    (n - sent) as libc::c_uint,
                    libc::MSG_DONTWAIT,
                )
            };
            if r >= 0 {
                for b in &self.tx_bufs[sent..sent + r as usize] {
                    self.stats.tx_frames += 1;
                    self.stats.tx_bytes += b.len() as u64;
                }
                sent += r as usize;
                continue;
            }
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EINTR) => continue,
                // Queue full: drop the rest of this batch.
                Some(libc::EAGAIN) | Some(libc::ENOBUFS) => {
                    self.stats.tx_dropped += (n - sent) as u64;
                    self.stats.tx_lost_at_flush += (n - sent) as u64;
                    break;
                }
                // This frame cannot go (too big, device down): skip it, keep the rest.
                Some(libc::EMSGSIZE) | Some(libc::EINVAL) | Some(libc::ENETDOWN)
                | Some(libc::ENXIO) => {
                    self.stats.tx_dropped += 1;
                    self.stats.tx_lost_at_flush += 1;
                    sent += 1;
                }
                _ => {
                    self.stats.tx_dropped += (n - sent) as u64;
                    self.stats.tx_lost_at_flush += (n - sent) as u64;
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    /// Counters; reading folds the kernel's `PACKET_STATISTICS` (which resets on read) into
    /// the accumulated totals.
    pub fn stats(&mut self) -> io::Result<AfPacketStats> {
        let mut k = TpacketStats::default();
        let mut len = size_of::<TpacketStats>() as libc::socklen_t;
        // SAFETY: `k` is a valid, writable tpacket_stats and `len` its size.
        let r = unsafe {
            libc::getsockopt(
                self.fd.as_raw_fd(),
                libc::SOL_PACKET,
                PACKET_STATISTICS,
                (&mut k as *mut TpacketStats).cast(),
                &mut len,
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        self.stats.kernel_packets += k.tp_packets as u64;
        self.stats.kernel_drops += k.tp_drops as u64;
        Ok(self.stats)
    }
}

impl AsFd for AfPacketSocket {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl WireIo for AfPacketSocket {
    fn recv_batch(&mut self, max: usize, f: &mut dyn FnMut(RxFrame<'_>)) -> io::Result<usize> {
        AfPacketSocket::recv_batch(self, max, f)
    }
    fn send(&mut self, frame: &[u8]) -> io::Result<bool> {
        AfPacketSocket::send(self, frame)
    }
    fn flush(&mut self) -> io::Result<()> {
        AfPacketSocket::flush(self)
    }
    fn poll_fds(&self) -> Vec<BorrowedFd<'_>> {
        vec![self.fd.as_fd()]
    }
    fn mode(&self) -> WireMode {
        WireMode::AfPacket {
            steering: Steering::None,
        }
    }
    fn filter_maps(&self) -> Option<&FilterMaps> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tag_reinsertion_moves_macs_and_writes_tpid_tci() {
        let mut buf = vec![0u8; HEADROOM + 20];
        let frame: Vec<u8> = (1..=20).collect();
        buf[HEADROOM..].copy_from_slice(&frame);
        let r = reinsert_tag(&mut buf, 20, 0x8100, 0x2014).unwrap();
        assert_eq!(r, 0..24);
        assert_eq!(&buf[..12], &frame[..12]);
        assert_eq!(&buf[12..16], &[0x81, 0x00, 0x20, 0x14]);
        assert_eq!(&buf[16..24], &frame[12..]);
    }

    #[test]
    fn tag_reinsertion_refuses_short_frames() {
        let mut buf = vec![0u8; 16];
        assert_eq!(reinsert_tag(&mut buf, 11, 0x8100, 1), None);
        assert_eq!(reinsert_tag(&mut buf, 13, 0x8100, 1), None);
    }
}
