"""Read the Dataset Quality API for each configured pixel: bounded, typed, never raising.

One ``GET /{version}/dataset_quality?dataset_id=<pixel>&fields=...`` per pixel (plus, at most, one retry
after a transient failure, one after Meta refuses a requested field, one after an auth failure with a
force-refreshed secret), sequentially, each attempt capped by the client's timeouts and by the time left
before the deadline. The token is the relay's own (same secret, same bounded read: one fetch per
invocation for every pixel). Every failure becomes a :class:`PixelRead` with a stable ``error`` reason.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from capi_relay.aws.secrets import Credentials, InvocationScoped, SecretError, TokenProvider
from capi_relay.deliver.policy import ErrorKind, GraphError
from capi_relay.quality.config import QualityConfig
from capi_relay.quality.dataset_quality import FULL_FIELDS, MINIMAL_FIELDS, DatasetQuality, parse

CODE_PERMISSION = 10  # "(#10) Application does not have permission for this action" (Meta's error table)
CODE_UNKNOWN_DATASET = 2044055  # "The dataset_id that was inputted doesn't exist." (Meta's error table)
MIN_ATTEMPT_S = 0.25  # no attempt starts with less time than this left


class QualityFetcher(Protocol):
    def get_json(
        self, path: str, query: dict[str, str], credentials: Credentials, timeout_s: float | None = None
    ) -> Any: ...


@dataclass(frozen=True, slots=True)
class PixelRead:
    pixel_id: str
    quality: DatasetQuality | None = None
    error: str | None = None  # stable reason: permission_missing, unknown_dataset, throttled, ...
    detail: str = ""
    fields_fallback: bool = False  # Meta refused a field of FULL_FIELDS; MINIMAL_FIELDS were read instead
    retry_after_s: float | None = None
    attempts: int = 0

    @property
    def ok(self) -> bool:
        return self.quality is not None


def error_reason(exc: GraphError) -> str:
    """Meta's error -> the reader's reason (codes and subcodes only, never message text)."""
    code, subcode = exc.code, exc.subcode
    if code == CODE_PERMISSION or (code is not None and 200 <= code <= 299):
        return "permission_missing"
    if CODE_UNKNOWN_DATASET in (code, subcode) or (code == 100 and subcode == 33):
        return "unknown_dataset"
    if code == 2635:
        return "version_retired"
    if exc.kind is ErrorKind.AUTH:
        return "token_invalid"
    if exc.kind is ErrorKind.THROTTLED:
        return "throttled"
    if exc.kind is ErrorKind.TRANSIENT:
        return "transient"
    if exc.kind is ErrorKind.REQUEST:
        return "request_refused"
    return exc.reason


class QualityReader:
    def __init__(
        self,
        client: QualityFetcher,
        tokens: TokenProvider,
        config: QualityConfig,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = client
        self._tokens = tokens
        self._config = config
        self._clock = clock

    def read_all(self, deadline: float) -> list[PixelRead]:
        """Every configured pixel, in order; those the deadline leaves no time for end ``deadline``."""
        if isinstance(self._tokens, InvocationScoped):
            self._tokens.begin_invocation(deadline - self._config.deadline_margin_s)
        return [self.read(pixel_id, deadline) for pixel_id in self._config.pixel_ids]

    def read(self, pixel_id: str, deadline: float) -> PixelRead:
        end = deadline - self._config.deadline_margin_s
        query = {"dataset_id": pixel_id, "fields": FULL_FIELDS}
        if self._config.agent_name:
            query["agent_name"] = self._config.agent_name
        retried: set[str] = set()  # each kind of second attempt at most once
        attempts = 0
        force_refresh = False
        while True:
            left = end - self._clock()
            if left < MIN_ATTEMPT_S:
                return PixelRead(pixel_id, error="deadline", detail="no time left for a read", attempts=attempts)
            try:
                credentials = self._tokens.get(pixel_id, force_refresh=force_refresh)
            except SecretError as exc:
                return PixelRead(pixel_id, error=exc.reason, detail=str(exc), attempts=attempts)
            left = end - self._clock()
            if left < MIN_ATTEMPT_S:
                return PixelRead(pixel_id, error="deadline", detail="no time left after the secret", attempts=attempts)
            attempts += 1
            try:
                doc = self._client.get_json("dataset_quality", query, credentials, timeout_s=left)
            except GraphError as exc:
                reason = error_reason(exc)
                if reason == "request_refused" and "fields" not in retried:
                    retried.add("fields")  # a field Meta no longer knows: read what its first example reads
                    query["fields"] = MINIMAL_FIELDS
                    continue
                if reason == "token_invalid" and "auth" not in retried:
                    retried.add("auth")
                    force_refresh = True
                    continue
                if reason == "transient" and "transient" not in retried:
                    retried.add("transient")
                    continue
                detail = f"code={exc.code} subcode={exc.subcode} http={exc.http_status} {exc.detail}".strip()
                return PixelRead(pixel_id, error=reason, detail=detail, retry_after_s=exc.retry_after_s,
                                 fields_fallback="fields" in retried, attempts=attempts)  # fmt: skip
            return PixelRead(pixel_id, quality=parse(doc), fields_fallback="fields" in retried, attempts=attempts)


class StaticTokens:
    """One known credential for every pixel (the CLI's token from the environment)."""

    def __init__(self, credentials: Credentials) -> None:
        self._credentials = credentials

    def get(self, pixel_id: str, *, force_refresh: bool = False) -> Credentials:
        return self._credentials
