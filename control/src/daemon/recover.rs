//! Crash recovery at start, before anything is restored: every endpoint operation a crash
//! interrupted is finished or rolled back from its intent (see the store's module docs), and
//! every interface a daemon of this state directory marked as its own
//! ([`endpoint::mark`]) that no record names is removed: in the daemon's namespace and in
//! every namespace the store names. Only then are the addresses of the remaining endpoints
//! given to the address space, so an address is never handed out while a live interface
//! still holds it.
//!
//! The rules, per intent:
//! - `create` (connect, `run`, Docker's Join, CNI ADD; the client never got an answer): rolled
//!   back. The interface is deleted (found by its mark, or, if the crash came between making
//!   the TAP and marking it, as the unmarked TAP of the recorded name; a fast-path endpoint's
//!   veth pair by its end in the daemon's namespace, marked or not), then the record. A
//!   reservation it came from stays.
//! - `remove` (disconnect, `run --rm`, Docker's DeleteEndpoint or a Leave without a kept TAP,
//!   CNI DEL): finished. The interface is deleted if it is still there, the namespace too
//!   when `run --rm` asked for it, then the record.
//! - `park` (Docker's Leave): finished. The reservation was written before the intent; the
//!   record goes and the TAP (or a fast-path endpoint's veth pair) stays, for Docker to move
//!   back and DeleteEndpoint to remove.
//!
//! An endpoint whose namespace is gone at start (its file missing, or now another
//! namespace) is removed with a log line: the namespace took the interface with it
//! (after a reboot, or `ip netns delete` with nothing else holding it). One whose namespace
//! cannot be opened for another reason (permissions, descriptors) is kept, registered and
//! holding its addresses but without traffic, and tried again at the next start (see
//! `network.rs`).

use std::collections::HashSet;
use std::path::Path;

use crate::logger::Logger;
use crate::netns::{LinkInfo, Netns, NetnsError, Rtnl, NETNS_RUN_DIR};
use crate::store::{EndpointRecord, Intent, NetworkRecord, ReservedEndpoint, Store, StoreError};

use super::endpoint;

/// What opening an endpoint's namespace at start found.
pub(super) enum NsAt {
    /// The namespace the endpoint was made in.
    Same(Netns),
    /// Gone: the file is missing, is no namespace any more, or is now another namespace.
    Gone(String),
    /// It cannot be opened for another reason: the endpoint is kept.
    Unreachable(String),
}

/// Opens the namespace at `path`, expected to have nsfs inode `inode` (0: any).
pub(super) fn open_ns(path: &Path, inode: u64) -> NsAt {
    match Netns::open_path(path) {
        Ok(ns) if inode == 0 || ns.inode() == inode => NsAt::Same(ns),
        Ok(_) => NsAt::Gone(format!(
            "{} is now another namespace than the one it was attached to",
            path.display()
        )),
        Err(NetnsError::OpenPath { source, .. })
            if source.kind() == std::io::ErrorKind::NotFound =>
        {
            NsAt::Gone(format!("{} does not exist any more", path.display()))
        }
        Err(e @ NetnsError::NotANetns { .. }) => NsAt::Gone(e.to_string()),
        Err(e) => NsAt::Unreachable(e.to_string()),
    }
}

/// The interfaces in `ns` that belong to endpoint `ep_id` of this daemon: marked with it,
/// or (a crash between making the TAP and marking it) the unmarked TAP named `unmarked`.
fn own_links(rtnl: &mut Rtnl, tag: &str, ep_id: &str, unmarked: Option<&str>) -> Vec<LinkInfo> {
    let Ok(links) = rtnl.link_list() else {
        return Vec::new();
    };
    links
        .into_iter()
        .filter(|l| match l.alias.as_deref() {
            Some(a) => endpoint::parse_mark(a) == Some((ep_id, tag)),
            None => l.kind.as_deref() == Some("tun") && Some(l.name.as_str()) == unmarked,
        })
        .collect()
}

/// Deletes every interface of endpoint `ep` still in the kernel: in its namespace and, for
/// a TAP a front end moves, in the daemon's; for a fast-path endpoint, the daemon's end of
/// its veth pair, which takes the endpoint's end with it wherever it is (also one a crash
/// left before it was marked). Returns how many it deleted.
pub(super) fn remove_interfaces(tag: &str, ep: &EndpointRecord, log: &Logger) -> usize {
    let mut places: Vec<(Netns, Option<&str>)> = Vec::new();
    if let NsAt::Same(ns) = open_ns(Path::new(&ep.netns_path), ep.netns_inode) {
        // A TAP made inside carries the recorded name; one moved there was renamed.
        let name = ep.host_name.is_none().then_some(ep.ifname.as_str());
        places.push((ns, name));
    }
    if let Some(h) = &ep.host_name {
        if let Ok(here) = Netns::current() {
            places.push((here, Some(h.as_str())));
        }
    }
    let mut n = 0;
    let (_, veth_name) = endpoint::fast_names(&ep.id);
    if let Ok(here) = Netns::current() {
        let veth = Rtnl::open(&here).and_then(|mut r| r.link_get(&veth_name));
        if veth.is_ok_and(|l| l.kind.as_deref() == Some("veth")) {
            endpoint::delete_fast_leftovers(&ep.id);
            n += 1;
        }
    }
    for (ns, unmarked) in places {
        let Ok(mut rtnl) = Rtnl::open(&ns) else {
            continue;
        };
        for l in own_links(&mut rtnl, tag, &ep.id, unmarked) {
            match rtnl.link_delete(l.index) {
                Ok(()) => n += 1,
                Err(e) => log(&format!(
                    "endpoint {}: cannot delete its interface {} in {}: {e}",
                    ep.name,
                    l.name,
                    ns.label()
                )),
            }
        }
    }
    n
}

/// Resolves every intent in `recs` (see the module docs): the kernel first, then the
/// records; the endpoints that remain are settled.
pub(super) fn resolve_intents(
    store: &Store,
    tag: &str,
    recs: &mut [NetworkRecord],
    log: &Logger,
) -> Result<(), StoreError> {
    for rec in recs.iter_mut() {
        if rec.endpoints.iter().all(|e| e.intent.is_none()) {
            continue;
        }
        let eps = std::mem::take(&mut rec.endpoints);
        for ep in eps {
            let Some(intent) = ep.intent else {
                rec.endpoints.push(ep);
                continue;
            };
            let what = match intent {
                Intent::Create => {
                    let n = remove_interfaces(tag, &ep, log);
                    format!(
                        "rolled back its interrupted creation ({n} interface(s) removed; its \
                         addresses are free)"
                    )
                }
                Intent::Remove { delete_netns } => {
                    let n = remove_interfaces(tag, &ep, log);
                    let mut what =
                        format!("finished its interrupted removal ({n} interface(s) removed");
                    if delete_netns && ep.owns_netns {
                        let name = Path::new(&ep.netns_path)
                            .strip_prefix(NETNS_RUN_DIR)
                            .ok()
                            .and_then(|p| p.to_str());
                        if let Some(name) = name {
                            if Netns::exists(name) {
                                match Netns::delete(name) {
                                    Ok(()) => what.push_str(", namespace deleted"),
                                    Err(e) => what.push_str(&format!(
                                        ", its namespace could not be deleted: {e}"
                                    )),
                                }
                            }
                        }
                    }
                    what.push(')');
                    what
                }
                Intent::Park => {
                    let key = ep.key.clone().unwrap_or_default();
                    let has = rec
                        .managed
                        .iter()
                        .flat_map(|m| m.reserved.iter())
                        .any(|r| r.key == key);
                    if !has {
                        // Written before the intent, so this cannot happen with this
                        // build's files; made again all the same from the endpoint.
                        let r = ReservedEndpoint::of_endpoint(&ep, rec.driver == "macvlan", true);
                        store.save_reserved(&rec.id, &r)?;
                        if let Some(m) = rec.managed.as_mut() {
                            m.reserved.push(r);
                        }
                    }
                    "finished its interrupted detach (it is reserved again, its TAP kept)"
                        .to_string()
                }
            };
            store.delete_endpoint(&rec.id, &ep.id)?;
            log(&format!(
                "network {}: endpoint {} ({}): {what}",
                rec.name, ep.name, ep.id
            ));
        }
    }
    Ok(())
}

/// Removes every interface marked by this daemon (`tag`) that no endpoint or kept TAP of
/// `recs` is: in the daemon's namespace and in every namespace `recs` names.
pub(super) fn remove_orphans(tag: &str, recs: &[NetworkRecord], log: &Logger) {
    let mut known: HashSet<&str> = HashSet::new();
    let mut paths: Vec<(&str, u64)> = Vec::new();
    let mut seen_paths: HashSet<&str> = HashSet::new();
    for rec in recs {
        for ep in &rec.endpoints {
            known.insert(&ep.id);
            if seen_paths.insert(&ep.netns_path) {
                paths.push((&ep.netns_path, ep.netns_inode));
            }
        }
        for r in rec.managed.iter().flat_map(|m| m.reserved.iter()) {
            if let Some(id) = &r.endpoint_id {
                known.insert(id);
            }
        }
    }
    let mut spaces: Vec<Netns> = Netns::current().into_iter().collect();
    let mut inodes: HashSet<u64> = spaces.iter().map(Netns::inode).collect();
    for (path, inode) in paths {
        if let NsAt::Same(ns) = open_ns(Path::new(path), inode) {
            if inodes.insert(ns.inode()) {
                spaces.push(ns);
            }
        }
    }
    for ns in spaces {
        let Ok(mut rtnl) = Rtnl::open(&ns) else {
            continue;
        };
        let Ok(links) = rtnl.link_list() else {
            continue;
        };
        for l in links {
            let Some((id, host)) = l.alias.as_deref().and_then(endpoint::parse_mark) else {
                continue;
            };
            if host != tag || known.contains(id) {
                continue;
            }
            let done = match rtnl.link_delete(l.index) {
                Ok(()) => "removed".to_string(),
                Err(e) => format!("cannot remove it: {e}"),
            };
            log(&format!(
                "interface {} in {} belongs to endpoint {id} of this daemon, which no record \
                 names (left by a crash of an older build, or by a lost state file): {done}",
                l.name,
                ns.label()
            ));
        }
    }
}
