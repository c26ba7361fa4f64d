"""Shared by the integration and e2e tests of each event's fate (issue 10): a queue + DLQ (standard or FIFO)
in moto, the relay's environment for it, and where every input event ended."""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from capi_relay.app import build_relay
from capi_relay.relay import BatchSummary, Relay
from capi_relay.settings import settings_from_env
from local.esm import EventSourceEmulator, Invoker, InvokeResult
from local.graph_standin import GraphStandIn
from local.stack import MotoServer, drain_queue, function_env, provision
from tests.factories import make_event

BUDGET_S = 8.0


@dataclass
class Fates:
    """Where every input event ended: keys are (source messageId, index) or (messageId, None) for a body."""

    delivered: dict[str, int] = field(default_factory=dict)  # event_id -> times the stand-in accepted it
    quarantined: dict[tuple[str, int | None], dict[str, str]] = field(default_factory=dict)  # -> attributes
    quarantined_bodies: dict[tuple[str, int | None], str] = field(default_factory=dict)
    redriven: dict[str, str] = field(default_factory=dict)  # messageId -> body (moved by SQS)


class Harness:
    def __init__(self, moto: MotoServer, token: str, standin: GraphStandIn, *, max_receive_count: int = 2,
                 fifo: bool = False, visibility_timeout_s: int = 1) -> None:  # fmt: skip
        self.standin = standin
        prefix = f"f{uuid.uuid4().hex[:10]}"
        self.resources = provision(
            moto.endpoint_url, token=token, prefix=prefix, max_receive_count=max_receive_count,
            visibility_timeout_s=visibility_timeout_s,
        )  # fmt: skip
        self.clients = self.resources.clients()
        self.queue_url, self.queue_arn, self.dlq_url = (
            self.resources.queue_url, self.resources.queue_arn, self.resources.dlq_url,
        )  # fmt: skip
        if fifo:
            sqs = self.clients.sqs
            self.dlq_url = sqs.create_queue(QueueName=f"{prefix}-dlq.fifo", Attributes={"FifoQueue": "true"})[
                "QueueUrl"
            ]
            dlq_arn = sqs.get_queue_attributes(QueueUrl=self.dlq_url, AttributeNames=["QueueArn"])["Attributes"][
                "QueueArn"
            ]
            redrive = {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": str(max_receive_count)}
            self.queue_url = sqs.create_queue(
                QueueName=f"{prefix}-events.fifo",
                Attributes={
                    "FifoQueue": "true",
                    "VisibilityTimeout": str(visibility_timeout_s),
                    "RedrivePolicy": json.dumps(redrive),
                },
            )["QueueUrl"]
            self.queue_arn = sqs.get_queue_attributes(QueueUrl=self.queue_url, AttributeNames=["QueueArn"])[
                "Attributes"
            ]["QueueArn"]
        self.bodies: dict[str, str] = {}  # messageId -> body sent
        self.summaries: list[BatchSummary] = []

    def env(self, *, quarantine: bool = True, **extra: str) -> dict[str, str]:
        """The function's environment: quarantine into this harness's DLQ (FIFO or not), parking off unless
        ``PARK_SCHEDULE`` is given; ``extra`` overrides."""
        if quarantine:
            extra = {"DLQ_URL": self.dlq_url, **extra}
        return function_env(self.resources, self.standin.url, extra={"MAX_ATTEMPTS": "2", **extra})

    def relay(self, *, quarantine: bool = True, **env: str) -> Relay:
        return build_relay(settings_from_env(self.env(quarantine=quarantine, **env)))

    def send(self, bodies: list[str], group: str | None = None) -> list[str]:
        ids = []
        for body in bodies:
            kwargs: dict[str, Any] = {}
            if group is not None:
                kwargs = {"MessageGroupId": group, "MessageDeduplicationId": uuid.uuid4().hex}
            message_id = self.clients.sqs.send_message(QueueUrl=self.queue_url, MessageBody=body, **kwargs)["MessageId"]
            self.bodies[message_id] = body
            ids.append(message_id)
        return ids

    def esm_with(self, invoke: Invoker, batch_size: int = 10, window_s: float = 0.0) -> EventSourceEmulator:
        return EventSourceEmulator(self.clients.sqs, self.queue_url, invoke, batch_size=batch_size,
                                   window_s=window_s, queue_arn=self.queue_arn)  # fmt: skip

    def esm(self, relay: Relay, batch_size: int = 10) -> EventSourceEmulator:
        def invoke(event: dict[str, Any]) -> InvokeResult:
            started = time.monotonic()
            summary = relay.process(event, lambda: int((started + BUDGET_S - time.monotonic()) * 1000))
            self.summaries.append(summary)
            return InvokeResult(summary.response)

        return self.esm_with(invoke, batch_size)

    def fates(self) -> Fates:
        fates = Fates()
        for item in self.standin.received:
            event_id = str(item["event"]["event_id"])
            fates.delivered[event_id] = fates.delivered.get(event_id, 0) + 1
        for message in drain_queue(self.clients.sqs, self.dlq_url):
            attrs = {k: v["StringValue"] for k, v in (message.get("MessageAttributes") or {}).items()}
            if "source_message_id" in attrs:
                index = int(attrs["event_index"]) if "event_index" in attrs else None
                key = (attrs["source_message_id"], index)
                assert key not in fates.quarantined, f"quarantined twice: {key}"
                fates.quarantined[key] = attrs
                fates.quarantined_bodies[key] = message["Body"]
            else:
                fates.redriven[message["MessageId"]] = message["Body"]
        return fates


def ev(event_id: str, **kw: Any) -> dict[str, Any]:
    doc = make_event(now=int(time.time()), **kw)
    doc["event_id"] = event_id
    return doc


def assert_partition(fates: Fates, expected: dict[tuple[str, int | None], str]) -> None:
    """``expected`` maps each input event (messageId, index) to its fate: an event_id for delivered, "Q" for
    quarantined, "R" for moved to the DLQ by SQS. Checks the union is everything and nothing is twice."""
    delivered = {k for k, v in expected.items() if v not in ("Q", "R")}
    assert {expected[k] for k in delivered} == set(fates.delivered), "delivered events"
    assert all(n == 1 for n in fates.delivered.values()), f"delivered more than once: {fates.delivered}"
    assert set(fates.quarantined) == {k for k, v in expected.items() if v == "Q"}
    assert set(fates.redriven) == {k[0] for k, v in expected.items() if v == "R"}
