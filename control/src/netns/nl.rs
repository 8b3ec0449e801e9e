//! A blocking `NETLINK_ROUTE` socket bound to one network namespace.

use std::io;

use netlink_packet_core::{
    NetlinkBuffer, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST,
};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};

use super::{Netns, NetnsError, Result};

/// Receive buffer size: large enough for any dump chunk the kernel builds.
const RECV_BUF: usize = 64 * 1024;

/// A `NETLINK_ROUTE` socket living in one network namespace.
///
/// The socket is created on a thread inside the namespace ([`Rtnl::open`]); afterwards
/// every request acts in that namespace whichever thread sends it. Methods take `&mut self`
/// (one request in flight at a time). The link, address, route and neighbour operations are
/// methods of this type.
pub struct Rtnl {
    sock: Socket,
    seq: u32,
    ns: String,
    buf: Vec<u8>,
}

impl std::fmt::Debug for Rtnl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rtnl").field("ns", &self.ns).finish()
    }
}

/// Opens a bound `NETLINK_ROUTE` socket on a thread inside `ns`, subscribed to `groups`
/// (a bit mask of `1 << (RTNLGRP_* - 1)`).
pub(super) fn open_socket(ns: &Netns, groups: u32) -> Result<Socket> {
    let label = ns.label().to_string();
    ns.run(move || -> io::Result<Socket> {
        let mut sock = Socket::new(NETLINK_ROUTE)?;
        sock.bind(&SocketAddr::new(0, groups))?;
        // Let the kernel filter dumps by the header fields we set (e.g. ifindex).
        sock.set_netlink_get_strict_chk(true)?;
        Ok(sock)
    })?
    .map_err(|source| NetnsError::Socket { ns: label, source })
}

impl Rtnl {
    /// Opens a netlink socket in `ns` (see [`Netns::current`] for the caller's namespace).
    pub fn open(ns: &Netns) -> Result<Rtnl> {
        let sock = open_socket(ns, 0)?;
        Ok(Rtnl {
            sock,
            seq: 0,
            ns: ns.label().to_string(),
            buf: Vec::with_capacity(RECV_BUF),
        })
    }

    /// The label of the namespace this socket acts in.
    pub fn netns_label(&self) -> &str {
        &self.ns
    }

    pub(super) fn netlink_err(&self, op: &str, source: io::Error) -> NetnsError {
        let hint = hint_for(source.raw_os_error());
        NetnsError::Netlink {
            op: op.to_string(),
            ns: self.ns.clone(),
            source,
            hint,
        }
    }

    pub(super) fn link_not_found(&self, link: String) -> NetnsError {
        NetnsError::LinkNotFound {
            link,
            ns: self.ns.clone(),
        }
    }

    /// Sends a request that changes something and waits for the kernel's ACK.
    pub(super) fn ack(&mut self, op: &str, msg: RouteNetlinkMessage, flags: u16) -> Result<()> {
        self.exchange(op, msg, flags | NLM_F_ACK).map(|_| ())
    }

    /// Sends a get request for one object; returns the replies (normally one).
    pub(super) fn get(
        &mut self,
        op: &str,
        msg: RouteNetlinkMessage,
    ) -> Result<Vec<RouteNetlinkMessage>> {
        self.exchange(op, msg, NLM_F_ACK)
    }

    /// Sends a dump request; returns every message of the dump.
    pub(super) fn dump(
        &mut self,
        op: &str,
        msg: RouteNetlinkMessage,
    ) -> Result<Vec<RouteNetlinkMessage>> {
        self.exchange(op, msg, NLM_F_DUMP)
    }

    fn exchange(
        &mut self,
        op: &str,
        msg: RouteNetlinkMessage,
        flags: u16,
    ) -> Result<Vec<RouteNetlinkMessage>> {
        self.seq = self.seq.wrapping_add(1).max(1);
        let seq = self.seq;
        let mut nl = NetlinkMessage::from(msg);
        nl.header.flags = NLM_F_REQUEST | flags;
        nl.header.sequence_number = seq;
        nl.finalize();
        let mut out_buf = vec![0u8; nl.buffer_len()];
        nl.serialize(&mut out_buf);
        let kernel = SocketAddr::new(0, 0);
        loop {
            match self.sock.send_to(&out_buf, &kernel, 0) {
                Ok(_) => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(self.netlink_err(op, e)),
            }
        }
        let mut replies = Vec::new();
        loop {
            self.buf.clear();
            self.buf.reserve(RECV_BUF);
            match self.sock.recv(&mut self.buf, 0) {
                Ok(n) if n > self.buf.len() => {
                    return Err(self.decode_err(op, format!("reply of {n} bytes truncated")))
                }
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(self.netlink_err(op, e)),
            }
            let msgs = parse_messages(&self.buf).map_err(|d| self.decode_err(op, d))?;
            for m in msgs {
                if m.header.sequence_number != seq {
                    continue; // a stale reply to an earlier, abandoned request
                }
                match m.payload {
                    NetlinkPayload::Done(_) => return Ok(replies),
                    NetlinkPayload::Error(e) => match e.code {
                        None => return Ok(replies),
                        Some(_) => return Err(self.netlink_err(op, e.to_io())),
                    },
                    NetlinkPayload::InnerMessage(inner) => replies.push(inner),
                    _ => {}
                }
            }
        }
    }

    fn decode_err(&self, op: &str, detail: String) -> NetnsError {
        NetnsError::Decode {
            op: op.to_string(),
            ns: self.ns.clone(),
            detail,
        }
    }
}

// ---- multicast groups (message types netlink-packet-route does not know) -------------------

/// `RTM_NEWMULTICAST`: a device joined an IP multicast group (notification, Linux 6.11+).
const RTM_NEWMULTICAST: u16 = 56;
/// `RTM_DELMULTICAST`: a device left one.
const RTM_DELMULTICAST: u16 = 57;
/// `RTM_GETMULTICAST`: the dump request, and the type of its replies.
const RTM_GETMULTICAST: u16 = 58;
/// `IFA_MULTICAST`: the group address.
const IFA_MULTICAST: u16 = 7;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
/// Netlink header and `struct ifaddrmsg`.
const NLMSG_HDR: usize = 16;
const IFADDRMSG: usize = 8;

/// The rtnetlink groups that carry multicast group changes (`RTNLGRP_IPV4_MCADDR`,
/// `RTNLGRP_IPV6_MCADDR`; a kernel before 6.11 refuses them).
pub(super) const MCADDR_GROUPS: [u32; 2] = [37, 38];

/// A device's IP multicast group, joined or left.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct McNote {
    /// Joined (`RTM_NEWMULTICAST`, or a dump entry) or left (`RTM_DELMULTICAST`).
    pub joined: bool,
    /// The device.
    pub ifindex: u32,
    /// The group.
    pub group: std::net::IpAddr,
}

/// The netlink messages in one datagram as (type, sequence number, the whole message),
/// skipping what does not fit; never panics.
fn raw_messages(buf: &[u8]) -> impl Iterator<Item = (u16, u32, &[u8])> {
    let mut off = 0usize;
    std::iter::from_fn(move || {
        let rest = buf.get(off..)?;
        let len = u32::from_ne_bytes(rest.get(..4)?.try_into().ok()?) as usize;
        let msg = rest.get(..len).filter(|_| len >= NLMSG_HDR)?;
        let ty = u16::from_ne_bytes(msg.get(4..6)?.try_into().ok()?);
        let seq = u32::from_ne_bytes(msg.get(8..12)?.try_into().ok()?);
        off = off.saturating_add((len + 3) & !3);
        Some((ty, seq, msg))
    })
}

/// The group of one `RTM_*MULTICAST` message (`struct ifaddrmsg`, then `IFA_MULTICAST`).
fn mc_note(ty: u16, msg: &[u8]) -> Option<McNote> {
    let joined = match ty {
        RTM_NEWMULTICAST | RTM_GETMULTICAST => true,
        RTM_DELMULTICAST => false,
        _ => return None,
    };
    let body = msg.get(NLMSG_HDR..)?;
    let family = i32::from(*body.first()?);
    let ifindex = u32::from_ne_bytes(body.get(4..8)?.try_into().ok()?);
    let mut attrs = body.get(IFADDRMSG..)?;
    while attrs.len() >= 4 {
        let alen = usize::from(u16::from_ne_bytes(attrs[..2].try_into().ok()?));
        if alen < 4 {
            return None; // a malformed attribute: it would never advance
        }
        let aty = u16::from_ne_bytes(attrs[2..4].try_into().ok()?);
        let data = attrs.get(4..alen)?;
        if aty == IFA_MULTICAST {
            let group = match (family, data.len()) {
                (libc::AF_INET, 4) => std::net::IpAddr::from(<[u8; 4]>::try_from(data).ok()?),
                (libc::AF_INET6, 16) => std::net::IpAddr::from(<[u8; 16]>::try_from(data).ok()?),
                _ => return None,
            };
            return Some(McNote {
                joined,
                ifindex,
                group,
            });
        }
        attrs = attrs.get((alen + 3) & !3..).unwrap_or_default();
    }
    None
}

/// Whether endpoints can have the kernel's multicast filters here: the kernel announces
/// group changes (rtnetlink groups 37 and 38 can be joined) and lists both families' groups
/// (`RTM_GETMULTICAST`), as Linux 6.11 and later do. Probed in the calling thread's
/// namespace; the error says what is missing.
pub fn multicast_filter_support() -> std::result::Result<(), String> {
    use std::os::fd::AsRawFd;
    let sock =
        Socket::new(NETLINK_ROUTE).map_err(|e| format!("cannot open a netlink socket: {e}"))?;
    for g in MCADDR_GROUPS {
        set_sockopt_int(
            sock.as_raw_fd(),
            libc::SOL_NETLINK,
            libc::NETLINK_ADD_MEMBERSHIP,
            g as libc::c_int,
        )
        .map_err(|e| {
            format!(
                "the kernel announces no multicast group changes (rtnetlink group {g}: {e}; \
                 Linux 6.11 and later do)"
            )
        })?;
    }
    let ns = Netns::current().map_err(|e| e.to_string())?;
    let mut rtnl = Rtnl::open(&ns).map_err(|e| e.to_string())?;
    match rtnl.multicast_groups(1) {
        Ok(Some(_)) => Ok(()),
        Ok(None) => Err(
            "the kernel cannot list an interface's multicast groups (RTM_GETMULTICAST for \
             IPv4 and IPv6; Linux 6.11 and later can)"
                .to_string(),
        ),
        Err(e) => Err(e.to_string()),
    }
}

/// `setsockopt` of one `c_int` option.
pub(super) fn set_sockopt_int(
    fd: std::os::fd::RawFd,
    level: libc::c_int,
    opt: libc::c_int,
    bytes: libc::c_int,
) -> io::Result<()> {
    // SAFETY: passes a valid c_int and its size; the fd is kept open by the caller.
    let r = unsafe {
        libc::setsockopt(
            fd,
            level,
            opt,
            (&bytes as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The multicast group changes in one notification datagram.
pub(super) fn parse_mc_notes(buf: &[u8]) -> Vec<McNote> {
    raw_messages(buf)
        .filter_map(|(ty, _, msg)| mc_note(ty, msg))
        .collect()
}

impl Rtnl {
    /// The IPv4 and IPv6 multicast groups link `ifindex` has joined (`RTM_GETMULTICAST`
    /// dumps), or `None` on a kernel that cannot dump one of the families (before 6.11
    /// for IPv4).
    pub fn multicast_groups(&mut self, ifindex: u32) -> Result<Option<Vec<std::net::IpAddr>>> {
        let mut out = Vec::new();
        for family in [libc::AF_INET6, libc::AF_INET] {
            match self.dump_multicast(family as u8, ifindex) {
                Ok(g) => out.extend(g),
                Err(e) if e.raw_os_error() == Some(libc::ENODEV) => return Ok(Some(Vec::new())),
                Err(e)
                    if matches!(
                        e.raw_os_error(),
                        Some(libc::EOPNOTSUPP) | Some(libc::EINVAL) | Some(libc::EAFNOSUPPORT)
                    ) =>
                {
                    return Ok(None)
                }
                Err(e) => return Err(self.netlink_err("dump multicast groups", e)),
            }
        }
        Ok(Some(out))
    }

    fn dump_multicast(&mut self, family: u8, ifindex: u32) -> io::Result<Vec<std::net::IpAddr>> {
        self.seq = self.seq.wrapping_add(1).max(1);
        let seq = self.seq;
        let mut req = Vec::with_capacity(NLMSG_HDR + IFADDRMSG);
        req.extend_from_slice(&((NLMSG_HDR + IFADDRMSG) as u32).to_ne_bytes());
        req.extend_from_slice(&RTM_GETMULTICAST.to_ne_bytes());
        req.extend_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
        req.extend_from_slice(&seq.to_ne_bytes());
        req.extend_from_slice(&0u32.to_ne_bytes());
        req.extend_from_slice(&[family, 0, 0, 0]);
        req.extend_from_slice(&ifindex.to_ne_bytes());
        let kernel = SocketAddr::new(0, 0);
        loop {
            match self.sock.send_to(&req, &kernel, 0) {
                Ok(_) => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
        let mut groups = Vec::new();
        loop {
            self.buf.clear();
            self.buf.reserve(RECV_BUF);
            match self.sock.recv(&mut self.buf, 0) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            for (ty, s, msg) in raw_messages(&self.buf) {
                if s != seq {
                    continue; // a stale reply to an earlier, abandoned request
                }
                match ty {
                    NLMSG_DONE => return Ok(groups),
                    NLMSG_ERROR => {
                        let code = msg
                            .get(NLMSG_HDR..NLMSG_HDR + 4)
                            .and_then(|b| b.try_into().ok())
                            .map(i32::from_ne_bytes)
                            .unwrap_or(-libc::EPROTO);
                        return if code == 0 {
                            Ok(groups)
                        } else {
                            Err(io::Error::from_raw_os_error(-code))
                        };
                    }
                    _ => {
                        if let Some(n) = mc_note(ty, msg).filter(|n| n.ifindex == ifindex) {
                            groups.push(n.group);
                        }
                    }
                }
            }
        }
    }
}

/// Splits a datagram into netlink messages and decodes them. Messages of types the
/// decoder does not know are skipped; a malformed length is an error.
pub(super) fn parse_messages(
    buf: &[u8],
) -> std::result::Result<Vec<NetlinkMessage<RouteNetlinkMessage>>, String> {
    let mut out = Vec::new();
    let mut off = 0usize;
    while off < buf.len() {
        let rest = buf.get(off..).unwrap_or_default();
        let len = NetlinkBuffer::new_checked(rest)
            .map_err(|e| format!("bad netlink header at offset {off}: {e}"))?
            .length() as usize;
        let Some(one) = rest.get(..len) else {
            return Err(format!(
                "netlink message of {len} bytes overruns the datagram"
            ));
        };
        if len < 16 {
            return Err(format!("netlink message length {len} is too small"));
        }
        // Unknown or undecodable attributes in notifications must not kill a reader: skip.
        if let Ok(m) = NetlinkMessage::<RouteNetlinkMessage>::deserialize(one) {
            out.push(m);
        }
        off = off.saturating_add((len + 3) & !3);
    }
    Ok(out)
}

fn hint_for(errno: Option<i32>) -> &'static str {
    match errno {
        Some(libc::EPERM) | Some(libc::EACCES) => " (run as root / with CAP_NET_ADMIN)",
        Some(libc::ENODEV) => " (no such interface in this namespace)",
        Some(libc::EEXIST) => " (it already exists)",
        Some(libc::EADDRNOTAVAIL) => " (no such address on that interface)",
        Some(libc::ESRCH) => " (no such route or entry)",
        Some(libc::EBUSY) => " (the interface must be down for this, e.g. a rename)",
        Some(libc::ENETUNREACH) => " (no route to the gateway: add an address in its subnet first)",
        Some(libc::ENOENT) => " (not found)",
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An `RTM_*MULTICAST` message: header, `ifaddrmsg`, then `attrs` (type, payload).
    fn mc_msg(ty: u16, family: u8, ifindex: u32, attrs: &[(u16, &[u8])]) -> Vec<u8> {
        let mut body = vec![family, 0, 0, 0];
        body.extend_from_slice(&ifindex.to_ne_bytes());
        for (aty, data) in attrs {
            body.extend_from_slice(&((4 + data.len()) as u16).to_ne_bytes());
            body.extend_from_slice(&aty.to_ne_bytes());
            body.extend_from_slice(data);
            while body.len() % 4 != 0 {
                body.push(0);
            }
        }
        let mut m = ((16 + body.len()) as u32).to_ne_bytes().to_vec();
        m.extend_from_slice(&ty.to_ne_bytes());
        m.extend_from_slice(&[0; 10]);
        m.extend_from_slice(&body);
        m
    }

    #[test]
    fn multicast_notifications_parse_and_bad_bytes_do_not_panic() {
        let v6: std::net::Ipv6Addr = "ff02::1:ff00:5".parse().unwrap();
        let mut dgram = mc_msg(
            RTM_NEWMULTICAST,
            libc::AF_INET6 as u8,
            7,
            &[(6, &[0; 16]), (IFA_MULTICAST, &v6.octets())],
        );
        dgram.extend(mc_msg(
            RTM_DELMULTICAST,
            libc::AF_INET as u8,
            8,
            &[(IFA_MULTICAST, &[224, 0, 0, 251])],
        ));
        // Wrong length for the family: skipped.
        dgram.extend(mc_msg(
            RTM_NEWMULTICAST,
            libc::AF_INET as u8,
            9,
            &[(IFA_MULTICAST, &[1; 16])],
        ));
        assert_eq!(
            parse_mc_notes(&dgram),
            vec![
                McNote {
                    joined: true,
                    ifindex: 7,
                    group: v6.into()
                },
                McNote {
                    joined: false,
                    ifindex: 8,
                    group: "224.0.0.251".parse().unwrap()
                },
            ]
        );
        // Every truncation and a corrupted attribute length: no panic.
        for n in 0..dgram.len() {
            let _ = parse_mc_notes(&dgram[..n]);
        }
        let mut bad = dgram.clone();
        bad[24] = 0xff;
        let _ = parse_mc_notes(&bad);
        // An attribute length below its own header ends the message (no endless loop).
        for alen in 0..4u16 {
            let mut short = dgram.clone();
            short[24..26].copy_from_slice(&alen.to_ne_bytes());
            assert_eq!(parse_mc_notes(&short).len(), 1, "alen {alen}");
        }
    }

    #[test]
    fn parse_messages_rejects_bad_lengths_without_panicking() {
        assert!(parse_messages(&[]).unwrap().is_empty());
        assert!(parse_messages(&[1, 2, 3]).is_err());
        // Length field claims 200 bytes in a 16-byte datagram.
        let mut m = [0u8; 16];
        m[0] = 200;
        assert!(parse_messages(&m).is_err());
        // Length 4 (< header size).
        let mut m = [0u8; 16];
        m[0] = 4;
        assert!(parse_messages(&m).is_err());
        // A valid NLMSG_DONE (type 3) with a 4-byte payload.
        let mut m = [0u8; 20];
        m[0] = 20;
        m[4] = 3;
        let msgs = parse_messages(&m).unwrap();
        assert_eq!(msgs.len(), 1);
        assert!(matches!(msgs[0].payload, NetlinkPayload::Done(_)));
    }
}
