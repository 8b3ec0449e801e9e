//! DHCP for front-end endpoints: leasing a reservation's address on a probe outside the
//! state lock, offers a crash interrupted, and giving a reservation's lease back.

use super::*;

impl Daemon {
    /// [`Daemon::reserve_endpoint`] on a DHCP network: the address is leased now, on a probe
    /// with the endpoint's MAC (`chosen`) and ID, since Docker wants it in CreateEndpoint's
    /// answer (see `probe.rs`). The probe is made under the lock and the endpoint's key and
    /// MAC held in memory ([`super::model::Net::pending`]); the exchange runs without the
    /// lock, and before each REQUEST the reservation is written with the offer it asks for
    /// ([`ReservedEndpoint::offered`]); then, under the lock again, the reservation is
    /// recorded with its lease and the probe removed, or the offer given back and the
    /// reservation dropped. A daemon killed meanwhile leaves no probe (it goes with the
    /// process) and, at its next start, gives back the offer it was asking for
    /// ([`Daemon::drop_interrupted_offers`]).
    pub(super) fn reserve_leased(
        &self,
        mut st: std::sync::MutexGuard<'_, State>,
        i: usize,
        spec: &EndpointSpec,
        chosen: MacAddr,
        addrs: EndpointAddrs,
    ) -> Result<serde_json::Value, String> {
        let net_id = st.nets[i].rec.id.clone();
        let netname = st.nets[i].rec.name.clone();
        let macvlan = st.nets[i].rec.driver == Driver::Macvlan.as_str();
        let failed = |e: String| {
            format!(
                "cannot lease an address for endpoint {} of network {netname}: {e}",
                ids::short_id(&spec.key),
            )
        };
        let probe = self
            .make_probe(&st, i, &spec.key, chosen, EndpointAddrs::default())
            .map_err(failed)?;
        st.nets[i].pending.insert(spec.key.clone(), chosen);
        drop(st);
        let mac = if macvlan {
            chosen.to_string()
        } else {
            String::new()
        };
        let mut r = new_reservation(spec, addrs, mac);
        // The last offer written to the store (its REQUEST may have reached the server).
        let noted = std::sync::Mutex::new(None::<crate::dhcp::Lease>);
        let note = |offer: &crate::dhcp::Lease| -> Result<(), String> {
            let mut w = r.clone();
            w.offered = Some(offer.clone());
            self.store
                .save_reserved(&net_id, &w)
                .map_err(|e| e.to_string())?;
            *noted.lock().unwrap_or_else(|e| e.into_inner()) = Some(offer.clone());
            Ok(())
        };
        let leased = self.probe_lease(&probe, &note);
        let noted = noted.into_inner().unwrap_or_else(|e| e.into_inner());
        let mut st = self.lock();
        let i = st.nets.iter().position(|n| n.rec.id == net_id);
        if let Some(i) = i {
            st.nets[i].pending.remove(&spec.key);
        }
        let recorded = match (leased, i) {
            (Err(e), _) => Err((e, None)),
            // Nothing removes a network while it has a pending endpoint.
            (Ok(lease), None) => {
                Err(("the network was removed meanwhile".to_string(), Some(lease)))
            }
            (Ok(lease), Some(i)) => {
                r.addrs.v4 = crate::dhcp::endpoint_addr(&lease);
                r.lease = Some(lease);
                match self.store.save_reserved(&net_id, &r) {
                    Ok(()) => Ok((i, r)),
                    Err(e) => Err((e.to_string(), r.lease)),
                }
            }
        };
        self.drop_probe(probe);
        match recorded {
            Ok((i, r)) => {
                let answer = reserved_answer(&r);
                if let Some(m) = st.nets[i].rec.managed.as_mut() {
                    m.reserved.push(r);
                }
                Ok(answer)
            }
            Err((e, lease)) => {
                // The lease, or the offer last asked for (the server may have confirmed
                // it without the answer arriving in time), goes back.
                if let Some(lease) = lease.as_ref().or(noted.as_ref()) {
                    self.release_reserved_lease(&st, i, &spec.key, chosen, lease);
                }
                if noted.is_some() {
                    if let Err(e) = self.store.delete_reserved(&net_id, &spec.key) {
                        (self.log)(&format!(
                            "endpoint {}: {e} (the next start drops it)",
                            ids::short_id(&spec.key)
                        ));
                    }
                }
                Err(format!("{}; nothing was left behind", failed(e)))
            }
        }
    }

    /// At start: reservations whose CreateEndpoint was interrupted in its DHCP exchange
    /// (they still hold the offer they asked for, [`ReservedEndpoint::offered`]). The offered
    /// address goes back (RELEASE from a probe: the server may have confirmed it), and the
    /// reservation is dropped; Docker got no answer for it.
    pub(in crate::daemon) fn drop_interrupted_offers(&self, st: &mut State) {
        for i in 0..st.nets.len() {
            let interrupted: Vec<ReservedEndpoint> = st.nets[i]
                .rec
                .managed
                .iter()
                .flat_map(|m| m.reserved.iter())
                .filter(|r| r.offered.is_some())
                .cloned()
                .collect();
            let net_id = st.nets[i].rec.id.clone();
            for r in interrupted {
                let mac = r.mac.parse::<MacAddr>().unwrap_or(MacAddr::ZERO);
                if let Some(offer) = &r.offered {
                    self.release_reserved_lease(st, Some(i), &r.key, mac, offer);
                }
                let done = match self.store.delete_reserved(&net_id, &r.key) {
                    Ok(()) => "dropped".to_string(),
                    Err(e) => format!("{e} (the next start tries again)"),
                };
                if let Some(m) = st.nets[i].rec.managed.as_mut() {
                    m.reserved.retain(|x| x.key != r.key);
                }
                (self.log)(&format!(
                    "network {}: endpoint {}: its CreateEndpoint was interrupted in its DHCP \
                     exchange: the offered {} was given back, the reservation {done}",
                    st.nets[i].rec.name,
                    ids::short_id(&r.key),
                    r.offered
                        .as_ref()
                        .map_or(String::new(), |o| o.addr.to_string()),
                ));
            }
        }
    }

    /// Gives back (RELEASE) `lease` of endpoint `key` of network `i` (if it still exists)
    /// from a probe with `mac` holding the leased address. Failures are logged: the lease
    /// then expires at the server.
    pub(super) fn release_reserved_lease(
        &self,
        st: &State,
        i: Option<usize>,
        key: &str,
        mac: MacAddr,
        lease: &crate::dhcp::Lease,
    ) {
        let addrs = EndpointAddrs {
            v4: crate::dhcp::endpoint_addr(lease),
            v6: None,
        };
        let probe = match i {
            Some(i) => self.make_probe(st, i, key, mac, addrs),
            None => Err("its network is gone".to_string()),
        };
        match probe {
            Ok(p) => {
                self.probe_release(&p, lease);
                self.drop_probe(p);
            }
            Err(e) => (self.log)(&format!(
                "endpoint {}: DHCP RELEASE of {}: {e} (the lease expires at the server)",
                ids::short_id(key),
                lease.addr
            )),
        }
    }
}
