//! A real dockerd (Debian's docker.io 20.10) with uvlan as its remote network driver (root).
//!
//! Nothing here touches the root namespace's network. Each test makes a private network
//! namespace (`uvt<pid>h<case>`) and starts both its own dockerd and `uvlan daemon
//! --docker-plugin` in it with `nsenter --net=/run/netns/NAME`, which changes only the
//! network namespace: the uvlan daemon stays in dockerd's mount namespace and sees the
//! bind mounts of the containers' namespaces dockerd makes under its exec root (the
//! `SandboxKey`s of Join). dockerd runs with an isolated data root, exec root, API socket
//! and pid file (no iptables, no bridge, vfs storage); the test imports a busybox rootfs
//! (no registry is reachable). Docker finds plugins only in `/run/docker/plugins` (a path on
//! the file system, whatever the network namespace), so the plugin sockets are the default
//! ones; the test refuses to run when another process serves them. The parent is a veth
//! whose end `uvt<pid><case>p0` lives in the private namespace (the uvlan daemon's "host")
//! and whose peer is in a LAN namespace (`uvt<pid>d<case>`); a host interface (`-o
//! uvlan.host_interface`) puts its address and routes in the private namespace, never on the
//! machine's own. Everything is stopped and removed at the end, even on failure.
//!
//! The seed documents' docker commands run with `-d uvlan-ipvlan` / `-d uvlan-macvlan`
//! and give the documented results. Two uvlan additions are tested through Docker too: the
//! host interface (`-o uvlan.host_interface`, issue 13) and DHCP IPAM (`--ipam-driver null
//! -o uvlan.ipam=dhcp`, issue 17) against dnsmasq on the LAN side of the parent (the LAN end
//! sends with checksum offload off, as a wire does).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use uvlan_system_tests::dnsmasq::{Dnsmasq, DnsmasqOptions};
use uvlan_system_tests::SuiteOptions;

const BIN: &str = env!("CARGO_BIN_EXE_uvlan");
/// Debian's client, matching the 20.10 daemon (a newer client may be first on PATH).
const DOCKER: &str = "/usr/bin/docker";
const IMAGE: &str = "uvlan-busybox:test";
const PLUGIN_DIR: &str = "/run/docker/plugins";

/// One plugin socket path for the whole machine: tests using it run one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn run(cmd: &mut Command) -> Output {
    cmd.output().expect("spawn")
}

struct Env {
    base: PathBuf,
    /// `uvt<pid><case>`: the parent veth's names.
    tag: String,
    /// The private namespace dockerd and the uvlan daemon run in.
    host: String,
    /// The LAN namespace, holding the parent veth's peer.
    lan: String,
    dockerd: Option<Child>,
    uvlan: Option<Child>,
    /// The suite's daemon options (`UVLAN_TEST_FAST_PATH`, `UVLAN_TEST_IO`, ...), as the
    /// other system suites run them.
    suite: SuiteOptions,
}

impl Env {
    /// The environment of one test; `case` (a lowercase letter) keeps the names of tests
    /// of one process apart.
    fn new(case: char) -> Env {
        // SAFETY: geteuid has no preconditions.
        assert_eq!(unsafe { libc::geteuid() }, 0, "this test needs root");
        for tool in [DOCKER, "/usr/sbin/dockerd", "/bin/busybox", "/usr/bin/tar"] {
            assert!(
                Path::new(tool).exists(),
                "{tool} is missing: run scripts/deps.sh (docker.io, busybox-static)"
            );
        }
        for d in ["ipvlan", "macvlan"] {
            let sock = Path::new(PLUGIN_DIR).join(format!("uvlan-{d}.sock"));
            assert!(
                std::os::unix::net::UnixStream::connect(&sock).is_err(),
                "another process serves {}: stop it (a running uvlan daemon --docker-plugin) \
                 before running this test",
                sock.display()
            );
        }
        let pid = std::process::id();
        let tag = format!("uvt{pid}{case}");
        let base = std::env::temp_dir().join(format!("{tag}-docker"));
        let mut env = Env {
            base,
            tag,
            host: format!("uvt{pid}h{case}"),
            lan: format!("uvt{pid}d{case}"),
            dockerd: None,
            uvlan: None,
            suite: SuiteOptions::from_env(&[]),
        };
        env.cleanup_dirs();
        std::fs::create_dir_all(&env.base).unwrap();
        env.topology();
        env.start_uvlan();
        env.start_dockerd();
        env.import_busybox();
        env
    }

    fn p0(&self) -> String {
        format!("{}p0", self.tag)
    }

    fn p1(&self) -> String {
        format!("{}p1", self.tag)
    }

    fn peer_ns(&self) -> String {
        self.lan.clone()
    }

    /// The private namespace and the parent: a veth with one end there, its peer in the
    /// LAN namespace. Nothing is made in the root namespace.
    fn topology(&self) {
        let (p0, p1, h, lan) = (self.p0(), self.p1(), &self.host, &self.lan);
        assert!(p0.len() <= 15 && p1.len() <= 15);
        for args in [
            vec!["netns", "add", h],
            vec!["netns", "add", lan],
            vec!["-n", h, "link", "set", "lo", "up"],
            vec![
                "-n", h, "link", "add", &p0, "type", "veth", "peer", "name", &p1, "netns", lan,
            ],
            vec!["-n", h, "link", "set", &p0, "up"],
            vec!["-n", lan, "link", "set", &p1, "up"],
            // The LAN end sends like a wire: complete checksums (a veth peer's partial ones
            // reach an XSK on the parent unfinished, see docs/performance.md).
            vec!["netns", "exec", lan, "ethtool", "-K", &p1, "tx", "off"],
            vec!["-n", lan, "link", "set", "lo", "up"],
        ] {
            let o = run(Command::new("ip").args(&args));
            assert!(o.status.success(), "ip {args:?}: {}", text(&o.stderr));
        }
    }

    fn docker_sock(&self) -> PathBuf {
        self.base.join("docker.sock")
    }

    /// `prog` run in the private namespace, in the test's mount namespace: nsenter enters
    /// the network namespace only and execs `prog` (the child's pid is `prog`'s).
    fn in_host(&self, prog: &str) -> Command {
        let mut c = Command::new("nsenter");
        c.arg(format!("--net=/run/netns/{}", self.host)).arg(prog);
        c
    }

    /// `ip` in the private namespace.
    fn host_ip(&self, args: &[&str]) -> String {
        let o = run(Command::new("ip").args(["-n", &self.host]).args(args));
        assert!(o.status.success(), "ip {args:?}: {}", text(&o.stderr));
        text(&o.stdout)
    }

    /// Pings `addr` from the private namespace (a few tries, as [`Env::ping`]).
    fn host_ping(&self, addr: &str) -> bool {
        (0..4).any(|_| {
            run(self.in_host("ping").args(["-c", "1", "-W", "1", addr]))
                .status
                .success()
        })
    }

    fn start_uvlan(&mut self) {
        let log = std::fs::File::create(self.base.join("uvlan.log")).unwrap();
        let child = self
            .in_host(BIN)
            .args(["daemon", "--docker-plugin", "--docker-host"])
            .arg(format!("unix://{}", self.docker_sock().display()))
            .args(self.suite.args())
            .env("UVLAN_ROOT", self.base.join("uvlan-root"))
            .env("UVLAN_SOCKET", self.base.join("uvlan.sock"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.uvlan = Some(child);
        self.wait_for("the uvlan daemon", || {
            self.uvlan_cmd(&["network", "ls", "-q"]).status.success()
                && Path::new(PLUGIN_DIR).join("uvlan-macvlan.sock").exists()
        });
        if let Err(e) = self.suite.check_log(&self.read("uvlan.log")) {
            panic!("{e}");
        }
    }

    fn stop_uvlan(&mut self, sig: libc::c_int) {
        if let Some(mut c) = self.uvlan.take() {
            // SAFETY: kill(2) on our own child.
            unsafe { libc::kill(c.id() as libc::pid_t, sig) };
            let _ = c.wait();
        }
    }

    fn start_dockerd(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.base.join("dockerd.log"))
            .unwrap();
        let b = &self.base;
        let child = self
            .in_host("/usr/sbin/dockerd")
            .args(["--iptables=false", "--ip6tables=false", "--bridge=none"])
            .args(["--storage-driver=vfs", "--data-root"])
            .arg(b.join("data"))
            .arg("--exec-root")
            .arg(b.join("exec"))
            .arg("-H")
            .arg(format!("unix://{}", self.docker_sock().display()))
            .arg("--pidfile")
            .arg(b.join("dockerd.pid"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.dockerd = Some(child);
        let t = Instant::now();
        while !self.docker(&["version"]).status.success() {
            if let Some(Ok(Some(st))) = self.dockerd.as_mut().map(|c| c.try_wait()) {
                panic!(
                    "dockerd could not start on this kernel (exit {st}); its log:\n{}",
                    self.read("dockerd.log")
                );
            }
            assert!(
                t.elapsed() < Duration::from_secs(60),
                "dockerd did not answer within 60 s; its log:\n{}",
                self.read("dockerd.log")
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Stops dockerd (SIGTERM: it stops the containers, which Leave their networks).
    fn stop_dockerd(&mut self) {
        if let Some(mut c) = self.dockerd.take() {
            // SAFETY: kill(2) on our own child.
            unsafe { libc::kill(c.id() as libc::pid_t, libc::SIGTERM) };
            let t = Instant::now();
            loop {
                if let Ok(Some(_)) = c.try_wait() {
                    break;
                }
                if t.elapsed() > Duration::from_secs(40) {
                    // SAFETY: kill(2) on our own child.
                    unsafe { libc::kill(c.id() as libc::pid_t, libc::SIGKILL) };
                    let _ = c.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }

    fn read(&self, file: &str) -> String {
        std::fs::read_to_string(self.base.join(file)).unwrap_or_default()
    }

    fn logs(&self) -> String {
        format!(
            "--- uvlan daemon log ---\n{}\n--- dockerd log (tail) ---\n{}",
            self.read("uvlan.log"),
            self.read("dockerd.log")
                .lines()
                .rev()
                .take(30)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect::<Vec<_>>()
                .join("\n")
        )
    }

    fn wait_for(&self, what: &str, mut ok: impl FnMut() -> bool) {
        let t = Instant::now();
        while !ok() {
            assert!(
                t.elapsed() < Duration::from_secs(30),
                "{what} not ready after 30 s\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn import_busybox(&self) {
        let root = self.base.join("rootfs");
        std::fs::create_dir_all(root.join("bin")).unwrap();
        std::fs::copy("/bin/busybox", root.join("bin/busybox")).unwrap();
        for app in ["sh", "ping", "ping6", "ip", "sleep", "cat", "true"] {
            std::os::unix::fs::symlink("busybox", root.join("bin").join(app)).unwrap();
        }
        let tar = self.base.join("rootfs.tar");
        let o = run(Command::new("tar")
            .arg("-C")
            .arg(&root)
            .arg("-cf")
            .arg(&tar)
            .arg("."));
        assert!(o.status.success(), "tar: {}", text(&o.stderr));
        let o = self.docker(&["import", tar.to_str().unwrap(), IMAGE]);
        assert!(o.status.success(), "docker import: {}", text(&o.stderr));
    }

    fn docker(&self, args: &[&str]) -> Output {
        run(Command::new(DOCKER)
            .arg("-H")
            .arg(format!("unix://{}", self.docker_sock().display()))
            .args(args))
    }

    fn ok(&self, args: &[&str]) -> String {
        let o = self.docker(args);
        assert!(
            o.status.success(),
            "docker {} failed: {}\n{}",
            args.join(" "),
            text(&o.stderr),
            self.logs()
        );
        text(&o.stdout)
    }

    /// One request to Docker's API (HTTP/1.0 on its socket): status and body.
    fn docker_api(&self, method: &str, path: &str, body: &str) -> (u16, String) {
        use std::io::{Read, Write};
        let mut s = std::os::unix::net::UnixStream::connect(self.docker_sock()).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        write!(
            s,
            "{method} {path} HTTP/1.0\r\nHost: docker\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut raw = String::new();
        s.read_to_string(&mut raw).unwrap();
        let status = raw
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let body = raw.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
        (status, body.to_string())
    }

    /// A failing docker command; returns its stderr.
    /// `docker network create ARGS` (split on whitespace), which must fail with `want` in
    /// its error.
    fn create_refused(&self, args: &str, want: &str) {
        let mut argv = vec!["network", "create"];
        argv.extend(args.split_whitespace());
        let err = self.fail(&argv);
        assert!(err.contains(want), "docker network create {args}: {err}");
    }

    fn fail(&self, args: &[&str]) -> String {
        let o = self.docker(args);
        assert!(
            !o.status.success(),
            "docker {} succeeded: {}",
            args.join(" "),
            text(&o.stdout)
        );
        text(&o.stderr)
    }

    fn uvlan_cmd(&self, args: &[&str]) -> Output {
        run(Command::new(BIN)
            .args(args)
            .env("UVLAN_ROOT", self.base.join("uvlan-root"))
            .env("UVLAN_SOCKET", self.base.join("uvlan.sock")))
    }

    fn uvlan(&self, args: &[&str]) -> String {
        let o = self.uvlan_cmd(args);
        assert!(
            o.status.success(),
            "uvlan {} failed: {}",
            args.join(" "),
            text(&o.stderr)
        );
        text(&o.stdout)
    }

    fn inspect(&self, net: &str) -> serde_json::Value {
        let v: serde_json::Value =
            serde_json::from_str(&self.uvlan(&["network", "inspect", net])).unwrap();
        v[0].clone()
    }

    /// `docker run -d` a sleeping container.
    fn container(&self, name: &str, net: &str, extra: &[&str]) {
        let mut args = vec!["run", "-d", "--name", name, "--network", net];
        args.extend_from_slice(extra);
        args.extend_from_slice(&[IMAGE, "sleep", "3600"]);
        self.ok(&args);
    }

    fn exec(&self, ctr: &str, cmd: &[&str]) -> Output {
        let mut args = vec!["exec", ctr];
        args.extend_from_slice(cmd);
        self.docker(&args)
    }

    fn exec_out(&self, ctr: &str, cmd: &[&str]) -> String {
        let o = self.exec(ctr, cmd);
        assert!(o.status.success(), "{ctr}: {cmd:?}: {}", text(&o.stderr));
        text(&o.stdout)
    }

    /// Pings from a container (a few tries: the endpoint settles right after start).
    fn ping(&self, ctr: &str, addr: &str) -> bool {
        (0..4).any(|_| {
            self.exec(ctr, &["ping", "-c", "1", "-W", "1", addr])
                .status
                .success()
        })
    }

    fn assert_ping(&self, ctr: &str, addr: &str) {
        assert!(
            self.ping(ctr, addr),
            "{ctr} cannot ping {addr}\n{}",
            self.logs()
        );
    }

    /// The kind `ip -d link` shows for a container's endpoint: a TAP (` tun `), or with the
    /// fast path (`UVLAN_TEST_FAST_PATH=on`) a veth (Join made the pair and dockerd moved
    /// one end in), also on a network with a host interface.
    fn endpoint_kind(&self) -> &'static str {
        if self.suite.fast_path_on() {
            " veth "
        } else {
            " tun "
        }
    }

    /// Asserts that `ctr`'s interface `ifname` is of `kind` (as [`Env::endpoint_kind`]).
    fn assert_kind(&self, ctr: &str, ifname: &str, kind: &str) {
        let pid = self.ok(&["inspect", "-f", "{{.State.Pid}}", ctr]);
        let o = run(Command::new("nsenter")
            .arg(format!("--net=/proc/{}/ns/net", pid.trim()))
            .args(["ip", "-d", "-o", "link", "show", ifname]));
        let detail = text(&o.stdout);
        assert!(
            o.status.success() && detail.contains(kind),
            "{ctr}: {ifname} is not a{kind}interface: {detail}{}",
            text(&o.stderr)
        );
    }

    /// Asserts how uvlan's inspect of `net` lists its `n` endpoints in
    /// `UvlanWire.EndpointKinds`: each `veth+fast-path` with the fast path, else `tap`.
    fn assert_endpoint_kinds(&self, net: &str, n: usize) {
        let v = self.inspect(net);
        let kinds = v["UvlanWire"]["EndpointKinds"]
            .as_object()
            .cloned()
            .unwrap_or_default();
        let want = if self.suite.fast_path_on() {
            "veth+fast-path"
        } else {
            "tap"
        };
        assert!(
            kinds.len() == n && kinds.values().all(|k| k == want),
            "{net}: {n} endpoints of kind {want} expected: {kinds:?}"
        );
    }

    /// The frames the fast path's cache carried from `net`'s endpoints (their
    /// `fast_sent_frames` in `uvlan stats`, summed).
    fn fast_frames(&self, net: &str) -> u64 {
        let stats = self.uvlan(&["stats", "--format", "json", net]);
        let v: serde_json::Value = serde_json::from_str(&stats).unwrap();
        v["networks"][0]["endpoints"]
            .as_array()
            .unwrap_or_else(|| panic!("no endpoints in {stats}"))
            .iter()
            .map(|e| e["fast_sent_frames"].as_u64().unwrap_or(0))
            .sum()
    }

    /// Ten pings from `ctr` to `addr` on `net`: with the fast path the cache carries the
    /// endpoints' frames (its counters grow by the echoes and replies, but for the first
    /// ones the dataplane decides), without it nothing goes through a cache.
    fn assert_cache_carries(&self, net: &str, ctr: &str, addr: &str) {
        let before = self.fast_frames(net);
        let o = self.exec(ctr, &["ping", "-q", "-A", "-c", "10", "-W", "2", addr]);
        assert!(
            o.status.success(),
            "{ctr} cannot ping {addr}: {}\n{}",
            text(&o.stdout),
            self.logs()
        );
        let after = self.fast_frames(net);
        if self.suite.fast_path_on() {
            assert!(
                after >= before + 10,
                "{net}: the cache did not carry {ctr}'s pings: {before} → {after}\n{}",
                self.logs()
            );
        } else {
            assert_eq!(
                after, 0,
                "{net}: frames through a cache without the fast path"
            );
        }
    }

    /// Asserts that no endpoint interface is left in the daemon's namespace: neither a TAP
    /// handed to Docker (`uvd…`) nor a fast-path pair's TAP or veth end (`uvs…`, `uvv…`).
    fn assert_no_endpoint_links(&self) {
        let links = self.host_ip(&["-o", "link"]);
        let left: Vec<&str> = links
            .lines()
            .filter(|l| [": uvd", ": uvs", ": uvv"].iter().any(|p| l.contains(p)))
            .collect();
        assert!(
            left.is_empty(),
            "endpoint interfaces left in the daemon's namespace: {left:#?}"
        );
    }

    /// Lazily unmounts everything dockerd left under the base directory, then removes it.
    fn cleanup_dirs(&self) {
        let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
        let mut points: Vec<&str> = mounts
            .lines()
            .filter_map(|l| l.split_whitespace().nth(1))
            .filter(|p| Path::new(p).starts_with(&self.base))
            .collect();
        points.sort_by_key(|p| std::cmp::Reverse(p.len()));
        for p in points {
            let _ = run(Command::new("umount").args(["-l", p]));
        }
        let _ = std::fs::remove_dir_all(&self.base);
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        if self.dockerd.is_some() {
            let ps = self.docker(&["ps", "-aq"]);
            let ids: Vec<String> = text(&ps.stdout)
                .split_whitespace()
                .map(str::to_string)
                .collect();
            if !ids.is_empty() {
                let mut args = vec!["rm", "-f"];
                args.extend(ids.iter().map(String::as_str));
                let _ = self.docker(&args);
            }
        }
        self.stop_dockerd();
        self.stop_uvlan(libc::SIGTERM);
        // The daemon removes its plugin sockets when it stops; one it could not remove (it
        // was killed) is left only if nobody serves it (Env::new checked nobody else did).
        for d in ["ipvlan", "macvlan"] {
            let sock = Path::new(PLUGIN_DIR).join(format!("uvlan-{d}.sock"));
            if std::os::unix::net::UnixStream::connect(&sock).is_err() {
                let _ = std::fs::remove_file(&sock);
            }
        }
        self.cleanup_dirs();
        // Every link of the test (the veth, TAPs, host interfaces) goes with its namespace.
        for ns in [&self.host, &self.lan] {
            let _ = run(Command::new("ip").args(["netns", "del", ns]));
        }
    }
}

fn default_routes(env: &Env, ctr: &str) -> (String, String) {
    let v4 = env.exec_out(ctr, &["ip", "route"]);
    let v6 = text(&env.exec(ctr, &["ip", "-6", "route"]).stdout);
    let pick = |t: &str| {
        t.lines()
            .filter(|l| l.starts_with("default"))
            .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
            .collect::<Vec<_>>()
            .join("; ")
    };
    (pick(&v4), pick(&v6))
}

#[test]
fn docker_remote_driver_end_to_end() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let mut env = Env::new('a');
    let p0 = env.p0();

    // -- Option validation: uvlan network create's texts, nothing left behind.
    env.create_refused(
        "-d uvlan-ipvlan -o ipvlan_mode=l4 x1",
        "requested ipvlan mode 'l4' is not valid, 'l2' mode is the ipvlan driver default",
    );
    env.create_refused(
        "-d uvlan-ipvlan -o ipvlan_mod=l3 x2",
        "unknown ipvlan option \"ipvlan_mod\"",
    );
    env.create_refused(
        "-d uvlan-macvlan -o parent=uvtnosuch0.20 x3",
        "-o parent interface was not found on the host: uvtnosuch0",
    );
    env.create_refused(
        "-d uvlan-ipvlan -o ipvlan_flag=open x4",
        "requested ipvlan flag 'open' is not valid",
    );
    // Null IPAM is refused as Docker's own drivers refuse it.
    for driver in ["uvlan-ipvlan", "uvlan-macvlan"] {
        let null = env.fail(&[
            "network",
            "create",
            "-d",
            driver,
            "--ipam-driver",
            "null",
            "x6",
        ]);
        assert!(null.contains("ipv4 pool is empty"), "{driver}: {null}");
    }
    assert_eq!(env.uvlan(&["network", "ls", "-q"]), "");

    // -- ipvlan l2 on the veth (seed: docker network create -d ipvlan --subnet ... -o parent=eth0).
    let parent = format!("parent={p0}");
    env.ok(&[
        "network",
        "create",
        "-d",
        "uvlan-ipvlan",
        "--subnet",
        "192.0.2.0/25",
        "--gateway",
        "192.0.2.1",
        "-o",
        &parent,
        "-o",
        "ipvlan_mode=l2",
        "uvt-l2",
    ]);
    // One network per parent, as uvlan network create. Asked at once through Docker's API
    // (no CLI start-up in between), the error still names the holder by its Docker name: the
    // driver learns pending names before it creates a network.
    let (status, shared) = env.docker_api(
        "POST",
        "/networks/create",
        &serde_json::json!({"Name": "x5", "Driver": "uvlan-macvlan", "Options": {"parent": p0}})
            .to_string(),
    );
    assert_eq!(status, 500, "{shared}");
    assert!(
        shared.contains(&format!(
            "remote: network uvt-l2 is already using parent interface {p0}"
        )),
        "{shared}"
    );
    // Docker's name shows in uvlan once the driver learned it from Docker's API.
    env.wait_for("the Docker name in uvlan network ls", || {
        env.uvlan(&["network", "ls"]).contains("uvt-l2")
    });
    let l2 = env.inspect("uvt-l2");
    assert_eq!(l2["Labels"]["uvlan.managed-by"], "docker", "{l2}");
    assert_eq!(l2["Options"]["parent"], p0.as_str());
    assert_eq!(l2["IPAM"]["Config"][0]["Gateway"], "192.0.2.1");
    let docker_id = env.ok(&["network", "inspect", "-f", "{{.Id}}", "uvt-l2"]);
    assert_eq!(l2["Id"], docker_id.trim(), "uvlan uses Docker's network ID");
    // The uvlan CLI does not remove Docker's networks.
    let o = env.uvlan_cmd(&["network", "rm", "uvt-l2"]);
    assert!(
        text(&o.stderr).contains("managed by docker"),
        "{}",
        text(&o.stderr)
    );

    env.container("uvt-a", "uvt-l2", &[]);
    env.container("uvt-b", "uvt-l2", &["--ip", "192.0.2.77"]);
    let b_addr = env.exec_out("uvt-b", &["ip", "-o", "addr", "show", "eth0"]);
    assert!(
        b_addr.contains("inet 192.0.2.77/25"),
        "--ip honoured: {b_addr}"
    );
    assert_eq!(
        default_routes(&env, "uvt-a").0,
        "default via 192.0.2.1 dev eth0"
    );
    env.assert_ping("uvt-a", "192.0.2.77");
    env.assert_ping("uvt-b", "192.0.2.2");
    let kind = env.endpoint_kind();
    env.assert_kind("uvt-a", "eth0", kind);
    env.assert_kind("uvt-b", "eth0", kind);
    env.assert_endpoint_kinds("uvt-l2", 2);
    env.assert_cache_carries("uvt-l2", "uvt-a", "192.0.2.77");
    let l2 = env.inspect("uvt-l2");
    let containers = l2["Containers"].as_object().unwrap();
    assert_eq!(containers.len(), 2, "{l2}");
    assert!(containers
        .values()
        .any(|c| c["IPv4Address"] == "192.0.2.77/25"));
    // ipvlan refuses a MAC, with Docker's text.
    let mac = env.fail(&[
        "run",
        "--rm",
        "--network",
        "uvt-l2",
        "--mac-address",
        "02:00:00:00:00:09",
        IMAGE,
        "true",
    ]);
    assert!(
        mac.contains("ipvlan interfaces do not support custom mac address assignment"),
        "{mac}"
    );

    // -- ipvlan l3, two subnets and IPv6 on a VLAN parent (seed: L3 multi-subnet example).
    let vlan30 = format!("parent={p0}.30");
    env.ok(&[
        "network",
        "create",
        "-d",
        "uvlan-ipvlan",
        "--ipv6",
        "--subnet",
        "198.51.100.0/25",
        "--subnet",
        "198.51.100.128/25",
        "--subnet",
        "2001:db8:3::/64",
        "-o",
        &vlan30,
        "-o",
        "ipvlan_mode=l3",
        "uvt-l3",
    ]);
    env.container(
        "uvt-la",
        "uvt-l3",
        &["--ip", "198.51.100.10", "--ip6", "2001:db8:3::10"],
    );
    env.container(
        "uvt-lb",
        "uvt-l3",
        &["--ip", "198.51.100.200", "--ip6", "2001:db8:3::20"],
    );
    let (v4, v6) = default_routes(&env, "uvt-la");
    assert_eq!(v4, "default dev eth0 scope link");
    assert!(v6.starts_with("default dev eth0"), "{v6}");
    env.assert_ping("uvt-la", "198.51.100.200");
    env.assert_ping("uvt-lb", "198.51.100.10");
    env.assert_ping("uvt-la", "2001:db8:3::20");
    assert_eq!(env.inspect("uvt-l3")["UvlanWire"]["VlanID"], 30);

    // -- --internal: endpoints talk, no default route.
    env.ok(&[
        "network",
        "create",
        "-d",
        "uvlan-ipvlan",
        "--internal",
        "--subnet",
        "192.0.2.128/25",
        "uvt-int",
    ]);
    env.container("uvt-ia", "uvt-int", &[]);
    env.container("uvt-ib", "uvt-int", &[]);
    assert_eq!(default_routes(&env, "uvt-ia").0, "");
    env.assert_ping("uvt-ia", "192.0.2.131");
    // docker network connect: Join for a sandbox that already exists; eth1 appears.
    env.ok(&[
        "network",
        "connect",
        "--ip",
        "192.0.2.140",
        "uvt-int",
        "uvt-a",
    ]);
    let eth1 = env.exec_out("uvt-a", &["ip", "-o", "addr", "show", "eth1"]);
    assert!(eth1.contains("inet 192.0.2.140/25"), "{eth1}");
    env.assert_kind("uvt-a", "eth1", kind);
    env.assert_ping("uvt-a", "192.0.2.131");
    env.ok(&["network", "disconnect", "uvt-int", "uvt-a"]);
    let gone = env.exec("uvt-a", &["ip", "link", "show", "eth1"]);
    assert!(!gone.status.success(), "eth1 left after disconnect");

    // -- macvlan on VLAN 20 of the veth: MACs, and tagged frames on the wire.
    let vlan20 = format!("parent={p0}.20");
    env.ok(&[
        "network",
        "create",
        "-d",
        "uvlan-macvlan",
        "--subnet",
        "203.0.113.0/24",
        "-o",
        &vlan20,
        "uvt-mv",
    ]);
    env.container("uvt-ma", "uvt-mv", &[]);
    env.container("uvt-mb", "uvt-mv", &["--mac-address", "02:00:00:00:00:09"]);
    env.assert_ping("uvt-ma", "203.0.113.3");
    let mv = env.inspect("uvt-mv");
    env.assert_kind("uvt-ma", "eth0", kind);
    let macs: Vec<String> = mv["Containers"]
        .as_object()
        .unwrap()
        .values()
        .map(|c| c["MacAddress"].as_str().unwrap().to_string())
        .collect();
    assert!(macs.contains(&"02:00:00:00:00:09".to_string()), "{macs:?}");
    let ma_link = env.exec_out("uvt-ma", &["ip", "-o", "link", "show", "eth0"]);
    let other = macs.iter().find(|m| *m != "02:00:00:00:00:09").unwrap();
    assert!(ma_link.contains(other.as_str()), "{ma_link} vs {other}");
    // An address nobody on the network has: the ARP request leaves tagged with VID 20.
    let dump = Command::new("ip")
        .args([
            "netns",
            "exec",
            &env.peer_ns(),
            "timeout",
            "8",
            "tcpdump",
            "-l",
            "-n",
            "-e",
        ])
        .args(["-i", &env.p1(), "-c", "1", "vlan 20 and arp"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let _ = env.exec("uvt-ma", &["ping", "-c", "2", "-W", "1", "203.0.113.99"]);
    let dump = dump.wait_with_output().unwrap();
    let seen = text(&dump.stdout);
    assert!(
        seen.contains("vlan 20") && seen.contains("203.0.113.99"),
        "tcpdump: {seen:?}"
    );

    // -- The uvlan daemon restarts (kill -9): containers keep their eth0 and traffic resumes.
    env.stop_uvlan(libc::SIGKILL);
    env.start_uvlan();
    env.assert_ping("uvt-a", "192.0.2.77");
    env.assert_ping("uvt-la", "198.51.100.200");
    env.assert_ping("uvt-ma", "203.0.113.3");
    // The endpoints were adopted: with the fast path the veth pairs outlived the daemon.
    env.assert_endpoint_kinds("uvt-l2", 2);
    env.assert_endpoint_kinds("uvt-mv", 2);
    env.assert_cache_carries("uvt-l2", "uvt-a", "192.0.2.77");
    env.assert_cache_carries("uvt-mv", "uvt-ma", "203.0.113.3");

    // -- dockerd restarts: it stops the containers (Leave, DeleteEndpoint) and does not
    // re-create networks; uvlan kept them, and restarted containers work again.
    env.stop_dockerd();
    for net in ["uvt-l2", "uvt-l3", "uvt-int", "uvt-mv"] {
        assert_eq!(
            env.inspect(net)["Containers"],
            serde_json::json!({}),
            "{net}"
        );
    }
    env.start_dockerd();
    env.ok(&["start", "uvt-a", "uvt-b", "uvt-ma", "uvt-mb"]);
    env.assert_ping("uvt-a", "192.0.2.77");
    env.assert_ping("uvt-mb", "203.0.113.2");
    env.assert_kind("uvt-a", "eth0", kind);

    // -- docker rm / network rm clean up: no TAP, no state.
    env.ok(&[
        "rm", "-f", "uvt-a", "uvt-b", "uvt-la", "uvt-lb", "uvt-ia", "uvt-ib", "uvt-ma", "uvt-mb",
    ]);
    env.ok(&["network", "rm", "uvt-l2", "uvt-l3", "uvt-int", "uvt-mv"]);
    assert_eq!(env.uvlan(&["network", "ls", "-q"]), "");
    let left = std::fs::read_dir(env.base.join("uvlan-root/networks"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(left, 0, "state files left");
    env.assert_no_endpoint_links();
    let log = env.read("uvlan.log");
    assert!(!log.contains("did not arrive"), "{log}");
}

/// A container's IPv4 address on network `net`, as Docker reports it.
fn docker_addr(env: &Env, ctr: &str, net: &str) -> String {
    let f = format!("{{{{(index .NetworkSettings.Networks \"{net}\").IPAddress}}}}");
    env.ok(&["inspect", "-f", &f, ctr]).trim().to_string()
}

/// `docker network create -o uvlan.host_interface=IP` (issue 13) with the real dockerd: the
/// host interface is made in the uvlan daemon's namespace (the test's private one, standing
/// for the host), with a route per container; a container reaches the interface's address
/// and the host reaches the container; both inspects show it; `docker rm` takes the route
/// away and `docker network rm` the interface. Macvlan bridge on the veth, ipvlan l2 on a
/// VLAN of it.
#[test]
fn docker_host_interface() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let env = Env::new('b');
    let p0 = env.p0();
    let root_links = text(&run(Command::new("ip").args(["-o", "link"])).stdout);

    // The address must be an --aux-address, so that Docker's IPAM never gives it away.
    let parent = format!("parent={p0}");
    env.create_refused(
        &format!(
            "-d uvlan-macvlan --subnet 192.0.2.0/25 -o {parent} -o \
             uvlan.host_interface=192.0.2.126 uvt-x"
        ),
        "--aux-address host=192.0.2.126",
    );
    assert_eq!(env.uvlan(&["network", "ls", "-q"]), "");

    let vlan50 = format!("parent={p0}.50");
    for (net, driver, parent, subnet, host_ip, extra) in [
        (
            "uvt-hm",
            "uvlan-macvlan",
            parent.as_str(),
            "192.0.2.0/25",
            "192.0.2.126",
            None,
        ),
        (
            "uvt-hi",
            "uvlan-ipvlan",
            vlan50.as_str(),
            "198.51.100.0/24",
            "198.51.100.250",
            Some("ipvlan_mode=l2"),
        ),
    ] {
        let aux = format!("host={host_ip}");
        let opt = format!("uvlan.host_interface={host_ip}");
        let mut args = vec![
            "network",
            "create",
            "-d",
            driver,
            "--subnet",
            subnet,
            "--aux-address",
            &aux,
            "-o",
            parent,
            "-o",
            &opt,
        ];
        if let Some(e) = extra {
            args.extend_from_slice(&["-o", e]);
        }
        args.push(net);
        env.ok(&args);
        env.wait_for("the Docker name in uvlan network ls", || {
            env.uvlan(&["network", "ls"]).contains(net)
        });
        let v = env.inspect(net);
        let ifname = v["UvlanHostInterface"]["Name"]
            .as_str()
            .unwrap_or_else(|| panic!("{net}: no UvlanHostInterface: {v}"))
            .to_string();
        assert_eq!(
            v["UvlanHostInterface"]["IPv4Address"],
            format!("{host_ip}/32").as_str(),
            "{v}"
        );
        let ipam = env.ok(&["network", "inspect", "-f", "{{json .IPAM.Config}}", net]);
        let ipam: serde_json::Value = serde_json::from_str(&ipam).unwrap();
        assert_eq!(ipam[0]["AuxiliaryAddresses"]["host"], host_ip, "{ipam}");
        // In the daemon's namespace, never in the machine's own.
        let addr_line = env.host_ip(&["-o", "addr", "show", "dev", &ifname]);
        assert!(
            addr_line.contains(&format!("inet {host_ip}/32")),
            "{addr_line}"
        );
        let now_root = text(&run(Command::new("ip").args(["-o", "link"])).stdout);
        assert!(
            !now_root.contains(&format!(": {ifname}")) && !root_links.contains(&ifname),
            "{ifname} in the root namespace"
        );

        let ctr = format!("{net}-c");
        env.container(&ctr, net, &[]);
        // The container's endpoint is of the suite's kind beside the host interface too.
        env.assert_kind(&ctr, "eth0", env.endpoint_kind());
        let c_addr = docker_addr(&env, &ctr, net);
        assert!(!c_addr.is_empty() && c_addr != host_ip, "{c_addr}");
        let routes = env.host_ip(&["route", "show"]);
        assert!(
            routes.contains(&format!("{c_addr} dev {ifname}")),
            "no route to the container:\n{routes}"
        );
        env.assert_ping(&ctr, host_ip);
        assert!(
            env.host_ping(&c_addr),
            "the host cannot ping {ctr} at {c_addr}\n{}",
            env.logs()
        );
        let v = env.inspect(net);
        assert_eq!(v["Containers"].as_object().map(|c| c.len()), Some(1), "{v}");

        env.ok(&["rm", "-f", &ctr]);
        let routes = env.host_ip(&["route", "show"]);
        assert!(
            !routes.contains(&format!("{c_addr} dev")),
            "route to a removed container left:\n{routes}"
        );
        env.ok(&["network", "rm", net]);
        let links = env.host_ip(&["-o", "link"]);
        assert!(
            !links.contains(&format!(": {ifname}")),
            "{ifname} left: {links}"
        );
    }
    assert_eq!(env.uvlan(&["network", "ls", "-q"]), "");
}

/// The classless static routes (option 121) dnsmasq gives the client with MAC
/// 02:00:00:00:00:42: a default route, and one more.
const CLASSLESS: &str = "0.0.0.0/0,192.0.2.1,198.51.100.0/24,192.0.2.254";

/// dnsmasq serving DHCP only on the LAN side of the parent veth (`…p1` in the LAN
/// namespace, which is the router 192.0.2.1/24), range 192.0.2.100–150, with short T1/T2
/// so that renewals happen while the test runs; killed on drop.
fn start_dnsmasq(env: &Env) -> Dnsmasq {
    let (lan, p1) = (env.lan.clone(), env.p1());
    let o = run(Command::new("ip").args(["-n", &lan, "addr", "add", "192.0.2.1/24", "dev", &p1]));
    assert!(o.status.success(), "{}", text(&o.stderr));
    let classless = format!("--dhcp-option=tag:cls,option:classless-static-route,{CLASSLESS}");
    Dnsmasq::start(DnsmasqOptions {
        ns: &lan,
        dev: &p1,
        dir: &env.base,
        tag: "dnsmasq",
        range: "192.0.2.100,192.0.2.150",
        router: "192.0.2.1",
        extra: &[
            "--dhcp-option=option:T1,3",
            "--dhcp-option=option:T2,100",
            // The client with MAC 02:00:00:00:00:42 also gets classless routes (option 121).
            "--dhcp-host=02:00:00:00:00:42,set:cls",
            &classless,
        ],
    })
}

/// Waits (15 s at most) for `ok`.
fn eventually(mut ok: impl FnMut() -> bool) -> bool {
    let t = Instant::now();
    loop {
        if ok() {
            return true;
        }
        if t.elapsed() > Duration::from_secs(15) {
            return false;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// `docker network create --ipam-driver null -o uvlan.ipam=dhcp` (issue 17): the driver
/// leases each endpoint's address from the LAN's DHCP server (dnsmasq) at CreateEndpoint and
/// answers it to Docker, which puts it on the container's `eth0` and in its inspect; Join
/// gives the server's router as gateway; the lease is renewed while the container runs and
/// released when it goes. Macvlan (a chosen and a `--mac-address` MAC), then ipvlan l2 (one
/// MAC for all: the client identifier tells them apart).
#[test]
fn docker_dhcp_ipam() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let mut env = Env::new('c');
    let server = start_dnsmasq(&env);
    let parent = format!("parent={}", env.p0());

    // Without the option a null IPAM stays refused; the option wants the null IPAM.
    env.create_refused(
        &format!("-d uvlan-macvlan --ipam-driver null -o {parent} x1"),
        "ipv4 pool is empty",
    );
    env.create_refused(
        &format!("-d uvlan-macvlan -o uvlan.ipam=dhcp -o {parent} x2"),
        "uvlan.ipam=dhcp needs --ipam-driver null",
    );
    env.create_refused(
        &format!("-d uvlan-macvlan --ipam-driver null -o uvlan.ipam=static -o {parent} x3"),
        "invalid uvlan.ipam value \"static\"",
    );
    assert_eq!(env.uvlan(&["network", "ls", "-q"]), "");

    for (net, driver, extra) in [
        ("uvt-dm", "uvlan-macvlan", None),
        ("uvt-di", "uvlan-ipvlan", Some("ipvlan_mode=l2")),
    ] {
        let mut args = vec![
            "network",
            "create",
            "-d",
            driver,
            "--ipam-driver",
            "null",
            "-o",
            "uvlan.ipam=dhcp",
            "-o",
            &parent,
        ];
        if let Some(e) = extra {
            args.extend_from_slice(&["-o", e]);
        }
        args.push(net);
        env.ok(&args);
        let (a, b) = (format!("{net}-a"), format!("{net}-b"));
        env.container(&a, net, &[]);
        let b_extra: &[&str] = if driver == "uvlan-macvlan" {
            &["--mac-address", "02:00:00:00:00:42"]
        } else {
            &[]
        };
        env.container(&b, net, b_extra);
        let mut addrs = Vec::new();
        for ctr in [&a, &b] {
            let ip = docker_addr(&env, ctr, net);
            assert!(
                ip.starts_with("192.0.2.1") && ip.len() == "192.0.2.100".len(),
                "{ctr}: Docker's address {ip:?} is not from the server's range\n{}",
                env.logs()
            );
            let plen = env.ok(&[
                "inspect",
                "-f",
                &format!("{{{{(index .NetworkSettings.Networks \"{net}\").IPPrefixLen}}}}"),
                ctr,
            ]);
            assert_eq!(plen.trim(), "24", "{ctr}");
            let gw = env.ok(&[
                "inspect",
                "-f",
                &format!("{{{{(index .NetworkSettings.Networks \"{net}\").Gateway}}}}"),
                ctr,
            ]);
            let mac = env.exec_out(ctr, &["cat", "/sys/class/net/eth0/address"]);
            if mac.trim() == "02:00:00:00:00:42" {
                // Classless routes replace the router (RFC 3442): Join answers them as
                // StaticRoutes, and no Gateway.
                assert_eq!(gw.trim(), "", "{ctr}: Docker's gateway");
                let routes = env.exec_out(ctr, &["ip", "route"]);
                assert!(
                    routes.contains("198.51.100.0/24 via 192.0.2.254 dev eth0"),
                    "{ctr}: {routes}"
                );
            } else {
                assert_eq!(gw.trim(), "192.0.2.1", "{ctr}: Docker's gateway");
            }
            let shown = env.exec_out(ctr, &["ip", "-o", "-4", "addr", "show", "eth0"]);
            assert!(shown.contains(&format!("inet {ip}/24")), "{ctr}: {shown}");
            assert_eq!(
                default_routes(&env, ctr).0,
                "default via 192.0.2.1 dev eth0",
                "{ctr}"
            );
            env.assert_ping(ctr, "192.0.2.1");
            let leases = server.wait_leases(|t| t.contains(&format!(" {ip} ")));
            let line = leases
                .lines()
                .find(|l| l.contains(&format!(" {ip} ")))
                .unwrap_or_else(|| panic!("{ip} not in the server's leases: {leases}"));
            assert!(line.contains(mac.trim()), "{line} vs {mac}");
            addrs.push(ip);
        }
        assert_ne!(addrs[0], addrs[1], "two endpoints, one address");
        env.assert_kind(&a, "eth0", env.endpoint_kind());
        env.assert_ping(&a, &addrs[1]);
        let mac = |c: &str| env.exec_out(c, &["cat", "/sys/class/net/eth0/address"]);
        if driver == "uvlan-macvlan" {
            assert_eq!(mac(&b).trim(), "02:00:00:00:00:42");
        } else {
            // One MAC (the parent's) for both: the client identifier tells them apart.
            assert_eq!(mac(&a), mac(&b));
        }
        // Docker's own inspect lists both with the leased addresses.
        let listed = env.ok(&["network", "inspect", "-f", "{{json .Containers}}", net]);
        for ip in &addrs {
            assert!(listed.contains(&format!("\"{ip}/24\"")), "{listed}");
        }
        // uvlan's inspect: the endpoints with their addresses and leases.
        let v = env.inspect(net);
        assert_eq!(v["IPAM"]["Driver"], "dhcp", "{v}");
        let eps = v["Containers"].as_object().cloned().unwrap_or_default();
        assert_eq!(eps.len(), 2, "{v}");
        for ip in &addrs {
            let e = eps
                .values()
                .find(|e| e["IPv4Address"] == format!("{ip}/24").as_str())
                .unwrap_or_else(|| panic!("{ip} not in uvlan's inspect: {v}"));
            assert_eq!(e["UvlanDhcp"]["Server"], "192.0.2.1", "{e}");
        }
        // Renewed at T1 (3 s) while the containers run.
        let renewed = format!("DHCP lease {} renewed", addrs[0]);
        assert!(
            eventually(|| env.read("uvlan.log").contains(&renewed)),
            "no renewal of {}:\n{}\n{}",
            addrs[0],
            env.logs(),
            server.log_text()
        );
        env.assert_ping(&a, "192.0.2.1");
        if driver == "uvlan-macvlan" {
            // The uvlan daemon killed and started again goes on from the stored leases.
            env.stop_uvlan(libc::SIGKILL);
            env.start_uvlan();
            assert!(
                eventually(|| env.read("uvlan.log").contains(&renewed)),
                "no renewal after a restart:\n{}",
                env.logs()
            );
            env.assert_ping(&a, "192.0.2.1");
            env.assert_ping(&b, &addrs[0]);
        }
        // Leave, then DeleteEndpoint releases the lease: docker rm on the macvlan network,
        // docker network disconnect and docker stop on the ipvlan one.
        if driver == "uvlan-macvlan" {
            env.ok(&["rm", "-f", &a, &b]);
        } else {
            env.ok(&["network", "disconnect", net, &a]);
            env.ok(&["stop", "-t", "0", &b]);
        }
        for ip in &addrs {
            let leases = server.wait_leases(|t| !t.contains(&format!(" {ip} ")));
            assert!(
                !leases.contains(&format!(" {ip} ")),
                "{ip} not released: {leases}\n{}\n{}",
                server.log_text(),
                env.logs()
            );
        }
        let _ = env.docker(&["rm", "-f", &a, &b]);
        env.ok(&["network", "rm", net]);
    }
    assert_eq!(env.uvlan(&["network", "ls", "-q"]), "");
    env.assert_no_endpoint_links();
}
