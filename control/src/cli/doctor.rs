//! `uvlan doctor [--format json]`: what this kernel and sandbox offer uvlan (see
//! [`crate::doctor`]).

use std::io::Write;

use clap::Args;

use super::Failure;

/// `uvlan doctor`.
#[derive(Args, Debug)]
#[command(after_help = "\
Every line is probed for real in a scratch network namespace that disappears afterwards
(a TAP, BPF programs, a parent opened as the dataplane opens one, the kernel's own ipvlan,
macvlan, 8021q and dummy links) and with a throw-away io_uring. Exit status 1 only when uvlan
cannot work here at all (not root, no network namespaces, no TAP), with the reason.")]
pub struct DoctorArgs {
    /// `json`: the whole report as one JSON object (for scripts).
    #[arg(long, value_name = "FORMAT")]
    pub format: Option<String>,
}

/// Runs the probes and prints the report.
pub fn doctor(a: DoctorArgs) -> Result<i32, Failure> {
    let json = match a.format.as_deref() {
        None | Some("text") | Some("table") => false,
        Some("json") => true,
        Some(other) => {
            return Err(Failure::msg(format!(
                "unknown --format {other:?}: use json (or text)"
            )))
        }
    };
    let report = crate::doctor::report(&crate::doctor::probe_all());
    let text = if json {
        let mut t = serde_json::to_string_pretty(&report)
            .map_err(|e| Failure::msg(format!("cannot print the report: {e}")))?;
        t.push('\n');
        t
    } else {
        report.text()
    };
    // A reader that stopped reading (`| head`) is not an error of the doctor's.
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        if e.kind() != std::io::ErrorKind::BrokenPipe {
            return Err(Failure::msg(format!("cannot print the report: {e}")));
        }
    }
    Ok(report.exit_code())
}
