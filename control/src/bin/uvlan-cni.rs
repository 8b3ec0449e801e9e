//! The uvlan CNI plugin. Install it as `uvlan-ipvlan` and `uvlan-macvlan` in a `CNI_PATH`
//! directory (it picks the driver from the name it runs as); see `docs/cni.md`.

fn main() {
    std::process::exit(uvlan_control::cni::main());
}
