"""Lifecycle soak (issue 17): many events through their whole life, with random faults, then one redrive.

The packaged function (``make build``) runs under the real Lambda Runtime Interface Emulator (local/rie.py),
fed by the event-source emulator (local/esm.py) from a moto SQS queue whose redrive policy moves a message to
the DLQ after ``--max-receive`` receives; the token is in moto's Secrets Manager; the function posts to the
Graph stand-in (local/graph_standin.py). Producers publish through the real APIs: SQS ``SendMessage`` (raw
events and ``{"data": [...]}`` messages, some sent twice as an SDK retry does), SNS ``PublishBatch`` (the SNS
envelope, raw delivery off) and EventBridge ``PutEvents`` (the EventBridge envelope).

Phase 1, Meta unreliable: every Graph request may meet a fault (the stand-in's fault injection, per request):
the answer lost after Meta took the events, a 5xx (Graph's code 1/2 bodies, a proxy's HTML page), a hang
(the connection held past the relay's read timeout, then closed unprocessed, or processed late), a throttle
(codes 4, 17, 613, 80004); some invocations are killed mid-way (SIGKILL of the runtime process); some events
are invalid (locally: too old; for Meta: the stand-in's poison list, a 2804036 rejection).

Phase 2, Meta healthy: the DLQ is redriven once, as SQS's ``StartMessageMoveTask`` does (moto lacks it):
receive from the DLQ, ``SendMessage`` the same body and message attributes to the source queue (a new
messageId, a new SentTimestamp, the receive count starting at 1), delete from the DLQ. The queue is drained.

Asserted (the contract in ../shared/design/architecture.md, "An event's whole life"), per input event (a
marker in ``custom_data.order_id`` ties what Meta received and what the DLQ holds to the input):

* accepted by the stand-in under exactly one ``event_id`` and one ``event_time`` (Meta deduplicates on
  ``event_name`` + ``event_id``), the producer's own ones where it gave them; no two input events share an id;
* or, if invalid, in the DLQ with a ``rejection_reason`` (and never accepted); a valid event never ends in
  the DLQ once Meta is healthy; nothing in the DLQ without a reason; letters carry the resolved id and time;
* no letter stored twice ((source messageId, event_index) once; duplicates after a killed invocation are
  counted apart: no stateless relay can avoid them, see ``--strict-letters``);
* nothing lost: every input event is accepted or dead-lettered, and both queues end empty.

Run: ``make soak`` (``python -m local.soak --events 20000 --seed 7``; ``--help`` for the knobs). Prints a
summary table and the broken invariants with examples; exit status 1 when one is broken. Needs the built
artifact (``make build``) and the SAM CLI venv (the RIE binary). Loopback only.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import signal
import sys
import threading
import time
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from local.esm import BatchOutcome, DrainTimeout, EventSourceEmulator, InvokeResult
from local.graph_standin import Fault, GraphStandIn
from local.stack import EVENT_SOURCE, MotoServer, Resources, dummy_token, function_env, provision

ROOT = Path(__file__).resolve().parent.parent
ARTIFACT_DIR = ROOT / ".aws-sam" / "build" / "RelayFunction"
PIXELS = ("100000000000001", "100000000000002", "100000000000003")  # the first is the function's PIXEL_ID
EVENT_NAMES = ("Purchase", "Lead", "AddToCart", "ViewContent", "CompleteRegistration")
TOO_OLD_S = 8 * 86_400  # Meta (and the relay) refuse events older than 7 days
THROTTLE_CODES = (4, 17, 613, 80004)


@dataclass
class Config:
    events: int = 20_000
    seed: int = 7
    batch_size: int = 100  # the event source mapping's BatchSize
    window_s: float = 1.0  # MaximumBatchingWindowInSeconds (needed for a batch over 10)
    max_receive: int = 3  # the queue's redrive maxReceiveCount (= MAX_RECEIVE_COUNT)
    function_timeout_s: int = 8
    visibility_timeout_s: int = 10  # >= the function timeout, as Lambda requires
    park_schedule: str = "1,2,3"  # PARK_SCHEDULE: short, so parked records come back within the soak
    read_timeout_s: float = 1.5  # GRAPH_READ_TIMEOUT
    max_attempts: int = 3
    max_events_per_request: int = 1000
    # producers
    p_data: float = 0.30  # a {"data": [...]} message (2..8 events)
    p_sns: float = 0.15
    p_eventbridge: float = 0.15
    p_garbage: float = 0.005  # a body that is not JSON (dead-lettered with its reason)
    p_no_event_id: float = 0.35
    p_no_event_time: float = 0.30
    p_too_old: float = 0.02  # locally invalid
    p_poison: float = 0.02  # invalid for Meta only (2804036)
    p_duplicate_send: float = 0.03  # the producer's SDK retried a SendMessage that had succeeded
    p_binary_attribute: float = 0.05  # an extra Binary message attribute (must survive a redrive)
    # faults (per Graph request in phase 1; tried in this order)
    p_lost_answer: float = 0.06
    p_slow_processed: float = 0.02  # Meta takes the events but answers after the relay gave up
    p_hang: float = 0.03  # Meta holds the connection, never answers, never processes
    p_5xx: float = 0.05
    p_throttle: float = 0.05
    p_outage: float = 0.25  # per invocation: Meta fails every request of one pixel (or all) for its duration
    p_kill: float = 0.04  # per invocation: SIGKILL the runtime after a random delay
    kill_max_delay_s: float = 1.5
    strict_letters: bool = False  # also fail on duplicate letters that follow a killed invocation
    drain_timeout_s: float | None = None  # per phase; None: 600 s + 0.15 s per event (publishing is part of phase 1)
    artifact_dir: Path = ARTIFACT_DIR
    quiet: bool = False


# ------------------------------------------------------------------------------------------- inputs
@dataclass
class InputEvent:
    tag: str  # custom_data.order_id: ties what Meta received and what the DLQ holds to this input
    event_name: str
    event_id: str | None  # the producer's, if it gave one
    event_time: int | None  # the producer's, if it gave one
    pixel_id: str
    invalid: str | None = None  # "too_old" (locally) or "poison" (Meta 2804036)
    shape: str = "event"
    via: str = "sqs"
    request_fields: dict[str, str] = field(default_factory=dict)  # upload_tag / namespace_id of its message


@dataclass
class Message:
    via: str  # sqs | sns | eventbridge
    shape: str  # event | data | garbage
    payload: Any  # the event dict, the {"data": ...} dict, or the garbage string
    pixel_attr: str | None = None  # pixel_id as a message attribute (SQS / SNS)
    binary_attr: bool = False
    duplicate: bool = False  # SendMessage twice
    tags: tuple[str, ...] = ()
    garbage_id: str | None = None


def _event(rng: random.Random, cfg: Config, n: int, now: int, pixel: str, shape: str, via: str) -> tuple[
    dict[str, Any], InputEvent]:  # fmt: skip
    tag = f"soak-{cfg.seed}-{n}"
    name = rng.choice(EVENT_NAMES)
    invalid = "too_old" if rng.random() < cfg.p_too_old else "poison" if rng.random() < cfg.p_poison else None
    event_id = None if rng.random() < cfg.p_no_event_id and invalid != "poison" else f"ord-{cfg.seed}-{n}"
    event_time: int | None = now - rng.randrange(0, 3_600)
    if invalid == "too_old":
        event_time = now - TOO_OLD_S - rng.randrange(0, 86_400)
    elif rng.random() < cfg.p_no_event_time:
        event_time = None
    doc: dict[str, Any] = {"event_name": name, "action_source": "website",
                           "event_source_url": f"https://shop.example.com/p/{n % 97}"}  # fmt: skip
    if event_time is not None:
        doc["event_time"] = event_time
    if event_id is not None:
        doc["event_id"] = event_id
    doc["user_data"] = {
        "em": f"buyer{n}@example.com",
        "ph": f"+1 650 555 {n % 10_000:04d}",
        "external_id": f"cust-{n % 5_000}",
        "client_ip_address": f"203.0.113.{n % 250 + 1}",
        "client_user_agent": "Mozilla/5.0 (X11; Linux x86_64) Gecko/20100101 Firefox/140.0",
    }
    doc["custom_data"] = {"order_id": tag, "value": round(rng.uniform(1, 500), 2), "currency": "USD"}
    return doc, InputEvent(tag, name, event_id, event_time, pixel, invalid, shape, via)


def generate(cfg: Config, now: int) -> tuple[list[Message], dict[str, InputEvent], dict[str, str]]:
    """The producers' messages, every input event by tag, and the garbage bodies (id -> body)."""
    rng = random.Random(cfg.seed)
    messages: list[Message] = []
    inputs: dict[str, InputEvent] = {}
    garbage: dict[str, str] = {}
    n = 0
    while n < cfg.events:
        r = rng.random()
        via = "sns" if r < cfg.p_sns else "eventbridge" if r < cfg.p_sns + cfg.p_eventbridge else "sqs"
        if via == "sqs" and rng.random() < cfg.p_garbage:
            gid = f"garbage-{cfg.seed}-{len(garbage)}"
            body = f"{{not json {gid}"
            garbage[gid] = body
            messages.append(Message("sqs", "garbage", body, garbage_id=gid,
                                    duplicate=rng.random() < cfg.p_duplicate_send))  # fmt: skip
            continue
        pixel = rng.choice(PIXELS)
        shape = "data" if rng.random() < cfg.p_data else "event"
        count = min(rng.randint(2, 8), cfg.events - n) if shape == "data" else 1
        events = []
        for _ in range(count):
            doc, item = _event(rng, cfg, n, now, pixel, shape, via)
            inputs[item.tag] = item
            events.append(doc)
            n += 1
        pixel_attr: str | None = None
        payload: dict[str, Any]
        if shape == "data":
            payload = {"data": events}
            if via == "sqs" and rng.random() < 0.3:
                pixel_attr = pixel  # routing by message attribute (overrides the body)
            else:
                payload["pixel_id"] = pixel
            if rng.random() < 0.5:
                payload["upload_tag"] = f"soak-batch-{n}"
            if rng.random() < 0.3:
                payload["namespace_id"] = str(1000 + n % 7)
            fields = {k: v for k, v in payload.items() if k in ("upload_tag", "namespace_id")}
            for doc in events:
                inputs[str(doc["custom_data"]["order_id"])].request_fields = fields
        else:
            payload = events[0]
            if pixel != PIXELS[0]:
                if via == "eventbridge":  # no attributes through EventBridge: say it in the body
                    payload = {"data": events, "pixel_id": pixel}
                else:
                    pixel_attr = pixel
        messages.append(Message(
            via, shape, payload, pixel_attr=pixel_attr,
            binary_attr=via == "sqs" and rng.random() < cfg.p_binary_attribute,
            duplicate=via == "sqs" and rng.random() < cfg.p_duplicate_send,
            tags=tuple(str(e["custom_data"]["order_id"]) for e in events),
        ))  # fmt: skip
    rng.shuffle(messages)
    return messages, inputs, garbage


def publish(messages: list[Message], resources: Resources) -> Counter[str]:
    """Send every message through its producer API (batches of 10); duplicates are sent once more, alone."""
    clients = resources.clients()
    sent: Counter[str] = Counter()
    by_via: dict[str, list[Message]] = defaultdict(list)
    for message in messages:
        by_via[message.via].append(message)

    def sqs_entry(i: int, m: Message) -> dict[str, Any]:
        body = m.payload if isinstance(m.payload, str) else json.dumps(m.payload, separators=(",", ":"))
        attrs: dict[str, Any] = {}
        if m.pixel_attr:
            attrs["pixel_id"] = {"DataType": "String", "StringValue": m.pixel_attr}
        if m.binary_attr:
            attrs["trace"] = {"DataType": "Binary", "BinaryValue": b"\x00\xffsoak-" + str(i).encode()}
        entry: dict[str, Any] = {"Id": str(i), "MessageBody": body}
        if attrs:
            entry["MessageAttributes"] = attrs
        return entry

    sqs_msgs = by_via["sqs"]
    for start in range(0, len(sqs_msgs), 10):
        entries = [sqs_entry(i, m) for i, m in enumerate(sqs_msgs[start : start + 10])]
        resp = clients.sqs.send_message_batch(QueueUrl=resources.queue_url, Entries=entries)  # type: ignore[arg-type]
        if resp.get("Failed"):
            raise RuntimeError(f"SendMessageBatch failed: {resp['Failed']}")
        sent["sqs"] += len(entries)
        for entry, m in zip(entries, sqs_msgs[start : start + 10], strict=True):
            if m.duplicate:  # the SDK's retry of a SendMessage whose answer it did not see
                kwargs = {k: v for k, v in entry.items() if k != "Id"}
                clients.sqs.send_message(QueueUrl=resources.queue_url, **kwargs)
                sent["sqs duplicate"] += 1
    sns_msgs = by_via["sns"]
    if sns_msgs and resources.topic_arn is None:
        raise RuntimeError("SNS -> SQS is not available in this moto")
    for start in range(0, len(sns_msgs), 10):
        sns_entries = []
        for i, m in enumerate(sns_msgs[start : start + 10]):
            sns_entry: dict[str, Any] = {"Id": str(i), "Message": json.dumps(m.payload, separators=(",", ":"))}
            if m.pixel_attr:
                sns_entry["MessageAttributes"] = {"pixel_id": {"DataType": "String", "StringValue": m.pixel_attr}}
            sns_entries.append(sns_entry)
        resp_sns = clients.sns.publish_batch(TopicArn=resources.topic_arn, PublishBatchRequestEntries=sns_entries)
        if resp_sns.get("Failed"):
            raise RuntimeError(f"SNS PublishBatch failed: {resp_sns['Failed']}")
        sent["sns"] += len(sns_entries)
    eb_msgs = by_via["eventbridge"]
    for start in range(0, len(eb_msgs), 10):
        bus = resources.event_bus_name
        eb_entries = [{"Source": EVENT_SOURCE, "DetailType": "capi-relay soak", "EventBusName": bus,
                       "Detail": json.dumps(m.payload, separators=(",", ":"))}
                      for m in eb_msgs[start : start + 10]]  # fmt: skip
        resp_eb = clients.events.put_events(Entries=eb_entries)  # type: ignore[arg-type]
        if resp_eb.get("FailedEntryCount"):
            raise RuntimeError(f"PutEvents failed: {resp_eb}")
        sent["eventbridge"] += len(eb_entries)
    return sent


class Producer(threading.Thread):
    """Publishes the messages in chunks while the function consumes them, keeping the queue's depth under
    ``max_depth`` (producers send continuously; moto's SQS also slows down with every message it holds)."""

    def __init__(self, messages: list[Message], resources: Resources, chunk: int = 100, max_depth: int = 800) -> None:
        super().__init__(name="soak-producer", daemon=True)
        self.messages, self.resources, self.chunk, self.max_depth = messages, resources, chunk, max_depth
        self.sent: Counter[str] = Counter()
        self.error: BaseException | None = None
        self.seconds = 0.0

    def run(self) -> None:
        sqs = self.resources.clients().sqs
        started = time.monotonic()
        try:
            for start in range(0, len(self.messages), self.chunk):
                while _depth(sqs, self.resources.queue_url) >= self.max_depth:
                    time.sleep(0.2)
                self.sent.update(publish(self.messages[start : start + self.chunk], self.resources))
        except BaseException as exc:  # reported by the caller: a soak whose producers broke proves nothing
            self.error = exc
        self.seconds = time.monotonic() - started


def _depth(sqs: Any, queue_url: str) -> int:
    attrs = sqs.get_queue_attributes(
        QueueUrl=queue_url, AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
    )["Attributes"]
    return sum(int(v) for v in attrs.values())


# ------------------------------------------------------------------------------------------- faults
def phase1_faults(cfg: Config) -> list[Fault]:
    """Per-request faults of an unreliable Meta; the stand-in tries them in order, each with its probability
    among the requests the earlier ones left (close enough to the nominal rates at these sizes)."""
    hang_ms = int((cfg.read_timeout_s + 1.0) * 1000)
    faults = [
        Fault(times=-1, probability=cfg.p_lost_answer, lose_answer=True),
        Fault(times=-1, probability=cfg.p_slow_processed, delay_ms=hang_ms),  # taken, answered too late
        Fault(times=-1, probability=cfg.p_hang, delay_ms=hang_ms, drop=True),  # never answered, never taken
        Fault(times=-1, probability=cfg.p_5xx / 3, status=500, code=1),  # Graph's "unknown error"
        Fault(times=-1, probability=cfg.p_5xx / 2, status=503, code=2),  # "Service temporarily unavailable"
        Fault(times=-1, probability=cfg.p_5xx, proxy=True, status=502),  # a proxy's HTML page
    ]
    for i, code in enumerate(THROTTLE_CODES):
        # the share left for code i so that each code gets ~p_throttle / len(codes) of the requests
        p = cfg.p_throttle / len(THROTTLE_CODES) / (1 - i * cfg.p_throttle / len(THROTTLE_CODES))
        faults.append(Fault(times=-1, probability=p, status=400, code=code))
    return faults


OUTAGES: dict[str, dict[str, Any]] = {
    "lost-answers": {"lose_answer": True},  # Meta takes every request, no answer arrives
    "hang": {"delay_ms": 0, "drop": True},  # delay set from the read timeout
    "5xx": {"status": 503, "code": 2},
    "throttle": {"status": 400, "code": 4},
}


def outage_fault(kind: str, pixel: str | None, cfg: Config) -> Fault:
    spec = dict(OUTAGES[kind])
    if kind == "hang":
        spec["delay_ms"] = int((cfg.read_timeout_s + 1.0) * 1000)
    return Fault(pixel_id=pixel, times=-1, probability=1.0, **spec)


class FaultyInvoker:
    """The RIE invoker, with the faults that last an invocation:

    * an outage (``p_outage``): for this invocation Meta fails every request of one pixel (or of all) the same
      way -- answers lost, hanging, 503, throttled -- so records fail, come back, reach their last receive
      and the DLQ, as in a real outage;
    * a kill (``p_kill``): a timer SIGKILLs the function's runtime process mid-invocation (Lambda: the sandbox
      dies -- out of memory, a crash). The RIE answers with an error; the event source mapping deletes
      nothing. The emulator is then restarted (a new execution environment: cold start)."""

    def __init__(self, make_emulator: Any, rng: random.Random, cfg: Config, standin: GraphStandIn) -> None:
        self._make = make_emulator
        self._rng = rng
        self._cfg = cfg
        self._standin = standin
        self.kill_p = cfg.p_kill
        self.outage_p = cfg.p_outage
        self.emulator = make_emulator()
        self.killed_batches: list[list[str]] = []
        self.outages: Counter[str] = Counter()
        self.invocations = 0
        self.function_errors = 0

    def __call__(self, event: dict[str, Any]) -> InvokeResult:
        outage: Fault | None = None
        if self._rng.random() < self.outage_p:
            kind = self._rng.choice(sorted(OUTAGES))
            pixel = self._rng.choice([*PIXELS, None])
            outage = outage_fault(kind, pixel, self._cfg)
            self.outages[kind] += 1
            with self._standin.state.lock:
                self._standin.state.faults.insert(0, outage)
        try:
            return self._invoke(event)
        finally:
            if outage is not None:
                with self._standin.state.lock:
                    self._standin.state.faults.remove(outage)

    def _invoke(self, event: dict[str, Any]) -> InvokeResult:
        self.invocations += 1
        killed = threading.Event()
        timer: threading.Timer | None = None
        if self._rng.random() < self.kill_p:
            emulator = self.emulator

            def kill() -> None:
                pid = emulator.runtime_pid()
                if pid is not None:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                        killed.set()

            timer = threading.Timer(self._rng.uniform(0.05, self._cfg.kill_max_delay_s), kill)
            timer.start()
        try:
            payload, function_error, logs = self.emulator.invoke(event)
        except Exception as exc:  # the emulator died with the runtime: a function error
            payload, function_error, logs = None, True, f"{type(exc).__name__}: {exc}"
        finally:
            if timer is not None:
                timer.cancel()
                timer.join()
        if killed.is_set():
            self.killed_batches.append([r["messageId"] for r in event["Records"]])
        if killed.is_set() or function_error:
            self.function_errors += 1
            self.emulator.stop()  # a fresh environment (the RIE does not always recover from a killed runtime)
            self.emulator = self._make()
            return InvokeResult(None, True, logs)
        return InvokeResult(payload, False, logs)

    def stop(self) -> None:
        self.emulator.stop()


# --------------------------------------------------------------------------------------------- DLQ
def redrive(resources: Resources) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """StartMessageMoveTask as SQS does it: each DLQ message is sent to the source queue with the same body and
    message attributes (new messageId, new SentTimestamp, receive count from 1), then deleted from the DLQ.
    Returns the DLQ messages as received and new messageId -> the DLQ message's id."""
    sqs = resources.clients().sqs
    moved: list[dict[str, Any]] = []
    new_ids: dict[str, str] = {}
    while True:
        resp = sqs.receive_message(QueueUrl=resources.dlq_url, MaxNumberOfMessages=10, WaitTimeSeconds=0,
                                   AttributeNames=["All"], MessageAttributeNames=["All"])  # fmt: skip
        batch = resp.get("Messages", [])
        if not batch:
            return moved, new_ids
        for message in batch:
            kwargs: dict[str, Any] = {"QueueUrl": resources.queue_url, "MessageBody": message["Body"]}
            if message.get("MessageAttributes"):
                kwargs["MessageAttributes"] = message["MessageAttributes"]
            new_id = sqs.send_message(**kwargs)["MessageId"]
            new_ids[new_id] = message["MessageId"]
            sqs.delete_message(QueueUrl=resources.dlq_url, ReceiptHandle=message["ReceiptHandle"])
            moved.append(dict(message))


def _events_in(body: str) -> list[dict[str, Any]]:
    """The events a message body holds, through SNS and EventBridge envelopes (empty when unreadable)."""
    return _unwrapped(body)[0]


def _unwrapped(body: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """(the events, the top-level fields of a {"data": [...]} body) through SNS and EventBridge envelopes."""
    try:
        doc: Any = json.loads(body)
    except ValueError:
        return [], {}
    for _ in range(4):
        if isinstance(doc, dict) and doc.get("Type") == "Notification" and isinstance(doc.get("Message"), str):
            try:
                doc = json.loads(doc["Message"])
            except ValueError:
                return [], {}
        elif isinstance(doc, dict) and "detail-type" in doc and "detail" in doc:
            doc = doc["detail"]
        else:
            break
    if isinstance(doc, dict) and isinstance(doc.get("data"), list):
        return [e for e in doc["data"] if isinstance(e, dict)], {k: v for k, v in doc.items() if k != "data"}
    return ([doc] if isinstance(doc, dict) and "event_name" in doc else []), {}


def _tag(event: dict[str, Any]) -> str | None:
    custom = event.get("custom_data")
    tag = custom.get("order_id") if isinstance(custom, dict) else None
    return tag if isinstance(tag, str) else None


@dataclass
class Letter:
    """One DLQ message as the soak saw it."""

    phase: int
    message_id: str
    body: str
    reason: str | None  # rejection_reason (None: moved by SQS's redrive policy, no reason)
    source: str | None  # source_message_id
    index: int | None  # event_index
    tags: tuple[str, ...]  # the input events it holds (all of the body's, or the one at event_index)
    events: list[dict[str, Any]]
    fields: dict[str, Any] = field(default_factory=dict)  # top-level fields of its {"data": [...]} body

    @classmethod
    def of(cls, phase: int, message: dict[str, Any]) -> Letter:
        attrs = {k: v.get("StringValue") for k, v in (message.get("MessageAttributes") or {}).items()}
        events, fields = _unwrapped(message["Body"])
        index = int(attrs["event_index"]) if attrs.get("event_index") not in (None, "") else None
        chosen = events
        if index is not None and len(events) > 1 and index < len(events):
            chosen = [events[index]]  # a letter of a multi-event body (today's shape: the event alone)
        tags = tuple(t for t in (_tag(e) for e in chosen) if t is not None)
        return cls(phase, message["MessageId"], message["Body"], attrs.get("rejection_reason"),
                   attrs.get("source_message_id"), index, tags, chosen, fields)  # fmt: skip


# ----------------------------------------------------------------------------------------- analysis
@dataclass
class Report:
    rows: list[tuple[str, Any]] = field(default_factory=list)
    broken: dict[str, list[str]] = field(default_factory=dict)  # invariant -> examples
    counts: Counter[str] = field(default_factory=Counter)
    informational: dict[str, list[str]] = field(default_factory=dict)
    phase1_failures: Counter[str] = field(default_factory=Counter)  # record failure reasons (all receives)
    phase2_failures: Counter[str] = field(default_factory=Counter)

    def fail(self, invariant: str, example: str) -> None:
        self.counts[invariant] += 1
        examples = self.broken.setdefault(invariant, [])
        if len(examples) < 3:
            examples.append(example)

    def note(self, what: str, example: str) -> None:
        self.counts[what] += 1
        examples = self.informational.setdefault(what, [])
        if len(examples) < 3:
            examples.append(example)

    @property
    def ok(self) -> bool:
        return not self.broken


def analyse(
    cfg: Config,
    inputs: dict[str, InputEvent],
    garbage: dict[str, str],
    received: list[dict[str, Any]],
    letters: list[Letter],
    killed_ids: set[str],
    leftovers: dict[str, int],
    duplicated: frozenset[str] = frozenset(),
) -> Report:
    """``duplicated``: the tags of events whose message the producer sent twice. Two sends of an event without
    an ``event_time`` are two first sights (two SentTimestamps): no relay can tell them from two events, so
    their second time (and, without an ``event_id``, their second derived id) is noted, not asserted."""
    report = Report()
    accepted: dict[str, list[dict[str, Any]]] = defaultdict(list)
    by_key: dict[tuple[str, str], set[str]] = defaultdict(set)  # (event_name, event_id) -> tags
    for entry in received:
        event = entry["event"]
        tag = _tag(event)
        if tag is None or tag not in inputs:
            report.fail("unknown event accepted", json.dumps(event)[:200])
            continue
        accepted[tag].append(entry)
        by_key[(str(event.get("event_name")), str(event.get("event_id")))].add(tag)
    final = [letter for letter in letters if letter.phase == 2]
    in_final: dict[str, list[Letter]] = defaultdict(list)
    for letter in final:
        for tag in letter.tags:
            in_final[tag].append(letter)
    final_garbage = {letter.body for letter in final if letter.reason is not None}

    for tag, item in inputs.items():
        got = accepted.get(tag, [])
        ids = {str(g["event"].get("event_id")) for g in got}
        times = {g["event"].get("event_time") for g in got}
        dead = in_final.get(tag, [])
        reasoned = [letter for letter in dead if letter.reason is not None]
        if item.invalid is None:
            if not got and not dead:
                report.fail("lost (valid event neither accepted nor in the DLQ)", _describe(item))
            twice = tag in duplicated and item.event_time is None  # two first sights, see the docstring
            if len(ids) > 1:
                what = f"{_describe(item)} ids={sorted(ids)}"
                if twice and item.event_id is None:
                    report.note("sent twice without event_id and event_time: two ids (not asserted)", what)
                else:
                    report.fail("accepted under more than one event_id", what)
            if len(times) > 1:
                what = f"{_describe(item)} times={sorted(times)}"
                if twice:
                    report.note("sent twice without event_time: two times (not asserted)", what)
                else:
                    report.fail("accepted with more than one event_time", what)
            if item.event_id is not None and ids and ids != {item.event_id}:
                report.fail("producer's event_id replaced", f"{_describe(item)} ids={sorted(ids)}")
            if item.event_time is not None and times and times != {item.event_time}:
                report.fail("producer's event_time replaced", f"{_describe(item)} times={sorted(times)}")
            if {g["pixel_id"] for g in got} - {item.pixel_id}:
                report.fail("accepted at the wrong pixel", f"{_describe(item)} pixels={[g['pixel_id'] for g in got]}")
            if reasoned:
                report.fail("valid event dead-lettered after the healthy redrive",
                            f"{_describe(item)} reason={reasoned[0].reason}")  # fmt: skip
        else:
            if got:
                report.fail("invalid event accepted", _describe(item))
            if not reasoned:
                report.fail("invalid event not in the DLQ with a reason",
                            f"{_describe(item)} dlq={[(d.reason, d.message_id) for d in dead]}")  # fmt: skip
        if any(letter.reason is None for letter in dead):
            report.fail("in the DLQ without a reason (moved by SQS, not by the relay)",
                        f"{_describe(item)} message={dead[0].message_id}")  # fmt: skip
    for (name, event_id), tags in by_key.items():
        if len(tags) > 1:
            report.fail("two input events share one (event_name, event_id): Meta keeps one",
                        f"{name}/{event_id}: {sorted(tags)[:4]}")  # fmt: skip
    for gid, body in garbage.items():
        if body not in final_garbage:
            report.fail("unreadable body not in the DLQ with its reason", gid)

    # letters: each (phase, source record, event) once; each carries the resolved event_id and event_time
    seen: dict[tuple[int, str | None, int | None, str], Letter] = {}
    for letter in letters:
        if letter.reason is None:
            continue
        for tag in letter.tags or ("<body>",):
            key = (letter.phase, letter.source, letter.index, tag if letter.tags else letter.body)
            if key in seen:
                what = f"source={letter.source} index={letter.index} {tag} reason={letter.reason}"
                if letter.source in killed_ids and not cfg.strict_letters:
                    report.note("letter stored twice after a killed invocation (not asserted)", what)
                else:
                    report.fail("letter stored twice", what)
            seen[key] = letter
        for event in letter.events:
            tag = _tag(event)
            if tag is None or tag not in inputs:
                continue
            missing = [k for k in ("event_id", "event_time") if event.get(k) is None]
            if missing:
                report.fail("letter without the resolved event_id / event_time",
                            f"{_describe(inputs[tag])} missing={missing} reason={letter.reason}")  # fmt: skip
            lost_fields = {k: v for k, v in inputs[tag].request_fields.items() if letter.fields.get(k) != v}
            if lost_fields:
                report.fail("letter without its message's request-level fields",
                            f"{_describe(inputs[tag])} lost={sorted(lost_fields)} reason={letter.reason}")  # fmt: skip
    for queue, left in leftovers.items():
        if left:
            report.fail("queue not empty at the end", f"{queue}: {left} messages")
    return report


def _describe(item: InputEvent) -> str:
    given = ("id" if item.event_id else "no-id") + "," + ("time" if item.event_time else "no-time")
    invalid = f", {item.invalid}" if item.invalid else ""
    return f"{item.tag} [{item.via}/{item.shape}, {given}, pixel {item.pixel_id[-1]}{invalid}]"


# ------------------------------------------------------------------------------------------------ run
def _log(cfg: Config, text: str) -> None:
    if not cfg.quiet:
        print(text, flush=True)


def run(cfg: Config) -> Report:
    from local.rie import LambdaEmulator

    if not (cfg.artifact_dir / "capi_relay" / "handler.py").is_file():
        raise SystemExit(f"{cfg.artifact_dir} holds no built function: run `make build`")
    started = time.monotonic()
    now = int(time.time())
    messages, inputs, garbage = generate(cfg, now)
    rng = random.Random(cfg.seed + 1)
    token = dummy_token()
    with MotoServer(mode="process") as moto, GraphStandIn({token}) as standin:
        prefix = f"soak{uuid.uuid4().hex[:8]}"
        resources = provision(moto.endpoint_url, token=token, prefix=prefix, max_receive_count=cfg.max_receive,
                              visibility_timeout_s=cfg.visibility_timeout_s)  # fmt: skip
        env = function_env(resources, standin.url, quarantine=True, park_schedule=cfg.park_schedule, extra={
            "GRAPH_READ_TIMEOUT": str(cfg.read_timeout_s), "MAX_ATTEMPTS": str(cfg.max_attempts),
            "MAX_EVENTS_PER_REQUEST": str(cfg.max_events_per_request), "POWERTOOLS_LOG_LEVEL": "WARNING",
            "DEADLINE_MARGIN": "1", "FATE_RESERVE": "2", "SQS_TIMEOUT": "1",
        })  # fmt: skip
        standin.state.reject_event_ids = {i.event_id for i in inputs.values() if i.invalid == "poison" and i.event_id}
        producer = Producer(messages, resources)

        def make_emulator() -> Any:
            emulator = LambdaEmulator(str(cfg.artifact_dir), env, timeout_s=cfg.function_timeout_s)
            emulator.start()
            return emulator

        invoker = FaultyInvoker(make_emulator, rng, cfg, standin)
        sqs = resources.clients().sqs
        esm = EventSourceEmulator(sqs, resources.queue_url, invoker, batch_size=cfg.batch_size,
                                  window_s=cfg.window_s, queue_arn=resources.queue_arn)  # fmt: skip
        outcomes: list[BatchOutcome] = []
        try:
            with standin.state.lock:
                standin.state.faults.extend(phase1_faults(cfg))
            t1 = time.monotonic()
            producer.start()
            while True:  # drain while the producers publish, until they are done and the queue is empty
                outcomes += _drain(esm, cfg)
                if not producer.is_alive() and esm.pending() == 0:
                    break
                if time.monotonic() - t1 > _drain_limit(cfg):
                    print("WARNING: phase 1 did not drain in time", file=sys.stderr)
                    break
            if producer.error is not None:
                raise RuntimeError(f"the producers failed: {producer.error!r}") from producer.error
            sent = producer.sent
            _log(cfg, f"published {sum(sent.values())} messages ({dict(sent)}) holding {len(inputs)} events "
                      f"+ {len(garbage)} unreadable bodies in {producer.seconds:.1f} s, while consuming")  # fmt: skip
            phase1_s = time.monotonic() - t1
            with standin.state.lock:
                standin.state.faults.clear()
            fault_counts = Counter(r.fault or "none" for r in standin.requests)
            dlq1, new_ids = redrive(resources)
            _log(cfg, f"phase 1 (faults) drained in {phase1_s:.1f} s: {invoker.invocations} invocations, "
                      f"{len(invoker.killed_batches)} killed; DLQ held {len(dlq1)} messages, redriven")  # fmt: skip
            invoker.kill_p = invoker.outage_p = 0.0
            t2 = time.monotonic()
            phase1_invocations = invoker.invocations
            outcomes2 = _drain(esm, cfg)
            outcomes += outcomes2
            phase2_s = time.monotonic() - t2
            dlq2 = _receive_all(resources)
        finally:
            invoker.stop()
        leftovers = {"events queue": esm.pending(), "DLQ": _pending(resources)}
        letters = [Letter.of(1, m) for m in dlq1] + [Letter.of(2, m) for m in dlq2]
        killed_ids = {mid for batch in invoker.killed_batches for mid in batch}
        received = standin.received
        duplicated = frozenset(tag for m in messages if m.duplicate for tag in m.tags)
        report = analyse(cfg, inputs, garbage, received, letters, killed_ids, leftovers, duplicated)
        _causes(report, messages, letters)
        report.phase2_failures = _failure_reasons(outcomes2)
        report.phase1_failures = _failure_reasons(outcomes[: len(outcomes) - len(outcomes2)])
        requests = standin.requests
    elapsed = time.monotonic() - started
    _summarise(report, cfg, inputs, garbage, sent, received, letters, requests, fault_counts, invoker,
               phase1_invocations, phase1_s, phase2_s, elapsed, outcomes)  # fmt: skip
    _ = new_ids
    return report


def _failure_reasons(outcomes: list[BatchOutcome]) -> Counter[str]:
    """Why records failed, from the function's "record failed" log lines (and whole-batch failures)."""
    reasons: Counter[str] = Counter()
    for outcome in outcomes:
        if outcome.whole_batch_failed:
            reasons["function error (whole batch)"] += len(outcome.message_ids)
            continue
        for line in outcome.result.logs.splitlines():
            if '"record failed"' not in line:
                continue
            with contextlib.suppress(ValueError):
                reasons[str(json.loads(line).get("reason"))] += 1
    return reasons


def _causes(report: Report, messages: list[Message], letters: list[Letter]) -> None:
    """Label each example with how its event travelled: sent twice by the producer, redriven from the DLQ."""
    duplicated = {tag for m in messages if m.duplicate for tag in m.tags}
    redriven = {tag for letter in letters if letter.phase == 1 for tag in letter.tags}
    for examples in (*report.broken.values(), *report.informational.values()):
        for i, example in enumerate(examples):
            tag = example.split(" ", 1)[0]
            hints = [h for h, tags in (("producer sent it twice", duplicated), ("redriven", redriven)) if tag in tags]
            if hints:
                examples[i] = f"{example} <- {' + '.join(hints)}"


def _drain(esm: EventSourceEmulator, cfg: Config) -> list[BatchOutcome]:
    try:
        return esm.run_until_drained(_drain_limit(cfg))
    except DrainTimeout as exc:
        print(f"WARNING: {exc}", file=sys.stderr)
        return exc.outcomes


def _drain_limit(cfg: Config) -> float:
    return cfg.drain_timeout_s if cfg.drain_timeout_s is not None else 600.0 + 0.15 * cfg.events


def _receive_all(resources: Resources) -> list[dict[str, Any]]:
    sqs = resources.clients().sqs
    out: list[dict[str, Any]] = []
    while True:
        resp = sqs.receive_message(QueueUrl=resources.dlq_url, MaxNumberOfMessages=10, WaitTimeSeconds=0,
                                   AttributeNames=["All"], MessageAttributeNames=["All"])  # fmt: skip
        batch = resp.get("Messages", [])
        if not batch:
            return out
        for message in batch:
            out.append(dict(message))
            sqs.delete_message(QueueUrl=resources.dlq_url, ReceiptHandle=message["ReceiptHandle"])


def _pending(resources: Resources) -> int:
    attrs = resources.clients().sqs.get_queue_attributes(
        QueueUrl=resources.dlq_url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return sum(int(v) for v in attrs.values())


def _summarise(report: Report, cfg: Config, inputs: dict[str, InputEvent], garbage: dict[str, str],
               sent: Counter[str], received: list[dict[str, Any]], letters: list[Letter], requests: list[Any],
               fault_counts: Counter[str], invoker: FaultyInvoker, phase1_invocations: int, phase1_s: float,
               phase2_s: float, elapsed: float, outcomes: list[BatchOutcome]) -> None:  # fmt: skip
    shapes = Counter(f"{i.via}/{i.shape}" for i in inputs.values())
    accepted_tags = {_tag(r["event"]) for r in received} - {None}
    values = list(inputs.values())
    no_id, no_time = sum(i.event_id is None for i in values), sum(i.event_time is None for i in values)
    too_old, poison = sum(i.invalid == "too_old" for i in values), sum(i.invalid == "poison" for i in values)

    def dlq(phase: int) -> str:
        reasoned = sum(1 for x in letters if x.phase == phase and x.reason)
        return f"{reasoned} / {sum(1 for x in letters if x.phase == phase) - reasoned}"

    end_reasons = Counter(x.reason for x in letters if x.phase == 2 and x.reason).most_common()
    faults = ", ".join(f"{_fault_name(k)} {v}" for k, v in fault_counts.most_common() if k != "none")
    phase2_invocations = invoker.invocations - phase1_invocations
    rows: list[tuple[str, Any]] = [
        ("seed", cfg.seed),
        ("input events", len(inputs)),
        ("  by producer/shape", ", ".join(f"{k} {v}" for k, v in sorted(shapes.items()))),
        ("  without event_id / without event_time", f"{no_id} / {no_time}"),
        ("  invalid: too old / Meta poison", f"{too_old} / {poison}"),
        ("unreadable bodies", len(garbage)),
        ("messages published", ", ".join(f"{k} {v}" for k, v in sorted(sent.items()))),
        ("Graph requests (phase 1 + 2)", len(requests)),
        ("  phase 1 faults fired", faults),
        ("invocations (phase 1 / 2)", f"{phase1_invocations} / {phase2_invocations}"),
        ("  killed mid-invocation / function errors", f"{len(invoker.killed_batches)} / {invoker.function_errors}"),
        ("  outages (one invocation each)", ", ".join(f"{k} {v}" for k, v in sorted(invoker.outages.items()))),
        ("  records failed (batchItemFailures, all receives)", sum(len(o.failed) for o in outcomes)),
        ("  failure reasons, phase 1", _counts(report.phase1_failures)),
        ("  failure reasons, phase 2 (Meta healthy)", _counts(report.phase2_failures)),
        ("events accepted by the stand-in (raw / distinct inputs)", f"{len(received)} / {len(accepted_tags)}"),
        ("DLQ after phase 1: with reason / moved by SQS", dlq(1)),
        ("DLQ at the end: with reason / moved by SQS", dlq(2)),
        ("  end reasons", ", ".join(f"{k} {v}" for k, v in end_reasons)),
        ("time: phase 1 / phase 2 / total (s)", f"{phase1_s:.0f} / {phase2_s:.0f} / {elapsed:.0f}"),
    ]  # fmt: skip
    report.rows = rows
    if cfg.quiet:
        return
    width = max(len(k) for k, _ in rows)
    print("\n== lifecycle soak ==")
    for key, value in rows:
        print(f"{key:<{width}}  {value}")
    print("\n== invariants ==")
    names = [
        "lost (valid event neither accepted nor in the DLQ)",
        "accepted under more than one event_id",
        "accepted with more than one event_time",
        "producer's event_id replaced",
        "producer's event_time replaced",
        "two input events share one (event_name, event_id): Meta keeps one",
        "accepted at the wrong pixel",
        "valid event dead-lettered after the healthy redrive",
        "invalid event accepted",
        "invalid event not in the DLQ with a reason",
        "in the DLQ without a reason (moved by SQS, not by the relay)",
        "unreadable body not in the DLQ with its reason",
        "letter stored twice",
        "letter without the resolved event_id / event_time",
        "letter without its message's request-level fields",
        "queue not empty at the end",
        "unknown event accepted",
    ]
    for name in names:
        status = "ok" if name not in report.broken else f"BROKEN x{report.counts[name]}"
        print(f"  {status:<14} {name}")
        for example in report.broken.get(name, []):
            print(f"                   e.g. {example}")
    for name, examples in report.informational.items():
        print(f"  {'note x' + str(report.counts[name]):<14} {name}")
        for example in examples:
            print(f"                   e.g. {example}")
    print("\nRESULT:", "all invariants hold" if report.ok else f"{len(report.broken)} invariant(s) broken")


def _counts(counter: Counter[str]) -> str:
    return ", ".join(f"{k} {v}" for k, v in counter.most_common())


def _fault_name(describe: str) -> str:
    try:
        doc = json.loads(describe)
    except ValueError:
        return describe
    if doc.get("lose_answer"):
        return "lost-answer"
    if doc.get("drop"):
        return "hang+drop"
    if doc.get("delay_ms"):
        return "slow(processed)"
    if doc.get("proxy"):
        return f"proxy-{doc.get('status')}"
    if doc.get("code") in THROTTLE_CODES:
        return f"throttle-{doc['code']}"
    return f"{doc.get('status')}/code-{doc.get('code')}"


def parse_args(argv: list[str] | None = None) -> Config:
    cfg = Config()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--events", type=int, default=cfg.events, help="input events (default %(default)s)")
    parser.add_argument("--seed", type=int, default=cfg.seed)
    parser.add_argument("--batch-size", type=int, default=cfg.batch_size)
    parser.add_argument("--max-receive", type=int, default=cfg.max_receive, help="redrive maxReceiveCount")
    parser.add_argument("--fault-scale", type=float, default=1.0, help="multiply every fault probability")
    parser.add_argument("--p-kill", type=float, default=cfg.p_kill, help="share of invocations killed")
    parser.add_argument("--p-outage", type=float, default=cfg.p_outage, help="share of invocations in an outage")
    parser.add_argument("--strict-letters", action="store_true", help="also fail on duplicate letters after a kill")
    parser.add_argument("--drain-timeout", type=float, default=None, help="seconds per phase (default: by size)")
    args = parser.parse_args(argv)
    cfg.events, cfg.seed, cfg.batch_size, cfg.max_receive = args.events, args.seed, args.batch_size, args.max_receive
    for name in ("p_lost_answer", "p_slow_processed", "p_hang", "p_5xx", "p_throttle"):
        setattr(cfg, name, getattr(cfg, name) * args.fault_scale)
    cfg.p_kill, cfg.strict_letters, cfg.drain_timeout_s = args.p_kill, args.strict_letters, args.drain_timeout
    cfg.p_outage = args.p_outage
    return cfg


def main(argv: list[str] | None = None) -> int:
    report = run(parse_args(argv))
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
