"""The Graph API stand-in enforces Meta's documented CAPI contract and injects faults on request.

Plain HTTP over loopback (http.client), so these tests check the wire behaviour the relay depends on."""

from __future__ import annotations

import hashlib
import http.client
import json
import socket
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest

from local.graph_standin import GraphStandIn

pytestmark = pytest.mark.integration

TOKEN = "EAAstandincontracttoken"  # a fake token for this stand-in only
PIXEL = "100000000000001"
ERROR_KEYS = {"message", "type", "code", "error_subcode", "is_transient", "error_user_title", "error_user_msg",
              "fbtrace_id"}  # fmt: skip


def h(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def event(n: int = 0, **overrides: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "event_name": "Purchase",
        "event_time": int(time.time()) - 60,
        "event_id": f"contract-{n}",
        "action_source": "website",
        "event_source_url": "https://shop.example.com/checkout",
        "user_data": {"em": h("jane@example.com"), "ph": h("15555550123"), "client_user_agent": "Mozilla/5.0",
                      "client_ip_address": "203.0.113.1", "fbp": "fb.1.1700000000000.123456"},
        "custom_data": {"value": 1.0, "currency": "usd"},
    }  # fmt: skip
    doc.update(overrides)
    return doc


class Reply:
    def __init__(self, status: int, headers: http.client.HTTPMessage, raw: bytes) -> None:
        self.status = status
        self.headers = headers
        self.raw = raw

    @property
    def json(self) -> Any:
        return json.loads(self.raw)

    @property
    def error(self) -> dict[str, Any]:
        err = self.json["error"]
        assert isinstance(err, dict)
        return err


def post(url: str, path: str, doc: Any, *, token: str | None = TOKEN, timeout: float = 5.0) -> Reply:
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=timeout)
    try:
        headers = {"Content-Type": "application/json"}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        conn.request("POST", path, body=json.dumps(doc).encode(), headers=headers)
        resp = conn.getresponse()
        return Reply(resp.status, resp.headers, resp.read())
    finally:
        conn.close()


def send(standin: GraphStandIn, events: list[Any], *, pixel: str = PIXEL, token: str | None = TOKEN,
         extra: dict[str, Any] | None = None, timeout: float = 5.0) -> Reply:  # fmt: skip
    return post(standin.url, f"/v26.0/{pixel}/events", {"data": events, **(extra or {})}, token=token,
                timeout=timeout)  # fmt: skip


@pytest.fixture
def graph() -> Iterator[GraphStandIn]:
    with GraphStandIn(tokens={TOKEN}) as server:
        yield server


def assert_rejected(reply: Reply, graph: GraphStandIn, subcode: int) -> None:
    """Whole-request rejection in Meta's shape: HTTP 400, code 100, the subcode, nothing recorded."""
    assert reply.status == 400
    assert set(reply.error) == ERROR_KEYS
    assert reply.error["code"] == 100
    assert reply.error["error_subcode"] == subcode
    assert reply.error["is_transient"] is False
    assert reply.error["fbtrace_id"]
    assert graph.received == []


# ----------------------------------------------------------------------------------- the contract
def test_valid_request_is_accepted_and_recorded(graph: GraphStandIn) -> None:
    reply = send(graph, [event(1), event(2)], extra={"test_event_code": "TEST1"})
    assert reply.status == 200
    assert reply.json["events_received"] == 2
    assert reply.json["messages"] == []
    assert reply.json["fbtrace_id"]
    assert [r["event"]["event_id"] for r in graph.received] == ["contract-1", "contract-2"]
    assert {(r["pixel_id"], r["test_event_code"]) for r in graph.received} == {(PIXEL, "TEST1")}


def test_at_most_1000_events(graph: GraphStandIn) -> None:
    assert send(graph, [event(i) for i in range(1000)]).status == 200
    graph.state.reset()
    assert_rejected(send(graph, [event(i) for i in range(1001)]), graph, 2804002)


def test_empty_or_missing_data_is_rejected(graph: GraphStandIn) -> None:
    assert send(graph, []).status == 400
    assert post(graph.url, f"/v26.0/{PIXEL}/events", {"nodata": 1}).status == 400
    assert graph.received == []


@pytest.mark.parametrize(
    "user_data",
    [
        {"em": "jane@example.com"},  # raw email
        {"em": h("x").upper()},  # uppercase hex
        {"ph": h("x")[:63]},  # 63 hex
        {"em": [h("x"), "raw@example.com"]},  # one raw value in a list
        {"fn": "jane"},
    ],
    ids=["raw-email", "uppercase", "short", "list-with-raw", "raw-name"],
)
def test_hashed_fields_must_be_64_lowercase_hex_and_one_bad_event_rejects_all(
    graph: GraphStandIn, user_data: dict[str, Any]
) -> None:
    bad = event(2)
    bad["user_data"].update(user_data)
    assert_rejected(send(graph, [event(1), bad, event(3)]), graph, 2804001)


def test_param_builder_hash_form_is_accepted(graph: GraphStandIn) -> None:
    ok = event(1)
    ok["user_data"]["em"] = h("jane@example.com") + ".AQYBAQIA"
    assert send(graph, [ok]).status == 200


@pytest.mark.parametrize(
    ("change", "subcode"),
    [
        ({"action_source": None}, 2804001),
        ({"action_source": "web"}, 2804001),
        ({"event_source_url": None}, 2804001),
        ({"event_name": ""}, 2804001),
        ({"event_time": "1700000000"}, 2804001),
        ({"user_data": {}}, 2804050),
    ],
    ids=["no-action-source", "bad-action-source", "website-no-url", "no-name", "string-time", "no-user-data"],
)
def test_required_fields(graph: GraphStandIn, change: dict[str, Any], subcode: int) -> None:
    bad = event(1)
    for key, value in change.items():
        if value is None:
            bad.pop(key)
        else:
            bad[key] = value
    assert_rejected(send(graph, [bad]), graph, subcode)


def test_website_event_needs_user_agent(graph: GraphStandIn) -> None:
    bad = event(1)
    del bad["user_data"]["client_user_agent"]
    assert_rejected(send(graph, [bad]), graph, 2804001)


def test_non_website_event_needs_neither_url_nor_user_agent(graph: GraphStandIn) -> None:
    ok = event(1, action_source="system_generated")
    del ok["event_source_url"]
    del ok["user_data"]["client_user_agent"]
    assert send(graph, [ok]).status == 200


def test_customer_information_sets_meta_rejects(graph: GraphStandIn) -> None:
    bad = event(1, action_source="email", user_data={"fn": h("jane"), "ge": h("f")})
    assert_rejected(send(graph, [bad]), graph, 2804050)


def test_cookie_format_and_unknown_user_data_keys(graph: GraphStandIn) -> None:
    bad = event(1)
    bad["user_data"]["fbp"] = "not-a-cookie"
    assert_rejected(send(graph, [bad]), graph, 2804001)
    unknown = event(2)
    unknown["user_data"]["email"] = h("x")
    assert_rejected(send(graph, [unknown]), graph, 2804001)


def test_seven_day_window(graph: GraphStandIn) -> None:
    now = int(time.time())
    assert_rejected(send(graph, [event(1, event_time=now - 8 * 86400)]), graph, 2804003)
    assert_rejected(send(graph, [event(1, event_time=now + 3600)]), graph, 2804004)
    store = event(2, action_source="physical_store", event_time=now - 30 * 86400)
    assert send(graph, [store]).status == 200  # physical_store: 62 days


def test_poison_list_rejects_chosen_events(graph: GraphStandIn) -> None:
    graph.state.reject_event_ids = {"contract-2"}
    reply = send(graph, [event(1), event(2)])
    assert_rejected(reply, graph, 2804036)
    assert "event 1" in reply.error["error_user_msg"]


# ------------------------------------------------------------------------------------------- auth
def test_no_token_is_104_and_a_bad_token_190_both_http_400(graph: GraphStandIn) -> None:
    # Meta answers OAuth errors with HTTP 400 (not 401)
    reply = send(graph, [event(1)], token=None)
    assert (reply.status, reply.error["code"], reply.error["type"]) == (400, 104, "OAuthException")
    assert reply.error["message"] == "An access token is required to request this resource."
    reply = send(graph, [event(1)], token="EAAwrong")
    assert (reply.status, reply.error["code"], reply.error["type"]) == (400, 190, "OAuthException")
    assert graph.received == []


def test_a_token_in_the_query_is_accepted_like_meta_and_logged(graph: GraphStandIn) -> None:
    # The stand-in models Meta (which reads the token from the query); the relay's never-in-a-URL rule is
    # asserted by its tests from this log
    reply = post(graph.url, f"/v26.0/{PIXEL}/events?access_token={TOKEN}", {"data": [event(1)]}, token=None)
    assert reply.status == 200
    (log,) = graph.requests
    assert log.token_in_url
    assert log.token_location == "query"
    assert TOKEN in log.path  # the request log keeps the URL, so tests can scan it


def test_unknown_pixel_is_refused_when_pixels_are_configured() -> None:
    with GraphStandIn(tokens={TOKEN}, pixels={PIXEL}) as graph:
        assert send(graph, [event(1)]).status == 200
        reply = send(graph, [event(2)], pixel="999")
        assert reply.status == 400
        assert (reply.error["code"], reply.error["error_subcode"]) == (100, 33)


def test_unknown_path_is_refused(graph: GraphStandIn) -> None:
    assert post(graph.url, f"/v26.0/{PIXEL}/nothing", {"data": [event(1)]}).status == 400
    assert post(graph.url, "/v26.0/not-a-pixel/events", {"data": [event(1)]}).status == 400


# ----------------------------------------------------------------------------------------- faults
def test_fault_graph_code_answers_metas_body(graph: GraphStandIn) -> None:
    graph.add_fault(status=503, code=2, times=1)
    reply = send(graph, [event(1)])
    assert reply.status == 503
    assert (reply.error["code"], reply.error["is_transient"]) == (2, True)
    assert reply.error["message"] == "Service temporarily unavailable"
    assert "Retry-After" not in reply.headers  # Graph itself never sends it
    assert graph.received == []
    # the fault fired once: the next request is handled normally
    assert send(graph, [event(1)]).status == 200


def test_retry_after_only_from_a_fault_that_models_a_proxy(graph: GraphStandIn) -> None:
    with pytest.raises(ValueError, match="proxy"):
        graph.add_fault(status=429, code=4, retry_after=2)
    graph.add_fault(status=429, proxy=True, retry_after=1.5, times=1)
    reply = send(graph, [event(1)])
    assert (reply.status, reply.headers["Retry-After"], reply.headers["Content-Type"]) == (429, "1.5", "text/html")


def test_fault_throttle_code_with_subcode(graph: GraphStandIn) -> None:
    graph.add_fault(status=400, code=17, subcode=2446079, times=1)
    reply = send(graph, [event(1)])
    assert reply.status == 400
    assert (reply.error["code"], reply.error["error_subcode"], reply.error["is_transient"]) == (17, 2446079, True)
    assert reply.error["message"] == "(#17) User request limit reached"


def test_fault_80004_has_no_is_transient_and_usage_headers(graph: GraphStandIn) -> None:
    graph.add_fault(status=400, code=80004, subcode=2446079, usage_minutes=12, times=1)
    reply = send(graph, [event(1)])
    assert (reply.status, reply.error["code"]) == (400, 80004)
    assert "is_transient" not in reply.error
    usage = json.loads(reply.headers["X-Business-Use-Case-Usage"])
    assert usage[PIXEL][0]["estimated_time_to_regain_access"] == 12
    assert json.loads(reply.headers["X-App-Usage"])["call_count"] == 100


def test_fault_matches_by_pixel(graph: GraphStandIn) -> None:
    graph.add_fault(pixel_id="100000000000002", status=500, code=1, times=-1)
    assert send(graph, [event(1)]).status == 200
    assert send(graph, [event(2)], pixel="100000000000002").status == 500
    assert send(graph, [event(3)], pixel="100000000000002").status == 500


def test_fault_delay_outlasts_a_short_client_timeout(graph: GraphStandIn) -> None:
    graph.add_fault(delay_ms=1500, times=1)
    with pytest.raises(TimeoutError):
        send(graph, [event(1)], timeout=0.2)


def test_fault_drop_closes_the_connection(graph: GraphStandIn) -> None:
    graph.add_fault(drop=True, times=1)
    with pytest.raises((http.client.RemoteDisconnected, ConnectionError, socket.error)):
        send(graph, [event(1)])
    assert graph.received == []


def test_fault_truncate_sends_a_partial_body(graph: GraphStandIn) -> None:
    graph.add_fault(truncate=True, times=1)
    with pytest.raises((http.client.IncompleteRead, ConnectionError)):
        send(graph, [event(1)])


def test_fault_html_answer(graph: GraphStandIn) -> None:
    graph.add_fault(html=True, times=1)
    reply = send(graph, [event(1)])
    assert reply.status == 502
    assert reply.headers["Content-Type"] == "text/html"
    assert reply.raw.startswith(b"<html>")


def test_fault_events_received_delta(graph: GraphStandIn) -> None:
    graph.add_fault(events_received_delta=-1, times=1)
    reply = send(graph, [event(1), event(2)])
    assert reply.status == 200
    assert reply.json["events_received"] == 1
    assert graph.received == []  # Meta kept fewer than sent: the stand-in records none of them


def test_control_endpoints(graph: GraphStandIn) -> None:
    assert post(graph.url, "/_standin/faults", {"faults": [{"status": 500, "code": 1}]}, token=None).status == 200
    assert send(graph, [event(1)]).status == 500
    assert post(graph.url, "/_standin/config", {"reject_event_ids": ["contract-2"]}, token=None).status == 200
    assert send(graph, [event(2)]).status == 400
    assert send(graph, [event(3)]).status == 200
    conn = http.client.HTTPConnection("127.0.0.1", urlsplit(graph.url).port, timeout=5)
    conn.request("GET", "/_standin/state")
    state = json.loads(conn.getresponse().read())
    conn.close()
    assert [r["event"]["event_id"] for r in state["received"]] == ["contract-3"]
    assert [r["status"] for r in state["requests"]] == [500, 400, 200]
    assert post(graph.url, "/_standin/reset", {}, token=None).status == 200
    assert graph.received == []
    assert graph.requests == []


# ------------------------------------------------- parameters as Meta documents them (issue 18, M-SE/M-CD/M-APP/M-BM)
EXTINFO = ["a2", "com.example.app", "771", "Version 7.7.1", "14", "Pixel 8", "en_US", "GMT-1", "", "1080", "2400",
           "2.0", "8", "128", "64", "Europe/Berlin"]  # fmt: skip


@pytest.mark.parametrize(
    ("overrides", "subcode"),
    [
        ({"event_source_url": "shop.example.com/checkout"}, 2804001),
        ({"event_source_url": "ftp://shop.example.com/"}, 2804001),
        ({"custom_data": {"value": "ten", "currency": "usd"}}, 2804001),
        ({"custom_data": {"value": 1, "currency": "usd", "predicted_ltv": "lots"}}, 2804001),
        ({"custom_data": {"value": 1, "currency": "usd", "num_items": 1.5}}, 2804001),
        ({"custom_data": {"value": 1, "currency": "usd", "delivery_category": "drone"}}, 2804001),
        ({"custom_data": {"value": 1, "currency": "usd", "contents": [{"id": "a", "quantity": "x"}]}}, 2804001),
        ({"custom_data": {"value": 1, "currency": "usd",
                          "contents": [{"id": "a", "quantity": 1, "item_price": "cheap"}]}}, 2804001),
        ({"action_source": "app", "app_data": {"advertiser_tracking_enabled": 1, "extinfo": EXTINFO[:15]}}, 2804001),
        ({"action_source": "app", "app_data": {"advertiser_tracking_enabled": 1, "extinfo": ["a1", *EXTINFO[1:]]}},
         2804001),
        ({"action_source": "app", "app_data": {"extinfo": EXTINFO}}, 2804001),
        ({"action_source": "business_messaging", "messaging_channel": "sms"}, 2804001),
        ({"action_source": "business_messaging", "messaging_channel": "whatsapp"}, 2804116),
        ({"action_source": "business_messaging", "messaging_channel": "instagram",
          "user_data": {"ig_account_id": "17841400000000000"}}, 2804116),
        ({"action_source": "system_generated", "user_data": {"em": h("jane@example.com"), "lead_id": "12345"}},
         2804036),
    ],
)  # fmt: skip
def test_what_metas_parameter_docs_refuse_is_refused(
    graph: GraphStandIn, overrides: dict[str, Any], subcode: int
) -> None:
    assert_rejected(send(graph, [event(1, **overrides)]), graph, subcode)


def test_what_metas_parameter_docs_allow_is_accepted(graph: GraphStandIn) -> None:
    ok = [
        event(1, custom_data={"value": "12.5", "currency": "usd", "predicted_ltv": 100, "num_items": "2",
                              "delivery_category": "home_delivery",
                              "contents": [{"id": "a", "quantity": "2", "item_price": 4.99,
                                            "delivery_category": "curbside"}]}, opt_out=True),
        event(2, action_source="app", app_data={"advertiser_tracking_enabled": 0, "extinfo": ["i2", *EXTINFO[1:]]}),
        event(3, action_source="business_messaging", messaging_channel="whatsapp", user_data={"ctwa_clid": "ARAkLk"}),
        event(4, action_source="business_messaging", messaging_channel="messenger",
              user_data={"page_id": "1122334455", "page_scoped_user_id": "7788990011"}),
        event(5, action_source="business_messaging", messaging_channel="instagram",
              user_data={"ig_account_id": "17841400000000000", "ig_sid": "1234567890"}),
        event(6, action_source="system_generated", user_data={"lead_id": 1234567890123456}),
        event(7, user_data={**event()["user_data"], "client_ip_address": "2001:db8::1.AQQAAQAA"}),
    ]  # fmt: skip
    for item in ok:
        if item["action_source"] != "website":
            item.pop("event_source_url")
    reply = send(graph, ok)
    assert reply.status == 200, reply.json
    assert reply.json["events_received"] == len(ok)
