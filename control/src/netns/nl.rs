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
