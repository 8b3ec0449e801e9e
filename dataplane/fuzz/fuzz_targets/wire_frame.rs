//! A receive batch from a parent's wire (AF_XDP or AF_PACKET ring): the input is cut into
//! frames (a 2-byte little-endian length before each; the first input byte picks the route
//! stage's answer, and its top bit says the frames come flagged `TP_STATUS_CSUMNOTREADY`,
//! so the AF_PACKET socket's checksum completion runs on them first). Each frame is decided
//! as coming from the wire and as looped back from
//! the host; each output to a port gets the run loop's VLAN edit and goes through that port's
//! GRO, which is flushed at the end of the batch, as the run loop does; the first frame is
//! also traced.
//!
//! Checked besides "no panic": every GRO gives each frame out exactly once, and each
//! super-frame it makes can be segmented again.
//! Run: `cd dataplane/fuzz && cargo +nightly fuzz run wire_frame`.
#![no_main]

#[path = "common.rs"]
mod common;

use common::{edit, routes, topology};
use libfuzzer_sys::fuzz_target;
use uvlan_dataplane::fwd::{Ingress, Outputs, Target};
use uvlan_dataplane::offload::{complete_l4_csum, Gro, Segmenter, VnetHdr};

fn check_gro_output(h: &VnetHdr, f: &[u8], again: &mut Segmenter) {
    assert!(f.len() <= 65535 + 22, "a {}-byte GRO frame", f.len());
    if h.gso_type != VnetHdr::GSO_NONE {
        let r = again.segment(h, f, 65535, &mut |_| {});
        assert!(
            r.is_ok(),
            "a GRO super-frame does not segment again: {r:?} {h:?}"
        );
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&knobs, mut rest)) = data.split_first() else {
        return;
    };
    let t = topology();
    let mut gros: Vec<Gro> = t.ports.iter().map(|_| Gro::new()).collect();
    let mut again = Segmenter::new();
    let mut out = Outputs::default();
    let mut scratch = Vec::new();
    let mut first = None;
    let mut pushed = vec![0u64; t.ports.len()];
    for _ in 0..32 {
        let Some((len, tail)) = rest.split_first_chunk::<2>() else {
            break;
        };
        let n = usize::from(u16::from_le_bytes(*len)).min(tail.len());
        let (frame, tail) = tail.split_at(n);
        rest = tail;
        first.get_or_insert(frame);
        let completed;
        let frame = if knobs & 0x80 != 0 {
            let mut f = frame.to_vec();
            complete_l4_csum(&mut f);
            completed = f;
            completed.as_slice()
        } else {
            frame
        };
        for ing in [Ingress::Wire(t.parent), Ingress::WireLoopback(t.parent)] {
            if t.engine
                .decide(frame, ing, &mut routes(knobs), &mut out)
                .is_err()
            {
                continue;
            }
            for o in out.as_slice() {
                let Target::Port(q) = o.target else {
                    continue;
                };
                if edit(o.vlan, &VnetHdr::default(), frame, &mut scratch).is_none() {
                    continue;
                }
                let i = t
                    .ports
                    .iter()
                    .position(|p| *p == q)
                    .expect("outputs go to ports of the engine");
                pushed[i] += 1;
                gros[i].push(&scratch, &mut |h, f| check_gro_output(h, f, &mut again));
            }
        }
    }
    for (g, n) in gros.iter_mut().zip(pushed) {
        g.flush(&mut |h, f| check_gro_output(h, f, &mut again));
        let st = g.stats();
        assert_eq!(st.frames_in, n);
        assert_eq!(
            st.frames_in,
            st.frames_out - st.coalesced + st.coalesced_segments,
            "GRO lost or duplicated frames: {st:?}"
        );
    }
    if let Some(f) = first {
        let _ = uvlan_dataplane::trace::trace(
            &t.engine,
            f,
            Ingress::Wire(t.parent),
            &mut routes(knobs),
        );
    }
});
