//! The Docker remote network driver: `uvlan daemon --docker-plugin` serves
//! `uvlan-ipvlan.sock` and `uvlan-macvlan.sock` in Docker's plugin directory
//! (`/run/docker/plugins` by default), so `docker network create -d uvlan-ipvlan ...` takes
//! exactly the built-in drivers' options.
//!
//! Docker does the IPAM: each Docker network is a managed uvlan network (see
//! `daemon::managed`) with Docker's ID, subnets, gateways and endpoint addresses. The
//! exception is `--ipam-driver null -o uvlan.ipam=dhcp`: the daemon leases each endpoint's
//! address from the LAN's DHCP server at CreateEndpoint and the driver answers it to Docker. At Join
//! the daemon makes a TAP in its own namespace, Docker moves it into the container and
//! renames it `ethN`; the daemon keeps serving it (the fd follows the device) and follows it
//! into the sandbox. Docker does not send network names: a network shows in `uvlan network
//! ls` under its 12-hex short ID until the driver learns Docker's name from Docker's API
//! (`--docker-host`), then under that name.

pub mod driver;
pub mod http;
mod names;

use std::io::BufReader;
use std::os::fd::AsFd;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use uvlan_dataplane::fwd::Driver;

use crate::api::{Request, Response};
use crate::logger::Logger;

pub use driver::{plugin_name, Backend, Reply};

/// Docker's plugin socket directory.
pub const DEFAULT_PLUGIN_DIR: &str = "/run/docker/plugins";
/// Docker's API socket when neither `--docker-host` nor `$DOCKER_HOST` says otherwise.
pub const DEFAULT_DOCKER_HOST: &str = "unix:///var/run/docker.sock";

/// How the Docker front end is set up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PluginConfig {
    /// Where the plugin sockets go.
    pub dir: PathBuf,
    /// Docker's API socket (`unix://PATH`), to learn network names.
    pub docker_host: String,
}

impl PluginConfig {
    /// The configuration from the daemon's flags: `--docker-plugin-dir` (default
    /// [`DEFAULT_PLUGIN_DIR`]) and `--docker-host`, else `$DOCKER_HOST`, else
    /// [`DEFAULT_DOCKER_HOST`].
    pub fn from_flags(dir: Option<&Path>, docker_host: Option<&str>) -> PluginConfig {
        PluginConfig {
            dir: dir.map_or_else(|| PathBuf::from(DEFAULT_PLUGIN_DIR), Path::to_path_buf),
            docker_host: docker_host
                .map(str::to_string)
                .or_else(|| std::env::var("DOCKER_HOST").ok())
                .unwrap_or_else(|| DEFAULT_DOCKER_HOST.to_string()),
        }
    }
}

/// Errors starting the plugin.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    /// Another process serves the socket.
    #[error(
        "another process already serves the Docker plugin socket {0}: stop it first (only one \
         uvlan daemon can be Docker's uvlan driver), or use --docker-plugin-dir"
    )]
    InUse(PathBuf),
    /// A system call failed.
    #[error("cannot {op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The path.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// `--docker-host` is not a unix socket address.
    #[error(
        "unsupported Docker host {0:?}: uvlan talks to Docker over a unix socket \
         (unix:///PATH)"
    )]
    DockerHost(String),
}

/// What the Docker front end needs from the daemon: its requests, and the names of the
/// networks Docker manages. The daemon offers it (the service root hands it over); the
/// front end never reaches into the daemon otherwise.
pub trait DaemonApi: Send + Sync {
    /// Serves one daemon request.
    fn handle(&self, req: Request) -> Response;
    /// The managed networks of `owner`, as `(id, name)`.
    fn managed_networks(&self, owner: &str) -> Vec<(String, String)>;
    /// Renames a managed network (the driver shows Docker's name once it learns it).
    /// Answers false when the name is taken by another network (the name stays).
    fn rename_managed(&self, id: &str, owner: &str, name: &str) -> Result<bool, String>;
}

/// The daemon as the driver's backend.
struct DaemonBackend {
    daemon: Arc<dyn DaemonApi>,
    names: names::NameLearner,
}

impl Backend for DaemonBackend {
    fn call(&self, req: Request) -> Response {
        self.daemon.handle(req)
    }

    fn network_created(&self, id: &str) {
        self.names.learn(vec![id.to_string()]);
    }

    fn learn_names_now(&self) {
        self.names.learn_now();
    }
}

/// The running plugin: its sockets are removed when it is dropped.
pub struct PluginServer {
    /// Closed on drop: the accept loops wait on its peer (readable at end of file) along with
    /// their listener, so they need no timeout to notice.
    stop: Option<UnixStream>,
    sockets: Vec<PathBuf>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl PluginServer {
    /// The socket paths served.
    pub fn sockets(&self) -> &[PathBuf] {
        &self.sockets
    }
}

impl Drop for PluginServer {
    fn drop(&mut self) {
        drop(self.stop.take());
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        for s in &self.sockets {
            let _ = std::fs::remove_file(s);
        }
    }
}

fn bind(path: &Path) -> Result<UnixListener, PluginError> {
    let ioe = |op: &'static str, p: &Path| {
        let p = p.to_path_buf();
        move |source| PluginError::Io {
            op,
            path: p,
            source,
        }
    };
    if let Some(dir) = path.parent() {
        if !dir.exists() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o755)
                .create(dir)
                .map_err(ioe("create the plugin directory", dir))?;
        }
    }
    if std::fs::symlink_metadata(path).is_ok() {
        if UnixStream::connect(path).is_ok() {
            return Err(PluginError::InUse(path.to_path_buf()));
        }
        std::fs::remove_file(path).map_err(ioe("remove the stale socket", path))?;
    }
    let l = UnixListener::bind(path).map_err(ioe("bind the plugin socket", path))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(ioe("set mode 0600 on", path))?;
    l.set_nonblocking(true)
        .map_err(ioe("configure the plugin socket", path))?;
    Ok(l)
}

/// Starts serving both plugin sockets for `daemon`.
pub fn serve(
    daemon: Arc<dyn DaemonApi>,
    cfg: &PluginConfig,
    log: Logger,
) -> Result<PluginServer, PluginError> {
    let docker_sock = cfg
        .docker_host
        .strip_prefix("unix://")
        .map(PathBuf::from)
        .ok_or_else(|| PluginError::DockerHost(cfg.docker_host.clone()))?;
    let names = names::NameLearner::new(daemon.clone(), docker_sock, log.clone());
    // Networks still named by their short ID (made while Docker's API was unreachable).
    let unnamed = names.unnamed();
    if !unnamed.is_empty() {
        names.learn(unnamed);
    }
    let backend: Arc<dyn Backend> = Arc::new(DaemonBackend { daemon, names });
    let pipe_err = |source| PluginError::Io {
        op: "create the stop pipe for",
        path: cfg.dir.clone(),
        source,
    };
    let (stop_tx, stop_rx) = UnixStream::pair().map_err(pipe_err)?;
    let mut server = PluginServer {
        stop: Some(stop_tx),
        sockets: Vec::new(),
        threads: Vec::new(),
    };
    for driver in [Driver::Ipvlan, Driver::Macvlan] {
        let path = cfg.dir.join(format!("{}.sock", plugin_name(driver)));
        let listener = bind(&path)?;
        server.sockets.push(path.clone());
        let stop = stop_rx.try_clone().map_err(pipe_err)?;
        let (backend, log) = (backend.clone(), log.clone());
        let t = std::thread::Builder::new()
            .name(format!("uvlan-{}", plugin_name(driver)))
            .spawn(move || accept_loop(listener, driver, backend, stop, log))
            .map_err(|source| PluginError::Io {
                op: "start the thread for",
                path,
                source,
            })?;
        server.threads.push(t);
    }
    Ok(server)
}

fn accept_loop(
    listener: UnixListener,
    driver: Driver,
    backend: Arc<dyn Backend>,
    stop: UnixStream,
    log: Logger,
) {
    loop {
        // No timeout: the server's drop closes the other end of `stop`.
        let ready = match crate::sys::wait_any_readable(&[listener.as_fd(), stop.as_fd()], -1) {
            Ok(r) => r,
            Err(e) => {
                log(&format!(
                    "docker plugin: waiting for connections: {e}; stopping"
                ));
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
                let (backend, conn_log) = (backend.clone(), log.clone());
                let spawned = std::thread::Builder::new()
                    .name("uvlan-docker-conn".to_string())
                    .spawn(move || serve_connection(stream, driver, &*backend, &conn_log));
                if let Err(e) = spawned {
                    log(&format!(
                        "docker plugin: cannot start a connection thread: {e}"
                    ));
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => log(&format!("docker plugin: accept: {e}")),
        }
    }
}

/// How long a refused connection is drained before it is closed.
const LINGER: Duration = Duration::from_millis(500);
/// The most bytes drained from a refused connection.
const LINGER_BYTES: usize = 64 * 1024;

/// Closes a connection after an error answer: shuts the sending side, then reads and drops
/// what the client still sends (briefly), so the close does not reset the connection before
/// the client has read the answer (the "lingering close" of RFC 9112 §9.6).
fn linger_close(stream: &UnixStream) {
    let _ = stream.shutdown(std::net::Shutdown::Write);
    let _ = stream.set_read_timeout(Some(LINGER));
    let mut sink = [0u8; 4096];
    let mut drained = 0;
    let mut r = stream;
    while drained < LINGER_BYTES {
        match std::io::Read::read(&mut r, &mut sink) {
            Ok(0) | Err(_) => break,
            Ok(n) => drained += n,
        }
    }
}

/// Serves one connection from Docker: requests until it closes (keep-alive). Only root
/// (dockerd) is served. A request that cannot be read (see [`http::read_request`]) is
/// answered with its error status and closes the connection.
pub fn serve_connection(stream: UnixStream, driver: Driver, backend: &dyn Backend, log: &Logger) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(300)));
    let root = matches!(crate::api::peer_uid(&stream), Ok(0));
    let mut reader = BufReader::new(&stream);
    let mut writer = &stream;
    loop {
        let req = match http::read_request(&mut reader) {
            Ok(r) => r,
            Err(http::HttpError::Closed) => return,
            Err(e) => {
                // A request that cannot be read, or whose framing is ambiguous: answer, then
                // close, so nothing after it on this connection is taken for a request.
                log(&format!("docker {}: {e}", plugin_name(driver)));
                let body = serde_json::json!({ "Err": e.to_string() }).to_string();
                let _ = http::write_response(&mut writer, e.status(), body.as_bytes(), true);
                linger_close(&stream);
                return;
            }
        };
        let method = req.path.trim_start_matches('/');
        let reply = if !root {
            Reply {
                status: 200,
                body: serde_json::json!({
                    "Err": "permission denied: uvlan's Docker plugin serves root (dockerd) only"
                }),
            }
        } else if req.method != "POST" {
            Reply {
                status: 404,
                body: serde_json::json!({ "Err": format!("{} {} is not a plugin call", req.method, req.path) }),
            }
        } else {
            driver::handle(backend, driver, method, &req.body)
        };
        if let Some(e) = reply.body.get("Err").and_then(|e| e.as_str()) {
            log(&format!("docker {}: {method}: {e}", plugin_name(driver)));
        }
        let body = reply.body.to_string();
        if http::write_response(&mut writer, reply.status, body.as_bytes(), req.close).is_err()
            || req.close
        {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Counts the daemon requests the driver makes.
    #[derive(Default)]
    struct Counting(AtomicUsize);

    impl Backend for Counting {
        fn call(&self, _: Request) -> Response {
            self.0.fetch_add(1, Ordering::SeqCst);
            Response::Ok {
                result: serde_json::json!(true),
            }
        }
    }

    /// Sends `raw` on a fresh connection served by [`serve_connection`], closes the sending
    /// side, and returns everything answered until the server closed, with the number of
    /// daemon requests made.
    fn exchange(raw: &[u8]) -> (String, usize) {
        let (mut client, server) = UnixStream::pair().unwrap();
        let backend = Arc::new(Counting::default());
        let b = backend.clone();
        let log: Logger = Arc::new(|_: &str| {});
        let t = std::thread::spawn(move || serve_connection(server, Driver::Ipvlan, &*b, &log));
        client.write_all(raw).unwrap();
        client.shutdown(std::net::Shutdown::Write).unwrap();
        let mut out = Vec::new();
        // The answers come before any end of the connection.
        let _ = client.read_to_end(&mut out);
        t.join().unwrap();
        (
            String::from_utf8_lossy(&out).into_owned(),
            backend.0.load(Ordering::SeqCst),
        )
    }

    const EID: &str = "d38095591cdd2f1b9f154acdbe3daa1a0f403e5d2c5139271e6d8abf15245324";
    const NID: &str = "1e8c9969c8eda1d9528b8e468341456b2b4db9db632421259a7a645b6b76e2e2";

    fn leave() -> String {
        let body = format!(r#"{{"NetworkID":"{NID}","EndpointID":"{EID}"}}"#);
        format!(
            "POST /NetworkDriver.Leave HTTP/1.1\r\nHost: plugin\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
    }

    #[test]
    fn pipelined_requests_are_each_answered() {
        let raw = format!(
            "POST /Plugin.Activate HTTP/1.1\r\nHost: plugin\r\nContent-Length: 0\r\n\r\n{}",
            leave()
        );
        let (out, calls) = exchange(raw.as_bytes());
        assert_eq!(out.matches("HTTP/1.1 200 OK\r\n").count(), 2, "{out}");
        // As root the Leave reaches the daemon (otherwise it is refused with an Err).
        let root = crate::sys::is_root();
        assert_eq!(calls, usize::from(root), "{out}");
    }

    #[test]
    fn a_smuggled_request_is_never_served() {
        // Chunked says the body is empty and a Leave follows; Content-Length says the Leave
        // is the body. Either reading is wrong for someone: refuse and close.
        let smuggled = leave();
        let raw = format!(
            "POST /Plugin.Activate HTTP/1.1\r\nHost: plugin\r\nTransfer-Encoding: chunked\r\n\
             Content-Length: {}\r\n\r\n0\r\n\r\n{smuggled}",
            5 + smuggled.len()
        );
        let (out, calls) = exchange(raw.as_bytes());
        assert!(out.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{out}");
        assert!(out.contains("Connection: close\r\n"), "{out}");
        assert!(
            out.contains("both Transfer-Encoding and Content-Length"),
            "{out}"
        );
        assert_eq!(out.matches("HTTP/1.1 ").count(), 1, "{out}");
        assert_eq!(calls, 0, "the smuggled Leave reached the daemon");
        // A transfer coding uvlan does not implement: 501, closed, nothing served after it.
        let raw = format!(
            "POST /Plugin.Activate HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n\
             0\r\n\r\n{smuggled}"
        );
        let (out, calls) = exchange(raw.as_bytes());
        assert!(out.starts_with("HTTP/1.1 501 Not Implemented\r\n"), "{out}");
        assert_eq!((out.matches("HTTP/1.1 ").count(), calls), (1, 0), "{out}");
    }
}
