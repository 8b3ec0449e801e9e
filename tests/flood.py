#!/usr/bin/env python3
"""Sends frames out of one interface as fast as one core can, through an AF_PACKET socket
that bypasses the qdisc (PACKET_QDISC_BYPASS): every frame goes straight to the driver, so a
TAP whose queue is full drops it and counts it (tx_dropped). Used by tests/isolation.rs and
bench/storm.sh; run it inside the sender's namespace.

    flood.py IFACE KIND (--count N | --seconds S)

KIND:
  garbage    random bytes of random length (1 to 1514), destination MAC random but unicast
             and locally administered: nobody's; a quarter are shorter than an Ethernet header
  broadcast  UDP from the interface's first IPv4 address to 255.255.255.255:9 (discard),
             ff:ff:ff:ff:ff:ff, 64-byte frames
  nowhere    UDP to 198.51.100.254:9 and a MAC nobody has, 64-byte frames

Prints one line: `sent N frames in S s (R frames/s), E refused`.
"""
import argparse
import os
import socket
import struct
import subprocess
import time

ETH_P_ALL = 0x0003
SOL_PACKET = 263
PACKET_QDISC_BYPASS = 20


def csum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def ipv4_udp(src: bytes, dst: bytes) -> bytes:
    payload = b"uvlan-storm" + bytes(7)
    udp = struct.pack("!HHHH", 9, 9, 8 + len(payload), 0) + payload
    hdr = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0x4000, 64, 17, 0, src, dst)
    hdr = hdr[:10] + struct.pack("!H", csum(hdr)) + hdr[12:]
    return hdr + udp


def first_ipv4(iface: str) -> bytes:
    out = subprocess.run(
        ["ip", "-4", "-o", "addr", "show", "dev", iface], capture_output=True, text=True
    ).stdout.split()
    addr = out[out.index("inet") + 1].split("/")[0] if "inet" in out else "0.0.0.0"
    return socket.inet_aton(addr)


def frames(kind: str, iface: str, mac: bytes) -> list:
    if kind == "broadcast":
        eth = b"\xff" * 6 + mac + b"\x08\x00"
        return [eth + ipv4_udp(first_ipv4(iface), b"\xff" * 4)]
    if kind == "nowhere":
        eth = b"\x02\x00\x5e\xee\xee\xee" + mac + b"\x08\x00"
        return [eth + ipv4_udp(first_ipv4(iface), socket.inet_aton("198.51.100.254"))]
    pool = []
    for i in range(512):
        n = int.from_bytes(os.urandom(2), "big") % 1514 + 1
        if i % 4 == 0:
            n = n % 13 + 1
        f = bytearray(os.urandom(n))
        if n >= 6:
            f[0] = (f[0] & 0xFC) | 0x02  # unicast, locally administered
        pool.append(bytes(f))
    return pool


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("iface")
    ap.add_argument("kind", choices=["garbage", "broadcast", "nowhere"])
    g = ap.add_mutually_exclusive_group(required=True)
    g.add_argument("--count", type=int)
    g.add_argument("--seconds", type=float)
    a = ap.parse_args()
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    s.setsockopt(SOL_PACKET, PACKET_QDISC_BYPASS, 1)
    s.bind((a.iface, 0))
    mac = s.getsockname()[4][:6]
    pool = frames(a.kind, a.iface, mac)
    k = len(pool)
    sent = refused = i = 0
    start = time.monotonic()
    deadline = start + a.seconds if a.seconds else None
    limit = a.count if a.count is not None else 1 << 62
    send = s.send
    while sent + refused < limit:
        try:
            send(pool[i % k])
            sent += 1
        except OSError:
            refused += 1
        i += 1
        if deadline and i % 1024 == 0 and time.monotonic() >= deadline:
            break
    secs = time.monotonic() - start
    print(f"sent {sent} frames in {secs:.2f} s ({sent / max(secs, 1e-9):.0f} frames/s), {refused} refused")


if __name__ == "__main__":
    main()
