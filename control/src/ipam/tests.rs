//! Behaviour tests: Docker's error texts, default pools, shared pools, status, persistence,
//! atomicity, and a property test over random allocate/release sequences.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use proptest::prelude::*;

use super::*;

const HOST: &str = "uvlan-test-host";

fn space() -> AddressSpace {
    AddressSpace::new(DefaultPools::for_host(HOST))
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn pfx(s: &str) -> Prefix {
    s.parse().unwrap()
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// Builder for `IpamRequest` (gateway wanted unless `.no_gw()`).
#[derive(Clone)]
struct Req(IpamRequest);

fn net(subnets: &[&str]) -> Req {
    Req(IpamRequest {
        subnets: strings(subnets),
        want_gateway: true,
        ..IpamRequest::default()
    })
}

impl Req {
    fn gw(mut self, g: &[&str]) -> Req {
        self.0.gateways = strings(g);
        self
    }
    fn range(mut self, r: &[&str]) -> Req {
        self.0.ip_ranges = strings(r);
        self
    }
    fn aux(mut self, name: &str, addr: &str) -> Req {
        self.0.aux.push((name.to_string(), addr.to_string()));
        self
    }
    fn v6(mut self) -> Req {
        self.0.ipv6 = true;
        self
    }
    fn no_v4(mut self) -> Req {
        self.0.ipv4 = false;
        self
    }
    fn no_gw(mut self) -> Req {
        self.0.want_gateway = false;
        self
    }
}

fn create(s: &mut AddressSpace, id: &str, r: &Req) -> Result<NetworkIpam, IpamError> {
    s.create_network(id, &format!("{id}-name"), &r.0)
}

fn create_err(r: &Req) -> String {
    create(&mut space(), "n", r).unwrap_err().to_string()
}

fn dynamic(s: &mut AddressSpace, id: &str) -> EndpointAddrs {
    s.allocate(id, &AddrRequest::dynamic()).unwrap()
}

fn v4_of(e: &EndpointAddrs) -> String {
    e.v4.unwrap().addr.to_string()
}

fn v6_of(e: &EndpointAddrs) -> String {
    e.v6.unwrap().addr.to_string()
}

fn with_ip(s: &mut AddressSpace, id: &str, v4: &str) -> Result<EndpointAddrs, IpamError> {
    s.allocate(id, &AddrRequest::with_ips(Some(v4), None))
}

fn status(s: &AddressSpace, id: &str, subnet: &str) -> (u64, u64) {
    let st = s.status(id).unwrap()[subnet];
    (st.ips_in_use, st.dynamic_ips_available)
}

// ---------------------------------------------------------------- CLI grouping errors

#[test]
fn cli_more_ranges_or_gateways_than_subnets() {
    let want = "every ip-range or gateway must have a corresponding subnet";
    assert_eq!(
        create_err(&net(&["10.0.0.0/24"]).gw(&["10.0.0.1", "10.0.0.2"])),
        want
    );
    assert_eq!(create_err(&net(&[]).range(&["10.0.0.0/25"])), want);
    assert_eq!(create_err(&net(&[]).gw(&["10.0.0.1"])), want);
}

#[test]
fn cli_overlapping_subnets() {
    let want = "multiple overlapping subnet configuration is not supported";
    assert_eq!(create_err(&net(&["10.0.0.0/8", "10.1.0.0/16"])), want);
    assert_eq!(create_err(&net(&["10.1.0.0/16", "10.0.0.0/8"])), want);
    assert_eq!(create_err(&net(&["10.0.0.0/24", "10.0.0.0/24"])), want);
    // Different families never overlap.
    let mut s = space();
    create(&mut s, "a", &net(&["10.0.0.0/24", "2001:db8::/64"]).v6()).unwrap();
}

#[test]
fn cli_bad_subnet_texts() {
    assert_eq!(
        create_err(&net(&["10.0.0.0/24", "foo"])),
        "invalid subnet: invalid CIDR address: foo"
    );
    assert_eq!(
        create_err(&net(&["foo", "10.0.0.0/24"])),
        "invalid subnet: invalid CIDR address: foo"
    );
    assert_eq!(
        create_err(&net(&["10.0.0.0/24", "10.1.0.0/33"])),
        "invalid subnet: invalid CIDR address: 10.1.0.0/33"
    );
    // The earlier subnet is parsed as data first: Go's bare ParseCIDR error.
    assert_eq!(
        create_err(&net(&["10.1.0.0/33", "10.0.0.0/24"])),
        "invalid CIDR address: 10.1.0.0/33"
    );
    // A lone subnet is only parsed by the daemon.
    assert_eq!(
        create_err(&net(&["foo"])),
        "invalid network config:\ninvalid subnet foo: invalid CIDR block notation"
    );
    // ... unless something has to be matched against it.
    assert_eq!(
        create_err(&net(&["foo"]).gw(&["10.0.0.1"])),
        "invalid subnet: invalid CIDR address: foo"
    );
    assert_eq!(
        create_err(&net(&["foo"]).aux("a", "10.0.0.1")),
        "invalid subnet: invalid CIDR address: foo"
    );
}

#[test]
fn cli_range_errors() {
    assert_eq!(
        create_err(&net(&["10.0.0.0/24"]).range(&["10.1.0.0/25"])),
        "no matching subnet for range 10.1.0.0/25"
    );
    assert_eq!(
        create_err(&net(&["10.0.0.0/24"]).range(&["10.0.0.0/40"])),
        "invalid CIDR address: 10.0.0.0/40"
    );
    assert_eq!(
        create_err(&net(&["10.0.0.0/24", "10.1.0.0/24"]).range(&["10.0.0.0/25", "10.0.0.128/25"])),
        "cannot configure multiple ranges (10.0.0.128/25, 10.0.0.0/25) on the same subnet (10.0.0.0/24)"
    );
}

#[test]
fn cli_gateway_errors() {
    assert_eq!(
        create_err(&net(&["10.0.0.0/24"]).gw(&["10.9.9.9"])),
        "no matching subnet for gateway 10.9.9.9"
    );
    assert_eq!(
        create_err(&net(&["10.0.0.0/24"]).gw(&["bogus"])),
        "no matching subnet for gateway bogus"
    );
    assert_eq!(
        create_err(&net(&["10.0.0.0/24"]).gw(&["10.0.0.1/99"])),
        "invalid CIDR address: 10.0.0.1/99"
    );
    assert_eq!(
        create_err(&net(&["10.0.0.0/24", "10.1.0.0/24"]).gw(&["10.0.0.1", "10.0.0.2"])),
        "cannot configure multiple gateways (10.0.0.2, 10.0.0.1) for the same subnet (10.0.0.0/24)"
    );
}

#[test]
fn cli_aux_errors() {
    assert_eq!(
        create_err(&net(&["10.0.0.0/24"]).aux("r", "10.9.9.9")),
        "no matching subnet for aux-address 10.9.9.9"
    );
    assert_eq!(
        create_err(&net(&["10.0.0.0/24"]).aux("r", "")),
        "no matching subnet for aux-address "
    );
    // A repeated name keeps the last value (Docker's MapOpts).
    let mut s = space();
    let n = create(
        &mut s,
        "a",
        &net(&["10.0.0.0/24"])
            .aux("r", "10.9.9.9")
            .aux("r", "10.0.0.9"),
    )
    .unwrap();
    assert_eq!(n.v4[0].aux["r"], ip("10.0.0.9"));
}

#[test]
fn cli_grouping_attaches_values_to_their_subnets() {
    let req = net(&["10.0.0.0/24", "2001:db8::/64"])
        .gw(&["2001:db8::22", "10.0.0.254"])
        .range(&["10.0.0.128/25"])
        .aux("r", "2001:db8::5")
        .v6();
    let grouped = group_cli(&req.0).unwrap();
    assert_eq!(grouped.len(), 2);
    assert_eq!(grouped[0].subnet, "10.0.0.0/24");
    assert_eq!(grouped[0].gateway.as_deref(), Some("10.0.0.254"));
    assert_eq!(grouped[0].ip_range.as_deref(), Some("10.0.0.128/25"));
    assert_eq!(grouped[1].gateway.as_deref(), Some("2001:db8::22"));
    assert_eq!(grouped[1].aux["r"], "2001:db8::5");
}

// ---------------------------------------------------------------- daemon validation errors

#[test]
fn daemon_unmasked_subnet() {
    assert_eq!(
        create_err(&net(&["192.168.1.1/24"])),
        "invalid network config:\ninvalid subnet 192.168.1.1/24: it should be 192.168.1.0/24"
    );
}

#[test]
fn daemon_collects_several_errors() {
    assert_eq!(
        create_err(&net(&["10.10.10.0/24"]).range(&["10.10.10.0/16"])),
        "invalid network config:\n\
         * invalid ip-range 10.10.10.0/16: CIDR block is bigger than its parent subnet 10.10.10.0/24\n\
         * invalid ip-range 10.10.10.0/16: it should be 10.10.0.0/16"
    );
    assert_eq!(
        create_err(&net(&["10.0.0.0/24", "192.168.1.1/24"]).gw(&["10.0.0.1/24"])),
        "invalid network config:\n\
         * invalid gateway 10.0.0.1/24: invalid address\n\
         * invalid subnet 192.168.1.1/24: it should be 192.168.1.0/24"
    );
}

fn api(subnet: &str, range: &str, gw: &str, aux: &[(&str, &str)]) -> IpamConfig {
    IpamConfig {
        subnet: subnet.to_string(),
        ip_range: (!range.is_empty()).then(|| range.to_string()),
        gateway: (!gw.is_empty()).then(|| gw.to_string()),
        aux: aux
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    }
}

fn validate_err(entries: &[IpamConfig], ipv6: bool) -> String {
    validate_config(entries, true, ipv6)
        .unwrap_err()
        .to_string()
}

/// The cases of moby's `TestValidateIPAM`, through the API-level entry point.
#[test]
fn daemon_validation_texts() {
    assert_eq!(
        validate_err(
            &[api(
                "10.10.10.0/24",
                "2001:db8::/32",
                "2001:db8::1",
                &[("DefaultGatewayIPv4", "2001:db8::1")]
            )],
            false
        ),
        "invalid network config:\n\
         * invalid ip-range 2001:db8::/32: parent subnet is an IPv4 block\n\
         * invalid gateway 2001:db8::1: parent subnet is an IPv4 block\n\
         * invalid auxiliary address DefaultGatewayIPv4: parent subnet is an IPv4 block"
    );
    assert!(validate_config(&[api("2001:db8::/32", "", "", &[])], true, false).is_ok());
    assert_eq!(
        validate_err(&[api("foobar", "", "", &[])], false),
        "invalid network config:\ninvalid subnet foobar: invalid CIDR block notation"
    );
    assert_eq!(
        validate_err(
            &[api(
                "10.10.10.0/24",
                "foobar",
                "1001.10.5.3",
                &[("DefaultGatewayIPv4", "dummy")]
            )],
            false
        ),
        "invalid network config:\n\
         * invalid ip-range foobar: invalid CIDR block notation\n\
         * invalid gateway 1001.10.5.3: invalid address\n\
         * invalid auxiliary address DefaultGatewayIPv4: invalid address"
    );
    assert_eq!(
        validate_err(&[api("10.10.10.0/24", "10.0.0.0/8", "", &[])], false),
        "invalid network config:\ninvalid ip-range 10.0.0.0/8: CIDR block is bigger than its parent subnet 10.10.10.0/24"
    );
    assert_eq!(
        validate_err(
            &[api("10.0.0.0/8", "192.168.0.1/24", "192.168.0.1", &[("DefaultGatewayIPv4", "192.168.0.1")])],
            false
        ),
        "invalid network config:\n\
         * invalid ip-range 192.168.0.1/24: it should be 192.168.0.0/24\n\
         * invalid ip-range 192.168.0.1/24: parent subnet 10.0.0.0/8 doesn't contain ip-range\n\
         * invalid gateway 192.168.0.1: parent subnet 10.0.0.0/8 doesn't contain this address\n\
         * invalid auxiliary address DefaultGatewayIPv4: parent subnet 10.0.0.0/8 doesn't contain this address"
    );
    assert_eq!(
        validate_err(&[api("10.10.10.0/8", "", "", &[])], false),
        "invalid network config:\ninvalid subnet 10.10.10.0/8: it should be 10.0.0.0/8"
    );
    assert_eq!(
        validate_err(&[api("10.0.0.0/8", "10.10.10.0/16", "", &[])], false),
        "invalid network config:\ninvalid ip-range 10.10.10.0/16: it should be 10.10.0.0/16"
    );
    assert!(validate_config(&[], true, false).is_ok());
    assert!(validate_config(
        &[api(
            "10.0.0.0/8",
            "10.10.0.0/16",
            "10.10.0.1",
            &[("DefaultGatewayIPv4", "10.10.0.1")]
        )],
        true,
        false
    )
    .is_ok());
}

#[test]
fn v6_subnet_without_ipv6_is_ignored() {
    let mut s = space();
    // Even an unmasked v6 subnet raises nothing without --ipv6.
    let n = create(&mut s, "a", &net(&["10.0.0.0/24", "2001:db8::1/64"])).unwrap();
    assert!(n.v6.is_empty());
    assert_eq!(s.config_view("a").unwrap().len(), 1);
    let e = dynamic(&mut s, "a");
    assert!(e.v6.is_none());
    assert_eq!(
        create_err(&net(&["10.0.0.0/24", "2001:db8::1/64"]).v6()),
        "invalid network config:\ninvalid subnet 2001:db8::1/64: it should be 2001:db8::/64"
    );
}

// ---------------------------------------------------------------- IPv6-only (--ipv4=false)

#[test]
fn ipv6_only_allocates_no_ipv4() {
    let mut s = space();
    let n = create(&mut s, "a", &net(&["2001:db8::/64"]).v6().no_v4()).unwrap();
    assert!(n.v4.is_empty(), "no IPv4 pool is taken: {:?}", n.v4);
    assert_eq!(n.v6.len(), 1);
    assert_eq!(n.v6[0].subnet.to_string(), "2001:db8::/64");
    assert_eq!(n.v6[0].gateway.unwrap().to_string(), "2001:db8::1");
    let e = dynamic(&mut s, "a");
    assert!(e.v4.is_none());
    assert_eq!(v6_of(&e), "2001:db8::2");
    // The status lists the IPv6 subnet only, and the default IPv4 pool stays free for the
    // next network (it gets the first one, as if the IPv6-only network did not exist).
    assert_eq!(s.status("a").unwrap().len(), 1);
    let b = create(&mut s, "b", &net(&[])).unwrap();
    let mut fresh = space();
    let first = create(&mut fresh, "x", &net(&[])).unwrap();
    assert_eq!(b.v4[0].subnet, first.v4[0].subnet);
    // Without a subnet, IPv6 comes from the default pools, IPv4 still not at all.
    let c = create(&mut s, "c", &net(&[]).v6().no_v4()).unwrap();
    assert!(c.v4.is_empty());
    assert_eq!(c.v6.len(), 1);
    // --ip on it: no IPv4 subnet holds the address.
    assert_eq!(
        with_ip(&mut s, "a", "192.0.2.5").unwrap_err().to_string(),
        "invalid endpoint settings:\nno configured subnet contains IP address 192.0.2.5"
    );
}

#[test]
fn ipv6_only_refusals_leave_nothing() {
    let mut s = space();
    let before = s.clone();
    // Neither family: the text of Docker's bridge driver.
    let e = create(&mut s, "a", &net(&[]).no_v4()).unwrap_err();
    assert_eq!(e, IpamError::NoAddressFamily);
    assert_eq!(e.to_string(), "IPv4 or IPv6 must be enabled");
    // An IPv4 subnet (with or without its gateway, range, aux address) and --ipv4=false.
    for r in [
        net(&["192.0.2.0/24", "2001:db8::/64"]).v6().no_v4(),
        net(&["2001:db8::/64", "192.0.2.0/24"])
            .gw(&["192.0.2.1"])
            .range(&["192.0.2.128/25"])
            .aux("x", "192.0.2.9")
            .v6()
            .no_v4(),
        net(&["0.0.0.0/24"]).v6().no_v4(),
    ] {
        let e = create(&mut s, "a", &r).unwrap_err();
        assert!(matches!(e, IpamError::Ipv4Disabled(_)), "{e:?}");
        assert!(e.to_string().contains("--ipv4=false"), "{e}");
    }
    assert_eq!(
        create(&mut s, "a", &net(&["192.0.2.0/24"]).v6().no_v4())
            .unwrap_err()
            .to_string(),
        "invalid network config: IPv4 is disabled (--ipv4=false) but subnet 192.0.2.0/24 is \
         IPv4: drop the IPv4 --subnet (and its --ip-range, --gateway and --aux-address), or \
         enable IPv4"
    );
    assert_eq!(s, before);
    assert!(s.network_ids().is_empty());
}

// ---------------------------------------------------------------- allocation errors

#[test]
fn pool_overlap() {
    let want = "invalid pool request: Pool overlaps with other one on this address space";
    let mut s = space();
    create(&mut s, "a", &net(&["10.0.0.0/16"])).unwrap();
    assert_eq!(
        create(&mut s, "b", &net(&["10.0.1.0/24"]))
            .unwrap_err()
            .to_string(),
        want
    );
    assert_eq!(
        create(&mut s, "b", &net(&["10.0.0.0/8"]))
            .unwrap_err()
            .to_string(),
        want
    );
    assert_eq!(
        create(&mut s, "b", &net(&["10.0.0.0/16"]))
            .unwrap_err()
            .to_string(),
        want
    );
    // A dynamic pool counts as allocated too.
    create(&mut s, "d", &net(&[])).unwrap();
    assert_eq!(
        create(&mut s, "e", &net(&["172.17.5.0/24"]))
            .unwrap_err()
            .to_string(),
        want
    );
}

#[test]
fn gateway_in_use() {
    assert_eq!(
        create_err(&net(&["10.0.0.0/24"]).gw(&["10.0.0.0"])),
        "failed to allocate gateway (10.0.0.0): Address already in use"
    );
    assert_eq!(
        create_err(&net(&["10.0.0.0/24"]).gw(&["10.0.0.255"])),
        "failed to allocate gateway (10.0.0.255): Address already in use"
    );
    assert_eq!(
        create_err(&net(&["2001:db8::/64"]).gw(&["2001:db8::"]).v6()),
        "failed to allocate gateway (2001:db8::): Address already in use"
    );
    // The gateway of another network sharing the pool.
    let mut s = space();
    create(&mut s, "a", &net(&["10.0.0.0/24"])).unwrap();
    assert_eq!(
        create(
            &mut s,
            "b",
            &net(&["10.0.0.0/24"])
                .range(&["10.0.0.128/25"])
                .gw(&["10.0.0.1"])
        )
        .unwrap_err()
        .to_string(),
        "failed to allocate gateway (10.0.0.1): Address already in use"
    );
}

#[test]
fn aux_in_use() {
    assert_eq!(
        create_err(&net(&["10.0.0.0/24"]).aux("router", "10.0.0.1")),
        "failed to allocate secondary ip address (router:10.0.0.1): Address already in use"
    );
    assert_eq!(
        create_err(
            &net(&["10.0.0.0/24"])
                .gw(&["10.0.0.9"])
                .aux("b", "10.0.0.5")
                .aux("a", "10.0.0.5")
        ),
        "failed to allocate secondary ip address (b:10.0.0.5): Address already in use"
    );
}

#[test]
fn default_pools_exhaust() {
    let mut s = space();
    for i in 0..31 {
        create(&mut s, &format!("n{i}"), &net(&[])).unwrap();
    }
    assert_eq!(
        s.network("n30").unwrap().v4[0].subnet,
        pfx("192.168.240.0/20")
    );
    assert_eq!(
        create(&mut s, "x", &net(&[])).unwrap_err().to_string(),
        "all predefined address pools have been fully subnetted"
    );
}

// ---------------------------------------------------------------- default pools

#[test]
fn default_pool_order_skips_used_and_reserved() {
    let mut s = space();
    let first = |n: &NetworkIpam| n.v4[0].subnet.to_string();
    let a = create(&mut s, "a", &net(&[])).unwrap();
    assert_eq!(first(&a), "172.17.0.0/16");
    assert_eq!(a.v4[0].gateway, Some(ip("172.17.0.1")));
    assert!(a.v4[0].dynamic);
    assert_eq!(
        first(&create(&mut s, "b", &net(&[])).unwrap()),
        "172.18.0.0/16"
    );
    // A static subnet inside the next pool makes it unusable as a whole.
    create(&mut s, "c", &net(&["172.19.5.0/24"])).unwrap();
    // Reserved prefixes (an on-link route, a nameserver) steer the choice...
    s.set_reserved_prefixes(vec![pfx("172.20.0.0/16"), pfx("172.21.0.53/32")]);
    assert_eq!(
        first(&create(&mut s, "d", &net(&[])).unwrap()),
        "172.22.0.0/16"
    );
    // ... but do not forbid a static subnet.
    create(&mut s, "e", &net(&["172.20.0.0/24"])).unwrap();
    // A freed pool is handed out again, lowest first.
    s.remove_network("a").unwrap();
    assert_eq!(
        first(&create(&mut s, "f", &net(&[])).unwrap()),
        "172.17.0.0/16"
    );
    assert_eq!(
        first(&create(&mut s, "g", &net(&[])).unwrap()),
        "172.23.0.0/16"
    );
}

#[test]
fn unspecified_subnet_asks_the_default_pools_for_a_size() {
    let mut s = space();
    let a = create(&mut s, "a", &net(&["0.0.0.0/24"])).unwrap();
    assert_eq!(a.v4[0].subnet, pfx("172.17.0.0/24"));
    assert_eq!(a.v4[0].gateway, Some(ip("172.17.0.1")));
    assert!(a.v4[0].dynamic);
    let b = create(&mut s, "b", &net(&["0.0.0.0/24"])).unwrap();
    assert_eq!(b.v4[0].subnet, pfx("172.17.1.0/24"));
    let c = create(&mut s, "c", &net(&[])).unwrap();
    assert_eq!(c.v4[0].subnet, pfx("172.18.0.0/16"));
    let d = create(&mut s, "d", &net(&["0.0.0.0/24", "::/64"]).v6()).unwrap();
    assert_eq!(d.v4[0].subnet, pfx("172.17.2.0/24"));
    let ula = derive_ula_base(HOST);
    assert!(ula.covers(&d.v6[0].subnet));
    assert_eq!(d.v6[0].subnet.bits(), 64);
    assert_eq!(
        create(&mut s, "e", &net(&["0.0.0.0/8"]))
            .unwrap_err()
            .to_string(),
        "all predefined address pools have been fully subnetted"
    );
    assert_eq!(
        create(&mut s, "e", &net(&["0.0.0.0/24"]).range(&["0.0.0.0/25"]))
            .unwrap_err()
            .to_string(),
        "invalid ip-range 0.0.0.0/25: the subnet 0.0.0.0/24 is chosen from the default address \
         pools, so an ip-range cannot be placed in it; give the subnet explicitly"
    );
    assert_eq!(
        create(&mut s, "e", &net(&["0.0.0.0/24"]).gw(&["0.0.0.1"]))
            .unwrap_err()
            .to_string(),
        "failed to allocate gateway (0.0.0.1): requested address is out of range"
    );
    assert_eq!(
        create(&mut s, "e", &net(&["0.0.0.0/24"]).aux("x", "0.0.0.9"))
            .unwrap_err()
            .to_string(),
        "auxiliary address: (x:0.0.0.9) must belong to the master pool: 172.17.3.0/24"
    );
}

#[test]
fn ipv6_without_subnet_gets_ula_64s() {
    let mut s = space();
    let ula = derive_ula_base(HOST);
    let a = create(&mut s, "a", &net(&[]).v6()).unwrap();
    assert_eq!(a.v6[0].subnet.network(), ula.network());
    assert_eq!(a.v6[0].subnet.bits(), 64);
    let b = create(&mut s, "b", &net(&[]).v6()).unwrap();
    let second = Prefix::new(
        IpAddr::V6(
            (u128::from_be_bytes(match ula.network() {
                IpAddr::V6(v) => v.octets(),
                IpAddr::V4(_) => unreachable!(),
            }) | (1u128 << 64))
                .into(),
        ),
        64,
    )
    .unwrap();
    assert_eq!(b.v6[0].subnet, second);
    // Gateway ::1, first endpoint ::2; the v4 side is a dynamic pool too.
    let gw = a.v6[0].gateway.unwrap().to_string();
    assert!(gw.ends_with("::1"), "{gw}");
    let e = dynamic(&mut s, "a");
    assert!(v6_of(&e).ends_with("::2"));
    assert_eq!(v4_of(&e), "172.17.0.2");
    // The seed's v6-only example: gateway ::22 given, so the first container gets ::1.
    create(
        &mut s,
        "v6ipvlan139",
        &net(&["2001:db8:abc2::/64"]).gw(&["2001:db8:abc2::22"]).v6(),
    )
    .unwrap();
    let e = dynamic(&mut s, "v6ipvlan139");
    assert_eq!(v6_of(&e), "2001:db8:abc2::1");
    assert_eq!(e.v6.unwrap().gateway, Some(ip("2001:db8:abc2::22")));
    assert_eq!(v4_of(&e), "172.19.0.2");
}

// ---------------------------------------------------------------- shared pools

#[test]
fn ip_range_sharing_rules() {
    let want = "invalid pool request: Pool overlaps with other one on this address space";
    let mut s = space();
    // net1 without a range, then net2 with one: OK, one shared pool.
    let n1 = create(&mut s, "net1", &net(&["10.0.0.0/24"])).unwrap();
    let n2 = create(
        &mut s,
        "net2",
        &net(&["10.0.0.0/24"]).range(&["10.0.0.128/25"]),
    )
    .unwrap();
    assert_eq!(n1.v4[0].gateway, Some(ip("10.0.0.1")));
    assert_eq!(n2.v4[0].gateway, Some(ip("10.0.0.128")));
    assert_eq!(v4_of(&dynamic(&mut s, "net2")), "10.0.0.129");
    // A static address taken in net2 (outside its range) is taken in net1 too.
    with_ip(&mut s, "net2", "10.0.0.5").unwrap();
    assert_eq!(
        with_ip(&mut s, "net1", "10.0.0.5").unwrap_err().to_string(),
        "Address already in use"
    );
    assert_eq!(
        with_ip(&mut s, "net1", "10.0.0.129").unwrap_err(),
        IpamError::AddressInUse
    );
    // One bitmap: both see the same IPsInUse (.0 .255 .1 .128 .129 .5).
    assert_eq!(status(&s, "net1", "10.0.0.0/24").0, 6);
    assert_eq!(status(&s, "net2", "10.0.0.0/24").0, 6);
    // The same range again, or the subnet without a range, is refused.
    let again = net(&["10.0.0.0/24"]).range(&["10.0.0.128/25"]);
    assert_eq!(
        create(&mut s, "net3", &again).unwrap_err().to_string(),
        want
    );
    assert_eq!(
        create(&mut s, "net3", &net(&["10.0.0.0/24"]))
            .unwrap_err()
            .to_string(),
        want
    );
    // Another range joins.
    create(
        &mut s,
        "net4",
        &net(&["10.0.0.0/24"]).range(&["10.0.0.64/26"]),
    )
    .unwrap();
    // The reverse order fails: range first, then the bare subnet.
    create(&mut s, "r1", &net(&["10.1.0.0/24"]).range(&["10.1.0.0/25"])).unwrap();
    assert_eq!(
        create(&mut s, "r2", &net(&["10.1.0.0/24"]))
            .unwrap_err()
            .to_string(),
        want
    );
    // The pool lives until its last user leaves.
    s.release(
        "net2",
        &EndpointAddrs {
            v4: Some(EndpointAddr {
                addr: ip("10.0.0.129"),
                subnet: pfx("10.0.0.0/24"),
                gateway: None,
            }),
            v6: None,
        },
    )
    .unwrap();
    s.release(
        "net2",
        &EndpointAddrs {
            v4: Some(EndpointAddr {
                addr: ip("10.0.0.5"),
                subnet: pfx("10.0.0.0/24"),
                gateway: None,
            }),
            v6: None,
        },
    )
    .unwrap();
    s.remove_network("net1").unwrap();
    assert_eq!(
        create(&mut s, "net5", &net(&["10.0.0.0/24"]))
            .unwrap_err()
            .to_string(),
        want
    );
    s.remove_network("net2").unwrap();
    s.remove_network("net4").unwrap();
    create(&mut s, "net5", &net(&["10.0.0.0/24"])).unwrap();
}

#[test]
fn overlapping_subnet_with_range_gets_its_own_pool() {
    let mut s = space();
    create(&mut s, "big", &net(&["10.0.0.0/16"])).unwrap();
    create(
        &mut s,
        "small",
        &net(&["10.0.1.0/24"]).range(&["10.0.1.0/25"]),
    )
    .unwrap();
    // Separate pools: network, broadcast and gateway each.
    assert_eq!(status(&s, "small", "10.0.1.0/24").0, 3);
    assert_eq!(status(&s, "big", "10.0.0.0/16").0, 3);
}

// ---------------------------------------------------------------- /31, /32, small v6

#[test]
fn slash_31_and_32_use_every_address() {
    let mut s = space();
    // A /31: no network, broadcast or automatic gateway; both addresses are endpoints'.
    let n = create(&mut s, "p2p", &net(&["10.0.0.0/31"])).unwrap();
    assert_eq!(n.v4[0].gateway, None);
    assert_eq!(status(&s, "p2p", "10.0.0.0/31"), (0, 2));
    assert_eq!(v4_of(&dynamic(&mut s, "p2p")), "10.0.0.0");
    assert_eq!(v4_of(&dynamic(&mut s, "p2p")), "10.0.0.1");
    assert_eq!(status(&s, "p2p", "10.0.0.0/31"), (2, 0));
    assert_eq!(
        s.allocate("p2p", &AddrRequest::dynamic())
            .unwrap_err()
            .to_string(),
        "no available IPv4 addresses on this network's address pools: p2p-name (p2p)"
    );
    // A gateway given with --gateway is still reserved, as in every Docker version.
    let n = create(&mut s, "p2pgw", &net(&["10.0.0.2/31"]).gw(&["10.0.0.3"])).unwrap();
    assert_eq!(n.v4[0].gateway, Some(ip("10.0.0.3")));
    assert_eq!(v4_of(&dynamic(&mut s, "p2pgw")), "10.0.0.2");
    assert!(s.allocate("p2pgw", &AddrRequest::dynamic()).is_err());
    // A /31 ip-range inside a larger subnet: the gateway policy follows the subnet.
    let n = create(
        &mut s,
        "ranged",
        &net(&["10.0.2.0/24"]).range(&["10.0.2.8/31"]),
    )
    .unwrap();
    assert_eq!(n.v4[0].gateway, Some(ip("10.0.2.8")));
    assert_eq!(v4_of(&dynamic(&mut s, "ranged")), "10.0.2.9");

    create(&mut s, "host", &net(&["10.0.0.7/32"]).no_gw()).unwrap();
    assert_eq!(status(&s, "host", "10.0.0.7/32"), (0, 1));
    assert_eq!(v4_of(&dynamic(&mut s, "host")), "10.0.0.7");

    let n = create(&mut s, "host2", &net(&["10.0.0.8/32"])).unwrap();
    assert_eq!(n.v4[0].gateway, None);
    assert_eq!(v4_of(&dynamic(&mut s, "host2")), "10.0.0.8");
    assert!(matches!(
        s.allocate("host2", &AddrRequest::dynamic()),
        Err(IpamError::NoAvailableAddresses {
            family: Family::V4,
            ..
        })
    ));

    // IPv6 always reserves its first address, even in a /127; no automatic gateway takes
    // the other one.
    let n = create(
        &mut s,
        "v6p2p",
        &net(&["10.0.1.0/24", "2001:db8::/127"]).v6(),
    )
    .unwrap();
    assert_eq!(n.v4[0].gateway, Some(ip("10.0.1.1")));
    assert_eq!(n.v6[0].gateway, None);
    assert_eq!(v6_of(&dynamic(&mut s, "v6p2p")), "2001:db8::1");
    assert_eq!(
        s.allocate("v6p2p", &AddrRequest::dynamic())
            .unwrap_err()
            .to_string(),
        "no available IPv6 addresses on this network's address pools: v6p2p-name (v6p2p)"
    );
}

#[test]
fn ipv6_slash_64_dynamic_allocation() {
    let mut s = space();
    create(&mut s, "v6", &net(&["2001:db8:1::/64"]).v6()).unwrap();
    assert_eq!(
        s.network("v6").unwrap().v6[0].gateway,
        Some(ip("2001:db8:1::1"))
    );
    assert_eq!(v6_of(&dynamic(&mut s, "v6")), "2001:db8:1::2");
    assert_eq!(v6_of(&dynamic(&mut s, "v6")), "2001:db8:1::3");
    // The last address is usable (no broadcast in IPv6).
    let e = s
        .allocate(
            "v6",
            &AddrRequest::with_ips(None, Some("2001:db8:1::ffff:ffff:ffff:ffff")),
        )
        .unwrap();
    assert_eq!(e.v6.unwrap().cidr(), "2001:db8:1:0:ffff:ffff:ffff:ffff/64");
    // anycast + gateway + 3 endpoints
    assert_eq!(status(&s, "v6", "2001:db8:1::/64"), (5, u64::MAX - 4));
    create(&mut s, "v6big", &net(&["2001:db8:2::/63"]).v6()).unwrap();
    assert_eq!(status(&s, "v6big", "2001:db8:2::/63"), (2, u64::MAX));
}

// ---------------------------------------------------------------- gateways

#[test]
fn gateway_defaults_to_first_usable_of_subnet_or_range() {
    let mut s = space();
    let n = create(&mut s, "a", &net(&["192.168.1.0/24"])).unwrap();
    assert_eq!(n.v4[0].gateway, Some(ip("192.168.1.1")));
    assert_eq!(v4_of(&dynamic(&mut s, "a")), "192.168.1.2");
    let n = create(
        &mut s,
        "b",
        &net(&["10.10.10.0/24"]).range(&["10.10.10.128/25"]),
    )
    .unwrap();
    assert_eq!(n.v4[0].gateway, Some(ip("10.10.10.128")));
    assert_eq!(v4_of(&dynamic(&mut s, "b")), "10.10.10.129");
    // A given gateway may lie outside the range; dynamic addresses start at the range.
    let n = create(
        &mut s,
        "c",
        &net(&["10.20.0.0/24"])
            .range(&["10.20.0.128/25"])
            .gw(&["10.20.0.1"]),
    )
    .unwrap();
    assert_eq!(n.v4[0].gateway, Some(ip("10.20.0.1")));
    let e = dynamic(&mut s, "c");
    assert_eq!(v4_of(&e), "10.20.0.128");
    assert_eq!(e.v4.unwrap().gateway, Some(ip("10.20.0.1")));
}

#[test]
fn without_want_gateway_the_first_endpoint_gets_dot_one() {
    let mut s = space();
    let n = create(
        &mut s,
        "l3",
        &net(&["192.168.214.0/24", "10.1.214.0/24"]).no_gw(),
    )
    .unwrap();
    assert!(n.v4.iter().all(|a| a.gateway.is_none()));
    let e = dynamic(&mut s, "l3");
    assert_eq!(v4_of(&e), "192.168.214.1");
    assert_eq!(e.v4.unwrap().gateway, None);
    // A given gateway is still reserved.
    create(
        &mut s,
        "l3gw",
        &net(&["192.168.110.0/24"]).gw(&["192.168.110.1"]).no_gw(),
    )
    .unwrap();
    assert_eq!(v4_of(&dynamic(&mut s, "l3gw")), "192.168.110.2");
    assert!(s
        .config_view("l3")
        .unwrap()
        .iter()
        .all(|c| c.gateway.is_none()));
}

/// Seed `ipvlan140`: two IPv4 subnets with gateways and one IPv6 subnet.
#[test]
fn multi_subnet_gateway_follows_the_endpoint_subnet() {
    let mut s = space();
    create(
        &mut s,
        "ipvlan140",
        &net(&["192.168.140.0/24", "192.168.142.0/24", "2001:db8:abc9::/64"])
            .gw(&["192.168.140.1", "192.168.142.1", "2001:db8:abc9::22"])
            .v6(),
    )
    .unwrap();
    let e = dynamic(&mut s, "ipvlan140");
    assert_eq!(e.v4.unwrap().cidr(), "192.168.140.2/24");
    assert_eq!(e.v4.unwrap().gateway, Some(ip("192.168.140.1")));
    assert_eq!(e.v6.unwrap().cidr(), "2001:db8:abc9::1/64");
    let e = with_ip(&mut s, "ipvlan140", "192.168.142.10").unwrap();
    assert_eq!(e.v4.unwrap().gateway, Some(ip("192.168.142.1")));
    assert_eq!(e.v6.unwrap().addr, ip("2001:db8:abc9::2"));
    let ipam = s.network("ipvlan140").unwrap();
    assert_eq!(
        ipam.subnet_for(ip("192.168.142.99")).unwrap().gateway,
        Some(ip("192.168.142.1"))
    );
}

#[test]
fn multiple_subnets_are_tried_in_order() {
    let mut s = space();
    create(&mut s, "two", &net(&["10.0.0.0/30", "10.0.1.0/30"])).unwrap();
    assert_eq!(v4_of(&dynamic(&mut s, "two")), "10.0.0.2");
    assert_eq!(v4_of(&dynamic(&mut s, "two")), "10.0.1.2");
    assert_eq!(
        s.allocate("two", &AddrRequest::dynamic())
            .unwrap_err()
            .to_string(),
        "no available IPv4 addresses on this network's address pools: two-name (two)"
    );
}

// ---------------------------------------------------------------- aux, static, release

#[test]
fn aux_addresses_are_reserved_even_outside_the_range() {
    let mut s = space();
    // Cookbook macvlan example.
    let n = create(
        &mut s,
        "macvlan_net",
        &net(&["10.10.10.0/24"])
            .range(&["10.10.10.0/25"])
            .gw(&["10.10.10.1"])
            .aux("docker1", "10.10.10.101")
            .aux("docker2", "10.10.10.102"),
    )
    .unwrap();
    assert_eq!(n.v4[0].aux["docker2"], ip("10.10.10.102"));
    assert_eq!(status(&s, "macvlan_net", "10.10.10.0/24").0, 5);
    assert_eq!(
        with_ip(&mut s, "macvlan_net", "10.10.10.101").unwrap_err(),
        IpamError::AddressInUse
    );
    // Seed macvlan example: range .128/25, gateway .254, aux .129.
    create(
        &mut s,
        "macnet32",
        &net(&["192.168.32.0/24"])
            .range(&["192.168.32.128/25"])
            .gw(&["192.168.32.254"])
            .aux("my-router", "192.168.32.129"),
    )
    .unwrap();
    assert_eq!(v4_of(&dynamic(&mut s, "macnet32")), "192.168.32.128");
    assert_eq!(v4_of(&dynamic(&mut s, "macnet32")), "192.168.32.130");
    // Removing the network releases aux and gateway: the subnet is free again.
    s.remove_network("macvlan_net").unwrap();
    create(
        &mut s,
        "again",
        &net(&["10.10.10.0/24"]).gw(&["10.10.10.101"]),
    )
    .unwrap();
}

#[test]
fn static_address_checks() {
    let mut s = space();
    create(
        &mut s,
        "n",
        &net(&["10.0.0.0/24"]).range(&["10.0.0.128/25"]),
    )
    .unwrap();
    // Outside the range but inside the subnet: fine.
    assert_eq!(
        v4_of(&with_ip(&mut s, "n", "10.0.0.5").unwrap()),
        "10.0.0.5"
    );
    // IPv4-mapped counts as IPv4.
    assert_eq!(
        v4_of(&with_ip(&mut s, "n", "::ffff:10.0.0.6").unwrap()),
        "10.0.0.6"
    );
    let err = |s: &mut AddressSpace, v4: Option<&str>, v6: Option<&str>| {
        s.allocate("n", &AddrRequest::with_ips(v4, v6))
            .unwrap_err()
            .to_string()
    };
    assert_eq!(
        err(&mut s, Some("10.9.9.9"), None),
        "invalid endpoint settings:\nno configured subnet contains IP address 10.9.9.9"
    );
    assert_eq!(
        err(&mut s, None, Some("2001:db8::5")),
        "invalid endpoint settings:\nno configured subnet contains IP address 2001:db8::5"
    );
    assert_eq!(
        err(&mut s, Some("foo"), None),
        "invalid endpoint settings:\ninvalid IPv4 address: foo"
    );
    assert_eq!(
        err(&mut s, Some("2001:db8::1"), None),
        "invalid endpoint settings:\n\
         * invalid IPv4 address: 2001:db8::1\n\
         * no configured subnet contains IP address 2001:db8::1"
    );
    assert_eq!(
        err(&mut s, Some("0.0.0.0"), None),
        "invalid endpoint settings:\n\
         * invalid IPv4 address: 0.0.0.0\n\
         * no configured subnet contains IP address 0.0.0.0"
    );
    assert_eq!(
        err(&mut s, None, Some("10.0.0.7")),
        "invalid endpoint settings:\n\
         * invalid IPv6 address: 10.0.0.7\n\
         * no configured subnet contains IP address 10.0.0.7"
    );
    // Taken: by the gateway, by another endpoint.
    assert_eq!(
        err(&mut s, Some("10.0.0.128"), None),
        "Address already in use"
    );
    assert_eq!(
        err(&mut s, Some("10.0.0.5"), None),
        "Address already in use"
    );
    assert_eq!(
        err(&mut s, Some("10.0.0.0"), None),
        "Address already in use"
    );
    // Empty strings mean "absent".
    assert_eq!(
        v4_of(
            &s.allocate("n", &AddrRequest::with_ips(Some(""), Some("")))
                .unwrap()
        ),
        "10.0.0.129"
    );
}

#[test]
fn release_and_reuse() {
    let mut s = space();
    create(&mut s, "n", &net(&["10.0.0.0/24"])).unwrap();
    create(&mut s, "m", &net(&["10.1.0.0/24"])).unwrap();
    let a = dynamic(&mut s, "n");
    let b = dynamic(&mut s, "n");
    let c = dynamic(&mut s, "n");
    assert_eq!(
        [v4_of(&a), v4_of(&b), v4_of(&c)],
        ["10.0.0.2", "10.0.0.3", "10.0.0.4"]
    );
    s.release("n", &b).unwrap();
    assert_eq!(
        v4_of(&dynamic(&mut s, "n")),
        "10.0.0.3",
        "a freed address is reused at once"
    );
    // Releasing twice, or through another network, is refused and changes nothing.
    let before = s.clone();
    s.release("n", &a).unwrap();
    let after_one = s.clone();
    assert_eq!(
        s.release("n", &a).unwrap_err().to_string(),
        "address 10.0.0.2 is not allocated to an endpoint of network n-name (n); nothing was released"
    );
    assert_eq!(s, after_one);
    assert!(s.release("m", &c).is_err());
    assert_eq!(s, after_one);
    assert_ne!(before, after_one);
    // A network with endpoints cannot be removed; once they are gone it can.
    assert!(matches!(
        s.remove_network("n"),
        Err(IpamError::ActiveEndpoints { count: 2, .. })
    ));
    for addr in s.endpoint_addresses("n").unwrap() {
        let e = EndpointAddrs {
            v4: Some(EndpointAddr {
                addr,
                subnet: pfx("10.0.0.0/24"),
                gateway: None,
            }),
            v6: None,
        };
        s.release("n", &e).unwrap();
    }
    s.remove_network("n").unwrap();
    assert!(s.network("n").is_none());
    assert_eq!(
        s.remove_network("n").unwrap_err().to_string(),
        "network n not found in the IPAM state"
    );
    create(&mut s, "n2", &net(&["10.0.0.0/24"])).unwrap();
}

// ---------------------------------------------------------------- status and inspect

/// moby's `TestMacvlanIPAM` (Docker 29: no automatic gateway).
#[test]
fn status_matches_test_macvlan_ipam() {
    let mut s = space();
    create(
        &mut s,
        "macvlan",
        &net(&["10.66.77.0/24", "2001:db8:abcd::/64"])
            .range(&["10.66.77.64/30", "2001:db8:abcd::/120"])
            .gw(&["10.66.77.1"])
            .aux("inrange", "10.66.77.65")
            .aux("outofrange", "10.66.77.128")
            .v6()
            .no_gw(),
    )
    .unwrap();
    let e = dynamic(&mut s, "macvlan");
    assert_eq!(v4_of(&e), "10.66.77.64");
    assert_eq!(v6_of(&e), "2001:db8:abcd::1");
    assert_eq!(status(&s, "macvlan", "10.66.77.0/24"), (6, 2));
    assert_eq!(status(&s, "macvlan", "2001:db8:abcd::/64"), (2, 254));
}

/// Docker's `network inspect` example for a user-defined network, as JSON.
#[test]
fn inspect_shapes_match_docker() {
    let mut s = space();
    create(
        &mut s,
        "ipv20",
        &net(&["192.168.20.0/24", "2001:db8:20::/64"])
            .range(&["192.168.20.128/25"])
            .gw(&["192.168.20.1"])
            .aux("router", "192.168.20.2")
            .v6()
            .no_gw(),
    )
    .unwrap();
    let e = dynamic(&mut s, "ipv20");
    assert_eq!(e.v4.unwrap().cidr(), "192.168.20.128/24");
    assert_eq!(e.v6.unwrap().cidr(), "2001:db8:20::1/64");
    let config = serde_json::to_value(s.config_view("ipv20").unwrap()).unwrap();
    assert_eq!(
        config,
        serde_json::json!([
            { "Subnet": "192.168.20.0/24", "IPRange": "192.168.20.128/25", "Gateway": "192.168.20.1",
              "AuxiliaryAddresses": { "router": "192.168.20.2" } },
            { "Subnet": "2001:db8:20::/64" }
        ])
    );
    let status = serde_json::to_value(s.status("ipv20").unwrap()).unwrap();
    assert_eq!(
        status,
        serde_json::json!({
            "192.168.20.0/24": { "IPsInUse": 5, "DynamicIPsAvailable": 126 },
            "2001:db8:20::/64": { "IPsInUse": 2, "DynamicIPsAvailable": 18446744073709551614u64 }
        })
    );
    // Dynamic subnets show {Subnet, Gateway}, IPv4 first.
    create(&mut s, "dyn", &net(&[]).v6()).unwrap();
    let view = s.config_view("dyn").unwrap();
    assert_eq!(view[0].subnet, "172.17.0.0/16");
    assert_eq!(view[0].gateway.as_deref(), Some("172.17.0.1"));
    assert!(view[0].ip_range.is_none() && view[0].aux.is_empty());
    assert!(view[1].subnet.starts_with("fd"));
}

// ---------------------------------------------------------------- atomicity

#[test]
fn failed_create_leaves_state_unchanged() {
    let mut s = space();
    create(&mut s, "other", &net(&["10.1.0.0/16"])).unwrap();
    create(&mut s, "shared", &net(&["10.2.0.0/24"])).unwrap();
    let before = s.clone();

    // Second subnet overlaps: the first one's pool must be released.
    assert!(create(&mut s, "x", &net(&["10.0.0.0/24", "10.1.5.0/24"])).is_err());
    assert_eq!(s, before);
    // Failure on an aux address of the second subnet, after a range joined a shared pool.
    let r = net(&["10.2.0.0/24", "10.3.0.0/24"])
        .range(&["10.2.0.128/25"])
        .gw(&["10.3.0.1"])
        .aux("dup", "10.3.0.1");
    assert!(create(&mut s, "x", &r).is_err());
    assert_eq!(s, before);
    // Failure in the IPv6 part after a dynamic IPv4 pool was taken.
    assert!(create(
        &mut s,
        "x",
        &net(&["2001:db8::/64"]).gw(&["2001:db8::"]).v6()
    )
    .is_err());
    assert_eq!(s, before);
    // Gateway conflict inside a shared pool.
    assert!(create(
        &mut s,
        "x",
        &net(&["10.2.0.0/24"])
            .range(&["10.2.0.0/25"])
            .gw(&["10.2.0.1"])
    )
    .is_err());
    assert_eq!(s, before);
    // An existing ID.
    assert_eq!(
        create(&mut s, "other", &net(&["10.9.0.0/24"]))
            .unwrap_err()
            .to_string(),
        "network other already exists in the IPAM state; remove it before creating it again"
    );
    assert_eq!(s, before);
    // The first subnet alone is fine afterwards.
    create(&mut s, "x", &net(&["10.0.0.0/24"])).unwrap();
}

#[test]
fn failed_allocate_leaves_state_unchanged() {
    let mut s = space();
    create(&mut s, "n", &net(&["10.0.0.0/24", "2001:db8::/64"]).v6()).unwrap();
    let taken = s
        .allocate("n", &AddrRequest::with_ips(None, Some("2001:db8::9")))
        .unwrap();
    assert_eq!(v4_of(&taken), "10.0.0.2");
    let before = s.clone();
    // IPv4 would succeed, IPv6 is taken: IPv4 must be given back.
    assert_eq!(
        s.allocate("n", &AddrRequest::with_ips(None, Some("2001:db8::9")))
            .unwrap_err(),
        IpamError::AddressInUse
    );
    assert_eq!(s, before);
    assert!(s
        .allocate("n", &AddrRequest::with_ips(Some("10.0.0.3"), Some("bad")))
        .is_err());
    assert_eq!(s, before);
    assert_eq!(
        s.allocate("nope", &AddrRequest::dynamic())
            .unwrap_err()
            .to_string(),
        "network nope not found in the IPAM state"
    );
    assert_eq!(v4_of(&dynamic(&mut s, "n")), "10.0.0.3");
}

// ---------------------------------------------------------------- persistence

fn busy_space() -> AddressSpace {
    let mut s = space();
    create(
        &mut s,
        "a",
        &net(&["10.0.0.0/24", "2001:db8:1::/64"])
            .aux("r", "10.0.0.200")
            .v6(),
    )
    .unwrap();
    create(
        &mut s,
        "b",
        &net(&["10.0.0.0/24"]).range(&["10.0.0.128/26"]),
    )
    .unwrap();
    create(&mut s, "c", &net(&[]).v6()).unwrap();
    create(&mut s, "d", &net(&["10.5.0.0/16"]).no_gw()).unwrap();
    create(&mut s, "e", &net(&["10.5.1.0/24"]).range(&["10.5.1.0/25"])).unwrap();
    for id in ["a", "a", "b", "c", "d", "e"] {
        dynamic(&mut s, id);
    }
    with_ip(&mut s, "b", "10.0.0.7").unwrap();
    s.set_reserved_prefixes(vec![pfx("192.0.2.53/32")]);
    s
}

#[test]
fn serde_round_trip() {
    let mut s = busy_space();
    let json = serde_json::to_string_pretty(&s).unwrap();
    let mut back: AddressSpace = serde_json::from_str(&json).unwrap();
    assert_eq!(back, s);
    assert_eq!(serde_json::to_string_pretty(&back).unwrap(), json);
    // Both continue identically.
    for id in ["a", "b", "c", "e"] {
        assert_eq!(dynamic(&mut s, id), dynamic(&mut back, id));
    }
    assert_eq!(
        create(&mut s, "f", &net(&[])).unwrap(),
        create(&mut back, "f", &net(&[])).unwrap()
    );
    assert_eq!(s.network_ids(), ["a", "b", "c", "d", "e", "f"]);
    assert_eq!(s.status("b").unwrap(), back.status("b").unwrap());
}

#[test]
fn round_trip_after_removals() {
    let mut s = busy_space();
    let e = s.endpoint_addresses("d").unwrap();
    let d = EndpointAddrs {
        v4: Some(EndpointAddr {
            addr: e[0],
            subnet: pfx("10.5.0.0/16"),
            gateway: None,
        }),
        v6: None,
    };
    s.release("d", &d).unwrap();
    s.remove_network("d").unwrap();
    // e's own pool (10.5.1.0/24, made with a range) now blocks the range-less /16.
    assert_eq!(
        create(&mut s, "g", &net(&["10.5.0.0/16"])).unwrap_err(),
        IpamError::PoolOverlap
    );
    create(&mut s, "g", &net(&["10.6.0.0/16"])).unwrap();
    let back: AddressSpace = serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
    assert_eq!(back, s);
    assert_eq!(back.network_ids(), ["a", "b", "c", "e", "g"]);
}

#[test]
fn restore_is_independent_of_record_order() {
    let s = busy_space();
    let mut records = s.stored_networks();
    records.reverse();
    let back = AddressSpace::restore(s.defaults().clone(), records).unwrap();
    for id in s.network_ids() {
        assert_eq!(back.status(&id).unwrap(), s.status(&id).unwrap());
        assert_eq!(back.network(&id), s.network(&id));
    }
}

#[test]
fn restore_detects_conflicts() {
    let s = busy_space();
    let records = s.stored_networks();
    let restore = |recs: Vec<StoredNetwork>| {
        AddressSpace::restore(s.defaults().clone(), recs)
            .unwrap_err()
            .to_string()
    };
    let find =
        |recs: &mut Vec<StoredNetwork>, id: &str| recs.iter().position(|r| r.id == id).unwrap();

    // An endpoint address used by two networks sharing a pool.
    let mut recs = records.clone();
    let b = find(&mut recs, "b");
    recs[b].endpoints.push(ip("10.0.0.2"));
    let e = restore(recs);
    assert!(e.starts_with("stored IPAM state is inconsistent: network b-name (b): endpoint address 10.0.0.2 is already in use in subnet 10.0.0.0/24"), "{e}");

    // Two range-less claims on overlapping subnets.
    let mut recs = records.clone();
    let d = find(&mut recs, "d");
    recs[d].ipam.v4[0].subnet = pfx("10.0.0.0/16");
    assert!(restore(recs).contains("overlaps subnet"));

    // The same range twice on one subnet.
    let mut recs = records.clone();
    let e_idx = find(&mut recs, "e");
    recs[e_idx].ipam.v4[0] = recs[find(&mut recs.clone(), "b")].ipam.v4[0].clone();
    recs[e_idx].endpoints.clear();
    assert!(restore(recs).contains("is also held by network"));

    // A reserved address (network address) as an endpoint.
    let mut recs = records.clone();
    let d = find(&mut recs, "d");
    recs[d].endpoints.push(ip("10.5.0.0"));
    assert!(restore(recs).contains("already in use"));

    // Malformed records.
    let mut recs = records.clone();
    let a = find(&mut recs, "a");
    recs[a].ipam.v4[0].gateway = Some(ip("10.9.9.9"));
    assert!(restore(recs).contains("outside subnet"));
    let mut recs = records.clone();
    recs.push(recs[0].clone());
    assert!(restore(recs).contains("appears twice"));
    let mut recs = records.clone();
    let a = find(&mut recs, "a");
    recs[a].endpoints.push(ip("10.77.0.1"));
    assert!(restore(recs).contains("in none of its subnets"));

    // Through serde: a corrupt document is an error, not a silently trimmed state.
    let mut doc = serde_json::to_value(&s).unwrap();
    let nets = doc["networks"].as_array_mut().unwrap();
    let b = nets.iter().position(|n| n["id"] == "b").unwrap();
    nets[b]["endpoints"]
        .as_array_mut()
        .unwrap()
        .push("10.0.0.1".into());
    let err = serde_json::from_value::<AddressSpace>(doc)
        .unwrap_err()
        .to_string();
    assert!(err.contains("stored IPAM state is inconsistent"), "{err}");
}

// ---------------------------------------------------------------- property test

#[derive(Clone, Debug)]
enum Op {
    /// Allocate on network `net`; `Some(k)` asks for the static address at offset `k` of the
    /// network's first subnet of the family.
    Alloc {
        net: usize,
        v4: Option<u8>,
        v6: Option<u8>,
    },
    /// Release the `idx`-th live endpoint (modulo their count).
    Release { idx: usize },
    /// Serialize and restore the whole state.
    Reload,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0usize..4, prop::option::of(0u8..20), prop::option::of(0u8..12))
            .prop_map(|(net, v4, v6)| Op::Alloc { net, v4, v6 }),
        3 => any::<usize>().prop_map(|idx| Op::Release { idx }),
        1 => Just(Op::Reload),
    ]
}

fn prop_networks(s: &mut AddressSpace) -> Vec<&'static str> {
    create(s, "p0", &net(&["10.0.0.0/28"]).aux("x", "10.0.0.3")).unwrap();
    create(s, "p1", &net(&["10.0.0.0/28"]).range(&["10.0.0.8/29"])).unwrap();
    create(s, "p2", &net(&["10.0.0.16/31", "10.0.0.20/32"]).no_gw()).unwrap();
    create(
        s,
        "p3",
        &net(&["10.0.0.24/29", "2001:db8::/124"])
            .range(&["10.0.0.28/30", "2001:db8::8/125"])
            .v6(),
    )
    .unwrap();
    vec!["p0", "p1", "p2", "p3"]
}

fn offset(prefix: Prefix, k: u8) -> IpAddr {
    match prefix.network() {
        IpAddr::V4(a) => IpAddr::V4((u32::from(a) + u32::from(k)).into()),
        IpAddr::V6(a) => IpAddr::V6((u128::from(a) + u128::from(k)).into()),
    }
}

/// Addresses that must never go to an endpoint in `subnet`.
fn reserved_in(subnet: Prefix) -> Vec<IpAddr> {
    match subnet.family() {
        Family::V4 if subnet.host_bits() > 1 => vec![subnet.network(), subnet.last_addr()],
        Family::V4 => vec![],
        Family::V6 => vec![subnet.network()],
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn addresses_are_never_handed_out_twice(ops in prop::collection::vec(op(), 1..120)) {
        let mut s = space();
        let nets = prop_networks(&mut s);
        // (network, endpoint) pairs alive.
        let mut live: Vec<(usize, EndpointAddrs)> = Vec::new();
        for op in ops {
            match op {
                Op::Alloc { net, v4, v6 } => {
                    let ipam = s.network(nets[net]).unwrap().clone();
                    let v4s = v4.map(|k| offset(ipam.v4[0].subnet, k).to_string());
                    let v6s = v6.and_then(|k| ipam.v6.first().map(|a| offset(a.subnet, k).to_string()));
                    let req = AddrRequest { v4: v4s.clone(), v6: v6s, want_v4: true, want_v6: true };
                    let before = s.clone();
                    match s.allocate(nets[net], &req) {
                        Ok(e) => {
                            for a in e.v4.iter().chain(e.v6.iter()) {
                                prop_assert!(!reserved_in(a.subnet).contains(&a.addr), "reserved {} handed out", a.addr);
                                prop_assert!(a.subnet.contains(a.addr));
                                let alloc = ipam.subnet_for(a.addr).unwrap();
                                prop_assert!(alloc.gateway != Some(a.addr));
                                prop_assert!(!alloc.aux.values().any(|x| *x == a.addr));
                            }
                            // Dynamic IPv4 is the lowest free address of its block.
                            if let (None, Some(a)) = (&v4s, e.v4) {
                                let alloc = ipam.subnet_for(a.addr).unwrap();
                                let block = alloc.dynamic_block();
                                let mut used: BTreeSet<IpAddr> = reserved_in(a.subnet).into_iter().collect();
                                for n in s.network_ids() {
                                    let other = s.network(&n).unwrap();
                                    for sa in other.subnets().filter(|x| x.subnet == a.subnet) {
                                        used.extend(sa.gateway);
                                        used.extend(sa.aux.values().copied());
                                    }
                                    used.extend(before.endpoint_addresses(&n).unwrap());
                                }
                                for k in 0..block.size() {
                                    let cand = offset(block, u8::try_from(k).unwrap());
                                    if cand == a.addr { break; }
                                    prop_assert!(used.contains(&cand), "{cand} was free but {} was given", a.addr);
                                }
                            }
                            live.push((net, e));
                        }
                        Err(IpamError::AddressInUse)
                        | Err(IpamError::NoAvailableAddresses { .. })
                        | Err(IpamError::InvalidEndpointSettings(_)) => {
                            prop_assert_eq!(&s, &before, "failed allocate changed the state");
                        }
                        Err(other) => prop_assert!(false, "unexpected error {other}"),
                    }
                }
                Op::Release { idx } => {
                    if !live.is_empty() {
                        let (net, e) = live.remove(idx % live.len());
                        s.release(nets[net], &e).unwrap();
                    }
                }
                Op::Reload => {
                    let json = serde_json::to_string(&s).unwrap();
                    let back: AddressSpace = serde_json::from_str(&json).unwrap();
                    prop_assert_eq!(&back, &s);
                    s = back;
                }
            }
            // No address is held twice, across endpoints, gateways and aux addresses.
            let mut seen = BTreeSet::new();
            for (_, e) in &live {
                for a in e.addrs() {
                    prop_assert!(seen.insert(a), "{a} held twice");
                }
            }
            let mut fixed: BTreeMap<Prefix, u64> = BTreeMap::new();
            for n in &nets {
                for sa in s.network(n).unwrap().subnets() {
                    for a in sa.gateway.iter().chain(sa.aux.values()) {
                        prop_assert!(seen.insert(*a), "{a} is an endpoint and a gateway/aux");
                        *fixed.entry(sa.subnet).or_default() += 1;
                    }
                }
            }
            // IPsInUse = reserved + gateways/aux + endpoints in that pool.
            for n in &nets {
                for (subnet, st) in s.status(n).unwrap() {
                    let subnet: Prefix = subnet.parse().unwrap();
                    let endpoints = live.iter().flat_map(|(_, e)| e.addrs()).filter(|a| subnet.contains(*a)).count() as u64;
                    let want = reserved_in(subnet).len() as u64 + fixed.get(&subnet).copied().unwrap_or(0) + endpoints;
                    prop_assert_eq!(st.ips_in_use, want, "IPsInUse of {}", subnet);
                }
            }
        }
    }
}
