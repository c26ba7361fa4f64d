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
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from capi_relay.settings import (
    PIXEL_RE,
    Settings,
    SettingsError,
    default_of,
    matching,
    names,
    number,
    read_fields,
    same_as,
    setting,
    value,
    variables,
)

MAX_PIXELS = 10
FAMILIES = ("emq", "keys", "coverage", "dedup", "freshness")
_NAME_RE = re.compile(r"[A-Za-z0-9_ .:-]{1,64}")  # a CloudWatch dimension value we are willing to publish
_AGENT_RE = re.compile(r"[a-z0-9_.-]{1,64}")


def _events(name: str, raw: str) -> tuple[str, ...]:
    return ("*",) if raw == "*" else names(_NAME_RE)(name, raw)


def _families(name: str, raw: str) -> frozenset[str]:
    families = frozenset(names(re.compile(r"[a-z]+"))(name, raw))
    if not families <= set(FAMILIES):
        raise SettingsError(f"{name} may name only {', '.join(FAMILIES)}, got {sorted(families)}")
    return families


def _whole_number(lo: int, hi: int) -> Callable[[str, str], int]:
    as_number = number(lo, hi)
    return lambda name, raw: int(as_number(name, raw))  # "20.0" is 20, as it always was


@dataclass(frozen=True, slots=True, kw_only=True)
class QualityConfig:
    access_token_secret_id: str | None = None  # the relay's ACCESS_TOKEN_SECRET_ID (quality_config_from_env)
    # Empty: PIXEL_ID's pixel (quality_config_from_env).
    pixel_ids: tuple[str, ...] = setting("QUALITY_PIXEL_IDS", (), names(PIXEL_RE), "the pixels read")
    events: tuple[str, ...] = setting(  # ("*",) = every event Meta returns
        "QUALITY_EVENTS", ("Purchase",), _events, "event names to publish metrics for"
    )
    match_keys: tuple[str, ...] = setting(
        "QUALITY_MATCH_KEYS", ("email", "phone"), names(_NAME_RE), "match keys to publish coverage for"
    )
    families: frozenset[str] = setting(
        "QUALITY_METRICS", frozenset({"emq", "keys", "coverage"}), _families, "metric families to publish"
    )
    max_metrics: int = setting("QUALITY_MAX_METRICS", 20, _whole_number(1, 200), "per-pixel series per read")
    key_coverage_floor_pct: float = setting(
        "QUALITY_KEY_COVERAGE_FLOOR", 50.0, number(0.0, 100.0), "a watched key below this % has collapsed"
    )
    agent_name: str | None = setting(
        "QUALITY_AGENT_NAME", None, matching(_AGENT_RE, "be a normalized partner_agent name (a-z0-9_.-)"),
        "Meta's agent_name filter",
    )  # fmt: skip
    graph_api_version: str = same_as(Settings, "graph_api_version")
    graph_api_url: str = same_as(Settings, "graph_api_url")
    connect_timeout_s: float = default_of(Settings, "connect_timeout_s")
    read_timeout_s: float = setting("QUALITY_READ_TIMEOUT", 10.0, number(0.5, 60.0), "s, read of one answer")
    deadline_margin_s: float = same_as(Settings, "deadline_margin_s")
    max_response_bytes: int = 1024 * 1024
    secret_max_age_s: int = default_of(Settings, "secret_max_age_s")
    service_name: str = same_as(Settings, "service_name")
    metrics_namespace: str = same_as(Settings, "metrics_namespace")

    def watches(self, event_name: str) -> bool:
        return self.events == ("*",) or event_name in self.events


def quality_config_from_env(env: Mapping[str, str] | None = None, *, need_secret: bool = True) -> QualityConfig:
    """Build and validate the reader's configuration. Raises :class:`SettingsError` naming the variable."""
    env = os.environ if env is None else env
    relay = variables(Settings)  # the relay's own variables, read and checked as the relay does
    secret = relay["access_token_secret_id"]  # required: "ACCESS_TOKEN_SECRET_ID is required (...)"
    values = read_fields(QualityConfig, env)
    values["access_token_secret_id"] = secret.read(env, None) if need_secret else value(env, secret.name)
    if not values["pixel_ids"]:  # PIXEL_ID's pixel, if any ("PIXEL_ID must be the numeric pixel (dataset) id")
        pixel = relay["pixel_id"].read(env, None)
        values["pixel_ids"] = (pixel,) if pixel is not None else ()
    if len(values["pixel_ids"]) > MAX_PIXELS:
        raise SettingsError(f"QUALITY_PIXEL_IDS lists {len(values['pixel_ids'])} pixels; at most {MAX_PIXELS} are read")
    return QualityConfig(**values)
