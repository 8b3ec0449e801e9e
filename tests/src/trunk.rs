//! An 802.1Q trunk in userspace for namespaces of a kernel without 8021q: one TAP per VLAN
//! (a real stack: ARP, ping, TCP) bridged to the tagged frames of one interface through an
//! AF_PACKET socket. Frames from the TAP leave the interface tagged; tagged frames arriving
//! on the interface go, untagged, to the TAP of their VID (other VIDs are ignored; untagged
//! frames stay with the kernel). Also: which BPF programs hold an interface's tcx hook.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crate::net::enter_netns;

const ETH_P_ALL: u16 = 0x0003;
const PACKET_AUXDATA: libc::c_int = 8;
const TP_STATUS_VLAN_VALID: u32 = 1 << 4;
const PACKET_OUTGOING: u8 = 4;
const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
const IFF_TAP: libc::c_short = 0x0002;
const IFF_NO_PI: libc::c_short = 0x1000;

/// `struct tpacket_auxdata`.
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct Auxdata {
    tp_status: u32,
    tp_len: u32,
    tp_snaplen: u32,
    tp_mac: u16,
    tp_net: u16,
    tp_vlan_tci: u16,
    tp_vlan_tpid: u16,
}

fn check(r: libc::c_int, what: &str) -> io::Result<libc::c_int> {
    if r < 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(e.kind(), format!("{what}: {e}")));
    }
    Ok(r)
}

fn ifindex(name: &str) -> io::Result<u32> {
    let c = std::ffi::CString::new(name).map_err(io::Error::other)?;
    // SAFETY: `c` is a valid NUL-terminated string for the duration of the call.
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if i == 0 {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("no interface {name}"),
        ));
    }
    Ok(i)
}

fn packet_socket(ifname: &str) -> io::Result<OwnedFd> {
    let idx = ifindex(ifname)?;
    // SAFETY: plain socket(2); the result is checked.
    let fd = check(
        unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                i32::from(ETH_P_ALL.to_be()),
            )
        },
        "AF_PACKET socket",
    )?;
    // SAFETY: `fd` is a fresh descriptor owned by nobody else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: sockaddr_ll is plain data; zeroed is a valid value and the fields are set.
    let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sll.sll_family = libc::AF_PACKET as u16;
    sll.sll_protocol = ETH_P_ALL.to_be();
    sll.sll_ifindex = idx as i32;
    check(
        // SAFETY: `sll` is a valid sockaddr_ll and its size is passed.
        unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&sll as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        },
        "bind AF_PACKET",
    )?;
    let one: libc::c_int = 1;
    check(
        // SAFETY: the option value is a live c_int and its size is passed.
        unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_PACKET,
                PACKET_AUXDATA,
                (&one as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as u32,
            )
        },
        "PACKET_AUXDATA",
    )?;
    Ok(fd)
}

fn tap(name: &str) -> io::Result<OwnedFd> {
    // SAFETY: open(2) of a constant NUL-terminated path; the result is checked.
    let fd = check(
        unsafe {
            libc::open(
                c"/dev/net/tun".as_ptr(),
                libc::O_RDWR | libc::O_NONBLOCK | libc::O_CLOEXEC,
            )
        },
        "open /dev/net/tun",
    )?;
    // SAFETY: `fd` is a fresh descriptor owned by nobody else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: ifreq is plain data; zeroed is valid.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in ifr.ifr_name.iter_mut().zip(name.bytes().take(15)) {
        *d = s as libc::c_char;
    }
    ifr.ifr_ifru.ifru_flags = IFF_TAP | IFF_NO_PI;
    check(
        // SAFETY: TUNSETIFF reads and writes one ifreq, which lives for the call.
        unsafe { libc::ioctl(fd.as_raw_fd(), TUNSETIFF, &mut ifr) },
        "TUNSETIFF",
    )?;
    Ok(fd)
}

/// One received frame: its VID (from auxdata or an in-band tag) and the untagged bytes.
fn recv_tagged(fd: RawFd, buf: &mut [u8]) -> io::Result<Option<(u16, Vec<u8>)>> {
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // A u64 array keeps the control buffer aligned for cmsghdr.
    let mut cbuf = [0u64; 16];
    // SAFETY: sockaddr_ll is plain data; zeroed is valid.
    let mut from: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    // SAFETY: msghdr is plain data; zeroed is valid and the used fields are set below.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_name = (&mut from as *mut libc::sockaddr_ll).cast();
    msg.msg_namelen = std::mem::size_of::<libc::sockaddr_ll>() as u32;
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cbuf.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&cbuf);
    // SAFETY: every pointer in `msg` refers to a live buffer of the stated length.
    let n = unsafe { libc::recvmsg(fd, &mut msg, 0) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    if from.sll_pkttype == PACKET_OUTGOING {
        return Ok(None);
    }
    let n = (n as usize).min(buf.len());
    let mut aux: Option<Auxdata> = None;
    // SAFETY: CMSG_FIRSTHDR/NXTHDR walk the control buffer the kernel filled, within
    // msg_controllen; the payload is read unaligned and only if it is large enough.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            let h = &*c;
            if h.cmsg_level == libc::SOL_PACKET
                && h.cmsg_type == PACKET_AUXDATA
                && h.cmsg_len as usize
                    >= libc::CMSG_LEN(std::mem::size_of::<Auxdata>() as u32) as usize
            {
                aux = Some(std::ptr::read_unaligned(
                    libc::CMSG_DATA(c).cast::<Auxdata>(),
                ));
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    let frame = buf.get(..n).unwrap_or_default();
    if let Some(a) = aux.filter(|a| a.tp_status & TP_STATUS_VLAN_VALID != 0) {
        return Ok(Some((a.tp_vlan_tci & 0x0fff, frame.to_vec())));
    }
    if frame.len() >= 18 && frame.get(12..14) == Some(&[0x81, 0x00]) {
        let vid = u16::from_be_bytes([frame[14], frame[15]]) & 0x0fff;
        let mut v = Vec::with_capacity(n - 4);
        v.extend_from_slice(&frame[..12]);
        v.extend_from_slice(&frame[16..]);
        return Ok(Some((vid, v)));
    }
    Ok(None)
}

/// A userspace 802.1Q trunk (see the module docs). Dropping it stops the thread and closes
/// the TAPs (their devices disappear).
pub struct VlanTrunk {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl VlanTrunk {
    /// In namespace `full`, creates TAP `name` for every `(vid, name)` and bridges it to VLAN
    /// `vid` on `ifname`. The TAPs are down and unaddressed: configure them with `ip`.
    pub fn start(full: &str, ifname: &str, vlans: &[(u16, &str)]) -> VlanTrunk {
        let stop = Arc::new(AtomicBool::new(false));
        let st = Arc::clone(&stop);
        let (full, ifname) = (full.to_string(), ifname.to_string());
        let vlans: Vec<(u16, String)> = vlans.iter().map(|(v, n)| (*v, n.to_string())).collect();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<(), String>>();
        let thread = std::thread::spawn(move || {
            let setup = (|| -> io::Result<(OwnedFd, Vec<(u16, OwnedFd)>)> {
                enter_netns(&full)?;
                let p = packet_socket(&ifname)?;
                let mut taps = Vec::new();
                for (vid, name) in &vlans {
                    taps.push((*vid, tap(name)?));
                }
                Ok((p, taps))
            })();
            let (pkt, taps) = match setup {
                Ok(x) => {
                    let _ = ready_tx.send(Ok(()));
                    x
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e.to_string()));
                    return;
                }
            };
            run(&st, &pkt, &taps);
        });
        match ready_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => panic!("VLAN trunk: {e}"),
            Err(_) => panic!("VLAN trunk thread died"),
        }
        VlanTrunk {
            stop,
            thread: Some(thread),
        }
    }
}

fn run(stop: &AtomicBool, pkt: &OwnedFd, taps: &[(u16, OwnedFd)]) {
    let mut buf = vec![0u8; 65536];
    let mut fds: Vec<libc::pollfd> = std::iter::once(pkt.as_raw_fd())
        .chain(taps.iter().map(|(_, t)| t.as_raw_fd()))
        .map(|fd| libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    while !stop.load(Ordering::SeqCst) {
        // SAFETY: `fds` is a live array of pollfd of the given length.
        let r = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, 100) };
        if r <= 0 {
            continue;
        }
        if fds[0].revents & libc::POLLIN != 0 {
            while let Ok(Some((vid, frame))) = recv_tagged(pkt.as_raw_fd(), &mut buf) {
                if let Some((_, t)) = taps.iter().find(|(v, _)| *v == vid) {
                    // SAFETY: writes `frame.len()` bytes from a live buffer to our TAP fd.
                    unsafe { libc::write(t.as_raw_fd(), frame.as_ptr().cast(), frame.len()) };
                }
            }
        }
        for (i, (vid, t)) in taps.iter().enumerate() {
            if fds[i + 1].revents & libc::POLLIN == 0 {
                continue;
            }
            loop {
                // SAFETY: reads at most `buf.len()` bytes into a live buffer.
                let n = unsafe { libc::read(t.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
                if n < 14 {
                    break;
                }
                let n = n as usize;
                let mut f = Vec::with_capacity(n + 4);
                f.extend_from_slice(&buf[..12]);
                f.extend_from_slice(&[0x81, 0x00]);
                f.extend_from_slice(&vid.to_be_bytes());
                f.extend_from_slice(&buf[12..n]);
                // SAFETY: sends `f.len()` bytes from a live buffer on our bound socket.
                unsafe { libc::send(pkt.as_raw_fd(), f.as_ptr().cast(), f.len(), 0) };
            }
        }
    }
}

impl Drop for VlanTrunk {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// How many BPF programs are attached to `ifname`'s tcx ingress hook in namespace `full`
/// (`BPF_PROG_QUERY`; 0 also when the hook was never used).
pub fn tcx_ingress_programs(full: &str, ifname: &str) -> io::Result<u32> {
    const BPF_PROG_QUERY: libc::c_long = 16;
    const BPF_TCX_INGRESS: u32 = 46;
    let (full, ifname) = (full.to_string(), ifname.to_string());
    std::thread::spawn(move || -> io::Result<u32> {
        enter_netns(&full)?;
        let idx = ifindex(&ifname)?;
        // union bpf_attr, query part: target_ifindex @0, attach_type @4, prog_cnt @24.
        let mut attr = [0u8; 128];
        attr[0..4].copy_from_slice(&idx.to_ne_bytes());
        attr[4..8].copy_from_slice(&BPF_TCX_INGRESS.to_ne_bytes());
        // SAFETY: bpf(2) BPF_PROG_QUERY reads and writes the attribute buffer, which lives
        // for the call and is larger than the query struct (the tail is zero).
        let r = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_PROG_QUERY,
                attr.as_mut_ptr(),
                attr.len() as libc::c_uint,
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(u32::from_ne_bytes([attr[24], attr[25], attr[26], attr[27]]))
    })
    .join()
    .unwrap_or_else(|_| Err(io::Error::other("query thread panicked")))
}

/// Waits a little for a condition (e.g. a link to come up), returning whether it held.
pub fn wait_for(mut cond: impl FnMut() -> bool, secs: u64) -> bool {
    let t = std::time::Instant::now();
    while t.elapsed() < Duration::from_secs(secs) {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    cond()
}
