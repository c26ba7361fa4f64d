"""``make demo``: the whole flow on this machine, no AWS account and no Docker.

What runs (all on 127.0.0.1, all stopped at the end, also on Ctrl-C or an error):

* a moto server (a subprocess) with the events queue (redrive to a DLQ after 2 receives, 2 s visibility
  timeout), the DLQ, the access-token secret, an EventBridge rule -> queue and an SNS topic -> queue;
* the Graph API stand-in (``local.graph_standin``), which enforces Meta's contract;
* the packaged function from ``make build`` (``.aws-sam/build/RelayFunction``) under the Lambda Runtime
  Interface Emulator (``local.rie``);
* the SQS event-source emulator (``local.esm``): batch size 10, 1 s batching window, partial batch
  responses.

Every sample in ``events/`` is published through its real API (SQS ``SendMessage``/``SendMessageBatch``,
EventBridge ``PutEvents``, SNS ``Publish``), the queue is drained, and a table shows where each message
ended (delivered or DLQ, and why) and what the stand-in received. The table is checked against
``local.samples.SAMPLES``; any difference, a token in a log line or request URL, or a raw sample PII value
at the stand-in makes the exit status non-zero.

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
from local.samples import SAMPLES, RecordResult, find_raw_pii, mismatches, publish, resolve
from local.stack import MotoServer, drain_queue, dummy_token, function_env, provision

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
        env = function_env(resources, standin.url)
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
        print(f"published {sum(len(s.records) for s in SAMPLES)} messages from {len(SAMPLES)} samples "
              "(SQS, EventBridge, SNS)\n")  # fmt: skip

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
        results = resolve(outcomes, dlq)
        logs = "\n".join(o.result.logs for o in outcomes)

        print(outcome_table(results))
        print(f"\n{len(outcomes)} invocations; the stand-in received {len(standin.received)} events:\n")
        print(received_table(standin.received))
        with contextlib.suppress(Exception):
            print(f"\nINIT durations (ms): {emulator.init_durations_ms()}")
        problems = mismatches(results) + leaks(token, standin, logs)
        print(f"\nelapsed {time.monotonic() - started:.1f} s")
        if problems:
            print("\nMISMATCH:", *problems, sep="\n  ", file=sys.stderr)
            return 1
        print("every message ended as expected (delivered or DLQ); no token or raw PII leaked")
        return 0


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
