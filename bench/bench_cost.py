"""Cost per million events: measured CPU per event and per invocation x Lambda arm64 and SQS prices.

Measures, in this process, what one invocation costs in CPU: the relay built as the handler builds it
(``Relay`` + ``Deliverer`` + urllib3 ``GraphClient``; a static token instead of Secrets Manager) runs
``Relay.process`` on SQS events of several sizes (one website Purchase with raw PII per record) and POSTs
to the Graph stand-in (its own subprocess on loopback, so its CPU is not counted), then publishes the
metrics as the handler does (EMF to a discarded stdout). A least-squares line over the batch sizes gives
CPU = fixed + per_event x records. Then, for Lambda memory M (CPU share M / 1,769 MB of one vCPU):

    duration = (fixed + per_event x B) x max(1, 1769 / M) + requests(B) x graph_latency
    cost/event = (M / 1024 x duration x GB-s price + request price) / B + SQS requests per event x price

Then the stack's month (issue 21): the fixed monthly items of the resources a default deployment of the
template creates (alarms and the metrics they read, dashboards, KMS keys, the token's secret, the event
source's idle polling), for an idle stack and for ``--events-per-month`` packed events (plus the custom metrics
a healthy invocation publishes, billed per hour with data, Lambda, SQS and Logs).

Prints the assumptions, the measured numbers and tables; asserts nothing.

    python -m bench.bench_cost [--latency-ms 150] [--memory 128 256 512 1024 1769] [--batch 10 100 500 1000]
                               [--events-per-month 1e6] [--template template.yaml]
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import json
import logging
import math
import platform
import re
import resource
import statistics
import sys
import time
from typing import Any

from bench.cfn import (
    TEMPLATE,
    condition_values,
    default_sizing,
    deployed_resources,
    load_template,
    parameter_default,
    parameter_values,
)
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
# Fixed monthly prices (us-east-1 list prices, no free tier):
CW_ALARM_METRIC_MONTH = 0.10  # standard-resolution alarm, per metric it reads (a metric-math alarm of 2 pays 2)
CW_DASHBOARD_MONTH = 3.00  # per dashboard (an account's first 3, up to 50 metrics each, are free)
KMS_KEY_MONTH = 1.00  # per customer managed key (requests extra, $0.03 per 10,000: alarms publish rarely)
SECRET_MONTH = 0.40  # per Secrets Manager secret (the token's: a stack parameter, counted because the relay needs it)
HOURS_PER_MONTH = 730
# The event source mapping long-polls the events queue even when it is empty, and SQS bills those ReceiveMessage
# calls. AWS does not document how many pollers an idle mapping keeps; assumed: 5 (the batches Lambda starts
# with, "five batches at a time") each holding a 20 s long poll.
ESM_IDLE_POLLERS = 5
ESM_LONG_POLL_S = 20
SCHEDULER_INVOCATION = 1.00 / 1_000_000  # EventBridge Scheduler, $ per invocation (no free tier counted)
SECRET_API_CALL = 0.05 / 10_000  # Secrets Manager, $ per API call
# A scheduled quality read: one secret read and one Dataset Quality GET per pixel, a cold start each time; billed
# time assumed 3 s (Init 0.42 s + first read 0.41 s at a full vCPU, bench.bench_quality_coldstart, stretched by
# 512 MB's share of a vCPU: docs/quality.md), at the function's MemorySize.
QUALITY_READ_BILLED_S = 3.0
# The pixel the README's deploy sets: a deployment with a default pixel creates the quality reader.
WITH_PIXEL = {"PixelId": "123456789012345"}
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
    that pack ``events`` with ``capi-relay send`` (capi_relay.tools.producer.pack): SendMessageBatch of one full
    message, the event source's ReceiveMessage billed per 64 KiB of what it returns, DeleteMessageBatch per 10
    messages; records per invocation as the event source mapping cuts them at the 6 MB payload (local.esm)."""
    from capi_relay.tools.producer import Routing, pack
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


# ------------------------------------------------------------------------------------------ monthly
def idle_costs(template: dict[str, Any], overrides: dict[str, Any] | None = None) -> list[tuple[str, float, str]]:
    """(item, $ per month, how it was counted) of a deployed stack that receives nothing, from the resources a
    deployment with the parameters' defaults (and ``overrides``) creates."""
    resources = deployed_resources(template, overrides)

    def of(kind: str) -> dict[str, dict[str, Any]]:
        return {rid: r for rid, r in resources.items() if r["Type"] == kind}

    alarms = of("AWS::CloudWatch::Alarm")
    alarm_metrics = sum(
        max(1, sum(1 for m in a["Properties"].get("Metrics", []) if "MetricStat" in m)) for a in alarms.values()
    )
    dashboards, keys = of("AWS::CloudWatch::Dashboard"), of("AWS::KMS::Key")
    secrets = set()  # secrets the function may read (created by the stack or passed as a parameter)
    for role in of("AWS::IAM::Role").values():
        for policy in role["Properties"].get("Policies", []):
            for st in policy["PolicyDocument"]["Statement"]:
                actions = st["Action"] if isinstance(st["Action"], list) else [st["Action"]]
                if "secretsmanager:GetSecretValue" in actions:
                    secrets.add(json.dumps(st["Resource"], sort_keys=True))
    sqs_sources = [
        e for fn in of("AWS::Serverless::Function").values() for e in fn["Properties"].get("Events", {}).values()
        if e.get("Type") == "SQS"
    ]  # fmt: skip
    polls = len(sqs_sources) * ESM_IDLE_POLLERS * HOURS_PER_MONTH * 3600 / ESM_LONG_POLL_S
    runs, run_cost = scheduled_runs(template, resources)
    return [
        ("CloudWatch alarms", alarm_metrics * CW_ALARM_METRIC_MONTH,
         f"{len(alarms)} alarms reading {alarm_metrics} metrics x ${CW_ALARM_METRIC_MONTH:.2f}"),
        ("CloudWatch dashboards", len(dashboards) * CW_DASHBOARD_MONTH,
         f"{len(dashboards)} x ${CW_DASHBOARD_MONTH:.2f}"),
        ("KMS keys", len(keys) * KMS_KEY_MONTH, f"{len(keys)} x ${KMS_KEY_MONTH:.2f} ({', '.join(keys) or 'none'})"),
        ("Secrets Manager", len(secrets) * SECRET_MONTH, f"{len(secrets)} secret x ${SECRET_MONTH:.2f}"),
        ("SQS: idle event source polling", polls * SQS_REQUEST,
         f"{len(sqs_sources)} mapping x {ESM_IDLE_POLLERS} pollers x a {ESM_LONG_POLL_S} s long poll = "
         f"{polls / 1e6:.2f}M ReceiveMessage (assumed)"),
        ("Scheduled quality reads", runs * run_cost,
         f"{runs:,.0f} reads (Lambda ~{QUALITY_READ_BILLED_S:g} s, Scheduler, one secret read each)"
         if runs else "none (no quality reader deployed)"),
        ("CloudWatch custom metrics", 0.0, "0: no invocation, no EMF line (billed per metric-hour with data); "
         "the quality reader publishes series only while Meta reports events for the pixel"),
    ]  # fmt: skip


def scheduled_runs(template: dict[str, Any], resources: dict[str, dict[str, Any]]) -> tuple[float, float]:
    """(runs per month, $ per run) of the stack's EventBridge Scheduler schedules (the quality reader): the
    schedule's ``rate(N hours|minutes)`` (a ``cron(...)`` is counted hourly), the target function's MemorySize."""
    runs = cost = 0.0
    for schedule in (r for r in resources.values() if r["Type"] == "AWS::Scheduler::Schedule"):
        props = schedule["Properties"]
        expression = str(parameter_default(template, props["ScheduleExpression"]))
        match = re.fullmatch(r"rate\((\d+) (minute|minutes|hour|hours)\)", expression)
        per_hour = (
            1.0 if match is None else (60 / int(match[1]) if match[2].startswith("minute") else 1 / int(match[1]))
        )
        target = props["Target"]["Arn"]["Fn::GetAtt"][0]
        fn = resources[target]["Properties"]
        memory = int(parameter_default(template, fn.get("MemorySize", default_sizing(template)["MemorySize"])))
        per_run = memory / 1024 * QUALITY_READ_BILLED_S * LAMBDA_ARM64_GB_S + LAMBDA_REQUEST
        per_run += SCHEDULER_INVOCATION + SECRET_API_CALL
        n = per_hour * HOURS_PER_MONTH
        runs += n
        cost += n * per_run
    return runs, (cost / runs if runs else 0.0)


def quality_series(template: dict[str, Any], overrides: dict[str, Any] | None = None) -> int:
    """Metric series the quality reader publishes each read while Meta reports data for the watched events
    (0 when it is not deployed): per event, the families' series (``emq`` 1, ``keys`` one per watched key,
    ``coverage`` 1, ``dedup`` 1, ``freshness`` 1), capped as the reader caps them."""
    from capi_relay.quality.config import QualityConfig

    cap = next(f.default for f in dataclasses.fields(QualityConfig) if f.name == "max_metrics")
    assert isinstance(cap, int)
    if not condition_values(template, overrides).get("QualityReaderOn", False):
        return 0
    values = parameter_values(template, overrides)
    events = [e for e in str(values["QualityEventNames"]).split(",") if e.strip()]
    keys = [k for k in str(values["QualityMatchKeys"]).split(",") if k.strip()]
    families = [f.strip() for f in str(values["QualityMetrics"]).split(",") if f.strip()]
    per_event = sum(len(keys) if family == "keys" else 1 for family in families)
    return min(len(events) * per_event, cap)


def hours_with_data(invocations: float) -> float:
    """Hours of a month with at least one invocation when ``invocations`` arrive at random (Poisson): a custom
    metric is billed for every hour it receives a datapoint."""
    return HOURS_PER_MONTH * (1 - math.exp(-invocations / HOURS_PER_MONTH))


def published_metric_count(emf_text: str) -> int:
    """Custom metrics one invocation publishes: its EMF metrics (relay.process + telemetry.publish), plus what the
    handler adds to every invocation: ColdStart if it captures it, GraphApiVersionDaysLeft if it publishes it."""
    handler_py = (TEMPLATE.parent / "src" / "capi_relay" / "handler.py").read_text(encoding="utf-8")
    handler_adds = ("capture_cold_start_metric=True" in handler_py) + ("publish_version_days_left(" in handler_py)
    return len(emf_metrics(emf_text)) + handler_adds


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--latency-ms", type=float, default=150.0, help="Graph API round trip assumed per request")
    parser.add_argument("--memory", type=int, nargs="+", default=[128, 256, 512, 1024, 1769])
    parser.add_argument("--batch", type=int, nargs="+", default=[10, 100, 500, 1000, 2000])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10, 100, 500, 1000], help="batch sizes measured")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--events-per-month", type=float, default=1e6, help="volume of the monthly row")
    parser.add_argument("--template", default=str(TEMPLATE), help="template to price (default: this repo's)")
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
    published = published_metric_count(emf[max(emf)])
    emf_bytes = len(emf[batch].encode()) if batch in emf else len(emf[max(emf)].encode())
    log_bytes = emf_bytes + SUMMARY_LOG_BYTES + LAMBDA_PLATFORM_LOG_BYTES
    logs_per_m = 1e6 / batch * log_bytes / 1024**3 * CW_LOGS_INGEST_GB
    print(f"\nCloudWatch (${CW_METRIC_MONTH:.2f} per custom metric-month, billed per hour with data; "
          f"${CW_LOGS_INGEST_GB:.2f} per GB of logs):")  # fmt: skip
    print(f"  a clean invocation publishes {published} custom metrics ({', '.join(names)}"
          f"{'; + what the handler adds' if published > len(clean) else ''}): "
          f"${published * CW_METRIC_MONTH:.2f} per month when every hour has an invocation, nothing in an hour "
          "without one")  # fmt: skip
    print(
        f"  logs per invocation of {batch} records: {emf_bytes} B EMF + ~{SUMMARY_LOG_BYTES} B summary + "
        f"~{LAMBDA_PLATFORM_LOG_BYTES} B Lambda lines = ${logs_per_m:.4f} per 1M events ingested (INFO level; "
        "DEBUG adds a line per record)"
    )

    # ------------------------------------------------------------------ the stack's month: idle and at volume
    template = load_template(args.template)
    idle = idle_costs(template)
    with_pixel = idle_costs(template, WITH_PIXEL)
    series = quality_series(template, WITH_PIXEL)
    volume = args.events_per_month
    messages = volume / per_message
    window = sizing["MaximumBatchingWindowInSeconds"]
    invocations = min(messages, HOURS_PER_MONTH * 3600 / window)  # at most one invocation per batching window
    per_invocation = volume / invocations
    lam_inv, _ = lambda_cost_per_event(mem, max(1, round(per_invocation)), fixed_s, per_event_s, latency_s)
    hours = hours_with_data(invocations)
    at_volume = {
        "Lambda": (lam_inv * volume, f"{invocations:,.0f} invocations of ~{per_invocation:.0f} events"),
        "SQS: messages": (sqs_packed * SQS_REQUEST * volume,
                          f"{messages:,.0f} packed messages sent, received, deleted"),
        "CloudWatch custom metrics": (published * CW_METRIC_MONTH * hours / HOURS_PER_MONTH,
                                      f"{published} metrics x ${CW_METRIC_MONTH:.2f} x {hours:.0f} of "
                                      f"{HOURS_PER_MONTH} hours with an invocation"),
        "CloudWatch Logs": (invocations * log_bytes / 1024**3 * CW_LOGS_INGEST_GB,
                            f"{invocations:,.0f} x ~{log_bytes} B"),
    }  # fmt: skip
    print(f"\nmonthly cost of a deployed stack ({args.template.rsplit('/', 1)[-1]}, parameter defaults; "
          "us-east-1 list prices, no free tier):")  # fmt: skip
    print(f"  {'item':<32} {'idle':>8} {f'{volume / 1e6:g}M events':>12}  how")
    print("  " + "-" * 110)
    idle_total = volume_total = 0.0
    for item, cost, how in idle:
        extra, extra_how = at_volume.pop(item, (0.0, ""))
        idle_total += cost
        volume_total += cost + extra
        print(f"  {item:<32} {cost:>8.2f} {cost + extra:>12.2f}  {extra_how or how}")
    for item, (cost, how) in at_volume.items():
        volume_total += cost
        print(f"  {item:<32} {0.0:>8.2f} {cost:>12.2f}  {how}")
    print("  " + "-" * 110)
    print(f"  {'total per month':<32} {idle_total:>8.2f} {volume_total:>12.2f}  "
          f"(events packed by capi-relay send, {per_message} per message; one message per invocation at this "
          "rate)")  # fmt: skip
    extra = sum(c for _, c, _ in with_pixel) - idle_total
    quality_metrics = series * CW_METRIC_MONTH
    at_volume_total = volume_total + extra + quality_metrics
    print(f"\nwith a default pixel (PixelId set, as README's deploy does) the quality reader is deployed too: "
          f"+${extra:.2f} idle (its 2 alarms and hourly reads): idle ${idle_total + extra:.2f}; while Meta reports "
          f"events for the pixel its {series} series add ${quality_metrics:.2f}: "
          f"{volume / 1e6:g}M events ${at_volume_total:.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
