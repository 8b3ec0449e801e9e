//! Running a stage: its commands (setup or checks), every ping at once, the captures around
//! them, and what each of them found.

use super::env::{output, Env};
use super::{
    interrupted, uvlan_args, ActionResult, ActionSpec, CaptureResult, CheckResult, CheckSpec,
    LabError, Stage, StageReport, Testbed, UvlanCaptureResult, UvlanCaptureSpec, INTERRUPTED,
};
use crate::api::stream::Tally;
use crate::api::CaptureRequest;
use crate::nsutil::{in_netns, ip_in, sh_in};
use std::net::IpAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::Duration;
use uvlan_dataplane::capture::{Event, Reader};

/// How long one ping check may take (`ping -w`), in seconds.
const PING_DEADLINE_S: &str = "3";

fn first_addr(env: &Env, name: &str, v6: bool) -> Result<IpAddr, LabError> {
    let fam = if v6 { "-6" } else { "-4" };
    let out = env.ip(name, &["-j", fam, "addr", "show", "scope", "global"])?;
    let v: serde_json::Value = serde_json::from_str(&out).unwrap_or(serde_json::Value::Null);
    v.as_array()
        .into_iter()
        .flatten()
        .flat_map(|l| l["addr_info"].as_array().cloned().unwrap_or_default())
        .find_map(|a| a["local"].as_str().and_then(|s| s.parse().ok()))
        .ok_or_else(|| LabError::Step {
            step: format!(
                "find the {} address of {name}",
                if v6 { "IPv6" } else { "IPv4" }
            ),
            detail: "it has none".into(),
        })
}

/// Pings every check at once; an answer within the deadline counts as reached, whatever
/// was expected (the same patience for both outcomes).
fn ping_all(env: &Env, checks: &[CheckSpec]) -> Result<Vec<CheckResult>, LabError> {
    let mut running: Vec<(CheckSpec, IpAddr, Child, Option<bool>)> = Vec::new();
    let reap = |running: &mut Vec<(CheckSpec, IpAddr, Child, Option<bool>)>| {
        for (_, _, c, _) in running.iter_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    };
    for c in checks {
        let (target, v6) = match c.to.strip_suffix("/6") {
            Some(t) => (t, true),
            None => (c.to.as_str(), false),
        };
        let addr = match target.parse::<IpAddr>() {
            Ok(a) => a,
            Err(_) => match first_addr(env, target, v6) {
                Ok(a) => a,
                Err(e) => {
                    reap(&mut running);
                    return Err(e);
                }
            },
        };
        let fam = if addr.is_ipv6() { "-6" } else { "-4" };
        let child = in_netns(&env.ns(&c.from), "ping")
            .args([fam, "-n", "-q"])
            .args([
                "-c",
                "1",
                "-i",
                "0.2",
                "-w",
                PING_DEADLINE_S,
                &addr.to_string(),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        match child {
            Ok(ch) => running.push((c.clone(), addr, ch, None)),
            Err(e) => {
                reap(&mut running);
                return Err(LabError::Io("ping".into(), e));
            }
        }
    }
    loop {
        if INTERRUPTED.load(Ordering::SeqCst) {
            reap(&mut running);
            return Err(LabError::Interrupted);
        }
        let mut pending = false;
        for (_, _, ch, done) in running.iter_mut() {
            if done.is_none() {
                match ch.try_wait() {
                    Ok(Some(st)) => *done = Some(st.success()),
                    Ok(None) => pending = true,
                    Err(_) => *done = Some(false),
                }
            }
        }
        if !pending {
            break;
        }
        // Timed, and bounded by the checks' own timeouts: the lab's foreground wait for the
        // check commands it started; never part of a running daemon.
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(running
        .into_iter()
        .map(|(check, addr, _, done)| CheckResult {
            check,
            addr,
            reached: done == Some(true),
        })
        .collect())
}

/// Runs a stage command; returns its result when it is a check.
fn run_action(
    env: &Env,
    tb: &Testbed,
    a: &ActionSpec,
    log: &mut dyn FnMut(&str),
) -> Result<Option<ActionResult>, LabError> {
    interrupted()?;
    let what = a.describe();
    let (ok_exit, text) = match (&a.ns, &a.cmd, &a.uvlan) {
        (Some(ns), Some(cmd), _) => {
            let cmd = env.expand(cmd)?;
            output(&mut sh_in(&env.ns(ns), &cmd), &what)?
        }
        (_, _, Some(u)) => {
            let host = tb
                .default_host(&a.host)
                .map_err(|m| LabError::Invalid(tb.name.clone(), m))?;
            let args = uvlan_args(&env.expand(u)?)
                .map_err(|m| LabError::Invalid(tb.name.clone(), format!("uvlan {u}: {m}")))?;
            output(&mut env.uvlan_cmd(&host, &args), &what)?
        }
        _ => {
            return Err(LabError::Invalid(
                tb.name.clone(),
                format!("command {what}: nothing to run"),
            ))
        }
    };
    log(&format!("  $ {what}"));
    let show = |log: &mut dyn FnMut(&str)| {
        for l in text.lines() {
            log(&format!("    {l}"));
        }
    };
    if !a.is_check() {
        if !ok_exit {
            show(log);
            return Err(LabError::Step {
                step: what,
                detail: text.trim().to_string(),
            });
        }
        if a.show {
            show(log);
        }
        return Ok(None);
    }
    let mut problems = Vec::new();
    if ok_exit && a.fails {
        problems.push("succeeded, expected to fail".to_string());
    }
    if !ok_exit && !a.fails {
        problems.push("failed".to_string());
    }
    for e in &a.expect {
        let e = env.expand(e)?;
        if !text.contains(&e) {
            problems.push(format!("no {e:?} in the output"));
        }
    }
    for e in &a.absent {
        let e = env.expand(e)?;
        if text.contains(&e) {
            problems.push(format!("{e:?} in the output"));
        }
    }
    if a.show || !problems.is_empty() {
        show(log);
    }
    if !problems.is_empty() {
        log(&format!("    <-- NOT AS EXPECTED: {}", problems.join("; ")));
    }
    Ok(Some(ActionResult { what, problems }))
}

fn count_frames(file: &Path, filter: &str) -> Result<usize, String> {
    let out = Command::new("tcpdump")
        .arg("-r")
        .arg(file)
        .args(["-nn", filter])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run tcpdump: {e}"))?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
    }
    Ok(String::from_utf8_lossy(&out.stdout).lines().count())
}

/// Waits (at most 4 s) until no namespace that pings in this stage still resolves an
/// address left over from the stage before: a neighbour entry that fails while a new ping
/// waits on it ends that ping at once with "Destination Host Unreachable" (iputils counts the
/// error against `-c 1`), whatever the new stage changed.
fn settle_neighbours(env: &Env, checks: &[CheckSpec]) {
    let mut namespaces: Vec<String> = checks.iter().map(|c| env.ns(&c.from)).collect();
    namespaces.sort();
    namespaces.dedup();
    let end = std::time::Instant::now() + Duration::from_secs(4);
    while std::time::Instant::now() < end {
        let resolving = namespaces.iter().any(|ns| {
            ip_in(ns)
                .args(["neigh", "show", "nud", "incomplete"])
                .output()
                .is_ok_and(|o| !o.stdout.trim_ascii().is_empty())
        });
        if !resolving {
            return;
        }
        // Timed, and bounded (`end`): the lab waits for neighbour resolution it cannot
        // subscribe to from here; never part of a running daemon.
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The file of a uvlan capture: `stage<N>-<network>.pcapng`, `-<host>` added when the
/// testbed has several hosts.
fn uvlan_capture_file(tb: &Testbed, stage: usize, host: &str, network: &str) -> String {
    let safe: String = network
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if tb.host_names().len() > 1 {
        format!("stage{stage}-{safe}-{host}.pcapng")
    } else {
        format!("stage{stage}-{safe}.pcapng")
    }
}

/// Starts the stage's uvlan captures, in order.
fn start_uvlan_captures(
    env: &mut Env,
    tb: &Testbed,
    st: &Stage<'_>,
    stage: usize,
) -> Result<(), LabError> {
    for c in st.uvlan_capture {
        let host = tb
            .host_of_network(&c.network, c.host.as_deref())
            .map_err(|m| LabError::Invalid(tb.name.clone(), m))?;
        let file = env
            .capture_dir()
            .0
            .join(uvlan_capture_file(tb, stage, &host, &c.network));
        let req = CaptureRequest {
            network: c.network.clone(),
            // The daemon knows a lab endpoint by its namespace, the name it was connected with.
            endpoints: c.endpoints.iter().map(|e| env.ns(e)).collect(),
            wire: c.wire,
            drops: c.drops,
            count: None,
            snaplen: None,
        };
        env.start_uvlan_capture(&host, req, file)?;
    }
    Ok(())
}

/// The comment (the engine's verdict) of every record of a pcapng capture, read with the
/// dataplane's checked reader; a record without one counts with an empty verdict.
fn read_verdicts(bytes: &[u8]) -> Result<Vec<String>, String> {
    let mut verdicts = Vec::new();
    let mut reader = Reader::new(bytes);
    while let Some(ev) = reader.next_event() {
        match ev {
            Ok(Event::Packet(p)) => {
                verdicts.push(p.comment.map(|c| c.into_owned()).unwrap_or_default());
            }
            Ok(_) => {}
            Err(e) => return Err(e.to_string()),
        }
    }
    Ok(verdicts)
}

/// A record of a frame that went nowhere (`--drops`): an engine drop, or a copy the I/O
/// layer could not deliver.
fn is_drop(verdict: &str) -> bool {
    verdict.starts_with("verdict: drop") || verdict.starts_with("verdict: forward, not delivered")
}

/// What the records fail of the capture's expectations (placeholders already expanded).
fn judge(c: &UvlanCaptureSpec, verdicts: &[String]) -> Vec<String> {
    let mut problems = Vec::new();
    let n = verdicts.len() as u64;
    if let Some(min) = c.min_records {
        if n < min {
            problems.push(format!("{n} record(s), expected at least {min}"));
        }
    }
    for e in &c.expect {
        if !verdicts.iter().any(|v| v.contains(e.as_str())) {
            problems.push(format!("no record's verdict contains {e:?}"));
        }
    }
    for a in &c.absent {
        let hits = verdicts.iter().filter(|v| v.contains(a.as_str())).count();
        if hits > 0 {
            problems.push(format!("{hits} record(s) whose verdict contains {a:?}"));
        }
    }
    problems
}

/// Reads a uvlan capture back (the dataplane's checked pcapng reader) and checks it.
fn evaluate_uvlan_capture(
    env: &Env,
    c: &UvlanCaptureSpec,
    file: std::path::PathBuf,
    stream: Result<Tally, String>,
) -> UvlanCaptureResult {
    let mut spec = c.clone();
    let mut r = UvlanCaptureResult {
        capture: c.clone(),
        file: file.clone(),
        kept: env.capture_dir().1,
        records: None,
        drops: 0,
        lost: 0,
        problems: Vec::new(),
        error: None,
    };
    let expand = |v: &[String]| -> Result<Vec<String>, String> {
        v.iter()
            .map(|e| env.expand(e).map_err(|e| e.to_string()))
            .collect()
    };
    match (expand(&c.expect), expand(&c.absent)) {
        (Ok(e), Ok(a)) => {
            spec.expect = e;
            spec.absent = a;
            r.capture = spec;
        }
        (Err(e), _) | (_, Err(e)) => {
            r.error = Some(e);
            return r;
        }
    }
    let tally = match stream {
        Ok(t) => t,
        Err(e) => {
            r.error = Some(format!("the capture stream failed: {e}"));
            return r;
        }
    };
    r.lost = tally.lost;
    if tally.statistics == 0 {
        r.error = Some("the daemon ended the stream without its statistics".into());
        return r;
    }
    let bytes = match std::fs::read(&file) {
        Ok(b) => b,
        Err(e) => {
            r.error = Some(format!("cannot read {}: {e}", file.display()));
            return r;
        }
    };
    let verdicts = match read_verdicts(&bytes) {
        Ok(v) => v,
        Err(e) => {
            r.error = Some(format!("{}: {e}", file.display()));
            return r;
        }
    };
    r.records = Some(verdicts.len() as u64);
    r.drops = verdicts.iter().filter(|v| is_drop(v)).count() as u64;
    r.problems = judge(&r.capture, &verdicts);
    r
}

pub(super) fn run_stage(
    env: &mut Env,
    tb: &Testbed,
    st: &Stage<'_>,
    stage: usize,
    log: &mut dyn FnMut(&str),
) -> Result<StageReport, LabError> {
    settle_neighbours(env, &st.all_checks());
    // One tcpdump per device.
    let mut devs: Vec<(String, String)> = Vec::new();
    for c in st.capture {
        let k = (c.ns.clone(), c.dev.clone());
        if !devs.contains(&k) {
            devs.push(k);
        }
    }
    for (i, (ns, dev)) in devs.iter().enumerate() {
        env.start_capture(ns, dev, i)?;
    }
    start_uvlan_captures(env, tb, st, stage)?;
    let mut actions = Vec::new();
    for a in st.run {
        if let Some(r) = run_action(env, tb, a, log)? {
            actions.push(r);
        }
    }
    let checks = st.all_checks();
    if !checks.is_empty() {
        log(&format!("  pinging {} pair(s) in parallel", checks.len()));
    }
    let results = ping_all(env, &checks)?;
    for r in results.iter().filter(|r| !r.ok()) {
        log(&format!(
            "  ping {} -> {} ({}): {}   <-- NOT AS EXPECTED",
            r.check.from,
            r.check.to,
            r.addr,
            if r.reached { "reached" } else { "no answer" }
        ));
    }
    let files = env.stop_captures();
    let streams = env.stop_uvlan_captures();
    let mut uvlan_captures = Vec::new();
    for (c, (file, stream)) in st.uvlan_capture.iter().zip(streams) {
        let r = evaluate_uvlan_capture(env, c, file, stream);
        if !r.ok() {
            log(&format!(
                "  uvlan capture of {} ({}): {}   <-- NOT AS EXPECTED",
                r.capture.network,
                r.file.display(),
                r.error.clone().unwrap_or_else(|| r.problems.join("; "))
            ));
        }
        uvlan_captures.push(r);
    }
    let mut captures = Vec::new();
    for c in st.capture {
        let mut spec = c.clone();
        let (frames, error) = match env.expand(&c.filter) {
            Ok(f) => {
                spec.filter = f;
                match files.iter().find(|(n, d, _)| *n == c.ns && *d == c.dev) {
                    Some((_, _, file)) => match count_frames(file, &spec.filter) {
                        Ok(n) => (Some(n), None),
                        Err(e) => (None, Some(e)),
                    },
                    None => (None, Some("no capture file".into())),
                }
            }
            Err(e) => (None, Some(e.to_string())),
        };
        let r = CaptureResult {
            capture: spec,
            frames,
            error,
        };
        if !r.ok() {
            log(&format!(
                "  capture [{}/{}] `{}`: {:?} frame(s) {}   <-- NOT AS EXPECTED",
                r.capture.ns,
                r.capture.dev,
                r.capture.filter,
                r.frames,
                r.error.as_deref().unwrap_or("")
            ));
        }
        captures.push(r);
    }
    Ok(StageReport {
        title: st.title.to_string(),
        results,
        captures,
        uvlan_captures,
        actions,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use uvlan_dataplane::capture::Direction;
    use uvlan_dataplane::capture::{InterfaceSpec, PacketSpec, PcapngWriter};

    fn capture(verdicts: &[Option<&str>]) -> Vec<u8> {
        let mut w = PcapngWriter::new(Vec::new(), "test").unwrap();
        w.interface(&InterfaceSpec {
            name: "c1",
            description: "",
            snaplen: 0,
        })
        .unwrap();
        for (i, v) in verdicts.iter().enumerate() {
            w.packet(&PacketSpec {
                interface: 0,
                ts_ns: i as u64,
                data: &[0u8; 60],
                orig_len: 60,
                direction: Some(Direction::Inbound),
                comment: *v,
            })
            .unwrap();
        }
        w.into_inner()
    }

    fn spec(expect: &[&str], absent: &[&str], min_records: Option<u64>) -> UvlanCaptureSpec {
        UvlanCaptureSpec {
            network: "n".into(),
            host: None,
            endpoints: vec![],
            wire: false,
            drops: true,
            expect: expect.iter().map(|s| s.to_string()).collect(),
            absent: absent.iter().map(|s| s.to_string()).collect(),
            min_records,
            title: String::new(),
        }
    }

    #[test]
    fn verdicts_are_read_back_counted_and_judged() {
        let bytes = capture(&[
            Some("verdict: forward to c2; kernel: ipvlan_rcv_frame (local)"),
            Some("verdict: drop (no_wire); kernel: dummy master (uvlan: no wire)"),
            Some("verdict: forward, not delivered (tap_full); kernel: ipvlan_rcv_frame (local)"),
            None,
        ]);
        let v = read_verdicts(&bytes).unwrap();
        assert_eq!(v.len(), 4);
        assert_eq!(v[3], "");
        assert_eq!(v.iter().filter(|v| is_drop(v)).count(), 2);
        assert!(judge(
            &spec(
                &["drop (no_wire)", "forward to c2"],
                &["private_flag"],
                Some(4)
            ),
            &v
        )
        .is_empty());
        let p = judge(&spec(&["drop (private_flag)"], &["no_wire"], Some(5)), &v);
        assert_eq!(p.len(), 3, "{p:?}");
        assert!(p[0].contains("4 record(s), expected at least 5"), "{p:?}");
        assert!(p[1].contains("private_flag"), "{p:?}");
        assert!(
            p[2].contains("1 record(s)") && p[2].contains("no_wire"),
            "{p:?}"
        );
        // An empty capture meets no expectation; a cut-off one is an error.
        let empty = read_verdicts(&capture(&[])).unwrap();
        assert_eq!(judge(&spec(&["verdict"], &[], None), &empty).len(), 1);
        assert!(read_verdicts(&bytes[..bytes.len() - 3]).is_err());
    }
}
