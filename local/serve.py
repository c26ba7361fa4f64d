"""The local stack in the foreground: moto, the Graph stand-in and the packaged function, no Docker.

    make local-stack            # = make build, then python -m local.serve; Ctrl-C stops it
    make send FILE=examples/first-events.jsonl      # in another terminal

Starts a moto server on 127.0.0.1:5000 (queue, DLQ, the access-token secret ``capi-relay-local/meta-access-
token``, EventBridge, SNS) and the Graph API stand-in on 127.0.0.1:8089 -- the addresses ``events/env.json``
names -- and, when the function is built (``.aws-sam/build/RelayFunction``), runs it under the Lambda
Runtime Interface Emulator fed by the SQS event-source emulator (``local/esm.py``), as ``make demo`` does.
Every message sent to the queue (``capi-relay send --endpoint-url ...``, ``aws sqs send-message``) is
relayed, and each event's fate is printed: delivered, quarantined with its reason, or back to SQS (parked).

With ``--no-function`` (or no build) nothing reads the queue: invoke the function yourself where Docker is
available,

    sam build
    sam local invoke RelayFunction -e events/website_purchase.json --env-vars events/env.json \\
        --docker-network host

(``--docker-network host`` lets the function's container reach 127.0.0.1 on this machine.)
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

from local.graph_standin import GraphStandIn
from local.stack import MotoServer, dummy_token, function_env, provision

MOTO_PORT = 5000  # events/env.json: AWS_ENDPOINT_URL
GRAPH_PORT = 8089  # events/env.json: GRAPH_API_URL
PREFIX = "capi-relay-local"  # events/env.json: ACCESS_TOKEN_SECRET_ID = capi-relay-local/meta-access-token
ROOT = Path(__file__).resolve().parent.parent
ARTIFACT_DIR = ROOT / ".aws-sam" / "build" / "RelayFunction"
REJECTED_EVENT_ID = "meta-rejects-me"  # the stand-in refuses this event as Meta refuses an invalid one
OUTAGE_PIXEL = "100000000000007"  # the stand-in answers 503 to this pixel's first two requests: parked, delivered


def _stop(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _log_lines(logs: str) -> list[dict[str, Any]]:
    """The function's JSON log lines (the RIE prefixes none; START/END/REPORT lines are skipped)."""
    out = []
    for line in logs.splitlines():
        if "{" not in line:
            continue
        with contextlib.suppress(ValueError):
            doc = json.loads(line[line.index("{") :])
            if isinstance(doc, dict):
                out.append(doc)
    return out


def _event_ids(body: str) -> list[str]:
    """Each event's id as the producer wrote it ("-" when the relay derives one), "" for an unreadable body."""
    from capi_relay.ingest.envelope import EnvelopeError, parse_body

    try:
        events = parse_body(body).events
    except EnvelopeError:
        return []
    return [str(e.get("event_id", "-")) if isinstance(e, dict) else "-" for e in events]


def fate_lines(outcome: Any) -> list[str]:
    """One line per record of an invocation: each event delivered / quarantined (reason), or the record
    back to SQS with its reason (and parked when the relay extended its visibility)."""
    logs = _log_lines(outcome.result.logs)
    quarantined = {(d.get("message_id"), d.get("event_index")): d.get("reason") for d in logs
                   if d.get("message") == "event quarantined"}  # fmt: skip
    failed_reason = {d.get("message_id"): d.get("reason") for d in logs if d.get("message") == "record failed"}
    parked = {d.get("message_id") for d in logs if d.get("message") == "record parked"}
    lines = []
    for record in outcome.event["Records"]:
        mid = record["messageId"]
        receive = record.get("attributes", {}).get("ApproximateReceiveCount", "?")
        head = f"message {mid[:8]} (receive {receive}):"
        if outcome.whole_batch_failed:
            why = outcome.invalid_response or "function error"
            lines.append(f"{head} back to SQS ({why}); it returns after the visibility timeout")
            continue
        if mid in outcome.failed:
            tail = ", parked" if mid in parked else ""
            lines.append(f"{head} back to SQS ({failed_reason.get(mid, 'failed')}){tail}")
            continue
        if (mid, None) in quarantined:  # the whole body: unreadable, or no pixel
            lines.append(f"{head} quarantined ({quarantined[(mid, None)]})")
            continue
        ids = _event_ids(record["body"])
        if not ids:
            lines.append(f"{head} quarantined (unreadable body)")
            continue
        fates = []
        for index, event_id in enumerate(ids):
            reason = quarantined.get((mid, index))
            fates.append(f"event {index} ({event_id}) " + (f"quarantined ({reason})" if reason else "delivered"))
        lines.append(f"{head} " + "; ".join(fates))
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--moto-port", type=int, default=MOTO_PORT)
    parser.add_argument("--graph-port", type=int, default=GRAPH_PORT)
    parser.add_argument("--no-function", action="store_true", help="do not run the packaged function")
    parser.add_argument("--once", action="store_true", help="exit once the queue is empty (for tests)")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _stop)
    token = dummy_token()
    with contextlib.ExitStack() as stack:
        moto = stack.enter_context(MotoServer("process", port=args.moto_port))
        graph = stack.enter_context(GraphStandIn({token}, port=args.graph_port))
        resources = provision(moto.endpoint_url, token=token, prefix=PREFIX)
        graph.state.reject_event_ids = {REJECTED_EVENT_ID}
        graph.add_fault(pixel_id=OUTAGE_PIXEL, status=503, code=2, times=2)
        print(f"moto server     {moto.endpoint_url}   secret {resources.secret_id}")
        print(f"graph stand-in  {graph.url}   (accepts the token in the secret)")
        print(f"events queue    {resources.queue_url}")
        esm = None
        if not args.no_function and (ARTIFACT_DIR / "capi_relay" / "handler.py").is_file():
            from local.esm import EventSourceEmulator, emulator_invoker
            from local.rie import LambdaEmulator

            # As the template configures it (quarantine into the DLQ), with the parking schedule scaled to 3 s.
            env = function_env(resources, graph.url, quarantine=True, park_schedule="3", extra={"MAX_ATTEMPTS": "2"})
            emulator = LambdaEmulator(str(ARTIFACT_DIR), env)
            stack.callback(emulator.stop)
            emulator.start()
            esm = EventSourceEmulator(resources.clients().sqs, resources.queue_url, emulator_invoker(emulator),
                                      queue_arn=resources.queue_arn)  # fmt: skip
            print(f"function (RIE)  {ARTIFACT_DIR.relative_to(ROOT)}, fed by the SQS event-source emulator")
            print(f"the stand-in refuses event_id {REJECTED_EVENT_ID} (as Meta refuses an invalid event) and fails "
                  f"pixel {OUTAGE_PIXEL}'s first two requests (an outage: the record is parked)")  # fmt: skip
            print("ready: in another terminal, make send FILE=examples/first-events.jsonl   (or: capi-relay send "
                  f"--region {resources.region} --endpoint-url {moto.endpoint_url} --queue-url {resources.queue_url} "
                  "FILE); Ctrl-C stops")  # fmt: skip
        else:
            print("ready: run `sam local invoke ... --env-vars events/env.json --docker-network host`; Ctrl-C stops")
        sys.stdout.flush()
        seen = 0
        relayed = False
        try:
            while True:
                if esm is not None:
                    outcome = esm.poll_once()  # long-polls up to 1 s
                    if outcome is not None:
                        relayed = True
                        print(*fate_lines(outcome), sep="\n", flush=True)
                    elif args.once and relayed and esm.pending() == 0:
                        return 0
                else:
                    time.sleep(0.5)
                received = graph.received
                for item in received[seen:]:
                    event = item["event"]
                    keys = sorted(event.get("user_data", {}))
                    print(f"graph received  pixel {item['pixel_id']}  {event.get('event_name')}  "
                          f"event_id {event.get('event_id')}  user_data keys {keys}", flush=True)  # fmt: skip
                seen = len(received)
        except KeyboardInterrupt:
            print("stopping")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
