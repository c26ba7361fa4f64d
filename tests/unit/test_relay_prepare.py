"""The relay's prepare step: what it counts per event (rejections, dropped values, notes, match keys), the
lines it logs, and that an unexpected error while reading or preparing one record fails that record alone
(``unprocessable_record``) and sends nothing of it (issue 17, mutation testing of the decision sequence)."""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any

import pytest

import capi_relay.relay as relay_module
from capi_relay.app import delivery_config
from capi_relay.deliver.engine import Deliverer
from capi_relay.ingest.model import Rejection
from capi_relay.prepare.events import prepare_event
from capi_relay.relay import Relay
from capi_relay.settings import settings_from_env
from tests.unit.fakes import FakeSender, FakeTokens
from tests.unit.test_relay import NOW, event, failed_ids, record


def make(sender: FakeSender) -> Relay:
    settings = settings_from_env({"ACCESS_TOKEN_SECRET_ID": "s", "PIXEL_ID": "111", "MAX_ATTEMPTS": "1"})
    return Relay(settings, Deliverer(sender, FakeTokens(), delivery_config(settings), sleep=lambda _: None),
                 wall_clock=lambda: float(NOW))  # fmt: skip


def test_the_summary_counts_what_preparing_each_event_found(caplog: pytest.LogCaptureFixture) -> None:
    events = [
        event(event_id="a", user_data={"em": "x@example.com", "ph": "not a phone", "country": "zz-invalid"}),
        event(event_id="b", event_time=NOW - 30 * 86_400),  # too old
        event(event_id="c", event_time=NOW - 40 * 86_400),  # too old
        event(event_id="d", event_time=(NOW - 60) * 1000),  # milliseconds
    ]
    sender = FakeSender()
    relay = make(sender)
    with caplog.at_level(logging.DEBUG, logger="capi_relay.relay"):
        summary = relay.process({"Records": [record("m", {"data": events})]})
    # Then the counts are the sum of what preparing each event reports
    settings = settings_from_env({"ACCESS_TOKEN_SECRET_ID": "s", "PIXEL_ID": "111"})
    results = [prepare_event(e, settings.normalization, NOW) for e in events]
    prepared = [r for r in results if not isinstance(r, Rejection)]
    assert summary.events_prepared == len(prepared) == 2
    assert summary.events_rejected == Counter(r.reason for r in results if isinstance(r, Rejection))
    assert summary.events_rejected == {"event_too_old": 2}
    assert summary.fields_dropped == Counter((d.field, d.reason) for r in prepared for d in r.drops)
    assert summary.fields_dropped  # the phone and the country were dropped
    assert summary.notes == Counter(n for r in prepared for n in r.notes)
    assert summary.match_keys == Counter(r.match_keys for r in prepared)
    assert {e["event_id"] for e in sender.events} == {"a", "d"}
    rejected = [(r.__dict__["message_id"], r.__dict__["event_index"], r.__dict__["reason"])
                for r in caplog.records if r.getMessage() == "event rejected before sending"]  # fmt: skip
    assert rejected == [("m", 1, "event_too_old"), ("m", 2, "event_too_old")]
    dropped = [(r.__dict__["message_id"], r.__dict__["event_index"], r.__dict__["dropped"])
               for r in caplog.records if r.getMessage() == "values dropped"]  # fmt: skip
    assert dropped == [("m", 0, [{"field": d.field, "reason": d.reason} for d in prepared[0].drops])]


@pytest.mark.pure_only  # replaces a function the compiled relay calls directly
@pytest.mark.parametrize("step", ["resolve_identity", "prepare_event"])
def test_an_error_reading_or_preparing_one_record_fails_that_record_alone(
    step: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    real = getattr(relay_module, step)

    def flaky(*args: Any, **kwargs: Any) -> Any:
        first = args[0] if step == "prepare_event" else args[1]
        if isinstance(first, dict) and first.get("event_id") == "boom":
            raise RuntimeError("bug")
        return real(*args, **kwargs)

    monkeypatch.setattr(relay_module, step, flaky)
    sender = FakeSender()
    with caplog.at_level(logging.WARNING, logger="capi_relay.relay"):
        summary = make(sender).process({"Records": [
            record("bad", {"data": [event(event_id="ok-in-bad"), event(event_id="boom")]}),
            record("good", {"data": [event(event_id="ok")]}),
        ]})  # fmt: skip
    assert failed_ids(summary.response) == ["bad"]
    assert summary.failures == {"unprocessable_record": 1}
    assert [e["event_id"] for e in sender.events] == ["ok"]  # nothing of the failed record is sent
    message = "record could not be read" if step == "resolve_identity" else "record could not be prepared"
    assert [(r.__dict__["message_id"], r.__dict__["error"]) for r in caplog.records if r.getMessage() == message] == [
        ("bad", "RuntimeError")
    ]
