//! `uvlan trace NETWORK --pcap FILE [--from ENDPOINT|wire] [--verbose]`: replays a pcap or
//! pcapng capture through the network's live engine, delivering nothing, and prints each
//! frame's verdict. Where each frame enters is the daemon's rule (`docs/README.md`,
//! "Replaying a capture"): `--from`, else the capture interface's name.

use std::io::Write;
use std::path::Path;

use crate::api::stream::replay_frames;
use crate::api::{self, ClientStream, ReplayRequest, ReplayStart};

use super::{socket, Failure};

/// Runs `uvlan trace NETWORK --pcap FILE`.
pub fn replay(
    network: String,
    pcap: &Path,
    from: Option<String>,
    verbose: bool,
) -> Result<i32, Failure> {
    let bytes = std::fs::read(pcap)
        .map_err(|e| Failure::msg(format!("cannot read {}: {e}", pcap.display())))?;
    let req = api::Request::Replay(ReplayRequest {
        network,
        from,
        verbose,
    });
    let (start, mut conn): (ReplayStart, ClientStream) = api::open_stream(&socket(), &req)?;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let r = replay_frames(&bytes, &mut conn, &mut out);
    let _ = conn.stream.shutdown(std::net::Shutdown::Both);
    let t = r.map_err(|e| Failure::msg(format!("{}: {e}", pcap.display())))?;
    let _ = writeln!(
        out,
        "{} frames replayed through network {}: {} forwarded, {} dropped, {} not replayed",
        t.forwarded + t.dropped + t.skipped,
        start.network,
        t.forwarded,
        t.dropped,
        t.skipped
    );
    Ok(0)
}
