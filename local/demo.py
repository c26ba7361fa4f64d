"""``make demo``: the whole flow on this machine, no AWS account and no Docker.

What runs (all on 127.0.0.1, all stopped at the end, also on Ctrl-C or an error):

* a moto server (a subprocess) with the events queue (redrive to a DLQ after 2 receives, 2 s visibility
  timeout), the DLQ, the access-token secret, an EventBridge rule -> queue and an SNS topic -> queue;
* the Graph API stand-in (``local.graph_standin``), which enforces Meta's contract;
* the packaged function from ``make build`` (``.aws-sam/build/RelayFunction``) under the Lambda Runtime
  Interface Emulator (``local.rie``);
* the SQS event-source emulator (``local.esm``): batch size 10, 1 s batching window, partial batch
  responses.

Then one scheduled read of Meta's Dataset Quality API: the same artifact with the quality reader's handler
(``capi_relay.quality.handler.lambda_handler``) under a second RIE, the token from the same secret in moto,
the stand-in answering ``GET /v26.0/dataset_quality`` for the demo pixel (phone coverage collapsed to 12 %);
the reader's EMF metrics and its log lines are printed.

The function runs as the template configures it: ``DLQ_URL`` set (permanent rejections are quarantined by
the relay, one DLQ message per rejected event, with its reason) and parking on (the schedule scaled down to
3 s so the demo does not wait minutes).

Every sample in ``events/`` is published through its real API (SQS ``SendMessage``/``SendMessageBatch``,
EventBridge ``PutEvents``, SNS ``Publish``), plus two messages that show each event's fate: a
``{"data": [...]}`` message of four events of which one is too old (rejected locally) and one is refused by
Meta (the stand-in's ``reject_event_ids``), and a message whose first delivery meets a Meta outage (it is
parked, then delivered). The queue is drained, and two tables show where each message and each event ended
(delivered / quarantined with its reason / parked) and what the stand-in received. The records are checked
against ``local.samples.SAMPLES``, the DLQ must hold exactly the quarantined events with their attributes;
any difference, a token in a log line or request URL, or a raw sample PII value at the stand-in makes the
exit status non-zero.

Pointing the same flow at Meta (a real deployment, ``sam deploy``): store the token of a real pixel in
Secrets Manager (``aws secretsmanager create-secret --name capi-relay/meta-access-token --secret-string
'{"access_token": "..."}'``) and pass its ARN as ``AccessTokenSecretArn`` and the pixel as ``PixelId``;
set ``TestEventCode`` to the code shown in Events Manager -> Test events while trying it (the events are
real, remove it afterwards); leave ``GRAPH_API_URL`` unset so the function posts to
``https://graph.facebook.com``; and drop ``AWS_ENDPOINT_URL`` so boto3 talks to AWS. Then send the same
samples with ``aws sqs send-message --queue-url ... --message-body file://...`` and watch Events Manager.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import signal
import sys
import time
from pathlib import Path
from typing import Any

from local.esm import BatchOutcome, EventSourceEmulator, emulator_invoker
from local.graph_standin import GraphStandIn
from local.samples import (
    SAMPLES,
    Expected,
    RecordResult,
    Sample,
    find_raw_pii,
    identify,
    mismatches,
    publish,
    resolve,
    sample_bodies,
    sent_event_id,
)
from local.stack import (
    DEMO_PIXEL_ID,
    Clients,
    MotoServer,
    Resources,
    drain_queue,
    dummy_token,
    function_env,
    provision,
)

ROOT = Path(__file__).resolve().parent.parent
ARTIFACT_DIR = ROOT / ".aws-sam" / "build" / "RelayFunction"


def _table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))
    out = [line, "  ".join("-" * w for w in widths)]
    out.extend("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows)
    return "\n".join(out)


def outcome_table(results: list[RecordResult]) -> str:
    order = {s.name: i for i, s in enumerate(SAMPLES)}
    rows = [
        [r.sample, r.shape, r.message_id, r.outcome.upper() if r.outcome == "dlq" else r.outcome, r.reason,
         str(r.receives), r.expected + ("" if r.expected_reason is None else f" ({r.expected_reason})")]
        for r in sorted(results, key=lambda r: (order.get(r.sample, 99), r.marker))
    ]  # fmt: skip
    return _table(["sample", "shape", "messageId", "outcome", "reason", "receives", "expected"], rows)


def received_table(received: list[dict[str, Any]]) -> str:
    rows = []
    for item in received:
        event = item["event"]
        em = event.get("user_data", {}).get("em")
        em = em[0] if isinstance(em, list) and em else em
        rows.append([
            str(event.get("event_name")), str(item.get("pixel_id")), f"{em[:12]}..." if isinstance(em, str) else "-",
            str(event.get("event_id")), str(item.get("test_event_code") or "-"),
        ])  # fmt: skip
    return _table(["event_name", "pixel", "em (sha256)", "event_id", "test_event_code"], rows)


# ------------------------------------------------------------------------------- each event's fate
FATE_PIXEL = "100000000000001"  # the function's default pixel
OUTAGE_PIXEL = "100000000000007"  # meets a Meta outage on its first delivery: parked, then delivered


def fate_messages(now: int) -> list[tuple[str, list[tuple[str, str | None]]]]:
    """(body, [(event_id, expected fate)]) for the demo's own messages; fate "delivered", "parked" (then
    delivered) or the expected quarantine reason."""

    def event(event_id: str, **kw: Any) -> dict[str, Any]:
        doc: dict[str, Any] = {"event_name": "Lead", "event_time": now - 60, "action_source": "system_generated",
                               "event_id": event_id, "user_data": {"em": "demo.fate@example.com"}}  # fmt: skip
        doc.update(kw)
        return doc

    multi = {"data": [event("fate-good-1"), event("fate-too-old", event_time=now - 8 * 86_400),
                      event("fate-meta-bad"), event("fate-good-2")]}  # fmt: skip
    outage = {"data": [event("fate-outage-1")], "pixel_id": OUTAGE_PIXEL}
    return [
        (json.dumps(multi), [("fate-good-1", "delivered"), ("fate-too-old", "event_too_old"),
                             ("fate-meta-bad", "graph_invalid_100_2804036"), ("fate-good-2", "delivered")]),
        (json.dumps(outage), [("fate-outage-1", "parked")]),
    ]  # fmt: skip


def publish_fate_messages(clients: Clients, resources: Resources, standin: GraphStandIn) -> dict[str, list[Any]]:
    """Send the fate messages; arm the stand-in (Meta-side rejection, a short outage for OUTAGE_PIXEL)."""
    standin.state.reject_event_ids = {"fate-meta-bad"}
    # Two 503s: the function's two attempts of its first invocation fail, the record is parked.
    standin.add_fault(pixel_id=OUTAGE_PIXEL, status=503, code=2, times=2)
    sent: dict[str, list[Any]] = {}
    for body, events in fate_messages(int(time.time())):
        message_id = clients.sqs.send_message(QueueUrl=resources.queue_url, MessageBody=body)["MessageId"]
        sent[message_id] = events
    return sent


def _parked_ids(logs: str) -> set[str]:
    ids = set()
    for line in logs.splitlines():
        if '"record parked"' in line:
            with contextlib.suppress(ValueError):
                doc = json.loads(line[line.index("{") :])
                ids.add(str(doc.get("message_id")))
    return ids


def fate_table(sent: dict[str, list[Any]], standin: GraphStandIn, dlq: list[dict[str, Any]],
               logs: str) -> tuple[str, list[str]]:  # fmt: skip
    """Per event of the fate messages: delivered / quarantined (reason) / parked, and the differences."""
    accepted = {str(item["event"].get("event_id")) for item in standin.received}
    letters = _letters(dlq)
    parked = _parked_ids(logs)
    rows, problems = [], []
    for message_id, events in sent.items():
        for index, (event_id, expected) in enumerate(events):
            letter = letters.get((message_id, str(index)))
            fates = []
            if message_id in parked:
                fates.append("parked")
            if event_id in accepted:
                fates.append("delivered")
            if letter is not None:
                fates.append(f"quarantined ({letter['rejection_reason']})")
            got = ", then ".join(fates) or "LOST"
            plain = {"delivered": "delivered", "parked": "parked, then delivered"}
            want = plain.get(expected, f"quarantined ({expected})")
            if got != want:
                problems.append(f"event {event_id} of {message_id}: {got}, expected {want}")
            rows.append([message_id, str(index), event_id, got])
    return _table(["messageId", "index", "event_id", "fate"], rows), problems


def _letters(dlq: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, str]]:
    """Quarantined DLQ messages by (source_message_id, event_index or "body") -> their String attributes."""
    out = {}
    for message in dlq:
        attrs = {k: v.get("StringValue", "") for k, v in (message.get("MessageAttributes") or {}).items()}
        if "source_message_id" in attrs:
            out[(attrs["source_message_id"], attrs.get("event_index", "body"))] = attrs
    return out


def _letter_event_id(sample: Sample, record: Expected) -> str:
    """The event_id a letter of the record's first event carries: the producer's, else the one the relay
    derives from the pixel and the event's content (a rejected event keeps its identity too)."""
    if record.event_ids:
        return sent_event_id(sample, record, 0)
    from capi_relay.ingest.envelope import parse_body
    from capi_relay.prepare.events import derived_event_id

    (body,) = [body for body, _ in sample_bodies(sample.name) if record.marker in body]
    event = parse_body(body).events[0]
    own = event.get("event_id") if isinstance(event, dict) else None
    return str(own) if own is not None else derived_event_id(record.pixel_id, event)


def dlq_check(results: list[RecordResult], sent: dict[str, list[Any]], dlq: list[dict[str, Any]]) -> list[str]:
    """The DLQ holds exactly the quarantined events (and bodies), each with its reason and routing."""
    expected: dict[tuple[str, str], dict[str, str]] = {}
    for r in results:
        found = identify(r.marker) if r.expected == "dlq" else None
        if found is not None and r.expected_reason is not None:
            sample, record = found
            index = "body" if sample.shape == "not-json" or record.shape == "not-json" else "0"
            attrs = {"rejection_reason": r.expected_reason, "source_message_id": r.message_id}
            if index != "body":
                event_id = _letter_event_id(sample, record)
                attrs |= {"event_index": index, "pixel_id": record.pixel_id, "event_id": event_id}
            expected[(r.message_id, index)] = attrs
    for message_id, events in sent.items():
        for position, (event_id, fate) in enumerate(events):
            if fate not in ("delivered", "parked"):
                attrs = {"rejection_reason": fate, "source_message_id": message_id, "event_index": str(position),
                         "pixel_id": FATE_PIXEL, "event_id": event_id}  # fmt: skip
                expected[(message_id, str(position))] = attrs
    got = _letters(dlq)
    problems = [f"DLQ: missing quarantined {k}" for k in sorted(set(expected) - set(got))]
    problems += [f"DLQ: unexpected message {k}" for k in sorted(set(got) - set(expected))]
    problems += [f"DLQ: {k} has {got[k]}, expected {v}" for k, v in expected.items() if k in got and got[k] != v]
    moved = [m["MessageId"] for m in dlq if "source_message_id" not in (m.get("MessageAttributes") or {})]
    problems += [f"DLQ: message {m} was moved there by SQS (expected quarantine only)" for m in moved]
    return problems


def leaks(token: str, standin: GraphStandIn, logs: str) -> list[str]:
    """Token in a log line or a request URL; a raw sample PII value at the stand-in or in a log line."""
    problems: list[str] = []
    if token in logs:
        problems.append("the access token appears in the function's logs")
    if any(token in r.path for r in standin.requests):
        problems.append("the access token appears in a request URL")
    if any(r.token_in_url for r in standin.requests):
        problems.append("a request carried access_token in its query string")
    sent = json.dumps([item["event"] for item in standin.received], ensure_ascii=False)
    problems.extend(f"raw sample PII reached Graph: {value!r}" for value in find_raw_pii(sent))
    problems.extend(f"raw sample PII appears in the function's logs: {value!r}" for value in find_raw_pii(logs))
    return problems


def run(args: argparse.Namespace) -> int:
    if not (ARTIFACT_DIR / "capi_relay" / "handler.py").is_file():
        print(f"demo: the packaged function is missing ({ARTIFACT_DIR.relative_to(ROOT)}); run `make build` first",
              file=sys.stderr)  # fmt: skip
        return 2
    from local.rie import LambdaEmulator  # written alongside the template; imported late for a clear error above

    started = time.monotonic()
    with contextlib.ExitStack() as stack:
        moto = stack.enter_context(MotoServer("process"))
        token = dummy_token()
        standin = stack.enter_context(GraphStandIn(tokens={token}))
        resources = provision(
            moto.endpoint_url,
            token=token,
            prefix="capi-relay-demo",
            max_receive_count=args.max_receive_count,
            visibility_timeout_s=args.visibility_timeout,
        )
        clients = resources.clients()
        # As the template configures it: quarantine into the DLQ; parking with the schedule scaled to 3 s.
        env = function_env(resources, standin.url, quarantine=True, park_schedule="3", extra={"MAX_ATTEMPTS": "2"})
        print(f"moto server       {moto.endpoint_url}  (queue {resources.queue_name}, DLQ, secret, EventBridge, SNS)")
        print(f"graph stand-in    {standin.url}")
        emulator = LambdaEmulator(str(ARTIFACT_DIR), env)
        stack.callback(emulator.stop)
        emulator.start()
        print(f"function (RIE)    {ARTIFACT_DIR.relative_to(ROOT)}")
        # Warm the execution environment so the first real batch is not slowed by INIT.
        emulator.invoke({"Records": []})

        for sample in SAMPLES:
            publish(sample, clients, resources)
        sent = publish_fate_messages(clients, resources, standin)
        print(f"published {sum(len(s.records) for s in SAMPLES)} messages from {len(SAMPLES)} samples "
              f"(SQS, EventBridge, SNS) and {len(sent)} messages showing each event's fate\n")  # fmt: skip

        esm = EventSourceEmulator(
            clients.sqs,
            resources.queue_url,
            emulator_invoker(emulator),
            batch_size=args.batch_size,
            window_s=args.window,
            queue_arn=resources.queue_arn,
        )
        outcomes: list[BatchOutcome] = esm.run_until_drained(args.timeout)
        dlq = drain_queue(clients.sqs, resources.dlq_url)
        logs = "\n".join(o.result.logs for o in outcomes)
        results = [r for r in resolve(outcomes, dlq) if r.message_id not in sent]
        fates, fate_problems = fate_table(sent, standin, dlq, logs)

        print(outcome_table(results))
        print(
            "\nEach event's fate (a message of four events, one too old, one refused by Meta; a message that "
            "met an outage):\n"
        )
        print(fates)
        print(f"\n{len(outcomes)} invocations; the stand-in received {len(standin.received)} events:\n")
        print(received_table(standin.received))
        with contextlib.suppress(Exception):
            print(f"\nINIT durations (ms): {emulator.init_durations_ms()}")
        problems = mismatches(results, quarantine=True) + fate_problems + dlq_check(results, sent, dlq)
        problems += leaks(token, standin, logs)
        problems += quality_read(stack, resources, standin)
        print(f"\nelapsed {time.monotonic() - started:.1f} s")
        if problems:
            print("\nMISMATCH:", *problems, sep="\n  ", file=sys.stderr)
            return 1
        print(
            "every message and event ended as expected (delivered, quarantined with its reason, parked); the DLQ "
            "holds exactly the quarantined events; no token or raw PII leaked"
        )
        return 0


# The demo pixel as Meta's Dataset Quality API would describe it (shape: Meta's documented examples).
DEMO_QUALITY = [
    {"event_name": "Purchase",
     "event_match_quality": {
         "composite_score": 6.2,
         "match_key_feedback": [{"identifier": "email", "coverage": {"percentage": 97.4}},
                                {"identifier": "phone", "coverage": {"percentage": 12.0}},
                                {"identifier": "ip_address", "coverage": {"percentage": 99.9}},
                                {"identifier": "user_agent", "coverage": {"percentage": 100}}],
         "diagnostics": [{"name": "Send phone numbers with a country code", "description": "",
                          "solution": "Include the country code in ph.", "percentage": 88.0,
                          "affected_event_count": 880, "total_event_count": 1000}]},
     "event_coverage": {"percentage": 81.0, "goal_percentage": 75, "description": ""},
     "data_freshness": {"upload_frequency": "real_time", "description": ""}},
]  # fmt: skip


def quality_read(stack: contextlib.ExitStack, resources: Resources, standin: GraphStandIn) -> list[str]:
    """One scheduled quality read under the RIE; print what it published. Returns problems."""
    from local.rie import LambdaEmulator

    standin.state.quality_datasets = {DEMO_PIXEL_ID: DEMO_QUALITY}
    env = function_env(resources, standin.url, extra={"QUALITY_PIXEL_IDS": DEMO_PIXEL_ID})
    emulator = LambdaEmulator(str(ARTIFACT_DIR), env, handler="capi_relay.quality.handler.lambda_handler",
                              timeout_s=60, memory_mb=512)  # fmt: skip
    stack.callback(emulator.stop)
    emulator.start()
    result, function_error, logs = emulator.invoke({"source": "aws.scheduler", "detail-type": "Scheduled Event"})
    lines = [json.loads(line) for line in logs.splitlines() if line.startswith("{")]
    rows = []
    for line in lines:
        for directive in line.get("_aws", {}).get("CloudWatchMetrics", []):
            for metric in directive["Metrics"]:
                dims = [d for d in directive["Dimensions"][0] if d != "service"]
                value = line[metric["Name"]]
                value = value[0] if isinstance(value, list) else value
                rows.append([metric["Name"], f"{value:g}", ", ".join(f"{d}={line[d]}" for d in dims)])
    print("\nOne scheduled read of Meta's Dataset Quality API (quality reader under the RIE):\n")
    print(_table(["metric", "value", "dimensions"], rows))
    for line in lines:
        if line.get("level") in ("WARNING", "ERROR"):
            extra = {k: line[k] for k in ("pixel_id", "event_name", "match_key", "coverage_pct", "reason") if k in line}
            print(f"  {line['level'].lower()}: {line['message']} {json.dumps(extra)}")
    print(f"  result: {json.dumps(result)}")
    problems = []
    if function_error or not isinstance(result, dict) or result.get("read") != 1:
        problems.append(f"the quality read failed: {result}")
    if not any(r[0] == "EmqComposite" and r[1] == "6.2" for r in rows):
        problems.append("the quality read did not publish EmqComposite 6.2")
    requests = [r for r in standin.requests if r.method == "GET"]
    if not requests or any(r.token_in_url for r in requests):
        problems.append("the quality read did not reach the stand-in with the token in a header")
    return problems


def _terminate(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--batch-size", type=int, default=10)
    parser.add_argument("--window", type=float, default=1.0, help="batching window, seconds")
    parser.add_argument("--max-receive-count", type=int, default=2)
    parser.add_argument("--visibility-timeout", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=90.0, help="give up draining after this many seconds")
    args = parser.parse_args(argv)
    # Ctrl-C and SIGTERM unwind through run()'s ExitStack, which stops everything it started.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _terminate)
    try:
        return run(args)
    except KeyboardInterrupt:
        print("\ninterrupted; everything started was stopped", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
