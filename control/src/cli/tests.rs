use super::*;
use clap::CommandFactory;

fn parse(args: &[&str]) -> Cli {
    Cli::try_parse_from(std::iter::once("uvlan").chain(args.iter().copied())).unwrap()
}

fn create_args(args: &[&str]) -> CreateArgs {
    let mut v = vec!["network", "create"];
    v.extend_from_slice(args);
    match parse(&v).cmd {
        Cmd::Network(NetworkCmd::Create(a)) => a,
        other => panic!("{other:?}"),
    }
}

/// `--ipv4` is Docker's bool flag: not given by default (the daemon then takes true, or the
/// `com.docker.network.enable_ipv4` option), `--ipv4=false` (or any Go boolean after `=`)
/// turns it off, `--ipv4` alone is on, and a value after a blank is not the flag's (it is
/// the network's name, as for Docker's CLI). `--ipv6` reads the same way.
#[test]
fn ipv4_flag_reads_like_dockers() {
    let a = create_args(&["-d", "macvlan", "n"]);
    assert_eq!((a.ipv4, a.ipv6), (None, false));
    let r = create_request(&a).unwrap();
    assert_eq!((r.ipv4, r.ipv6), (None, false));
    for off in ["false", "0", "f", "F", "FALSE", "False"] {
        let flag = format!("--ipv4={off}");
        let a = create_args(&["-d", "macvlan", &flag, "--ipv6", "n"]);
        assert_eq!((a.ipv4, a.ipv6), (Some(false), true), "{flag}");
        let r = create_request(&a).unwrap();
        assert_eq!((r.ipv4, r.ipv6), (Some(false), true), "{flag}");
    }
    for on in ["--ipv4", "--ipv4=true", "--ipv4=1", "--ipv4=T"] {
        assert_eq!(
            create_args(&["-d", "macvlan", on, "n"]).ipv4,
            Some(true),
            "{on}"
        );
    }
    assert!(!create_args(&["-d", "macvlan", "--ipv6=false", "n"]).ipv6);
    assert!(create_args(&["-d", "macvlan", "--ipv6=true", "n"]).ipv6);
    // `--ipv4 false`: the flag alone (on) and `false` is the name; with a name too, one
    // positional is left over, which clap refuses.
    let a = create_args(&["-d", "macvlan", "--ipv4", "false"]);
    assert_eq!(a.ipv4, Some(true));
    assert_eq!(a.name, "false");
    let extra = [
        "uvlan", "network", "create", "-d", "macvlan", "--ipv4", "false", "n",
    ];
    assert!(Cli::try_parse_from(extra).is_err());
    let bad = [
        "uvlan",
        "network",
        "create",
        "-d",
        "macvlan",
        "--ipv4=no",
        "n",
    ];
    let e = Cli::try_parse_from(bad).unwrap_err().to_string();
    assert!(e.contains("strconv.ParseBool"), "{e}");
    // The request's JSON carries ipv4 only when it was given (older daemons read it as on).
    let on = serde_json::to_string(&create_request(&create_args(&["-d", "macvlan", "n"])).unwrap())
        .unwrap();
    assert!(!on.contains("ipv4"), "{on}");
    let off = create_request(&create_args(&[
        "-d",
        "macvlan",
        "--ipv4=false",
        "--ipv6",
        "n",
    ]))
    .unwrap();
    let text = serde_json::to_string(&off).unwrap();
    assert!(text.contains(r#""ipv4":false"#), "{text}");
    let back: CreateNetwork = serde_json::from_str(&text).unwrap();
    assert_eq!(back, off);
    let old: CreateNetwork = serde_json::from_str(r#"{"name":"n","driver":"macvlan"}"#).unwrap();
    assert_eq!(old.ipv4, None);
}

#[test]
fn cli_definition_is_consistent() {
    Cli::command().debug_assert();
}

#[test]
fn create_builds_the_grouped_request() {
    let a = create_args(&[
        "-d",
        "ipvlan",
        "--subnet",
        "192.0.2.0/24",
        "--gateway",
        "192.0.2.254",
        "--ip-range",
        "192.0.2.128/25",
        "--aux-address",
        "router=192.0.2.2",
        "--ipv6",
        "--subnet",
        "2001:db8::/64",
        "-o",
        "parent=eth0.20",
        "-o",
        "ipvlan_mode=l3",
        "--internal",
        "n1",
    ]);
    let r = create_request(&a).unwrap();
    assert_eq!(r.name, "n1");
    assert_eq!(r.driver, "ipvlan");
    assert!(r.ipv6 && r.internal);
    assert_eq!(r.options.get("parent").map(String::as_str), Some("eth0.20"));
    assert_eq!(r.ipam.len(), 2);
    assert_eq!(r.ipam[0].gateway.as_deref(), Some("192.0.2.254"));
    assert_eq!(r.ipam[0].ip_range.as_deref(), Some("192.0.2.128/25"));
    assert_eq!(
        r.ipam[0].aux.get("router").map(String::as_str),
        Some("192.0.2.2")
    );
    assert_eq!(r.ipam[1].subnet, "2001:db8::/64");
}

#[test]
fn create_cli_errors_have_dockers_texts() {
    let cases: &[(&[&str], &str)] = &[
        (&["n"], "no network driver given: use -d ipvlan or -d macvlan (uvlan has no bridge driver, so unlike docker it needs -d)"),
        (&["-d", "ipvlan", "--subnet", "192.0.2.0/24", "--gateway", "198.51.100.1", "n"],
         "no matching subnet for gateway 198.51.100.1"),
        (&["-d", "ipvlan", "--subnet", "192.0.2.0/24", "--ip-range", "198.51.100.0/25", "n"],
         "no matching subnet for range 198.51.100.0/25"),
        (&["-d", "ipvlan", "--subnet", "192.0.2.0/24", "--aux-address", "a=198.51.100.9", "n"],
         "no matching subnet for aux-address 198.51.100.9"),
        (&["-d", "ipvlan", "--subnet", "192.0.2.0/24", "--subnet", "192.0.2.0/25", "n"],
         "multiple overlapping subnet configuration is not supported"),
        (&["-d", "ipvlan", "--gateway", "192.0.2.1", "n"],
         "every ip-range or gateway must have a corresponding subnet"),
    ];
    for (args, want) in cases {
        let e = create_request(&create_args(args)).unwrap_err();
        assert_eq!(&e, want, "{args:?}");
    }
}

#[test]
fn opt_values_split_at_the_first_equals() {
    assert_eq!(split_kv("a=b=c"), ("a".into(), "b=c".into()));
    assert_eq!(split_kv("parent"), ("parent".into(), String::new()));
}

#[test]
fn run_takes_the_command_after_dashes() {
    match parse(&[
        "run",
        "--net",
        "n1",
        "--rm",
        "--",
        "ping",
        "-c",
        "1",
        "192.0.2.3",
    ])
    .cmd
    {
        Cmd::Run(r) => {
            assert_eq!(r.net, "n1");
            assert!(r.rm && !r.detach);
            assert_eq!(r.cmd, ["ping", "-c", "1", "192.0.2.3"]);
        }
        other => panic!("{other:?}"),
    }
    match parse(&["run", "--network", "n1", "-d", "--name", "c1", "sleep", "9"]).cmd {
        Cmd::Run(r) => {
            assert!(r.detach);
            assert_eq!(r.name.as_deref(), Some("c1"));
            assert_eq!(r.cmd, ["sleep", "9"]);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn ls_table_is_tabwriter_shaped_and_natural_sorted() {
    let row = |name: &str, id: char| NetworkSummary {
        id: id.to_string().repeat(64),
        name: name.into(),
        driver: "macvlan".into(),
        scope: "local".into(),
        ipv4: true,
        ipv6: false,
        internal: false,
        created: String::new(),
    };
    let mut rows = vec![
        row("net10", 'a'),
        row("net9", 'b'),
        row("a-much-longer-name", 'c'),
    ];
    rows.sort_by(|a, b| natural_cmp(&a.name, &b.name));
    assert_eq!(
        ls_table(&rows, false),
        "NETWORK ID     NAME                 DRIVER    SCOPE\n\
         cccccccccccc   a-much-longer-name   macvlan   local\n\
         bbbbbbbbbbbb   net9                 macvlan   local\n\
         aaaaaaaaaaaa   net10                macvlan   local\n"
    );
    use std::cmp::Ordering::*;
    assert_eq!(natural_cmp("a2", "a10"), Less);
    assert_eq!(natural_cmp("a02", "a2"), Greater);
    assert_eq!(natural_cmp("b", "a10"), Greater);
}

#[test]
fn daemon_wire_backend_defaults_to_auto_and_takes_the_three_words() {
    use uvlan_dataplane::run::WireBackend;
    let backend = |args: &[&str]| match parse(args).cmd {
        Cmd::Daemon(a) => WireBackend::from(a.wire_backend),
        other => panic!("not the daemon: {other:?}"),
    };
    assert_eq!(backend(&["daemon"]), WireBackend::Auto);
    assert_eq!(
        backend(&["daemon", "--wire-backend", "auto"]),
        WireBackend::Auto
    );
    assert_eq!(
        backend(&["daemon", "--wire-backend", "af_xdp"]),
        WireBackend::AfXdp
    );
    assert_eq!(
        backend(&["daemon", "--wire-backend", "af_packet"]),
        WireBackend::AfPacket
    );
    let err = Cli::try_parse_from(["uvlan", "daemon", "--wire-backend", "xdp"]).unwrap_err();
    assert!(err.to_string().contains("af_xdp"), "{err}");
}

#[test]
fn completions_cover_every_subcommand_in_each_shell() {
    for shell in [
        clap_complete::Shell::Bash,
        clap_complete::Shell::Zsh,
        clap_complete::Shell::Fish,
    ] {
        let mut out = Vec::new();
        packaging::write_completions(shell, &mut out);
        let text = String::from_utf8(out).unwrap();
        for word in [
            "network",
            "doctor",
            "completions",
            "wire-backend",
            "--docker-plugin",
        ] {
            let word = word.trim_start_matches('-');
            assert!(text.contains(word), "{shell}: no {word}");
        }
    }
    assert!(matches!(
        parse(&["completions", "zsh"]).cmd,
        Cmd::Completions(packaging::CompletionsArgs {
            shell: clap_complete::Shell::Zsh
        })
    ));
    assert!(Cli::try_parse_from(["uvlan", "completions", "tcsh"]).is_err());
}

#[test]
fn man_pages_for_the_command_and_each_subcommand() {
    let dir = std::env::temp_dir().join(format!(
        "uvlan-man-{}-{}",
        std::process::id(),
        crate::ids::random_hex(4).unwrap()
    ));
    let pages = packaging::write_man_pages(&dir).unwrap();
    let names: Vec<String> = pages
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    for want in [
        "uvlan.1",
        "uvlan-daemon.1",
        "uvlan-doctor.1",
        "uvlan-network.1",
        "uvlan-network-create.1",
        "uvlan-network-connect.1",
        "uvlan-run.1",
    ] {
        assert!(names.iter().any(|n| n == want), "{want} missing: {names:?}");
    }
    let create = std::fs::read_to_string(dir.join("uvlan-network-create.1")).unwrap();
    assert!(create.contains(".TH uvlan-network-create 1"), "{create}");
    assert!(create.contains("ipvlan_mode"), "{create}");
    // Written again over the same directory: the same pages.
    assert_eq!(packaging::write_man_pages(&dir).unwrap(), pages);
    let _ = std::fs::remove_dir_all(&dir);
}

/// `KEY=VALUE` lines of a unit file, in order (comments and sections left out).
fn unit_settings(text: &str) -> Vec<(String, String)> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with('['))
        .map(|l| {
            let (k, v) = l
                .split_once('=')
                .unwrap_or_else(|| panic!("not KEY=VALUE: {l}"));
            (k.to_string(), v.to_string())
        })
        .collect()
}

fn unit_value<'a>(settings: &'a [(String, String)], key: &str) -> Vec<&'a str> {
    settings
        .iter()
        .filter(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
        .collect()
}

#[test]
fn systemd_unit_runs_the_daemon_with_room_and_a_restart() {
    let unit = unit_settings(include_str!("../../../packaging/uvlan.service"));
    let exec = unit_value(&unit, "ExecStart");
    assert_eq!(exec.len(), 1);
    let args: Vec<&str> = exec[0].split_whitespace().collect();
    assert_eq!(args[0], "/usr/local/bin/uvlan");
    assert!(matches!(
        Cli::try_parse_from(&args).unwrap().cmd,
        Cmd::Daemon(DaemonArgs {
            docker_plugin: false,
            ..
        })
    ));
    assert_eq!(unit_value(&unit, "Restart"), ["on-failure"]);
    let nofile: u64 = unit_value(&unit, "LimitNOFILE")[0].parse().unwrap();
    assert!(crate::doctor::Host::endpoints_allowed(nofile) >= 100_000);
    assert_eq!(unit_value(&unit, "TimeoutStopSec"), ["10s"]);
    assert_eq!(unit_value(&unit, "WantedBy"), ["multi-user.target"]);

    // The Docker drop-in: the flag, and dockerd after the plugin sockets.
    let dropin = unit_settings(include_str!(
        "../../../packaging/uvlan.service.d/docker.conf"
    ));
    assert_eq!(unit_value(&dropin, "Before"), ["docker.service"]);
    let exec = unit_value(&dropin, "ExecStart");
    assert_eq!(
        exec[0], "",
        "a drop-in resets ExecStart before replacing it"
    );
    let args: Vec<&str> = exec[1].split_whitespace().collect();
    assert!(matches!(
        Cli::try_parse_from(&args).unwrap().cmd,
        Cmd::Daemon(DaemonArgs {
            docker_plugin: true,
            ..
        })
    ));
}
