"""Soak: steady load at about 70 % of capacity for N minutes; worker RSS and p50/p99 per minute.

    python -m bench.soak --minutes 30 [--models h5] [--fraction 0.7] [--out soak.json]

First measures the capacity (studies/s with 8 closed-loop clients for 20 s), then sends 2-view studies at
`fraction` of it on a fixed schedule (open loop: a slow answer does not slow the sender) from a pool of
threads, for `minutes` minutes. Each minute: studies sent, errors, p50/p99 latency, worker RSS. At the end:
RSS growth after warm-up (the last minute against the second), p99 drift (the last five minutes against
the first five after warm-up) and the error count. Loopback only; bounded in count and time.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from bench.launch import Server, running_gunicorn
from bench.machine import describe_machine
from bench.restarts import Clients, post_study


def worker_rss_mb(server: Server) -> float:
    """Resident memory of the gunicorn workers, MB (VmRSS)."""
    total = 0.0
    for pid in server.worker_pids():
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1]) / 1024
    return total


def measure_capacity(server: Server, seconds: float = 20.0) -> float:
    """Studies/s that 8 closed-loop clients get answered with 200."""
    load = Clients(server.url, 8)
    time.sleep(seconds)
    outcomes = load.stop()
    return sum(outcome == "200" for _, _, outcome in outcomes) / seconds


def soak(server: Server, rate: float, minutes: int) -> list[dict[str, float]]:
    """Send studies at `rate` per second for `minutes`; one record per minute."""
    records, interval = [], 1.0 / rate
    with ThreadPoolExecutor(max_workers=32) as pool:
        start = time.monotonic()
        for minute in range(minutes):
            futures, minute_start = [], start + 60 * minute
            sent = 0
            while time.monotonic() < minute_start + 60:
                due = minute_start + sent * interval
                time.sleep(max(0.0, due - time.monotonic()))
                futures.append(pool.submit(_timed_post, server.url))
                sent += 1
            results = [future.result() for future in futures]
            latencies = [seconds for outcome, seconds in results if outcome == "200"]
            records.append({"minute": minute + 1, "sent": sent, "errors": sum(o != "200" for o, _ in results),
                            "p50_s": float(np.percentile(latencies, 50)) if latencies else float("nan"),
                            "p99_s": float(np.percentile(latencies, 99)) if latencies else float("nan"),
                            "worker_rss_mb": round(worker_rss_mb(server), 1)})
            print(json.dumps(records[-1]), flush=True)
    return records


def _timed_post(url: str) -> tuple[str, float]:
    started = time.monotonic()
    outcome = post_study(url)
    return outcome, time.monotonic() - started


def summarise(records: list[dict[str, float]]) -> dict[str, float]:
    """RSS growth after warm-up, p99 drift, errors."""
    settled = records[1:] if len(records) > 2 else records
    early, late = settled[:5], settled[-5:]
    return {"rss_growth_after_warm_up": settled[-1]["worker_rss_mb"] / settled[0]["worker_rss_mb"] - 1,
            "p99_drift": float(np.median([r["p99_s"] for r in late]) / np.median([r["p99_s"] for r in early]) - 1),
            "errors": sum(int(r["errors"]) for r in records)}


def main(argv: list[str] | None = None) -> int:
    """Measure capacity, soak, print and save the record."""
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=int, default=30)
    parser.add_argument("--models", type=Path, default=Path("h5"))
    parser.add_argument("--fraction", type=float, default=0.7)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as folder, running_gunicorn(
            args.models, Path(folder) / "gunicorn.log", {"TRIAGE_AUDIT_LOG": ""}, threads=32) as server:
        server.wait_until_ready(300)
        capacity = measure_capacity(server)
        rate = args.fraction * capacity
        print(f"capacity {capacity:.1f} studies/s; soaking at {rate:.1f} studies/s for {args.minutes} min", flush=True)
        records = soak(server, rate, args.minutes)
    result = {"machine": describe_machine(), "models": str(args.models), "capacity_studies_per_s": capacity,
              "rate_studies_per_s": rate, "minutes": records, "summary": summarise(records)}
    print(json.dumps(result["summary"]))
    if args.out:
        args.out.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
