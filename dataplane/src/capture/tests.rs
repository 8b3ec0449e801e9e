//! Writer ↔ reader round trips, hand-made pcap/pcapng in both byte orders, the reader on
//! arbitrary bytes, and the tap: filters, overflow, concurrent producer and consumer.
#![allow(clippy::indexing_slicing)]

use std::net::Ipv4Addr;

use proptest::prelude::*;

use super::read::{TsResolution, LINKTYPE_ETHERNET};
use super::*;
use crate::fwd::sample::{flat, port_ip, PARENT_MAC};
use crate::fwd::{
    Driver, DropReason, Ingress, IpvlanAttrs, IpvlanFlag, IpvlanMode, NoRoutes, ParentId, PortId,
};
use crate::wire::{build, MacAddr};

fn events(bytes: &[u8]) -> Result<Vec<Event<'_>>, ReadError> {
    let mut r = Reader::new(bytes);
    let mut out = Vec::new();
    while let Some(e) = r.next_event() {
        out.push(e?);
    }
    Ok(out)
}

fn packets(bytes: &[u8]) -> Vec<Packet<'_>> {
    events(bytes)
        .unwrap()
        .into_iter()
        .filter_map(|e| match e {
            Event::Packet(p) => Some(p),
            _ => None,
        })
        .collect()
}

fn written() -> Vec<u8> {
    let mut w = PcapngWriter::new(Vec::new(), "uvlan test").unwrap();
    let a = w
        .interface(&InterfaceSpec {
            name: "c1",
            description: "endpoint c1",
            snaplen: 65535,
        })
        .unwrap();
    let b = w
        .interface(&InterfaceSpec {
            name: "wire eth0.20",
            description: "the wire",
            snaplen: 0,
        })
        .unwrap();
    w.packet(&PacketSpec {
        interface: a,
        ts_ns: 1_700_000_000_123_456_789,
        data: &[1, 2, 3, 4, 5],
        orig_len: 60,
        direction: Some(Direction::Inbound),
        comment: Some("verdict: forward to c2; kernel: ipvlan_rcv_frame"),
    })
    .unwrap();
    w.packet(&PacketSpec {
        interface: b,
        ts_ns: 5,
        data: &[9; 8],
        orig_len: 8,
        direction: Some(Direction::Outbound),
        comment: None,
    })
    .unwrap();
    w.statistics(&StatisticsSpec {
        interface: a,
        start_ns: 1,
        end_ns: 2,
        received: 10,
        dropped: 3,
        comment: Some("lost"),
    })
    .unwrap();
    assert!(w
        .packet(&PacketSpec {
            interface: 7,
            ts_ns: 0,
            data: &[],
            orig_len: 0,
            direction: None,
            comment: None,
        })
        .is_err());
    w.into_inner()
}

#[test]
fn writer_output_reads_back() {
    let bytes = written();
    assert_eq!(bytes.len() % 4, 0);
    let mut r = Reader::new(&bytes);
    let mut evs = Vec::new();
    while let Some(e) = r.next_event() {
        evs.push(e.unwrap());
    }
    assert_eq!(evs[0], Event::Section);
    assert_eq!(evs[1], Event::Interface(0));
    assert_eq!(evs[2], Event::Interface(1));
    let ifs = r.interfaces();
    assert_eq!(ifs[0].name.as_deref(), Some("c1"));
    assert_eq!(ifs[0].description.as_deref(), Some("endpoint c1"));
    assert_eq!(ifs[0].tsresol, TsResolution::Decimal(9));
    assert_eq!(ifs[0].linktype, LINKTYPE_ETHERNET);
    assert_eq!(ifs[0].snaplen, 65535);
    assert_eq!(ifs[1].name.as_deref(), Some("wire eth0.20"));
    let Event::Packet(p) = &evs[3] else {
        panic!("{:?}", evs[3])
    };
    assert_eq!(p.interface, 0);
    assert_eq!(p.ts_ns, 1_700_000_000_123_456_789);
    assert_eq!(p.data, &[1, 2, 3, 4, 5]);
    assert_eq!(p.orig_len, 60);
    assert_eq!(p.direction, Some(Direction::Inbound));
    assert_eq!(
        p.comment.as_deref(),
        Some("verdict: forward to c2; kernel: ipvlan_rcv_frame")
    );
    let Event::Packet(q) = &evs[4] else {
        panic!("{:?}", evs[4])
    };
    assert_eq!((q.interface, q.direction), (1, Some(Direction::Outbound)));
    assert_eq!(q.comment, None);
    let Event::Statistics(s) = &evs[5] else {
        panic!("{:?}", evs[5])
    };
    assert_eq!((s.interface, s.received, s.dropped), (0, Some(10), Some(3)));
    assert_eq!(s.comment.as_deref(), Some("lost"));
    assert_eq!(evs.len(), 6);
}

#[test]
fn decoder_takes_a_stream_in_any_pieces() {
    let bytes = written();
    let whole = events(&bytes).unwrap();
    for step in [1, 3, 7, 64] {
        let mut dec = Decoder::new();
        let mut buf: Vec<u8> = Vec::new();
        let mut got = Vec::new();
        for chunk in bytes.chunks(step) {
            buf.extend_from_slice(chunk);
            while let Some((n, ev)) = dec.decode(&buf).unwrap() {
                got.push(format!("{ev:?}"));
                buf.drain(..n);
            }
        }
        assert!(buf.is_empty());
        let want: Vec<String> = whole.iter().map(|e| format!("{e:?}")).collect();
        assert_eq!(got, want, "chunks of {step}");
    }
}

/// A classic pcap file: header and records in the given byte order.
fn pcap(big: bool, nanos: bool, records: &[(u32, u32, &[u8])]) -> Vec<u8> {
    let w32 = |v: u32| {
        if big {
            v.to_be_bytes()
        } else {
            v.to_le_bytes()
        }
    };
    let w16 = |v: u16| {
        if big {
            v.to_be_bytes()
        } else {
            v.to_le_bytes()
        }
    };
    let mut f = Vec::new();
    f.extend_from_slice(&w32(if nanos { 0xa1b2_3c4d } else { 0xa1b2_c3d4 }));
    f.extend_from_slice(&w16(2));
    f.extend_from_slice(&w16(4));
    f.extend_from_slice(&w32(0));
    f.extend_from_slice(&w32(0));
    f.extend_from_slice(&w32(262_144));
    f.extend_from_slice(&w32(1));
    for (sec, frac, data) in records {
        f.extend_from_slice(&w32(*sec));
        f.extend_from_slice(&w32(*frac));
        f.extend_from_slice(&w32(data.len() as u32));
        f.extend_from_slice(&w32(data.len() as u32 + 4));
        f.extend_from_slice(data);
    }
    f
}

#[test]
fn classic_pcap_in_both_byte_orders_and_resolutions() {
    for big in [false, true] {
        for nanos in [false, true] {
            let f = pcap(big, nanos, &[(10, 20, &[1, 2, 3]), (11, 0, &[4; 60])]);
            let ps = packets(&f);
            assert_eq!(ps.len(), 2, "big {big} nanos {nanos}");
            let frac = if nanos { 20 } else { 20_000 };
            assert_eq!(ps[0].ts_ns, 10_000_000_000 + frac);
            assert_eq!(ps[0].data, &[1, 2, 3]);
            assert_eq!(ps[0].orig_len, 7);
            assert_eq!(ps[1].data.len(), 60);
            assert_eq!(ps[0].interface, 0);
            assert_eq!(ps[0].direction, None);
            let mut r = Reader::new(&f);
            r.next_event();
            assert_eq!(r.interfaces()[0].linktype, 1);
            assert_eq!(r.interfaces()[0].snaplen, 262_144);
        }
    }
    // Cut inside the second record: the first is read, then "truncated".
    let f = pcap(false, false, &[(1, 0, &[1; 10]), (2, 0, &[2; 10])]);
    let cut = &f[..f.len() - 3];
    let mut r = Reader::new(cut);
    assert!(matches!(r.next_event(), Some(Ok(Event::Section))));
    assert!(matches!(r.next_event(), Some(Ok(Event::Packet(_)))));
    assert!(matches!(
        r.next_event(),
        Some(Err(ReadError::Truncated(50)))
    ));
    assert!(r.next_event().is_none());
    assert!(matches!(
        events(b"GIF89a and more bytes"),
        Err(ReadError::NotACapture(_))
    ));
}

/// pcapng blocks built by hand in either byte order.
struct Ng {
    big: bool,
    out: Vec<u8>,
}

impl Ng {
    fn w32(&self, v: u32) -> [u8; 4] {
        if self.big {
            v.to_be_bytes()
        } else {
            v.to_le_bytes()
        }
    }
    fn w16(&self, v: u16) -> [u8; 2] {
        if self.big {
            v.to_be_bytes()
        } else {
            v.to_le_bytes()
        }
    }
    fn opt(&self, body: &mut Vec<u8>, code: u16, v: &[u8]) {
        body.extend_from_slice(&self.w16(code));
        body.extend_from_slice(&self.w16(v.len() as u16));
        body.extend_from_slice(v);
        while body.len() % 4 != 0 {
            body.push(0);
        }
    }
    fn block(&mut self, kind: u32, body: &[u8]) {
        let total = 12 + body.len() as u32;
        let (k, t) = (self.w32(kind), self.w32(total));
        self.out.extend_from_slice(&k);
        self.out.extend_from_slice(&t);
        self.out.extend_from_slice(body);
        self.out.extend_from_slice(&t);
    }
    fn shb(&mut self) {
        let mut b = Vec::new();
        b.extend_from_slice(&self.w32(0x1a2b_3c4d));
        b.extend_from_slice(&self.w16(1));
        b.extend_from_slice(&self.w16(0));
        b.extend_from_slice(&[0xff; 8]);
        self.block(0x0a0d_0d0a, &b);
    }
    fn idb(&mut self, name: &str, snaplen: u32, tsresol: Option<u8>) {
        let mut b = Vec::new();
        b.extend_from_slice(&self.w16(1));
        b.extend_from_slice(&[0, 0]);
        b.extend_from_slice(&self.w32(snaplen));
        self.opt(&mut b, 2, name.as_bytes());
        if let Some(r) = tsresol {
            self.opt(&mut b, 9, &[r]);
        }
        b.extend_from_slice(&[0; 4]);
        self.block(1, &b);
    }
    fn epb(&mut self, iface: u32, ts: u64, data: &[u8], flags: Option<u32>, comment: &str) {
        let mut b = Vec::new();
        b.extend_from_slice(&self.w32(iface));
        b.extend_from_slice(&self.w32((ts >> 32) as u32));
        b.extend_from_slice(&self.w32(ts as u32));
        b.extend_from_slice(&self.w32(data.len() as u32));
        b.extend_from_slice(&self.w32(data.len() as u32));
        b.extend_from_slice(data);
        while b.len() % 4 != 0 {
            b.push(0);
        }
        if !comment.is_empty() {
            self.opt(&mut b, 1, comment.as_bytes());
        }
        if let Some(f) = flags {
            let v = self.w32(f);
            self.opt(&mut b, 2, &v);
        }
        self.block(6, &b);
    }
    fn spb(&mut self, orig: u32, data: &[u8]) {
        let mut b = Vec::new();
        b.extend_from_slice(&self.w32(orig));
        b.extend_from_slice(data);
        while b.len() % 4 != 0 {
            b.push(0);
        }
        self.block(3, &b);
    }
    fn pb(&mut self, iface: u16, data: &[u8], flags: u32) {
        let mut b = Vec::new();
        b.extend_from_slice(&self.w16(iface));
        b.extend_from_slice(&self.w16(0));
        b.extend_from_slice(&self.w32(0));
        b.extend_from_slice(&self.w32(1_000));
        b.extend_from_slice(&self.w32(data.len() as u32));
        b.extend_from_slice(&self.w32(data.len() as u32));
        b.extend_from_slice(data);
        while b.len() % 4 != 0 {
            b.push(0);
        }
        let v = self.w32(flags);
        self.opt(&mut b, 2, &v);
        self.block(2, &b);
    }
}

#[test]
fn pcapng_sections_in_both_byte_orders_with_every_packet_block() {
    let mut f = Vec::new();
    for big in [true, false] {
        let mut ng = Ng {
            big,
            out: Vec::new(),
        };
        ng.shb();
        ng.idb("eth0", 6, None); // µs, snap length 6
        ng.idb("c2", 0, Some(0x80 | 10)); // 2^-10 s
        ng.epb(1, 1024, &[7; 5], Some(2), "hello");
        ng.epb(0, 3, &[1; 4], Some(1), "");
        ng.spb(9, &[5; 9]); // cut to the snap length of interface 0: 6 bytes
        ng.pb(1, &[8; 3], 1);
        ng.block(0x0bad, &[0; 8]); // unknown block: skipped
        f.extend_from_slice(&ng.out);
    }
    let evs = events(&f).unwrap();
    let ps: Vec<_> = evs
        .iter()
        .filter_map(|e| match e {
            Event::Packet(p) => Some(p.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(ps.len(), 8);
    assert_eq!(evs.iter().filter(|e| **e == Event::Section).count(), 2);
    assert_eq!(evs.iter().filter(|e| **e == Event::Other).count(), 2);
    for half in ps.chunks(4) {
        assert_eq!(half[0].interface, 1);
        assert_eq!(half[0].ts_ns, 1_000_000_000, "1024 units of 2^-10 s");
        assert_eq!(half[0].direction, Some(Direction::Outbound));
        assert_eq!(half[0].comment.as_deref(), Some("hello"));
        assert_eq!(half[1].ts_ns, 3_000);
        assert_eq!(half[1].direction, Some(Direction::Inbound));
        assert_eq!(half[2].data, &[5; 6]);
        assert_eq!(half[2].orig_len, 9);
        assert_eq!(half[3].interface, 1);
        assert_eq!(half[3].direction, Some(Direction::Inbound));
        assert_eq!(half[3].data, &[8; 3]);
    }
    // A packet for an undeclared interface, and a block whose two lengths differ.
    let mut ng = Ng {
        big: false,
        out: Vec::new(),
    };
    ng.shb();
    ng.epb(0, 0, &[1], None, "");
    assert!(matches!(
        events(&ng.out),
        Err(ReadError::UnknownInterface { interface: 0, .. })
    ));
    let mut ng = Ng {
        big: false,
        out: Vec::new(),
    };
    ng.shb();
    let n = ng.out.len();
    ng.out[n - 1] ^= 0x10;
    assert!(matches!(events(&ng.out), Err(ReadError::Malformed { .. })));
}

#[test]
fn huge_blocks_are_refused_before_buffering() {
    let mut ng = Ng {
        big: false,
        out: Vec::new(),
    };
    ng.shb();
    ng.out.extend_from_slice(&6u32.to_le_bytes());
    ng.out.extend_from_slice(&0xffff_fff0u32.to_le_bytes());
    let mut dec = Decoder::new();
    let (n, _) = dec.decode(&ng.out).unwrap().unwrap();
    assert!(matches!(
        dec.decode(&ng.out[n..]),
        Err(ReadError::TooLarge { .. })
    ));
}

#[test]
fn timestamp_resolutions() {
    assert_eq!(TsResolution::Decimal(6).to_nanos(5), 5_000);
    assert_eq!(TsResolution::Decimal(9).to_nanos(5), 5);
    assert_eq!(TsResolution::Decimal(12).to_nanos(5_000), 5);
    assert_eq!(TsResolution::Decimal(255).to_nanos(u64::MAX), 0);
    assert_eq!(TsResolution::Decimal(0).to_nanos(u64::MAX), u64::MAX);
    assert_eq!(TsResolution::Binary(1).to_nanos(1), 500_000_000);
    assert_eq!(TsResolution::Binary(127).to_nanos(u64::MAX), 0);
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = events(&bytes);
        let mut dec = Decoder::new();
        let _ = dec.decode(&bytes);
    }

    #[test]
    fn damaged_captures_never_panic(flip in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8)) {
        let mut f = written();
        for (at, x) in flip {
            let n = f.len();
            f[at % n] ^= x;
        }
        let _ = events(&f);
    }
}

// ---------------------------------------------------------------------------------------
// The tap.

fn decision() -> Decision {
    Decision {
        fate: Fate::Forward,
        kernel: "ipvlan_rcv_frame",
        ports: 1,
        wire: 0,
        host: 0,
        first_port: Some(PortId(1)),
    }
}

fn collect(r: &mut CaptureReader) -> Vec<(u32, Direction, Vec<u8>, Decision)> {
    let b = r.try_take();
    b.records()
        .map(|x| (x.interface, x.direction, x.data.to_vec(), x.decision))
        .collect()
}

#[test]
fn idle_tap_watches_nothing() {
    let mut tap = CaptureTap::new();
    assert!(tap.is_idle());
    assert!(!tap.watches(Point::Port(PortId(0))));
    tap.record(
        Point::Port(PortId(0)),
        Direction::Inbound,
        &[0; 60],
        decision(),
    );
    tap.end_batch();
}

#[test]
fn filters_pick_ports_wires_by_vid_and_drops() {
    let mut f = CaptureFilter::new(
        vec![PortId(3), PortId(1)],
        vec![WireFilter {
            parent: ParentId(0),
            vid: Some(20),
        }],
    );
    f.snaplen = 16;
    let (s, mut r) = open(f);
    let mut tap = CaptureTap::new();
    tap.attach(s);
    assert!(!tap.is_idle());
    assert!(tap.watches(Point::Port(PortId(1))));
    assert!(!tap.watches(Point::Port(PortId(2))));
    assert!(tap.watches(Point::Wire(ParentId(0))));
    assert!(!tap.watches(Point::Wire(ParentId(1))));
    let frame = build::udp4(
        MacAddr([2, 0, 0, 0, 0, 1]),
        PARENT_MAC,
        port_ip(0),
        port_ip(1),
        (1, 2),
        b"x",
    );
    let t20 = build::tagged(&frame, 20);
    let t30 = build::tagged(&frame, 30);
    let d = decision();
    tap.record(Point::Port(PortId(1)), Direction::Inbound, &frame, d);
    tap.record(Point::Port(PortId(2)), Direction::Inbound, &frame, d);
    tap.record(Point::Port(PortId(3)), Direction::Outbound, &frame, d);
    tap.record(Point::Wire(ParentId(0)), Direction::Inbound, &t20, d);
    tap.record(Point::Wire(ParentId(0)), Direction::Inbound, &t30, d);
    tap.record(Point::Wire(ParentId(0)), Direction::Inbound, &frame, d);
    // Drops are left out unless asked for.
    tap.record(
        Point::Port(PortId(1)),
        Direction::Inbound,
        &frame,
        Decision::drop(DropReason::PrivateFlag),
    );
    tap.end_batch();
    let got = collect(&mut r);
    let ifaces: Vec<(u32, Direction)> = got.iter().map(|g| (g.0, g.1)).collect();
    assert_eq!(
        ifaces,
        [
            (1, Direction::Inbound),
            (0, Direction::Outbound),
            (2, Direction::Inbound)
        ]
    );
    assert_eq!(got[0].2, frame[..16], "cut at the snap length");
    assert_eq!(got[2].2, t20[..16]);
    assert!(r.try_take().is_empty());
    let c = r.counts();
    assert_eq!(c.captured, [1, 1, 1]);
    assert_eq!(c.lost, [0, 0, 0]);

    let mut f = CaptureFilter::new(vec![PortId(1)], vec![]);
    f.drops = true;
    let (s, mut r) = open(f);
    let mut tap = CaptureTap::new();
    tap.attach(s);
    let dr = Decision::drop(DropReason::PrivateFlag);
    tap.record(Point::Port(PortId(1)), Direction::Inbound, &frame, dr);
    tap.record(
        Point::Port(PortId(1)),
        Direction::Outbound,
        &frame,
        d.not_delivered("tap_full"),
    );
    let got = collect(&mut r);
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].3, dr);
    assert_eq!(got[1].3.fate, Fate::NotDelivered("tap_full"));
}

#[test]
fn a_full_buffer_loses_records_and_counts_them() {
    let mut f = CaptureFilter::new(vec![PortId(0), PortId(1)], vec![]);
    f.max_records = 4;
    f.buffer_bytes = 1000;
    let (s, mut r) = open(f);
    let mut tap = CaptureTap::new();
    tap.attach(s);
    for i in 0..10u8 {
        tap.record(
            Point::Port(PortId(u32::from(i % 2))),
            Direction::Inbound,
            &[i; 100],
            decision(),
        );
    }
    // Four fit; the six others are lost, three per port.
    let c = r.counts();
    assert_eq!(c.captured, [2, 2]);
    assert_eq!(c.lost, [3, 3]);
    let got = collect(&mut r);
    assert_eq!(got.iter().map(|g| g.2[0]).collect::<Vec<_>>(), [0, 1, 2, 3]);
    // Bytes bound too: 1000 bytes hold nine 100-byte frames... but only four records.
    for i in 0..3u8 {
        tap.record(
            Point::Port(PortId(0)),
            Direction::Inbound,
            &[i; 400],
            decision(),
        );
    }
    let c = r.counts();
    assert_eq!(c.captured, [4, 2]);
    assert_eq!(
        c.lost,
        [4, 3],
        "the third 400-byte frame does not fit in 1000 bytes"
    );
    assert_eq!(collect(&mut r).len(), 2);
}

#[test]
fn reader_and_session_ends() {
    // The reader goes: the tap forgets the session at its next batch end.
    let (s, r) = open(CaptureFilter::new(vec![PortId(0)], vec![]));
    let mut tap = CaptureTap::new();
    tap.attach(s.clone());
    tap.attach(s);
    assert_eq!(tap.sessions(), 2);
    drop(r);
    tap.record(
        Point::Port(PortId(0)),
        Direction::Inbound,
        &[0; 20],
        decision(),
    );
    tap.end_batch();
    assert_eq!(tap.sessions(), 0);
    assert!(tap.is_idle());

    // The dataplane lets go: the reader hears it after the records already buffered.
    let (s, mut r) = open(CaptureFilter::new(vec![PortId(0)], vec![]));
    let mut tap = CaptureTap::new();
    tap.attach(s);
    tap.record(
        Point::Port(PortId(0)),
        Direction::Inbound,
        &[0; 20],
        decision(),
    );
    drop(tap);
    let b = r.wait();
    assert_eq!((b.len(), b.end), (1, None));
    let b = r.wait();
    assert_eq!((b.len(), b.end), (0, Some(End::Detached)));
    assert_eq!(r.wait().end, Some(End::Detached));

    // The stopper wakes a sleeping reader.
    let (s, mut r) = open(CaptureFilter::new(vec![PortId(0)], vec![]));
    let stop = r.stopper();
    let t = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(50));
        stop.stop();
        s
    });
    assert_eq!(r.wait().end, Some(End::Stopped));
    drop(t.join().unwrap());
}

#[test]
fn concurrent_producer_and_consumer_lose_only_what_they_count() {
    const N: usize = 200_000;
    let mut f = CaptureFilter::new(vec![PortId(0)], vec![]);
    f.max_records = 256;
    f.buffer_bytes = 256 * 64;
    let (s, mut r) = open(f);
    let producer = std::thread::spawn(move || {
        let mut tap = CaptureTap::new();
        tap.attach(s);
        for i in 0..N {
            let bytes = (i as u64).to_le_bytes();
            tap.record(
                Point::Port(PortId(0)),
                Direction::Inbound,
                &bytes,
                decision(),
            );
            if i % 32 == 31 {
                tap.end_batch();
            }
        }
        tap.end_batch();
    });
    let mut seen = 0u64;
    let mut last: Option<u64> = None;
    loop {
        let b = r.wait();
        for rec in b.records() {
            let v = u64::from_le_bytes(rec.data.try_into().unwrap());
            assert!(last.is_none_or(|l| v > l), "records stay in order");
            last = Some(v);
            seen += 1;
        }
        if b.end.is_some() {
            assert_eq!(b.end, Some(End::Detached));
            break;
        }
    }
    producer.join().unwrap();
    let c = r.counts();
    assert_eq!(c.captured[0], seen);
    assert_eq!(c.captured[0] + c.lost[0], N as u64);
    assert!(seen > 0);
}

#[test]
fn feed_records_inbound_and_outbound_copies_with_their_kernel_functions() {
    let mut s = flat(Driver::Ipvlan, IpvlanMode::L2, Some(20), 3).unwrap();
    let (p0, p1) = (s.ports[0], s.ports[1]);
    let mut f = CaptureFilter::new(
        vec![p0, p1],
        vec![WireFilter {
            parent: s.parent,
            vid: Some(20),
        }],
    );
    f.drops = true;
    let (sess, mut r) = open(f);
    let mut tap = CaptureTap::new();
    tap.attach(sess);
    // p0 → p1 (ipvlan L2, same MAC): delivered locally.
    let to_p1 = build::udp4(
        PARENT_MAC,
        PARENT_MAC,
        port_ip(0),
        port_ip(1),
        (1, 2),
        b"hi",
    );
    feed(
        &s.engine,
        &mut NoRoutes,
        &mut tap,
        &to_p1,
        Ingress::Port(p0),
    )
    .unwrap();
    // From the wire, tagged 20, to p1: recorded on the wire (tagged) and on p1 (popped).
    let from_wire = build::tagged(
        &build::udp4(
            PARENT_MAC,
            MacAddr([0, 0, 0x5e, 0, 0x53, 1]),
            Ipv4Addr::new(192, 0, 2, 1),
            port_ip(1),
            (1, 2),
            b"hi",
        ),
        20,
    );
    feed(
        &s.engine,
        &mut NoRoutes,
        &mut tap,
        &from_wire,
        Ingress::Wire(s.parent),
    )
    .unwrap();
    // p0 → the wire (another MAC): the copy on the wire is tagged.
    let out = build::udp4(
        MacAddr([0, 0, 0x5e, 0, 0x53, 2]),
        PARENT_MAC,
        port_ip(0),
        Ipv4Addr::new(198, 51, 100, 9),
        (1, 2),
        b"hi",
    );
    feed(&s.engine, &mut NoRoutes, &mut tap, &out, Ingress::Port(p0)).unwrap();
    // Private flag: p0 → p1 dropped.
    s.engine
        .ipvlan_changelink(p0, IpvlanAttrs::new(IpvlanMode::L2, IpvlanFlag::Private))
        .unwrap();
    let r2 = feed(
        &s.engine,
        &mut NoRoutes,
        &mut tap,
        &to_p1,
        Ingress::Port(p0),
    );
    assert_eq!(r2, Err(DropReason::PrivateFlag));

    let got = collect(&mut r);
    let view: Vec<(u32, Direction, Fate, &str)> = got
        .iter()
        .map(|g| (g.0, g.1, g.3.fate, g.3.kernel))
        .collect();
    assert_eq!(
        view,
        [
            (
                0,
                Direction::Inbound,
                Fate::Forward,
                "ipvlan_rcv_frame (local)"
            ),
            (
                1,
                Direction::Outbound,
                Fate::Forward,
                "ipvlan_rcv_frame (local)"
            ),
            (2, Direction::Inbound, Fate::Forward, view[2].3),
            (1, Direction::Outbound, Fate::Forward, view[3].3),
            (
                0,
                Direction::Inbound,
                Fate::Forward,
                "dev_queue_xmit(phy_dev)"
            ),
            (
                2,
                Direction::Outbound,
                Fate::Forward,
                "dev_queue_xmit(phy_dev)"
            ),
            (
                0,
                Direction::Inbound,
                Fate::Drop(DropReason::PrivateFlag),
                DropReason::PrivateFlag.kernel_rule()
            ),
        ]
    );
    assert_eq!(got[2].2, from_wire, "the wire copy keeps its tag");
    assert_eq!(
        got[3].2.len(),
        from_wire.len() - 4,
        "the port copy is untagged"
    );
    assert_eq!(
        got[5].2,
        build::tagged(&out, 20),
        "tag pushed towards the wire"
    );
    let name = |p: PortId| Some(format!("c{}", p.0));
    assert_eq!(
        got[0].3.comment(&name),
        format!(
            "verdict: forward to c{}; kernel: ipvlan_rcv_frame (local)",
            p1.0
        )
    );
    assert_eq!(
        got[6].3.comment(&name),
        format!(
            "verdict: drop (private_flag); kernel: {}",
            DropReason::PrivateFlag.kernel_rule()
        )
    );
    assert_eq!(
        got[4].3.comment(&name),
        "verdict: forward to the wire; kernel: dev_queue_xmit(phy_dev)"
    );
}

#[test]
fn flood_comments_count_their_outputs() {
    let d = Decision {
        fate: Fate::Forward,
        kernel: "ipvlan_process_multicast",
        ports: 3,
        wire: 1,
        host: 1,
        first_port: Some(PortId(4)),
    };
    assert_eq!(
        d.comment(&|_| None),
        "verdict: forward to port#4, 2 more ports, the wire, the host's stack; kernel: \
         ipvlan_process_multicast"
    );
    assert_eq!(
        d.not_delivered("tap_full").comment(&|_| Some("c1".into())),
        "verdict: forward, not delivered (tap_full); kernel: ipvlan_process_multicast"
    );
}
