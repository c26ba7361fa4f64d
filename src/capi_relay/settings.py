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


# Visibility of a record parked after a throttle/transient failure, by receive: 5 min, 30 min, 2 h, 6 h, 12 h.
# With MaxReceiveCount 5 the 5th receive comes 8 h 35 min after the 1st (template.yaml shows the arithmetic).
DEFAULT_PARK_SCHEDULE_S = (300, 1800, 7200, 21600, 43200)
# The newest Graph API version the Graph stand-in has been checked against with Meta's SDK (local/graph_standin.py
# CHECKED_VERSION, tests/integration/test_standin_oracle.py); template.yaml's default (tests/unit/test_template.py).
DEFAULT_GRAPH_API_VERSION = "v26.0"


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
    graph_api_version: str = DEFAULT_GRAPH_API_VERSION
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
    # Fate of each record (quarantine, parking): see relay.py and fate.py.
    dlq_url: str | None = None  # where permanent rejections are quarantined; None: they fail (redrive path)
    max_receive_count: int = 5  # the events queue's redrive maxReceiveCount
    # Visibility after receive 1, 2, ... (the last step repeats); empty (PARK_SCHEDULE=off): no parking.
    park_schedule_s: tuple[int, ...] = DEFAULT_PARK_SCHEDULE_S
    queue_retention_s: int = 345_600  # the events queue's MessageRetentionPeriod: a parked message must not expire
    # Time kept back after delivery for the quarantine and parking calls to SQS (each call is bounded).
    fate_reserve_s: float = 3.0
    sqs_timeout_s: float = 2.0  # connect + read of one SQS call (no botocore retries: SQS redelivers)
    sqs_concurrency: int = 10  # SQS calls that persist fates (letters, parking) run this many at once
    queue_visibility_timeout_s: int = 180  # the events queue's VisibilityTimeout: when an unparked record returns

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


def _schedule(env: Mapping[str, str], name: str, default: tuple[int, ...]) -> tuple[int, ...]:
    raw = _get(env, name)
    if raw is None:
        return default
    if raw.lower() == "off":
        return ()  # parking disabled: failing records return after the queue's visibility timeout
    try:
        values = tuple(int(part) for part in raw.split(","))
    except ValueError:
        raise SettingsError(f"{name} must be comma-separated whole seconds, got {raw!r}") from None
    if not 1 <= len(values) <= 20 or not all(0 <= v <= 43_200 for v in values):
        raise SettingsError(f"{name} must list 1 to 20 values between 0 and 43200 seconds, got {raw!r}")
    return values


def _queue_url(env: Mapping[str, str], name: str) -> str | None:
    raw = _get(env, name)
    if raw is None:
        return None
    parts = urlsplit(raw)
    if parts.scheme not in ("https", "http") or not parts.netloc or len(parts.path.strip("/").split("/")) != 2:
        raise SettingsError(f"{name} must be an SQS queue URL (https://sqs.REGION.amazonaws.com/ACCOUNT/NAME)")
    return raw


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
    version = _get(env, "GRAPH_API_VERSION") or DEFAULT_GRAPH_API_VERSION
    if not _VERSION_RE.match(version):
        raise SettingsError(f"GRAPH_API_VERSION must look like v26.0, got {version!r}")
    url = (_get(env, "GRAPH_API_URL") or "https://graph.facebook.com").rstrip("/")
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.netloc or parts.query:
        raise SettingsError(f"GRAPH_API_URL must be an http(s) base URL without a query, got {url!r}")
    if parts.scheme == "http" and parts.hostname not in ("127.0.0.1", "localhost", "::1"):
        raise SettingsError("GRAPH_API_URL may use plain http only for a loopback stand-in")
    fate_reserve_s = _float(env, "FATE_RESERVE", 3.0, 0.0, 60.0)
    sqs_timeout_s = _float(env, "SQS_TIMEOUT", 2.0, 0.1, 30.0)
    if fate_reserve_s < sqs_timeout_s:  # else a delivery that runs to its deadline leaves no time to quarantine
        raise SettingsError(f"FATE_RESERVE ({fate_reserve_s} s) must be at least SQS_TIMEOUT ({sqs_timeout_s} s)")
    test_event_code = _get(env, "TEST_EVENT_CODE")
    if test_event_code is not None and not test_event_code.isprintable():  # undecodable bytes, controls
        raise SettingsError("TEST_EVENT_CODE must be printable text")
    max_receive_count = _int(env, "MAX_RECEIVE_COUNT", 5, 1, 1000)
    park_schedule_s = _schedule(env, "PARK_SCHEDULE", DEFAULT_PARK_SCHEDULE_S)
    queue_retention_s = _int(env, "QUEUE_RETENTION", 345_600, 60, 1_209_600)
    visibility_s = _int(env, "QUEUE_VISIBILITY_TIMEOUT", 180, 0, 43_200)
    dlq_url = _queue_url(env, "DLQ_URL")
    if dlq_url is None:
        _check_receives_fit_retention(max_receive_count, park_schedule_s, visibility_s, queue_retention_s)
    return Settings(
        pixel_id=pixel_id,
        access_token_secret_id=secret_id,
        graph_api_version=version,
        graph_api_url=url,
        test_event_code=test_event_code,
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
        dlq_url=dlq_url,
        max_receive_count=max_receive_count,
        park_schedule_s=park_schedule_s,
        queue_retention_s=queue_retention_s,
        fate_reserve_s=fate_reserve_s,
        sqs_timeout_s=sqs_timeout_s,
        sqs_concurrency=_int(env, "SQS_CONCURRENCY", 10, 1, 64),
        queue_visibility_timeout_s=visibility_s,
    )


RETENTION_MARGIN_S = 3_600


def receives_span_s(max_receive_count: int, schedule_s: tuple[int, ...], visibility_s: int) -> int:
    """The longest a message can spend in the events queue before its last receive: after each of the first
    ``max_receive_count - 1`` receives it is parked for the schedule's step (the last step repeats), or for
    the queue's visibility timeout when parking is off."""
    span = 0
    for receive in range(1, max_receive_count):
        span += schedule_s[min(receive, len(schedule_s)) - 1] if schedule_s else visibility_s
    return span


def _check_receives_fit_retention(max_receive_count: int, schedule_s: tuple[int, ...], visibility_s: int,
                                  retention_s: int) -> None:  # fmt: skip
    """Without DLQ_URL only SQS's redrive policy moves a message to the DLQ, on its last receive: a message
    whose receives outlast the retention expires in neither queue. Refused at cold start. (With DLQ_URL the
    relay dead-letters a record itself when its retention would end before its next receive.)"""
    span = receives_span_s(max_receive_count, schedule_s, visibility_s)
    if span > retention_s - RETENTION_MARGIN_S:
        raise SettingsError(
            f"MAX_RECEIVE_COUNT ({max_receive_count}) receives with PARK_SCHEDULE take up to {span} s, more than "
            f"QUEUE_RETENTION ({retention_s} s) minus {RETENTION_MARGIN_S} s: a parked message would expire in "
            "neither queue. Lower MAX_RECEIVE_COUNT or the schedule, or set DLQ_URL (the relay then dead-letters "
            "a record before its retention ends)"
        )


@cache
def get_settings() -> Settings:
    """The process-wide settings, validated on first use (cold start)."""
    return settings_from_env()
