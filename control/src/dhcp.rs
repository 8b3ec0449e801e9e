//! The daemon's DHCPv4 client for endpoints of networks with `--ipam-driver dhcp`: one
//! exchange (DISCOVER, OFFER, REQUEST, ACK) on the endpoint's own interface, inside its
//! namespace, so the frames leave through uvlan's dataplane like any endpoint traffic; and
//! RELEASE when the endpoint goes.
//!
//! Identity: the client hardware address is the endpoint's MAC (its own on macvlan, the
//! parent's on ipvlan), and every message carries a client identifier (option 61) made from
//! the endpoint's ID, which is what tells ipvlan endpoints apart at the server. Replies are
//! matched by transaction ID and hardware address. The broadcast flag is always set: an
//! ipvlan endpoint without an address would not receive a unicast reply.
//!
//! The message format is `dhcproto`'s; the IPv4 and UDP headers around it are built and
//! checked here (an `AF_PACKET` datagram socket: the kernel adds the Ethernet header).

use std::net::{IpAddr, Ipv4Addr, SocketAddrV4, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use dhcproto::v4::{DhcpOption, Flags, Message, MessageType, Opcode, OptionCode};
use dhcproto::{Decodable, Encodable};
use serde::{Deserialize, Serialize};

use crate::netns::{NeighState, Netns, Rtnl};

/// How long [`acquire`] waits for a server in all (DISCOVER retransmitted at 1, 2 and 4 s).
pub const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);

const CLIENT_PORT: u16 = 68;
const SERVER_PORT: u16 = 67;

/// A lease as the server granted it (stored in the endpoint's record).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    /// The address (`yiaddr` of the ACK).
    pub addr: Ipv4Addr,
    /// Its prefix length (option 1; /24 if the server sent none).
    pub prefix_len: u8,
    /// The server (option 54).
    pub server_id: Ipv4Addr,
    /// The first router (option 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub router: Option<Ipv4Addr>,
    /// Classless static routes (option 121): `DEST/LEN` and gateway.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<(Ipv4Addr, u8, Ipv4Addr)>,
    /// DNS servers (option 6).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns: Vec<Ipv4Addr>,
    /// Lease time in seconds (option 51; `u32::MAX` is infinite).
    pub lease_secs: u32,
    /// T1 in seconds (option 58, else half the lease).
    pub t1_secs: u32,
    /// T2 in seconds (option 59, else 7/8 of the lease).
    pub t2_secs: u32,
    /// When the ACK arrived (seconds since the Unix epoch).
    pub obtained: u64,
    /// The client identifier sent (hex), needed again for RELEASE.
    pub client_id: String,
}

/// Who asks: the endpoint's interface and identity.
#[derive(Clone, Debug)]
pub struct Client {
    /// The interface's index inside its namespace.
    pub ifindex: u32,
    /// Its MAC (`chaddr`).
    pub mac: [u8; 6],
    /// Option 61.
    pub client_id: Vec<u8>,
    /// Option 12, if any.
    pub hostname: Option<String>,
}

/// What went wrong in an exchange.
#[derive(Debug, thiserror::Error)]
pub enum DhcpError {
    /// The namespace could not be entered.
    #[error("cannot enter the endpoint's namespace: {0}")]
    Netns(String),
    /// A socket operation failed.
    #[error("DHCP socket: {0}")]
    Io(#[from] std::io::Error),
    /// Nobody answered in time.
    #[error(
        "no DHCP server answered within {}s (DISCOVER sent {sent} times on the network's \
         parent): check that a DHCP server serves the parent's LAN",
        .waited.as_secs()
    )]
    NoOffer {
        /// The bound.
        waited: Duration,
        /// DISCOVERs sent.
        sent: u32,
    },
    /// An offer came but the server did not confirm it.
    #[error("the DHCP server {server} offered {addr} but {what}")]
    NoAck {
        /// The server.
        server: Ipv4Addr,
        /// The offered address.
        addr: Ipv4Addr,
        /// "refused it (NAK)" or "did not confirm it in time".
        what: &'static str,
    },
    /// The message could not be encoded.
    #[error("cannot encode a DHCP message: {0}")]
    Encode(String),
    /// The caller could not record the offer before the REQUEST (see [`acquire_noting`]).
    #[error("cannot record the DHCP offer of {addr}: {why}")]
    Record {
        /// The offered address.
        addr: Ipv4Addr,
        /// The caller's reason.
        why: String,
    },
}

/// What [`acquire_noting`] tells its caller before each REQUEST: the offer it asks the
/// server to confirm (a provisional lease: its address, prefix and server).
pub type OfferNote<'a> = &'a (dyn Fn(&Lease) -> Result<(), String> + Sync);

/// The client identifier of an endpoint: type 0 and the first 16 bytes of its ID (hex).
pub fn client_id_for(endpoint_id: &str) -> Vec<u8> {
    let mut v = vec![0u8];
    v.extend(endpoint_id.bytes().take(16));
    v
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len() / 2)
        .filter_map(|i| s.get(2 * i..2 * i + 2))
        .filter_map(|p| u8::from_str_radix(p, 16).ok())
        .collect()
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    for c in data.chunks(2) {
        let w = match c {
            [a, b] => u16::from_be_bytes([*a, *b]),
            [a] => u16::from_be_bytes([*a, 0]),
            _ => 0,
        };
        sum += u32::from(w);
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// An IPv4/UDP datagram from 0.0.0.0:68 to 255.255.255.255:67 around `payload`.
fn udp_broadcast(payload: &[u8]) -> Vec<u8> {
    let udp_len = 8 + payload.len();
    let total = 20 + udp_len;
    let mut p = Vec::with_capacity(total);
    p.extend_from_slice(&[0x45, 0x10]);
    p.extend_from_slice(&(total as u16).to_be_bytes());
    p.extend_from_slice(&[0, 0, 0, 0, 64, 17, 0, 0]);
    p.extend_from_slice(&Ipv4Addr::UNSPECIFIED.octets());
    p.extend_from_slice(&Ipv4Addr::BROADCAST.octets());
    let c = checksum(&p);
    p[10..12].copy_from_slice(&c.to_be_bytes());
    p.extend_from_slice(&CLIENT_PORT.to_be_bytes());
    p.extend_from_slice(&SERVER_PORT.to_be_bytes());
    p.extend_from_slice(&(udp_len as u16).to_be_bytes());
    // No UDP checksum (allowed for IPv4).
    p.extend_from_slice(&[0, 0]);
    p.extend_from_slice(payload);
    p
}

/// The DHCP payload of an IPv4/UDP datagram to port 68, if it is one (checked, no panic).
fn dhcp_payload(pkt: &[u8]) -> Option<&[u8]> {
    let vihl = *pkt.first()?;
    if vihl >> 4 != 4 {
        return None;
    }
    let ihl = usize::from(vihl & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([*pkt.get(2)?, *pkt.get(3)?]));
    if ihl < 20 || *pkt.get(9)? != 17 || total > pkt.len() || total < ihl + 8 {
        return None;
    }
    let udp = pkt.get(ihl..total)?;
    let dport = u16::from_be_bytes([*udp.get(2)?, *udp.get(3)?]);
    let ulen = usize::from(u16::from_be_bytes([*udp.get(4)?, *udp.get(5)?]));
    if dport != CLIENT_PORT || ulen < 8 || ulen > udp.len() {
        return None;
    }
    udp.get(8..ulen)
}

/// An `AF_PACKET` datagram socket for IPv4 on `ifindex`, in the calling thread's namespace.
fn packet_socket(ifindex: u32) -> std::io::Result<OwnedFd> {
    let proto = (libc::ETH_P_IP as u16).to_be();
    // SAFETY: plain socket(2) call; the result is checked before use.
    let fd = unsafe {
        libc::socket(
            libc::AF_PACKET,
            libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
            i32::from(proto),
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor this function owns from here on.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let sll = sockaddr_ll(ifindex, [0; 6]);
    // SAFETY: sll is a valid sockaddr_ll for the call's duration, its size passed.
    let r = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            std::ptr::from_ref(&sll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(fd)
}

fn sockaddr_ll(ifindex: u32, dst: [u8; 6]) -> libc::sockaddr_ll {
    // SAFETY: sockaddr_ll is plain old data; all zero is a valid value.
    let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sll.sll_family = libc::AF_PACKET as u16;
    sll.sll_protocol = (libc::ETH_P_IP as u16).to_be();
    sll.sll_ifindex = ifindex as i32;
    sll.sll_halen = 6;
    sll.sll_addr[..6].copy_from_slice(&dst);
    sll
}

fn send_broadcast(fd: &OwnedFd, ifindex: u32, msg: &Message) -> Result<(), DhcpError> {
    let payload = msg.to_vec().map_err(|e| DhcpError::Encode(e.to_string()))?;
    let pkt = udp_broadcast(&payload);
    let sll = sockaddr_ll(ifindex, [0xff; 6]);
    // SAFETY: pkt and sll are valid for the call's duration, their sizes passed.
    let n = unsafe {
        libc::sendto(
            fd.as_raw_fd(),
            pkt.as_ptr().cast(),
            pkt.len(),
            0,
            std::ptr::from_ref(&sll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    };
    if n < 0 {
        return Err(std::io::Error::last_os_error().into());
    }
    Ok(())
}

/// Waits until `deadline` for a reply of type `want` (or a NAK) to `xid` for `mac`.
fn recv_reply(
    fd: &OwnedFd,
    xid: u32,
    mac: &[u8; 6],
    want: MessageType,
    deadline: Instant,
) -> Result<Option<Message>, DhcpError> {
    let mut buf = vec![0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(None);
        }
        let mut pfd = libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = i32::try_from(left.as_millis()).unwrap_or(i32::MAX).max(1);
        // SAFETY: pfd is one valid pollfd for the call's duration.
        let r = unsafe { libc::poll(&mut pfd, 1, ms) };
        if r < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e.into());
        }
        if r == 0 {
            return Ok(None);
        }
        // SAFETY: buf is valid for buf.len() bytes for the call's duration.
        let n = unsafe {
            libc::recv(
                fd.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                libc::MSG_DONTWAIT,
            )
        };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if matches!(
                e.kind(),
                std::io::ErrorKind::Interrupted | std::io::ErrorKind::WouldBlock
            ) {
                continue;
            }
            return Err(e.into());
        }
        let Some(payload) = buf.get(..n as usize).and_then(dhcp_payload) else {
            continue;
        };
        let Ok(m) = Message::from_bytes(payload) else {
            continue;
        };
        if m.opcode() != Opcode::BootReply || m.xid() != xid || m.chaddr().get(..6) != Some(mac) {
            continue;
        }
        match m.opts().msg_type() {
            Some(t) if t == want || t == MessageType::Nak => return Ok(Some(m)),
            _ => continue,
        }
    }
}

fn request_base(c: &Client, xid: u32, t: MessageType) -> Message {
    let z = Ipv4Addr::UNSPECIFIED;
    let mut m = Message::new_with_id(xid, z, z, z, z, &c.mac);
    m.set_flags(Flags::default().set_broadcast());
    let o = m.opts_mut();
    o.insert(DhcpOption::MessageType(t));
    o.insert(DhcpOption::ClientIdentifier(c.client_id.clone()));
    if let Some(h) = &c.hostname {
        o.insert(DhcpOption::Hostname(h.clone()));
    }
    o.insert(DhcpOption::ParameterRequestList(vec![
        OptionCode::SubnetMask,
        OptionCode::Router,
        OptionCode::DomainNameServer,
        OptionCode::ClasslessStaticRoute,
        OptionCode::AddressLeaseTime,
        OptionCode::Renewal,
        OptionCode::Rebinding,
    ]));
    m
}

fn lease_of(ack: &Message, client_id: &[u8]) -> Option<Lease> {
    let o = ack.opts();
    let server_id = match o.get(OptionCode::ServerIdentifier) {
        Some(DhcpOption::ServerIdentifier(s)) => *s,
        _ => return None,
    };
    let prefix_len = match o.get(OptionCode::SubnetMask) {
        Some(DhcpOption::SubnetMask(m)) => u32::from(*m).leading_ones() as u8,
        _ => 24,
    };
    let router = match o.get(OptionCode::Router) {
        Some(DhcpOption::Router(r)) => r.first().copied(),
        _ => None,
    };
    let dns = match o.get(OptionCode::DomainNameServer) {
        Some(DhcpOption::DomainNameServer(d)) => d.clone(),
        _ => Vec::new(),
    };
    let routes = match o.get(OptionCode::ClasslessStaticRoute) {
        Some(DhcpOption::ClasslessStaticRoute(r)) => r
            .iter()
            .map(|(net, gw)| (net.network(), net.prefix_len(), *gw))
            .collect(),
        _ => Vec::new(),
    };
    let lease_secs = match o.get(OptionCode::AddressLeaseTime) {
        Some(DhcpOption::AddressLeaseTime(t)) => *t,
        _ => return None,
    };
    let t1_secs = match o.get(OptionCode::Renewal) {
        Some(DhcpOption::Renewal(t)) => *t,
        _ => lease_secs / 2,
    };
    let t2_secs = match o.get(OptionCode::Rebinding) {
        Some(DhcpOption::Rebinding(t)) => *t,
        _ => (u64::from(lease_secs) * 7 / 8) as u32,
    };
    Some(Lease {
        addr: ack.yiaddr(),
        prefix_len: prefix_len.min(32),
        server_id,
        router,
        routes,
        dns,
        lease_secs,
        t1_secs,
        t2_secs,
        obtained: now_secs(),
        client_id: hex(client_id),
    })
}

/// Runs DISCOVER/OFFER/REQUEST/ACK for `c` inside `ns`, asking for `requested` (option 50)
/// if given, within [`ACQUIRE_TIMEOUT`]. Configures nothing: the caller puts the lease on
/// the interface.
pub fn acquire(ns: &Netns, c: &Client, requested: Option<Ipv4Addr>) -> Result<Lease, DhcpError> {
    acquire_noting(ns, c, requested, &|_| Ok(()))
}

/// [`acquire`], calling `note` with each offer before it sends the REQUEST for it (and
/// failing if `note` does): a caller that records the offer can give the address back
/// should it die between the server's ACK and its own record of the lease.
pub fn acquire_noting(
    ns: &Netns,
    c: &Client,
    requested: Option<Ipv4Addr>,
    note: OfferNote<'_>,
) -> Result<Lease, DhcpError> {
    ns.run(|| acquire_here(c, requested, ACQUIRE_TIMEOUT, note))
        .map_err(|e| DhcpError::Netns(e.to_string()))?
}

fn acquire_here(
    c: &Client,
    mut requested: Option<Ipv4Addr>,
    bound: Duration,
    note: OfferNote<'_>,
) -> Result<Lease, DhcpError> {
    let fd = packet_socket(c.ifindex)?;
    let end = Instant::now() + bound;
    loop {
        match acquire_once(&fd, c, requested, end, bound, note) {
            // RFC 2131 3.1: a NAK to the REQUEST restarts the configuration process. Two
            // ipvlan endpoints share a MAC, and a server that picks addresses from it (as
            // dnsmasq does) offers both the same one: the loser asks again, after a random
            // pause, and is offered another.
            Err(DhcpError::NoAck { what: NAK_TEXT, .. })
                if Instant::now() + Duration::from_secs(1) < end =>
            {
                requested = None;
                std::thread::sleep(jitter(Duration::from_millis(500)));
            }
            other => return other,
        }
    }
}

const NAK_TEXT: &str = "refused it (NAK)";

/// One DISCOVER/OFFER/REQUEST/ACK with a fresh transaction ID, until `end`.
fn acquire_once(
    fd: &OwnedFd,
    c: &Client,
    requested: Option<Ipv4Addr>,
    end: Instant,
    bound: Duration,
    note: OfferNote<'_>,
) -> Result<Lease, DhcpError> {
    let xid = new_xid()?;
    let mut discover = request_base(c, xid, MessageType::Discover);
    if let Some(r) = requested {
        discover
            .opts_mut()
            .insert(DhcpOption::RequestedIpAddress(r));
    }
    // Retransmission backoff (RFC 2131 4.1, shortened to fit the bound).
    let mut wait = Duration::from_secs(1);
    let mut sent = 0u32;
    let offer = loop {
        if Instant::now() >= end {
            return Err(DhcpError::NoOffer {
                waited: bound,
                sent,
            });
        }
        send_broadcast(fd, c.ifindex, &discover)?;
        sent += 1;
        let until = (Instant::now() + wait).min(end);
        if let Some(m) = recv_reply(fd, xid, &c.mac, MessageType::Offer, until)? {
            if m.opts().msg_type() == Some(MessageType::Offer) {
                break m;
            }
        }
        wait = (wait * 2).min(Duration::from_secs(4));
    };
    let addr = offer.yiaddr();
    let server = match offer.opts().get(OptionCode::ServerIdentifier) {
        Some(DhcpOption::ServerIdentifier(s)) => *s,
        _ => offer.siaddr(),
    };
    let offered = lease_of(&offer, &c.client_id).unwrap_or_else(|| Lease {
        addr,
        prefix_len: 24,
        server_id: server,
        router: None,
        routes: Vec::new(),
        dns: Vec::new(),
        lease_secs: 0,
        t1_secs: 0,
        t2_secs: 0,
        obtained: now_secs(),
        client_id: hex(&c.client_id),
    });
    note(&offered).map_err(|why| DhcpError::Record { addr, why })?;
    let mut req = request_base(c, xid, MessageType::Request);
    req.opts_mut().insert(DhcpOption::RequestedIpAddress(addr));
    req.opts_mut().insert(DhcpOption::ServerIdentifier(server));
    let mut wait = Duration::from_secs(1);
    loop {
        if Instant::now() >= end {
            return Err(DhcpError::NoAck {
                server,
                addr,
                what: "did not confirm it in time",
            });
        }
        send_broadcast(fd, c.ifindex, &req)?;
        let until = (Instant::now() + wait).min(end);
        if let Some(m) = recv_reply(fd, xid, &c.mac, MessageType::Ack, until)? {
            if m.opts().msg_type() == Some(MessageType::Nak) {
                return Err(DhcpError::NoAck {
                    server,
                    addr,
                    what: NAK_TEXT,
                });
            }
            match lease_of(&m, &c.client_id) {
                Some(l) => return Ok(l),
                None => continue,
            }
        }
        wait = (wait * 2).min(Duration::from_secs(4));
    }
}

/// INIT-REBOOT (RFC 2131 3.2, 4.3.2): a client that remembers a lease asks to keep it with a
/// broadcast REQUEST carrying the address as option 50, no server identifier and no
/// `ciaddr`, from its own interface in `ns`; sent again after 1 and 2 s, within `bound`.
/// An ACK confirms (or updates) the lease, a NAK says the address is wrong for this network;
/// with no answer the client may keep the lease until it ends.
pub fn reboot(
    ns: &Netns,
    c: &Client,
    addr: Ipv4Addr,
    bound: Duration,
) -> Result<Renewal, DhcpError> {
    ns.run(|| reboot_here(c, addr, bound))
        .map_err(|e| DhcpError::Netns(e.to_string()))?
}

fn new_xid() -> Result<u32, DhcpError> {
    let mut b = [0u8; 4];
    getrandom::fill(&mut b).map_err(|e| std::io::Error::other(e.to_string()))?;
    Ok(u32::from_ne_bytes(b))
}

fn reboot_here(c: &Client, addr: Ipv4Addr, bound: Duration) -> Result<Renewal, DhcpError> {
    let fd = packet_socket(c.ifindex)?;
    let xid = new_xid()?;
    let mut req = request_base(c, xid, MessageType::Request);
    req.opts_mut().insert(DhcpOption::RequestedIpAddress(addr));
    let end = Instant::now() + bound;
    let mut wait = Duration::from_secs(1);
    while Instant::now() < end {
        send_broadcast(&fd, c.ifindex, &req)?;
        let until = (Instant::now() + wait).min(end);
        if let Some(m) = recv_reply(&fd, xid, &c.mac, MessageType::Ack, until)? {
            if m.opts().msg_type() == Some(MessageType::Nak) {
                return Ok(Renewal::Nak);
            }
            if let Some(l) = lease_of(&m, &c.client_id) {
                return Ok(Renewal::Ack(l));
            }
        }
        wait = (wait * 2).min(Duration::from_secs(4));
    }
    Ok(Renewal::Silent)
}

/// A random pause of at most `max` (jitter before a first message, RFC 2131 4.1 and 4.4.1).
pub fn jitter(max: Duration) -> Duration {
    let mut b = [0u8; 8];
    if getrandom::fill(&mut b).is_err() {
        return Duration::ZERO;
    }
    let ms = u64::try_from(max.as_millis()).unwrap_or(u64::MAX);
    Duration::from_millis(u64::from_ne_bytes(b) % ms.saturating_add(1))
}

/// Resolves the next hop toward `dst` in `ns` (at most one second): a unicast sent right
/// before its interface goes would otherwise wait in the ARP queue and die with it.
fn resolve_next_hop(ns: &Netns, dst: Ipv4Addr) {
    let Ok(mut r) = Rtnl::open(ns) else {
        return;
    };
    let Ok(Some(found)) = r.route_get(IpAddr::V4(dst), None) else {
        return;
    };
    let (Some(oif), hop) = (found.oif, found.gateway.unwrap_or(IpAddr::V4(dst))) else {
        return;
    };
    if r.neigh_resolve(oif, hop).is_err() {
        return;
    }
    let end = Instant::now() + Duration::from_secs(1);
    while Instant::now() < end {
        match r.neigh_get(oif, hop) {
            Ok(Some(n)) if n.state.is_usable() || n.state == NeighState::Failed => return,
            Ok(_) => std::thread::sleep(Duration::from_millis(20)),
            Err(_) => return,
        }
    }
}

/// Sends a RELEASE for `lease` from `mac` inside `ns` (unicast UDP from the leased address,
/// which must still be on the interface, once the next hop is resolved). Best effort: the
/// server answers nothing.
pub fn release(ns: &Netns, mac: [u8; 6], lease: &Lease) -> Result<(), DhcpError> {
    release_observed(ns, mac, lease, || ())
}

/// [`release`], calling `before_send` once the next hop is resolved, right before the
/// RELEASE is sent (so the caller can tell the RELEASE from the ARP exchange before it);
/// returns what `before_send` returned.
pub fn release_observed<T>(
    ns: &Netns,
    mac: [u8; 6],
    lease: &Lease,
    before_send: impl FnOnce() -> T,
) -> Result<T, DhcpError> {
    resolve_next_hop(ns, lease.server_id);
    let seen = before_send();
    send_release(ns, mac, lease)?;
    Ok(seen)
}

fn send_release(ns: &Netns, mac: [u8; 6], lease: &Lease) -> Result<(), DhcpError> {
    let lease = lease.clone();
    ns.run(move || -> Result<(), DhcpError> {
        let z = Ipv4Addr::UNSPECIFIED;
        let mut xid = [0u8; 4];
        getrandom::fill(&mut xid).map_err(|e| std::io::Error::other(e.to_string()))?;
        let mut m = Message::new_with_id(u32::from_ne_bytes(xid), lease.addr, z, z, z, &mac);
        let o = m.opts_mut();
        o.insert(DhcpOption::MessageType(MessageType::Release));
        o.insert(DhcpOption::ServerIdentifier(lease.server_id));
        o.insert(DhcpOption::ClientIdentifier(unhex(&lease.client_id)));
        let payload = m.to_vec().map_err(|e| DhcpError::Encode(e.to_string()))?;
        let sock = UdpSocket::bind(SocketAddrV4::new(lease.addr, CLIENT_PORT))?;
        sock.send_to(&payload, SocketAddrV4::new(lease.server_id, SERVER_PORT))?;
        Ok(())
    })
    .map_err(|e| DhcpError::Netns(e.to_string()))?
}

/// What a RENEW or REBIND came to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Renewal {
    /// The server extended the lease (its address may have changed).
    Ack(Lease),
    /// The server refused it: the lease is gone.
    Nak,
    /// No answer within the wait.
    Silent,
}

/// Seconds since the epoch at which `lease` reaches T1, T2 and its end.
pub fn deadlines(lease: &Lease) -> (u64, u64, u64) {
    let at = |s: u32| lease.obtained.saturating_add(u64::from(s));
    (at(lease.t1_secs), at(lease.t2_secs), at(lease.lease_secs))
}

/// Extends `lease` inside `ns`: a REQUEST with `ciaddr` from the leased address (which must
/// be on the interface; the socket is bound to port 68 on `ifname`, so that a broadcast
/// NAK arrives too), unicast to the server (RENEW) or, with `rebind`, broadcast on
/// `ifname` (REBIND); waits up to `wait` for the server's answer.
pub fn renew(
    ns: &Netns,
    ifname: &str,
    mac: [u8; 6],
    lease: &Lease,
    rebind: bool,
    wait: Duration,
) -> Result<Renewal, DhcpError> {
    let lease = lease.clone();
    let ifname = ifname.to_string();
    ns.run(move || renew_here(&ifname, mac, &lease, rebind, wait))
        .map_err(|e| DhcpError::Netns(e.to_string()))?
}

fn renew_here(
    ifname: &str,
    mac: [u8; 6],
    lease: &Lease,
    rebind: bool,
    wait: Duration,
) -> Result<Renewal, DhcpError> {
    let z = Ipv4Addr::UNSPECIFIED;
    let mut xid = [0u8; 4];
    getrandom::fill(&mut xid).map_err(|e| std::io::Error::other(e.to_string()))?;
    let xid = u32::from_ne_bytes(xid);
    let mut m = Message::new_with_id(xid, lease.addr, z, z, z, &mac);
    let o = m.opts_mut();
    o.insert(DhcpOption::MessageType(MessageType::Request));
    o.insert(DhcpOption::ClientIdentifier(unhex(&lease.client_id)));
    let payload = m.to_vec().map_err(|e| DhcpError::Encode(e.to_string()))?;
    // Bound to any address on the interface: a NAK comes broadcast.
    let sock = UdpSocket::bind(SocketAddrV4::new(z, CLIENT_PORT))?;
    bind_to_device(&sock, ifname)?;
    let dst = if rebind {
        sock.set_broadcast(true)?;
        Ipv4Addr::BROADCAST
    } else {
        lease.server_id
    };
    sock.send_to(&payload, SocketAddrV4::new(dst, SERVER_PORT))?;
    let end = Instant::now() + wait;
    let mut buf = vec![0u8; 4096];
    loop {
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(Renewal::Silent);
        }
        sock.set_read_timeout(Some(left))?;
        let n = match sock.recv(&mut buf) {
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return Ok(Renewal::Silent)
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e.into()),
        };
        let Some(Ok(r)) = buf.get(..n).map(Message::from_bytes) else {
            continue;
        };
        if r.opcode() != Opcode::BootReply || r.xid() != xid || r.chaddr().get(..6) != Some(&mac) {
            continue;
        }
        match r.opts().msg_type() {
            Some(MessageType::Nak) => return Ok(Renewal::Nak),
            Some(MessageType::Ack) => {
                if let Some(l) = lease_of(&r, &unhex(&lease.client_id)) {
                    return Ok(Renewal::Ack(l));
                }
            }
            _ => {}
        }
    }
}

fn bind_to_device(sock: &UdpSocket, ifname: &str) -> std::io::Result<()> {
    let name = ifname.as_bytes();
    // SAFETY: name is valid for name.len() bytes for the call's duration.
    let r = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_BINDTODEVICE,
            name.as_ptr().cast(),
            name.len() as libc::socklen_t,
        )
    };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// The lease's address as the IPAM records an endpoint's.
pub fn endpoint_addr(lease: &Lease) -> Option<crate::ipam::EndpointAddr> {
    let subnet = crate::ipam::Prefix::new(IpAddr::V4(lease.addr), lease.prefix_len)?.masked();
    Some(crate::ipam::EndpointAddr {
        addr: IpAddr::V4(lease.addr),
        subnet,
        gateway: lease.router.map(IpAddr::V4),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datagram_round_trip_and_garbage() {
        let c = Client {
            ifindex: 1,
            mac: [2, 0, 0, 0, 0, 1],
            client_id: client_id_for("00112233445566778899"),
            hostname: Some("h".into()),
        };
        let m = request_base(&c, 7, MessageType::Discover);
        let pkt = udp_broadcast(&m.to_vec().unwrap());
        assert_eq!(checksum(&pkt[..20]), 0);
        // Our own datagram goes to port 67, so it is not a reply.
        assert!(dhcp_payload(&pkt).is_none());
        let mut reply = pkt.clone();
        reply[22..24].copy_from_slice(&68u16.to_be_bytes());
        let p = dhcp_payload(&reply).unwrap();
        let back = Message::from_bytes(p).unwrap();
        assert_eq!(back.xid(), 7);
        assert_eq!(back.opts().msg_type(), Some(MessageType::Discover));
        for n in 0..reply.len() {
            let _ = dhcp_payload(&reply[..n]);
        }
        assert!(dhcp_payload(&[0x45; 40]).is_none());
    }

    #[test]
    fn lease_from_ack() {
        let z = Ipv4Addr::UNSPECIFIED;
        let mut m = Message::new_with_id(1, z, Ipv4Addr::new(192, 0, 2, 50), z, z, &[2; 6]);
        m.set_opcode(Opcode::BootReply);
        let o = m.opts_mut();
        o.insert(DhcpOption::MessageType(MessageType::Ack));
        o.insert(DhcpOption::ServerIdentifier(Ipv4Addr::new(192, 0, 2, 1)));
        o.insert(DhcpOption::SubnetMask(Ipv4Addr::new(255, 255, 255, 0)));
        o.insert(DhcpOption::Router(vec![Ipv4Addr::new(192, 0, 2, 1)]));
        o.insert(DhcpOption::AddressLeaseTime(120));
        let l = lease_of(&m, &[0, 1]).unwrap();
        assert_eq!(l.addr, Ipv4Addr::new(192, 0, 2, 50));
        assert_eq!(l.prefix_len, 24);
        assert_eq!((l.t1_secs, l.t2_secs), (60, 105));
        assert_eq!(unhex(&l.client_id), vec![0, 1]);
        m.opts_mut().remove(OptionCode::ServerIdentifier);
        assert!(lease_of(&m, &[0]).is_none());
    }
}
