//! AF_XDP on the parent NIC: one socket per RX queue behind the XDP filter.
//!
//! [`XdpParent::open`] loads the filter ([`super::xdp_filter`]), attaches it with a
//! `bpf_link` (native first, generic when the driver refuses), creates one [`Xsk`] per RX
//! queue (`ETHTOOL_GCHANNELS`), and registers each in the XSKMAP. Dropping the parent (or the
//! process dying, even by SIGKILL) detaches the program.
//!
//! Each socket owns its UMEM: `2 × ring_size` frames of `frame_size` bytes. The first half
//! cycles between the fill ring and the RX ring, the second half between a free list, the TX
//! ring and the completion ring, so RX and TX never compete for buffers.
//!
//! Kernel facts relied on (measured on Linux 6.18):
//! - Setup order: socket → `XDP_UMEM_REG` → ring sizes → `XDP_MMAP_OFFSETS` → mmap rings at
//!   page offsets RX 0, TX 0x80000000, FILL 0x100000000, COMPLETION 0x180000000 → pre-fill
//!   → `bind` with `XDP_USE_NEED_WAKEUP | XDP_COPY` (or `XDP_ZEROCOPY`) → XSKMAP update.
//! - Ring indices are free-running `u32`s; the peer's index is read with Acquire and ours is
//!   published with Release after the descriptors are written.
//! - In copy mode the TX ring asks for a wakeup on every batch: a
//!   `sendto(fd, NULL, 0, MSG_DONTWAIT)` transmits at most 32 frames (`TX_BATCH_SIZE`) and
//!   answers `EAGAIN` when more are left, so a flush kicks until the ring is empty or a kick
//!   takes nothing. The fill ring flag was never seen set,
//!   but is honoured (`recvfrom` kick).
//! - Zero-copy on veth: `EOPNOTSUPP`; uvlan then binds in copy mode. Generic XDP only works
//!   with copy mode.
//! - Native XDP on veth needs the peer MTU ≤ 3506; `bpf_link` then fails with `ERANGE`
//!   (drivers without native XDP give `EOPNOTSUPP`/`EINVAL`): uvlan falls back to generic.
//! - A frame is only delivered to the XSK bound to its own (ifindex, queue): with a queue
//!   left unbound, keyed frames on it would fall through to the host (counted as
//!   `no_socket` by the filter).
//! - TX checksum offload: a UMEM registered with `XDP_UMEM_TX_SW_CSUM |
//!   XDP_UMEM_TX_METADATA_LEN` and `tx_metadata_len = 24` accepts a `struct
//!   xsk_tx_metadata` (flags u64 = `XDP_TXMD_FLAGS_CHECKSUM`, csum_start u16, csum_offset u16)
//!   in the 24 bytes before the frame when the descriptor carries `XDP_TX_METADATA`; the
//!   kernel then completes the checksum in software in copy mode (6.11+).
//! - Closing an XSK releases its (ifindex, queue) from a kernel work item, so a bind right
//!   after a close can fail with `EBUSY` for a moment: [`XdpParent::open`] retries for ≤ 1 s.
//! - Generic XDP runs before `skb_vlan_untag`, so an 802.1Q tag carried in the frame data is
//!   visible to the program and stays in the frame the XSK receives. NICs that strip tags in
//!   hardware (`rxvlan` on) hide them from native XDP: see [`super::ethtool::rx_vlan_offload`].
//!
//! Files: this one holds the options, errors, counters and [`XdpParent`]; `socket.rs` one
//! [`Xsk`] (UMEM, setup, RX/TX); `ring.rs` the kernel-shared mappings and rings.

mod ring;
mod socket;

pub use socket::{Xsk, XskConfig};

use std::io;
use std::os::fd::{AsFd, BorrowedFd};

use super::bpf::{BpfError, Link, XDP_FLAGS_DRV_MODE, XDP_FLAGS_SKB_MODE};
use super::ethtool;
use super::xdp_filter::{Filter, FilterError, FilterMaps, FilterStats};
use super::{RxFrame, WireIo, WireMode};

/// Where the XDP program runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XdpMode {
    /// In the driver (`XDP_FLAGS_DRV_MODE`, shown as `xdp` by `ip link`).
    Native,
    /// In the core receive path on skbs (`XDP_FLAGS_SKB_MODE`, `xdpgeneric`).
    Generic,
}

/// How the AF_XDP sockets are bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BindMode {
    /// `XDP_COPY`: frames are copied between the driver and the UMEM.
    Copy,
    /// `XDP_ZEROCOPY`: the driver DMAs into the UMEM.
    ZeroCopy,
}

/// Which XDP attach mode to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XdpAttach {
    /// Native first; generic when the driver refuses (ERANGE, EOPNOTSUPP, EINVAL).
    Auto,
    /// Native only.
    Native,
    /// Generic only.
    Generic,
}

/// Options for [`XdpParent::open`].
///
/// Memory: each RX queue gets its own UMEM of `2 × ring_size × frame_size` bytes (16 MiB with
/// the defaults), locked in RAM. In copy mode the kernel leaves 256 bytes of XDP headroom in
/// each frame, so the largest frame is `frame_size − 256` (3840 with 4096-byte frames);
/// larger frames are dropped by the kernel (`rx_dropped`).
#[derive(Debug, Clone)]
pub struct XdpOptions {
    /// Attach mode policy.
    pub attach: XdpAttach,
    /// Try `XDP_ZEROCOPY` (native mode only); falls back to copy on `EOPNOTSUPP`.
    pub zero_copy: bool,
    /// Entries in each of the four rings (power of two, 64..=16384).
    pub ring_size: u32,
    /// UMEM frame size: 2048 or 4096.
    pub frame_size: u32,
    /// Register TX metadata so [`XdpParent::transmit_with_csum`] works (needs 6.11+; silently
    /// disabled when the kernel refuses, see [`XdpParent::tx_checksum_enabled`]).
    pub tx_checksum: bool,
    /// Capacity of each filter key map.
    pub map_capacity: u32,
    /// Override the number of RX queues (default: `ETHTOOL_GCHANNELS`).
    pub queues: Option<u32>,
    /// Give the filter the fast path's wire cache and its prologue (`port::fast_path`):
    /// only a dataplane whose endpoints may use the fast path needs them; without, the
    /// filter looks nothing up for it. Default false. The dataplane applies it to the
    /// AF_PACKET fallback too (`AfPacketOptions::wire_cache`).
    pub wire_cache: bool,
}

impl Default for XdpOptions {
    fn default() -> Self {
        XdpOptions {
            attach: XdpAttach::Auto,
            zero_copy: false,
            ring_size: 2048,
            frame_size: 4096,
            tx_checksum: true,
            map_capacity: 4096,
            queues: None,
            wire_cache: false,
        }
    }
}

/// Errors opening or running an [`XdpParent`].
#[derive(Debug, thiserror::Error)]
pub enum XdpError {
    /// Interface lookup or channel query failed.
    #[error("interface {ifname}: {source}")]
    Interface {
        /// Interface name.
        ifname: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// Filter program or map failure.
    #[error(transparent)]
    Filter(#[from] FilterError),
    /// `BPF_LINK_CREATE` failed.
    #[error("cannot attach the XDP filter to {ifname} ({mode}): {source}")]
    Attach {
        /// Interface name.
        ifname: String,
        /// Mode(s) tried.
        mode: &'static str,
        /// The failure.
        #[source]
        source: BpfError,
    },
    /// Creating or binding an AF_XDP socket failed.
    #[error("AF_XDP socket on {ifname} queue {queue}: {step} failed: {source}{}", xsk_hint(.source))]
    Socket {
        /// Interface name.
        ifname: String,
        /// RX queue.
        queue: u32,
        /// The setup step that failed.
        step: &'static str,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// Bad options.
    #[error("invalid AF_XDP option: {0}")]
    Options(String),
}

fn xsk_hint(e: &io::Error) -> &'static str {
    match e.raw_os_error() {
        Some(libc::EAFNOSUPPORT) => {
            " (kernel without CONFIG_XDP_SOCKETS: use the AF_PACKET fallback)"
        }
        Some(libc::EINVAL) => " (queue id beyond the interface's active RX channels?)",
        Some(libc::ENOMEM) | Some(libc::ENOBUFS) => " (lower ring_size or raise RLIMIT_MEMLOCK)",
        Some(libc::EBUSY) => " (another AF_XDP socket is bound to this queue)",
        _ => "",
    }
}

/// Kernel `XDP_STATISTICS` of one socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct XskKernelStats {
    /// Frames dropped for reasons other than invalid descriptors (e.g. too large).
    pub rx_dropped: u64,
    /// Invalid RX descriptors.
    pub rx_invalid_descs: u64,
    /// Invalid TX descriptors.
    pub tx_invalid_descs: u64,
    /// Frames dropped because the RX ring was full.
    pub rx_ring_full: u64,
    /// Frames dropped because the fill ring was empty.
    pub rx_fill_ring_empty_descs: u64,
    /// Times the TX ring was found empty.
    pub tx_ring_empty_descs: u64,
}

/// Counters of one socket: the kernel's and uvlan's own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct XskStats {
    /// RX queue.
    pub queue: u32,
    /// `XDP_STATISTICS`.
    pub kernel: XskKernelStats,
    /// Frames delivered to the caller.
    pub rx_frames: u64,
    /// Bytes delivered to the caller.
    pub rx_bytes: u64,
    /// RX descriptors pointing outside the UMEM (skipped).
    pub rx_bad_desc: u64,
    /// Frames queued for TX.
    pub tx_frames: u64,
    /// Bytes queued for TX.
    pub tx_bytes: u64,
    /// Frames refused because no TX buffer or ring slot was free.
    pub tx_no_room: u64,
    /// Frames refused because they exceed a UMEM frame.
    pub tx_oversize: u64,
    /// `sendto` kicks issued.
    pub tx_kicks: u64,
    /// `recvfrom` kicks issued for the fill ring.
    pub fill_kicks: u64,
}

/// Statistics of an [`XdpParent`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct XdpParentStats {
    /// Per-socket counters.
    pub queues: Vec<XskStats>,
    /// Filter program counters.
    pub filter: FilterStats,
}

/// The parent NIC driven through AF_XDP: filter program + one [`Xsk`] per RX queue.
#[derive(Debug)]
pub struct XdpParent {
    // Field order is drop order: detach the program first, then close the sockets.
    link: Link,
    filter: Filter,
    socks: Vec<Xsk>,
    ifname: String,
    ifindex: u32,
    xdp_mode: XdpMode,
    bind_mode: BindMode,
    tx_csum: bool,
    rx_vlan_offload: Option<bool>,
    /// Queue that the next `recv_batch` starts with (round robin, so no queue starves).
    rx_next: usize,
}

fn attach_fallback(e: &BpfError) -> bool {
    matches!(e, BpfError::Syscall { source, .. }
        if matches!(source.raw_os_error(), Some(libc::ERANGE) | Some(libc::EOPNOTSUPP) | Some(libc::EINVAL)))
}

impl XdpParent {
    /// Load the filter, attach it to `ifname` (in the calling thread's netns), and bind one
    /// AF_XDP socket per RX queue.
    pub fn open(ifname: &str, opts: &XdpOptions) -> Result<XdpParent, XdpError> {
        let iferr = |source| XdpError::Interface {
            ifname: ifname.to_string(),
            source,
        };
        if !(64..=16384).contains(&opts.ring_size) || !opts.ring_size.is_power_of_two() {
            return Err(XdpError::Options(format!(
                "ring_size {} must be a power of two in 64..=16384",
                opts.ring_size
            )));
        }
        if opts.frame_size != 2048 && opts.frame_size != 4096 {
            return Err(XdpError::Options(format!(
                "frame_size {} must be 2048 or 4096",
                opts.frame_size
            )));
        }
        let ifindex = ethtool::if_index(ifname).map_err(iferr)?;
        let queues = match opts.queues {
            Some(q) if q >= 1 => q,
            Some(_) => return Err(XdpError::Options("queues must be at least 1".into())),
            None => ethtool::rx_queue_count(ifname).map_err(iferr)?,
        };
        let filter = Filter::load_xdp(
            FilterMaps::create(opts.map_capacity)?,
            queues,
            opts.wire_cache,
        )?;
        let attach_err = |mode, source| XdpError::Attach {
            ifname: ifname.to_string(),
            mode,
            source,
        };
        let (link, xdp_mode) = match opts.attach {
            XdpAttach::Native => (
                Link::xdp(filter.prog(), ifindex, XDP_FLAGS_DRV_MODE)
                    .map_err(|e| attach_err("native", e))?,
                XdpMode::Native,
            ),
            XdpAttach::Generic => (
                Link::xdp(filter.prog(), ifindex, XDP_FLAGS_SKB_MODE)
                    .map_err(|e| attach_err("generic", e))?,
                XdpMode::Generic,
            ),
            XdpAttach::Auto => match Link::xdp(filter.prog(), ifindex, XDP_FLAGS_DRV_MODE) {
                Ok(l) => (l, XdpMode::Native),
                Err(e) if attach_fallback(&e) => (
                    Link::xdp(filter.prog(), ifindex, XDP_FLAGS_SKB_MODE)
                        .map_err(|e| attach_err("native refused, then generic", e))?,
                    XdpMode::Generic,
                ),
                Err(e) => return Err(attach_err("native", e)),
            },
        };
        let mut cfg = XskConfig {
            ring_size: opts.ring_size,
            frame_size: opts.frame_size,
            zero_copy: opts.zero_copy && xdp_mode == XdpMode::Native,
            tx_metadata: opts.tx_checksum,
        };
        let mut socks = Vec::with_capacity(queues as usize);
        for q in 0..queues {
            let mut busy_retries = 0;
            let xsk = loop {
                match Xsk::open(ifindex, q, cfg) {
                    Ok(x) => break x,
                    // A socket closed just before (e.g. a restart) releases its queue from a
                    // kernel work item: wait for it, for at most a second.
                    Err(("bind", e))
                        if e.raw_os_error() == Some(libc::EBUSY) && busy_retries < 50 =>
                    {
                        busy_retries += 1;
                        std::thread::sleep(std::time::Duration::from_millis(20));
                    }
                    Err(("bind", e))
                        if cfg.zero_copy && e.raw_os_error() == Some(libc::EOPNOTSUPP) =>
                    {
                        cfg.zero_copy = false;
                    }
                    Err(("XDP_UMEM_REG", e))
                        if cfg.tx_metadata && e.raw_os_error() == Some(libc::EINVAL) =>
                    {
                        // Kernel without TX metadata: run without checksum requests.
                        cfg.tx_metadata = false;
                    }
                    Err((step, source)) => {
                        return Err(XdpError::Socket {
                            ifname: ifname.to_string(),
                            queue: q,
                            step,
                            source,
                        })
                    }
                }
            };
            filter.set_xsk(q, xsk.as_fd())?;
            socks.push(xsk);
        }
        let bind_mode = if socks.iter().all(Xsk::is_zero_copy) {
            BindMode::ZeroCopy
        } else {
            BindMode::Copy
        };
        Ok(XdpParent {
            link,
            filter,
            socks,
            ifname: ifname.to_string(),
            ifindex,
            xdp_mode,
            bind_mode,
            tx_csum: cfg.tx_metadata,
            rx_next: 0,
            rx_vlan_offload: ethtool::rx_vlan_offload(ifname).ok(),
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

    /// Where the XDP program runs.
    pub fn xdp_mode(&self) -> XdpMode {
        self.xdp_mode
    }

    /// How the sockets are bound.
    pub fn bind_mode(&self) -> BindMode {
        self.bind_mode
    }

    /// Number of RX queues (= sockets).
    pub fn queues(&self) -> u32 {
        self.socks.len() as u32
    }

    /// Whether [`XdpParent::transmit_with_csum`] is available.
    pub fn tx_checksum_enabled(&self) -> bool {
        self.tx_csum
    }

    /// The steering maps.
    pub fn filter_maps(&self) -> &FilterMaps {
        self.filter.maps()
    }

    /// The fast path's wire → endpoint cache the filter looks frames up in first.
    pub fn wire_cache(&self) -> Option<&crate::port::bpf::Map> {
        self.filter.wire_cache()
    }

    /// The parent's RX VLAN offload flag as read at open time (`None`: not reported).
    /// When it is on, a hardware NIC strips 802.1Q tags into metadata that XDP cannot see,
    /// so VLAN-keyed steering would miss; see [`ethtool::set_rx_vlan_offload`]. (veth
    /// reports it on but never strips: its tags arrive in the data unless the sender put
    /// them in skb metadata.)
    pub fn rx_vlan_offload(&self) -> Option<bool> {
        self.rx_vlan_offload
    }

    /// The attached link (e.g. to check the attach type).
    pub fn link(&self) -> &Link {
        &self.link
    }

    /// Receive up to `max` frames over all queues (see [`WireIo::recv_batch`]).
    pub fn recv_batch(&mut self, max: usize, f: &mut dyn FnMut(RxFrame<'_>)) -> usize {
        let mut n = 0;
        let count = self.socks.len();
        for i in 0..count {
            if n >= max {
                break;
            }
            if let Some(s) = self.socks.get_mut((self.rx_next + i) % count) {
                n += s.recv(max - n, f);
            }
        }
        if count > 0 {
            self.rx_next = (self.rx_next + 1) % count;
        }
        n
    }

    /// Queue `frame` for transmission on queue 0's socket (see [`WireIo::send`]).
    pub fn send(&mut self, frame: &[u8]) -> io::Result<bool> {
        match self.socks.first_mut() {
            Some(s) => s.stage_tx(frame, None),
            None => Ok(false),
        }
    }

    /// Queue `frame` and ask the kernel to fill in the checksum: it sums from `csum_start`
    /// (offset from the frame start) to the end and stores the result at
    /// `csum_start + csum_offset` (the virtio/skb `CHECKSUM_PARTIAL` convention; the field
    /// must already hold the pseudo-header sum). Needs [`XdpParent::tx_checksum_enabled`].
    pub fn transmit_with_csum(
        &mut self,
        frame: &[u8],
        csum_start: u16,
        csum_offset: u16,
    ) -> io::Result<bool> {
        if !self.tx_csum {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "TX checksum metadata is not available on this kernel/socket",
            ));
        }
        if csum_start as usize + csum_offset as usize + 2 > frame.len() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "checksum field lies beyond the end of the frame",
            ));
        }
        match self.socks.first_mut() {
            Some(s) => s.stage_tx(frame, Some((csum_start, csum_offset))),
            None => Ok(false),
        }
    }

    /// Publish queued frames and kick the kernel (see [`WireIo::flush`]).
    pub fn flush(&mut self) -> io::Result<()> {
        for s in &mut self.socks {
            s.flush()?;
        }
        Ok(())
    }

    /// Publish queued frames and, in copy mode, wait until the kernel has sent them all
    /// (see [`Xsk::drain_tx`]).
    pub fn drain_tx(&mut self) -> io::Result<()> {
        for s in &mut self.socks {
            s.drain_tx()?;
        }
        Ok(())
    }

    /// Wake-up system calls made so far by every socket (no system call to read it).
    pub fn syscalls(&self) -> u64 {
        self.socks.iter().map(|s| s.syscalls()).sum()
    }

    /// The socket fds to poll for POLLIN.
    pub fn poll_fds(&self) -> Vec<BorrowedFd<'_>> {
        self.socks.iter().map(|s| s.as_fd()).collect()
    }

    /// Per-socket and filter counters.
    pub fn stats(&self) -> Result<XdpParentStats, XdpError> {
        let mut queues = Vec::with_capacity(self.socks.len());
        for s in &self.socks {
            queues.push(s.stats().map_err(|source| XdpError::Socket {
                ifname: self.ifname.clone(),
                queue: s.queue(),
                step: "XDP_STATISTICS",
                source,
            })?);
        }
        Ok(XdpParentStats {
            queues,
            filter: self.filter.maps().stats()?,
        })
    }
}

impl WireIo for XdpParent {
    fn recv_batch(&mut self, max: usize, f: &mut dyn FnMut(RxFrame<'_>)) -> io::Result<usize> {
        Ok(XdpParent::recv_batch(self, max, f))
    }
    fn send(&mut self, frame: &[u8]) -> io::Result<bool> {
        XdpParent::send(self, frame)
    }
    fn flush(&mut self) -> io::Result<()> {
        XdpParent::flush(self)
    }
    fn poll_fds(&self) -> Vec<BorrowedFd<'_>> {
        XdpParent::poll_fds(self)
    }
    fn mode(&self) -> WireMode {
        WireMode::AfXdp {
            xdp: self.xdp_mode,
            bind: self.bind_mode,
            queues: self.queues(),
        }
    }
    fn filter_maps(&self) -> Option<&FilterMaps> {
        Some(self.filter.maps())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_options_are_refused_before_touching_the_kernel() {
        let o = XdpOptions {
            ring_size: 100,
            ..Default::default()
        };
        assert!(matches!(
            XdpParent::open("lo", &o),
            Err(XdpError::Options(_))
        ));
        let o = XdpOptions {
            frame_size: 1000,
            ..Default::default()
        };
        assert!(matches!(
            XdpParent::open("lo", &o),
            Err(XdpError::Options(_))
        ));
        let o = XdpOptions {
            queues: Some(0),
            ..Default::default()
        };
        assert!(matches!(
            XdpParent::open("lo", &o),
            Err(XdpError::Options(_))
        ));
        let e = XdpParent::open("uvt-nonexist", &XdpOptions::default()).unwrap_err();
        assert!(matches!(e, XdpError::Interface { .. }), "{e}");
    }

    #[test]
    fn parent_and_socket_can_move_to_a_worker_thread() {
        fn assert_send<T: Send>() {}
        assert_send::<Xsk>();
        assert_send::<XdpParent>();
        assert_send::<super::super::afpacket::AfPacketParent>();
        assert_send::<super::super::afpacket::AfPacketSocket>();
    }

    #[test]
    fn xsk_config_is_checked() {
        let cfg = XskConfig {
            ring_size: 48,
            frame_size: 4096,
            zero_copy: false,
            tx_metadata: false,
        };
        assert_eq!(Xsk::open(1, 0, cfg).unwrap_err().0, "checking options");
    }
}
