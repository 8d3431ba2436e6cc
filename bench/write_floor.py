#!/usr/bin/env python3
"""The lab's fan-out beside the floor a bare writer and reader set on this machine.

For each load, alternately: (1) bench/write_floor.rs: one process writing a message to
each of N loopback sockets per period on the first core, one reading them on the second,
nothing else; (2) the loadgen at the same load (`loadgen --mode ws`, its own child lab
on the first core). Prints, per run, the p99 from the due time, the writer's (server's)
and the reader's (loadgen's) CPU per message, and writes them to `--out` (default
`results/floor/<UTC time>-write/`, `-long-poll/` with `--long-poll`).

    cargo build --release && cargo build --release -p loadgen --example write_floor
    python3 bench/write_floor.py --repeat 3
    python3 bench/write_floor.py --repeat 3 --long-poll --loads 1000x10,1000x50

The stream floor writes one message per write, as the lab does when it keeps up; the
lab, when it falls behind, writes several at once, which that floor cannot. With
`--long-poll` the floor holds each request and answers it with what has come (several
messages at once for a socket that asked late), as the lab does, and the loadgen runs
`--mode long-poll`.
"""

import argparse
import json
import os
import subprocess
import sys
import time

import floor_runs

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REL = os.path.join(ROOT, "target", "release")


def floor(users, rate, out_dir, tag, long_poll):
    path = os.path.join(out_dir, f"floor-{tag}.json")
    subprocess.run(floor_runs.write_floor_command(os.path.join(REL, "examples", "write_floor"),
                                                  users, rate, long_poll, path),
                   check=True, stdout=subprocess.DEVNULL, timeout=120 + users / 100)
    r = json.load(open(path))
    return {
        "who": "bare writer + reader",
        "p50_ms": r["reader"]["latency_ms"]["p50"],
        "p99_ms": r["reader"]["latency_ms"]["p99"],
        "writer_us": r["writer_us_per_message"],
        "reader_us": r["reader"]["us_per_message"],
        "complete": (r["reader"]["messages"] == r["messages_per_s"] * floor_runs.FLOOR_DURATION_S
                     and r["writes_not_taken"] == 0),
        "steal_pct": r["steal_pct"] or 0.0,
    }


def lab(users, rate, out_dir, tag, long_poll):
    path = os.path.join(out_dir, f"loadgen-{tag}.json")
    mode = "long-poll" if long_poll else "ws"
    subprocess.run([os.path.join(REL, "loadgen"), "--mode", mode, "--users", str(users),
                    "--senders", "100", "--rate", str(rate), "--duration", f"{floor_runs.FLOOR_DURATION_S}s",
                    "--warmup", f"{floor_runs.FLOOR_WARMUP_S}s",
                    "--quiet", "--json", path], check=True, stdout=subprocess.DEVNULL,
                   timeout=180 + users / 50)
    run = json.load(open(path))["runs"][0]
    d = run["deliveries"]
    n = d["received"]
    return {
        "who": "lab + loadgen",
        "p50_ms": run["latency_us"]["p50"] / 1000,
        "p99_ms": run["latency_us"]["p99"] / 1000,
        "writer_us": run["server"]["cpu_seconds"] / n * 1e6,
        "reader_us": run["loadgen"]["cpu_seconds"] / n * 1e6,
        "complete": d["lost"] == 0 and d["duplicated"] == 0 and n == d["expected"],
        "steal_pct": run["machine_cpu"].get("steal_pct") or 0.0,
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--loads", default="10000x10,1000x100",
                    help="users x messages per second, comma-separated")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--long-poll", action="store_true", help="held requests instead of a stream")
    ap.add_argument("--out")
    a = ap.parse_args()
    if len(os.sched_getaffinity(0)) < 2:
        sys.exit("needs two cores: the writer on one, the reader on the other")
    loads = floor_runs.loads(a.loads, most_users=18000)
    stamp = time.strftime("%Y-%m-%dT%H%M%SZ", time.gmtime())
    kind = "long-poll" if a.long_poll else "write"
    out_dir = a.out or os.path.join(ROOT, "results", "floor", f"{stamp}-{kind}")
    os.makedirs(out_dir, exist_ok=True)
    rows = []
    for load, users, rate in loads:
        for k in range(a.repeat):
            for run in (floor, lab):
                rows.append({"load": load, **run(users, rate, out_dir, f"{load}-{k + 1}", a.long_poll)})
                print(fmt(rows[-1]), flush=True)
    head = ("| users x msg/s | who | p50 ms | p99 ms | writer (server) µs a message "
            "| reader (loadgen) µs a message | every message once | steal |\n"
            "| --- | --- | --- | --- | --- | --- | --- | --- |")
    floor_runs.write_summary(out_dir, "write_floor.py", head, rows, table)


def fmt(r):
    return (f"{r['load']:>10} {r['who']:<21} p50 {r['p50_ms']:6.1f} ms p99 {r['p99_ms']:6.1f} ms  "
            f"writer {r['writer_us']:.2f} us  reader {r['reader_us']:.2f} us  "
            f"{'complete' if r['complete'] else 'INCOMPLETE'}  steal {r['steal_pct']:.1f}%")


def table(r):
    return (f"| {r['load']} | {r['who']} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | {r['writer_us']:.2f} | "
            f"{r['reader_us']:.2f} | {'yes' if r['complete'] else 'no'} | {r['steal_pct']:.1f}% |")


if __name__ == "__main__":
    main()
