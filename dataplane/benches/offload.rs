//! Offload benchmarks: checksum of 1500 B and 64 KiB, segmenting a 64 KiB TSO frame into
//! 1500-byte packets, and coalescing 44 wire segments of 1448 B into one super-frame.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use uvlan_dataplane::offload::{
    fix_ipv4_header_csum, internet_checksum, pseudo_header_sum_v4, Gro, Segmenter, VnetHdr,
};

const SRC: [u8; 4] = [192, 0, 2, 2];
const DST: [u8; 4] = [192, 0, 2, 1];

/// A TSO super-frame as a TAP hands it over: Ethernet, IPv4, TCP with timestamps,
/// `payload` bytes, pseudo-header sum in the checksum field.
fn tso_frame(payload: usize) -> (VnetHdr, Vec<u8>) {
    let mut f = vec![0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2, 0x08, 0x00];
    let total = 20 + 32 + payload;
    f.extend_from_slice(&[0x45, 0, 0, 0, 0x12, 0x34, 0x40, 0x00, 64, 6, 0, 0]);
    f[16..18].copy_from_slice(&(total as u16).to_be_bytes());
    f.extend_from_slice(&SRC);
    f.extend_from_slice(&DST);
    fix_ipv4_header_csum(&mut f, 14).expect("valid IPv4 header");
    f.extend_from_slice(&[
        0x9c, 0x40, 0x14, 0x51, 0, 0, 0, 1, 0, 0, 0, 1, 0x80, 0x10, 2, 0,
    ]);
    f.extend_from_slice(&[0, 0, 0, 0, 1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2]);
    f.extend((0..payload).map(|i| (i * 7) as u8));
    let pseudo = pseudo_header_sum_v4(SRC, DST, 6, (32 + payload) as u16);
    f[34 + 16..34 + 18].copy_from_slice(&pseudo.to_be_bytes());
    let hdr = VnetHdr {
        flags: VnetHdr::F_NEEDS_CSUM,
        gso_type: VnetHdr::GSO_TCPV4,
        hdr_len: 66,
        gso_size: 1448,
        csum_start: 34,
        csum_offset: 16,
        num_buffers: 0,
    };
    (hdr, f)
}

fn checksum(c: &mut Criterion) {
    let mut g = c.benchmark_group("checksum");
    for len in [1500usize, 65536] {
        let data: Vec<u8> = (0..len).map(|i| (i * 13) as u8).collect();
        g.throughput(Throughput::Bytes(len as u64));
        g.bench_function(format!("{len}B"), |b| {
            b.iter(|| internet_checksum(black_box(&data)))
        });
    }
    g.finish();
}

fn segment(c: &mut Criterion) {
    let (hdr, frame) = tso_frame(44 * 1448);
    let mut seg = Segmenter::new();
    let mut g = c.benchmark_group("segment");
    g.throughput(Throughput::Bytes(frame.len() as u64));
    g.bench_function("tso_64KiB_to_1500", |b| {
        b.iter(|| {
            let mut n = 0usize;
            seg.segment(
                black_box(&hdr),
                black_box(&frame),
                1500,
                &mut |f: &[u8]| n += f.len(),
            )
            .expect("segments");
            n
        })
    });
    g.finish();
}

fn gro(c: &mut Criterion) {
    let (hdr, frame) = tso_frame(44 * 1448);
    let mut wire: Vec<Vec<u8>> = Vec::new();
    Segmenter::new()
        .segment(&hdr, &frame, 1500, &mut |f: &[u8]| wire.push(f.to_vec()))
        .expect("segments");
    assert_eq!(wire.len(), 44);
    let mut gro = Gro::new();
    let mut g = c.benchmark_group("gro");
    g.throughput(Throughput::Bytes(wire.iter().map(|f| f.len() as u64).sum()));
    g.bench_function("44x1448", |b| {
        b.iter(|| {
            let mut out = 0usize;
            gro.push_batch(
                wire.iter().map(|f| black_box(f.as_slice())),
                &mut |h: &VnetHdr, f: &[u8]| out += f.len() + usize::from(h.gso_size),
            );
            out
        })
    });
    g.finish();
    assert_eq!(gro.stats().frames_out, gro.stats().coalesced);
}

criterion_group!(benches, checksum, segment, gro);
criterion_main!(benches);
