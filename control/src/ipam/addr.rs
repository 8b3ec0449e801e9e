//! Address families, CIDR prefixes, and the two parsers Docker uses.
//!
//! Docker parses the same text twice with different rules: the CLI uses Go's `net.ParseIP` /
//! `net.ParseCIDR` (a mask with leading zeros is fine, an IPv4-mapped IPv6 address counts as
//! IPv4 when matched against a network), and the daemon uses `net/netip` (`ParsePrefix`,
//! `ParseAddr`: strict, family-exact). Both are reproduced here so that every error Docker
//! raises for odd input is raised here for the same input.

use std::cmp::Ordering;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An address family.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Family {
    /// IPv4 (32-bit addresses).
    V4,
    /// IPv6 (128-bit addresses).
    V6,
}

impl Family {
    /// The family of an address, taken as written (an IPv4-mapped IPv6 address is IPv6).
    pub fn of(addr: IpAddr) -> Family {
        match addr {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(_) => Family::V6,
        }
    }

    /// Address width in bits: 32 or 128.
    pub fn width(self) -> u8 {
        match self {
            Family::V4 => 32,
            Family::V6 => 128,
        }
    }

    /// The version number, 4 or 6, as Docker prints it in `IPv4` / `IPv6`.
    pub fn number(self) -> u8 {
        match self {
            Family::V4 => 4,
            Family::V6 => 6,
        }
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "IPv{}", self.number())
    }
}

/// An address as an unsigned number (IPv4 in the low 32 bits).
pub(crate) fn addr_to_u128(addr: IpAddr) -> u128 {
    match addr {
        IpAddr::V4(a) => u128::from(u32::from(a)),
        IpAddr::V6(a) => u128::from(a),
    }
}

/// The address of `family` whose number is `value` (IPv4 keeps the low 32 bits).
pub(crate) fn u128_to_addr(family: Family, value: u128) -> IpAddr {
    match family {
        // Truncation is the intent: callers only pass values inside an IPv4 prefix.
        Family::V4 => IpAddr::V4(Ipv4Addr::from((value & 0xffff_ffff) as u32)),
        Family::V6 => IpAddr::V6(Ipv6Addr::from(value)),
    }
}

/// Mask with the top `bits` bits of a `width`-bit address set.
fn net_mask(width: u8, bits: u8) -> u128 {
    let host = u32::from(width - bits);
    let all: u128 = if width == 128 {
        u128::MAX
    } else {
        (1u128 << width) - 1
    };
    match 1u128.checked_shl(host) {
        Some(block) => all & !(block - 1),
        None => 0,
    }
}

/// A CIDR prefix: an address and a prefix length. The address is kept as given, so an
/// unmasked prefix such as `192.168.1.1/24` can be represented and reported.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Prefix {
    addr: IpAddr,
    bits: u8,
}

impl Prefix {
    /// A prefix, or `None` when `bits` exceeds the address width.
    pub fn new(addr: IpAddr, bits: u8) -> Option<Prefix> {
        (bits <= Family::of(addr).width()).then_some(Prefix { addr, bits })
    }

    /// The prefix of `family` whose address number is `value`.
    pub(crate) fn from_u128(family: Family, value: u128, bits: u8) -> Option<Prefix> {
        Prefix::new(u128_to_addr(family, value), bits)
    }

    /// The address part, as given.
    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    /// The prefix length.
    pub fn bits(&self) -> u8 {
        self.bits
    }

    /// The address family.
    pub fn family(&self) -> Family {
        Family::of(self.addr)
    }

    /// Number of host bits (width − prefix length).
    pub fn host_bits(&self) -> u8 {
        self.family().width() - self.bits
    }

    /// The prefix with its host bits cleared (Go's `Prefix.Masked`).
    pub fn masked(&self) -> Prefix {
        Prefix {
            addr: u128_to_addr(self.family(), self.first()),
            bits: self.bits,
        }
    }

    /// Whether the host bits are all zero.
    pub fn is_masked(&self) -> bool {
        self.masked() == *self
    }

    /// Number of the first address of the (masked) prefix.
    pub(crate) fn first(&self) -> u128 {
        addr_to_u128(self.addr) & net_mask(self.family().width(), self.bits)
    }

    /// Number of the last address of the (masked) prefix.
    pub(crate) fn last(&self) -> u128 {
        let width = self.family().width();
        let all: u128 = if width == 128 {
            u128::MAX
        } else {
            (1u128 << width) - 1
        };
        self.first() | (all & !net_mask(width, self.bits))
    }

    /// First address of the prefix (the network address).
    pub fn network(&self) -> IpAddr {
        u128_to_addr(self.family(), self.first())
    }

    /// Last address of the prefix (the IPv4 broadcast address).
    pub fn last_addr(&self) -> IpAddr {
        u128_to_addr(self.family(), self.last())
    }

    /// Number of addresses in the prefix, saturating at `u128::MAX` for `::/0`.
    pub fn size(&self) -> u128 {
        1u128
            .checked_shl(u32::from(self.host_bits()))
            .unwrap_or(u128::MAX)
    }

    /// Whether `addr` lies in the prefix. Family-exact, like Go's `netip.Prefix.Contains`:
    /// an IPv4-mapped IPv6 address is never inside an IPv4 prefix.
    pub fn contains(&self, addr: IpAddr) -> bool {
        Family::of(addr) == self.family() && {
            let v = addr_to_u128(addr);
            v >= self.first() && v <= self.last()
        }
    }

    /// Whether `addr` lies in the prefix by the rules of Go's `net.IPNet.Contains`, which the
    /// Docker CLI uses: an IPv4-mapped IPv6 address is matched as IPv4.
    pub(crate) fn contains_go(&self, addr: IpAddr) -> bool {
        self.contains(addr.to_canonical())
    }

    /// Whether `other` lies entirely inside this prefix.
    pub fn covers(&self, other: &Prefix) -> bool {
        other.family() == self.family()
            && other.bits >= self.bits
            && other.first() >= self.first()
            && other.last() <= self.last()
    }

    /// Whether the two prefixes share at least one address (same family only).
    pub fn overlaps(&self, other: &Prefix) -> bool {
        other.family() == self.family()
            && self.first() <= other.last()
            && other.first() <= self.last()
    }
}

impl PartialOrd for Prefix {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Prefix {
    /// Family, then address, then length (Docker's `PrefixCompare` within a family).
    fn cmp(&self, other: &Self) -> Ordering {
        self.family()
            .cmp(&other.family())
            .then_with(|| addr_to_u128(self.addr).cmp(&addr_to_u128(other.addr)))
            .then_with(|| self.bits.cmp(&other.bits))
    }
}

impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.bits)
    }
}

/// Error returned when text is not a prefix in strict CIDR notation.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid CIDR prefix {0:?}: expected ADDRESS/LENGTH such as 192.0.2.0/24 or 2001:db8::/64")]
pub struct PrefixParseError(pub String);

impl FromStr for Prefix {
    type Err = PrefixParseError;

    /// Strict parse (Go's `netip.ParsePrefix`); the prefix is not masked.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        netip_parse_prefix(s).ok_or_else(|| PrefixParseError(s.to_string()))
    }
}

impl Serialize for Prefix {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Prefix {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// Go's `net.ParseIP`: dotted-quad IPv4 (no leading zeros) or IPv6, no zone.
pub(crate) fn go_parse_ip(s: &str) -> Option<IpAddr> {
    s.parse().ok()
}

/// Go's `net.ParseCIDR`: returns the address as written and the masked network. The length
/// is decimal digits (leading zeros allowed), at most the address width.
pub(crate) fn go_parse_cidr(s: &str) -> Option<(IpAddr, Prefix)> {
    let (addr_text, len_text) = s.split_once('/')?;
    let addr = go_parse_ip(addr_text)?;
    if len_text.is_empty() || !len_text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let len: u32 = len_text.bytes().try_fold(0u32, |n, b| {
        let n = n * 10 + u32::from(b - b'0');
        (n < 0x00ff_ffff).then_some(n)
    })?;
    let bits = u8::try_from(len).ok()?;
    let prefix = Prefix::new(addr, bits)?;
    Some((addr, prefix.masked()))
}

/// Go's `netip.ParseAddr` without zone support (a zoned address is never valid for IPAM).
pub(crate) fn netip_parse_addr(s: &str) -> Option<IpAddr> {
    s.parse().ok()
}

/// Go's `netip.ParsePrefix`: the last `/` splits address and length; the length is decimal
/// with no sign and no leading zero (except `0` itself); the prefix is not masked.
pub(crate) fn netip_parse_prefix(s: &str) -> Option<Prefix> {
    let (addr_text, len_text) = s.rsplit_once('/')?;
    let addr = netip_parse_addr(addr_text)?;
    let valid_digits = !len_text.is_empty()
        && len_text.len() <= 3
        && len_text.bytes().all(|b| b.is_ascii_digit())
        && (len_text == "0" || !len_text.starts_with('0'));
    if !valid_digits {
        return None;
    }
    let bits: u8 = len_text.parse().ok()?;
    Prefix::new(addr, bits)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Prefix {
        s.parse().unwrap()
    }

    #[test]
    fn masks_and_bounds() {
        let x = p("192.168.1.1/24");
        assert!(!x.is_masked());
        assert_eq!(x.masked().to_string(), "192.168.1.0/24");
        assert_eq!(x.network().to_string(), "192.168.1.0");
        assert_eq!(x.last_addr().to_string(), "192.168.1.255");
        assert_eq!(x.size(), 256);
        assert_eq!(p("0.0.0.0/0").size(), 1 << 32);
        assert_eq!(p("::/0").size(), u128::MAX);
        assert_eq!(p("2001:db8::/64").size(), 1u128 << 64);
        assert_eq!(p("10.0.0.7/32").last_addr().to_string(), "10.0.0.7");
        assert_eq!(p("::/0").last(), u128::MAX);
    }

    #[test]
    fn contains_overlaps_covers() {
        let net = p("10.0.0.0/8");
        assert!(net.contains("10.255.0.1".parse().unwrap()));
        assert!(!net.contains("11.0.0.0".parse().unwrap()));
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        assert!(!net.contains(mapped), "netip semantics are family-exact");
        assert!(
            net.contains_go(mapped),
            "net.IPNet semantics unmap IPv4-mapped addresses"
        );
        assert!(net.overlaps(&p("10.1.0.0/16")));
        assert!(p("10.1.0.0/16").overlaps(&net));
        assert!(!net.overlaps(&p("11.0.0.0/8")));
        assert!(!net.overlaps(&p("::/0")));
        assert!(net.covers(&p("10.1.0.0/16")));
        assert!(!p("10.1.0.0/16").covers(&net));
    }

    #[test]
    fn netip_prefix_parsing_is_strict() {
        assert!(netip_parse_prefix("10.0.0.0/8").is_some());
        assert!(netip_parse_prefix("10.0.0.0/08").is_none());
        assert!(netip_parse_prefix("10.0.0.0/+8").is_none());
        assert!(netip_parse_prefix("10.0.0.0/33").is_none());
        assert!(netip_parse_prefix("10.0.0.0").is_none());
        assert!(netip_parse_prefix("010.0.0.0/8").is_none());
        assert!(netip_parse_prefix("fe80::1%eth0/64").is_none());
        assert!(netip_parse_prefix("2001:db8::/129").is_none());
        assert_eq!(netip_parse_prefix("0.0.0.0/0").unwrap().bits(), 0);
    }

    #[test]
    fn go_cidr_parsing_is_lenient_about_the_length() {
        let (ip, net) = go_parse_cidr("10.1.2.3/08").unwrap();
        assert_eq!(ip.to_string(), "10.1.2.3");
        assert_eq!(net.to_string(), "10.0.0.0/8");
        assert!(go_parse_cidr("10.0.0.0/33").is_none());
        assert!(go_parse_cidr("10.0.0.0/").is_none());
        assert!(go_parse_cidr("10.0.0.0").is_none());
        assert!(go_parse_cidr("10.0.0.0/99999999999999999999").is_none());
        assert!(go_parse_cidr("foo/8").is_none());
    }

    #[test]
    fn serde_uses_cidr_text() {
        let x = p("2001:db8::/64");
        let json = serde_json::to_string(&x).unwrap();
        assert_eq!(json, "\"2001:db8::/64\"");
        let back: Prefix = serde_json::from_str(&json).unwrap();
        assert_eq!(back, x);
        assert!(serde_json::from_str::<Prefix>("\"nonsense\"").is_err());
    }
}
