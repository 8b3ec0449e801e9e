//! The testbeds built into the binary: every file under `testbeds/`, so that `uvlan lab NAME`
//! works from any directory, and the one `uvlan lab` runs without an argument.

/// The testbeds shipped inside the binary (name, TOML text), so `uvlan lab NAME` works from
/// any directory.
pub const EMBEDDED: &[(&str, &str)] = &[
    (
        "ipvlan-l2",
        include_str!("../../../testbeds/ipvlan-l2.toml"),
    ),
    (
        "macvlan-host-interface",
        include_str!("../../../testbeds/macvlan-host-interface.toml"),
    ),
    (
        "ipvlan-8021q-trunk",
        include_str!("../../../testbeds/ipvlan-8021q-trunk.toml"),
    ),
    (
        "ipvlan-l2-multi-subnet",
        include_str!("../../../testbeds/ipvlan-l2-multi-subnet.toml"),
    ),
    (
        "ipvlan-l3-no-parent",
        include_str!("../../../testbeds/ipvlan-l3-no-parent.toml"),
    ),
    (
        "ipvlan-l3-parent",
        include_str!("../../../testbeds/ipvlan-l3-parent.toml"),
    ),
    (
        "ipvlan-l2-dual-stack",
        include_str!("../../../testbeds/ipvlan-l2-dual-stack.toml"),
    ),
    (
        "ipvlan-l3-dual-stack",
        include_str!("../../../testbeds/ipvlan-l3-dual-stack.toml"),
    ),
    (
        "ipvlan-internal",
        include_str!("../../../testbeds/ipvlan-internal.toml"),
    ),
    (
        "macvlan-dhcp",
        include_str!("../../../testbeds/macvlan-dhcp.toml"),
    ),
    (
        "macvlan-bridge",
        include_str!("../../../testbeds/macvlan-bridge.toml"),
    ),
    (
        "macvlan-8021q",
        include_str!("../../../testbeds/macvlan-8021q.toml"),
    ),
    (
        "cookbook-macvlan-interfaces",
        include_str!("../../../testbeds/cookbook-macvlan-interfaces.toml"),
    ),
    (
        "cookbook-macvlan-driver",
        include_str!("../../../testbeds/cookbook-macvlan-driver.toml"),
    ),
    (
        "cookbook-ipvlan-interfaces",
        include_str!("../../../testbeds/cookbook-ipvlan-interfaces.toml"),
    ),
    (
        "cookbook-ipvlan-driver",
        include_str!("../../../testbeds/cookbook-ipvlan-driver.toml"),
    ),
    (
        "cookbook-vlan-tagging",
        include_str!("../../../testbeds/cookbook-vlan-tagging.toml"),
    ),
];

/// The testbed `uvlan lab` runs without an argument.
pub const DEFAULT_TESTBED: &str = "ipvlan-l3-no-parent";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lab::load;
    use std::path::Path;

    #[test]
    fn every_embedded_testbed_parses_and_validates() {
        for (name, _) in EMBEDDED {
            let tb = load(name).unwrap();
            assert_eq!(&tb.name, name);
        }
        assert!(EMBEDDED.iter().any(|(n, _)| *n == DEFAULT_TESTBED));
    }

    #[test]
    fn every_testbed_file_parses_validates_and_is_embedded() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../testbeds");
        let mut n = 0;
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "toml") {
                let tb = load(p.to_str().unwrap()).unwrap();
                assert_eq!(
                    Some(tb.name.as_str()),
                    p.file_stem().and_then(|s| s.to_str())
                );
                let text = std::fs::read_to_string(&p).unwrap();
                assert!(
                    EMBEDDED.iter().any(|(n, t)| *n == tb.name && *t == text),
                    "{} is not in lab::EMBEDDED",
                    tb.name
                );
                n += 1;
            }
        }
        assert_eq!(n, EMBEDDED.len());
    }
}
