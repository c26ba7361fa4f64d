"""Invocation benchmark (issue 5, item 2): the relay on SQS events of 10, 1,000 and 10,000 records.

Each (size, latency) runs in a fresh subprocess so that peak RSS (``resource.getrusage``) belongs to that
invocation alone. The child builds the relay as the handler does (``Relay`` + ``Deliverer`` + the urllib3
``GraphClient``; a static token instead of Secrets Manager) and times ``Relay.process`` on a Lambda SQS
event: parse -> normalize -> hash -> validate -> deliver to the Graph stand-in (its own subprocess, on
loopback, with 0 and 100 ms of injected latency). Prints wall, CPU, requests and peak RSS; asserts nothing.
Target: 10,000 records at 100 ms: wall <= CPU + 2 x latency, peak RSS <= 256 MB.

    python -m bench.bench_invocation [--sizes 10 1000 10000] [--latency 0 100] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from typing import Any

from bench.common import (
    PIXEL,
    StaticTokens,
    control,
    fmt,
    machine_note,
    peak_rss_mb,
    reset_peak_rss,
    sqs_record,
    standin_process,
)
from tests.factories import make_event


def sqs_event(records: int) -> dict[str, Any]:
    now = int(time.time())
    sent_ms = str(now * 1000)
    out = []
    for i in range(records):
        event = make_event(now=now, event_id=f"inv-{i}")
        if i % 2:
            event.pop("event_id")  # half get a derived event_id
        out.append(sqs_record(json.dumps(event), sent_ms, f"rh-{i}"))
    return {"Records": out}


def child(url: str, records: int, concurrency: int) -> dict[str, Any]:
    reset_peak_rss()  # the mark inherited from the parent
    from capi_relay.app import build_relay
    from capi_relay.settings import settings_from_env

    settings = settings_from_env({"PIXEL_ID": PIXEL, "ACCESS_TOKEN_SECRET_ID": "bench", "GRAPH_API_URL": url,
                                  "HTTP_CONCURRENCY": str(concurrency), "POWERTOOLS_LOG_LEVEL": "ERROR"})  # fmt: skip
    relay = build_relay(settings, StaticTokens())
    event = sqs_event(records)
    rss_before = peak_rss_mb()
    cpu0, wall0 = time.process_time(), time.perf_counter()
    summary = relay.process(event, lambda: 600_000)
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    return {
        "wall_s": wall,
        "cpu_s": cpu,
        "requests": summary.delivery.requests,
        "failed": summary.records_failed,
        "peak_rss_mb": peak_rss_mb(),
        "rss_before_mb": rss_before,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10, 1000, 10_000])
    parser.add_argument("--latency", type=int, nargs="+", default=[0, 100])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument("--child", nargs=2, metavar=("URL", "RECORDS"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        import logging

        logging.disable(logging.WARNING)
        print(json.dumps(child(args.child[0], int(args.child[1]), args.concurrency)))
        return

    print(f"command: python -m bench.bench_invocation {' '.join(argv if argv is not None else sys.argv[1:])}")
    print(f"inputs: SQS events of {args.sizes} records (1 website Purchase each, raw PII), latency "
          f"{args.latency} ms, HTTP_CONCURRENCY {args.concurrency}, {args.repeat} fresh subprocesses each; "
          "static token; stand-in in its own subprocess on loopback")  # fmt: skip
    print(f"machine: {machine_note()}")
    header = (f"{'records':>8} {'latency':>8} {'wall ms med [min-max]':>24} {'cpu ms med [min-max]':>24} "
              f"{'requests':>8} {'failed':>6} {'peak RSS MB med [min-max]':>26} {'wall<=cpu+2L':>12}")  # fmt: skip
    print(header)
    print("-" * len(header))
    with standin_process() as url:
        for latency in args.latency:
            for size in args.sizes:
                runs = []
                for _ in range(args.repeat):
                    control(url, "reset", {})
                    control(url, "config", {"latency_ms": latency})
                    out = subprocess.run(
                        [sys.executable, "-m", "bench.bench_invocation", "--concurrency", str(args.concurrency),
                         "--child", url, str(size)],
                        capture_output=True, text=True, check=True, timeout=900,
                    )  # fmt: skip
                    runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
                wall = [r["wall_s"] for r in runs]
                cpu = [r["cpu_s"] for r in runs]
                rss = [r["peak_rss_mb"] for r in runs]
                ok = "met" if statistics.median(wall) <= statistics.median(cpu) + 2 * latency / 1000 else "MISSED"
                rss_txt = f"{statistics.median(rss):.0f} [{min(rss):.0f}-{max(rss):.0f}]"
                print(f"{size:>8} {latency:>6}ms {fmt(wall):>24} {fmt(cpu):>24} {runs[0]['requests']:>8} "
                      f"{max(r['failed'] for r in runs):>6} {rss_txt:>26} {ok:>12}")  # fmt: skip


if __name__ == "__main__":
    main()
