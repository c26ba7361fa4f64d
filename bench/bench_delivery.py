"""Delivery benchmark: a 10,000-record batch (one event each) against the Graph stand-in on loopback.

For 0, 50 and 200 ms of injected latency: wall time and CPU time of ``Deliverer.deliver`` with the
configured concurrency, beside the same batch in FIFO mode (one request at a time, in order), and the number
of requests. Target: wall <= CPU + 2 x latency for the concurrent run. Prints numbers, asserts nothing.

The stand-in runs in a subprocess so that its CPU time is not counted as the relay's.

    python -m bench.bench_delivery [--records 10000] [--repeat 3] [--latency 0 50 200] [--concurrency 10]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import dataclass

from bench.common import PIXEL, StaticTokens, control, fmt, machine_note, standin_process
from capi_relay.deliver.client import GraphClient
from capi_relay.deliver.engine import Deliverer, DeliveryConfig
from capi_relay.ingest.model import Outbound, Rejection
from capi_relay.prepare.events import prepare_event
from capi_relay.settings import NormalizationSettings
from tests.factories import make_event


def outbound_events(records: int) -> list[Outbound]:
    now = int(time.time())
    settings = NormalizationSettings()
    out: list[Outbound] = []
    for i in range(records):
        prepared = prepare_event(make_event(now=now, event_id=f"bench-{i}"), settings, now)
        if isinstance(prepared, Rejection):
            raise SystemExit(f"the sample event is rejected: {prepared.reason}")
        out.append(Outbound(f"msg-{i}", 0, PIXEL, None, prepared.encoded))
    return out


@dataclass
class Sample:
    wall_s: float
    cpu_s: float
    requests: int
    failed: int


def measure(url: str, events: list[Outbound], concurrency: int, sequential: bool, latency_ms: int) -> Sample:
    control(url, "reset", {})  # clears the latency too: set it again
    control(url, "config", {"latency_ms": latency_ms})
    config = DeliveryConfig(concurrency=concurrency, request_timeout_s=30.0)
    client = GraphClient(url, "v26.0", connect_timeout_s=5, read_timeout_s=30, max_connections=concurrency)
    deliverer = Deliverer(client, StaticTokens(), config)
    try:
        cpu0, wall0 = time.process_time(), time.perf_counter()
        report = deliverer.deliver(events, time.monotonic() + 600, fifo=sequential)  # FIFO: one at a time
        wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    finally:
        deliverer.close()
    return Sample(wall, cpu, report.requests, len(report.failed))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--latency", type=int, nargs="+", default=[0, 50, 200])
    parser.add_argument("--concurrency", type=int, default=10)
    args = parser.parse_args(argv)

    print(f"command: python -m bench.bench_delivery {' '.join(argv if argv is not None else sys.argv[1:])}")
    print(f"inputs: {args.records} records x 1 event, 1 pixel, <=1000 events/request, concurrency "
          f"{args.concurrency}, {args.repeat} runs each; stand-in in a subprocess on loopback")  # fmt: skip
    print(f"machine: {machine_note()}")
    events = outbound_events(args.records)
    header = (f"{'latency':>8} {'mode':>10} {'wall ms med [min-max]':>24} {'cpu ms med [min-max]':>24} "
              f"{'requests':>8} {'failed':>6} {'target wall<=cpu+2L':>20}")  # fmt: skip
    print(header)
    print("-" * len(header))
    with standin_process() as url:
        for latency in args.latency:
            for mode, sequential in (("concurrent", False), ("sequential", True)):
                samples = []
                for _ in range(args.repeat):
                    samples.append(measure(url, events, args.concurrency, sequential, latency))
                wall = [s.wall_s for s in samples]
                cpu = [s.cpu_s for s in samples]
                target = statistics.median(cpu) + 2 * latency / 1000
                ok = "met" if statistics.median(wall) <= target else "MISSED"
                if sequential:
                    ok = "-"
                print(f"{latency:>6}ms {mode:>10} {fmt(wall):>24} {fmt(cpu):>24} {samples[0].requests:>8} "
                      f"{max(s.failed for s in samples):>6} {ok:>20}")  # fmt: skip


if __name__ == "__main__":
    main()
