#!/usr/bin/env python3
"""The loadgen's CPU per delivery against a bare WebSocket reader's at the same load.

For each load, alternately: (1) the bare reader: a lab bound to the first core, the bare
reader of bench/reader_floor.rs (one thread, no runtime) on the second with the given
number of subscribers, and a few loadgen senders beside it posting the messages; (2)
the loadgen itself at the same load (`loadgen --mode ws`, its own child lab). Prints,
per run, each client's and the server's CPU per delivery and their ratio, and writes
them to `--out` (default `results/floor/<UTC time>/`).

    cargo build --release && cargo build --release -p loadgen --example reader_floor
    python3 bench/reader_floor.py --repeat 2

The loadgen's CPU includes its senders' work; the bare reader's senders are another
process, not counted in its figure.

With `--uring` the bare reader also runs with io_uring receives (build the example with
`--features uring`).
"""

import argparse
import csv
import io
import json
import os
import subprocess
import sys
import time

import floor_runs

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REL = os.path.join(ROOT, "target", "release")
# The senders' own subscribers: the server delivers to them too.
SENDERS = 10


def free_port():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port, proc, seconds=10):
    import socket
    end = time.time() + seconds
    while time.time() < end:
        if proc.poll() is not None:
            sys.exit(f"the lab exited ({proc.returncode}) before listening on {port}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    sys.exit(f"the lab did not listen on {port} within {seconds} s")


def first_line(pipe, seconds):
    import select
    ready, _, _ = select.select([pipe], [], [], seconds)
    return pipe.readline() if ready else ""


def on(core):
    return lambda: os.sched_setaffinity(0, {core})


def floor(users, rate, uring, warmup, duration):
    port = free_port()
    addr = f"127.0.0.1:{port}"
    room = f"floor-{int(time.time())}"
    lab = subprocess.Popen([os.path.join(REL, "lab"), "--addr", addr, "--threads", "1"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=on(0))
    r = None
    try:
        wait_for_port(port, lab)
        reader = [os.path.join(REL, "examples", "reader_floor"), "--target", addr, "--room", room,
                  "--users", str(users), "--server-pid", str(lab.pid),
                  "--warmup", str(warmup), "--duration", str(duration)]
        if uring:
            reader.append("--uring")
        r = subprocess.Popen(reader, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             preexec_fn=on(1))
        said = first_line(r.stderr, 60 + users / 100)
        if not said.startswith("connected"):
            sys.exit(f"reader_floor failed: {said.strip()} {r.stderr.read().strip()}")
        send_for = warmup + duration + 2
        senders = subprocess.run(
            [os.path.join(REL, "loadgen"), "--target", addr, "--room", room, "--mode", "ws",
             "--users", str(SENDERS), "--senders", str(SENDERS), "--rate", str(rate),
             "--duration", f"{send_for}s", "--warmup", "1s", "--quiet", "--no-pin",
             "--json", os.devnull],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, preexec_fn=on(1),
            timeout=send_for + 60)
        out, err = r.communicate(timeout=60)
        if r.returncode != 0:
            sys.exit(f"reader_floor failed: {err.strip()}")
        if senders.returncode != 0:
            sys.exit(f"the senders failed: {senders.stderr.strip()}")
    finally:
        for p in (r, lab):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait()
    row = next(csv.DictReader(io.StringIO(out)))
    share = users / (users + SENDERS)
    client = float(row["reader_us_per_delivery"])
    server = float(row["server_us_per_reader_delivery"]) * share
    return {
        "client": "reader (" + row["reader"] + ")",
        "client_us": client,
        "client_system_us": float(row["reader_system_us_per_delivery"]),
        "server_us": server,
        "server_system_us": float(row["server_system_us_per_reader_delivery"]) * share,
        "p99_ms": None,
        "reads_per_delivery": float(row["reads"]) / float(row["deliveries"]),
        "deliveries": int(float(row["deliveries"])),
        "waits": int(row["waits"]),
        "window_s": duration,
    }


def loadgen(users, rate, out_dir, tag):
    path = os.path.join(out_dir, f"loadgen-{tag}.json")
    subprocess.run([os.path.join(REL, "loadgen"), "--mode", "ws", "--users", str(users),
                    "--senders", "100", "--rate", str(rate), "--duration", "8s", "--warmup", "2s",
                    "--quiet", "--json", path], check=True, stdout=subprocess.DEVNULL)
    run = json.load(open(path))["runs"][0]
    n = run["deliveries"]["received"]
    lg, srv = run["loadgen"], run["server"]
    return {
        "client": "loadgen",
        "client_us": lg["cpu_seconds"] / n * 1e6,
        "client_system_us": lg["system_cpu_seconds"] / n * 1e6,
        "server_us": srv["cpu_seconds"] / n * 1e6,
        "server_system_us": (srv.get("system_cpu_seconds") or 0) / n * 1e6,
        "p99_ms": run["latency_us"]["p99"] / 1000,
        "reads_per_delivery": None,
        "deliveries": n,
        "waits": None,
        "window_s": run.get("counted_s"),
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--loads", default="1000x100,10000x10,1000x400",
                    help="users x messages per second, comma-separated")
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--uring", action="store_true")
    ap.add_argument("--out")
    a = ap.parse_args()
    if len(os.sched_getaffinity(0)) < 2:
        sys.exit("needs two cores: the server on one, the clients on the other")
    loads = floor_runs.loads(a.loads)
    out_dir = a.out or os.path.join(ROOT, "results", "floor", time.strftime("%Y-%m-%dT%H%M%SZ", time.gmtime()))
    os.makedirs(out_dir, exist_ok=True)
    rows = []
    for load, users, rate in loads:
        for k in range(a.repeat):
            kinds = [("epoll", False)] + ([("io_uring", True)] if a.uring else [])
            for name, uring in kinds:
                rows.append({"load": load, **floor(users, rate, uring, 4, 8)})
                print(fmt(rows[-1]), flush=True)
            rows.append({"load": load, **loadgen(users, rate, out_dir, f"{load}-{k + 1}")})
            print(fmt(rows[-1]), flush=True)
    head = ("| users x msg/s | client | client µs/delivery (kernel) | server µs/delivery (kernel) "
            "| client/server | p99 ms (loadgen only) |\n| --- | --- | --- | --- | --- | --- |")
    floor_runs.write_summary(out_dir, "reader_floor.py", head, rows, table)


def fmt(r):
    return (f"{r['load']:>10} {r['client']:<16} client {r['client_us']:.2f} us ({r['client_system_us']:.2f} kernel) "
            f"server {r['server_us']:.2f} us ({r['server_system_us']:.2f}) ratio {r['client_us'] / r['server_us']:.2f} "
            + (f" p99 {r['p99_ms']:.1f} ms" if r["p99_ms"] is not None else ""))


def table(r):
    return (f"| {r['load']} | {r['client']} | {r['client_us']:.2f} ({r['client_system_us']:.2f}) | "
            f"{r['server_us']:.2f} ({r['server_system_us']:.2f}) | {r['client_us'] / r['server_us']:.2f} | "
            + (f"{r['p99_ms']:.1f} |" if r["p99_ms"] is not None else "- |"))


if __name__ == "__main__":
    main()
