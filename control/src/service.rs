//! The service root: `uvlan daemon` starts the daemon and its front ends (the API listener
//! loop, the Docker plugin server, the watcher of the host's interfaces that parents follow)
//! and wires them together; it stops on SIGINT/SIGTERM. The daemon knows none of its front
//! ends: each depends on a narrow interface the daemon offers (the API's requests; for the
//! Docker driver, [`crate::docker::DaemonApi`]), and only this module joins the two.
//!
//! Shutdown leaves every endpoint in place: TAPs are persistent and a fast-path endpoint's
//! veth pair outlives the process, so the namespaces keep their `eth0` (without carrier, or
//! forwarding nothing) until the next daemon re-attaches and traffic resumes.

use std::os::fd::AsFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::Arc;

use uvlan_dataplane::run::{IoMode, RunOptions, WireBackend};

use crate::api::{self, ListenError};
use crate::daemon::dp::DataplaneApi;
use crate::daemon::host::RtnlHost;
use crate::daemon::real::RunDataplane;
use crate::daemon::{Daemon, StartError};
use crate::logger::Logger;
use crate::store::{Store, StoreError};

/// Errors that stop the daemon.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// Not root.
    #[error(
        "uvlan daemon must run as root (it creates namespaces' interfaces and opens the wire)"
    )]
    NotRoot,
    /// The store cannot be used.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The stored state cannot be restored.
    #[error(transparent)]
    Start(#[from] StartError),
    /// The host namespace cannot be read.
    #[error("cannot read the host's interfaces: {0}")]
    Host(String),
    /// The socket cannot be set up.
    #[error(transparent)]
    Listen(#[from] ListenError),
    /// The dataplane cannot start.
    #[error("cannot start the dataplane: {0}")]
    Dataplane(String),
    /// `--fast-path on` on a kernel that cannot run it.
    #[error("--fast-path on: the fast path cannot run here: {0} (use --fast-path auto or off)")]
    FastPath(String),
    /// The Docker plugin sockets cannot be served.
    #[error(transparent)]
    DockerPlugin(#[from] crate::docker::PluginError),
    /// `/metrics` cannot be served.
    #[error(transparent)]
    Metrics(#[from] crate::metrics::http::MetricsError),
}

/// The read end of the stop pipe: SIGINT and SIGTERM write a byte to its other end
/// (signal-hook's self-pipe), so the API loop sleeps in one `poll` on the listener and this
/// end, without a timeout.
fn stop_on_signals() -> std::io::Result<UnixStream> {
    let (rx, tx) = UnixStream::pair()?;
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::low_level::pipe::register(sig, tx.try_clone()?)?;
    }
    rx.set_nonblocking(true)?;
    Ok(rx)
}

/// The dataplane this build uses: the real workers, opening parents with the options'
/// backend, on the options' I/O path.
/// `fast`: the fast path is on, so parents' XDP filters get its wire cache.
fn make_dataplane(opts: &DaemonOptions, fast: bool) -> Result<Arc<dyn DataplaneApi>, DaemonError> {
    let dp = RunDataplane::spawn_with(RunOptions {
        wire_backend: opts.wire_backend,
        xdp: uvlan_dataplane::port::xsk::XdpOptions {
            wire_cache: fast,
            ..Default::default()
        },
        io: opts.io,
        workers: opts.workers.max(1),
        busy_poll: opts.busy_poll,
        tap_filter: opts.tap_filter,
        storm_share: opts.storm_share,
        ..RunOptions::default()
    })
    .map_err(DaemonError::Dataplane)?;
    Ok(Arc::new(dp))
}

/// How the daemon runs besides its API: as Docker's remote network driver, which wire
/// backend opens parents, which I/O path and how many dataplane workers
/// (`uvlan daemon --docker-plugin --wire-backend ... --io ... --workers N`).
#[derive(Debug, Clone)]
pub struct DaemonOptions {
    /// Serve Docker's remote network driver sockets.
    pub docker: Option<crate::docker::PluginConfig>,
    /// How parents are opened.
    pub wire_backend: WireBackend,
    /// Serve `/metrics` on this address (`--metrics`); the flag says whether a
    /// non-loopback address is allowed (`--metrics-allow-remote`).
    pub metrics: Option<(std::net::SocketAddr, bool)>,
    /// The dataplane's I/O path.
    pub io: IoMode,
    /// Dataplane worker threads.
    pub workers: usize,
    /// How long a worker spins for work before it sleeps (`--busy-poll`); `None`: it sleeps
    /// at once.
    pub busy_poll: Option<std::time::Duration>,
    /// Whether new endpoints are fast-path (veth) endpoints.
    pub fast_path: FastPathMode,
    /// Whether endpoints' TAPs get prefilters (`--tap-filter`, see
    /// `uvlan_dataplane::port::tap_filter`).
    pub tap_filter: bool,
    /// Storm control: the share of a worker's time, in percent, a flooding endpoint may take
    /// (`--storm-share`, `uvlan_dataplane::run::RunOptions::storm_share`).
    pub storm_share: u8,
}

/// `uvlan daemon --fast-path`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FastPathMode {
    /// When the kernel allows it.
    Auto,
    /// Always; the daemon does not start without it.
    On,
    /// Never (TAP endpoints).
    #[default]
    Off,
}

/// Whether this kernel runs the fast path: its programs load (the verifier knows
/// `bpf_redirect_peer`) and attach at tcx ingress of a veth, tried in a scratch namespace.
pub fn fast_path_available() -> Result<(), String> {
    let r = uvlan_dataplane::port::probe::in_scratch_netns(|| {
        let mut rt = crate::netns::Netns::current()
            .and_then(|h| crate::netns::Rtnl::open(&h).map(|r| (h, r)));
        match &mut rt {
            Ok((h, r)) => {
                r.link_add_veth("uvfp0", "uvfp1", h.fd())
                    .map_err(|e| format!("cannot create a veth pair: {e}"))?;
                uvlan_dataplane::port::probe::fast_path("uvfp0").map_err(|e| e.to_string())
            }
            Err(e) => Err(format!("cannot reach a scratch namespace: {e}")),
        }
    });
    r.map_err(|e| format!("no scratch namespace: {e}"))?
}

impl Default for DaemonOptions {
    fn default() -> Self {
        DaemonOptions {
            docker: None,
            wire_backend: WireBackend::default(),
            io: IoMode::default(),
            workers: 1,
            busy_poll: None,
            metrics: None,
            fast_path: FastPathMode::Off,
            tap_filter: true,
            storm_share: RunOptions::default().storm_share,
        }
    }
}

/// The daemon as the Docker front end sees it.
impl crate::docker::DaemonApi for Daemon {
    fn handle(&self, req: api::Request) -> api::Response {
        Daemon::handle(self, req)
    }

    fn managed_networks(&self, owner: &str) -> Vec<(String, String)> {
        Daemon::managed_networks(self, owner)
    }

    fn rename_managed(&self, id: &str, owner: &str, name: &str) -> Result<bool, String> {
        Daemon::rename_managed(self, id, owner, name)
    }
}

/// Runs the daemon until SIGINT/SIGTERM.
pub fn run_daemon(
    root: &Path,
    socket: &Path,
    opts: &DaemonOptions,
    log: Logger,
) -> Result<(), DaemonError> {
    if !crate::sys::is_root() {
        return Err(DaemonError::NotRoot);
    }
    if let Some((addr, false)) = opts.metrics {
        if !addr.ip().is_loopback() {
            return Err(crate::metrics::http::MetricsError::NotLoopback(addr).into());
        }
    }
    // Every endpoint holds a few descriptors (see `FDS_PER_ENDPOINT` in the daemon): the
    // soft limit (1,024 under systemd's default) would stop it at a few hundred.
    match crate::sys::raise_nofile_limit() {
        Ok((old, new)) if old != new => log(&format!(
            "open-file limit (RLIMIT_NOFILE) raised from {old} to the hard limit {new}"
        )),
        Ok((_, new)) => log(&format!("open-file limit (RLIMIT_NOFILE): {new}")),
        Err(e) => log(&format!(
            "cannot raise the open-file limit (RLIMIT_NOFILE): {e}"
        )),
    }
    let store = Store::open(root)?;
    let _lock = store.lock()?;
    let host = RtnlHost::open().map_err(DaemonError::Host)?;
    let backend = opts.wire_backend;
    let fast = match opts.fast_path {
        FastPathMode::Off => false,
        mode => match fast_path_available() {
            Ok(()) => true,
            Err(e) if mode == FastPathMode::On => return Err(DaemonError::FastPath(e)),
            Err(e) => {
                log(&format!("fast path: off ({e})"));
                false
            }
        },
    };
    let dp = make_dataplane(opts, fast)?;
    log(&format!(
        "dataplane: {} (wire backend: {backend:?})",
        dp.describe()
    ));
    let daemon = Daemon::start(store, Box::new(host), dp, log.clone(), fast)?;
    if fast {
        log("fast path: on (new endpoints, of `network connect`, Docker and CNI alike, are veth endpoints)");
        if backend != WireBackend::AfPacket && !uvlan_dataplane::port::probe::xdp_metadata() {
            log(
                "fast path: wire → endpoint frames of AF_XDP parents take the slow path (this \
                 kernel refuses bpf_xdp_adjust_meta to XDP programs; AF_PACKET parents keep \
                 their wire cache: start the daemon with `--wire-backend af_packet` to use \
                 them)",
            );
        }
    }
    // Endpoints follow their parents' changes. The watcher is served by the process-wide
    // watcher hub (no thread of its own); declared after `daemon`, it is dropped first, and
    // once dropped its callback is never called again.
    let weak = Arc::downgrade(&daemon);
    let _parents = crate::netns::Netns::current()
        .and_then(|ns| {
            crate::netns::ChangeWatcher::links(&ns, move || {
                if let Some(d) = weak.upgrade() {
                    d.reconcile_parents();
                }
            })
        })
        .map_err(|e| DaemonError::Host(format!("cannot watch the host's interfaces: {e}")))?;
    // What changed between the start-up reconcile and the subscription.
    daemon.reconcile_parents();
    let listener = api::listen(socket)?;
    let plugin = match &opts.docker {
        Some(cfg) => {
            let p = crate::docker::serve(daemon.clone(), cfg, log.clone())?;
            for s in p.sockets() {
                log(&format!("Docker network driver on {}", s.display()));
            }
            Some(p)
        }
        None => None,
    };
    let _metrics = match opts.metrics {
        Some((addr, allow_remote)) => {
            let d = daemon.clone();
            let m = crate::metrics::http::MetricsServer::start(
                addr,
                allow_remote,
                Box::new(move || d.stats(&[])),
            )?;
            log(&format!("metrics on http://{}/metrics", m.local_addr()));
            Some(m)
        }
        None => None,
    };
    let stop = stop_on_signals().map_err(|source| ListenError::Io {
        op: "set up the stop signals (SIGINT, SIGTERM) for",
        path: socket.to_path_buf(),
        source,
    })?;
    listener
        .set_nonblocking(true)
        .map_err(|source| ListenError::Io {
            op: "configure",
            path: socket.to_path_buf(),
            source,
        })?;
    log(&format!(
        "listening on {} (state in {})",
        socket.display(),
        root.display()
    ));
    serve_api(&listener, &stop, &daemon, &log);
    log("stopping; endpoints stay in place (their TAPs are persistent, fast-path veth pairs stay)");
    // Fast-path endpoints disconnected just before the stop: their interfaces go first.
    if !crate::daemon::endpoint::wait_fast_closed(std::time::Duration::from_secs(10)) {
        log("some fast-path interfaces were still being deleted at the stop");
    }
    drop(plugin);
    let _ = std::fs::remove_file(socket);
    Ok(())
}

/// The API listener loop: one thread per connection, until SIGINT/SIGTERM writes to `stop`.
/// It sleeps in `poll` on both without a timeout: nothing wakes it up while nothing happens.
fn serve_api(listener: &UnixListener, stop: &UnixStream, daemon: &Arc<Daemon>, log: &Logger) {
    loop {
        let ready = match crate::sys::wait_any_readable(&[listener.as_fd(), stop.as_fd()], -1) {
            Ok(r) => r,
            Err(e) => {
                log(&format!("waiting for API connections: {e}; stopping"));
                return;
            }
        };
        if ready.get(1).copied().unwrap_or(false) {
            return;
        }
        if !ready.first().copied().unwrap_or(false) {
            continue;
        }
        match listener.accept() {
            Ok((stream, _)) => {
                let _ = stream.set_nonblocking(false);
                let d = daemon.clone();
                let spawned = std::thread::Builder::new()
                    .name("uvlan-api".to_string())
                    .spawn(move || api::serve(stream, &*d));
                if let Err(e) = spawned {
                    log(&format!("cannot start a connection thread: {e}"));
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => log(&format!("accept: {e}")),
        }
    }
}
