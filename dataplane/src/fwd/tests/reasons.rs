//! The closed set the engine's drop counters index: every variant once, in index order, with a
//! unique name (`run::stats` checks `IoDrop` alike).

use super::super::*;

#[test]
fn drop_reason_all_has_every_variant_in_index_order() {
    assert_eq!(DropReason::ALL.len(), DropReason::COUNT);
    for (i, r) in DropReason::ALL.iter().enumerate() {
        assert_eq!(r.index(), i, "{r:?}");
    }
    let mut names: Vec<_> = DropReason::ALL.iter().map(|r| r.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), DropReason::COUNT, "counter names are unique");
    for r in DropReason::ALL {
        assert!(!r.kernel_rule().is_empty(), "{r:?}");
        assert_eq!(r.to_string(), r.as_str());
    }
}
