//! The next-hop cache in front of the control plane's [`Resolver`], and the two together as
//! the engine's [`Routes`] ([`HostRoutes`]).

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ahash::AHashMap;

use crate::fwd::{ParentId, Routes};

use super::{NextHop, Resolver};

/// How long a resolved MAC is trusted.
pub(crate) const TTL_MAC: Duration = Duration::from_secs(30);
/// How long a `Pending` answer holds before the resolver is asked again. Short: the host is
/// resolving at that moment, and every packet in this window is dropped.
pub(crate) const TTL_PENDING: Duration = Duration::from_millis(250);
/// How long `Local`, `BadRouteType` and `Unreachable` answers hold.
pub(crate) const TTL_NEGATIVE: Duration = Duration::from_secs(1);
/// Expired entries are swept when the cache grows beyond this.
const SWEEP_AT: usize = 4096;

/// Answers of the resolver per (parent ifindex, destination), each with an expiry time.
#[derive(Debug, Default)]
pub(crate) struct NhCache {
    map: AHashMap<(u32, IpAddr), (NextHop, Instant)>,
    /// Calls made to the resolver (for tests and stats).
    pub(crate) lookups: u64,
}

impl NhCache {
    /// The cached answer, or a fresh one from `resolver` (then cached).
    pub(crate) fn get(
        &mut self,
        resolver: &mut dyn FnMut(u32, IpAddr) -> NextHop,
        ifindex: u32,
        dst: IpAddr,
        now: Instant,
    ) -> NextHop {
        if let Some((nh, until)) = self.map.get(&(ifindex, dst)) {
            if *until > now {
                return *nh;
            }
        }
        self.lookups += 1;
        let nh = resolver(ifindex, dst);
        let ttl = match nh {
            NextHop::Mac(_) => TTL_MAC,
            NextHop::Pending => TTL_PENDING,
            NextHop::Local | NextHop::BadRouteType | NextHop::Unreachable => TTL_NEGATIVE,
        };
        if self.map.len() >= SWEEP_AT {
            self.map.retain(|_, (_, until)| *until > now);
        }
        self.map.insert((ifindex, dst), (nh, now + ttl));
        nh
    }

    /// Forgets everything.
    pub(crate) fn clear(&mut self) {
        self.map.clear();
    }

    /// Forgets the answers for one interface (its wire was closed).
    pub(crate) fn forget_ifindex(&mut self, ifindex: u32) {
        self.map.retain(|(i, _), _| *i != ifindex);
    }
}

/// What every worker knows of an attached parent, whichever worker owns its wire: its
/// interface (for the route stage), whether it is gone, and who transmits on it.
#[derive(Debug, Clone)]
pub(crate) struct ParentView {
    /// Interface index in the dataplane's namespace.
    pub(crate) ifindex: u32,
    /// The owner found the interface gone or replaced (shared with the owner's slot).
    pub(crate) broken: Arc<AtomicBool>,
    /// The worker that owns the wire.
    pub(crate) owner: usize,
}

/// The host's tables as the datapath's route stage sees them: the parent's interface index in
/// the dataplane's namespace, then the cache, then the resolver. Built per decision (or per
/// trace) from the worker's state; the datapath and `DataplaneHandle::trace` use the same one.
/// Each worker has its own cache; the resolver is shared (asked only on a cache miss).
pub(crate) struct HostRoutes<'a> {
    /// Attached parents by index.
    pub(crate) parents: &'a [Option<ParentView>],
    /// The cache.
    pub(crate) nh: &'a mut NhCache,
    /// The control plane's resolver.
    pub(crate) resolver: &'a Mutex<Box<dyn Resolver>>,
    /// The time of the current turn.
    pub(crate) now: Instant,
}

impl Routes for HostRoutes<'_> {
    #[inline]
    fn next_hop(&mut self, parent: ParentId, dst: IpAddr) -> NextHop {
        match self.parents.get(parent.index()) {
            Some(Some(v)) if !v.broken.load(Ordering::Relaxed) => {
                let resolver = self.resolver;
                let mut ask = |ifindex: u32, dst: IpAddr| {
                    resolver
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .resolve(ifindex, dst)
                };
                self.nh.get(&mut ask, v.ifindex, dst, self.now)
            }
            // No interface to route out of (wire not attached, interface gone): as
            // `ip_route_output_flow` with an `oif` the host does not have, no route.
            _ => NextHop::Unreachable,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::MacAddr;
    use std::net::Ipv4Addr;

    struct Script(Vec<NextHop>, u32);
    impl Resolver for Script {
        fn resolve(&mut self, _ifindex: u32, _dst: IpAddr) -> NextHop {
            self.1 += 1;
            self.0.remove(0)
        }
    }

    #[test]
    fn answers_are_cached_for_their_ttl() {
        let m = MacAddr([2, 0, 0, 0, 0, 1]);
        let mut r = Script(
            vec![NextHop::Pending, NextHop::Mac(m), NextHop::Unreachable],
            0,
        );
        let mut c = NhCache::default();
        let d = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
        let t0 = Instant::now();
        assert_eq!(
            c.get(&mut |i, d| r.resolve(i, d), 3, d, t0),
            NextHop::Pending
        );
        assert_eq!(
            c.get(&mut |i, d| r.resolve(i, d), 3, d, t0 + TTL_PENDING / 2),
            NextHop::Pending
        );
        assert_eq!(r.1, 1);
        let t1 = t0 + TTL_PENDING;
        assert_eq!(
            c.get(&mut |i, d| r.resolve(i, d), 3, d, t1),
            NextHop::Mac(m)
        );
        assert_eq!(
            c.get(&mut |i, d| r.resolve(i, d), 3, d, t1 + TTL_MAC / 2),
            NextHop::Mac(m)
        );
        assert_eq!(r.1, 2);
        assert_eq!(
            c.get(&mut |i, d| r.resolve(i, d), 3, d, t1 + TTL_MAC),
            NextHop::Unreachable
        );
        assert_eq!(c.lookups, 3);
    }

    #[test]
    fn entries_are_per_interface_and_can_be_forgotten() {
        let m = MacAddr([2, 0, 0, 0, 0, 1]);
        let mut r = Script(vec![NextHop::Mac(m), NextHop::Local, NextHop::Mac(m)], 0);
        let mut c = NhCache::default();
        let d = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
        let t = Instant::now();
        assert_eq!(c.get(&mut |i, d| r.resolve(i, d), 3, d, t), NextHop::Mac(m));
        assert_eq!(c.get(&mut |i, d| r.resolve(i, d), 4, d, t), NextHop::Local);
        c.forget_ifindex(3);
        assert_eq!(c.get(&mut |i, d| r.resolve(i, d), 4, d, t), NextHop::Local);
        assert_eq!(c.get(&mut |i, d| r.resolve(i, d), 3, d, t), NextHop::Mac(m));
        assert_eq!(r.1, 3);
        c.clear();
        assert!(c.map.is_empty());
    }
}
