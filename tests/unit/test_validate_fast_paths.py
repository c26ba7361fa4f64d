"""The shortcuts validation takes for the usual event decide as its general rules do (issue 21 item 1).

Each shortcut in ``prepare/events.py`` answers only the common shape and hands everything else to the general
check; these properties generate values around each shortcut's edges and compare what ``prepare_event`` (or
``resolve_identity``) does with the rule as the general path states it.
"""

from __future__ import annotations

import re
import sys
from typing import Any

from hypothesis import example, given
from hypothesis import strategies as st

from capi_relay.ingest.model import Drop, Prepared, Rejection
from capi_relay.prepare._tables.countries import CURRENCIES
from capi_relay.prepare.events import prepare_event, resolve_identity
from tests.factories import NOW, SETTINGS, make_event

# The general rule for event_source_url (events.py's _HTTP_URL_RE): scheme, "://", a host character.
HTTP_URL = re.compile(r"[Hh][Tt][Tt][Pp][Ss]?://[^\s/?#]")
SPACES = [chr(c) for c in range(sys.maxunicode + 1) if chr(c).isspace()]


def test_str_isspace_is_the_regex_whitespace_class_for_every_code_point() -> None:
    # the URL shortcut tests the host character with str.isspace where the regex has \s
    every = "".join(map(chr, range(sys.maxunicode + 1)))
    assert re.findall(r"\s", every) == SPACES


urls = st.builds(
    "".join,
    st.tuples(
        st.sampled_from(["", " ", "\u3000"]),
        st.sampled_from(["https://", "http://", "HTTPS://", "Https://", "https:/", "https:", "ftp://", "https//"]),
        st.one_of(st.sampled_from([*SPACES, "/", "?", "#", "a", "é", "1", "[", "\ud800", ""]), st.characters()),
        st.text(max_size=8),
    ),
)


@given(url=urls, website=st.booleans())
@example(url="https://\u00a0shop.example", website=True)
@example(url="https://\u2028x", website=False)
@example(url="https://", website=True)
@example(url=" https://a ", website=True)
def test_event_source_url_is_decided_by_the_general_rule(url: str, website: bool) -> None:
    overrides: dict[str, Any] = {} if website else {"action_source": "email"}
    event = make_event(event_source_url=url, **overrides)
    result = prepare_event(event, SETTINGS, NOW)
    text = url.strip()
    if HTTP_URL.match(text) is not None:
        if isinstance(result, Rejection):  # only a lone surrogate in the URL can still refuse the event
            assert result.reason == "invalid_unicode", (url, result)
            return
        assert result.event["event_source_url"] == text
    elif website:
        assert isinstance(result, Rejection)
        assert result.reason == ("website_invalid_event_source_url" if text else "website_missing_event_source_url")
    else:
        assert isinstance(result, Prepared), result
        assert "event_source_url" not in result.event
        assert Drop("event_source_url", "invalid_url") in result.drops


padding = st.sampled_from(["", " ", "\t", "\n", "\u3000"])
event_ids = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False),
    st.builds("{}{}{}".format, padding, st.text(max_size=6), padding),
    st.lists(st.integers(), max_size=2),
)


def _general_event_id(raw: Any) -> str | None:
    """resolve_identity's rule: an integer as its decimal string, a string stripped, anything else unusable."""
    if isinstance(raw, int) and not isinstance(raw, bool):
        return str(raw)
    return raw.strip() or None if isinstance(raw, str) else None


@given(event_id=event_ids)
@example(event_id=" order-1 ")
@example(event_id=" ")
def test_the_event_id_is_resolved_and_sent_by_the_general_rule(event_id: Any) -> None:
    event = make_event(event_id=event_id)
    found = resolve_identity("1234", event, NOW)
    result = prepare_event(event, SETTINGS, NOW, default_event_id=found.event_id if found.derived else None)
    if event_id is None:
        assert found.derived
        assert found.event_id is not None
        assert found.event_id.startswith("cr1-")
        assert isinstance(result, Prepared)
        assert result.event["event_id"] == found.event_id
        return
    assert not found.derived
    assert found.event_id == _general_event_id(event_id)
    if found.event_id is None:
        assert isinstance(result, Rejection)
        assert result.reason == "invalid_event_id"
    else:
        assert isinstance(result, Prepared)
        assert result.event["event_id"] == found.event_id


num_items = st.one_of(
    st.integers(),
    st.booleans(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.builds(str, st.integers()),
    st.sampled_from([" 3 ", "2.5", "", "x", None, [1]]),
)


@given(count=num_items)
@example(count=True)
@example(count=-1)
@example(count=0)
def test_num_items_is_typed_by_the_general_rule(count: Any) -> None:
    result = prepare_event(make_event(custom_data={"value": 1, "currency": "USD", "num_items": count}), SETTINGS, NOW)
    assert isinstance(result, Prepared), result
    custom = result.event["custom_data"]
    if count is None:
        assert custom["num_items"] is None
        return
    text = count.strip() if isinstance(count, str) else None
    expected = (
        count if isinstance(count, int) and not isinstance(count, bool)
        else int(text) if text is not None and re.fullmatch(r"[+-]?[0-9]+", text)
        else None
    )  # fmt: skip
    if expected is None or expected < 0:
        assert "num_items" not in custom
        assert result.drops == [Drop("custom_data.num_items", "not_an_integer")]
    else:
        assert custom["num_items"] == expected
        assert type(custom["num_items"]) is int
        assert not result.drops


def test_date_notes_follow_the_event_time_notes_each_order_once() -> None:
    event = make_event(event_time=(NOW - 60) * 1000)
    event["user_data"] = {**event["user_data"], "country": "DE", "db": ["03/04/1990", "05/06/1991", "07/08/1992"]}
    result = prepare_event(event, SETTINGS, NOW)
    assert isinstance(result, Prepared)
    assert result.notes == ["event_time_ms", "db_read_dmy_by_country"]


currencies = st.one_of(
    st.builds(
        "{}{}{}".format,
        padding,
        st.sampled_from(sorted(CURRENCIES)).flatmap(
            lambda code: st.sampled_from([code, code.upper(), code.title(), code[:2], code + "x"])
        ),
        padding,
    ),
    st.text(max_size=4),
    st.sampled_from(["\u212aes", "\u212aES", "ＵＳＤ", "usd\x00", 840, True, ["USD"], {"code": "USD"}]),
)


@given(currency=currencies)
@example(currency="USD")
@example(currency=" eur ")
def test_the_currency_is_decided_by_the_general_rule(currency: Any) -> None:
    # the rule: the stripped, lowercased string is an ISO 4217 code (CURRENCIES); anything else refuses the event
    result = prepare_event(make_event(custom_data={"value": 1, "currency": currency}), SETTINGS, NOW)
    code = currency.strip().lower() if isinstance(currency, str) else None
    if code in CURRENCIES:
        assert isinstance(result, Prepared), result
        assert result.event["custom_data"]["currency"] == code
    else:
        assert isinstance(result, Rejection)
        assert result.reason == "invalid_currency"
