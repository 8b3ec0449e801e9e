//! Learning Docker's network names. Docker does not send a network's name to its driver,
//! so after CreateNetwork the driver asks Docker's API (`GET /networks/ID` on the
//! `--docker-host` socket) until Docker has stored the network, then renames the uvlan
//! network to Docker's name. Until then, or when the API cannot be reached, or when a uvlan
//! network already has that name, the network keeps its 12-hex short ID as its name.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::api::OWNER_DOCKER;
use crate::logger::Logger;

use super::http::parse_response;
use super::DaemonApi;

/// How long names are looked for after a network was created.
const LEARN_FOR: Duration = Duration::from_secs(30);
/// Between two looks. This is the one timed loop of the Docker front end, and it is
/// justified: Docker tells its driver nothing when it has stored a network, and the only
/// event source it offers (`GET /events`) is a long-lived stream of every object's changes
/// on the whole host, which a daemon would have to hold open forever for a name it needs
/// once. The loop runs only for the [`LEARN_FOR`] after a network is created (usually one
/// look: Docker stores the network right after CreateNetwork returns), on a thread that then
/// ends: an idle daemon never runs it.
const RETRY: Duration = Duration::from_millis(250);

/// Asks Docker for network names on background threads.
pub struct NameLearner {
    daemon: Arc<dyn DaemonApi>,
    docker: PathBuf,
    log: Logger,
}

/// What Docker answered for one network.
#[derive(Debug, PartialEq, Eq)]
pub enum Lookup {
    /// The network's name.
    Name(String),
    /// Docker does not know the network (yet).
    NotYet,
    /// Docker's API cannot be used.
    Failed(String),
}

/// `GET /networks/ID` on Docker's API socket.
pub fn lookup(docker: &std::path::Path, id: &str) -> Lookup {
    let mut s = match UnixStream::connect(docker) {
        Ok(s) => s,
        Err(e) => return Lookup::Failed(format!("cannot reach {}: {e}", docker.display())),
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = s.set_write_timeout(Some(Duration::from_secs(5)));
    let req = format!("GET /networks/{id} HTTP/1.0\r\nHost: docker\r\n\r\n");
    if let Err(e) = s.write_all(req.as_bytes()) {
        return Lookup::Failed(format!("asking {}: {e}", docker.display()));
    }
    let mut raw = Vec::new();
    if let Err(e) = s.take(1 << 20).read_to_end(&mut raw) {
        return Lookup::Failed(format!("reading from {}: {e}", docker.display()));
    }
    match parse_response(&raw) {
        Ok((200, body)) => match serde_json::from_slice::<serde_json::Value>(body) {
            Ok(v) => match v.get("Name").and_then(|n| n.as_str()) {
                Some(n) if !n.is_empty() => Lookup::Name(n.to_string()),
                _ => Lookup::Failed("Docker's answer has no network name".to_string()),
            },
            Err(e) => Lookup::Failed(format!("Docker's answer is not JSON: {e}")),
        },
        Ok((404, _)) => Lookup::NotYet,
        Ok((code, _)) => Lookup::Failed(format!("Docker answered HTTP {code}")),
        Err(e) => Lookup::Failed(e.to_string()),
    }
}

impl NameLearner {
    /// A learner asking Docker at `docker` (a unix socket path).
    pub fn new(daemon: Arc<dyn DaemonApi>, docker: PathBuf, log: Logger) -> NameLearner {
        NameLearner {
            daemon,
            docker,
            log,
        }
    }

    /// Looks the names of these networks up on a background thread, renaming each uvlan
    /// network once Docker knows it.
    pub fn learn(&self, mut ids: Vec<String>) {
        let (daemon, docker, log) = (self.daemon.clone(), self.docker.clone(), self.log.clone());
        let spawned = std::thread::Builder::new()
            .name("uvlan-docker-names".to_string())
            .spawn(move || {
                let start = Instant::now();
                let mut last_err = None;
                while !ids.is_empty() && start.elapsed() < LEARN_FOR {
                    ids.retain(|id| match lookup(&docker, id) {
                        Lookup::Name(name) => {
                            match daemon.rename_managed(id, OWNER_DOCKER, &name) {
                                Ok(true) => {}
                                Ok(false) => log(&format!(
                                    "docker network {name} ({id}) is shown under its short ID: \
                                     a uvlan network already has the name {name}"
                                )),
                                Err(e) => log(&format!("naming docker network {id}: {e}")),
                            }
                            false
                        }
                        Lookup::NotYet => true,
                        Lookup::Failed(e) => {
                            last_err = Some(e);
                            true
                        }
                    });
                    if !ids.is_empty() {
                        std::thread::sleep(RETRY);
                    }
                }
                if !ids.is_empty() {
                    log(&format!(
                        "could not learn Docker's name of {} network(s) ({}); they are \
                         shown under their short IDs (set --docker-host to Docker's API socket)",
                        ids.len(),
                        last_err.unwrap_or_else(|| "Docker does not know them".to_string())
                    ));
                }
            });
        if let Err(e) = spawned {
            (self.log)(&format!(
                "cannot start the thread learning Docker's names: {e}"
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;

    #[test]
    fn lookup_reads_docker_answers() {
        let dir = std::env::temp_dir().join(format!(
            "uvlan-names-{}-{}",
            std::process::id(),
            crate::ids::random_hex(4).unwrap()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let sock = dir.join("d.sock");
        let l = UnixListener::bind(&sock).unwrap();
        let answers = [
            "HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n\r\n{\"Name\":\"mynet\",\"Id\":\"x\"}",
            "HTTP/1.0 404 Not Found\r\n\r\n{\"message\":\"network x not found\"}",
            "HTTP/1.0 500 Oops\r\n\r\n{}",
        ];
        let t = std::thread::spawn(move || {
            for a in answers {
                let (mut s, _) = l.accept().unwrap();
                let mut buf = [0u8; 512];
                let n = s.read(&mut buf).unwrap();
                assert!(String::from_utf8_lossy(&buf[..n])
                    .starts_with("GET /networks/abc HTTP/1.0\r\n"));
                s.write_all(a.as_bytes()).unwrap();
            }
        });
        assert_eq!(lookup(&sock, "abc"), Lookup::Name("mynet".into()));
        assert_eq!(lookup(&sock, "abc"), Lookup::NotYet);
        assert!(matches!(lookup(&sock, "abc"), Lookup::Failed(e) if e.contains("500")));
        t.join().unwrap();
        assert!(matches!(
            lookup(&dir.join("none.sock"), "abc"),
            Lookup::Failed(_)
        ));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
