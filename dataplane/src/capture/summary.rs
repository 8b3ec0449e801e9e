//! One line about a frame, in the spirit of tcpdump's: the 802.1Q tag, ARP, IPv4/IPv6 with
//! ICMP, ICMPv6 (neighbour discovery named), UDP and TCP ports. Checked views only: any
//! bytes give a line.

use std::fmt::Write as _;

use crate::wire::{ethertype, ipproto, ArpOp, ArpView, EthView, Icmpv6View, Ipv4View, Ipv6View};

fn ports(l4: &[u8]) -> Option<(u16, u16)> {
    let s = u16::from_be_bytes([*l4.first()?, *l4.get(1)?]);
    let d = u16::from_be_bytes([*l4.get(2)?, *l4.get(3)?]);
    Some((s, d))
}

fn icmp4(m: &[u8]) -> String {
    let (Some(&t), Some(&c)) = (m.first(), m.get(1)) else {
        return "ICMP (truncated)".into();
    };
    let echo = |what: &str| match (m.get(4..6), m.get(6..8)) {
        (Some(&[a, b]), Some(&[x, y])) => format!(
            "ICMP echo {what}, id {}, seq {}",
            u16::from_be_bytes([a, b]),
            u16::from_be_bytes([x, y])
        ),
        _ => format!("ICMP echo {what}"),
    };
    match t {
        8 => echo("request"),
        0 => echo("reply"),
        3 => format!("ICMP destination unreachable (code {c})"),
        11 => "ICMP time exceeded".into(),
        _ => format!("ICMP type {t} code {c}"),
    }
}

fn l4(proto: u8, payload: &[u8], src: &str, dst: &str) -> String {
    match proto {
        ipproto::UDP | ipproto::TCP => {
            let name = if proto == ipproto::UDP { "UDP" } else { "TCP" };
            match ports(payload) {
                Some((s, d)) => format!("{src}.{s} > {dst}.{d}: {name}"),
                None => format!("{src} > {dst}: {name} (truncated)"),
            }
        }
        ipproto::ICMP => format!("{src} > {dst}: {}", icmp4(payload)),
        ipproto::ICMPV6 => {
            let what = match Icmpv6View::parse(payload) {
                Ok(i) => match (i.icmp_type, i.ns_target()) {
                    (135, Some(t)) => format!("ICMP6 neighbor solicitation, who has {t}"),
                    (136, _) => "ICMP6 neighbor advertisement".to_string(),
                    (133, _) => "ICMP6 router solicitation".to_string(),
                    (134, _) => "ICMP6 router advertisement".to_string(),
                    (128, _) => "ICMP6 echo request".to_string(),
                    (129, _) => "ICMP6 echo reply".to_string(),
                    (t, _) => format!("ICMP6 type {t}"),
                },
                Err(_) => "ICMP6 (truncated)".to_string(),
            };
            format!("{src} > {dst}: {what}")
        }
        p => format!("{src} > {dst}: protocol {p}"),
    }
}

/// One line about `frame` (Ethernet).
pub fn describe(frame: &[u8]) -> String {
    let Ok(outer) = EthView::parse(frame) else {
        return format!("{} bytes, shorter than an Ethernet header", frame.len());
    };
    let mut s = format!("{} > {}, ", outer.src, outer.dst);
    let eth = match outer.untag() {
        Ok(Some((tag, inner))) => {
            let _ = write!(s, "802.1Q vlan {}, ", tag.vid);
            inner
        }
        Ok(None) => outer,
        Err(_) => {
            s.push_str("802.1Q (truncated)");
            return s;
        }
    };
    let body = match eth.ethertype {
        ethertype::ARP => match ArpView::parse(eth.payload) {
            Ok(a) => match a.op {
                ArpOp::Request => format!("ARP, Request who-has {} tell {}", a.tpa, a.spa),
                ArpOp::Reply => format!("ARP, Reply {} is-at {}", a.spa, a.sha),
                ArpOp::Other(op) => format!("ARP, op {op}"),
            },
            Err(_) => "ARP (truncated)".to_string(),
        },
        ethertype::IPV4 => match Ipv4View::parse(eth.payload) {
            Ok(ip) => format!(
                "IPv4 {}",
                l4(
                    ip.protocol,
                    ip.payload,
                    &ip.src.to_string(),
                    &ip.dst.to_string()
                )
            ),
            Err(_) => "IPv4 (bad header)".to_string(),
        },
        ethertype::IPV6 => match Ipv6View::parse(eth.payload) {
            Ok(ip) => format!(
                "IPv6 {}",
                l4(
                    ip.next_header,
                    ip.payload,
                    &ip.src.to_string(),
                    &ip.dst.to_string()
                )
            ),
            Err(_) => "IPv6 (bad header)".to_string(),
        },
        et => format!("ethertype {et:#06x}"),
    };
    s.push_str(&body);
    let _ = write!(s, ", length {}", frame.len());
    s
}

#[cfg(test)]
#[allow(clippy::indexing_slicing)]
mod tests {
    use super::*;
    use crate::wire::{build, MacAddr};
    use std::net::{Ipv4Addr, Ipv6Addr};

    #[test]
    fn lines_name_what_tcpdump_names() {
        let a = MacAddr([2, 0, 0, 0, 0, 1]);
        let b = MacAddr([2, 0, 0, 0, 0, 2]);
        let (x, y) = (Ipv4Addr::new(192, 0, 2, 1), Ipv4Addr::new(192, 0, 2, 2));
        let ping = build::icmp4_echo(b, a, x, y, 7);
        assert_eq!(
            describe(&ping),
            format!(
                "02:00:00:00:00:01 > 02:00:00:00:00:02, IPv4 192.0.2.1 > 192.0.2.2: ICMP echo \
                 request, id {}, seq 7, length {}",
                describe_id(&ping),
                ping.len()
            )
        );
        let t = describe(&build::tagged(&build::arp_request(a, x, y), 20));
        assert!(
            t.contains("802.1Q vlan 20, ARP, Request who-has 192.0.2.2 tell 192.0.2.1"),
            "{t}"
        );
        let u = describe(&build::udp4(b, a, x, y, (4000, 53), b"q"));
        assert!(u.contains("192.0.2.1.4000 > 192.0.2.2.53: UDP"), "{u}");
        let v6 = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2);
        let ns = describe(&build::ns(a, Ipv6Addr::UNSPECIFIED, v6));
        assert!(
            ns.contains("neighbor solicitation, who has 2001:db8::2"),
            "{ns}"
        );
        assert!(describe(&[1, 2, 3]).contains("shorter than an Ethernet header"));
        for n in 0..ping.len() {
            let _ = describe(&ping[..n]);
        }
    }

    fn describe_id(frame: &[u8]) -> u16 {
        // The ICMP id sits after the Ethernet (14), IPv4 (20) and ICMP type/code/checksum.
        u16::from_be_bytes([frame[38], frame[39]])
    }
}
