//! The steering maps ([`FilterMaps`]): one BPF hash map per key kind, their key layouts, and
//! the per-CPU counters.

use std::net::{Ipv4Addr, Ipv6Addr};

use super::{FilterError, FilterStats, STAT_COUNT};
use crate::port::bpf::{Map, MapType, UpdateFlags};

/// Value stored for every key (reserved for an endpoint id; the program only tests presence).
const PRESENT: [u8; 4] = 1u32.to_ne_bytes();

/// The key maps and the stats map shared by the XDP and tc flavours.
#[derive(Debug)]
pub struct FilterMaps {
    pub(super) mac: Map,
    pub(super) ip4: Map,
    pub(super) ip6: Map,
    pub(super) src: Map,
    pub(super) allu: Map,
    pub(super) stats: Map,
}

fn check_vid(vid: u16) -> Result<(), FilterError> {
    if vid > 4094 {
        return Err(FilterError::BadVid(vid));
    }
    Ok(())
}

fn mac_key(vid: u16, mac: [u8; 6]) -> [u8; 8] {
    let mut k = [0u8; 8];
    k[..2].copy_from_slice(&vid.to_ne_bytes());
    k[2..].copy_from_slice(&mac);
    k
}

fn ip4_key(vid: u16, addr: Ipv4Addr) -> [u8; 8] {
    let mut k = [0u8; 8];
    k[..2].copy_from_slice(&vid.to_ne_bytes());
    k[4..].copy_from_slice(&addr.octets());
    k
}

fn vid_key(vid: u16) -> [u8; 4] {
    let mut k = [0u8; 4];
    k[..2].copy_from_slice(&vid.to_ne_bytes());
    k
}

fn ip6_key(vid: u16, addr: Ipv6Addr) -> [u8; 20] {
    let mut k = [0u8; 20];
    k[..2].copy_from_slice(&vid.to_ne_bytes());
    k[4..].copy_from_slice(&addr.octets());
    k
}

impl FilterMaps {
    /// Create empty maps holding up to `capacity` keys each.
    pub fn create(capacity: u32) -> Result<FilterMaps, FilterError> {
        let capacity = capacity.max(1);
        Ok(FilterMaps {
            mac: Map::create(MapType::Hash, 8, 4, capacity, "uvlan_mac")?,
            ip4: Map::create(MapType::Hash, 8, 4, capacity, "uvlan_ip4")?,
            ip6: Map::create(MapType::Hash, 20, 4, capacity, "uvlan_ip6")?,
            src: Map::create(MapType::Hash, 8, 4, capacity, "uvlan_src")?,
            // One flag per VLAN id at most (0..=4094).
            allu: Map::create(MapType::Hash, 4, 4, 4095, "uvlan_allu")?,
            stats: Map::create(MapType::PercpuArray, 4, 8, STAT_COUNT, "uvlan_stats")?,
        })
    }

    /// Another handle on the same kernel maps (e.g. for the control thread).
    pub fn try_clone(&self) -> std::io::Result<FilterMaps> {
        Ok(FilterMaps {
            mac: self.mac.try_clone()?,
            ip4: self.ip4.try_clone()?,
            ip6: self.ip6.try_clone()?,
            src: self.src.try_clone()?,
            allu: self.allu.try_clone()?,
            stats: self.stats.try_clone()?,
        })
    }

    /// Steer frames to destination `mac` on VLAN `vid` (0 = untagged) to the dataplane.
    pub fn add_mac(&self, vid: u16, mac: [u8; 6]) -> Result<(), FilterError> {
        check_vid(vid)?;
        Ok(self
            .mac
            .update(&mac_key(vid, mac), &PRESENT, UpdateFlags::Any)?)
    }

    /// Stop steering `mac` on `vid`. Returns `false` if it was not present.
    pub fn remove_mac(&self, vid: u16, mac: [u8; 6]) -> Result<bool, FilterError> {
        check_vid(vid)?;
        Ok(self.mac.delete(&mac_key(vid, mac))?)
    }

    /// Whether `mac` on `vid` is steered.
    pub fn has_mac(&self, vid: u16, mac: [u8; 6]) -> Result<bool, FilterError> {
        check_vid(vid)?;
        let mut v = [0u8; 4];
        Ok(self.mac.lookup(&mac_key(vid, mac), &mut v)?)
    }

    /// Steer IPv4 packets to `addr` and ARP packets whose target is `addr` on `vid`.
    pub fn add_ipv4(&self, vid: u16, addr: Ipv4Addr) -> Result<(), FilterError> {
        check_vid(vid)?;
        Ok(self
            .ip4
            .update(&ip4_key(vid, addr), &PRESENT, UpdateFlags::Any)?)
    }

    /// Stop steering `addr` on `vid`. Returns `false` if it was not present.
    pub fn remove_ipv4(&self, vid: u16, addr: Ipv4Addr) -> Result<bool, FilterError> {
        check_vid(vid)?;
        Ok(self.ip4.delete(&ip4_key(vid, addr))?)
    }

    /// Whether `addr` on `vid` is steered.
    pub fn has_ipv4(&self, vid: u16, addr: Ipv4Addr) -> Result<bool, FilterError> {
        check_vid(vid)?;
        let mut v = [0u8; 4];
        Ok(self.ip4.lookup(&ip4_key(vid, addr), &mut v)?)
    }

    /// Steer IPv6 packets to `addr` and Neighbour Solicitations for `addr` on `vid`.
    pub fn add_ipv6(&self, vid: u16, addr: Ipv6Addr) -> Result<(), FilterError> {
        check_vid(vid)?;
        Ok(self
            .ip6
            .update(&ip6_key(vid, addr), &PRESENT, UpdateFlags::Any)?)
    }

    /// Stop steering `addr` on `vid`. Returns `false` if it was not present.
    pub fn remove_ipv6(&self, vid: u16, addr: Ipv6Addr) -> Result<bool, FilterError> {
        check_vid(vid)?;
        Ok(self.ip6.delete(&ip6_key(vid, addr))?)
    }

    /// Whether `addr` on `vid` is steered.
    pub fn has_ipv6(&self, vid: u16, addr: Ipv6Addr) -> Result<bool, FilterError> {
        check_vid(vid)?;
        let mut v = [0u8; 4];
        Ok(self.ip6.lookup(&ip6_key(vid, addr), &mut v)?)
    }

    /// Steer unicast frames whose *source* MAC is `mac` on `vid` (a macvlan `source` device's
    /// allowlist). Group frames are never steered by source (see the module docs).
    pub fn add_src_mac(&self, vid: u16, mac: [u8; 6]) -> Result<(), FilterError> {
        check_vid(vid)?;
        Ok(self
            .src
            .update(&mac_key(vid, mac), &PRESENT, UpdateFlags::Any)?)
    }

    /// Stop steering source `mac` on `vid`. Returns `false` if it was not present.
    pub fn remove_src_mac(&self, vid: u16, mac: [u8; 6]) -> Result<bool, FilterError> {
        check_vid(vid)?;
        Ok(self.src.delete(&mac_key(vid, mac))?)
    }

    /// Whether source `mac` on `vid` is steered.
    pub fn has_src_mac(&self, vid: u16, mac: [u8; 6]) -> Result<bool, FilterError> {
        check_vid(vid)?;
        let mut v = [0u8; 4];
        Ok(self.src.lookup(&mac_key(vid, mac), &mut v)?)
    }

    /// Steer (`on`) or stop steering every unicast frame on `vid` (a macvlan `passthru`
    /// port takes the whole VLAN's unicast). Returns whether the flag was set before.
    pub fn set_all_unicast(&self, vid: u16, on: bool) -> Result<bool, FilterError> {
        check_vid(vid)?;
        let was = self.has_all_unicast(vid)?;
        if on {
            self.allu
                .update(&vid_key(vid), &PRESENT, UpdateFlags::Any)?;
        } else {
            self.allu.delete(&vid_key(vid))?;
        }
        Ok(was)
    }

    /// Whether every unicast frame on `vid` is steered.
    pub fn has_all_unicast(&self, vid: u16) -> Result<bool, FilterError> {
        check_vid(vid)?;
        let mut v = [0u8; 4];
        Ok(self.allu.lookup(&vid_key(vid), &mut v)?)
    }

    /// The program's counters, summed over CPUs.
    pub fn stats(&self) -> Result<FilterStats, FilterError> {
        let mut vals = [0u64; STAT_COUNT as usize];
        let mut buf = vec![0u8; self.stats.value_buf_len()];
        for (i, slot) in vals.iter_mut().enumerate() {
            self.stats.lookup(&(i as u32).to_ne_bytes(), &mut buf)?;
            *slot = buf
                .chunks_exact(8)
                .map(|c| {
                    let mut b = [0u8; 8];
                    b.copy_from_slice(c);
                    u64::from_ne_bytes(b)
                })
                .sum();
        }
        let [redirected, passed, no_socket, hit_mac, hit_ipv4, hit_arp, hit_ipv6, hit_ns, hit_src_mac, hit_all_unicast] =
            vals;
        Ok(FilterStats {
            redirected,
            passed,
            no_socket,
            hit_mac,
            hit_ipv4,
            hit_arp,
            hit_ipv6,
            hit_ns,
            hit_src_mac,
            hit_all_unicast,
        })
    }
}
