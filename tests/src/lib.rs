//! Shared helpers for uvlan's system tests: a private daemon in its own namespace, test
//! namespaces with a unique prefix, the real `uvlan` binary, real `ping`. Everything a test
//! creates is deleted when its guard drops, also when the test fails.
//!
//! The namespace plumbing that `uvlan lab` needs as well (the namespace guard, veth pairs,
//! commands inside a namespace, stopping a child, a listening tcpdump) is
//! [`uvlan_control::nsutil`]; what is here builds test worlds and topologies on top of it.

pub mod capture;
pub mod dnsmasq;
pub mod net;
pub mod trunk;

pub use capture::Capture;
pub use net::{Backend, Lan, LanOptions, Switch, BACKENDS};
pub use trunk::VlanTrunk;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use uvlan_control::nsutil::{self, in_netns, sh_in, Namespaces};

/// The `uvlan` binary built by cargo next to this test (`target/<profile>/uvlan`).
pub fn uvlan_bin() -> PathBuf {
    if let Ok(p) = std::env::var("UVLAN_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test>-<hash> → target/<profile>/uvlan
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let bin = dir.join("uvlan");
    assert!(
        bin.exists(),
        "{} is missing: build it first with `cargo build -p uvlan-control` (scripts/test.sh does)",
        bin.display()
    );
    bin
}

/// Panics with a clear message unless running as root.
pub fn require_root() {
    assert!(
        uvlan_control::sys::is_root(),
        "system tests need root: run scripts/test.sh with sudo"
    );
}

static SEQ: AtomicUsize = AtomicUsize::new(0);

/// A unique short prefix for this test's namespaces (`uvt<pid><n>-`).
pub fn prefix() -> String {
    format!(
        "uvt{}{}-",
        std::process::id() % 100_000,
        SEQ.fetch_add(1, Ordering::SeqCst)
    )
}

/// Runs a command, returning its output (never panics on failure).
pub fn sh(cmd: &mut Command) -> Output {
    cmd.stdin(Stdio::null()).output().expect("spawn command")
}

/// One call of Docker's plugin protocol (HTTP/1.1 over the plugin's unix socket `sock`, as
/// dockerd makes it): `method` (e.g. `NetworkDriver.Join`) with `body`; the JSON answer, or
/// `None` when there is none (the daemon is not there, or died under the call).
pub fn plugin_call(
    sock: &Path,
    method: &str,
    body: &serde_json::Value,
) -> Option<serde_json::Value> {
    use std::io::{Read, Write};
    let mut s = std::os::unix::net::UnixStream::connect(sock).ok()?;
    let _ = s.set_read_timeout(Some(Duration::from_secs(30)));
    let body = body.to_string();
    let req = format!(
        "POST /{method} HTTP/1.1\r\nHost: plugin\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).ok()?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).ok()?;
    let raw = String::from_utf8_lossy(&raw);
    let (_, body) = raw.split_once("\r\n\r\n")?;
    serde_json::from_str(body).ok()
}

/// The daemon options a whole suite runs with, from the environment: the dataplane's I/O
/// path (`UVLAN_TEST_IO=plain|uring|auto`), its worker count (`UVLAN_TEST_WORKERS=N`) and the
/// fast path (`UVLAN_TEST_FAST_PATH=on|off|auto`); unset, the daemon's defaults. Every system
/// suite that starts a daemon passes [`SuiteOptions::args`] and checks its log with
/// [`SuiteOptions::check_log`] ([`World`] does; the Docker test, whose daemon runs beside a
/// dockerd, too).
#[derive(Debug, Clone, Default)]
pub struct SuiteOptions {
    io: String,
    workers: String,
    fast: String,
}

impl SuiteOptions {
    /// The options from the environment; a test that picks its own `--io`, `--workers` or
    /// `--fast-path` (one of `own`, the daemon arguments it passes) keeps it.
    pub fn from_env(own: &[String]) -> SuiteOptions {
        let pick = |var: &str, flag: &str| {
            if own.iter().any(|a| a == flag) {
                String::new()
            } else {
                std::env::var(var).unwrap_or_default()
            }
        };
        SuiteOptions {
            io: pick("UVLAN_TEST_IO", "--io"),
            workers: pick("UVLAN_TEST_WORKERS", "--workers"),
            fast: pick("UVLAN_TEST_FAST_PATH", "--fast-path"),
        }
    }

    /// The daemon arguments (`--io`, `--workers`, `--fast-path`) for the options set.
    pub fn args(&self) -> Vec<String> {
        [
            ("--io", &self.io),
            ("--workers", &self.workers),
            ("--fast-path", &self.fast),
        ]
        .into_iter()
        .filter(|(_, v)| !v.is_empty())
        .flat_map(|(f, v)| [f.to_string(), v.clone()])
        .collect()
    }

    /// True when the suite asked for the fast path (`UVLAN_TEST_FAST_PATH=on`): new
    /// endpoints are veth endpoints.
    pub fn fast_path_on(&self) -> bool {
        self.fast == "on"
    }

    /// Checks the daemon's log (`log`, read once its socket is up: the daemon logs both
    /// before it listens) says it runs on the I/O path and with the fast path asked for, so
    /// the suite really runs as it claims.
    pub fn check_log(&self, log: &str) -> Result<(), String> {
        let want = match self.io.as_str() {
            "plain" => Some("epoll"),
            "uring" => Some("io_uring"),
            _ => None,
        };
        if let Some(word) = want {
            if !log
                .lines()
                .any(|l| l.contains("dataplane:") && l.contains(word))
            {
                return Err(format!(
                    "UVLAN_TEST_IO={}: the daemon does not say it uses {word}:\n{log}",
                    self.io
                ));
            }
        }
        if self.fast_path_on() && !log.lines().any(|l| l.contains("fast path: on")) {
            return Err(format!(
                "UVLAN_TEST_FAST_PATH=on: the daemon does not say the fast path is on:\n{log}"
            ));
        }
        Ok(())
    }
}

/// A test world: a daemon with its own state, running in its own `host` namespace, and the
/// namespaces the test makes. Dropping it kills the daemon and deletes everything.
pub struct World {
    /// Namespace-name prefix.
    pub prefix: String,
    /// State directory (root and socket).
    pub dir: PathBuf,
    namespaces: Namespaces,
    daemon: Option<Child>,
    backend: Option<Backend>,
    daemon_args: Vec<String>,
}

impl World {
    /// A world with a running daemon (wire backend `auto`).
    pub fn new() -> World {
        World::build(None, true)
    }

    /// A world whose daemon opens parents with `backend` only
    /// (`uvlan daemon --wire-backend`).
    pub fn with_backend(backend: Backend) -> World {
        World::build(Some(backend), true)
    }

    /// A world with its `host` namespace but no daemon (kernel-only topologies).
    pub fn without_daemon() -> World {
        World::build(None, false)
    }

    /// A world whose daemon gets these extra arguments (e.g. `--metrics 127.0.0.1:9464`,
    /// served inside the `host` namespace).
    pub fn with_daemon_args(args: &[&str]) -> World {
        let mut w = World::build(None, false);
        w.daemon_args = args.iter().map(|a| a.to_string()).collect();
        w.start_daemon();
        w
    }

    /// A world whose daemon is forced to wire backend `backend` and gets these extra
    /// arguments (e.g. `--fast-path on`).
    pub fn with_backend_and_args(backend: Backend, args: &[&str]) -> World {
        let mut w = World::build(Some(backend), false);
        w.set_daemon_args(args);
        w.start_daemon();
        w
    }

    fn build(backend: Option<Backend>, daemon: bool) -> World {
        require_root();
        let prefix = prefix();
        let dir = std::env::temp_dir().join(format!("{prefix}state"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("state dir");
        let mut w = World {
            namespaces: Namespaces::new(prefix.clone()),
            prefix,
            dir,
            daemon: None,
            backend,
            daemon_args: Vec::new(),
        };
        w.netns("host");
        if daemon {
            w.start_daemon();
        }
        w
    }

    /// A world whose daemon also serves Docker's plugin sockets in [`World::plugin_socket`]'s
    /// folder, without dockerd (`--docker-host` names a socket that is not there); `extra`
    /// are more daemon arguments (e.g. `--fast-path on`).
    pub fn with_docker_plugin(extra: &[&str]) -> World {
        let mut w = World::build(None, false);
        let plugin_dir = w.dir.join("plugins").display().to_string();
        let mut args = extra.to_vec();
        args.extend_from_slice(&[
            "--docker-plugin",
            "--docker-plugin-dir",
            &plugin_dir,
            "--docker-host",
            "unix:///nonexistent/docker.sock",
        ]);
        w.set_daemon_args(&args);
        w.start_daemon();
        w
    }

    /// The socket of the daemon's Docker plugin `driver` (`uvlan-macvlan`, `uvlan-ipvlan`)
    /// in a world made with [`World::with_docker_plugin`].
    pub fn plugin_socket(&self, driver: &str) -> PathBuf {
        self.dir.join("plugins").join(format!("{driver}.sock"))
    }

    /// Arguments every later start of the daemon gets besides `--root` and `--socket`
    /// (e.g. `--docker-plugin`).
    pub fn set_daemon_args(&mut self, args: &[&str]) {
        self.daemon_args = args.iter().map(|a| a.to_string()).collect();
    }

    /// The full name of test namespace `name`.
    pub fn ns(&self, name: &str) -> String {
        self.namespaces.full(name)
    }

    /// Creates namespace `name` (with `lo` up) and returns its full name.
    pub fn netns(&mut self, name: &str) -> String {
        self.namespaces.add(name).unwrap_or_else(|e| panic!("{e}"))
    }

    /// A parent with a wire behind it: the veth `p0` in the `host` namespace, its peer `p1`
    /// in a new test namespace `w`, both up; the full name of `w`. Panics when `ip` fails.
    pub fn wired_parent(&mut self) -> String {
        let h = self.ns("host");
        let wire = self.netns("w");
        for args in [
            vec![
                "-n", &h, "link", "add", "p0", "type", "veth", "peer", "name", "p1", "netns", &wire,
            ],
            vec!["-n", &h, "link", "set", "p0", "up"],
            vec!["-n", &wire, "link", "set", "p1", "up"],
        ] {
            let o = sh(Command::new("ip").args(&args));
            assert!(
                o.status.success(),
                "ip {args:?}: {}",
                String::from_utf8_lossy(&o.stderr)
            );
        }
        wire
    }

    /// The daemon's socket.
    pub fn socket(&self) -> PathBuf {
        self.dir.join("uvlan.sock")
    }

    /// Starts the daemon inside the `host` namespace and waits for its socket.
    pub fn start_daemon(&mut self) {
        self.start_daemon_under(&[]);
    }

    /// Like [`World::start_daemon`], with the daemon run by a command that execs it in place
    /// (`prefix`, e.g. `["prlimit", "--nofile=64:64", "--"]`), so its pid stays the daemon's.
    pub fn start_daemon_under(&mut self, prefix: &[&str]) {
        let _ = std::fs::remove_file(self.socket());
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("daemon.log"))
            .expect("daemon log");
        let mut cmd = match prefix.split_first() {
            None => in_netns(&self.ns("host"), uvlan_bin()),
            Some((prog, args)) => {
                let mut c = in_netns(&self.ns("host"), prog);
                c.args(args).arg(uvlan_bin());
                c
            }
        };
        cmd.arg("daemon")
            .arg("--root")
            .arg(self.dir.join("root"))
            .arg("--socket")
            .arg(self.socket());
        if let Some(b) = self.backend {
            cmd.args(["--wire-backend", b.arg()]);
        }
        cmd.args(&self.daemon_args);
        let suite = SuiteOptions::from_env(&self.daemon_args);
        cmd.args(suite.args());
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start uvlan daemon");
        self.daemon = Some(child);
        let t = Instant::now();
        while !self.socket().exists() {
            assert!(
                t.elapsed() < Duration::from_secs(15),
                "daemon did not start: {}",
                self.daemon_log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        if let Err(e) = suite.check_log(&self.daemon_log()) {
            panic!("{e}");
        }
    }

    /// Kills the daemon with `signal` and reaps it.
    pub fn kill_daemon(&mut self, signal: libc::c_int) {
        if let Some(mut d) = self.daemon.take() {
            nsutil::stop(&mut d, signal, Duration::from_secs(5));
        }
    }

    /// The daemon's pid (`ip netns exec` execs it in place).
    pub fn daemon_pid(&self) -> u32 {
        self.daemon.as_ref().map(Child::id).expect("daemon running")
    }

    /// How many file descriptors the daemon holds.
    pub fn daemon_fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.daemon_pid()))
            .map(|d| d.count())
            .unwrap_or(0)
    }

    /// What the daemon logged.
    pub fn daemon_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("daemon.log")).unwrap_or_default()
    }

    /// Runs `uvlan ARGS` against this world's daemon.
    pub fn uvlan(&self, args: &[&str]) -> Output {
        sh(Command::new(uvlan_bin())
            .args(args)
            .env("UVLAN_SOCKET", self.socket())
            .env("UVLAN_ROOT", self.dir.join("root")))
    }

    /// Runs `uvlan ARGS` and panics (with stderr and the daemon log) unless it succeeds.
    pub fn uvlan_ok(&self, args: &[&str]) -> String {
        let o = self.uvlan(args);
        assert!(
            o.status.success(),
            "uvlan {} failed: {}\n--- daemon log ---\n{}",
            args.join(" "),
            String::from_utf8_lossy(&o.stderr),
            self.daemon_log()
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// Runs a shell command inside test namespace `name`.
    pub fn exec(&self, name: &str, cmd: &str) -> Output {
        sh(&mut sh_in(&self.ns(name), cmd))
    }

    /// Pings `addr` from namespace `name`: `tries` probes of one second each, true on the
    /// first answer.
    pub fn ping(&self, name: &str, addr: &str, tries: u32) -> bool {
        let fam = if addr.contains(':') { "-6" } else { "-4" };
        (0..tries).any(|_| {
            sh(
                in_netns(&self.ns(name), "ping")
                    .args([fam, "-n", "-q", "-c", "1", "-W", "1", addr]),
            )
            .status
            .success()
        })
    }
}

impl Default for World {
    fn default() -> World {
        World::new()
    }
}

impl Drop for World {
    fn drop(&mut self) {
        self.kill_daemon(libc::SIGTERM);
        self.namespaces.delete_all();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
