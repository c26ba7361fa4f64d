"""Access-token provider: Secrets Manager through Powertools parameters, cached with a TTL, force-refreshable.

Secret formats (architecture contract):

* the bare token;
* ``{"access_token": "...", "app_secret": "..."}`` (``app_secret`` optional; enables ``appsecret_proof``);
* ``{"pixels": {"<pixel id>": {"access_token": "...", "app_secret"?: "..."}}}`` (one token per pixel),
  optionally with a top-level ``access_token`` used for pixels not listed.

A token must be usable in an HTTP header: non-empty, Latin-1, no control characters (CR/LF included);
otherwise it is ``secret_malformed`` at parse time (an auth failure, never sent).

:class:`SecretsManagerTokenProvider` fetches the one secret at most once per invocation for all pixels
(``begin_invocation``), remembers a failure for the rest of the invocation, bounds each fetch by the
invocation's deadline and its botocore timeouts/retries, and caches the value for ``max_age_s`` (one value
of at most ``SECRET_MAX_BYTES``: the cache's byte bound).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

SECRET_MAX_BYTES = 65_536  # Secrets Manager's own limit on a secret value; larger is malformed


class SecretError(Exception):
    """The token cannot be had (Secrets Manager unreachable, secret missing or malformed).

    ``reason`` is a stable code; the message never contains the secret value.
    """

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Credentials:
    access_token: str = field(repr=False)
    app_secret: str | None = field(default=None, repr=False)

    @property
    def appsecret_proof(self) -> str | None:
        if not self.app_secret:
            return None
        return hmac.new(self.app_secret.encode(), self.access_token.encode(), hashlib.sha256).hexdigest()

    @property
    def fingerprint(self) -> str:
        """A short non-reversible id of the token, to group requests; safe to log."""
        return hashlib.sha256(self.access_token.encode()).hexdigest()[:12]


class TokenProvider(Protocol):
    def get(self, pixel_id: str, *, force_refresh: bool = False) -> Credentials: ...


@runtime_checkable
class InvocationScoped(Protocol):
    """A provider that scopes its fetches to one invocation (the Deliverer calls this first)."""

    def begin_invocation(self, deadline: float) -> None: ...


def _clean(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise SecretError("secret_malformed", f"{where} must be a non-empty string")
    return value.strip()


def header_value_ok(value: str) -> bool:
    """A value that can go into an HTTP header line: non-empty Latin-1 without control characters (C0, DEL, C1)."""
    return bool(value) and all(0x20 <= ord(ch) <= 0xFF and not 0x7F <= ord(ch) <= 0x9F for ch in value)


def _header_safe(token: str, where: str) -> str:
    """A value that goes into the Authorization header (the caller has checked it is non-empty)."""
    if not header_value_ok(token):
        raise SecretError("secret_malformed", f"{where} has a character not allowed in an HTTP header")
    return token


def parse_secret(raw: str | bytes, pixel_id: str) -> Credentials:
    """Pick the credentials for ``pixel_id`` out of a secret value in any supported format."""
    if len(raw) > SECRET_MAX_BYTES:
        raise SecretError("secret_malformed", f"the secret is larger than {SECRET_MAX_BYTES} bytes")
    try:
        text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
    except UnicodeDecodeError:
        raise SecretError("secret_malformed", "the secret is not UTF-8") from None
    text = text.strip()
    if not text:
        raise SecretError("secret_malformed", "the secret is empty")
    if not text.startswith(("{", "[")):
        return Credentials(access_token=_header_safe(text, "the secret"))
    try:
        doc = json.loads(text)
    except ValueError:
        raise SecretError("secret_malformed", "the secret looks like JSON but does not parse") from None
    if not isinstance(doc, dict):
        raise SecretError("secret_malformed", "the secret JSON must be an object")
    pixels = doc.get("pixels")
    entry: Any = doc
    if isinstance(pixels, dict) and pixel_id in pixels:
        entry = pixels[pixel_id]
        if not isinstance(entry, dict):
            raise SecretError("secret_malformed", "pixels.<id> must be an object")
    elif "access_token" not in doc:
        raise SecretError("secret_no_token_for_pixel", "the secret has no access_token for this pixel")
    token = _header_safe(_clean(entry.get("access_token"), "access_token"), "access_token")
    app_secret = entry.get("app_secret")
    return Credentials(access_token=token, app_secret=_clean(app_secret, "app_secret") if app_secret else None)


@dataclass(frozen=True, slots=True)
class FetchBounds:
    """botocore's limits for one secret fetch (``retries`` counts the attempts after the first)."""

    connect_timeout_s: float = 1.0
    read_timeout_s: float = 2.0
    retries: int = 1

    @property
    def worst_case_s(self) -> float:
        """Every attempt connects and reads to its timeout; standard-mode backoff before retry i (0-based)
        is at most min(2**i, 20) s (throttling scale, the larger one)."""
        attempts = self.retries + 1
        backoff = sum(min(2.0**i, 20.0) for i in range(self.retries))
        return attempts * (self.connect_timeout_s + self.read_timeout_s) + backoff


Fetch = Callable[[], str | bytes]  # one uncached read of the secret value


def powertools_fetch(secret_id: str, bounds: FetchBounds) -> Fetch:
    """The real read: Powertools ``SecretsProvider`` on a botocore client with ``bounds``."""
    provider: Any = None

    def fetch() -> str | bytes:
        nonlocal provider
        if provider is None:
            from aws_lambda_powertools.utilities.parameters import SecretsProvider  # noqa: PLC0415
            from botocore.config import Config  # noqa: PLC0415 -- boto3 is imported on first use only

            config = Config(
                connect_timeout=bounds.connect_timeout_s,
                read_timeout=bounds.read_timeout_s,
                retries={"max_attempts": bounds.retries, "mode": "standard"},
            )
            provider = SecretsProvider(boto_config=config)
        try:  # this provider keeps its own TTL cache: Powertools' is bypassed (force_fetch)
            value = provider.get(secret_id, force_fetch=True)
        except Exception as exc:  # GetParameterError wraps every botocore failure
            raise SecretError("secret_unavailable", f"cannot read the secret: {type(exc).__name__}") from None
        if not isinstance(value, str | bytes):
            raise SecretError("secret_malformed", "the secret has no value")
        return value

    return fetch


@dataclass(slots=True)
class _Cached:
    value: str | bytes = field(repr=False)
    fetched_at: float


class SecretsManagerTokenProvider:
    """One secret for every pixel: fetched at most once per invocation (plus one forced refresh), bounded
    by the deadline, a failure remembered until the next invocation, the value cached ``max_age_s``."""

    def __init__(
        self,
        secret_id: str,
        max_age_s: int = 300,
        *,
        bounds: FetchBounds | None = None,
        fetch: Fetch | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._bounds = bounds or FetchBounds()
        self._fetch = fetch or powertools_fetch(secret_id, self._bounds)
        self._max_age_s = max_age_s
        self._clock = clock
        self._lock = threading.Lock()
        self._cache: _Cached | None = None
        self._deadline: float | None = None
        self._failure: SecretError | None = None  # remembered until the next begin_invocation
        self._refreshed = False
        self._fresh = False  # a value was fetched in this invocation: every pixel shares it
        self._inflight: Future[_Cached] | None = None  # a fetch that outlived its caller's wait
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="secret")
        self.fetches = 0  # fetches started (for tests and the benchmark)

    def begin_invocation(self, deadline: float) -> None:
        with self._lock:
            self._deadline = deadline
            self._failure = None
            self._refreshed = False
            self._fresh = False

    def get(self, pixel_id: str, *, force_refresh: bool = False) -> Credentials:
        return parse_secret(self._value(force_refresh), pixel_id)

    def _value(self, force: bool) -> str | bytes:
        with self._lock:
            if self._failure is not None:
                raise SecretError(self._failure.reason, "remembered from an earlier attempt in this invocation")
            now = self._clock()
            cached = self._cache
            if force and self._refreshed:
                force = False  # one forced refresh per invocation, shared by every pixel
            if force:
                self._refreshed = True
            elif cached is not None and (self._fresh or now - cached.fetched_at < self._max_age_s):
                return cached.value
            try:
                self._cache = self._bounded_fetch(now)
                self._fresh = self._deadline is not None
            except SecretError as exc:
                if self._deadline is not None:
                    self._failure = exc
                raise
            return self._cache.value

    def _bounded_fetch(self, now: float) -> _Cached:
        """Fetch on the worker thread and wait at most the fetch's worst case or the time left. A fetch
        that outlives the wait keeps running; the next call takes its result instead of starting another."""
        left = self._bounds.worst_case_s if self._deadline is None else self._deadline - now
        timeout = min(self._bounds.worst_case_s, left)
        leftover = self._inflight is not None
        if self._inflight is None:
            if timeout <= 0:
                raise SecretError("secret_unavailable", "no time left to read the secret")
            self.fetches += 1
            self._inflight = self._executor.submit(self._timed_fetch)
        future = self._inflight
        try:
            result = future.result(timeout=max(0.0, timeout))
        except FutureTimeout:
            raise SecretError("secret_unavailable", "Secrets Manager did not answer in time") from None
        except SecretError:
            self._inflight = None
            raise
        except Exception as exc:
            self._inflight = None
            raise SecretError("secret_unavailable", f"cannot read the secret: {type(exc).__name__}") from None
        self._inflight = None
        if leftover and now - result.fetched_at >= self._max_age_s:  # a leftover from long ago: read again
            return self._bounded_fetch(now)
        return result

    def _timed_fetch(self) -> _Cached:
        value = self._fetch()
        if len(value) > SECRET_MAX_BYTES:
            raise SecretError("secret_malformed", f"the secret is larger than {SECRET_MAX_BYTES} bytes")
        return _Cached(value, self._clock())
