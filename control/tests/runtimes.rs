//! Real container runtimes calling uvlan's CNI plugin (root): Debian's podman 4.3 with its
//! CNI backend, and containerd 1.6 through `ctr run --cni`.
//!
//! Each test runs a private uvlan daemon in its own namespace (its parent is a veth `p0` the
//! test made there; the peer sits in another test namespace), a CNI plugin directory holding
//! uvlan's plugin under both names and Debian's `host-local`, and the runtime with private
//! state under the test's directory:
//! - podman: `containers.conf` (`network_backend = "cni"`, `cni_plugin_dirs`,
//!   `network_config_dir` holding the conflists; `default_ulimits` inside what runc may set
//!   without `CAP_SYS_RESOURCE`), its own storage root, run root and tmpdir, a busybox image
//!   made with `podman import`;
//! - containerd: its own daemon (root, state and socket under the test's directory, CRI off);
//!   `ctr` 1.6 reads CNI configuration only from `/etc/cni/net.d` and plugins only from
//!   `/opt/cni/bin`, so each `ctr run --cni` runs in a private mount namespace where the test's
//!   directories are mounted over those two (nothing changes for the rest of the machine).
//!
//! Containers ping each other; removing them leaves no endpoint, no network and no address
//! held. Everything is stopped and removed at the end, even on failure.

use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use uvlan_system_tests::World as Base;

const CNI_BIN: &str = env!("CARGO_BIN_EXE_uvlan-cni");
const UPSTREAM: &str = "/usr/lib/cni";

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn run(cmd: &mut Command) -> Output {
    cmd.stdin(Stdio::null()).output().expect("spawn")
}

fn require(tools: &[&str]) {
    for t in tools {
        assert!(
            Path::new(t).exists(),
            "{t} is missing: run scripts/deps.sh --test (podman, containerd, busybox-static, \
             containernetworking-plugins)"
        );
    }
}

/// A private daemon with a parent `p0`, a CNI plugin directory, and a busybox rootfs.
struct World {
    base: Base,
}

impl Deref for World {
    type Target = Base;
    fn deref(&self) -> &Base {
        &self.base
    }
}

impl World {
    fn new() -> World {
        require(&[
            "/usr/lib/cni/host-local",
            "/bin/busybox",
            "/usr/bin/tar",
            "/usr/bin/unshare",
        ]);
        let mut base = Base::new();
        let bin = base.dir.join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        for name in ["uvlan-ipvlan", "uvlan-macvlan"] {
            std::os::unix::fs::symlink(CNI_BIN, bin.join(name)).unwrap();
        }
        std::os::unix::fs::symlink(format!("{UPSTREAM}/host-local"), bin.join("host-local"))
            .unwrap();
        base.wired_parent();
        let w = World { base };
        w.rootfs();
        w
    }

    fn dir(&self) -> &Path {
        &self.base.dir
    }

    /// A busybox root filesystem (`rootfs/`) and its tarball (`rootfs.tar`).
    fn rootfs(&self) {
        let root = self.dir().join("rootfs");
        std::fs::create_dir_all(root.join("bin")).unwrap();
        std::fs::copy("/bin/busybox", root.join("bin/busybox")).unwrap();
        for app in ["sh", "ping", "ip", "sleep", "true"] {
            std::os::unix::fs::symlink("busybox", root.join("bin").join(app)).unwrap();
        }
        let o = run(Command::new("tar")
            .arg("-C")
            .arg(&root)
            .arg("-cf")
            .arg(self.dir().join("rootfs.tar"))
            .arg("."));
        assert!(o.status.success(), "tar: {}", text(&o.stderr));
    }

    /// Writes a conflist into `dir` (created if needed).
    fn conflist(&self, dir: &Path, file: &str, list: &Value) {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join(file), serde_json::to_vec_pretty(list).unwrap()).unwrap();
    }

    /// A one-plugin conflist for uvlan's `ty` with host-local addresses from `subnet`.
    fn list(&self, name: &str, plugin: Value, subnet: &str) -> Value {
        let mut plugin = plugin;
        plugin["ipam"] = json!({
            "type": "host-local",
            "dataDir": self.dir().join("ipam"),
            "ranges": [[{ "subnet": subnet }]],
            "routes": [{ "dst": "0.0.0.0/0" }]
        });
        json!({ "cniVersion": "1.0.0", "name": name, "plugins": [plugin] })
    }

    fn uvlan_ok(&self, args: &[&str]) -> String {
        self.base.uvlan_ok(args)
    }

    fn networks(&self) -> String {
        self.uvlan_ok(&["network", "ls", "--format", "json"])
    }

    /// The IPv4 addresses of a network's endpoints, as uvlan shows them.
    fn endpoint_addrs(&self, net: &str) -> Vec<String> {
        let v: Value = serde_json::from_str(&self.uvlan_ok(&["network", "inspect", net])).unwrap();
        let mut out: Vec<String> = v[0]["Containers"]
            .as_object()
            .map(|m| {
                m.values()
                    .filter_map(|c| c["IPv4Address"].as_str())
                    .map(|a| a.split('/').next().unwrap_or(a).to_string())
                    .collect()
            })
            .unwrap_or_default();
        out.sort();
        out
    }

    /// The addresses host-local still holds for a network.
    fn held_addrs(&self, net: &str) -> Vec<String> {
        std::fs::read_dir(self.dir().join("ipam").join(net))
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|f| f.parse::<std::net::IpAddr>().is_ok())
                    .collect()
            })
            .unwrap_or_default()
    }

    fn wait_for(&self, what: &str, mut ok: impl FnMut() -> bool) {
        let t = Instant::now();
        while !ok() {
            assert!(
                t.elapsed() < Duration::from_secs(30),
                "{what} not seen after 30 s\n--- daemon log ---\n{}",
                self.daemon_log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// A name for the runtime's cgroups and namespaces: the world's prefix without its dash.
    fn tag(&self) -> String {
        self.base.prefix.trim_end_matches('-').to_string()
    }

    /// Removes the cgroup directories named `name` directly under each hierarchy, with
    /// everything below them, deepest first. A runtime's helper (podman's conmon) can still
    /// be leaving its cgroup: tries again for a few seconds while any is left.
    fn remove_cgroups(&self, name: &str) {
        let Ok(hierarchies) = std::fs::read_dir("/sys/fs/cgroup") else {
            return;
        };
        let mut roots: Vec<PathBuf> = hierarchies
            .filter_map(|e| e.ok())
            .map(|e| e.path().join(name))
            .collect();
        roots.push(Path::new("/sys/fs/cgroup").join(name));
        let t = Instant::now();
        loop {
            Self::remove_trees(&roots);
            if !roots.iter().any(|r| r.is_dir()) || t.elapsed() > Duration::from_secs(5) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn remove_trees(roots: &[PathBuf]) {
        for root in roots.iter().filter(|r| r.is_dir()) {
            let mut dirs = vec![root.clone()];
            let mut all = Vec::new();
            while let Some(d) = dirs.pop() {
                if let Ok(rd) = std::fs::read_dir(&d) {
                    dirs.extend(
                        rd.filter_map(|e| e.ok())
                            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                            .map(|e| e.path()),
                    );
                }
                all.push(d);
            }
            for d in all.iter().rev() {
                let _ = std::fs::remove_dir(d);
            }
        }
    }

    /// Lazily unmounts whatever a runtime left mounted under the test's directory.
    fn unmount_all(&self) {
        let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
        let mut points: Vec<&str> = mounts
            .lines()
            .filter_map(|l| l.split_whitespace().nth(1))
            .filter(|p| Path::new(p).starts_with(self.dir()))
            .collect();
        points.sort_by_key(|p| std::cmp::Reverse(p.len()));
        for p in points {
            let _ = run(Command::new("umount").args(["-l", p]));
        }
    }
}

// ------------------------------------------------------------------------------- podman

/// podman with private configuration, storage and run directories under the world's.
struct Podman {
    w: World,
    /// Whether `/var/lib/containers` was there before: podman 4.3 keeps its blob-info cache
    /// there whatever the storage root, and the test removes what it made.
    had_var_lib: bool,
}

const VAR_LIB: &str = "/var/lib/containers";

const IMAGE: &str = "localhost/uvlan-busybox:test";

impl Podman {
    fn new() -> Podman {
        require(&["/usr/bin/podman"]);
        let w = World::new();
        let d = w.dir().to_path_buf();
        let conf = format!(
            "[containers]\n\
             # runc sets these rlimits; podman's defaults need CAP_SYS_RESOURCE.\n\
             default_ulimits = [\"nofile=1024:1024\", \"nproc=1024:1024\"]\n\
             [network]\n\
             network_backend = \"cni\"\n\
             cni_plugin_dirs = [\"{}\"]\n\
             network_config_dir = \"{}\"\n\
             [engine]\n\
             # The cleanup that conmon starts when a container dies (it may do the CNI DEL\n\
             # before podman rm does) gets only these variables: the test's daemon socket.\n\
             conmon_env_vars = [\"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\", \
             \"UVLAN_SOCKET={}\"]\n",
            d.join("bin").display(),
            d.join("net.d").display(),
            w.socket().display()
        );
        std::fs::write(d.join("containers.conf"), conf).unwrap();
        let storage = format!(
            "[storage]\ndriver = \"vfs\"\ngraphroot = \"{}\"\nrunroot = \"{}\"\n",
            d.join("storage").display(),
            d.join("run").display()
        );
        std::fs::write(d.join("storage.conf"), storage).unwrap();
        let p = Podman {
            w,
            had_var_lib: Path::new(VAR_LIB).exists(),
        };
        let tar = p.w.dir().join("rootfs.tar");
        p.ok(&["import", tar.to_str().unwrap(), IMAGE]);
        p
    }

    fn podman(&self, args: &[&str]) -> Output {
        let d = self.w.dir();
        run(Command::new("podman")
            .env("CONTAINERS_CONF", d.join("containers.conf"))
            .env("CONTAINERS_STORAGE_CONF", d.join("storage.conf"))
            .env("UVLAN_SOCKET", self.w.socket())
            .arg("--root")
            .arg(d.join("storage"))
            .arg("--runroot")
            .arg(d.join("run"))
            .arg("--tmpdir")
            .arg(d.join("tmp"))
            .args(["--storage-driver", "vfs", "--cgroup-manager", "cgroupfs"])
            .args(["--events-backend", "file"])
            .args(args))
    }

    /// The cgroup the test's containers go under (removed at the end).
    fn cgroup_parent(&self) -> String {
        format!("/{}-podman", self.w.tag())
    }

    fn ok(&self, args: &[&str]) -> String {
        let o = self.podman(args);
        assert!(
            o.status.success(),
            "podman {} failed: {}\n--- daemon log ---\n{}",
            args.join(" "),
            text(&o.stderr),
            self.w.daemon_log()
        );
        text(&o.stdout)
    }

    fn ping(&self, ctr: &str, addr: &str) -> bool {
        (0..4).any(|_| {
            self.podman(&["exec", ctr, "ping", "-c", "1", "-W", "1", addr])
                .status
                .success()
        })
    }

    fn addr(&self, ctr: &str) -> String {
        let out = self.ok(&["exec", ctr, "ip", "-4", "-o", "addr", "show", "eth0"]);
        out.split("inet ")
            .nth(1)
            .and_then(|r| r.split('/').next())
            .unwrap_or_else(|| panic!("{ctr} has no IPv4 address: {out}"))
            .to_string()
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        let _ = self.podman(&["rm", "--all", "--force", "--time", "0"]);
        self.w.unmount_all();
        self.w
            .remove_cgroups(self.cgroup_parent().trim_start_matches('/'));
        if !self.had_var_lib {
            let _ = std::fs::remove_dir_all(VAR_LIB);
        }
    }
}

#[test]
fn podman_containers_on_uvlan_macvlan_and_ipvlan_l3() {
    let p = Podman::new();
    let w = &p.w;
    let netd = w.dir().join("net.d");
    w.conflist(
        &netd,
        "uvt-pmv.conflist",
        &w.list(
            "uvt-pmv",
            json!({ "type": "uvlan-macvlan", "master": "p0", "mode": "bridge" }),
            "203.0.113.0/24",
        ),
    );
    w.conflist(
        &netd,
        "uvt-pl3.conflist",
        &w.list(
            "uvt-pl3",
            json!({ "type": "uvlan-ipvlan", "master": "p0", "vlan": 41, "mode": "l3" }),
            "198.51.100.0/24",
        ),
    );
    let nets = p.ok(&["network", "ls", "--format", "{{.Name}} {{.Driver}}"]);
    assert!(nets.contains("uvt-pmv uvlan-macvlan"), "{nets}");
    assert!(nets.contains("uvt-pl3 uvlan-ipvlan"), "{nets}");

    for (net, a, b) in [
        ("uvt-pmv", "uvt-pma", "uvt-pmb"),
        ("uvt-pl3", "uvt-pla", "uvt-plb"),
    ] {
        let parent = p.cgroup_parent();
        for c in [a, b] {
            p.ok(&[
                "run",
                "-d",
                "--name",
                c,
                "--network",
                net,
                "--cgroup-parent",
                &parent,
                IMAGE,
                "sleep",
                "3600",
            ]);
        }
        let (addr_a, addr_b) = (p.addr(a), p.addr(b));
        assert_ne!(addr_a, addr_b);
        let mut want = vec![addr_a.clone(), addr_b.clone()];
        want.sort();
        assert_eq!(w.endpoint_addrs(net), want, "uvlan sees both containers");
        assert!(
            p.ping(a, &addr_b),
            "{a} cannot ping {addr_b}\n{}",
            w.daemon_log()
        );
        assert!(p.ping(b, &addr_a), "{b} cannot ping {addr_a}");
    }
    // The l3 container's interface is ipvlan l3's: NOARP, default route on the link.
    let link = p.ok(&["exec", "uvt-pla", "ip", "link", "show", "eth0"]);
    assert!(link.contains("NOARP"), "{link}");
    let inspect: Value =
        serde_json::from_str(&w.uvlan_ok(&["network", "inspect", "uvt-pl3"])).unwrap();
    assert_eq!(inspect[0]["UvlanWire"]["VlanID"], 41);
    assert_eq!(inspect[0]["Labels"]["uvlan.managed-by"], "cni");

    // podman rm: CNI DEL for each (podman may leave it to the cleanup process conmon starts
    // as the container dies, so it can end just after rm returns); the last endpoint takes
    // the network with it.
    p.ok(&["rm", "--force", "--time", "0", "uvt-pma", "uvt-pla"]);
    w.wait_for("one endpoint left on uvt-pmv", || {
        w.endpoint_addrs("uvt-pmv").len() == 1
    });
    p.ok(&["rm", "--force", "--time", "0", "uvt-pmb", "uvt-plb"]);
    w.wait_for("the networks' removal with their last endpoints", || {
        let left = w.networks();
        !left.contains("uvt-pmv") && !left.contains("uvt-pl3")
    });
    for net in ["uvt-pmv", "uvt-pl3"] {
        assert_eq!(w.held_addrs(net), Vec::<String>::new(), "{net}");
    }
}

// ---------------------------------------------------------------------------- containerd

/// A private containerd; `ctr` runs in a mount namespace that sees the test's CNI
/// directories at ctr's fixed paths.
struct Containerd {
    w: World,
    daemon: Option<Child>,
    /// `ctr run` processes still running (foreground runs, which do CNI DEL when they end).
    runs: Vec<Child>,
    /// The containerd namespace of the test's containers, also their cgroup (`/NS/ID`).
    ns: String,
}

impl Containerd {
    fn new() -> Containerd {
        require(&["/usr/bin/containerd", "/usr/bin/ctr", "/usr/sbin/runc"]);
        assert!(
            Path::new("/etc/cni/net.d").is_dir(),
            "/etc/cni/net.d is missing: ctr needs it as a mount point (podman's package creates it)"
        );
        let w = World::new();
        let d = w.dir().join("containerd");
        std::fs::create_dir_all(&d).unwrap();
        let config = format!(
            "version = 2\nroot = \"{root}\"\nstate = \"{state}\"\n\
             disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\
             [grpc]\n  address = \"{sock}\"\n[ttrpc]\n  address = \"{sock}.ttrpc\"\n",
            root = d.join("root").display(),
            state = d.join("state").display(),
            sock = d.join("containerd.sock").display(),
        );
        std::fs::write(d.join("config.toml"), config).unwrap();
        let log = std::fs::File::create(d.join("containerd.log")).unwrap();
        let child = Command::new("containerd")
            .arg("--config")
            .arg(d.join("config.toml"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let ns = w.tag();
        let c = Containerd {
            w,
            daemon: Some(child),
            runs: Vec::new(),
            ns,
        };
        let t = Instant::now();
        while !c.ctr_plain(&["version"]).status.success() {
            assert!(
                t.elapsed() < Duration::from_secs(30),
                "containerd did not answer within 30 s:\n{}",
                c.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        c
    }

    fn dir(&self) -> PathBuf {
        self.w.dir().join("containerd")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir().join("containerd.log")).unwrap_or_default()
    }

    /// `ctr` against the test's containerd, without CNI.
    fn ctr_plain(&self, args: &[&str]) -> Output {
        run(Command::new("ctr")
            .arg("--address")
            .arg(self.dir().join("containerd.sock"))
            .args(["--namespace", &self.ns])
            .args(args))
    }

    /// `ctr run --cni ...` in a private mount namespace where `/opt/cni/bin` is the test's
    /// plugin directory and `/etc/cni/net.d` its configuration directory.
    fn ctr_cni(&self, args: &[&str]) -> Command {
        let script = format!(
            "set -e; mount -t tmpfs uvlan-test /opt; mkdir -p /opt/cni/bin; \
             mount --bind '{bin}' /opt/cni/bin; mount --bind '{netd}' /etc/cni/net.d; \
             exec ctr --address '{sock}' --namespace {ns} \"$@\"",
            bin = self.w.dir().join("bin").display(),
            netd = self.w.dir().join("ctr-net.d").display(),
            sock = self.dir().join("containerd.sock").display(),
            ns = self.ns,
        );
        let mut cmd = Command::new("unshare");
        cmd.args([
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            &script,
            "ctr",
        ])
        .args(args)
        .env("UVLAN_SOCKET", self.w.socket());
        cmd
    }

    /// `ctr run --rm --cni` of the busybox rootfs: container `id` runs `cmd`.
    fn run_args<'a>(&'a self, rootfs: &'a str, id: &'a str, cmd: &[&'a str]) -> Vec<&'a str> {
        let mut args = vec![
            "run",
            "--rm",
            "--cni",
            "--rootfs",
            "--env",
            "PATH=/bin",
            rootfs,
            id,
        ];
        args.extend_from_slice(cmd);
        args
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        for id in ["uvt-ca", "uvt-cb"] {
            let _ = self.ctr_plain(&["task", "kill", "--signal", "SIGKILL", id]);
        }
        for mut r in self.runs.drain(..) {
            let t = Instant::now();
            while matches!(r.try_wait(), Ok(None)) && t.elapsed() < Duration::from_secs(10) {
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = r.kill();
            let _ = r.wait();
        }
        for id in ["uvt-ca", "uvt-cb"] {
            let _ = self.ctr_plain(&["task", "delete", "--force", id]);
            let _ = self.ctr_plain(&["container", "delete", id]);
        }
        if let Some(mut d) = self.daemon.take() {
            uvlan_control::nsutil::stop(&mut d, libc::SIGTERM, Duration::from_secs(10));
        }
        self.w.unmount_all();
        self.w.remove_cgroups(&self.ns);
    }
}

#[test]
fn containerd_ctr_run_with_cni() {
    let mut c = Containerd::new();
    let netd = c.w.dir().join("ctr-net.d");
    c.w.conflist(
        &netd,
        "10-uvt-ctr.conflist",
        &c.w.list(
            "uvt-ctr",
            json!({ "type": "uvlan-macvlan", "master": "p0", "vlan": 42, "mode": "bridge" }),
            "192.0.2.0/24",
        ),
    );
    let rootfs = c.w.dir().join("rootfs").to_string_lossy().into_owned();
    // A: a foreground `ctr run` left running (it does CNI DEL when its task ends).
    let args = c.run_args(&rootfs, "uvt-ca", &["/bin/sleep", "120"]);
    let a = c
        .ctr_cni(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    c.runs.push(a);
    c.w.wait_for("the first container's endpoint", || {
        c.w.networks().contains("uvt-ctr") && c.w.endpoint_addrs("uvt-ctr").len() == 1
    });
    let addr_a = c.w.endpoint_addrs("uvt-ctr").remove(0);
    // B pings A and ends; ctr removes its network.
    let probe = format!("for i in 1 2 3 4 5; do ping -c 1 -W 1 {addr_a} && exit 0; done; exit 1");
    let args = c.run_args(&rootfs, "uvt-cb", &["/bin/sh", "-c", &probe]);
    let b = run(&mut c.ctr_cni(&args));
    assert!(
        b.status.success(),
        "B cannot ping A ({addr_a}): {}{}\n--- daemon log ---\n{}\n--- containerd ---\n{}",
        text(&b.stdout),
        text(&b.stderr),
        c.w.daemon_log(),
        c.log()
    );
    assert_eq!(c.w.endpoint_addrs("uvt-ctr"), std::slice::from_ref(&addr_a));
    // A's task killed: its ctr run does CNI DEL; the network and its addresses go.
    let k = c.ctr_plain(&["task", "kill", "--signal", "SIGKILL", "uvt-ca"]);
    assert!(k.status.success(), "ctr task kill: {}", text(&k.stderr));
    let a = c.runs.pop().unwrap();
    let out = a.wait_with_output().unwrap();
    assert!(
        !text(&out.stderr).contains("network review"),
        "ctr could not remove A's network: {}",
        text(&out.stderr)
    );
    c.w.wait_for("the network's removal", || {
        !c.w.networks().contains("uvt-ctr")
    });
    assert_eq!(c.w.held_addrs("uvt-ctr"), Vec::<String>::new());
}
