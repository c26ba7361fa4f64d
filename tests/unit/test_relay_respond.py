"""The relay's respond step: the summary's counts and the per-record log lines operators read (message id,
receive count, pixel, reason, Meta's code / subcode / fbtrace_id, whether SQS moves the record next), for
delivered, quarantined and failed records (issue 17, mutation testing of the decision sequence)."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from capi_relay.app import delivery_config
from capi_relay.deliver.client import GraphReply
from capi_relay.deliver.engine import Deliverer
from capi_relay.deliver.policy import ErrorKind, GraphError
from capi_relay.relay import BatchSummary, Relay
from capi_relay.settings import settings_from_env
from tests.unit.fakes import FakeSender, FakeTokens
from tests.unit.test_relay import DLQ, FakeQueues, event, failed_ids, record


def by_pixel(pixel: str, events: list[dict[str, Any]]) -> GraphReply | Exception:
    if pixel == "190":
        return GraphError(ErrorKind.AUTH, http_status=401, code=190, subcode=463, fbtrace_id="trace-190")
    return GraphReply(len(events), None, 1.0)


def run(records: list[dict[str, Any]], *, dlq: bool) -> BatchSummary:
    return relay(dlq=dlq).process({"Records": records})


def relay(*, dlq: bool) -> Relay:
    env = {"ACCESS_TOKEN_SECRET_ID": "s", "PIXEL_ID": "111", "MAX_ATTEMPTS": "1", "MAX_RECEIVE_COUNT": "3",
           "PARK_SCHEDULE": "off"} | ({"DLQ_URL": DLQ} if dlq else {})  # fmt: skip
    settings = settings_from_env(env)
    deliverer = Deliverer(FakeSender(by_pixel), FakeTokens(), delivery_config(settings), sleep=lambda _: None)
    return Relay(settings, deliverer, FakeQueues())


def fields(rec: logging.LogRecord, *names: str) -> tuple[Any, ...]:
    return tuple(rec.__dict__.get(name, "<missing>") for name in names)


FAILED = (
    "message_id",
    "receive_count",
    "pixel_id",
    "reason",
    "code",
    "error_subcode",
    "fbtrace_id",
    "dead_letter_next",
)


def test_a_failed_record_is_logged_with_metas_answer_and_whether_sqs_moves_it_next(
    caplog: pytest.LogCaptureFixture,
) -> None:
    auth = record("auth", {"data": [event(event_id="a"), event(event_id="b")], "pixel_id": "190"})
    auth["attributes"]["ApproximateReceiveCount"] = "3"
    bad = record("bad", "{not json")
    bad["attributes"]["ApproximateReceiveCount"] = "2"
    ok = record("ok", {"data": [event(event_id="c")]})
    with caplog.at_level(logging.WARNING, logger="capi_relay.relay"):
        summary = run([auth, bad, ok], dlq=False)
    assert failed_ids(summary.response) == ["auth", "bad"]
    logged = sorted(fields(r, *FAILED) for r in caplog.records if r.getMessage() == "record failed")
    assert logged == [
        ("auth", 3, "190", "graph_auth_190_463", 190, 463, "trace-190", True),
        ("bad", 2, None, "body_not_json", None, None, None, False),
    ]
    assert (summary.records, summary.records_delivered, summary.records_failed) == (3, 1, 2)
    assert summary.failures == {"graph_auth_190_463": 1, "body_not_json": 1}
    assert summary.events_dead_lettered == 2  # the last receive's two events: SQS moves them next
    assert summary.records_quarantined == 0


def test_a_delivered_record_is_logged_at_debug_with_its_events_and_letters(caplog: pytest.LogCaptureFixture) -> None:
    mixed = record("mixed", {"data": [event(event_id="a"), {"event_name": "Purchase"}, event(event_id="b")]})
    with caplog.at_level(logging.DEBUG, logger="capi_relay.relay"):
        summary = run([mixed, record("bad", "{x")], dlq=True)
    assert failed_ids(summary.response) == []
    logged = sorted(fields(r, "message_id", "pixel_id", "events", "quarantined")
                    for r in caplog.records if r.getMessage() == "record delivered")  # fmt: skip
    assert logged == [("bad", None, 0, 1), ("mixed", "111", 2, 1)]
    assert (summary.records_delivered, summary.records_quarantined, summary.events_dead_lettered) == (2, 2, 0)
    assert summary.response == {"batchItemFailures": []}


def test_a_payload_that_is_not_an_sqs_event_is_logged_as_such_and_answers_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    payloads: list[Any] = [[], {"Records": "x"}, None]
    for payload in payloads:
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="capi_relay.relay"):
            summary = relay(dlq=False).process(payload)
        assert summary.response == {"batchItemFailures": []}
        assert [(r.levelno, r.getMessage()) for r in caplog.records] == [
            (logging.ERROR, "not an SQS event: no Records list; nothing to do")
        ]


def test_an_unexpected_error_is_logged_with_what_the_relay_does_about_it(caplog: pytest.LogCaptureFixture) -> None:
    env = {"ACCESS_TOKEN_SECRET_ID": "s", "PIXEL_ID": "111"}
    settings = settings_from_env(env)
    relay = Relay(settings, Deliverer(FakeSender(), FakeTokens(), delivery_config(settings), sleep=lambda _: None))

    def boom(*_: Any, **__: Any) -> Any:
        raise RuntimeError("bug")

    relay._deliverer.deliver = boom  # type: ignore[method-assign]
    with caplog.at_level(logging.ERROR, logger="capi_relay.relay"):
        summary = relay.process({"Records": [record("a", {"data": [event()]})]})
    assert failed_ids(summary.response) == ["a"]
    assert [r.getMessage() for r in caplog.records if r.exc_info] == [
        "unexpected error; failing every record not proven settled so SQS retries it"
    ]
