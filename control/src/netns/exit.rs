//! Process exit watcher: a pidfd in the watcher hub's epoll set (see `netns/watch.rs` for
//! the hub's rules on callbacks and drop), so that waiting for many processes takes no
//! thread per process.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use super::hub::{self, lock, take_locked, Source, Token};
use super::{NetnsError, Result};

type OnExit = Box<dyn FnOnce() + Send>;

/// Calls a function once when a process exits, on the watcher hub (a pidfd in its epoll
/// set: no thread per process).
///
/// Dropping it first stops it, with the same guarantees as dropping an
/// [`AddrWatcher`](super::AddrWatcher): once drop returns, `on_exit` is not called any more;
/// drop waits only for an `on_exit` already running (not at all from inside it).
pub struct ExitWatcher {
    slot: Arc<ExitSlot>,
}

struct ExitSlot {
    pid: i32,
    token: Token,
    /// `None` when the process was already gone at start.
    pidfd: Option<OwnedFd>,
    fired: AtomicBool,
    on_exit: Mutex<Option<OnExit>>,
}

impl Source for ExitSlot {
    fn ready(&self) {
        // The pidfd stays readable: stop watching it before anything else.
        if let Some(h) = hub::get() {
            h.remove(self.token);
        }
        let mut g = lock(&self.on_exit);
        if let Some(f) = g.take() {
            self.fired.store(true, Ordering::SeqCst);
            let _ = catch_unwind(AssertUnwindSafe(f));
        }
    }
}

impl std::fmt::Debug for ExitWatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExitWatcher")
            .field("pid", &self.slot.pid)
            .finish()
    }
}

/// `pidfd_open(pid, 0)`; `None` if there is no such process.
fn pidfd_open(pid: i32) -> Result<Option<OwnedFd>> {
    let err = |source| NetnsError::Watch {
        op: "open a process fd (pidfd_open)",
        source,
    };
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1; no memory is
    // passed.
    let r = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if r < 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::ESRCH) {
            return Ok(None);
        }
        return Err(err(e));
    }
    let fd = libc::c_int::try_from(r).map_err(|_| err(io::ErrorKind::InvalidData.into()))?;
    // SAFETY: `fd` was just returned by pidfd_open (close-on-exec) and nothing else owns it.
    Ok(Some(unsafe { OwnedFd::from_raw_fd(fd) }))
}

impl ExitWatcher {
    /// Calls `on_exit` on the watcher hub's thread once process `pid` has exited (at once,
    /// but still on the hub, if it is already gone). The caller guards against PID reuse
    /// (e.g. by checking the process's start time before).
    pub fn start(pid: i32, on_exit: impl FnOnce() + Send + 'static) -> Result<ExitWatcher> {
        if pid <= 0 {
            return Err(NetnsError::InvalidArgument(format!(
                "cannot watch process {pid}: not a process ID"
            )));
        }
        let hub = hub::hub()?;
        let slot = Arc::new(ExitSlot {
            pid,
            token: hub.token(),
            pidfd: pidfd_open(pid)?,
            fired: AtomicBool::new(false),
            on_exit: Mutex::new(Some(Box::new(on_exit))),
        });
        match &slot.pidfd {
            Some(fd) => hub
                .add(slot.token, fd.as_raw_fd(), slot.clone())
                .map_err(|source| NetnsError::Watch {
                    op: "register a process fd with the watcher hub (epoll_ctl)",
                    source,
                })?,
            None => hub.defer(slot.clone()),
        }
        Ok(ExitWatcher { slot })
    }

    /// The watched process.
    pub fn pid(&self) -> i32 {
        self.slot.pid
    }

    /// True once `on_exit` has been called.
    pub fn fired(&self) -> bool {
        self.slot.fired.load(Ordering::SeqCst)
    }
}

impl Drop for ExitWatcher {
    /// Stops the watcher, like [`AddrWatcher`](super::AddrWatcher)'s drop.
    fn drop(&mut self) {
        let released = take_locked(&self.slot.on_exit, Option::take).flatten();
        if let Some(h) = hub::get() {
            h.remove(self.slot.token);
        }
        drop(released);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::{Command, Stdio};
    use std::sync::mpsc::{self, TryRecvError};
    use std::time::Duration;

    /// Bounds a wait that only a failure makes long.
    const WAIT: Duration = Duration::from_secs(10);

    #[test]
    fn exit_watcher_fires_once_when_the_process_exits() {
        let _s = hub::test_serial();
        let hub = hub::hub().unwrap();
        let sources = hub.source_count();
        let mut child = Command::new("cat").stdin(Stdio::piped()).spawn().unwrap();
        let pid = child.id() as i32;
        let (tx, rx) = mpsc::channel();
        let x = ExitWatcher::start(pid, move || tx.send(()).unwrap()).unwrap();
        // A second watcher dropped before the exit: its callback is released, never run.
        let (tx2, rx2) = mpsc::channel::<()>();
        let early = ExitWatcher::start(pid, move || tx2.send(()).unwrap()).unwrap();
        assert_eq!(early.pid(), pid);
        drop(early);
        assert_eq!(rx2.try_recv(), Err(TryRecvError::Disconnected));
        assert!(!x.fired());
        assert_eq!(rx.try_recv(), Err(TryRecvError::Empty));

        drop(child.stdin.take()); // cat exits
        rx.recv_timeout(WAIT).expect("exit reported");
        assert!(x.fired());
        // Once: the callback (and its sender) is gone, and so is the pidfd's registration.
        assert_eq!(
            rx.recv_timeout(WAIT),
            Err(mpsc::RecvTimeoutError::Disconnected)
        );
        assert_eq!(hub.source_count(), sources);
        child.wait().unwrap();
        drop(x);

        // Already gone (reaped): reported on the hub all the same.
        let (tx, rx) = mpsc::channel();
        let gone =
            ExitWatcher::start(pid, move || tx.send(std::thread::current().id()).unwrap()).unwrap();
        let on = rx
            .recv_timeout(WAIT)
            .expect("exit of a gone process reported");
        assert_ne!(on, std::thread::current().id());
        assert!(gone.fired());
        assert!(matches!(
            ExitWatcher::start(0, || {}),
            Err(NetnsError::InvalidArgument(_))
        ));
    }
}
