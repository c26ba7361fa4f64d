"""An SQS event-source emulator that behaves like Lambda's event source mapping (standard queues).

One poll (:meth:`EventSourceEmulator.poll_once`):

1. collect up to ``batch_size`` messages -- ``ReceiveMessage`` with ``AttributeNames=All``,
   ``MessageAttributeNames=All`` and long polling -- until the batch is full, the batching window
   (``window_s``) ends or the event reaches Lambda's 6 MB invocation payload limit; with ``window_s=0``
   the first non-empty receive is the batch (as Lambda does);
2. build Lambda's event ``{"Records": [...]}``: ``messageId``, ``receiptHandle``, ``body``,
   ``attributes`` (strings), ``messageAttributes`` in Lambda's lowercase form
   (``stringValue``/``binaryValue``/``stringListValues``/``binaryListValues``/``dataType``),
   ``md5OfBody``, ``md5OfMessageAttributes`` (when present), ``eventSource``, ``eventSourceARN``,
   ``awsRegion``;
3. invoke through a pluggable ``invoke(event) -> InvokeResult`` (packaged function under the RIE, or a
   handler in-process -- see :func:`in_process_invoker` and :func:`emulator_invoker`);
4. with ``ReportBatchItemFailures`` semantics: delete every record not listed in ``batchItemFailures``;
   delete nothing on a function error or an invalid response (an ``itemIdentifier`` that is missing,
   empty or not a ``messageId`` of the batch makes the whole batch fail, as Lambda does).

**Invocation payload limit.** Lambda passes a batch to the function in one call only up to the 6 MB payload
limit of a synchronous invoke, and the event source mapping invokes as soon as a batch reaches it, whatever
``BatchSize`` says. The emulator does the same: it measures the event as compact UTF-8 JSON (what
:mod:`local.rie` sends) and never invokes with more than ``max_payload_bytes``; messages it received
beyond the limit (at most one receive's worth) start the next batch, still in flight. So 10,000 records
go out in one invocation only if their records total <= 6 MB (~629 bytes per record, of which Lambda's
record envelope -- message id, receipt handle, attributes, ARN -- takes several hundred); realistic
~1 KiB events split into two or more invocations. A single record cannot
exceed 6 MB in SQS (a message is at most 1 MiB); with a smaller ``max_payload_bytes`` such a record is
not invoked and its batch counts as failed (Lambda would refuse the invoke), so SQS retries it and
finally moves it to the DLQ.

Failed messages are left alone: they become visible again after the queue's visibility timeout and SQS
(moto) moves them to the DLQ after ``maxReceiveCount`` receives. :meth:`run_until_drained` polls until
the queue has neither visible nor in-flight messages.

Differences from Lambda: one batch at a time (Lambda runs several pollers and concurrent batches);
``batch_size`` > 10 with ``window_s=0`` simply returns what one receive gave (Lambda
demands a window >= 1 s there). FIFO queues work, but moto does not keep a group's order strictly when
failed messages become visible again, so order-sensitive FIFO assertions need care.

Example::

    esm = EventSourceEmulator(sqs, queue_url, in_process_invoker(lambda e: relay.process(e).response))
    outcomes = esm.run_until_drained(timeout_s=60)   # -> [BatchOutcome(message_ids, deleted, failed, ...)]
"""

from __future__ import annotations

import base64
import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient

MAX_RECEIVE = 10  # SQS ReceiveMessage limit per call
# Lambda's payload limit for a synchronous invoke, which the SQS event source mapping uses ("6 MB").
MAX_PAYLOAD_BYTES = 6 * 1024 * 1024
_EVENT_OVERHEAD = len(b'{"Records":[]}')


@dataclass(frozen=True)
class InvokeResult:
    """What one invocation returned: the decoded response payload (normally a dict, None when empty; anything
    else is an invalid partial-batch response), whether it was a function error (``X-Amz-Function-Error`` /
    an uncaught exception), and the captured logs (may be empty)."""

    response: Any
    function_error: bool = False
    logs: str = ""


Invoker = Callable[[dict[str, Any]], InvokeResult]


@dataclass
class BatchOutcome:
    """One invocation: the event sent, what came back, and what the emulator deleted."""

    event: dict[str, Any]
    result: InvokeResult
    message_ids: list[str]
    deleted: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    whole_batch_failed: bool = False
    invalid_response: str | None = None  # why the response was treated as a whole-batch failure

    @property
    def receive_counts(self) -> dict[str, int]:
        return {r["messageId"]: int(r["attributes"].get("ApproximateReceiveCount", "0")) for r in self.event["Records"]}


def _lambda_message_attributes(attrs: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in attrs.items():
        entry: dict[str, Any] = {
            "stringListValues": list(value.get("StringListValues", [])),
            "binaryListValues": [_b64(v) for v in value.get("BinaryListValues", [])],
            "dataType": value.get("DataType", "String"),
        }
        if "StringValue" in value:
            entry["stringValue"] = value["StringValue"]
        if "BinaryValue" in value:
            entry["binaryValue"] = _b64(value["BinaryValue"])
        out[name] = entry
    return out


def _b64(value: Any) -> str:
    raw = value if isinstance(value, bytes) else str(value).encode()
    return base64.b64encode(raw).decode()


def lambda_record(message: Mapping[str, Any], queue_arn: str, region: str) -> dict[str, Any]:
    """One SQS ``ReceiveMessage`` entry -> one Lambda SQS event record."""
    record: dict[str, Any] = {
        "messageId": message["MessageId"],
        "receiptHandle": message["ReceiptHandle"],
        "body": message.get("Body", ""),
        "attributes": {k: str(v) for k, v in message.get("Attributes", {}).items()},
        "messageAttributes": _lambda_message_attributes(message.get("MessageAttributes", {})),
        "md5OfBody": message.get("MD5OfBody", ""),
        "eventSource": "aws:sqs",
        "eventSourceARN": queue_arn,
        "awsRegion": region,
    }
    if message.get("MD5OfMessageAttributes"):
        record["md5OfMessageAttributes"] = message["MD5OfMessageAttributes"]
    return record


def check_response(response: Any, message_ids: list[str]) -> tuple[list[str], str | None]:
    """Lambda's partial-batch-response rules -> (failed messageIds, reason the whole batch failed or None).

    Success: None, ``{}``, or ``batchItemFailures`` null/empty. Whole-batch failure: a response that is not an
    object, ``batchItemFailures`` not a list, an entry without a non-empty ``itemIdentifier``, or an
    ``itemIdentifier`` that is not a ``messageId`` of the batch.
    """
    if response is None:
        return [], None
    if not isinstance(response, dict):
        return list(message_ids), "response is not a JSON object"
    items = response.get("batchItemFailures")
    if items is None:
        return [], None
    if not isinstance(items, list):
        return list(message_ids), "batchItemFailures is not a list"
    failed: list[str] = []
    known = set(message_ids)
    for item in items:
        ident = item.get("itemIdentifier") if isinstance(item, dict) else None
        if not isinstance(ident, str) or not ident:
            return list(message_ids), "itemIdentifier missing or empty"
        if ident not in known:
            return list(message_ids), f"itemIdentifier {ident!r} is not in the batch"
        if ident not in failed:
            failed.append(ident)
    return failed, None


def encode_event(event: dict[str, Any]) -> bytes:
    """The invocation payload as sent: compact UTF-8 JSON (the size Lambda's 6 MB limit applies to)."""
    return json.dumps(event, separators=(",", ":"), ensure_ascii=False).encode()


def record_size(record: dict[str, Any]) -> int:
    """Bytes one record adds to the payload (its JSON plus the separating comma)."""
    return len(encode_event(record)) + 1


def split_at_limit(
    records: list[dict[str, Any]], max_payload_bytes: int
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(the longest prefix whose event fits in ``max_payload_bytes``, the rest). The prefix is empty only
    when the first record alone does not fit."""
    size = _EVENT_OVERHEAD - 1  # no comma before the first record
    for index, record in enumerate(records):
        size += record_size(record)
        if size > max_payload_bytes:
            return records[:index], records[index:]
    return records, []


class DrainTimeout(TimeoutError):
    def __init__(self, message: str, outcomes: list[BatchOutcome]) -> None:
        super().__init__(message)
        self.outcomes = outcomes


class EventSourceEmulator:
    """Lambda's SQS event source mapping, for one standard queue, one batch at a time."""

    def __init__(
        self,
        sqs_client: SQSClient,
        queue_url: str,
        invoke: Invoker,
        batch_size: int = 10,
        window_s: float = 0.0,
        *,
        wait_time_s: int = 1,
        queue_arn: str | None = None,
        region: str | None = None,
        max_payload_bytes: int = MAX_PAYLOAD_BYTES,
    ) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        if max_payload_bytes <= _EVENT_OVERHEAD:
            raise ValueError("max_payload_bytes leaves no room for a record")
        self.max_payload_bytes = max_payload_bytes
        # Records received beyond the payload limit: they start the next batch (still in flight, as in Lambda).
        self._carry: list[dict[str, Any]] = []
        self.sqs = sqs_client
        self.queue_url = queue_url
        self.invoke = invoke
        self.batch_size = batch_size
        self.window_s = window_s
        self.wait_time_s = wait_time_s
        if queue_arn is None:
            attrs = sqs_client.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]
            queue_arn = attrs["QueueArn"]
        self.queue_arn = queue_arn
        self.region = region or queue_arn.split(":")[3]

    def _receive(self, max_messages: int, wait_s: int) -> list[dict[str, Any]]:
        resp = self.sqs.receive_message(
            QueueUrl=self.queue_url,
            MaxNumberOfMessages=max(1, min(MAX_RECEIVE, max_messages)),
            WaitTimeSeconds=wait_s,
            AttributeNames=["All"],
            MessageAttributeNames=["All"],
        )
        return [dict(m) for m in resp.get("Messages", [])]

    def _records(self, messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [lambda_record(m, self.queue_arn, self.region) for m in messages]

    def collect(self) -> list[dict[str, Any]]:
        """Up to ``batch_size`` Lambda records, waiting at most the batching window once the first one
        arrived, and stopping once the event reaches ``max_payload_bytes`` (then the batch is due at once)."""
        batch, self._carry = self._carry, []
        if not batch:
            batch = self._records(self._receive(self.batch_size, self.wait_time_s))
            if not batch:
                return []
        size = _EVENT_OVERHEAD - 1 + sum(record_size(r) for r in batch)
        window_end = time.monotonic() + self.window_s
        while len(batch) < self.batch_size and size <= self.max_payload_bytes:
            left = window_end - time.monotonic()
            if left <= 0:
                break
            more = self._records(self._receive(self.batch_size - len(batch), min(int(left), 20)))
            if not more and left < 1:
                time.sleep(min(left, 0.1))
            batch.extend(more)
            size += sum(record_size(r) for r in more)
        return batch

    def poll_once(self) -> BatchOutcome | None:
        """Receive one batch, invoke, delete what succeeded. None when no message arrived."""
        received = self.collect()
        if not received:
            return None
        records, self._carry = split_at_limit(received, self.max_payload_bytes)
        if not records:  # one record alone over the limit: Lambda refuses the invoke, the batch fails
            records, self._carry = self._carry[:1], self._carry[1:]
            outcome = BatchOutcome(event={"Records": records}, result=InvokeResult(None, True),
                                   message_ids=[r["messageId"] for r in records])  # fmt: skip
            outcome.failed, outcome.whole_batch_failed = list(outcome.message_ids), True
            outcome.invalid_response = f"invocation payload over {self.max_payload_bytes} bytes"
            return outcome
        event = {"Records": records}
        ids = [r["messageId"] for r in records]
        try:
            result = self.invoke(event)
        except Exception as exc:  # the invoker itself broke: treat as a function error, delete nothing
            result = InvokeResult(None, True, f"invoker raised {type(exc).__name__}: {exc}")
        outcome = BatchOutcome(event=event, result=result, message_ids=ids)
        if result.function_error:
            outcome.failed, outcome.whole_batch_failed = list(ids), True
            return outcome
        failed, invalid = check_response(result.response, ids)
        outcome.failed = failed
        outcome.invalid_response = invalid
        outcome.whole_batch_failed = invalid is not None
        failed_ids = set(failed)
        to_delete = [r for r in records if r["messageId"] not in failed_ids]
        for start in range(0, len(to_delete), 10):
            chunk = to_delete[start : start + 10]
            resp = self.sqs.delete_message_batch(
                QueueUrl=self.queue_url,
                Entries=[{"Id": str(i), "ReceiptHandle": r["receiptHandle"]} for i, r in enumerate(chunk)],
            )
            ok = {int(e["Id"]) for e in resp.get("Successful", [])}
            outcome.deleted.extend(chunk[i]["messageId"] for i in sorted(ok))
        return outcome

    def pending(self) -> int:
        """Visible + in-flight + delayed messages of the queue."""
        attrs = self.sqs.get_queue_attributes(
            QueueUrl=self.queue_url,
            AttributeNames=[
                "ApproximateNumberOfMessages",
                "ApproximateNumberOfMessagesNotVisible",
                "ApproximateNumberOfMessagesDelayed",
            ],
        )["Attributes"]
        return sum(int(v) for v in attrs.values())

    def run_until_drained(self, timeout_s: float) -> list[BatchOutcome]:
        """Poll until the queue is empty (nothing visible, in flight or delayed). Raises :class:`DrainTimeout`."""
        outcomes: list[BatchOutcome] = []
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            outcome = self.poll_once()
            if outcome is not None:
                outcomes.append(outcome)
                continue
            if self.pending() == 0:
                return outcomes
            time.sleep(0.05)  # messages in flight or delayed: let them come back rather than poll in a tight loop
        raise DrainTimeout(f"queue not drained after {timeout_s} s ({self.pending()} messages left)", outcomes)


_STD_RECORD_KEYS = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


class _JsonCapture(logging.Handler):
    """Collects log records as JSON lines (message, level and the ``extra`` keys)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        doc: dict[str, Any] = {"level": record.levelname, "message": record.getMessage()}
        doc.update({k: v for k, v in vars(record).items() if k not in _STD_RECORD_KEYS and not k.startswith("_")})
        self.lines.append(json.dumps(doc, default=str))


def in_process_invoker(handler: Callable[[dict[str, Any]], Any], *, capture_logs: bool = True) -> Invoker:
    """Call ``handler(event)`` in this process; an exception is a function error (nothing is deleted).

    With ``capture_logs`` the log records emitted during the call (they reach the root logger) become
    :attr:`InvokeResult.logs`, one JSON object per line, like the function's own log lines.
    """

    def invoke(event: dict[str, Any]) -> InvokeResult:
        capture = _JsonCapture()
        if capture_logs:
            logging.getLogger().addHandler(capture)
        try:
            response = handler(event)
        except Exception as exc:
            return InvokeResult(None, True, "\n".join([*capture.lines, f"{type(exc).__name__}: {exc}"]))
        finally:
            logging.getLogger().removeHandler(capture)
        return InvokeResult(response, False, "\n".join(capture.lines))

    return invoke


def emulator_invoker(emulator: Any) -> Invoker:
    """Adapt ``local.rie.LambdaEmulator.invoke(event) -> (payload, is_function_error, logs)``."""

    def invoke(event: dict[str, Any]) -> InvokeResult:
        payload, function_error, logs = emulator.invoke(event)
        if function_error:
            return InvokeResult(None, True, logs)
        return InvokeResult(payload, False, logs)

    return invoke
