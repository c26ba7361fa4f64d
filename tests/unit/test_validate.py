"""Event-level rules (validate.prepare_event): one case per rejection reason code, and the notes the relay
counts (ms conversion, clamping, defaulting, derived fbc), unknown keys, custom_data conversions."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from itertools import combinations
from typing import Any

import pytest

from capi_relay.ingest.envelope import MAX_MESSAGE_BYTES, EnvelopeError, parse_body
from capi_relay.ingest.model import Drop, Prepared, Rejection
from capi_relay.prepare._tables.countries import CURRENCIES
from capi_relay.prepare.events import DEFAULT_MAX_EVENT_BYTES, MATCH_KEYS, REASONS, match_key_count, prepare_event
from tests.factories import NOW, SETTINGS, make_event, with_user_data

DAY = 86_400
APP_DATA = {"advertiser_tracking_enabled": 1, "extinfo": ["a2", "com.example", "1.0"] + [""] * 13}


def prepared(raw: Any, **kwargs: Any) -> Prepared:
    result = prepare_event(raw, SETTINGS, NOW, **kwargs)
    assert isinstance(result, Prepared), result
    return result


def rejected(raw: Any, **kwargs: Any) -> Rejection:
    result = prepare_event(raw, SETTINGS, NOW, **kwargs)
    assert isinstance(result, Rejection), result
    return result


def _minimal(**user_data: Any) -> dict[str, Any]:
    """A non-web event carrying only the given user_data."""
    return make_event(action_source="email", event_source_url=..., user_data=user_data)


def _custom(**custom_data: Any) -> dict[str, Any]:
    return make_event(custom_data=custom_data)


def _app(**app_data: Any) -> dict[str, Any]:
    return make_event(action_source="app", event_source_url=..., app_data=APP_DATA | app_data)


WHATSAPP_IDS = {"whatsapp_business_account_id": "102290129340398", "ctwa_clid": "ARAkLkA8rmlFeiCktEJQ-QTwRiyYHAFDLM"}


def _messaging(channel: Any, **ids: Any) -> dict[str, Any]:
    """A business messaging event on ``channel`` carrying WhatsApp's ids (``...`` removes one)."""
    event = make_event(action_source="business_messaging", event_source_url=..., messaging_channel=channel,
                       user_data=dict(WHATSAPP_IDS))  # fmt: skip
    return with_user_data(event, **ids)


# reason -> an event that must be rejected with exactly that reason (and only for that reason)
REJECTIONS: dict[str, list[Callable[[], Any]]] = {
    "not_an_object": [lambda: [make_event()], lambda: "Purchase", lambda: None],
    "missing_event_name": [lambda: make_event(event_name=...), lambda: make_event(event_name="  "),
                           lambda: make_event(event_name=42)],
    "missing_event_time": [lambda: make_event(event_time=...), lambda: make_event(event_time=None)],
    "invalid_event_time": [lambda: make_event(event_time="yesterday"), lambda: make_event(event_time=True),
                           lambda: make_event(event_time=-5), lambda: make_event(event_time=0),
                           lambda: make_event(event_time={"s": NOW}), lambda: make_event(event_time=float("nan"))],
    "event_too_old": [lambda: make_event(event_time=NOW - 7 * DAY - 1),
                      lambda: make_event(event_time=(NOW - 8 * DAY) * 1000),
                      lambda: make_event(action_source="physical_store", event_source_url=...,
                                         event_time=NOW - 62 * DAY - 1)],
    "event_in_future": [lambda: make_event(event_time=NOW + 301), lambda: make_event(event_time=(NOW + 3600) * 1000),
                        lambda: make_event(event_time=10**15)],  # microseconds: still far future after /1000
    "missing_action_source": [lambda: make_event(action_source=...)],
    "invalid_action_source": [lambda: make_event(action_source="web"), lambda: make_event(action_source="WEBSITE"),
                              lambda: make_event(action_source=["website"])],
    "website_missing_event_source_url": [lambda: make_event(event_source_url=...),
                                         lambda: make_event(event_source_url=" ")],
    "website_missing_user_agent": [lambda: with_user_data(make_event(), client_user_agent=...),
                                   lambda: with_user_data(make_event(), client_user_agent="   ")],
    "app_missing_app_data": [lambda: make_event(action_source="app"),
                             lambda: make_event(action_source="app", app_data={"extinfo": APP_DATA["extinfo"]}),
                             lambda: make_event(action_source="app", app_data={"advertiser_tracking_enabled": 1}),
                             lambda: make_event(action_source="app", app_data="yes")],
    "missing_user_data": [lambda: make_event(user_data=...), lambda: make_event(user_data=None),
                          lambda: make_event(user_data=["em"])],
    "no_usable_identifier": [_minimal, lambda: _minimal(em="not-an-email", ph="12", zp="1"),
                             lambda: _minimal(email="a@b.com")],
    "insufficient_customer_information": [
        lambda: _minimal(ct="Menlo Park", st="CA", zp="94025", country="US", ge="m", client_user_agent="UA"),
        lambda: _minimal(db="1990-12-31", client_user_agent="UA"),
        lambda: _minimal(fn="John", ge="m"),
        lambda: _minimal(ln="Smith", ge="f"),
        lambda: _minimal(country="US"),
        lambda: _minimal(fn="John", ge="m", em="bad-email"),  # what survives normalization counts
        lambda: make_event(user_data={"client_user_agent": "UA", "zp": "94025"}),
    ],
    "invalid_custom_data": [lambda: make_event(custom_data=[1, 2]), lambda: make_event(custom_data="x")],
    "missing_value": [lambda: make_event(custom_data=...), lambda: _custom(currency="USD"),
                      lambda: _custom(value=None, currency="USD")],
    "invalid_value": [lambda: _custom(value="12,50", currency="USD"), lambda: _custom(value="ten", currency="USD"),
                      lambda: _custom(value=True, currency="USD"), lambda: _custom(value="nan", currency="USD"),
                      lambda: _custom(value="1_000", currency="USD"), lambda: _custom(value=[1], currency="USD"),
                      lambda: _custom(value="1e999", currency="USD")],
    "invalid_currency": [lambda: _custom(value=1, currency="US"), lambda: _custom(value=1, currency="dollars"),
                         lambda: _custom(value=1, currency="XYZ"), lambda: _custom(value=1, currency=840),
                         lambda: _custom(value=1, currency="U$D")],
    "missing_currency": [lambda: _custom(value=10)],
    "website_invalid_event_source_url": [lambda: make_event(event_source_url="shop.example.com/checkout"),
                                         lambda: make_event(event_source_url="ftp://shop.example.com/"),
                                         lambda: make_event(event_source_url="javascript:alert(1)"),
                                         lambda: make_event(event_source_url="https://")],
    "invalid_app_data": [lambda: _app(extinfo=["a2"] + [""] * 14),  # 15 values
                         lambda: _app(extinfo=["a2"] + [""] * 16),  # 17 values
                         lambda: _app(extinfo=["a1"] + [""] * 15),  # Meta's current versions are a2 / i2
                         lambda: _app(extinfo=["A2"] + [""] * 15),
                         lambda: _app(extinfo=["i2"] + [""] * 14 + [{"tz": "UTC"}]),
                         lambda: _app(extinfo=["i2"] + [""] * 14 + [True]),
                         lambda: _app(extinfo="a2,com.example"),
                         lambda: _app(advertiser_tracking_enabled=2),
                         lambda: _app(advertiser_tracking_enabled="yes"),
                         lambda: _app(advertiser_tracking_enabled=None)],
    "invalid_messaging_channel": [lambda: _messaging(None), lambda: _messaging("sms"),
                                  lambda: _messaging(["whatsapp"])],
    "business_messaging_missing_ids": [
        lambda: _messaging("whatsapp", ctwa_clid=...),
        lambda: _messaging("whatsapp", ctwa_clid=..., page_id="1122334455"),
        lambda: _messaging("messenger", whatsapp_business_account_id=..., ctwa_clid=..., page_id="1122334455"),
        lambda: _messaging("instagram", ig_account_id="17841400000000000"),
    ],
    "invalid_data_processing_options": [
        lambda: make_event(data_processing_options=["ldu"]),
        lambda: make_event(data_processing_options="LDU"),
        lambda: make_event(data_processing_options=["LDU", "X"]),
        lambda: make_event(data_processing_options=["LDU"], data_processing_options_country=2),
        lambda: make_event(data_processing_options=["LDU"], data_processing_options_country=1,
                           data_processing_options_state=6),
        lambda: make_event(data_processing_options=["LDU"], data_processing_options_country=True),
        lambda: make_event(data_processing_options_country=1),  # without data_processing_options
    ],
    "invalid_event_id": [lambda: make_event(event_id=""), lambda: make_event(event_id=["a"]),
                         lambda: make_event(event_id=1.5)],
    "non_finite_number": [lambda: make_event(custom_data={"value": 1, "currency": "USD",
                                                          "score": float("inf")}),
                          lambda: make_event(original_event_data={"event_time": float("nan")})],
    "invalid_unicode": [lambda: make_event(event_name="Purchase\ud800"),
                        lambda: _custom(value=1, currency="USD", content_name="x\udfff")],
    "event_too_large": [lambda: _custom(value=1, currency="USD", description="x" * DEFAULT_MAX_EVENT_BYTES),
                        lambda: _custom(value=1, currency="USD", contents=[{"id": "é" * 1_100_000, "quantity": 1}])],
}  # fmt: skip


def test_every_reason_code_has_cases_and_every_case_names_a_known_code() -> None:
    assert set(REJECTIONS) == set(REASONS)
    assert len(REASONS) == len(set(REASONS))


CASES = [(reason, i, factory) for reason, factories in REJECTIONS.items() for i, factory in enumerate(factories)]


@pytest.mark.parametrize(("reason", "i", "factory"), CASES, ids=[f"{r}-{i}" for r, i, _ in CASES])
def test_rejection_reason(reason: str, i: int, factory: Callable[[], Any]) -> None:
    # Given an event that breaks one rule / When it is prepared / Then it is rejected with that reason
    result = rejected(factory())
    assert result.reason == reason
    assert result.detail  # a human-readable explanation, for logs and the CLI's stderr


def test_the_base_event_is_valid_and_fully_hashed() -> None:
    # Given the factory's event (raw PII) / When prepared
    result = prepared(make_event())
    user_data = result.event["user_data"]
    # Then every hashed field is a hash of the normalized value, the rest untouched
    assert user_data["em"] == hashlib.sha256(b"john_smith@gmail.com").hexdigest()
    assert user_data["ph"] == hashlib.sha256(b"16505551212").hexdigest()
    # "California" in the US: the code, then the full-name form of Meta's Java/Ruby SDKs (a variant)
    assert user_data["st"] == [hashlib.sha256(b"ca").hexdigest(), hashlib.sha256(b"california").hexdigest()]
    assert user_data["zp"] == hashlib.sha256(b"94025").hexdigest()
    assert user_data["client_ip_address"] == "203.0.113.7"
    assert result.event["custom_data"] == {"value": 42.5, "currency": "usd"}
    assert result.drops == []
    assert result.notes == []
    assert result.match_keys == 5  # em, ph, external_id, fbp, and IP+UA together count as one


# ------------------------------------------------------------------ event_time window and notes
@pytest.mark.parametrize(
    ("event_time", "expected", "notes"),
    [
        (NOW - 60, NOW - 60, []),
        (NOW, NOW, []),
        (float(NOW - 60) + 0.9, NOW - 60, []),  # fractional seconds truncated
        (str(NOW - 60), NOW - 60, []),  # a numeric string
        ((NOW - 60) * 1000 + 123, NOW - 60, ["event_time_ms"]),  # >= 10^11: milliseconds
        (10**11, 10**8, None),  # the threshold itself is ms -> 1973: too old
        (NOW + 1, NOW, ["event_time_clamped"]),
        (NOW + 300, NOW, ["event_time_clamped"]),  # 5 minutes of skew: clamped
        ((NOW + 120) * 1000, NOW, ["event_time_ms", "event_time_clamped"]),
        (NOW - 7 * DAY, NOW - 7 * DAY, []),  # exactly 7 days: still accepted
    ],
)
def test_event_time(event_time: Any, expected: int, notes: list[str] | None) -> None:
    result = prepare_event(make_event(event_time=event_time), SETTINGS, NOW)
    if notes is None:
        assert isinstance(result, Rejection)
        assert result.reason == "event_too_old"
        return
    assert isinstance(result, Prepared)
    assert result.event["event_time"] == expected
    assert isinstance(result.event["event_time"], int)
    assert result.notes == notes


def test_physical_store_events_may_be_62_days_old() -> None:
    event = make_event(action_source="physical_store", event_source_url=..., event_time=NOW - 62 * DAY)
    assert prepared(event).event["event_time"] == NOW - 62 * DAY
    assert rejected(make_event(event_time=NOW - 8 * DAY)).reason == "event_too_old"


def test_a_missing_event_time_is_defaulted_when_a_default_is_given() -> None:
    # Given no event_time and the SQS SentTimestamp as the default (what relay.py passes)
    result = prepared(make_event(event_time=...), default_event_time=NOW - 30)
    # Then the default is used and counted
    assert result.event["event_time"] == NOW - 30
    assert result.notes == ["event_time_defaulted"]


def test_a_defaulted_event_time_is_still_checked_against_the_window() -> None:
    assert rejected(make_event(event_time=...), default_event_time=NOW - 8 * DAY).reason == "event_too_old"


# ------------------------------------------------------------------ derived fbc
def test_fbc_is_derived_from_fbclid_when_absent() -> None:
    event = make_event(event_source_url="https://shop.example.com/p?utm_source=fb&fbclid=IwAR2F4-dbP0l7Mn_x")
    result = prepared(event)
    assert result.event["user_data"]["fbc"] == f"fb.1.{(NOW - 60) * 1000}.IwAR2F4-dbP0l7Mn_x"  # case kept
    assert result.notes == ["fbc_derived"]
    # deterministic across retries
    assert prepared(event).event["user_data"]["fbc"] == result.event["user_data"]["fbc"]


def test_fbc_uses_the_converted_event_time() -> None:
    event = make_event(event_time=(NOW - 60) * 1000, event_source_url="https://x.example/?fbclid=AbC")
    assert prepared(event).event["user_data"]["fbc"] == f"fb.1.{(NOW - 60) * 1000}.AbC"


def test_an_existing_fbc_is_never_replaced() -> None:
    fbc = "fb.1.1554763741205.Original"
    event = with_user_data(make_event(event_source_url="https://x.example/?fbclid=Other"), fbc=fbc)
    result = prepared(event)
    assert result.event["user_data"]["fbc"] == fbc
    assert "fbc_derived" not in result.notes


def test_a_malformed_fbc_is_dropped_and_replaced_by_the_derived_one() -> None:
    event = with_user_data(make_event(event_source_url="https://x.example/?fbclid=AbC"), fbc="garbage")
    result = prepared(event)
    assert result.event["user_data"]["fbc"] == f"fb.1.{(NOW - 60) * 1000}.AbC"
    assert Drop("fbc", "invalid_format") in result.drops


@pytest.mark.parametrize(
    "url",
    ["https://x.example/?fbclid=", "https://x.example/?fbclid=has%20space", "https://x.example/?xfbclid=AbC",
     "https://x.example/#fbclid=AbC", "https://x.example/p"],
)  # fmt: skip
def test_no_fbc_without_a_usable_fbclid(url: str) -> None:
    result = prepared(make_event(event_source_url=url))
    assert "fbc" not in result.event["user_data"]


# ------------------------------------------------------------------ keys, custom_data, the rest
def test_unknown_top_level_keys_are_dropped_and_counted() -> None:
    result = prepared(make_event(pixel_id="123", user_email="a@b.com"))
    assert "pixel_id" not in result.event
    assert "user_email" not in result.event
    assert result.drops == [Drop("event", "unknown_key"), Drop("event", "unknown_key")]


def test_unknown_user_data_keys_and_bad_values_are_dropped_but_the_event_is_sent() -> None:
    event = with_user_data(make_event(), email="x@y.com", ph="call me", ge="other")
    result = prepared(event)
    assert {"email", "ph", "ge"}.isdisjoint(result.event["user_data"])
    assert sorted(result.drops, key=repr) == [Drop("ge", "invalid_gender"), Drop("ph", "invalid_phone"),
                                              Drop("user_data", "unknown_key")]  # fmt: skip


@pytest.mark.parametrize(
    ("value", "expected"),
    [("12.50", 12.5), ("12", 12), (" 7 ", 7), ("1e3", 1000), ("-3.5", -3.5), (0, 0), (19.99, 19.99), ("0.0", 0.0)],
)
def test_numeric_value_strings_are_converted(value: Any, expected: float) -> None:
    result = prepared(_custom(value=value, currency="EUR"))
    assert result.event["custom_data"]["value"] == expected
    assert type(result.event["custom_data"]["value"]) is type(expected)


def test_currency_is_an_iso_4217_code_in_any_case_and_is_sent_lower_case() -> None:
    for code in ("USD", "usd", " Eur ", "JPY"):
        assert prepared(_custom(value=1, currency=code)).event["custom_data"]["currency"] == code.strip().lower()


def test_custom_data_is_optional_for_other_events_and_custom_keys_are_kept() -> None:
    assert "custom_data" not in prepared(make_event(event_name="Lead", custom_data=...)).event
    custom = {"value": "3", "currency": "gbp", "order_id": "A1", "my_key": {"nested": [1, 2]},
              "contents": [{"id": "sku-1", "quantity": 2, "item_price": 9.5}]}  # fmt: skip
    result = prepared(make_event(custom_data=custom))
    assert result.event["custom_data"] == {**custom, "value": 3}


@pytest.mark.parametrize(
    "options",
    [{"data_processing_options": []}, {"data_processing_options": ["LDU"]},
     {"data_processing_options": ["LDU"], "data_processing_options_country": 1, "data_processing_options_state": 1000},
     {"data_processing_options": ["LDU"], "data_processing_options_country": 0, "data_processing_options_state": 0}],
)  # fmt: skip
def test_valid_data_processing_options(options: dict[str, Any]) -> None:
    result = prepared(make_event(**options))
    for key, value in options.items():
        assert result.event[key] == value


def test_app_events_with_app_data_are_valid() -> None:
    event = make_event(action_source="app", event_source_url=..., app_data=APP_DATA)
    assert prepared(event).event["app_data"] == APP_DATA


def test_event_name_action_source_and_event_id_are_trimmed_and_an_int_event_id_becomes_a_string() -> None:
    result = prepared(make_event(event_name=" Purchase ", action_source=" website ", event_id=1001))
    assert (result.event["event_name"], result.event["action_source"], result.event["event_id"]) == (
        "Purchase",
        "website",
        "1001",
    )


def test_a_prepared_event_serializes_as_strict_json() -> None:
    result = prepared(make_event())
    assert json.loads(json.dumps(result.event, allow_nan=False)) == result.event


def test_the_raw_event_is_not_mutated() -> None:
    event = make_event(event_source_url="https://x.example/?fbclid=AbC")
    before = json.dumps(event, sort_keys=True)
    prepared(event)
    assert json.dumps(event, sort_keys=True) == before


# ------------------------------------------------------------------------------------------ size caps
def test_an_event_just_under_the_byte_cap_is_prepared_and_the_cap_can_be_lowered() -> None:
    base = prepared(make_event())
    room = DEFAULT_MAX_EVENT_BYTES - len(base.encoded) - len(',"description":""')
    big = prepared(make_event(custom_data={"value": 42.5, "currency": "USD", "description": "x" * room}))
    assert len(big.encoded) == DEFAULT_MAX_EVENT_BYTES
    result = prepare_event(make_event(), SETTINGS, NOW, max_event_bytes=len(base.encoded) - 1)
    assert isinstance(result, Rejection)
    assert result.reason == "event_too_large"


def test_a_field_value_over_its_cap_is_dropped_as_too_long_not_the_event() -> None:
    result = prepared(with_user_data(make_event(), ph="5" * 10_000, fbp="fb.1." + "1" * 5000))
    assert Drop("ph", "too_long") in result.drops
    assert Drop("fbp", "too_long") in result.drops
    assert "ph" not in result.event["user_data"]
    assert "em" in result.event["user_data"]
    rejection = rejected(with_user_data(make_event(), client_user_agent="U" * 5000))
    assert rejection.reason == "website_missing_user_agent"  # a website event needs its (capped) user agent


@pytest.mark.parametrize("body", ["x" * (MAX_MESSAGE_BYTES + 1), "é" * (MAX_MESSAGE_BYTES // 2 + 1)])
def test_a_message_body_over_the_cap_is_refused_before_it_is_parsed(body: str) -> None:
    with pytest.raises(EnvelopeError) as caught:
        parse_body(body)
    assert caught.value.reason == "message_too_large"


def test_a_message_body_at_the_cap_is_parsed() -> None:
    body = json.dumps({"pixel_id": "123", "data": [make_event()]})
    body = body[:-1] + " " * (MAX_MESSAGE_BYTES - len(body)) + "}"
    assert len(body) == MAX_MESSAGE_BYTES
    assert len(parse_body(body).events) == 1


def test_no_rejected_customer_information_set_holds_a_match_key() -> None:
    # _prepare skips the subset test for events with a match key: that is only right while this holds.
    from capi_relay.prepare.events import _REJECTED_SETS, MATCH_KEYS

    assert all(rejected.isdisjoint({*MATCH_KEYS, "client_ip_address"}) for rejected in _REJECTED_SETS)


# ---------------------------------------------------------------- parameters as Meta documents them (issue 18)
# An invalid value the event can do without is dropped with its field and reason; the event is still sent.
LEAD_ID = "1234567890123456"
DROPS: list[tuple[dict[str, Any], str, str]] = [
    (make_event(action_source="email", event_source_url="www.shop.example/p"), "event_source_url", "invalid_url"),
    (make_event(action_source="email", event_source_url="mailto:shop@example.com"), "event_source_url",
     "invalid_url"),
    (make_event(opt_out="true"), "opt_out", "bad_type"),
    (make_event(opt_out=1), "opt_out", "bad_type"),
    (_custom(value=1, currency="USD", predicted_ltv="lots"), "custom_data.predicted_ltv", "not_a_number"),
    (_custom(value=1, currency="USD", net_revenue="1,5"), "custom_data.net_revenue", "not_a_number"),
    (make_event(event_name="Lead", custom_data={"value": "ten"}), "custom_data.value", "not_a_number"),
    (_custom(value=1, currency="USD", num_items="2.5"), "custom_data.num_items", "not_an_integer"),
    (_custom(value=1, currency="USD", num_items=-1), "custom_data.num_items", "not_an_integer"),
    (_custom(value=1, currency="USD", delivery_category="drone"), "custom_data.delivery_category",
     "invalid_delivery_category"),
    (_custom(value=1, currency="USD", contents={"id": "a", "quantity": 1}), "custom_data.contents",
     "invalid_contents"),
    (_custom(value=1, currency="USD", contents=[{"id": "a"}]), "custom_data.contents", "invalid_contents"),
    (_custom(value=1, currency="USD", contents=[{"quantity": 1}]), "custom_data.contents", "invalid_contents"),
    (_custom(value=1, currency="USD", contents=[{"id": "", "quantity": 1}]), "custom_data.contents",
     "invalid_contents"),
    (_custom(value=1, currency="USD", contents=[{"id": "a", "quantity": 1.5}]), "custom_data.contents",
     "invalid_contents"),
    (_custom(value=1, currency="USD", contents=["sku-1"]), "custom_data.contents", "invalid_contents"),
    (_custom(value=1, currency="USD", contents=[{"id": "a", "quantity": 1, "item_price": "cheap"}]),
     "custom_data.contents.item_price", "not_a_number"),
    (_custom(value=1, currency="USD", contents=[{"id": "a", "quantity": 1, "delivery_category": "pigeon"}]),
     "custom_data.contents.delivery_category", "invalid_delivery_category"),
    (make_event(app_data={"advertiser_tracking_enabled": 1, "extinfo": ["a2"]}), "app_data", "invalid_app_data"),
    (make_event(messaging_channel="whatsapp"), "messaging_channel", "not_business_messaging"),
    (with_user_data(make_event(), lead_id="12345"), "lead_id", "invalid_lead_id"),
    (with_user_data(make_event(), lead_id=12345678901234567), "lead_id", "invalid_lead_id"),
    (with_user_data(make_event(), lead_id="1234567890123456.0"), "lead_id", "invalid_lead_id"),
]  # fmt: skip


@pytest.mark.parametrize(("event", "field", "reason"), DROPS, ids=[f"{f}-{r}-{i}" for i, (_, f, r) in enumerate(DROPS)])
def test_an_invalid_optional_parameter_is_dropped_with_its_reason_and_the_event_sent(
    event: dict[str, Any], field: str, reason: str
) -> None:
    result = prepared(event)
    assert Drop(field, reason) in result.drops
    key = field.rsplit(".", maxsplit=1)[-1]
    holder = result.event.get("custom_data", {}) if field.startswith("custom_data.") else result.event
    if field.startswith("custom_data.contents."):
        holder = result.event["custom_data"]["contents"][0]
    if field == "lead_id":
        holder = result.event["user_data"]
    assert key not in holder


def test_numeric_custom_data_strings_are_converted_as_meta_types_them() -> None:
    # Meta's SDK sends Content.quantity as given (its type says str); value, predicted_ltv, net_revenue numbers
    item = {"id": "sku-1", "quantity": "2", "item_price": "4.99", "delivery_category": "curbside"}
    custom = {"value": "12.50", "currency": "EUR", "predicted_ltv": "100", "net_revenue": " 3.5 ", "num_items": "3",
              "delivery_category": " Home_Delivery ", "contents": [item]}  # fmt: skip
    result = prepared(_custom(**custom))
    assert result.event["custom_data"] == {
        "value": 12.5, "currency": "eur", "predicted_ltv": 100, "net_revenue": 3.5, "num_items": 3,
        "delivery_category": "home_delivery",
        "contents": [{"id": "sku-1", "quantity": 2, "item_price": 4.99, "delivery_category": "curbside"}],
    }  # fmt: skip
    assert result.drops == []


@pytest.mark.parametrize("url", ["https://shop.example.com/checkout?x=1", "http://localhost:8080/", "HTTPS://A.B",
                                 " https://shop.example.com/ "])  # fmt: skip
def test_an_http_event_source_url_is_kept_trimmed(url: str) -> None:
    assert prepared(make_event(event_source_url=url)).event["event_source_url"] == url.strip()


def test_opt_out_booleans_are_kept() -> None:
    assert prepared(make_event(opt_out=True)).event["opt_out"] is True
    assert prepared(make_event(opt_out=False)).event["opt_out"] is False


def test_extinfo_as_metas_sdk_writes_it_is_accepted_with_missing_values_as_empty_strings() -> None:
    # facebook_business ExtendedDeviceInfo.normalize(): 16 positions, None where unset, ints for screen/cores/disk
    extinfo = ["i2", "com.example.app", "771", "Version 7.7.1", "17.0", "iPhone15,2", "en_US", "GMT-1", None, 1179,
               2556, "3.0", 6, 128, 32, "America/New_York"]  # fmt: skip
    event = make_event(action_source="app", event_source_url=...,
                       app_data={"advertiser_tracking_enabled": True, "extinfo": extinfo})  # fmt: skip
    sent = prepared(event).event["app_data"]["extinfo"]
    assert len(sent) == 16
    assert sent[8] == ""
    assert sent[:8] == extinfo[:8]
    assert sent[9:] == extinfo[9:]


@pytest.mark.parametrize(
    ("channel", "ids"),
    [("whatsapp", WHATSAPP_IDS), (" WhatsApp ", WHATSAPP_IDS), ("whatsapp", {"ctwa_clid": "ARAkLkA8rmlFeiCk"}),
     ("messenger", {"page_id": "1122334455", "page_scoped_user_id": "7788990011"}),
     ("instagram", {"ig_account_id": "17841400000000000", "ig_sid": "1234567890"})],
)  # fmt: skip
def test_business_messaging_events_with_their_channels_ids_are_sent(channel: str, ids: dict[str, str]) -> None:
    event = make_event(action_source="business_messaging", event_source_url=..., messaging_channel=channel,
                       user_data=ids)  # fmt: skip
    result = prepared(event)
    assert result.event["messaging_channel"] == channel.strip().lower()
    assert result.event["user_data"] == ids


@pytest.mark.parametrize("lead_id", [LEAD_ID, " 123456789012345 ", 1234567890123456])
def test_a_lead_id_of_15_or_16_digits_is_sent_as_given(lead_id: Any) -> None:
    event = make_event(action_source="system_generated", event_source_url=..., user_data={"lead_id": lead_id})
    sent = prepared(event).event["user_data"]["lead_id"]
    assert sent == (lead_id.strip() if isinstance(lead_id, str) else lead_id)


def test_an_ambiguous_date_of_birth_notes_the_order_it_was_read_in() -> None:
    # 03/04/1990 is 3 April in Germany (CLDR: dd.MM.yy) and March 4 without a country (DATE_ORDER=MDY)
    de = prepared(with_user_data(make_event(), db="03/04/1990", country="DE"))
    assert de.event["user_data"]["db"] == hashlib.sha256(b"19900403").hexdigest()
    assert de.notes == ["db_read_dmy_by_country"]
    plain = prepared(with_user_data(make_event(), db="03/04/1990", country=...))
    assert plain.event["user_data"]["db"] == hashlib.sha256(b"19900304").hexdigest()
    assert plain.notes == ["db_read_mdy_by_default"]
    # not ambiguous (a part > 12, or day == month): nothing to say
    assert prepared(with_user_data(make_event(), db="13/04/1990", country="DE")).notes == []
    assert prepared(with_user_data(make_event(), db="04/04/1990", country="DE")).notes == []
    # a list of dates notes each order once
    both = prepared(with_user_data(make_event(), db=["03/04/1990", "05/06/1991"], country="DE"))
    assert both.notes == ["db_read_dmy_by_country"]


@pytest.mark.parametrize(("given", "sent"), [(1, 1), (0, 0), (True, True), ("1", 1), (" true ", 1), ("False", 0)])
def test_advertiser_tracking_enabled_is_sent_as_meta_documents_it(given: Any, sent: Any) -> None:
    result = prepared(_app(advertiser_tracking_enabled=given))
    assert result.event["app_data"]["advertiser_tracking_enabled"] == sent
    assert type(result.event["app_data"]["advertiser_tracking_enabled"]) is type(sent)


# ------------------------------------------------------------------ fast paths agree with the general rules
@pytest.mark.parametrize(
    ("event_time", "reason"),
    [
        (NOW - 7 * DAY - 1, "event_too_old"),  # one second outside the window the int fast path accepts
        (NOW + 301, "event_in_future"),
        (True, "invalid_event_time"),  # a bool is not an int here
        (0, "invalid_event_time"),
        (-5, "invalid_event_time"),
    ],
)
def test_event_times_just_outside_the_usual_window_are_still_refused(event_time: Any, reason: str) -> None:
    assert rejected(make_event(event_time=event_time)).reason == reason


def test_match_key_count_counts_every_subset_as_the_set_definition_does() -> None:
    keys = [*MATCH_KEYS, "client_ip_address", "client_user_agent", "fn"]
    for size in range(len(keys) + 1):
        for subset in combinations(keys, size):
            user_data = dict.fromkeys(subset, "x")
            expected = len(set(MATCH_KEYS) & set(subset)) + (
                "client_ip_address" in subset and "client_user_agent" in subset
            )
            assert match_key_count(user_data) == expected, subset


def test_every_currency_code_is_three_lowercase_ascii_letters() -> None:
    # custom_data.currency is accepted when its stripped, lowercased form is in CURRENCIES (no separate pattern)
    assert CURRENCIES
    assert all(len(c) == 3 and c.isascii() and c.isalpha() and c.islower() for c in CURRENCIES)
    for bad in ("US", "usdd", "u5d", "ÜSD", "us d"):
        assert rejected(_custom(value=1, currency=bad)).reason == "invalid_currency", bad
    assert prepared(_custom(value=1, currency=" USD ")).event["custom_data"]["currency"] == "usd"
