//! The watcher hub: one process-wide thread that waits in `epoll_wait`, without a timeout, on
//! every file descriptor the watchers of [`super::watch`] need (one netlink socket per
//! group set for all watched namespaces, one pidfd per watched process) and runs their
//! callbacks.
//!
//! The thread starts with the first watcher and then lives as long as the process. It wakes
//! up only when something it waits on is ready (a notification arrived, a process exited)
//! or when a source was queued with [`Hub::defer`] (through an eventfd); nothing in it
//! wakes up periodically. [`Hub::wakeups`] counts its wake-ups, so tests can check that.
//!
//! # Adding and removing sources
//! Any thread adds and removes sources directly ([`Hub::add`], [`Hub::remove`]): `epoll_ctl`
//! is safe to call while the hub thread sits in `epoll_wait`, so neither needs a round trip
//! through the hub thread, and neither ever waits for it. A removed source is never made
//! ready again, but a call to [`Source::ready`] that has already started finishes: the
//! watcher types guarantee "no callback after drop" with a per-watcher lock (see
//! [`super::watch`]).

use std::cell::Cell;
use std::collections::HashMap;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, TryLockError};

use super::{NetnsError, Result};

/// Identifies one registered source (never reused).
pub(super) type Token = u64;

/// The token of the hub's own eventfd.
const WAKE: Token = 0;
/// Events taken per `epoll_wait`.
const MAX_EVENTS: usize = 64;

/// Something the hub thread serves.
pub(super) trait Source: Send + Sync {
    /// Called on the hub thread when the registered fd is readable (or in error), or once
    /// after [`Hub::defer`]. It must consume what made the fd ready (or remove itself):
    /// the hub's epoll set is level-triggered.
    fn ready(&self);
}

type Sources = HashMap<Token, (RawFd, Arc<dyn Source>)>;

/// The hub (see the module documentation).
pub(super) struct Hub {
    epoll: OwnedFd,
    wake: OwnedFd,
    next_token: AtomicU64,
    sources: Mutex<Sources>,
    deferred: Mutex<Vec<Arc<dyn Source>>>,
    wakeups: AtomicU64,
    alive: AtomicBool,
}

static HUB: OnceLock<Arc<Hub>> = OnceLock::new();
static INIT: Mutex<()> = Mutex::new(());

thread_local! {
    static ON_HUB: Cell<bool> = const { Cell::new(false) };
}

/// Locks `m`, ignoring poisoning: every critical section of the hub and the watchers leaves
/// its data consistent at each step (callbacks run under `catch_unwind`).
pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Runs `f` under `m`, a watcher's callback lock (held while its callback runs), except on
/// the hub thread when `m` is held: only the watcher's own callback, running further up
/// this same thread, can hold it then, and `None` tells the caller (the watcher's drop) to
/// leave the callback for the hub to release when it returns.
pub(super) fn take_locked<T, R>(m: &Mutex<T>, f: impl FnOnce(&mut T) -> R) -> Option<R> {
    if !on_hub_thread() {
        return Some(f(&mut lock(m)));
    }
    match m.try_lock() {
        Ok(mut g) => Some(f(&mut g)),
        Err(TryLockError::Poisoned(p)) => Some(f(&mut p.into_inner())),
        Err(TryLockError::WouldBlock) => None,
    }
}

/// The hub, started on first use.
pub(super) fn hub() -> Result<&'static Hub> {
    if let Some(h) = HUB.get() {
        return Ok(h);
    }
    let _init = lock(&INIT);
    if let Some(h) = HUB.get() {
        return Ok(h);
    }
    let h = Arc::new(Hub::new()?);
    let runner = h.clone();
    std::thread::Builder::new()
        .name("uvlan-watch-hub".to_string())
        .spawn(move || runner.run())
        .map_err(|source| NetnsError::Thread { source })?;
    Ok(HUB.get_or_init(|| h))
}

/// The hub if it was started.
pub(super) fn get() -> Option<&'static Hub> {
    HUB.get().map(|h| &**h)
}

/// True on the hub thread (inside a watcher callback).
pub(super) fn on_hub_thread() -> bool {
    ON_HUB.with(|c| c.get())
}

fn watch_err(op: &'static str) -> NetnsError {
    NetnsError::Watch {
        op,
        source: io::Error::last_os_error(),
    }
}

impl Hub {
    fn new() -> Result<Hub> {
        // SAFETY: epoll_create1 takes a flag and returns a new fd or -1.
        let ep = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if ep < 0 {
            return Err(watch_err("create the watcher hub's epoll instance"));
        }
        // SAFETY: `ep` was just returned by epoll_create1 and nothing else owns it.
        let epoll = unsafe { OwnedFd::from_raw_fd(ep) };
        // SAFETY: eventfd takes an initial value and flags and returns a new fd or -1.
        let ev = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if ev < 0 {
            return Err(watch_err("create the watcher hub's eventfd"));
        }
        // SAFETY: `ev` was just returned by eventfd and nothing else owns it.
        let wake = unsafe { OwnedFd::from_raw_fd(ev) };
        let hub = Hub {
            epoll,
            wake,
            next_token: AtomicU64::new(WAKE + 1),
            sources: Mutex::new(HashMap::new()),
            deferred: Mutex::new(Vec::new()),
            wakeups: AtomicU64::new(0),
            alive: AtomicBool::new(true),
        };
        hub.ctl(libc::EPOLL_CTL_ADD, hub.wake.as_raw_fd(), WAKE)
            .map_err(|source| NetnsError::Watch {
                op: "register the watcher hub's eventfd",
                source,
            })?;
        Ok(hub)
    }

    fn ctl(&self, op: libc::c_int, fd: RawFd, token: Token) -> io::Result<()> {
        let mut ev = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: token,
        };
        // SAFETY: `ev` is a valid epoll_event for the call (ignored for EPOLL_CTL_DEL); the
        // epoll fd is owned by self and `fd` is kept open by the caller.
        if unsafe { libc::epoll_ctl(self.epoll.as_raw_fd(), op, fd, &mut ev) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// A fresh token for [`Hub::add`].
    pub(super) fn token(&self) -> Token {
        self.next_token.fetch_add(1, Ordering::Relaxed)
    }

    /// Makes the hub call `src.ready()` whenever `fd` is readable, until [`Hub::remove`].
    /// `src` must keep `fd` open while it is registered (the hub holds `src`).
    pub(super) fn add(&self, token: Token, fd: RawFd, src: Arc<dyn Source>) -> io::Result<()> {
        let mut sources = lock(&self.sources);
        self.ctl(libc::EPOLL_CTL_ADD, fd, token)?;
        sources.insert(token, (fd, src));
        Ok(())
    }

    /// Stops serving `token` (a no-op if it is not registered). Never waits for the hub
    /// thread; a `ready` call already under way finishes.
    pub(super) fn remove(&self, token: Token) {
        let removed = {
            let mut sources = lock(&self.sources);
            let removed = sources.remove(&token);
            if let Some((fd, _)) = &removed {
                // The fd is still open: the source that owns it is in `removed`.
                let _ = self.ctl(libc::EPOLL_CTL_DEL, *fd, token);
            }
            removed
        };
        // Dropped outside the lock (this may close the fd).
        drop(removed);
    }

    /// Calls `src.ready()` once on the hub thread, soon.
    pub(super) fn defer(&self, src: Arc<dyn Source>) {
        lock(&self.deferred).push(src);
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a valid u64 to the eventfd owned by self. It cannot
        // fail short of an overflow of the counter, which the hub thread resets on each read.
        unsafe {
            libc::write(
                self.wake.as_raw_fd(),
                (&one as *const u64).cast(),
                std::mem::size_of::<u64>(),
            )
        };
    }

    /// How many times the hub thread has returned from `epoll_wait`.
    #[cfg(test)]
    pub(super) fn wakeups(&self) -> u64 {
        self.wakeups.load(Ordering::Relaxed)
    }

    /// False once the hub thread has stopped (only on an unexpected `epoll_wait` error).
    pub(super) fn is_alive(&self) -> bool {
        self.alive.load(Ordering::Relaxed)
    }

    /// The number of registered sources (the eventfd not counted).
    #[cfg(test)]
    pub(super) fn source_count(&self) -> usize {
        lock(&self.sources).len()
    }

    fn run(&self) {
        ON_HUB.with(|c| c.set(true));
        let mut events = [libc::epoll_event { events: 0, u64: 0 }; MAX_EVENTS];
        loop {
            // SAFETY: `events` is a writable array of MAX_EVENTS epoll_events; the epoll fd
            // is owned by self, which this thread keeps alive (it holds an Arc).
            let n = unsafe {
                libc::epoll_wait(
                    self.epoll.as_raw_fd(),
                    events.as_mut_ptr(),
                    MAX_EVENTS as libc::c_int,
                    -1,
                )
            };
            self.wakeups.fetch_add(1, Ordering::Relaxed);
            if n < 0 {
                if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                // EBADF/EFAULT/EINVAL cannot happen with the fd and buffer above; if they
                // did, retrying would spin: stop, and let watchers report it.
                self.alive.store(false, Ordering::Relaxed);
                return;
            }
            let n = usize::try_from(n).unwrap_or(0).min(MAX_EVENTS);
            for ev in events.iter().take(n) {
                let token = ev.u64;
                if token == WAKE {
                    self.run_deferred();
                    continue;
                }
                let src = lock(&self.sources).get(&token).map(|(_, s)| s.clone());
                if let Some(src) = src {
                    // Watchers catch their callbacks' panics; this only keeps a bug in a
                    // source from stopping every other watcher.
                    let _ = catch_unwind(AssertUnwindSafe(|| src.ready()));
                }
            }
        }
    }

    fn run_deferred(&self) {
        let mut count = [0u8; 8];
        // SAFETY: reads 8 bytes into a valid buffer from the eventfd owned by self
        // (non-blocking: EAGAIN when already reset).
        unsafe { libc::read(self.wake.as_raw_fd(), count.as_mut_ptr().cast(), 8) };
        let due = std::mem::take(&mut *lock(&self.deferred));
        for src in due {
            let _ = catch_unwind(AssertUnwindSafe(|| src.ready()));
        }
    }
}

/// Hub tests share the process-wide hub: they run one at a time, so that one test's stalled
/// hub, idle check or source count does not meet another's traffic.
#[cfg(test)]
pub(super) fn test_serial() -> MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    lock(&SERIAL)
}
