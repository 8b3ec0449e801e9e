//! Per-namespace sysctls under `/proc/sys`, written from a thread inside the namespace.

use std::fs;
use std::io::Write;
use std::path::PathBuf;

use super::link::check_ifname;
use super::{Netns, NetnsError, Result};

fn sysctl_path(key: &str) -> Result<PathBuf> {
    let bad = key.is_empty()
        || key.starts_with('/')
        || key
            .split('/')
            .any(|c| c.is_empty() || c == "." || c == "..");
    if bad {
        return Err(NetnsError::InvalidArgument(format!(
            "sysctl key {key:?}: use a relative path below /proc/sys such as \
             \"net/ipv6/conf/eth0/disable_ipv6\""
        )));
    }
    Ok(PathBuf::from("/proc/sys").join(key))
}

/// Writes `value` to `/proc/sys/KEY` inside `ns` (KEY like `net/ipv4/conf/eth0/arp_notify`).
///
/// The file is opened and written on a thread that entered `ns`: net sysctls resolve
/// against the opening thread's namespace.
pub fn sysctl_write(ns: &Netns, key: &str, value: &str) -> Result<()> {
    let path = sysctl_path(key)?;
    let value = value.to_string();
    ns.run(move || -> std::io::Result<()> {
        let mut f = fs::OpenOptions::new().write(true).open(&path)?;
        f.write_all(value.as_bytes())
    })?
    .map_err(|source| NetnsError::Sysctl {
        key: key.to_string(),
        ns: ns.label().to_string(),
        source,
    })
}

/// Reads `/proc/sys/KEY` inside `ns` (trailing newline removed).
pub fn sysctl_read(ns: &Netns, key: &str) -> Result<String> {
    let path = sysctl_path(key)?;
    ns.run(move || fs::read_to_string(&path))?
        .map(|s| s.trim_end().to_string())
        .map_err(|source| NetnsError::Sysctl {
            key: key.to_string(),
            ns: ns.label().to_string(),
            source,
        })
}

/// `net.ipv6.conf.IF.disable_ipv6` inside `ns`.
pub fn set_ipv6_disabled(ns: &Netns, ifname: &str, disabled: bool) -> Result<()> {
    check_ifname(ifname)?;
    let v = if disabled { "1" } else { "0" };
    sysctl_write(ns, &format!("net/ipv6/conf/{ifname}/disable_ipv6"), v)
}

/// `net.ipv6.conf.IF.accept_dad` inside `ns` (0 = no DAD, 1 = DAD, 2 = DAD and disable
/// IPv6 on a duplicate link-local).
pub fn set_accept_dad(ns: &Netns, ifname: &str, value: u8) -> Result<()> {
    check_ifname(ifname)?;
    if value > 2 {
        return Err(NetnsError::InvalidArgument(format!(
            "accept_dad {value}: use 0, 1 or 2"
        )));
    }
    sysctl_write(
        ns,
        &format!("net/ipv6/conf/{ifname}/accept_dad"),
        &value.to_string(),
    )
}

/// `net.ipv4.conf.IF.arp_notify` inside `ns` (gratuitous ARP when the link comes up or its
/// MAC changes; Docker sets it on endpoints).
pub fn set_arp_notify(ns: &Netns, ifname: &str, on: bool) -> Result<()> {
    check_ifname(ifname)?;
    let v = if on { "1" } else { "0" };
    sysctl_write(ns, &format!("net/ipv4/conf/{ifname}/arp_notify"), v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_cannot_escape_proc_sys() {
        for bad in ["", "/etc/passwd", "net/../../etc", "net//x", "./net"] {
            assert!(sysctl_path(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            sysctl_path("net/ipv4/ip_forward").unwrap(),
            PathBuf::from("/proc/sys/net/ipv4/ip_forward")
        );
    }
}
