//! Default address pools (Docker's `localScopeDefaultNetworks` and the per-host ULA /48).

use std::net::{IpAddr, Ipv6Addr};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::addr::{Family, Prefix};

/// One default pool: `base` is split into subnets of length `size`
/// (Docker's `NetworkToSplit`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolSpec {
    /// The block to split, e.g. `172.20.0.0/14`.
    pub base: Prefix,
    /// Length of the subnets handed out, e.g. 16.
    pub size: u8,
}

impl PoolSpec {
    /// A pool spec, or `None` unless `base` is masked and `base.bits() <= size <= width`.
    pub fn new(base: Prefix, size: u8) -> Option<PoolSpec> {
        (base.is_masked() && base.bits() <= size && size <= base.family().width())
            .then_some(PoolSpec { base, size })
    }

    fn is_valid(&self) -> bool {
        PoolSpec::new(self.base, self.size).is_some()
    }
}

/// Where dynamic subnets come from, and which prefixes they must avoid.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DefaultPools {
    /// IPv4 pools.
    pub v4: Vec<PoolSpec>,
    /// IPv6 pools.
    pub v6: Vec<PoolSpec>,
    /// Prefixes a dynamic subnet must not overlap: the host's nameservers (as /32 or /128)
    /// and on-link IPv4 routes. They only steer dynamic choice; an explicit `--subnet` may
    /// overlap them.
    #[serde(default)]
    pub reserved: Vec<Prefix>,
}

fn spec(text: &str, size: u8) -> PoolSpec {
    let base: Prefix = text.parse().expect("built-in pool base is valid CIDR");
    PoolSpec::new(base, size).expect("built-in pool spec is consistent")
}

impl DefaultPools {
    /// Docker's local-scope IPv4 pools: 172.17–172.31 as 15 × /16, then 192.168.0.0/16 as
    /// 16 × /20. uvlan has no `docker0`, so 172.17.0.0/16 is the first one handed out.
    pub fn docker_v4() -> Vec<PoolSpec> {
        vec![
            spec("172.17.0.0/16", 16),
            spec("172.18.0.0/16", 16),
            spec("172.19.0.0/16", 16),
            spec("172.20.0.0/14", 16),
            spec("172.24.0.0/14", 16),
            spec("172.28.0.0/14", 16),
            spec("192.168.0.0/16", 20),
        ]
    }

    /// Docker's defaults for a host: the IPv4 list above and one ULA /48 derived from
    /// `host_id`, split into /64s. No reserved prefixes.
    pub fn for_host(host_id: &str) -> DefaultPools {
        DefaultPools {
            v4: DefaultPools::docker_v4(),
            v6: vec![PoolSpec {
                base: derive_ula_base(host_id),
                size: 64,
            }],
            reserved: Vec::new(),
        }
    }

    /// The same pools with `reserved` as the prefixes to avoid.
    pub fn with_reserved(mut self, reserved: Vec<Prefix>) -> DefaultPools {
        self.reserved = reserved;
        self
    }

    /// The pools of `family` in allocation order: sorted by base address, invalid specs
    /// dropped, and a pool whose base overlaps an earlier one dropped (as Docker's
    /// `newAddrSpace` does).
    pub(crate) fn ordered(&self, family: Family) -> Vec<PoolSpec> {
        let mut list: Vec<PoolSpec> = match family {
            Family::V4 => &self.v4,
            Family::V6 => &self.v6,
        }
        .iter()
        .copied()
        .filter(|s| s.is_valid() && s.base.family() == family)
        .collect();
        list.sort_by_key(|a| a.base);
        let mut kept: Vec<PoolSpec> = Vec::with_capacity(list.len());
        for s in list {
            if kept.last().is_none_or(|k| !k.base.overlaps(&s.base)) {
                kept.push(s);
            }
        }
        kept
    }
}

/// The host's ULA /48, as Docker's `deriveULABaseNetwork`: `fd00::/8` followed by the 40
/// least significant bits of the first 8 bytes (big-endian) of `sha256(host_id)`.
pub fn derive_ula_base(host_id: &str) -> Prefix {
    let digest = sha256(host_id.as_bytes());
    let mut first8 = [0u8; 8];
    first8.copy_from_slice(&digest[..8]);
    let gid = u64::from_be_bytes(first8) & ((1u64 << 40) - 1);
    let addr = (0xfdu128 << 120) | (u128::from(gid) << 80);
    Prefix::new(IpAddr::V6(Ipv6Addr::from(addr)), 48).expect("48 <= 128")
}

/// SHA-256 (FIPS 180-4, the `sha2` crate). Used only to derive the ULA prefix; not a
/// security boundary.
fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn sha256_known_answers() {
        assert_eq!(
            hex(&sha256(b"")),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(
            hex(&sha256(b"abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(
            hex(&sha256(
                b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"
            )),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"
        );
        // 64-byte message: padding spills into a second block.
        assert_eq!(
            hex(&sha256(&[b'a'; 64])),
            "ffe054fe7ae0cb6dc65c3af9b61d5209f439851db43d0ba5997337df154668eb"
        );
        // FIPS 180-2 appendix B.3: one million times "a".
        assert_eq!(
            hex(&sha256(&vec![b'a'; 1_000_000])),
            "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0"
        );
        // 55 bytes: the longest message whose padding fits in one block.
        assert_eq!(
            hex(&sha256(&[b'a'; 55])),
            "9f4390f8d30c2dd92ec9f095b65e2b9ae9b0a925a5258e241c9f1e910f734318"
        );
    }

    /// The two cases of moby's `TestDeriveULABaseNetwork`.
    #[test]
    fn ula_base_matches_docker() {
        assert_eq!(derive_ula_base("").to_string(), "fd42:98fc:1c14::/48");
        assert_eq!(
            derive_ula_base("499d4bc0-b0b3-416f-b1ee-cf6486315593").to_string(),
            "fd62:fb69:18af::/48"
        );
    }

    #[test]
    fn docker_v4_pools_are_15_by_16_then_16_by_20() {
        let pools = DefaultPools::for_host("h");
        let ordered = pools.ordered(Family::V4);
        let mut subnets = Vec::new();
        for s in &ordered {
            let step = 1u128 << (32 - s.size);
            let mut v = s.base.first();
            while v <= s.base.last() {
                subnets.push(
                    Prefix::from_u128(Family::V4, v, s.size)
                        .unwrap()
                        .to_string(),
                );
                v += step;
            }
        }
        assert_eq!(subnets.len(), 31);
        assert_eq!(subnets[0], "172.17.0.0/16");
        assert_eq!(subnets[14], "172.31.0.0/16");
        assert_eq!(subnets[15], "192.168.0.0/20");
        assert_eq!(subnets[30], "192.168.240.0/20");
    }

    #[test]
    fn ordered_drops_invalid_and_overlapping_specs() {
        let p = |s: &str| s.parse::<Prefix>().unwrap();
        let pools = DefaultPools {
            v4: vec![
                PoolSpec {
                    base: p("10.0.0.0/8"),
                    size: 24,
                },
                PoolSpec {
                    base: p("10.1.0.0/16"),
                    size: 24,
                },
                PoolSpec {
                    base: p("9.0.0.0/8"),
                    size: 4,
                },
                PoolSpec {
                    base: p("8.0.0.1/8"),
                    size: 24,
                },
            ],
            v6: vec![],
            reserved: vec![],
        };
        let ordered = pools.ordered(Family::V4);
        assert_eq!(ordered.len(), 1);
        assert_eq!(ordered[0].base, p("10.0.0.0/8"));
    }
}
