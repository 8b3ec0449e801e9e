//! The environment of a running lab: namespaces, veth links, bridges, VLAN access ports,
//! daemons and captures; commands run inside it, placeholders expanded against it, and
//! everything torn down when it drops.

use super::{interrupted, split_dev, LabError, Testbed, INTERRUPTED};
use crate::api::stream::{pump, Tally};
use crate::api::{self, CaptureRequest, CaptureStart, ClientStream, Request};
use crate::nsutil::{self, in_netns, ip_in, run, sh_in, Namespaces, Tcpdump};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use uvlan_dataplane::port::vlan_access::VlanAccess;

/// Runs a command and returns (success, stdout + stderr).
pub(super) fn output(cmd: &mut Command, step: &str) -> Result<(bool, String), LabError> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| LabError::Io(step.to_string(), e))?;
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    Ok((out.status.success(), text))
}

/// A running tcpdump writing a pcap file.
struct Capturer {
    ns: String,
    dev: String,
    file: PathBuf,
    tcpdump: Tcpdump,
}

/// A running `uvlan capture`: a thread copying the daemon's pcapng stream into a file.
struct UvlanCapturer {
    file: PathBuf,
    stop: Arc<AtomicBool>,
    thread: JoinHandle<Result<Tally, String>>,
}

/// Namespaces, daemons, programs and captures of a running lab; torn down on drop.
pub(super) struct Env {
    namespaces: Namespaces,
    daemons: Vec<(String, Child)>,
    /// dnsmasq DHCP servers (`[[dhcp_server]]`), with their `NS/IF`.
    dhcp_servers: Vec<(String, Child)>,
    access: Vec<VlanAccess>,
    captures: Vec<Capturer>,
    uvlan_captures: Vec<UvlanCapturer>,
    /// Every uvlan capture file written so far.
    uvlan_files: Vec<PathBuf>,
    dir: PathBuf,
    /// Where uvlan captures go and stay (`uvlan lab --out DIR`); `None`: the state directory.
    out: Option<PathBuf>,
    exe: PathBuf,
    /// Added to every host's `uvlan daemon` command line.
    pub(super) daemon_args: Vec<String>,
}

impl Env {
    /// The full namespace name of testbed name `name` (`ulab<pid>-<name>`).
    pub(super) fn ns(&self, name: &str) -> String {
        self.namespaces.full(name)
    }

    /// Host `host`'s state directory (its daemon's root, socket and log).
    fn host_dir(&self, host: &str) -> PathBuf {
        self.dir.join(host)
    }

    /// Creates the namespace of testbed name `name` (deleted when the environment drops).
    pub(super) fn add_ns(&mut self, name: &str) -> Result<String, LabError> {
        Ok(self.namespaces.add(name)?)
    }

    /// `ip ARGS` in namespace `ns`; its stdout.
    pub(super) fn ip(&self, ns: &str, args: &[&str]) -> Result<String, LabError> {
        let full = self.ns(ns);
        Ok(run(
            ip_in(&full).args(args),
            &format!("[{ns}] ip {}", args.join(" ")),
        )?)
    }

    /// A shell command (placeholders expanded) in namespace `name`; its stdout.
    pub(super) fn sh(&self, name: &str, cmd: &str) -> Result<String, LabError> {
        let cmd = self.expand(cmd)?;
        Ok(run(
            &mut sh_in(&self.ns(name), &cmd),
            &format!("[{name}] {cmd}"),
        )?)
    }

    /// `uvlan ARGS` against host `host`'s daemon, not yet run.
    pub(super) fn uvlan_cmd(&self, host: &str, args: &[String]) -> Command {
        let mut c = Command::new(&self.exe);
        c.args(args)
            .env("UVLAN_SOCKET", self.host_dir(host).join("uvlan.sock"))
            .env("UVLAN_ROOT", self.host_dir(host).join("root"));
        c
    }

    /// Runs `uvlan ARGS` against host `host`'s daemon; a failure carries the daemon log's tail.
    pub(super) fn uvlan(&self, host: &str, args: &[String]) -> Result<String, LabError> {
        run(
            &mut self.uvlan_cmd(host, args),
            &format!("[{host}] uvlan {}", args.join(" ")),
        )
        .map_err(|e| self.with_daemon_log(host, e.into()))
    }

    /// Adds the tail of a host's daemon log to a failed step.
    fn with_daemon_log(&self, host: &str, e: LabError) -> LabError {
        match e {
            LabError::Step { step, detail } => {
                let log = std::fs::read_to_string(self.host_dir(host).join("daemon.log"))
                    .unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(5).collect();
                if tail.is_empty() {
                    LabError::Step { step, detail }
                } else {
                    let tail: Vec<&str> = tail.into_iter().rev().collect();
                    LabError::Step {
                        step,
                        detail: format!(
                            "{detail}\n  daemon log ({host}):\n    {}",
                            tail.join("\n    ")
                        ),
                    }
                }
            }
            other => other,
        }
    }

    /// The MAC of `NS/IF`, or of endpoint `NAME`'s `eth0`.
    fn mac(&self, dev: &str) -> Result<String, LabError> {
        let (ns, ifn) = split_dev(dev).unwrap_or((dev, "eth0"));
        let out = self.ip(ns, &["-j", "link", "show", "dev", ifn])?;
        let v: serde_json::Value = serde_json::from_str(&out).unwrap_or(serde_json::Value::Null);
        v.get(0)
            .and_then(|l| l["address"].as_str())
            .map(str::to_string)
            .ok_or_else(|| LabError::Step {
                step: format!("find the MAC address of {ns}/{ifn}"),
                detail: "it has none".into(),
            })
    }

    /// Starts DHCP server number `n` (`[[dhcp_server]]`): dnsmasq in the foreground, DHCP
    /// only, on `spec.dev`, its lease file `dhcp-N.leases` and log `dhcp-N.log` in the state
    /// directory (`{dhcp_leases:N}` in a command); serving (its range logged) before this
    /// returns.
    pub(super) fn start_dhcp_server(
        &mut self,
        spec: &super::schema::DhcpServerSpec,
        n: usize,
    ) -> Result<(), LabError> {
        let (ns, ifn) = split_dev(&spec.dev).unwrap_or(("", ""));
        let leases = self.dir.join(format!("dhcp-{n}.leases"));
        let log = self.dir.join(format!("dhcp-{n}.log"));
        let mask = std::net::Ipv4Addr::from(u32::MAX << (32 - u32::from(spec.prefix_len.min(32))));
        let mut cmd = in_netns(&self.ns(ns), "dnsmasq");
        cmd.args([
            "--keep-in-foreground",
            "--conf-file=/dev/null",
            "--port=0",
            "--user=root",
            "--pid-file=",
            "--bind-interfaces",
            "--dhcp-authoritative",
        ])
        .arg(format!("--interface={ifn}"))
        .arg(format!(
            "--dhcp-range={},{},{mask},{}",
            spec.range[0], spec.range[1], spec.lease_secs
        ))
        .arg(format!("--dhcp-leasefile={}", leases.display()))
        .arg(format!("--log-facility={}", log.display()))
        .arg("--log-dhcp");
        if let Some(r) = &spec.router {
            cmd.arg(format!("--dhcp-option=option:router,{r}"));
        }
        if !spec.dns.is_empty() {
            cmd.arg(format!(
                "--dhcp-option=option:dns-server,{}",
                spec.dns.join(",")
            ));
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let step = format!("start dnsmasq on {}", spec.dev);
        let child = cmd.spawn().map_err(|e| LabError::Step {
            step: step.clone(),
            detail: format!("{e} (dnsmasq comes with Debian's dnsmasq-base: scripts/deps.sh)"),
        })?;
        self.dhcp_servers.push((spec.dev.clone(), child));
        let t = Instant::now();
        loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if text.contains("DHCP, IP range") {
                return Ok(());
            }
            let exited = self
                .dhcp_servers
                .last_mut()
                .and_then(|(_, c)| c.try_wait().ok().flatten());
            if exited.is_some() || t.elapsed() > Duration::from_secs(10) {
                return Err(LabError::Step {
                    step,
                    detail: format!("it did not start serving:\n{text}"),
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Expands `{prefix}`, `{ns:NAME}`, `{mac:NAME}` / `{mac:NS/IF}` and `{dhcp_leases:N}`
    /// (the lease file of DHCP server number N, from 0).
    pub(super) fn expand(&self, s: &str) -> Result<String, LabError> {
        let mut out = String::with_capacity(s.len());
        let mut rest = s;
        while let Some(i) = rest.find('{') {
            out.push_str(&rest[..i]);
            let tail = &rest[i..];
            let Some(j) = tail.find('}') else {
                out.push_str(tail);
                return Ok(out);
            };
            let inner = &tail[1..j];
            if inner == "prefix" {
                out.push_str(self.namespaces.prefix());
            } else if let Some(n) = inner.strip_prefix("ns:") {
                out.push_str(&self.ns(n));
            } else if let Some(d) = inner.strip_prefix("mac:") {
                out.push_str(&self.mac(d)?);
            } else if let Some(n) = inner
                .strip_prefix("dhcp_leases:")
                .and_then(|n| n.parse::<usize>().ok())
            {
                let f = self.dir.join(format!("dhcp-{n}.leases"));
                out.push_str(&f.display().to_string());
            } else {
                out.push_str(&tail[..=j]);
            }
            rest = &tail[j + 1..];
        }
        out.push_str(rest);
        Ok(out)
    }

    /// Starts capture number `n`: tcpdump on `ns/dev` writing a pcap file in the state
    /// directory, listening before this returns.
    pub(super) fn start_capture(&mut self, ns: &str, dev: &str, n: usize) -> Result<(), LabError> {
        let file = self.dir.join(format!("capture-{n}.pcap"));
        let f = std::fs::File::create(&file)
            .map_err(|e| LabError::Io(file.display().to_string(), e))?;
        let tcpdump = Tcpdump::start(
            &self.ns(ns),
            dev,
            &["-nn", "-U", "--immediate-mode", "-w", "-"],
            f,
            &format!("tcpdump on {ns}/{dev}"),
            Duration::from_secs(5),
            &|| INTERRUPTED.load(Ordering::SeqCst),
        )?;
        let cap = Capturer {
            ns: ns.to_string(),
            dev: dev.to_string(),
            file,
            tcpdump,
        };
        self.captures.push(cap);
        Ok(())
    }

    /// Stops every capture; returns (ns, dev, file) of each.
    pub(super) fn stop_captures(&mut self) -> Vec<(String, String, PathBuf)> {
        let mut v = Vec::new();
        for c in self.captures.drain(..) {
            c.tcpdump.stop();
            v.push((c.ns, c.dev, c.file));
        }
        v
    }

    /// The directory uvlan captures are written to, and whether they stay after the lab.
    pub(super) fn capture_dir(&self) -> (&Path, bool) {
        match &self.out {
            Some(d) => (d, true),
            None => (&self.dir, false),
        }
    }

    /// Starts a uvlan capture on host `host`'s daemon (the API request `uvlan capture`
    /// makes), writing its pcapng stream to `file`; the daemon records from before this
    /// returns.
    pub(super) fn start_uvlan_capture(
        &mut self,
        host: &str,
        req: CaptureRequest,
        file: PathBuf,
    ) -> Result<(), LabError> {
        let step = format!("[{host}] uvlan capture {}", req.network);
        let sock = self.host_dir(host).join("uvlan.sock");
        let (_, mut conn): (CaptureStart, ClientStream) =
            api::open_stream(&sock, &Request::Capture(req)).map_err(|e| {
                self.with_daemon_log(
                    host,
                    LabError::Step {
                        step: step.clone(),
                        detail: e.to_string(),
                    },
                )
            })?;
        let mut f = std::fs::File::create(&file)
            .map_err(|e| LabError::Io(file.display().to_string(), e))?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("uvlan-lab-capture".into())
            .spawn(move || {
                pump(&mut conn, Some(&mut f), None, &|| {
                    flag.load(Ordering::SeqCst)
                })
                .map_err(|e| e.to_string())
            })
            .map_err(|e| LabError::Io(step, e))?;
        self.uvlan_files.push(file.clone());
        self.uvlan_captures
            .push(UvlanCapturer { file, stop, thread });
        Ok(())
    }

    /// Ends every uvlan capture (the daemon writes the records it holds, then the statistics
    /// blocks) and waits for its file; returns each file with what the stream said.
    pub(super) fn stop_uvlan_captures(&mut self) -> Vec<(PathBuf, Result<Tally, String>)> {
        for c in &self.uvlan_captures {
            c.stop.store(true, Ordering::SeqCst);
        }
        self.uvlan_captures
            .drain(..)
            .map(|c| {
                let r = c
                    .thread
                    .join()
                    .unwrap_or_else(|_| Err("the capture thread panicked".into()));
                (c.file, r)
            })
            .collect()
    }

    /// An empty environment for this process: prefix `ulab<pid>-`, a fresh state directory.
    /// `out`: where uvlan captures are kept (created when missing).
    pub(super) fn new(exe: &Path, out: Option<&Path>) -> Result<Env, LabError> {
        if let Some(o) = out {
            std::fs::create_dir_all(o).map_err(|e| LabError::Io(o.display().to_string(), e))?;
        }
        let pid = std::process::id();
        let dir = std::env::temp_dir().join(format!("uvlan-lab-{pid}"));
        std::fs::create_dir_all(&dir).map_err(|e| LabError::Io(dir.display().to_string(), e))?;
        Ok(Env {
            namespaces: Namespaces::new(format!("ulab{pid}-")),
            daemons: Vec::new(),
            dhcp_servers: Vec::new(),
            access: Vec::new(),
            captures: Vec::new(),
            uvlan_captures: Vec::new(),
            uvlan_files: Vec::new(),
            dir,
            out: out.map(Path::to_path_buf),
            exe: exe.to_path_buf(),
            daemon_args: Vec::new(),
        })
    }

    /// Attaches a VLAN access program to `dev` (`NAMESPACE/IFNAME`); it is detached when the
    /// environment drops.
    pub(super) fn attach_vlan_access(&mut self, dev: &str, vid: u16) -> Result<(), LabError> {
        let (ns, ifn) = split_dev(dev).unwrap_or(("", ""));
        let path = Path::new("/run/netns").join(self.ns(ns));
        let acc = VlanAccess::attach_in_netns(&path, ifn, vid).map_err(|e| LabError::Step {
            step: format!("VLAN access port {dev} (VID {vid})"),
            detail: e.to_string(),
        })?;
        self.access.push(acc);
        Ok(())
    }

    /// Starts host `h`'s daemon inside its namespace, with its own state directory and socket,
    /// and waits for the socket.
    pub(super) fn start_daemon(&mut self, h: &str) -> Result<(), LabError> {
        let hd = self.host_dir(h);
        std::fs::create_dir_all(&hd).map_err(|e| LabError::Io(hd.display().to_string(), e))?;
        let sock = hd.join("uvlan.sock");
        let child = in_netns(&self.ns(h), &self.exe)
            .arg("daemon")
            .arg("--root")
            .arg(hd.join("root"))
            .arg("--socket")
            .arg(&sock)
            .args(&self.daemon_args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(
                std::fs::File::create(hd.join("daemon.log"))
                    .map_err(|e| LabError::Io("daemon log".into(), e))?,
            )
            .spawn()
            .map_err(|e| LabError::Io("start uvlan daemon".into(), e))?;
        self.daemons.push((h.to_string(), child));
        let t = Instant::now();
        while !sock.exists() {
            interrupted()?;
            if t.elapsed() > Duration::from_secs(10) {
                let logtext = std::fs::read_to_string(hd.join("daemon.log")).unwrap_or_default();
                return Err(LabError::Step {
                    step: format!("start uvlan daemon on {h}"),
                    detail: logtext.trim().to_string(),
                });
            }
            // Timed, and bounded (10 s): the lab's foreground wait for a daemon it started
            // to create its socket; never part of a running daemon.
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    /// With `UVLAN_LAB_HOLD` set: leave the lab standing for exploration until Enter, end of input
    /// or Ctrl-C.
    pub(super) fn hold(&self, tb: &Testbed, log: &mut dyn FnMut(&str)) {
        let host = tb.host_names()[0];
        log("holding the lab (UVLAN_LAB_HOLD is set); try, in another shell:");
        log(&format!(
            "  ip netns list | grep {}",
            self.namespaces.prefix()
        ));
        if let Some(e) = tb.endpoint.first() {
            log(&format!("  ip netns exec {} ip route", self.ns(&e.name)));
            log(&format!(
                "  UVLAN_SOCKET={} {} network inspect {}",
                self.host_dir(host).join("uvlan.sock").display(),
                self.exe.display(),
                e.network
            ));
        }
        if let Some(l) = tb.link.first() {
            if let Some((ns, ifn)) = split_dev(&l.b) {
                log(&format!(
                    "  ip netns exec {} tcpdump -eni {ifn}",
                    self.ns(ns)
                ));
            }
        }
        for f in &self.uvlan_files {
            log(&format!(
                "  tshark -r {} -V    (a uvlan capture)",
                f.display()
            ));
        }
        log("press Enter (or Ctrl-C) to tear it down");
        // Timed (200 ms): a foreground wait for a person at the terminal, which must also
        // notice Ctrl-C (a flag set by the signal handler); never part of a running daemon.
        loop {
            if INTERRUPTED.load(Ordering::SeqCst) {
                return;
            }
            let r =
                match crate::sys::wait_readable(std::os::fd::AsFd::as_fd(&std::io::stdin()), 200) {
                    Ok(r) => r,
                    Err(_) => return,
                };
            if r {
                // A line, or end of input / a closed stdin: either way, tear down.
                let mut line = String::new();
                let _ = std::io::stdin().read_line(&mut line);
                return;
            }
        }
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        let _ = self.stop_captures();
        let _ = self.stop_uvlan_captures();
        self.access.clear();
        for (_, d) in self.daemons.iter_mut() {
            nsutil::stop(d, libc::SIGTERM, Duration::from_secs(3));
        }
        for (_, d) in self.dhcp_servers.iter_mut() {
            nsutil::stop(d, libc::SIGTERM, Duration::from_secs(3));
        }
        self.namespaces.delete_all();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_expand_prefix_and_namespaces_and_leave_other_braces() {
        let env = Env {
            namespaces: Namespaces::new("ulab1-"),
            daemons: Vec::new(),
            dhcp_servers: Vec::new(),
            access: Vec::new(),
            captures: Vec::new(),
            uvlan_captures: Vec::new(),
            uvlan_files: Vec::new(),
            dir: std::env::temp_dir().join("uvlan-lab-test-placeholders-never-created"),
            out: None,
            exe: PathBuf::from("/bin/false"),
            daemon_args: Vec::new(),
        };
        assert_eq!(
            env.expand("connect n {ns:c1} {prefix}x awk '{print $1}' {")
                .unwrap(),
            "connect n ulab1-c1 ulab1-x awk '{print $1}' {"
        );
        // A MAC of a namespace that does not exist is an error naming it.
        let e = env.expand("{mac:nope/eth0}").unwrap_err().to_string();
        assert!(e.contains("nope"), "{e}");
    }
}
