"""Environment -> one validated, immutable settings object, read once per execution environment.

Logic never reads ``os.environ``; it receives a :class:`Settings` (relay) or a
:class:`NormalizationSettings` (the pure parse -> normalize -> validate path, which the
``capi-relay check`` CLI runs without any AWS configuration).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from typing import Literal
from urllib.parse import urlsplit

DateOrder = Literal["MDY", "DMY"]

_PIXEL_RE = re.compile(r"[0-9]{1,32}")  # ASCII digits only: \d (and str.isdigit) accept "١٢٣"
_VERSION_RE = re.compile(r"^v\d{1,3}\.\d$")
_REGION_RE = re.compile(r"^[A-Z]{2}$")


class SettingsError(ValueError):
    """A configuration value is missing or malformed. The message names the variable, never a secret."""


@dataclass(frozen=True, slots=True)
class NormalizationSettings:
    default_phone_region: str = "US"
    date_order: DateOrder = "MDY"


@dataclass(frozen=True, slots=True)
class Settings:
    pixel_id: str | None
    access_token_secret_id: str
    graph_api_version: str = "v26.0"
    graph_api_url: str = "https://graph.facebook.com"
    test_event_code: str | None = None
    normalization: NormalizationSettings = NormalizationSettings()
    stage: str = "dev"
    # Outbound HTTP: Meta recommends a 1.5 s request timeout; connect is kept short.
    connect_timeout_s: float = 1.0
    read_timeout_s: float = 5.0
    http_concurrency: int = 10
    max_events_per_request: int = 1000
    max_request_bytes: int = 2 * 1024 * 1024
    secret_max_age_s: int = 300
    # Time kept back from the Lambda deadline: no new attempt starts inside it.
    deadline_margin_s: float = 2.0
    max_attempts: int = 5
    service_name: str = "capi-relay"
    metrics_namespace: str = "CapiRelay"

    @property
    def is_production(self) -> bool:
        return self.stage.lower() in {"prod", "production"}


def _get(env: Mapping[str, str], name: str) -> str | None:
    value = env.get(name)
    if value is None:
        return None
    value = value.strip()
    return value or None


def _int(env: Mapping[str, str], name: str, default: int, lo: int, hi: int) -> int:
    raw = _get(env, name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name} must be an integer, got {raw!r}") from None
    if not lo <= value <= hi:
        raise SettingsError(f"{name} must be between {lo} and {hi}, got {value}")
    return value


def _float(env: Mapping[str, str], name: str, default: float, lo: float, hi: float) -> float:
    raw = _get(env, name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a number, got {raw!r}") from None
    if not lo <= value <= hi:
        raise SettingsError(f"{name} must be between {lo} and {hi}, got {value}")
    return value


def normalization_settings_from_env(env: Mapping[str, str] | None = None) -> NormalizationSettings:
    env = os.environ if env is None else env
    region = (_get(env, "DEFAULT_PHONE_REGION") or "US").upper()
    if not _REGION_RE.match(region):
        raise SettingsError(f"DEFAULT_PHONE_REGION must be an ISO 3166-1 alpha-2 code, got {region!r}")
    order = (_get(env, "DATE_ORDER") or "MDY").upper()
    if order not in ("MDY", "DMY"):
        raise SettingsError(f"DATE_ORDER must be MDY or DMY, got {order!r}")
    return NormalizationSettings(default_phone_region=region, date_order=order)  # type: ignore[arg-type]


def settings_from_env(env: Mapping[str, str] | None = None) -> Settings:
    """Build and validate the relay settings. Raises :class:`SettingsError` with a clear message."""
    env = os.environ if env is None else env
    pixel_id = _get(env, "PIXEL_ID")
    if pixel_id is not None and not _PIXEL_RE.fullmatch(pixel_id):
        raise SettingsError(f"PIXEL_ID must be the numeric pixel (dataset) id, got {pixel_id!r}")
    secret_id = _get(env, "ACCESS_TOKEN_SECRET_ID")
    if secret_id is None:
        raise SettingsError("ACCESS_TOKEN_SECRET_ID is required (the name or ARN of the access-token secret)")
    version = _get(env, "GRAPH_API_VERSION") or "v26.0"
    if not _VERSION_RE.match(version):
        raise SettingsError(f"GRAPH_API_VERSION must look like v26.0, got {version!r}")
    url = (_get(env, "GRAPH_API_URL") or "https://graph.facebook.com").rstrip("/")
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.netloc or parts.query:
        raise SettingsError(f"GRAPH_API_URL must be an http(s) base URL without a query, got {url!r}")
    if parts.scheme == "http" and parts.hostname not in ("127.0.0.1", "localhost", "::1"):
        raise SettingsError("GRAPH_API_URL may use plain http only for a loopback stand-in")
    return Settings(
        pixel_id=pixel_id,
        access_token_secret_id=secret_id,
        graph_api_version=version,
        graph_api_url=url,
        test_event_code=_get(env, "TEST_EVENT_CODE"),
        normalization=normalization_settings_from_env(env),
        stage=_get(env, "STAGE") or "dev",
        connect_timeout_s=_float(env, "GRAPH_CONNECT_TIMEOUT", 1.0, 0.05, 30.0),
        read_timeout_s=_float(env, "GRAPH_READ_TIMEOUT", 5.0, 0.1, 60.0),
        http_concurrency=_int(env, "HTTP_CONCURRENCY", 10, 1, 64),
        max_events_per_request=_int(env, "MAX_EVENTS_PER_REQUEST", 1000, 1, 1000),
        max_request_bytes=_int(env, "MAX_REQUEST_BYTES", 2 * 1024 * 1024, 64 * 1024, 16 * 1024 * 1024),
        secret_max_age_s=_int(env, "SECRET_MAX_AGE", 300, 0, 86_400),
        deadline_margin_s=_float(env, "DEADLINE_MARGIN", 2.0, 0.0, 60.0),
        max_attempts=_int(env, "MAX_ATTEMPTS", 5, 1, 20),
        service_name=_get(env, "POWERTOOLS_SERVICE_NAME") or "capi-relay",
        metrics_namespace=_get(env, "POWERTOOLS_METRICS_NAMESPACE") or "CapiRelay",
    )


@cache
def get_settings() -> Settings:
    """The process-wide settings, validated on first use (cold start)."""
    return settings_from_env()
