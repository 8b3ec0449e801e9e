//! Keeping DHCP leases (`--ipam-driver dhcp`): one thread per daemon, started with the first
//! lease, that sleeps until the earliest deadline of all leases (no periodic wake-up) or
//! until a lease changes. At T1 it RENEWs (unicast to the server), at T2 it REBINDs
//! (broadcast), and at the lease's end, or on a NAK, the endpoint loses the address: it is
//! removed from `eth0` (its routes go with it) and from the record, and discovery starts
//! again (a DISCOVER after a random pause of up to 2 s, then every 30 s while nobody
//! answers). Each exchange runs on a short-lived thread of its own, without the daemon's
//! lock, up to [`PARALLEL`] at a time, so a slow one holds no other lease back; its outcome
//! is applied under the lock, only if the endpoint still holds the same lease.
//!
//! After a restart (a `kill -9` included) every stored lease is confirmed before it is
//! renewed: INIT-REBOOT (RFC 2131 3.2), a broadcast REQUEST for the stored address without a
//! server identifier. An ACK keeps it (or updates it), and puts the address and its routes
//! back on the interface if they left it while the daemon was down; a NAK takes the address
//! off `eth0`
//! and starts discovery; silence keeps the lease until its T1 as before the restart. A lease
//! that ended while the daemon was down is taken away and asked for again at once. The
//! confirmations are spread over a random pause of up to 250 ms per lease beyond the first,
//! at most 10 s (RFC 2131 4.4.1 asks for 1 to 10 s at boot), so that a daemon with many
//! endpoints does not flood the server.

use std::net::IpAddr;
use std::sync::Weak;
use std::time::Duration;

use crate::dhcp::{self, Lease, Renewal};
use crate::netns::{AddrOptions, Netns, Route, Rtnl};

use super::model::{Daemon, RenewShared};

/// How long one RENEW or REBIND waits for the server.
const RENEW_WAIT: Duration = Duration::from_secs(2);
/// The shortest pause before a RENEW or REBIND that got no answer is sent again.
const MIN_RETRY_SECS: u64 = 2;
/// How long an INIT-REBOOT waits for the server in all (REQUEST sent at 0, 1 and 3 s).
const REBOOT_WAIT: Duration = Duration::from_secs(4);
/// How many exchanges the thread runs at once.
const PARALLEL: usize = 8;
/// The random pause before a DISCOVER for an endpoint that lost its lease.
const LOST_JITTER: Duration = Duration::from_secs(2);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Action {
    Renew,
    Rebind,
    Expire,
    /// The endpoint lost its lease: ask for a new one (DISCOVER).
    Discover,
    /// The daemon restarted: confirm the stored lease (INIT-REBOOT).
    Reboot,
}

/// How long after a DISCOVER nobody answered (once the lease was lost) it is sent again.
const DISCOVER_RETRY_SECS: u64 = 30;

/// What to do for a lease at `now`, and else when to look again.
fn plan(lease: &Lease, now: u64, retry_at: Option<u64>) -> Result<Action, u64> {
    if lease.lease_secs == u32::MAX {
        return Err(u64::MAX);
    }
    let (t1, t2, end) = dhcp::deadlines(lease);
    if now >= end {
        return Ok(Action::Expire);
    }
    let due = retry_at.unwrap_or(t1).max(t1).min(end);
    if now < due {
        return Err(due);
    }
    Ok(if now >= t2 {
        Action::Rebind
    } else {
        Action::Renew
    })
}

/// After a silent attempt: half the time to the next boundary, at least
/// [`MIN_RETRY_SECS`] (RFC 2131 4.4.5, with a shorter floor for short leases).
fn retry_after(lease: &Lease, now: u64) -> u64 {
    let (_, t2, end) = dhcp::deadlines(lease);
    let boundary = if now < t2 { t2 } else { end };
    now + (boundary.saturating_sub(now) / 2).max(MIN_RETRY_SECS)
}

struct Job {
    net_id: String,
    ep_id: String,
    name: String,
    netns_path: String,
    ifname: String,
    mac: [u8; 6],
    /// `None`: the endpoint lost its lease ([`Action::Discover`]).
    lease: Option<Lease>,
    action: Action,
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Daemon {
    /// At start: the stored leases of `ids` are to be confirmed with INIT-REBOOT, each after
    /// a random pause (see the module docs).
    pub(super) fn schedule_reboots(&self, ids: Vec<String>) {
        let spread = Duration::from_millis(250 * ids.len().saturating_sub(1) as u64)
            .min(Duration::from_secs(10));
        let now = now_secs();
        let (m, _) = &*self.renew;
        let mut t = m.lock().unwrap_or_else(|e| e.into_inner());
        for id in ids {
            let at = now + dhcp::jitter(spread).as_secs();
            t.reboot.insert(id, at);
        }
    }

    /// Tells the renewal thread that leases changed, starting it with the first one.
    pub(super) fn renew_kick(&self) {
        let (m, cv) = &*self.renew;
        let mut t = m.lock().unwrap_or_else(|e| e.into_inner());
        t.generation += 1;
        if !t.started {
            t.started = true;
            let me = self.me.clone();
            let shared = self.renew.clone();
            let spawned = std::thread::Builder::new()
                .name("uvlan-dhcp".to_string())
                .spawn(move || renew_loop(me, shared));
            if let Err(e) = spawned {
                t.started = false;
                (self.log)(&format!(
                    "cannot start the DHCP renewal thread: {e}; leases are not renewed"
                ));
            }
        }
        cv.notify_all();
    }

    /// The leases due at `now`, and the earliest later deadline.
    fn due_leases(&self, now: u64) -> (Vec<Job>, Option<u64>) {
        let (retry, reboot, busy) = {
            let (m, _) = &*self.renew;
            let t = m.lock().unwrap_or_else(|e| e.into_inner());
            (t.retry.clone(), t.reboot.clone(), t.busy.clone())
        };
        let st = self.lock();
        let mut jobs = Vec::new();
        let mut next: Option<u64> = None;
        for n in st.nets.iter().filter(|n| n.rec.dhcp) {
            // An endpoint a connect is still making is not the thread's yet; one whose
            // exchange runs is looked at again when it ends.
            let eps = n.rec.endpoints.iter();
            for ep in eps.filter(|e| e.intent.is_none() && !busy.contains(&e.id)) {
                let retry_at = retry.get(&ep.id).copied();
                let planned = match &ep.lease {
                    Some(lease) => match (plan(lease, now, retry_at), reboot.get(&ep.id)) {
                        (Ok(Action::Expire), _) => Ok(Action::Expire),
                        (_, Some(&at)) if at <= now => Ok(Action::Reboot),
                        (_, Some(&at)) => Err(at),
                        (p, None) => p,
                    },
                    None => match retry_at {
                        Some(t) if t > now => Err(t),
                        _ => Ok(Action::Discover),
                    },
                };
                match planned {
                    Ok(action) => jobs.push(Job {
                        net_id: n.rec.id.clone(),
                        ep_id: ep.id.clone(),
                        name: ep.name.clone(),
                        netns_path: ep.netns_path.clone(),
                        ifname: ep.ifname.clone(),
                        mac: ep.mac().map(|m| m.octets()).unwrap_or_default(),
                        lease: ep.lease.clone(),
                        action,
                    }),
                    Err(u64::MAX) => {}
                    Err(t) => next = Some(next.map_or(t, |x| x.min(t))),
                }
            }
        }
        (jobs, next)
    }

    fn run_job(&self, job: &Job) -> Result<Renewal, String> {
        if job.action == Action::Expire {
            return Ok(Renewal::Nak);
        }
        let ns =
            Netns::open_path(std::path::Path::new(&job.netns_path)).map_err(|e| e.to_string())?;
        let client = || -> Result<dhcp::Client, String> {
            let ifindex = Rtnl::open(&ns)
                .and_then(|mut r| r.link_get(&job.ifname))
                .map_err(|e| e.to_string())?
                .index;
            Ok(dhcp::Client {
                ifindex,
                mac: job.mac,
                client_id: dhcp::client_id_for(&job.ep_id),
                hostname: Some(job.name.clone()).filter(|n| !n.contains('/')),
            })
        };
        if let (Action::Reboot, Some(lease)) = (job.action, &job.lease) {
            return dhcp::reboot(&ns, &client()?, lease.addr, REBOOT_WAIT)
                .map_err(|e| e.to_string());
        }
        let Some(lease) = &job.lease else {
            let client = client()?;
            let _turn = self.dhcp_turn(job.mac);
            return match dhcp::acquire(&ns, &client, None) {
                Ok(l) => Ok(Renewal::Ack(l)),
                Err(dhcp::DhcpError::NoOffer { .. } | dhcp::DhcpError::NoAck { .. }) => {
                    Ok(Renewal::Silent)
                }
                Err(e) => Err(e.to_string()),
            };
        };
        dhcp::renew(
            &ns,
            &job.ifname,
            job.mac,
            lease,
            job.action == Action::Rebind,
            RENEW_WAIT,
        )
        .map_err(|e| e.to_string())
    }

    /// Applies an exchange's outcome to the endpoint, if it still holds the same lease.
    fn apply_renewal(&self, job: &Job, outcome: Result<Renewal, String>, now: u64) {
        {
            // Whatever happened (an INIT-REBOOT, or an expiry before it), the stored lease
            // needs no confirmation any more.
            let (m, _) = &*self.renew;
            let mut t = m.lock().unwrap_or_else(|e| e.into_inner());
            t.reboot.remove(&job.ep_id);
        }
        let mut st = self.lock();
        let Some(i) = st.nets.iter().position(|n| n.rec.id == job.net_id) else {
            return;
        };
        let Some(k) = st.nets[i]
            .rec
            .endpoints
            .iter()
            .position(|e| e.id == job.ep_id && e.lease == job.lease)
        else {
            return;
        };
        let outcome = match outcome {
            Ok(o) => o,
            Err(e) => {
                (self.log)(&format!("endpoint {}: DHCP renewal: {e}", job.name));
                Renewal::Silent
            }
        };
        let mut rec = st.nets[i].rec.endpoints[k].clone();
        let old = job.lease.as_ref().map(|l| (l.addr, l.prefix_len));
        match outcome {
            Renewal::Silent if job.action == Action::Reboot => {
                (self.log)(&format!(
                    "endpoint {}: no DHCP server answered the INIT-REBOOT for {}; the stored \
                     lease is kept until its end and renewed at T1",
                    job.name,
                    old.map_or(std::net::Ipv4Addr::UNSPECIFIED, |o| o.0)
                ));
                return;
            }
            Renewal::Silent => {
                let at = match &job.lease {
                    Some(l) => retry_after(l, now),
                    None => now + DISCOVER_RETRY_SECS,
                };
                let (m, _) = &*self.renew;
                m.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .retry
                    .insert(job.ep_id.clone(), at);
                return;
            }
            Renewal::Ack(new) => {
                if old != Some((new.addr, new.prefix_len)) {
                    if let Err(e) = readdress(job, Some(&new)) {
                        (self.log)(&format!(
                            "endpoint {}: the DHCP server moved it to {}: {e}",
                            job.name, new.addr
                        ));
                    }
                } else if job.action == Action::Reboot {
                    // The address may have left the interface while the daemon was down.
                    match restore_address(job, &new) {
                        Ok(false) => {}
                        Ok(true) => (self.log)(&format!(
                            "endpoint {}: {}/{} was no longer on {}: put back with its routes",
                            job.name, new.addr, new.prefix_len, job.ifname
                        )),
                        Err(e) => (self.log)(&format!(
                            "endpoint {}: putting {}/{} back on {}: {e}",
                            job.name, new.addr, new.prefix_len, job.ifname
                        )),
                    }
                }
                (self.log)(&format!(
                    "endpoint {}: DHCP lease {} {} for {}s",
                    job.name,
                    new.addr,
                    match job.action {
                        Action::Rebind => "rebound",
                        Action::Discover => "obtained again",
                        Action::Reboot => "confirmed after the restart (INIT-REBOOT)",
                        _ => "renewed",
                    },
                    new.lease_secs
                ));
                rec.addrs.v4 = dhcp::endpoint_addr(&new);
                rec.lease = Some(new);
            }
            Renewal::Nak if job.lease.is_none() => return,
            Renewal::Nak => {
                let old = old.map_or(std::net::Ipv4Addr::UNSPECIFIED, |o| o.0);
                if let Err(e) = readdress(job, None) {
                    (self.log)(&format!("endpoint {}: removing {old}: {e}", job.name));
                }
                (self.log)(&format!(
                    "endpoint {}: lost its DHCP lease of {old} ({}); the address is removed and \
                     a new lease is asked for",
                    job.name,
                    match job.action {
                        Action::Expire => "it expired",
                        Action::Reboot => "the server refused it after the restart",
                        _ => "the server refused to extend it",
                    }
                ));
                rec.addrs.v4 = None;
                rec.lease = None;
            }
        }
        {
            let (m, _) = &*self.renew;
            let mut t = m.lock().unwrap_or_else(|e| e.into_inner());
            match &rec.lease {
                Some(_) => t.retry.remove(&job.ep_id),
                // A DISCOVER after a random pause (RFC 2131 4.4.1): endpoints that lose
                // their leases together do not ask all at once.
                None => t
                    .retry
                    .insert(job.ep_id.clone(), now + dhcp::jitter(LOST_JITTER).as_secs()),
            };
        }
        if let Err(e) = self.store.save_endpoint(&job.net_id, &rec) {
            (self.log)(&format!("endpoint {}: {e}", job.name));
        }
        st.nets[i].rec.endpoints[k] = rec;
    }
}

/// Takes the old lease's address off the endpoint's interface and puts `new`'s on, with
/// its routes (or nothing, when the lease is lost).
fn readdress(job: &Job, new: Option<&Lease>) -> Result<(), String> {
    let ns = Netns::open_path(std::path::Path::new(&job.netns_path)).map_err(|e| e.to_string())?;
    let mut r = Rtnl::open(&ns).map_err(|e| e.to_string())?;
    let ifindex = r.link_get(&job.ifname).map_err(|e| e.to_string())?.index;
    if let Some(old) = &job.lease {
        r.addr_del(ifindex, IpAddr::V4(old.addr), old.prefix_len)
            .map_err(|e| e.to_string())?;
    }
    if let Some(l) = new {
        put_lease(&mut r, ifindex, l)?;
    }
    Ok(())
}

/// Puts lease `l`'s address on link `ifindex`, with its routes: the classless ones, else the
/// router as default route.
fn put_lease(r: &mut Rtnl, ifindex: u32, l: &Lease) -> Result<(), String> {
    r.addr_add(
        ifindex,
        IpAddr::V4(l.addr),
        l.prefix_len,
        AddrOptions::default(),
    )
    .map_err(|e| e.to_string())?;
    if l.routes.is_empty() {
        if let Some(g) = l.router {
            r.route_replace(&Route::default_via(IpAddr::V4(g), Some(ifindex)))
                .map_err(|e| e.to_string())?;
        }
    }
    for (dst, len, gw) in &l.routes {
        let gw = (!gw.is_unspecified()).then_some(IpAddr::V4(*gw));
        r.route_replace(&Route::to(IpAddr::V4(*dst), *len, gw, Some(ifindex)))
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// After an INIT-REBOOT's ACK: puts `lease`'s address back on the endpoint's interface, with
/// its routes, when it is not there (removed while the daemon was down). Returns whether it
/// had to.
fn restore_address(job: &Job, lease: &Lease) -> Result<bool, String> {
    let ns = Netns::open_path(std::path::Path::new(&job.netns_path)).map_err(|e| e.to_string())?;
    let mut r = Rtnl::open(&ns).map_err(|e| e.to_string())?;
    let ifindex = r.link_get(&job.ifname).map_err(|e| e.to_string())?.index;
    let held = r.addr_list(Some(ifindex)).map_err(|e| e.to_string())?;
    if held
        .iter()
        .any(|a| a.addr == IpAddr::V4(lease.addr) && a.prefix_len == lease.prefix_len)
    {
        return Ok(false);
    }
    put_lease(&mut r, ifindex, lease)?;
    Ok(true)
}

fn renew_loop(me: Weak<Daemon>, shared: RenewShared) {
    loop {
        let generation = {
            let t = shared.0.lock().unwrap_or_else(|e| e.into_inner());
            if t.stop {
                return;
            }
            t.generation
        };
        let next = {
            let Some(d) = me.upgrade() else {
                return;
            };
            let now = now_secs();
            let (jobs, next) = d.due_leases(now);
            // Each exchange on a thread of its own, [`PARALLEL`] at most; one that ends
            // wakes this loop (its outcome moved deadlines, or a due job waits for a turn).
            for job in jobs {
                {
                    let mut t = shared.0.lock().unwrap_or_else(|e| e.into_inner());
                    if t.busy.len() >= PARALLEL {
                        break;
                    }
                    t.busy.insert(job.ep_id.clone());
                }
                let (d2, shared2, id, name) = (
                    d.clone(),
                    shared.clone(),
                    job.ep_id.clone(),
                    job.name.clone(),
                );
                let spawned = std::thread::Builder::new()
                    .name("uvlan-dhcp-job".to_string())
                    .spawn(move || {
                        let outcome = d2.run_job(&job);
                        d2.apply_renewal(&job, outcome, now);
                        drop(d2);
                        let (m, cv) = &*shared2;
                        let mut t = m.lock().unwrap_or_else(|e| e.into_inner());
                        t.busy.remove(&job.ep_id);
                        t.generation += 1;
                        cv.notify_all();
                    });
                if let Err(e) = spawned {
                    shared
                        .0
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .busy
                        .remove(&id);
                    (d.log)(&format!(
                        "endpoint {name}: cannot start a DHCP exchange: {e} (tried again when \
                         leases change or at the next deadline)"
                    ));
                    break;
                }
            }
            next
        };
        let (m, cv) = &*shared;
        let mut t = m.lock().unwrap_or_else(|e| e.into_inner());
        while !t.stop && t.generation == generation {
            match next {
                None => t = cv.wait(t).unwrap_or_else(|e| e.into_inner()),
                Some(at) => {
                    let left = at.saturating_sub(now_secs());
                    if left == 0 {
                        break;
                    }
                    t = cv
                        .wait_timeout(t, Duration::from_secs(left))
                        .unwrap_or_else(|e| e.into_inner())
                        .0;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn lease(obtained: u64) -> Lease {
        Lease {
            addr: Ipv4Addr::new(192, 0, 2, 100),
            prefix_len: 24,
            server_id: Ipv4Addr::new(192, 0, 2, 254),
            router: None,
            routes: Vec::new(),
            dns: Vec::new(),
            lease_secs: 100,
            t1_secs: 50,
            t2_secs: 80,
            obtained,
            client_id: "00".into(),
        }
    }

    #[test]
    fn deadlines_pick_renew_rebind_expire_and_retries() {
        let l = lease(1000);
        assert_eq!(plan(&l, 1000, None), Err(1050));
        assert_eq!(plan(&l, 1050, None), Ok(Action::Renew));
        assert_eq!(plan(&l, 1080, None), Ok(Action::Rebind));
        assert_eq!(plan(&l, 1100, None), Ok(Action::Expire));
        // A silent RENEW at 1050 retries halfway to T2, a silent REBIND halfway to the end.
        assert_eq!(retry_after(&l, 1050), 1065);
        assert_eq!(plan(&l, 1060, Some(1065)), Err(1065));
        assert_eq!(retry_after(&l, 1090), 1095);
        assert_eq!(retry_after(&l, 1099), 1101);
        assert_eq!(plan(&l, 1099, Some(1101)), Err(1100));
        let mut inf = lease(0);
        inf.lease_secs = u32::MAX;
        assert_eq!(plan(&inf, u64::MAX - 1, None), Err(u64::MAX));
    }
}
