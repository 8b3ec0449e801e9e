//! The seam between the daemon and the dataplane thread.
//!
//! [`DataplaneApi`] is the part of `uvlan_dataplane::run::DataplaneHandle` (see
//! `run-api.md`) the daemon uses, in object-safe form. Two implementations:
//! - [`super::real::RunDataplane`]: the real thread that moves frames (what the daemon uses);
//! - [`EngineOnly`]: keeps the engine and the TAP fds in the caller and applies every
//!   configuration change, but moves no frames: unit tests of the control logic use it. Its
//!   route stage asks the [`Routes`] it was given (none by default: every routed destination
//!   is unreachable). Captures started on it record the frames a test feeds it
//!   ([`EngineOnly::inject`]), decided and recorded as the run loop does.

use std::any::Any;
use std::collections::HashMap;
use std::sync::Mutex;

use uvlan_dataplane::capture::{self, CaptureFilter, CaptureReader, CaptureTap};
use uvlan_dataplane::fwd::{DropReason, Engine, Ingress, NoRoutes, ParentId, PortId, Routes};
use uvlan_dataplane::port::fast_path::FastLinks;
use uvlan_dataplane::port::tap::Tap;
use uvlan_dataplane::trace::{trace, Trace};

/// Errors from the dataplane.
#[derive(Debug, thiserror::Error)]
pub enum DpError {
    /// The dataplane thread is gone.
    #[error("the dataplane thread has stopped (see the daemon log); restart the daemon")]
    Stopped,
    /// The dataplane refused or failed an operation.
    #[error("{0}")]
    Failed(String),
}

/// A job run on the dataplane thread with exclusive access to the engine.
pub type EngineJob = Box<dyn FnOnce(&mut Engine) -> Box<dyn Any + Send> + Send>;

/// What the daemon needs from the dataplane thread.
pub trait DataplaneApi: Send + Sync {
    /// Runs `job` on the engine between two batches and returns its result.
    fn with_engine_boxed(&self, job: EngineJob) -> Result<Box<dyn Any + Send>, DpError>;
    /// Explains what the datapath does with `frame` from `ingress`: the whole decision,
    /// including the route stage with the host's tables as the datapath sees them.
    fn trace(&self, frame: Vec<u8>, ingress: Ingress) -> Result<Trace, DpError>;
    /// Hands a TAP to the loop for an engine port.
    fn add_tap(&self, port: PortId, tap: Tap) -> Result<(), DpError>;
    /// Takes a port's TAP back.
    fn remove_tap(&self, port: PortId) -> Result<Option<Tap>, DpError>;
    /// Makes a port with a TAP a fast-path endpoint: `veth` is the ifindex of the daemon's
    /// end of its veth (see `uvlan_dataplane::port::fast_path`). A dataplane without the
    /// fast path refuses.
    fn add_fast_port(&self, port: PortId, veth: u32) -> Result<(), DpError> {
        let _ = (port, veth);
        Err(DpError::Failed(format!(
            "this dataplane has no fast path ({})",
            self.describe()
        )))
    }
    /// Takes a port out of the fast path and hands its program links to the caller, to
    /// close once its interfaces are deleted (see
    /// `uvlan_dataplane::port::fast_path::FastPath::take`): when this returns, no frame
    /// reaches the port through the cache. `None`: not a fast-path port (a dataplane without
    /// the fast path has none).
    fn take_fast_port(&self, port: PortId) -> Result<Option<FastLinks>, DpError> {
        let _ = port;
        Ok(None)
    }
    /// Opens the wire on a registered parent (reference counted); returns the mode in use.
    fn attach_parent(&self, parent: ParentId, ifname: &str) -> Result<String, DpError>;
    /// Drops one reference on a parent's wire.
    fn detach_parent(&self, parent: ParentId) -> Result<(), DpError>;
    /// One line on what this dataplane is, for the daemon's start-up log.
    fn describe(&self) -> String;
    /// The dataplane's counters, if it keeps any (`None`: a configuration-only dataplane).
    fn stats(&self) -> Result<Option<uvlan_dataplane::run::Stats>, DpError> {
        Ok(None)
    }
    /// Starts recording the frames `filter` selects; the reader takes them (dropping it
    /// ends the capture). A dataplane that records no frames refuses.
    fn start_capture(&self, filter: CaptureFilter) -> Result<CaptureReader, DpError> {
        let _ = filter;
        Err(DpError::Failed(format!(
            "this dataplane cannot capture frames ({})",
            self.describe()
        )))
    }
}

/// Runs `f` on the engine and returns its typed result.
pub fn with_engine<R: Send + 'static>(
    dp: &dyn DataplaneApi,
    f: impl FnOnce(&mut Engine) -> R + Send + 'static,
) -> Result<R, DpError> {
    let any = dp.with_engine_boxed(Box::new(move |e| Box::new(f(e)) as Box<dyn Any + Send>))?;
    any.downcast::<R>()
        .map(|b| *b)
        .map_err(|_| DpError::Failed("internal error: engine job returned another type".into()))
}

/// The host's tables as a configuration-only dataplane's trace sees them.
pub type BoxedRoutes = Box<dyn Routes + Send>;

/// The configuration-only dataplane (see the module docs).
pub struct EngineOnly {
    engine: Mutex<Engine>,
    taps: Mutex<HashMap<PortId, Tap>>,
    wires: Mutex<HashMap<ParentId, usize>>,
    routes: Mutex<BoxedRoutes>,
    tap: Mutex<CaptureTap>,
}

impl Default for EngineOnly {
    fn default() -> Self {
        EngineOnly::with_routes(Box::new(NoRoutes))
    }
}

impl EngineOnly {
    /// An empty engine; no host tables (every routed destination is unreachable).
    pub fn new() -> EngineOnly {
        EngineOnly::default()
    }

    /// An empty engine whose route stage asks `routes` (scripted host tables in tests).
    pub fn with_routes(routes: BoxedRoutes) -> EngineOnly {
        EngineOnly {
            engine: Mutex::default(),
            taps: Mutex::default(),
            wires: Mutex::default(),
            routes: Mutex::new(routes),
            tap: Mutex::default(),
        }
    }

    /// The synthetic feed: decides `frame` from `ingress` with the engine (and the routes
    /// it was given) and records it on every capture started here, exactly as the run loop
    /// records a frame it reads (`uvlan_dataplane::capture::feed`). Delivers nothing.
    pub fn inject(
        &self,
        frame: &[u8],
        ingress: Ingress,
    ) -> Result<Result<(), DropReason>, DpError> {
        let e = self.engine.lock().map_err(poisoned)?;
        let mut routes = self.routes.lock().map_err(poisoned)?;
        let mut tap = self.tap.lock().map_err(poisoned)?;
        Ok(capture::feed(&e, &mut **routes, &mut tap, frame, ingress))
    }

    /// Captures currently attached (a reader dropped is forgotten at the next
    /// [`EngineOnly::inject`]).
    pub fn capture_sessions(&self) -> usize {
        self.tap.lock().map(|t| t.sessions()).unwrap_or(0)
    }

    /// Number of TAPs held (for tests).
    pub fn tap_count(&self) -> usize {
        self.taps.lock().map(|t| t.len()).unwrap_or(0)
    }
}

fn poisoned<T>(_: T) -> DpError {
    DpError::Failed("internal error: a dataplane lock was poisoned by a panic".into())
}

impl DataplaneApi for EngineOnly {
    fn with_engine_boxed(&self, job: EngineJob) -> Result<Box<dyn Any + Send>, DpError> {
        let mut e = self.engine.lock().map_err(poisoned)?;
        Ok(job(&mut e))
    }

    fn trace(&self, frame: Vec<u8>, ingress: Ingress) -> Result<Trace, DpError> {
        let e = self.engine.lock().map_err(poisoned)?;
        let mut routes = self.routes.lock().map_err(poisoned)?;
        Ok(trace(&e, &frame, ingress, &mut **routes))
    }

    fn add_tap(&self, port: PortId, tap: Tap) -> Result<(), DpError> {
        let known = self
            .engine
            .lock()
            .map_err(poisoned)?
            .port_info(port)
            .is_some();
        if !known {
            return Err(DpError::Failed(format!("no engine port {port}")));
        }
        self.taps.lock().map_err(poisoned)?.insert(port, tap);
        Ok(())
    }

    fn remove_tap(&self, port: PortId) -> Result<Option<Tap>, DpError> {
        Ok(self.taps.lock().map_err(poisoned)?.remove(&port))
    }

    fn attach_parent(&self, parent: ParentId, _ifname: &str) -> Result<String, DpError> {
        let known = self
            .engine
            .lock()
            .map_err(poisoned)?
            .parent_info(parent)
            .is_some();
        if !known {
            return Err(DpError::Failed(format!("no engine parent {parent}")));
        }
        *self
            .wires
            .lock()
            .map_err(poisoned)?
            .entry(parent)
            .or_default() += 1;
        Ok("none (configuration only: no frames are forwarded)".to_string())
    }

    fn detach_parent(&self, parent: ParentId) -> Result<(), DpError> {
        let mut w = self.wires.lock().map_err(poisoned)?;
        match w.get_mut(&parent) {
            Some(n) if *n > 1 => *n -= 1,
            Some(_) => {
                w.remove(&parent);
            }
            None => return Err(DpError::Failed(format!("parent {parent} is not attached"))),
        }
        Ok(())
    }

    fn describe(&self) -> String {
        "configuration only: networks and endpoints are set up, but no frames are forwarded"
            .to_string()
    }

    fn start_capture(&self, filter: CaptureFilter) -> Result<CaptureReader, DpError> {
        let (session, reader) = capture::open(filter);
        self.tap.lock().map_err(poisoned)?.attach(session);
        Ok(reader)
    }
}
