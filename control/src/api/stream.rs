//! The client's side of the streaming requests (see the module docs of [`crate::api`]):
//! reading a capture's pcapng stream, and replaying a capture frame by frame.

use std::io::{self, Read, Write};
use std::os::fd::AsFd;

use uvlan_dataplane::capture::read::LINKTYPE_ETHERNET;
use uvlan_dataplane::capture::{summary, Decoder, Direction, Event, Reader};

use super::{ClientStream, ReplayFrame, ReplayVerdict};

/// What the stream said, counted by the client.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Tally {
    /// Frames received.
    pub frames: u64,
    /// Records lost (from the statistics blocks).
    pub lost: u64,
    /// Statistics blocks seen (one per interface when the daemon ended the capture
    /// cleanly).
    pub statistics: u64,
}

/// `HH:MM:SS.micro` (UTC) of a timestamp in nanoseconds.
fn clock(ts_ns: u64) -> String {
    let secs = ts_ns / 1_000_000_000;
    let micros = (ts_ns % 1_000_000_000) / 1000;
    let day = secs % 86_400;
    format!(
        "{:02}:{:02}:{:02}.{micros:06}",
        day / 3600,
        day / 60 % 60,
        day % 60
    )
}

/// Reads the pcapng stream from `conn` until the daemon closes it: copies every byte to
/// `raw` (when writing a file), prints one line per frame to `lines` (when not), counts.
/// `stop` is polled while waiting: once it is true, the client shuts its side down (the
/// daemon then ends the capture).
pub fn pump(
    conn: &mut ClientStream,
    mut raw: Option<&mut dyn Write>,
    mut lines: Option<&mut dyn Write>,
    stop: &dyn Fn() -> bool,
) -> io::Result<Tally> {
    let mut dec = Decoder::new();
    let mut pending: Vec<u8> = Vec::new();
    let mut chunk = vec![0u8; 1 << 16];
    let mut tally = Tally::default();
    let mut shut = false;
    loop {
        if !shut && stop() {
            let _ = conn.stream.shutdown(std::net::Shutdown::Write);
            shut = true;
        }
        if conn.reader.buffer().is_empty() && !crate::sys::wait_readable(conn.stream.as_fd(), 250)?
        {
            continue;
        }
        let n = match conn.reader.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        let got = chunk.get(..n).unwrap_or(&[]);
        if let Some(w) = raw.as_deref_mut() {
            w.write_all(got)?;
            w.flush()?;
        }
        pending.extend_from_slice(got);
        let mut used = 0;
        loop {
            let rest = pending.get(used..).unwrap_or(&[]);
            let Some((len, ev)) = dec
                .decode(rest)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?
            else {
                break;
            };
            used += len;
            match ev {
                Event::Packet(p) => {
                    tally.frames += 1;
                    if let Some(w) = lines.as_deref_mut() {
                        let ifname = dec
                            .interfaces()
                            .get(p.interface as usize)
                            .and_then(|i| i.name.clone())
                            .unwrap_or_else(|| format!("if{}", p.interface));
                        let dir = match p.direction {
                            Some(Direction::Inbound) => "In ",
                            Some(Direction::Outbound) => "Out",
                            None => "   ",
                        };
                        writeln!(
                            w,
                            "{} {ifname} {dir} {} | {}",
                            clock(p.ts_ns),
                            summary::describe(p.data),
                            p.comment.as_deref().unwrap_or("")
                        )?;
                        w.flush()?;
                    }
                }
                Event::Statistics(s) => {
                    tally.statistics += 1;
                    tally.lost += s.dropped.unwrap_or(0);
                }
                _ => {}
            }
        }
        pending.drain(..used);
    }
    Ok(tally)
}

/// Counts of a replay.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ReplayTally {
    /// Frames forwarded by the engine.
    pub forwarded: u64,
    /// Frames dropped by the engine.
    pub dropped: u64,
    /// Frames not replayed.
    pub skipped: u64,
}

/// One printed line.
fn line(v: &ReplayVerdict, frame: &[u8]) -> String {
    let from = if v.ingress.is_empty() {
        "-".to_string()
    } else {
        v.ingress.clone()
    };
    let mut s = format!(
        "{:>5} {from}: {} → {}",
        v.index,
        summary::describe(frame),
        v.verdict
    );
    if !v.skipped && v.drop.is_none() && !v.kernel.is_empty() {
        s.push_str(&format!(" [{}]", v.kernel));
    }
    s
}

/// Replays the capture in `bytes` on `conn`, printing to `out`.
pub fn replay_frames(
    bytes: &[u8],
    conn: &mut ClientStream,
    out: &mut dyn Write,
) -> Result<ReplayTally, String> {
    let mut tally = ReplayTally::default();
    let mut reader = Reader::new(bytes);
    let mut index = 0u64;
    while let Some(ev) = reader.next_event() {
        let ev = ev.map_err(|e| format!("after {index} frames: {e}"))?;
        let Event::Packet(p) = ev else { continue };
        index += 1;
        let ifc = reader.interfaces().get(p.interface as usize);
        let linktype = ifc.map_or(LINKTYPE_ETHERNET, |i| i.linktype);
        let v = if linktype != LINKTYPE_ETHERNET {
            ReplayVerdict {
                index,
                verdict: format!(
                    "not replayed: link type {linktype} is not Ethernet (capture on one \
                     interface, not \"any\")"
                ),
                skipped: true,
                ..ReplayVerdict::default()
            }
        } else {
            let f = ReplayFrame {
                index,
                interface: ifc.and_then(|i| i.name.clone()),
                direction: p.direction.map(|d| match d {
                    Direction::Inbound => "in".to_string(),
                    Direction::Outbound => "out".to_string(),
                }),
                frame: crate::ids::hex(p.data),
            };
            conn.write_line(&f)
                .map_err(|e| format!("sending frame {index}: {e}"))?;
            conn.read_line::<ReplayVerdict>()
                .map_err(|e| format!("reading the verdict of frame {index}: {e}"))?
                .ok_or_else(|| format!("the daemon closed the replay at frame {index}"))?
        };
        if v.skipped {
            tally.skipped += 1;
        } else if v.drop.is_some() {
            tally.dropped += 1;
        } else {
            tally.forwarded += 1;
        }
        let mut text = line(&v, p.data);
        if let Some(t) = &v.trace {
            for l in t.lines() {
                text.push_str("\n        ");
                text.push_str(l);
            }
        }
        writeln!(out, "{text}").map_err(|e| e.to_string())?;
    }
    Ok(tally)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clock_is_utc_time_of_day() {
        assert_eq!(clock(0), "00:00:00.000000");
        assert_eq!(
            clock(86_400_000_000_000 + 3_723_000_456_789),
            "01:02:03.000456"
        );
    }
}
