//! The commands a worker runs: ports and their TAPs, parents and their wires, the engine's
//! publication, the fast path's ports, statistics.

use super::*;
use crate::run::{FastPathReport, RunError, Stats, WireStatus};

/// The leader's side of the commands the handle sends: each runs on worker 0 and reaches the
/// others through [`Worker::on_peers`] / [`Worker::on_worker`].
impl Worker {
    pub(crate) fn cmd_add_tap(&mut self, port: PortId, tap: Tap) -> Result<(), RunError> {
        let Some(info) = self.core.engine.port_info(port) else {
            return Err(RunError::NoSuchPort(port));
        };
        if let Some(Some(_)) = self.core.io.ports.get(port.index()) {
            return Err(RunError::PortBusy {
                port,
                tap: Box::new(tap),
            });
        }
        let workers = self.shared.mail.len();
        let mut queues = Vec::with_capacity(workers);
        let multi = tap.is_multi_queue() && workers > 1;
        if multi {
            // One queue per worker: the kernel spreads flows over them by hash.
            let mut extra = Vec::new();
            for _ in 1..workers {
                match tap.open_queue() {
                    Ok(q) => extra.push(q),
                    Err(_) => break,
                }
            }
            queues.push(tap);
            queues.extend(extra);
        } else {
            queues.push(tap);
        }
        let nq = queues.len();
        // Readers: the least-loaded worker (single queue), or queue i on worker i.
        let readers: Vec<usize> = if nq > 1 {
            (0..nq).collect()
        } else {
            let loads = self.on_all(|w| w.load());
            let best = loads
                .iter()
                .enumerate()
                .min_by_key(|(i, l)| (**l, *i))
                .map_or(0, |(i, _)| i);
            vec![best]
        };
        let pt = Arc::new(PortTap {
            queues,
            broken: Default::default(),
            name: info.name,
            network: info.network,
            readers: readers.clone(),
        });
        for (q, &w) in readers.iter().enumerate() {
            let t = Arc::clone(&pt);
            let r = self.on_worker(w, move |wk| wk.add_rx(port, t, q));
            if let Err(e) = r {
                self.on_all(move |wk| wk.drop_port(port));
                return Err(RunError::Io(e));
            }
        }
        let t = Arc::clone(&pt);
        let readers = Arc::new(readers);
        self.on_all(move |wk| {
            let q = readers.iter().position(|&r| r == wk.id).unwrap_or(0);
            wk.add_tx(port, Arc::clone(&t), q);
        });
        Ok(())
    }

    pub(crate) fn cmd_remove_tap(&mut self, port: PortId) -> Option<Tap> {
        // The veth loses its programs (and every cache entry goes) before the TAP does.
        self.cmd_remove_fast_port(port);
        let pt = self
            .core
            .io
            .ports
            .get(port.index())
            .and_then(Option::as_ref)
            .map(|t| Arc::clone(&t.tap))?;
        self.on_all(move |w| w.drop_port(port));
        let mut queues = Arc::try_unwrap(pt).ok()?.queues;
        if queues.is_empty() {
            return None;
        }
        // Extra queues the dataplane opened close here.
        Some(queues.swap_remove(0))
    }

    pub(crate) fn cmd_attach_parent(
        &mut self,
        parent: ParentId,
        ifname: &str,
    ) -> Result<WireStatus, RunError> {
        let Some(info) = self.core.engine.parent_info(parent) else {
            return Err(RunError::NoSuchParent(parent));
        };
        if let Some(Some(v)) = self.core.io.views.get(parent.index()) {
            let owner = v.owner;
            let ifname = ifname.to_string();
            return self.on_worker(owner, move |w| {
                let Some(Some(slot)) = w.core.io.parents.get_mut(parent.index()) else {
                    return Err(RunError::NotAttached(parent));
                };
                if slot.ifname != ifname {
                    return Err(RunError::ParentNameMismatch {
                        parent,
                        attached: slot.ifname.clone(),
                        requested: ifname,
                    });
                }
                slot.refs += 1;
                Ok(slot.status())
            });
        }
        let loads = self.on_all(|w| w.load());
        let owner = loads
            .iter()
            .enumerate()
            .min_by_key(|(i, l)| (**l, *i))
            .map_or(0, |(i, _)| i);
        let name = ifname.to_string();
        let (st, view) = self.on_worker(owner, move |w| {
            w.open_wire(parent, &name, info.name, info.mac, info.mtu as usize)
        })?;
        self.on_all(move |w| set_at(&mut w.core.io.views, parent.index(), view.clone()));
        Ok(st)
    }

    pub(crate) fn cmd_detach_parent(&mut self, parent: ParentId) -> Result<(), RunError> {
        let Some(Some(v)) = self.core.io.views.get(parent.index()) else {
            return Err(RunError::NotAttached(parent));
        };
        let owner = v.owner;
        let closed = self.on_worker(owner, move |w| {
            let Some(Some(slot)) = w.core.io.parents.get_mut(parent.index()) else {
                return Err(RunError::NotAttached(parent));
            };
            slot.refs = slot.refs.saturating_sub(1);
            if slot.refs == 0 {
                w.close_wire(parent);
                return Ok(true);
            }
            Ok(false)
        })?;
        if closed {
            self.on_all(move |w| {
                if let Some(Some(v)) = w.core.io.views.get(parent.index()) {
                    let ifindex = v.ifindex;
                    w.core.io.nh.forget_ifindex(ifindex);
                }
                if let Some(v) = w.core.io.views.get_mut(parent.index()) {
                    *v = None;
                }
            });
        }
        Ok(())
    }

    /// The worker whose datapath decides frames from `ingress` (for a multiqueue TAP, the
    /// reader of its first queue), so a trace runs with the next-hop cache that datapath
    /// uses.
    pub(crate) fn decider_of(&self, ingress: crate::fwd::Ingress) -> usize {
        match ingress {
            crate::fwd::Ingress::Port(p) => self
                .core
                .io
                .ports
                .get(p.index())
                .and_then(Option::as_ref)
                .and_then(|t| t.tap.readers.first().copied())
                .unwrap_or(self.id),
            crate::fwd::Ingress::Wire(p) | crate::fwd::Ingress::WireLoopback(p) => self
                .core
                .io
                .views
                .get(p.index())
                .and_then(Option::as_ref)
                .map_or(self.id, |v| v.owner),
        }
    }

    pub(crate) fn cmd_wire_status(&mut self, parent: ParentId) -> Option<WireStatus> {
        let owner = self.core.io.views.get(parent.index())?.as_ref()?.owner;
        self.on_worker(owner, move |w| {
            w.core
                .io
                .parents
                .get(parent.index())?
                .as_ref()
                .map(ParentSlot::status)
        })
    }

    /// After `with_engine` changed the engine here: every other worker switches to it (and
    /// every worker re-derives its state) before this returns.
    pub(crate) fn cmd_publish_engine(&mut self) {
        let engine = Arc::clone(&self.core.engine);
        self.on_peers(move |w| {
            w.core.engine = Arc::clone(&engine);
            w.resync();
        });
        self.resync();
        // Every worker decides with the new engine now: no entry decided with the old one
        // can be learned after this flush (learning happens inside a batch).
        self.fast_sync();
    }

    /// Invalidation: flushes the fast-path cache and detaches the veths of ports that no
    /// longer have a TAP (removed from the engine).
    fn fast_sync(&mut self) {
        let Some(fp) = self.core.fast.clone() else {
            return;
        };
        fp.flush();
        for p in fp.ports() {
            if !matches!(self.core.io.ports.get(p.index()), Some(Some(_))) {
                fp.detach(p);
                fp.forget(p);
            }
        }
        self.fast_release_if_unused();
    }

    /// When no port uses the fast path any more, every worker drops it: its maps and
    /// programs (five descriptors) close, and the next fast-path port loads them afresh.
    fn fast_release_if_unused(&mut self) {
        if self
            .core
            .fast
            .as_ref()
            .is_some_and(|fp| fp.ports().is_empty())
        {
            self.on_all(|w| w.core.fast = None);
        }
    }

    pub(crate) fn cmd_add_fast_port(&mut self, port: PortId, veth: u32) -> Result<(), RunError> {
        let Some(info) = self.core.engine.port_info(port) else {
            return Err(RunError::NoSuchPort(port));
        };
        let Some(Some(tx)) = self.core.io.ports.get(port.index()) else {
            return Err(RunError::NoTap(port));
        };
        let tap = tx.tap.queues.first().map(|t| t.ifindex()).unwrap_or(0);
        let fp = match self.core.fast.clone() {
            Some(fp) => fp,
            None => {
                let fp = Arc::new(FastPath::load(FAST_PATH_ENTRIES)?);
                let all = Arc::clone(&fp);
                self.on_all(move |w| w.core.fast = Some(Arc::clone(&all)));
                fp
            }
        };
        let kind = if info.macvlan_mode.is_some() {
            KeyKind::Mac
        } else {
            KeyKind::L3
        };
        fp.attach(port, veth, tap, kind)?;
        Ok(())
    }

    pub(crate) fn cmd_take_fast_port(&mut self, port: PortId) -> Option<FastLinks> {
        let links = self.core.fast.as_ref()?.take(port);
        if let Some(fp) = &self.core.fast {
            fp.forget(port);
        }
        self.fast_release_if_unused();
        links
    }

    pub(crate) fn cmd_remove_fast_port(&mut self, port: PortId) -> bool {
        match &self.core.fast {
            Some(fp) => {
                let was = fp.detach(port);
                fp.forget(port);
                self.fast_release_if_unused();
                was
            }
            None => false,
        }
    }

    pub(crate) fn cmd_stats(&mut self) -> Stats {
        let all = self.on_all(|w| w.local_stats());
        let mut ports: Vec<(PortId, PortCounters)> = Vec::new();
        let mut drops = [0u64; DropReason::COUNT];
        let mut io_drops = [0u64; IoDrop::COUNT];
        let mut st = Stats {
            io: self.shared.io.clone(),
            tap_filter_error: self.shared.filters.error(),
            fast_path: self.core.fast.as_ref().map(|fp| FastPathReport {
                programs: fp.stats().unwrap_or_default(),
                entries: fp.len(),
                ports: fp.port_counters(),
            }),
            ..Stats::default()
        };
        let mut with_tx: Vec<PortId> = Vec::new();
        for s in &all {
            for &(p, rx, tx) in &s.ports {
                let i = match ports.iter().position(|(q, _)| *q == p) {
                    Some(i) => i,
                    None => {
                        ports.push((p, PortCounters::default()));
                        ports.len() - 1
                    }
                };
                if let Some((_, c)) = ports.get_mut(i) {
                    if let Some(r) = rx {
                        c.rx_frames += r.rx_frames;
                        c.rx_bytes += r.rx_bytes;
                        c.rx_gso_frames += r.rx_gso_frames;
                        c.rx_errors += r.rx_errors;
                        c.rx_filtered += r.rx_filtered;
                        c.rx_flood_pauses += r.rx_flood_pauses;
                        for (a, b) in c.drops.iter_mut().zip(r.drops.iter()) {
                            *a += b;
                        }
                    }
                    if let Some(t) = tx {
                        c.tx_frames += t.tx_frames;
                        c.tx_bytes += t.tx_bytes;
                        c.tx_gso_frames += t.tx_gso_frames;
                        c.tx_dropped += t.tx_dropped;
                        if !with_tx.contains(&p) {
                            with_tx.push(p);
                        }
                    }
                }
            }
            st.parents.extend(s.parents.iter().cloned());
            for (a, b) in drops.iter_mut().zip(s.drops.iter()) {
                *a += b;
            }
            for (a, b) in io_drops.iter_mut().zip(s.io_drops.iter()) {
                *a += b;
            }
            st.io_errors += s.io_errors;
            st.iterations += s.lc.turns;
            st.commands += s.commands;
            st.tap_filters += s.tap_filters_on;
            st.workers.push(s.lc);
        }
        // Ports with a TAP: every worker has a transmit entry for each.
        ports.retain(|(p, _)| with_tx.contains(p));
        ports.sort_by_key(|(p, _)| *p);
        st.parents.sort_by_key(|(p, _)| *p);
        st.ports = ports;
        st.drops = DropReason::ALL
            .iter()
            .map(|r| (*r, drops.get(r.index()).copied().unwrap_or(0)))
            .collect();
        st.io_drops = IoDrop::ALL
            .iter()
            .map(|r| (*r, io_drops.get(r.index()).copied().unwrap_or(0)))
            .collect();
        st
    }
}
