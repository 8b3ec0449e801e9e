//! Docker's remote driver calls: any method name of the protocol with any JSON body through
//! `driver::handle`, with a daemon double whose answers (success, refusal, attach results)
//! come from the input. No I/O: the double also answers the SandboxKey check. Nothing may
//! panic, and every answer is a JSON object.
//! Run: `cd control/fuzz && cargo +nightly fuzz run docker_driver -- -dict=dicts/json.dict`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::json;
use uvlan_control::api::{AttachInfo, DefaultRouteView, Request, Response, RouteView};
use uvlan_control::docker::driver::{handle, Backend};
use uvlan_dataplane::fwd::Driver;

const METHODS: &[&str] = &[
    "Plugin.Activate",
    "NetworkDriver.GetCapabilities",
    "NetworkDriver.CreateNetwork",
    "NetworkDriver.DeleteNetwork",
    "NetworkDriver.CreateEndpoint",
    "NetworkDriver.EndpointOperInfo",
    "NetworkDriver.DeleteEndpoint",
    "NetworkDriver.Leave",
    "NetworkDriver.Join",
    "NetworkDriver.DiscoverNew",
    "NetworkDriver.ProgramExternalConnectivity",
    "NetworkDriver.AllocateNetwork",
    "IpamDriver.RequestPool",
    "",
];

/// A daemon double: `mode` picks refusals and the shape of attach answers.
struct Double {
    mode: u8,
}

impl Backend for Double {
    fn call(&self, req: Request) -> Response {
        // What the driver asks must be sendable to the daemon.
        let line = serde_json::to_string(&req).expect("requests serialise");
        assert!(uvlan_control::api::parse_request(&line).is_ok(), "{line}");
        if self.mode & 3 == 0 {
            return Response::Error {
                message: "refused by the double".into(),
            };
        }
        let result = match req {
            Request::EndpointAttach(_) => {
                let route = |bit: u8, gw: &str| match (self.mode >> bit) & 3 {
                    0 => None,
                    1 => Some(DefaultRouteView { via: None }),
                    _ => Some(DefaultRouteView {
                        via: Some(gw.to_string()),
                    }),
                };
                let info = AttachInfo {
                    network_id: "n".into(),
                    endpoint_id: "e".into(),
                    ifname: "uvd0123456789ab".into(),
                    mac: "02:00:00:00:00:01".into(),
                    mtu: 1500,
                    default_v4: route(2, "192.0.2.1"),
                    default_v6: route(4, "2001:db8::1"),
                    // A lease's classless routes (option 121), on the link or via a hop.
                    routes: match (self.mode >> 6) & 3 {
                        0 => Vec::new(),
                        1 => vec![RouteView {
                            dst: "198.51.100.0/24".into(),
                            via: None,
                        }],
                        _ => vec![RouteView {
                            dst: "203.0.113.0/24".into(),
                            via: Some("192.0.2.1".into()),
                        }],
                    },
                };
                if self.mode & 3 == 1 {
                    json!("not an attach answer")
                } else {
                    serde_json::to_value(info).expect("attach info serialises")
                }
            }
            Request::EndpointReserve { .. } if self.mode & 0x40 != 0 => json!("02:aa:bb:cc:dd:ee"),
            Request::EndpointReserve { .. } => json!(""),
            _ => json!(true),
        };
        Response::Ok { result }
    }

    fn check_sandbox(&self, key: &str) -> Result<(), String> {
        if key.starts_with('/') {
            Ok(())
        } else {
            Err(format!("SandboxKey {key:?} refused by the double"))
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let Some((&mode, body)) = rest.split_first() else {
        return;
    };
    let method = METHODS[usize::from(sel) % METHODS.len()];
    let driver = if sel & 0x80 == 0 {
        Driver::Ipvlan
    } else {
        Driver::Macvlan
    };
    let reply = handle(&Double { mode }, driver, method, body);
    assert!(reply.body.is_object(), "{}", reply.body);
    let _ = reply.body.to_string();
});
