#!/usr/bin/env python3
"""What the histories cost in memory when a client sends the largest messages it can.

Starts a `lab` server, posts `--messages` messages into `--rooms` rooms (round robin)
whose texts are `--max-message-bytes` control characters, which JSON escapes six-fold
(each message is then held as about 50 KB: its JSON and its SSE event), and prints the
server's resident memory before and after, with `--max-history-bytes` as given. The
budget is what bounds it; without one in reach the memory grows with every message.

    python3 bench/history_memory.py --lab target/release/lab --messages 4000 \\
        --max-history-bytes 33554432
"""

import argparse
import http.client
import json
import time

from idle_memory import rss_kib, start_lab


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lab", default="target/release/lab")
    ap.add_argument("--messages", type=int, default=4000)
    ap.add_argument("--rooms", type=int, default=1)
    ap.add_argument("--max-history-bytes", type=int, default=1 << 30)
    ap.add_argument("--max-message-bytes", type=int, default=4096)
    args = ap.parse_args()

    lab, port = start_lab(args.lab, "--results-dir", "/nonexistent",
                          "--max-history-bytes", str(args.max_history_bytes),
                          "--max-message-bytes", str(args.max_message_bytes))
    try:
        before = rss_kib(lab.pid)
        conn = http.client.HTTPConnection("127.0.0.1", port)
        body = json.dumps({"user": "u", "text": "\x01" * args.max_message_bytes})
        started = time.time()
        for i in range(args.messages):
            conn.request("POST", f"/rooms/r{i % args.rooms}/messages", body,
                         {"Content-Type": "application/json"})
            answer = conn.getresponse()
            answer.read()
            if answer.status != 201:
                raise RuntimeError(f"message {i}: {answer.status}")
        after = rss_kib(lab.pid)
        print(json.dumps({
            "messages": args.messages,
            "rooms": args.rooms,
            "max_history_bytes": args.max_history_bytes,
            "rss_before_mib": round(before / 1024, 1),
            "rss_after_mib": round(after / 1024, 1),
            "seconds": round(time.time() - started, 1),
        }))
    finally:
        lab.kill()
        lab.wait()


if __name__ == "__main__":
    main()
