#!/usr/bin/env python3
"""Resident memory per idle connection, per transport.

Starts a `lab` server, opens N idle connections of one transport (raw sockets, one
asyncio process, nothing but the request sent and the response head read; a long-poll
connection is held on its second poll, as a client that polls again is), and reads
the server's resident memory before and after from /proc. Prints one JSON line per
transport.

    python3 bench/idle_memory.py --lab target/release/lab --connections 10000
"""

import argparse
import asyncio
import base64
import json
import os
import resource
import socket
import subprocess
import sys
import time
import urllib.request


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def request(transport, i):
    if transport == "sse":
        return "GET /rooms/idle/events HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n"
    if transport == "long_poll":
        return f"GET /rooms/idle/long-poll?client=c{i}&timeout_ms=60000 HTTP/1.1\r\nHost: x\r\n\r\n"
    if transport == "ws":
        key = base64.b64encode(os.urandom(16)).decode()
        return ("GET /rooms/idle/ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n")
    raise ValueError(transport)


async def open_one(port, transport, i, sem):
    async with sem:
        # Spread over several source addresses so ephemeral ports never run short.
        src = f"127.0.0.{2 + i % 8}"
        reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(src, 0))
        if transport == "long_poll":
            # A long-poll client polls again on the same connection: a first poll
            # answered at once (timeout 0), then the held one, as in steady state
            # (the connection then also holds its keep-alive timer).
            writer.write(f"GET /rooms/idle/long-poll?client=c{i}&timeout_ms=0 HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            head = await reader.readuntil(b"\r\n\r\n")
            if not head.startswith(b"HTTP/1.1 200"):
                raise RuntimeError(head[:80])
            length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                          if line.lower().startswith(b"content-length:"))
            await reader.readexactly(length)
        writer.write(request(transport, i).encode())
        await writer.drain()
        if transport != "long_poll":
            head = await reader.readuntil(b"\r\n\r\n")
            if not (head.startswith(b"HTTP/1.1 200") or head.startswith(b"HTTP/1.1 101")):
                raise RuntimeError(head[:80])
        return reader, writer


def open_gauge(port, transport):
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics").read().decode()
    for line in text.splitlines():
        if line.startswith(f'lab_open_connections{{transport="{transport}"}}'):
            return float(line.split()[-1])
    return 0.0


def start_lab(lab, *args):
    """A `lab` on a free loopback port with `args`, once it answers: (process, port)."""
    port = free_port()
    server = subprocess.Popen([lab, "--addr", f"127.0.0.1:{port}", *args],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(100):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz").read()
            break
        except OSError:
            time.sleep(0.05)
    return server, port


async def measure(lab, transport, n, settle):
    server, port = start_lab(lab)
    try:
        # Warm the room and the allocator with a few connections first.
        sem = asyncio.Semaphore(500)
        warm = [await open_one(port, transport, n + i, sem) for i in range(10)]
        time.sleep(settle)
        before = rss_kib(server.pid)
        started = time.time()
        conns = await asyncio.gather(*(open_one(port, transport, i, sem) for i in range(n)))
        opened_s = time.time() - started
        time.sleep(settle)
        open_now = open_gauge(port, transport)
        after = rss_kib(server.pid)
        per_conn = (after - before) * 1024 / n
        for _, w in conns + warm:
            w.close()
        return {
            "transport": transport,
            "connections": n,
            "open_gauge": open_now,
            "rss_before_kib": before,
            "rss_after_kib": after,
            "bytes_per_connection": round(per_conn),
            "kib_per_connection": round(per_conn / 1024, 2),
            "open_seconds": round(opened_s, 2),
        }
    finally:
        server.terminate()
        server.wait(timeout=10)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lab", default="target/release/lab")
    ap.add_argument("--connections", type=int, default=10000)
    ap.add_argument("--transports", default="sse,ws,long_poll")
    ap.add_argument("--settle", type=float, default=1.0)
    args = ap.parse_args()
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    for t in args.transports.split(","):
        print(json.dumps(asyncio.run(measure(args.lab, t, args.connections, args.settle))), flush=True)


if __name__ == "__main__":
    sys.exit(main())
