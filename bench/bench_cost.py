"""Cost per million events: measured CPU per event and per invocation x Lambda arm64 and SQS prices.

Measures, in this process, what one invocation costs in CPU: the relay built as the handler builds it
(``Relay`` + ``Deliverer`` + urllib3 ``GraphClient``; a static token instead of Secrets Manager) runs
``Relay.process`` on SQS events of several sizes (one website Purchase with raw PII per record) and POSTs
to the Graph stand-in (its own subprocess on loopback, so its CPU is not counted), then publishes the
metrics as the handler does (EMF to a discarded stdout). A least-squares line over the batch sizes gives
CPU = fixed + per_event x records. Then, for Lambda memory M (CPU share M / 1,769 MB of one vCPU):

    duration = (fixed + per_event x B) x max(1, 1769 / M) + requests(B) x graph_latency
    cost/event = (M / 1024 x duration x GB-s price + request price) / B + SQS requests per event x price

Prints the assumptions, the measured numbers and a table; asserts nothing.

    python -m bench.bench_cost [--latency-ms 150] [--memory 128 256 512 1024 1769] [--batch 10 100 500 1000]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import math
import platform
import resource
import statistics
import sys
import time
from typing import Any

from bench.cfn import default_sizing
from bench.common import PIXEL, StaticTokens, control, sqs_record, standin_process
from capi_relay.settings import settings_from_env

# Prices assumed (us-east-1, published on the AWS pricing pages; check yours):
LAMBDA_ARM64_GB_S = 0.0000133334  # $ per GB-second, arm64, first tier (first 7.5 billion GB-s a month)
LAMBDA_REQUEST = 0.20 / 1_000_000  # $ per invocation
SQS_REQUEST = 0.40 / 1_000_000  # $ per standard-queue request; each 64 KiB chunk of a payload is a request
SQS_CHUNK = 64 * 1024
CW_METRIC_MONTH = 0.30  # $ per custom metric (name x dimension values) per month, first 10,000 metrics
CW_LOGS_INGEST_GB = 0.50  # $ per GB of CloudWatch Logs ingested (standard class; EMF lines are log lines)
LAMBDA_PLATFORM_LOG_BYTES = 350  # START / END / REPORT lines per invocation, about
SUMMARY_LOG_BYTES = 450  # the relay's "batch done" JSON line, about (logging is disabled in this bench)
CONCURRENCY = settings_from_env({"ACCESS_TOKEN_SECRET_ID": "bench"}).http_concurrency  # default
FULL_VCPU_MB = 1769  # Lambda: 1,769 MB of memory = one vCPU's worth of CPU time
MAX_EVENTS_PER_REQUEST = 1000  # Meta: events per POST


def sqs_event(records: int, now: int) -> dict[str, Any]:
    """A Lambda SQS event of ``records`` website Purchases with raw PII (one per message)."""
    sent = str(now * 1000)
    out = []
    for i in range(records):
        body = {
            "event_name": "Purchase",
            "event_time": now - 60,
            "event_id": f"cost-{i}",
            "action_source": "website",
            "event_source_url": "https://shop.example.com/checkout/thanks",
            "user_data": {
                "em": f"Customer.{i}@Example.com", "ph": "(650) 555-1212", "fn": "John", "ln": "Smith",
                "ct": "Menlo Park", "st": "California", "zp": "94025-1234", "country": "US",
                "external_id": f"user-{i}", "client_ip_address": "203.0.113.7",
                "client_user_agent": "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_0) AppleWebKit/605.1.15",
                "fbp": "fb.1.1789999000000.1234567890",
            },
            "custom_data": {"value": 42.5, "currency": "USD"},
        }  # fmt: skip
        out.append(sqs_record(json.dumps(body), sent, f"rh-{i}"))
    return {"Records": out}


def measure(url: str, sizes: list[int], repeat: int, emf: dict[int, str] | None = None) -> dict[int, list[float]]:
    """CPU seconds of one invocation (relay + metrics), ``repeat`` times per batch size. ``emf`` receives the
    stdout (EMF metric lines) of the last invocation of each size."""
    from aws_lambda_powertools import Metrics

    from capi_relay.app import build_relay
    from capi_relay.settings import settings_from_env
    from capi_relay.telemetry import publish

    settings = settings_from_env({"PIXEL_ID": PIXEL, "ACCESS_TOKEN_SECRET_ID": "bench", "GRAPH_API_URL": url})
    relay = build_relay(settings, StaticTokens())
    metrics = Metrics(namespace="CapiRelay", service="capi-relay")

    def once(records: int) -> float:
        event = sqs_event(records, int(time.time()))
        sink = io.StringIO()
        cpu0 = time.process_time()
        with contextlib.redirect_stdout(sink):
            summary = relay.process(event, lambda: 600_000)
            publish(metrics, summary)
            metrics.flush_metrics()
        cpu = time.process_time() - cpu0
        if emf is not None:
            emf[records] = sink.getvalue()
        if summary.records_failed:
            raise RuntimeError(f"{summary.records_failed} of {records} records failed: {dict(summary.failures)}")
        control(url, "reset", {})
        return cpu

    # What the function holds besides the relay: boto3 and a Secrets Manager client (for the peak RSS).
    from aws_lambda_powertools.utilities.parameters import SecretsProvider
    from botocore.config import Config

    SecretsProvider(boto_config=Config(region_name="us-east-1"))
    once(10)  # warm: lazy imports (phonenumbers), the connection pool, regex caches -- not per-event work
    return {size: [once(size) for _ in range(repeat)] for size in sizes}


def lambda_cost_per_event(
    memory_mb: int, batch: int, fixed_s: float, per_event_s: float, graph_latency_s: float
) -> tuple[float, float]:
    """($ per event for Lambda, billed seconds per invocation) at this memory size and full batches."""
    stretch = max(1.0, FULL_VCPU_MB / memory_mb)
    requests = math.ceil(batch / MAX_EVENTS_PER_REQUEST)  # sent concurrently: one round trip per wave
    waves = math.ceil(requests / CONCURRENCY)  # the default HTTP_CONCURRENCY
    duration = (fixed_s + per_event_s * batch) * stretch + waves * graph_latency_s
    billed = math.ceil(duration * 1000) / 1000  # billed per millisecond
    cost = memory_mb / 1024 * billed * LAMBDA_ARM64_GB_S + LAMBDA_REQUEST
    return cost / batch, billed


def sqs_requests_per_event(batch: int, send_batch: int) -> float:
    """SendMessage(Batch) by producers + the event source's ReceiveMessage and DeleteMessageBatch (10 each)."""
    receives = 1 / min(10, batch)
    deletes = 1 / min(10, batch)
    return 1 / send_batch + receives + deletes


def emf_metrics(text: str) -> set[tuple[str, tuple[tuple[str, str], ...]]]:
    """Distinct CloudWatch metrics (name + dimension values) in EMF lines: each is billed per metric-month."""
    found: set[tuple[str, tuple[tuple[str, str], ...]]] = set()
    for line in text.splitlines():
        try:
            blob = json.loads(line)
        except ValueError:
            continue
        for directive in blob.get("_aws", {}).get("CloudWatchMetrics", []):
            for dims in directive["Dimensions"]:
                values = tuple(sorted((d, str(blob.get(d))) for d in dims))
                found.update((m["Name"], values) for m in directive["Metrics"])
    return found


def packed_figures(events: list[dict[str, Any]], batch_size: int) -> tuple[int, int, float, int]:
    """(events per message, bytes per message, SQS requests per event, events per invocation) for producers
    that pack ``events`` with ``capi-relay send`` (capi_relay.producer.pack): SendMessageBatch of one full
    message, the event source's ReceiveMessage billed per 64 KiB of what it returns, DeleteMessageBatch per 10
    messages; records per invocation as the event source mapping cuts them at the 6 MB payload (local.esm)."""
    from capi_relay.producer import Routing, pack
    from local.esm import MAX_PAYLOAD_BYTES, split_at_limit

    messages, unsendable = pack(list(enumerate(events)), Routing())
    assert not unsendable, "every sample event must be sendable"
    assert len(messages) > 1, "the sample must fill more than one message"
    per_message, size = len(messages[0].indexes), messages[0].size
    chunks = math.ceil(size / SQS_CHUNK)
    requests_per_message = chunks + chunks + 1 / 10  # send + receive (payload chunks) + delete
    records = [sqs_record(m.body, "0", f"rh-{n}") for n, m in enumerate(messages)]
    fits, rest = split_at_limit(records, MAX_PAYLOAD_BYTES)
    assert rest, "the sample must fill more than one invocation"
    return per_message, size, requests_per_message / per_message, min(batch_size, len(fits)) * per_message


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--latency-ms", type=float, default=150.0, help="Graph API round trip assumed per request")
    parser.add_argument("--memory", type=int, nargs="+", default=[128, 256, 512, 1024, 1769])
    parser.add_argument("--batch", type=int, nargs="+", default=[10, 100, 500, 1000, 2000])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10, 100, 500, 1000], help="batch sizes measured")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)
    logging.disable(logging.WARNING)
    sizing = default_sizing()

    print(f"command: python -m bench.bench_cost {' '.join(argv if argv is not None else sys.argv[1:])}".rstrip())
    print("assumptions:")
    print(f"  Lambda arm64 ${LAMBDA_ARM64_GB_S} per GB-s (first tier), ${LAMBDA_REQUEST * 1e6:.2f} per 1M requests;")
    print(f"  CPU share = memory / {FULL_VCPU_MB} MB of one vCPU (CPU work stretches below 1,769 MB);")
    print(
        f"  Graph API round trip {args.latency_ms:.0f} ms per request wave "
        f"(<= 1,000 events/POST, {CONCURRENCY} in parallel);"
    )
    print(f"  SQS ${SQS_REQUEST * 1e6:.2f} per 1M requests, one request per 64 KiB chunk (a CAPI event is ~1 KiB);")
    print("  event source: ReceiveMessage and DeleteMessageBatch take 10 messages each; idle long polls not counted;")
    print("  no free tier; no retries; CPU measured on this machine (x86_64; Graviton per-core speed differs);")
    print(f"  template defaults: {sizing}")
    print(f"machine: {platform.machine()} {platform.processor() or ''} Python {platform.python_version()}".rstrip())

    emf: dict[int, str] = {}
    with standin_process() as url:
        runs = measure(url, args.sizes, args.repeat, emf)
    xs = [float(size) for size, cpus in runs.items() for _ in cpus]
    ys = [cpu for cpus in runs.values() for cpu in cpus]
    slope, intercept = statistics.linear_regression(xs, ys)
    per_event_s, fixed_s = max(slope, 0.0), max(intercept, 0.0)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print("\nmeasured CPU per invocation (relay.process + metrics), full core:")
    for size, cpus in runs.items():
        print(f"  {size:>6} records: median {statistics.median(cpus) * 1000:8.1f} ms  "
              f"({statistics.median(cpus) / size * 1e6:6.1f} µs/record)")  # fmt: skip
    print(f"  fit: {fixed_s * 1000:.2f} ms per invocation + {per_event_s * 1e6:.1f} µs per event")
    print(f"  peak RSS of this process (relay, boto3 Secrets Manager client, largest batch): {peak_mb:.0f} MB")

    latency_s = args.latency_ms / 1000
    print(f"\nLambda $ per 1M events (full batches, Graph {args.latency_ms:.0f} ms), rows = MemorySize MB:")
    print("  memory " + "".join(f"{'B=' + str(b):>10}" for b in args.batch))
    for mem in args.memory:
        cells = [lambda_cost_per_event(mem, b, fixed_s, per_event_s, latency_s)[0] * 1e6 for b in args.batch]
        print(f"  {mem:>6} " + "".join(f"{c:>10.4f}" for c in cells))

    mem, batch = sizing["MemorySize"], sizing["BatchSize"]
    lam, billed = lambda_cost_per_event(mem, batch, fixed_s, per_event_s, latency_s)
    cpu_ms = (fixed_s + per_event_s * batch) * max(1.0, FULL_VCPU_MB / mem) * 1000
    print(f"\ntemplate defaults: MemorySize {mem} MB, BatchSize {batch}, window "
          f"{sizing['MaximumBatchingWindowInSeconds']} s (full batches):")  # fmt: skip
    print(f"  invocation: {cpu_ms:.0f} ms CPU at {min(1.0, mem / FULL_VCPU_MB):.2f} vCPU + Graph wait "
          f"= {billed * 1000:.0f} ms billed; {batch / billed:.0f} events/s per concurrent instance")  # fmt: skip
    for send_batch, label in ((1, "SendMessage, 1 event/request"), (10, "SendMessageBatch of 10")):
        sqs = sqs_requests_per_event(batch, send_batch) * SQS_REQUEST
        print(f"  producers use {label:<30}: Lambda ${lam * 1e6:.4f} + SQS ${sqs * 1e6:.4f} "
              f"= ${(lam + sqs) * 1e6:.4f} per 1M events")  # fmt: skip
    sample = [json.loads(r["body"]) for r in sqs_event(12_000, int(time.time()))["Records"]]
    per_message, message_bytes, sqs_packed, packed_batch = packed_figures(sample, batch)
    event_bytes = message_bytes // per_message
    lam_packed, _ = lambda_cost_per_event(mem, packed_batch, fixed_s, per_event_s, latency_s)
    sqs_packed_cost = sqs_packed * SQS_REQUEST
    print(f"  producers pack with capi-relay send ({per_message} events of {event_bytes} B per "
          f"{message_bytes / 1024:.0f} KiB message, "
          f"{packed_batch} events per invocation under the 6 MB payload): Lambda ${lam_packed * 1e6:.4f} + SQS "
          f"${sqs_packed_cost * 1e6:.4f} = ${(lam_packed + sqs_packed_cost) * 1e6:.4f} per 1M events")  # fmt: skip
    one = sqs_requests_per_event(batch, 1) * SQS_REQUEST + lam
    print(f"  one event per SendMessage costs {one / (lam_packed + sqs_packed_cost):.0f}x the packed figure")
    half = max(1, batch // 10)
    lam_low, _ = lambda_cost_per_event(mem, half, fixed_s, per_event_s, latency_s)
    print(f"  at low traffic (batches of {half} when the window closes first): Lambda ${lam_low * 1e6:.4f} per 1M")

    clean = emf_metrics(emf[max(emf)])
    names = sorted({name for name, _ in clean})
    emf_bytes = len(emf[batch].encode()) if batch in emf else len(emf[max(emf)].encode())
    log_bytes = emf_bytes + SUMMARY_LOG_BYTES + LAMBDA_PLATFORM_LOG_BYTES
    logs_per_m = 1e6 / batch * log_bytes / 1024**3 * CW_LOGS_INGEST_GB
    print(f"\nCloudWatch (${CW_METRIC_MONTH:.2f} per custom metric-month, ${CW_LOGS_INGEST_GB:.2f} per GB of logs):")
    fixed_month = (len(clean) + 1) * CW_METRIC_MONTH
    print(f"  a clean batch emits {len(clean)} metrics ({len(names)} names, dimension service; the function adds "
          f"ColdStart with function_name): ${fixed_month:.2f} per month whatever the volume")  # fmt: skip
    print(
        "  each distinct value of a by-reason dimension seen in a month adds one metric "
        "(RecordFailuresByReason, EventsRejectedByReason, GraphErrorsByCode, EventAdjustments, "
        f"FieldsDroppedByReason): e.g. 30 more = ${30 * CW_METRIC_MONTH:.2f} per month"
    )
    print(
        f"  logs per invocation of {batch} records: {emf_bytes} B EMF + ~{SUMMARY_LOG_BYTES} B summary + "
        f"~{LAMBDA_PLATFORM_LOG_BYTES} B Lambda lines = ${logs_per_m:.4f} per 1M events ingested (INFO level; "
        "DEBUG adds a line per record)"
    )


if __name__ == "__main__":
    main()
