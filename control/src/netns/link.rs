//! Link operations: get, MAC, MTU, up/down, ARP, rename, delete, IPv6 address generation.

use netlink_packet_core::{DefaultNla, NLM_F_CREATE, NLM_F_EXCL};
use netlink_packet_route::link::{
    AfSpecInet, AfSpecInet6, AfSpecUnspec, In6AddrGenMode, InfoData, InfoKind, InfoVeth,
    LinkAttribute, LinkFlags, LinkInfo as NlLinkInfo, LinkMessage, State,
};
use netlink_packet_route::RouteNetlinkMessage;

use super::{NetnsError, Result, Rtnl};

/// Operational state of a link (`IFLA_OPERSTATE`, RFC 2863).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OperState {
    /// State unknown (e.g. TAPs and loopback often report this while working).
    Unknown,
    /// Some component is missing.
    NotPresent,
    /// Down.
    Down,
    /// Down because of the lower layer (e.g. no carrier, veth peer down).
    LowerLayerDown,
    /// In test mode.
    Testing,
    /// Waiting for an external event.
    Dormant,
    /// Up and able to pass packets.
    Up,
}

/// IPv6 link-local address generation mode (`IFLA_INET6_ADDR_GEN_MODE`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AddrGenMode {
    /// From the MAC (EUI-64): the kernel's default.
    Eui64,
    /// No automatic link-local address.
    None,
    /// RFC 7217 stable privacy (needs a `stable_secret`).
    StablePrivacy,
    /// Random interface identifier (distinct link-locals even with equal MACs).
    Random,
}

impl From<AddrGenMode> for In6AddrGenMode {
    fn from(m: AddrGenMode) -> Self {
        match m {
            AddrGenMode::Eui64 => In6AddrGenMode::Eui64,
            AddrGenMode::None => In6AddrGenMode::None,
            AddrGenMode::StablePrivacy => In6AddrGenMode::StablePrivacy,
            AddrGenMode::Random => In6AddrGenMode::Random,
        }
    }
}

/// A link as the kernel reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkInfo {
    /// Interface index.
    pub index: u32,
    /// Interface name.
    pub name: String,
    /// Hardware address, if Ethernet-like.
    pub mac: Option<[u8; 6]>,
    /// MTU.
    pub mtu: u32,
    /// `IFF_*` flags (`IFF_UP` = 0x1, `IFF_NOARP` = 0x80, `IFF_LOWER_UP` = 0x10000, ...).
    pub flags: u32,
    /// Operational state.
    pub operstate: OperState,
    /// Link kind (`"veth"`, `"tun"`, `"macvlan"`, ...), if it has one.
    pub kind: Option<String>,
    /// IPv6 address generation mode, when the kernel reports IPv6 settings.
    pub addr_gen_mode: Option<AddrGenMode>,
    /// Link-layer type (`ARPHRD_*`: 1 Ethernet, 772 loopback, 65534 none, ...).
    pub link_type: u16,
    /// The interface's alias (`IFLA_IFALIAS`, `ip link set dev X alias TEXT`), if set.
    pub alias: Option<String>,
    /// `IFLA_LINK`: the lower or peer interface's index (a veth's peer, possibly in another
    /// namespace); the kernel leaves it out when it equals the interface's own index.
    pub link: Option<u32>,
    /// The device's own drop counters (`IFLA_STATS64` `rx_dropped`, `tx_dropped`), when
    /// the kernel reports them. For a TAP, `tx_dropped` counts frames its stack sent that
    /// the queue had no room for (uvlan never read them) and `rx_dropped` frames written
    /// to it that its stack refused.
    pub drops: Option<LinkDrops>,
    /// Promiscuous or all-multicast, by a user's flag (`IFF_PROMISC`, `IFF_ALLMULTI`) or a
    /// listener's count (`IFLA_PROMISCUITY`, `IFLA_ALLMULTI`): the device accepts every
    /// multicast group (`ipvlan_set_multicast_mac_filter`, `macvlan_set_mac_lists`).
    pub all_multicast: bool,
}

/// A link's own drop counters (`IFLA_STATS64`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LinkDrops {
    /// `rx_dropped`.
    pub rx_dropped: u64,
    /// `tx_dropped`.
    pub tx_dropped: u64,
}

impl LinkInfo {
    /// Administratively up (`IFF_UP`).
    pub fn is_up(&self) -> bool {
        self.flags & libc::IFF_UP as u32 != 0
    }

    /// Carrier present (`IFF_LOWER_UP`).
    pub fn is_lower_up(&self) -> bool {
        self.flags & libc::IFF_LOWER_UP as u32 != 0
    }

    /// The loopback device (`IFF_LOOPBACK`).
    pub fn is_loopback(&self) -> bool {
        self.flags & libc::IFF_LOOPBACK as u32 != 0
    }

    /// ARP disabled (`IFF_NOARP`).
    pub fn is_noarp(&self) -> bool {
        self.flags & libc::IFF_NOARP as u32 != 0
    }

    pub(super) fn from_message(m: &LinkMessage) -> LinkInfo {
        let mut info = LinkInfo {
            index: m.header.index,
            name: String::new(),
            mac: None,
            mtu: 0,
            flags: m.header.flags.bits(),
            operstate: OperState::Unknown,
            kind: None,
            addr_gen_mode: None,
            link_type: u16::from(m.header.link_layer_type),
            alias: None,
            link: None,
            drops: None,
            all_multicast: m.header.flags.bits() & (libc::IFF_PROMISC | libc::IFF_ALLMULTI) as u32
                != 0,
        };
        for a in &m.attributes {
            match a {
                LinkAttribute::Promiscuity(n) | LinkAttribute::AllMulticast(n) if *n > 0 => {
                    info.all_multicast = true
                }
                LinkAttribute::IfName(n) => info.name = n.clone(),
                LinkAttribute::Address(mac) => info.mac = <[u8; 6]>::try_from(&mac[..]).ok(),
                LinkAttribute::Mtu(mtu) => info.mtu = *mtu,
                LinkAttribute::Stats64(st) => {
                    info.drops = Some(LinkDrops {
                        rx_dropped: st.rx_dropped,
                        tx_dropped: st.tx_dropped,
                    })
                }
                LinkAttribute::IfAlias(a) if !a.is_empty() => info.alias = Some(a.clone()),
                LinkAttribute::Link(l) => info.link = Some(*l),
                LinkAttribute::OperState(s) => info.operstate = oper_state(s),
                LinkAttribute::LinkInfo(infos) => {
                    for i in infos {
                        if let NlLinkInfo::Kind(k) = i {
                            info.kind = Some(k.to_string());
                        }
                    }
                }
                LinkAttribute::AfSpecUnspec(specs) => {
                    for s in specs {
                        if let AfSpecUnspec::Inet6(v6) = s {
                            for x in v6 {
                                if let AfSpecInet6::AddrGenMode(g) = x {
                                    info.addr_gen_mode = match g {
                                        In6AddrGenMode::Eui64 => Some(AddrGenMode::Eui64),
                                        In6AddrGenMode::None => Some(AddrGenMode::None),
                                        In6AddrGenMode::StablePrivacy => {
                                            Some(AddrGenMode::StablePrivacy)
                                        }
                                        In6AddrGenMode::Random => Some(AddrGenMode::Random),
                                        _ => None,
                                    };
                                }
                            }
                        }
                    }
                }
                _ => {}
            }
        }
        info
    }
}

fn oper_state(s: &State) -> OperState {
    match s {
        State::NotPresent => OperState::NotPresent,
        State::Down => OperState::Down,
        State::LowerLayerDown => OperState::LowerLayerDown,
        State::Testing => OperState::Testing,
        State::Dormant => OperState::Dormant,
        State::Up => OperState::Up,
        _ => OperState::Unknown,
    }
}

/// `IFLA_INET_CONF` (linux/if_link.h): the nested IPv4 devconf values of `AF_INET`.
const IFLA_INET_CONF: u16 = 1;
/// `IPV4_DEVCONF_ARP_NOTIFY` (linux/ip.h).
pub const IPV4_DEVCONF_ARP_NOTIFY: u16 = 22;

fn link_msg(index: u32) -> LinkMessage {
    let mut m = LinkMessage::default();
    m.header.index = index;
    m
}

/// Checks an interface name the way the kernel's `dev_valid_name` does.
pub(super) fn check_ifname(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 15
        && name != "."
        && name != ".."
        && !name
            .bytes()
            .any(|b| b == b'/' || b == b':' || b == 0 || b.is_ascii_whitespace());
    if ok {
        Ok(())
    } else {
        Err(NetnsError::InvalidArgument(format!(
            "interface name {name:?}: 1 to 15 bytes, no '/', ':' or spaces"
        )))
    }
}

impl Rtnl {
    /// Looks a link up by name.
    pub fn link_get(&mut self, name: &str) -> Result<LinkInfo> {
        check_ifname(name)?;
        let mut m = link_msg(0);
        m.attributes.push(LinkAttribute::IfName(name.to_string()));
        self.link_get_msg(m, format!("{name:?}"))
    }

    /// Looks a link up by index.
    pub fn link_get_by_index(&mut self, index: u32) -> Result<LinkInfo> {
        self.link_get_msg(link_msg(index), format!("index {index}"))
    }

    fn link_get_msg(&mut self, m: LinkMessage, what: String) -> Result<LinkInfo> {
        let op = format!("get link {what}");
        let replies = match self.get(&op, RouteNetlinkMessage::GetLink(m)) {
            Err(NetnsError::Netlink { source, .. })
                if source.raw_os_error() == Some(libc::ENODEV) =>
            {
                return Err(self.link_not_found(what))
            }
            r => r?,
        };
        replies
            .iter()
            .find_map(|r| match r {
                RouteNetlinkMessage::NewLink(l) => Some(LinkInfo::from_message(l)),
                _ => None,
            })
            .ok_or_else(|| self.link_not_found(what))
    }

    /// All links of the namespace.
    pub fn link_list(&mut self) -> Result<Vec<LinkInfo>> {
        let replies = self.dump("list links", RouteNetlinkMessage::GetLink(link_msg(0)))?;
        Ok(replies
            .iter()
            .filter_map(|r| match r {
                RouteNetlinkMessage::NewLink(l) => Some(LinkInfo::from_message(l)),
                _ => None,
            })
            .collect())
    }

    /// The first `PREFIXn` (n = 0, 1, ...) not used by a link, e.g. `eth0` (Docker's rule
    /// for naming the endpoint inside a container).
    pub fn next_free_name(&mut self, prefix: &str) -> Result<String> {
        let taken: std::collections::HashSet<String> =
            self.link_list()?.into_iter().map(|l| l.name).collect();
        for n in 0u32.. {
            let cand = format!("{prefix}{n}");
            check_ifname(&cand)?;
            if !taken.contains(&cand) {
                return Ok(cand);
            }
        }
        Err(NetnsError::InvalidArgument(format!(
            "no free name with prefix {prefix:?}"
        )))
    }

    fn set_link(&mut self, op: String, m: LinkMessage) -> Result<()> {
        let index = m.header.index;
        match self.ack(&op, RouteNetlinkMessage::SetLink(m), 0) {
            Err(NetnsError::Netlink { source, .. })
                if source.raw_os_error() == Some(libc::ENODEV) =>
            {
                Err(self.link_not_found(format!("index {index}")))
            }
            r => r,
        }
    }

    /// Sets the hardware address.
    pub fn link_set_mac(&mut self, index: u32, mac: [u8; 6]) -> Result<()> {
        let mut m = link_msg(index);
        m.attributes.push(LinkAttribute::Address(mac.to_vec()));
        self.set_link(format!("set MAC of link {index}"), m)
    }

    /// Sets the MTU.
    pub fn link_set_mtu(&mut self, index: u32, mtu: u32) -> Result<()> {
        let mut m = link_msg(index);
        m.attributes.push(LinkAttribute::Mtu(mtu));
        self.set_link(format!("set MTU {mtu} on link {index}"), m)
    }

    /// Brings the link up or down (`ip link set dev X up|down`).
    pub fn link_set_up(&mut self, index: u32, up: bool) -> Result<()> {
        let mut m = link_msg(index);
        m.header.change_mask = LinkFlags::Up;
        if up {
            m.header.flags = LinkFlags::Up;
        }
        let word = if up { "up" } else { "down" };
        self.set_link(format!("set link {index} {word}"), m)
    }

    /// Sets the carrier (`ip link set dev X carrier on|off`; TAPs implement it). The link
    /// then shows `NO-CARRIER` and operational state `DOWN` until the carrier is back, as a
    /// macvlan/ipvlan slave does while its parent is down.
    pub fn link_set_carrier(&mut self, index: u32, on: bool) -> Result<()> {
        let mut m = link_msg(index);
        m.attributes.push(LinkAttribute::Carrier(u8::from(on)));
        let word = if on { "on" } else { "off" };
        self.set_link(format!("set carrier {word} on link {index}"), m)
    }

    /// Turns ARP on or off (`ip link set dev X arp on|off`, the `IFF_NOARP` flag).
    pub fn link_set_arp(&mut self, index: u32, arp: bool) -> Result<()> {
        let mut m = link_msg(index);
        m.header.change_mask = LinkFlags::Noarp;
        if !arp {
            m.header.flags = LinkFlags::Noarp;
        }
        let word = if arp { "on" } else { "off" };
        self.set_link(format!("set arp {word} on link {index}"), m)
    }

    /// Sets IPv4 per-interface settings (`net.ipv4.conf.IF.*`) through netlink
    /// (`IFLA_AF_SPEC` / `AF_INET` / `IFLA_INET_CONF`), each as `(IPV4_DEVCONF_* index,
    /// value)`. Unlike a write under `/proc/sys/net/ipv4`, whose first lookup in a new
    /// namespace walks a dentry chain as long as the number of namespaces (milliseconds with
    /// a thousand), this costs the same with any number of namespaces.
    pub fn link_set_inet_conf(&mut self, index: u32, values: &[(u16, u32)]) -> Result<()> {
        let mut nested = Vec::with_capacity(values.len() * 8);
        for (id, v) in values {
            // One NLA: length 8 (4 header + 4 value), type `id`, native-endian u32.
            nested.extend_from_slice(&8u16.to_ne_bytes());
            nested.extend_from_slice(&id.to_ne_bytes());
            nested.extend_from_slice(&v.to_ne_bytes());
        }
        let mut m = link_msg(index);
        m.attributes
            .push(LinkAttribute::AfSpecUnspec(vec![AfSpecUnspec::Inet(vec![
                AfSpecInet::Other(DefaultNla::new(IFLA_INET_CONF, nested)),
            ])]));
        self.set_link(format!("set IPv4 settings of link {index}"), m)
    }

    /// Sets the interface's alias (`ip link set dev X alias TEXT`; at most 255 bytes). An
    /// alias follows the device into other namespaces and through renames.
    pub fn link_set_alias(&mut self, index: u32, alias: &str) -> Result<()> {
        if alias.len() > 255 || alias.contains('\0') {
            return Err(NetnsError::InvalidArgument(format!(
                "interface alias {alias:?}: at most 255 bytes, no NUL"
            )));
        }
        let mut m = link_msg(index);
        m.attributes.push(LinkAttribute::IfAlias(alias.to_string()));
        self.set_link(format!("set alias of link {index}"), m)
    }

    /// Renames the link (it must be down).
    pub fn link_rename(&mut self, index: u32, new_name: &str) -> Result<()> {
        check_ifname(new_name)?;
        let mut m = link_msg(index);
        m.attributes
            .push(LinkAttribute::IfName(new_name.to_string()));
        self.set_link(format!("rename link {index} to {new_name:?}"), m)
    }

    /// Creates a veth pair (`ip link add NAME type veth peer name PEER netns NS`): `name`
    /// in this socket's namespace, `peer` in `peer_ns`. Both start down.
    pub fn link_add_veth(
        &mut self,
        name: &str,
        peer: &str,
        peer_ns: std::os::fd::BorrowedFd<'_>,
    ) -> Result<()> {
        use std::os::fd::AsRawFd;
        check_ifname(name)?;
        check_ifname(peer)?;
        let mut p = LinkMessage::default();
        p.attributes.push(LinkAttribute::IfName(peer.to_string()));
        p.attributes
            .push(LinkAttribute::NetNsFd(peer_ns.as_raw_fd()));
        let mut m = link_msg(0);
        m.attributes.push(LinkAttribute::IfName(name.to_string()));
        m.attributes.push(LinkAttribute::LinkInfo(vec![
            NlLinkInfo::Kind(InfoKind::Veth),
            NlLinkInfo::Data(InfoData::Veth(InfoVeth::Peer(p))),
        ]));
        self.ack(
            &format!("create veth pair {name}/{peer}"),
            RouteNetlinkMessage::NewLink(m),
            NLM_F_CREATE | NLM_F_EXCL,
        )
    }

    /// Deletes the link (`ip link del`).
    pub fn link_delete(&mut self, index: u32) -> Result<()> {
        let op = format!("delete link {index}");
        match self.ack(&op, RouteNetlinkMessage::DelLink(link_msg(index)), 0) {
            Err(NetnsError::Netlink { source, .. })
                if source.raw_os_error() == Some(libc::ENODEV) =>
            {
                Err(self.link_not_found(format!("index {index}")))
            }
            r => r,
        }
    }

    /// Sets the IPv6 address generation mode (`ip link set dev X addrgenmode random`).
    /// Takes effect for addresses generated afterwards (set it before bringing the link up).
    pub fn link_set_addr_gen_mode(&mut self, index: u32, mode: AddrGenMode) -> Result<()> {
        let mut m = link_msg(index);
        m.attributes
            .push(LinkAttribute::AfSpecUnspec(vec![AfSpecUnspec::Inet6(
                vec![AfSpecInet6::AddrGenMode(mode.into())],
            )]));
        self.set_link(format!("set addrgenmode {mode:?} on link {index}"), m)
    }
}
