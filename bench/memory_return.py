"""Memory given back: the worker's resident memory idle, at its peak under the worst legal request, and after.

    python -m bench.memory_return [--models DIR] [--side 6300] [--views 3] [--at-once 2]
                                  [--variants default,arena2,no_trim] [--out FILE]

For each variant the service is started (bench.launch; the variant's environment), warmed with small
studies, and its worker's RSS read from /proc (VmRSS) when idle. Then `at-once` worst legal studies are
sent together, twice: `views` side x side 16-bit PNGs each (3 x 6300^2 = 119 M pixels, just under the
per-study limit of 120 M; 39.7 M pixels per view, under the 40 M per-view limit). VmRSS is read every
50 ms meanwhile (the peak) and 2 s after the last answer (after). Printed and saved: idle, peak and after
in MiB, after - idle (the figure to keep within the documented margin), and the outcomes. Loopback only.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bench.launch import Server, encode_multipart, running_gunicorn
from bench.overload import big_16_bit_png
from bench.restarts import post_study
from bench.workload import make_view_bytes

SETTLE_S = 2.0
# What each variant changes in the service's environment.
VARIANTS: dict[str, dict[str, str]] = {
    "default": {},  # what gunicorn.conf.py and the app do (the service's own allocator settings)
    "no_trim": {"TRIAGE_MEMORY_RELEASE": "off"},  # the allocator left as glibc sets it up: before this work
    "arena2": {"TRIAGE_MEMORY_RELEASE": "off", "MALLOC_ARENA_MAX": "2"},  # only fewer malloc arenas
}


def resident_mib(pid: int) -> float:
    """VmRSS of a process, MiB (0 when it cannot be read)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


class RssSampler:
    """Read a process's VmRSS every 50 ms until stopped; the largest value seen."""

    def __init__(self, pid: int) -> None:
        self.pid, self.peak, self.running = pid, resident_mib(pid), True
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        while self.running:
            self.peak = max(self.peak, resident_mib(self.pid))
            time.sleep(0.05)

    def stop(self) -> float:
        """Stop sampling; the peak in MiB."""
        self.running = False
        self.thread.join(timeout=5)
        return self.peak


def measure_variant(server: Server, side: int, views: int, at_once: int) -> dict[str, object]:
    """Idle, peak and after RSS of the worker around `at_once` x 2 worst legal studies."""
    [worker] = server.worker_pids()
    small = encode_multipart([(f"view{index}.png", make_view_bytes(index)) for index in range(3)])
    for _ in range(5):  # warm: first requests, lazily built pieces
        post_study(server.url, small)
    time.sleep(SETTLE_S)
    idle = resident_mib(worker)
    study = encode_multipart([(f"view{index}.png", big_16_bit_png(side)) for index in range(views)])
    sampler = RssSampler(worker)
    outcomes: list[str] = []
    started = time.monotonic()
    for _ in range(2):
        with ThreadPoolExecutor(max_workers=at_once) as pool:
            outcomes += pool.map(lambda _: post_study(server.url, study, 300), range(at_once))
    seconds = time.monotonic() - started
    time.sleep(SETTLE_S)
    after = resident_mib(worker)
    post_study(server.url, small)  # and a small study after the large ones
    time.sleep(SETTLE_S)
    after_small = resident_mib(worker)
    return {"idle_mib": round(idle, 1), "peak_mib": round(sampler.stop(), 1), "after_mib": round(after, 1),
            "after_small_study_mib": round(after_small, 1), "after_minus_idle_mib": round(after - idle, 1),
            "outcomes": dict(Counter(outcomes)), "seconds": round(seconds, 1),
            "study_mb": round(len(study[0]) / 1e6, 2)}


def main(argv: Sequence[str] | None = None) -> int:
    """Measure every variant; print one line each and save the record."""
    parser = argparse.ArgumentParser(prog="python -m bench.memory_return", description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=Path, default=Path("h5"))
    parser.add_argument("--side", type=int, default=6300, help="side of the 16-bit views (6300: 39.7 M pixels)")
    parser.add_argument("--views", type=int, default=3, help="views per study (3 x 6300^2: just under 120 M)")
    parser.add_argument("--at-once", type=int, default=2, help="worst studies sent together (two rounds)")
    parser.add_argument("--variants", default="default,no_trim", help=f"comma-separated, of {', '.join(VARIANTS)}")
    parser.add_argument("--out", type=Path, default=None, help="JSON record")
    args = parser.parse_args(argv)
    record: dict[str, object] = {"command": "python -m bench.memory_return " + " ".join(argv or sys.argv[1:]),
                                 "models": str(args.models), "side": args.side, "views": args.views,
                                 "at_once": args.at_once}
    for variant in args.variants.split(","):
        environment = {"TRIAGE_AUDIT_LOG": "", "TRIAGE_LOG_LEVEL": "warning", **VARIANTS[variant]}
        with tempfile.TemporaryDirectory() as folder, running_gunicorn(
                args.models, Path(folder) / "gunicorn.log", environment, threads=16) as server:
            server.wait_until_ready(300)
            record[variant] = figures = measure_variant(server, args.side, args.views, args.at_once)
        print(f"{variant}: idle {figures['idle_mib']} MiB, peak {figures['peak_mib']}, after {figures['after_mib']}"
              f" (+{figures['after_minus_idle_mib']}), after a small study {figures['after_small_study_mib']};"
              f" {figures['outcomes']} in {figures['seconds']} s", flush=True)
    if args.out:
        args.out.write_text(json.dumps(record, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
