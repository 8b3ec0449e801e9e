//! Small interface helpers: name → index, RX queue count (`ETHTOOL_GCHANNELS`) and the
//! RX VLAN offload flag (`ETHTOOL_GFLAGS`), all through `ioctl(SIOCETHTOOL)` on a plain
//! `AF_INET` datagram socket. Every call acts in the calling *thread's* network namespace.
//!
//! Kernel facts relied on:
//! - `struct ethtool_channels` is nine `u32`s: cmd, max_rx, max_tx, max_other, max_combined,
//!   rx_count, tx_count, other_count, combined_count. The number of RX queues an XDP program
//!   can see is `combined_count + rx_count` (veth reports `rx_count` = real RX queues, NICs
//!   usually `combined_count`). Drivers without `get_channels` answer `EOPNOTSUPP`: one queue.
//! - `ETHTOOL_GFLAGS` returns `ETH_FLAG_RXVLAN` (bit 8) when the NIC strips 802.1Q tags into
//!   descriptor metadata. Measured on 6.18 (veth, tag pushed into skb metadata by the
//!   sender): neither native nor generic XDP sees such a tag in the packet data, so the
//!   filter would classify the frame as untagged. VLAN networks on a hardware parent need
//!   `rxvlan` off ([`set_rx_vlan_offload`]).

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use super::bpf::cstring;

const ETHTOOL_GCHANNELS: u32 = 0x3c;
const ETHTOOL_GFLAGS: u32 = 0x25;
const ETHTOOL_SFLAGS: u32 = 0x26;
const ETH_FLAG_RXVLAN: u32 = 1 << 8;

/// Index of interface `name` in the calling thread's netns.
pub fn if_index(name: &str) -> io::Result<u32> {
    let c = cstring(name)?;
    // SAFETY: `c` is a valid NUL-terminated string for the duration of the call.
    let idx = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if idx == 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(
            e.kind(),
            format!("interface {name:?} not found in this network namespace: {e}"),
        ));
    }
    Ok(idx)
}

#[repr(C)]
struct Ifreq {
    name: [libc::c_char; libc::IFNAMSIZ],
    data: *mut libc::c_void,
    _pad: [u8; 16],
}

/// `ioctl(SIOCETHTOOL)` on interface `name` with the ethtool command buffer at `data`.
///
/// # Safety
///
/// `data` must point to a live, writable buffer that starts with the ethtool command word
/// and is at least as large as the structure the kernel reads and writes for that command
/// (for example nine `u32`s for `ETHTOOL_GCHANNELS`, two for `ETHTOOL_GFLAGS`), and nothing
/// else may access it during the call.
unsafe fn ethtool_ioctl(name: &str, data: *mut libc::c_void) -> io::Result<()> {
    if name.is_empty() || name.len() >= libc::IFNAMSIZ {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("interface name {name:?} must be 1..15 bytes"),
        ));
    }
    // SAFETY: plain socket(2) call; the result is checked below.
    let s = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if s < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `s` is a fresh fd that nothing else owns.
    let sock = unsafe { OwnedFd::from_raw_fd(s) };
    let mut ifr = Ifreq {
        name: [0; libc::IFNAMSIZ],
        data,
        _pad: [0; 16],
    };
    for (d, b) in ifr.name.iter_mut().zip(name.bytes()) {
        *d = b as libc::c_char;
    }
    // SAFETY: `ifr` is a valid ifreq; its data pointer refers to a live, correctly sized
    // ethtool command buffer, as this function's contract requires of the caller.
    let r = unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCETHTOOL as _, &mut ifr) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Channel counts of an interface (`ethtool -l`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Channels {
    /// RX-only channels in use.
    pub rx: u32,
    /// TX-only channels in use.
    pub tx: u32,
    /// Combined channels in use.
    pub combined: u32,
}

/// `ETHTOOL_GCHANNELS`; `Ok(None)` when the driver does not report channels.
pub fn channels(name: &str) -> io::Result<Option<Channels>> {
    let mut buf = [0u32; 9];
    buf[0] = ETHTOOL_GCHANNELS;
    // SAFETY: `buf` is a live, exclusively borrowed `struct ethtool_channels` (nine u32s)
    // starting with the command.
    match unsafe { ethtool_ioctl(name, buf.as_mut_ptr().cast()) } {
        Ok(()) => Ok(Some(Channels {
            rx: buf[5],
            tx: buf[6],
            combined: buf[8],
        })),
        Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Number of RX queues to bind one AF_XDP socket to each: `combined + rx`, at least 1;
/// 1 when the driver does not report channels.
pub fn rx_queue_count(name: &str) -> io::Result<u32> {
    Ok(channels(name)?.map_or(1, |c| (c.combined + c.rx).max(1)))
}

/// Whether the NIC strips received 802.1Q tags into metadata (`rxvlan`, ETH_FLAG_RXVLAN).
/// Native XDP does not see such tags in the packet; turn it off (`ethtool -K IF rxvlan off`)
/// for VLAN networks on a hardware parent.
pub fn rx_vlan_offload(name: &str) -> io::Result<bool> {
    let mut buf = [ETHTOOL_GFLAGS, 0u32];
    // SAFETY: `buf` is a live, exclusively borrowed `struct ethtool_value` (cmd, data).
    unsafe { ethtool_ioctl(name, buf.as_mut_ptr().cast()) }?;
    Ok(buf[1] & ETH_FLAG_RXVLAN != 0)
}

/// Turn the NIC's RX VLAN offload on or off (`ethtool -K IF rxvlan on|off`, through the
/// legacy `ETHTOOL_SFLAGS`, which every driver that can toggle it supports). With it off,
/// the NIC leaves 802.1Q tags in the frame, where the XDP filter can read them.
pub fn set_rx_vlan_offload(name: &str, on: bool) -> io::Result<()> {
    let mut buf = [ETHTOOL_GFLAGS, 0u32];
    // SAFETY: `buf` is a live, exclusively borrowed `struct ethtool_value` (cmd, data).
    unsafe { ethtool_ioctl(name, buf.as_mut_ptr().cast()) }?;
    let flags = if on {
        buf[1] | ETH_FLAG_RXVLAN
    } else {
        buf[1] & !ETH_FLAG_RXVLAN
    };
    if flags == buf[1] {
        return Ok(());
    }
    let mut set = [ETHTOOL_SFLAGS, flags];
    // SAFETY: `set` is a live, exclusively borrowed `struct ethtool_value` (cmd, data).
    unsafe { ethtool_ioctl(name, set.as_mut_ptr().cast()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_has_an_index_and_one_queue() {
        assert_eq!(if_index("lo").unwrap(), 1);
        assert!(rx_queue_count("lo").unwrap() >= 1);
    }

    #[test]
    fn bad_names_are_errors() {
        assert!(if_index("uvt-no-such-if").is_err());
        assert!(rx_queue_count("").is_err());
        assert!(rx_queue_count("a-name-that-is-too-long").is_err());
    }
}
