#!/usr/bin/env python3
"""Every load target of the comparison, measured and judged in one go.

Runs the loadgen (which starts its own child `lab`) once per target and round, reads
each run's JSON, and judges it against the target's threshold: p99 latencies, short
polling's requests per second, the deliveries per second at the highest rates, nothing
lost or duplicated, and the loadgen's CPU per delivery against the server's. Idle
memory per connection comes from bench/idle_memory.py. Each target is run in turn
within a round, so rounds show how far the same command moves on a shared machine;
`machine_cpu.steal_pct` of every run is printed beside it.

    cargo build --release
    python3 bench/targets.py --rounds 3

Writes every run's JSON and `summary.md` (the table printed at the end) under
`--out` (default `results/targets/<UTC time>`); exits 1 if a target was missed in
any round. The step-up target has its own command: `loadgen step-up --modes ws,sse`.
With `--floor`, the WebSocket and long-poll latency targets are each followed by
bench/write_floor.rs at the same load, its p99 printed beside theirs and its
reader's CPU over its writer's beside the loadgen/server CPU; short polling is
followed by bench/poll_floor.rs, and its client/server CPU is printed beside the
loadgen/server CPU.
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import time

import floor_runs

# name, loadgen arguments (besides --quiet --json), what is judged
COMMON = ["--senders", "100", "--duration", "8s", "--warmup", "2s"]
RUNS = [
    ("ws-100k", ["--mode", "ws", "--users", "1000", "--rate", "100"] + COMMON),
    ("sse-100k", ["--mode", "sse", "--users", "1000", "--rate", "100"] + COMMON),
    ("long-poll-10", ["--mode", "long-poll", "--users", "1000", "--rate", "10"] + COMMON),
    ("long-poll-50", ["--mode", "long-poll", "--users", "1000", "--rate", "50"] + COMMON),
    ("poll-1s", ["--mode", "poll", "--users", "1000", "--rate", "10", "--poll-interval", "1s"] + COMMON),
    ("ws-400k", ["--mode", "ws", "--users", "1000", "--rate", "400"] + COMMON),
    ("sse-300k", ["--mode", "sse", "--users", "1000", "--rate", "300"] + COMMON),
    ("ws-10k-users", ["--mode", "ws", "--users", "10000", "--senders", "100", "--rate", "10",
                      "--duration", "10s", "--warmup", "2s"]),
]
IDLE_KIB = {"ws": 4.0, "sse": 6.0, "long_poll": 8.0}
# With --floor: the load bench/write_floor.rs runs right after each of these targets
# (users, messages per second, long poll?), so that a missed target is set beside what
# a bare writer and reader reach on the machine in the same minute.
FLOOR = {
    "ws-100k": (1000, 100, False),
    "long-poll-10": (1000, 10, True),
    "long-poll-50": (1000, 50, True),
    "ws-10k-users": (10000, 10, False),
}
# With --floor: bench/poll_floor.rs (users, interval in seconds) right after short
# polling, whose loadgen/server CPU is set beside what a bare client and server spend.
POLL_FLOOR = {"poll-1s": (1000, 1)}


def ms(us):
    return us / 1000.0


def exact(run):
    d = run["deliveries"]
    return d["lost"] == 0 and d["duplicated"] == 0 and d["received"] == d["expected"]


def judge(name, run, same_round):
    """(the target's wording, the measured value as text, met?) for one run."""
    p99 = ms(run["latency_us"]["p99"])
    whole = "" if exact(run) else f", {run['deliveries']['lost']} lost, {run['deliveries']['duplicated']} duplicated"
    if name == "ws-100k":
        return "WS, 1,000 users, 100 msg/s: p99 <= 20 ms", f"{p99:.1f} ms{whole}", p99 <= 20 and exact(run)
    if name == "sse-100k":
        ws = same_round.get("ws-100k")
        if ws is None:
            return "SSE at the same load: p99 within 1.5x of WS", f"{p99:.1f} ms (no WS run)", False
        x = p99 / ms(ws["latency_us"]["p99"])
        return "SSE at the same load: p99 within 1.5x of WS", f"{p99:.1f} ms ({x:.2f}x){whole}", x <= 1.5 and exact(run)
    if name == "long-poll-10":
        return "long poll, 1,000 users, 10 msg/s: p99 <= 20 ms", f"{p99:.1f} ms{whole}", p99 <= 20 and exact(run)
    if name == "long-poll-50":
        return "long poll, 1,000 users, 50 msg/s: p99 <= 50 ms", f"{p99:.1f} ms{whole}", p99 <= 50 and exact(run)
    if name == "poll-1s":
        interval = 1000.0
        rtt = ms(run["connect_us"]["p50"])
        model = interval + rtt
        per_s = run["requests"].get("per_s") or 0.0
        want = run["users"] / (interval / 1000.0)
        ok = abs(p99 - model) <= 0.10 * model and abs(per_s - want) <= 0.05 * want and exact(run)
        return ("short poll, 1,000 users, 1 s: p99 within 10% of interval + round trip, "
                "requests/s within 5% of users / interval",
                f"{p99:.1f} ms (model {model:.1f}), {per_s:.0f} requests/s (model {want:.0f}){whole}", ok)
    # Sustained: every message delivered within 100 ms of when it was due, so a
    # server that made the senders late (their lag is not in `latency_us`) fails.
    due_p99 = ms(run["latency_from_due_us"]["p99"])
    if name == "ws-400k":
        return ("WS: 400,000 deliveries/s sustained, p99 from the due time under 100 ms",
                f"{due_p99:.1f} ms ({p99:.1f} from the send){whole}", due_p99 < 100 and exact(run))
    if name == "sse-300k":
        return ("SSE: 300,000 deliveries/s sustained, p99 from the due time under 100 ms",
                f"{due_p99:.1f} ms ({p99:.1f} from the send){whole}", due_p99 < 100 and exact(run))
    if name == "ws-10k-users":
        return "10,000 WS users at 10 msg/s: p99 <= 100 ms", f"{p99:.1f} ms{whole}", p99 <= 100 and exact(run)
    raise ValueError(name)


def cpu_ratio(run):
    """The loadgen's CPU per delivery over the server's (the same deliveries)."""
    server = run["server"].get("cpu_seconds")
    if not server:
        return None
    return run["loadgen"]["cpu_seconds"] / server


def own_code_ratio(run):
    """The loadgen's user-space CPU (its own code, without the kernel's part) over the
    server's whole CPU: how far the instrument itself, not the loopback kernel work
    charged to it, is from the server."""
    server = run["server"].get("cpu_seconds")
    system = run["loadgen"].get("system_cpu_seconds")
    if not server or system is None:
        return None
    return (run["loadgen"]["cpu_seconds"] - system) / server


def server_us(run):
    server = run["server"].get("cpu_seconds")
    received = run["deliveries"]["received"]
    return server * 1e6 / received if server and received else None


def run_floor(command, path):
    """Runs a bare pair whose figures go to `path`: them, or the reason there are none."""
    done = subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if done.returncode != 0:
        return None, f"the floor failed: {done.stderr.strip()[-120:]}"
    return json.load(open(path)), None


def write_floor_figures(binary, name, out, rnd):
    """The bare pair's p99 (ms) and its reader's CPU over its writer's at `name`'s load,
    or the reason it has none."""
    users, rate, long_poll = FLOOR[name]
    path = os.path.join(out, f"round{rnd}-{name}-floor.json")
    got, why = run_floor(floor_runs.write_floor_command(binary, users, rate, long_poll, path), path)
    if got is None:
        return None, None, why
    writer = got["writer_us_per_message"]
    ratio = got["reader"]["us_per_message"] / writer if writer > 0 else None
    return got["reader"]["latency_ms"]["p99"], ratio, None


def poll_floor_ratio(binary, name, out, rnd):
    """The bare short-poll pair's client CPU over its server's at `name`'s load, or the
    reason it has none."""
    users, interval = POLL_FLOOR[name]
    path = os.path.join(out, f"round{rnd}-{name}-floor.json")
    got, why = run_floor(floor_runs.poll_floor_command(binary, users, interval, path), path)
    return (got["client_over_server"] if got else None), why


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--loadgen", default="target/release/loadgen")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--only", help="comma-separated target names: " + ",".join(n for n, _ in RUNS))
    ap.add_argument("--no-idle-memory", action="store_true", help="skip bench/idle_memory.py")
    ap.add_argument("--floor", action="store_true",
                    help="after " + ", ".join(FLOOR) + ": a bare writer and reader at the same load "
                    "(bench/write_floor.rs); after " + ", ".join(POLL_FLOOR) + ": a bare client and "
                    "server (bench/poll_floor.rs); build both with `cargo build --release -p loadgen "
                    "--example write_floor --example poll_floor`")
    ap.add_argument("--out")
    args = ap.parse_args()
    if args.rounds < 1:
        ap.error("--rounds must be at least 1")
    names = [n for n, _ in RUNS]
    chosen = names if not args.only else args.only.split(",")
    if "sse-100k" in chosen and "ws-100k" not in chosen:
        chosen.append("ws-100k")  # SSE's target is relative to WebSocket's
    unknown = [n for n in chosen if n not in names]
    if unknown:
        ap.error(f"unknown target {', '.join(unknown)}; the targets are {', '.join(names)}")
    if not os.access(args.loadgen, os.X_OK):
        ap.error(f"{args.loadgen} is not an executable; run `cargo build --release` first")
    floor_bin = os.path.join(os.path.dirname(args.loadgen), "examples", "write_floor")
    poll_floor_bin = os.path.join(os.path.dirname(args.loadgen), "examples", "poll_floor")
    for binary in (floor_bin, poll_floor_bin):
        if args.floor and not os.access(binary, os.X_OK):
            ap.error(f"{binary} is not an executable; run `cargo build --release -p loadgen "
                     "--example write_floor --example poll_floor` first")
    out = args.out or os.path.join("results", "targets", time.strftime("%Y-%m-%dT%H%M%SZ", time.gmtime()))
    os.makedirs(out, exist_ok=True)

    # rows[target wording] = [(round, value text, met)]; ratios[name] = [ratio]
    rows, ratios, own_ratios, steal, commit = {}, {}, {}, [], None
    floor_ratios = {}  # name -> [the bare pair's client (reader) CPU over its server's (writer's)]
    for rnd in range(1, args.rounds + 1):
        same_round = {}
        for name, flags in RUNS:
            if name not in chosen:
                continue
            path = os.path.join(out, f"round{rnd}-{name}.json")
            cmd = [args.loadgen] + flags + ["--quiet", "--json", path]
            done = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            if done.returncode != 0:
                what = f"{name}: loadgen failed: {done.stderr.strip().splitlines()[-1:] or done.returncode}"
                rows.setdefault(f"{name} (the run failed)", []).append((rnd, what, False))
                print(f"round {rnd} {what}", flush=True)
                continue
            doc = json.load(open(path))
            commit = commit or doc["tool"].get("git_commit")
            run = doc["runs"][0]
            same_round[name] = run
            wording, value, met = judge(name, run, same_round)
            # The bare pair at this target's load: its client (reader) CPU over its
            # server's (writer's), and for a latency target its p99.
            bare, why = None, None
            if args.floor and name in FLOOR:
                p99, bare, why = write_floor_figures(floor_bin, name, out, rnd)
                if why is None:
                    value += f" (bare pair {p99:.1f} ms)"
            elif args.floor and name in POLL_FLOOR:
                bare, why = poll_floor_ratio(poll_floor_bin, name, out, rnd)
            if why is not None:
                value += f" ({why})"
            if bare is not None:
                floor_ratios.setdefault(name, []).append(bare)
            rows.setdefault(wording, []).append((rnd, value, met))
            r = cpu_ratio(run)
            if r is not None:
                ratios.setdefault(name, []).append(r)
            own = own_code_ratio(run)
            if own is not None:
                own_ratios.setdefault(name, []).append(own)
            st = run["machine_cpu"].get("steal_pct")
            if st is not None:
                steal.append(st)
            us = server_us(run)
            figures = ", ".join(x for x in [
                f"server {us:.2f} us/delivery" if us is not None else "",
                f"loadgen/server CPU {r:.2f}" if r is not None else "",
                f"(bare pair {bare:.2f})" if bare is not None else "",
                f"(its user space {own:.2f})" if own is not None else "",
                f"steal {st:.1f}%" if st is not None else "",
            ] if x)
            print(f"round {rnd} {name:13} {value:55} {'met' if met else 'MISSED'}  {figures}", flush=True)
        if not args.no_idle_memory and rnd == 1:
            lab = os.path.join(os.path.dirname(args.loadgen), "lab")
            idle = subprocess.run([sys.executable, os.path.join(os.path.dirname(__file__), "idle_memory.py"),
                                   "--lab", lab, "--connections", "10000"],
                                  capture_output=True, text=True)
            with open(os.path.join(out, "idle-memory.jsonl"), "w") as f:
                f.write(idle.stdout)
            for line in idle.stdout.splitlines():
                m = json.loads(line)
                limit = IDLE_KIB[m["transport"]]
                wording = f"idle {m['transport']} at 10,000: <= {limit:.0f} KiB of server memory each"
                # The gauge also counts the script's few warm-up connections.
                met = m["kib_per_connection"] <= limit and m["open_gauge"] >= m["connections"]
                rows.setdefault(wording, []).append((rnd, f"{m['kib_per_connection']:.2f} KiB", met))
                print(f"round {rnd} {wording}: {m['kib_per_connection']:.2f} KiB {'met' if met else 'MISSED'}", flush=True)
            if idle.returncode != 0:
                rows.setdefault("idle memory", []).append((rnd, idle.stderr.strip()[-200:], False))

    ratio_met = all(r <= 1.0 for rs in ratios.values() for r in rs)
    lines = [
        "# The load targets, measured",
        "",
        f"`python3 bench/targets.py {' '.join(sys.argv[1:])}` at {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
        f"loadgen and lab of commit `{(commit or 'unknown')[:7]}`, {os.cpu_count()} cores, kernel {platform.release()}; "
        f"steal {min(steal, default=0):.1f}-{max(steal, default=0):.1f}% over the runs. "
        "Every run's JSON is beside this file."
        + (" \"Bare pair\": the p99 of bench/write_floor.rs (a writer and a reader with nothing "
           "else, one message per socket per write) at the same load, run right after the target, and "
           "beside the loadgen/server CPU its reader's CPU over its writer's; beside short polling's "
           "loadgen/server CPU, the client/server CPU of bench/poll_floor.rs (a bare client asking at "
           "the loadgen's phases and a bare server answering) at its load."
           if args.floor else ""),
        "",
        "| target | " + " | ".join(f"round {r}" for r in range(1, args.rounds + 1)) + " | met in |",
        "| --- | " + " | ".join("---" for _ in range(args.rounds)) + " | --- |",
    ]
    missed = False
    for wording, results in rows.items():
        cells = {rnd: value for rnd, value, _ in results}
        met = sum(1 for _, _, ok in results if ok)
        missed |= met < len(results)
        lines.append(f"| {wording} | " + " | ".join(cells.get(r, "") for r in range(1, args.rounds + 1))
                     + f" | {met} of {len(results)} |")
    def bare(n):
        rs = floor_ratios.get(n)
        return f" (bare pair {min(rs):.2f}-{max(rs):.2f})" if rs else ""
    per_run = ", ".join(f"{n} {min(rs):.2f}-{max(rs):.2f}{bare(n)}" for n, rs in ratios.items())
    n_ratio = sum(len(rs) for rs in ratios.values())
    n_ratio_met = sum(1 for rs in ratios.values() for r in rs if r <= 1.0)
    lines.append(f"| loadgen CPU per delivery <= server's (loadgen/server: {per_run}) | "
                 + " | ".join("" for _ in range(args.rounds)) + f" | {n_ratio_met} of {n_ratio} runs |")
    if own_ratios:
        per_run = ", ".join(f"{n} {min(rs):.2f}-{max(rs):.2f}" for n, rs in own_ratios.items())
        lines.append(f"| (the loadgen's user-space CPU alone, over the server's whole: {per_run}) | "
                     + " | ".join("" for _ in range(args.rounds)) + " | |")
    missed |= not ratio_met
    lines.append("")
    summary = "\n".join(lines)
    with open(os.path.join(out, "summary.md"), "w") as f:
        f.write(summary)
    print()
    print(summary)
    print(f"written to {out}/")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
