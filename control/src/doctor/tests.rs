//! The report from made-up findings: words, statuses, the plan and the verdict.

use std::io;
use std::path::PathBuf;

use uvlan_dataplane::port::probe::{IoUringOps, IoUringProbe, TapProbe};
use uvlan_dataplane::port::tap::Offloads;
use uvlan_dataplane::port::xsk::{BindMode, XdpMode};

use super::*;

fn host() -> Host {
    Host {
        nofile: Some((1024, 524288)),
        dockerd: None,
        docker_api: (PathBuf::from("/var/run/docker.sock"), false),
        plugin_dir: (PathBuf::from("/run/docker/plugins"), false),
        plugin_served: false,
        cni_bin: vec![],
        cni_conf: vec![],
        daemon: (PathBuf::from("/run/uvlan/uvlan.sock"), false),
    }
}

fn ring_ok() -> IoUringProbe {
    IoUringProbe {
        ring: Ok(IoUringOps {
            read_multishot: true,
            poll_add: true,
        }),
        disabled_sysctl: Some(0),
        seccomp_filter: false,
    }
}

fn all_good() -> Scratch {
    Scratch {
        tap: Ok(TapProbe {
            offloads: Offloads::DEFAULT,
            prefilter: Ok(()),
        }),
        veth: Ok(()),
        bpf: Ok(()),
        xdp_native: Ok(()),
        xdp_generic: Ok(()),
        tcx: Ok(()),
        fast_path: Ok(()),
        af_xdp: Ok((XdpMode::Native, BindMode::Copy)),
        af_packet: Ok(()),
        multicast: Ok(()),
        kernel: vec![
            KernelDriver {
                module: "ipvlan",
                error: Some("not available (the kernel has no such module)".into()),
            },
            KernelDriver {
                module: "dummy",
                error: None,
            },
        ],
    }
}

fn findings(scratch: Option<Result<Scratch, String>>, root: bool) -> Findings {
    Findings {
        kernel: "6.1.0-test".into(),
        root,
        scratch,
        io_uring: ring_ok(),
        host: host(),
    }
}

fn status(r: &Report, id: &str) -> Status {
    r.checks.iter().find(|c| c.id == id).unwrap().status
}

#[test]
fn everything_there_works_and_says_what_uvlan_does() {
    let r = report(&findings(Some(Ok(all_good())), true));
    assert!(r.works, "{r:?}");
    assert_eq!(r.exit_code(), 0);
    for id in [
        "netns",
        "tun",
        "offloads",
        "tap_filter",
        "mc_filter",
        "bpf",
        "af_xdp",
        "tcx",
        "af_packet",
        "io_uring",
    ] {
        assert_eq!(status(&r, id), Status::Ok, "{id}");
    }
    let text = r.text();
    assert!(
        text.starts_with("uvlan doctor: Linux 6.1.0-test, running as root\n"),
        "{text}"
    );
    assert!(text.contains("csum, tso4, tso6, uso4, uso6"), "{text}");
    assert!(text.contains("parents: AF_XDP"), "{text}");
    assert!(text.contains("kernel drivers"), "{text}");
    assert!(text.contains("ipvlan no, dummy yes"), "{text}");
    // Only dummy: no kernel driver could replace uvlan.
    assert!(!text.contains("need no uvlan"), "{text}");
    assert!(text.contains("about 240 endpoints"), "{text}");
    assert!(text.ends_with("uvlan works here.\n"), "{text}");
    // One screen.
    assert!(text.lines().count() <= 30, "{text}");
    let json = serde_json::to_value(&r).unwrap();
    assert_eq!(json["works"], true);
    assert_eq!(json["checks"][0]["id"], "netns");
    assert_eq!(json["checks"][0]["status"], "ok");
    assert_eq!(json["kernel_drivers"][1]["module"], "dummy");
}

#[test]
fn no_af_xdp_falls_back_and_no_parent_at_all_limits_to_internal_networks() {
    let mut s = all_good();
    s.af_xdp = Err("cannot attach XDP".into());
    let r = report(&findings(Some(Ok(s)), true));
    assert!(r.works);
    assert_eq!(status(&r, "af_xdp"), Status::Missing);
    assert!(
        r.plan.iter().any(|p| p.starts_with("parents: AF_PACKET")),
        "{:?}",
        r.plan
    );

    let mut s = all_good();
    s.af_xdp = Err("no".into());
    s.af_packet = Err("tcx: EINVAL".into());
    s.tcx = Err("tcx: EINVAL".into());
    let r = report(&findings(Some(Ok(s)), true));
    assert!(r.works, "no parent still leaves isolated networks");
    assert!(
        r.plan
            .iter()
            .any(|p| p.contains("only networks without a parent")),
        "{:?}",
        r.plan
    );
}

#[test]
fn no_tap_no_namespace_or_not_root_cannot_work() {
    let mut s = all_good();
    s.tap = Err("cannot open /dev/net/tun: No such file or directory".into());
    let r = report(&findings(Some(Ok(s)), true));
    assert!(!r.works);
    assert_eq!(r.exit_code(), 1);
    assert_eq!(status(&r, "tun"), Status::Missing);
    assert!(r
        .text()
        .ends_with("uvlan cannot work here: no TAP can be opened: cannot open /dev/net/tun: No such file or directory\n"));

    let r = report(&findings(
        Some(Err("Operation not permitted (os error 1)".into())),
        true,
    ));
    assert!(!r.works);
    assert!(r
        .reason
        .as_deref()
        .unwrap()
        .starts_with("no network namespace"));
    assert_eq!(status(&r, "bpf"), Status::Skipped);

    let r = report(&findings(None, false));
    assert!(!r.works);
    assert!(r
        .reason
        .as_deref()
        .unwrap()
        .contains("as root (or with sudo)"));
    assert_eq!(status(&r, "tun"), Status::Skipped);
    // What needs no root is still reported.
    assert_eq!(status(&r, "io_uring"), Status::Ok);
    assert_eq!(status(&r, "nofile"), Status::Limited);
}

#[test]
fn io_uring_refusals_and_partial_offloads_are_named() {
    let mut s = all_good();
    s.tap = Ok(TapProbe {
        offloads: Offloads::CSUM,
        prefilter: Err("TUNSETFILTEREBPF: Invalid argument".into()),
    });
    s.multicast = Err("the kernel announces no multicast group changes".into());
    let mut f = findings(Some(Ok(s)), true);
    f.io_uring = IoUringProbe {
        ring: Err(io::Error::from_raw_os_error(libc::EPERM)),
        disabled_sysctl: Some(2),
        seccomp_filter: false,
    };
    let r = report(&f);
    assert!(r.works);
    assert_eq!(status(&r, "offloads"), Status::Limited);
    assert_eq!(status(&r, "tap_filter"), Status::Limited);
    assert_eq!(status(&r, "mc_filter"), Status::Limited);
    assert!(
        r.text().contains("endpoints get every multicast group"),
        "{}",
        r.text()
    );
    assert_eq!(status(&r, "io_uring"), Status::Missing);
    let text = r.text();
    assert!(
        text.contains("disabled by kernel.io_uring_disabled = 2"),
        "{text}"
    );
    assert!(text.contains("event loop: poll(2)"), "{text}");
    assert!(text.contains("csum (uvlan asks for"), "{text}");
}

#[test]
fn kernel_drivers_that_make_uvlan_optional_are_named() {
    let mut s = all_good();
    s.kernel = ["ipvlan", "macvlan", "8021q", "dummy"]
        .into_iter()
        .map(|module| KernelDriver {
            module,
            error: (module == "8021q").then(|| "not available".to_string()),
        })
        .collect();
    let r = report(&findings(Some(Ok(s)), true));
    let line = r.plan.iter().find(|p| p.contains("need no uvlan")).unwrap();
    assert!(
        line.starts_with("the kernel's own ipvlan and macvlan driver works here"),
        "{line}"
    );
    assert!(line.ends_with("uvlan stands in for 8021q"), "{line}");
    let r = report(&findings(None, false));
    assert_eq!(status(&r, "kernel_drivers"), Status::Skipped);
}

#[test]
fn endpoints_allowed_by_the_open_file_limit() {
    assert_eq!(Host::endpoints_allowed(1024), 240);
    assert_eq!(Host::endpoints_allowed(10), 0);
    assert_eq!(Host::endpoints_allowed(1 << 20), ((1 << 20) - 64) / 4);
}
