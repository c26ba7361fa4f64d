"""`capi-relay send` / capi_relay.tools.producer against moto's SQS over real HTTP: many events become few
<= 256 KiB messages, each accepted event arrives exactly once (as the producer wrote it, its event_id kept),
rejected events are reported and not sent, partial batch failures are retried, and every message is one
the relay reads back without a rejection."""

from __future__ import annotations

import io
import json
import uuid
from typing import Any, cast

import pytest

from capi_relay.settings import NormalizationSettings
from capi_relay.tools import cli
from capi_relay.tools.producer import SQS_MAX_MESSAGE_BYTES, BatchSender, ProducerInput, Routing, send_events
from local.stack import Clients, MotoServer, drain_queue
from tests.factories import NOW, make_event

pytestmark = pytest.mark.integration


def queue(clients: Clients, fifo: bool = False) -> str:
    name = f"prod-{uuid.uuid4().hex[:10]}" + (".fifo" if fifo else "")
    if fifo:
        return clients.sqs.create_queue(QueueName=name, Attributes={"FifoQueue": "true"})["QueueUrl"]
    return clients.sqs.create_queue(QueueName=name)["QueueUrl"]


def sqs(clients: Clients) -> BatchSender:
    return cast(BatchSender, clients.sqs)  # boto3's typed kwargs are a superset of the protocol's


def received(clients: Clients, url: str) -> list[dict[str, Any]]:
    return drain_queue(clients.sqs, url, timeout_s=20.0)


def shop_events(n: int, now: int) -> list[dict[str, Any]]:
    """Website purchases of ~1 KiB with raw PII, each with the producer's own event_id."""
    return [make_event(now, event_id=f"order-{i}", custom_data={"value": i, "currency": "USD",
                       "contents": [{"id": f"SKU-{i}", "quantity": 1}], "order_id": f"O-{i:06d}" * 20})
            for i in range(n)]  # fmt: skip


@pytest.fixture
def clients(moto_server: MotoServer) -> Clients:
    return Clients(moto_server.endpoint_url)


def test_many_events_become_few_messages_each_event_exactly_once(clients: Clients) -> None:
    # Given 3,000 valid events and 3 the relay would reject, as one producer run
    url = queue(clients)
    events: list[Any] = shop_events(3000, NOW)
    events[10]["event_time"] = NOW - 30 * 86_400  # too old
    events[500] = {"event_name": "Lead"}  # no action_source
    events[2999]["custom_data"] = {"value": "lots", "currency": "USD"}  # non-numeric value
    summary, code = send_events(ProducerInput(events, Routing()), sqs(clients), url, NormalizationSettings(), NOW,
                                pixel_id="123456")  # fmt: skip
    # Then the rejected events are reported by index and reason, and nothing else is lost
    assert code == 1
    assert summary["rejected"] == [
        {"index": 10, "reason": "event_too_old"}, {"index": 500, "reason": "missing_action_source"},
        {"index": 2999, "reason": "invalid_value"},
    ]  # fmt: skip
    assert summary["events_sent"] == 2997
    messages = received(clients, url)
    assert len(messages) == summary["messages_sent"]
    sizes = [len(m["Body"].encode()) for m in messages]
    assert all(size <= SQS_MAX_MESSAGE_BYTES for size in sizes)
    assert len(messages) <= -(-sum(sizes) // SQS_MAX_MESSAGE_BYTES) + 1  # packed: hardly more than the minimum
    assert len(messages) < 3000 / 100
    ids = [e["event_id"] for m in messages for e in json.loads(m["Body"])["data"]]
    expected = [f"order-{i}" for i in range(3000) if i not in (10, 500, 2999)]
    assert sorted(ids) == sorted(expected)  # each accepted event exactly once, producer ids kept
    first = json.loads(messages[0]["Body"])
    assert first["pixel_id"] == "123456"
    assert first["data"][0]["user_data"]["em"] == "John_Smith@Gmail.com"  # raw: the relay normalizes
    # And the relay reads every message back with nothing rejected
    for message in messages:
        document, check_code = cli.check(message["Body"], NOW)
        assert check_code == 0, document["rejected"]


class DropFirstEntryOnce:
    """Wraps the moto client like a real SQS partial failure: on the first call the first entry is not
    delivered and comes back in ``Failed`` (SenderFault false); everything else goes to moto as is."""

    def __init__(self, sqs: Any) -> None:
        self.sqs = sqs
        self.calls = 0

    def send_message_batch(self, *, QueueUrl: str, Entries: list[dict[str, Any]]) -> Any:
        self.calls += 1
        if self.calls > 1:
            return self.sqs.send_message_batch(QueueUrl=QueueUrl, Entries=Entries)
        first, rest = Entries[0], Entries[1:]
        response = dict(self.sqs.send_message_batch(QueueUrl=QueueUrl, Entries=rest)) if rest else {}
        failed = {"Id": first["Id"], "SenderFault": False, "Code": "InternalError"}
        return {"Successful": response.get("Successful", []), "Failed": [failed]}


def test_a_partial_batch_failure_is_retried_and_nothing_is_duplicated(clients: Clients) -> None:
    url = queue(clients)
    tiny = [{"event_name": "Lead", "event_id": f"l-{i}", "action_source": "system_generated",
             "user_data": {"external_id": f"u-{i}"}, "event_time": NOW - 60} for i in range(30)]  # fmt: skip
    flaky = DropFirstEntryOnce(clients.sqs)
    # 30 tiny events fit one message: the first call fails it, the retry delivers it
    summary, code = send_events(ProducerInput(tiny, Routing()), flaky, url, NormalizationSettings(), NOW,
                                pixel_id="1", sender_options={"sleep": lambda _: None})  # fmt: skip
    assert code == 0
    assert summary["retries"] == 1
    ids = [e["event_id"] for m in received(clients, url) for e in json.loads(m["Body"])["data"]]
    assert sorted(ids) == sorted(f"l-{i}" for i in range(30))


def test_fifo_queue_messages_carry_a_group(clients: Clients) -> None:
    url = queue(clients, fifo=True)
    summary, code = send_events(ProducerInput(shop_events(5, NOW), Routing()), sqs(clients), url,
                                NormalizationSettings(), NOW, pixel_id="1")  # fmt: skip
    assert (code, summary["messages_sent"]) == (0, 1)
    [message] = received(clients, url)
    assert message["Attributes"]["MessageGroupId"] == "capi-relay"


def test_the_send_command_prints_its_summary_and_exits_like_check(clients: Clients) -> None:
    # Given JSON Lines on stdin with one invalid event (the CLI uses the real clock)
    url = queue(clients)
    lines = [json.dumps(make_event(event_id=f"cli-{i}", event_time=None)) for i in range(5)]
    lines.insert(2, json.dumps({"event_name": "Lead", "action_source": "website"}))
    out = io.StringIO()
    code = cli.main(["send", "--queue-url", url, "--pixel-id", "42", "--test-event-code", "TEST7", "-"],
                    io.StringIO("\n".join(lines)), out)  # fmt: skip
    summary = json.loads(out.getvalue())
    assert code == 1
    assert summary["rejected"] == [{"index": 2, "reason": "missing_user_data"}]
    assert (summary["events_read"], summary["events_sent"], summary["messages_sent"]) == (6, 5, 1)
    [message] = received(clients, url)
    body = json.loads(message["Body"])
    assert (body["pixel_id"], body["test_event_code"]) == ("42", "TEST7")
    assert [e["event_id"] for e in body["data"]] == [f"cli-{i}" for i in range(5)]


def test_send_refuses_unreadable_input_and_sends_nothing(clients: Clients, capsys: pytest.CaptureFixture[str]) -> None:
    url = queue(clients)
    text = json.dumps(make_event()) + "\n" + '{"event_name": "Lead",\n'
    code = cli.main(["send", "--queue-url", url, "-"], io.StringIO(text), io.StringIO())
    assert code == 2
    assert "line 2 column" in capsys.readouterr().err
    assert received(clients, url) == []
