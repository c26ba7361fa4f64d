"""Graph API stand-in: a real HTTP server on loopback that enforces Meta's documented CAPI contract.

``POST /{version}/{pixel_id}/events`` with ``Authorization: Bearer <token>`` and a JSON body
``{"data": [...], "test_event_code"?, "appsecret_proof"?}``:

* the token must be one of the valid tokens, else HTTP 401 / code 190 (OAuthException);
* an ``access_token`` in the URL query is refused (400, code 100): capi-relay must never send it there;
* ``pixel_id`` must be a known pixel (when a set is configured), else 400 / code 100 subcode 33;
* ``data`` must be a non-empty list of at most 1,000 events;
* every event is checked (event_name, event_time within 7 days / 62 for physical_store and not more than
  5 minutes ahead, action_source, website needs event_source_url + client_user_agent, user_data present,
  hashed fields 64 lowercase hex or ``<64 hex>.<token>``, fbc/fbp format, no unknown user_data keys,
  customer-information sets Meta rejects); **one invalid event rejects the whole request** with HTTP 400
  and Meta's error body (``message``, ``type``, ``code``, ``error_subcode``, ``is_transient``,
  ``error_user_title``, ``error_user_msg``, ``fbtrace_id``) and nothing is recorded;
* events whose ``event_id`` is in ``reject_event_ids`` are treated as invalid (Meta-side rules that the
  relay cannot check locally), so tests can place poison events at chosen positions;
* on success: 200 ``{"events_received": n, "messages": [], "fbtrace_id": "..."}`` and the events are
  recorded.

Faults are injected per request (Python API or ``POST /_standin/faults``): a rule matches by pixel and
fires ``times`` times (or with a probability), and can add a delay, answer a status with a Graph error
code/subcode (and ``Retry-After``), answer HTML, drop the connection, truncate the response, or report
fewer ``events_received``. Control endpoints: ``GET /_standin/state``, ``POST /_standin/reset``,
``POST /_standin/faults``, ``POST /_standin/config``.

Run: ``python -m local.graph_standin --port 8089 --token TOKEN [--pixel 123]``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import re
import secrets
import socket
import sys
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

MAX_EVENTS = 1000
HASHED = frozenset({"em", "ph", "fn", "ln", "ge", "db", "ct", "st", "zp", "country", "external_id"})
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
_PATH_RE = re.compile(r"^/(v\d+\.\d)/(\d+)/events$")
_REJECTED_SETS = (
    frozenset({"ct", "country", "st", "zp", "ge", "client_user_agent"}),
    frozenset({"db", "client_user_agent"}),
    frozenset({"fn", "ge"}),
    frozenset({"ln", "ge"}),
)


class EventRejected(Exception):
    def __init__(self, subcode: int, title: str, message: str) -> None:
        super().__init__(message)
        self.subcode = subcode
        self.title = title
        self.message = message


@dataclass
class Fault:
    """One injectable fault. ``times`` < 0 means unlimited; ``probability`` applies per matching request."""

    pixel_id: str | None = None
    times: int = 1
    probability: float = 1.0
    delay_ms: int = 0
    status: int | None = None
    code: int | None = None
    subcode: int | None = None
    is_transient: bool | None = None
    retry_after: float | None = None
    html: bool = False
    drop: bool = False
    truncate: bool = False
    events_received_delta: int = 0

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> Fault:
        return cls(**{k: v for k, v in doc.items() if k in cls.__dataclass_fields__})


@dataclass
class RequestLog:
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


def fbtrace_id() -> str:
    return "A" + secrets.token_urlsafe(16)


def graph_error(code: int, message: str, *, subcode: int | None = None, error_type: str = "OAuthException",
                title: str | None = None, user_msg: str | None = None,
                is_transient: bool = False) -> dict[str, Any]:  # fmt: skip
    error: dict[str, Any] = {"message": message, "type": error_type, "code": code, "is_transient": is_transient}
    if subcode is not None:
        error["error_subcode"] = subcode
    if title is not None:
        error["error_user_title"] = title
    if user_msg is not None:
        error["error_user_msg"] = user_msg
    error["fbtrace_id"] = fbtrace_id()
    return {"error": error}


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


class StandInState:
    def __init__(self, tokens: set[str], pixels: set[str] | None = None) -> None:
        self.lock = threading.Lock()
        self.tokens = set(tokens)
        self.pixels = set(pixels) if pixels else None
        self.reject_event_ids: set[str] = set()
        self.latency_ms = 0
        self.faults: list[Fault] = []
        self.received: list[dict[str, Any]] = []  # {"pixel_id", "test_event_code", "event"}
        self.requests: list[RequestLog] = []
        self.rng = random.Random(1234)

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

    def log_message(self, format: str, *args: Any) -> None:
        return

    # ------------------------------------------------------------------------------------- helpers
    def _send_json(self, status: int, doc: Any, headers: dict[str, str] | None = None) -> None:
        body = json.dumps(doc).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)

    def _read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    # ------------------------------------------------------------------------------------- control
    def do_GET(self) -> None:
        if self.path == "/_standin/state":
            self._send_json(200, self.server.state.snapshot())
        else:
            self._send_json(404, graph_error(803, "Unknown path", error_type="GraphMethodException"))

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
        match = _PATH_RE.match(parts.path)
        version, pixel_id = (match.group(1), match.group(2)) if match else (None, None)
        token_in_url = "access_token" in parse_qs(parts.query)
        auth = self.headers.get("Authorization", "")
        token = auth[7:] if auth.startswith("Bearer ") else None
        with state.lock:
            authorized = token is not None and token in state.tokens
            known_pixel = state.pixels is None or pixel_id in state.pixels
            reject_ids = set(state.reject_event_ids)
            latency = state.latency_ms
        try:
            doc = json.loads(raw) if raw else {}
        except ValueError:
            doc = None
        data = doc.get("data") if isinstance(doc, dict) else None
        events = data if isinstance(data, list) else []
        event_ids = [str(e["event_id"]) for e in events if isinstance(e, dict) and isinstance(e.get("event_id"), str)]
        log = RequestLog(pixel_id, version, len(events), 0, event_ids, authorized, token_in_url, None,
                         doc.get("appsecret_proof") if isinstance(doc, dict) else None,
                         doc.get("test_event_code") if isinstance(doc, dict) else None,
                         path=self.path)  # fmt: skip
        fault = state.take_fault(pixel_id)
        if latency:
            time.sleep(latency / 1000)
        if fault is not None:
            log.fault = json.dumps({k: v for k, v in fault.__dict__.items() if v not in (None, False, 0)})
            if fault.delay_ms:
                time.sleep(fault.delay_ms / 1000)
            if fault.drop:
                log.status = -1
                self._record(log)
                self._drop()
                return
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
                return
            if fault.html:
                log.status = fault.status or 502
                self._record(log)
                body = b"<html><body>502 Bad Gateway</body></html>"
                self.send_response(log.status)
                self.send_header("Content-Type", "text/html")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                return
            if fault.status is not None or fault.code is not None:
                status = fault.status or 400
                code = fault.code if fault.code is not None else 2
                transient = fault.is_transient if fault.is_transient is not None else code in (1, 2)
                headers = {"Retry-After": str(fault.retry_after)} if fault.retry_after is not None else None
                log.status = status
                self._record(log)
                self._send_json(status, graph_error(code, "Injected fault", subcode=fault.subcode,
                                                    is_transient=transient), headers)  # fmt: skip
                return

        def reject(status: int, body: dict[str, Any]) -> None:
            log.status = status
            self._record(log)
            self._send_json(status, body)

        if token_in_url:
            reject(400, graph_error(100, "access_token must not be sent in the URL (capi-relay contract)"))
            return
        if not authorized:
            reject(401, graph_error(190, "Invalid OAuth access token - Cannot parse access token", subcode=467))
            return
        if match is None:
            reject(400, graph_error(100, "Unsupported post request", subcode=33,
                                    error_type="GraphMethodException"))  # fmt: skip
            return
        if not known_pixel:
            reject(400, graph_error(100, f"Unsupported post request. Object with ID '{pixel_id}' does not exist",
                                    subcode=33, error_type="GraphMethodException"))  # fmt: skip
            return
        if not isinstance(doc, dict) or not isinstance(data, list) or not data:
            reject(400, graph_error(100, "Invalid parameter", title="Missing data",
                                    user_msg="The data parameter is required"))  # fmt: skip
            return
        if len(data) > MAX_EVENTS:
            reject(400, graph_error(100, "Invalid parameter", subcode=2804002, title="Too many events",
                                    user_msg="A request can contain at most 1000 events"))  # fmt: skip
            return
        now = time.time()
        for index, event in enumerate(data):
            try:
                check_event(event, now)
                if isinstance(event, dict) and event.get("event_id") in reject_ids:
                    raise EventRejected(2804036, "Invalid Parameter", "event rejected by the stand-in's poison list")
            except EventRejected as exc:
                reject(400, graph_error(100, "Invalid parameter", subcode=exc.subcode, title=exc.title,
                                        user_msg=f"event {index}: {exc.message}"))  # fmt: skip
                return
        received = len(data)
        if fault is not None and fault.events_received_delta:
            received = max(0, received + fault.events_received_delta)
        else:
            with state.lock:
                for event in data:
                    state.received.append(
                        {"pixel_id": pixel_id, "test_event_code": doc.get("test_event_code"), "event": event}
                    )
        log.status = 200
        self._record(log)
        self._send_json(200, {"events_received": received, "messages": [], "fbtrace_id": fbtrace_id()})

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
    state: StandInState

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that timed out and hung up (an injected delay does that on purpose) is not an error.
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)


class GraphStandIn:
    """In-process handle: ``with GraphStandIn(tokens={"t"}) as g: g.url``."""

    def __init__(self, tokens: set[str], pixels: set[str] | None = None, host: str = "127.0.0.1",
                 port: int = 0) -> None:  # fmt: skip
        self.state = StandInState(tokens, pixels)
        self._server = _Server((host, port), _Handler)
        self._server.state = self.state
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="graph-standin", daemon=True
        )

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> GraphStandIn:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> GraphStandIn:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def add_fault(self, **kwargs: Any) -> None:
        with self.state.lock:
            self.state.faults.append(Fault(**kwargs))

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
    args = parser.parse_args()
    standin = GraphStandIn(set(args.token), set(args.pixel) if args.pixel else None, args.host, args.port)
    print(f"graph stand-in listening on {standin.url}", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        standin._server.serve_forever()


if __name__ == "__main__":
    main()
