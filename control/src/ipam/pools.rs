//! Default address pools (Docker's `localScopeDefaultNetworks` and the per-host ULA /48).

use std::net::{IpAddr, Ipv6Addr};

use serde::{Deserialize, Serialize};

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

/// SHA-256 (FIPS 180-4). Used only to derive the ULA prefix; not a security boundary.
fn sha256(data: &[u8]) -> [u8; 32] {
    const K: [u32; 64] = [
        0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4,
        0xab1c5ed5, 0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe,
        0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f,
        0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7,
        0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc,
        0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b,
        0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116,
        0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
        0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7,
        0xc67178f2,
    ];
    let mut h: [u32; 8] = [
        0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab,
        0x5be0cd19,
    ];
    let bit_len = (data.len() as u64).wrapping_mul(8);
    let mut msg = data.to_vec();
    msg.push(0x80);
    while msg.len() % 64 != 56 {
        msg.push(0);
    }
    msg.extend_from_slice(&bit_len.to_be_bytes());

    for block in msg.chunks_exact(64) {
        let mut w = [0u32; 64];
        for (i, word) in block.chunks_exact(4).enumerate() {
            w[i] = u32::from_be_bytes([word[0], word[1], word[2], word[3]]);
        }
        for i in 16..64 {
            let s0 = w[i - 15].rotate_right(7) ^ w[i - 15].rotate_right(18) ^ (w[i - 15] >> 3);
            let s1 = w[i - 2].rotate_right(17) ^ w[i - 2].rotate_right(19) ^ (w[i - 2] >> 10);
            w[i] = w[i - 16]
                .wrapping_add(s0)
                .wrapping_add(w[i - 7])
                .wrapping_add(s1);
        }
        let [mut a, mut b, mut c, mut d, mut e, mut f, mut g, mut hh] = h;
        for i in 0..64 {
            let s1 = e.rotate_right(6) ^ e.rotate_right(11) ^ e.rotate_right(25);
            let ch = (e & f) ^ (!e & g);
            let t1 = hh
                .wrapping_add(s1)
                .wrapping_add(ch)
                .wrapping_add(K[i])
                .wrapping_add(w[i]);
            let s0 = a.rotate_right(2) ^ a.rotate_right(13) ^ a.rotate_right(22);
            let maj = (a & b) ^ (a & c) ^ (b & c);
            let t2 = s0.wrapping_add(maj);
            hh = g;
            g = f;
            f = e;
            e = d.wrapping_add(t1);
            d = c;
            c = b;
            b = a;
            a = t1.wrapping_add(t2);
        }
        for (slot, v) in h.iter_mut().zip([a, b, c, d, e, f, g, hh]) {
            *slot = slot.wrapping_add(v);
        }
    }
    let mut out = [0u8; 32];
    for (chunk, v) in out.chunks_exact_mut(4).zip(h) {
        chunk.copy_from_slice(&v.to_be_bytes());
    }
    out
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
