"""The Lambda handler's wiring: settings at cold start, partial batch response, EMF metrics, JSON logs."""

from __future__ import annotations

import json
import logging
import sys
import time
from types import ModuleType
from typing import Any

import pytest

from capi_relay.deliver.engine import DeliveryReport
from capi_relay.settings import SettingsError, get_settings
from tests.factories import FakeLambdaContext


def load_handler(monkeypatch: pytest.MonkeyPatch, **env: str) -> ModuleType:
    for key in ("PIXEL_ID", "ACCESS_TOKEN_SECRET_ID", "POWERTOOLS_METRICS_NAMESPACE", "TEST_EVENT_CODE", "STAGE"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    import capi_relay.handler as module  # the first import runs start() too

    module.start()  # what INIT does in a fresh execution environment: read and validate the settings
    # Powertools reuses the service's logging.Logger, whose StreamHandler still holds the sys.stdout of the first
    # test that built the handler (the first invocation copies it to the capi_relay loggers): point it at this
    # test's (captured) stdout.
    for name in ("capi_relay", "capi-relay"):
        for handler in logging.getLogger(name).handlers:
            if isinstance(handler, logging.StreamHandler):
                handler.stream = sys.stdout  # not setStream: it flushes the old, closed, stream
    return module


def test_malformed_record_is_reported_with_metrics_and_no_exception(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    handler = load_handler(monkeypatch, PIXEL_ID="111", ACCESS_TOKEN_SECRET_ID="capi/token")
    response = handler.lambda_handler({"Records": [{"messageId": "m1", "body": "{oops"}]}, FakeLambdaContext(30))
    assert response == {"batchItemFailures": [{"itemIdentifier": "m1"}]}
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    emf = [line for line in lines if "_aws" in line]
    assert any(line.get("RecordsFailed") == [1.0] for line in emf)
    assert all(line["_aws"]["CloudWatchMetrics"][0]["Namespace"] == "CapiRelay" for line in emf)
    failed = [line for line in lines if line.get("message") == "record failed"]
    assert failed
    assert failed[0]["message_id"] == "m1"
    assert failed[0]["reason"] == "body_not_json"


def test_test_event_code_in_production_raises_a_warning_metric(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    handler = load_handler(
        monkeypatch, PIXEL_ID="111", ACCESS_TOKEN_SECRET_ID="s", STAGE="prod", TEST_EVENT_CODE="TEST123"
    )
    handler.lambda_handler({"Records": []}, FakeLambdaContext(30))
    assert '"TestEventCodeInProduction":[1.0]' in capsys.readouterr().out


def test_bad_configuration_fails_the_cold_start_clearly(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(SettingsError, match="ACCESS_TOKEN_SECRET_ID"):
        load_handler(monkeypatch, PIXEL_ID="111")
    get_settings.cache_clear()


def test_adjusted_events_are_counted_by_note(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given an event whose event_time is in milliseconds
    handler = load_handler(monkeypatch, PIXEL_ID="111", ACCESS_TOKEN_SECRET_ID="s")
    body = {"event_name": "Lead", "event_time": int(time.time() * 1000) - 60_000, "action_source": "other",
            "user_data": {"em": "a@example.com"}}  # fmt: skip
    handler.function().relay._deliverer.deliver = lambda events, deadline, **_: (list(events), DeliveryReport())[1]
    # When the handler prepares it (delivery stubbed: this test is about the metric)
    handler.lambda_handler({"Records": [{"messageId": "m1", "body": json.dumps(body)}]}, FakeLambdaContext(30))
    # Then the conversion is counted in a "reason count" log line (Logs Insights), not in a metric per note
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    notes = {line["reason"]: line["value"] for line in lines
             if line.get("message") == "reason count" and line.get("metric") == "EventAdjustments"}  # fmt: skip
    assert notes == {"event_time_ms": 1}
    assert not any("EventAdjustments" in line for line in lines if "_aws" in line)


def test_every_invocation_reports_the_days_left_for_its_graph_api_version(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from datetime import UTC, datetime

    from capi_relay.deliver.versions import days_left

    handler = load_handler(monkeypatch, PIXEL_ID="111", ACCESS_TOKEN_SECRET_ID="s", GRAPH_API_VERSION="v21.0")
    handler.lambda_handler({"Records": []}, FakeLambdaContext(30))
    expected = float(days_left("v21.0", datetime.now(UTC).date()))
    emf = [json.loads(line) for line in capsys.readouterr().out.splitlines() if '"_aws"' in line]
    assert [line["GraphApiVersionDaysLeft"] for line in emf if "GraphApiVersionDaysLeft" in line] == [[expected]]
    monkeypatch.delenv("GRAPH_API_VERSION")
    get_settings.cache_clear()


def test_the_relay_is_built_on_the_first_invocation_and_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    handler = load_handler(monkeypatch, PIXEL_ID="111", ACCESS_TOKEN_SECRET_ID="s")
    built: list[object] = []
    real_build = handler.build

    def counting(settings: Any) -> Any:
        built.append(settings)
        return real_build(settings)

    monkeypatch.setattr(handler, "build", counting)
    # Given INIT (start) validated the settings: nothing is built yet
    handler.start()
    assert built == []
    # When the function is invoked twice
    handler.lambda_handler({"Records": []}, FakeLambdaContext(30))
    handler.lambda_handler({"Records": []}, FakeLambdaContext(30))
    # Then the first invocation built the relay from INIT's settings, and the second reused it
    assert len(built) == 1
    assert handler.function().settings is built[0]


def test_a_new_environment_needs_no_reload(monkeypatch: pytest.MonkeyPatch) -> None:
    handler = load_handler(monkeypatch, PIXEL_ID="111", ACCESS_TOKEN_SECRET_ID="s")
    handler.lambda_handler({"Records": []}, FakeLambdaContext(30))
    assert handler.function().relay._settings.pixel_id == "111"
    same = load_handler(monkeypatch, PIXEL_ID="222", ACCESS_TOKEN_SECRET_ID="s")
    same.lambda_handler({"Records": []}, FakeLambdaContext(30))
    assert same is handler
    assert handler.function().relay._settings.pixel_id == "222"
    get_settings.cache_clear()


def test_a_configuration_broken_after_init_fails_every_invocation_loudly(monkeypatch: pytest.MonkeyPatch) -> None:
    handler = load_handler(monkeypatch, PIXEL_ID="111", ACCESS_TOKEN_SECRET_ID="s")
    monkeypatch.delenv("ACCESS_TOKEN_SECRET_ID")
    get_settings.cache_clear()  # as if INIT had not run (or its settings were forgotten)
    for _ in range(2):
        with pytest.raises(SettingsError, match="ACCESS_TOKEN_SECRET_ID"):
            handler.lambda_handler({"Records": []}, FakeLambdaContext(30))
    get_settings.cache_clear()
