//! The GSO transmit socket ([`GsoTxSocket`]): AF_PACKET with `PACKET_VNET_HDR`.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};

use super::{open_bound, set_int, AfPacketError};
use crate::offload::VnetHdr;

/// A transmit-only AF_PACKET socket with `PACKET_VNET_HDR`: one `writev` hands the kernel a
/// TCP/UDP GSO super-frame with its virtio_net_hdr, and the kernel treats it as the GSO skb an
/// upper device (macvlan, ipvlan) would pass down: segmented by the NIC (TSO), by the core
/// (software GSO) or handed on unsegmented (veth). Neither AF_XDP nor a plain packet socket
/// can send GSO, so without this the dataplane segments in software and sends every 1,500
/// bytes on its own.
///
/// Bound with protocol 0, it receives nothing. `SOCK_RAW` with protocol 0: the kernel reads
/// the ethertype from the frame (`packet_parse_headers`), so 802.1Q-tagged frames work too.
#[derive(Debug)]
pub struct GsoTxSocket {
    fd: OwnedFd,
    ifname: String,
    stats: GsoTxStats,
}

/// Counters of a [`GsoTxSocket`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct GsoTxStats {
    /// Super-frames the kernel took.
    pub frames: u64,
    /// Their bytes (headers counted once).
    pub bytes: u64,
    /// Refused because the socket buffer or device queue was full.
    pub full: u64,
    /// Refused by the kernel's header checks (`EINVAL`).
    pub refused: u64,
    /// Not sent because the interface is down or gone.
    pub down: u64,
}

/// The virtio_net_hdr of `PACKET_VNET_HDR` has no `num_buffers`.
const PACKET_VNET_HDR_LEN: usize = 10;
const PACKET_VNET_HDR: libc::c_int = 15;

impl GsoTxSocket {
    /// Open the socket on `ifname` (in the calling thread's netns).
    pub fn open(ifname: &str) -> Result<GsoTxSocket, AfPacketError> {
        // Protocol 0: bound to the interface for sending, it receives nothing.
        let (fd, _) = open_bound(ifname, 0, |fd| {
            set_int(fd, libc::SOL_PACKET, PACKET_VNET_HDR, 1)
                .map_err(|e| ("PACKET_VNET_HDR", e))?;
            // Room for a few super-frames in flight; root may exceed wmem_max. Best effort: a
            // smaller buffer only means more "full" refusals.
            let _ = set_int(fd, libc::SOL_SOCKET, libc::SO_SNDBUFFORCE, 4 << 20);
            Ok(())
        })?;
        Ok(GsoTxSocket {
            fd,
            ifname: ifname.to_string(),
            stats: GsoTxStats::default(),
        })
    }

    /// The interface name.
    pub fn ifname(&self) -> &str {
        &self.ifname
    }

    /// Sends one frame with its offload header (see [`crate::offload::kernel_gso_header`]
    /// for one the kernel accepts). `Ok(false)`: the queue was full and the frame was
    /// dropped. `Err` with kind `InvalidInput`: the kernel refused the header and the frame
    /// was not sent (the caller may segment it itself). `Err` with kind `NotConnected`: the
    /// interface is down or gone (`ENETDOWN`, `ENXIO`, `ENODEV`).
    pub fn send(&mut self, hdr: &VnetHdr, frame: &[u8]) -> io::Result<bool> {
        let h = hdr.to_bytes();
        let iov = [
            libc::iovec {
                iov_base: h.as_ptr() as *mut libc::c_void,
                iov_len: PACKET_VNET_HDR_LEN,
            },
            libc::iovec {
                iov_base: frame.as_ptr() as *mut libc::c_void,
                iov_len: frame.len(),
            },
        ];
        loop {
            // SAFETY: both iovecs point into live buffers of the stated lengths (the first
            // 10 of the 12 header bytes); writev only reads from them.
            let n = unsafe { libc::writev(self.fd.as_raw_fd(), iov.as_ptr(), 2) };
            if n >= 0 {
                self.stats.frames += 1;
                self.stats.bytes += frame.len() as u64;
                return Ok(true);
            }
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EINTR) => continue,
                Some(libc::EAGAIN) | Some(libc::ENOBUFS) => {
                    self.stats.full += 1;
                    return Ok(false);
                }
                Some(libc::EINVAL) | Some(libc::EMSGSIZE) => {
                    self.stats.refused += 1;
                    return Err(io::Error::new(io::ErrorKind::InvalidInput, e));
                }
                Some(libc::ENETDOWN) | Some(libc::ENXIO) | Some(libc::ENODEV) => {
                    self.stats.down += 1;
                    return Err(io::Error::new(io::ErrorKind::NotConnected, e));
                }
                _ => return Err(e),
            }
        }
    }

    /// Counters.
    pub fn stats(&self) -> GsoTxStats {
        self.stats
    }
}
