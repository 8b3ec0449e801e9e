//! Testbed validation: every name a testbed uses is defined (namespaces, link ends, bridge
//! ports, hosts, networks, matrix nodes, check targets), every value is in range, and the
//! testbed checks something. A testbed that passes can be built without guessing.

use super::{split_dev, uvlan_args, LabError, Stage, Testbed};
use std::net::IpAddr;

/// Checks that every name a testbed uses is defined, and that it checks something.
pub fn validate(tb: &Testbed) -> Result<(), LabError> {
    let bad = |m: String| Err(LabError::Invalid(tb.name.clone(), m));
    let hosts = tb.host_names();
    let mut names: Vec<&str> = Vec::new();
    for h in &hosts {
        if names.contains(h) {
            return bad(format!("host {h:?} is declared twice"));
        }
        names.push(h);
    }
    for n in &tb.namespace {
        if hosts.contains(&n.name.as_str()) {
            continue;
        }
        if names.contains(&n.name.as_str()) {
            return bad(format!("namespace {:?} is declared twice", n.name));
        }
        names.push(&n.name);
    }
    for e in &tb.endpoint {
        if names.contains(&e.name.as_str()) {
            return bad(format!("endpoint {} reuses a namespace name", e.name));
        }
        names.push(&e.name);
    }
    for n in &names {
        if n.is_empty() || n.contains('/') || n.contains(char::is_whitespace) {
            return bad(format!("{n:?} is not a usable namespace name"));
        }
    }
    let mut ends: Vec<(&str, &str)> = Vec::new();
    for l in &tb.link {
        for end in [&l.a, &l.b] {
            match split_dev(end) {
                Some((ns, ifn)) if names.contains(&ns) => {
                    if ends.contains(&(ns, ifn)) {
                        return bad(format!("link end {end:?} is used twice"));
                    }
                    ends.push((ns, ifn));
                }
                _ => return bad(format!("link end {end:?} must be NAMESPACE/IFNAME with a known namespace and a name of at most 15 characters")),
            }
        }
    }
    for b in &tb.bridge {
        if !names.contains(&b.ns.as_str()) {
            return bad(format!("bridge {}: no namespace {:?}", b.name, b.ns));
        }
        if b.name.is_empty() || b.name.len() > 15 {
            return bad(format!("bridge name {:?} must be 1..15 characters", b.name));
        }
        for p in b.ports.iter().chain(&b.hairpin) {
            if !ends.contains(&(b.ns.as_str(), p.as_str())) {
                return bad(format!(
                    "bridge {}: port {p:?} is not a link end in namespace {}",
                    b.name, b.ns
                ));
            }
        }
        for p in &b.hairpin {
            if !b.ports.contains(p) {
                return bad(format!(
                    "bridge {}: hairpin port {p:?} is not one of its ports",
                    b.name
                ));
            }
        }
    }
    for v in &tb.vlan_access {
        match split_dev(&v.dev) {
            Some((ns, _)) if names.contains(&ns) => {}
            _ => {
                return bad(format!(
                    "vlan_access dev {:?} must be NAMESPACE/IFNAME with a known namespace",
                    v.dev
                ))
            }
        }
        if v.vid == 0 || v.vid > 4094 {
            return bad(format!(
                "vlan_access {}: VLAN id {} is out of range 1..=4094",
                v.dev, v.vid
            ));
        }
    }
    for d in &tb.dhcp_server {
        match split_dev(&d.dev) {
            Some((ns, _)) if names.contains(&ns) && !hosts.contains(&ns) => {}
            _ => {
                return bad(format!(
                    "dhcp_server dev {:?} must be NAMESPACE/IFNAME with a known namespace that \
                     is not a uvlan host",
                    d.dev
                ))
            }
        }
        let v4 = |a: &str| a.parse::<std::net::Ipv4Addr>().ok();
        let (Some(first), Some(last)) = (v4(&d.range[0]), v4(&d.range[1])) else {
            return bad(format!(
                "dhcp_server {}: range {:?} must be two IPv4 addresses",
                d.dev, d.range
            ));
        };
        if first > last {
            return bad(format!(
                "dhcp_server {}: range starts at {first}, after its end {last}",
                d.dev
            ));
        }
        if !(8..=30).contains(&d.prefix_len) {
            return bad(format!(
                "dhcp_server {}: prefix_len {} is out of range 8..=30",
                d.dev, d.prefix_len
            ));
        }
        let mask = u32::MAX << (32 - u32::from(d.prefix_len));
        if u32::from(first) & mask != u32::from(last) & mask {
            return bad(format!(
                "dhcp_server {}: {first} and {last} are not in one /{} subnet",
                d.dev, d.prefix_len
            ));
        }
        for a in d.router.iter().chain(&d.dns) {
            if v4(a).is_none() {
                return bad(format!(
                    "dhcp_server {}: {a:?} is not an IPv4 address",
                    d.dev
                ));
            }
        }
        if d.lease_secs < 120 {
            return bad(format!(
                "dhcp_server {}: lease_secs {} is below dnsmasq's minimum of 120",
                d.dev, d.lease_secs
            ));
        }
    }
    for n in &tb.network {
        if let Err(m) = tb.default_host(&n.host) {
            return bad(format!("network `{}`: {m}", n.create));
        }
        match uvlan_args(&n.create) {
            Ok(a) if a.len() >= 3 && a[0] == "network" && a[1] == "create" => {}
            Ok(_) => {
                return bad(format!(
                    "network `{}` must be `network create ... NAME`",
                    n.create
                ))
            }
            Err(e) => return bad(format!("network `{}`: {e}", n.create)),
        }
    }
    for e in &tb.endpoint {
        if let Err(m) = tb.host_of_network(&e.network, e.host.as_deref()) {
            return bad(format!("endpoint {}: {m}", e.name));
        }
    }
    let stages = tb.stages();
    for st in &stages {
        for a in st.run {
            match (&a.ns, &a.cmd, &a.uvlan) {
                (Some(ns), Some(_), None) if names.contains(&ns.as_str()) => {}
                (Some(ns), Some(_), None) => {
                    return bad(format!("command {}: no namespace {ns:?}", a.describe()))
                }
                (None, None, Some(u)) => {
                    if let Err(m) = tb.default_host(&a.host) {
                        return bad(format!("command uvlan {u}: {m}"));
                    }
                    if let Err(m) = uvlan_args(u) {
                        return bad(format!("command uvlan {u}: {m}"));
                    }
                }
                _ => {
                    return bad(format!(
                        "command {}: give either `ns` and `cmd`, or `uvlan` (and `host`)",
                        a.describe()
                    ))
                }
            }
        }
        for m in st.matrix {
            for n in m.nodes.iter().chain(m.groups.iter().flatten()) {
                if !names.contains(&n.as_str()) {
                    return bad(format!("matrix node {n:?}: no such endpoint or namespace"));
                }
            }
        }
        for c in &st.all_checks() {
            if c.kernel == Some(c.expect) {
                return bad(format!(
                    "check {} -> {}: `kernel` marks a divergence, it must differ from `expect`",
                    c.from, c.to
                ));
            }
            if !names.contains(&c.from.as_str()) {
                return bad(format!(
                    "check from {:?}: no such endpoint or namespace",
                    c.from
                ));
            }
            let target = c.to.strip_suffix("/6").unwrap_or(&c.to);
            if target.parse::<IpAddr>().is_err() && !names.contains(&target) {
                return bad(format!(
                    "check to {:?}: not an address, endpoint or namespace",
                    c.to
                ));
            }
        }
        for c in st.capture {
            if !names.contains(&c.ns.as_str()) {
                return bad(format!("capture on {}/{}: no such namespace", c.ns, c.dev));
            }
            if c.filter.trim().is_empty() {
                return bad(format!("capture on {}/{}: empty filter", c.ns, c.dev));
            }
        }
        let mut recorded: Vec<(String, &str)> = Vec::new();
        for c in st.uvlan_capture {
            let host = match tb.host_of_network(&c.network, c.host.as_deref()) {
                Ok(h) => h,
                Err(m) => return bad(format!("uvlan_capture of network {:?}: {m}", c.network)),
            };
            for e in &c.endpoints {
                if !tb
                    .endpoint
                    .iter()
                    .any(|x| &x.name == e && x.network == c.network)
                {
                    return bad(format!(
                        "uvlan_capture of network {:?}: no [[endpoint]] {e:?} on that network",
                        c.network
                    ));
                }
            }
            if c.min_records == Some(0) {
                return bad(format!(
                    "uvlan_capture of network {:?}: min_records = 0 checks nothing",
                    c.network
                ));
            }
            if recorded.contains(&(host.clone(), c.network.as_str())) {
                return bad(format!(
                    "uvlan_capture of network {:?}: captured twice in one stage (one file per \
                     network and stage)",
                    c.network
                ));
            }
            recorded.push((host, &c.network));
        }
    }
    if !stages.iter().any(Stage::checks_something) {
        return bad("a testbed needs at least one check, capture or command expectation".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lab::{parse, Expect};

    const MINI: &str = r#"
name = "x"
title = "x"
[[endpoint]]
name = "c1"
network = "n"
[[network]]
create = "network create -d ipvlan n"
"#;

    #[test]
    fn validation_names_what_is_wrong() {
        let with = |extra: &str| parse("t", &format!("{MINI}{extra}"));
        let e = with("[[check]]\nfrom = \"c9\"\nto = \"c1\"\nexpect = \"reach\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("c9"), "{e}");
        assert!(toml::from_str::<Testbed>("name='x'\ntitle='y'\nbogus=1").is_err());
        // No checks at all.
        let e = with("").unwrap_err().to_string();
        assert!(e.contains("at least one check"), "{e}");
        // A link to an unknown namespace.
        let e = with("[[link]]\na = \"host/eth0\"\nb = \"sw/p1\"\n[[check]]\nfrom = \"c1\"\nto = \"host\"\nexpect = \"reach\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("sw/p1"), "{e}");
        // A bridge port that is not a link end.
        let e = with("[[namespace]]\nname = \"sw\"\n[[bridge]]\nns = \"sw\"\nname = \"br0\"\nports = [\"p9\"]\n[[check]]\nfrom = \"c1\"\nto = \"sw\"\nexpect = \"reach\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("p9"), "{e}");
        // A bad VID.
        let e = with("[[vlan_access]]\ndev = \"c1/eth9\"\nvid = 4095\n[[check]]\nfrom = \"c1\"\nto = \"host\"\nexpect = \"reach\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("4095"), "{e}");
        // An endpoint on a network nobody creates.
        let e = parse("t", "name='x'\ntitle='x'\n[[endpoint]]\nname='c1'\nnetwork='nope'\n[[check]]\nfrom='c1'\nto='host'\nexpect='reach'\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("nope"), "{e}");
        // A command with neither cmd nor uvlan.
        let e = with("[[run]]\nns = \"c1\"\nexpect = [\"x\"]\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("either"), "{e}");
        // A uvlan capture of an unknown network, or of an endpoint of another network.
        let e = with("[[uvlan_capture]]\nnetwork = \"nope\"\nmin_records = 1\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("uvlan_capture") && e.contains("nope"), "{e}");
        let e = with("[[uvlan_capture]]\nnetwork = \"n\"\nendpoints = [\"c9\"]\nmin_records = 1\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("c9"), "{e}");
        let e = with("[[uvlan_capture]]\nnetwork = \"n\"\n[[uvlan_capture]]\nnetwork = \"n\"\nexpect = [\"drop\"]\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("twice"), "{e}");
        assert!(toml::from_str::<Testbed>(
            "name='x'\ntitle='y'\n[[uvlan_capture]]\nnetwork='n'\nbogus=1"
        )
        .is_err());
        // A uvlan capture with an expectation is a check; a bare one only records.
        let tb = with("[[uvlan_capture]]\nnetwork = \"n\"\nendpoints = [\"c1\"]\ndrops = true\nexpect = [\"verdict: drop\"]\n")
            .unwrap();
        assert!(tb.uvlan_capture[0].drops && tb.uvlan_capture[0].is_check());
        let e = with("[[uvlan_capture]]\nnetwork = \"n\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("at least one check"), "{e}");
        // A capture alone is a check.
        with("[[capture]]\nns = \"host\"\ndev = \"eth0\"\nfilter = \"icmp\"\nexpect = \"none\"\n")
            .unwrap();
    }

    #[test]
    fn dhcp_servers_are_checked() {
        let check = "[[check]]\nfrom = \"c1\"\nto = \"gw\"\nexpect = \"reach\"\n";
        let with = |server: &str| {
            parse(
                "t",
                &format!("{MINI}[[namespace]]\nname = \"gw\"\n[[dhcp_server]]\n{server}\n{check}"),
            )
        };
        assert!(with("dev = \"gw/p0\"\nrange = [\"192.0.2.100\", \"192.0.2.150\"]").is_ok());
        for (bad, says) in [
            ("dev = \"nowhere/p0\"\nrange = [\"192.0.2.100\", \"192.0.2.150\"]", "known namespace"),
            ("dev = \"host/eth0\"\nrange = [\"192.0.2.100\", \"192.0.2.150\"]", "not a uvlan host"),
            ("dev = \"gw/p0\"\nrange = [\"192.0.2.150\", \"192.0.2.100\"]", "after its end"),
            ("dev = \"gw/p0\"\nrange = [\"192.0.2.100\", \"198.51.100.1\"]", "one /24 subnet"),
            ("dev = \"gw/p0\"\nrange = [\"192.0.2.100\", \"x\"]", "two IPv4"),
            ("dev = \"gw/p0\"\nrange = [\"192.0.2.100\", \"192.0.2.150\"]\nrouter = \"2001:db8::1\"", "not an IPv4"),
            ("dev = \"gw/p0\"\nrange = [\"192.0.2.100\", \"192.0.2.150\"]\nlease_secs = 60", "minimum"),
        ] {
            let e = with(bad).unwrap_err().to_string();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }

    #[test]
    fn two_hosts_need_explicit_hosts_for_shared_network_names() {
        let base = r#"
name = "x"
title = "x"
[[host]]
name = "d1"
[[host]]
name = "d2"
[[network]]
host = "d1"
create = "network create -d macvlan net"
[[network]]
host = "d2"
create = "network create -d macvlan net"
[[check]]
from = "d1"
to = "d2"
expect = "reach"
"#;
        let e = parse(
            "t",
            &format!("{base}[[endpoint]]\nname='w'\nnetwork='net'\n"),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("several hosts"), "{e}");
        let tb = parse(
            "t",
            &format!("{base}[[endpoint]]\nname='w'\nnetwork='net'\nhost='d2'\n"),
        )
        .unwrap();
        assert_eq!(tb.host_names(), vec!["d1", "d2"]);
        assert_eq!(
            tb.host_of_network("net", Some("d2")).unwrap(),
            "d2".to_string()
        );
        // A network without a host in a two-host testbed is ambiguous.
        let e = parse("t", &base.replace("host = \"d1\"\ncreate", "create"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("several hosts"), "{e}");
    }

    #[test]
    fn matrix_is_one_or_many_and_explicit_checks_override_cells() {
        let one = parse(
            "t",
            &format!("{MINI}[[endpoint]]\nname='c2'\nnetwork='n'\n[matrix]\nnodes=['c1','c2']\ngroups=[['c1','c2']]\n"),
        )
        .unwrap();
        assert_eq!(one.matrix.len(), 1);
        assert_eq!(one.all_checks().len(), 2);
        let many = parse(
            "t",
            &format!(
                "{MINI}[[endpoint]]\nname='c2'\nnetwork='n'\n\
                 [[matrix]]\nnodes=['c1','c2']\ngroups=[['c1','c2']]\n\
                 [[matrix]]\nnodes=['c1','c2']\nipv6=true\n\
                 [[check]]\nfrom='c1'\nto='c2/6'\nexpect='reach'\n"
            ),
        )
        .unwrap();
        assert_eq!(many.matrix.len(), 2);
        let checks = many.all_checks();
        assert_eq!(checks.len(), 4);
        let c = checks
            .iter()
            .find(|c| c.from == "c1" && c.to == "c2/6")
            .unwrap();
        assert_eq!(c.expect, Expect::Reach, "the explicit check wins");
        let c = checks
            .iter()
            .find(|c| c.from == "c2" && c.to == "c1/6")
            .unwrap();
        assert_eq!(c.expect, Expect::Unreachable);
        // A bad matrix entry keeps a useful message.
        let e = parse("t", &format!("{MINI}[matrix]\nnodes=['c1']\nbogus=1\n"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("bogus"), "{e}");
    }

    #[test]
    fn steps_are_stages_with_their_own_checks() {
        let tb = parse(
            "t",
            &format!(
                "{MINI}[[namespace]]\nname='up'\n\
                 [[step]]\ntitle='route added'\n\
                 [[step.run]]\nns='up'\ncmd='ip route add 10.0.0.0/8 dev lo'\n\
                 [[step.check]]\nfrom='up'\nto='c1'\nexpect='reach'\n\
                 [[step.capture]]\nns='up'\ndev='lo'\nfilter='icmp'\nexpect='seen'\n\
                 [[step.uvlan_capture]]\nnetwork='n'\nmin_records=2\n"
            ),
        )
        .unwrap();
        let st = tb.stages();
        assert_eq!(st.len(), 2);
        assert_eq!(st[0].title, "as built");
        assert!(!st[0].checks_something());
        assert_eq!(st[1].title, "route added");
        assert_eq!(st[1].all_checks().len(), 1);
        assert_eq!(st[1].capture.len(), 1);
        assert_eq!(st[1].uvlan_capture[0].min_records, Some(2));
        assert!(st[0].uvlan_capture.is_empty());
        assert!(!st[1].run[0].is_check());
    }
}
