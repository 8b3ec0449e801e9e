//! The probes that need interfaces, run in a scratch network namespace (the dataplane's
//! [`probe::in_scratch_netns`]): a TAP, a veth pair to try BPF, XDP, tcx, AF_XDP and
//! AF_PACKET parents on, and one link of each kernel driver uvlan stands in for. The
//! namespace goes away with everything in it when the probe thread ends.

use std::io;

use netlink_packet_core::{
    NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REQUEST,
};
use netlink_packet_route::link::{
    InfoData, InfoIpVlan, InfoKind, InfoMacVlan, InfoVeth, InfoVlan, IpVlanMode, LinkAttribute,
    LinkFlags, LinkInfo, LinkMessage, MacVlanMode,
};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};
use serde::Serialize;

use uvlan_dataplane::port::probe::{self, TapProbe};
use uvlan_dataplane::port::xsk::{BindMode, XdpMode};

/// The veth the parent probes use (its peer is `uvdoc1`).
const VETH: &str = "uvdoc0";

/// What the scratch namespace showed. Each field is the probe's outcome, or why it failed.
#[derive(Debug)]
pub struct Scratch {
    /// A TAP with a vnet header and uvlan's offloads.
    pub tap: Result<TapProbe, String>,
    /// A veth pair could be made (the parent probes need it).
    pub veth: Result<(), String>,
    /// BPF programs load.
    pub bpf: Result<(), String>,
    /// XDP attaches in the driver (veth's native XDP).
    pub xdp_native: Result<(), String>,
    /// XDP attaches in the core receive path.
    pub xdp_generic: Result<(), String>,
    /// A tcx ingress program attaches.
    pub tcx: Result<(), String>,
    /// The fast-path programs load (`bpf_redirect_peer`) and attach at tcx on a veth.
    pub fast_path: Result<(), String>,
    /// The AF_XDP parent opens, with the XDP and bind modes it got.
    pub af_xdp: Result<(XdpMode, BindMode), String>,
    /// The AF_PACKET parent (socket and tcx filter) opens.
    pub af_packet: Result<(), String>,
    /// Endpoints' multicast filters can follow their groups (the kernel announces and lists
    /// them).
    pub multicast: Result<(), String>,
    /// The kernel's own drivers, by module name.
    pub kernel: Vec<KernelDriver>,
}

/// Whether the kernel could make one kind of link.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct KernelDriver {
    /// The module: `ipvlan`, `macvlan`, `8021q`, `dummy`.
    pub module: &'static str,
    /// `None` when the link was made; else why not.
    pub error: Option<String>,
}

/// A `NETLINK_ROUTE` socket of the probe thread: only what the probes need.
struct Nl {
    sock: Socket,
    seq: u32,
}

impl Nl {
    fn open() -> io::Result<Nl> {
        let mut sock = Socket::new(NETLINK_ROUTE)?;
        sock.bind(&SocketAddr::new(0, 0))?;
        Ok(Nl { sock, seq: 0 })
    }

    /// `RTM_NEWLINK` with create-exclusive, waiting for the kernel's answer.
    fn add_link(&mut self, msg: LinkMessage) -> io::Result<()> {
        self.seq += 1;
        let mut nl = NetlinkMessage::from(RouteNetlinkMessage::NewLink(msg));
        nl.header.flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL;
        nl.header.sequence_number = self.seq;
        nl.finalize();
        let mut out = vec![0u8; nl.buffer_len()];
        nl.serialize(&mut out);
        self.sock.send_to(&out, &SocketAddr::new(0, 0), 0)?;
        let mut buf = Vec::with_capacity(8192);
        loop {
            buf.clear();
            self.sock.recv(&mut buf, 0)?;
            let Ok(reply) = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&buf) else {
                return Err(io::Error::other("undecodable netlink answer"));
            };
            if reply.header.sequence_number != self.seq {
                continue;
            }
            return match reply.payload {
                NetlinkPayload::Error(e) => match e.code {
                    None => Ok(()),
                    Some(_) => Err(e.to_io()),
                },
                _ => Ok(()),
            };
        }
    }
}

/// A link message: name, up, kind and its data, and the lower link's index.
fn link(name: &str, kind: InfoKind, data: Option<InfoData>, lower: Option<u32>) -> LinkMessage {
    let mut m = LinkMessage::default();
    m.header.flags = LinkFlags::Up;
    m.header.change_mask = LinkFlags::Up;
    m.attributes.push(LinkAttribute::IfName(name.to_string()));
    if let Some(index) = lower {
        m.attributes.push(LinkAttribute::Link(index));
    }
    let mut info = vec![LinkInfo::Kind(kind)];
    info.extend(data.map(LinkInfo::Data));
    m.attributes.push(LinkAttribute::LinkInfo(info));
    m
}

fn veth_pair(nl: &mut Nl) -> io::Result<u32> {
    let mut peer = LinkMessage::default();
    peer.attributes
        .push(LinkAttribute::IfName("uvdoc1".to_string()));
    nl.add_link(link(
        VETH,
        InfoKind::Veth,
        Some(InfoData::Veth(InfoVeth::Peer(peer))),
        None,
    ))?;
    uvlan_dataplane::port::ethtool::if_index(VETH)
}

/// Explains a failed link creation: `EOPNOTSUPP` is the kernel saying it has no such driver.
fn driver_error(e: &io::Error) -> String {
    if e.raw_os_error() == Some(libc::EOPNOTSUPP) {
        "not available (the kernel has no such module)".to_string()
    } else {
        e.to_string()
    }
}

fn kernel_drivers(nl: &mut Nl, lower: Option<u32>) -> Vec<KernelDriver> {
    let no_lower = || Some("not tried: no veth to put it on".to_string());
    let mut out = Vec::new();
    let mut try_link = |module: &'static str, msg: Option<LinkMessage>| {
        let error = match msg {
            None => no_lower(),
            Some(m) => nl.add_link(m).err().map(|e| driver_error(&e)),
        };
        out.push(KernelDriver { module, error });
    };
    try_link(
        "ipvlan",
        lower.map(|l| {
            link(
                "uvdocipv",
                InfoKind::IpVlan,
                Some(InfoData::IpVlan(vec![InfoIpVlan::Mode(IpVlanMode::L2)])),
                Some(l),
            )
        }),
    );
    try_link(
        "macvlan",
        lower.map(|l| {
            link(
                "uvdocmac",
                InfoKind::MacVlan,
                Some(InfoData::MacVlan(vec![InfoMacVlan::Mode(
                    MacVlanMode::Bridge,
                )])),
                Some(l),
            )
        }),
    );
    try_link(
        "8021q",
        lower.map(|l| {
            link(
                "uvdoc0.5",
                InfoKind::Vlan,
                Some(InfoData::Vlan(vec![InfoVlan::Id(5)])),
                Some(l),
            )
        }),
    );
    try_link("dummy", Some(link("uvdocdum", InfoKind::Dummy, None, None)));
    out
}

fn text<E: std::fmt::Display>(r: Result<impl Sized, E>) -> Result<(), String> {
    r.map(drop).map_err(|e| e.to_string())
}

/// Runs every interface probe in a scratch namespace. `Err` when no namespace could be made.
pub fn run() -> io::Result<Scratch> {
    probe::in_scratch_netns(|| {
        let tap = probe::tap().map_err(|e| e.to_string());
        let mut nl = Nl::open();
        let lower = match &mut nl {
            Ok(nl) => veth_pair(nl).map_err(|e| format!("cannot create a veth pair: {e}")),
            Err(e) => Err(format!("cannot open a netlink socket: {e}")),
        };
        let veth = lower.as_ref().map(drop).map_err(Clone::clone);
        let on_veth = |f: &dyn Fn() -> Result<(), String>| match &veth {
            Ok(()) => f(),
            Err(e) => Err(format!("not tried: {e}")),
        };
        let bpf = text(probe::bpf());
        let xdp_native = on_veth(&|| text(probe::xdp_attach(VETH, XdpMode::Native)));
        let xdp_generic = on_veth(&|| text(probe::xdp_attach(VETH, XdpMode::Generic)));
        let tcx = on_veth(&|| text(probe::tcx(VETH)));
        let fast_path = on_veth(&|| text(probe::fast_path(VETH)));
        let af_xdp = match &veth {
            Ok(()) => probe::af_xdp(VETH).map_err(|e| e.to_string()),
            Err(e) => Err(format!("not tried: {e}")),
        };
        let af_packet = on_veth(&|| text(probe::af_packet(VETH)));
        let multicast = crate::netns::multicast_filter_support();
        let kernel = match &mut nl {
            Ok(nl) => kernel_drivers(nl, lower.as_ref().ok().copied()),
            Err(e) => ["ipvlan", "macvlan", "8021q", "dummy"]
                .into_iter()
                .map(|module| KernelDriver {
                    module,
                    error: Some(format!("not tried: no netlink socket: {e}")),
                })
                .collect(),
        };
        Scratch {
            tap,
            veth,
            bpf,
            xdp_native,
            xdp_generic,
            tcx,
            fast_path,
            af_xdp,
            af_packet,
            multicast,
            kernel,
        }
    })
}
