//! Learning Docker's network names. Docker does not send a network's name to its driver,
//! so after CreateNetwork the driver asks Docker's API (`GET /networks/ID` on the
//! `--docker-host` socket) until Docker has stored the network, then renames the uvlan
//! network to Docker's name. Until then, or when the API cannot be reached, or when a uvlan
//! network already has that name, the network keeps its 12-hex short ID as its name.
//!
//! The look-up after CreateNetwork runs on a background thread and its first try always comes
//! too early: Docker stores the network only once the driver has answered. A
//! `docker network create` right after another one (the same script, a second network on the
//! same parent) can therefore reach the driver before that thread's next try, and its error
//! would name the first network by its ID. So every CreateNetwork first asks Docker, at once,
//! for the names of the networks still shown under their short IDs ([`NameLearner::learn_now`]):
//! a network whose `docker network create` has returned is known to Docker by then.

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
/// One look from the background thread: connect, ask, read.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);
/// All the looks of one [`NameLearner::learn_now`] together: Docker answers its API at once,
/// and a Docker that does not (still starting) must not hold up a CreateNetwork.
const NOW_BUDGET: Duration = Duration::from_secs(2);

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
    lookup_within(docker, id, LOOKUP_TIMEOUT)
}

/// `GET /networks/ID`, each read and write bounded by `timeout`.
fn lookup_within(docker: &std::path::Path, id: &str, timeout: Duration) -> Lookup {
    let mut s = match UnixStream::connect(docker) {
        Ok(s) => s,
        Err(e) => return Lookup::Failed(format!("cannot reach {}: {e}", docker.display())),
    };
    let _ = s.set_read_timeout(Some(timeout));
    let _ = s.set_write_timeout(Some(timeout));
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

    /// The Docker networks still shown under their short IDs (made while Docker's API was
    /// unreachable, or not learned yet).
    pub fn unnamed(&self) -> Vec<String> {
        self.daemon
            .managed_networks(OWNER_DOCKER)
            .into_iter()
            .filter(|(id, name)| crate::ids::short_id(id) == name)
            .map(|(id, _)| id)
            .collect()
    }

    /// Asks Docker now for the name of every network still shown under its short ID and
    /// renames those Docker knows; within [`NOW_BUDGET`] in all. Quiet: the background
    /// learner reports what cannot be learned.
    pub fn learn_now(&self) {
        let deadline = Instant::now() + NOW_BUDGET;
        for id in self.unnamed() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            match lookup_within(&self.docker, &id, left) {
                Lookup::Name(name) => {
                    if let Err(e) = self.daemon.rename_managed(&id, OWNER_DOCKER, &name) {
                        (self.log)(&format!("naming docker network {id}: {e}"));
                    }
                }
                Lookup::NotYet => {}
                // Docker cannot be asked: nor can it for the next network.
                Lookup::Failed(_) => return,
            }
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
    use crate::api::{Request, Response};
    use std::os::unix::net::UnixListener;
    use std::sync::Mutex;

    fn temp_dir(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "uvlan-{tag}-{}-{}",
            std::process::id(),
            crate::ids::random_hex(4).unwrap()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// Managed networks `(id, name)`, renamed as the daemon would.
    struct FakeDaemon(Mutex<Vec<(String, String)>>);

    impl DaemonApi for FakeDaemon {
        fn handle(&self, _req: Request) -> Response {
            Response::Error {
                message: "not used".into(),
            }
        }
        fn managed_networks(&self, owner: &str) -> Vec<(String, String)> {
            assert_eq!(owner, OWNER_DOCKER);
            self.0.lock().unwrap().clone()
        }
        fn rename_managed(&self, id: &str, _owner: &str, name: &str) -> Result<bool, String> {
            let mut nets = self.0.lock().unwrap();
            if nets.iter().any(|(i, n)| n == name && i != id) {
                return Ok(false);
            }
            for (i, n) in nets.iter_mut() {
                if i == id {
                    *n = name.to_string();
                }
            }
            Ok(true)
        }
    }

    #[test]
    fn learn_now_names_the_networks_docker_knows() {
        let dir = temp_dir("learn-now");
        let sock = dir.join("d.sock");
        let l = UnixListener::bind(&sock).unwrap();
        let (a, b, c) = ("a".repeat(64), "b".repeat(64), "c".repeat(64));
        let daemon = Arc::new(FakeDaemon(Mutex::new(vec![
            (a.clone(), "aaaaaaaaaaaa".to_string()),
            (b.clone(), "named".to_string()),
            (c.clone(), "cccccccccccc".to_string()),
        ])));
        let asked = Arc::new(Mutex::new(Vec::new()));
        let seen = asked.clone();
        // Docker knows a (as "first"), not c yet; b already has its name and is not asked.
        let t = std::thread::spawn(move || {
            for _ in 0..2 {
                let (mut s, _) = l.accept().unwrap();
                let mut buf = [0u8; 512];
                let n = s.read(&mut buf).unwrap();
                let line = String::from_utf8_lossy(&buf[..n])
                    .lines()
                    .next()
                    .unwrap()
                    .to_string();
                let answer = if line.contains(&"a".repeat(64)) {
                    "HTTP/1.0 200 OK\r\n\r\n{\"Name\":\"first\"}"
                } else {
                    "HTTP/1.0 404 Not Found\r\n\r\n{}"
                };
                seen.lock().unwrap().push(line);
                s.write_all(answer.as_bytes()).unwrap();
            }
        });
        let logged = Arc::new(Mutex::new(Vec::<String>::new()));
        let sink = logged.clone();
        let log: Logger = Arc::new(move |m: &str| sink.lock().unwrap().push(m.to_string()));
        let learner = NameLearner::new(daemon.clone(), sock, log);
        assert_eq!(learner.unnamed(), [a.clone(), c.clone()]);
        learner.learn_now();
        t.join().unwrap();
        assert_eq!(
            *asked.lock().unwrap(),
            [
                format!("GET /networks/{a} HTTP/1.0"),
                format!("GET /networks/{c} HTTP/1.0")
            ]
        );
        assert_eq!(learner.unnamed(), std::slice::from_ref(&c));
        assert_eq!(daemon.0.lock().unwrap()[0].1, "first");
        assert!(logged.lock().unwrap().is_empty());
        // Docker unreachable: one failed try, nothing renamed, nothing logged.
        let gone = NameLearner::new(daemon.clone(), dir.join("none.sock"), {
            let sink = logged.clone();
            Arc::new(move |m: &str| sink.lock().unwrap().push(m.to_string()))
        });
        gone.learn_now();
        assert_eq!(gone.unnamed(), [c]);
        assert!(logged.lock().unwrap().is_empty());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn lookup_reads_docker_answers() {
        let dir = temp_dir("names");
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
