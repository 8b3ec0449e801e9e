//! Driving named network namespaces with the standard tools (`ip`, `tcpdump`), for `uvlan lab`
//! and the system tests (crate `uvlan-system-tests`), which build their topologies the same
//! way: a guard that creates namespaces under a prefix and deletes them when it drops, veth
//! pairs between namespaces, commands run inside a namespace, child processes stopped
//! politely, and a `tcpdump` that is known to be listening.
//!
//! The daemon does not use this module: its namespace work goes through syscalls and netlink
//! ([`crate::netns`]). Here every step is a command line, so a failure reads like the command a
//! person would type.

use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

/// A command that could not be started or did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum CmdError {
    /// The command ran and failed (or a program did not come up).
    #[error("{step} failed: {detail}")]
    Failed {
        /// What was being done.
        step: String,
        /// What the command said (stderr, else stdout), trimmed.
        detail: String,
    },
    /// The command could not be started.
    #[error("{step}: {source}")]
    Spawn {
        /// What was being done.
        step: String,
        /// Why it could not start.
        source: io::Error,
    },
    /// The caller asked to stop waiting (e.g. Ctrl-C).
    #[error("interrupted")]
    Aborted,
}

/// `ip netns exec FULL PROGRAM`: a command run inside namespace `full` (add its arguments).
pub fn in_netns(full: &str, program: impl AsRef<OsStr>) -> Command {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", full]).arg(program);
    c
}

/// `ip netns exec FULL sh -c CMD`: a shell command inside namespace `full`.
pub fn sh_in(full: &str, cmd: &str) -> Command {
    let mut c = in_netns(full, "sh");
    c.args(["-c", cmd]);
    c
}

/// `ip -n FULL`: an `ip` command acting in namespace `full` (add its arguments).
pub fn ip_in(full: &str) -> Command {
    let mut c = Command::new("ip");
    c.args(["-n", full]);
    c
}

/// `ip link add A_IF netns A type veth peer name B_IF netns B`: a veth pair between namespaces
/// `a` and `b` (full names), both ends down.
pub fn veth(a: &str, a_if: &str, b: &str, b_if: &str) -> Command {
    let mut c = Command::new("ip");
    c.args([
        "link", "add", a_if, "netns", a, "type", "veth", "peer", "name", b_if, "netns", b,
    ]);
    c
}

/// Runs `cmd` (stdin closed) and returns its stdout; on a non-zero exit the error carries
/// `step` and what the command said on stderr (or, when that is empty, on stdout).
pub fn run(cmd: &mut Command, step: &str) -> Result<String, CmdError> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|source| CmdError::Spawn {
            step: step.to_string(),
            source,
        })?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        let mut detail = String::from_utf8_lossy(&out.stderr).trim().to_string();
        if detail.is_empty() {
            detail = String::from_utf8_lossy(&out.stdout).trim().to_string();
        }
        Err(CmdError::Failed {
            step: step.to_string(),
            detail,
        })
    }
}

/// Stops a child politely with `sig`, and for good (SIGKILL) if it has not exited after
/// `grace`; reaps it either way.
///
/// `ip netns exec` execs its program in place, so a child started with [`in_netns`] is the
/// program itself and receives `sig` directly.
pub fn stop(child: &mut Child, sig: libc::c_int, grace: Duration) {
    // The child is ours and not yet reaped, so its pid is still its own.
    let _ = crate::sys::send_signal(child.id(), sig);
    let t = Instant::now();
    while t.elapsed() < grace {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        // Timed, and bounded (`grace`): a child's exit cannot be awaited with a deadline
        // through std's `Child`; tests and labs only.
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Network namespaces made under one prefix; dropping the guard deletes them (last made,
/// first deleted), also when a lab or test fails on the way.
#[derive(Debug)]
pub struct Namespaces {
    prefix: String,
    made: Vec<String>,
}

impl Namespaces {
    /// A guard for namespaces named `<prefix><name>`; creates nothing yet.
    pub fn new(prefix: impl Into<String>) -> Namespaces {
        Namespaces {
            prefix: prefix.into(),
            made: Vec::new(),
        }
    }

    /// The prefix of every namespace name.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The full name of namespace `name` (`<prefix><name>`).
    pub fn full(&self, name: &str) -> String {
        format!("{}{}", self.prefix, name)
    }

    /// Creates namespace `<prefix><name>` (`ip netns add`) with `lo` up; returns its full
    /// name. A namespace that was created is deleted by the guard even when `lo` fails.
    pub fn add(&mut self, name: &str) -> Result<String, CmdError> {
        let ns = self.full(name);
        run(
            Command::new("ip").args(["netns", "add", &ns]),
            &format!("ip netns add {ns}"),
        )?;
        self.made.push(ns.clone());
        run(ip_in(&ns).args(["link", "set", "lo", "up"]), "lo up")?;
        Ok(ns)
    }

    /// Whether this guard made the namespace with full name `full`.
    pub fn contains(&self, full: &str) -> bool {
        self.made.iter().any(|n| n == full)
    }

    /// Deletes every namespace made so far (`ip netns delete`, last made first); the guard
    /// stays usable.
    pub fn delete_all(&mut self) {
        for ns in self.made.drain(..).rev() {
            let _ = Command::new("ip")
                .args(["netns", "delete", &ns])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        self.delete_all();
    }
}

/// A running `tcpdump` inside a namespace, started and known to be listening; stopped with
/// SIGINT (so it flushes what it captured) by [`Tcpdump::stop`] or on drop.
#[derive(Debug)]
pub struct Tcpdump {
    child: Option<Child>,
    /// tcpdump's stderr, line by line (read on a thread so the pipe never fills).
    stderr: Receiver<String>,
}

impl Tcpdump {
    /// Starts `ip netns exec FULL tcpdump -i DEV --immediate-mode ARGS` with its stdout going
    /// to `out`, and waits until tcpdump reports that it is listening. `what` names the capture in errors
    /// (`what` fails; `start what` cannot start). Gives up when tcpdump exits first, when
    /// `patience` has passed, or when `abort` says so ([`CmdError::Aborted`]).
    pub fn start(
        full: &str,
        dev: &str,
        args: &[&str],
        out: File,
        what: &str,
        patience: Duration,
        abort: &dyn Fn() -> bool,
    ) -> Result<Tcpdump, CmdError> {
        // --immediate-mode: without it libpcap hands frames over a ring block at a time, up
        // to a second late, and the frames of a block not yet handed over when SIGINT comes
        // are never printed.
        let mut child = in_netns(full, "tcpdump")
            .args(["-i", dev, "--immediate-mode"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|source| CmdError::Spawn {
                step: format!("start {what}"),
                source,
            })?;
        let (tx, rx) = mpsc::channel();
        if let Some(err) = child.stderr.take() {
            std::thread::spawn(move || {
                for line in BufReader::new(err).lines().map_while(Result::ok) {
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            });
        }
        let mut t = Tcpdump {
            child: Some(child),
            stderr: rx,
        };
        let started = Instant::now();
        let mut said = String::new();
        loop {
            // Timed so the start deadline is checked; bounded; tests and labs only.
            match t.stderr.recv_timeout(Duration::from_millis(100)) {
                Ok(line) if line.contains("listening on") => return Ok(t),
                Ok(line) => {
                    said.push_str(&line);
                    said.push('\n');
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    // stderr closed: tcpdump has exited.
                    if let Some(mut c) = t.child.take() {
                        let _ = c.wait();
                    }
                    return Err(CmdError::Failed {
                        step: what.to_string(),
                        detail: said.trim().to_string(),
                    });
                }
            }
            if started.elapsed() > patience {
                if let Some(mut c) = t.child.take() {
                    stop(&mut c, libc::SIGKILL, Duration::ZERO);
                }
                return Err(CmdError::Failed {
                    step: what.to_string(),
                    detail: format!(
                        "not listening after {} s. {}",
                        patience.as_secs(),
                        said.trim()
                    ),
                });
            }
            if abort() {
                return Err(CmdError::Aborted);
            }
        }
    }

    /// Stops tcpdump (SIGINT, then SIGKILL after 3 s) and reaps it.
    pub fn stop(mut self) {
        self.end();
    }

    fn end(&mut self) {
        if let Some(mut c) = self.child.take() {
            stop(&mut c, libc::SIGINT, Duration::from_secs(3));
        }
    }
}

impl Drop for Tcpdump {
    fn drop(&mut self) {
        self.end();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_lines_are_the_ones_a_person_would_type() {
        let words = |c: &Command| {
            std::iter::once(c.get_program())
                .chain(c.get_args())
                .map(|a| a.to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join(" ")
        };
        assert_eq!(
            words(in_netns("t-a", "ping").arg("-c1")),
            "ip netns exec t-a ping -c1"
        );
        assert_eq!(
            words(&sh_in("t-a", "ip r; ip l")),
            "ip netns exec t-a sh -c ip r; ip l"
        );
        assert_eq!(words(ip_in("t-a").arg("link")), "ip -n t-a link");
        assert_eq!(
            words(&veth("t-a", "eth0", "t-b", "p0")),
            "ip link add eth0 netns t-a type veth peer name p0 netns t-b"
        );
    }

    #[test]
    fn run_reports_the_step_and_what_the_command_said() {
        assert_eq!(run(Command::new("echo").arg("hi"), "echo").unwrap(), "hi\n");
        let e = run(
            Command::new("sh").args(["-c", "echo out; echo err >&2; exit 3"]),
            "the step",
        )
        .unwrap_err();
        assert_eq!(e.to_string(), "the step failed: err");
        let e = run(Command::new("sh").args(["-c", "echo out; exit 3"]), "s").unwrap_err();
        assert_eq!(e.to_string(), "s failed: out");
        let e = run(&mut Command::new("/nonexistent/uvlan-nsutil-test"), "s").unwrap_err();
        assert!(matches!(e, CmdError::Spawn { .. }), "{e}");
    }

    #[test]
    fn stop_ends_a_child_that_ignores_the_polite_signal() {
        let mut c = Command::new("sh")
            .args(["-c", "trap '' TERM; exec sleep 30"])
            .spawn()
            .unwrap();
        // Let the shell install its trap.
        std::thread::sleep(Duration::from_millis(200));
        let t = Instant::now();
        stop(&mut c, libc::SIGTERM, Duration::from_millis(300));
        assert!(c.try_wait().unwrap().is_some(), "reaped");
        assert!(t.elapsed() < Duration::from_secs(10));
    }

    #[test]
    fn a_guard_without_namespaces_names_them_and_deletes_nothing() {
        let mut n = Namespaces::new("uvt-nsutil-");
        assert_eq!(n.prefix(), "uvt-nsutil-");
        assert_eq!(n.full("c1"), "uvt-nsutil-c1");
        assert!(!n.contains("uvt-nsutil-c1"));
        n.delete_all();
    }
}
