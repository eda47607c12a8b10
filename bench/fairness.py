"""Fair shares measured: a victim client's accepted rate alone, then while another client floods /predict.

    python -m bench.fairness [--models DIR] [--seconds 12] [--flood-clients 24] [--victim-rate 5] [--out FILE]

For each mode the service is started (bench.launch, gunicorn.conf.py's threads and in-flight cap):
`keys` (two API keys, both clients on 127.0.0.1), `addresses` (no keys; the victim connects from
127.0.0.2, the flood from 127.0.0.1) and `no_share` (keys, TRIAGE_FAIR_SHARE_RECENT_S=0: a client counts
only while it holds a slot, which is about what the service did before fair shares). The victim sends
1-view studies open loop at `victim-rate` per second (each once: a 503 is a refusal, not retried); the
flood is `flood-clients` closed-loop clients, in their own process, that send again as soon as they get
an answer (503 or 200). Printed and saved: the victim's accepted studies/s alone and under the flood,
their ratio (target >= 0.8), its latency, and every outcome. Loopback only; about 100 s in all with the defaults.
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bench.launch import Server, encode_multipart, running_gunicorn
from bench.workload import make_view_bytes

KEYS = {"victim": "victim-key-0123456789abcdef", "flood": "flood-key-0123456789abcdef"}
MODES = {"keys": {"TRIAGE_API_KEYS": ",".join(f"{name}:{key}" for name, key in KEYS.items())},
         "addresses": {},
         "no_share": {"TRIAGE_API_KEYS": ",".join(f"{name}:{key}" for name, key in KEYS.items()),
                      "TRIAGE_FAIR_SHARE_RECENT_S": "0"}}


def study_body(seed: int) -> tuple[bytes, str]:
    """A 1-view study of a 512 x 400 PNG."""
    return encode_multipart([(f"view{seed}.png", make_view_bytes(seed))])


def post_once(connection: http.client.HTTPConnection, body: bytes, headers: dict[str, str]) -> str:
    """POST /predict once; the status, or the error's name."""
    try:
        connection.request("POST", "/predict", body=body, headers=headers)
        response = connection.getresponse()
        response.read()
        return str(response.status)
    except (OSError, http.client.HTTPException) as error:
        connection.close()
        return type(error).__name__


def connect(url: str, source: str) -> http.client.HTTPConnection:
    """A keep-alive connection to the service from the loopback address `source`."""
    host, port = url.removeprefix("http://").split(":")
    return http.client.HTTPConnection(host, int(port), timeout=60, source_address=(source, 0))


def request_headers(key: str | None, content_type: str) -> dict[str, str]:
    """Content-Type, and the API key when there is one."""
    return {"Content-Type": content_type, **({"Authorization": f"Bearer {key}"} if key else {})}


def post_loop(url: str, key: str | None, source: str, seconds: float, outcomes: list[str]) -> None:
    """Post studies one after another, at once after each answer, for `seconds`; append the outcomes."""
    body, content_type = study_body(len(outcomes) % 7)
    connection, deadline = connect(url, source), time.monotonic() + seconds
    while time.monotonic() < deadline:
        outcomes.append(post_once(connection, body, request_headers(key, content_type)))


def flood(url: str, key: str | None, clients: int, seconds: float, queue: multiprocessing.Queue) -> None:
    """`clients` closed-loop posters (no pause) for `seconds`, in this process; put their outcome counts."""
    outcomes: list[str] = []
    threads = [threading.Thread(target=post_loop, args=(url, key, "127.0.0.1", seconds, outcomes))
               for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    queue.put(dict(Counter(outcomes)))


def victim_rate(server: Server, key: str | None, source: str, seconds: float, rate: float) -> dict[str, object]:
    """The victim: studies sent at `rate` per second for `seconds` (open loop); accepted studies/s, outcomes, p99."""
    body, content_type = study_body(1)
    connections = threading.local()
    results: list[tuple[str, float]] = []

    def send() -> None:
        if not hasattr(connections, "connection"):
            connections.connection = connect(server.url, source)
        started = time.monotonic()
        outcome = post_once(connections.connection, body, request_headers(key, content_type))
        results.append((outcome, time.monotonic() - started))

    with ThreadPoolExecutor(max_workers=16) as pool:
        started, sent = time.monotonic(), 0
        while (due := started + sent / rate) < started + seconds:
            time.sleep(max(0.0, due - time.monotonic()))
            pool.submit(send)
            sent += 1
    accepted = sorted(latency for outcome, latency in results if outcome == "200")
    return {"offered_per_s": rate, "accepted_per_s": len(accepted) / seconds,
            "outcomes": dict(Counter(outcome for outcome, _ in results)),
            "accepted_p50_s": accepted[len(accepted) // 2] if accepted else None,
            "accepted_p99_s": accepted[min(len(accepted) - 1, int(0.99 * len(accepted)))] if accepted else None}


def measure_mode(server: Server, mode: str, seconds: float, flood_clients: int, rate: float) -> dict[str, object]:
    """The victim alone, then under the flood; their accepted rates and ratio."""
    keyed = mode != "addresses"
    victim_key, flood_key = (KEYS["victim"], KEYS["flood"]) if keyed else (None, None)
    victim_source = "127.0.0.1" if keyed else "127.0.0.2"
    victim_rate(server, victim_key, victim_source, 2.0, rate)  # warm the first requests out of the figures
    solo = victim_rate(server, victim_key, victim_source, seconds, rate)
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    flooder = context.Process(target=flood, args=(server.url, flood_key, flood_clients, seconds + 3.0, queue))
    flooder.start()
    time.sleep(2.0)  # the flood holds the slots before the victim comes back
    loaded = victim_rate(server, victim_key, victim_source, seconds, rate)
    flood_outcomes = queue.get(timeout=120)
    flooder.join(timeout=30)
    ratio = loaded["accepted_per_s"] / solo["accepted_per_s"] if solo["accepted_per_s"] else float("nan")
    return {"victim_solo": solo, "victim_under_flood": loaded, "flood_outcomes": flood_outcomes,
            "flood_accepted_per_s": flood_outcomes.get("200", 0) / (seconds + 3.0),
            "victim_ratio": ratio, "target_met": bool(ratio >= 0.8)}


def main(argv: Sequence[str] | None = None) -> int:
    """Run every mode; print one line each and save the record."""
    parser = argparse.ArgumentParser(prog="python -m bench.fairness", description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=Path, default=Path("h5"))
    parser.add_argument("--seconds", type=float, default=12.0, help="length of each victim run")
    parser.add_argument("--flood-clients", type=int, default=24, help="closed-loop clients of the flood")
    parser.add_argument("--victim-rate", type=float, default=5.0, help="studies per second the victim sends")
    parser.add_argument("--modes", default=",".join(MODES), help=f"comma-separated, of {', '.join(MODES)}")
    parser.add_argument("--out", type=Path, default=None, help="JSON record")
    args = parser.parse_args(argv)
    record: dict[str, object] = {"command": "python -m bench.fairness " + " ".join(argv or sys.argv[1:]),
                                 "models": str(args.models), "flood_clients": args.flood_clients}
    for mode in args.modes.split(","):
        environment = {"TRIAGE_AUDIT_LOG": "", "TRIAGE_LOG_LEVEL": "warning", **MODES[mode]}
        with tempfile.TemporaryDirectory() as folder, running_gunicorn(
                args.models, Path(folder) / "gunicorn.log", environment, threads=16) as server:
            server.wait_until_ready(300)
            record[mode] = measure_mode(server, mode, args.seconds, args.flood_clients, args.victim_rate)
        figures = record[mode]
        print(f"{mode}: victim {figures['victim_solo']['accepted_per_s']:.1f} studies/s alone, "
              f"{figures['victim_under_flood']['accepted_per_s']:.1f} under the flood "
              f"(ratio {figures['victim_ratio']:.2f}, {'met' if figures['target_met'] else 'NOT met'}); "
              f"flood accepted {figures['flood_accepted_per_s']:.1f}/s; {json.dumps(figures['victim_under_flood'])}",
              flush=True)
    if args.out:
        args.out.write_text(json.dumps(record, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
