"""In-process fakes for unit tests only (integration tests use the real stand-in and moto)."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from typing import Any

from capi_relay.app import delivery_config
from capi_relay.aws.secrets import Credentials
from capi_relay.deliver.client import GraphReply
from capi_relay.deliver.engine import Deliverer
from capi_relay.relay import Relay
from capi_relay.settings import settings_from_env


class FakeTokens:
    def __init__(self, token: str = "unit-token") -> None:
        self.token = token
        self.calls: list[tuple[str, bool]] = []

    def get(self, pixel_id: str, *, force_refresh: bool = False) -> Credentials:
        self.calls.append((pixel_id, force_refresh))
        return Credentials(self.token)


class FakeSender:
    """Accepts everything unless ``behaviour`` says otherwise; records every request."""

    def __init__(self, behaviour: Callable[[str, list[dict[str, Any]]], GraphReply | Exception] | None = None):
        self.behaviour = behaviour
        self.requests: list[tuple[str, dict[str, Any]]] = []
        self._lock = threading.Lock()

    def send(self, pixel_id: str, body: bytes, credentials: Credentials, timeout_s: float | None = None) -> GraphReply:
        doc = json.loads(body)
        with self._lock:
            self.requests.append((pixel_id, doc))
        if self.behaviour is not None:
            result = self.behaviour(pixel_id, doc["data"])
            if isinstance(result, Exception):
                raise result
            return result
        return GraphReply(len(doc["data"]), "trace", 1.0)

    @property
    def events(self) -> list[dict[str, Any]]:
        return [e for _, doc in self.requests for e in doc["data"]]


def make_relay(sender: FakeSender, **env: str) -> Relay:
    """A relay for pixel 111 on ``sender``, with in-process tokens and no sleeping between attempts."""
    settings = settings_from_env({"ACCESS_TOKEN_SECRET_ID": "s", "PIXEL_ID": "111", "MAX_ATTEMPTS": "2"} | env)
    return Relay(settings, Deliverer(sender, FakeTokens(), delivery_config(settings), sleep=lambda _: None))
