//! A lab testbed file: TOML decoded and validated as `uvlan lab` loads it, then the pure
//! views the runner takes of it (stages, checks, hosts) and the shell-word splitting of its
//! commands. Nothing may panic.
//! Run: `cd control/fuzz && cargo +nightly fuzz run lab_toml -- -dict=dicts/toml.dict`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use uvlan_control::lab;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(tb) = lab::parse("fuzz.toml", text) {
        let _ = tb.all_checks();
        let _ = tb.host_names();
        for stage in tb.stages() {
            for action in stage.run {
                for s in [&action.cmd, &action.uvlan].into_iter().flatten() {
                    let _ = lab::split_args(s);
                }
            }
        }
    }
    let _ = lab::split_args(text);
});
