//! `uvlan capture NETWORK [ENDPOINT...] [--wire] [--drops] [-c COUNT] [-w FILE|-]`: the
//! daemon's pcapng stream, to a file, to standard output, or as one line per frame.
//!
//! Ctrl-C (SIGINT, SIGTERM) asks the daemon to end the capture (the client shuts its side
//! of the connection down); the daemon then sends each interface's statistics, and the
//! summary on standard error says how many records were lost.

use std::fs::File;
use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use clap::Args;

use crate::api::stream::pump;
use crate::api::{self, CaptureRequest, CaptureStart, ClientStream, Request};

use super::{socket, Failure};

/// `uvlan capture`.
#[derive(Args, Debug)]
#[command(after_help = "\
Each frame is recorded where uvlan saw it: inbound on the port it entered (an endpoint sent
it, or it arrived on the wire), outbound on each port it was written to. The pcapng comment
of each frame is the engine's decision: the verdict, the kernel function whose rule decided,
and for drops the reason.

Examples:
  uvlan capture net1                          every endpoint, one line per frame
  uvlan capture net1 c1 --wire --drops -w net1.pcapng
  uvlan capture net1 -w - | tshark -r - -V    decode with tshark (comments: frame.comment)
  uvlan capture net1 -w - | wireshark -k -i -")]
pub struct CaptureArgs {
    /// Network name or ID.
    pub network: String,
    /// Endpoints (the name network connect or run used); default: all of the network's.
    #[arg(value_name = "ENDPOINT")]
    pub endpoints: Vec<String>,
    /// Also the network's wire (its parent; its VID's frames only).
    #[arg(long)]
    pub wire: bool,
    /// Also the frames the dataplane dropped (no tcpdump on either side sees those).
    #[arg(long)]
    pub drops: bool,
    /// Stop after COUNT frames.
    #[arg(short = 'c', value_name = "COUNT")]
    pub count: Option<u64>,
    /// Write pcapng to FILE (`-`: standard output) instead of printing one line per frame.
    #[arg(short = 'w', value_name = "FILE|-")]
    pub write: Option<String>,
    /// Bytes kept per frame [default: 262144].
    #[arg(short = 's', long = "snapshot-length", value_name = "SNAPLEN")]
    pub snaplen: Option<u32>,
}

/// Runs `uvlan capture`.
pub fn capture(a: CaptureArgs) -> Result<i32, Failure> {
    let req = Request::Capture(CaptureRequest {
        network: a.network,
        endpoints: a.endpoints,
        wire: a.wire,
        drops: a.drops,
        count: a.count,
        snaplen: a.snaplen,
    });
    let (start, mut conn): (CaptureStart, ClientStream) = api::open_stream(&socket(), &req)?;
    let stopped = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, stopped.clone())
            .map_err(|e| Failure::msg(format!("cannot catch Ctrl-C: {e}")))?;
    }
    let names: Vec<&str> = start.interfaces.iter().map(|i| i.name.as_str()).collect();
    eprintln!(
        "capturing on network {}: {} (Ctrl-C to stop)",
        start.network,
        names.join(", ")
    );
    let stop = || stopped.load(Ordering::SeqCst);
    let stdout = io::stdout();
    let result = match a.write.as_deref() {
        None => pump(&mut conn, None, Some(&mut stdout.lock()), &stop),
        Some("-") => pump(&mut conn, Some(&mut stdout.lock()), None, &stop),
        Some(path) => {
            let mut f = File::create(PathBuf::from(path))
                .map_err(|e| Failure::msg(format!("cannot create {path}: {e}")))?;
            pump(&mut conn, Some(&mut f), None, &stop)
        }
    };
    let tally = match result {
        Ok(t) => t,
        // The reader of our standard output went away (`| head`): stop quietly.
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => return Ok(0),
        Err(e) => return Err(Failure::msg(format!("capture: {e}"))),
    };
    if tally.statistics == 0 {
        eprintln!(
            "{} frames captured; the daemon ended the stream without its statistics (see \
             its log)",
            tally.frames
        );
        return Ok(1);
    }
    eprintln!(
        "{} frames captured, {} records lost{}",
        tally.frames,
        tally.lost,
        if tally.lost > 0 {
            " (the capture could not keep up; the frames themselves were forwarded)"
        } else {
            ""
        }
    );
    Ok(0)
}
