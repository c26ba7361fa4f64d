"""`capi-relay check` shows what gets lost: every dropped value by index/field/reason, the routing and
request-level fields it resolved, adjustments (an ISO 8601 event_time converted), warnings (a website event
without a producer event_id); the relay logs the same drops at DEBUG and passes request fields on."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any, cast

import pytest

from capi_relay.deliver.engine import Deliverer, DeliveryConfig, DeliveryReport
from capi_relay.ingest.model import Outbound
from capi_relay.prepare.events import KNOWN_EVENT_KEYS
from capi_relay.relay import Relay
from capi_relay.settings import settings_from_env
from capi_relay.tools import cli
from tests.factories import NOW, make_event, with_user_data


def iso(ts: int, offset: str = "Z") -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S") + offset


def test_every_dropped_value_is_listed_with_its_event_index_field_and_reason() -> None:
    # Given a good event and one with an invalid phone, a malformed IP, an MD5 email and an unknown key
    bad = with_user_data(make_event(), ph="12", client_ip_address="999.1.1.1", em="0" * 32)
    bad["shoe_size"] = 44
    document, code = cli.check(json.dumps({"data": [make_event(), bad]}), NOW)
    # Then both are sent (a dropped value never sinks its event) and each loss is named
    assert code == 0
    assert len(document["data"]) == 2
    dropped = {(d["index"], d["field"], d["reason"]) for d in document["dropped"]}
    assert {(1, "ph", "invalid_phone"), (1, "client_ip_address", "invalid_ip"), (1, "em", "md5_hash"),
            (1, "event", "unknown_key")} <= dropped  # fmt: skip
    assert all(d["index"] == 1 for d in document["dropped"])
    [unknown] = [d for d in document["dropped"] if d["reason"] == "unknown_key"]
    assert unknown["key"] == "shoe_size"
    assert "44" not in json.dumps(document["dropped"])  # values never appear


def test_routing_and_request_fields_are_resolved_at_the_top_level() -> None:
    body = {"data": [make_event()], "pixel_id": "42", "test_event_code": "TEST9", "upload_tag": "pos-2026-11"}
    document, _ = cli.check(json.dumps(body), NOW)
    assert (document["pixel_id"], document["test_event_code"], document["upload_tag"]) == ("42", "TEST9", "pos-2026-11")
    assert document["warnings"] == []


def test_without_a_pixel_id_the_defaults_are_used_and_a_missing_one_is_warned() -> None:
    document, _ = cli.check(json.dumps(make_event()), NOW, default_pixel_id="777", default_test_event_code="T1")
    assert (document["pixel_id"], document["test_event_code"]) == ("777", "T1")
    document, _ = cli.check(json.dumps(make_event()), NOW)
    assert document["pixel_id"] is None
    assert {"index": None, "warning": "no_pixel_id"} in document["warnings"]


def test_a_website_event_without_a_producer_event_id_is_warned() -> None:
    body = {"data": [make_event(event_id=...), make_event(), make_event(event_id=..., action_source="email")]}
    document, code = cli.check(json.dumps(body), NOW, default_pixel_id="1")
    assert code == 0
    assert document["warnings"] == [{"index": 0, "warning": "website_event_without_event_id"}]


@pytest.mark.parametrize("offset", ["Z", "+00:00", "+05:30"])
def test_an_iso_8601_event_time_is_converted_and_noted(offset: str) -> None:
    shift = {"Z": 0, "+00:00": 0, "+05:30": 5 * 3600 + 1800}[offset]
    # 10:00+05:30 is 04:30Z: the wall-clock string is later than the instant by the offset
    document, code = cli.check(json.dumps(make_event(event_time=iso(NOW - 120 + shift, offset))), NOW)
    assert code == 0
    assert document["data"][0]["event_time"] == NOW - 120
    notes = [a for a in document["adjusted"] if a["note"] != "converted"]  # currency "USD" -> "usd" is listed too
    assert notes == [{"index": 0, "note": "event_time_iso"}]


@pytest.mark.parametrize(
    "value", ["2026-09-21T14:11:20", "2026-09-21", "yesterday", "2026-09-21T14:11:20.000000000000000000000000Z"]
)
def test_an_iso_event_time_without_offset_or_unparseable_is_refused(value: str) -> None:
    document, code = cli.check(json.dumps(make_event(event_time=value)), NOW)
    assert code == 1
    assert document["rejected"] == [{"index": 0, "reason": "invalid_event_time"}]


def test_an_old_iso_event_time_is_still_too_old() -> None:
    document, _ = cli.check(json.dumps(make_event(event_time=iso(NOW - 8 * 86_400))), NOW)
    assert document["rejected"] == [{"index": 0, "reason": "event_too_old"}]


def test_unreadable_input_names_line_and_column(capsys: pytest.CaptureFixture[str]) -> None:
    out = io.StringIO()
    code = cli.main(["check", "-"], io.StringIO('{"data": [\n  {"event_name": "Lead" "x": 1}\n]}'), out)
    assert (code, out.getvalue()) == (2, "")
    assert "line 2 column 25" in capsys.readouterr().err  # the second key, after a missing comma


def test_the_allow_list_holds_every_server_event_parameter_meta_documents() -> None:
    # shared/spec/meta-capi.md A3 (Meta's server event parameters, incl. business messaging and the SDK's)
    documented = {
        "event_name", "event_time", "user_data", "custom_data", "event_source_url", "opt_out", "event_id",
        "action_source", "data_processing_options", "data_processing_options_country",
        "data_processing_options_state", "referrer_url", "customer_segmentation", "original_event_data",
        "app_data", "messaging_channel", "advanced_measurement_table", "attribution_data", "messaging_outcome_data",
    }  # fmt: skip
    assert documented <= KNOWN_EVENT_KEYS
    event = make_event(referrer_url="https://shop.example.com/", customer_segmentation="new_customer_to_business",
                       original_event_data={"event_name": "Purchase", "event_time": NOW - 3600})  # fmt: skip
    document, _ = cli.check(json.dumps(event), NOW)
    assert document["dropped"] == []
    assert document["data"][0]["referrer_url"] == "https://shop.example.com/"


# -------------------------------------------------------------------------------------------- the relay
class _Capture:
    """Consumes what the relay produces and reports every event accepted (the relay acknowledges only what
    the report proves: issue 17) (unit test only)."""

    config = DeliveryConfig()

    def __init__(self) -> None:
        self.outbound: list[Outbound] = []

    def deliver(self, outbound: Iterable[Outbound], deadline: float, **_: Any) -> DeliveryReport:
        taken = list(outbound)
        self.outbound.extend(taken)
        return DeliveryReport(accepted={(o.message_id, o.position) for o in taken})


def sqs_record(body: dict[str, Any]) -> dict[str, Any]:
    return {"messageId": "m-1", "receiptHandle": "rh", "body": json.dumps(body),
            "attributes": {"ApproximateReceiveCount": "1", "SentTimestamp": str(NOW * 1000)},
            "messageAttributes": {}, "eventSource": "aws:sqs",
            "eventSourceARN": "arn:aws:sqs:eu-west-1:123456789012:events"}  # fmt: skip


def relay_with_capture() -> tuple[Relay, _Capture]:
    capture = _Capture()
    settings = settings_from_env({"ACCESS_TOKEN_SECRET_ID": "s", "PIXEL_ID": "111"})
    return Relay(settings, cast(Deliverer, capture), wall_clock=lambda: float(NOW)), capture


def test_the_relay_passes_request_fields_to_every_outbound_event() -> None:
    relay, capture = relay_with_capture()
    body = {"data": [make_event(), make_event(event_id="o-2")], "upload_source": "pos", "partner_agent": "kit"}
    summary = relay.process({"Records": [sqs_record(body)]})
    assert summary.records_delivered == 1
    assert [o.request_fields for o in capture.outbound] == [(("partner_agent", "kit"), ("upload_source", "pos"))] * 2


def test_the_relay_logs_dropped_values_at_debug_and_counts_unknown_keys(caplog: pytest.LogCaptureFixture) -> None:
    relay, _ = relay_with_capture()
    event = with_user_data(make_event(), ph="(650) 12")
    event["shoe_size"] = 44
    with caplog.at_level(logging.DEBUG, logger="capi_relay.relay"):
        summary = relay.process({"Records": [sqs_record(event)]})
    assert summary.fields_dropped[("event", "unknown_key")] == 1
    [line] = [r for r in caplog.records if r.getMessage() == "values dropped"]
    assert line.levelno == logging.DEBUG
    assert line.__dict__["event_index"] == 0
    assert {"field": "ph", "reason": "invalid_phone"} in line.__dict__["dropped"]
    assert "(650)" not in caplog.text
