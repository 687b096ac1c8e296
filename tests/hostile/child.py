"""Runs inside the sandbox: start the servers a scenario needs on loopback, then netcheck's CLI.

``python child.py SCENARIO [netcheck arguments...]``; the exit status and output are netcheck's.
"""

from __future__ import annotations

import os
import socket
import sys
import threading
import time


def trickle_http(body: bytes = b"function FindProxyForURL(url, host) { return 'DIRECT'; }") -> int:
    """An HTTP server on 127.0.0.1 that sends its answer one byte a second (head included)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)

    def serve(conn: socket.socket) -> None:
        with conn:
            conn.recv(65536)
            answer = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
            for i in range(len(answer)):
                try:
                    conn.sendall(answer[i:i + 1])
                except OSError:
                    return
                time.sleep(1.0)

    def accept() -> None:
        while True:
            conn, _ = listener.accept()
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    return int(listener.getsockname()[1])


def silent_dns() -> None:
    """Something on 127.0.0.1:53 (UDP and TCP) that takes queries and never answers."""
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 53))
    tcp = socket.socket()
    tcp.bind(("127.0.0.1", 53))
    tcp.listen(16)
    keep = [udp, tcp]

    def drain() -> None:
        while True:
            udp.recvfrom(4096)

    def hold() -> None:
        while True:
            conn, _ = tcp.accept()
            keep.append(conn)

    threading.Thread(target=drain, daemon=True).start()
    threading.Thread(target=hold, daemon=True).start()


def main() -> None:
    scenario, args = sys.argv[1], sys.argv[2:]
    if scenario == "trickle-pac":
        os.environ["NETCHECK_PAC_URL"] = f"http://127.0.0.1:{trickle_http()}/proxy.pac"
    elif scenario == "silent-dns":
        silent_dns()
    elif scenario != "plain":
        raise SystemExit(f"unknown scenario {scenario}")
    from netcheck.cli import main as netcheck

    netcheck(args)


if __name__ == "__main__":
    main()
