//! A request line on the daemon's API socket: decoded as the daemon decodes it, re-encoded
//! and decoded again (it must round-trip), then the daemon's pure checks of what a create or
//! ensure carries (driver, `-o` options, IPAM entries), and MAC fields parsed. Answers are
//! decoded as the CLI decodes them. Nothing may panic.
//! Run: `cd control/fuzz && cargo +nightly fuzz run api_json -- -dict=dicts/json.dict`.
#![no_main]

use std::collections::BTreeMap;

use libfuzzer_sys::fuzz_target;
use uvlan_control::api::{self, Request, Response};
use uvlan_control::daemon::options::{parse_driver, parse_driver_opts};
use uvlan_control::ipam::{validate_config, IpamConfig};
use uvlan_dataplane::wire::MacAddr;

fn network_checks(
    driver: &str,
    options: &BTreeMap<String, String>,
    ipam: &[IpamConfig],
    ipv6: bool,
) {
    if let Ok(d) = parse_driver(driver) {
        let _ = parse_driver_opts(d, options);
    }
    let _ = validate_config(ipam, true, ipv6);
    let _ = validate_config(ipam, false, ipv6);
}

fn mac(text: Option<&String>) {
    if let Some(t) = text {
        let _ = t.parse::<MacAddr>();
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(line) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(req) = api::parse_request(line) {
        let again = serde_json::to_string(&req).expect("requests serialise");
        let back = api::parse_request(&again).expect("a serialised request decodes");
        assert_eq!(back, req, "{line} -> {again}");
        match &req {
            Request::NetworkCreate(c) => network_checks(&c.driver, &c.options, &c.ipam, c.ipv6),
            Request::NetworkEnsure(e) => network_checks(&e.driver, &e.options, &e.subnets, e.ipv6),
            Request::NetworkConnect(c) | Request::RunSetup(c) => mac(c.mac.as_ref()),
            Request::EndpointReserve { spec, .. } => mac(spec.mac.as_ref()),
            Request::EndpointAttach(a) => mac(a.spec.as_ref().and_then(|s| s.mac.as_ref())),
            Request::Trace(t) => {
                mac(t.dst_mac.as_ref());
                mac(t.src_mac.as_ref());
            }
            _ => {}
        }
    }
    if let Ok(Response::Error { message }) = serde_json::from_str::<Response>(line) {
        let _ = api::one_line(&message);
    }
});
