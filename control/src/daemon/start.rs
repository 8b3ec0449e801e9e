//! Start-up: the daemon rebuilt from its store.

use std::collections::HashMap;
use std::sync::Arc;

use crate::ids;
use crate::ipam::{AddressSpace, DefaultPools, StoredNetwork};
use crate::logger::Logger;
use crate::store::{HostRecord, Store, StoreError};

use super::dp::DataplaneApi;
use super::host::HostNet;
use super::model::{Daemon, State};
use super::recover;

/// Errors restoring the daemon from its store at start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The store cannot be used.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The stored state is inconsistent.
    #[error("{0}")]
    State(String),
}

impl Daemon {
    /// Loads the store, finishes or rolls back interrupted operations (see `recover.rs`),
    /// rebuilds IPAM, re-creates every network in the engine and re-attaches every
    /// endpoint's TAP. A corrupt, missing or inconsistent state file is an error naming it;
    /// an endpoint whose namespace is gone is removed (logged), one whose namespace cannot
    /// be opened is kept without traffic (logged). `fast_path`: whether new endpoints are
    /// fast-path (veth) endpoints; fast-path endpoints of the previous daemon are adopted as
    /// such when it is on, and made again as TAP endpoints when it is off.
    pub fn start(
        store: Store,
        mut host: Box<dyn HostNet>,
        dp: Arc<dyn DataplaneApi>,
        log: Logger,
        fast_path: bool,
    ) -> Result<Arc<Daemon>, StartError> {
        let host_rec = store.load_or_init_host(|| {
            Ok(HostRecord {
                host_id: ids::new_id()?,
            })
        })?;
        let defaults =
            DefaultPools::for_host(&host_rec.host_id).with_reserved(host.reserved_prefixes());
        let mut records = store.load_networks(&mut |m| log(&m))?;
        // Crash recovery before anything else (see `recover.rs`): interrupted operations
        // finished or rolled back, unknown marked interfaces removed, and only then the
        // remaining endpoints' addresses taken.
        let host_tag = ids::short_id(&host_rec.host_id).to_string();
        recover::resolve_intents(&store, &host_tag, &mut records, &log)?;
        recover::remove_orphans(&host_tag, &records, &log);
        let stored: Vec<StoredNetwork> = records
            .iter()
            .filter(|r| r.own_ipam())
            .map(|r| StoredNetwork {
                id: r.id.clone(),
                name: r.name.clone(),
                ipam: r.ipam.clone(),
                endpoints: r.endpoints.iter().flat_map(|e| e.addrs.addrs()).collect(),
            })
            .collect();
        let space = AddressSpace::restore(defaults, stored).map_err(|e| {
            StartError::State(format!(
                "the stored networks under {} do not add up: {e}",
                store.root().join("networks").display()
            ))
        })?;
        let next_seq = records.iter().map(|r| r.seq + 1).max().unwrap_or(0);
        let daemon = Daemon::new(
            store,
            host_tag,
            dp,
            log,
            State {
                host,
                space,
                nets: Vec::new(),
                next_seq,
                parent_ifindex: HashMap::new(),
                freed_since_trim: 0,
            },
        );
        daemon.set_fast_path(fast_path);
        {
            let mut st = daemon.lock();
            for rec in records.drain(..) {
                let net = daemon.restore_network(&mut st, rec);
                let reapers: Vec<_> = net
                    .rec
                    .endpoints
                    .iter()
                    .filter_map(|ep| Some((net.rec.id.clone(), ep.id.clone(), ep.auto_remove?)))
                    .collect();
                st.nets.push(net);
                for (net, ep, a) in reapers {
                    daemon.watch_exit(&mut st, &net, &ep, a);
                }
            }
            // Parents may have changed while the daemon was down.
            daemon.reconcile_locked(&mut st);
            daemon.drop_interrupted_offers(&mut st);
            // Stored leases are confirmed with INIT-REBOOT (or found expired and asked for
            // again), then renewed from where they were; endpoints that lost theirs go on
            // asking for a new one.
            let dhcp = st.nets.iter().filter(|n| n.rec.dhcp);
            let eps: Vec<_> = dhcp.flat_map(|n| &n.rec.endpoints).collect();
            if !eps.is_empty() {
                let leased = eps.iter().filter(|e| e.lease.is_some());
                daemon.schedule_reboots(leased.map(|e| e.id.clone()).collect());
                daemon.renew_kick();
            }
            for i in 0..st.nets.len() {
                daemon.sync_host_routes(&st, i);
            }
        }
        Ok(daemon)
    }
}
