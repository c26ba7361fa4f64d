"""The Dataset Quality API response -> typed, bounded values.

Request (Meta, "Dataset Quality API", developers.facebook.com/docs/marketing-api/conversions-api/
dataset-quality-api): ``GET /{version}/dataset_quality?dataset_id=<pixel>&fields=web{...}`` (optional
``agent_name``: only events sent with that normalized ``partner_agent``). Response: ``{"web": [{"event_name",
"event_match_quality": {"composite_score", "match_key_feedback": [{"identifier", "coverage": {"percentage"},
"potential_aly_acr_increase"?}], "diagnostics"?: [{"name", "description", "solution", "percentage",
"affected_event_count", "total_event_count"}]}, "event_coverage"?: {"percentage", "goal_percentage",
"description"}, "dedupe_key_feedback"?: [{"dedupe_key", "browser_events_with_dedupe_key": {"percentage"},
"server_events_with_dedupe_key": {"percentage"}, "overall_browser_coverage_from_dedupe_key":
{"percentage"}}], "data_freshness"?: {"upload_frequency", "description"}, "acr"?: {"percentage"}}]}``.

Meta's field table names the dedup field ``dedup_key_feedback`` while its example request and response use
``dedupe_key_feedback``: both are read. Anything malformed is skipped (and counted in ``notes``), never
raised: a field Meta adds or changes must not stop the other numbers from being published. Every list and
string is capped, so a hostile or runaway body cannot grow memory past the response cap.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

MAX_EVENTS = 500  # web[] entries kept per dataset
MAX_ITEMS = 64  # match keys / diagnostics / dedup keys kept per event
MAX_TEXT = 1_000  # characters kept of a description or recommendation

# Fields requested: everything the metrics and the CLI use (Meta's examples, merged into one field expansion).
FULL_FIELDS = (
    "web{event_name,"
    "event_match_quality{composite_score,match_key_feedback{identifier,coverage{percentage}},"
    "diagnostics{name,description,solution,percentage,affected_event_count,total_event_count}},"
    "event_coverage{percentage,goal_percentage},"
    "dedupe_key_feedback{dedupe_key,browser_events_with_dedupe_key{percentage},"
    "server_events_with_dedupe_key{percentage},overall_browser_coverage_from_dedupe_key{percentage}},"
    "data_freshness{upload_frequency}}"
)
# Meta's first documented example, verbatim: the fallback when Meta refuses a field of FULL_FIELDS (code 100).
MINIMAL_FIELDS = "web{event_match_quality,event_name}"

# data_freshness.upload_frequency -> hours, for a metric (Meta documents real_time and hourly; the rest are
# the other values Events Manager shows: daily, weekly).
FRESHNESS_HOURS = {"real_time": 0.0, "hourly": 1.0, "daily": 24.0, "weekly": 168.0}


@dataclass(frozen=True, slots=True)
class Diagnostic:
    name: str
    description: str
    solution: str
    percentage: float | None
    affected_event_count: int | None
    total_event_count: int | None


@dataclass(frozen=True, slots=True)
class DedupKey:
    key: str
    browser_pct: float | None
    server_pct: float | None
    overall_browser_coverage_pct: float | None


@dataclass(frozen=True, slots=True)
class EventQuality:
    event_name: str
    composite_score: float | None = None  # EMQ, 0-10
    has_match_key_feedback: bool = False  # Meta listed the keys it saw (absent keys then mean 0 % coverage)
    match_keys: dict[str, float] = field(default_factory=dict)  # identifier -> coverage %
    diagnostics: tuple[Diagnostic, ...] = ()
    event_coverage_pct: float | None = None
    event_coverage_goal_pct: float | None = None
    dedup_keys: tuple[DedupKey, ...] = ()
    upload_frequency: str | None = None

    @property
    def dedup_rate_pct(self) -> float | None:
        """Share of browser events deduplicated with CAPI events: Meta's per-key percentages are incremental,
        so their sum (capped at 100) is the overall rate."""
        values = [d.overall_browser_coverage_pct for d in self.dedup_keys if d.overall_browser_coverage_pct is not None]
        return min(100.0, sum(values)) if values else None

    @property
    def freshness_hours(self) -> float | None:
        return FRESHNESS_HOURS.get(self.upload_frequency) if self.upload_frequency else None

    def coverage(self, identifier: str) -> float | None:
        """Coverage % of one match key; 0 when Meta listed the event's keys without this one."""
        if identifier in self.match_keys:
            return self.match_keys[identifier]
        return 0.0 if self.has_match_key_feedback else None


@dataclass(frozen=True, slots=True)
class DatasetQuality:
    events: tuple[EventQuality, ...]
    notes: Counter[str]  # what was skipped and why (e.g. "web_entry_not_object"), for one log line


def _number(value: Any, lo: float, hi: float) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        number = float(value)
    except OverflowError:  # an integer too large for a float
        return None
    return number if math.isfinite(number) and lo <= number <= hi else None


def _count(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def _text(value: Any) -> str:
    return value[:MAX_TEXT] if isinstance(value, str) else ""


def _percentage(node: Any) -> float | None:
    return _number(node.get("percentage"), 0.0, 100.0) if isinstance(node, dict) else None


def _list(node: Any, notes: Counter[str], what: str) -> list[Any]:
    if node is None:
        return []
    if not isinstance(node, list):
        notes[f"{what}_not_list"] += 1
        return []
    if len(node) > MAX_ITEMS:
        notes[f"{what}_capped"] += 1
    return node[:MAX_ITEMS]


def _event(entry: dict[str, Any], notes: Counter[str]) -> EventQuality | None:
    name = entry.get("event_name")
    if not isinstance(name, str) or not name.strip():
        notes["event_name_missing"] += 1
        return None
    emq = entry.get("event_match_quality")
    score: float | None = None
    keys: dict[str, float] = {}
    has_feedback = False
    diagnostics: list[Diagnostic] = []
    if isinstance(emq, dict):
        score = _number(emq.get("composite_score"), 0.0, 10.0)
        if "composite_score" in emq and score is None:
            notes["composite_score_invalid"] += 1
        feedback = emq.get("match_key_feedback")
        has_feedback = isinstance(feedback, list)
        for item in _list(feedback, notes, "match_key_feedback"):
            identifier = item.get("identifier") if isinstance(item, dict) else None
            pct = _percentage(item.get("coverage")) if isinstance(item, dict) else None
            if not isinstance(identifier, str) or not identifier or pct is None:
                notes["match_key_invalid"] += 1
                continue
            keys[identifier[:64]] = pct
        for item in _list(emq.get("diagnostics"), notes, "diagnostics"):
            if not isinstance(item, dict) or not isinstance(item.get("name"), str):
                notes["diagnostic_invalid"] += 1
                continue
            diagnostic = Diagnostic(
                _text(item["name"]), _text(item.get("description")), _text(item.get("solution")),
                _number(item.get("percentage"), 0.0, 100.0), _count(item.get("affected_event_count")),
                _count(item.get("total_event_count")),
            )  # fmt: skip
            diagnostics.append(diagnostic)
    elif emq is not None:
        notes["event_match_quality_not_object"] += 1
    coverage = entry.get("event_coverage")
    dedup: list[DedupKey] = []
    feedback = entry.get("dedupe_key_feedback", entry.get("dedup_key_feedback"))
    for item in _list(feedback, notes, "dedupe_key_feedback"):
        if not isinstance(item, dict) or not isinstance(item.get("dedupe_key"), str):
            notes["dedupe_key_invalid"] += 1
            continue
        key = DedupKey(
            item["dedupe_key"][:64], _percentage(item.get("browser_events_with_dedupe_key")),
            _percentage(item.get("server_events_with_dedupe_key")),
            _percentage(item.get("overall_browser_coverage_from_dedupe_key")),
        )  # fmt: skip
        dedup.append(key)
    freshness = entry.get("data_freshness")
    frequency = freshness.get("upload_frequency") if isinstance(freshness, dict) else None
    return EventQuality(
        event_name=name.strip()[:128],
        composite_score=score,
        has_match_key_feedback=has_feedback,
        match_keys=keys,
        diagnostics=tuple(diagnostics),
        event_coverage_pct=_percentage(coverage),
        event_coverage_goal_pct=_number(coverage.get("goal_percentage"), 0.0, 100.0)
        if isinstance(coverage, dict)
        else None,
        dedup_keys=tuple(dedup),
        upload_frequency=frequency[:32] if isinstance(frequency, str) else None,
    )


def parse(doc: Any) -> DatasetQuality:
    """Parse one 2xx body. ``{"web": [...]}`` is the documented shape; ``{"data": [{"web": [...]}]}`` (a
    Graph list wrapper Meta does not document here) is read too."""
    notes: Counter[str] = Counter()
    web: Any = doc.get("web") if isinstance(doc, dict) else None
    if web is None and isinstance(doc, dict) and isinstance(doc.get("data"), list):
        web = [
            entry for item in doc["data"] if isinstance(item, dict) and isinstance(item.get("web"), list)
            for entry in item["web"]
        ]  # fmt: skip
    if web is None:
        notes["no_web_field"] += 1
        return DatasetQuality((), notes)
    if not isinstance(web, list):
        notes["web_not_list"] += 1
        return DatasetQuality((), notes)
    if len(web) > MAX_EVENTS:
        notes["web_capped"] += 1
    events: list[EventQuality] = []
    for entry in web[:MAX_EVENTS]:
        if not isinstance(entry, dict):
            notes["web_entry_not_object"] += 1
            continue
        parsed = _event(entry, notes)
        if parsed is not None:
            events.append(parsed)
    return DatasetQuality(tuple(events), notes)
