"""Environment -> one validated, immutable settings object, read once per execution environment.

Logic never reads ``os.environ``; it receives a :class:`Settings` (relay) or a
:class:`NormalizationSettings` (the pure parse -> normalize -> validate path, which the
``capi-relay check`` CLI runs without any AWS configuration).

One table: each field of :class:`Settings` (and :class:`NormalizationSettings`) is declared once, with its
default, the environment variable it is read from and that variable's parser (bounds, choices, format), in
the field's metadata (:func:`setting`). :func:`settings_from_env` is a loop over those fields
(:func:`read_fields`) plus the checks that involve two fields. Other readers take what they need from the
same table: :func:`default_of` for a default (``DeliveryConfig``, ``fate.ParkInput``), :func:`same_as` for a
field read from the same variable the same way (``CheckSettings``, the quality reader's ``QualityConfig``),
and the public parsers (:func:`integer`, :func:`number`, :func:`names`, ...) for variables of their own.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import MISSING, Field, dataclass, field, fields
from functools import cache
from typing import Any, Literal, TypeVar, cast
from urllib.parse import urlsplit

DateOrder = Literal["MDY", "DMY"]
T = TypeVar("T")
N = TypeVar("N", int, float)
# A variable's parser: (variable name, its value stripped and not empty) -> the setting's value. It raises
# SettingsError with a message that starts with the variable's name and never quotes a secret.
Parser = Callable[[str, str], T]

PIXEL_RE = re.compile(r"[0-9]{1,32}")  # ASCII digits only: \d (and str.isdigit) accept "١٢٣"
_VERSION_RE = re.compile(r"v[0-9]{1,3}\.[0-9]")  # ASCII: it goes into the URL path
_REGION_RE = re.compile(r"[A-Z]{2}")
_LOOPBACK = ("127.0.0.1", "localhost", "::1")

# Visibility of a record parked after a throttle/transient failure, by receive: 5 min, 30 min, 2 h, 6 h, 12 h.
# With MaxReceiveCount 5 the 5th receive comes 8 h 35 min after the 1st (template.yaml shows the arithmetic).
DEFAULT_PARK_SCHEDULE_S = (300, 1800, 7200, 21600, 43200)
# The newest Graph API version the Graph stand-in has been checked against with Meta's SDK (local/graph_standin.py
# CHECKED_VERSION, tests/integration/test_standin_oracle.py); template.yaml's default (tests/unit/test_template.py).
DEFAULT_GRAPH_API_VERSION = "v26.0"


class SettingsError(ValueError):
    """A configuration value is missing or malformed. The message names the variable, never a secret."""


# ------------------------------------------------------------------------------------------- parsers
def value(env: Mapping[str, str], name: str) -> str | None:
    """The variable's value, stripped; None when it is unset or blank (the setting keeps its default)."""
    raw = env.get(name)
    if raw is None:
        return None
    raw = raw.strip()
    return raw or None


def text(name: str, raw: str) -> str:
    return raw


def _bounded(convert: Callable[[str], N], kind: str, lo: N, hi: N) -> Parser[N]:  # noqa: UP047 -- kit: Python 3.10
    """``convert(raw)`` within [lo, hi] (a comparison also refuses nan); else "NAME must be {kind}"."""

    def parse(name: str, raw: str) -> N:
        try:
            parsed = convert(raw)
        except ValueError:
            raise SettingsError(f"{name} must be {kind}, got {raw!r}") from None
        if not lo <= parsed <= hi:
            raise SettingsError(f"{name} must be between {lo} and {hi}, got {parsed}")
        return parsed

    return parse


def integer(lo: int, hi: int) -> Parser[int]:
    return _bounded(int, "an integer", lo, hi)


def number(lo: float, hi: float) -> Parser[float]:
    return _bounded(float, "a number", lo, hi)


def matching(pattern: re.Pattern[str], must: str, *, upper: bool = False) -> Parser[str]:
    """The value (upper-cased first when ``upper``) if ``pattern`` matches all of it; else "NAME must {must}"."""

    def parse(name: str, raw: str) -> str:
        parsed = raw.upper() if upper else raw
        if not pattern.fullmatch(parsed):
            raise SettingsError(f"{name} must {must}, got {parsed!r}")
        return parsed

    return parse


def choice(*choices: str) -> Parser[str]:
    """One of ``choices``, case-insensitive (the value is upper-cased)."""

    def parse(name: str, raw: str) -> str:
        parsed = raw.upper()
        if parsed not in choices:
            raise SettingsError(f"{name} must be {' or '.join(choices)}, got {parsed!r}")
        return parsed

    return parse


def printable(name: str, raw: str) -> str:
    if not raw.isprintable():  # undecodable bytes, controls
        raise SettingsError(f"{name} must be printable text")
    return raw


def base_url(name: str, raw: str) -> str:
    """An http(s) base URL without a query or a trailing slash; plain http only for a loopback stand-in."""
    url = raw.rstrip("/")
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.netloc or parts.query:
        raise SettingsError(f"{name} must be an http(s) base URL without a query, got {url!r}")
    if parts.scheme == "http" and parts.hostname not in _LOOPBACK:
        raise SettingsError(f"{name} may use plain http only for a loopback stand-in")
    return url


def queue_url(name: str, raw: str) -> str:
    parts = urlsplit(raw)
    if parts.scheme not in ("https", "http") or not parts.netloc or len(parts.path.strip("/").split("/")) != 2:
        raise SettingsError(f"{name} must be an SQS queue URL (https://sqs.REGION.amazonaws.com/ACCOUNT/NAME)")
    return raw


def schedule(name: str, raw: str) -> tuple[int, ...]:
    """Comma-separated whole seconds (1 to 20 of them, each at most 12 h); ``off``: the empty schedule."""
    if raw.lower() == "off":
        return ()  # parking disabled: failing records return after the queue's visibility timeout
    try:
        values = tuple(int(part) for part in raw.split(","))
    except ValueError:
        raise SettingsError(f"{name} must be comma-separated whole seconds, got {raw!r}") from None
    if not 1 <= len(values) <= 20 or not all(0 <= v <= 43_200 for v in values):
        raise SettingsError(f"{name} must list 1 to 20 values between 0 and 43200 seconds, got {raw!r}")
    return values


def names(pattern: re.Pattern[str]) -> Parser[tuple[str, ...]]:
    """A comma-separated list of at least one name, each matching ``pattern``, in order, without repeats."""

    def parse(name: str, raw: str) -> tuple[str, ...]:
        items = tuple(dict.fromkeys(part.strip() for part in raw.split(",") if part.strip()))
        if not items or not all(pattern.fullmatch(item) for item in items):
            raise SettingsError(f"{name} must be a comma-separated list of names, got {raw!r}")
        return items

    return parse


# --------------------------------------------------------------------------------------------- table
@dataclass(frozen=True, slots=True)
class Variable:
    """How one setting is read from the environment (a field's metadata under ``"env"``)."""

    name: str
    parse: Parser[Any]
    doc: str
    required: bool = False  # unset or blank: SettingsError "NAME is required (doc)"

    def read(self, env: Mapping[str, str], default: Any) -> Any:
        raw = value(env, self.name)
        if raw is None:
            if self.required:
                raise SettingsError(f"{self.name} is required ({self.doc})")
            return default
        return self.parse(self.name, raw)


def setting(name: str, default: T, parse: Parser[T], doc: str) -> T:  # noqa: UP047 -- the kit runs on 3.10
    """A dataclass field read from the variable ``name`` by ``parse``; ``default`` when unset or blank."""
    return field(default=default, metadata={"env": Variable(name, parse, doc)})


def required(name: str, parse: Parser[Any], doc: str) -> dict[str, Variable]:
    """Metadata of a field without a default: ``field(metadata=required(...))``."""
    return {"env": Variable(name, parse, doc, required=True)}


def _field(cls: type[Any], name: str) -> Field[Any]:
    found: Field[Any] = cls.__dataclass_fields__[name]  # KeyError at import for a misspelt name
    return found


def default_of(cls: type[Any], name: str) -> Any:
    """The default of the field ``name`` of ``cls``: for a component's own default, without a second copy."""
    default = _field(cls, name).default
    if default is MISSING:
        raise TypeError(f"{cls.__name__}.{name} has no default")
    return default


def same_as(cls: type[Any], name: str) -> Any:
    """A field read from the same variable, with the same parser and default, as ``cls``'s field ``name``."""
    source = _field(cls, name)
    return field(default=source.default, metadata=source.metadata)


def variables(cls: type[Any]) -> dict[str, Variable]:
    """The fields of ``cls`` read from the environment: field name -> its variable."""
    return {f.name: f.metadata["env"] for f in fields(cls) if "env" in f.metadata}


def read_fields(cls: type[Any], env: Mapping[str, str]) -> dict[str, Any]:
    """The value of every field of ``cls`` that is read from the environment, by field name. Raises
    :class:`SettingsError` naming the first variable that is missing or malformed."""
    return {f.name: f.metadata["env"].read(env, f.default) for f in fields(cls) if "env" in f.metadata}


# ------------------------------------------------------------------------------------------ settings
@dataclass(frozen=True, slots=True, kw_only=True)
class NormalizationSettings:
    default_phone_region: str = setting(
        "DEFAULT_PHONE_REGION", "US", matching(_REGION_RE, "be an ISO 3166-1 alpha-2 code", upper=True),
        "region of national phone numbers in events without a country",
    )  # fmt: skip
    date_order: DateOrder = setting(  # noqa: RUF009 -- a str (ruff does not see through the Literal)
        "DATE_ORDER", "MDY", cast(Parser[DateOrder], choice("MDY", "DMY")), "how to read an ambiguous date"
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class Settings:
    pixel_id: str | None = setting(
        "PIXEL_ID", None, matching(PIXEL_RE, "be the numeric pixel (dataset) id"),
        "the pixel of messages that name none; None: each message names its pixel",
    )  # fmt: skip
    access_token_secret_id: str = field(
        metadata=required("ACCESS_TOKEN_SECRET_ID", text, "the name or ARN of the access-token secret")
    )
    graph_api_version: str = setting(
        "GRAPH_API_VERSION", DEFAULT_GRAPH_API_VERSION, matching(_VERSION_RE, "look like v26.0"),
        "the Graph API version in the URL",
    )  # fmt: skip
    graph_api_url: str = setting("GRAPH_API_URL", "https://graph.facebook.com", base_url, "the Graph API base URL")
    test_event_code: str | None = setting("TEST_EVENT_CODE", None, printable, "Events Manager's test code")
    normalization: NormalizationSettings = NormalizationSettings()  # DEFAULT_PHONE_REGION, DATE_ORDER
    stage: str = setting("STAGE", "dev", text, "prod or production: a TEST_EVENT_CODE raises a warning metric")
    # Outbound HTTP: Meta recommends a 1.5 s request timeout; connect is kept short.
    connect_timeout_s: float = setting("GRAPH_CONNECT_TIMEOUT", 1.0, number(0.05, 30.0), "s, connect to Graph")
    read_timeout_s: float = setting("GRAPH_READ_TIMEOUT", 5.0, number(0.1, 60.0), "s, read of one Graph answer")
    http_concurrency: int = setting("HTTP_CONCURRENCY", 10, integer(1, 64), "Graph requests at once")
    max_events_per_request: int = setting("MAX_EVENTS_PER_REQUEST", 1000, integer(1, 1000), "Meta's limit: 1000")
    max_request_bytes: int = setting(
        "MAX_REQUEST_BYTES", 2 * 1024 * 1024, integer(64 * 1024, 16 * 1024 * 1024), "bytes of one request body"
    )
    secret_max_age_s: int = setting("SECRET_MAX_AGE", 300, integer(0, 86_400), "s a cached token is used")
    # Time kept back from the Lambda deadline: no new attempt starts inside it.
    deadline_margin_s: float = setting("DEADLINE_MARGIN", 2.0, number(0.0, 60.0), "s kept back from the deadline")
    max_attempts: int = setting("MAX_ATTEMPTS", 5, integer(1, 20), "attempts of one request")
    service_name: str = setting("POWERTOOLS_SERVICE_NAME", "capi-relay", text, "the metrics' service dimension")
    metrics_namespace: str = setting("POWERTOOLS_METRICS_NAMESPACE", "CapiRelay", text, "the metrics' namespace")
    # Fate of each record (quarantine, parking): see relay.py and fate/ledger.py.
    dlq_url: str | None = setting(
        "DLQ_URL", None, queue_url, "where permanent rejections are quarantined; None: they fail (redrive path)"
    )
    max_receive_count: int = setting(
        "MAX_RECEIVE_COUNT", 5, integer(1, 1000), "the events queue's redrive maxReceiveCount"
    )
    park_schedule_s: tuple[int, ...] = setting(
        "PARK_SCHEDULE", DEFAULT_PARK_SCHEDULE_S, schedule,
        "visibility after receive 1, 2, ... (the last step repeats); off (empty): no parking",
    )  # fmt: skip
    queue_retention_s: int = setting(
        "QUEUE_RETENTION", 345_600, integer(60, 1_209_600),
        "the events queue's MessageRetentionPeriod: a parked message must not expire",
    )  # fmt: skip
    # Time kept back after delivery for the quarantine and parking calls to SQS (each call is bounded).
    fate_reserve_s: float = setting("FATE_RESERVE", 3.0, number(0.0, 60.0), "s kept for the SQS fate calls")
    sqs_timeout_s: float = setting(
        "SQS_TIMEOUT", 2.0, number(0.1, 30.0), "s, connect + read of one SQS call (no botocore retries)"
    )
    sqs_concurrency: int = setting("SQS_CONCURRENCY", 10, integer(1, 64), "SQS fate calls (letters, parking) at once")
    queue_visibility_timeout_s: int = setting(
        "QUEUE_VISIBILITY_TIMEOUT", 180, integer(0, 43_200),
        "the events queue's VisibilityTimeout: when an unparked record returns",
    )  # fmt: skip

    @property
    def is_production(self) -> bool:
        return self.stage.lower() in {"prod", "production"}


@dataclass(frozen=True, slots=True, kw_only=True)
class CheckSettings:
    """What ``capi-relay check`` reads of the relay's variables (no AWS setting, no secret): the defaults a
    message falls back on and the normalization settings."""

    pixel_id: str | None = same_as(Settings, "pixel_id")
    test_event_code: str | None = same_as(Settings, "test_event_code")
    graph_api_version: str = same_as(Settings, "graph_api_version")
    normalization: NormalizationSettings = NormalizationSettings()


def normalization_settings_from_env(env: Mapping[str, str] | None = None) -> NormalizationSettings:
    return NormalizationSettings(**read_fields(NormalizationSettings, os.environ if env is None else env))


def check_settings_from_env(env: Mapping[str, str] | None = None) -> CheckSettings:
    env = os.environ if env is None else env
    return CheckSettings(normalization=normalization_settings_from_env(env), **read_fields(CheckSettings, env))


def settings_from_env(env: Mapping[str, str] | None = None) -> Settings:
    """Build and validate the relay settings. Raises :class:`SettingsError` with a clear message."""
    env = os.environ if env is None else env
    settings = Settings(normalization=normalization_settings_from_env(env), **read_fields(Settings, env))
    if settings.fate_reserve_s < settings.sqs_timeout_s:  # else a delivery run to its deadline leaves no time
        raise SettingsError(  # to quarantine
            f"FATE_RESERVE ({settings.fate_reserve_s} s) must be at least SQS_TIMEOUT ({settings.sqs_timeout_s} s)"
        )
    if settings.dlq_url is None:
        _check_receives_fit_retention(settings.max_receive_count, settings.park_schedule_s,
                                      settings.queue_visibility_timeout_s, settings.queue_retention_s)  # fmt: skip
    return settings


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
