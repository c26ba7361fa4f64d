"""The sample SQS events in ``events/`` and what should become of each record.

Each ``events/<name>.json`` is a full Lambda SQS event (``sam local invoke -e events/<name>.json``). The
demo and the tests publish its records through the real APIs -- SQS ``SendMessage`` for raw bodies (with
their message attributes), EventBridge ``PutEvents`` for the EventBridge envelope, SNS ``Publish`` for the
SNS envelope -- and compare what happened with :data:`SAMPLES`.

Samples carry no ``event_time`` and no ``SentTimestamp`` (the relay then uses the SQS send time), except
the deliberately too-old event. All PII is fake (example.com, 555 numbers); pixel ids are fake.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from local.esm import BatchOutcome
    from local.stack import Clients, Resources

EVENTS_DIR = Path(__file__).resolve().parent.parent / "events"
DEFAULT_PIXEL = "100000000000001"  # the local function's PIXEL_ID (local.stack.DEMO_PIXEL_ID)

Outcome = Literal["delivered", "dlq"]
Via = Literal["sqs", "eventbridge", "sns"]


@dataclass(frozen=True)
class Expected:
    """One record of a sample and its expected end."""

    marker: str  # a substring that identifies this record's body (also inside SNS / EventBridge envelopes)
    outcome: Outcome
    reason: str | None = None  # the relay's failure reason for a dlq record
    event_ids: tuple[str | None, ...] = ()  # events expected at Graph; None = derived (see sent_event_id)
    pixel_id: str = DEFAULT_PIXEL
    test_event_code: str | None = None
    shape: str | None = None  # when the records of one sample differ (mixed_batch)


@dataclass(frozen=True)
class Sample:
    name: str
    shape: str  # event | data | eventbridge | sns | not-json
    via: Via
    records: tuple[Expected, ...]
    description: str

    @property
    def path(self) -> Path:
        return EVENTS_DIR / f"{self.name}.json"


SAMPLES: tuple[Sample, ...] = (
    Sample("website_purchase", "event", "sqs",
           (Expected("sample-purchase-0001", "delivered", event_ids=("sample-purchase-0001",)),),
           "one website Purchase with raw PII (email, phone, names, city, zip, country, IP, UA, fbp)"),
    Sample("data_batch", "data", "sqs",
           (Expected("sample-data-0001", "delivered", event_ids=("sample-data-0001", "sample-data-0002", None),
                     pixel_id="100000000000002", test_event_code="TEST12345"),),
           '{"data": [3 events]} with pixel_id and test_event_code in the body; one event has no event_id'),
    Sample("eventbridge", "eventbridge", "eventbridge",
           (Expected("sample-eventbridge-0001", "delivered", event_ids=("sample-eventbridge-0001",)),),
           "one event in an EventBridge envelope's detail (rule -> queue target)"),
    Sample("sns", "sns", "sns",
           (Expected("sample-sns-0001", "delivered", event_ids=("sample-sns-0001",), test_event_code="TESTSNS01"),),
           "{'data': [...]} inside an SNS notification (raw delivery off); test_event_code as SNS attribute"),
    Sample("message_attributes", "event", "sqs",
           (Expected("sample-attrs-0001", "delivered", event_ids=("sample-attrs-0001",),
                     pixel_id="100000000000003", test_event_code="TESTATTR1"),),
           "pixel_id and test_event_code as SQS message attributes"),
    Sample("malformed_body", "not-json", "sqs",
           (Expected("sample-malformed-0001", "dlq", "body_not_json"),),
           "a body that is not JSON"),
    Sample("invalid_event", "event", "sqs",
           (Expected("sample-invalid-old-0001", "dlq", "event_too_old"),
            Expected("sample-invalid-nosource-0001", "dlq", "missing_action_source")),
           "an event older than 7 days and an event without action_source"),
    Sample("mixed_batch", "mixed", "sqs",
           (Expected("sample-mixed-0001", "delivered", event_ids=("sample-mixed-0001",), shape="event"),
            Expected("sample-mixed-0002", "delivered", event_ids=("sample-mixed-0002",), shape="event"),
            Expected("sample-mixed-0003", "dlq", "body_not_json", shape="not-json"),
            Expected("sample-mixed-0004", "delivered", event_ids=("sample-mixed-0004",), shape="data")),
           "good records and one malformed neighbour, sent together (one batch)"),
)  # fmt: skip
SAMPLES_BY_NAME = {s.name: s for s in SAMPLES}

# Raw PII values used in the samples: none of them may ever reach Graph or a log line.
_RAW_PII_KEYS = ("em", "ph", "fn", "ln", "ct")


def load_sample(name: str) -> dict[str, Any]:
    """The Lambda SQS event ``events/<name>.json``."""
    doc: dict[str, Any] = json.loads((EVENTS_DIR / f"{name}.json").read_text(encoding="utf-8"))
    return doc


def sent_event_id(sample: Sample, expected: Expected, position: int) -> str:
    """The event_id the relay sends event ``position`` of ``expected`` under: its own, or the one derived from
    the pixel and the event's content (``capi_relay.prepare.events.derived_event_id``, never the messageId)."""
    own = expected.event_ids[position]
    if own is not None:
        return own
    from capi_relay.ingest.envelope import parse_body  # only callers that check ids need the relay
    from capi_relay.prepare.events import derived_event_id

    (body,) = [body for body, _ in sample_bodies(sample.name) if expected.marker in body]
    return derived_event_id(expected.pixel_id, parse_body(body).events[position])


def sample_bodies(name: str) -> list[tuple[str, dict[str, Any]]]:
    """``(body, message_attributes)`` per record, the attributes in ``SendMessage`` form
    (``{"DataType", "StringValue" | "BinaryValue"}``)."""
    out: list[tuple[str, dict[str, Any]]] = []
    for record in load_sample(name)["Records"]:
        attrs: dict[str, Any] = {}
        for key, value in record.get("messageAttributes", {}).items():
            entry: dict[str, Any] = {"DataType": value.get("dataType", "String")}
            if value.get("stringValue") is not None:
                entry["StringValue"] = value["stringValue"]
            if value.get("binaryValue") is not None:
                entry["BinaryValue"] = value["binaryValue"]
            attrs[key] = entry
        out.append((record["body"], attrs))
    return out


def publish(sample: Sample, clients: Clients, resources: Resources) -> list[str]:
    """Send the sample's records through the real API for its shape. Returns the SQS message ids known at
    send time (SendMessage only; EventBridge / SNS deliveries get theirs from the queue)."""
    bodies = sample_bodies(sample.name)
    if sample.via == "eventbridge":
        entries = []
        for body, _ in bodies:
            envelope = json.loads(body)
            entries.append({
                "Source": resources.event_source,
                "DetailType": envelope.get("detail-type", "capi.event"),
                "Detail": json.dumps(envelope["detail"]),
                "EventBusName": resources.event_bus_name,
            })  # fmt: skip
        put = clients.events.put_events(Entries=entries)  # type: ignore[arg-type]
        if put.get("FailedEntryCount"):
            raise RuntimeError(f"PutEvents failed: {put.get('Entries')}")
        return []
    if sample.via == "sns":
        if resources.topic_arn is None:
            raise RuntimeError("no SNS topic was provisioned")
        for body, _ in bodies:
            envelope = json.loads(body)
            attrs = {
                k: {"DataType": v.get("Type", "String"), "StringValue": v["Value"]}
                for k, v in (envelope.get("MessageAttributes") or {}).items()
            }
            clients.sns.publish(TopicArn=resources.topic_arn, Message=envelope["Message"], MessageAttributes=attrs)
        return []
    if len(bodies) == 1:
        body, attrs = bodies[0]
        sent = clients.sqs.send_message(QueueUrl=resources.queue_url, MessageBody=body, MessageAttributes=attrs)  # type: ignore[arg-type]
        return [sent["MessageId"]]
    resp = clients.sqs.send_message_batch(
        QueueUrl=resources.queue_url,
        Entries=[{"Id": str(i), "MessageBody": b, "MessageAttributes": a} for i, (b, a) in enumerate(bodies)],
    )
    if resp.get("Failed"):
        raise RuntimeError(f"SendMessageBatch failed: {resp['Failed']}")
    by_index = {int(e["Id"]): e["MessageId"] for e in resp.get("Successful", [])}
    return [by_index[i] for i in sorted(by_index)]


def raw_pii_values() -> set[str]:
    """Every raw ``em``/``ph``/``fn``/``ln``/``ct`` value in the samples (and its lowercase form)."""
    values: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key in _RAW_PII_KEYS and isinstance(value, str) and value:
                    values.update({value, value.lower()})
                    digits = re.sub(r"\D", "", value)
                    if key == "ph" and digits:
                        values.add(digits)
                else:
                    walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)
        elif isinstance(node, str) and node.lstrip().startswith("{"):
            with contextlib.suppress(ValueError):
                walk(json.loads(node))

    for sample in SAMPLES:
        for record in load_sample(sample.name)["Records"]:
            walk(record["body"])
    return values


def find_raw_pii(text: str, values: Iterable[str] | None = None) -> list[str]:
    """The raw sample PII values that occur in ``text`` as whole words (case-insensitive): a name such as
    ``Eve`` is found in ``"fn": "Eve"`` but not inside ``eventbridge`` or a hex digest."""
    found = []
    for value in sorted(set(raw_pii_values() if values is None else values)):
        pattern = r"(?<![A-Za-z0-9])" + re.escape(value) + r"(?![A-Za-z0-9])"
        if re.search(pattern, text, flags=re.IGNORECASE):
            found.append(value)
    return found


# ------------------------------------------------------------------------------------------- outcomes
@dataclass
class RecordResult:
    sample: str
    shape: str
    marker: str
    message_id: str
    outcome: str  # delivered | quarantined (deleted, its rejected part in the DLQ) | dlq (moved by SQS) | pending
    reason: str
    receives: int  # how many times the function saw it
    expected: Outcome
    expected_reason: str | None


def identify(body: str) -> tuple[Sample, Expected] | None:
    """Which sample record a queue body came from (by its marker)."""
    for sample in SAMPLES:
        for expected in sample.records:
            if expected.marker in body:
                return sample, expected
    return None


_FAILED_RE = re.compile(r"\{.*\}")


def failure_reasons(logs: str) -> dict[str, str]:
    """``messageId -> reason`` from the relay's structured ``record failed`` log lines."""
    out: dict[str, str] = {}
    for line in logs.splitlines():
        match = _FAILED_RE.search(line)
        if not match or "record failed" not in line:
            continue
        try:
            doc = json.loads(match.group(0))
        except ValueError:
            continue
        if doc.get("message") == "record failed" and isinstance(doc.get("message_id"), str):
            out[doc["message_id"]] = str(doc.get("reason"))
    return out


def resolve(outcomes: Iterable[BatchOutcome], dlq_messages: Iterable[dict[str, Any]],
            logs: str = "") -> list[RecordResult]:  # fmt: skip
    """Each message seen by the function -> delivered (deleted after success) or dlq (found in the DLQ)."""
    seen: dict[str, tuple[str, int]] = {}  # messageId -> (body, receives)
    deleted: set[str] = set()
    all_logs = [logs]
    for outcome in outcomes:
        all_logs.append(outcome.result.logs)
        for record in outcome.event["Records"]:
            body, count = seen.get(record["messageId"], (record["body"], 0))
            seen[record["messageId"]] = (body, count + 1)
        deleted.update(outcome.deleted)
    reasons = failure_reasons("\n".join(all_logs))
    # A DLQ message is either a record SQS moved there (its own messageId) or a letter the relay quarantined
    # (attribute source_message_id = the record it came from, rejection_reason = why).
    in_dlq: dict[str, str] = {}
    quarantined: dict[str, list[str]] = {}
    for m in dlq_messages:
        attrs = m.get("MessageAttributes") or {}
        source = (attrs.get("source_message_id") or {}).get("StringValue")
        if source:
            quarantined.setdefault(source, []).append((attrs.get("rejection_reason") or {}).get("StringValue", "?"))
        else:
            in_dlq[m["MessageId"]] = m.get("Body", "")
    for message_id, body in in_dlq.items():
        seen.setdefault(message_id, (body, 0))
    results: list[RecordResult] = []
    for message_id, (body, receives) in seen.items():
        found = identify(body)
        sample, expected = found if found is not None else (None, None)
        if message_id in in_dlq:
            outcome_name, reason = "dlq", reasons.get(message_id, "?")
        elif message_id in deleted and message_id in quarantined:
            outcome_name, reason = "quarantined", ",".join(sorted(set(quarantined[message_id])))
        elif message_id in deleted:
            outcome_name, reason = "delivered", "-"
        else:
            outcome_name, reason = "pending", reasons.get(message_id, "?")
        results.append(RecordResult(
            sample=sample.name if sample else "?",
            shape=(expected.shape or sample.shape) if sample and expected else "?",
            marker=expected.marker if expected else body[:30], message_id=message_id, outcome=outcome_name,
            reason=reason, receives=receives, expected=expected.outcome if expected else "delivered",
            expected_reason=expected.reason if expected else None,
        ))  # fmt: skip
    return results


def mismatches(
    results: list[RecordResult], samples: Iterable[Sample] = SAMPLES, *, quarantine: bool = False
) -> list[str]:
    """Differences between what happened and :data:`SAMPLES` (missing records, wrong outcome or reason).

    With ``quarantine`` (the relay has ``DLQ_URL``) a record expected in the DLQ must have been quarantined
    by the relay instead of moved there by SQS."""
    problems: list[str] = []
    by_marker: dict[str, list[RecordResult]] = {}
    for result in results:
        by_marker.setdefault(result.marker, []).append(result)
    for sample in samples:
        for expected in sample.records:
            got = by_marker.get(expected.marker, [])
            if len(got) != 1:
                problems.append(f"{sample.name}/{expected.marker}: seen as {len(got)} messages, expected 1")
                continue
            result = got[0]
            wanted = "quarantined" if quarantine and expected.outcome == "dlq" else expected.outcome
            if result.outcome != wanted:
                problems.append(f"{sample.name}/{expected.marker}: {result.outcome} ({result.reason}), "
                                f"expected {wanted}")  # fmt: skip
            elif expected.reason is not None and result.reason != expected.reason:
                problems.append(f"{sample.name}/{expected.marker}: reason {result.reason}, expected {expected.reason}")
    known = {e.marker for s in samples for e in s.records}
    problems.extend(f"unexpected message {r.message_id}: {r.marker!r}" for r in results if r.marker not in known)
    return problems
