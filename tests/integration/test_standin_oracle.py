"""Clients no one here wrote are the stand-in's oracle: what they send, Meta accepts, so the stand-in must too.

* Meta's own ``facebook-business`` SDK (``EventRequest.execute()`` with ``FacebookSession.GRAPH`` pointed at
  the stand-in): form-urlencoded ``data`` = a JSON list of JSON-encoded event strings, token (and
  ``appsecret_proof``) in the query;
* the ``curl -F`` form of Meta's documentation (real curl when installed, else urllib3's multipart
  encoder): multipart fields ``data`` (a JSON string) and ``access_token``;
* form-urlencoded with the token as a field; JSON with the token in the query;
* a JSON body without a Content-Type, which Graph cannot read: refused with Meta's code 100 body;
* the relay's own request, captured from GraphClient, through the same stand-in.

Also the stand-in's Meta behaviours the relay depends on: live versions (2635), appsecret_proof, idle
keep-alive close, HTTPS with a test CA, the drip and body-size faults."""

from __future__ import annotations

import hashlib
import hmac
import http.client
import json
import shutil
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode, urlsplit

import pytest
import urllib3
from facebook_business.adobjects.serverside.action_source import ActionSource
from facebook_business.adobjects.serverside.event import Event
from facebook_business.adobjects.serverside.event_request import EventRequest
from facebook_business.adobjects.serverside.user_data import UserData
from facebook_business.api import FacebookAdsApi
from facebook_business.exceptions import FacebookRequestError
from facebook_business.session import FacebookSession

from capi_relay import __version__
from capi_relay.aws.secrets import Credentials
from capi_relay.deliver.client import GraphClient
from capi_relay.deliver.policy import ErrorKind, GraphError
from local.graph_standin import CHECKED_VERSION, GraphStandIn

pytestmark = pytest.mark.integration

TOKEN = "EAAoracletoken"  # fake, for this stand-in only
APP_SECRET = "oracle-app-secret"  # fake
PIXEL = "100000000000001"


def h(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def event(n: int = 0) -> dict[str, Any]:
    return {
        "event_name": "Purchase",
        "event_time": int(time.time()) - 60,
        "event_id": f"oracle-{n}",
        "action_source": "website",
        "event_source_url": "https://shop.example.com/checkout",
        "user_data": {"em": [h("jane@example.com")], "client_user_agent": "Mozilla/5.0",
                      "client_ip_address": "203.0.113.1"},
    }  # fmt: skip


@pytest.fixture
def graph() -> Iterator[GraphStandIn]:
    with GraphStandIn(tokens={TOKEN}) as server:
        yield server


def raw_post(url: str, target: str, body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, Any]]:
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=5)
    try:
        conn.request("POST", target, body=body, headers=headers)
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read())
    finally:
        conn.close()


# ------------------------------------------------------------------------------------ Meta's own SDK
def sdk_execute(graph: GraphStandIn, monkeypatch: pytest.MonkeyPatch, app_secret: str | None = None) -> Any:
    monkeypatch.setattr(FacebookSession, "GRAPH", graph.url)
    FacebookAdsApi.init(access_token=TOKEN, app_secret=app_secret, crash_log=False)
    user = UserData(emails=["Jane@Example.com"], client_user_agent="Mozilla/5.0", client_ip_address="203.0.113.1")
    events = [
        Event(event_name="Purchase", event_time=int(time.time()) - 60, event_id=f"sdk-{i}",
              action_source=ActionSource.WEBSITE, event_source_url="https://shop.example.com/checkout",
              user_data=user)
        for i in range(3)
    ]  # fmt: skip
    return EventRequest(events=events, pixel_id=PIXEL, test_event_code="TEST42").execute()


def test_metas_sdk_request_is_accepted(graph: GraphStandIn, monkeypatch: pytest.MonkeyPatch) -> None:
    # When Meta's SDK sends three events the way it always does
    response = sdk_execute(graph, monkeypatch)
    # Then the stand-in accepted them like Meta: the SDK read events_received from the answer
    assert response.events_received == 3
    (log,) = graph.requests
    assert log.status == 200
    assert (log.version, log.pixel_id, log.test_event_code) == (CHECKED_VERSION, PIXEL, "TEST42")
    assert log.body_form == "form"
    assert log.token_location == "query"  # the SDK's session puts the token in the URL
    assert log.headers["User-Agent"].startswith("fbbizsdk-python-")
    assert [r["event"]["event_id"] for r in graph.received] == ["sdk-0", "sdk-1", "sdk-2"]
    assert graph.received[0]["event"]["user_data"]["em"] == [h("jane@example.com")]


def test_metas_sdk_partial_name_and_date_keys_are_accepted(
    graph: GraphStandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given the SDK's other hashed keys (first five letters and initial of the name, day/month/year of birth)
    monkeypatch.setattr(FacebookSession, "GRAPH", graph.url)
    FacebookAdsApi.init(access_token=TOKEN, crash_log=False)
    user = UserData(emails=["jane@example.com"], f5first="janet", f5last="smith", fi="j", dobd="05", dobm="11",
                    doby="1990")  # fmt: skip
    event = Event(event_name="Lead", event_time=int(time.time()) - 60, event_id="sdk-parts",
                  action_source=ActionSource.SYSTEM_GENERATED, user_data=user)  # fmt: skip
    # When it sends them, Then the stand-in takes them as Meta does
    response = EventRequest(events=[event], pixel_id=PIXEL).execute()
    assert response.events_received == 1
    sent = graph.received[0]["event"]["user_data"]
    assert sent["f5first"] == h("janet")  # the SDK sends these as one string each
    assert {"f5last", "fi", "dobd", "dobm", "doby"} <= set(sent)


def test_metas_sdk_appsecret_proof_is_verified(monkeypatch: pytest.MonkeyPatch) -> None:
    with GraphStandIn(tokens={TOKEN}, app_secret=APP_SECRET, require_appsecret_proof=True) as graph:
        assert sdk_execute(graph, monkeypatch, app_secret=APP_SECRET).events_received == 3
        with pytest.raises(FacebookRequestError) as info:
            sdk_execute(graph, monkeypatch, app_secret="another-secret")
        assert info.value.api_error_code() == 100
        assert info.value.api_error_message() == "Invalid appsecret_proof provided in the API argument"
        with pytest.raises(FacebookRequestError) as info:
            sdk_execute(graph, monkeypatch)
        assert info.value.api_error_type() == "GraphMethodException"
        assert info.value.http_status() == 400


# ------------------------------------------------------------------------------- curl -F and forms
def test_curl_multipart_form_is_accepted(graph: GraphStandIn) -> None:
    data = json.dumps([event(1), event(2)])
    url = f"{graph.url}/v26.0/{PIXEL}/events"
    curl = shutil.which("curl")
    if curl is not None:
        out = subprocess.run(
            [curl, "-sS", "--max-time", "10", "-F", f"data={data}", "-F", f"access_token={TOKEN}", url],
            capture_output=True, check=True, timeout=20,
        )  # fmt: skip
        answer = json.loads(out.stdout)
    else:  # multipart built by urllib3's encoder (not by this project)
        body, content_type = urllib3.encode_multipart_formdata({"data": data, "access_token": TOKEN})
        _, answer = raw_post(graph.url, f"/v26.0/{PIXEL}/events", body, {"Content-Type": content_type})
    assert answer["events_received"] == 2
    (log,) = graph.requests
    assert (log.body_form, log.token_location) == ("multipart", "body")


def test_form_urlencoded_with_the_token_as_a_field(graph: GraphStandIn) -> None:
    body = urlencode({"data": json.dumps([event(1)]), "access_token": TOKEN}).encode()
    status, answer = raw_post(graph.url, f"/v26.0/{PIXEL}/events", body,
                              {"Content-Type": "application/x-www-form-urlencoded"})  # fmt: skip
    assert (status, answer["events_received"]) == (200, 1)
    assert graph.requests[0].body_form == "form"


def test_json_with_the_token_in_the_query(graph: GraphStandIn) -> None:
    body = json.dumps({"data": [event(1)]}).encode()
    target = f"/v26.0/{PIXEL}/events?access_token={TOKEN}"
    status, answer = raw_post(graph.url, target, body, {"Content-Type": "application/json"})
    assert (status, answer["events_received"]) == (200, 1)
    assert graph.requests[0].token_location == "query"


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/octet-stream"])
def test_a_json_body_without_the_json_content_type_is_refused_as_meta_does(
    graph: GraphStandIn, content_type: str | None
) -> None:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    if content_type is not None:
        headers["Content-Type"] = content_type
    conn = http.client.HTTPConnection("127.0.0.1", urlsplit(graph.url).port, timeout=5)
    # http.client adds no Content-Type of its own
    conn.request("POST", f"/v26.0/{PIXEL}/events", body=json.dumps({"data": [event(1)]}).encode(), headers=headers)
    resp = conn.getresponse()
    answer = json.loads(resp.read())
    conn.close()
    assert resp.status == 400
    assert set(answer["error"]) == {"message", "type", "code", "fbtrace_id"}
    assert (answer["error"]["code"], answer["error"]["message"]) == (100, "(#100) The parameter data is required")
    assert graph.requests[0].body_form == "unreadable"
    assert graph.received == []


# -------------------------------------------------------------------------------- the relay's request
def test_the_relays_request_is_accepted_and_keeps_the_relays_rules(graph: GraphStandIn) -> None:
    body = json.dumps({"data": [event(1), event(2)], "test_event_code": "T7"}, separators=(",", ":")).encode()
    reply = GraphClient(graph.url, "v26.0").send(PIXEL, body, Credentials(TOKEN))
    assert reply.events_received == 2
    (log,) = graph.requests
    # the relay's own wire rules, from the log: JSON body, Bearer header, our User-Agent, no token in the URL
    assert (log.body_form, log.content_type, log.token_location) == ("json", "application/json", "bearer")
    assert log.headers["User-Agent"] == f"capi-relay/{__version__}"
    assert TOKEN not in log.path
    assert log.query == {}


def test_a_retired_version_answers_2635(graph: GraphStandIn) -> None:
    with pytest.raises(GraphError) as info:
        GraphClient(graph.url, "v19.0").send(PIXEL, json.dumps({"data": [event(1)]}).encode(), Credentials(TOKEN))
    assert info.value.kind is ErrorKind.CONFIG
    assert info.value.reason == "graph_config_2635"
    assert len(graph.requests) == 1


def test_appsecret_proof_in_the_relays_json_body_is_verified() -> None:
    proof = hmac.new(APP_SECRET.encode(), TOKEN.encode(), hashlib.sha256).hexdigest()
    with GraphStandIn(tokens={TOKEN}, app_secret=APP_SECRET, require_appsecret_proof=True) as graph:
        client = GraphClient(graph.url, "v26.0")
        ok = json.dumps({"data": [event(1)], "appsecret_proof": proof}).encode()
        assert client.send(PIXEL, ok, Credentials(TOKEN, APP_SECRET)).events_received == 1
        for body in ({"data": [event(1)]}, {"data": [event(1)], "appsecret_proof": "0" * 64}):
            with pytest.raises(GraphError) as info:
                client.send(PIXEL, json.dumps(body).encode(), Credentials(TOKEN))
            assert info.value.kind is ErrorKind.REQUEST
            assert info.value.reason == "graph_request_100"


# ----------------------------------------------------------------------------- connections and faults
def test_idle_keep_alive_connections_are_closed_by_the_server() -> None:
    with GraphStandIn(tokens={TOKEN}, idle_timeout_s=0.3) as graph:
        sock = socket.create_connection(("127.0.0.1", urlsplit(graph.url).port), timeout=5)
        sock.settimeout(5)
        started = time.monotonic()
        assert sock.recv(1) == b""  # the server closed the idle connection
        assert time.monotonic() - started < 3
        sock.close()


def test_drip_and_body_bytes_faults(graph: GraphStandIn) -> None:
    graph.add_fault(body_bytes=10_000, times=1)
    status, answer = raw_post(graph.url, f"/v26.0/{PIXEL}/events", json.dumps({"data": [event(1)]}).encode(),
                              {"Content-Type": "application/json", "Authorization": f"Bearer {TOKEN}"})  # fmt: skip
    assert (status, answer["events_received"]) == (200, 1)  # padded with JSON whitespace
    graph.add_fault(drip_s=0.05, times=1)
    conn = http.client.HTTPConnection("127.0.0.1", urlsplit(graph.url).port, timeout=5)
    conn.request("POST", f"/v26.0/{PIXEL}/events", body=json.dumps({"data": [event(2)]}).encode(),
                 headers={"Content-Type": "application/json", "Authorization": f"Bearer {TOKEN}"})  # fmt: skip
    resp = conn.getresponse()
    first = resp.read(5)
    started = time.monotonic()
    rest = resp.read()
    conn.close()
    assert json.loads(first + rest)["events_received"] == 1
    assert time.monotonic() - started > 0.05 * (len(rest) - 1) * 0.8  # the bytes came one at a time


def test_https_with_the_test_ca_and_verification_on() -> None:
    with GraphStandIn(tokens={TOKEN}, tls=True) as graph:
        assert graph.url.startswith("https://")
        assert graph.ca_pem is not None
        context = ssl.create_default_context(cafile=str(graph.ca_pem))
        conn = http.client.HTTPSConnection("127.0.0.1", urlsplit(graph.url).port, timeout=5, context=context)
        conn.request("POST", f"/v26.0/{PIXEL}/events", body=json.dumps({"data": [event(1)]}).encode(),
                     headers={"Content-Type": "application/json", "Authorization": f"Bearer {TOKEN}"})  # fmt: skip
        assert json.loads(conn.getresponse().read())["events_received"] == 1
        conn.close()
        # and a client that does not trust the test CA is refused
        untrusting = http.client.HTTPSConnection("127.0.0.1", urlsplit(graph.url).port, timeout=5,
                                                 context=ssl.create_default_context())  # fmt: skip
        with pytest.raises(ssl.SSLCertVerificationError):
            untrusting.request("POST", "/v26.0/1/events", body=b"{}")
        untrusting.close()


def test_metas_sdk_current_parameters_are_accepted(graph: GraphStandIn, monkeypatch: pytest.MonkeyPatch) -> None:
    # Given events built with Meta's SDK using the parameters of issue 18: extinfo (ExtendedDeviceInfo, unset values
    # go out as null and screen sizes as integers), contents with quantity and delivery_category, the numeric
    # custom_data fields, opt_out, a WhatsApp business messaging event and a conversion lead
    from facebook_business.adobjects.serverside.app_data import AppData
    from facebook_business.adobjects.serverside.content import Content
    from facebook_business.adobjects.serverside.custom_data import CustomData
    from facebook_business.adobjects.serverside.delivery_category import DeliveryCategory
    from facebook_business.adobjects.serverside.extended_device_info import ExtendedDeviceInfo
    from facebook_business.adobjects.serverside.messaging_channel import MessagingChannel

    monkeypatch.setattr(FacebookSession, "GRAPH", graph.url)
    FacebookAdsApi.init(access_token=TOKEN, crash_log=False)
    now = int(time.time()) - 60
    extinfo = ExtendedDeviceInfo(ext_info_version="i2", app_package_name="com.example.app", short_version="771",
                                 long_version="Version 7.7.1", os_version="17.0", device_model_name="iPhone15,2",
                                 locale="en_US", screen_width=1179, screen_height=2556, cpu_core_count=6)  # fmt: skip
    content = Content(product_id="sku-1", quantity=2, item_price=4.99, delivery_category=DeliveryCategory.CURBSIDE)
    custom = CustomData(value=12.5, currency="usd", predicted_ltv=100.0, net_revenue=3.5, num_items=2,
                        delivery_category=DeliveryCategory.HOME_DELIVERY, contents=[content])  # fmt: skip
    events = [
        Event(event_name="Purchase", event_time=now, event_id="sdk-app", action_source=ActionSource.APP,
              user_data=UserData(madid="38400000-8cf0-11bd-b23e-10b96e40000d"), custom_data=custom,
              app_data=AppData(advertiser_tracking_enabled=True, extinfo=extinfo), opt_out=True),
        Event(event_name="Purchase", event_time=now, event_id="sdk-wa", action_source=ActionSource.BUSINESS_MESSAGING,
              messaging_channel=MessagingChannel.WHATSAPP, custom_data=CustomData(value=10, currency="usd"),
              user_data=UserData(ctwa_clid="ARAkLkA8rmlFeiCktEJQ-QTwRiyYHAFDLM", page_id="1122334455")),
        Event(event_name="Lead", event_time=now, event_id="sdk-lead", action_source=ActionSource.SYSTEM_GENERATED,
              user_data=UserData(lead_id="1234567890123456", emails=["jane@example.com"])),
    ]  # fmt: skip
    # When the SDK sends them, Then the stand-in accepts them as Meta does
    response = EventRequest(events=events, pixel_id=PIXEL).execute()
    assert response.events_received == 3
    sent = {r["event"]["event_id"]: r["event"] for r in graph.received}
    assert len(sent["sdk-app"]["app_data"]["extinfo"]) == 16
    assert sent["sdk-app"]["app_data"]["extinfo"][7] is None  # what the SDK writes for an unset value
    assert sent["sdk-app"]["custom_data"]["contents"][0]["delivery_category"] == "curbside"
    assert sent["sdk-wa"]["messaging_channel"] == "whatsapp"


def test_the_relays_prepared_events_for_those_parameters_are_accepted(graph: GraphStandIn) -> None:
    # The relay's own output for the same kinds of events goes through the same stand-in
    from capi_relay.ingest.model import Prepared
    from capi_relay.prepare.events import prepare_event
    from capi_relay.settings import NormalizationSettings

    now = int(time.time())
    raw = [
        {"event_name": "Purchase", "event_time": now - 60, "action_source": "app", "opt_out": True,
         "user_data": {"madid": "38400000-8cf0-11bd-b23e-10b96e40000d"},
         "app_data": {"advertiser_tracking_enabled": True,
                      "extinfo": ["a2", "com.example", None, None, "14", None, "en_US", None, None, 1080, 2400, None,
                                  8, None, None, None]},
         "custom_data": {"value": "12.5", "currency": "USD", "contents": [{"id": "a", "quantity": "2"}]}},
        {"event_name": "Purchase", "event_time": now - 60, "action_source": "business_messaging",
         "messaging_channel": "WhatsApp", "user_data": {"ctwa_clid": "ARAkLk"},
         "custom_data": {"value": 1, "currency": "usd"}},
        {**event(9), "custom_data": {"value": 1, "currency": "usd"},
         "user_data": {**event()["user_data"], "client_ip_address": "203.0.113.1.AQQAAQAA"}},
    ]  # fmt: skip
    prepared = [prepare_event(item, NormalizationSettings(), now) for item in raw]
    assert all(isinstance(p, Prepared) for p in prepared), prepared
    body = json.dumps({"data": [p.event for p in prepared if isinstance(p, Prepared)]}).encode()
    reply = GraphClient(graph.url, "v26.0").send(PIXEL, body, Credentials(TOKEN))
    assert reply.events_received == 3
