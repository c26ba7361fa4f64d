"""Hostile-input benchmark (issue 11): the packaged function (``make build``) under the Lambda Runtime
Interface Emulator, fed by the SQS event-source emulator from moto SQS, posting to the Graph stand-in --
the same path and the same inputs (``local/hostile.py``) as ``tests/e2e/test_hostile.py``.

Cases, each in a fresh execution environment:

* ``10k records``: 10,000 good records as one Lambda batch, split at the 6 MB invocation payload limit the
  way the event-source emulator (and Lambda) splits it, so this shows how many invocations 10,000
  realistic records really take (built in memory: moto is too slow at 10,000 messages);
* ``60k-space phone``: one phone value with 60,000 inner spaces among 20 good records;
* ``dripping Graph``: a Graph answer trickling one byte per 0.5 s (once), 10 records;
* ``SM black hole``: Secrets Manager accepting connections and never answering, six records of six pixels;
* ``large distinct x10``: ten warm invocations of 120 events whose hashed fields hold 4 KiB random values.

Prints per case: invocations, the longest invocation's wall time (the invoke alone), whether every
invocation returned in time (``timeout`` = the RIE ended it: a Lambda timeout), records deleted / failed,
and the runtime's peak RSS (``VmHWM`` of the function process) with its resident growth after the first
invocation. The hostile
cases run with a 10 s function timeout, like the tests. Asserts nothing. Starts the RIE: run it under
``flock /tmp/capi-rie.lock``.

    python -m bench.bench_hostile [--records 10000]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import random
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.common import machine_note
from local.blackhole import BlackHole
from local.esm import (
    MAX_PAYLOAD_BYTES,
    BatchOutcome,
    EventSourceEmulator,
    InvokeResult,
    check_response,
    emulator_invoker,
    encode_event,
    lambda_record,
    split_at_limit,
)
from local.graph_standin import GraphStandIn
from local.hostile import good_event, large_distinct_event, pixel_message, spaced_phone_event
from local.rie import LambdaEmulator
from local.stack import MotoServer, Resources, aws_env, dummy_token, function_env, provision

ROOT = Path(__file__).resolve().parent.parent
ARTIFACT_DIR = ROOT / ".aws-sam" / "build" / "RelayFunction"
HOSTILE_TIMEOUT_S = 10


@dataclass
class Result:
    invocations: int = 0
    longest_s: float = 0.0
    timeouts: int = 0
    deleted: int = 0
    failed: int = 0
    largest_records: int = 0
    largest_payload: int = 0  # bytes of the largest invocation event
    rss_kb: list[int] = field(default_factory=list)  # VmRSS after each invocation (runtime alive)
    peak_kb: int = 0  # VmHWM
    note: str = ""


class Bench:
    def __init__(self, moto: MotoServer, standin: GraphStandIn, token: str) -> None:
        self.moto, self.standin, self.token = moto, standin, token

    def environment(self, timeout_s: int, extra: dict[str, str] | None = None) -> tuple[Resources, LambdaEmulator]:
        resources = provision(self.moto.endpoint_url, token=self.token, prefix=f"b{uuid.uuid4().hex[:10]}",
                              max_receive_count=3, visibility_timeout_s=timeout_s + 5)  # fmt: skip
        env = function_env(resources, self.standin.url, extra={"POWERTOOLS_LOG_LEVEL": "WARNING", **(extra or {})})
        function = LambdaEmulator(str(ARTIFACT_DIR), env, timeout_s=timeout_s)
        function.start()
        function.invoke({"Records": []})  # INIT outside the measurement
        return resources, function

    @staticmethod
    def send(resources: Resources, bodies: list[dict[str, Any]]) -> None:
        sqs = resources.clients().sqs
        batch: list[Any] = []
        size = 0
        for i, doc in enumerate(bodies):
            text = json.dumps(doc)
            if batch and (len(batch) == 10 or size + len(text) > 200_000):
                sqs.send_message_batch(QueueUrl=resources.queue_url, Entries=batch)
                batch, size = [], 0
            batch.append({"Id": str(i), "MessageBody": text})
            size += len(text)
        if batch:
            sqs.send_message_batch(QueueUrl=resources.queue_url, Entries=batch)

    @staticmethod
    def run(resources: Resources, function: LambdaEmulator, batch_size: int, polls: int, result: Result,
            window_s: float) -> None:  # fmt: skip
        invoke = emulator_invoker(function)
        took: list[float] = []

        def timed(event: dict[str, Any]) -> InvokeResult:  # the invocation alone, not the batching window
            started = time.perf_counter()
            try:
                return invoke(event)
            finally:
                took.append(time.perf_counter() - started)

        esm = EventSourceEmulator(resources.clients().sqs, resources.queue_url, timed, batch_size=batch_size,
                                  window_s=window_s, wait_time_s=1, queue_arn=resources.queue_arn)  # fmt: skip
        for _ in range(polls):
            outcome: BatchOutcome | None = esm.poll_once()
            if outcome is None:
                break
            result.invocations += 1
            result.longest_s = max(result.longest_s, *took)
            result.timeouts += outcome.result.function_error
            result.deleted += len(outcome.deleted)
            result.failed += len(outcome.failed)
            result.largest_records = max(result.largest_records, len(outcome.message_ids))
            result.largest_payload = max(result.largest_payload, len(encode_event(outcome.event)))
            Bench._memory(function, result)

    def direct(self, bodies: list[dict[str, Any]], timeout_s: int) -> Result:
        """Many records without SQS (moto is slow at 10,000 messages): build the Lambda records, split them at
        the 6 MB payload limit exactly as the event-source emulator does, invoke each part."""
        result = Result()
        resources, function = self.environment(timeout_s)
        try:
            rest = sqs_records(bodies, resources.queue_arn)
            while rest:
                part, rest = split_at_limit(rest, MAX_PAYLOAD_BYTES)
                event = {"Records": part}
                started = time.perf_counter()
                payload, error, _ = function.invoke(event)
                result.invocations += 1
                result.longest_s = max(result.longest_s, time.perf_counter() - started)
                ids = [r["messageId"] for r in part]
                failed, invalid = check_response(None if error else payload, ids)
                result.timeouts += error
                failed = ids if error or invalid else failed
                result.failed += len(failed)
                result.deleted += len(ids) - len(failed)
                result.largest_records = max(result.largest_records, len(part))
                result.largest_payload = max(result.largest_payload, len(encode_event(event)))
                self._memory(function, result)
        finally:
            function.stop()
        result.note = (f"largest invocation: {result.largest_records:,} records, "
                       f"{result.largest_payload / 1e6:.2f} MB (limit {MAX_PAYLOAD_BYTES / 1e6:.2f} MB)")  # fmt: skip
        return result

    @staticmethod
    def _memory(function: LambdaEmulator, result: Result) -> None:
        rss = function.runtime_status_kb("VmRSS")
        if rss is not None:
            result.rss_kb.append(rss)
            result.peak_kb = max(result.peak_kb, function.runtime_status_kb("VmHWM") or 0)

    def case(self, bodies: list[dict[str, Any]], *, batch_size: int, polls: int = 1, timeout_s: int = HOSTILE_TIMEOUT_S,
             extra: dict[str, str] | None = None, rounds: Callable[[int], list[dict[str, Any]]] | None = None,
             hole: AbstractContextManager[Any] | None = None, window_s: float = 10) -> Result:  # fmt: skip
        result = Result()
        with hole or nullcontext():
            resources, function = self.environment(timeout_s, extra)
            try:
                if rounds is None:
                    self.send(resources, bodies)
                    self.run(resources, function, batch_size, polls, result, window_s)
                else:
                    for n in range(polls):
                        self.send(resources, rounds(n))
                        self.run(resources, function, batch_size, 1, result, window_s)
            finally:
                function.stop()
        return result


def sqs_records(bodies: list[dict[str, Any]], queue_arn: str) -> list[dict[str, Any]]:
    """Lambda SQS records as the event source mapping builds them (no SQS round trip)."""
    sent_ms = str(int(time.time() * 1000))
    out = []
    for doc in bodies:
        text = json.dumps(doc)
        attributes = {"ApproximateReceiveCount": "1", "SentTimestamp": sent_ms, "SenderId": "AIDAEXAMPLEBENCH",
                      "ApproximateFirstReceiveTimestamp": sent_ms}  # fmt: skip
        message = {"MessageId": str(uuid.uuid4()), "ReceiptHandle": uuid.uuid4().hex * 4, "Body": text,
                   "MD5OfBody": hashlib.md5(text.encode()).hexdigest(), "Attributes": attributes}  # fmt: skip
        out.append(lambda_record(message, queue_arn, "us-east-1"))
    return out


def cases(bench: Bench, records: int) -> Iterator[tuple[str, Callable[[], Result]]]:
    now = int(time.time())
    rng = random.Random(11)

    def ten_k() -> Result:
        return bench.direct([good_event(now, f"k-{i}") for i in range(records)], timeout_s=60)

    def phone() -> Result:
        bodies = [good_event(now, f"g-{i}") for i in range(20)] + [spaced_phone_event(now, "hostile-phone")]
        return bench.case(bodies, batch_size=len(bodies))

    def drip() -> Result:
        bench.standin.add_fault(drip_s=0.5, times=1)
        return bench.case([good_event(now, f"d-{i}") for i in range(10)], batch_size=10)

    def black_hole() -> Result:
        hole = BlackHole()
        pixels = [f"10000000000000{i}" for i in range(1, 7)]
        bodies = [pixel_message(good_event(now, f"p-{p}"), p) for p in pixels]
        result = bench.case(
            bodies, batch_size=len(bodies), extra={"AWS_ENDPOINT_URL_SECRETS_MANAGER": hole.url}, hole=hole
        )
        result.note = f"{hole.connections} connections to Secrets Manager for 6 pixels"
        return result

    def large() -> Result:
        def round_bodies(n: int) -> list[dict[str, Any]]:
            return [large_distinct_event(now, f"big-{n}-{i}", rng) for i in range(120)]

        return bench.case([], batch_size=120, polls=10, rounds=round_bodies)

    yield f"{records:,} records", ten_k
    yield "60k-space phone", phone
    yield "dripping Graph", drip
    yield "SM black hole", black_hole
    yield "large distinct x10", large


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=10_000)
    args = parser.parse_args(argv)
    if not (ARTIFACT_DIR / "capi_relay" / "handler.py").is_file():
        raise SystemExit(f"{ARTIFACT_DIR} is missing: run `make build`")
    logging.disable(logging.WARNING)
    print(f"command: python -m bench.bench_hostile {' '.join(argv if argv is not None else sys.argv[1:])}")
    print(f"inputs: local/hostile.py; packaged function under the RIE (timeout {HOSTILE_TIMEOUT_S} s for the "
          "hostile cases, 512 MB nominal), event-source emulator on moto SQS, Graph stand-in in-process")  # fmt: skip
    print(f"machine: {machine_note()}")
    header = (f"{'case':<20} {'invocations':>11} {'longest s':>9} {'in time':>8} {'deleted':>7} {'failed':>6} "
              f"{'peak RSS MB':>11} {'RSS growth MB':>13}  note")  # fmt: skip
    print(header)
    print("-" * len(header))
    token = dummy_token()
    with ExitStack() as stack:
        moto = stack.enter_context(MotoServer("thread"))
        os.environ.update(aws_env(moto.endpoint_url))
        standin = stack.enter_context(GraphStandIn(tokens={token}))
        bench = Bench(moto, standin, token)
        for name, run in cases(bench, args.records):
            standin.state.reset()
            r = run()
            growth = f"{(max(r.rss_kb[1:]) - r.rss_kb[0]) / 1024:.1f}" if len(r.rss_kb) > 1 else "-"
            peak = f"{r.peak_kb / 1024:.0f}" if r.peak_kb else "-"
            in_time = "-" if not r.invocations else ("yes" if not r.timeouts else f"{r.timeouts} timeout")
            print(f"{name:<20} {r.invocations:>11} {r.longest_s:>9.2f} {in_time:>8} {r.deleted:>7} {r.failed:>6} "
                  f"{peak:>11} {growth:>13}  {r.note}", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
