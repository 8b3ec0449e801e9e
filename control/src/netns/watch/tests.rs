//! Root tests on namespaces they create (`uvw<pid><n><tag>`, deleted on drop, also when
//! an assertion fails). They share the process-wide hub, so they run one at a time
//! (`serial`): one test's stalled hub or idle check must not meet another's traffic.

use super::*;
use crate::netns::ExitWatcher;
use std::collections::HashSet;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::process::{Command, Stdio};
use std::sync::atomic::AtomicUsize;
use std::sync::mpsc::{Receiver, TryRecvError};
use std::sync::Weak;
use std::time::Duration;

/// Bounds a wait that only a failure makes long (a missing event, a deadlock).
const WAIT: Duration = Duration::from_secs(10);

static SEQ: AtomicUsize = AtomicUsize::new(0);

fn run(cmd: &mut Command, input: Option<&str>) -> String {
    let mut child = cmd
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    if let (Some(text), Some(mut stdin)) = (input, child.stdin.take()) {
        stdin.write_all(text.as_bytes()).unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A namespace of this test with veth pairs `d0`/`p0`.. (down, no IPv6 link-local, so
/// the kernel sends nothing about them unless the test changes them).
struct TestNs {
    name: String,
    ns: Option<Netns>,
}

impl TestNs {
    fn new(tag: &str, pairs: usize) -> TestNs {
        let name = format!(
            "uvw{}{}{tag}",
            std::process::id() % 100_000,
            SEQ.fetch_add(1, Ordering::SeqCst)
        );
        assert!(name.len() <= 15, "{name}");
        let _ = Netns::delete(&name);
        let ns = Netns::create(&name).expect("create namespace");
        let t = TestNs { name, ns: Some(ns) };
        let mut batch = String::new();
        for i in 0..pairs {
            batch += &format!(
                "link add d{i} type veth peer name p{i}\nlink set d{i} addrgenmode none\n\
                 link set p{i} addrgenmode none\n"
            );
        }
        if pairs > 0 {
            t.batch(&batch);
        }
        t
    }

    fn ns(&self) -> &Netns {
        self.ns.as_ref().unwrap()
    }

    fn ip(&self, args: &[&str]) {
        run(
            Command::new("ip").arg("-n").arg(&self.name).args(args),
            None,
        );
    }

    fn batch(&self, lines: &str) {
        run(
            Command::new("ip")
                .args(["-n", &self.name, "-batch", "-"])
                .env("LC_ALL", "C"),
            Some(lines),
        );
    }

    fn rtnl(&self) -> Rtnl {
        Rtnl::open(self.ns()).unwrap()
    }

    fn ifindex(&self, link: &str) -> u32 {
        self.rtnl().link_get(link).unwrap().index
    }
}

impl Drop for TestNs {
    fn drop(&mut self) {
        self.ns = None;
        let _ = Netns::delete(&self.name);
    }
}

fn next(rx: &Receiver<AddrEvent>) -> AddrEvent {
    rx.recv_timeout(WAIT)
        .unwrap_or_else(|e| panic!("no watcher event within {WAIT:?}: {e}"))
}

fn added(ev: AddrEvent) -> IpAddr {
    match ev {
        AddrEvent::AddrAdded(a) => a.addr,
        other => panic!("expected AddrAdded, got {other:?}"),
    }
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn hub_wakeups() -> u64 {
    hub::get().expect("hub started").wakeups()
}

fn tasks() -> Vec<String> {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|e| e.ok())
        .filter_map(|e| std::fs::read_to_string(e.path().join("comm")).ok())
        .map(|c| c.trim_end().to_string())
        .collect()
}

fn chan_of(ns: &Netns, groups: u32) -> Option<Arc<NsChan>> {
    listen::chan_of(ns, groups)
}

#[test]
fn hundreds_of_watchers_in_three_namespaces_share_one_thread_and_one_socket() {
    let _s = hub::test_serial();
    let nss: Vec<TestNs> = (0..3).map(|i| TestNs::new(&format!("m{i}"), 10)).collect();
    let hub = hub::hub().unwrap();
    let sources_before = hub.source_count();
    let threads_before = tasks().len();

    // 3 namespaces x 10 links x 10 watchers.
    let mut watchers = Vec::new();
    for t in &nss {
        for link in 0..10 {
            let idx = t.ifindex(&format!("d{link}"));
            for _ in 0..10 {
                let (w, rx) = AddrWatcher::channel(t.ns(), idx).unwrap();
                assert_eq!(next(&rx), AddrEvent::LinkDown { ifindex: idx });
                watchers.push((w, rx));
            }
        }
    }
    assert_eq!(watchers.len(), 300);
    let threads = tasks();
    // The harness may run another (non-hub) test meanwhile: a little slack, far below
    // the 300 threads of a thread per watcher.
    assert!(
        threads.len() <= threads_before + 4,
        "{} threads before, {} with 300 watchers: {threads:?}",
        threads_before,
        threads.len()
    );
    assert_eq!(
        threads.iter().filter(|c| *c == "uvlan-watch-hub").count(),
        1,
        "{threads:?}"
    );
    // One channel per namespace, shared by its 100 watchers, and one socket for all three.
    let mut weak: Vec<Weak<NsChan>> = Vec::new();
    for (i, t) in nss.iter().enumerate() {
        let c = chan_of(t.ns(), GROUPS).expect("channel of the namespace");
        for (w, _) in &watchers[i * 100..(i + 1) * 100] {
            assert!(Arc::ptr_eq(&w.chan, &c));
        }
        weak.push(Arc::downgrade(&c));
    }
    let sock = listen::listener_of(GROUPS).expect("the shared socket");
    for (w, _) in &watchers {
        assert!(Arc::ptr_eq(&w.chan.listener, &sock));
    }
    // The harness may run a test that holds a watcher meanwhile: then the socket was there
    // before.
    assert!(hub.source_count() <= sources_before + 1);
    let ours = hub.source_count() == sources_before + 1;
    let weak_sock = Arc::downgrade(&sock);
    drop(sock);

    // An address on ns 0's d3 reaches the 10 watchers of d3; then one on d4 reaches
    // d4's, and by then d3's got nothing more (notifications are handled in order).
    nss[0].ip(&["addr", "add", "192.0.2.1/24", "dev", "d3"]);
    for (_, rx) in &watchers[30..40] {
        assert_eq!(added(next(rx)), ip("192.0.2.1"));
    }
    nss[0].ip(&["addr", "add", "192.0.2.2/24", "dev", "d4"]);
    for (_, rx) in &watchers[40..50] {
        assert_eq!(added(next(rx)), ip("192.0.2.2"));
    }
    for (i, (_, rx)) in watchers.iter().enumerate() {
        assert_eq!(rx.try_recv(), Err(TryRecvError::Empty), "watcher {i}");
    }

    // Idle: the hub does not wake up at all.
    let w0 = hub_wakeups();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(hub_wakeups(), w0, "the hub woke up while nothing happened");

    // Dropping needs no wake-up of the hub (no command, no poll timeout), the last watcher
    // of a namespace closes its channel (and the namespace handle), and the last channel
    // the socket.
    for (w, _) in &watchers {
        assert!(w.is_running());
    }
    drop(watchers);
    assert_eq!(hub_wakeups(), w0, "dropping woke the hub up");
    for (w, t) in weak.iter().zip(&nss) {
        assert!(w.upgrade().is_none(), "channel still open");
        assert!(chan_of(t.ns(), GROUPS).is_none());
    }
    if ours {
        assert!(weak_sock.upgrade().is_none(), "socket still open");
    }
    assert_eq!(hub.source_count(), sources_before);
}

#[test]
fn events_reach_only_the_watchers_of_their_interface() {
    let _s = hub::test_serial();
    let t = TestNs::new("rt", 3);
    let (i0, i1, i2) = (t.ifindex("d0"), t.ifindex("d1"), t.ifindex("d2"));
    let (a0, ra0) = AddrWatcher::channel(t.ns(), i0).unwrap();
    let (b0, rb0) = AddrWatcher::channel(t.ns(), i0).unwrap();
    let (a1, ra1) = AddrWatcher::channel(t.ns(), i1).unwrap();
    let (a2, ra2) = AddrWatcher::channel(t.ns(), i2).unwrap();
    let changes = Arc::new(AtomicUsize::new(0));
    let c2 = changes.clone();
    let links = ChangeWatcher::links(t.ns(), move || {
        c2.fetch_add(1, Ordering::SeqCst);
    })
    .unwrap();
    // The link watcher and the address watchers of a namespace share one channel.
    for w in [&b0, &a1, &a2] {
        assert!(Arc::ptr_eq(&a0.chan, &w.chan));
    }
    assert!(Arc::ptr_eq(&a0.chan, &links.chan));
    for (rx, idx) in [(&ra0, i0), (&rb0, i0), (&ra1, i1), (&ra2, i2)] {
        assert_eq!(next(rx), AddrEvent::LinkDown { ifindex: idx });
    }

    // An address on d1 goes to d1's watcher only: the next event d0's watchers see is
    // their own address.
    t.ip(&["addr", "add", "192.0.2.1/24", "dev", "d1"]);
    match next(&ra1) {
        AddrEvent::AddrAdded(a) => {
            assert_eq!((a.addr, a.prefix_len, a.ifindex), (ip("192.0.2.1"), 24, i1))
        }
        other => panic!("{other:?}"),
    }
    t.ip(&["addr", "add", "198.51.100.10/24", "dev", "d0"]);
    for rx in [&ra0, &rb0] {
        assert_eq!(added(next(rx)), ip("198.51.100.10"));
    }
    // Link up, down: both of d0's watchers.
    t.ip(&["link", "set", "d0", "up"]);
    for rx in [&ra0, &rb0] {
        assert_eq!(next(rx), AddrEvent::LinkUp { ifindex: i0 });
    }
    t.ip(&["link", "set", "d0", "down"]);
    for rx in [&ra0, &rb0] {
        assert_eq!(next(rx), AddrEvent::LinkDown { ifindex: i0 });
    }
    // Link deleted: d2's watcher; then an address removal on d1 is d1's next event.
    t.ip(&["link", "del", "d2"]);
    assert_eq!(next(&ra2), AddrEvent::LinkRemoved { ifindex: i2 });
    t.ip(&["addr", "del", "192.0.2.1/24", "dev", "d1"]);
    match next(&ra1) {
        AddrEvent::AddrRemoved(a) => assert_eq!(a.addr, ip("192.0.2.1")),
        other => panic!("{other:?}"),
    }
    // Nothing else reached anyone.
    for rx in [&ra0, &rb0, &ra1, &ra2] {
        assert_eq!(rx.try_recv(), Err(TryRecvError::Empty));
    }
    assert!(
        changes.load(Ordering::SeqCst) > 0,
        "link watcher not called"
    );
    assert!(a2.is_running(), "a deleted link does not stop its watcher");
    drop((a0, b0, a1, a2, links));
    assert!(chan_of(t.ns(), GROUPS).is_none());
}

#[test]
fn a_socket_hears_only_the_namespaces_its_own_watchers_watch() {
    let _s = hub::test_serial();
    let (a, b) = (TestNs::new("ha", 1), TestNs::new("hb", 1));
    let (ia, ib) = (a.ifindex("d0"), b.ifindex("d0"));
    // Routes watched in a; addresses and links in a and b.
    let (rtx, rrx) = mpsc::channel();
    let routes = ChangeWatcher::routes(a.ns(), move || rtx.send(()).unwrap()).unwrap();
    let (wa, rxa) = AddrWatcher::channel(a.ns(), ia).unwrap();
    let (wb, rxb) = AddrWatcher::channel(b.ns(), ib).unwrap();
    assert!(Arc::ptr_eq(&wa.chan.listener, &wb.chan.listener));
    assert!(!Arc::ptr_eq(&routes.chan.listener, &wa.chan.listener));
    assert_eq!(next(&rxa), AddrEvent::LinkDown { ifindex: ia });
    assert_eq!(next(&rxb), AddrEvent::LinkDown { ifindex: ib });
    let route_sock = routes.chan.listener.clone();

    // A route in b: the route socket hears nothing (b has no id in its home), and the hub
    // is woken only by the address socket's notifications of b.
    b.ip(&["link", "set", "d0", "up"]);
    b.ip(&["addr", "add", "198.51.100.1/24", "dev", "d0"]);
    b.ip(&["route", "add", "203.0.113.0/24", "dev", "d0"]);
    assert_eq!(next(&rxb), AddrEvent::LinkUp { ifindex: ib });
    assert_eq!(added(next(&rxb)), ip("198.51.100.1"));
    let w0 = hub_wakeups();
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(hub_wakeups(), w0, "the hub woke up for b's route");
    assert_eq!(
        rrx.try_recv(),
        Err(TryRecvError::Empty),
        "a's route watcher heard b"
    );
    let mut buf = [0u8; 64];
    // SAFETY: recv writes at most 64 bytes into `buf`; the socket is kept open by
    // `route_sock`.
    let r = unsafe {
        libc::recv(
            route_sock.sock.as_raw_fd(),
            buf.as_mut_ptr().cast(),
            buf.len(),
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    };
    assert_eq!(r, -1, "b's notifications queued on the route socket");

    // The same in a reaches a's route watcher; a's address watcher saw none of b's events.
    a.ip(&["link", "set", "d0", "up"]);
    a.ip(&["addr", "add", "198.51.100.2/24", "dev", "d0"]);
    a.ip(&["route", "add", "203.0.113.0/24", "dev", "d0"]);
    rrx.recv_timeout(WAIT)
        .expect("a's route watcher was not called");
    assert_eq!(next(&rxa), AddrEvent::LinkUp { ifindex: ia });
    assert_eq!(added(next(&rxa)), ip("198.51.100.2"));
    drop((routes, wa, wb));
}

/// Stalls the hub thread in a callback until the returned sender sends (or is dropped).
fn stall_hub() -> (ExitWatcher, mpsc::Sender<()>, std::process::Child) {
    let (in_tx, in_rx) = mpsc::channel();
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let child = Command::new("true").spawn().unwrap();
    let stall = ExitWatcher::start(child.id() as i32, move || {
        let _ = in_tx.send(());
        let _ = go_rx.recv();
    })
    .unwrap();
    in_rx.recv_timeout(WAIT).expect("hub stalled");
    (stall, go_tx, child)
}

#[test]
fn lost_notifications_make_every_watcher_of_the_socket_read_again() {
    let _s = hub::test_serial();
    let t = TestNs::new("nb", 1);
    let i0 = t.ifindex("d0");
    let (w, rx) = AddrWatcher::channel(t.ns(), i0).unwrap();
    let (ctx, crx) = mpsc::channel();
    let links = ChangeWatcher::links(t.ns(), move || ctx.send(()).unwrap()).unwrap();
    assert_eq!(next(&rx), AddrEvent::LinkDown { ifindex: i0 });
    let mut rtnl = t.rtnl();
    let opts = crate::netns::AddrOptions::default();
    let old: Vec<IpAddr> = (1..=10).map(|i| ip(&format!("198.51.100.{i}"))).collect();
    for a in &old {
        rtnl.addr_add(i0, *a, 32, opts).unwrap();
    }
    let mut mirror: HashSet<IpAddr> = HashSet::new();
    while mirror.len() < old.len() {
        assert!(mirror.insert(added(next(&rx))));
    }

    // Stall the hub in a slow callback, overflow the socket's (shrunk) buffer, release.
    let (stall, go_tx, mut child) = stall_hub();
    listen::set_rcvbuf(w.chan.listener.sock.as_raw_fd(), libc::SO_RCVBUF, 1).unwrap();
    let resyncs = listen::RESYNCS.load(Ordering::SeqCst);
    // The hub is stalled: every earlier call of the link watcher is over.
    while crx.try_recv().is_ok() {}
    for a in &old {
        rtnl.addr_del(i0, *a, 32).unwrap();
    }
    let new: HashSet<IpAddr> = (1..=200).map(|i| ip(&format!("203.0.113.{i}"))).collect();
    for a in &new {
        rtnl.addr_add(i0, *a, 32, opts).unwrap();
    }
    go_tx.send(()).unwrap();

    // The watcher ends with exactly the kernel's addresses, each reported once.
    while mirror != new {
        match next(&rx) {
            AddrEvent::AddrAdded(a) => assert!(mirror.insert(a.addr), "{a:?} twice"),
            AddrEvent::AddrRemoved(a) => assert!(mirror.remove(&a.addr), "{a:?} not held"),
            other => panic!("{other:?}"),
        }
    }
    assert!(
        listen::RESYNCS.load(Ordering::SeqCst) > resyncs,
        "the buffer did not overflow: the re-read path was not tested"
    );
    crx.recv_timeout(WAIT)
        .expect("the link watcher was called after the loss");
    assert!(w.is_running() && links.is_running());
    drop(stall);
    child.wait().unwrap();
}

#[test]
fn a_new_watcher_never_hears_what_happened_before_it_started() {
    let _s = hub::test_serial();
    let t = TestNs::new("ep", 1);
    let i0 = t.ifindex("d0");
    // An earlier watcher of the link: the namespace is heard on the shared socket.
    let (old, orx) = AddrWatcher::channel(t.ns(), i0).unwrap();
    assert_eq!(next(&orx), AddrEvent::LinkDown { ifindex: i0 });
    let changes = Arc::new(AtomicUsize::new(0));
    let c2 = changes.clone();
    let old_links = ChangeWatcher::links(t.ns(), || {}).unwrap();
    // A watcher of another namespace keeps the shared socket open throughout.
    let other = TestNs::new("eo", 1);
    let (keep, krx) = AddrWatcher::channel(other.ns(), other.ifindex("d0")).unwrap();
    assert!(Arc::ptr_eq(&keep.chan.listener, &old_links.chan.listener));
    assert!(matches!(next(&krx), AddrEvent::LinkDown { .. }));

    // While the hub is stalled, the link changes, its watchers go, and new ones start: the
    // socket still holds every notification from before they started.
    let (stall, go, mut child) = stall_hub();
    t.batch(
        "link set d0 up\naddr add 192.0.2.7/24 dev d0\naddr del 192.0.2.7/24 dev d0\n\
         link set d0 down\nlink set d0 up\n",
    );
    drop((old, old_links));
    let (new, nrx) = AddrWatcher::channel(t.ns(), i0).unwrap();
    assert!(Arc::ptr_eq(&keep.chan.listener, &new.chan.listener));
    let links = ChangeWatcher::links(t.ns(), move || {
        c2.fetch_add(1, Ordering::SeqCst);
    })
    .unwrap();
    // Its initial read: the link is up, without an address.
    assert_eq!(next(&nrx), AddrEvent::LinkUp { ifindex: i0 });
    go.send(()).unwrap();

    // The first thing the new watchers hear is what happens after they started.
    t.ip(&["addr", "add", "198.51.100.9/32", "dev", "d0"]);
    assert_eq!(added(next(&nrx)), ip("198.51.100.9"));
    assert_eq!(nrx.try_recv(), Err(TryRecvError::Empty));
    let deadline = std::time::Instant::now() + WAIT;
    while changes.load(Ordering::SeqCst) == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "link watcher not called"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    t.ip(&["link", "set", "d0", "down"]);
    assert_eq!(next(&nrx), AddrEvent::LinkDown { ifindex: i0 });
    assert!(new.is_running() && links.is_running() && keep.is_running());
    drop(stall);
    child.wait().unwrap();
}

#[test]
fn a_callback_can_drop_its_own_watcher_and_others() {
    let _s = hub::test_serial();
    let t = TestNs::new("dc", 1);
    let i0 = t.ifindex("d0");
    let own: Arc<Mutex<Option<AddrWatcher>>> = Arc::new(Mutex::new(None));
    let other: Arc<Mutex<Option<AddrWatcher>>> = Arc::new(Mutex::new(None));
    // Registered first, so the hub calls it first for each notification.
    let (wtx, wrx) = mpsc::channel();
    let (own2, other2) = (own.clone(), other.clone());
    let w = AddrWatcher::start(t.ns(), i0, move |ev| {
        let drop_now = matches!(&ev, AddrEvent::AddrAdded(a) if a.addr == ip("192.0.2.20"));
        let _ = wtx.send(ev);
        if drop_now {
            drop(lock(&other2).take());
            drop(lock(&own2).take());
        }
    })
    .unwrap();
    *lock(&own) = Some(w);
    let (v, vrx) = AddrWatcher::channel(t.ns(), i0).unwrap();
    *lock(&other) = Some(v);
    let (observer, orx) = AddrWatcher::channel(t.ns(), i0).unwrap();
    assert_eq!(next(&orx), AddrEvent::LinkDown { ifindex: i0 });

    t.ip(&["addr", "add", "192.0.2.20/24", "dev", "d0"]);
    assert_eq!(added(next(&orx)), ip("192.0.2.20"));
    t.ip(&["addr", "add", "192.0.2.21/24", "dev", "d0"]);
    assert_eq!(added(next(&orx)), ip("192.0.2.21"));
    assert!(lock(&own).is_none() && lock(&other).is_none());
    // The self-dropping watcher saw the address that made it drop, then nothing: its
    // callback (and the sender in it) was released. The other one, dropped before its
    // turn, saw neither address.
    let got: Vec<AddrEvent> = wrx.iter().collect();
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(got[0], AddrEvent::LinkDown { ifindex: i0 });
    assert_eq!(added(got[1].clone()), ip("192.0.2.20"));
    let got: Vec<AddrEvent> = vrx.iter().collect();
    assert_eq!(got, vec![AddrEvent::LinkDown { ifindex: i0 }]);
    assert!(observer.is_running());
}

#[test]
fn dropping_under_a_lock_another_callback_waits_for_does_not_deadlock() {
    // The daemon's pattern: a thread holding the daemon lock drops an endpoint's address
    // watcher (and may drop a route watcher) while the host link watcher's callback,
    // on the hub thread, waits for that lock.
    let _s = hub::test_serial();
    let t = TestNs::new("lk", 2);
    let i0 = t.ifindex("d0");
    let daemon_lock = Arc::new(Mutex::new(()));
    let (w, wrx) = AddrWatcher::channel(t.ns(), i0).unwrap();
    assert_eq!(next(&wrx), AddrEvent::LinkDown { ifindex: i0 });
    let routes = ChangeWatcher::routes(t.ns(), || {}).unwrap();
    let (in_tx, in_rx) = mpsc::channel();
    let (done_tx, done_rx) = mpsc::channel();
    let l2 = daemon_lock.clone();
    let links = ChangeWatcher::links(t.ns(), move || {
        let _ = in_tx.send(());
        let _g = lock(&l2);
        let _ = done_tx.send(());
    })
    .unwrap();

    let (locked_tx, locked_rx) = mpsc::channel();
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let (dropped_tx, dropped_rx) = mpsc::channel();
    let l3 = daemon_lock.clone();
    let holder = std::thread::spawn(move || {
        let _g = lock(&l3);
        locked_tx.send(()).unwrap();
        go_rx.recv().unwrap();
        drop(w);
        drop(routes);
        dropped_tx.send(()).unwrap();
    });
    locked_rx.recv_timeout(WAIT).unwrap();
    t.ip(&["link", "set", "d1", "up"]);
    in_rx
        .recv_timeout(WAIT)
        .expect("link watcher callback entered");
    go_tx.send(()).unwrap();
    dropped_rx
        .recv_timeout(WAIT)
        .expect("drop under the lock deadlocked with the hub");
    holder.join().unwrap();
    done_rx.recv_timeout(WAIT).expect("callback finished");
    // The dropped watcher released its callback: its channel is closed.
    assert_eq!(
        wrx.recv_timeout(WAIT),
        Err(mpsc::RecvTimeoutError::Disconnected)
    );
    assert!(links.is_running());
}

#[test]
fn no_callback_after_drop_while_watchers_come_and_go_under_traffic() {
    let _s = hub::test_serial();
    let t = TestNs::new("cg", 2);
    let idx = [t.ifindex("d0"), t.ifindex("d1")];
    let late = Arc::new(AtomicUsize::new(0));
    let on_hub = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    // Watchers of both links start and stop on 4 threads...
    let workers: Vec<_> = (0..4)
        .map(|k| {
            let ns = Netns::open_name(&t.name).unwrap();
            let (late, on_hub, stop) = (late.clone(), on_hub.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut i = 0;
                while !stop.load(Ordering::SeqCst) {
                    let dropped = Arc::new(AtomicBool::new(false));
                    let (d2, late2, hub2) = (dropped.clone(), late.clone(), on_hub.clone());
                    let w = AddrWatcher::start(&ns, idx[(k + i) % 2], move |_| {
                        if hub::on_hub_thread() {
                            hub2.fetch_add(1, Ordering::SeqCst);
                        }
                        if d2.load(Ordering::SeqCst) {
                            late2.fetch_add(1, Ordering::SeqCst);
                        }
                    })
                    .unwrap();
                    std::thread::yield_now();
                    drop(w);
                    dropped.store(true, Ordering::SeqCst);
                    i += 1;
                }
            })
        })
        .collect();
    // ... while addresses come and go on both links.
    let mut batch = String::new();
    for n in 0..400 {
        let a = format!("192.0.2.{}/32", 1 + n % 200);
        let dev = format!("d{}", n % 2);
        batch += &format!("addr add {a} dev {dev}\naddr del {a} dev {dev}\n");
    }
    for _ in 0..5 {
        t.batch(&batch);
    }
    stop.store(true, Ordering::SeqCst);
    for w in workers {
        w.join().unwrap();
    }
    assert!(
        on_hub.load(Ordering::SeqCst) > 0,
        "no event was delivered by the hub: the test raced nothing"
    );
    assert_eq!(late.load(Ordering::SeqCst), 0, "callbacks after drop");
    assert!(chan_of(t.ns(), GROUPS).is_none());
}

#[test]
fn drop_waits_for_its_own_running_callback() {
    let _s = hub::test_serial();
    let t = TestNs::new("dw", 1);
    let i0 = t.ifindex("d0");
    let finished = Arc::new(AtomicBool::new(false));
    let (in_tx, in_rx) = mpsc::channel();
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let f2 = finished.clone();
    let mut initial = true;
    let w = AddrWatcher::start(t.ns(), i0, move |_| {
        if std::mem::take(&mut initial) {
            return; // the initial LinkDown, in this thread
        }
        let _ = in_tx.send(());
        let _ = go_rx.recv();
        f2.store(true, Ordering::SeqCst);
    })
    .unwrap();
    t.ip(&["addr", "add", "192.0.2.30/24", "dev", "d0"]);
    in_rx.recv_timeout(WAIT).expect("callback running");
    let f3 = finished.clone();
    let dropper = std::thread::spawn(move || {
        drop(w);
        f3.load(Ordering::SeqCst)
    });
    // Give a drop that does not wait the time to return early.
    std::thread::sleep(Duration::from_millis(100));
    go_tx.send(()).unwrap();
    assert!(
        dropper.join().unwrap(),
        "drop returned while its callback was running"
    );
}

/// The next [`AddrEvent::Multicast`] on `rx` that `want` accepts (other events are skipped).
fn next_mc(rx: &Receiver<AddrEvent>, want: impl Fn(bool, &[IpAddr]) -> bool) -> Vec<IpAddr> {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(left) {
            Ok(AddrEvent::Multicast { all, groups, .. }) if want(all, &groups) => return groups,
            Ok(_) => {}
            Err(e) => panic!("no matching Multicast event within {WAIT:?}: {e}"),
        }
    }
}

/// Whether this kernel announces multicast group changes (6.11 and later).
fn kernel_announces_groups() -> bool {
    let rel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mut it = rel
        .trim()
        .split(['.', '-'])
        .map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor) = (it.next().unwrap_or(0), it.next().unwrap_or(0));
    (major, minor) >= (6, 11)
}

#[test]
fn a_multicast_watcher_follows_the_groups_its_link_joins_and_leaves() {
    if !kernel_announces_groups() {
        eprintln!("skipped: this kernel announces no multicast group changes (before 6.11)");
        return;
    }
    let _s = hub::test_serial();
    let t = TestNs::new("mc", 1);
    let i0 = t.ifindex("d0");
    let (plain, rp) = AddrWatcher::channel(t.ns(), i0).unwrap();
    let (tx, rm) = mpsc::channel();
    let mc = AddrWatcher::start_with_multicast(t.ns(), i0, move |ev| {
        let _ = tx.send(ev);
    })
    .unwrap();
    assert!(mc.slot.multicast.load(Ordering::SeqCst));
    assert!(!plain.slot.multicast.load(Ordering::SeqCst));
    // At start: the all-nodes groups every IPv6 device joins.
    let first = next_mc(&rm, |_, _| true);
    assert!(first.contains(&ip("ff02::1")), "{first:?}");

    // An address joins its solicited-node group; removing it leaves the group.
    let sol = ip("ff02::1:ff00:5");
    t.ip(&["addr", "add", "2001:db8::5/64", "dev", "d0", "nodad"]);
    next_mc(&rm, |all, g| !all && g.contains(&sol));
    t.ip(&["addr", "del", "2001:db8::5/64", "dev", "d0"]);
    next_mc(&rm, |all, g| !all && !g.contains(&sol));
    // An IPv4 group joined by the link coming up (224.0.0.1, all hosts).
    t.ip(&["link", "set", "d0", "up"]);
    next_mc(&rm, |_, g| g.contains(&ip("224.0.0.1")));
    // All-multicast opens the filter, and closing it closes it again.
    t.ip(&["link", "set", "d0", "allmulticast", "on"]);
    next_mc(&rm, |all, _| all);
    t.ip(&["link", "set", "d0", "allmulticast", "off"]);
    next_mc(&rm, |all, _| !all);

    // The watcher that did not ask saw the same changes without a Multicast event.
    drop((mc, plain));
    let seen: Vec<AddrEvent> = rp.try_iter().collect();
    assert!(
        seen.iter().any(|e| matches!(e, AddrEvent::LinkUp { .. })),
        "{seen:?}"
    );
    assert!(
        !seen
            .iter()
            .any(|e| matches!(e, AddrEvent::Multicast { .. })),
        "{seen:?}"
    );
}
