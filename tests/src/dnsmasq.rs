//! A real DHCP server for the tests of `--ipam-driver dhcp` and Docker's `uvlan.ipam=dhcp`:
//! dnsmasq serving DHCP only (no DNS) in a test namespace, with its lease file and log in
//! the test's state directory; killed on drop.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running dnsmasq (see [`Dnsmasq::start`]); killed on drop.
pub struct Dnsmasq {
    child: Child,
    leases: PathBuf,
    log: PathBuf,
}

/// Where and what a [`Dnsmasq`] serves.
#[derive(Debug, Clone, Copy)]
pub struct DnsmasqOptions<'a> {
    /// The namespace it runs in (its full name).
    pub ns: &'a str,
    /// The interface it binds to, in `ns`.
    pub dev: &'a str,
    /// The directory of its lease file and log (`TAG.leases`, `TAG.log`).
    pub dir: &'a Path,
    /// The name of its files.
    pub tag: &'a str,
    /// The addresses it hands out (`FIRST,LAST`, in a /24), leased for 2 minutes.
    pub range: &'a str,
    /// The router it announces (option 3).
    pub router: &'a str,
    /// More dnsmasq arguments (other options, `--dhcp-host`, `--no-ping`, ...).
    pub extra: &'a [&'a str],
}

impl Dnsmasq {
    /// Starts dnsmasq as `opts` says and waits (10 s at most) until it has logged its DHCP
    /// range; panics when it does not.
    pub fn start(opts: DnsmasqOptions) -> Dnsmasq {
        let DnsmasqOptions {
            ns,
            dev,
            dir,
            tag,
            range,
            router,
            extra,
        } = opts;
        let leases = dir.join(format!("{tag}.leases"));
        let log = dir.join(format!("{tag}.log"));
        let child = Command::new("ip")
            .args(["netns", "exec", ns, "dnsmasq", "--keep-in-foreground"])
            .args([
                "--conf-file=/dev/null",
                "--port=0",
                "--user=root",
                "--pid-file=",
            ])
            .arg(format!("--interface={dev}"))
            .args(["--bind-interfaces", "--dhcp-authoritative"])
            .arg(format!("--dhcp-range={range},255.255.255.0,2m"))
            .arg(format!("--dhcp-option=option:router,{router}"))
            .args(extra)
            .arg(format!("--dhcp-leasefile={}", leases.display()))
            .arg(format!("--log-facility={}", log.display()))
            .arg("--log-dhcp")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start dnsmasq (scripts/deps.sh --test installs dnsmasq-base)");
        let d = Dnsmasq { child, leases, log };
        // Ready when it has logged its DHCP range.
        let t = Instant::now();
        while !d.log_text().contains("DHCP, IP range") {
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "dnsmasq did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        d
    }

    /// The lease file's text (empty before the first lease).
    pub fn leases_text(&self) -> String {
        std::fs::read_to_string(&self.leases).unwrap_or_default()
    }

    /// The log's text.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits (10 s at most) until the lease file satisfies `pred`; returns the last text.
    pub fn wait_leases(&self, pred: impl Fn(&str) -> bool) -> String {
        let t = Instant::now();
        loop {
            let text = self.leases_text();
            if pred(&text) || t.elapsed() > Duration::from_secs(10) {
                return text;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
