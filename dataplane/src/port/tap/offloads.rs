//! The offload features our side of a TAP accepts ([`Offloads`], `TUNSETOFFLOAD`) and the
//! order in which smaller sets are tried when the kernel refuses one.

use std::fmt;

/// Offload features accepted by our side of the TAP (`TUNSETOFFLOAD`).
///
/// Enabling a feature tells the namespace's stack that frames it sends through this TAP may
/// be left with partial checksums (`CSUM`) or as GSO super-frames (the others).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Offloads(u32);

impl Offloads {
    /// No offloads: every frame read is complete and checksummed.
    pub const NONE: Offloads = Offloads(0);
    /// Partial checksums (`TUN_F_CSUM`).
    pub const CSUM: Offloads = Offloads(libc::TUN_F_CSUM);
    /// TCP over IPv4 segmentation (`TUN_F_TSO4`); needs `CSUM`.
    pub const TSO4: Offloads = Offloads(libc::TUN_F_TSO4);
    /// TCP over IPv6 segmentation (`TUN_F_TSO6`); needs `CSUM`.
    pub const TSO6: Offloads = Offloads(libc::TUN_F_TSO6);
    /// TSO with ECN (CWR) bits (`TUN_F_TSO_ECN`); needs TSO4 or TSO6.
    pub const TSO_ECN: Offloads = Offloads(libc::TUN_F_TSO_ECN);
    /// UDP over IPv4 segmentation (`TUN_F_USO4`); the kernel wants it together with `USO6`.
    pub const USO4: Offloads = Offloads(libc::TUN_F_USO4);
    /// UDP over IPv6 segmentation (`TUN_F_USO6`); the kernel wants it together with `USO4`.
    pub const USO6: Offloads = Offloads(libc::TUN_F_USO6);
    /// What uvlan asks for by default: `CSUM|TSO4|TSO6|USO4|USO6`.
    pub const DEFAULT: Offloads =
        Offloads(libc::TUN_F_CSUM | libc::TUN_F_TSO4 | libc::TUN_F_TSO6 | Self::USO.0);
    const USO: Offloads = Offloads(libc::TUN_F_USO4 | libc::TUN_F_USO6);
    const TSO: Offloads = Offloads(libc::TUN_F_TSO4 | libc::TUN_F_TSO6 | libc::TUN_F_TSO_ECN);
    const NAMES: [(Offloads, &'static str); 6] = [
        (Self::CSUM, "csum"),
        (Self::TSO4, "tso4"),
        (Self::TSO6, "tso6"),
        (Self::TSO_ECN, "tso_ecn"),
        (Self::USO4, "uso4"),
        (Self::USO6, "uso6"),
    ];

    /// The raw `TUN_F_*` bits.
    pub const fn bits(self) -> u32 {
        self.0
    }

    /// Builds a set from raw `TUN_F_*` bits, dropping bits this module does not know.
    pub const fn from_bits_truncate(bits: u32) -> Offloads {
        Offloads(bits & (Self::DEFAULT.0 | libc::TUN_F_TSO_ECN))
    }

    /// True if every feature in `other` is in `self`.
    pub const fn contains(self, other: Offloads) -> bool {
        self.0 & other.0 == other.0
    }

    /// True if the set is empty.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// Features in both sets.
    pub const fn intersection(self, other: Offloads) -> Offloads {
        Offloads(self.0 & other.0)
    }

    /// Features in either set.
    pub const fn union(self, other: Offloads) -> Offloads {
        Offloads(self.0 | other.0)
    }

    /// The sets `TUNSETOFFLOAD` is tried with, best first, when `self` is requested: the
    /// request itself, then without USO, then CSUM alone, then nothing. Only subsets of the
    /// request are tried, and each step is made valid (no TSO without CSUM).
    pub(super) fn fallback_ladder(self) -> Vec<Offloads> {
        let steps = [
            self,
            self.intersection(Offloads::CSUM.union(Offloads::TSO)),
            self.intersection(Offloads::CSUM),
            Offloads::NONE,
        ];
        let mut out: Vec<Offloads> = Vec::with_capacity(steps.len());
        for step in steps {
            // TSO without CSUM is refused by the kernel: drop it rather than try.
            let step = if step.contains(Offloads::CSUM) {
                step
            } else {
                Offloads::NONE
            };
            if !out.contains(&step) {
                out.push(step);
            }
        }
        out
    }
}

impl std::ops::BitOr for Offloads {
    type Output = Offloads;
    fn bitor(self, rhs: Offloads) -> Offloads {
        self.union(rhs)
    }
}

impl fmt::Display for Offloads {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return f.write_str("none");
        }
        let mut first = true;
        for (bit, name) in Self::NAMES {
            if self.contains(bit) {
                if !first {
                    f.write_str("|")?;
                }
                f.write_str(name)?;
                first = false;
            }
        }
        Ok(())
    }
}

impl fmt::Debug for Offloads {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Offloads({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offload_ladder_only_tries_valid_subsets() {
        assert_eq!(
            Offloads::DEFAULT.fallback_ladder(),
            vec![
                Offloads::DEFAULT,
                Offloads::CSUM | Offloads::TSO4 | Offloads::TSO6,
                Offloads::CSUM,
                Offloads::NONE
            ]
        );
        // TSO without CSUM is never tried.
        assert_eq!(Offloads::TSO4.fallback_ladder(), vec![Offloads::NONE]);
        assert_eq!(
            (Offloads::CSUM | Offloads::USO4).fallback_ladder(),
            vec![
                Offloads::CSUM | Offloads::USO4,
                Offloads::CSUM,
                Offloads::NONE
            ]
        );
        assert_eq!(Offloads::DEFAULT.to_string(), "csum|tso4|tso6|uso4|uso6");
        assert_eq!(Offloads::NONE.to_string(), "none");
    }
}
