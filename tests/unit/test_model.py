"""encode_event: orjson for the common case, the standard library for everything orjson would treat
differently; the result always parses back to the event, and the refusals are the standard library's."""

from __future__ import annotations

import dataclasses
import enum
import importlib
import json
import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from capi_relay.ingest import model
from capi_relay.ingest.model import Identity, encode_event, identity
from tests.factories import make_event


def _stdlib(event: Any) -> bytes:
    return json.dumps(event, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode("utf-8")


class Colour(enum.StrEnum):
    RED = "red"


class Count(int):
    pass


@pytest.mark.parametrize(
    "event",
    [
        make_event(),
        {"event_name": "Purchase", "custom_data": {"value": 42.5, "currency": "usd", "content_ids": ["a", "b"]}},
        {"fn": "Zoë", "ct": "São Paulo", "quote": 'say "hi"\n\t\\', "control": "\x01\x1f\x7f", "sep": "\u2028"},
        {"explicit": None},  # holds null: the standard library encodes it
        {"url": "https://example.com/?q=null"},  # the word in a string: the standard library path, same bytes
        {"big": 2**70, "neg": -(2**70)},  # beyond 64 bits: orjson refuses, the standard library encodes
        {1: "int key"},  # orjson refuses non-string keys; the standard library turns them into strings
        {"enum": Colour.RED, "int_subclass": Count(3)},  # subclasses encoded as their base type
        {"tuple": (1, 2)},
    ],
)
def test_encodes_what_the_standard_library_encodes(event: dict[Any, Any]) -> None:
    encoded = encode_event(event)
    assert json.loads(encoded) == json.loads(_stdlib(event))
    assert encoded == _stdlib(event)  # the same bytes: compact, UTF-8


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_nan_and_infinity_are_refused_not_written_as_null(value: float) -> None:
    with pytest.raises(ValueError, match="JSON compliant"):
        encode_event({"custom_data": {"value": value}})
    with pytest.raises(ValueError, match="JSON compliant"):
        encode_event({"custom_data": {"contents": [{"item_price": value}]}})


def test_lone_surrogate_is_a_unicode_error() -> None:
    with pytest.raises(UnicodeEncodeError):
        encode_event({"custom_data": {"content_name": "\ud800"}})


def test_unencodable_type_is_a_type_error_as_before() -> None:
    with pytest.raises(TypeError):
        encode_event({"custom_data": {"value": object()}})


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)


@given(st.dictionaries(st.text(max_size=8), _json, max_size=6))
def test_round_trips_like_the_standard_library(event: dict[str, Any]) -> None:
    try:
        expected = _stdlib(event)
    except UnicodeEncodeError:
        with pytest.raises(UnicodeEncodeError):
            encode_event(event)
        return
    assert json.loads(encode_event(event)) == json.loads(expected)


def test_without_orjson_the_standard_library_encodes_everything(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(model, "_orjson", None)
    event = make_event()
    assert encode_event(event) == _stdlib(event)
    with pytest.raises(ValueError, match="JSON compliant"):
        encode_event({"custom_data": {"value": math.nan}})
    with pytest.raises(UnicodeEncodeError):
        encode_event({"custom_data": {"content_name": "\ud800"}})


def test_orjson_is_used_when_it_can_be_imported(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[object] = []
    real = importlib.import_module("orjson")  # a runtime dependency: installed wherever the tests run

    class Spy:
        JSONEncodeError = real.JSONEncodeError

        @staticmethod
        def dumps(obj: object, option: int = 0) -> bytes:
            calls.append(obj)
            encoded: bytes = real.dumps(obj, option=option)
            return encoded

    monkeypatch.setattr(model, "_orjson", Spy)
    event = make_event()
    assert json.loads(encode_event(event)) == event
    assert calls == [event]


def test_identity_builds_the_same_frozen_object_as_the_constructor() -> None:
    for args in (("order-1", False, None), ("cr1-" + "a" * 32, True, 1_700_000_000), (None, False, None)):
        fast, slow = identity(*args), Identity(*args)
        assert type(fast) is Identity
        assert fast == slow
        assert hash(fast) == hash(slow)
        assert repr(fast) == repr(slow)
        assert dataclasses.astuple(fast) == args
        with pytest.raises(dataclasses.FrozenInstanceError):
            fast.event_id = "other"  # type: ignore[misc]
