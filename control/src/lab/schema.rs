//! The testbed file as data: the TOML types (serde), the stages a testbed runs, and the
//! small parsers its strings need (`uvlan` argument words, `NAMESPACE/IFNAME`).

use serde::{Deserialize, Deserializer};

/// The host name used when a testbed declares no `[[host]]`.
pub const DEFAULT_HOST: &str = "host";

/// A DHCP server: dnsmasq (DHCP only, no DNS) on one device of the testbed, started after
/// the setup commands and stopped when the lab ends.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DhcpServerSpec {
    /// `NAMESPACE/IFNAME` it serves (the device needs an address in the range's subnet,
    /// given by a setup command).
    pub dev: String,
    /// The first and last address it hands out.
    pub range: [String; 2],
    /// The subnet mask's length (default 24).
    #[serde(default = "default_prefix_len")]
    pub prefix_len: u8,
    /// The router it announces (option 3), if any.
    #[serde(default)]
    pub router: Option<String>,
    /// The DNS servers it announces (option 6).
    #[serde(default)]
    pub dns: Vec<String>,
    /// The lease time in seconds (default 3600; dnsmasq's minimum is 120).
    #[serde(default = "default_lease_secs")]
    pub lease_secs: u32,
}

fn default_prefix_len() -> u8 {
    24
}

fn default_lease_secs() -> u32 {
    3600
}

/// A testbed file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Testbed {
    /// Short name (also the file stem).
    pub name: String,
    /// One-line title.
    pub title: String,
    /// The seed document and example it reproduces.
    #[serde(default)]
    pub seed: String,
    /// What the lab shows, for the reader.
    #[serde(default)]
    pub description: String,
    /// Keep the kernel's default TX VLAN offload on the veths the lab creates. By default it
    /// is turned off so that 802.1Q tags are written into the frames as on a physical wire
    /// (see "How a lab runs" in the [`lab`](super) module docs).
    #[serde(default)]
    pub veth_tx_vlan_offload: bool,
    /// uvlan hosts (a namespace and a daemon each). Empty: one host named `host`.
    #[serde(default)]
    pub host: Vec<HostSpec>,
    /// Other namespaces (an entry named like a host adds setup commands to that host).
    #[serde(default)]
    pub namespace: Vec<NamespaceSpec>,
    /// veth pairs between namespaces.
    #[serde(default)]
    pub link: Vec<LinkSpec>,
    /// Linux bridges ("switches").
    #[serde(default)]
    pub bridge: Vec<BridgeSpec>,
    /// VLAN access ports on devices of the testbed.
    #[serde(default)]
    pub vlan_access: Vec<VlanAccessSpec>,
    /// DHCP servers (dnsmasq) on the LAN side, for networks with `--ipam-driver dhcp`.
    #[serde(default)]
    pub dhcp_server: Vec<DhcpServerSpec>,
    /// `uvlan` commands that create networks, in order.
    #[serde(default)]
    pub network: Vec<NetworkSpec>,
    /// Endpoints: one namespace each, connected to a network.
    #[serde(default)]
    pub endpoint: Vec<EndpointSpec>,
    /// Stage 1: commands.
    #[serde(default)]
    pub run: Vec<ActionSpec>,
    /// Stage 1: explicit reachability checks.
    #[serde(default)]
    pub check: Vec<CheckSpec>,
    /// Stage 1: reachability matrices (`[matrix]` or `[[matrix]]`).
    #[serde(default, deserialize_with = "one_or_many")]
    pub matrix: Vec<MatrixSpec>,
    /// Stage 1: captures.
    #[serde(default)]
    pub capture: Vec<CaptureSpec>,
    /// Stage 1: uvlan captures (pcapng with the engine's verdicts).
    #[serde(default)]
    pub uvlan_capture: Vec<UvlanCaptureSpec>,
    /// Later stages.
    #[serde(default)]
    pub step: Vec<StepSpec>,
}

/// Accepts a single table or an array of tables.
fn one_or_many<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: serde::de::DeserializeOwned,
{
    let v = toml::Value::deserialize(d)?;
    match v {
        toml::Value::Array(items) => items
            .into_iter()
            .map(|i| i.try_into::<T>().map_err(serde::de::Error::custom))
            .collect(),
        other => Ok(vec![other
            .try_into::<T>()
            .map_err(serde::de::Error::custom)?]),
    }
}

/// A uvlan host: a namespace running its own daemon.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostSpec {
    /// Name (its namespace is `<prefix><name>`).
    pub name: String,
    /// Shell commands run inside it after links, bridges and access ports exist, before its
    /// daemon starts.
    #[serde(default)]
    pub setup: Vec<String>,
}

/// A namespace of the testbed.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NamespaceSpec {
    /// Name inside the testbed.
    pub name: String,
    /// Shell commands run inside it after the links, bridges and access ports exist.
    #[serde(default)]
    pub setup: Vec<String>,
}

/// A veth pair: `ns/ifname` on both ends.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkSpec {
    /// One end.
    pub a: String,
    /// The other end.
    pub b: String,
}

/// A Linux bridge in a namespace: STP off, multicast snooping off, no VLAN filtering (so
/// tagged frames are forwarded as they are).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BridgeSpec {
    /// The namespace.
    pub ns: String,
    /// The bridge device name.
    pub name: String,
    /// Link ends in `ns` to enslave.
    pub ports: Vec<String>,
    /// Ports with hairpin mode on (frames may leave by the port they came in on).
    #[serde(default)]
    pub hairpin: Vec<String>,
}

/// A VLAN access port (see [`uvlan_dataplane::port::vlan_access`]).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VlanAccessSpec {
    /// `NAMESPACE/IFNAME`.
    pub dev: String,
    /// The VLAN id (1..=4094).
    pub vid: u16,
}

/// A network to create.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkSpec {
    /// The host whose daemon creates it (default: the only host).
    #[serde(default)]
    pub host: Option<String>,
    /// The `uvlan` arguments, e.g. `network create -d ipvlan ... NAME` (a leading `uvlan`
    /// is allowed; quotes and backslash-newlines are handled as a shell would).
    pub create: String,
}

impl NetworkSpec {
    /// The network's name: the last word of the create command.
    pub fn name(&self) -> Option<String> {
        split_args(&self.create).ok()?.pop()
    }
}

/// An endpoint: a namespace connected to a network.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointSpec {
    /// Name (its namespace is `<prefix><name>`).
    pub name: String,
    /// The network.
    pub network: String,
    /// The host holding the network (default: the one host that has a network of that name).
    #[serde(default)]
    pub host: Option<String>,
    /// `--ip`.
    #[serde(default)]
    pub ip: Option<String>,
    /// `--ip6`.
    #[serde(default)]
    pub ip6: Option<String>,
    /// `--mac-address`.
    #[serde(default)]
    pub mac: Option<String>,
    /// Shell commands run inside after the connect.
    #[serde(default)]
    pub setup: Vec<String>,
}

/// A command run during a stage. Without `expect`, `absent` or `fails` it is part of the
/// setup and a failure stops the lab; with them it is a check.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActionSpec {
    /// The namespace for `cmd`.
    #[serde(default)]
    pub ns: Option<String>,
    /// A shell command run in `ns`.
    #[serde(default)]
    pub cmd: Option<String>,
    /// `uvlan` arguments (run against `host`'s daemon).
    #[serde(default)]
    pub uvlan: Option<String>,
    /// The host for `uvlan` (default: the only host).
    #[serde(default)]
    pub host: Option<String>,
    /// Substrings the output (stdout and stderr) must contain.
    #[serde(default)]
    pub expect: Vec<String>,
    /// Substrings the output must not contain.
    #[serde(default)]
    pub absent: Vec<String>,
    /// The command is expected to fail (non-zero exit).
    #[serde(default)]
    pub fails: bool,
    /// Print the output.
    #[serde(default)]
    pub show: bool,
}

impl ActionSpec {
    /// Whether the action is a check (rather than setup).
    pub fn is_check(&self) -> bool {
        !self.expect.is_empty() || !self.absent.is_empty() || self.fails
    }

    pub(super) fn describe(&self) -> String {
        match (&self.cmd, &self.uvlan) {
            (Some(c), _) => format!("[{}] {c}", self.ns.as_deref().unwrap_or("?")),
            (None, Some(u)) => match &self.host {
                Some(h) => format!("[{h}] uvlan {u}"),
                None => format!("uvlan {u}"),
            },
            (None, None) => "(nothing)".into(),
        }
    }
}

/// What a capture must show.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CaptureExpect {
    /// At least one frame matches the filter.
    Seen,
    /// No frame matches.
    None,
}

/// A tcpdump capture on a device for the duration of a stage.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaptureSpec {
    /// The namespace.
    pub ns: String,
    /// The device.
    pub dev: String,
    /// A pcap filter expression (placeholders allowed).
    pub filter: String,
    /// What the capture must show.
    pub expect: CaptureExpect,
    /// What the capture demonstrates (printed).
    #[serde(default)]
    pub title: String,
}

/// A `uvlan capture` of a network for the duration of a stage, through the host's daemon
/// (the API request `uvlan capture` makes): pcapng with each frame's verdict as its comment,
/// written to `stage<N>-<network>.pcapng` (`-<host>` added when the testbed has several
/// hosts) in the lab's state directory, or in the directory `uvlan lab --out DIR` names.
/// With `expect`, `absent` or `min_records` it is also a check.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UvlanCaptureSpec {
    /// The network.
    pub network: String,
    /// The host holding the network (default: the one host that has a network of that name).
    #[serde(default)]
    pub host: Option<String>,
    /// Endpoints of the testbed on that network (default: all of the network's ports).
    #[serde(default)]
    pub endpoints: Vec<String>,
    /// Also the network's wire (`uvlan capture --wire`).
    #[serde(default)]
    pub wire: bool,
    /// Also the frames the dataplane dropped (`uvlan capture --drops`).
    #[serde(default)]
    pub drops: bool,
    /// Substrings that some record's comment (its verdict) must contain (placeholders
    /// allowed, e.g. `verdict: forward to {ns:c2}`).
    #[serde(default)]
    pub expect: Vec<String>,
    /// Substrings that no record's comment may contain.
    #[serde(default)]
    pub absent: Vec<String>,
    /// At least this many records.
    #[serde(default)]
    pub min_records: Option<u64>,
    /// What the capture demonstrates (printed).
    #[serde(default)]
    pub title: String,
}

impl UvlanCaptureSpec {
    /// Whether the capture is a check (rather than only a recording).
    pub fn is_check(&self) -> bool {
        !self.expect.is_empty() || !self.absent.is_empty() || self.min_records.is_some()
    }
}

/// A later stage: commands, then checks.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepSpec {
    /// What changes in this stage.
    pub title: String,
    /// Commands.
    #[serde(default)]
    pub run: Vec<ActionSpec>,
    /// Explicit reachability checks.
    #[serde(default)]
    pub check: Vec<CheckSpec>,
    /// Reachability matrices.
    #[serde(default, deserialize_with = "one_or_many")]
    pub matrix: Vec<MatrixSpec>,
    /// Captures.
    #[serde(default)]
    pub capture: Vec<CaptureSpec>,
    /// uvlan captures.
    #[serde(default)]
    pub uvlan_capture: Vec<UvlanCaptureSpec>,
}

/// A reachability matrix: every ordered pair of nodes is pinged (IPv4, or IPv6 with
/// `ipv6 = true`); two nodes reach each other exactly when one group holds both.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MatrixSpec {
    /// Endpoints or namespaces, in row/column order.
    pub nodes: Vec<String>,
    /// Groups of mutually reachable nodes.
    #[serde(default)]
    pub groups: Vec<Vec<String>>,
    /// Ping the nodes' IPv6 addresses instead of IPv4.
    #[serde(default)]
    pub ipv6: bool,
}

/// Whether a check expects an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Expect {
    /// The ping is answered.
    Reach,
    /// No answer.
    Unreachable,
}

/// One reachability check (ICMP echo).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckSpec {
    /// An endpoint or namespace of the testbed.
    pub from: String,
    /// An endpoint (`c2`, or `c2/6` for its IPv6), a namespace, or a literal address.
    pub to: String,
    /// The expected outcome with uvlan.
    pub expect: Expect,
    /// A known divergence: what the kernel driver (and the seed) give where uvlan knowingly
    /// differs. Shown as `*` in the matrix; must differ from `expect`.
    #[serde(default)]
    pub kernel: Option<Expect>,
}

/// One stage as the runner sees it.
#[derive(Debug, Clone)]
pub struct Stage<'a> {
    /// Title ("as built" for the first).
    pub title: &'a str,
    /// Commands.
    pub run: &'a [ActionSpec],
    /// Explicit checks.
    pub check: &'a [CheckSpec],
    /// Matrices.
    pub matrix: &'a [MatrixSpec],
    /// Captures.
    pub capture: &'a [CaptureSpec],
    /// uvlan captures.
    pub uvlan_capture: &'a [UvlanCaptureSpec],
}

impl Stage<'_> {
    /// The matrices' checks, then the explicit ones; an explicit check replaces the matrix
    /// check of the same ordered pair.
    pub fn all_checks(&self) -> Vec<CheckSpec> {
        let mut v: Vec<CheckSpec> = Vec::new();
        for m in self.matrix {
            for a in &m.nodes {
                for b in &m.nodes {
                    if a == b {
                        continue;
                    }
                    let together = m.groups.iter().any(|g| g.contains(a) && g.contains(b));
                    v.push(CheckSpec {
                        from: a.clone(),
                        to: if m.ipv6 { format!("{b}/6") } else { b.clone() },
                        expect: if together {
                            Expect::Reach
                        } else {
                            Expect::Unreachable
                        },
                        kernel: None,
                    });
                }
            }
        }
        for c in self.check {
            match v.iter_mut().find(|x| x.from == c.from && x.to == c.to) {
                Some(slot) => *slot = c.clone(),
                None => v.push(c.clone()),
            }
        }
        v
    }

    /// Whether the stage checks anything.
    pub fn checks_something(&self) -> bool {
        !self.all_checks().is_empty()
            || !self.capture.is_empty()
            || self.uvlan_capture.iter().any(UvlanCaptureSpec::is_check)
            || self.run.iter().any(ActionSpec::is_check)
    }
}

impl Testbed {
    /// The host names (`host` when none is declared).
    pub fn host_names(&self) -> Vec<&str> {
        if self.host.is_empty() {
            vec![DEFAULT_HOST]
        } else {
            self.host.iter().map(|h| h.name.as_str()).collect()
        }
    }

    /// Stage 1 (the top-level checks) followed by the steps.
    pub fn stages(&self) -> Vec<Stage<'_>> {
        let mut v = vec![Stage {
            title: "as built",
            run: &self.run,
            check: &self.check,
            matrix: &self.matrix,
            capture: &self.capture,
            uvlan_capture: &self.uvlan_capture,
        }];
        for s in &self.step {
            v.push(Stage {
                title: &s.title,
                run: &s.run,
                check: &s.check,
                matrix: &s.matrix,
                capture: &s.capture,
                uvlan_capture: &s.uvlan_capture,
            });
        }
        v
    }

    /// Every check of every stage (matrix checks included).
    pub fn all_checks(&self) -> Vec<CheckSpec> {
        self.stages().iter().flat_map(Stage::all_checks).collect()
    }

    pub(super) fn host_of_network(&self, net: &str, host: Option<&str>) -> Result<String, String> {
        let hosts = self.host_names();
        let holders: Vec<String> = self
            .network
            .iter()
            .filter(|n| n.name().as_deref() == Some(net))
            .map(|n| n.host.clone().unwrap_or_else(|| hosts[0].to_string()))
            .collect();
        match host {
            Some(h) if holders.iter().any(|x| x == h) => Ok(h.to_string()),
            Some(h) => Err(format!("host {h:?} creates no network {net:?}")),
            None => match holders.as_slice() {
                [one] => Ok(one.clone()),
                [] => Err(format!("no [[network]] creates {net:?}")),
                _ => Err(format!(
                    "several hosts create a network {net:?}: say which with `host = ...`"
                )),
            },
        }
    }

    pub(super) fn default_host(&self, host: &Option<String>) -> Result<String, String> {
        let hosts = self.host_names();
        match host {
            Some(h) if hosts.contains(&h.as_str()) => Ok(h.clone()),
            Some(h) => Err(format!("no host {h:?} (hosts: {})", hosts.join(", "))),
            None if hosts.len() == 1 => Ok(hosts[0].to_string()),
            None => Err(format!(
                "this testbed has several hosts ({}): say which with `host = ...`",
                hosts.join(", ")
            )),
        }
    }
}

/// Splits a command line into words as a POSIX shell would (with [`shlex`]): blanks (space,
/// tab, newline) separate, single quotes keep everything literally, double quotes group and a
/// backslash in them escapes only `$`, `` ` ``, `"`, `\` and a newline, a backslash outside
/// quotes escapes the next character, a backslash before a newline joins lines, and `#` at the
/// start of a word begins a comment. No expansion of any kind. Errs on an unclosed quote or a
/// trailing backslash.
pub fn split_args(s: &str) -> Result<Vec<String>, String> {
    shlex::split(&join_continuations(s))
        .ok_or_else(|| "an unclosed quote or a trailing backslash".to_string())
}

/// Removes line continuations (a backslash before a newline, not inside single quotes and not
/// itself escaped), as a shell does before it splits words. [`shlex`] removes them while it
/// splits, but one that stands alone between blanks (`create \⏎  --subnet=...`) becomes an
/// empty word there; joining first keeps such a command as the shell reads it.
fn join_continuations(s: &str) -> String {
    let (mut out, mut single, mut double) = (String::with_capacity(s.len()), false, false);
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' if !single => match chars.next() {
                Some('\n') => {}
                Some(n) => {
                    out.push(c);
                    out.push(n);
                }
                None => out.push(c),
            },
            '\'' if !double => {
                single = !single;
                out.push(c);
            }
            '"' if !single => {
                double = !double;
                out.push(c);
            }
            c => out.push(c),
        }
    }
    out
}

/// `uvlan` arguments from a testbed string: shell-split, a leading `uvlan` dropped.
pub(super) fn uvlan_args(s: &str) -> Result<Vec<String>, String> {
    let mut v = split_args(s)?;
    if v.first().map(String::as_str) == Some("uvlan") {
        v.remove(0);
    }
    Ok(v)
}

/// `NAMESPACE/IFNAME` split in two, when both parts are there and the name fits `IFNAMSIZ`.
pub(super) fn split_dev(s: &str) -> Option<(&str, &str)> {
    match s.split_once('/') {
        Some((ns, ifn)) if !ns.is_empty() && !ifn.is_empty() && ifn.len() <= 15 => Some((ns, ifn)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_args_handles_quotes_and_continuations() {
        assert_eq!(
            split_args("network create -d macvlan \\\n  --aux-address=\"my-router=192.168.32.129\" 'a b' c\\ d").unwrap(),
            vec![
                "network",
                "create",
                "-d",
                "macvlan",
                "--aux-address=my-router=192.168.32.129",
                "a b",
                "c d"
            ]
        );
        assert_eq!(split_args("  ").unwrap(), Vec::<String>::new());
        assert_eq!(split_args("''").unwrap(), vec![""]);
        assert!(split_args("\"open").is_err());
        assert!(split_args("'open").is_err());
        assert!(split_args("x\\").is_err());
        // A line continuation alone between blanks is no word; inside single quotes it stays,
        // and an escaped backslash before a newline is no continuation.
        assert_eq!(split_args("a \\\n b").unwrap(), vec!["a", "b"]);
        assert_eq!(split_args("'a\\\nb'").unwrap(), vec!["a\\\nb"]);
        assert_eq!(split_args("a\\\\\nb").unwrap(), vec!["a\\", "b"]);
        assert_eq!(split_args("\"a\\\nb\"").unwrap(), vec!["ab"]);
        // As in a shell: a backslash inside double quotes escapes only `$`, `` ` ``, `"`, `\`
        // and a newline, and `#` starts a comment at the start of a word only.
        assert_eq!(
            split_args(r#"a "b\"c\$d\e" f#g # h"#).unwrap(),
            vec!["a", r#"b"c$d\e"#, "f#g"]
        );
        assert_eq!(
            uvlan_args("uvlan network ls").unwrap(),
            vec!["network", "ls"]
        );
        let n = NetworkSpec {
            host: None,
            create: "network create -d ipvlan \\\n --subnet=192.168.1.0/24 db_net".into(),
        };
        assert_eq!(n.name().as_deref(), Some("db_net"));
    }
}
