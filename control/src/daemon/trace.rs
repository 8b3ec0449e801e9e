//! `uvlan trace`: builds one frame with `wire::build` and has the dataplane explain it
//! ([`DataplaneApi::trace`]): the live engine's decision, and for routed egress (ipvlan
//! L3/L3S) what the host's routing and neighbour tables answer, through the same next-hop
//! cache and resolver the datapath uses.
//!
//! - `--from ENDPOINT` (the namespace name shown in inspect, or an endpoint ID prefix): the
//!   frame is sent by that endpoint (`Ingress::Port`), with its MAC and its address of the
//!   destination's family as the source.
//! - `--from wire`: the frame arrives on the network's parent (`Ingress::Wire`), tagged with
//!   the network's VID unless `--vid` says otherwise (`--vid 0`: untagged); source MAC and
//!   IP from `--src-mac` / `--src-ip` (defaults `00:00:5e:00:53:01`, the documentation MAC,
//!   and `192.0.2.1` / `2001:db8::1`).
//! - `--to IP`: `--proto icmp` (echo request, default), `udp`, `arp` (request for IP, IPv4)
//!   or `ns` (neighbour solicitation for IP, IPv6). The destination MAC is `--dst-mac`, else
//!   the MAC of the endpoint holding IP, else (ipvlan) the master's MAC, which every ipvlan
//!   port and the parent share.
//! - `--to MAC`: a frame to that MAC, carrying an IP packet for the address of the endpoint
//!   that has the MAC.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use uvlan_dataplane::fwd::{Engine, Ingress, NetworkId, ParentId, PortId};
use uvlan_dataplane::wire::{build, MacAddr};

use crate::api::TraceRequest;
use crate::store::{EndpointRecord, NetworkRecord};

use super::dp::{with_engine, DataplaneApi};

/// What the daemon knows about the network being traced.
pub struct TraceInput<'a> {
    /// The network.
    pub rec: &'a NetworkRecord,
    /// Its engine network.
    pub nid: NetworkId,
    /// Its engine parent.
    pub parent: Option<ParentId>,
    /// Live endpoints with their engine ports.
    pub ports: &'a [(EndpointRecord, PortId)],
}

const DOC_MAC: MacAddr = MacAddr([0x00, 0x00, 0x5e, 0x00, 0x53, 0x01]);

enum To {
    Ip(IpAddr),
    Mac(MacAddr),
}

fn find_ep<'a>(
    input: &'a TraceInput<'_>,
    key: &str,
) -> Result<&'a (EndpointRecord, PortId), String> {
    if let Some(e) = input.ports.iter().find(|(e, _)| e.name == key) {
        return Ok(e);
    }
    let hits: Vec<_> = input
        .ports
        .iter()
        .filter(|(e, _)| !key.is_empty() && e.id.starts_with(key))
        .collect();
    match hits.as_slice() {
        [one] => Ok(one),
        _ => Err(format!(
            "network {} has no endpoint {key:?} (use the namespace name shown by \"uvlan \
             network inspect\", or \"wire\")",
            input.rec.name
        )),
    }
}

fn parse_mac(text: &str, what: &str) -> Result<MacAddr, String> {
    text.parse().map_err(|e| format!("{what}: {e}"))
}

/// Builds the frame and runs the trace; returns the printed explanation.
pub fn run(
    dp: &dyn DataplaneApi,
    input: &TraceInput<'_>,
    req: &TraceRequest,
) -> Result<String, String> {
    let to = if let Ok(ip) = req.to.parse::<IpAddr>() {
        To::Ip(ip)
    } else if let Ok(mac) = req.to.parse::<MacAddr>() {
        To::Mac(mac)
    } else {
        return Err(format!(
            "--to {}: expected an IP address or a MAC address",
            req.to
        ));
    };
    let proto = req.proto.as_deref().unwrap_or("icmp");
    let (dst_ip, mac_to) = match to {
        To::Ip(ip) => (ip, None),
        To::Mac(m) => {
            let ep = input
                .ports
                .iter()
                .find(|(e, _)| e.mac() == Some(m))
                .ok_or_else(|| {
                    format!(
                        "no endpoint of network {} has MAC {m}: give --to IP together with \
                         --dst-mac {m}",
                        input.rec.name
                    )
                })?;
            let ip =
                ep.0.addrs
                    .addrs()
                    .next()
                    .ok_or_else(|| format!("endpoint {} has no address", ep.0.name))?;
            (ip, Some(m))
        }
    };
    let v6 = dst_ip.is_ipv6();
    let parent_vid = input.rec.driver_config.parent.as_ref().and_then(|p| p.vid);

    let (ingress, src_mac, src_ip, from_text) = if req.from == "wire" {
        let Some(pid) = input.parent else {
            return Err(format!(
                "network {} has no parent, so no frame can come from the wire: use --from \
                 ENDPOINT",
                input.rec.name
            ));
        };
        let src_mac = match &req.src_mac {
            Some(m) => parse_mac(m, "--src-mac")?,
            None => DOC_MAC,
        };
        let src_ip = match &req.src_ip {
            Some(s) => s
                .parse::<IpAddr>()
                .map_err(|_| format!("--src-ip {s}: not an IP address"))?,
            None if v6 => IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1)),
            None => IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)),
        };
        (Ingress::Wire(pid), src_mac, src_ip, "the wire".to_string())
    } else {
        let (ep, port) = find_ep(input, &req.from)?;
        let src_mac = ep
            .mac()
            .ok_or_else(|| format!("endpoint {} has a bad MAC", ep.name))?;
        let src_ip = match &req.src_ip {
            Some(s) => s
                .parse::<IpAddr>()
                .map_err(|_| format!("--src-ip {s}: not an IP address"))?,
            None => ep
                .addrs
                .addrs()
                .find(|a| a.is_ipv6() == v6)
                .ok_or_else(|| {
                    format!(
                        "endpoint {} has no IPv{} address to send from",
                        ep.name,
                        if v6 { 6 } else { 4 }
                    )
                })?,
        };
        (
            Ingress::Port(*port),
            src_mac,
            src_ip,
            format!("endpoint {}", ep.name),
        )
    };
    if src_ip.is_ipv6() != v6 {
        return Err(format!(
            "source {src_ip} and destination {dst_ip} are of different IP families"
        ));
    }

    let owner_mac = input
        .ports
        .iter()
        .find(|(e, _)| e.addrs.addrs().any(|a| a == dst_ip))
        .and_then(|(e, _)| e.mac());
    let is_ipvlan = input.rec.driver == "ipvlan";
    let nid = input.nid;
    let master_mac = with_engine(dp, move |e: &mut Engine| {
        e.network_info(nid).map(|i| i.master_mac)
    })
    .map_err(|e| e.to_string())?;
    let unicast_dst = match (&req.dst_mac, mac_to, owner_mac) {
        (Some(m), _, _) => Some(parse_mac(m, "--dst-mac")?),
        (None, Some(m), _) => Some(m),
        (None, None, Some(m)) => Some(m),
        (None, None, None) if is_ipvlan => master_mac,
        (None, None, None) => None,
    };
    let need_dst = || {
        unicast_dst.ok_or_else(|| {
            format!(
                "no endpoint of network {} holds {dst_ip}: give --dst-mac (the MAC the \
                 sender would use, e.g. the gateway's)",
                input.rec.name
            )
        })
    };
    // --size: the frame's length, Ethernet header included (icmp and udp only); the data is
    // what the headers leave (0x55 bytes).
    let data = |headers: usize, default: &[u8]| -> Result<Vec<u8>, String> {
        match req.size {
            None => Ok(default.to_vec()),
            Some(n) if (n as usize) >= headers && n <= 65_535 + 14 => {
                Ok(vec![0x55; n as usize - headers])
            }
            Some(n) => Err(format!(
                "--size {n}: a {proto} frame from {src_ip} is {headers} to {} bytes long",
                65_535 + 14
            )),
        }
    };
    if req.size.is_some() && !matches!(proto, "icmp" | "udp") {
        return Err(format!(
            "--size applies to icmp and udp, not --proto {proto}"
        ));
    }
    let frame = match (proto, src_ip, dst_ip) {
        ("icmp", IpAddr::V4(s), IpAddr::V4(d)) => {
            let data = data(14 + 20 + 8, &[0x55; 32])?;
            build::icmp4_echo_data(need_dst()?, src_mac, s, d, 1, &data)
        }
        ("icmp", IpAddr::V6(s), IpAddr::V6(d)) => {
            let data = data(14 + 40 + 8, &[0x55; 32])?;
            build::icmp6_echo_data(need_dst()?, src_mac, s, d, 1, &data)
        }
        ("udp", IpAddr::V4(s), IpAddr::V4(d)) => {
            let data = data(14 + 20 + 8, b"uvlan trace")?;
            build::udp4(need_dst()?, src_mac, s, d, (40000, 9), &data)
        }
        ("udp", IpAddr::V6(s), IpAddr::V6(d)) => {
            let data = data(14 + 40 + 8, b"uvlan trace")?;
            build::udp6(need_dst()?, src_mac, s, d, (40000, 9), &data)
        }
        ("arp", IpAddr::V4(s), IpAddr::V4(d)) => {
            let f = build::arp_request(src_mac, s, d);
            match &req.dst_mac {
                Some(m) => {
                    let mut f = f;
                    f[..6].copy_from_slice(&parse_mac(m, "--dst-mac")?.0);
                    f
                }
                None => f,
            }
        }
        ("ns", IpAddr::V6(s), IpAddr::V6(d)) => build::ns(src_mac, s, d),
        ("arp", ..) => return Err("--proto arp needs an IPv4 destination".to_string()),
        ("ns", ..) => return Err("--proto ns needs an IPv6 destination".to_string()),
        (p, ..) => return Err(format!("--proto {p}: expected icmp, udp, arp or ns")),
    };
    let vid = match (req.vid, &ingress) {
        (Some(0), _) => None,
        (Some(v), _) => Some(v),
        (None, Ingress::Wire(_)) => parent_vid,
        (None, _) => None,
    };
    if let Some(v) = vid {
        if !(1..=4094).contains(&v) {
            return Err(format!("--vid {v}: a VID is 1-4094 (0 for untagged)"));
        }
    }
    let frame = match vid {
        Some(v) => build::tagged(&frame, v),
        None => frame,
    };
    let header = format!(
        "{proto} {src_ip} > {dst_ip} from {from_text}{} on network {}",
        vid.map(|v| format!(" (802.1Q VID {v})"))
            .unwrap_or_default(),
        input.rec.name
    );
    let text = dp.trace(frame, ingress).map_err(|e| e.to_string())?;
    Ok(format!("{header}\n{text}"))
}
