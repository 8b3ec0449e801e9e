//! A set of addresses stored as sorted, disjoint, non-adjacent inclusive ranges.
//!
//! A bitmap cannot cover an IPv6 /64; a range list can, and it keeps "lowest free address in
//! `[lo, hi]`" a single ordered-map lookup because merged ranges are never adjacent.

use std::collections::BTreeMap;

/// Addresses (as numbers) currently taken in one pool.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct AddrSet {
    /// start → end (inclusive). Invariant: disjoint, and `end + 1 < next start`.
    ranges: BTreeMap<u128, u128>,
}

impl AddrSet {
    /// The range containing `x`, if any.
    fn range_of(&self, x: u128) -> Option<(u128, u128)> {
        self.ranges
            .range(..=x)
            .next_back()
            .filter(|(_, &end)| end >= x)
            .map(|(&start, &end)| (start, end))
    }

    /// Whether `x` is taken.
    pub(crate) fn contains(&self, x: u128) -> bool {
        self.range_of(x).is_some()
    }

    /// Takes `x`; `false` if it was already taken.
    pub(crate) fn insert(&mut self, x: u128) -> bool {
        if self.contains(x) {
            return false;
        }
        let left = x.checked_sub(1).and_then(|l| self.range_of(l));
        let right = x
            .checked_add(1)
            .and_then(|r| self.ranges.get(&r).map(|&end| (r, end)));
        match (left, right) {
            (Some((ls, _)), Some((rs, re))) => {
                self.ranges.remove(&rs);
                self.ranges.insert(ls, re);
            }
            (Some((ls, _)), None) => {
                self.ranges.insert(ls, x);
            }
            (None, Some((rs, re))) => {
                self.ranges.remove(&rs);
                self.ranges.insert(x, re);
            }
            (None, None) => {
                self.ranges.insert(x, x);
            }
        }
        true
    }

    /// Frees `x`; `false` if it was not taken.
    pub(crate) fn remove(&mut self, x: u128) -> bool {
        let Some((start, end)) = self.range_of(x) else {
            return false;
        };
        self.ranges.remove(&start);
        if start < x {
            self.ranges.insert(start, x - 1);
        }
        if x < end {
            self.ranges.insert(x + 1, end);
        }
        true
    }

    /// The lowest free address in `[lo, hi]`.
    pub(crate) fn first_free(&self, lo: u128, hi: u128) -> Option<u128> {
        if lo > hi {
            return None;
        }
        match self.range_of(lo) {
            None => Some(lo),
            // Ranges are never adjacent, so the address after a range is free.
            Some((_, end)) => end.checked_add(1).filter(|&next| next <= hi),
        }
    }

    /// Number of taken addresses in `[lo, hi]`.
    pub(crate) fn count_in(&self, lo: u128, hi: u128) -> u128 {
        if lo > hi {
            return 0;
        }
        let mut total: u128 = 0;
        for (&start, &end) in self.ranges.range(..=hi).rev() {
            if end < lo {
                break;
            }
            let span = end.min(hi) - start.max(lo);
            total = total.saturating_add(span).saturating_add(1);
        }
        total
    }

    /// Number of taken addresses.
    pub(crate) fn len(&self) -> u128 {
        self.count_in(0, u128::MAX)
    }

    /// Every taken address, lowest first (tests and diagnostics only: may be long).
    #[cfg(test)]
    pub(crate) fn iter(&self) -> impl Iterator<Item = u128> + '_ {
        self.ranges.iter().flat_map(|(&s, &e)| s..=e)
    }

    /// Checks the structural invariant (tests only).
    #[cfg(test)]
    pub(crate) fn is_well_formed(&self) -> bool {
        let mut prev_end: Option<u128> = None;
        for (&s, &e) in &self.ranges {
            if e < s {
                return false;
            }
            if let Some(pe) = prev_end {
                if pe.checked_add(1).is_none_or(|n| n >= s) {
                    return false;
                }
            }
            prev_end = Some(e);
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    #[test]
    fn insert_merge_split() {
        let mut s = AddrSet::default();
        assert!(s.insert(5));
        assert!(s.insert(7));
        assert!(!s.insert(5));
        assert!(s.insert(6));
        assert_eq!(s.ranges.len(), 1, "5,6,7 merge into one range");
        assert_eq!(s.first_free(5, 100), Some(8));
        assert_eq!(s.first_free(5, 7), None);
        assert!(s.remove(6));
        assert!(!s.remove(6));
        assert_eq!(s.first_free(5, 100), Some(6));
        assert_eq!(s.count_in(0, 100), 2);
        assert_eq!(s.len(), 2);
        assert!(s.is_well_formed());
    }

    #[test]
    fn extremes_do_not_overflow() {
        let mut s = AddrSet::default();
        assert!(s.insert(u128::MAX));
        assert!(s.insert(0));
        assert_eq!(s.first_free(u128::MAX, u128::MAX), None);
        assert_eq!(s.first_free(0, u128::MAX), Some(1));
        assert!(s.insert(u128::MAX - 1));
        assert_eq!(s.count_in(0, u128::MAX), 3);
        assert!(s.remove(u128::MAX));
        assert!(s.is_well_formed());
    }

    proptest! {
        #[test]
        fn behaves_like_a_set(ops in prop::collection::vec((any::<bool>(), 0u128..64), 0..200),
                              lo in 0u128..64, span in 0u128..64) {
            let mut s = AddrSet::default();
            let mut model = BTreeSet::new();
            for (add, x) in ops {
                if add {
                    prop_assert_eq!(s.insert(x), model.insert(x));
                } else {
                    prop_assert_eq!(s.remove(x), model.remove(&x));
                }
                prop_assert!(s.is_well_formed());
            }
            let hi = lo + span;
            let want_free = (lo..=hi).find(|x| !model.contains(x));
            prop_assert_eq!(s.first_free(lo, hi), want_free);
            let want_count = model.range(lo..=hi).count() as u128;
            prop_assert_eq!(s.count_in(lo, hi), want_count);
            prop_assert_eq!(s.iter().collect::<Vec<_>>(), model.iter().copied().collect::<Vec<_>>());
        }
    }
}
