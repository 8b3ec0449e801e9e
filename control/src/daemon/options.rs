//! Driver options (`-o`) and the parent interface grammar, with Docker's texts.
//!
//! Pure functions: host facts come in through a closure, so every rule is unit-tested.

use std::collections::BTreeMap;

use uvlan_dataplane::fwd::{Driver, IpvlanFlag, IpvlanMode, MacvlanMode};

/// Option keys every driver accepts and stores without using them (Docker's generic
/// options, e.g. `com.docker.network.driver.mtu`, which Docker's drivers ignore too).
pub const GENERIC_PREFIX: &str = "com.docker.network.";

/// `-o uvlan.fast_path=true|false`: whether `network connect` makes fast-path (veth)
/// endpoints on this network; absent: as the daemon's `--fast-path` says.
pub const FAST_PATH_OPT: &str = "uvlan.fast_path";

/// Docker's spelling of `--ipam-driver dhcp`: `docker network create --ipam-driver null -o
/// uvlan.ipam=dhcp` (Docker sends no IPAM driver name to a network driver, and its null IPAM
/// gives no pool). Only a front end's network may carry it; `dhcp` is its only value.
pub const IPAM_OPT: &str = "uvlan.ipam";

/// The network's `uvlan.fast_path` option.
pub fn fast_path_opt(opts: &BTreeMap<String, String>) -> Result<Option<bool>, String> {
    match opts.get(FAST_PATH_OPT).map(String::as_str) {
        None | Some("") => Ok(None),
        Some("true") => Ok(Some(true)),
        Some("false") => Ok(Some(false)),
        Some(v) => Err(format!(
            "invalid {FAST_PATH_OPT} value {v:?}: use true or false"
        )),
    }
}

/// The `-o` keys a driver knows.
pub fn known_keys(driver: Driver) -> &'static [&'static str] {
    match driver {
        Driver::Ipvlan => &[
            "parent",
            "ipvlan_mode",
            "ipvlan_flag",
            "uvlan.host_interface",
        ],
        Driver::Macvlan => &["parent", "macvlan_mode", "uvlan.host_interface"],
    }
}

/// Parses `-d`: `ipvlan` or `macvlan`.
pub fn parse_driver(name: &str) -> Result<Driver, String> {
    match name {
        "ipvlan" => Ok(Driver::Ipvlan),
        "macvlan" => Ok(Driver::Macvlan),
        "" => Err(missing_driver()),
        other => Err(format!(
            "unknown network driver {other:?}: uvlan provides the ipvlan and macvlan drivers \
             (-d ipvlan or -d macvlan); it has no bridge, overlay or host driver"
        )),
    }
}

/// The error for a `network create` without `-d`.
/// `-o com.docker.network.enable_ipv4=BOOL`: Docker's driver option for `--ipv4`.
pub const ENABLE_IPV4_OPT: &str = "com.docker.network.enable_ipv4";

/// A boolean as Go's `strconv.ParseBool` reads it (Docker's flags and driver options): `1`,
/// `t`, `T`, `TRUE`, `true`, `True` and `0`, `f`, `F`, `FALSE`, `false`, `False`.
pub fn parse_go_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// Whether a network has IPv4, as Docker 28's daemon decides (`createNetwork`): `--ipv4`
/// when given (the option is then removed from `options`, so it does not show in inspect),
/// else the `-o com.docker.network.enable_ipv4` option, else true.
pub fn enable_ipv4(
    given: Option<bool>,
    options: &mut std::collections::BTreeMap<String, String>,
) -> Result<bool, String> {
    if let Some(b) = given {
        options.remove(ENABLE_IPV4_OPT);
        return Ok(b);
    }
    match options.get(ENABLE_IPV4_OPT) {
        None => Ok(true),
        Some(v) => parse_go_bool(v)
            .ok_or_else(|| format!("driver-opt {ENABLE_IPV4_OPT:?} is not a valid bool")),
    }
}

pub fn missing_driver() -> String {
    "no network driver given: use -d ipvlan or -d macvlan (uvlan has no bridge driver, so \
     unlike docker it needs -d)"
        .to_string()
}

/// The driver options after validation. Defaults are filled in (they are not written back
/// into the user's `-o` map, which inspect shows as given).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DriverOpts {
    /// `parent` (`None` when absent or empty).
    pub parent: Option<String>,
    /// ipvlan mode (ipvlan only).
    pub ipvlan_mode: Option<IpvlanMode>,
    /// ipvlan flag (ipvlan only).
    pub ipvlan_flag: Option<IpvlanFlag>,
    /// macvlan mode (macvlan only).
    pub macvlan_mode: Option<MacvlanMode>,
}

/// Validates the `-o` map for `driver`: unknown keys first (uvlan refuses them, naming the
/// known ones; `com.docker.network.*` keys are accepted), then mode and flag values with
/// Docker's texts.
pub fn parse_driver_opts(
    driver: Driver,
    opts: &BTreeMap<String, String>,
) -> Result<DriverOpts, String> {
    let known = known_keys(driver);
    for key in opts.keys() {
        if !known.contains(&key.as_str())
            && !key.starts_with(GENERIC_PREFIX)
            && key != FAST_PATH_OPT
            && key != IPAM_OPT
        {
            return Err(format!(
                "unknown {} option {key:?}: the known options are {} (and \
                 {GENERIC_PREFIX}* keys, which are stored)",
                driver.as_str(),
                known.join(", ")
            ));
        }
    }
    fast_path_opt(opts)?;
    let parent = opts.get("parent").filter(|p| !p.is_empty()).cloned();
    match driver {
        Driver::Ipvlan => {
            let mode = match opts.get("ipvlan_mode").map(String::as_str) {
                None | Some("") => IpvlanMode::L2,
                Some(m) => IpvlanMode::parse(m).ok_or_else(|| {
                    format!(
                        "requested ipvlan mode '{m}' is not valid, 'l2' mode is the ipvlan \
                         driver default"
                    )
                })?,
            };
            let flag = match opts.get("ipvlan_flag").map(String::as_str) {
                None | Some("") => IpvlanFlag::Bridge,
                Some(f) => IpvlanFlag::parse(f).ok_or_else(|| {
                    format!(
                        "requested ipvlan flag '{f}' is not valid, 'bridge' is the ipvlan \
                         driver default"
                    )
                })?,
            };
            Ok(DriverOpts {
                parent,
                ipvlan_mode: Some(mode),
                ipvlan_flag: Some(flag),
                macvlan_mode: None,
            })
        }
        Driver::Macvlan => {
            let mode = match opts.get("macvlan_mode").map(String::as_str) {
                None | Some("") => MacvlanMode::Bridge,
                Some(m) => MacvlanMode::parse(m).ok_or_else(|| {
                    format!(
                        "requested macvlan mode '{m}' is not valid, 'bridge' mode is the \
                         macvlan driver default"
                    )
                })?,
            };
            Ok(DriverOpts {
                parent,
                ipvlan_mode: None,
                ipvlan_flag: None,
                macvlan_mode: Some(mode),
            })
        }
    }
}

/// What the host says about an interface name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HostIf {
    /// No such interface.
    Missing,
    /// The loopback device.
    Loopback,
    /// An Ethernet device.
    Ether,
    /// Another link type (`ARPHRD_*`).
    Other(u16),
}

/// Where a `parent=` value leads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResolvedParent {
    /// The host interface.
    pub ifname: String,
    /// The VID uvlan tags with.
    pub vid: Option<u16>,
}

fn loopback(driver: Driver) -> String {
    format!(
        "loopback interface is not a valid {} parent link",
        driver.as_str()
    )
}

fn check_kind(driver: Driver, name: &str, kind: HostIf) -> Result<(), String> {
    match kind {
        HostIf::Loopback => Err(loopback(driver)),
        HostIf::Other(t) => Err(format!(
            "parent interface {name} is not an Ethernet device (link type {t}): {} needs an \
             Ethernet parent",
            driver.as_str()
        )),
        HostIf::Ether | HostIf::Missing => Ok(()),
    }
}

/// Resolves `parent=` the way Docker's drivers do, except that a missing `IF.VID` is not
/// created as a kernel VLAN device: uvlan tags with VID on IF itself.
///
/// - `lo` is refused (Docker checks the name; uvlan also refuses any loopback device).
/// - A name that exists on the host is used as it is, untagged (even with a dot in it).
/// - Otherwise the name must be `IF.VID` (Docker's `parseVlan`): a dot is required, exactly
///   two parts, VID an integer (Go `Atoi` syntax: an optional sign), IF must exist, and the
///   VID must lie in 1–4094; each failure has Docker's text.
pub fn resolve_parent(
    driver: Driver,
    given: &str,
    host: &mut dyn FnMut(&str) -> HostIf,
) -> Result<ResolvedParent, String> {
    if given == "lo" {
        return Err(loopback(driver));
    }
    let kind = host(given);
    if kind != HostIf::Missing {
        check_kind(driver, given, kind)?;
        return Ok(ResolvedParent {
            ifname: given.to_string(),
            vid: None,
        });
    }
    if !given.contains('.') {
        return Err(format!(
            "invalid subinterface vlan name {given}, example formatting is eth0.10"
        ));
    }
    let parts: Vec<&str> = given.split('.').collect();
    let [master, vid_text] = parts.as_slice() else {
        return Err(format!(
            "required interface name format is: name.vlan_id, ex. eth0.10 for vlan 10, \
             instead received {given}"
        ));
    };
    let vid: i64 = vid_text.parse().map_err(|_| {
        format!("unable to parse a valid vlan id from: {vid_text} (ex. eth0.10 for vlan 10)")
    })?;
    let master_kind = host(master);
    if master_kind == HostIf::Missing {
        return Err(format!(
            "-o parent interface was not found on the host: {master}"
        ));
    }
    if !(1..=4094).contains(&vid) {
        return Err(format!("vlan id must be between 1-4094, received: {vid}"));
    }
    if *master == "lo" {
        return Err(loopback(driver));
    }
    check_kind(driver, master, master_kind)?;
    Ok(ResolvedParent {
        ifname: master.to_string(),
        vid: u16::try_from(vid).ok(),
    })
}

/// Whether a host interface (`network connect --host`) can reach the network's endpoints,
/// following what the kernel does with the usual shim (a macvlan or ipvlan interface of the
/// same mode on the host):
/// - macvlan `bridge`, ipvlan `l2`/`l3`/`l3s` with the `bridge` flag: ports talk to each
///   other inside the driver, so the shim reaches every endpoint (accepted);
/// - macvlan `private`, ipvlan `private`: port-to-port unicast is dropped (C19, C49), so
///   the shim reaches nobody;
/// - macvlan `vepa`, ipvlan `vepa`: port-to-port traffic leaves on the wire and comes back only
///   through a switch with reflective relay (hairpin), which uvlan cannot see;
/// - macvlan `passthru` (one port only) and `source` (ports receive only from listed MACs).
pub fn host_interface_allowed(net: &crate::store::NetworkRecord) -> Result<(), String> {
    let dc = &net.driver_config;
    let why = match parse_driver(&net.driver)? {
        Driver::Macvlan => match dc.macvlan_mode().unwrap_or(MacvlanMode::Bridge) {
            MacvlanMode::Bridge => None,
            MacvlanMode::Private => Some(
                "macvlan private drops all traffic between its ports, so a host interface would \
                 reach no endpoint (a kernel macvlan shim cannot either)",
            ),
            MacvlanMode::Vepa => Some(
                "macvlan vepa sends traffic between its ports to the wire; it comes back only \
                 through a switch with reflective relay (hairpin), which uvlan cannot check. Use \
                 a bridge-mode network, or a shim of your own if your switch reflects",
            ),
            MacvlanMode::Passthru => {
                Some("macvlan passthru takes a single port, held by the network's endpoint")
            }
            MacvlanMode::Source => Some(
                "macvlan source ports receive only from their listed source MACs, so a host \
                 interface would reach no endpoint",
            ),
        },
        Driver::Ipvlan => match dc.ipvlan_flag().unwrap_or(IpvlanFlag::Bridge) {
            IpvlanFlag::Bridge => None,
            IpvlanFlag::Private => Some(
                "ipvlan private drops all traffic between its ports, so a host interface would \
                 reach no endpoint (a kernel ipvlan shim cannot either)",
            ),
            IpvlanFlag::Vepa => Some(
                "ipvlan vepa sends traffic between its ports to the wire; it comes back only \
                 through a switch with reflective relay (hairpin), which uvlan cannot check",
            ),
        },
    };
    match why {
        None => Ok(()),
        Some(w) => Err(format!(
            "network {} cannot have a host interface: {w}",
            net.name
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn host(name: &str) -> HostIf {
        match name {
            "eth0" | "veth1" | "odd.name" => HostIf::Ether,
            "lo" => HostIf::Loopback,
            "tun0" => HostIf::Other(65534),
            _ => HostIf::Missing,
        }
    }

    #[test]
    fn drivers() {
        assert_eq!(parse_driver("ipvlan"), Ok(Driver::Ipvlan));
        assert_eq!(parse_driver("macvlan"), Ok(Driver::Macvlan));
        assert_eq!(parse_driver(""), Err(missing_driver()));
        assert_eq!(
            parse_driver("bridge").unwrap_err(),
            "unknown network driver \"bridge\": uvlan provides the ipvlan and macvlan drivers \
             (-d ipvlan or -d macvlan); it has no bridge, overlay or host driver"
        );
    }

    #[test]
    fn defaults_are_dockers() {
        let o = parse_driver_opts(Driver::Ipvlan, &opts(&[])).unwrap();
        assert_eq!(o.ipvlan_mode, Some(IpvlanMode::L2));
        assert_eq!(o.ipvlan_flag, Some(IpvlanFlag::Bridge));
        assert_eq!(o.parent, None);
        let o = parse_driver_opts(Driver::Macvlan, &opts(&[("parent", "")])).unwrap();
        assert_eq!(o.macvlan_mode, Some(MacvlanMode::Bridge));
        assert_eq!(o.parent, None, "an empty parent means no parent");
        let o = parse_driver_opts(
            Driver::Ipvlan,
            &opts(&[("ipvlan_mode", "l3s"), ("ipvlan_flag", "private")]),
        )
        .unwrap();
        assert_eq!(o.ipvlan_mode, Some(IpvlanMode::L3s));
        assert_eq!(o.ipvlan_flag, Some(IpvlanFlag::Private));
    }

    #[test]
    fn unknown_keys_are_refused_generic_ones_kept() {
        assert_eq!(
            parse_driver_opts(Driver::Ipvlan, &opts(&[("ipvlan_mod", "l3")])).unwrap_err(),
            "unknown ipvlan option \"ipvlan_mod\": the known options are parent, ipvlan_mode, \
             ipvlan_flag, uvlan.host_interface (and com.docker.network.* keys, which are stored)"
        );
        assert_eq!(
            parse_driver_opts(Driver::Macvlan, &opts(&[("ipvlan_mode", "l2")])).unwrap_err(),
            "unknown macvlan option \"ipvlan_mode\": the known options are parent, \
             macvlan_mode, uvlan.host_interface (and com.docker.network.* keys, which are stored)"
        );
        assert!(parse_driver_opts(
            Driver::Macvlan,
            &opts(&[("com.docker.network.driver.mtu", "9000")])
        )
        .is_ok());
    }

    #[test]
    fn fast_path_option() {
        for (v, want) in [("true", Some(true)), ("false", Some(false)), ("", None)] {
            let o = opts(&[(FAST_PATH_OPT, v)]);
            assert!(parse_driver_opts(Driver::Macvlan, &o).is_ok());
            assert_eq!(fast_path_opt(&o), Ok(want));
        }
        assert_eq!(
            parse_driver_opts(Driver::Ipvlan, &opts(&[(FAST_PATH_OPT, "yes")])).unwrap_err(),
            "invalid uvlan.fast_path value \"yes\": use true or false"
        );
    }

    #[test]
    fn bad_values_have_dockers_texts() {
        assert_eq!(
            parse_driver_opts(Driver::Ipvlan, &opts(&[("ipvlan_mode", "L2")])).unwrap_err(),
            "requested ipvlan mode 'L2' is not valid, 'l2' mode is the ipvlan driver default"
        );
        assert_eq!(
            parse_driver_opts(Driver::Ipvlan, &opts(&[("ipvlan_flag", "vepa2")])).unwrap_err(),
            "requested ipvlan flag 'vepa2' is not valid, 'bridge' is the ipvlan driver default"
        );
        assert_eq!(
            parse_driver_opts(Driver::Macvlan, &opts(&[("macvlan_mode", "brige")])).unwrap_err(),
            "requested macvlan mode 'brige' is not valid, 'bridge' mode is the macvlan driver \
             default"
        );
    }

    #[test]
    fn parent_grammar_has_dockers_texts() {
        let r = |p: &str| resolve_parent(Driver::Ipvlan, p, &mut host);
        assert_eq!(
            r("eth0"),
            Ok(ResolvedParent {
                ifname: "eth0".into(),
                vid: None
            })
        );
        assert_eq!(
            r("eth0.20"),
            Ok(ResolvedParent {
                ifname: "eth0".into(),
                vid: Some(20)
            })
        );
        assert_eq!(
            r("eth0.+020").unwrap().vid,
            Some(20),
            "Go's Atoi accepts a sign and leading zeros"
        );
        assert_eq!(
            r("odd.name").unwrap().vid,
            None,
            "an existing name is used as is"
        );
        assert_eq!(
            r("lo").unwrap_err(),
            "loopback interface is not a valid ipvlan parent link"
        );
        assert_eq!(
            resolve_parent(Driver::Macvlan, "lo.10", &mut host).unwrap_err(),
            "loopback interface is not a valid macvlan parent link"
        );
        assert_eq!(
            r("eth9").unwrap_err(),
            "invalid subinterface vlan name eth9, example formatting is eth0.10"
        );
        assert_eq!(
            r("eth0.1.2").unwrap_err(),
            "required interface name format is: name.vlan_id, ex. eth0.10 for vlan 10, \
             instead received eth0.1.2"
        );
        assert_eq!(
            r("eth0.x").unwrap_err(),
            "unable to parse a valid vlan id from: x (ex. eth0.10 for vlan 10)"
        );
        assert_eq!(
            r("eth9.10").unwrap_err(),
            "-o parent interface was not found on the host: eth9"
        );
        for (p, n) in [("eth0.0", "0"), ("eth0.4095", "4095"), ("eth0.-3", "-3")] {
            assert_eq!(
                r(p).unwrap_err(),
                format!("vlan id must be between 1-4094, received: {n}")
            );
        }
        assert!(r("tun0").unwrap_err().contains("is not an Ethernet device"));
    }
}
