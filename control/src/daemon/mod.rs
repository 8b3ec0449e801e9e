//! The uvlan daemon: owns the dataplane, every endpoint TAP, the IPAM and the state store,
//! and serves the API.
//!
//! Every mutating request runs under one lock, validates everything first, undoes its side
//! effects on failure, writes the store, and only then commits. A failed request leaves the
//! state as it was. Its cost does not grow with the number of endpoints: it copies no
//! address space and no network record, and writes only the files of what it changes (an
//! endpoint's record, see `store`). An endpoint operation writes its intent before it
//! touches the kernel, so a crash at any point is finished or rolled back at the next start
//! (`recover`).
//!
//! The daemon knows none of its front ends (the API listener, the Docker driver, the CNI
//! plugin): the service root starts it and them, and joins them. Its parts, each using only
//! those listed before it (a unit test checks that no part uses one that uses it back):
//!
//! - plumbing: `dp` (the dataplane interface), `real` (the dataplane thread), `options`
//!   (driver options), `host` (the host's interfaces), `endpoint` (TAPs, interfaces,
//!   routes and watchers in namespaces);
//! - `model`: the data, under one lock; `external`: the rules of networks a front end
//!   manages with its own IPAM;
//! - the core: `follow` (endpoints take their parent's state), `attach` (an endpoint's port,
//!   interface and teardown), `connect` (making an endpoint, the host interface and its
//!   routes), `probe` (DHCP exchanges for an endpoint whose interface is not there: Docker's
//!   CreateEndpoint and DeleteEndpoint), `renew` (the DHCP renewal thread), `network` (a
//!   network in the
//!   engine; restoring one), `parents` (following the host's parents), `create` (making a
//!   network);
//! - the operations: `cli_ops` (the uvlan CLI's), `managed` (the Docker driver's and the CNI
//!   plugin's), `stats`, `trace` and `capture` (capture and replay, streamed on their
//!   connection);
//! - `recover` (crash recovery at start: intents finished or rolled back, unknown marked
//!   interfaces removed), `start` (start-up from the store) and `dispatch` (each request to
//!   its operation).

mod attach;
mod capture;
mod cli_ops;
mod connect;
mod create;
mod dispatch;
pub mod dp;
pub mod endpoint;
mod external;
mod follow;
pub mod host;
mod managed;
mod mirror;
mod model;
mod network;
pub mod options;
mod parents;
mod probe;
pub mod real;
mod recover;
mod renew;
mod start;
mod stats;
mod trace;

#[cfg(test)]
mod capture_tests;
#[cfg(test)]
mod tests;

pub use model::Daemon;
pub use start::StartError;
