//! MAC addresses.

use std::fmt;
use std::str::FromStr;

/// A 48-bit IEEE 802 MAC address.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    /// `ff:ff:ff:ff:ff:ff`.
    pub const BROADCAST: MacAddr = MacAddr([0xff; 6]);
    /// `00:00:00:00:00:00`.
    pub const ZERO: MacAddr = MacAddr([0; 6]);

    /// The I/G bit is set: multicast or broadcast (`is_multicast_ether_addr`).
    #[inline]
    pub fn is_multicast(&self) -> bool {
        self.0[0] & 1 == 1
    }

    /// All ones (`is_broadcast_ether_addr`).
    #[inline]
    pub fn is_broadcast(&self) -> bool {
        self.0 == [0xff; 6]
    }

    /// Not multicast (unicast frames carry such a destination).
    #[inline]
    pub fn is_unicast(&self) -> bool {
        !self.is_multicast()
    }

    /// All zeroes.
    #[inline]
    pub fn is_zero(&self) -> bool {
        self.0 == [0; 6]
    }

    /// A valid unicast station address: neither multicast nor zero (`is_valid_ether_addr`).
    #[inline]
    pub fn is_valid_unicast(&self) -> bool {
        !self.is_multicast() && !self.is_zero()
    }

    /// The U/L bit is set (locally administered).
    #[inline]
    pub fn is_local_admin(&self) -> bool {
        self.0[0] & 2 == 2
    }

    /// Reads a MAC from the first six bytes of `b`, if there are six.
    #[inline]
    pub fn from_slice(b: &[u8]) -> Option<MacAddr> {
        let a: [u8; 6] = b.get(..6)?.try_into().ok()?;
        Some(MacAddr(a))
    }

    /// The bytes.
    #[inline]
    pub fn octets(&self) -> [u8; 6] {
        self.0
    }

    /// The group MAC an IP multicast address maps to on Ethernet, as the kernel's
    /// `ip_eth_mc_map` (`01:00:5e` and the low 23 bits, RFC 1112 §6.4) and
    /// `ipv6_eth_mc_map` (`33:33` and the low 32 bits, RFC 2464 §7) compute it; `None` for
    /// a unicast address.
    pub fn for_ip_group(group: std::net::IpAddr) -> Option<MacAddr> {
        match group {
            std::net::IpAddr::V4(a) if a.is_multicast() => {
                let o = a.octets();
                Some(MacAddr([0x01, 0x00, 0x5e, o[1] & 0x7f, o[2], o[3]]))
            }
            std::net::IpAddr::V6(a) if a.is_multicast() => {
                let o = a.octets();
                Some(MacAddr([0x33, 0x33, o[12], o[13], o[14], o[15]]))
            }
            _ => None,
        }
    }

    /// In one of the two ranges IP multicast maps to (`01:00:5e:00:00:00/25`,
    /// `33:33:00:00:00:00/16`).
    #[inline]
    pub fn is_ip_group(&self) -> bool {
        let b = self.0;
        (b[0] == 0x01 && b[1] == 0x00 && b[2] == 0x5e && b[3] & 0x80 == 0)
            || (b[0] == 0x33 && b[1] == 0x33)
    }
}

impl std::hash::Hash for MacAddr {
    /// One 64-bit write (the MAC tables hash this on every frame).
    #[inline]
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        let b = self.0;
        state.write_u64(u64::from_le_bytes([
            b[0], b[1], b[2], b[3], b[4], b[5], 0, 0,
        ]));
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        )
    }
}

impl fmt::Debug for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// A string that is not a MAC address of the form `aa:bb:cc:dd:ee:ff`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid MAC address {0:?}: expected six hex octets like 02:42:c0:00:02:0a")]
pub struct ParseMacError(pub String);

impl FromStr for MacAddr {
    type Err = ParseMacError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ParseMacError(s.to_string());
        let mut out = [0u8; 6];
        let mut parts = s.split([':', '-']);
        for o in out.iter_mut() {
            let p = parts.next().ok_or_else(err)?;
            if p.is_empty() || p.len() > 2 {
                return Err(err());
            }
            *o = u8::from_str_radix(p, 16).map_err(|_| err())?;
        }
        if parts.next().is_some() {
            return Err(err());
        }
        Ok(MacAddr(out))
    }
}
