"""A tiny independent STUN client: the lab's ground-truth tool for Teams media.

Resolves HOST with the system resolver (the laptop's resolv.conf), then, as
a real client does, tries every address it got: to each it sends COUNT
RFC 5389 Binding requests over UDP, INTERVAL apart. It reports each
address's outcome (loss, median RTT and jitter, or the error, e.g. "Network
is unreachable" for a family the laptop has no route for) as JSON::

    python stunclient.py worldaz.tr.teams.microsoft.com --port 3478 --count 20

Standard library only; shares no code with netcheck or the lab's responder.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import socket
import statistics
import struct
import sys
import time
from typing import Any

MAGIC = 0x2112A442


def probe(address: str, family: int, port: int, count: int, interval: float, timeout: float,
          every: int = 1) -> dict[str, Any]:
    """``count`` requests ``interval`` apart; loss over all of them, round trip and jitter over the answers
    to every ``every``-th request (Teams' packet spacing when ``interval * every`` is its stride)."""
    try:
        sock = socket.socket(family, socket.SOCK_DGRAM)
    except OSError as exc:
        return {"address": address, "sent": 0, "received": 0, "error": exc.strerror or str(exc)}
    sent: dict[bytes, tuple[int, float]] = {}  # requests not answered yet, by transaction id: (slot, time)
    sent_count = 0  # every request sent (``sent`` shrinks as answers come: it cannot count them)
    rtts: dict[int, float] = {}  # by slot
    mapped = None
    try:
        try:
            sock.connect((address, port))
        except OSError as exc:  # no route to this family: an outcome, and the next address is tried
            return {"address": address, "sent": 0, "received": 0, "error": exc.strerror or str(exc)}
        sock.setblocking(False)
        next_send = time.monotonic()
        deadline = None
        while True:
            now = time.monotonic()
            if sent_count < count and now >= next_send:
                txid = os.urandom(12)
                try:
                    sock.send(struct.pack("!HHI", 1, 0, MAGIC) + txid)
                except OSError as exc:
                    return {"address": address, "sent": sent_count, "received": 0, "error": exc.strerror or str(exc)}
                sent[txid] = (sent_count, now)
                sent_count += 1
                next_send = now + interval
                if sent_count == count:
                    deadline = now + timeout
            if deadline is not None and now >= deadline:
                break
            wait = (deadline - now) if deadline is not None else max(0.0, next_send - now)
            readable, _, _ = select.select([sock], [], [], wait)
            if not readable:
                continue
            try:
                data = sock.recv(2048)
            except OSError:
                continue  # e.g. ICMP port unreachable
            if len(data) >= 20 and data[:2] == b"\x01\x01" and data[8:20] in sent:
                slot, at = sent.pop(data[8:20])
                rtts[slot] = (time.monotonic() - at) * 1000
                mapped = mapped or _mapped(data)
                if len(rtts) == count:
                    break
    finally:
        sock.close()
    received = len(rtts)
    result: dict[str, Any] = {
        "address": address,
        "sent": count,
        "received": received,
        "loss_pct": round(100 * (count - received) / count, 1),
    }
    strided = [rtts[k] for k in sorted(rtts) if k % every == 0] or [rtts[k] for k in sorted(rtts)]
    result["samples"] = len(strided)
    if strided:
        result["rtt_ms_median"] = round(statistics.median(strided), 1)
        result["jitter_ms"] = (
            round(statistics.fmean(abs(a - b) for a, b in zip(strided, strided[1:], strict=False)), 1)
            if len(strided) > 1
            else 0.0
        )
        result["mapped"] = mapped
    return result


def _mapped(data: bytes) -> str | None:
    pos = 20
    while pos + 4 <= len(data):
        kind, length = struct.unpack("!HH", data[pos : pos + 4])
        value = data[pos + 4 : pos + 4 + length]
        if kind == 0x0020 and len(value) >= 8:
            port = struct.unpack("!H", value[2:4])[0] ^ (MAGIC >> 16)
            key = struct.pack("!I", MAGIC) + data[8:20]
            addr = value[4:8] if value[1] == 1 else value[4:20]
            raw = bytes(a ^ b for a, b in zip(addr, key[: len(addr)], strict=True))
            ip = socket.inet_ntop(socket.AF_INET if value[1] == 1 else socket.AF_INET6, raw)
            return f"{ip}:{port}"
        pos += 4 + length + (4 - length % 4) % 4
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="STUN binding probe (lab truth tool)")
    parser.add_argument("host")
    parser.add_argument("--port", type=int, default=3478)
    parser.add_argument("--count", type=int, default=20)
    parser.add_argument("--interval", type=float, default=0.02)
    parser.add_argument("--timeout", type=float, default=1.0)
    parser.add_argument("--every", type=int, default=1, help="round trips and jitter from every N-th request")
    args = parser.parse_args(argv)
    out: dict[str, Any] = {"host": args.host, "port": args.port, "results": []}
    try:
        infos = socket.getaddrinfo(args.host, args.port, type=socket.SOCK_DGRAM)
    except socket.gaierror as exc:
        out["error"] = f"dns: {exc.strerror}"
        print(json.dumps(out))
        return 0
    seen: set[str] = set()
    for family, _, _, _, sockaddr in infos:
        if str(sockaddr[0]) in seen:
            continue
        seen.add(str(sockaddr[0]))
        res = probe(str(sockaddr[0]), family, args.port, args.count, args.interval, args.timeout, args.every)
        res["family"] = 4 if family == socket.AF_INET else 6
        out["results"].append(res)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
