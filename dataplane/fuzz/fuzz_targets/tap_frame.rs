//! A buffer as read from a TAP opened with `IFF_VNET_HDR`: its 12-byte virtio_net_hdr and
//! the frame, through what the run loop does with it. The header is parsed; the engine
//! decides from a port; each output gets the run loop's VLAN edit (or routed re-framing) with
//! the header's offsets moved; what goes to a wire takes both offload paths: the header for a
//! kernel that segments (`kernel_gso_header`) and software segmentation and checksums
//! (`Segmenter`); the segments then reach another TAP through its GRO. The first input byte
//! picks the port, the MTU and the route stage's answer.
//!
//! Checked besides "no panic": segmentation gives nothing on error and only frames within the
//! MTU; the kernel's header never lets a segment exceed the MTU; GRO gives every frame out
//! exactly once; TCP segments made from a TSO frame all pass GRO's checksum checks; every
//! GRO super-frame can be segmented again.
//! Run: `cd dataplane/fuzz && cargo +nightly fuzz run tap_frame`.
#![no_main]

#[path = "common.rs"]
mod common;

use common::{edit, offload_l2_len, reframe_routed, routes, shift_hdr, topology};
use libfuzzer_sys::fuzz_target;
use uvlan_dataplane::fwd::{Ingress, Outputs, Target};
use uvlan_dataplane::offload::{kernel_gso_header, Gro, GsoKind, Segmenter, VnetHdr};
use uvlan_dataplane::wire::MacAddr;

/// L3 MTUs of the parents a frame may leave by.
const MTUS: [usize; 8] = [0, 68, 576, 1280, 1500, 1504, 9000, 65535];

/// A GRO output as a TAP gets it: a super-frame must be one our own segmenter takes back.
fn check_gro_output(h: &VnetHdr, f: &[u8], again: &mut Segmenter) {
    if h.gso_type != VnetHdr::GSO_NONE {
        let r = again.segment(h, f, 65535, &mut |_| {});
        assert!(
            r.is_ok(),
            "a GRO super-frame does not segment again: {r:?} {h:?}"
        );
    }
}

/// A frame (after `hdr`) leaving by a parent of L3 MTU `mtu`.
fn transmit(hdr: &VnetHdr, frame: &[u8], mtu: usize, seg: &mut Segmenter) {
    if let Ok(kh) = kernel_gso_header(hdr, frame, mtu) {
        let l2 = offload_l2_len(frame).expect("a frame the kernel may segment has an L2 header");
        let headers = usize::from(kh.hdr_len) - l2;
        assert!(
            headers + usize::from(kh.gso_size) <= mtu,
            "kernel GSO segments of {headers} + {} bytes exceed MTU {mtu}",
            kh.gso_size
        );
    }
    let mut segments: Vec<Vec<u8>> = Vec::new();
    let r = seg.segment(hdr, frame, mtu, &mut |s| segments.push(s.to_vec()));
    match r {
        Ok(n) => assert_eq!(n, segments.len()),
        Err(_) => assert!(segments.is_empty(), "segment gave frames and an error"),
    }
    for s in &segments {
        let l2 = offload_l2_len(s).expect("a segment has an L2 header");
        assert!(
            s.len() - l2 <= mtu,
            "{}-byte segment over MTU {mtu}",
            s.len() - l2
        );
    }
    let mut gro = Gro::new();
    let mut again = Segmenter::new();
    for s in &segments {
        gro.push(s, &mut |h, f| check_gro_output(h, f, &mut again));
    }
    gro.flush(&mut |h, f| check_gro_output(h, f, &mut again));
    let st = gro.stats();
    assert_eq!(st.frames_in, segments.len() as u64);
    assert_eq!(
        st.frames_in,
        st.frames_out - st.coalesced + st.coalesced_segments,
        "GRO lost or duplicated frames: {st:?}"
    );
    if r.is_ok() && matches!(hdr.gso(), Ok(GsoKind::TcpV4 | GsoKind::TcpV6)) {
        assert_eq!(st.bad_csum, 0, "a TSO segment has a bad checksum");
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&knobs, buf)) = data.split_first() else {
        return;
    };
    let Ok((hdr, frame)) = VnetHdr::parse(buf) else {
        return;
    };
    let mtu = MTUS[usize::from(knobs & 7)];
    let mut seg = Segmenter::with_frag_id_seed(u32::from(knobs));
    // The frame as the sender gave it, to a wire.
    transmit(&hdr, frame, mtu, &mut seg);
    // Through the engine from one port, then each output as the run loop sends it.
    let t = topology();
    let port = t.ports[usize::from(knobs >> 3) % t.ports.len()];
    let mut out = Outputs::default();
    let mut scratch = Vec::new();
    if t.engine
        .decide_gso(
            frame,
            hdr.gso_type != VnetHdr::GSO_NONE,
            Ingress::Port(port),
            &mut routes(knobs >> 5),
            &mut out,
        )
        .is_err()
    {
        return;
    }
    for o in out.as_slice() {
        match o.target {
            Target::Port(_) | Target::HostStack(_) => {
                let _ = edit(o.vlan, &hdr, frame, &mut scratch);
            }
            Target::Wire(_) => {
                if let Some(h) = edit(o.vlan, &hdr, frame, &mut scratch) {
                    transmit(&h, &scratch, mtu, &mut seg);
                }
            }
            Target::Routed { next_hop, .. } => {
                let vid = match o.vlan {
                    uvlan_dataplane::fwd::VlanOp::Push(v) => Some(v),
                    _ => None,
                };
                let src = MacAddr([2, 0, 0, 0, 0, 0xaa]);
                if let Some(delta) = reframe_routed(&mut scratch, frame, next_hop, src, vid) {
                    if let Some(h) = shift_hdr(&hdr, delta) {
                        transmit(&h, &scratch, mtu, &mut seg);
                    }
                }
            }
        }
    }
});
