//! A pcapng writer: one section (little-endian), interfaces with names and descriptions,
//! Enhanced Packet Blocks with their direction and a comment, Interface Statistics Blocks.
//!
//! Every block is assembled in a reusable buffer and written with one `write_all`, so a
//! reader that stops (a closed pipe) never sees half a block from a successful write.
//! Timestamps are written in nanoseconds (`if_tsresol` = 9 on every interface).

use std::io::{self, Write};

use super::read::LINKTYPE_ETHERNET;
use super::Direction;

const SHB: u32 = 0x0a0d_0d0a;
const IDB: u32 = 1;
const ISB: u32 = 5;
const EPB: u32 = 6;

const OPT_COMMENT: u16 = 1;
const SHB_OS: u16 = 3;
const SHB_USERAPPL: u16 = 4;
const IF_NAME: u16 = 2;
const IF_DESCRIPTION: u16 = 3;
const IF_TSRESOL: u16 = 9;
const EPB_FLAGS: u16 = 2;
const ISB_STARTTIME: u16 = 2;
const ISB_ENDTIME: u16 = 3;
const ISB_IFRECV: u16 = 4;
const ISB_IFDROP: u16 = 5;

/// The longest option value (an option's length field has 16 bits).
const MAX_OPTION: usize = 0xfffc;

/// An interface to declare.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InterfaceSpec<'a> {
    /// `if_name`.
    pub name: &'a str,
    /// `if_description`.
    pub description: &'a str,
    /// Snap length (0: none).
    pub snaplen: u32,
}

/// A frame to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PacketSpec<'a> {
    /// The interface index [`PcapngWriter::interface`] returned.
    pub interface: u32,
    /// Nanoseconds since the epoch.
    pub ts_ns: u64,
    /// The captured bytes.
    pub data: &'a [u8],
    /// The frame's length (≥ `data.len()`).
    pub orig_len: u32,
    /// `epb_flags` direction.
    pub direction: Option<Direction>,
    /// `opt_comment`.
    pub comment: Option<&'a str>,
}

/// Statistics of one interface at the end of a capture.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatisticsSpec<'a> {
    /// The interface.
    pub interface: u32,
    /// When the capture started (`isb_starttime`), ns since the epoch.
    pub start_ns: u64,
    /// When it ended (`isb_endtime`, and the block's timestamp).
    pub end_ns: u64,
    /// Frames seen (`isb_ifrecv`): captured and lost.
    pub received: u64,
    /// Frames lost (`isb_ifdrop`).
    pub dropped: u64,
    /// `opt_comment`.
    pub comment: Option<&'a str>,
}

/// Writes a pcapng stream (see the module docs).
#[derive(Debug)]
pub struct PcapngWriter<W: Write> {
    w: W,
    interfaces: u32,
    buf: Vec<u8>,
}

fn put16(b: &mut Vec<u8>, v: u16) {
    b.extend_from_slice(&v.to_le_bytes());
}

fn put32(b: &mut Vec<u8>, v: u32) {
    b.extend_from_slice(&v.to_le_bytes());
}

fn pad(b: &mut Vec<u8>) {
    while b.len() % 4 != 0 {
        b.push(0);
    }
}

/// Appends one option (the value is cut at [`MAX_OPTION`] bytes, at a UTF-8 boundary for
/// text).
fn option(b: &mut Vec<u8>, code: u16, value: &[u8]) {
    let v = value.get(..value.len().min(MAX_OPTION)).unwrap_or(value);
    put16(b, code);
    put16(b, v.len() as u16);
    b.extend_from_slice(v);
    pad(b);
}

fn text_option(b: &mut Vec<u8>, code: u16, s: &str) {
    let mut end = s.len().min(MAX_OPTION);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    option(b, code, s.get(..end).unwrap_or("").as_bytes());
}

fn ts_halves(ts_ns: u64) -> [u8; 8] {
    let (hi, lo) = ((ts_ns >> 32) as u32, ts_ns as u32);
    let mut out = [0; 8];
    let halves = hi.to_le_bytes().into_iter().chain(lo.to_le_bytes());
    for (o, b) in out.iter_mut().zip(halves) {
        *o = b;
    }
    out
}

impl<W: Write> PcapngWriter<W> {
    /// Starts a section: writes the Section Header Block naming `application`
    /// (`shb_userappl`) and the OS (`shb_os`).
    pub fn new(w: W, application: &str) -> io::Result<PcapngWriter<W>> {
        let mut me = PcapngWriter {
            w,
            interfaces: 0,
            buf: Vec::with_capacity(4096),
        };
        me.begin(SHB);
        put32(&mut me.buf, 0x1a2b_3c4d);
        put16(&mut me.buf, 1);
        put16(&mut me.buf, 0);
        me.buf.extend_from_slice(&u64::MAX.to_le_bytes()); // section length: unknown
        text_option(&mut me.buf, SHB_OS, std::env::consts::OS);
        text_option(&mut me.buf, SHB_USERAPPL, application);
        me.end_options();
        me.finish()?;
        Ok(me)
    }

    fn begin(&mut self, kind: u32) {
        self.buf.clear();
        put32(&mut self.buf, kind);
        put32(&mut self.buf, 0); // length, set by finish
    }

    fn end_options(&mut self) {
        put32(&mut self.buf, 0); // opt_endofopt
    }

    fn finish(&mut self) -> io::Result<()> {
        pad(&mut self.buf);
        let total = self.buf.len() as u32 + 4;
        put32(&mut self.buf, total);
        if let Some(len) = self.buf.get_mut(4..8) {
            len.copy_from_slice(&total.to_le_bytes());
        }
        self.w.write_all(&self.buf)
    }

    /// Declares an Ethernet interface; returns its index for [`PacketSpec::interface`].
    pub fn interface(&mut self, spec: &InterfaceSpec<'_>) -> io::Result<u32> {
        self.begin(IDB);
        put16(&mut self.buf, LINKTYPE_ETHERNET);
        put16(&mut self.buf, 0);
        put32(&mut self.buf, spec.snaplen);
        text_option(&mut self.buf, IF_NAME, spec.name);
        text_option(&mut self.buf, IF_DESCRIPTION, spec.description);
        option(&mut self.buf, IF_TSRESOL, &[9]);
        self.end_options();
        self.finish()?;
        let i = self.interfaces;
        self.interfaces += 1;
        Ok(i)
    }

    /// Writes one frame as an Enhanced Packet Block.
    pub fn packet(&mut self, p: &PacketSpec<'_>) -> io::Result<()> {
        if p.interface >= self.interfaces {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("interface {} was not declared", p.interface),
            ));
        }
        self.begin(EPB);
        put32(&mut self.buf, p.interface);
        self.buf.extend_from_slice(&ts_halves(p.ts_ns));
        put32(&mut self.buf, p.data.len() as u32);
        put32(&mut self.buf, p.orig_len.max(p.data.len() as u32));
        self.buf.extend_from_slice(p.data);
        pad(&mut self.buf);
        if let Some(c) = p.comment {
            text_option(&mut self.buf, OPT_COMMENT, c);
        }
        if let Some(d) = p.direction {
            let flags: u32 = match d {
                Direction::Inbound => 1,
                Direction::Outbound => 2,
            };
            option(&mut self.buf, EPB_FLAGS, &flags.to_le_bytes());
        }
        self.end_options();
        self.finish()
    }

    /// Writes an Interface Statistics Block.
    pub fn statistics(&mut self, s: &StatisticsSpec<'_>) -> io::Result<()> {
        self.begin(ISB);
        put32(&mut self.buf, s.interface);
        self.buf.extend_from_slice(&ts_halves(s.end_ns));
        if let Some(c) = s.comment {
            text_option(&mut self.buf, OPT_COMMENT, c);
        }
        option(&mut self.buf, ISB_STARTTIME, &ts_halves(s.start_ns));
        option(&mut self.buf, ISB_ENDTIME, &ts_halves(s.end_ns));
        option(&mut self.buf, ISB_IFRECV, &s.received.to_le_bytes());
        option(&mut self.buf, ISB_IFDROP, &s.dropped.to_le_bytes());
        self.end_options();
        self.finish()
    }

    /// Flushes the underlying writer.
    pub fn flush(&mut self) -> io::Result<()> {
        self.w.flush()
    }

    /// The underlying writer.
    pub fn get_mut(&mut self) -> &mut W {
        &mut self.w
    }

    /// Gives the underlying writer back.
    pub fn into_inner(self) -> W {
        self.w
    }
}
