"""Graph API stand-in: a real HTTP(S) server on loopback that models Meta's Conversions API endpoint.

``POST /{version}/{pixel_id}/events``. It accepts what Graph accepts and refuses what Graph refuses, with
the bodies and headers Graph sends; the relay's own rules (token never in a URL, Bearer header, JSON body)
are asserted by tests from the request log (:class:`RequestLog`), never by the stand-in refusing a request
Meta would take.

Request forms accepted (like Graph, which reads parameters by content type):

* ``Content-Type: application/json`` with ``{"data": [events], "test_event_code"?, "appsecret_proof"?,
  "access_token"?}``;
* ``application/x-www-form-urlencoded`` or ``multipart/form-data`` with ``data`` a JSON string: a list of
  events, or a list of JSON-encoded event strings (what Meta's Python SDK ``EventRequest.execute()`` puts
  on the wire: ``data=["{...}", ...]`` form-encoded, token and proof in the query);
* parameters in the query string too (Graph merges them), the token included.

A JSON body with no or another content type is unreadable to Graph: code 100 "The parameter data is
required". The token may come as ``Authorization: Bearer``/``OAuth``, an ``access_token`` body field or in
the query. Checks, in order, with Meta's bodies (all HTTP 400; OAuth errors are 400, not 401):

* no token -> code 104 "An access token is required to request this resource." (OAuthException);
* unknown token -> code 190 "Invalid OAuth access token - Cannot parse access token";
* a version not in ``live_versions`` -> code 2635 "(#2635) You are calling a deprecated version of the Ads
  API. Please update to the latest version: vXX.0.";
* ``require_appsecret_proof`` and no proof -> code 100 "API calls from the server require an
  appsecret_proof argument" (GraphMethodException); a proof that is not HMAC-SHA256(app_secret, token) ->
  code 100 "Invalid appsecret_proof provided in the API argument" (GraphMethodException);
* unknown pixel (when a set is configured) -> code 100 subcode 33; no ``data`` -> code 100; more than 1,000
  events -> 2804002; every event checked as before (``check_event``): one invalid event rejects the whole
  request with Meta's CAPI error body (``message``, ``type``, ``code``, ``error_subcode``,
  ``is_transient``, ``error_user_title``, ``error_user_msg``, ``fbtrace_id``); ``reject_event_ids`` marks
  events Meta would reject for reasons the relay cannot see;
* success: 200 ``{"events_received": n, "messages": [], "fbtrace_id": "..."}``.

Faults (Python API or ``POST /_standin/faults``) fire per matching request: delay, a Graph error code
(throttle codes answer Meta's own bodies, ``is_transient`` as Meta sends it, and with ``usage_minutes`` the
usage headers ``X-App-Usage`` and ``X-Business-Use-Case-Usage`` carrying ``estimated_time_to_regain_access``
in minutes), a ``proxy`` answer (HTML, optionally ``Retry-After`` -- Graph itself never sends Retry-After),
HTML, a dropped connection, a truncated body, fewer ``events_received``, a body dripped one byte every
``drip_s`` seconds, a body padded to ``body_bytes`` bytes. Idle keep-alive connections are closed after
``idle_timeout_s`` (like real servers); ``tls=True`` serves HTTPS with a throwaway ``trustme`` CA.
``lose_answer``: an answer lost after Meta handled the request (the events are taken, the connection is
reset instead of answering).

Sources for the bodies and headers (captured responses and Meta's documentation):

* rate limiting and the usage headers: https://developers.facebook.com/docs/graph-api/overview/rate-limiting/
  (X-App-Usage percentages; X-Business-Use-Case-Usage ``{"<id>": [{"type", "call_count", "total_cputime",
  "total_time", "estimated_time_to_regain_access" (minutes)}]}``);
* 2635: facebook/facebook-java-business-sdk#136 (``{"message": "(#2635) You are calling a deprecated
  version of the Ads API. Please update to the latest version: v2.12.", "type": "OAuthException",
  "code": 2635, "fbtrace_id": ...}``), facebook/facebook-nodejs-business-sdk#239;
* appsecret_proof required: Yoctol/bottender#271, sromku/android-simple-facebook#160 (HTTP 400, code 100,
  GraphMethodException); invalid proof: facebook/facebook-python-business-sdk#528 (HTTP 400);
* 104: node-facebook/facebook-node-sdk#105 (HTTP 400, OAuthException);
* 80000/80004 throttles (no ``is_transient``, subcode 2446079): airbytehq/airbyte#10655,
  singer-io/tap-facebook#192; code 2 with ``is_transient: true``: facebook/facebook-java-business-sdk#81;
* the SDK's request form: facebook_business ``EventRequest.get_params()`` / ``FacebookAdsApi.call()``
  (``_top_level_param_json_encode``, ``requests`` ``data=`` form encoding, session params in the query).

``GET /{version}/dataset_quality`` (Meta's Dataset Quality API) is modelled in ``local.quality_standin``.

Run: ``python -m local.graph_standin --port 8089 --token TOKEN [--pixel 123]``.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import hmac
import io
import json
import random
import re
import secrets
import socket
import ssl
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from werkzeug.formparser import parse_form_data

from local import quality_standin

MAX_EVENTS = 1000
# Meta's documented hashed keys, plus those Meta's Python SDK also sends hashed (UserData: f5first, f5last, fi,
# dobd, dobm, doby), which the relay does not produce.
HASHED = frozenset(
    {"em", "ph", "fn", "ln", "ge", "db", "ct", "st", "zp", "country", "f5first", "f5last", "fi", "dobd", "dobm",
     "doby"}
)  # fmt: skip
# external_id: hashing is recommended, not required (Meta's Python SDK sends it raw): any non-empty string(s).
PLAIN = frozenset(
    {
        "client_ip_address", "client_user_agent", "fbc", "fbp", "subscription_id", "fb_login_id", "lead_id",
        "anon_id", "madid", "page_id", "page_scoped_user_id", "ctwa_clid", "ig_account_id", "ig_sid",
        "whatsapp_business_account_id", "instagram_business_account_id",
    }
)  # fmt: skip
ACTION_SOURCES = frozenset(
    {"email", "website", "app", "phone_call", "chat", "physical_store", "system_generated",
     "business_messaging", "other"}
)  # fmt: skip
_HASH_RE = re.compile(r"^[0-9a-f]{64}$")
_PB_RE = re.compile(r"^[0-9a-fA-F]{64}\.(?:[A-Za-z0-9_-]{2}|[A-Za-z0-9_-]{8})$")
_COOKIE_RE = re.compile(r"^fb\.\d\.\d{10,13}\.[A-Za-z0-9_-]+(?:\.(?:[A-Za-z0-9_-]{2}|[A-Za-z0-9_-]{8}))?$")
_REJECTED_SETS = (
    frozenset({"ct", "country", "st", "zp", "ge", "client_user_agent"}),
    frozenset({"db", "client_user_agent"}),
    frozenset({"fn", "ge"}),
    frozenset({"ln", "ge"}),
)


_PATH_RE = re.compile(r"^/(v\d+\.\d+)/(\d+)/events$")
_VERSION_RE = re.compile(r"^/(v\d+\.\d+)(?:/|$)")
# Meta's Graph API changelog: v20.0 expired 2026-09-24, v21.0 lasts until 2027-01-21, v27.0 was released 2026-11-04.
LIVE_VERSIONS = frozenset({"v21.0", "v22.0", "v23.0", "v24.0", "v25.0", "v26.0", "v27.0"})
LATEST_VERSION = "v27.0"
# The newest version this stand-in has been checked against with Meta's own SDK (facebook-business 26.0.3 speaks
# v26.0; tests/integration/test_standin_oracle.py asserts it): the template's default GraphApiVersion.
CHECKED_VERSION = "v26.0"
DEFAULT_IDLE_TIMEOUT_S = 60.0

# Meta's bodies for the fault codes: (message, type, is_transient as Meta sends it -- None: absent).
META_ERRORS: dict[int, tuple[str, str, bool | None]] = {
    1: ("An unknown error occurred", "OAuthException", True),
    2: ("Service temporarily unavailable", "OAuthException", True),
    4: ("(#4) Application request limit reached", "OAuthException", True),
    10: ("(#10) Application does not have permission for this action", "OAuthException", False),
    17: ("(#17) User request limit reached", "OAuthException", True),
    32: ("(#32) Page request limit reached", "OAuthException", True),
    341: ("(#341) Application limit reached", "OAuthException", True),
    613: ("(#613) Calls to this api have exceeded the rate limit.", "OAuthException", True),
    80004: (
        "(#80004) There have been too many calls to this ad-account. Wait a bit and try again. For more info, "
        "please refer to https://developers.facebook.com/docs/graph-api/overview/rate-limiting.",
        "OAuthException",
        None,
    ),
}


class EventRejected(Exception):
    def __init__(self, subcode: int, title: str, message: str) -> None:
        super().__init__(message)
        self.subcode = subcode
        self.title = title
        self.message = message


REQUEST_LEVEL_FIELDS = ("namespace_id", "partner_agent", "upload_source", "upload_tag")


@dataclass
class Fault:
    """One injectable fault. ``times`` < 0 means unlimited; ``probability`` applies per matching request.

    ``retry_after`` needs ``proxy=True``: Graph does not send Retry-After, a proxy or load balancer in front
    of it may. ``usage_minutes`` adds Meta's usage headers with that ``estimated_time_to_regain_access``.
    ``drip_s`` sends the answer's body one byte every ``drip_s`` seconds; ``body_bytes`` pads the answer's
    body (with JSON whitespace) to that many bytes. ``lose_answer``: Meta handles the request as usual
    (accepted events are taken) but the answer never arrives: the connection is reset where the answer would
    be sent (after ``delay_ms``, if given) -- a load balancer or network drop after Meta processed it.
    """

    pixel_id: str | None = None
    times: int = 1
    probability: float = 1.0
    delay_ms: int = 0
    status: int | None = None
    code: int | None = None
    subcode: int | None = None
    is_transient: bool | None = None
    usage_minutes: int | None = None
    proxy: bool = False
    retry_after: float | None = None
    html: bool = False
    drop: bool = False
    truncate: bool = False
    events_received_delta: int = 0
    drip_s: float = 0.0
    body_bytes: int = 0
    lose_answer: bool = False

    def __post_init__(self) -> None:
        if self.retry_after is not None and not self.proxy:
            raise ValueError("Graph never sends Retry-After: a fault with retry_after must say proxy=True")

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> Fault:
        return cls(**{k: v for k, v in doc.items() if k in cls.__dataclass_fields__})

    def describe(self) -> str:
        return json.dumps({k: v for k, v in self.__dict__.items() if v not in (None, False, 0, 0.0)})


@dataclass
class RequestLog:
    """What one request looked like on the wire, for tests to assert the relay's own rules from."""

    pixel_id: str | None
    version: str | None
    events: int
    status: int
    event_ids: list[str]
    authorized: bool
    token_in_url: bool
    fault: str | None
    appsecret_proof: str | None
    test_event_code: str | None
    at: float = field(default_factory=time.time)
    path: str = ""  # the request target as received (path + query), to check no token ever sits in a URL
    method: str = "POST"
    query: dict[str, list[str]] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str | None = None
    token_location: str | None = None  # "bearer", "oauth", "body", "query" or None
    body_form: str = "none"  # "json", "form", "multipart", "none" or "unreadable"
    connection: int = 0  # the server-side connection number (keep-alive reuse shows as a repeated number)


def fbtrace_id() -> str:
    return "A" + secrets.token_urlsafe(16)


def meta_error(code: int, message: str, *, error_type: str = "OAuthException", subcode: int | None = None,
               is_transient: bool | None = None) -> dict[str, Any]:  # fmt: skip
    """A Graph error body with only the fields Meta sends for this kind of error."""
    error: dict[str, Any] = {"message": message, "type": error_type, "code": code}
    if is_transient is not None:
        error["is_transient"] = is_transient
    if subcode is not None:
        error["error_subcode"] = subcode
    error["fbtrace_id"] = fbtrace_id()
    return {"error": error}


def graph_error(code: int, message: str, *, subcode: int | None = None, error_type: str = "OAuthException",
                title: str | None = None, user_msg: str | None = None,
                is_transient: bool = False) -> dict[str, Any]:  # fmt: skip
    """A CAPI validation error body (Meta sends the user title/message and is_transient for these)."""
    error: dict[str, Any] = {"message": message, "type": error_type, "code": code, "is_transient": is_transient}
    if subcode is not None:
        error["error_subcode"] = subcode
    if title is not None:
        error["error_user_title"] = title
    if user_msg is not None:
        error["error_user_msg"] = user_msg
    error["fbtrace_id"] = fbtrace_id()
    return {"error": error}


def usage_headers(pixel_id: str | None, minutes: int) -> dict[str, str]:
    """Meta's usage headers for a throttled caller (rate-limiting docs): percentages and the estimate."""
    buc = {
        str(pixel_id or "0"): [
            {"type": "ads_management", "call_count": 100, "total_cputime": 12, "total_time": 18,
             "estimated_time_to_regain_access": minutes}
        ]
    }  # fmt: skip
    app = {"call_count": 100, "total_cputime": 12, "total_time": 18}
    return {"X-Business-Use-Case-Usage": json.dumps(buc), "X-App-Usage": json.dumps(app)}


def appsecret_proof(app_secret: str, token: str) -> str:
    return hmac.new(app_secret.encode(), token.encode(), hashlib.sha256).hexdigest()


# ---------------------------------------------------------------------------------- request parsing
@dataclass
class Parsed:
    """The parameters Graph would read from one request (body by content type, then the query)."""

    params: dict[str, str | Any]
    body_form: str
    token: str | None
    token_location: str | None
    data: list[Any] | None  # the events, decoded (None: no readable data parameter)


def _form_params(raw: bytes, content_type: str) -> dict[str, str]:
    environ = {
        "wsgi.input": io.BytesIO(raw),
        "CONTENT_TYPE": content_type,
        "CONTENT_LENGTH": str(len(raw)),
        "REQUEST_METHOD": "POST",
    }
    _, form, _ = parse_form_data(environ)
    return {key: form[key] for key in form}


def _decode_data(value: Any) -> list[Any] | None:
    """``data`` as Graph reads it: a JSON list (or a JSON string of one); items may be JSON-encoded strings."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return None
    if not isinstance(value, list):
        return None
    events: list[Any] = []
    for item in value:
        try:
            events.append(json.loads(item) if isinstance(item, str) else item)
        except ValueError:
            return None
    return events


def parse_request(raw: bytes, content_type: str | None, query: dict[str, list[str]], authorization: str) -> Parsed:
    mimetype = (content_type or "").split(";", 1)[0].strip().lower()
    params: dict[str, Any] = {}
    if not raw:
        form = "none"
    elif mimetype == "application/json":
        try:
            doc = json.loads(raw)
        except ValueError:
            doc = None
        form = "json" if isinstance(doc, dict) else "unreadable"
        params = doc if isinstance(doc, dict) else {}
    elif mimetype in ("application/x-www-form-urlencoded", "multipart/form-data"):
        params = _form_params(raw, content_type or "")
        form = "form" if mimetype.startswith("application/") else "multipart"
    else:
        form = "unreadable"  # Graph does not read a body without a content type it knows
    merged: dict[str, Any] = {k: v[0] for k, v in query.items() if v}
    merged.update(params)
    token: str | None = None
    location: str | None = None
    scheme, _, credential = authorization.partition(" ")
    if scheme.lower() in ("bearer", "oauth") and credential.strip():
        token, location = credential.strip(), scheme.lower()
    elif isinstance(params.get("access_token"), str) and params["access_token"]:
        token, location = params["access_token"], "body"
    elif query.get("access_token"):
        token, location = query["access_token"][0], "query"
    data = _decode_data(merged["data"]) if "data" in merged else None
    return Parsed(merged, form, token, location, data)


# ------------------------------------------------------------------------------------- event checks
def _check_hashed(key: str, value: Any) -> None:
    values = value if isinstance(value, list) else [value]
    if not values:
        raise EventRejected(2804001, "Invalid Parameter", f"user_data.{key} is empty")
    for item in values:
        if not isinstance(item, str) or not (_HASH_RE.match(item) or _PB_RE.match(item)):
            raise EventRejected(
                2804001, "Invalid Parameter", f"user_data.{key} must be a SHA-256 hash (64 lowercase hex)"
            )


def check_event(event: Any, now: float) -> None:
    if not isinstance(event, dict):
        raise EventRejected(2804001, "Invalid Parameter", "event must be an object")
    if not isinstance(event.get("event_name"), str) or not event["event_name"]:
        raise EventRejected(2804001, "Missing Event Name", "event_name is required")
    source = event.get("action_source")
    if source not in ACTION_SOURCES:
        raise EventRejected(2804001, "Invalid Action Source", "action_source is required and must be valid")
    ts = event.get("event_time")
    if not isinstance(ts, int) or isinstance(ts, bool):
        raise EventRejected(2804001, "Invalid Event Time", "event_time must be an integer (Unix seconds)")
    max_age = 62 * 86400 if source == "physical_store" else 7 * 86400
    if ts < now - max_age:
        raise EventRejected(2804003, "Event Timestamp Too Old", "event_time must be within 7 days")
    if ts > now + 300:
        raise EventRejected(2804004, "Event Timestamp In Future", "event_time is in the future")
    user_data = event.get("user_data")
    if not isinstance(user_data, dict) or not user_data:
        raise EventRejected(2804050, "Insufficient Customer Information", "user_data is required")
    for key, value in user_data.items():
        if key in HASHED:
            _check_hashed(key, value)
        elif key == "external_id":
            ids = value if isinstance(value, list) else [value]
            if not ids or not all(isinstance(i, str) and i for i in ids):
                raise EventRejected(2804001, "Invalid Parameter", "user_data.external_id must be a string or list")
        elif key in ("fbc", "fbp"):
            if not isinstance(value, str) or not _COOKIE_RE.match(value):
                raise EventRejected(2804001, "Invalid Parameter", f"user_data.{key} is malformed")
        elif key not in PLAIN:
            raise EventRejected(2804001, "Invalid Parameter", f"unknown user_data parameter {key}")
    keys = frozenset(user_data)
    if any(keys <= rejected for rejected in _REJECTED_SETS):
        raise EventRejected(2804050, "Insufficient Customer Information", "too little customer information")
    if source == "website" and (not event.get("event_source_url") or "client_user_agent" not in user_data):
        raise EventRejected(2804001, "Missing Parameter", "website events need event_source_url and UA")
    _check_documented_parameters(event, source, user_data)


# Parameters as Meta documents them (issue 18). Each rule names its page; the stand-in shares no code with the
# relay's prepare/events.py. Where Meta's documentation gives a rule but no error subcode, 2804001 (invalid parameter).
# Not modelled, because no source says Meta refuses it: an opt_out that is not a boolean (Graph reads booleans from
# strings), a malformed client_ip_address (Meta documents no error for it).
_URL_RE = re.compile(r"^https?://[^\s/?#]", re.IGNORECASE)
_NUMBER_RE = re.compile(r"^\s*[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?\s*$", re.ASCII)
_INT_RE = re.compile(r"^\s*[+-]?\d+\s*$", re.ASCII)
_LEAD_ID_RE = re.compile(r"^\d{15,16}$", re.ASCII)
DELIVERY_CATEGORIES = frozenset({"in_store", "curbside", "home_delivery"})  # M-CD; SDK delivery_category.py
# M-BM: the channel and the user_data ids each needs (WhatsApp: the click id; Meta's automatic-events example, WA-AE,
# sends it alone).
MESSAGING_CHANNEL_IDS = {
    "whatsapp": ("ctwa_clid",),
    "messenger": ("page_id", "page_scoped_user_id"),
    "instagram": ("ig_account_id", "ig_sid"),
}


def _is_number(value: Any, integer: bool = False) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int) or (isinstance(value, float) and not integer):
        return True
    return isinstance(value, str) and bool((_INT_RE if integer else _NUMBER_RE).match(value))


def _check_documented_parameters(event: dict[str, Any], source: str, user_data: dict[str, Any]) -> None:
    url = event.get("event_source_url")
    if source == "website" and not (isinstance(url, str) and _URL_RE.match(url)):
        # M-SE: "The URL must begin with http:// or https://"
        raise EventRejected(2804001, "Invalid Parameter", "event_source_url must begin with http:// or https://")
    if source == "app":
        # M-APP: extinfo is required, all 16 values in order, version a2 (Android) or i2 (iOS)
        app_data = event.get("app_data")
        app_data = app_data if isinstance(app_data, dict) else {}
        extinfo = app_data.get("extinfo")
        if not isinstance(extinfo, list) or len(extinfo) != 16 or extinfo[0] not in ("a2", "i2"):
            raise EventRejected(2804001, "Invalid Parameter", "app_data.extinfo must have 16 values (a2/i2 first)")
        if "advertiser_tracking_enabled" not in app_data:
            raise EventRejected(2804001, "Missing Parameter", "app_data.advertiser_tracking_enabled is required")
    custom = event.get("custom_data")
    if isinstance(custom, dict):
        # M-CD: value, predicted_ltv, net_revenue numbers; num_items an integer; delivery_category an enum
        for key in ("value", "predicted_ltv", "net_revenue"):
            if custom.get(key) is not None and not _is_number(custom[key]):
                raise EventRejected(2804001, "Invalid Parameter", f"custom_data.{key} must be a number")
        if custom.get("num_items") is not None and not _is_number(custom["num_items"], integer=True):
            raise EventRejected(2804001, "Invalid Parameter", "custom_data.num_items must be an integer")
        categories = [custom.get("delivery_category")]
        contents = custom.get("contents")
        for item in contents if isinstance(contents, list) else []:
            if not isinstance(item, dict) or not item.get("id") or not _is_number(item.get("quantity"), integer=True):
                raise EventRejected(2804001, "Invalid Parameter", "contents items need id and an integer quantity")
            if item.get("item_price") is not None and not _is_number(item["item_price"]):
                raise EventRejected(2804001, "Invalid Parameter", "contents item_price must be a number")
            categories.append(item.get("delivery_category"))
        if any(c is not None and c not in DELIVERY_CATEGORIES for c in categories):
            raise EventRejected(2804001, "Invalid Parameter", "delivery_category: in_store, curbside, home_delivery")
    if source == "business_messaging":
        # M-BM; 2804116 as observed for a business messaging event without its ids (meta-capi.md A8, 3P)
        channel = event.get("messaging_channel")
        ids = MESSAGING_CHANNEL_IDS.get(channel) if isinstance(channel, str) else None
        if ids is None:
            raise EventRejected(2804001, "Invalid Parameter", "messaging_channel: whatsapp, messenger or instagram")
        if any(key not in user_data for key in ids):
            raise EventRejected(2804116, "Missing Parameter", f"business messaging events need {', '.join(ids)}")
    lead_id = user_data.get("lead_id")
    if lead_id is not None and not _LEAD_ID_RE.match(str(lead_id)):
        # Conversion leads: Meta's 15-16 digit lead id; 2804036 as observed (meta-capi.md A8, 3P)
        raise EventRejected(2804036, "Invalid Parameter", "lead_id must be the 15 or 16 digit Lead Ads id")


# ------------------------------------------------------------------------------------------- server
class StandInState:
    def __init__(
        self,
        tokens: set[str],
        pixels: set[str] | None = None,
        *,
        live_versions: set[str] | frozenset[str] = LIVE_VERSIONS,
        app_secret: str | None = None,
        require_appsecret_proof: bool = False,
        idle_timeout_s: float = DEFAULT_IDLE_TIMEOUT_S,
    ) -> None:
        self.lock = threading.Lock()
        self.tokens = set(tokens)
        self.pixels = set(pixels) if pixels else None
        self.live_versions = set(live_versions)
        self.app_secret = app_secret
        self.require_appsecret_proof = require_appsecret_proof
        self.idle_timeout_s = idle_timeout_s
        self.reject_event_ids: set[str] = set()
        self.latency_ms = 0
        self.faults: list[Fault] = []
        self.received: list[dict[str, Any]] = []  # {"pixel_id", "test_event_code", "event", "request"}
        self.requests: list[RequestLog] = []
        self.connections = 0
        self.rng = random.Random(1234)
        # Dataset Quality API (local/quality_standin.py): per-pixel answers (default: Meta's documented examples
        # merged, for every known pixel), tokens that may send events but not read quality (code 10), and
        # fields made nonexisting.
        self.quality_datasets: dict[str, list[dict[str, Any]]] = {}
        self.quality_denied_tokens: set[str] = set()
        self.quality_removed_fields: set[str] = set()

    def reset(self) -> None:
        with self.lock:
            self.faults.clear()
            self.received.clear()
            self.requests.clear()
            self.reject_event_ids.clear()
            self.latency_ms = 0

    def take_fault(self, pixel_id: str | None) -> Fault | None:
        with self.lock:
            for fault in self.faults:
                if fault.times == 0 or (fault.pixel_id is not None and fault.pixel_id != pixel_id):
                    continue
                if fault.probability < 1.0 and self.rng.random() >= fault.probability:
                    continue
                if fault.times > 0:
                    fault.times -= 1
                return fault
        return None

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            return {
                "received": list(self.received),
                "requests": [r.__dict__ for r in self.requests],
            }


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"
    connection_number = 0

    def setup(self) -> None:
        state = self.server.state
        with state.lock:
            state.connections += 1
            self.connection_number = state.connections
        # Idle keep-alive connections are closed after this long (http.server closes on a read timeout).
        self.request.settimeout(state.idle_timeout_s)
        super().setup()
        if isinstance(self.connection, ssl.SSLSocket):
            self.connection.do_handshake()

    def log_message(self, format: str, *args: Any) -> None:
        return

    # ------------------------------------------------------------------------------------- helpers
    def _respond(self, status: int, body: bytes, content_type: str = "application/json",
                 headers: dict[str, str] | None = None, fault: Fault | None = None) -> None:  # fmt: skip
        pad = max(0, fault.body_bytes - len(body)) if fault is not None else 0
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body) + pad))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        drip = fault.drip_s if fault is not None else 0.0
        if drip > 0:
            self.wfile.flush()
            for index in range(len(body) + pad):
                self.wfile.write(body[index : index + 1] if index < len(body) else b" ")
                self.wfile.flush()
                time.sleep(drip)
            return
        self.wfile.write(body)
        while pad > 0:
            step = min(pad, 1 << 16)
            self.wfile.write(b" " * step)
            pad -= step

    def _send_json(self, status: int, doc: Any, headers: dict[str, str] | None = None,
                   fault: Fault | None = None) -> None:  # fmt: skip
        self._respond(status, json.dumps(doc).encode(), headers=headers, fault=fault)

    def _read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    # ------------------------------------------------------------------------------------- control
    def do_GET(self) -> None:
        if self.path == "/_standin/state":
            self._send_json(200, self.server.state.snapshot())
        elif quality_standin.QUALITY_PATH_RE.match(urlsplit(self.path).path):
            self._dataset_quality()
        else:
            self._send_json(400, meta_error(2500, "Unknown path components", error_type="OAuthException"))

    def _dataset_quality(self) -> None:
        """``GET /{version}/dataset_quality`` (local/quality_standin.py models the answer)."""
        state = self.server.state
        parts = urlsplit(self.path)
        query = parse_qs(parts.query)
        parsed = parse_request(b"", None, query, self.headers.get("Authorization", ""))
        params = {k: v[-1] for k, v in query.items()}
        version_match = _VERSION_RE.match(parts.path)
        version = version_match.group(1) if version_match else None
        dataset_id = params.get("dataset_id")
        with state.lock:
            authorized = parsed.token is not None and parsed.token in state.tokens
            denied = parsed.token in state.quality_denied_tokens
            live = version in state.live_versions
            latency = state.latency_ms
            known = dataset_id is not None and (state.pixels is None or dataset_id in state.pixels)
            dataset = state.quality_datasets.get(dataset_id or "")
            removed = set(state.quality_removed_fields)
        if dataset is None and known:
            dataset = quality_standin.documented_dataset()
        log = RequestLog(
            dataset_id, version, 0, 0, [], authorized, "access_token" in query, None, params.get("appsecret_proof"),
            None, path=self.path, method=self.command, query=query, headers=dict(self.headers.items()),
            token_location=parsed.token_location, connection=self.connection_number,
        )  # fmt: skip
        fault = state.take_fault(dataset_id)
        if latency:
            time.sleep(latency / 1000)
        if fault is not None and self._fault(fault, log):
            return
        if parsed.token is None:
            status, body = 400, meta_error(104, "An access token is required to request this resource.")
        elif not authorized:
            status, body = 400, meta_error(190, "Invalid OAuth access token - Cannot parse access token")
        elif version is not None and not live:
            status, body = 400, meta_error(2635, "(#2635) You are calling a deprecated version of the Ads API. "
                                                 f"Please update to the latest version: {LATEST_VERSION}.")  # fmt: skip
        elif denied:
            status, body = 400, meta_error(10, "(#10) Application does not have permission for this action")
        else:
            status, body = quality_standin.answer(params, dataset if known else None, removed)
        log.status = status
        self._record(log)
        self._send_json(status, body, fault=fault)

    def _control(self, path: str) -> None:
        state = self.server.state
        doc = json.loads(self._read_body() or b"{}")
        if path == "/_standin/reset":
            state.reset()
        elif path == "/_standin/faults":
            with state.lock:
                state.faults.extend(Fault.from_json(f) for f in doc.get("faults", []))
        elif path == "/_standin/config":
            with state.lock:
                if "tokens" in doc:
                    state.tokens = set(doc["tokens"])
                if "pixels" in doc:
                    state.pixels = set(doc["pixels"]) if doc["pixels"] else None
                if "reject_event_ids" in doc:
                    state.reject_event_ids = set(doc["reject_event_ids"])
                if "latency_ms" in doc:
                    state.latency_ms = int(doc["latency_ms"])
                if "live_versions" in doc:
                    state.live_versions = set(doc["live_versions"])
                if "app_secret" in doc:
                    state.app_secret = doc["app_secret"]
                if "require_appsecret_proof" in doc:
                    state.require_appsecret_proof = bool(doc["require_appsecret_proof"])
                if "quality_datasets" in doc:
                    state.quality_datasets = dict(doc["quality_datasets"])
                if "quality_denied_tokens" in doc:
                    state.quality_denied_tokens = set(doc["quality_denied_tokens"])
                if "quality_removed_fields" in doc:
                    state.quality_removed_fields = set(doc["quality_removed_fields"])
        else:
            self._send_json(404, {"ok": False})
            return
        self._send_json(200, {"ok": True})

    # ---------------------------------------------------------------------------------------- Graph
    def do_POST(self) -> None:
        parts = urlsplit(self.path)
        if parts.path.startswith("/_standin/"):
            self._control(parts.path)
            return
        state = self.server.state
        raw = self._read_body()
        query = parse_qs(parts.query)
        content_type = self.headers.get("Content-Type")
        parsed = parse_request(raw, content_type, query, self.headers.get("Authorization", ""))
        match = _PATH_RE.match(parts.path)
        version_match = _VERSION_RE.match(parts.path)
        version = version_match.group(1) if version_match else None
        pixel_id = match.group(2) if match else None
        with state.lock:
            authorized = parsed.token is not None and parsed.token in state.tokens
            known_pixel = state.pixels is None or pixel_id in state.pixels
            reject_ids = set(state.reject_event_ids)
            latency = state.latency_ms
            live = version in state.live_versions
            app_secret = state.app_secret
            require_proof = state.require_appsecret_proof
        data = parsed.data
        events = data if isinstance(data, list) else []
        event_ids = [str(e["event_id"]) for e in events if isinstance(e, dict) and isinstance(e.get("event_id"), str)]
        proof = parsed.params.get("appsecret_proof")
        proof = proof if isinstance(proof, str) else None
        test_code = parsed.params.get("test_event_code")
        test_code = test_code if isinstance(test_code, str) else None
        log = RequestLog(
            pixel_id, version, len(events), 0, event_ids, authorized, "access_token" in query, None, proof, test_code,
            path=self.path, method=self.command, query=query, headers=dict(self.headers.items()),
            content_type=content_type, token_location=parsed.token_location, body_form=parsed.body_form,
            connection=self.connection_number,
        )  # fmt: skip
        fault = state.take_fault(pixel_id)
        if latency:
            time.sleep(latency / 1000)
        if fault is not None and self._fault(fault, log):
            return

        def reject(body: dict[str, Any], status: int = 400) -> None:
            log.status = status
            self._record(log)
            if fault is not None and fault.lose_answer:
                self._drop()
                return
            self._send_json(status, body, fault=fault)

        if parsed.token is None:
            reject(meta_error(104, "An access token is required to request this resource."))
            return
        if not authorized:
            reject(meta_error(190, "Invalid OAuth access token - Cannot parse access token"))
            return
        if version is not None and not live:
            reject(meta_error(2635, "(#2635) You are calling a deprecated version of the Ads API. Please update to "
                                    f"the latest version: {LATEST_VERSION}."))  # fmt: skip
            return
        if require_proof and proof is None:
            reject(meta_error(100, "API calls from the server require an appsecret_proof argument",
                              error_type="GraphMethodException"))  # fmt: skip
            return
        if (
            proof is not None
            and app_secret is not None
            and not hmac.compare_digest(proof, appsecret_proof(app_secret, parsed.token))
        ):
            reject(meta_error(100, "Invalid appsecret_proof provided in the API argument",
                                  error_type="GraphMethodException"))  # fmt: skip
            return
        if match is None:
            reject(meta_error(100, "Unsupported post request. Please read the Graph API documentation at "
                                   "https://developers.facebook.com/docs/graph-api", subcode=33,
                              error_type="GraphMethodException"))  # fmt: skip
            return
        if not known_pixel:
            reject(meta_error(100, f"Unsupported post request. Object with ID '{pixel_id}' does not exist, cannot be "
                                   "loaded due to missing permissions, or does not support this operation",
                              subcode=33, error_type="GraphMethodException"))  # fmt: skip
            return
        if "data" not in parsed.params:
            reject(meta_error(100, "(#100) The parameter data is required"))
            return
        if data is None or not data:
            reject(meta_error(100, "(#100) param data must be an array."))
            return
        if len(data) > MAX_EVENTS:
            reject(graph_error(100, "Invalid parameter", subcode=2804002, title="Too many events",
                               user_msg="A request can contain at most 1000 events"))  # fmt: skip
            return
        now = time.time()
        for index, event in enumerate(data):
            try:
                check_event(event, now)
                if isinstance(event, dict) and event.get("event_id") in reject_ids:
                    raise EventRejected(2804036, "Invalid Parameter", "event rejected by the stand-in's poison list")
            except EventRejected as exc:
                reject(graph_error(100, "Invalid parameter", subcode=exc.subcode, title=exc.title,
                                   user_msg=f"event {index}: {exc.message}"))  # fmt: skip
                return
        received = len(data)
        # Request-level parameters Meta reads besides data (offline / partner uploads): kept with each event.
        request_fields = {k: parsed.params[k] for k in REQUEST_LEVEL_FIELDS if isinstance(parsed.params.get(k), str)}
        if fault is not None and fault.events_received_delta:
            received = max(0, received + fault.events_received_delta)
        else:
            with state.lock:
                for event in data:
                    state.received.append({"pixel_id": pixel_id, "test_event_code": test_code, "event": event,
                                           "request": request_fields})  # fmt: skip
        log.status = 200
        self._record(log)
        if fault is not None and fault.lose_answer:  # taken by Meta; the answer is lost on the way back
            self._drop()
            return
        self._send_json(200, {"events_received": received, "messages": [], "fbtrace_id": fbtrace_id()}, fault=fault)

    def _fault(self, fault: Fault, log: RequestLog) -> bool:
        """Apply a fault that replaces the answer; False when the request goes on to normal handling (a delay,
        a drip, padding or a short events_received only change how the normal answer is sent)."""
        log.fault = fault.describe()
        if fault.delay_ms:
            time.sleep(fault.delay_ms / 1000)
        if fault.drop:
            log.status = -1
            self._record(log)
            self._drop()
            return True
        if fault.truncate:
            log.status = -2
            self._record(log)
            body = b'{"events_received": 1'
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body) + 50))
            self.end_headers()
            self.wfile.write(body)
            self.wfile.flush()
            self._drop()
            return True
        if fault.proxy or fault.html:
            status = fault.status or (503 if fault.proxy else 502)
            log.status = status
            self._record(log)
            headers = {"Retry-After": f"{fault.retry_after:g}"} if fault.retry_after is not None else None
            page = f"<html><body><h1>{status}</h1>The server is temporarily unable to answer.</body></html>"
            self._respond(status, page.encode(), "text/html", headers, fault)
            return True
        if fault.status is not None or fault.code is not None:
            status = fault.status or 400
            code = fault.code if fault.code is not None else 2
            message, error_type, transient = META_ERRORS.get(code, ("Injected fault", "OAuthException", None))
            if fault.is_transient is not None:
                transient = fault.is_transient
            headers = usage_headers(log.pixel_id, fault.usage_minutes) if fault.usage_minutes is not None else None
            log.status = status
            self._record(log)
            error = meta_error(code, message, error_type=error_type, subcode=fault.subcode, is_transient=transient)
            self._send_json(status, error, headers, fault)
            return True
        return False

    def _record(self, log: RequestLog) -> None:
        with self.server.state.lock:
            self.server.state.requests.append(log)

    def _drop(self) -> None:
        self.close_connection = True
        try:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    # Meta's front ends accept a burst of connections; socketserver's default backlog of 5 would drop some of the
    # relay's HTTP_CONCURRENCY (10) connects on a loaded machine (a SYN retransmitted after 1 s: a connect timeout).
    request_queue_size = 128
    state: StandInState

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that timed out and hung up (an injected delay does that on purpose), or a TLS client that
        # went away mid-handshake, is not an error.
        if isinstance(sys.exc_info()[1], OSError):
            return
        super().handle_error(request, client_address)


class GraphStandIn:
    """In-process handle: ``with GraphStandIn(tokens={"t"}) as g: g.url``. ``tls=True`` serves HTTPS with a
    fresh ``trustme`` CA whose certificate is at ``ca_pem`` (point ``SSL_CERT_FILE`` at it)."""

    def __init__(
        self,
        tokens: set[str],
        pixels: set[str] | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        live_versions: set[str] | frozenset[str] = LIVE_VERSIONS,
        app_secret: str | None = None,
        require_appsecret_proof: bool = False,
        idle_timeout_s: float = DEFAULT_IDLE_TIMEOUT_S,
        tls: bool = False,
    ) -> None:
        self.state = StandInState(
            tokens, pixels, live_versions=live_versions, app_secret=app_secret,
            require_appsecret_proof=require_appsecret_proof, idle_timeout_s=idle_timeout_s,
        )  # fmt: skip
        self._server = _Server((host, port), _Handler)
        self._server.state = self.state
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self.ca_pem: Path | None = None
        if tls:
            import trustme

            ca = trustme.CA()
            cert = ca.issue_cert(host, "localhost")
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            cert.configure_cert(context)
            self._server.socket = context.wrap_socket(
                self._server.socket, server_side=True, do_handshake_on_connect=False
            )
            self._tmp = tempfile.TemporaryDirectory(prefix="standin-ca-")
            self.ca_pem = Path(self._tmp.name) / "ca.pem"
            ca.cert_pem.write_to_path(str(self.ca_pem))
        self._scheme = "https" if tls else "http"
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="graph-standin", daemon=True
        )

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"{self._scheme}://{host!s}:{port}"

    def start(self) -> GraphStandIn:
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread.is_alive():  # shutdown() waits for serve_forever, forever if it never started
            self._server.shutdown()
        self._server.server_close()
        if self._tmp is not None:
            self._tmp.cleanup()

    def __enter__(self) -> GraphStandIn:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def add_fault(self, **kwargs: Any) -> None:
        fault = Fault(**kwargs)
        with self.state.lock:
            self.state.faults.append(fault)

    @property
    def received(self) -> list[dict[str, Any]]:
        with self.state.lock:
            return list(self.state.received)

    @property
    def requests(self) -> list[RequestLog]:
        with self.state.lock:
            return list(self.state.requests)


def main() -> None:
    parser = argparse.ArgumentParser(description="Graph API stand-in for capi-relay")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8089)
    parser.add_argument("--token", action="append", required=True, help="a valid access token (repeatable)")
    parser.add_argument("--pixel", action="append", help="a known pixel id (repeatable; default: any)")
    parser.add_argument("--idle-timeout", type=float, default=DEFAULT_IDLE_TIMEOUT_S, help="keep-alive idle close (s)")
    args = parser.parse_args()
    standin = GraphStandIn(set(args.token), set(args.pixel) if args.pixel else None, args.host, args.port,
                           idle_timeout_s=args.idle_timeout)  # fmt: skip
    print(f"graph stand-in listening on {standin.url}", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        standin._server.serve_forever()


if __name__ == "__main__":
    main()
