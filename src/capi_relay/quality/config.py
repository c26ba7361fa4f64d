"""The quality reader's settings: one validated, immutable object built from the environment once.

Variables (template.yaml sets them on QualityFunction; the CLI reads the same ones):

* ``ACCESS_TOKEN_SECRET_ID``: the relay's own secret (same formats; the token must be allowed to read the
  dataset: see docs/quality.md, "Permission");
* ``QUALITY_PIXEL_IDS``: comma-separated pixel (dataset) ids; empty -> ``PIXEL_ID``; at most ``MAX_PIXELS``;
* ``QUALITY_EVENTS``: event names to publish metrics for (default ``Purchase``; ``*`` = every event Meta
  returns, still under the metric cap);
* ``QUALITY_MATCH_KEYS``: Meta's match-key identifiers to publish coverage for (default ``email,phone``);
* ``QUALITY_METRICS``: which families to publish: ``emq,keys,coverage,dedup,freshness`` (default
  ``emq,keys,coverage``: each published series costs $0.30 a month, see docs/quality.md "Cost");
* ``QUALITY_MAX_METRICS``: hard cap on per-pixel series published per read (default 20);
* ``QUALITY_KEY_COVERAGE_FLOOR``: a watched key whose coverage is below this % has collapsed (default 50);
* ``QUALITY_AGENT_NAME``: Meta's optional ``agent_name`` filter (normalized ``partner_agent``);
* ``GRAPH_API_VERSION``, ``GRAPH_API_URL``, ``QUALITY_READ_TIMEOUT`` (s, default 10), ``DEADLINE_MARGIN``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from capi_relay.settings import DEFAULT_GRAPH_API_VERSION, SettingsError, _float, _get

MAX_PIXELS = 10
FAMILIES = ("emq", "keys", "coverage", "dedup", "freshness")
_PIXEL_RE = re.compile(r"[0-9]{1,32}")
_VERSION_RE = re.compile(r"v\d{1,3}\.\d")
_NAME_RE = re.compile(r"[A-Za-z0-9_ .:-]{1,64}")  # a CloudWatch dimension value we are willing to publish
_AGENT_RE = re.compile(r"[a-z0-9_.-]{1,64}")


@dataclass(frozen=True, slots=True)
class QualityConfig:
    access_token_secret_id: str | None
    pixel_ids: tuple[str, ...]
    events: tuple[str, ...] = ("Purchase",)  # ("*",) = every event Meta returns
    match_keys: tuple[str, ...] = ("email", "phone")
    families: frozenset[str] = frozenset({"emq", "keys", "coverage"})
    max_metrics: int = 20
    key_coverage_floor_pct: float = 50.0
    agent_name: str | None = None
    graph_api_version: str = "v26.0"
    graph_api_url: str = "https://graph.facebook.com"
    connect_timeout_s: float = 1.0
    read_timeout_s: float = 10.0
    deadline_margin_s: float = 2.0
    max_response_bytes: int = 1024 * 1024
    secret_max_age_s: int = 300
    service_name: str = "capi-relay"
    metrics_namespace: str = "CapiRelay"

    def watches(self, event_name: str) -> bool:
        return self.events == ("*",) or event_name in self.events


def _list(env: Mapping[str, str], name: str, default: tuple[str, ...], pattern: re.Pattern[str]) -> tuple[str, ...]:
    raw = _get(env, name)
    if raw is None:
        return default
    items = tuple(dict.fromkeys(part.strip() for part in raw.split(",") if part.strip()))
    bad = [item for item in items if not pattern.fullmatch(item)]
    if bad or not items:
        raise SettingsError(f"{name} must be a comma-separated list of names, got {raw!r}")
    return items


def quality_config_from_env(env: Mapping[str, str] | None = None, *, need_secret: bool = True) -> QualityConfig:
    """Build and validate the reader's configuration. Raises :class:`SettingsError` naming the variable."""
    env = os.environ if env is None else env
    secret_id = _get(env, "ACCESS_TOKEN_SECRET_ID")
    if need_secret and secret_id is None:
        raise SettingsError("ACCESS_TOKEN_SECRET_ID is required (the name or ARN of the access-token secret)")
    fallback = _get(env, "PIXEL_ID")
    pixels = _list(env, "QUALITY_PIXEL_IDS", (fallback,) if fallback else (), _PIXEL_RE)
    if not all(_PIXEL_RE.fullmatch(p) for p in pixels):
        raise SettingsError(f"PIXEL_ID must be the numeric pixel (dataset) id, got {fallback!r}")
    if len(pixels) > MAX_PIXELS:
        raise SettingsError(f"QUALITY_PIXEL_IDS lists {len(pixels)} pixels; at most {MAX_PIXELS} are read")
    events = ("*",) if _get(env, "QUALITY_EVENTS") == "*" else _list(env, "QUALITY_EVENTS", ("Purchase",), _NAME_RE)
    families = frozenset(_list(env, "QUALITY_METRICS", ("emq", "keys", "coverage"), re.compile(r"[a-z]+")))
    if not families <= set(FAMILIES):
        raise SettingsError(f"QUALITY_METRICS may name only {', '.join(FAMILIES)}, got {sorted(families)}")
    agent = _get(env, "QUALITY_AGENT_NAME")
    if agent is not None and not _AGENT_RE.fullmatch(agent):
        raise SettingsError(f"QUALITY_AGENT_NAME must be a normalized partner_agent name (a-z0-9_.-), got {agent!r}")
    version = _get(env, "GRAPH_API_VERSION") or DEFAULT_GRAPH_API_VERSION
    if not _VERSION_RE.fullmatch(version):
        raise SettingsError(f"GRAPH_API_VERSION must look like v26.0, got {version!r}")
    url = (_get(env, "GRAPH_API_URL") or "https://graph.facebook.com").rstrip("/")
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.netloc or parts.query:
        raise SettingsError(f"GRAPH_API_URL must be an http(s) base URL without a query, got {url!r}")
    if parts.scheme == "http" and parts.hostname not in ("127.0.0.1", "localhost", "::1"):
        raise SettingsError("GRAPH_API_URL may use plain http only for a loopback stand-in")
    return QualityConfig(
        access_token_secret_id=secret_id,
        pixel_ids=pixels,
        events=events,
        match_keys=_list(env, "QUALITY_MATCH_KEYS", ("email", "phone"), _NAME_RE),
        families=families,
        max_metrics=int(_float(env, "QUALITY_MAX_METRICS", 20, 1, 200)),
        key_coverage_floor_pct=_float(env, "QUALITY_KEY_COVERAGE_FLOOR", 50.0, 0.0, 100.0),
        agent_name=agent,
        graph_api_version=version,
        graph_api_url=url,
        read_timeout_s=_float(env, "QUALITY_READ_TIMEOUT", 10.0, 0.5, 60.0),
        deadline_margin_s=_float(env, "DEADLINE_MARGIN", 2.0, 0.0, 60.0),
        service_name=_get(env, "POWERTOOLS_SERVICE_NAME") or "capi-relay",
        metrics_namespace=_get(env, "POWERTOOLS_METRICS_NAMESPACE") or "CapiRelay",
    )
