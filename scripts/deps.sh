#!/usr/bin/env bash
# Installs what uvlan's lab needs on a fresh Debian machine (run it as root); with --test also
# what the tests need (dockerd, podman, containerd, busybox, the CNI plugins). Idempotent:
# skips apt when every tool is already there.
set -euo pipefail
need=()
lean=()
for pair in ip:iproute2 ping:iputils-ping tcpdump:tcpdump iperf3:iperf3 ethtool:ethtool \
            bridge:iproute2 tc:iproute2 nsenter:util-linux; do
  cmd=${pair%%:*}; pkg=${pair#*:}
  command -v "$cmd" >/dev/null 2>&1 || need+=("$pkg")
done
# The macvlan-dhcp lab's (and the DHCP test's) server: dnsmasq (dnsmasq-base, the binary
# without its system service; in /usr/sbin, which a user's PATH may lack).
[ -e /usr/sbin/dnsmasq ] || need+=(dnsmasq-base)
# The Docker and CNI system tests: Debian's dockerd 20.10 and client (docker.io), a static
# busybox for the test image (busybox-static), and the standard CNI plugins
# (containernetworking-plugins: host-local, tuning in /usr/lib/cni).
# The runtimes test: containerd and ctr (Debian's containerd 1.6, also docker.io's runtime) and
# podman 4.3 with its CNI backend, without the recommended extras (rootless helpers, buildah).
# The capture and metrics tests read uvlan's output with real readers: tshark (pcapng) and
# promtool (package prometheus: `promtool check metrics`). The DHCP tests (tests/dhcp.rs, and
# the Docker test's DHCP case) filter their server with nft (nftables).
if [ "${1:-}" = "--test" ]; then
  for pair in /usr/sbin/dockerd:docker.io /usr/bin/docker:docker.io /bin/busybox:busybox-static \
              /usr/lib/cni/host-local:containernetworking-plugins /usr/bin/containerd:containerd \
              /usr/bin/ctr:containerd /usr/bin/tshark:tshark /usr/bin/promtool:prometheus \
              /usr/sbin/nft:nftables; do
    path=${pair%%:*}; pkg=${pair#*:}
    [ -e "$path" ] || need+=("$pkg")
  done
  [ -e /usr/bin/podman ] || lean+=(podman)
fi
if ((${#need[@]} + ${#lean[@]})); then
  [ "$(id -u)" -eq 0 ] || { echo "scripts/deps.sh must install ${need[*]} ${lean[*]}: run it as root (or with sudo)" >&2; exit 1; }
  export DEBIAN_FRONTEND=noninteractive
  # tshark's package asks whether non-root users may capture: no (and no question).
  echo "wireshark-common wireshark-common/install-setuid boolean false" | debconf-set-selections
  apt-get update -qq
  # policy-rc.d-less machines may start dockerd from the package: the tests start their own.
  if ((${#need[@]})); then apt-get install -y -qq "${need[@]}" >/dev/null; fi
  if ((${#lean[@]})); then apt-get install -y -qq --no-install-recommends "${lean[@]}" >/dev/null; fi
fi
command -v cargo >/dev/null 2>&1 || { echo "cargo is missing: install Rust (rustup) first" >&2; exit 1; }
