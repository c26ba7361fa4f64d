"""The stand-in's ``lose_answer`` fault (issue 17's soak): Meta handles the request as usual -- valid events are
taken, an invalid request is refused -- and the answer never reaches the client (the connection is reset)."""

from __future__ import annotations

import hashlib
import http.client
import json
import time
from typing import Any
from urllib.parse import urlsplit

import pytest

from local.graph_standin import GraphStandIn

pytestmark = pytest.mark.integration

TOKEN = "EAAlostanswertoken"  # a fake token for this stand-in only
PIXEL = "100000000000001"


def event(event_id: str, **overrides: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "event_name": "Purchase", "event_time": int(time.time()) - 60, "event_id": event_id,
        "action_source": "website", "event_source_url": "https://shop.example.com/checkout",
        "user_data": {"em": hashlib.sha256(b"jane@example.com").hexdigest(), "client_user_agent": "Mozilla/5.0",
                      "client_ip_address": "203.0.113.1"},
    }  # fmt: skip
    doc.update(overrides)
    return doc


def post(standin: GraphStandIn, events: list[dict[str, Any]]) -> tuple[int, bytes]:
    parts = urlsplit(standin.url)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=5)
    try:
        conn.request("POST", f"/v26.0/{PIXEL}/events", body=json.dumps({"data": events}),
                     headers={"Content-Type": "application/json", "Authorization": f"Bearer {TOKEN}"})  # fmt: skip
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def test_a_lost_answer_means_meta_took_the_events_and_the_client_saw_the_connection_reset() -> None:
    with GraphStandIn({TOKEN}) as standin:
        standin.add_fault(lose_answer=True)
        with pytest.raises((ConnectionError, http.client.RemoteDisconnected, http.client.BadStatusLine)):
            post(standin, [event("lost-1"), event("lost-2")])
        assert [r["event"]["event_id"] for r in standin.received] == ["lost-1", "lost-2"]
        assert standin.requests[-1].status == 200
        # the fault fired once: the client's retry is answered, and Meta now holds both copies (it dedups them)
        status, body = post(standin, [event("lost-1"), event("lost-2")])
        assert status == 200
        assert json.loads(body)["events_received"] == 2
        assert len(standin.received) == 4


def test_a_request_meta_refuses_takes_nothing_when_its_answer_is_lost() -> None:
    with GraphStandIn({TOKEN}) as standin:
        standin.add_fault(lose_answer=True)
        with pytest.raises((ConnectionError, http.client.RemoteDisconnected, http.client.BadStatusLine)):
            post(standin, [event("ok-1"), event("old", event_time=int(time.time()) - 8 * 86_400)])
        assert standin.received == []
        assert standin.requests[-1].status == 400
