//! A checked reader of classic pcap and pcapng: whole files in memory ([`Reader`]) or a
//! stream that arrives in pieces ([`Decoder`]).
//!
//! Every length and offset comes from the input and is checked before use: no input makes it
//! panic, loop forever or allocate more than the bytes it was given (plus the interfaces it
//! describes). What it understands:
//! - classic pcap (`0xa1b2c3d4` microseconds, `0xa1b23c4d` nanoseconds), both byte orders;
//! - pcapng: Section Header Blocks (byte order per section; a new section forgets the
//!   interfaces), Interface Description Blocks (`if_name`, `if_description`, `if_tsresol`,
//!   link type, snap length), Enhanced Packet Blocks (`epb_flags` direction, `opt_comment`),
//!   Simple Packet Blocks (interface 0, captured length from the snap length), the obsolete
//!   Packet Block (`pack_flags`), Interface Statistics Blocks (`isb_ifrecv`, `isb_ifdrop`);
//!   other blocks are skipped.
//!
//! Blocks larger than [`MAX_BLOCK`] are refused (a stream decoder must not buffer without
//! bound).

use std::borrow::Cow;

use super::Direction;

/// The largest block (pcapng) or record (pcap) accepted, in bytes.
pub const MAX_BLOCK: usize = 16 << 20;

/// The most interfaces one section may declare.
pub const MAX_INTERFACES: usize = 1 << 16;

/// `LINKTYPE_ETHERNET`.
pub const LINKTYPE_ETHERNET: u16 = 1;

const PCAP_MAGIC_US: u32 = 0xa1b2_c3d4;
const PCAP_MAGIC_NS: u32 = 0xa1b2_3c4d;
const SHB: u32 = 0x0a0d_0d0a;
const IDB: u32 = 1;
const PB: u32 = 2;
const SPB: u32 = 3;
const ISB: u32 = 5;
const EPB: u32 = 6;
const BYTE_ORDER_MAGIC: u32 = 0x1a2b_3c4d;

/// Why a capture could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReadError {
    /// Neither a pcap nor a pcapng magic number.
    #[error("not a pcap or pcapng file (unknown magic number {0:#010x})")]
    NotACapture(u32),
    /// The input ends inside a header, record or block.
    #[error("the capture is truncated at byte {0}")]
    Truncated(usize),
    /// A field has an impossible value.
    #[error("malformed capture at byte {offset}: {what}")]
    Malformed {
        /// Where the block or record starts.
        offset: usize,
        /// What is wrong.
        what: &'static str,
    },
    /// A block or record larger than [`MAX_BLOCK`].
    #[error("a block of {len} bytes at byte {offset} is larger than uvlan reads ({MAX_BLOCK})")]
    TooLarge {
        /// Where it starts.
        offset: usize,
        /// Its announced length.
        len: u64,
    },
    /// A packet names an interface no Interface Description Block declared.
    #[error("a packet at byte {offset} names interface {interface}, which is not declared")]
    UnknownInterface {
        /// Where the block starts.
        offset: usize,
        /// The interface index.
        interface: u32,
    },
}

/// Timestamp resolution of an interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TsResolution {
    /// Units of 10^-n seconds.
    Decimal(u8),
    /// Units of 2^-n seconds.
    Binary(u8),
}

impl TsResolution {
    /// Converts a timestamp in these units to nanoseconds (saturating).
    pub fn to_nanos(self, ts: u64) -> u64 {
        let ns = match self {
            TsResolution::Decimal(n) if n <= 9 => u128::from(ts) * 10u128.pow(9 - u32::from(n)),
            TsResolution::Decimal(n) => {
                u128::from(ts) / 10u128.checked_pow(u32::from(n) - 9).unwrap_or(u128::MAX)
            }
            TsResolution::Binary(n) => {
                let n = u32::from(n);
                if n >= 128 {
                    0
                } else {
                    (u128::from(ts) * 1_000_000_000) >> n
                }
            }
        };
        u64::try_from(ns).unwrap_or(u64::MAX)
    }
}

/// One interface of a capture (pcapng IDB; classic pcap: the file's only one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interface {
    /// `if_name`.
    pub name: Option<String>,
    /// `if_description`.
    pub description: Option<String>,
    /// Link type (`LINKTYPE_*`).
    pub linktype: u16,
    /// Snap length (0: none).
    pub snaplen: u32,
    /// Timestamp units.
    pub tsresol: TsResolution,
}

/// One captured frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet<'a> {
    /// Index of its interface in [`Decoder::interfaces`] (0 in classic pcap).
    pub interface: u32,
    /// Nanoseconds since the epoch.
    pub ts_ns: u64,
    /// The captured bytes.
    pub data: &'a [u8],
    /// The frame's length on the wire (≥ `data.len()` unless the writer lied).
    pub orig_len: u32,
    /// `epb_flags`/`pack_flags` direction, when given.
    pub direction: Option<Direction>,
    /// The first `opt_comment`, when given.
    pub comment: Option<Cow<'a, str>>,
}

/// Interface statistics (pcapng ISB).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Statistics<'a> {
    /// The interface.
    pub interface: u32,
    /// `isb_ifrecv`.
    pub received: Option<u64>,
    /// `isb_ifdrop`.
    pub dropped: Option<u64>,
    /// The first `opt_comment`.
    pub comment: Option<Cow<'a, str>>,
}

/// What one block or record holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event<'a> {
    /// A file header or a pcapng section header: the interfaces start over.
    Section,
    /// An interface was declared; its index in [`Decoder::interfaces`].
    Interface(u32),
    /// A frame.
    Packet(Packet<'a>),
    /// Interface statistics.
    Statistics(Statistics<'a>),
    /// A block uvlan does not use (skipped).
    Other,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Unknown,
    Pcap { big: bool, nanos: bool },
    Pcapng { big: bool },
}

fn u16_at(b: &[u8], off: usize, big: bool) -> Option<u16> {
    let s: [u8; 2] = b.get(off..off.checked_add(2)?)?.try_into().ok()?;
    Some(if big {
        u16::from_be_bytes(s)
    } else {
        u16::from_le_bytes(s)
    })
}

fn u32_at(b: &[u8], off: usize, big: bool) -> Option<u32> {
    let s: [u8; 4] = b.get(off..off.checked_add(4)?)?.try_into().ok()?;
    Some(if big {
        u32::from_be_bytes(s)
    } else {
        u32::from_le_bytes(s)
    })
}

fn u64_at(b: &[u8], off: usize, big: bool) -> Option<u64> {
    let s: [u8; 8] = b.get(off..off.checked_add(8)?)?.try_into().ok()?;
    Some(if big {
        u64::from_be_bytes(s)
    } else {
        u64::from_le_bytes(s)
    })
}

/// A pcapng timestamp: high and low 32-bit halves.
fn ts_at(b: &[u8], off: usize, big: bool) -> Option<u64> {
    let hi = u32_at(b, off, big)?;
    let lo = u32_at(b, off.checked_add(4)?, big)?;
    Some((u64::from(hi) << 32) | u64::from(lo))
}

/// Iterates the options of a pcapng block: `(code, value)`. Stops at `opt_endofopt`, at the
/// end of the area, or at the first option that does not fit.
struct Options<'a> {
    area: &'a [u8],
    big: bool,
}

impl<'a> Iterator for Options<'a> {
    type Item = (u16, &'a [u8]);

    fn next(&mut self) -> Option<(u16, &'a [u8])> {
        let code = u16_at(self.area, 0, self.big)?;
        let len = usize::from(u16_at(self.area, 2, self.big)?);
        if code == 0 {
            return None;
        }
        let value = self.area.get(4..4 + len)?;
        let padded = 4 + len.div_ceil(4) * 4;
        self.area = self.area.get(padded..).unwrap_or(&[]);
        Some((code, value))
    }
}

fn text(v: &[u8]) -> Cow<'_, str> {
    String::from_utf8_lossy(v.strip_suffix(&[0]).unwrap_or(v))
}

fn direction(flags: u32) -> Option<Direction> {
    match flags & 0b11 {
        1 => Some(Direction::Inbound),
        2 => Some(Direction::Outbound),
        _ => None,
    }
}

/// Decodes pcap or pcapng one block (record) at a time from the front of a buffer; keeps
/// what earlier blocks declared (format, byte order, interfaces).
#[derive(Debug, Clone)]
pub struct Decoder {
    format: Format,
    interfaces: Vec<Interface>,
    /// Bytes consumed so far (for error offsets).
    offset: usize,
}

impl Default for Decoder {
    fn default() -> Self {
        Decoder::new()
    }
}

impl Decoder {
    /// A decoder at the start of a file or stream.
    pub fn new() -> Decoder {
        Decoder {
            format: Format::Unknown,
            interfaces: Vec::new(),
            offset: 0,
        }
    }

    /// The interfaces declared so far in the current section.
    pub fn interfaces(&self) -> &[Interface] {
        &self.interfaces
    }

    /// Bytes consumed so far.
    pub fn offset(&self) -> usize {
        self.offset
    }

    /// Decodes the block or record at the front of `buf`. `Ok(None)`: `buf` does not hold a
    /// whole one yet (give more bytes); otherwise how many bytes it took, and what it held.
    pub fn decode<'a>(&mut self, buf: &'a [u8]) -> Result<Option<(usize, Event<'a>)>, ReadError> {
        let r = match self.format {
            Format::Unknown => self.header(buf),
            Format::Pcap { big, nanos } => self.pcap_record(buf, big, nanos),
            Format::Pcapng { big } => self.pcapng_block(buf, big),
        }?;
        if let Some((n, _)) = &r {
            self.offset = self.offset.saturating_add(*n);
        }
        Ok(r)
    }

    fn malformed(&self, what: &'static str) -> ReadError {
        ReadError::Malformed {
            offset: self.offset,
            what,
        }
    }

    fn header<'a>(&mut self, buf: &'a [u8]) -> Result<Option<(usize, Event<'a>)>, ReadError> {
        let Some(magic_le) = u32_at(buf, 0, false) else {
            return Ok(None);
        };
        let magic_be = magic_le.swap_bytes();
        if magic_le == SHB {
            return self.pcapng_block(buf, false);
        }
        let (big, nanos) = match (magic_le, magic_be) {
            (PCAP_MAGIC_US, _) => (false, false),
            (PCAP_MAGIC_NS, _) => (false, true),
            (_, PCAP_MAGIC_US) => (true, false),
            (_, PCAP_MAGIC_NS) => (true, true),
            _ => return Err(ReadError::NotACapture(magic_be)),
        };
        // magic, version major/minor, thiszone, sigfigs, snaplen, linktype (+ FCS bits).
        let (Some(snaplen), Some(network)) = (u32_at(buf, 16, big), u32_at(buf, 20, big)) else {
            return Ok(None);
        };
        self.format = Format::Pcap { big, nanos };
        self.interfaces = vec![Interface {
            name: None,
            description: None,
            linktype: (network & 0xffff) as u16,
            snaplen,
            tsresol: TsResolution::Decimal(if nanos { 9 } else { 6 }),
        }];
        Ok(Some((24, Event::Section)))
    }

    fn pcap_record<'a>(
        &mut self,
        buf: &'a [u8],
        big: bool,
        nanos: bool,
    ) -> Result<Option<(usize, Event<'a>)>, ReadError> {
        let (Some(sec), Some(frac), Some(incl), Some(orig)) = (
            u32_at(buf, 0, big),
            u32_at(buf, 4, big),
            u32_at(buf, 8, big),
            u32_at(buf, 12, big),
        ) else {
            return Ok(None);
        };
        let incl = incl as usize;
        if incl > MAX_BLOCK {
            return Err(ReadError::TooLarge {
                offset: self.offset,
                len: incl as u64,
            });
        }
        let Some(data) = buf.get(16..16 + incl) else {
            return Ok(None);
        };
        let frac_ns = if nanos {
            u64::from(frac)
        } else {
            u64::from(frac).saturating_mul(1000)
        };
        let ts_ns = u64::from(sec)
            .saturating_mul(1_000_000_000)
            .saturating_add(frac_ns);
        Ok(Some((
            16 + incl,
            Event::Packet(Packet {
                interface: 0,
                ts_ns,
                data,
                orig_len: orig,
                direction: None,
                comment: None,
            }),
        )))
    }

    fn pcapng_block<'a>(
        &mut self,
        buf: &'a [u8],
        big: bool,
    ) -> Result<Option<(usize, Event<'a>)>, ReadError> {
        let Some(kind_le) = u32_at(buf, 0, false) else {
            return Ok(None);
        };
        // A section header's byte order comes from its own magic (the type reads the same
        // either way).
        let big = if kind_le == SHB {
            match u32_at(buf, 8, false) {
                None => return Ok(None),
                Some(BYTE_ORDER_MAGIC) => false,
                Some(m) if m.swap_bytes() == BYTE_ORDER_MAGIC => true,
                Some(_) => return Err(self.malformed("section header with a bad byte-order magic")),
            }
        } else {
            big
        };
        let (Some(kind), Some(total)) = (u32_at(buf, 0, big), u32_at(buf, 4, big)) else {
            return Ok(None);
        };
        let total = total as usize;
        if total > MAX_BLOCK {
            return Err(ReadError::TooLarge {
                offset: self.offset,
                len: total as u64,
            });
        }
        if total < 12 || total % 4 != 0 {
            return Err(self.malformed("block length under 12 or not a multiple of 4"));
        }
        let Some(block) = buf.get(..total) else {
            return Ok(None);
        };
        if u32_at(block, total - 4, big) != Some(total as u32) {
            return Err(self.malformed("block lengths at its start and end differ"));
        }
        let body = block.get(8..total - 4).unwrap_or(&[]);
        let ev = match kind {
            SHB => {
                // byte-order magic, major, minor, section length, options
                if body.len() < 16 || u16_at(body, 4, big) != Some(1) {
                    return Err(self.malformed("section header of an unknown pcapng version"));
                }
                self.format = Format::Pcapng { big };
                self.interfaces.clear();
                Event::Section
            }
            IDB => {
                let (Some(linktype), Some(snaplen)) = (u16_at(body, 0, big), u32_at(body, 4, big))
                else {
                    return Err(self.malformed("interface description shorter than 8 bytes"));
                };
                let mut ifc = Interface {
                    name: None,
                    description: None,
                    linktype,
                    snaplen,
                    tsresol: TsResolution::Decimal(6),
                };
                let opts = Options {
                    area: body.get(8..).unwrap_or(&[]),
                    big,
                };
                for (code, v) in opts {
                    match (code, v.first()) {
                        (2, _) => ifc.name = Some(text(v).into_owned()),
                        (3, _) => ifc.description = Some(text(v).into_owned()),
                        (9, Some(&r)) if r & 0x80 != 0 => {
                            ifc.tsresol = TsResolution::Binary(r & 0x7f)
                        }
                        (9, Some(&r)) => ifc.tsresol = TsResolution::Decimal(r),
                        _ => {}
                    }
                }
                let n = self.interfaces.len();
                if n >= MAX_INTERFACES {
                    return Err(self.malformed("too many interfaces"));
                }
                self.interfaces.push(ifc);
                Event::Interface(n as u32)
            }
            EPB | PB => {
                // EPB: interface (32 bits); obsolete PB: interface, drops (16 bits each).
                let interface = if kind == EPB {
                    u32_at(body, 0, big)
                } else {
                    u16_at(body, 0, big).map(u32::from)
                };
                let (Some(interface), Some(ts), Some(cap), Some(orig)) = (
                    interface,
                    ts_at(body, 4, big),
                    u32_at(body, 12, big),
                    u32_at(body, 16, big),
                ) else {
                    return Err(self.malformed("packet block shorter than its header"));
                };
                let cap = cap as usize;
                let Some(data) = body.get(20..20 + cap) else {
                    return Err(self.malformed("captured length past the end of its block"));
                };
                let ifc = self.interface(interface)?;
                let mut packet = Packet {
                    interface,
                    ts_ns: ifc.tsresol.to_nanos(ts),
                    data,
                    orig_len: orig,
                    direction: None,
                    comment: None,
                };
                let opts = Options {
                    area: body.get(20 + cap.div_ceil(4) * 4..).unwrap_or(&[]),
                    big,
                };
                for (code, v) in opts {
                    if code == 1 && packet.comment.is_none() {
                        packet.comment = Some(text(v));
                    } else if code == 2 {
                        // epb_flags / pack_flags: bits 0-1 are the direction.
                        if let Some(f) = u32_at(v, 0, big) {
                            packet.direction = direction(f);
                        }
                    }
                }
                Event::Packet(packet)
            }
            SPB => {
                let Some(orig) = u32_at(body, 0, big) else {
                    return Err(self.malformed("simple packet block shorter than 4 bytes"));
                };
                let snaplen = self.interface(0)?.snaplen;
                let room = body.len() - 4;
                let mut cap = orig as usize;
                if snaplen != 0 {
                    cap = cap.min(snaplen as usize);
                }
                let cap = cap.min(room);
                Event::Packet(Packet {
                    interface: 0,
                    ts_ns: 0,
                    data: body.get(4..4 + cap).unwrap_or(&[]),
                    orig_len: orig,
                    direction: None,
                    comment: None,
                })
            }
            ISB => {
                let Some(interface) = u32_at(body, 0, big) else {
                    return Err(self.malformed("statistics block shorter than 4 bytes"));
                };
                self.interface(interface)?;
                let mut st = Statistics {
                    interface,
                    received: None,
                    dropped: None,
                    comment: None,
                };
                let opts = Options {
                    area: body.get(12..).unwrap_or(&[]),
                    big,
                };
                for (code, v) in opts {
                    match code {
                        1 if st.comment.is_none() => st.comment = Some(text(v)),
                        4 => st.received = u64_at(v, 0, big),
                        5 => st.dropped = u64_at(v, 0, big),
                        _ => {}
                    }
                }
                Event::Statistics(st)
            }
            _ => Event::Other,
        };
        Ok(Some((total, ev)))
    }

    fn interface(&self, i: u32) -> Result<&Interface, ReadError> {
        self.interfaces
            .get(i as usize)
            .ok_or(ReadError::UnknownInterface {
                offset: self.offset,
                interface: i,
            })
    }
}

/// A whole capture in memory, read event by event.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    dec: Decoder,
    failed: bool,
}

impl<'a> Reader<'a> {
    /// A reader over the bytes of a pcap or pcapng file.
    pub fn new(buf: &'a [u8]) -> Reader<'a> {
        Reader {
            buf,
            pos: 0,
            dec: Decoder::new(),
            failed: false,
        }
    }

    /// The interfaces of the current section.
    pub fn interfaces(&self) -> &[Interface] {
        self.dec.interfaces()
    }

    /// The next event; `None` at the end of the input (or after an error).
    pub fn next_event(&mut self) -> Option<Result<Event<'a>, ReadError>> {
        if self.failed {
            return None;
        }
        let rest = self.buf.get(self.pos..).unwrap_or(&[]);
        if rest.is_empty() {
            return None;
        }
        match self.dec.decode(rest) {
            Ok(Some((n, ev))) => {
                self.pos += n;
                Some(Ok(ev))
            }
            Ok(None) => {
                self.failed = true;
                Some(Err(ReadError::Truncated(self.pos)))
            }
            Err(e) => {
                self.failed = true;
                Some(Err(e))
            }
        }
    }
}
