"""What bench/reader_floor.py, bench/write_floor.py and bench/targets.py share: reading
`--loads`, the command lines of bench/write_floor.rs and bench/poll_floor.rs runs, and
writing a run's table and rows."""

import json
import os
import sys
import time


def loads(spec, most_users=None):
    """`USERSxRATE,...` as (text, users, rate) tuples; exits with the reason on bad input."""
    out = []
    for load in spec.split(","):
        try:
            users, rate = (int(x) for x in load.split("x"))
        except ValueError:
            sys.exit(f"--loads: {load!r} is not USERSxRATE, e.g. 1000x100")
        if users < 1 or rate < 1:
            sys.exit(f"--loads: {load!r} needs at least one user and one message a second")
        if most_users is not None and users > most_users:
            sys.exit(f"--loads: {load!r} has more than {most_users} users, more sockets than "
                     "a process here may hold")
        out.append((load, users, rate))
    return out


# The window of every bench/write_floor.rs run, as the loadgen runs beside it count theirs.
FLOOR_WARMUP_S = 2
FLOOR_DURATION_S = 8


def write_floor_command(binary, users, rate, long_poll, json_path):
    """bench/write_floor.rs at `users` x `rate`, its figures written to `json_path`."""
    return ([binary, "--users", str(users), "--rate", str(rate), "--warmup", str(FLOOR_WARMUP_S),
             "--duration", str(FLOOR_DURATION_S), "--json", json_path]
            + (["--long-poll"] if long_poll else []))


def poll_floor_command(binary, users, interval_s, json_path):
    """bench/poll_floor.rs: `users` sockets each asking every `interval_s` seconds, its
    figures written to `json_path`."""
    return [binary, "--users", str(users), "--interval", f"{interval_s}s", "--warmup", str(FLOOR_WARMUP_S),
            "--duration", str(FLOOR_DURATION_S), "--json", json_path]


def write_summary(out_dir, script, head, rows, table):
    """Writes `summary.md` (the command, the time, the kernel, then `head` and a row of
    `table(r)` per run) and `rows.json` to `out_dir`, and prints the table."""
    lines = [f"`python3 bench/{script} {' '.join(sys.argv[1:])}` at "
             f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, kernel {os.uname().release}.",
             "", head] + [table(r) for r in rows]
    with open(os.path.join(out_dir, "summary.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    with open(os.path.join(out_dir, "rows.json"), "w") as f:
        json.dump(rows, f, indent=1)
    print("\n".join(lines))
    print(f"written to {out_dir}/")
