//! `tcpdump` in a test namespace: start, wait until it listens, stop, read the lines; and
//! `tshark` reading a capture file's fields back.
//!
//! tcpdump shows 802.1Q tags with `-e` even where the kernel moved them into packet metadata
//! (it reads `PACKET_AUXDATA`), so it is the witness for tags on the wire.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;
use uvlan_control::nsutil::Tcpdump;

/// A running `tcpdump -l -n -e` (plus extra flags) on one interface.
pub struct Capture {
    tcpdump: Option<Tcpdump>,
    out: PathBuf,
}

static SEQ: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

impl Capture {
    /// Starts `tcpdump -i IFNAME -l -n -e FLAGS FILTER` in namespace `full` and waits until it
    /// listens. `flags` e.g. `["-v"]` (TTL) or `["-Q", "in"]` (one direction).
    pub fn start(full: &str, ifname: &str, flags: &[&str], filter: &str) -> Capture {
        let n = SEQ.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let out = std::env::temp_dir().join(format!("{full}-cap{n}.out"));
        let file = std::fs::File::create(&out).expect("capture file");
        let mut args = vec!["-l", "-n", "-e"];
        args.extend_from_slice(flags);
        args.extend(filter.split_whitespace());
        let tcpdump = Tcpdump::start(
            full,
            ifname,
            &args,
            file,
            &format!("tcpdump on {full}/{ifname}"),
            Duration::from_secs(10),
            &|| false,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        Capture {
            tcpdump: Some(tcpdump),
            out,
        }
    }

    /// Stops tcpdump (SIGINT, so it flushes) and returns one record per frame (`-v`
    /// continuation lines are joined to their frame's line).
    pub fn stop(mut self) -> Vec<String> {
        // Give in-flight frames a moment to be printed.
        std::thread::sleep(Duration::from_millis(300));
        if let Some(t) = self.tcpdump.take() {
            t.stop();
        }
        records(&std::fs::read_to_string(&self.out).unwrap_or_default())
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        if let Some(t) = self.tcpdump.take() {
            t.stop();
        }
        let _ = std::fs::remove_file(&self.out);
    }
}

/// tcpdump's output as one string per frame: lines that start with whitespace continue the
/// previous frame; blank lines are no frame.
pub fn records(out: &str) -> Vec<String> {
    let mut v: Vec<String> = Vec::new();
    for l in out.lines().filter(|l| !l.trim().is_empty()) {
        match v.last_mut() {
            Some(last) if l.starts_with(char::is_whitespace) => {
                last.push(' ');
                last.push_str(l.trim());
            }
            _ => v.push(l.to_string()),
        }
    }
    v
}

/// The source MAC of a `tcpdump -e` line (`HH:MM:SS.us SRC > DST, ...`).
pub fn src_mac(line: &str) -> Option<&str> {
    let mut w = line.split_whitespace();
    w.next()?;
    let s = w.next()?;
    (s.len() == 17 && s.matches(':').count() == 5).then_some(s)
}

/// The destination MAC of a `tcpdump -e` line.
pub fn dst_mac(line: &str) -> Option<&str> {
    let mut w = line.split_whitespace();
    w.next()?;
    w.next()?;
    if w.next()? != ">" {
        return None;
    }
    let d = w.next()?.trim_end_matches(',');
    (d.len() == 17).then_some(d)
}

/// The 802.1Q VID of a `tcpdump -e` line (`... vlan 20, p 0, ...`), if it is tagged.
pub fn vlan(line: &str) -> Option<u16> {
    let i = line.find("vlan ")?;
    let rest = line.get(i + 5..)?;
    rest.split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

/// tshark's fields of every frame of `file`, one `Vec` per frame.
pub fn tshark(file: &Path, fields: &[&str]) -> Vec<Vec<String>> {
    let mut cmd = Command::new("tshark");
    cmd.arg("-r")
        .arg(file)
        .args(["-T", "fields", "-E", "separator=|"]);
    for f in fields {
        cmd.args(["-e", f]);
    }
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("tshark is needed (scripts/deps.sh --test installs it): {e}"));
    assert!(
        out.status.success(),
        "tshark failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| l.split('|').map(str::to_string).collect())
        .collect()
}

/// A running `uvlan capture` (the CLI), started by [`LiveCapture::start`] once it says it
/// captures; [`LiveCapture::stop`] interrupts it as Ctrl-C would. Its output is read while it
/// runs, so a long capture never blocks on a full pipe.
pub struct LiveCapture {
    child: std::process::Child,
    out: std::thread::JoinHandle<String>,
    err: std::thread::JoinHandle<String>,
}

/// What a stopped [`LiveCapture`] said.
pub struct Captured {
    /// The frame count of its summary (`N frames captured`).
    pub frames: u64,
    /// Its records (stdout).
    pub text: String,
    /// Its messages (stderr), the summary included.
    pub log: String,
}

/// Reads `from` to its end on a thread; `started` is told when a line starts with `mark`.
fn read_lines(
    from: impl std::io::Read + Send + 'static,
    mark: Option<(&'static str, std::sync::mpsc::Sender<()>)>,
) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        use std::io::BufRead;
        let mut all = String::new();
        for line in std::io::BufReader::new(from).lines().map_while(Result::ok) {
            if let Some((m, tx)) = &mark {
                if line.starts_with(m) {
                    let _ = tx.send(());
                }
            }
            all.push_str(&line);
            all.push('\n');
        }
        all
    })
}

impl LiveCapture {
    /// Runs `uvlan capture ARGS` against the daemon at `socket` and returns once it says
    /// "capturing on network" (the daemon has started it); panics after 20 s.
    pub fn start(socket: &Path, args: &[&str]) -> LiveCapture {
        use std::process::Stdio;
        let mut child = Command::new(crate::uvlan_bin())
            .arg("capture")
            .args(args)
            .env("UVLAN_SOCKET", socket)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("uvlan capture");
        let (tx, started) = std::sync::mpsc::channel();
        let err = read_lines(
            child.stderr.take().expect("capture's stderr"),
            Some(("capturing on network", tx)),
        );
        let out = read_lines(child.stdout.take().expect("capture's stdout"), None);
        started
            .recv_timeout(Duration::from_secs(20))
            .expect("uvlan capture did not start within 20 s");
        LiveCapture { child, out, err }
    }

    /// Interrupts the capture (SIGINT, as Ctrl-C) and returns what it said; panics when it
    /// printed no summary.
    pub fn stop(mut self) -> Captured {
        let _ = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::time::Instant::now() < deadline
            && self.child.try_wait().is_ok_and(|s| s.is_none())
        {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let text = self.out.join().expect("stdout reader");
        let log = self.err.join().expect("stderr reader");
        let frames = log
            .split(" frames captured")
            .next()
            .and_then(|h| h.rsplit(|c: char| !c.is_ascii_digit()).next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no capture summary: {log}\n{text}"));
        Captured { frames, text, log }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_tcpdump_lines() {
        let l = "12:00:00.000001 02:00:00:00:01:01 > 02:00:00:00:fe:01, ethertype 802.1Q \
                 (0x8100), length 102: vlan 20, p 0, ethertype IPv4 (0x0800), 203.0.113.10 > \
                 203.0.113.254: ICMP echo request";
        assert_eq!(src_mac(l), Some("02:00:00:00:01:01"));
        assert_eq!(dst_mac(l), Some("02:00:00:00:fe:01"));
        assert_eq!(vlan(l), Some(20));
        let u = "12:00:00.000001 02:00:00:00:01:01 > ff:ff:ff:ff:ff:ff, ethertype ARP (0x0806), \
                 length 42: Request who-has 192.0.2.254 tell 192.0.2.10, length 28";
        assert_eq!(vlan(u), None);
        assert_eq!(dst_mac(u), Some("ff:ff:ff:ff:ff:ff"));
        assert_eq!(src_mac("    0x0000:  4500"), None);
        let r = records("a b > c, x: (ttl 64)\n    1.2.3.4 > 5.6.7.8: ICMP\nnext\n");
        assert_eq!(
            r,
            vec!["a b > c, x: (ttl 64) 1.2.3.4 > 5.6.7.8: ICMP", "next"]
        );
    }
}
