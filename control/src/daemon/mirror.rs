//! Mirrors an endpoint interface into its engine port: the address watcher's events
//! (addresses, up/down, MTU, multicast groups) become engine changes, the first report in
//! one publication, and what the engine refuses is logged.

use std::sync::{Arc, Mutex};

use uvlan_dataplane::fwd::{Engine, Errno, McFilter, PortId};

use super::dp::{with_engine, DataplaneApi};
use super::endpoint::Gone;
use crate::logger::Logger;
use crate::netns::{AddrEvent, AddrWatcher, Netns, Rtnl};

/// Mirrors the endpoint interface's addresses and up/down state into the engine (the same
/// events ipvlan's notifiers see: `ipvlan_addr4_event`/`ipvlan_addr6_event` and
/// `ipvlan_device_event` in `ipvlan_main.c`; `docs/conformance.md` C9–C12). First owner wins: an
/// address another port holds is refused by the engine and logged as a conflict.
///
/// It also mirrors the interface's multicast groups into the port's filter, as the kernel
/// drivers fill theirs from the slave's address lists (`ipvlan_set_multicast_mac_filter`,
/// `macvlan_set_mac_lists`), where the kernel announces group changes; elsewhere the port
/// keeps accepting every group.
pub fn start_watcher(
    dp: Arc<dyn DataplaneApi>,
    log: Logger,
    netns: &Netns,
    ifindex: u32,
    port: PortId,
    label: String,
    gone: Arc<Gone>,
) -> Result<AddrWatcher, String> {
    // The events of the initial report (the watcher calls back in this thread before
    // `start` returns) are collected here and reach the engine in one publication, after the
    // MTU the interface has now (the watcher reports only later changes). While this holds
    // `Some`, a notification the hub thread delivers meanwhile joins the batch, in order;
    // the lock is held while the batch is applied, so a later one waits for it.
    let batch: Arc<Mutex<Option<Vec<AddrEvent>>>> = Arc::new(Mutex::new(Some(Vec::new())));
    if let Ok(mtu) = Rtnl::open(netns).and_then(|mut r| r.link_get_by_index(ifindex)) {
        if let Some(b) = lock(&batch).as_mut() {
            b.push(AddrEvent::LinkMtu {
                ifindex,
                mtu: mtu.mtu,
            });
        }
    }
    // The filter the port was given last: a change of groups that maps to the same filter
    // (ff01::1 and ff02::1 share a MAC) costs no engine publication.
    let mut filter = McFilter::All;
    let (dp2, log2, label2, batch2) = (dp.clone(), log.clone(), label.clone(), batch.clone());
    let watcher = AddrWatcher::start_with_multicast(netns, ifindex, move |ev| {
        match &ev {
            AddrEvent::LinkRemoved { .. } if gone.expected() => {
                // A teardown removes it: nothing to mirror or log.
                gone.done();
                return;
            }
            // A teardown is taking the interface away, and its groups with it: the port
            // goes too, so its filter needs no update.
            AddrEvent::Multicast { .. } if gone.expected() => return,
            AddrEvent::Multicast { all, groups, .. } => {
                let now = McFilter::from_ip_groups(*all, groups);
                if now == filter {
                    return;
                }
                filter = now;
            }
            _ => {}
        }
        let mut b = lock(&batch2);
        match b.as_mut() {
            Some(pending) => pending.push(ev),
            None => {
                drop(b);
                apply_events(&*dp2, &log2, port, &label2, vec![ev]);
            }
        }
    })
    .map_err(|e| format!("cannot watch the endpoint's addresses: {e}"))?;
    let mut b = lock(&batch);
    let events = b.take().unwrap_or_default();
    apply_events(&*dp, &log, port, &label, events);
    drop(b);
    Ok(watcher)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// What the engine answered to one event.
type Answer = Result<(), uvlan_dataplane::fwd::ConfigError>;

/// One event's change to the engine (pure engine work, run on the dataplane thread).
fn apply_event(e: &mut Engine, port: PortId, ev: &AddrEvent) -> (Answer, Option<u32>) {
    match ev {
        AddrEvent::LinkMtu { mtu, .. } => {
            let r = e.set_port_mtu(port, *mtu);
            (r, e.port_info(port).map(|i| i.mtu))
        }
        AddrEvent::Multicast { all, groups, .. } => (
            e.set_port_mc_filter(port, McFilter::from_ip_groups(*all, groups)),
            None,
        ),
        AddrEvent::AddrAdded(a) => (e.add_port_addr(port, a.addr), None),
        // EADDRNOTAVAIL: it was never ours (a refused duplicate); nothing to undo.
        AddrEvent::AddrRemoved(a) => (e.del_port_addr(port, a.addr).or(Ok(())), None),
        AddrEvent::LinkUp { .. } => (e.set_port_up(port, true), None),
        AddrEvent::LinkDown { .. } => (e.set_port_up(port, false), None),
        AddrEvent::LinkRemoved { .. } => (e.set_port_up(port, false).or(Ok(())), None),
    }
}

/// Applies `events` to the endpoint's port in one engine publication, then logs what needs
/// saying.
fn apply_events(
    dp: &dyn DataplaneApi,
    log: &Logger,
    port: PortId,
    label: &str,
    events: Vec<AddrEvent>,
) {
    if events.is_empty() {
        return;
    }
    let answered = with_engine(dp, move |e| {
        events
            .into_iter()
            .map(|ev| {
                let a = apply_event(e, port, &ev);
                (ev, a)
            })
            .collect::<Vec<_>>()
    });
    match answered {
        Ok(all) => {
            for (ev, (r, kept)) in all {
                report(log, label, &ev, r, kept);
            }
        }
        Err(e) => log(&format!(
            "{label}: cannot mirror its interface's changes: {e}"
        )),
    }
}

/// Logs the outcome of one event (nothing when it went as expected).
///
/// The MTU: it is the one the receiver side of `is_skb_forwardable` judges (C66). ipvlan
/// takes any MTU (C63). A macvlan MTU above the lower device's is refused by the kernel
/// (`EINVAL`, C45), but a TAP accepts it: the port keeps its MTU, so uvlan forwards as if the
/// change had been refused (what the endpoint sends above the parent's MTU is dropped as
/// `wire_mtu_exceeded`, or by its peers' MTUs), and the log says so.
fn report(log: &Logger, label: &str, ev: &AddrEvent, r: Answer, kept: Option<u32>) {
    if let AddrEvent::LinkRemoved { .. } = ev {
        log(&format!(
            "{label}: the endpoint interface was deleted inside the namespace; the endpoint \
             stays registered (and its addresses reserved) until \"uvlan network disconnect\""
        ));
        return;
    }
    let e = match r {
        Ok(()) => return,
        // The port went meanwhile.
        Err(e) if e.errno == Errno::Enodev => return,
        Err(e) => e,
    };
    match ev {
        AddrEvent::LinkMtu { mtu, .. } => match kept {
            Some(kept) if e.errno == Errno::Einval => log(&format!(
                "{label}: its MTU was set to {mtu}, above the parent's: a macvlan refuses that \
                 ({e}); uvlan keeps forwarding its frames as with MTU {kept} (longer ones are \
                 dropped as wire_mtu_exceeded or by the receiver's MTU). Set it back inside the \
                 namespace: ip link set dev IF mtu {kept}"
            )),
            _ => log(&format!("{label}: cannot follow MTU {mtu}: {e}")),
        },
        AddrEvent::AddrAdded(a) if e.errno == Errno::Eaddrinuse => log(&format!(
            "address conflict: {} was added inside {label}, but another endpoint on the same \
             parent (or the parent itself) owns it; the first owner keeps it, so {label} does \
             not receive traffic for it ({e}). Remove it inside the namespace.",
            a.addr
        )),
        AddrEvent::AddrAdded(a) => log(&format!("{label}: cannot learn address {}: {e}", a.addr)),
        AddrEvent::LinkUp { .. } | AddrEvent::LinkDown { .. } => log(&format!(
            "{label}: the interface went {} but the engine refused: {e}",
            if matches!(ev, AddrEvent::LinkUp { .. }) {
                "up"
            } else {
                "down"
            }
        )),
        AddrEvent::Multicast { .. } => {
            log(&format!("{label}: cannot follow its multicast groups: {e}"))
        }
        AddrEvent::AddrRemoved(_) | AddrEvent::LinkRemoved { .. } => {}
    }
}
