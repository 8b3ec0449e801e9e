//! The TAP prefilters of the ports a worker reads (see [`crate::port::tap_filter`]): the
//! worker that reads a TAP's first queue keeps its filter equal to the engine's present
//! [`Prefilter`] for the port, or none while a capture runs (every frame must then reach the
//! dataplane and be seen with its verdict) or with [`RunOptions::tap_filter`] off.

use std::os::fd::AsFd;
use std::sync::{Arc, Mutex, Weak};

use crate::fwd::{NetFilterKey, Port, PortId, Prefilter, PREFILTER_REASONS};
use crate::port::tap_filter::{set_tap_filter, TapFilters};

use super::{PortCounters, RunOptions, Worker};

/// What a TAP carries now, as far as this worker knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum FilterState {
    /// Not known (a TAP just added: a persistent TAP may still carry an earlier daemon's).
    #[default]
    Unknown,
    /// No filter.
    Off,
    /// This rule's filter.
    On(Prefilter),
    /// Loading or attaching this rule's filter failed; not tried again for the same rule.
    Failed(Prefilter),
}

/// What a TAP's filter was last made for: the engine's port, its network's
/// [`NetFilterKey`], whether a capture held the filter off, and the maps. The engine's
/// prefilter for the port is a function of the first two ([`Engine::port_prefilter`]), so
/// with all four unchanged the sync has nothing to do, and a publication costs the ports it
/// changed, not every port. A `Weak` keeps each address from being reused by another port
/// or map. A macvlan bridge rule also depends on its network's MAC map staying usable
/// (`TapFilters::usable`), which this does not see: such a port is always looked at.
#[derive(Debug)]
pub(crate) struct SyncStamp {
    port: Weak<Port>,
    net: NetFilterKey,
    capturing: bool,
    filters: Option<Weak<TapFilters>>,
    /// False for a rule that depends on more than the above.
    complete: bool,
}

impl SyncStamp {
    fn new(
        port: &Arc<Port>,
        net: NetFilterKey,
        capturing: bool,
        filters: Option<&Arc<TapFilters>>,
        rule: Option<Prefilter>,
    ) -> SyncStamp {
        SyncStamp {
            port: Arc::downgrade(port),
            net,
            capturing,
            filters: filters.map(Arc::downgrade),
            complete: !matches!(rule, Some(Prefilter::MacvlanBridgeNoWire { .. })),
        }
    }

    fn matches(
        &self,
        port: &Arc<Port>,
        net: NetFilterKey,
        capturing: bool,
        filters: Option<&Arc<TapFilters>>,
    ) -> bool {
        self.complete
            && std::ptr::eq(self.port.as_ptr(), Arc::as_ptr(port))
            && self.net == net
            && self.capturing == capturing
            && match (&self.filters, filters) {
                (None, None) => true,
                (Some(w), Some(f)) => std::ptr::eq(w.as_ptr(), Arc::as_ptr(f)),
                _ => false,
            }
    }
}

/// The workers' shared prefilter state: the counter map and the bridge-MAC maps, made when a
/// port first needs them and released when the engine has no port left (the daemon then
/// holds no descriptor for them).
#[derive(Debug, Default)]
pub(crate) struct SharedFilters {
    filters: Mutex<Filters>,
    /// The last failure (making the map, loading or attaching a program), for `uvlan stats`.
    error: Mutex<Option<String>>,
}

#[derive(Debug, Default)]
struct Filters {
    now: Option<Arc<TapFilters>>,
    /// Making the counter map failed: not tried again.
    cannot: bool,
}

impl SharedFilters {
    fn filters(&self) -> std::sync::MutexGuard<'_, Filters> {
        self.filters.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The prefilters' maps, made now if needed (`None`: prefilters are off or cannot be made).
    fn get(&self, opts: &RunOptions) -> Option<Arc<TapFilters>> {
        if !opts.tap_filter || opts.relay {
            return None;
        }
        let mut f = self.filters();
        if f.now.is_none() && !f.cannot {
            match TapFilters::new() {
                Ok(t) => f.now = Some(Arc::new(t)),
                Err(e) => {
                    f.cannot = true;
                    self.failed(format!("no TAP prefilters: {e}"));
                }
            }
        }
        f.now.clone()
    }

    /// The prefilters' maps if they exist.
    fn existing(&self) -> Option<Arc<TapFilters>> {
        self.filters().now.clone()
    }

    /// Releases the maps (no port left).
    fn release(&self) {
        self.filters().now = None;
    }

    fn failed(&self, what: String) {
        *self.error.lock().unwrap_or_else(|p| p.into_inner()) = Some(what);
    }

    /// The last failure, if any.
    pub(crate) fn error(&self) -> Option<String> {
        self.error.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

impl Worker {
    /// Makes the filter of `port`'s TAP what it should be now, if this worker reads the
    /// TAP's first queue.
    pub(crate) fn sync_tap_filter(&mut self, port: PortId) {
        let filters = self.shared.filters.get(&self.shared.opts);
        if let Some(f) = &filters {
            f.sync_bridge_macs(&self.core.engine);
        }
        self.sync_tap_filter_with(port, filters.as_ref());
    }

    /// [`Worker::sync_tap_filter`] with the maps already at hand and their bridge MACs
    /// already synced to the engine.
    fn sync_tap_filter_with(&mut self, port: PortId, filters: Option<&Arc<TapFilters>>) {
        let capturing = !self.core.io.rec.tap.is_idle();
        let shared = &self.shared;
        let engine = &self.core.engine;
        let Some(rx) = self.rx.get_mut(port.index()).and_then(Option::as_mut) else {
            return;
        };
        if rx.queue != 0 {
            return;
        }
        // The port and its network's key: the same as at the last sync (and the same
        // capture state and maps), the filter is already what it should be.
        let now = engine
            .port_arc(port)
            .and_then(|p| Some((p, engine.net_filter_key(p.network)?)));
        if let (Some(st), Some((p, key))) = (&rx.synced, now) {
            if st.matches(p, key, capturing, filters) {
                return;
            }
        }
        let rule = engine.port_prefilter(port);
        rx.synced = now.map(|(p, key)| SyncStamp::new(p, key, capturing, filters, rule));
        let want = match filters {
            Some(f) if !capturing => rule.filter(|r| f.usable(*r)),
            _ => None,
        };
        let Some(tap) = rx.tap.queues.first() else {
            return;
        };
        rx.filter = match (want, rx.filter) {
            (None, FilterState::Off | FilterState::Failed(_)) => rx.filter,
            (None, _) => match set_tap_filter(tap.as_fd(), None) {
                Ok(()) => FilterState::Off,
                Err(e) => {
                    shared
                        .filters
                        .failed(format!("detaching the prefilter of {port}: {e}"));
                    FilterState::Off
                }
            },
            (Some(r), FilterState::On(now) | FilterState::Failed(now)) if now == r => rx.filter,
            (Some(r), _) => {
                let loaded = filters.as_ref().map(|f| f.load(r, port.0));
                match loaded {
                    Some(Ok(Some(prog))) => match set_tap_filter(tap.as_fd(), Some(&prog)) {
                        Ok(()) => FilterState::On(r),
                        Err(e) => {
                            shared
                                .filters
                                .failed(format!("attaching the prefilter of {port}: {e}"));
                            // Whatever the TAP carried before must not stay.
                            let _ = set_tap_filter(tap.as_fd(), None);
                            FilterState::Failed(r)
                        }
                    },
                    Some(Err(e)) => {
                        shared
                            .filters
                            .failed(format!("loading the prefilter of {port}: {e}"));
                        let _ = set_tap_filter(tap.as_fd(), None);
                        FilterState::Failed(r)
                    }
                    // A slot past the counter map: no filter for this port.
                    _ => {
                        let _ = set_tap_filter(tap.as_fd(), None);
                        FilterState::Failed(r)
                    }
                }
            }
        };
    }

    /// [`Worker::sync_tap_filter`] for every port this worker reads; remembers whether a
    /// capture holds the filters off.
    pub(crate) fn sync_tap_filters(&mut self) {
        self.filters_held = !self.core.io.rec.tap.is_idle();
        if self.core.engine.port_ids().is_empty() {
            // No port left anywhere: the maps go (a TAP that still carries a filter keeps
            // what its program uses).
            self.shared.filters.release();
        } else if let Some(f) = self.shared.filters.existing() {
            // Networks that went lose their bridge-MAC maps even with no port read here.
            f.sync_bridge_macs(&self.core.engine);
        }
        // The maps once for all ports (one lock, one look at the engine's bridge MACs), and
        // only when this worker reads a port (they are made on first use).
        if !self.rx.iter().any(Option::is_some) {
            return;
        }
        let filters = self.shared.filters.get(&self.shared.opts);
        if let Some(f) = &filters {
            f.sync_bridge_macs(&self.core.engine);
        }
        for i in 0..self.rx.len() {
            if matches!(self.rx.get(i), Some(Some(_))) {
                self.sync_tap_filter_with(PortId(i as u32), filters.as_ref());
            }
        }
    }

    /// A new TAP read here: its slot's counters start from zero, then its filter is set.
    pub(crate) fn start_tap_filter(&mut self, port: PortId) {
        let shared = Arc::clone(&self.shared);
        if let Some(f) = shared.filters.get(&shared.opts) {
            if matches!(self.rx.get(port.index()), Some(Some(rx)) if rx.queue == 0) {
                f.reset(port.0);
            }
        }
        self.sync_tap_filter(port);
    }

    /// A port leaves this worker: its TAP (a persistent one outlives it) keeps no filter, and
    /// the drops its filter counted stay in the worker's totals (which only ever grow).
    pub(crate) fn stop_tap_filter(&mut self, port: PortId) {
        let Some(Some(rx)) = self.rx.get(port.index()) else {
            return;
        };
        if rx.queue != 0 {
            return;
        }
        if matches!(rx.filter, FilterState::On(_) | FilterState::Unknown) {
            if let Some(tap) = rx.tap.queues.first() {
                let _ = set_tap_filter(tap.as_fd(), None);
            }
        }
        if let Some(f) = self.shared.filters.existing() {
            for (reason, n) in PREFILTER_REASONS.iter().zip(f.counts(port.0)) {
                if let Some(d) = self.core.io.drops.get_mut(reason.index()) {
                    *d += n;
                }
            }
            f.reset(port.0);
        }
    }

    /// Adds the drops `port`'s filter counted to its receive counters (`c`, the worker's
    /// `drops` too): the engine's drops by reason, as if the dataplane had read them.
    pub(crate) fn add_filter_counts(&self, port: PortId, c: &mut PortCounters, drops: &mut [u64]) {
        let Some(f) = self.shared.filters.existing() else {
            return;
        };
        let counts = f.counts(port.0);
        for (reason, n) in PREFILTER_REASONS.iter().zip(counts) {
            if let Some(d) = c.drops.get_mut(reason.index()) {
                *d += n;
            }
            if let Some(d) = drops.get_mut(reason.index()) {
                *d += n;
            }
            c.rx_filtered += n;
        }
    }

    /// Ports whose TAP carries a filter now (read here).
    pub(crate) fn tap_filters_on(&self) -> usize {
        self.rx
            .iter()
            .flatten()
            .filter(|r| matches!(r.filter, FilterState::On(_)))
            .count()
    }
}
