//! Request dispatch: each API request to the operation serving it, and its answer.

use crate::api::{one_line, Request, Response, Server, StreamConn};

use super::model::Daemon;

impl Daemon {
    /// Serves one API request.
    pub fn handle(&self, req: Request) -> Response {
        let r = match req {
            Request::Ping => Ok(serde_json::Value::from("pong")),
            Request::NetworkCreate(c) => self.create_network(&c).map(Into::into),
            Request::NetworkLs => to_value(self.list()),
            Request::NetworkInspect { name } => self.inspect(&name).and_then(to_value),
            Request::NetworkRm { name } => self.remove_network(&name).map(Into::into),
            Request::NetworkConnect(c) if c.host => {
                self.connect_host(&c).map_err(Self::fd_said).map(Into::into)
            }
            Request::NetworkConnect(c) => self.connect(&c).map_err(Self::fd_said).map(Into::into),
            Request::NetworkDisconnect {
                network,
                host: true,
                ..
            } => self
                .disconnect_host(&network)
                .map(|()| serde_json::Value::Null),
            Request::NetworkDisconnect { network, netns, .. } => self
                .disconnect(&network, &netns, false)
                .map(|()| serde_json::Value::Null),
            Request::RunSetup(r) => self.run_setup(&r).map_err(Self::fd_said).and_then(to_value),
            Request::RunRemove { network, netns } => self
                .disconnect(&network, &netns, true)
                .map(|()| serde_json::Value::Null),
            Request::RunWatch {
                network,
                netns,
                pid,
            } => self
                .run_watch(&network, &netns, pid)
                .map(|()| serde_json::Value::Null),
            Request::Trace(t) => self.trace(&t).map(Into::into),
            Request::Capture(_) | Request::Replay(_) => Err(
                "capture and replay stream on their connection: serve them with api::serve"
                    .to_string(),
            ),
            Request::Stats { networks } => self.stats(&networks).and_then(to_value),
            Request::NetworkEnsure(e) => self.ensure_network(&e).map(Into::into),
            Request::NetworkDelete { network, owner } => {
                self.delete_managed(&network, &owner).map(Into::into)
            }
            Request::EndpointReserve { network, spec } => self.reserve_endpoint(&network, &spec),
            Request::EndpointAttach(a) => self
                .attach_endpoint(&a)
                .map_err(Self::fd_said)
                .and_then(to_value),
            Request::EndpointDetach {
                network,
                key,
                forget,
                remove_empty_network,
            } => self
                .detach_endpoint(&network, &key, forget, remove_empty_network)
                .map(Into::into),
            Request::EndpointList { network } => self.list_endpoints(&network).and_then(to_value),
        };
        match r {
            Ok(result) => Response::Ok { result },
            Err(message) => Response::Error {
                message: one_line(&message),
            },
        }
    }
}

/// The API's view of the daemon: one-shot requests through [`Daemon::handle`], streaming
/// ones (capture, replay) on their connection.
impl Server for Daemon {
    fn answer(&self, req: Request) -> Response {
        self.handle(req)
    }

    fn stream(&self, req: Request, mut conn: StreamConn) {
        match req {
            Request::Capture(c) => self.serve_capture(&c, conn),
            Request::Replay(r) => self.serve_replay(&r, conn),
            other => {
                let _ = conn.answer(&self.handle(other));
            }
        }
    }
}

pub(super) fn to_value<T: serde::Serialize>(v: T) -> Result<serde_json::Value, String> {
    serde_json::to_value(v).map_err(|e| format!("internal error encoding the answer: {e}"))
}
