//! A CNI plugin run: the environment (`CNI_COMMAND`, `CNI_CONTAINERID`, `CNI_NETNS`,
//! `CNI_IFNAME`, `CNI_ARGS`, `CNI_PATH`), the program name, the configuration on stdin and
//! an IPAM plugin's answer, NUL-separated in the input, through every pure step the plugin
//! takes before and between its I/O: decoding, version and configuration checks, the
//! network and MAC it asks for, the IPAM answer (success or failure) and version
//! negotiation, and the endpoint built from the IPAM result. Nothing may panic.
//! Run: `cd control/fuzz && cargo +nightly fuzz run cni -- -dict=dicts/json.dict`.
#![no_main]

use std::path::{Path, PathBuf};

use libfuzzer_sys::fuzz_target;
use uvlan_control::cni::{self, ipam, types::CniResult, Invocation};

const VARS: [&str; 6] = [
    "CNI_COMMAND",
    "CNI_CONTAINERID",
    "CNI_NETNS",
    "CNI_IFNAME",
    "CNI_ARGS",
    "CNI_PATH",
];

fuzz_target!(|data: &[u8]| {
    let mut parts = data.split(|b| *b == 0);
    // An environment variable that is not UTF-8 reads as unset, as with std::env::var.
    let mut text = || {
        parts
            .next()
            .and_then(|p| String::from_utf8(p.to_vec()).ok())
    };
    let values: Vec<Option<String>> = VARS.iter().map(|_| text()).collect();
    let argv0 = text().unwrap_or_default();
    let stdin = parts.next().unwrap_or_default();
    let answer = parts.next().unwrap_or_default();
    let inv = Invocation::from_vars(
        |k| {
            VARS.iter()
                .position(|v| *v == k)
                .and_then(|i| values[i].clone())
        },
        &argv0,
        PathBuf::from("/nonexistent/uvlan.sock"),
    );
    let (raw, version) = match cni::parse_stdin(stdin) {
        Ok(parsed) => parsed,
        Err(e) => {
            let _ = e.to_json("1.1.0");
            return;
        }
    };
    let _ = ipam::delegated_config(&raw, &version);
    let Ok((conf, driver)) = cni::decode_conf(&inv, &raw, &version) else {
        return;
    };
    let _ = cni::ensure_for(&conf, driver);
    let mac = cni::requested_mac(&inv, &conf);
    if let Some(prev) = &conf.prev_result {
        let _ = CniResult::from_value(prev);
    }
    let plugin = Path::new("/opt/cni/bin/host-local");
    let _ = ipam::plugin_answer(plugin, &inv.command, false, answer, b"stderr");
    let Ok(v) = ipam::plugin_answer(plugin, &inv.command, true, answer, b"") else {
        return;
    };
    let _ = ipam::version_from_answer(plugin, &version, &v);
    if let Ok(result) = CniResult::from_value(&v) {
        let _ = result.to_json(&version);
        if let Ok((spec, routes)) = cni::endpoint_from(&result, &inv.key(), mac) {
            assert!(spec.address.is_some() || spec.address_v6.is_some() || result.ips.is_empty());
            assert_eq!(routes.len(), result.routes.len());
        }
    }
});
