"""NFQUEUE delay, jitter and loss element (a userspace stand-in for netem).

iptables rules in a namespace send a link's packets to a netfilter queue;
this process holds each packet and issues its ACCEPT verdict after the
link's one-way delay (plus jitter), or drops it with the link's loss
probability.  Packets of one queue are never reordered: a packet is never
released before the one queued ahead of it, as on a real wire.

One process serves several queues (``--queue NUM:DELAY_MS:JITTER_MS:LOSS_PCT``),
each typically one direction of one link.  Run inside the namespace that
holds the rules::

    ip netns exec NS python -m tests.lab.servers.delay --queue 10:25:0:0 --queue 11:25:0:0
"""

from __future__ import annotations

import argparse
import collections
import random
import select
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

try:
    from netfilterqueue import COPY_META, NetfilterQueue
except ImportError:  # pragma: no cover - reported to the user below
    NetfilterQueue = None  # type: ignore[assignment,misc]
    COPY_META = 0


#: Packets the kernel may hold for one queue, and the netlink socket buffer:
#: generous, so that bursts (hundreds of parallel handshakes) are delayed,
#: never dropped by the element itself.
QUEUE_MAXLEN = 16384
SOCKET_BUFFER = 16 * 1024 * 1024


@dataclass
class Shaper:
    """Delay, jitter and loss for one queue, with a FIFO of held packets."""

    delay: float  # seconds
    jitter: float  # seconds (uniform +-)
    loss: float  # probability 0..1
    rng: random.Random
    held: collections.deque[tuple[float, Any]] = field(default_factory=collections.deque)
    last_release: float = 0.0
    passed: int = 0
    dropped: int = 0

    def on_packet(self, pkt: Any) -> None:
        if self.loss and self.rng.random() < self.loss:
            pkt.drop()
            self.dropped += 1
            return
        if not self.delay and not self.jitter:
            pkt.accept()
            self.passed += 1
            return
        due = time.monotonic() + self.delay + (self.rng.uniform(-self.jitter, self.jitter) if self.jitter else 0.0)
        due = max(due, self.last_release)  # keep order, like a wire
        self.last_release = due
        self.held.append((due, pkt))

    def release_due(self, now: float) -> None:
        while self.held and self.held[0][0] <= now:
            _, pkt = self.held.popleft()
            pkt.accept()
            self.passed += 1

    def next_due(self) -> float | None:
        return self.held[0][0] if self.held else None


def parse_queue(spec: str) -> tuple[int, float, float, float]:
    """``NUM:DELAY_MS:JITTER_MS:LOSS_PCT`` -> (num, delay s, jitter s, loss prob)."""
    parts = spec.split(":")
    if len(parts) != 4:
        raise argparse.ArgumentTypeError(f"bad queue spec {spec!r}: want NUM:DELAY_MS:JITTER_MS:LOSS_PCT")
    num, delay, jitter, loss = int(parts[0]), float(parts[1]), float(parts[2]), float(parts[3])
    if delay < 0 or jitter < 0 or not 0 <= loss <= 100 or jitter > delay:
        raise argparse.ArgumentTypeError(f"bad queue spec {spec!r}: need delay>=jitter>=0 and 0<=loss<=100")
    return num, delay / 1000, jitter / 1000, loss / 100


def serve(specs: list[tuple[int, float, float, float]], ready_file: Path | None, seed: int | None) -> None:
    rng = random.Random(seed)
    queues: dict[int, tuple[Any, Shaper]] = {}
    for num, delay, jitter, loss in specs:
        shaper = Shaper(delay, jitter, loss, rng)
        nfq = NetfilterQueue()
        nfq.bind(num, shaper.on_packet, max_len=QUEUE_MAXLEN, mode=COPY_META, sock_len=SOCKET_BUFFER)
        queues[nfq.get_fd()] = (nfq, shaper)
    stop = False

    def on_term(_signum: int, _frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    if ready_file:
        ready_file.write_text("ready\n")
    fds = list(queues)
    while not stop:
        dues = [d for _, s in queues.values() if (d := s.next_due()) is not None]
        timeout = max(0.0, min(dues) - time.monotonic()) if dues else 0.5
        try:
            readable, _, _ = select.select(fds, [], [], timeout)
        except InterruptedError:
            continue
        for fd in readable:
            queues[fd][0].run(block=False)
        now = time.monotonic()
        for _, shaper in queues.values():
            shaper.release_due(now)
    for nfq, shaper in queues.values():
        shaper.release_due(float("inf"))
        nfq.unbind()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queue", action="append", type=parse_queue, required=True)
    parser.add_argument("--ready-file", type=Path)
    parser.add_argument("--seed", type=int)
    args = parser.parse_args(argv)
    if NetfilterQueue is None:
        print("delay element needs the NetfilterQueue package (see .ci/lab-pip-packages.txt)", file=sys.stderr)
        return 2
    try:
        serve(args.queue, args.ready_file, args.seed)
    except OSError as exc:
        print(f"delay element: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
